//! The real backend process stopped and restarted mid-operation (issue 22):
//! on s3 (moto), azure (Azurite), gcs (fake-gcs-server) and swift (the
//! proxy), a private instance of the emulator
//! ([`regstore_testenv::instance`], never the shared one other tests use)
//! is stopped while three clients push and pull images through one
//! in-process registry, kept down for a few seconds while they go on, and
//! started again on the same port and data. The registry is not restarted:
//! what is tested is that its driver's HTTP clients recover by themselves.
//!
//! What must hold:
//! - while the backend is down, every answer is a 5xx with the spec's error
//!   body (or, for a request whose driver retries outlived the outage, the
//!   right answer after it); never another 4xx, never a wrong 2xx, and no
//!   request runs past [`HANG`];
//! - an upload in flight either continues where it was acknowledged or
//!   answers `404 BLOB_UPLOAD_UNKNOWN` (the client starts that blob again);
//!   a request sent once the backend is back never fails for good;
//! - afterwards, without restarting the registry, every client pushes and
//!   pulls new images, and every image acknowledged (manifest `PUT` 201)
//!   pulls back intact, digests checked, on the backends that keep their
//!   data across the restart. moto keeps everything in memory: there only
//!   the images pushed after the restart are checked, and a manifest or
//!   blob lost with the old process may answer 404 / `MANIFEST_BLOB_UNKNOWN`.
//!
//! How each backend is stopped: moto, fake-gcs-server and the Swift proxy
//! with SIGKILL; Azurite with SIGTERM, because it keeps its metadata in a
//! LokiJS file saved every ~5 s, so SIGKILL loses the last seconds of
//! acknowledged writes (a property of the emulator, not of Azure). moto is
//! also paused (SIGSTOP for a few seconds, then SIGCONT): a hung backend.
//!
//! Each test prints its row of the table in docs/reliability.md.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{OCI_MANIFEST, assert_none, header, oci_manifest, sha256, start_yaml, with_digest};
use regstore_testenv::instance::Instance;
use reqwest::StatusCode;
use serde_json::json;

/// Concurrent clients.
const CLIENTS: usize = 3;
/// Attempts per request before the client gives up on the image.
const ATTEMPTS: u32 = 6;
/// The first wait before a retry; doubled each time, at most 2 s.
const BACKOFF: Duration = Duration::from_millis(250);
/// Times a blob is started again after its upload was discarded.
const RESTARTS: usize = 3;
/// A request that takes longer than this hangs.
const HANG: Duration = Duration::from_secs(45);
/// How long the backend stays down.
const OUTAGE: Duration = Duration::from_secs(5);
/// Images acknowledged before the backend is stopped.
const BEFORE: usize = 3;
/// Images each client must push after the restart.
const AFTER_EACH: usize = 2;
/// The longest each phase may take.
const PHASE: Duration = Duration::from_secs(60);

/// How the backend is taken away and brought back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// SIGKILL, then the same command on the same data.
    Kill,
    /// SIGTERM (the server's orderly shutdown), then the same command.
    Terminate,
    /// SIGSTOP, then SIGCONT: a backend that hangs, then wakes up.
    Pause,
}

/// Where the run is, as seen by a request when it is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Before = 0,
    Down = 1,
    After = 2,
}

/// One acknowledged image.
#[derive(Clone, Debug)]
struct Image {
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, usize)>,
    /// The phase when its manifest PUT was sent.
    phase: Phase,
}

#[derive(Default, Debug)]
struct Tally {
    requests: usize,
    /// Answers to requests sent while the backend was down, by status (or
    /// `transport error`).
    while_down: BTreeMap<String, usize>,
    /// Retryable failures (5xx, cut connection) in all.
    retryable: usize,
    /// Uploads that failed while the backend was down and then continued.
    continued: usize,
    /// Uploads discarded (`BLOB_UPLOAD_UNKNOWN`) and started again.
    restarted: usize,
    /// Reads or manifests that found data the backend lost (moto only).
    lost: usize,
    /// The longest request.
    slowest: Duration,
    /// Answers that are neither success nor retryable: must stay empty.
    wrong: Vec<String>,
    /// Requests past [`HANG`]: must stay empty.
    hangs: Vec<String>,
    /// Requests sent after the restart that failed every attempt: must
    /// stay empty.
    stuck: Vec<String>,
    acked: Vec<Image>,
    /// Images pulled back (by their client) and verified.
    pulled: usize,
}

/// What the clients share with the test.
struct Run {
    base: String,
    client: reqwest::Client,
    phase: AtomicUsize,
    /// Upload requests (PATCH, PUT) in flight.
    uploading: AtomicUsize,
    stop: AtomicBool,
    /// The backend keeps its data across the restart.
    keeps_data: bool,
    tally: Mutex<Tally>,
}

impl Run {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Before,
            1 => Phase::Down,
            _ => Phase::After,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn absolute(&self, loc: &str) -> String {
        if loc.starts_with('/') {
            self.url(loc)
        } else {
            loc.to_owned()
        }
    }

    fn note(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.tally.lock().expect("tally"));
    }

    fn acked(&self) -> usize {
        self.tally.lock().expect("tally").acked.len()
    }
}

/// How a request ended.
enum Sent {
    Ok(reqwest::Response),
    /// The upload is gone: start the blob again.
    UploadUnknown,
    /// The backend lost what the request needs (moto restarted): start the
    /// image again.
    Lost,
    /// Out of attempts, or a wrong answer (recorded).
    GaveUp,
}

/// One client: its number and the requests of its current image.
struct Client {
    run: Arc<Run>,
    id: usize,
    log: Vec<String>,
}

impl Client {
    /// Sends `make()` until it answers `expected`, up to [`ATTEMPTS`] times
    /// with a doubling backoff. `upload` marks PATCH and PUT of an upload.
    async fn send(
        &mut self,
        what: &str,
        expected: StatusCode,
        upload: bool,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Sent {
        let run = self.run.clone();
        let mut failed_while_down = false;
        let mut all_after = true;
        let mut wait = BACKOFF;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            let phase = run.phase();
            all_after &= phase == Phase::After;
            if upload {
                run.uploading.fetch_add(1, Ordering::SeqCst);
            }
            let t0 = Instant::now();
            let sent = make().timeout(HANG).send().await;
            let took = t0.elapsed();
            if upload {
                run.uploading.fetch_sub(1, Ordering::SeqCst);
            }
            let mut answer = match &sent {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "transport error".to_owned(),
            };
            let answered = run.phase();
            if answered == Phase::After && phase != Phase::After {
                answer.push_str(" once back");
            } else if phase == Phase::Before && answered == Phase::Down {
                answer.push_str(" sent before the stop");
            }
            self.log.push(format!("{what} ({phase:?}): {answer}"));
            run.note(|t| {
                t.requests += 1;
                t.slowest = t.slowest.max(took);
                if phase == Phase::Down || answered != phase {
                    *t.while_down.entry(format!("{what} {answer}")).or_default() += 1;
                }
            });
            let r = match sent {
                Err(e) if e.is_timeout() => {
                    run.note(|t| t.hangs.push(format!("client {}: {what}: {e}", self.id)));
                    return Sent::GaveUp;
                }
                Err(_) => {
                    run.note(|t| t.retryable += 1);
                    failed_while_down |= phase != Phase::After;
                    continue;
                }
                Ok(r) => r,
            };
            let status = r.status();
            // A plain POST stores nothing (the upload id carries its start
            // time), so it needs no backend.
            if phase == Phase::Down
                && answered == Phase::Down
                && !status.is_server_error()
                && what != "POST"
            {
                // Nothing is cached: without its backend the registry
                // knows nothing, so it must say it is unavailable.
                run.note(|t| {
                    t.wrong.push(format!(
                        "client {}: {what}: {status} while the backend was down",
                        self.id
                    ))
                });
                return Sent::GaveUp;
            }
            if status == expected {
                if upload && failed_while_down {
                    run.note(|t| t.continued += 1);
                }
                return Sent::Ok(r);
            }
            let body = r.text().await.unwrap_or_default();
            if status.is_server_error() {
                if !body.contains("\"errors\"") {
                    run.note(|t| {
                        t.wrong.push(format!(
                            "{what}: {status} without the spec's error body: {body}"
                        ))
                    });
                    return Sent::GaveUp;
                }
                self.log.push(body.chars().take(200).collect());
                run.note(|t| t.retryable += 1);
                failed_while_down |= phase != Phase::After;
                continue;
            }
            if status == StatusCode::NOT_FOUND && body.contains("BLOB_UPLOAD_UNKNOWN") {
                run.note(|t| t.restarted += 1);
                return Sent::UploadUnknown;
            }
            // moto forgets everything: what was pushed before its restart
            // is gone (blob and manifest reads answer 404, a manifest whose
            // blobs went with it 400 MANIFEST_BLOB_UNKNOWN).
            let lost = status == StatusCode::NOT_FOUND
                || (status == StatusCode::BAD_REQUEST && body.contains("MANIFEST_BLOB_UNKNOWN"));
            if lost && !run.keeps_data {
                run.note(|t| t.lost += 1);
                return Sent::Lost;
            }
            let log = self.log.join("\n  ");
            run.note(|t| {
                t.wrong.push(format!(
                    "client {}: {what}: {status} {body}; its answers:\n  {log}",
                    self.id
                ))
            });
            return Sent::GaveUp;
        }
        if all_after {
            let log = self.log.join("\n  ");
            run.note(|t| {
                t.stuck.push(format!(
                    "client {}: {what}: failed {ATTEMPTS} times with the backend up:\n  {log}",
                    self.id
                ))
            });
        }
        Sent::GaveUp
    }

    /// Pushes a blob: in `chunks` PATCHes and an empty PUT, or (0) in a
    /// single `POST ?digest=`. `Ok(true)` once acknowledged.
    async fn push_blob(&mut self, repo: &str, data: &[u8], chunks: usize) -> Result<bool, Sent> {
        let run = self.run.clone();
        let d = sha256(data);
        for _ in 0..=RESTARTS {
            let post = run.url(&format!("/v2/{repo}/blobs/uploads/"));
            if chunks == 0 {
                let url = with_digest(&post, &d);
                return match self
                    .send("POST ?digest", StatusCode::CREATED, false, || {
                        run.client.post(&url).body(data.to_vec())
                    })
                    .await
                {
                    Sent::Ok(_) => Ok(true),
                    other => Err(other),
                };
            }
            let r = match self
                .send("POST", StatusCode::ACCEPTED, false, || {
                    run.client.post(&post)
                })
                .await
            {
                Sent::Ok(r) => r,
                other => return Err(other),
            };
            let mut loc = run.absolute(&header(&r, "location"));
            let size = data.len().div_ceil(chunks);
            let mut discarded = false;
            for (i, chunk) in data.chunks(size).enumerate() {
                let start = i * size;
                let range = format!("{start}-{}", start + chunk.len() - 1);
                match self
                    .send("PATCH", StatusCode::ACCEPTED, true, || {
                        run.client
                            .patch(&loc)
                            .header("content-range", &range)
                            .body(chunk.to_vec())
                    })
                    .await
                {
                    Sent::Ok(r) => loc = run.absolute(&header(&r, "location")),
                    Sent::UploadUnknown => {
                        discarded = true;
                        break;
                    }
                    other => return Err(other),
                }
            }
            if discarded {
                continue;
            }
            let put = with_digest(&loc, &d);
            match self
                .send("PUT", StatusCode::CREATED, true, || run.client.put(&put))
                .await
            {
                Sent::Ok(_) => return Ok(true),
                Sent::UploadUnknown => continue,
                other => return Err(other),
            }
        }
        Ok(false)
    }

    /// Pushes image `n` of this client (a config, a layer in chunks, a
    /// layer in one request, a manifest under a tag); `Some` once its
    /// manifest is acknowledged.
    async fn push_image(&mut self, repo: &str, n: usize) -> Option<Image> {
        let run = self.run.clone();
        let config = format!(
            "{{\"architecture\":\"amd64\",\"client\":{},\"n\":{n}}}",
            self.id
        )
        .into_bytes();
        let seed = (self.id * 1000 + n) as u64;
        let chunked = blob(seed, 1_200_000 + n * 4_099);
        let single = blob(seed + 7, 200_000 + n * 1_031);
        self.log.clear();
        for _ in 0..=RESTARTS {
            let mut all = true;
            for (data, chunks) in [(&config, 0), (&chunked, 3), (&single, 0)] {
                match self.push_blob(repo, data, chunks).await {
                    Ok(true) => {}
                    Ok(false) | Err(Sent::GaveUp) => return None,
                    Err(_) => {
                        all = false;
                        break;
                    }
                }
            }
            if !all {
                continue;
            }
            let blobs = vec![
                (sha256(&config), config.len()),
                (sha256(&chunked), chunked.len()),
                (sha256(&single), single.len()),
            ];
            let layers: Vec<(&str, usize)> =
                blobs[1..].iter().map(|(d, n)| (d.as_str(), *n)).collect();
            let manifest = oci_manifest(&blobs[0].0, blobs[0].1, &layers, None);
            let tag = format!("c{}-{n}", self.id);
            let url = run.url(&format!("/v2/{repo}/manifests/{tag}"));
            let phase = run.phase();
            match self
                .send("PUT manifest", StatusCode::CREATED, false, || {
                    run.client
                        .put(&url)
                        .header("content-type", OCI_MANIFEST)
                        .body(manifest.clone())
                })
                .await
            {
                Sent::Ok(_) => {
                    return Some(Image {
                        tag,
                        manifest,
                        blobs,
                        phase,
                    });
                }
                Sent::Lost => continue,
                _ => return None,
            }
        }
        None
    }

    /// Pulls `image` (manifest by tag, every blob) and checks it; `false`
    /// when a request gave up (or found it lost with moto).
    async fn pull(&mut self, repo: &str, image: &Image) -> bool {
        let run = self.run.clone();
        let url = run.url(&format!("/v2/{repo}/manifests/{}", image.tag));
        let Sent::Ok(r) = self
            .send("GET manifest", StatusCode::OK, false, || {
                run.client.get(&url).header("accept", OCI_MANIFEST)
            })
            .await
        else {
            return false;
        };
        let got = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        if got != image.manifest {
            run.note(|t| t.wrong.push(format!("manifest {} differs", image.tag)));
            return false;
        }
        for (d, size) in &image.blobs {
            let url = run.url(&format!("/v2/{repo}/blobs/{d}"));
            let Sent::Ok(r) = self
                .send("GET blob", StatusCode::OK, false, || run.client.get(&url))
                .await
            else {
                return false;
            };
            // A body cut by the backend's death is a transport failure; a
            // complete one must be the blob.
            let Ok(body) = r.bytes().await else {
                return false;
            };
            if body.len() != *size || sha256(&body) != *d {
                run.note(|t| {
                    t.wrong.push(format!(
                        "blob {d} of {}: {} bytes hashing to {}",
                        image.tag,
                        body.len(),
                        sha256(&body)
                    ))
                });
                return false;
            }
        }
        true
    }
}

/// Deterministic content of `len` bytes.
fn blob(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((j as u64 * 2_654_435_761 + seed * 97) >> 9) as u8)
        .collect()
}

/// A client's loop: push an image, pull it back, until told to stop.
async fn client_loop(run: Arc<Run>, id: usize, repo: &'static str) {
    let mut c = Client {
        run: run.clone(),
        id,
        log: Vec::new(),
    };
    let mut n = 0;
    while !run.stop.load(Ordering::SeqCst) {
        if let Some(image) = c.push_image(repo, n).await {
            run.note(|t| t.acked.push(image.clone()));
            if c.pull(repo, &image).await {
                run.note(|t| t.pulled += 1);
            }
        }
        n += 1;
    }
}

/// Waits (polling) until `done()`, at most `limit`; whether it happened.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

/// The driver's chunk (part) size: its minimum, so that the chunked layer
/// spans parts where the emulator takes small ones.
fn chunk_size(driver: &str) -> &'static str {
    match driver {
        "s3" => "5MiB",
        "gcs" => "256KiB",
        _ => "1MiB",
    }
}

async fn restart_test(driver: &str, stop: Stop) {
    let started = regstore_testenv::backend::skip_unless_required(
        &format!("private {driver} emulator"),
        Instance::start(driver),
    );
    let Some(mut backend) = started else { return };
    let mut params = regstore_testenv::backend::emulator_params_at(driver, &backend.endpoint())
        .await
        .expect("emulator parameters");
    params.insert("chunksize".into(), chunk_size(driver).into());
    let yaml = json!({
        "version": "0.1",
        "log": { "level": "error" },
        "storage": {
            driver: params,
            "delete": { "enabled": true },
            "redirect": { "disable": true },
        },
    })
    .to_string();
    let reg = start_yaml(&yaml, tempfile::tempdir().expect("temp dir")).await;
    let keeps_data = !(driver == "s3" && stop != Stop::Pause);
    let run = Arc::new(Run {
        base: reg.base.clone(),
        client: reg.client.clone(),
        phase: AtomicUsize::new(Phase::Before as usize),
        uploading: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        keeps_data,
        tally: Mutex::new(Tally::default()),
    });
    let repo = "restart/repo";
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client_loop(run.clone(), id, repo)))
        .collect();
    let t0 = Instant::now();

    // Stop the backend once a few images are through and an upload request
    // is in flight.
    let warm = wait_until(PHASE, || run.acked() >= BEFORE).await;
    assert!(
        warm,
        "{driver}: {BEFORE} images not pushed in {PHASE:?}: {:#?}",
        run.tally
    );
    let in_flight = wait_until(Duration::from_secs(10), || {
        run.uploading.load(Ordering::SeqCst) > 0
    })
    .await;
    let acked_before = run.acked();
    // The instance's calls block (processes, polling): off the runtime's
    // workers, so that the clients and the registry go on meanwhile.
    match stop {
        Stop::Kill => tokio::task::block_in_place(|| backend.kill()),
        Stop::Terminate => tokio::task::block_in_place(|| backend.terminate()),
        Stop::Pause => backend.signal("STOP").expect("SIGSTOP"),
    }
    run.phase.store(Phase::Down as usize, Ordering::SeqCst);
    let down_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    // After, before the backend can answer again: a request answered from
    // here on may have been served by the woken or restarted backend.
    run.phase.store(Phase::After as usize, Ordering::SeqCst);
    match stop {
        Stop::Pause => backend.signal("CONT").expect("SIGCONT"),
        _ => tokio::task::block_in_place(|| backend.respawn())
            .unwrap_or_else(|e| panic!("{driver}: restart: {e}")),
    }
    let down_for = down_at.elapsed();
    if stop != Stop::Pause {
        tokio::task::block_in_place(|| backend.ready())
            .unwrap_or_else(|e| panic!("{driver}: restarted: {e}"));
    }

    // Every client pushes new images, on the same registry.
    let after = |run: &Run| {
        let t = run.tally.lock().expect("tally");
        (0..CLIENTS).all(|id| {
            let prefix = format!("c{id}-");
            t.acked
                .iter()
                .filter(|i| i.phase == Phase::After && i.tag.starts_with(&prefix))
                .count()
                >= AFTER_EACH
        })
    };
    let recovered = wait_until(PHASE, || after(&run)).await;
    run.stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(HANG * 4, c)
            .await
            .expect("a client stops within its bounds")
            .expect("client task");
    }
    let tally = std::mem::take(&mut *run.tally.lock().expect("tally"));
    assert_none(driver, "wrong answers", &tally.wrong);
    assert_none(driver, "hung requests", &tally.hangs);
    assert_none(
        driver,
        "requests that failed with the backend back up",
        &tally.stuck,
    );
    assert!(
        recovered,
        "{driver}: not every client pushed {AFTER_EACH} images after the restart within {PHASE:?}: {tally:#?}"
    );
    let down_answers: usize = tally.while_down.values().sum();
    assert!(
        down_answers > 0,
        "{driver}: no request was answered while the backend was down"
    );

    // Every acknowledged image reads back intact (through a fresh client of
    // the same registry); on moto only those pushed after its restart.
    let mut checker = Client {
        run: run.clone(),
        id: CLIENTS,
        log: Vec::new(),
    };
    let mut verified = 0;
    let checked: Vec<&Image> = tally
        .acked
        .iter()
        .filter(|i| keeps_data || i.phase == Phase::After)
        .collect();
    for image in &checked {
        assert!(
            checker.pull(repo, image).await,
            "{driver}: acknowledged image {} does not pull back: {:#?}",
            image.tag,
            checker.log
        );
        verified += 1;
    }
    let wrong = std::mem::take(&mut run.tally.lock().expect("tally").wrong);
    assert_none(driver, "wrong answers when checked", &wrong);
    // The private instances' data goes with their temporary directories;
    // Swift's is in the shared cluster.
    if driver == "swift" {
        reg.registry
            .driver()
            .delete("/docker")
            .await
            .expect("clean up");
    }
    let answers: Vec<String> = tally
        .while_down
        .iter()
        .map(|(k, v)| format!("{v}× {k}"))
        .collect();
    eprintln!(
        "| backend | stopped by | down s | requests sent or in flight while down: answers | images acknowledged (before stop / in all) | verified intact | uploads continued / restarted | recovered without restart | slowest request s | total s |\n\
         |---|---|---:|---|---:|---:|---:|---|---:|---:|\n\
         | {driver} | {stop:?}{} | {:.1} | {}: {} | {acked_before} / {} | {verified} of {} | {} / {} | {} | {:.1} | {:.0} |",
        if in_flight { ", uploads in flight" } else { "" },
        down_for.as_secs_f64(),
        down_answers,
        answers.join(", "),
        tally.acked.len(),
        checked.len(),
        tally.continued,
        tally.restarted,
        if recovered { "yes" } else { "no" },
        tally.slowest.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_killed_and_restarted_empty() {
    restart_test("s3", Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_paused_and_resumed() {
    restart_test("s3", Stop::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_stopped_and_restarted() {
    restart_test("azure", Stop::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_killed_and_restarted() {
    restart_test("gcs", Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_proxy_killed_and_restarted() {
    restart_test("swift", Stop::Kill).await;
}

/// Longest a request may take against a hung backend with `timeout: 1s`
/// (a call's attempts stop after 3 × `timeout` on object_store's clients,
/// after 5 attempts on swift's; a request makes a few calls). With the
/// former fixed 60 s per attempt it took minutes.
const HUNG_ANSWER: Duration = Duration::from_secs(25);

/// A backend that hangs (SIGSTOP) under a registry whose driver has
/// `connecttimeout: 1s` and `timeout: 1s`: a blob HEAD and a one-request
/// blob push answer 503 with the spec's error body well before the backend wakes up
/// (it is woken once they answered, or after [`HANG`]); afterwards the same
/// registry serves the blob.
async fn hung_backend_test(driver: &str) {
    let started = regstore_testenv::backend::skip_unless_required(
        &format!("private {driver} emulator"),
        Instance::start(driver),
    );
    let Some(backend) = started else { return };
    let mut params = regstore_testenv::backend::emulator_params_at(driver, &backend.endpoint())
        .await
        .expect("emulator parameters");
    params.insert("connecttimeout".into(), "1s".into());
    params.insert("timeout".into(), "1s".into());
    let yaml = json!({
        "version": "0.1",
        "log": { "level": "error" },
        "storage": { driver: params, "redirect": { "disable": true } },
    })
    .to_string();
    let reg = start_yaml(&yaml, tempfile::tempdir().expect("temp dir")).await;
    let digest = reg.push_blob("hung/repo", b"before the hang").await;
    backend.signal("STOP").expect("SIGSTOP");
    let paused = Instant::now();
    let requests = [
        reg.client
            .head(reg.url(&format!("/v2/hung/repo/blobs/{digest}"))),
        // A write: POST starts an upload without storing anything.
        reg.client
            .post(reg.url(&format!(
                "/v2/hung/repo/blobs/uploads/?digest={}",
                sha256(b"during the hang")
            )))
            .body(&b"during the hang"[..]),
    ];
    let mut answers = Vec::new();
    for request in requests {
        let sent = Instant::now();
        let r = tokio::time::timeout(HANG, request.send()).await;
        answers.push((r, sent.elapsed()));
    }
    backend.signal("CONT").expect("SIGCONT");
    eprintln!("{driver}: paused {:?}", paused.elapsed());
    for (i, (r, took)) in answers.into_iter().enumerate() {
        let r = r
            .unwrap_or_else(|_| panic!("{driver}: request {i} still waiting after {HANG:?}"))
            .expect("an answer");
        eprintln!("{driver}: request {i}: {} in {took:?}", r.status());
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{driver}: request {i}"
        );
        assert!(
            took < HUNG_ANSWER,
            "{driver}: request {i} took {took:?} against a hung backend with timeout 1s"
        );
        if i == 1 {
            // The push: the error body names the code.
            let body: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or_default();
            assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{driver}: {body}");
        }
    }
    // Awake again: the same registry serves what was stored.
    let mut served = false;
    for _ in 0..20 {
        let r = reg
            .client
            .get(reg.url(&format!("/v2/hung/repo/blobs/{digest}")))
            .send()
            .await
            .expect("GET");
        if r.status() == StatusCode::OK {
            assert_eq!(&r.bytes().await.expect("body")[..], b"before the hang");
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        served,
        "{driver}: the blob is served once the backend wakes up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_hung_requests_answer_within_the_driver_timeout() {
    hung_backend_test("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_hung_requests_answer_within_the_driver_timeout() {
    hung_backend_test("swift").await;
}
