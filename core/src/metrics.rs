//! Per-operation call counters kept by the wrapper of every driver.
//!
//! Benchmarks and `regstore bench` read them to report how many driver calls
//! (and, for drivers that count them, backend requests) an operation cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ErrorKind;

/// The operations of the contract, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `get_content`
    GetContent,
    /// `put_content`
    PutContent,
    /// `put_content_if_absent`
    PutContentIfAbsent,
    /// `reader`
    Reader,
    /// `writer`
    Writer,
    /// `FileWriter::write`
    Write,
    /// `FileWriter::close`
    Close,
    /// `FileWriter::commit`
    Commit,
    /// `FileWriter::cancel`
    Cancel,
    /// `FileWriter::rollback`
    Rollback,
    /// `stat`
    Stat,
    /// `list`
    List,
    /// `rename`
    Rename,
    /// `delete`
    Delete,
    /// `delete_files`
    DeleteFiles,
    /// `redirect_url`
    RedirectUrl,
    /// `walk`
    Walk,
}

impl Op {
    /// How many operations there are.
    const COUNT: usize = 17;

    /// All operations, in declaration order.
    pub const ALL: [Op; Op::COUNT] = [
        Op::GetContent,
        Op::PutContent,
        Op::PutContentIfAbsent,
        Op::Reader,
        Op::Writer,
        Op::Write,
        Op::Close,
        Op::Commit,
        Op::Cancel,
        Op::Rollback,
        Op::Stat,
        Op::List,
        Op::Rename,
        Op::Delete,
        Op::DeleteFiles,
        Op::RedirectUrl,
        Op::Walk,
    ];

    /// Snake-case name, as in the trait.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::GetContent => "get_content",
            Op::PutContent => "put_content",
            Op::PutContentIfAbsent => "put_content_if_absent",
            Op::Reader => "reader",
            Op::Writer => "writer",
            Op::Write => "write",
            Op::Close => "close",
            Op::Commit => "commit",
            Op::Cancel => "cancel",
            Op::Rollback => "rollback",
            Op::Stat => "stat",
            Op::List => "list",
            Op::Rename => "rename",
            Op::Delete => "delete",
            Op::DeleteFiles => "delete_files",
            Op::RedirectUrl => "redirect_url",
            Op::Walk => "walk",
        }
    }
}

/// Upper bounds, in seconds, of the latency histogram kept per operation
/// (a call taking longer than the last falls in the overflow bucket):
/// from a cached stat on a local disk to a slow object-store upload.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The error kinds, in [`ErrorKind`] order, as counted.
const KINDS: [ErrorKind; 8] = [
    ErrorKind::PathNotFound,
    ErrorKind::InvalidPath,
    ErrorKind::InvalidOffset,
    ErrorKind::Unsupported,
    ErrorKind::Busy,
    ErrorKind::Config,
    ErrorKind::Credentials,
    ErrorKind::Backend,
];

#[derive(Default)]
struct Counter {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    /// Calls per latency bucket (not cumulative); the last is the overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Errors per kind, in [`KINDS`] order.
    kinds: [AtomicU64; KINDS.len()],
}

/// Counters for every [`Op`], updated without locks.
#[derive(Default)]
pub struct Metrics {
    counters: [Counter; Op::COUNT],
}

/// Totals for one operation at the time of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error (not-found included).
    pub errors: u64,
    /// Time spent in the calls, summed.
    pub total: Duration,
    /// Calls per bucket of [`LATENCY_BUCKETS`] (not cumulative: a call
    /// counts in the first bucket whose bound it does not exceed); the
    /// last entry counts the calls slower than every bound.
    pub latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// Errors by kind.
    pub errors_by_kind: [(ErrorKind, u64); KINDS.len()],
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            calls: 0,
            errors: 0,
            total: Duration::ZERO,
            latency: [0; LATENCY_BUCKETS.len() + 1],
            errors_by_kind: KINDS.map(|k| (k, 0)),
        }
    }
}

impl Metrics {
    pub(crate) fn record(&self, op: Op, error: Option<ErrorKind>, took: Duration) {
        let c = &self.counters[op as usize];
        c.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            c.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = KINDS.iter().position(|k| *k == kind) {
                c.kinds[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        c.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Totals of one operation.
    pub fn get(&self, op: Op) -> OpStats {
        let c = &self.counters[op as usize];
        OpStats {
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            total: Duration::from_nanos(c.nanos.load(Ordering::Relaxed)),
            latency: std::array::from_fn(|i| c.buckets[i].load(Ordering::Relaxed)),
            errors_by_kind: std::array::from_fn(|i| (KINDS[i], c.kinds[i].load(Ordering::Relaxed))),
        }
    }

    /// Totals of every operation called at least once.
    pub fn snapshot(&self) -> BTreeMap<Op, OpStats> {
        Op::ALL
            .into_iter()
            .map(|op| (op, self.get(op)))
            .filter(|(_, s)| s.calls > 0)
            .collect()
    }

    /// Total number of calls of every operation.
    pub fn total_calls(&self) -> u64 {
        Op::ALL.into_iter().map(|op| self.get(op).calls).sum()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.snapshot().into_iter().map(|(k, v)| (k.as_str(), v)))
            .finish()
    }
}

/// The requests a driver sends to its backend: a count of every HTTP
/// attempt (retries included: what a cloud provider bills), and an optional
/// delay added before each one (the `latency` middleware sets it, so a
/// loopback emulator costs what a distant cloud would per request).
///
/// Shared between the driver and the HTTP client that sends the requests;
/// cheap to clone, clones share the count and the delay. Drivers that talk
/// to a remote backend keep one, call [`RequestCounter::request`] before
/// sending each request, and return it from
/// [`crate::StorageDriver::request_counter`].
#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<CounterState>);

#[derive(Debug, Default)]
struct CounterState {
    count: AtomicU64,
    delay_nanos: AtomicU64,
}

impl RequestCounter {
    /// Counts one request and waits the injected delay, if any. Call it
    /// right before sending.
    pub async fn request(&self) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
        let nanos = self.0.delay_nanos.load(Ordering::Relaxed);
        if nanos > 0 {
            tokio::time::sleep(Duration::from_nanos(nanos)).await;
        }
    }

    /// Requests counted so far.
    pub fn get(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Adds `delay` before every later request (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.0.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The delay added before each request.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.0.delay_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_op_at_its_counter_index() {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i, "{op:?}");
        }
        let names: std::collections::BTreeSet<_> = Op::ALL.into_iter().map(Op::as_str).collect();
        assert_eq!(names.len(), Op::ALL.len(), "names are unique");
    }

    #[test]
    fn calls_land_in_their_latency_bucket_and_errors_by_kind() {
        let m = Metrics::default();
        m.record(Op::Stat, None, Duration::from_micros(100));
        m.record(Op::Stat, None, Duration::from_millis(1));
        m.record(
            Op::Stat,
            Some(ErrorKind::PathNotFound),
            Duration::from_millis(3),
        );
        m.record(Op::Stat, Some(ErrorKind::Backend), Duration::from_secs(60));
        let s = m.get(Op::Stat);
        assert_eq!((s.calls, s.errors), (4, 2));
        assert_eq!(s.latency[0], 1, "≤ 0.5 ms");
        assert_eq!(s.latency[1], 1, "≤ 1 ms, the bound included");
        assert_eq!(s.latency[3], 1, "≤ 5 ms");
        assert_eq!(s.latency[LATENCY_BUCKETS.len()], 1, "past every bound");
        assert_eq!(s.latency.iter().sum::<u64>(), 4);
        let kinds: Vec<_> = s.errors_by_kind.iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            kinds,
            [&(ErrorKind::PathNotFound, 1), &(ErrorKind::Backend, 1)]
        );
        assert_eq!(m.get(Op::List), OpStats::default());
    }
}
