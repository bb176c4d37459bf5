//! The fault matrix (issue 22): on every backend, the `faults` middleware
//! fails 1 %, 10 % and 50 % of driver calls (errors, timeouts, writers
//! broken mid-stream, short reads) while a client that retries each request
//! pushes images (config, a layer shared by all images, a layer of its own,
//! a manifest under a tag).
//!
//! What must hold in every cell:
//! - every answer is success, a retryable 5xx, a cut connection or, for an
//!   upload that could not be taken back, `404 BLOB_UPLOAD_UNKNOWN` (the
//!   client starts that blob again); never another 4xx, never a wrong 2xx;
//! - no request hangs past the client's timeout;
//! - a retried PATCH or PUT needs nothing else: no retry is refused
//!   because an earlier failed attempt moved the upload (`416`, `400`);
//! - afterwards, every acknowledged blob and manifest reads back intact
//!   (through a second registry without faults on the same storage; for
//!   `inmemory`, through the faulty one, retrying), and no blob of a push
//!   that failed is visible in part.
//!
//! At 1 % and 10 % at least two thirds of the images must get through. Each test prints
//! its rows of the table in docs/reliability.md. `REGSTORE_FAULT_IMAGES`
//! (default 6) sets the images per cell; the long run is
//! `REGSTORE_FAULT_IMAGES=100 cargo nextest run -p regstore-server --test fault_matrix`.

mod common;

use std::time::Duration;

use common::{OCI_MANIFEST, TestRegistry, assert_none, header, oci_manifest, sha256, start_yaml};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Fault rates of the matrix.
const RATES: [f64; 3] = [0.01, 0.10, 0.50];
/// Attempts per request before the client gives up on the image.
const ATTEMPTS: usize = 6;
/// Times a blob is started again after its upload was discarded.
const RESTARTS: usize = 3;
/// A request that takes longer than this hangs (the injected timeout is 50 ms).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// What one cell counted.
#[derive(Default, Debug)]
struct Tally {
    /// Requests sent.
    requests: usize,
    /// Of them answered with a retryable error (5xx or cut connection).
    retryable: usize,
    /// Uploads discarded (`BLOB_UPLOAD_UNKNOWN`) and started again.
    restarts: usize,
    /// Answers that are neither success nor retryable: must stay empty.
    wrong: Vec<String>,
    /// Requests that ran into the client's timeout: must stay empty.
    hangs: Vec<String>,
    images: usize,
    acknowledged: usize,
    verified: usize,
}

/// How a request ended.
enum Sent {
    Ok(reqwest::Response),
    /// The upload is gone: start the blob again.
    UploadUnknown,
    /// Out of attempts.
    GaveUp,
}

struct Client<'a> {
    reg: &'a TestRegistry,
    tally: Tally,
    /// The answers of the current blob's requests, for a failure message.
    log: Vec<String>,
}

impl Client<'_> {
    /// Sends `make()` until it answers `expected`, up to [`ATTEMPTS`] times.
    async fn send(
        &mut self,
        what: &str,
        expected: StatusCode,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Sent {
        for _ in 0..ATTEMPTS {
            self.tally.requests += 1;
            let sent = make().timeout(REQUEST_TIMEOUT).send().await;
            self.log.push(match &sent {
                Ok(r) => format!("{what}: {}", r.status()),
                Err(e) => format!("{what}: {e}"),
            });
            match sent {
                Err(e) if e.is_timeout() => {
                    self.tally.hangs.push(format!("{what}: {e}"));
                    return Sent::GaveUp;
                }
                Err(_) => self.tally.retryable += 1,
                Ok(r) if r.status() == expected => return Sent::Ok(r),
                Ok(r) if r.status().is_server_error() => {
                    let body = r.text().await.unwrap_or_default();
                    self.log.push(body.chars().take(300).collect());
                    if !body.contains("\"errors\"") {
                        self.tally.wrong.push(format!(
                            "{what}: a 5xx without the spec's error body: {body}"
                        ));
                    }
                    self.tally.retryable += 1;
                }
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if status == StatusCode::NOT_FOUND && body.contains("BLOB_UPLOAD_UNKNOWN") {
                        self.tally.restarts += 1;
                        return Sent::UploadUnknown;
                    }
                    self.tally
                        .wrong
                        .push(format!("{what}: {status} {body}; answers: {:#?}", self.log));
                    return Sent::GaveUp;
                }
            }
        }
        Sent::GaveUp
    }

    /// Pushes a blob in three requests (POST, PATCH of the first half, PUT
    /// of the rest with the digest); `true` once acknowledged.
    async fn push_blob(&mut self, repo: &str, data: &[u8]) -> bool {
        let d = sha256(data);
        let half = data.len() / 2;
        let reg = self.reg;
        self.log.clear();
        for _ in 0..=RESTARTS {
            let post_url = reg.url(&format!("/v2/{repo}/blobs/uploads/"));
            let r = match self
                .send("POST", StatusCode::ACCEPTED, || reg.client.post(&post_url))
                .await
            {
                Sent::Ok(r) => r,
                _ => return false,
            };
            let loc = absolute(reg, &header(&r, "location"));
            let first = data[..half].to_vec();
            let range = format!("0-{}", half - 1);
            let r = match self
                .send("PATCH", StatusCode::ACCEPTED, || {
                    reg.client
                        .patch(&loc)
                        .header("content-range", &range)
                        .body(first.clone())
                })
                .await
            {
                Sent::Ok(r) => r,
                Sent::UploadUnknown => continue,
                Sent::GaveUp => return false,
            };
            let loc = absolute(reg, &header(&r, "location"));
            let put_url = common::with_digest(&loc, &d);
            let rest = data[half..].to_vec();
            match self
                .send("PUT", StatusCode::CREATED, || {
                    reg.client.put(&put_url).body(rest.clone())
                })
                .await
            {
                Sent::Ok(_) => return true,
                Sent::UploadUnknown => continue,
                Sent::GaveUp => return false,
            }
        }
        false
    }
}

fn absolute(reg: &TestRegistry, loc: &str) -> String {
    if loc.starts_with('/') {
        reg.url(loc)
    } else {
        loc.to_owned()
    }
}

/// The blobs of image `i` of a cell: config, the shared layer, its own
/// layer (every fourth one past a 5 MiB part, so object stores send parts).
fn image_blobs(cell: &str, i: usize) -> Vec<Vec<u8>> {
    let config = format!("{{\"cell\":\"{cell}\",\"image\":{i}}}").into_bytes();
    let shared: Vec<u8> = (0..40_000u32).map(|j| (j % 251) as u8).collect();
    let own_size = if i % 4 == 3 {
        6 << 20
    } else {
        3_000 + i * 7_919 % 200_000
    };
    let own: Vec<u8> = (0..own_size)
        .map(|j| ((j as u64 * 2_654_435_761 + i as u64 * 97) >> 7) as u8)
        .collect();
    vec![config, shared, own]
}

fn images_per_cell() -> usize {
    std::env::var("REGSTORE_FAULT_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// The registry config over `storage` (a driver's section), with `faults`
/// at `rate` when given.
fn config(storage: &Value, rate: Option<f64>) -> String {
    let mut c = json!({
        "version": "0.1",
        "storage": storage,
        "log": { "level": "error" },
    });
    c["storage"]["delete"] = json!({ "enabled": true });
    c["storage"]["redirect"] = json!({ "disable": true });
    if let Some(rate) = rate {
        c["middleware"] = json!({ "storage": [{ "name": "faults", "options": {
            "probability": rate.to_string(),
            "seed": "22",
            "kinds": "error,timeout,latency,shortread,writerfail",
            "timeout": "50ms",
            "latency": "10ms",
        }}]});
    }
    c.to_string()
}

/// GETs `path` until it answers (at most 20 tries through faults); the
/// status and body of the first complete answer.
async fn read_back(reg: &TestRegistry, path: &str, accept: &str) -> (StatusCode, Vec<u8>) {
    let mut last = None;
    for _ in 0..20 {
        let r = reg
            .client
            .get(reg.url(path))
            .header("accept", accept)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        let Ok(r) = r else { continue };
        let status = r.status();
        if status.is_server_error() {
            last = Some(status);
            continue;
        }
        if let Ok(body) = r.bytes().await {
            return (status, body.to_vec());
        }
    }
    panic!("{path}: no complete answer in 20 tries (last {last:?})");
}

/// One cell: pushes through a registry with faults at `rate`, then checks
/// everything through `verifier` (or the faulty registry itself).
async fn cell(backend: &str, storage: &Value, rate: f64, shared_storage: bool) -> Tally {
    let faulty = start_yaml(&config(storage, Some(rate)), tempfile::tempdir().unwrap()).await;
    let cell = format!("{backend}-{rate}");
    let repo = "matrix/repo";
    let mut client = Client {
        reg: &faulty,
        tally: Tally::default(),
        log: Vec::new(),
    };
    let mut blobs_acked: Vec<(String, usize)> = Vec::new();
    let mut blobs_failed: Vec<String> = Vec::new();
    let mut manifests: Vec<(String, Vec<u8>)> = Vec::new();
    let images = images_per_cell();
    for i in 0..images {
        client.tally.images += 1;
        let blobs = image_blobs(&cell, i);
        let mut all = true;
        for b in &blobs {
            if client.push_blob(repo, b).await {
                blobs_acked.push((sha256(b), b.len()));
            } else {
                blobs_failed.push(sha256(b));
                all = false;
            }
        }
        if !all {
            continue;
        }
        let layers = [
            (sha256(&blobs[1]), blobs[1].len()),
            (sha256(&blobs[2]), blobs[2].len()),
        ];
        let layer_refs: Vec<(&str, usize)> = layers.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let body = oci_manifest(&sha256(&blobs[0]), blobs[0].len(), &layer_refs, None);
        let url = faulty.url(&format!("/v2/{repo}/manifests/t{i}"));
        let sent = client
            .send("PUT manifest", StatusCode::CREATED, || {
                faulty
                    .client
                    .put(&url)
                    .header("content-type", OCI_MANIFEST)
                    .body(body.clone())
            })
            .await;
        if let Sent::Ok(_) = sent {
            client.tally.acknowledged += 1;
            manifests.push((format!("t{i}"), body));
        }
    }
    let mut tally = client.tally;

    let clean;
    let verifier = if shared_storage {
        clean = start_yaml(&config(storage, None), tempfile::tempdir().unwrap()).await;
        &clean
    } else {
        &faulty
    };
    for (d, size) in &blobs_acked {
        let (status, body) = read_back(verifier, &format!("/v2/{repo}/blobs/{d}"), "*/*").await;
        assert_eq!(status, StatusCode::OK, "{cell}: acknowledged blob {d}");
        assert_eq!(body.len(), *size, "{cell}: acknowledged blob {d}");
        assert_eq!(sha256(&body), *d, "{cell}: acknowledged blob {d} is intact");
    }
    for d in &blobs_failed {
        if blobs_acked.iter().any(|(a, _)| a == d) {
            continue;
        }
        let (status, body) = read_back(verifier, &format!("/v2/{repo}/blobs/{d}"), "*/*").await;
        match status {
            StatusCode::NOT_FOUND => {}
            // The answer was lost after the blob was complete: still whole.
            StatusCode::OK => assert_eq!(sha256(&body), *d, "{cell}: a failed push is whole"),
            other => panic!("{cell}: failed push {d}: GET answered {other}"),
        }
    }
    for (tag, body) in &manifests {
        let (status, got) = read_back(
            verifier,
            &format!("/v2/{repo}/manifests/{tag}"),
            OCI_MANIFEST,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{cell}: acknowledged manifest {tag}"
        );
        assert_eq!(&got, body, "{cell}: acknowledged manifest {tag} is intact");
        tally.verified += 1;
    }
    tally
}

/// Runs the three rates on one backend, prints the rows, checks the rules.
async fn matrix(backend: &str, storage: Value, shared_storage: bool) {
    let mut rows = Vec::new();
    for rate in RATES {
        // Each rate on a fresh root of its own.
        let mut storage = storage.clone();
        if let Some(params) = storage.as_object_mut().and_then(|m| m.values_mut().next())
            && let Some(root) = params.get("rootdirectory").and_then(Value::as_str)
        {
            params["rootdirectory"] = json!(format!("{root}/r{}", (rate * 100.0) as u32));
        }
        let t = cell(backend, &storage, rate, shared_storage).await;
        let cellname = format!("{backend} at {:.0} %", rate * 100.0);
        assert_none(&cellname, "wrong answers", &t.wrong);
        assert_none(&cellname, "hung requests", &t.hangs);
        assert_eq!(
            t.verified, t.acknowledged,
            "{cellname}: every acknowledged image verified"
        );
        if rate <= 0.10 {
            // A retrying client gets nearly every image through (GCS
            // discards an upload whose rollback would need a part back).
            let needed = t.images - t.images / 3;
            assert!(
                t.acknowledged >= needed,
                "{cellname}: only {} of {} images got through: {t:?}",
                t.acknowledged,
                t.images
            );
        }
        rows.push(format!(
            "| {backend} | {:.0} % | {} | {} | {} / {} | {} | {} |",
            rate * 100.0,
            t.requests,
            t.retryable,
            t.acknowledged,
            t.images,
            t.verified,
            t.restarts,
        ));
    }
    eprintln!(
        "| backend | faults | requests | retryable errors | images acknowledged | verified intact | uploads restarted |\n|---|---|---|---|---|---|---|\n{}",
        rows.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_inmemory() {
    matrix("inmemory", json!({ "inmemory": {} }), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    matrix(
        "filesystem",
        json!({ "filesystem": { "rootdirectory": root.display().to_string() } }),
        true,
    )
    .await;
}

async fn cloud(driver: &str) {
    let Some(mut params) = regstore_testenv::backend::emulator_params_or_skip(driver).await else {
        return;
    };
    params.insert("chunksize".into(), "5MiB".into());
    let params = serde_json::to_value(&params).expect("params as JSON");
    matrix(driver, json!({ driver: params }), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_s3() {
    cloud("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_azure() {
    cloud("azure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_gcs() {
    cloud("gcs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_swift() {
    cloud("swift").await;
}
