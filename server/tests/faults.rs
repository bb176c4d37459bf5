//! The registry on a storage that fails (the `faults` middleware: errors,
//! timeouts, latency, short reads, writers broken mid-stream, on every
//! operation): each client request either succeeds or gets a retryable
//! error (5xx, or a cut connection), never a wrong answer; and once the
//! faults stop, every blob and manifest that was acknowledged is intact and
//! no half-written upload is visible as a blob.

mod common;

use common::{Api, OCI_MANIFEST, oci_manifest, sha256, start_on_root, start_yaml};
use reqwest::StatusCode;

/// What one request came to.
enum Reply {
    Ok(reqwest::Response),
    Retryable(String),
}

/// Sends `req`; a 5xx or a transport error is retryable, `expected` is
/// success, anything else fails the test.
async fn send(req: reqwest::RequestBuilder, expected: StatusCode, what: &str) -> Reply {
    match req.send().await {
        Err(e) => Reply::Retryable(format!("{what}: {e}")),
        Ok(r) if r.status() == expected => Reply::Ok(r),
        Ok(r) if r.status().is_server_error() => {
            Reply::Retryable(format!("{what}: {}", r.status()))
        }
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            panic!("{what}: {status} is neither success nor retryable: {body}");
        }
    }
}

/// A blob upload in two requests (PATCH half, PUT the rest with the
/// digest); `Some(digest)` when the registry acknowledged it.
async fn push(api: &Api, repo: &str, data: &[u8]) -> Result<String, String> {
    let d = sha256(data);
    let post = api
        .client
        .post(api.url(&format!("/v2/{repo}/blobs/uploads/")));
    let r = match send(post, StatusCode::ACCEPTED, "POST").await {
        Reply::Ok(r) => r,
        Reply::Retryable(why) => return Err(why),
    };
    let loc = common::header(&r, "location");
    let half = data.len() / 2;
    let patch = api
        .client
        .patch(api.url(&loc))
        .header("content-range", format!("0-{}", half - 1))
        .body(data[..half].to_vec());
    let r = match send(patch, StatusCode::ACCEPTED, "PATCH").await {
        Reply::Ok(r) => r,
        Reply::Retryable(why) => return Err(why),
    };
    let loc = common::header(&r, "location");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = api
        .client
        .put(api.url(&format!("{loc}{sep}digest={d}")))
        .body(data[half..].to_vec());
    match send(put, StatusCode::CREATED, "PUT").await {
        Reply::Ok(_) => Ok(d),
        Reply::Retryable(why) => Err(why),
    }
}

/// A GET during the faults: a retryable failure, or exactly the blob.
async fn pull_checked(api: &Api, repo: &str, digest: &str) -> bool {
    let get = api
        .client
        .get(api.url(&format!("/v2/{repo}/blobs/{digest}")));
    match send(get, StatusCode::OK, "GET blob").await {
        Reply::Retryable(_) => false,
        Reply::Ok(r) => match r.bytes().await {
            // A cut connection mid-body: the client sees it, retryable.
            Err(_) => false,
            Ok(body) => {
                assert_eq!(sha256(&body), digest, "a complete GET is the blob");
                true
            }
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_a_failing_storage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let yaml = format!(
        "version: 0.1
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
middleware:
  storage:
    - name: faults
      options:
        probability: \"0.06\"
        seed: 11
        kinds: error,timeout,latency,shortread,writerfail,lostanswer
        timeout: 50ms
        latency: 10ms
",
        root.display()
    );
    let faulty = start_yaml(&yaml, tempfile::tempdir().expect("temp dir")).await;

    let mut acked = Vec::new();
    let mut failed = Vec::new();
    let mut manifests = Vec::new();
    let mut pulls_ok = 0;
    for i in 0..40u32 {
        let size = 1_000 + (i as usize * 7_919) % 300_000;
        let data: Vec<u8> = (0..size)
            .map(|j| (j as u32 ^ i).wrapping_mul(31) as u8)
            .collect();
        match push(&faulty, "faulty/repo", &data).await {
            Ok(d) => {
                if pull_checked(&faulty, "faulty/repo", &d).await {
                    pulls_ok += 1;
                }
                acked.push((d, size));
            }
            Err(why) => failed.push((sha256(&data), why)),
        }
        // Every fifth round, a manifest over the blobs acknowledged so far.
        if i % 5 == 4 && acked.len() >= 2 {
            let (cd, cs) = &acked[0];
            let layers: Vec<(&str, usize)> =
                acked[1..].iter().map(|(d, s)| (d.as_str(), *s)).collect();
            let body = oci_manifest(cd, *cs, &layers, None);
            let tag = format!("t{i}");
            let put = faulty
                .client
                .put(faulty.url(&format!("/v2/faulty/repo/manifests/{tag}")))
                .header("content-type", OCI_MANIFEST)
                .body(body.clone());
            if let Reply::Ok(_) = send(put, StatusCode::CREATED, "PUT manifest").await {
                manifests.push((tag, body));
            }
        }
    }
    assert!(
        acked.len() >= 10 && !failed.is_empty(),
        "the run should mix successes and injected failures: {} acknowledged, {} failed",
        acked.len(),
        failed.len()
    );
    assert!(pulls_ok > 0, "no pull got through");
    eprintln!(
        "{} pushes acknowledged ({pulls_ok} pulled back whole), {} failed: {:?}",
        acked.len(),
        failed.len(),
        failed
            .iter()
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
    );
    drop(faulty);

    // The same storage without faults.
    let clean = start_on_root(&root, "  delete:\n    enabled: true\n").await;
    for (d, size) in &acked {
        let r = clean
            .client
            .get(clean.url(&format!("/v2/faulty/repo/blobs/{d}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {d}");
        let body = r.bytes().await.expect("body");
        assert_eq!(body.len(), *size);
        assert_eq!(sha256(&body), *d, "acknowledged blob {d} is intact");
    }
    for (d, why) in &failed {
        let r = clean
            .client
            .get(clean.url(&format!("/v2/faulty/repo/blobs/{d}")))
            .send()
            .await
            .expect("GET");
        match r.status() {
            StatusCode::NOT_FOUND => {}
            // The reply was lost after the blob was complete: still whole.
            StatusCode::OK => {
                let body = r.bytes().await.expect("body");
                assert_eq!(
                    sha256(&body),
                    *d,
                    "a failed push ({why}) is whole or absent"
                );
            }
            other => panic!("failed push {d} ({why}): GET answered {other}"),
        }
    }
    for (tag, body) in &manifests {
        let r = clean
            .client
            .get(clean.url(&format!("/v2/faulty/repo/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET manifest");
        assert_eq!(r.status(), StatusCode::OK, "acknowledged manifest {tag}");
        assert_eq!(r.bytes().await.expect("body").as_ref(), body.as_slice());
    }
}
