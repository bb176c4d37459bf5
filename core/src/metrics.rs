//! Per-operation call counters kept by the wrapper of every driver.
//!
//! Benchmarks and `regstore bench` read them to report how many driver calls
//! (and, for drivers that count them, backend requests) an operation cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    const COUNT: usize = 16;

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

#[derive(Default)]
struct Counter {
    calls: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

/// Counters for every [`Op`], updated without locks.
#[derive(Default)]
pub struct Metrics {
    counters: [Counter; Op::COUNT],
}

/// Totals for one operation at the time of a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error (not-found included).
    pub errors: u64,
    /// Time spent in the calls, summed.
    pub total: Duration,
}

impl Metrics {
    pub(crate) fn record(&self, op: Op, ok: bool, took: Duration) {
        let c = &self.counters[op as usize];
        c.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Totals of one operation.
    pub fn get(&self, op: Op) -> OpStats {
        let c = &self.counters[op as usize];
        OpStats {
            calls: c.calls.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            total: Duration::from_nanos(c.nanos.load(Ordering::Relaxed)),
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
}
