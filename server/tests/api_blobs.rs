//! Blob and upload endpoints over HTTP, on every setup of `common::setups`:
//! inmemory, filesystem, and with the in-memory and Redis blob-descriptor caches.

mod common;

use common::*;
use futures_util::StreamExt;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_root_and_health_answer() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let r = reg.client.get(reg.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
        let r = reg.client.get(reg.url("/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = reg
            .client
            .get(reg.url("/debug/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{driver}: empty store is healthy"
        );
        let r = reg
            .client
            .get(reg.url("/v2/nothing-here"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_push_then_head_get_and_ranges() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let d = sha256(&data);
        let r = reg
            .client
            .post(reg.url(&format!("/v2/a/b/blobs/uploads/?digest={d}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "location"), format!("/v2/a/b/blobs/{d}"));
        assert_eq!(header(&r, "docker-content-digest"), d);

        let url = reg.url(&format!("/v2/a/b/blobs/{d}"));
        let r = reg.client.head(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), "100000", "{driver}");
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
        let r = reg.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

        let r = reg
            .client
            .get(&url)
            .header("range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(header(&r, "content-range"), "bytes 10-19/100000");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
        let r = reg
            .client
            .get(&url)
            .header("range", "bytes=-5")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[99_995..]);
        let r = reg
            .client
            .get(&url)
            .header("range", "bytes=99990-")
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[99_990..]);
        let r = reg
            .client
            .get(&url)
            .header("range", "bytes=100000-")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-range"), "bytes */100000");
        expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;

        // The blob is in a/b only.
        let r = reg
            .client
            .head(reg.url(&format!("/v2/other/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = reg
            .client
            .get(reg.url(&format!("/v2/other/blobs/{d}")))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_is_refused_and_stores_nothing() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let wrong = sha256(b"something else");
        let r = reg
            .client
            .post(reg.url(&format!("/v2/r/blobs/uploads/?digest={wrong}")))
            .body("payload")
            .send()
            .await
            .unwrap();
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        assert!(
            msg.contains(&sha256(b"payload")),
            "names the actual digest: {msg}"
        );
        let r = reg
            .client
            .head(reg.url(&format!("/v2/r/blobs/{wrong}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = reg
            .client
            .head(reg.url(&format!("/v2/r/blobs/{}", sha256(b"payload"))))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{driver}: nothing stored"
        );
        for bad in ["sha256:abc", "md5:00", "nonsense", "sha256:ZZ"] {
            let r = reg
                .client
                .post(reg.url(&format!("/v2/r/blobs/uploads/?digest={bad}")))
                .body("x")
                .send()
                .await
                .unwrap();
            expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
            let r = reg
                .client
                .get(reg.url(&format!("/v2/r/blobs/{bad}")))
                .send()
                .await
                .unwrap();
            expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_then_monolithic_put_and_empty_blob() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        for data in [&b"hello monolithic"[..], b""] {
            let loc = begin(&reg, "m").await;
            let d = sha256(data);
            let r = reg
                .client
                .put(with_digest(&loc, &d))
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
            assert_eq!(header(&r, "docker-content-digest"), d);
            let r = reg
                .client
                .get(reg.url(&format!("/v2/m/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.bytes().await.unwrap().as_ref(), data);
            // The session is gone once complete.
            let r = reg.client.get(&loc).send().await.unwrap();
            expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        }
        let loc = begin(&reg, "m").await;
        let r = reg.client.put(&loc).body("x").send().await.unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
        let d = sha256(&data);
        let loc = begin(&reg, "c/d").await;
        let chunks = [&data[..1_000_000], &data[1_000_000..2_500_000]];
        let mut at = 0usize;
        for chunk in chunks {
            let r = reg
                .client
                .patch(&loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{}-{}", at, at + chunk.len() - 1))
                .header("content-length", chunk.len())
                .body(chunk.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "{driver}");
            at += chunk.len();
            assert_eq!(header(&r, "range"), format!("0-{}", at - 1));
            assert!(!header(&r, "location").is_empty());
        }
        let r = reg.client.get(&loc).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&r, "range"), "0-2499999");
        assert!(!header(&r, "docker-upload-uuid").is_empty());

        // A chunk that skips ahead (or repeats) is refused and changes nothing.
        for start in [0usize, 2_600_000] {
            let r = reg
                .client
                .patch(&loc)
                .header("content-range", format!("{start}-{}", start + 9))
                .header("content-length", 10)
                .body(vec![0u8; 10])
                .send()
                .await
                .unwrap();
            assert_eq!(header(&r, "range"), "0-2499999");
            expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
        }
        // So is a final PUT whose chunk does not start where the upload
        // stands (as a PATCH is: 416), and the upload stays usable.
        let last = data.len() - 2_500_000;
        for start in [0usize, 2_400_000, 2_500_001] {
            let r = reg
                .client
                .put(with_digest(&loc, &d))
                .header("content-range", format!("{start}-{}", start + last - 1))
                .header("content-length", last)
                .body(data[2_500_000..].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                header(&r, "range"),
                "0-2499999",
                "{driver}: PUT from {start}"
            );
            expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
            let r = reg.client.get(&loc).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT, "{driver}");
            assert_eq!(header(&r, "range"), "0-2499999", "{driver}");
        }
        // Final PUT with the last chunk.
        let r = reg
            .client
            .put(with_digest(&loc, &d))
            .body(data[2_500_000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        let got = reg
            .client
            .get(reg.url(&format!("/v2/c/d/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.bytes().await.unwrap().as_ref(), &data[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_patch_without_content_range_and_final_put_without_body() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let parts: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 300_000]).collect();
        let all: Vec<u8> = parts.concat();
        let d = sha256(&all);
        let loc = begin(&reg, "s").await;
        // One streamed PATCH of unknown length, sent as a chunked body.
        let first: Vec<Vec<u8>> = parts[..6].to_vec();
        let stream = futures_util::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>));
        let r = reg
            .client
            .patch(&loc)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "range"), format!("0-{}", 6 * 300_000 - 1));
        let r = reg
            .client
            .patch(&loc)
            .body(parts[6..].concat())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = reg.client.put(with_digest(&loc, &d)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        let got = reg
            .client
            .get(reg.url(&format!("/v2/s/blobs/{d}")))
            .send()
            .await
            .unwrap();
        let mut body = got.bytes_stream();
        let mut n = 0;
        let mut h = Vec::new();
        while let Some(c) = body.next().await {
            let c = c.unwrap();
            n += c.len();
            h.extend_from_slice(&c);
        }
        assert_eq!(n, all.len());
        assert_eq!(sha256(&h), d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_digests_for_one_shot_and_chunked_uploads() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let data = b"sha512 content".repeat(1000);
        let d = sha512(&data);
        let r = reg
            .client
            .post(reg.url(&format!("/v2/x/blobs/uploads/?digest={d}")))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = reg
            .client
            .get(reg.url(&format!("/v2/x/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

        let other = b"chunked sha512".repeat(999);
        let d2 = sha512(&other);
        let loc = begin(&reg, "x").await;
        let r = reg
            .client
            .patch(&loc)
            .body(other[..5000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = reg
            .client
            .put(with_digest(&loc, &d2))
            .body(other[5000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        let r = reg
            .client
            .get(reg.url(&format!("/v2/x/blobs/{d2}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &other[..]);
        // A chunked upload whose sha512 does not match is refused.
        let loc = begin(&reg, "x").await;
        let r = reg.client.patch(&loc).body("abc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = reg.client.put(with_digest(&loc, &d2)).send().await.unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_unknown_sessions() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let loc = begin(&reg, "u").await;
        let r = reg.client.patch(&loc).body("partial").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = reg.client.delete(&loc).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{driver}");
        for req in [
            reg.client.get(&loc),
            reg.client.patch(&loc).body("more"),
            reg.client.put(with_digest(&loc, &sha256(b"partial"))),
            reg.client.delete(&loc),
        ] {
            let r = req.send().await.unwrap();
            expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        }
        for bad in ["not-a-uuid", "ABC", "00000000-0000-0000-0000-000000000000"] {
            let r = reg
                .client
                .get(reg.url(&format!("/v2/u/blobs/uploads/{bad}")))
                .send()
                .await
                .unwrap();
            expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        }
    }
}

/// An error answer to a request with a body closes the connection (the
/// body may be unread, and a client reusing the connection could see its
/// next request fail); other answers keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_to_a_request_with_a_body_closes_the_connection() {
    let reg = start("filesystem", "", "").await;
    let closes = |r: &reqwest::Response| {
        r.headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    };
    let loc = begin(&reg, "c").await;
    let r = reg
        .client
        .patch(&loc)
        .body(vec![7u8; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(!closes(&r), "a chunk accepted closed the connection");
    // The chunk again, at offset 0 where the upload is at 1 MiB: 416.
    let r = reg
        .client
        .patch(&loc)
        .header("content-range", "0-1048575")
        .body(vec![7u8; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert!(closes(&r), "a refused chunk kept the connection");
    // An unknown upload with a body: 404, closed.
    let r = reg
        .client
        .patch(reg.url("/v2/c/blobs/uploads/00000000-0000-0000-0000-000000000000"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(closes(&r), "a refused body kept the connection");
    // Errors without a body keep it.
    let r = reg
        .client
        .get(reg.url(&format!("/v2/c/blobs/{}", sha256(b"none"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!closes(&r), "an error without a body closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mount_or_fallback_to_upload() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let d = reg.push_blob("src/repo", b"mount me").await;
        let r = reg
            .client
            .post(reg.url(&format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        assert_eq!(header(&r, "location"), format!("/v2/dst/blobs/{d}"));
        assert_eq!(header(&r, "docker-content-digest"), d);
        let r = reg
            .client
            .get(reg.url(&format!("/v2/dst/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"mount me");

        let missing = sha256(b"not there");
        let r = reg
            .client
            .post(reg.url(&format!(
                "/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "falls back to an upload");
        assert!(header(&r, "location").starts_with("/v2/dst/blobs/uploads/"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_delete_and_deletes_disabled() {
    for driver in setups() {
        let reg = start(driver, DELETE_ON, "").await;
        let d = reg.push_blob("del", b"bye").await;
        let d2 = reg.push_blob("keep", b"bye").await;
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/del/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{driver}");
        let r = reg
            .client
            .head(reg.url(&format!("/v2/del/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = reg
            .client
            .head(reg.url(&format!("/v2/keep/blobs/{d2}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "other repositories keep the blob"
        );
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/del/blobs/{d}")))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;

        let reg = start(driver, "", "").await;
        let d = reg.push_blob("del", b"stays").await;
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/del/blobs/{d}")))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
        let r = reg
            .client
            .head(reg.url(&format!("/v2/del/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_blob_all_succeed() {
    for driver in setups() {
        let reg = std::sync::Arc::new(start(driver, "", "").await);
        let data = b"same bytes everywhere".repeat(5000);
        let d = sha256(&data);
        let mut tasks = Vec::new();
        for i in 0..12 {
            let reg = reg.clone();
            let data = data.clone();
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                let repo = if i % 2 == 0 {
                    "same".to_owned()
                } else {
                    format!("r{i}")
                };
                let loc = begin(&reg, &repo).await;
                let r = reg
                    .client
                    .patch(&loc)
                    .body(data[..50_000].to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let r = reg
                    .client
                    .put(with_digest(&loc, &d))
                    .body(data[50_000..].to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                repo
            }));
        }
        for t in tasks {
            let repo = t.await.expect("upload task");
            let r = reg
                .client
                .get(reg.url(&format!("/v2/{repo}/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(sha256(&r.bytes().await.unwrap()), d);
        }
        if driver.starts_with("filesystem") {
            let blobs = reg.dir.path().join("root/docker/registry/v2/blobs/sha256");
            let count = walk_count(&blobs);
            assert_eq!(count, 1, "stored once");
        }
    }
}

fn walk_count(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk_count(&e.path());
        } else if e.file_name() == "data" {
            n += 1;
        }
    }
    n
}

/// Names (not paths) in a repository's `_uploads`, sorted; none if it is
/// missing.
fn upload_entries(root: &std::path::Path, repo: &str) -> Vec<String> {
    let dir = root.join(format!("docker/registry/v2/repositories/{repo}/_uploads"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The upload id at the end of an upload URL.
fn upload_id(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_removes_only_uploads_older_than_the_cutoff() {
    use std::time::{Duration, SystemTime};
    // Uploads expire at the purge age, 3 s here. The background purge
    // first runs after a minute; the test calls it itself.
    const PURGING: &str = "  maintenance:\n    uploadpurging:\n      age: 3s\n      interval: 1h\n";
    let reg = start("filesystem", PURGING, "").await;
    let root = reg.dir.path().join("root");
    let a = begin(&reg, "p/one").await;
    let b = begin(&reg, "p/two").await;
    let r = reg
        .client
        .patch(&b)
        .body("some bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = reg.push_blob("p/one", b"finished blob").await;
    // `a` received nothing and stored nothing; the finished push left the
    // marker of its ended upload.
    let one = upload_entries(&root, "p/one");
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(one[0].ends_with(".ended"), "{one:?}");
    // A second instance on the same storage calls the service directly.
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n{PURGING}",
        root.display()
    );
    let config = regstore_server::config::Config::from_yaml(&yaml, "t", []).unwrap();
    let state = regstore_server::serve::app_state(&config).await.unwrap();
    let registry = state.registry;
    let past = SystemTime::now() - Duration::from_secs(3600);
    let report = registry.purge_uploads(past, false).await.unwrap();
    assert!(report.purged.is_empty(), "{report:?}");
    assert_eq!((report.kept, report.ended), (1, 0), "{report:?}");
    let future = SystemTime::now() + Duration::from_secs(3600);
    let dry = registry.purge_uploads(future, true).await.unwrap();
    assert_eq!((dry.purged.len(), dry.ended), (1, 1), "{dry:?}");
    assert!(dry.purged[0].ends_with(upload_id(&b)), "{dry:?}");
    for loc in [&a, &b] {
        let r = reg.client.get(loc).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NO_CONTENT,
            "a dry run deletes nothing"
        );
    }
    // Ids carry their start to the second: past the age for sure.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    for loc in [&a, &b] {
        let r = reg.client.get(loc).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    let cutoff = SystemTime::now() - Duration::from_secs(3);
    let report = registry.purge_uploads(cutoff, false).await.unwrap();
    assert_eq!((report.purged.len(), report.ended), (1, 1), "{report:?}");
    for repo in ["p/one", "p/two"] {
        assert_eq!(upload_entries(&root, repo), Vec::<String>::new(), "{repo}");
    }
    let r = reg
        .client
        .get(reg.url(&format!("/v2/p/one/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "finished blobs stay");
}

/// Starting an upload stores nothing (its id carries its start time); an
/// ended one leaves a marker, so it answers unknown like distribution's;
/// an id that was not made here answers unknown; and an upload of the
/// older kind (a version 4 id with a `startedat` file, as regstore wrote
/// before and distribution writes) still goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_stored_from_their_first_bytes_and_end_with_a_marker() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let root = reg.dir.path().join("root");
    let loc = begin(&reg, "ids/r").await;
    let id = upload_id(&loc).to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
        8,
        "{id}"
    );
    assert_eq!(upload_entries(&root, "ids/r"), Vec::<String>::new());
    let r = reg.client.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-0");
    let r = reg.client.patch(&loc).body("abc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(upload_entries(&root, "ids/r"), vec![id.clone()]);
    let r = reg
        .client
        .put(with_digest(&loc, &sha256(b"abcdef")))
        .body("def")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(upload_entries(&root, "ids/r"), vec![format!("{id}.ended")]);
    for req in [
        reg.client.get(&loc),
        reg.client.patch(&loc).body("more"),
        reg.client.put(with_digest(&loc, &sha256(b"x"))).body("x"),
        reg.client.delete(&loc),
    ] {
        let r = req.send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // Cancelling one that never received bytes leaves only its marker.
    let loc = begin(&reg, "ids/c").await;
    let r = reg.client.delete(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reg.client.get(&loc).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(
        upload_entries(&root, "ids/c"),
        vec![format!("{}.ended", upload_id(&loc))]
    );
    // One changed digit: not an id this registry made.
    let mut forged: Vec<char> = id.chars().collect();
    forged[20] = if forged[20] == '0' { '1' } else { '0' };
    let forged: String = forged.into_iter().collect();
    let r = reg
        .client
        .get(reg.url(&format!("/v2/ids/r/blobs/uploads/{forged}")))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // The older kind: known by its `startedat`.
    let old = uuid::Uuid::new_v4().to_string();
    let url = reg.url(&format!("/v2/ids/old/blobs/uploads/{old}"));
    let r = reg.client.patch(&url).body("abc").send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let dir = root.join(format!(
        "docker/registry/v2/repositories/ids/old/_uploads/{old}"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("startedat"), "2026-01-02T03:04:05Z").unwrap();
    let r = reg.client.patch(&url).body("abc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .client
        .put(with_digest(&url, &sha256(b"abcdef")))
        .body("def")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(upload_entries(&root, "ids/old"), Vec::<String>::new());
    let r = reg.client.get(&url).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

/// A chunk's 202 is written volatile (no fsync on a local filesystem) and
/// its hash state records the boot id: a state from another boot — what a
/// machine restart leaves — discards the upload (404, the client pushes the
/// blob again) instead of trusting bytes that may not have reached the
/// disk, and so does a state cut short. Within one boot the upload goes
/// on and its push completes.
///
/// The instance that took a chunk keeps its hasher, which is right within
/// its boot; a restarted machine runs a new process, which has only the
/// stored state. So the chunk after the damage goes to a second instance
/// on the same root, as it would after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_acknowledged_before_a_machine_restart_discards_the_upload() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let root = reg.dir.path().join("root");
    let restarted = start_on_root(&root, DELETE_ON).await;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let boot = boot.trim().as_bytes();
    let state_of = |repo: &str, id: &str| {
        root.join(format!(
            "docker/registry/v2/repositories/{repo}/_uploads/{id}/hashstates/regstore-sha256/3"
        ))
    };
    let chunk = |loc: &str, at: u64, body: &'static str| {
        restarted
            .client
            .patch(loc)
            .header(
                "content-range",
                format!("{at}-{}", at + body.len() as u64 - 1),
            )
            .body(body)
    };
    for (repo, damage) in [("boot/other", "another boot"), ("boot/torn", "cut short")] {
        let loc = begin(&reg, repo).await;
        let id = upload_id(&loc).to_owned();
        let r = chunk(&loc, 0, "abc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let path = state_of(repo, &id);
        let mut saved = std::fs::read(&path).unwrap();
        let at = saved
            .windows(boot.len())
            .position(|w| w == boot)
            .expect("the state records the boot id");
        if damage == "another boot" {
            for b in &mut saved[at..at + boot.len()] {
                *b = if *b == b'0' {
                    b'1'
                } else if *b == b'-' {
                    b'-'
                } else {
                    b'0'
                };
            }
        } else {
            saved.truncate(at + 4);
        }
        std::fs::write(&path, &saved).unwrap();
        let loc = restarted.url(loc.trim_start_matches(&reg.base));
        let r = chunk(&loc, 3, "def").send().await.unwrap();
        let body = expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        assert!(body.contains(&id), "{damage}: {body}");
        let r = reg.client.get(&loc).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        assert_eq!(
            upload_entries(&root, repo),
            vec![format!("{id}.ended")],
            "{damage}"
        );
    }
    let loc = begin(&reg, "boot/same").await;
    for (at, body) in [(0, "abc"), (3, "def")] {
        let r = chunk(&loc, at, body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = reg
        .client
        .put(with_digest(&loc, &sha256(b"abcdef")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .client
        .get(reg.url(&format!("/v2/boot/same/blobs/{}", sha256(b"abcdef"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"abcdef");
}

/// A PATCH cut off mid-body keeps nothing of it: the upload stays where
/// the last acknowledged request left it, and the same PATCH sent again
/// goes through (a client retrying a failed request needs nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_keeps_nothing_and_the_same_request_succeeds_again() {
    use tokio::io::AsyncWriteExt;
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let loc = begin(&reg, "cut").await;
        let r = reg
            .client
            .patch(&loc)
            .header("content-range", "0-999")
            .body(data[..1000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{driver}");
        let loc = header(&r, "location");
        let loc = if loc.starts_with("http") {
            loc
        } else {
            reg.url(&loc)
        };
        let path = loc.trim_start_matches(&reg.base).to_owned();
        // Promise the other 199,000 bytes, send 120,000, hang up.
        let addr = reg.base.trim_start_matches("http://").to_owned();
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Range: 1000-199999\r\nContent-Length: {}\r\n\r\n",
            data.len() - 1000
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&data[1000..121_000]).await.unwrap();
        sock.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(sock);
        // Once the server has noticed the cut, the upload holds 1,000 bytes.
        let r = reg.client.get(&loc).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NO_CONTENT,
            "{driver}: the upload survives"
        );
        assert_eq!(
            header(&r, "range"),
            "0-999",
            "{driver}: nothing of the cut request is kept"
        );
        let r = reg
            .client
            .patch(&loc)
            .header("content-range", format!("1000-{}", data.len() - 1))
            .body(data[1000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "{driver}: the same request again"
        );
        let r = reg
            .client
            .put(with_digest(&loc, &sha256(&data)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
    }
}

/// A blob of up to `SMALL_BLOB` bytes sent whole in one request is stored
/// in one piece, without the upload's writer: on a storage whose every
/// `writer` call fails, a PUT ending a fresh upload and a `POST ?digest=`
/// still go through — a body of exactly `SMALL_BLOB` bytes too — while one
/// byte more is streamed through a writer and fails with a retryable
/// error. Refusals work as for any upload: a wrong digest cancels the
/// upload; a body cut off mid-way keeps nothing, and the same PUT again
/// goes through; a stored small blob ends its upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_are_stored_in_one_piece_and_refused_like_any_upload() {
    use regstore_server::registry::SMALL_BLOB;
    use tokio::io::AsyncWriteExt;
    let no_writers = "middleware:\n  storage:\n    - name: faults\n      options:\n        probability: \"1\"\n        operations: writer\n";
    let edge: Vec<u8> = (0..SMALL_BLOB as u32).map(|i| (i % 251) as u8).collect();
    for driver in ["inmemory", "filesystem"] {
        let reg = start(driver, "", no_writers).await;
        for data in [&b"small"[..], &edge] {
            let loc = begin(&reg, "s").await;
            let d = sha256(data);
            let r = reg
                .client
                .put(with_digest(&loc, &d))
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::CREATED,
                "{driver}: {} bytes",
                data.len()
            );
            let r = reg
                .client
                .get(reg.url(&format!("/v2/s/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.bytes().await.unwrap().as_ref(), data, "{driver}");
        }
        let posted = b"posted whole";
        let r = reg
            .client
            .post(reg.url(&format!("/v2/s/blobs/uploads/?digest={}", sha256(posted))))
            .body(posted.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}: POST ?digest=");

        // One byte over: streamed, so the failing writer fails it.
        let mut over = edge.clone();
        over.push(7);
        let d = sha256(&over);
        let loc = begin(&reg, "s").await;
        let r = reg
            .client
            .put(with_digest(&loc, &d))
            .body(over.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_server_error(), "{driver}: {}", r.status());
        let r = reg
            .client
            .post(reg.url(&format!("/v2/s/blobs/uploads/?digest={d}")))
            .body(over.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_server_error(), "{driver}: {}", r.status());
        let r = reg
            .client
            .head(reg.url(&format!("/v2/s/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{driver}");

        // Without faults (an upload's status needs its writer): a stored
        // small blob ends its upload.
        let reg = start(driver, "", "").await;
        let loc = begin(&reg, "s").await;
        let r = reg
            .client
            .put(with_digest(&loc, &sha256(b"small")))
            .body(&b"small"[..])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        let r = reg.client.get(&loc).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;

        // A wrong digest: refused, nothing stored, the upload cancelled.
        let loc = begin(&reg, "s").await;
        let r = reg
            .client
            .put(with_digest(&loc, &sha256(b"other bytes")))
            .body(&b"mismatch"[..])
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        let r = reg.client.get(&loc).send().await.unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        for d in [sha256(b"other bytes"), sha256(b"mismatch")] {
            let r = reg
                .client
                .head(reg.url(&format!("/v2/s/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{driver}: {d}");
        }

        // Cut off after 500 of 1000 bytes: the upload stays empty.
        let data = vec![9u8; 1000];
        let d = sha256(&data);
        let loc = begin(&reg, "s").await;
        let path = with_digest(&loc, &d)
            .trim_start_matches(&reg.base)
            .to_owned();
        let addr = reg.base.trim_start_matches("http://").to_owned();
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&data[..500]).await.unwrap();
        sock.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(sock);
        let r = reg.client.get(&loc).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NO_CONTENT,
            "{driver}: the upload survives"
        );
        assert_eq!(header(&r, "range"), "0-0", "{driver}: nothing of it kept");
        let r = reg
            .client
            .head(reg.url(&format!("/v2/s/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{driver}");
        let r = reg
            .client
            .put(with_digest(&loc, &d))
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{driver}: the same PUT again"
        );
    }
}

/// Sixteen clients pushing distinct small blobs into one repository at once
/// (what `podman push` of many layers, or a CI farm, does): every push
/// succeeds. Against the filesystem driver this races directory creation
/// with the clean-up of finished uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_small_pushes_into_one_repository_all_succeed() {
    let reg = std::sync::Arc::new(start("filesystem", "", "").await);
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let mut digests = Vec::new();
            for i in 0..50u32 {
                let data = format!("blob {t}-{i}").repeat(200).into_bytes();
                digests.push(reg.push_blob("busy/repo", &data).await);
            }
            digests
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("push task"));
    }
    assert_eq!(all.len(), 800);
    for d in all.iter().step_by(37) {
        let r = reg
            .client
            .head(reg.url(&format!("/v2/busy/repo/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_get_and_head_redirect_when_the_driver_offers_a_url() {
    let middleware = "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://cdn.example:8080/mirror\n";
    let reg = start("inmemory", "", middleware).await;
    let d = reg.push_blob("r", b"redirected bytes").await;
    let want = format!(
        "http://cdn.example:8080/mirror/docker/registry/v2/blobs/sha256/{}/{}/data",
        &d[7..9],
        &d[7..]
    );
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = reg
            .client
            .request(method.clone(), reg.url(&format!("/v2/r/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "{method}");
        assert_eq!(header(&r, "location"), want);
        assert_eq!(header(&r, "docker-content-digest"), d);
    }
    // An unknown blob is a 404, not a redirect.
    let r = reg
        .client
        .get(reg.url(&format!("/v2/r/blobs/{}", sha256(b"absent"))))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;

    // storage.redirect.disable: the bytes come from the registry itself.
    let reg = start("inmemory", "  redirect:\n    disable: true\n", middleware).await;
    let d = reg.push_blob("r", b"served directly").await;
    let r = reg
        .client
        .get(reg.url(&format!("/v2/r/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"served directly");
}
