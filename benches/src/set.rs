//! The driver benchmark set, one implementation behind two front ends:
//! `regstore bench` ([`run`]) and the criterion benches in `benches/`
//! (which time [`Prepared::call`] through `iter_custom`).
//!
//! A benchmark is a [`Bench`]. [`Bench::prepare`] does its untimed setup
//! once (a listed folder, a walked tree, the payload) in a directory of its
//! own; [`Prepared::call`] does one call: the untimed per-call setup (the
//! folder a delete removes), then the timed operation, and returns its
//! duration and the backend requests it cost. [`Prepared::finish`] deletes
//! the directory, so one benchmark's data never slows the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use regstore_core::{Driver, Error, Result};

use crate::{
    data, list, populate, populate_tree, put_get, size_label, stream_put_get, stream_write,
    tree_entries, walk,
};

/// One benchmark of the set. Sizes are bytes per object; counts are files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bench {
    /// `stat` of a one-byte file.
    Stat,
    /// `put_content` then `get_content` of this many bytes (distribution's
    /// PutGet benchmarks).
    PutGet(usize),
    /// A writer fed this many bytes in 1 MiB pieces and committed, then a
    /// reader drained (distribution's Stream benchmarks).
    Stream(usize),
    /// Listing a folder of this many files.
    List(usize),
    /// Deleting a folder of this many files (filled before each call,
    /// untimed).
    Delete(usize),
    /// Walking a tree of this many files, 100 per directory.
    Walk(usize),
    /// Moving a file of this many bytes (back and forth between two paths).
    Rename(usize),
    /// `writers` writers at once, each streaming `size` bytes to its own
    /// path; one call ends when every writer has committed.
    ConcurrentWrite {
        /// Writers running at once.
        writers: usize,
        /// Bytes each writer writes.
        size: usize,
    },
}

impl Bench {
    /// The benchmark's name: its group, a slash and its parameter, e.g.
    /// `put_get/1MiB`, `walk/10000`, `concurrent_write/16x8MiB`; `stat`.
    pub fn name(&self) -> String {
        match self.parameter() {
            Some(p) => format!("{}/{p}", self.group()),
            None => self.group().to_owned(),
        }
    }

    /// The operation, without its parameter: `put_get`, `stream`, `list`,
    /// `delete`, `walk`, `rename`, `concurrent_write` or `stat`.
    pub fn group(&self) -> &'static str {
        match self {
            Bench::Stat => "stat",
            Bench::PutGet(_) => "put_get",
            Bench::Stream(_) => "stream",
            Bench::List(_) => "list",
            Bench::Delete(_) => "delete",
            Bench::Walk(_) => "walk",
            Bench::Rename(_) => "rename",
            Bench::ConcurrentWrite { .. } => "concurrent_write",
        }
    }

    /// The parameter as the name shows it (`1MiB`, `50`, `4x8MiB`).
    pub fn parameter(&self) -> Option<String> {
        match self {
            Bench::Stat => None,
            Bench::PutGet(n) | Bench::Stream(n) | Bench::Rename(n) => Some(size_label(*n)),
            Bench::List(n) | Bench::Delete(n) | Bench::Walk(n) => Some(n.to_string()),
            Bench::ConcurrentWrite { writers, size } => {
                Some(format!("{writers}x{}", size_label(*size)))
            }
        }
    }

    /// Payload bytes one call moves, the basis of MiB/s; 0 for metadata
    /// operations, whose throughput is calls per second. A put+get or a
    /// stream counts its bytes once (written, then read back).
    pub fn bytes_per_call(&self) -> u64 {
        let n = match self {
            Bench::PutGet(n) | Bench::Stream(n) | Bench::Rename(n) => *n,
            Bench::ConcurrentWrite { writers, size } => writers * size,
            Bench::Stat | Bench::List(_) | Bench::Delete(_) | Bench::Walk(_) => 0,
        };
        n as u64
    }

    /// Whether this benchmark moves so much per call (1 GiB or more) that
    /// it runs [`Plan::large_iterations`] calls instead of
    /// [`Plan::iterations`].
    pub fn is_large(&self) -> bool {
        self.bytes_per_call() >= 1 << 30
    }

    /// Does the benchmark's untimed setup under `dir` (a directory that
    /// does not exist yet; [`Prepared::finish`] deletes it).
    ///
    /// # Errors
    /// Driver errors of the setup.
    pub async fn prepare<'a>(&self, driver: &'a Driver, dir: &str) -> Result<Prepared<'a>> {
        let payload = match self {
            Bench::PutGet(n) | Bench::Stream(n) | Bench::Rename(n) => data(*n),
            Bench::ConcurrentWrite { size, .. } => data(*size),
            _ => Bytes::new(),
        };
        match self {
            Bench::Stat => {
                driver
                    .put_content(format!("{dir}/file"), Bytes::from_static(b"x"))
                    .await?
            }
            Bench::List(n) => populate(driver, &format!("{dir}/list"), *n).await?,
            Bench::Walk(n) => populate_tree(driver, &format!("{dir}/tree"), *n).await?,
            Bench::Rename(_) => {
                driver
                    .put_content(format!("{dir}/a"), payload.clone())
                    .await?
            }
            _ => {}
        }
        Ok(Prepared {
            driver,
            bench: self.clone(),
            dir: dir.to_owned(),
            payload,
            calls: AtomicUsize::new(0),
        })
    }
}

/// A benchmark whose setup is done, ready for timed calls.
#[derive(Debug)]
pub struct Prepared<'a> {
    driver: &'a Driver,
    bench: Bench,
    dir: String,
    payload: Bytes,
    calls: AtomicUsize,
}

/// One timed call.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// How long the operation took (per-call setup excluded).
    pub time: Duration,
    /// Backend requests the operation sent; `None` when the driver does not
    /// count them (see [`Driver::backend_requests`]).
    pub requests: Option<u64>,
}

impl Prepared<'_> {
    /// The benchmark this is.
    pub fn bench(&self) -> &Bench {
        &self.bench
    }

    /// One call: the untimed per-call setup, then the timed operation.
    /// Calls must not overlap (the request count is the driver's).
    ///
    /// # Errors
    /// Driver errors, or a result that does not match what was written
    /// (a short read, a listing or walk with the wrong count) as `Backend`.
    pub async fn call(&self) -> Result<Sample> {
        let d = self.driver;
        let dir = &self.dir;
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if let Bench::Delete(n) = self.bench {
            populate(d, &format!("{dir}/doomed"), n).await?;
        }
        let before = d.backend_requests();
        let started = Instant::now();
        match &self.bench {
            Bench::Stat => d.stat(&format!("{dir}/file")).await.map(drop)?,
            Bench::PutGet(_) => put_get(d, &format!("{dir}/blob"), &self.payload).await?,
            Bench::Stream(_) => stream_put_get(d, &format!("{dir}/blob"), &self.payload).await?,
            Bench::List(n) => list(d, &format!("{dir}/list"), *n).await?,
            Bench::Delete(_) => d.delete(&format!("{dir}/doomed")).await?,
            Bench::Walk(n) => {
                let seen = walk(d, &format!("{dir}/tree")).await?;
                if seen != tree_entries(*n) {
                    return Err(Error::backend(format!(
                        "walk visited {seen} entries, expected {}",
                        tree_entries(*n)
                    )));
                }
            }
            Bench::Rename(_) => {
                let (from, to) = if call.is_multiple_of(2) {
                    ("a", "b")
                } else {
                    ("b", "a")
                };
                d.rename(&format!("{dir}/{from}"), &format!("{dir}/{to}"))
                    .await?
            }
            Bench::ConcurrentWrite { writers, .. } => {
                let all = (0..*writers).map(|i| async move {
                    stream_write(d, &format!("{dir}/w{i}"), &self.payload).await
                });
                futures_util::future::try_join_all(all).await.map(drop)?
            }
        }
        let time = started.elapsed();
        let requests = match (before, d.backend_requests()) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        Ok(Sample { time, requests })
    }

    /// Deletes the benchmark's directory.
    ///
    /// # Errors
    /// Driver errors other than the directory not existing.
    pub async fn finish(self) -> Result<()> {
        match self.driver.delete(&self.dir).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

/// Which benchmarks make up a run. [`Shape::default`] is issue 7's set:
/// distribution's (put/get and stream at 0 B, 1 KiB, 1 MiB, 1 GiB; list
/// and delete of 5 and 50 files) plus stat, walks of 1,000 and 10,000
/// files, a 64 MiB rename and 1, 4 and 16 concurrent writers of 8 MiB each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Object sizes of the put/get and stream benchmarks.
    pub sizes: Vec<usize>,
    /// Folder sizes of the list and delete benchmarks.
    pub lists: Vec<usize>,
    /// Tree sizes of the walk benchmarks.
    pub walks: Vec<usize>,
    /// Size of the renamed file; `None` leaves rename out.
    pub rename: Option<usize>,
    /// Writer counts of the concurrent-write benchmarks.
    pub writers: Vec<usize>,
    /// Bytes each concurrent writer writes.
    pub writer_size: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            sizes: crate::SIZES.iter().map(|&(_, n)| n).collect(),
            lists: vec![5, 50],
            walks: vec![1_000, 10_000],
            rename: Some(64 << 20),
            writers: vec![1, 4, 16],
            writer_size: 8 << 20,
        }
    }
}

impl Shape {
    /// The benchmarks, in the order they run: stat, put/get, stream, list,
    /// delete, walk, rename, concurrent writes.
    pub fn benches(&self) -> Vec<Bench> {
        let mut out = vec![Bench::Stat];
        out.extend(self.sizes.iter().map(|&n| Bench::PutGet(n)));
        out.extend(self.sizes.iter().map(|&n| Bench::Stream(n)));
        out.extend(self.lists.iter().map(|&n| Bench::List(n)));
        out.extend(self.lists.iter().map(|&n| Bench::Delete(n)));
        out.extend(self.walks.iter().map(|&n| Bench::Walk(n)));
        out.extend(self.rename.map(Bench::Rename));
        out.extend(self.writers.iter().map(|&writers| Bench::ConcurrentWrite {
            writers,
            size: self.writer_size,
        }));
        out
    }
}

/// How many calls each benchmark gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Timed calls per benchmark (at least 1).
    pub iterations: usize,
    /// Timed calls of the benchmarks that move 1 GiB or more per call
    /// (at least 1).
    pub large_iterations: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            iterations: 10,
            large_iterations: 3,
        }
    }
}

impl Plan {
    /// The calls `bench` gets.
    pub fn calls(&self, bench: &Bench) -> usize {
        if bench.is_large() {
            self.large_iterations.max(1)
        } else {
            self.iterations.max(1)
        }
    }
}

/// The figures of one benchmark on one backend.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The benchmark.
    pub bench: Bench,
    /// Every timed call, in the order they ran.
    pub samples: Vec<Sample>,
}

impl Figure {
    /// The `q` quantile (0.0 to 1.0) of the call times, nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut s: Vec<Duration> = self.samples.iter().map(|s| s.time).collect();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    /// Calls per second over the summed call time.
    pub fn ops_per_sec(&self) -> f64 {
        let total: Duration = self.samples.iter().map(|s| s.time).sum();
        if total.is_zero() {
            return 0.0;
        }
        self.samples.len() as f64 / total.as_secs_f64()
    }

    /// MiB/s over the summed call time, for benchmarks that move bytes.
    pub fn mib_per_sec(&self) -> Option<f64> {
        let bytes = self.bench.bytes_per_call();
        (bytes > 0).then(|| self.ops_per_sec() * bytes as f64 / f64::from(1 << 20))
    }

    /// Backend requests per call, averaged; `None` when the driver does
    /// not count requests.
    pub fn requests_per_op(&self) -> Option<f64> {
        let counted: Option<Vec<u64>> = self.samples.iter().map(|s| s.requests).collect();
        let counted = counted.filter(|c| !c.is_empty())?;
        Some(counted.iter().sum::<u64>() as f64 / counted.len() as f64)
    }
}

/// What became of one benchmark on one backend.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It ran every call.
    Done(Figure),
    /// Its setup or a call failed; the run went on with the next benchmark.
    Failed {
        /// The benchmark.
        bench: Bench,
        /// The driver's error, as it would be printed.
        error: String,
    },
}

impl Outcome {
    /// The benchmark either way.
    pub fn bench(&self) -> &Bench {
        match self {
            Outcome::Done(f) => &f.bench,
            Outcome::Failed { bench, .. } => bench,
        }
    }
}

/// Where a run is, for a progress display.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    /// The benchmark's setup started.
    Preparing(&'a Bench),
    /// A call of the benchmark finished (`done` of `of`).
    Called {
        /// The benchmark.
        bench: &'a Bench,
        /// Calls done so far.
        done: usize,
        /// Calls it gets.
        of: usize,
    },
    /// The benchmark finished, but deleting its directory failed (its
    /// figures stand; what is left stays under `root`).
    CleanupFailed {
        /// The benchmark.
        bench: &'a Bench,
        /// Why the delete failed.
        error: &'a Error,
    },
}

/// Runs `benches` against `driver` under `root` (which should not exist
/// yet; each benchmark works in a directory of its own below it and
/// deletes it when done), pushing each benchmark's outcome to `out` as it
/// finishes and reporting each step to `progress`. A benchmark that fails
/// is reported as its error and the run goes on with the next. The caller
/// deletes `root` at the end, also when the run is dropped half-way
/// (Ctrl-C); `out` then holds the benchmarks that finished.
pub async fn run(
    driver: &Driver,
    root: &str,
    benches: &[Bench],
    plan: Plan,
    out: &mut Vec<Outcome>,
    mut progress: impl FnMut(Step<'_>),
) {
    for (i, bench) in benches.iter().enumerate() {
        progress(Step::Preparing(bench));
        let dir = format!("{root}/{i:02}-{}", bench.group());
        let of = plan.calls(bench);
        let result = async {
            let prepared = bench.prepare(driver, &dir).await?;
            let mut samples = Vec::with_capacity(of);
            for done in 1..=of {
                match prepared.call().await {
                    Ok(s) => samples.push(s),
                    Err(e) => {
                        // Best effort: the caller deletes `root` anyway.
                        let _ = prepared.finish().await;
                        return Err(e);
                    }
                }
                progress(Step::Called { bench, done, of });
            }
            if let Err(e) = prepared.finish().await {
                // The figures stand; the caller's delete of `root` tries
                // again.
                progress(Step::CleanupFailed { bench, error: &e });
            }
            Ok(samples)
        }
        .await;
        out.push(match result {
            Ok(samples) => Outcome::Done(Figure {
                bench: bench.clone(),
                samples,
            }),
            Err(e) => Outcome::Failed {
                bench: bench.clone(),
                error: e.to_string(),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order_of_the_default_set() {
        let names: Vec<String> = Shape::default().benches().iter().map(Bench::name).collect();
        assert_eq!(
            names,
            [
                "stat",
                "put_get/0B",
                "put_get/1KiB",
                "put_get/1MiB",
                "put_get/1GiB",
                "stream/0B",
                "stream/1KiB",
                "stream/1MiB",
                "stream/1GiB",
                "list/5",
                "list/50",
                "delete/5",
                "delete/50",
                "walk/1000",
                "walk/10000",
                "rename/64MiB",
                "concurrent_write/1x8MiB",
                "concurrent_write/4x8MiB",
                "concurrent_write/16x8MiB",
            ]
        );
    }

    #[test]
    fn large_benchmarks_get_fewer_calls() {
        let plan = Plan {
            iterations: 7,
            large_iterations: 2,
        };
        assert_eq!(plan.calls(&Bench::PutGet(1 << 30)), 2);
        assert_eq!(plan.calls(&Bench::PutGet(1 << 20)), 7);
        assert_eq!(
            plan.calls(&Bench::ConcurrentWrite {
                writers: 16,
                size: 64 << 20
            }),
            2,
            "16 x 64 MiB is 1 GiB per call"
        );
        let zero = Plan {
            iterations: 0,
            large_iterations: 0,
        };
        assert_eq!(zero.calls(&Bench::Stat), 1, "at least one call");
    }

    fn figure(ms: &[u64], requests: Option<&[u64]>) -> Figure {
        Figure {
            bench: Bench::PutGet(2 << 20),
            samples: ms
                .iter()
                .enumerate()
                .map(|(i, &t)| Sample {
                    time: Duration::from_millis(t),
                    requests: requests.map(|r| r[i]),
                })
                .collect(),
        }
    }

    #[test]
    fn quantiles_rates_and_requests() {
        let f = figure(&[40, 10, 30, 20], Some(&[2, 2, 3, 1]));
        assert_eq!(f.quantile(0.5), Duration::from_millis(20));
        assert_eq!(f.quantile(0.99), Duration::from_millis(40));
        assert!((f.ops_per_sec() - 40.0).abs() < 1e-9, "4 calls in 0.1 s");
        assert_eq!(f.mib_per_sec().map(|m| m.round()), Some(80.0));
        assert_eq!(f.requests_per_op(), Some(2.0));
        assert_eq!(figure(&[1], None).requests_per_op(), None);
    }

    #[tokio::test]
    async fn every_benchmark_runs_on_the_inmemory_driver_and_cleans_up() {
        let fs = Driver::new(regstore_driver_inmemory::InMemoryDriver::new());
        let shape = Shape {
            sizes: vec![0, 1 << 10],
            lists: vec![3],
            walks: vec![150],
            rename: Some(1 << 10),
            writers: vec![1, 3],
            writer_size: 1 << 10,
        };
        let plan = Plan {
            iterations: 3,
            large_iterations: 1,
        };
        let mut steps = 0;
        let mut results = Vec::new();
        run(&fs, "/bench", &shape.benches(), plan, &mut results, |_| {
            steps += 1
        })
        .await;
        assert_eq!(results.len(), shape.benches().len());
        for r in &results {
            let Outcome::Done(f) = r else {
                panic!("{r:?}");
            };
            assert_eq!(f.samples.len(), 3, "{}", f.bench.name());
        }
        assert_eq!(
            steps,
            results.len() * 4,
            "one preparing and three calls each"
        );
        let left = fs.list("/bench").await;
        assert!(
            matches!(&left, Ok(v) if v.is_empty()) || matches!(&left, Err(e) if e.is_not_found()),
            "each benchmark deletes its directory: {left:?}"
        );
    }
}
