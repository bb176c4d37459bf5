//! Upload integrity under attack: no request sequence makes a blob's bytes
//! differ from its digest. Each attack of issue 15 is driven over raw
//! sockets (a stalled PATCH, overlapping PATCHes with a cut connection),
//! on the filesystem driver and on s3 (moto); every blob the registry
//! answered 201 for is read back and hashed by the test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use regstore_core::RawParams;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where each attack runs: filesystem in a temporary directory, and s3 on
/// moto under a fresh root directory (skipped outside CI without moto).
async fn registries() -> Vec<(String, TestRegistry)> {
    let mut out = vec![(
        "filesystem".to_owned(),
        start("filesystem", DELETE_ON, "").await,
    )];
    if let Some(params) = s3_params().await {
        let yaml = serde_json::json!({
            "version": "0.1",
            // Blobs are served through the registry, so the test reads what
            // the registry serves (not S3's presigned URL).
            "storage": { "s3": params, "delete": { "enabled": true }, "redirect": { "disable": true } },
        });
        let dir = tempfile::tempdir().expect("temp dir");
        out.push(("s3".to_owned(), start_yaml(&yaml.to_string(), dir).await));
    }
    out
}

async fn s3_params() -> Option<RawParams> {
    let mut params = regstore_testenv::backend::emulator_params_or_skip("s3").await?;
    params.insert("chunksize".into(), "5MiB".into());
    Some(params)
}

/// The session id at the end of an upload URL (before any query).
fn upload_uuid(loc: &str) -> String {
    let last = loc.rsplit('/').next().unwrap_or_default();
    last.split('?').next().unwrap_or_default().to_owned()
}

/// Where a registry on the filesystem driver keeps an upload.
struct UploadFiles {
    /// The upload's directory: its hash states, and its data once committed.
    dir: std::path::PathBuf,
    /// Its writer's staging file: the bytes received so far.
    staged: std::path::PathBuf,
}

/// The files of upload `loc` (a location `reg` gave) of `repo`.
fn upload_files(reg: &TestRegistry, repo: &str, loc: &str) -> UploadFiles {
    let upload = format!(
        "docker/registry/v2/repositories/{repo}/_uploads/{}",
        upload_uuid(loc)
    );
    let root = reg.dir.path().join("root");
    UploadFiles {
        dir: root.join(&upload),
        staged: root.join("~staging").join(format!("{upload}/data~writer")),
    }
}

/// A request written by hand; the body may be sent in pieces.
struct RawRequest {
    sock: TcpStream,
}

impl RawRequest {
    /// Sends the request line and headers of `method path` with a body of
    /// `len` bytes to come.
    async fn open(reg: &TestRegistry, method: &str, path: &str, extra: &str, len: usize) -> Self {
        let addr = reg.base.trim_start_matches("http://").to_owned();
        let mut sock = TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {len}\r\n{extra}Connection: close\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.expect("send head");
        RawRequest { sock }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.expect("send body");
        self.sock.flush().await.expect("flush");
    }

    /// The status and body of the answer (within 10 s).
    async fn answer(mut self) -> (u16, String) {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.sock.read_to_end(&mut buf));
        read.await
            .expect("an answer within 10 s")
            .expect("read answer");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        (status, text)
    }

    /// Hangs up mid-body, as a client that dies does.
    fn cut(self) {
        drop(self.sock);
    }
}

fn path_of(reg: &TestRegistry, location: &str) -> String {
    location.trim_start_matches(&reg.base).to_owned()
}

/// Completes upload `loc` on `reg` with the digest of `data`, which must
/// be answered 201 (`what` names the case in a failure, with the answer's
/// body); returns that digest.
async fn complete(reg: &TestRegistry, loc: &str, data: &[u8], what: &str) -> String {
    let d = sha256(data);
    let r = reg.client.put(with_digest(loc, &d)).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "{what}: {body}");
    d
}

async fn patch(reg: &TestRegistry, loc: &str, start: usize, data: &[u8]) -> reqwest::Response {
    reg.client
        .patch(loc)
        .header(
            "content-range",
            format!("{start}-{}", start + data.len().max(1) - 1),
        )
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// GETs the blob and checks that its bytes hash to `d`; returns them.
async fn assert_blob_hashes(reg: &TestRegistry, what: &str, repo: &str, d: &str) -> Vec<u8> {
    let r = reg
        .client
        .get(reg.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{what}: GET {d}");
    let body = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        sha256(&body),
        d,
        "{what}: the bytes served hash to the digest"
    );
    body
}

async fn blob_status(reg: &TestRegistry, repo: &str, d: &str) -> StatusCode {
    reg.client
        .head(reg.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .status()
}

/// Attack 1: a PATCH stalls mid-body while the final PUT is sent; then the
/// stalled body completes. The PUT must not publish while the PATCH holds
/// the upload, and nothing the PATCH sends later reaches a published blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_patch_cannot_change_a_published_blob() {
    for (driver, reg) in registries().await {
        let first: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let late: Vec<u8> = vec![0xEE; 60];
        let last: Vec<u8> = vec![0x11; 40];
        let loc = begin(&reg, "victim").await;
        assert_eq!(
            patch(&reg, &loc, 0, &first).await.status(),
            StatusCode::ACCEPTED
        );

        // The stalled PATCH: 60 bytes promised, 20 sent.
        let mut stalled = RawRequest::open(
            &reg,
            "PATCH",
            &path_of(&reg, &loc),
            "Content-Range: 100-159\r\n",
            late.len(),
        )
        .await;
        stalled.send(&late[..20]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The attacker's final PUT: digest of first + last.
        let mut claimed = first.clone();
        claimed.extend_from_slice(&last);
        let claimed_digest = sha256(&claimed);
        let r = reg
            .client
            .put(with_digest(&loc, &claimed_digest))
            .body(last.clone())
            .send()
            .await
            .unwrap();
        let put_status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(
            put_status,
            StatusCode::CONFLICT,
            "{driver}: a PUT while a PATCH is in flight is refused: {body}"
        );
        assert!(body.contains("BLOB_UPLOAD_INVALID"), "{driver}: {body}");

        // The stalled body completes; the PATCH is answered normally.
        stalled.send(&late[20..]).await;
        let (status, text) = stalled.answer().await;
        assert_eq!(status, 202, "{driver}: the stalled PATCH completes: {text}");
        assert_eq!(
            blob_status(&reg, "victim", &claimed_digest).await,
            StatusCode::NOT_FOUND,
            "{driver}: nothing was published under the attacker's digest"
        );

        // The upload goes on from 160 bytes and publishes exactly them.
        let mut all = first.clone();
        all.extend_from_slice(&late);
        let d = complete(&reg, &loc, &all, &driver).await;
        let got = assert_blob_hashes(&reg, &driver, "victim", &d).await;
        assert_eq!(got, all, "{driver}");
    }
}

/// Attack 2: a bad copy of a blob sits in storage (as a past bug could have
/// left it); pushing the right content under that digest replaces it
/// instead of linking the bad bytes into the new repository — a small blob
/// (stored in one piece) and one larger than `SMALL_BLOB` (streamed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stored_copy_is_replaced_when_the_digest_is_pushed_again() {
    let small = 5000;
    let large = regstore_server::registry::SMALL_BLOB + 5000;
    for (len, poisoned_len) in [
        (small, small + 60),
        (small, small),
        (large, large + 60),
        (large, large),
    ] {
        let good: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
        let d = sha256(&good);
        let hex = d.trim_start_matches("sha256:");
        let blob_path = format!("/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
        let mut poison = good.clone();
        poison.resize(poisoned_len, 0xEE);
        poison[0] ^= 0xFF;

        // filesystem: plant the bad copy in the root directory.
        let reg = start("filesystem", DELETE_ON, "").await;
        let file = reg.dir.path().join("root").join(&blob_path[1..]);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &poison).unwrap();
        reg.push_blob("fresh/repo", &good).await;
        assert_blob_hashes(&reg, "filesystem", "fresh/repo", &d).await;
        assert_eq!(
            std::fs::read(&file).unwrap(),
            good,
            "the copy on disk is healed"
        );

        // s3: plant it through a driver on the same bucket and root.
        if let Some(params) = s3_params().await {
            regstore_builtin::register_all();
            let driver = regstore_core::create("s3", &params).await.expect("s3");
            driver
                .put_content(blob_path.as_str(), poison.clone())
                .await
                .expect("plant");
            let yaml = serde_json::json!({
                "version": "0.1",
                // Blobs are served through the registry, so the test reads what
            // the registry serves (not S3's presigned URL).
            "storage": { "s3": params, "delete": { "enabled": true }, "redirect": { "disable": true } },
            });
            let reg = start_yaml(&yaml.to_string(), tempfile::tempdir().unwrap()).await;
            reg.push_blob("fresh/repo", &good).await;
            assert_blob_hashes(&reg, "s3", "fresh/repo", &d).await;
            let stored = driver.get_content(blob_path.as_str()).await.unwrap();
            assert_eq!(
                stored.as_ref(),
                good.as_slice(),
                "s3: the stored copy is healed"
            );
            driver.delete("/docker").await.expect("clean up");
        }
    }
}

/// Attack 3: two PATCHes on one upload overlap in time and one is cut by a
/// connection reset. The second is refused while the first runs; nothing of
/// the cut one is kept, so sending it again succeeds, and the upload then
/// publishes bytes that hash to the digest it is answered 201 for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_patches_with_a_cut_connection_never_publish_wrong_bytes() {
    for (driver, reg) in registries().await {
        let first: Vec<u8> = (0..100u32).map(|i| (i * 3) as u8).collect();
        let a: Vec<u8> = vec![0xAA; 5000];
        let b: Vec<u8> = vec![0xBB; 5000];
        let loc = begin(&reg, "overlap").await;
        assert_eq!(
            patch(&reg, &loc, 0, &first).await.status(),
            StatusCode::ACCEPTED
        );
        let path = path_of(&reg, &loc);
        let range = "Content-Range: 100-5099\r\n";
        let mut pa = RawRequest::open(&reg, "PATCH", &path, range, a.len()).await;
        pa.send(&a[..3000]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut pb = RawRequest::open(&reg, "PATCH", &path, range, b.len()).await;
        pb.send(&b).await;
        let (status, text) = pb.answer().await;
        assert!(
            status == 409 || status == 416,
            "{driver}: an overlapping PATCH is refused, got {status}: {text}"
        );
        pa.cut();

        // Nothing of A is kept: once it has ended, the upload is where
        // the last acknowledged request left it.
        let mut kept = None;
        for _ in 0..100 {
            let r = reg.client.get(&loc).send().await.unwrap();
            if r.status() == StatusCode::NO_CONTENT {
                kept = Some(header(&r, "range"));
                break;
            }
            assert_eq!(
                r.status(),
                StatusCode::CONFLICT,
                "{driver}: busy until A ends"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            kept.as_deref(),
            Some("0-99"),
            "{driver}: the upload holds 100 bytes"
        );
        // The same request again succeeds.
        let r = patch(&reg, &loc, 100, &a).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{driver}");
        let mut all = first.clone();
        all.extend_from_slice(&a);
        let d = complete(&reg, &loc, &all, &driver).await;
        let got = assert_blob_hashes(&reg, &driver, "overlap", &d).await;
        assert_eq!(got, all, "{driver}");
    }
}

/// A hash state that does not cover the bytes the upload holds is refused
/// with BLOB_UPLOAD_INVALID, and one that cannot be read (cut short, as a
/// machine crash may leave a state written without fsync) discards the
/// upload with BLOB_UPLOAD_UNKNOWN; either way nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_state_for_other_bytes_is_refused() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let loc = begin(&reg, "state").await;
    assert_eq!(
        patch(&reg, &loc, 0, &data[..200]).await.status(),
        StatusCode::ACCEPTED
    );
    let files = upload_files(&reg, "state", &loc);
    let states = files.dir.join("hashstates/regstore-sha256");
    let saved = std::fs::read(states.join("200")).expect("the state for 200 bytes");
    // The state of 200 bytes claimed for 250, and a state with its header cut.
    for (name, content) in [("250", saved.clone()), ("200", saved[8..].to_vec())] {
        std::fs::write(states.join(name), &content).unwrap();
        let at = name.parse::<usize>().unwrap();
        if at == 250 {
            // Make the upload hold 250 bytes without a state of its own.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&files.staged)
                .unwrap();
            std::io::Write::write_all(&mut f, &data[200..250]).unwrap();
        }
        let d = sha256(&data[..at]);
        let r = reg.client.put(with_digest(&loc, &d)).send().await.unwrap();
        let body = if at == 250 {
            expect_error(r, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await
        } else {
            expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await
        };
        assert!(body.contains("hash state"), "{body}");
        assert_eq!(
            blob_status(&reg, "state", &d).await,
            StatusCode::NOT_FOUND,
            "nothing published"
        );
        if at == 200 {
            let r = reg.client.get(&loc).send().await.unwrap();
            expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        } else {
            // Back to a consistent upload of 200 bytes for the next round.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&files.staged)
                .unwrap()
                .set_len(200)
                .unwrap();
        }
    }
}

/// The byte every client agrees belongs at `offset` of an upload, so that
/// a client knows the digest of what a correct upload holds.
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

/// Eight clients hammer uploads in one repository with random PATCH, PUT,
/// GET and DELETE requests, some cut off mid-body, some with wrong bytes,
/// for a bounded time; when an upload ends, a client starts the next one.
/// Every blob the registry answered 201 for is read back and must hash to
/// its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_hammering_one_upload_publish_only_true_digests() {
    for (driver, reg) in registries().await {
        let reg = std::sync::Arc::new(reg);
        let current = std::sync::Arc::new(tokio::sync::Mutex::new(begin(&reg, "hammer").await));
        // 6 s, or longer (20 s at most) until 3 uploads have completed:
        // on a slow backend the clients get fewer requests through.
        let now = Instant::now();
        let limits = Limits {
            soft: now + Duration::from_secs(6),
            hard: now + Duration::from_secs(20),
            published: std::sync::Arc::default(),
        };
        let mut tasks = Vec::new();
        for client in 0..8u64 {
            let reg = std::sync::Arc::clone(&reg);
            let current = std::sync::Arc::clone(&current);
            let limits = limits.clone();
            tasks.push(tokio::spawn(async move {
                hammer(&reg, &current, client + 1, &limits).await
            }));
        }
        let mut published = Vec::new();
        let mut requests = 0;
        let mut refused_busy = 0;
        for t in tasks {
            let h = t.await.expect("client task");
            published.extend(h.published);
            requests += h.sent;
            refused_busy += h.busy;
        }
        assert!(
            requests >= 8,
            "{driver}: the clients sent {requests} requests"
        );
        assert!(
            !published.is_empty(),
            "{driver}: some uploads completed in {requests} requests"
        );
        for (d, expected) in &published {
            let got = assert_blob_hashes(&reg, &driver, "hammer", d).await;
            assert_eq!(&got, expected, "{driver}");
        }
        eprintln!(
            "{driver}: {requests} requests, {refused_busy} refused as busy, {} blobs published",
            published.len()
        );
    }
}

#[derive(Default)]
struct Hammered {
    /// Digest and the bytes a correct upload had, for each 201.
    published: Vec<(String, Vec<u8>)>,
    sent: usize,
    busy: usize,
}

/// When the hammering clients stop: after `soft` once 3 uploads have
/// completed in all, at `hard` in any case.
#[derive(Clone)]
struct Limits {
    soft: Instant,
    hard: Instant,
    published: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Limits {
    fn over(&self) -> bool {
        let now = Instant::now();
        now >= self.hard
            || (now >= self.soft && self.published.load(std::sync::atomic::Ordering::Relaxed) >= 3)
    }
}

/// One hammering client (at most 150 rounds).
async fn hammer(
    reg: &TestRegistry,
    current: &tokio::sync::Mutex<String>,
    seed: u64,
    limits: &Limits,
) -> Hammered {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Hammered::default();
    for _ in 0..150 {
        if limits.over() {
            break;
        }
        let loc = current.lock().await.clone();
        out.sent += 1;
        // Where the upload stands, as this client believes.
        let r = reg.client.get(&loc).send().await.unwrap();
        let size = match r.status() {
            // `0-0` is both empty and one byte; bodies are rarely one byte.
            StatusCode::NO_CONTENT => match header(&r, "range").as_str() {
                "0-0" => 0,
                range => range
                    .trim_start_matches("0-")
                    .parse::<usize>()
                    .map(|l| l + 1)
                    .unwrap_or(0),
            },
            StatusCode::CONFLICT => {
                out.busy += 1;
                continue;
            }
            _ => {
                // Finished or cancelled: the first to notice starts the next.
                let mut cur = current.lock().await;
                if *cur == loc {
                    *cur = begin(reg, "hammer").await;
                }
                continue;
            }
        };
        let len = 1 + (next() % 3000) as usize;
        let body = if next() % 25 == 0 {
            vec![0xEE; len]
        } else {
            pattern(size, len)
        };
        let path = path_of(reg, &loc);
        let status = match next() % 40 {
            0..=23 => patch(reg, &loc, size, &body).await.status(),
            24..=31 => {
                // A PATCH cut off part-way.
                let range = format!("Content-Range: {size}-{}\r\n", size + len - 1);
                let mut raw = RawRequest::open(reg, "PATCH", &path, &range, len).await;
                raw.send(&body[..len / 2]).await;
                tokio::time::sleep(Duration::from_millis(next() % 50)).await;
                raw.cut();
                StatusCode::OK
            }
            32..=38 => {
                // The final PUT claims the digest of a correct upload.
                let expected = pattern(0, size + len);
                let d = sha256(&expected);
                let r = reg
                    .client
                    .put(with_digest(&loc, &d))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::CREATED {
                    out.published.push((d, expected));
                    limits
                        .published
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                r.status()
            }
            _ => reg.client.delete(&loc).send().await.unwrap().status(),
        };
        if status == StatusCode::CONFLICT {
            out.busy += 1;
        }
    }
    out
}

/// A storage failure answers 503 with the error code and the driver's name,
/// never the server's paths (those go to the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_errors_do_not_reveal_server_paths() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let root = reg.dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    // The staging area is a file: every write fails to create its file.
    let _ = std::fs::remove_dir_all(root.join("~staging"));
    std::fs::write(root.join("~staging"), b"not a directory").unwrap();
    // POST alone stores nothing: push a blob in it.
    let r = reg
        .client
        .post(reg.url(&format!(
            "/v2/paths/blobs/uploads/?digest={}",
            sha256(b"a blob")
        )))
        .body("a blob")
        .send()
        .await
        .unwrap();
    let body = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    let dir = reg.dir.path().display().to_string();
    assert!(!body.contains(&dir), "no server path in {body}");
    assert!(body.contains("filesystem"), "the driver is named: {body}");
}

/// Two registry instances over one storage: a filesystem root, and one
/// root directory in the s3 bucket; with each, a driver on the same storage
/// for the test to read and plant objects with.
async fn instance_pairs() -> Vec<(String, TestRegistry, TestRegistry, regstore_core::Driver)> {
    regstore_builtin::register_all();
    let a = start("filesystem", DELETE_ON, "").await;
    let root = a.dir.path().join("root");
    let b = start_on_root(&root, DELETE_ON).await;
    let mut params = RawParams::new();
    params.insert("rootdirectory".into(), root.display().to_string().into());
    let fs = regstore_core::create("filesystem", &params)
        .await
        .expect("filesystem");
    let mut out = vec![("filesystem".to_owned(), a, b, fs)];
    if let Some(params) = s3_params().await {
        let yaml = serde_json::json!({
            "version": "0.1",
            "storage": { "s3": params, "delete": { "enabled": true }, "redirect": { "disable": true } },
        })
        .to_string();
        let a = start_yaml(&yaml, tempfile::tempdir().unwrap()).await;
        let b = start_yaml(&yaml, tempfile::tempdir().unwrap()).await;
        let s3 = regstore_core::create("s3", &params).await.expect("s3");
        out.push(("s3".to_owned(), a, b, s3));
    }
    out
}

/// Two registry instances over one storage (filesystem root; s3 bucket):
/// while a PATCH on one instance is stalled mid-body, a PUT of the same
/// upload on the other is refused (the upload's lease, and on filesystem
/// also the staging file's lock, hold between processes), and the upload
/// then completes on the second instance with exactly its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_storage_waits_for_the_first() {
    for (backend, a, b, _) in instance_pairs().await {
        let first: Vec<u8> = (0..100u32).map(|i| (i * 5) as u8).collect();
        let late = vec![0x5A; 60];
        let loc_a = begin(&a, "shared").await;
        assert_eq!(
            patch(&a, &loc_a, 0, &first).await.status(),
            StatusCode::ACCEPTED,
            "{backend}"
        );
        let path = path_of(&a, &loc_a);
        let loc_b = b.url(&path);
        let mut stalled =
            RawRequest::open(&a, "PATCH", &path, "Content-Range: 100-159\r\n", 60).await;
        stalled.send(&late[..20]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let claimed = sha256(&first);
        let r = b
            .client
            .put(with_digest(&loc_b, &claimed))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CONFLICT,
            "{backend}: {}",
            r.text().await.unwrap()
        );
        stalled.send(&late[20..]).await;
        let (status, text) = stalled.answer().await;
        assert_eq!(status, 202, "{backend}: {text}");
        let mut all = first.clone();
        all.extend_from_slice(&late);
        // The first instance releases the lease just after it answered;
        // the PUT waits for that.
        let d = complete(&b, &loc_b, &all, &backend).await;
        assert_eq!(assert_blob_hashes(&a, &backend, "shared", &d).await, all);
        assert_eq!(
            blob_status(&b, "shared", &claimed).await,
            StatusCode::NOT_FOUND,
            "{backend}"
        );
    }
}

/// The lease object another instance left: while it is live, requests on
/// the upload are refused with 409 and nothing is written; once it has
/// expired (its holder crashed), the next request takes it over, leaves a
/// claim named after the expired lease, and the upload goes on; after the
/// request the lease is gone. Where the driver's writers are exclusive
/// across processes (the filesystem on a local disk) the registry takes no
/// lease: a planted one changes nothing, and none is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lease_of_another_instance_blocks_and_an_expired_one_is_taken_over() {
    use regstore_server::registry::layout::upload_lease;
    use regstore_server::registry::lease::LeaseRecord;
    use regstore_server::registry::names::RepoName;
    for (backend, a, _b, driver) in instance_pairs().await {
        let loc = begin(&a, "leased").await;
        let uuid = upload_uuid(&loc);
        let lease = upload_lease(&RepoName::parse("leased").unwrap(), &uuid);
        let foreign = LeaseRecord::new(Duration::from_secs(60));
        if driver.capabilities().exclusive_writers {
            let body = b"no lease needed";
            let r = patch(&a, &loc, 0, body).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED, "{backend}: no lease");
            assert!(
                driver
                    .get_content(&lease)
                    .await
                    .is_err_and(|e| e.is_not_found()),
                "{backend}: a request creates no lease"
            );
            driver
                .put_content(&lease, foreign.encode())
                .await
                .expect("plant a live lease");
            let d = complete(&a, &loc, body, &format!("{backend}: lease ignored")).await;
            assert_eq!(assert_blob_hashes(&a, &backend, "leased", &d).await, body);
            continue;
        }
        driver
            .put_content(&lease, foreign.encode())
            .await
            .expect("plant a live lease");
        let r = patch(&a, &loc, 0, b"refused").await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{backend}: live lease");
        assert!(r.headers().contains_key("retry-after"), "{backend}");
        let status = a.client.get(&loc).send().await.unwrap();
        assert_eq!(status.status(), StatusCode::CONFLICT, "{backend}: status");

        let expired = LeaseRecord {
            expires_ms: 1,
            ..LeaseRecord::new(Duration::ZERO)
        };
        driver
            .put_content(&lease, expired.encode())
            .await
            .expect("plant an expired lease");
        let body: Vec<u8> = (0..300u32).map(|i| (i % 7) as u8).collect();
        let r = patch(&a, &loc, 0, &body).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{backend}: expired lease");
        let claim = format!("{}/lease-taken/{}", &lease[..lease.len() - 6], expired.id);
        assert!(
            driver.get_content(&claim).await.is_ok(),
            "{backend}: the takeover left its claim at {claim}"
        );
        // Released in the background just after the answer.
        let mut gone = false;
        for _ in 0..50 {
            match driver.get_content(&lease).await {
                Err(e) if e.is_not_found() => {
                    gone = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert!(gone, "{backend}: the lease is deleted after the request");
        let d = complete(&a, &loc, &body, &backend).await;
        assert_eq!(assert_blob_hashes(&a, &backend, "leased", &d).await, body);
    }
}

/// A lease whose create stored it but lost its answer (a backend that died
/// mid-request, found by `backend_restart`): the request answers 503, and
/// its retry takes the orphaned lease back at once instead of answering
/// 409 until it expires 30 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_stored_by_a_request_that_failed_is_taken_back_by_the_retry() {
    // Every second lease create is made, then reported as failed.
    let faults = "middleware:\n  storage:\n    - name: faults\n      options:\n        nth: 2\n        operations: put_content_if_absent\n        kinds: lostanswer\n";
    let reg = start("inmemory", DELETE_ON, faults).await;
    let data: Vec<u8> = (0..300u32).map(|i| (i * 11) as u8).collect();
    let loc = begin(&reg, "orphan").await;
    let r = patch(&reg, &loc, 0, &data[..100]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = patch(&reg, &loc, 100, &data[100..200]).await;
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    let t0 = Instant::now();
    let r = patch(&reg, &loc, 100, &data[100..200]).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "the retry: {}",
        r.text().await.unwrap()
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The PUT's lease create loses its answer too; its retry goes through.
    let put = || {
        reg.client
            .put(with_digest(&loc, &sha256(&data)))
            .body(data[200..].to_vec())
            .send()
    };
    expect_error(
        put().await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    )
    .await;
    assert_eq!(put().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(
        assert_blob_hashes(&reg, "inmemory", "orphan", &sha256(&data)).await,
        data
    );
}

/// Bytes past the last acknowledged request with no hash state (what a
/// crash mid-PATCH leaves in a filesystem staging file) discard the upload:
/// the next request answers 404 BLOB_UPLOAD_UNKNOWN naming why, the upload
/// is gone, and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_of_a_request_cut_by_a_crash_discard_the_upload() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let loc = begin(&reg, "torn").await;
    assert_eq!(
        patch(&reg, &loc, 0, &data[..200]).await.status(),
        StatusCode::ACCEPTED
    );
    let staged = upload_files(&reg, "torn", &loc).staged;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&staged)
        .unwrap();
    std::io::Write::write_all(&mut f, &data[200..260]).unwrap();
    drop(f);
    let r = patch(&reg, &loc, 200, &data[200..]).await;
    let body = expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(
        body.contains("260 bytes") && body.contains("start the blob again"),
        "{body}"
    );
    let r = reg.client.get(&loc).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(!staged.exists(), "the torn upload's data is removed");
    assert_eq!(
        blob_status(&reg, "torn", &sha256(&data)).await,
        StatusCode::NOT_FOUND
    );
}

/// An upload whose data was committed but not moved to the blob's place
/// (the server stopped while completing it) answers 404
/// BLOB_UPLOAD_UNKNOWN naming why, not a 500 on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_committed_but_not_published_is_discarded() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let data: Vec<u8> = (0..300u32).map(|i| (i * 5) as u8).collect();
    let loc = begin(&reg, "halfway").await;
    assert_eq!(
        patch(&reg, &loc, 0, &data).await.status(),
        StatusCode::ACCEPTED
    );
    let files = upload_files(&reg, "halfway", &loc);
    std::fs::rename(&files.staged, files.dir.join("data")).expect("commit by hand");
    let r = reg
        .client
        .put(with_digest(&loc, &sha256(&data)))
        .send()
        .await
        .unwrap();
    let body = expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(body.contains("committed but not published"), "{body}");
}

/// An instance keeps the hasher its last request on an upload left, and
/// uses it only for a writer of exactly that size: chunks sent to two
/// instances in turn (A, B, A) complete with the true digest on A, whose
/// kept hasher covered only the first chunk when B moved the upload on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_alternating_between_instances_hash_to_the_true_digest() {
    for (backend, a, b, _) in instance_pairs().await {
        let data = pattern(0, 300);
        let loc_a = begin(&a, "alternating").await;
        let loc_b = b.url(&path_of(&a, &loc_a));
        for (reg, loc, at) in [(&a, &loc_a, 0), (&b, &loc_b, 100), (&a, &loc_a, 200)] {
            let r = patch(reg, loc, at, &data[at..at + 100]).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED, "{backend}: chunk at {at}");
        }
        let d = complete(&a, &loc_a, &data, &backend).await;
        assert_eq!(
            assert_blob_hashes(&b, &backend, "alternating", &d).await,
            data
        );
    }
}

/// The next chunk on the same instance resumes from the hasher it kept,
/// not from the stored state: with the stored states removed, the upload
/// still goes on and completes with the true digest (a second instance,
/// which has only the stored state, would discard it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_chunk_on_the_same_instance_needs_no_stored_state() {
    let reg = start("filesystem", DELETE_ON, "").await;
    let data = pattern(0, 300);
    let loc = begin(&reg, "kept").await;
    assert_eq!(
        patch(&reg, &loc, 0, &data[..200]).await.status(),
        StatusCode::ACCEPTED
    );
    let states = upload_files(&reg, "kept", &loc).dir.join("hashstates");
    std::fs::remove_dir_all(&states).expect("the upload's hash states");
    assert_eq!(
        patch(&reg, &loc, 200, &data[200..]).await.status(),
        StatusCode::ACCEPTED
    );
    let d = complete(&reg, &loc, &data, "kept").await;
    assert_eq!(assert_blob_hashes(&reg, "kept", "kept", &d).await, data);
}
