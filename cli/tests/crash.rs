//! `kill -9` of `regstore serve` at random points while eight clients push
//! blobs in chunks (issue 22), on the filesystem driver and on s3 (moto).
//!
//! Each round starts the server on the same storage, lets the clients run,
//! and kills the process after a random delay, with requests in flight.
//! After every restart:
//! - every upload either continues from its last acknowledged offset (or
//!   from the end of a PATCH whose 202 the crash swallowed: same bytes) or
//!   answers `404 BLOB_UPLOAD_UNKNOWN`, and the client starts that blob
//!   again; any other answer fails the test;
//! - every blob answered 201 reads back whole and hashing to its digest.
//!
//! A last round without a kill finishes every blob. Page-cache loss (a power
//! cut) is not what `kill -9` tests: the filesystem's fsyncs are listed in
//! the README's durability notes.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, client_builder, cloud_config, header, serve, sha256};
use reqwest::StatusCode;

/// Rounds that end in a kill; one more finishes the work.
const KILLS: usize = 3;
/// How long an upload's lease left by the killed process may hold it (the
/// lease's 30 s lifetime and its margin): until then a request on it is
/// answered 409 and retried.
const LEASE_WAIT: Duration = Duration::from_secs(45);
const CLIENTS: usize = 8;
/// Chunks of each blob.
const CHUNKS: usize = 12;

/// One client's blob and how far the registry has acknowledged it.
#[derive(Clone, Debug)]
struct Upload {
    data: Vec<u8>,
    /// The upload URL path, once a POST was answered.
    path: Option<String>,
    /// Bytes acknowledged (202 to a PATCH).
    acked: usize,
    /// Bytes of the PATCH in flight, if one was sent and not answered.
    in_flight: usize,
    done: bool,
}

#[derive(Default, Debug)]
struct Tally {
    continued: usize,
    continued_past_swallowed_202: usize,
    restarted: usize,
    finished: usize,
}

/// A deterministic pseudo-random sequence (the test's crash points).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn blob(client: usize, generation: usize) -> Vec<u8> {
    let size = 3_000_000 + client * 37_001 + generation * 1_009;
    (0..size)
        .map(|j| ((j as u64 * 2_654_435_761 + (client * 131 + generation) as u64) >> 11) as u8)
        .collect()
}

/// Pushes `u` on until done or the server goes away; the state is saved in
/// `slot` after every answer.
async fn run_client(base: String, slot: Arc<Mutex<Upload>>) {
    let c = client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut u = slot.lock().unwrap().clone();
    let chunk = u.data.len().div_ceil(CHUNKS);
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    loop {
        if u.done {
            return;
        }
        let Some(path) = u.path.clone() else {
            let Ok(r) = c
                .post(format!("{base}/v2/crash/repo/blobs/uploads/"))
                .send()
                .await
            else {
                return;
            };
            assert_eq!(r.status(), StatusCode::ACCEPTED, "POST");
            u.path = Some(header(&r, "location"));
            *slot.lock().unwrap() = u.clone();
            continue;
        };
        let end = (u.acked + chunk).min(u.data.len());
        if u.acked < u.data.len() {
            u.in_flight = end - u.acked;
            *slot.lock().unwrap() = u.clone();
            let sent = c
                .patch(format!("{base}{path}"))
                .header("content-range", format!("{}-{}", u.acked, end - 1))
                .body(u.data[u.acked..end].to_vec())
                .send()
                .await;
            let Ok(r) = sent else { return };
            if r.status().is_server_error() {
                return;
            }
            if busy(&r, deadline).await {
                continue;
            }
            assert_eq!(
                r.status(),
                StatusCode::ACCEPTED,
                "PATCH: {:?}",
                r.text().await
            );
            u.path = Some(header(&r, "location"));
            u.acked = end;
            u.in_flight = 0;
            *slot.lock().unwrap() = u.clone();
            continue;
        }
        let d = sha256(&u.data);
        let Ok(r) = c.put(format!("{base}{path}?digest={d}")).send().await else {
            return;
        };
        if r.status().is_server_error() {
            return;
        }
        if busy(&r, deadline).await {
            continue;
        }
        assert_eq!(r.status(), StatusCode::CREATED, "PUT: {:?}", r.text().await);
        u.done = true;
        *slot.lock().unwrap() = u.clone();
    }
}

/// Whether `r` is the 409 of an upload still leased by the killed process
/// (then after a pause, before `deadline`, the request is sent again).
async fn busy(r: &reqwest::Response, deadline: tokio::time::Instant) -> bool {
    if r.status() != StatusCode::CONFLICT {
        return false;
    }
    assert!(
        tokio::time::Instant::now() < deadline,
        "an upload stayed busy longer than its lease"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    true
}

/// After a restart: where each unfinished upload stands, checked against
/// what its client was told.
async fn reconcile(
    base: &str,
    uploads: &[Arc<Mutex<Upload>>],
    tally: &mut Tally,
    generation: usize,
) {
    let c = client_builder().build().expect("client");
    for (i, slot) in uploads.iter().enumerate() {
        let mut u = slot.lock().unwrap().clone();
        if u.done {
            continue;
        }
        let Some(path) = u.path.clone() else { continue };
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut r = c.get(format!("{base}{path}")).send().await.expect("status");
        while busy(&r, deadline).await {
            r = c.get(format!("{base}{path}")).send().await.expect("status");
        }
        match r.status() {
            StatusCode::NO_CONTENT => {
                let held = header(&r, "range")
                    .trim_start_matches("0-")
                    .parse::<usize>()
                    .expect("range")
                    + 1;
                let held = if header(&r, "range") == "0-0" {
                    0
                } else {
                    held
                };
                if held == u.acked {
                    tally.continued += 1;
                } else if u.in_flight > 0 && held == u.acked + u.in_flight {
                    // The PATCH was done; its 202 died with the server.
                    tally.continued_past_swallowed_202 += 1;
                    u.acked = held;
                } else {
                    panic!(
                        "upload {i}: the server holds {held} bytes, the client was told {} (in flight {})",
                        u.acked, u.in_flight
                    );
                }
            }
            StatusCode::NOT_FOUND => {
                let body = r.text().await.unwrap_or_default();
                assert!(body.contains("BLOB_UPLOAD_UNKNOWN"), "upload {i}: {body}");
                tally.restarted += 1;
                u = Upload {
                    data: blob(i, generation),
                    path: None,
                    acked: 0,
                    in_flight: 0,
                    done: false,
                };
            }
            other => panic!("upload {i}: status answered {other}"),
        }
        u.in_flight = 0;
        *slot.lock().unwrap() = u;
    }
}

async fn verify_done(base: &str, uploads: &[Arc<Mutex<Upload>>]) -> usize {
    let c = client_builder().build().expect("client");
    let mut n = 0;
    for slot in uploads {
        let u = slot.lock().unwrap().clone();
        if !u.done {
            continue;
        }
        let d = sha256(&u.data);
        let r = c
            .get(format!("{base}/v2/crash/repo/blobs/{d}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {d}");
        let got = r.bytes().await.expect("body");
        assert_eq!(sha256(&got), d, "acknowledged blob {d} is intact");
        n += 1;
    }
    n
}

async fn crash_rounds(label: &str, start: impl Fn() -> Server) {
    let mut rng = Lcg(22);
    let uploads: Vec<Arc<Mutex<Upload>>> = (0..CLIENTS)
        .map(|i| {
            Arc::new(Mutex::new(Upload {
                data: blob(i, 0),
                path: None,
                acked: 0,
                in_flight: 0,
                done: false,
            }))
        })
        .collect();
    let mut tally = Tally::default();
    for round in 0..=KILLS {
        let server = start();
        reconcile(&server.base, &uploads, &mut tally, round + 1).await;
        verify_done(&server.base, &uploads).await;
        // Blobs finished in an earlier round make room for new ones.
        for (i, slot) in uploads.iter().enumerate() {
            let mut u = slot.lock().unwrap();
            if u.done && round < KILLS {
                tally.finished += 1;
                *u = Upload {
                    data: blob(i, 100 + round),
                    path: None,
                    acked: 0,
                    in_flight: 0,
                    done: false,
                };
            }
        }
        let tasks: Vec<_> = uploads
            .iter()
            .map(|slot| tokio::spawn(run_client(server.base.clone(), slot.clone())))
            .collect();
        if round < KILLS {
            tokio::time::sleep(Duration::from_millis(30 + rng.below(400))).await;
            drop(server); // SIGKILL, then wait for the process
            for t in tasks {
                t.await.expect("client task");
            }
        } else {
            for t in tasks {
                t.await.expect("client task");
            }
            let n = verify_done(&server.base, &uploads).await;
            assert_eq!(n, CLIENTS, "{label}: every blob finished in the last round");
        }
    }
    eprintln!("{label}: {tally:?}");
    assert!(
        tally.continued + tally.continued_past_swallowed_202 > 0,
        "{label}: no upload was continued after a kill: {tally:?}"
    );
}

fn serve_config(dir: &Path, config: &Path) -> Server {
    serve(
        dir,
        &["--config", config.to_str().expect("utf-8 path")],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_on_filesystem_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yml");
    let root = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .expect("write config");
    crash_rounds("filesystem", || serve_config(dir.path(), &config)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_on_s3_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(config) = cloud_config("s3", dir.path()).await else {
        return;
    };
    crash_rounds("s3", || serve_config(dir.path(), &config)).await;
}
