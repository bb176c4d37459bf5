//! The short version of the load tool (`load-bench`, engine
//! `regstore_benches::load`): 50 clients pushing and pulling overlapping
//! images for about 10 s against (a) one `regstore serve` on the
//! filesystem driver and (b) two on one s3 bucket (moto, from
//! `scripts/backends.sh start s3`), each client's requests alternating
//! between the two, mid-upload included.
//!
//! Every run must end with no failed request, no upload session lost, every
//! pull verified byte for byte, every kind of request exercised, and each
//! instance's peak RSS under [`RSS_LIMIT_MIB`]. Without moto the s3 case is
//! skipped, and fails under `REGSTORE_REQUIRE_BACKENDS=1` (CI). The
//! servers listen on 127.0.0.1 and are killed when the run ends.

use std::path::Path;
use std::time::Duration;

use regstore_benches::load::{self, LoadOptions, Op, Report, Setup};

/// Bound on each instance's peak RSS (`VmHWM`) during the short run, for
/// the build of `regstore` the tests run. The release build under the full load
/// stays far below it (docs/reliability.md).
const RSS_LIMIT_MIB: u64 = 128;

/// 50 clients for 10 s at most, 20 iterations each at most; images of 3
/// layers of 96 KiB (2 from a pool of 4 shared by all, 1 of 2 of the
/// client's own) in 32 KiB chunks, in 5 repositories.
fn short() -> LoadOptions {
    LoadOptions {
        clients: 50,
        duration: Duration::from_secs(10),
        iterations: Some(20),
        layers: 3,
        layer_size: 96 << 10,
        chunk_size: 32 << 10,
        pool: 4,
        own_layers: 2,
        repos: 5,
        seed: 22,
        request_timeout: Duration::from_secs(60),
    }
}

/// [`short`] scaled to what moto answers (about 30 registry requests a
/// second under this load): 2 iterations per client at most, images of 2
/// layers of 64 KiB.
fn short_on_moto() -> LoadOptions {
    LoadOptions {
        duration: Duration::from_secs(5),
        iterations: Some(2),
        layers: 2,
        layer_size: 64 << 10,
        ..short()
    }
}

fn check(r: &Report, instances: usize) {
    eprintln!("{}", r.to_markdown());
    assert_eq!(r.error_count(), 0, "failed requests: {:?}", r.errors);
    assert_eq!(r.sessions_lost, 0, "upload sessions lost");
    assert!(r.sessions > 0, "no upload session was started");
    assert!(
        r.images_pushed >= r.clients as u64,
        "each client pushes at least one image"
    );
    assert!(r.pulls > 0, "nothing pulled");
    assert_eq!(r.pulls_verified, r.pulls, "pulls not verified");
    for op in Op::ALL {
        assert!(
            r.ops.get(&op).is_some_and(|s| s.requests > 0),
            "{} never sent",
            op.name()
        );
    }
    assert_eq!(r.instances, instances);
    assert_eq!(r.memory.len(), instances, "each instance's memory sampled");
    for m in &r.memory {
        let peak = m.peak_kib.unwrap_or(0);
        assert!(peak > 0, "{}: no peak RSS read", m.name);
        assert!(
            peak < RSS_LIMIT_MIB * 1024,
            "{}: peak RSS {} MiB, bound {RSS_LIMIT_MIB} MiB",
            m.name,
            peak / 1024
        );
    }
}

fn regstore() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_regstore"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_one_instance_on_filesystem() {
    let r = load::run_setup(regstore(), &Setup::Filesystem, &short())
        .await
        .expect("load run");
    check(&r, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_two_instances_on_one_s3_bucket() {
    let Some(params) = regstore_testenv::backend::emulator_params_or_skip("s3").await else {
        return;
    };
    let r = load::run_setup(regstore(), &Setup::S3Pair(params), &short_on_moto())
        .await
        .expect("load run");
    check(&r, 2);
}

/// The engine sees a lost session: two instances that do not share
/// storage (each on a filesystem root of its own) cannot continue each
/// other's uploads, so the alternating clients must count sessions lost
/// and the answers that lose them; a clean report above means something.
/// (An upload id carries its start, so an instance takes one begun on the
/// other as an upload that has received nothing: its next chunk is
/// answered 416, as is one that skipped bytes it never saw.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_counts_sessions_lost_by_instances_that_share_nothing() {
    use regstore_benches::load::Instance;
    use regstore_benches::process::{quiet_config, serve_regstore};
    use regstore_benches::registry::Target;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut procs = Vec::new();
    let mut instances = Vec::new();
    for name in ["apart-a", "apart-b"] {
        let config = dir.path().join(format!("{name}.yml"));
        std::fs::write(&config, quiet_config(&dir.path().join(name))).expect("config");
        let (p, base) = serve_regstore(regstore(), name, None, Some(&config))
            .await
            .expect("regstore serve");
        instances.push(Instance {
            name: name.to_owned(),
            target: Target::new(base),
            pid: Some(p.pid()),
        });
        procs.push(p);
    }
    let o = LoadOptions {
        clients: 4,
        iterations: Some(3),
        ..short()
    };
    let r = load::run(&instances, &o).await.expect("load run");
    eprintln!("{}", r.to_markdown());
    assert!(r.sessions_lost > 0, "no session counted lost");
    assert!(
        r.errors
            .keys()
            .any(|k| k.contains("upload PATCH: 416") || k.contains("404 BLOB_UPLOAD_UNKNOWN")),
        "{:?}",
        r.errors
    );
    assert!(r.error_count() >= r.sessions_lost);
    assert_eq!(r.memory.len(), 2);
}
