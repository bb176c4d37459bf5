//! The per-operation benchmark set: each operation run a fixed number of
//! times against a driver, timing every call and counting the backend
//! requests it cost (for drivers that count them, see
//! [`Driver::backend_requests`]). `regstore bench` prints these figures;
//! the workloads are the same functions the criterion benches time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use regstore_core::{Driver, Result};

use crate::{PIECE, data, list, populate, populate_tree, put_get, walk};

/// How much work each benchmark does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Timed calls per benchmark (at least 1).
    pub iterations: usize,
    /// Files in the listed and in the deleted directory.
    pub list_entries: usize,
    /// Files in the walked tree (100 per directory).
    pub walk_entries: usize,
    /// Bytes of the streamed write.
    pub stream_bytes: usize,
    /// Bytes of the put-then-get.
    pub put_get_bytes: usize,
}

impl Default for Plan {
    /// Issue 4's set: stat, list of 50, walk of 1,000 files, delete of a
    /// 50-file folder, 64 MiB stream write, 1 MiB put+get; 10 calls each.
    fn default() -> Self {
        Plan {
            iterations: 10,
            list_entries: 50,
            walk_entries: 1_000,
            stream_bytes: 64 << 20,
            put_get_bytes: 1 << 20,
        }
    }
}

/// The figures of one benchmark.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Benchmark name, e.g. `list/50`.
    pub name: String,
    /// Duration of every timed call, in the order they ran.
    pub samples: Vec<Duration>,
    /// Payload bytes moved per call (0 for metadata operations).
    pub bytes: u64,
    /// Backend requests per call, averaged; `None` when the driver does not
    /// count requests.
    pub requests: Option<f64>,
}

impl Figure {
    /// The `q` quantile (0.0 to 1.0) of the samples, nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    /// Calls per second over the summed call time.
    pub fn ops_per_sec(&self) -> f64 {
        let total: Duration = self.samples.iter().sum();
        if total.is_zero() {
            return 0.0;
        }
        self.samples.len() as f64 / total.as_secs_f64()
    }

    /// MiB/s over the summed call time, for benchmarks that move bytes.
    pub fn mib_per_sec(&self) -> Option<f64> {
        (self.bytes > 0).then(|| self.ops_per_sec() * self.bytes as f64 / f64::from(1 << 20))
    }
}

/// Times `iterations` calls of `op`, each after an untimed `setup`, and
/// counts the backend requests of the timed part only.
async fn measure<S, SF, O, OF>(
    driver: &Driver,
    name: String,
    bytes: u64,
    iterations: usize,
    mut setup: S,
    mut op: O,
) -> Result<Figure>
where
    S: FnMut() -> SF,
    SF: Future<Output = Result<()>>,
    O: FnMut() -> OF,
    OF: Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(iterations);
    let mut requests = 0u64;
    for _ in 0..iterations.max(1) {
        setup().await?;
        let before = driver.backend_requests();
        let started = Instant::now();
        op().await?;
        samples.push(started.elapsed());
        if let (Some(b), Some(a)) = (before, driver.backend_requests()) {
            requests += a - b;
        }
    }
    let counted = driver.backend_requests().is_some();
    let n = samples.len() as f64;
    Ok(Figure {
        name,
        samples,
        bytes,
        requests: counted.then(|| requests as f64 / n),
    })
}

async fn nothing() -> Result<()> {
    Ok(())
}

/// A writer fed `data` in 1 MiB pieces and committed (no read back).
///
/// # Errors
/// Driver errors.
pub async fn stream_write(driver: &Driver, path: &str, data: &Bytes) -> Result<()> {
    let mut w = driver.writer(path, false).await?;
    for start in (0..data.len()).step_by(PIECE) {
        w.write(data.slice(start..(start + PIECE).min(data.len())))
            .await?;
    }
    w.commit().await
}

/// Runs the whole set under `root` (which must not exist yet; the caller
/// deletes it afterwards), calling `progress` with each benchmark's name
/// before it starts.
///
/// # Errors
/// The first driver error; what was created stays under `root`.
pub async fn run(
    driver: &Driver,
    root: &str,
    plan: &Plan,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Figure>> {
    let n = plan.iterations;
    let mut out = Vec::new();

    progress("stat");
    let file = format!("{root}/stat/file");
    driver.put_content(&file, Bytes::from_static(b"x")).await?;
    out.push(
        measure(driver, "stat".into(), 0, n, nothing, || async {
            driver.stat(&file).await.map(drop)
        })
        .await?,
    );

    let entries = plan.list_entries;
    let name = format!("list/{entries}");
    progress(&name);
    let dir = format!("{root}/list");
    populate(driver, &dir, entries).await?;
    out.push(measure(driver, name, 0, n, nothing, || list(driver, &dir, entries)).await?);

    let name = format!("walk/{}", plan.walk_entries);
    progress(&name);
    let tree = format!("{root}/walk");
    populate_tree(driver, &tree, plan.walk_entries).await?;
    let dirs = plan.walk_entries.div_ceil(100) as u64;
    let want = plan.walk_entries as u64 + dirs;
    out.push(
        measure(driver, name, 0, n, nothing, || async {
            let seen = walk(driver, &tree).await?;
            if seen == want {
                Ok(())
            } else {
                Err(regstore_core::Error::backend(format!(
                    "walk visited {seen} entries, expected {want}"
                )))
            }
        })
        .await?,
    );

    let name = format!("delete/{entries}");
    progress(&name);
    let doomed = format!("{root}/delete");
    out.push(
        measure(
            driver,
            name,
            0,
            n,
            || populate(driver, &doomed, entries),
            || driver.delete(&doomed),
        )
        .await?,
    );

    let size = plan.stream_bytes;
    let name = format!("stream_write/{}", crate::size_label(size));
    progress(&name);
    let payload = data(size);
    let path = format!("{root}/stream/blob");
    out.push(
        measure(driver, name, size as u64, n, nothing, || {
            stream_write(driver, &path, &payload)
        })
        .await?,
    );

    let size = plan.put_get_bytes;
    let name = format!("put_get/{}", crate::size_label(size));
    progress(&name);
    let payload = data(size);
    let path = format!("{root}/put_get/blob");
    out.push(
        measure(driver, name, size as u64, n, nothing, || {
            put_get(driver, &path, &payload)
        })
        .await?,
    );
    Ok(out)
}

/// A Markdown table of `figures` for the backend `label`: one row per
/// benchmark with p50, p99, throughput and requests per call.
pub fn markdown(label: &str, figures: &[Figure]) -> String {
    let mut s = String::from(
        "| backend | benchmark | calls | p50 | p99 | throughput | requests/call |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let throughput = match f.mib_per_sec() {
            Some(m) => format!("{m:.1} MiB/s"),
            None => format!("{:.1} ops/s", f.ops_per_sec()),
        };
        let requests = f
            .requests
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
        s.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {throughput} | {requests} |\n",
            f.name,
            f.samples.len(),
            millis(f.quantile(0.5)),
            millis(f.quantile(0.99)),
        ));
    }
    s
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
