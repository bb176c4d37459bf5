//! distribution's driver benchmarks, plus walk and the filesystem-vs-tokio::fs
//! baseline, for inmemory and filesystem.
//!
//! `cargo bench -p regstore-benches --bench drivers` runs them all;
//! `-- filesystem/put_get/1MiB` (a criterion filter) runs one. The 1 GiB
//! sizes take a while; `-- --skip 1GiB` leaves them out.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use regstore_benches as w;
use regstore_core::Driver;
use regstore_driver_filesystem::FilesystemDriver;
use regstore_driver_inmemory::InMemoryDriver;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start tokio: {e}"),
    }
}

fn subjects(tmp: &Path) -> Vec<(&'static str, Driver)> {
    let fs = match FilesystemDriver::new(tmp.join("fs")) {
        Ok(d) => d,
        Err(e) => panic!("cannot create the filesystem driver: {e}"),
    };
    vec![
        ("inmemory", Driver::new(InMemoryDriver::new())),
        ("filesystem", Driver::new(fs)),
    ]
}

/// Deletes `dir`; nothing there (a filter skipped the benchmark that fills
/// it) is fine.
fn clear(rt: &Runtime, driver: &Driver, dir: &str) {
    match rt.block_on(driver.delete(dir)) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => panic!("cannot delete {dir}: {e}"),
    }
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark workload failed: {e}"),
    }
}

fn bench_drivers(c: &mut Criterion) {
    let rt = runtime();
    let tmp = must(tempfile::tempdir());
    for (name, driver) in subjects(tmp.path()) {
        let mut g = c.benchmark_group(name);
        for &(label, size) in w::SIZES {
            let data = w::data(size);
            if size >= 1 << 30 {
                g.sample_size(10).measurement_time(Duration::from_secs(20));
            } else {
                g.sample_size(30).measurement_time(Duration::from_secs(3));
            }
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::new("put_get", label), |b| {
                b.to_async(&rt)
                    .iter(|| async { must(w::put_get(&driver, "/bench/put_get", &data).await) })
            });
            g.bench_function(BenchmarkId::new("stream", label), |b| {
                b.to_async(&rt).iter(|| async {
                    must(w::stream_put_get(&driver, "/bench/stream", &data).await)
                })
            });
            clear(&rt, &driver, "/bench");
        }
        g.sample_size(30).measurement_time(Duration::from_secs(3));
        g.throughput(Throughput::Elements(1));
        for n in [5usize, 50] {
            must(rt.block_on(w::populate(&driver, "/list", n)));
            g.bench_function(BenchmarkId::new("list", n), |b| {
                b.to_async(&rt)
                    .iter(|| async { must(w::list(&driver, "/list", n).await) })
            });
            clear(&rt, &driver, "/list");
            g.bench_function(BenchmarkId::new("delete", n), |b| {
                // Only the delete is timed; filling the folder is not.
                b.to_async(&rt).iter_custom(|iters| {
                    let driver = driver.clone();
                    async move {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            must(w::populate(&driver, "/del", n).await);
                            let started = Instant::now();
                            must(driver.delete("/del").await);
                            timed += started.elapsed();
                        }
                        timed
                    }
                })
            });
        }
        must(rt.block_on(w::populate_tree(&driver, "/walk", 10_000)));
        g.throughput(Throughput::Elements(10_100));
        g.bench_function("walk/10000", |b| {
            b.to_async(&rt)
                .iter(|| async { must(w::walk(&driver, "/walk").await) })
        });
        clear(&rt, &driver, "/walk");
        g.finish();
    }
}

/// The filesystem driver's put+get of 1 MiB against plain tokio::fs doing
/// the same work, in the same run (target: within 10 %).
fn bench_filesystem_overhead(c: &mut Criterion) {
    let rt = runtime();
    let tmp = must(tempfile::tempdir());
    let raw_dir = tmp.path().join("raw");
    must(std::fs::create_dir_all(&raw_dir));
    let driver = Driver::new(must(FilesystemDriver::new(tmp.path().join("fs"))));
    let data = w::data(1 << 20);
    let mut g = c.benchmark_group("filesystem_vs_tokio_fs");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("tokio_fs/put_get/1MiB", |b| {
        b.to_async(&rt)
            .iter(|| async { must(w::tokio_fs_put_get(&raw_dir, "blob", &data).await) })
    });
    g.bench_function("driver/put_get/1MiB", |b| {
        b.to_async(&rt)
            .iter(|| async { must(w::put_get(&driver, "/blob", &data).await) })
    });
    g.finish();
}

criterion_group!(benches, bench_filesystem_overhead, bench_drivers);
criterion_main!(benches);
