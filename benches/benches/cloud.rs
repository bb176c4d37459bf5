//! On the emulators `scripts/backends.sh start` runs (moto, Azurite,
//! fake-gcs-server, Swift): the benchmark set `regstore bench` runs (the
//! same code, see `common`) for each cloud driver, and each driver's
//! put+get of 1 MiB against the same requests sent without the driver, in
//! the same run (target: the driver's overhead is within 5 %).
//!
//! `cargo bench -p regstore-benches --bench cloud`; `-- _vs_direct` runs
//! only the overhead comparisons, `-- s3/` only s3's set. A backend whose
//! emulator is not reachable is left out with a message.
//!
//! The baseline for s3, azure and swift is `object_store`'s `put` then
//! `get` on the driver's own client and key (for swift, the driver's own
//! `ObjectStore` over the Swift API). For gcs it is the driver backend's JSON-API
//! media upload (fake-gcs-server rejects `object_store`'s XML-API writes)
//! then `object_store`'s `get`: the same requests the driver sends, without
//! the driver around them.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{bench_set, clear, must, runtime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regstore_benches as w;
use regstore_benches::set::Shape;
use regstore_core::{Driver, RawParams, StoragePath, registry};
use regstore_objectstore::object_store::path::Path;
use regstore_objectstore::object_store::{ObjectStoreExt, PutPayload};
use regstore_objectstore::{Backend, ObjectDriver};
use tokio::runtime::Runtime;

fn params(driver: &str, raw: &RawParams) -> regstore_core::Params {
    let Some(factory) = registry::drivers().into_iter().find(|f| f.name == driver) else {
        panic!("driver {driver} is not registered");
    };
    must(regstore_core::params::resolve(
        factory.name,
        factory.params,
        raw,
    ))
}

/// Put then get on the backend directly (see the file docs).
async fn direct<B: Backend>(d: &ObjectDriver<B>, key: &Path, data: &Bytes, via_backend: bool) {
    let payload = PutPayload::from_bytes(data.clone());
    if via_backend {
        must(d.backend().put(key, payload).await);
    } else {
        must(d.backend().store().put(key, payload).await);
    }
    let got = must(must(d.backend().store().get(key).await).bytes().await);
    assert_eq!(got.len(), data.len(), "read back what was written");
}

fn compare<B: Backend>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    typed: ObjectDriver<B>,
    via_backend: bool,
) {
    let data = w::data(1 << 20);
    let path = "/bench/overhead";
    let key = typed.key(&must(StoragePath::parse(path)));
    let driver = Driver::new(typed.clone());
    let mut g = c.benchmark_group(format!("{name}_vs_direct"));
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("direct/put_get/1MiB", |b| {
        b.to_async(rt)
            .iter(|| direct(&typed, &key, &data, via_backend))
    });
    g.bench_function("driver/put_get/1MiB", |b| {
        b.to_async(rt)
            .iter(|| async { must(w::put_get(&driver, path, &data).await) })
    });
    g.finish();
    clear(rt, &driver, "/bench");
}

fn bench_overhead(c: &mut Criterion) {
    let rt = runtime();
    for (name, raw) in reachable(&rt) {
        let p = params(name, &raw);
        match name {
            "s3" => compare(c, &rt, name, must(regstore_driver_s3::s3_driver(&p)), false),
            "azure" => compare(
                c,
                &rt,
                name,
                must(regstore_driver_azure::azure_driver(&p)),
                false,
            ),
            "gcs" => compare(
                c,
                &rt,
                name,
                must(regstore_driver_gcs::gcs_driver(&p)),
                true,
            ),
            "swift" => compare(
                c,
                &rt,
                name,
                must(rt.block_on(regstore_driver_swift::swift_driver(&p))),
                false,
            ),
            other => eprintln!("cloud bench: no baseline for {other}"),
        }
    }
}

/// The emulated drivers whose emulators answer, each with parameters for
/// a fresh root; the others are left out with a message.
fn reachable(rt: &Runtime) -> Vec<(&'static str, RawParams)> {
    register_cloud_drivers();
    regstore_testenv::backend::EMULATED
        .into_iter()
        .filter_map(
            |name| match rt.block_on(regstore_testenv::backend::emulator_params(name)) {
                Ok(raw) => Some((name, raw)),
                Err(why) => {
                    eprintln!("cloud bench: {name} left out: {why}");
                    None
                }
            },
        )
        .collect()
}

/// Registers the cloud drivers, so they can be built by name.
fn register_cloud_drivers() {
    regstore_driver_s3::register();
    regstore_driver_azure::register();
    regstore_driver_gcs::register();
    regstore_driver_swift::register();
}

/// The whole set ([`Shape::default`]) on each reachable emulator.
fn bench_cloud_set(c: &mut Criterion) {
    let rt = runtime();
    let benches = Shape::default().benches();
    for (name, raw) in reachable(&rt) {
        let driver = must(rt.block_on(registry::create(name, &raw)));
        bench_set(c, &rt, name, &driver, &benches);
        clear(&rt, &driver, "/criterion");
    }
}

criterion_group!(benches, bench_overhead, bench_cloud_set);
criterion_main!(benches);
