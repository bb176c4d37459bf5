//! The cloud drivers' put+get of 1 MiB against the same requests sent
//! without the driver, in the same run, on the emulators
//! `scripts/backends.sh start` runs (moto, Azurite, fake-gcs-server).
//! Target: the driver's overhead is within 5 %.
//!
//! `cargo bench -p regstore-benches --bench cloud`. A backend whose emulator
//! is not reachable is left out with a message.
//!
//! The baseline for s3 and azure is `object_store`'s `put` then `get` on the
//! driver's own client and key. For gcs it is the driver backend's JSON-API
//! media upload (fake-gcs-server rejects `object_store`'s XML-API writes)
//! then `object_store`'s `get`: the same requests the driver sends, without
//! the driver around them.

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regstore_benches as w;
use regstore_core::{Driver, RawParams, StoragePath, registry};
use regstore_objectstore::object_store::path::Path;
use regstore_objectstore::object_store::{ObjectStoreExt, PutPayload};
use regstore_objectstore::{Backend, ObjectDriver};
use tokio::runtime::Runtime;

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("benchmark failed: {e}"),
    }
}

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
    must(rt.block_on(driver.delete("/bench")));
}

fn bench_overhead(c: &mut Criterion) {
    regstore_drivers_link();
    let rt = must(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    );
    for name in regstore_testsuite::backend::EMULATED {
        let raw = match rt.block_on(regstore_testsuite::backend::emulator_params(name)) {
            Ok(raw) => raw,
            Err(why) => {
                eprintln!("cloud bench: {name} left out: {why}");
                continue;
            }
        };
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
            other => eprintln!("cloud bench: no baseline for {other}"),
        }
    }
}

/// The drivers register themselves when their crates are linked; naming
/// each constructor makes sure they are.
fn regstore_drivers_link() {
    std::hint::black_box(regstore_driver_s3::s3_driver);
    std::hint::black_box(regstore_driver_azure::azure_driver);
    std::hint::black_box(regstore_driver_gcs::gcs_driver);
}

criterion_group!(benches, bench_overhead);
criterion_main!(benches);
