//! Garbage collection: what is kept and what is deleted, on inmemory and
//! filesystem, through the library (`gc::collect`) on a running registry.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use regstore_server::gc::{self, Options};
use regstore_server::registry::{Digest, RepoName, layout};
use reqwest::StatusCode;

const REPO: &str = "app";

/// Pushes a config and layers (given as contents) and a manifest naming
/// them, by `reference`; `extra` adds top-level fields (`subject`).
async fn image(
    reg: &TestRegistry,
    reference: Option<&str>,
    seed: &str,
    layers: &[&[u8]],
    extra: Option<&str>,
) -> (String, Vec<String>) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let (_, d, blobs) = reg
        .push_manifest_of(REPO, reference, config.as_bytes(), layers, false, extra)
        .await;
    (d, blobs)
}

fn subject(d: &str, body_len: usize) -> String {
    format!(
        "\"artifactType\":\"application/example\",\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":{body_len}}}"
    )
}

/// Everything the table needs, pushed into `app`.
struct Scene {
    /// Manifests (and their blobs) that every collection keeps.
    kept: Vec<(String, Vec<String>)>,
    /// Kept without `--delete-untagged`, deleted with it.
    untagged: Vec<(String, Vec<String>)>,
    /// A layer the tagged and the untagged image share.
    shared: String,
    /// Blobs nothing references (an orphan, and a deleted image's).
    garbage: Vec<String>,
    /// The deleted image's manifest.
    deleted_manifest: String,
    /// An upload in progress and its first bytes.
    upload: (String, Vec<u8>),
}

async fn scene(reg: &TestRegistry) -> Scene {
    let shared = b"shared layer".repeat(50);
    let tagged = image(reg, Some("a"), "tagged", &[&shared, b"tagged layer"], None).await;
    let a_len = reg
        .client
        .get(reg.url(&format!("/v2/{REPO}/manifests/a")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let untagged = image(reg, None, "untagged", &[&shared, b"untagged layer"], None).await;
    let u_len = reg
        .client
        .get(reg.url(&format!("/v2/{REPO}/manifests/{}", untagged.0)))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    // An index with two children pushed by digest, tagged.
    let c1 = image(reg, None, "child1", &[b"child1 layer"], None).await;
    let c2 = image(reg, None, "child2", &[b"child2 layer"], None).await;
    let entries: Vec<String> = [&c1, &c2]
        .iter()
        .map(|(d, _)| format!("{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":1}}"))
        .collect();
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        entries.join(",")
    );
    let r = reg
        .put_manifest(REPO, "multi", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let index_d = sha256(index.as_bytes());
    // Referrers: of the tagged image (kept) and of the untagged one.
    let r_kept = image(
        reg,
        None,
        "sbom of a",
        &[b"sbom a"],
        Some(&subject(&tagged.0, a_len)),
    )
    .await;
    let r_untagged = image(
        reg,
        None,
        "sbom of u",
        &[b"sbom u"],
        Some(&subject(&untagged.0, u_len)),
    )
    .await;
    // An image pushed and deleted, and an orphan blob.
    let gone = image(reg, Some("d"), "deleted", &[b"deleted layer"], None).await;
    let r = reg
        .client
        .delete(reg.url(&format!("/v2/{REPO}/manifests/{}", gone.0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let orphan = reg.push_blob(REPO, b"orphan").await;
    // An upload in progress.
    let loc = begin(reg, REPO).await;
    let first = b"first half of an upload ".to_vec();
    let r = reg
        .client
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let upload_loc = header(&r, "location");
    let mut garbage = vec![orphan, gone.0.clone()];
    garbage.extend(gone.1.clone());
    let shared_d = sha256(&shared);
    let strip = |(d, blobs): (String, Vec<String>)| {
        (
            d,
            blobs
                .into_iter()
                .filter(|b| *b != shared_d)
                .collect::<Vec<_>>(),
        )
    };
    Scene {
        kept: vec![tagged, c1, c2, (index_d, Vec::new()), r_kept],
        untagged: vec![strip(untagged), r_untagged],
        shared: shared_d,
        garbage,
        deleted_manifest: gone.0,
        upload: (reg.url(&upload_loc), first),
    }
}

async fn status(reg: &TestRegistry, path: String) -> StatusCode {
    reg.client
        .get(reg.url(&path))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Every blob of the image is served, and hashes to its digest.
async fn assert_intact(reg: &TestRegistry, (m, blobs): &(String, Vec<String>)) {
    assert_eq!(
        status(reg, format!("/v2/{REPO}/manifests/{m}")).await,
        StatusCode::OK,
        "manifest {m} must be kept"
    );
    for b in blobs {
        let r = reg
            .client
            .get(reg.url(&format!("/v2/{REPO}/blobs/{b}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "blob {b} of {m} must be kept");
        assert_eq!(sha256(&r.bytes().await.unwrap()), *b);
    }
}

async fn assert_gone(reg: &TestRegistry, blob: &str) {
    assert_eq!(
        status(reg, format!("/v2/{REPO}/blobs/{blob}")).await,
        StatusCode::NOT_FOUND,
        "blob {blob} must be deleted"
    );
    let d: Digest = blob.parse().unwrap();
    let name = RepoName::parse(REPO).unwrap();
    let driver = reg.registry.driver();
    for path in [layout::blob_data(&d), layout::layer_link(&name, &d)] {
        let e = driver.stat(&path).await.expect_err(&path);
        assert!(e.is_not_found(), "{path}: {e}");
    }
}

/// Whether the blob's data is in storage.
async fn stored(reg: &TestRegistry, blob: &str) -> bool {
    let d: Digest = blob.parse().unwrap();
    match reg.registry.driver().stat(layout::blob_data(&d)).await {
        Ok(_) => true,
        Err(e) if e.is_not_found() => false,
        Err(e) => panic!("{e}"),
    }
}

fn digests(v: &[(Digest, u64)]) -> BTreeSet<String> {
    v.iter().map(|(d, _)| d.to_string()).collect()
}

async fn finish_upload(reg: &TestRegistry, (loc, first): &(String, Vec<u8>)) {
    let rest = b"and the second half".to_vec();
    let whole = [first.clone(), rest.clone()].concat();
    let r = reg
        .client
        .put(with_digest(loc, &sha256(&whole)))
        .header("content-type", "application/octet-stream")
        .body(rest)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "an upload in progress survives collection"
    );
}

#[tokio::test]
async fn mark_and_sweep_table() {
    for driver in DRIVERS {
        for delete_untagged in [false, true] {
            let reg = start(driver, DELETE_ON, "").await;
            let s = scene(&reg).await;
            let mut expected: BTreeSet<String> = s.garbage.iter().cloned().collect();
            if delete_untagged {
                for (m, blobs) in &s.untagged {
                    expected.insert(m.clone());
                    expected.extend(blobs.iter().cloned());
                }
            }
            let opts = Options {
                delete_untagged,
                ..Options::default()
            };
            // A dry run reports the same and deletes nothing.
            let dry = gc::collect(
                &reg.registry,
                &Options {
                    dry_run: true,
                    ..opts.clone()
                },
            )
            .await
            .unwrap();
            assert_eq!(digests(&dry.blobs_deleted), expected, "{driver} dry run");
            for b in &s.garbage {
                assert!(stored(&reg, b).await, "{driver}: a dry run deletes nothing");
            }
            let report = gc::collect(&reg.registry, &opts).await.unwrap();
            let ctx = format!("{driver}, delete_untagged {delete_untagged}");
            assert_eq!(digests(&report.blobs_deleted), expected, "{ctx}");
            assert_eq!(
                report.manifests_deleted.len(),
                if delete_untagged { s.untagged.len() } else { 0 },
                "{ctx}: {:?}",
                report.manifests_deleted
            );
            assert!(report.bytes_freed > 0 && report.requests > 0, "{ctx}");
            assert!(report.warnings.is_empty(), "{ctx}: {:?}", report.warnings);
            for image in &s.kept {
                assert_intact(&reg, image).await;
            }
            assert_intact(&reg, &(s.kept[0].0.clone(), vec![s.shared.clone()])).await;
            for image in &s.untagged {
                if delete_untagged {
                    assert_eq!(
                        status(&reg, format!("/v2/{REPO}/manifests/{}", image.0)).await,
                        StatusCode::NOT_FOUND,
                        "{ctx}: untagged {} deleted",
                        image.0
                    );
                } else {
                    assert_intact(&reg, image).await;
                }
            }
            for b in &expected {
                assert_gone(&reg, b).await;
            }
            assert_eq!(
                status(&reg, format!("/v2/{REPO}/manifests/{}", s.deleted_manifest)).await,
                StatusCode::NOT_FOUND
            );
            // Tags still resolve; the referrers index lists what is kept.
            for tag in ["a", "multi"] {
                assert_eq!(
                    status(&reg, format!("/v2/{REPO}/manifests/{tag}")).await,
                    StatusCode::OK
                );
            }
            let refs: serde_json::Value = serde_json::from_slice(
                &reg.client
                    .get(reg.url(&format!("/v2/{REPO}/referrers/{}", s.kept[0].0)))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(refs["manifests"].as_array().map(Vec::len), Some(1), "{ctx}");
            // The storage check finds nothing wrong with what is left (no
            // link to a deleted blob remains).
            let checked = regstore_server::check::check(&reg.registry, &Default::default())
                .await
                .unwrap();
            assert!(checked.problems.is_empty(), "{ctx}: {:?}", checked.problems);
            // A second collection finds nothing more.
            let again = gc::collect(&reg.registry, &opts).await.unwrap();
            assert!(
                again.blobs_deleted.is_empty() && again.manifests_deleted.is_empty(),
                "{ctx}: {:?}",
                again.blobs_deleted
            );
            finish_upload(&reg, &s.upload).await;
        }
    }
}

#[tokio::test]
async fn the_grace_period_keeps_what_was_just_written() {
    for driver in DRIVERS {
        let reg = start(driver, DELETE_ON, "").await;
        let s = scene(&reg).await;
        let report = gc::collect(
            &reg.registry,
            &Options {
                delete_untagged: true,
                grace: Duration::from_secs(3600),
                ..Options::default()
            },
        )
        .await
        .unwrap();
        assert!(report.blobs_deleted.is_empty(), "{driver}: {report:?}");
        assert!(report.manifests_deleted.is_empty(), "{driver}: {report:?}");
        assert_eq!(report.blobs_kept_recent, s.garbage.len(), "{driver}");
        for image in s.kept.iter().chain(&s.untagged) {
            assert_intact(&reg, image).await;
        }
    }
}

#[tokio::test]
async fn an_unreadable_manifest_stops_the_collection_before_any_delete() {
    let reg = start("inmemory", DELETE_ON, "").await;
    let s = scene(&reg).await;
    // Overwrite a kept manifest's bytes with something else.
    let d: Digest = s.kept[0].0.parse().unwrap();
    reg.registry
        .driver()
        .put_content(layout::blob_data(&d), b"not json".to_vec())
        .await
        .unwrap();
    let e = gc::collect(&reg.registry, &Options::default())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&s.kept[0].0) && text.contains("regstore check"),
        "{text}"
    );
    for b in &s.garbage {
        assert!(stored(&reg, b).await, "nothing is deleted");
    }
}
