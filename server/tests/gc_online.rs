//! Online garbage collection (`storage.maintenance.gc`) while clients push:
//! pushers push images (sharing a base layer, reusing layers of deleted
//! images after checking with `HEAD` as docker does), delete tags now and
//! then, while the registry collects every 200 ms with a 2 s grace period
//! (s3: every second with 5 s, as moto is slow).
//!
//! The guarantee (see `regstore_server::gc`) covers pushes that take less
//! than the grace period: a push refused with `MANIFEST_BLOB_UNKNOWN` fails
//! the test unless it took longer than that (a loaded machine); no
//! accepted image may ever be broken, whatever the timing.
//! Afterwards every image that was pushed and not deleted pulls by digest
//! with every blob intact, every push was accepted, and the collection did
//! delete the garbage. On filesystem, and on s3 (moto).
//!
//! `REGSTORE_GC_SOAK=N` runs N rounds per pusher instead of 25.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use regstore_core::RawParams;
use regstore_server::gc;
use regstore_server::registry::{Digest, layout};
use reqwest::StatusCode;

const GC: &str = "  maintenance:\n    gc:\n      enabled: true\n      interval: 200ms\n      graceperiod: 2s\n      deleteuntagged: true\n";

/// Each registry with its grace period.
async fn registries() -> Vec<(String, TestRegistry, Duration)> {
    let mut out = vec![(
        "filesystem".to_owned(),
        start("filesystem", &format!("{DELETE_ON}{GC}"), "").await,
        Duration::from_secs(2),
    )];
    if let Some(params) = regstore_testenv::backend::emulator_params_or_skip("s3").await {
        out.push(("s3".to_owned(), on_s3(params).await, Duration::from_secs(5)));
    }
    out
}

async fn on_s3(params: RawParams) -> TestRegistry {
    let yaml = serde_json::json!({
        "version": "0.1",
        "storage": {
            "s3": params,
            "delete": { "enabled": true },
            "redirect": { "disable": true },
            "maintenance": { "gc": {
                "enabled": true, "interval": "1s", "graceperiod": "5s", "deleteuntagged": true,
            } },
        },
    });
    start_yaml(&yaml.to_string(), tempfile::tempdir().expect("temp dir")).await
}

/// A pushed image: repository, tag, manifest digest, blobs with contents.
#[derive(Clone)]
struct Pushed {
    repo: String,
    tag: String,
    manifest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

/// Pushes `data` unless `HEAD` says the repository has it (what docker and
/// skopeo do).
async fn ensure_blob(reg: &TestRegistry, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = reg
        .client
        .head(reg.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .expect("HEAD blob");
    match r.status() {
        StatusCode::OK => d,
        StatusCode::NOT_FOUND => reg.push_blob(repo, data).await,
        s => panic!("HEAD {d}: {s}"),
    }
}

/// A small deterministic generator (no rand dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() & 0xff) as u8).collect()
    }
}

struct Shared {
    /// Layers of deleted images, for reuse.
    pool: Mutex<Vec<Vec<u8>>>,
    /// Images deleted, whose blobs collection may delete.
    deleted: Mutex<Vec<Pushed>>,
}

/// Pushes `rounds` images; returns those it kept (pushed, not deleted)
/// and how many pushes slower than `grace` were refused.
async fn pusher(
    reg: Arc<TestRegistry>,
    shared: Arc<Shared>,
    id: usize,
    rounds: usize,
    grace: Duration,
) -> (Vec<Pushed>, usize) {
    let mut refused_slow = 0;
    let mut rng = Lcg(0x5eed + id as u64);
    let repo = format!("online/p{}", id % 2);
    let base = b"base layer shared by every image".repeat(64);
    let mut kept: Vec<Pushed> = Vec::new();
    for i in 0..rounds {
        let mut blobs = Vec::new();
        let config = format!("{{\"pusher\":{id},\"round\":{i}}}").into_bytes();
        let len = 1024 + (rng.next() % 65536) as usize;
        let unique = rng.bytes(len);
        let mut layers = vec![base.clone(), unique];
        let reuse = {
            let pool = shared.pool.lock().unwrap();
            (i % 3 == 0 && !pool.is_empty())
                .then(|| pool[(rng.next() as usize) % pool.len()].clone())
        };
        layers.extend(reuse);
        let push_started = Instant::now();
        let cd = ensure_blob(&reg, &repo, &config).await;
        blobs.push((cd.clone(), config.clone()));
        let mut refs = Vec::new();
        for l in &layers {
            let d = ensure_blob(&reg, &repo, l).await;
            refs.push((d.clone(), l.len()));
            blobs.push((d, l.clone()));
        }
        let refs: Vec<(&str, usize)> = refs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let body = oci_manifest(&cd, config.len(), &refs, None);
        let tag = format!("p{id}-{i}");
        let r = reg.put_manifest(&repo, &tag, OCI_MANIFEST, &body).await;
        let status = r.status();
        let took = push_started.elapsed();
        if status != StatusCode::CREATED {
            let body = text(&r.bytes().await.unwrap_or_default());
            assert!(
                took > grace && body.contains("MANIFEST_BLOB_UNKNOWN"),
                "push {repo}:{tag} ({:.2}s from its first HEAD, grace {grace:?}) refused during collection: {status} {body}",
                took.as_secs_f64(),
            );
            refused_slow += 1;
            continue;
        }
        kept.push(Pushed {
            repo: repo.clone(),
            tag,
            manifest: sha256(&body),
            blobs,
        });
        // Now and then an older image of this pusher is untagged: it and
        // what only it references become garbage.
        if i % 4 == 3 {
            let gone = kept.remove((rng.next() as usize) % kept.len());
            let r = reg
                .client
                .delete(reg.url(&format!("/v2/{}/manifests/{}", gone.repo, gone.tag)))
                .send()
                .await
                .expect("delete tag");
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            shared
                .pool
                .lock()
                .unwrap()
                .extend(gone.blobs.iter().skip(2).map(|(_, b)| b.clone()));
            shared.deleted.lock().unwrap().push(gone);
        }
        tokio::time::sleep(Duration::from_millis(rng.next() % 150)).await;
    }
    (kept, refused_slow)
}

async fn assert_pulls(reg: &TestRegistry, label: &str, image: &Pushed) {
    let r = reg
        .client
        .get(reg.url(&format!("/v2/{}/manifests/{}", image.repo, image.manifest)))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{label}: {}@{} ({}) is gone",
        image.repo,
        image.manifest,
        image.tag
    );
    assert_eq!(sha256(&r.bytes().await.unwrap()), image.manifest);
    for (d, _) in &image.blobs {
        let r = reg
            .client
            .get(reg.url(&format!("/v2/{}/blobs/{d}", image.repo)))
            .send()
            .await
            .expect("GET blob");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{label}: blob {d} of {}:{} is gone",
            image.repo,
            image.tag
        );
        assert_eq!(
            sha256(&r.bytes().await.unwrap()),
            *d,
            "{label}: blob {d} is corrupt"
        );
    }
}

async fn blob_stored(reg: &TestRegistry, d: &str) -> bool {
    let d: Digest = d.parse().unwrap();
    match reg.registry.driver().stat(layout::blob_data(&d)).await {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_while_collecting_are_never_broken() {
    let rounds: usize = std::env::var("REGSTORE_GC_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    for (label, reg, grace) in registries().await {
        let started = Instant::now();
        let reg = Arc::new(reg);
        let shared = Arc::new(Shared {
            pool: Mutex::new(Vec::new()),
            deleted: Mutex::new(Vec::new()),
        });
        let tasks: Vec<_> = (0..3)
            .map(|id| {
                tokio::spawn(pusher(
                    Arc::clone(&reg),
                    Arc::clone(&shared),
                    id,
                    rounds,
                    grace,
                ))
            })
            .collect();
        let mut kept = Vec::new();
        let mut refused_slow = 0;
        for t in tasks {
            let (k, r) = t.await.expect("pusher");
            kept.extend(k);
            refused_slow += r;
        }
        assert!(
            refused_slow * 4 <= 3 * rounds,
            "{label}: {refused_slow} of {} pushes took longer than the grace period and were refused; the machine is too loaded for this test to say anything",
            3 * rounds
        );
        // Collections keep running; let one pass the grace period of the
        // last deletes, then check.
        tokio::time::sleep(grace + Duration::from_millis(500)).await;
        for image in &kept {
            assert_pulls(&reg, &label, image).await;
        }
        // The collection did collect: the unique layer of some deleted
        // image is gone (within a bounded wait).
        let deleted = shared.deleted.lock().unwrap().clone();
        assert!(!deleted.is_empty());
        let still_used: std::collections::HashSet<&String> = kept
            .iter()
            .flat_map(|i| i.blobs.iter().map(|(d, _)| d))
            .collect();
        let collectable: Vec<&String> = deleted
            .iter()
            .map(|i| &i.blobs[2].0)
            .filter(|d| !still_used.contains(d))
            .collect();
        assert!(!collectable.is_empty(), "{label}: nothing to collect");
        let deadline = Instant::now() + grace + Duration::from_secs(20);
        loop {
            let mut gone = 0;
            for d in &collectable {
                if !blob_stored(&reg, d).await {
                    gone += 1;
                }
            }
            if gone == collectable.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: only {gone} of {} unreferenced layers were collected",
                collectable.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // And what is kept still pulls after that.
        for image in &kept {
            assert_pulls(&reg, &label, image).await;
        }
        eprintln!(
            "{label}: {} images kept, {} deleted and collected, {refused_slow} slow pushes refused, in {:.1}s",
            kept.len(),
            collectable.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// The race online collection must win deterministically: a client `HEAD`s
/// a layer of an untagged image (older than the grace period), so it skips
/// the upload; a collection runs; then the client pushes a manifest naming
/// the layer. The `HEAD` saved the layer. A layer nobody looked at goes.
#[tokio::test]
async fn a_head_before_the_collection_saves_the_blob_the_client_then_uses() {
    let reg = start("inmemory", DELETE_ON, "").await;
    reg.registry.gc_fence().remember_uses();
    let repo = "app";
    let (used, unused) = (
        b"layer someone reuses".to_vec(),
        b"layer nobody reuses".to_vec(),
    );
    let config = b"{}".to_vec();
    let cd = reg.push_blob(repo, &config).await;
    let mut layers = Vec::new();
    for l in [&used, &unused] {
        layers.push((reg.push_blob(repo, l).await, l.len()));
    }
    let refs: Vec<(&str, usize)> = layers.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let old = oci_manifest(&cd, config.len(), &refs, None);
    let r = reg.put_manifest(repo, "old", OCI_MANIFEST, &old).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .client
        .delete(reg.url(&format!("/v2/{repo}/manifests/old")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let grace = Duration::from_millis(500);
    // Past the grace period, and the second of slack stored times get.
    tokio::time::sleep(grace + Duration::from_millis(1200)).await;
    let r = reg
        .client
        .head(reg.url(&format!("/v2/{repo}/blobs/{}", layers[0].0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = gc::collect(
        &reg.registry,
        &gc::Options {
            delete_untagged: true,
            grace,
            ..gc::Options::default()
        },
    )
    .await
    .unwrap();
    let deleted: Vec<String> = report
        .blobs_deleted
        .iter()
        .map(|(d, _)| d.to_string())
        .collect();
    assert!(deleted.contains(&layers[1].0), "{deleted:?}");
    assert!(!deleted.contains(&layers[0].0), "{deleted:?}");
    // The client goes on as if it had uploaded the layer.
    let cd = ensure_blob(&reg, repo, &config).await;
    let new = oci_manifest(&cd, config.len(), &[(&layers[0].0, used.len())], None);
    let r = reg.put_manifest(repo, "new", OCI_MANIFEST, &new).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_pulls(
        &reg,
        "inmemory",
        &Pushed {
            repo: repo.into(),
            tag: "new".into(),
            manifest: sha256(&new),
            blobs: vec![(cd, config), (layers[0].0.clone(), used)],
        },
    )
    .await;
}
