//! The blob-descriptor cache (`storage.cache.blobdescriptor`) over HTTP:
//! it answers without the storage, forgets what is deleted (through the
//! API, by garbage collection, by another instance sharing Redis), and a
//! Redis that goes away costs cache errors, never a failed request.
//!
//! Redis is the test Redis (`REGSTORE_REDIS_ADDR`, see `common::setups`)
//! or, for the outage, a private `redis-server` this test starts and kills.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use regstore_server::gc;
use reqwest::StatusCode;

/// The setups with a cache (the Redis ones when the test Redis is there),
/// and one without, for contrast.
fn cached_setups() -> Vec<&'static str> {
    let mut s = vec!["filesystem+inmemory-cache"];
    if redis_addr().is_some() {
        s.extend(["inmemory+redis-cache", "filesystem+redis-cache"]);
    }
    s
}

/// Storage driver operations so far.
fn storage_calls(reg: &TestRegistry) -> u64 {
    reg.registry.driver().metrics().total_calls()
}

async fn head(reg: &TestRegistry, repo: &str, d: &str) -> StatusCode {
    reg.client
        .head(reg.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .status()
}

fn cache_stat(reg: &TestRegistry, f: impl Fn(&regstore_server::cache::CacheStats) -> u64) -> u64 {
    f(reg.registry.blob_cache().expect("a cache").stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_head_is_404_in_every_mode() {
    let mut setups = vec!["inmemory", "filesystem"];
    setups.extend(cached_setups());
    for setup in setups {
        let reg = start(setup, DELETE_ON, "").await;
        let d = reg.push_blob("team/app", b"to be deleted").await;
        let other = reg.push_blob("team/other", b"to be deleted").await;
        assert_eq!(d, other);
        assert_eq!(head(&reg, "team/app", &d).await, StatusCode::OK, "{setup}");
        assert_eq!(head(&reg, "team/app", &d).await, StatusCode::OK, "{setup}");
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/team/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{setup}");
        assert_eq!(
            head(&reg, "team/app", &d).await,
            StatusCode::NOT_FOUND,
            "{setup}: a deleted blob is gone from its repository"
        );
        let r = reg
            .client
            .get(reg.url(&format!("/v2/team/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{setup}");
        assert_eq!(
            head(&reg, "team/other", &d).await,
            StatusCode::OK,
            "{setup}: another repository keeps it"
        );
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/team/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{setup}: deleted once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_asks_the_storage_nothing() {
    // Without a cache, every HEAD asks the storage (so the count below can
    // tell).
    let reg = start("filesystem", "", "").await;
    let d = reg.push_blob("r", b"counted").await;
    let before = storage_calls(&reg);
    assert_eq!(head(&reg, "r", &d).await, StatusCode::OK);
    assert!(
        storage_calls(&reg) > before,
        "no cache: the storage answers"
    );

    for setup in cached_setups() {
        let reg = start(setup, "", "").await;
        let d = reg.push_blob("r", b"counted").await;
        // The push filled the cache: even the first HEAD is a hit.
        let before = storage_calls(&reg);
        for _ in 0..5 {
            assert_eq!(head(&reg, "r", &d).await, StatusCode::OK, "{setup}");
        }
        let r = reg
            .client
            .get(reg.url(&format!("/v2/r/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(&r.bytes().await.unwrap()[..], b"counted");
        assert_eq!(
            storage_calls(&reg) - before,
            1,
            "{setup}: HEADs are answered by the cache; the GET reads the data once"
        );
        assert_eq!(
            cache_stat(&reg, |s| s.hits.load(Ordering::Relaxed)),
            6,
            "{setup}"
        );
        assert_eq!(
            cache_stat(&reg, |s| s.errors.load(Ordering::Relaxed)),
            0,
            "{setup}"
        );
        // A blob of another repository is not this one's.
        assert_eq!(
            head(&reg, "elsewhere", &d).await,
            StatusCode::NOT_FOUND,
            "{setup}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collected_blob_is_404_with_every_cache() {
    for setup in cached_setups() {
        let reg = start(setup, "", "").await;
        let d = reg.push_blob("r", b"unreferenced").await;
        let other = reg.push_blob("q", b"unreferenced").await;
        assert_eq!(d, other);
        assert_eq!(head(&reg, "r", &d).await, StatusCode::OK, "{setup}");
        let report = gc::collect(&reg.registry, &gc::Options::default())
            .await
            .expect("collection");
        assert_eq!(
            report.blobs_deleted.len(),
            1,
            "{setup}: {}",
            report.summary()
        );
        assert_eq!(report.blobs_deleted[0].0.to_string(), d, "{setup}");
        assert!(
            !reg.registry
                .holds_blob(&report.blobs_deleted[0].0)
                .await
                .unwrap(),
            "{setup}: the descriptor went with the data"
        );
        for repo in ["r", "q"] {
            assert_eq!(
                head(&reg, repo, &d).await,
                StatusCode::NOT_FOUND,
                "{setup}: collected, so gone from {repo}"
            );
        }
        // Pushed again, it is back (the cache was told of the new copy).
        reg.push_blob("r", b"unreferenced").await;
        assert_eq!(head(&reg, "r", &d).await, StatusCode::OK, "{setup}");
        assert_eq!(
            head(&reg, "q", &d).await,
            StatusCode::NOT_FOUND,
            "{setup}: q's link went with the collection"
        );
    }
}

/// Two instances on one filesystem root and one Redis database: a delete
/// through one is seen by the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_see_each_others_deletes() {
    let Some(addr) = redis_addr() else { return };
    let db = redis_test_db(&addr).await;
    let root = tempfile::tempdir().unwrap();
    let extra = format!(
        "{DELETE_ON}{}{}",
        cache_section("redis"),
        redis_section(&addr, db)
    );
    let a = start_on_root(root.path(), &extra).await;
    let b = start_on_root(root.path(), &extra).await;
    let d = a.push_blob("shared", b"seen by both").await;
    assert_eq!(head(&b, "shared", &d).await, StatusCode::OK);
    let calls = storage_calls(&b);
    assert_eq!(head(&b, "shared", &d).await, StatusCode::OK);
    assert_eq!(storage_calls(&b), calls, "b answers from the shared cache");
    let r = a
        .client
        .delete(a.url(&format!("/v2/shared/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        head(&b, "shared", &d).await,
        StatusCode::NOT_FOUND,
        "a's delete is seen by b"
    );
    // And a collection through b is seen by a.
    let d2 = b.push_blob("other", b"collected through b").await;
    assert_eq!(head(&a, "other", &d2).await, StatusCode::OK);
    gc::collect(&b.registry, &gc::Options::default())
        .await
        .expect("collection");
    assert_eq!(head(&a, "other", &d2).await, StatusCode::NOT_FOUND);
}

/// A private redis-server on `port`, killed when dropped.
struct PrivateRedis(Child);

impl PrivateRedis {
    async fn start(program: &std::path::Path, port: u16) -> PrivateRedis {
        let child = Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--databases", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        // Killed and waited for by Drop, also if it never answers.
        let redis = PrivateRedis(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} does not accept connections");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_costs_errors_never_requests() {
    let Some(program) = require_program("redis-server", "apt-get install redis-server") else {
        return;
    };
    let port = free_port();
    let redis = PrivateRedis::start(&program, port).await;
    let yaml = format!(
        "{}redis:\n  addr: 127.0.0.1:{port}\n  dialtimeout: 500ms\n  readtimeout: 500ms\n  writetimeout: 500ms\n",
        cache_section("redis")
    );
    let reg = start(
        "filesystem",
        &yaml,
        "http:\n  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n",
    )
    .await;
    let errors = |reg: &TestRegistry| cache_stat(reg, |s| s.errors.load(Ordering::Relaxed));
    let hits = |reg: &TestRegistry| cache_stat(reg, |s| s.hits.load(Ordering::Relaxed));
    let (_, manifest) = reg.push_image("app", "v1", "before").await;
    let d = reg.push_blob("app", b"before the outage").await;
    assert_eq!(head(&reg, "app", &d).await, StatusCode::OK);
    assert!(hits(&reg) > 0, "Redis answers");
    assert_eq!(errors(&reg), 0);

    drop(redis);
    // Pushes, HEADs and pulls go on, from the storage.
    let d2 = reg.push_blob("app", b"during the outage").await;
    for digest in [&d, &d2] {
        assert_eq!(head(&reg, "app", digest).await, StatusCode::OK);
        let r = reg
            .client
            .get(reg.url(&format!("/v2/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(&sha256(&r.bytes().await.unwrap()), digest);
    }
    reg.push_image("app", "v2", "during").await;
    let r = reg
        .client
        .get(reg.url("/v2/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), manifest);
    assert_eq!(
        head(&reg, "app", &sha256(b"never pushed")).await,
        StatusCode::NOT_FOUND
    );
    let errors_during = errors(&reg);
    assert!(errors_during > 0, "the outage is counted");
    let scrape = reg
        .client
        .get(format!(
            "{}/metrics",
            reg.debug.as_ref().expect("debug server")
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scrape.contains(&format!(
            "regstore_storage_cache_errors_total{{cache=\"redis\"}} {errors_during}"
        )),
        "{scrape}"
    );

    // Redis is back (empty): a miss fills it again, then hits resume.
    let _redis = PrivateRedis::start(&program, port).await;
    let before = hits(&reg);
    let mut resumed = false;
    for _ in 0..150 {
        assert_eq!(head(&reg, "app", &d2).await, StatusCode::OK);
        if hits(&reg) > before {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(resumed, "hits resume once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_repair_and_proxy_expiry_tell_the_cache() {
    use regstore_server::registry::{Digest, layout};
    for setup in cached_setups() {
        // A blob whose data vanished behind the registry's back: the cache
        // still answers, until `check --repair` removes the dangling link.
        let reg = start(setup, "", "").await;
        let d = reg.push_blob("r", b"its data vanishes").await;
        let digest: Digest = d.parse().unwrap();
        assert_eq!(head(&reg, "r", &d).await, StatusCode::OK, "{setup}");
        reg.registry
            .driver()
            .delete(&layout::blob_data(&digest))
            .await
            .unwrap();
        assert_eq!(
            head(&reg, "r", &d).await,
            StatusCode::OK,
            "{setup}: the cache answers (so what follows shows the repair told it)"
        );
        let report = regstore_server::check::check(
            &reg.registry,
            &regstore_server::check::Options {
                repair: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(report.repaired.len(), 1, "{setup}: {}", report.summary());
        assert_eq!(head(&reg, "r", &d).await, StatusCode::NOT_FOUND, "{setup}");

        // Expiry deletes layer links older than the ttl (all of them, an
        // hour from now); the cache must not keep answering for them.
        let reg = start(setup, "", "").await;
        let d = reg.push_blob("r", b"expires").await;
        assert_eq!(head(&reg, "r", &d).await, StatusCode::OK, "{setup}");
        let expired = regstore_server::proxy::expiry::expire(
            &reg.registry,
            Duration::from_secs(1),
            std::time::SystemTime::now() + Duration::from_secs(3600),
        )
        .await
        .unwrap();
        assert_eq!(expired.layer_links, 1, "{setup}");
        assert_eq!(head(&reg, "r", &d).await, StatusCode::NOT_FOUND, "{setup}");
    }
}
