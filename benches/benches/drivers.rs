//! The benchmark set `regstore bench` runs (distribution's driver
//! benchmarks plus stat, walks, rename and concurrent writers; the same
//! code, see `common`), for inmemory and filesystem, and the
//! filesystem-vs-tokio::fs baseline.
//!
//! `cargo bench -p regstore-benches --bench drivers` runs them all;
//! `-- filesystem/put_get/1MiB` (a criterion filter) runs one. The 1 GiB
//! sizes take a while; `-- --skip 1GiB` leaves them out.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bench_set, must, runtime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regstore_benches as w;
use regstore_benches::set::Shape;
use regstore_core::Driver;
use regstore_driver_filesystem::FilesystemDriver;
use regstore_driver_inmemory::InMemoryDriver;

fn subjects(tmp: &Path) -> Vec<(&'static str, Driver)> {
    let fs = must(FilesystemDriver::new(tmp.join("fs")));
    vec![
        ("inmemory", Driver::new(InMemoryDriver::new())),
        ("filesystem", Driver::new(fs)),
    ]
}

/// The whole set ([`Shape::default`]) on each local driver.
fn bench_drivers(c: &mut Criterion) {
    let rt = runtime();
    let tmp = must(tempfile::tempdir());
    let benches = Shape::default().benches();
    for (name, driver) in subjects(tmp.path()) {
        bench_set(c, &rt, name, &driver, &benches);
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
