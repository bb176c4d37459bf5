//! The criterion front end of the benchmark set: each [`Bench`] becomes a
//! criterion benchmark timed by [`regstore_benches::set::Prepared::call`],
//! the code `regstore bench` times too.

#![allow(dead_code)] // each bench target uses a different part

use std::time::Duration;

use criterion::{Criterion, Throughput};
use regstore_benches::set::{Bench, Prepared};
use regstore_core::Driver;
use tokio::runtime::Runtime;

/// A multi-threaded runtime for the async benchmarks.
pub fn runtime() -> Runtime {
    must(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    )
}

/// The value, or a panic naming the error: a benchmark cannot go on
/// without it.
pub fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark failed: {e}"),
    }
}

/// Deletes `dir` on `driver`; nothing there (a filter skipped the
/// benchmarks that fill it) is fine.
pub fn clear(rt: &Runtime, driver: &Driver, dir: &str) {
    match rt.block_on(driver.delete(dir)) {
        Err(e) if !e.is_not_found() => panic!("cannot delete {dir} on {}: {e}", driver.name()),
        _ => {}
    }
}

/// Adds every benchmark of `benches` on `driver` to the criterion group
/// `group`, each named as `regstore bench` names it (`s3/put_get/1MiB`).
/// A benchmark's setup runs only if criterion's filter selects it, and its
/// data is deleted before the next one starts. Work happens under
/// `/criterion` on the driver.
pub fn bench_set(c: &mut Criterion, rt: &Runtime, group: &str, driver: &Driver, benches: &[Bench]) {
    let mut g = c.benchmark_group(group);
    for (i, bench) in benches.iter().enumerate() {
        if bench.is_large() {
            g.sample_size(10).measurement_time(Duration::from_secs(30));
        } else {
            g.sample_size(20).measurement_time(Duration::from_secs(3));
        }
        g.throughput(match bench.bytes_per_call() {
            0 => Throughput::Elements(1),
            n => Throughput::Bytes(n),
        });
        let dir = format!("/criterion/{i:02}-{}", bench.group());
        let mut prepared: Option<Prepared<'_>> = None;
        g.bench_function(bench.name(), |b| {
            let p: &Prepared<'_> =
                prepared.get_or_insert_with(|| must(rt.block_on(bench.prepare(driver, &dir))));
            b.to_async(rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    timed += must(p.call().await).time;
                }
                timed
            })
        });
        if let Some(p) = prepared {
            must(rt.block_on(p.finish()));
        }
    }
    g.finish();
}
