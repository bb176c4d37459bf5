//! What the conformance suite cannot see from outside the driver, checked
//! on the single-node Swift (`scripts/backends.sh start swift`) with plain
//! HTTP requests of the test's own: large objects are SLO manifests whose
//! segments no listing of the tree shows, and which delete, batch delete,
//! rename and cancel handle; directory deletes use bulk delete; TempURLs are verified
//! by Swift; a token Swift forgot is replaced; a manifest whose segment
//! shows up late is retried. Skipped without the server, failed under
//! `REGSTORE_REQUIRE_BACKENDS=1`.

use std::time::Duration;

use regstore_core::{Driver, RawParams, RedirectMethod, RedirectRequest};
use regstore_driver_swift::{SwiftDriver, swift_driver};
use serde_json::Value;

const MIB: usize = 1 << 20;

struct Swift {
    driver: SwiftDriver,
    shared: Driver,
    root: String,
    raw: RawParams,
    http: reqwest::Client,
    auth: String,
}

async fn swift() -> Option<Swift> {
    let mut raw = regstore_testenv::backend::emulator_params_or_skip("swift").await?;
    raw.insert("chunksize".into(), "1MiB".into());
    let root = raw
        .get("rootdirectory")
        .and_then(|v| v.as_str())
        .expect("root")
        .to_owned();
    let driver = open(&raw).await;
    let http = regstore_testenv::backend::http_client()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let auth = raw["authurl"].as_str().expect("authurl").to_owned();
    Some(Swift {
        shared: Driver::new(driver.clone()),
        driver,
        root,
        raw,
        http,
        auth,
    })
}

async fn open(raw: &RawParams) -> SwiftDriver {
    let params =
        regstore_core::params::resolve("swift", regstore_driver_swift::FACTORY.params, raw)
            .expect("params");
    swift_driver(&params).await.expect("swift driver")
}

impl Swift {
    /// Sends what `make` builds with a fresh token (one per call, and again
    /// after a 401: another test makes Swift forget tokens).
    async fn send(&self, make: impl Fn(&str) -> reqwest::RequestBuilder) -> reqwest::Response {
        for _ in 0..3 {
            let (token, container) = self.login().await;
            let resp = make(&container)
                .header("X-Auth-Token", token)
                .send()
                .await
                .expect("request");
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
                return resp;
            }
        }
        panic!("Swift refused three fresh tokens");
    }

    /// A fresh TempAuth token and the container's URL.
    async fn login(&self) -> (String, String) {
        let resp = self
            .http
            .get(&self.auth)
            .header("X-Auth-User", "test:tester")
            .header("X-Auth-Key", "testing")
            .send()
            .await
            .expect("tempauth");
        let h = |n: &str| resp.headers()[n].to_str().expect("ascii").to_owned();
        (
            h("x-auth-token"),
            format!("{}/regstore", h("x-storage-url")),
        )
    }

    /// Every name in the container under `prefix` (the test's own listing).
    async fn names(&self, prefix: &str) -> Vec<String> {
        let resp = self
            .send(|c| self.http.get(format!("{c}?format=json&prefix={prefix}")))
            .await;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Vec::new();
        }
        let body = resp.bytes().await.expect("listing body");
        let v: Value = serde_json::from_slice(&body).expect("json listing");
        v.as_array()
            .expect("array")
            .iter()
            .map(|e| e["name"].as_str().expect("name").to_owned())
            .collect()
    }

    async fn head(&self, name: &str) -> reqwest::Response {
        self.send(|c| self.http.head(format!("{c}/{name}"))).await
    }

    fn segments(&self) -> String {
        format!("{}/~segments/", self.root)
    }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_slos_whose_segments_follow_rename_and_delete() {
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    let body = data(2 * MIB + 12_345, 1);
    let mut w = d.writer("/r/a/big", false).await.expect("writer");
    w.write(body.clone()).await.expect("write");
    w.commit().await.expect("commit");

    let head = s.head(&format!("{}/r/a/big", s.root)).await;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["x-static-large-object"], "True");
    let segments = s.names(&s.segments()).await;
    assert_eq!(
        segments.len(),
        3,
        "three 1 MiB-or-less segments: {segments:?}"
    );
    assert_eq!(d.list("/").await.expect("list"), vec!["/r"]);
    assert_eq!(d.get_content("/r/a/big").await.expect("read"), body);

    // Rename copies the manifest; the segments stay and still serve it.
    d.rename("/r/a/big", "/r/b/big").await.expect("rename");
    assert_eq!(s.names(&s.segments()).await, segments);
    assert_eq!(d.get_content("/r/b/big").await.expect("read"), body);
    assert!(d.stat("/r/a/big").await.is_err(), "the old name is gone");

    // Deleting the directory deletes the manifest and its segments.
    d.delete("/r").await.expect("delete");
    assert_eq!(s.names(&s.segments()).await, Vec::<String>::new());
    assert_eq!(s.names(&format!("{}/", s.root)).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_writer_resumes_in_another_driver_and_cancel_drops_segments() {
    let Some(s) = swift().await else { return };
    let first = data(MIB + 100, 2);
    let second = data(MIB + 200, 3);
    let mut w = s.shared.writer("/up/data", false).await.expect("writer");
    w.write(first.clone()).await.expect("write");
    w.close().await.expect("close");
    assert_eq!(s.names(&s.segments()).await.len(), 1, "one full segment");

    // Another process: a driver of its own on the same container.
    let other = Driver::new(open(&s.raw).await);
    let mut w = other.writer("/up/data", true).await.expect("resume");
    assert_eq!(w.size(), first.len() as u64);
    w.write(second.clone()).await.expect("write");
    w.commit().await.expect("commit");
    let whole = [first, second].concat();
    assert_eq!(s.shared.get_content("/up/data").await.expect("read"), whole);

    let committed = s.names(&s.segments()).await;
    let mut w = s
        .shared
        .writer("/up/cancelled", false)
        .await
        .expect("writer");
    w.write(data(3 * MIB + 1, 4)).await.expect("write");
    w.close().await.expect("close");
    assert_eq!(s.names(&s.segments()).await.len(), committed.len() + 3);
    let w = other.writer("/up/cancelled", true).await.expect("resume");
    w.cancel().await.expect("cancel");
    assert_eq!(
        s.names(&s.segments()).await,
        committed,
        "the cancelled writer's segments are gone, the committed object's stay"
    );
    assert!(s.shared.stat("/up/cancelled").await.is_err());
    s.shared.delete("/up").await.expect("clean up");
    assert_eq!(s.names(&s.segments()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delete_drops_large_objects_with_their_segments() {
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    let mut w = d.writer("/gc/big", false).await.expect("writer");
    w.write(data(2 * MIB + 1, 5)).await.expect("write");
    w.commit().await.expect("commit");
    let mut batch: Vec<String> = (0..10).map(|i| format!("/gc/small{i}")).collect();
    for (i, p) in batch.iter().enumerate() {
        d.put_content(p, format!("{i}")).await.expect("put");
    }
    d.put_content("/gc/keep", "k").await.expect("put");
    assert_eq!(s.names(&s.segments()).await.len(), 3);
    batch.extend(["/gc/big".to_owned(), "/gc/missing".to_owned()]);

    let before = d.backend_requests().expect("counted");
    d.delete_files(&batch).await.expect("delete_files");
    let used = d.backend_requests().expect("counted") - before;
    // A HEAD per path, the large object's delete (with its segments), one
    // bulk delete of the small objects (/info was read by the commit).
    assert_eq!(used, 12 + 1 + 1, "deleting 12 paths took {used} requests");
    assert_eq!(s.names(&s.segments()).await, Vec::<String>::new());
    assert_eq!(d.list("/gc").await.expect("list"), vec!["/gc/keep"]);
    d.delete("/gc").await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_deletes_are_bulk_requests() {
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    for i in 0..40 {
        d.put_content(format!("/bulk/d{}/f{i}", i % 4), format!("{i}"))
            .await
            .expect("put");
    }
    let before = d.backend_requests().expect("counted");
    d.delete("/bulk").await.expect("delete");
    let used = d.backend_requests().expect("counted") - before;
    // A listing, /info (once per driver), one bulk delete, a listing of
    // unfinished writers.
    assert_eq!(used, 4, "deleting 40 objects took {used} requests");
    assert_eq!(s.names(&format!("{}/", s.root)).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempurls_are_accepted_by_swift_and_tampering_is_not() {
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    d.put_content("/t/blob", "signed bytes").await.expect("put");
    for method in [RedirectMethod::Get, RedirectMethod::Head] {
        let url = d
            .redirect_url(&RedirectRequest::new(method), "/t/blob")
            .await
            .expect("url")
            .expect("a TempURL");
        let req = match method {
            RedirectMethod::Get => s.http.get(url.clone()),
            RedirectMethod::Head => s.http.head(url.clone()),
        };
        let resp = req.send().await.expect("fetch");
        assert_eq!(resp.status(), 200, "{method:?} {url}");
        if method == RedirectMethod::Get {
            assert_eq!(resp.text().await.expect("body"), "signed bytes");
        }
        let tampered = url
            .as_str()
            .replace("temp_url_expires=", "temp_url_expires=1");
        let resp = s.http.get(tampered).send().await.expect("fetch");
        assert_eq!(resp.status(), 401, "a changed expiry breaks the signature");
    }
    d.delete("/t").await.expect("clean up");
}

/// Swift's TempAuth keeps tokens in memcached (127.0.0.1:19034): flushing
/// it makes Swift forget the driver's token, which must log in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_token_is_replaced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    d.put_content("/tok/a", "a").await.expect("put");
    let mut mc = tokio::net::TcpStream::connect("127.0.0.1:19034")
        .await
        .expect("memcached");
    mc.write_all(b"flush_all\r\n").await.expect("flush");
    let mut ok = [0u8; 4];
    mc.read_exact(&mut ok).await.expect("answer");
    assert_eq!(&ok, b"OK\r\n");
    let before = d.backend_requests().expect("counted");
    d.put_content("/tok/b", "b")
        .await
        .expect("put after the flush");
    let used = d.backend_requests().expect("counted") - before;
    assert_eq!(used, 3, "a 401, a login, the PUT again");
    assert_eq!(d.get_content("/tok/b").await.expect("read"), "b".as_bytes());
    d.delete("/tok").await.expect("clean up");
}

/// A manifest naming a segment that is not there yet (as on a cluster
/// whose nodes lag) is retried until the segment appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_waits_for_a_late_segment() {
    use object_store::PutPayload;
    use regstore_objectstore::{Backend, Part};
    let Some(s) = swift().await else { return };
    let b = s.driver.backend();
    let part0 = data(MIB, 5);
    let part1 = data(MIB, 6);
    // Learn segment 1's ETag (an MD5 of its bytes) from a scratch upload.
    let scratch = b.create_upload(&"x".into()).await.expect("id");
    let etag1 = b
        .upload_part(&"x".into(), &scratch, 0, 0, PutPayload::from(part1.clone()))
        .await
        .expect("scratch");
    b.abort_upload(&"x".into(), &scratch)
        .await
        .expect("scratch gone");

    let key: object_store::path::Path = format!("{}/late/blob", s.root).as_str().into();
    let upload = b.create_upload(&key).await.expect("id");
    let etag0 = b
        .upload_part(&key, &upload, 0, 0, PutPayload::from(part0.clone()))
        .await
        .expect("segment 0");
    let parts = [
        Part {
            id: etag0,
            size: MIB as u64,
        },
        Part {
            id: etag1,
            size: MIB as u64,
        },
    ];
    let late = {
        let driver = s.driver.clone();
        let (key, upload, part1) = (key.clone(), upload.clone(), part1.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            driver
                .backend()
                .upload_part(&key, &upload, 1, MIB as u64, PutPayload::from(part1))
                .await
        })
    };
    b.complete_upload(&key, &upload, &parts, PutPayload::default(), 2 * MIB as u64)
        .await
        .expect("the manifest goes in once segment 1 is there");
    late.await.expect("task").expect("segment 1");
    let got = s.shared.get_content("/late/blob").await.expect("read");
    assert_eq!(got, [part0, part1].concat());
    s.shared.delete("/late").await.expect("clean up");
    assert_eq!(s.names(&s.segments()).await, Vec::<String>::new());
}

/// Past `max_manifest_segments` (100 on the test cluster, see
/// scripts/swift-saio.sh) the writer nests manifests; the object reads back
/// whole and deleting it deletes every segment and sub-manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_past_the_segment_limit_nest_manifests() {
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    let body = data(101 * MIB + 7, 9);
    let mut w = d.writer("/nest/blob", false).await.expect("writer");
    for chunk in body.chunks(4 * MIB + 3) {
        w.write(chunk.to_vec()).await.expect("write");
    }
    w.commit().await.expect("commit");
    let names = s.names(&s.segments()).await;
    assert_eq!(names.len(), 102 + 2, "102 segments and 2 sub-manifests");
    assert_eq!(
        d.stat("/nest/blob").await.expect("stat").size,
        body.len() as u64
    );
    let mut got = Vec::with_capacity(body.len());
    let mut r = d
        .reader("/nest/blob", 50 * MIB as u64)
        .await
        .expect("reader");
    while let Some(chunk) = futures_util::StreamExt::next(&mut r).await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(got == body[50 * MIB..], "a read from 50 MiB on matches");
    d.delete("/nest").await.expect("delete");
    assert_eq!(s.names(&s.segments()).await, Vec::<String>::new());
}

/// Listings page with `marker`: with 7 names per request, a directory of
/// 20 files lists and walks whole, in 3 (list) and 3 (walk) requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_with_marker() {
    let Some(mut s) = swift().await else { return };
    s.raw.insert("listpagesize".into(), "7".into());
    let d = Driver::new(open(&s.raw).await);
    for i in 0..20 {
        d.put_content(format!("/page/f{i:02}"), "x")
            .await
            .expect("put");
    }
    let before = d.backend_requests().expect("counted");
    let listed = d.list("/page").await.expect("list");
    assert_eq!(d.backend_requests().expect("counted") - before, 3);
    let want: Vec<String> = (0..20).map(|i| format!("/page/f{i:02}")).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(listed, want);
    let before = d.backend_requests().expect("counted");
    let walked = d.walk_all("/page").await.expect("walk");
    assert_eq!(d.backend_requests().expect("counted") - before, 3);
    assert_eq!(walked.len(), 20);
    d.delete("/page").await.expect("clean up");
    regstore_driver_swift::register();
    let err = regstore_core::registry::create("swift", &{
        let mut raw = s.raw.clone();
        raw.insert("listpagesize".into(), "0".into());
        raw
    })
    .await
    .expect_err("listpagesize 0");
    assert!(err.to_string().contains("listpagesize"), "{err}");
}

/// A walk that skips a directory jumps past it: with 7 names a page,
/// `a/x`, 20 files in `big` and `c/y` take 4 pages listed flat; the first
/// page ends inside `big`, which the walk skips, so the second starts
/// after it (Swift's `marker`) and holds `c/y`: 2 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_jumps_past_a_directory_it_skips() {
    let Some(mut s) = swift().await else { return };
    s.raw.insert("listpagesize".into(), "7".into());
    let d = Driver::new(open(&s.raw).await);
    let mut paths = vec!["/skip/a/x".to_owned(), "/skip/c/y".to_owned()];
    paths.extend((0..20).map(|i| format!("/skip/big/f{i:02}")));
    for p in &paths {
        d.put_content(p, "x").await.expect("put");
    }
    let before = d.backend_requests().expect("counted");
    let mut seen = Vec::new();
    d.walk("/skip", None, |fi| {
        seen.push(fi.path.as_str().to_owned());
        Ok(if fi.path.as_str() == "/skip/big" {
            regstore_core::WalkControl::SkipDir
        } else {
            regstore_core::WalkControl::Continue
        })
    })
    .await
    .expect("walk");
    assert_eq!(d.backend_requests().expect("counted") - before, 2);
    assert_eq!(
        seen,
        ["/skip/a", "/skip/a/x", "/skip/big", "/skip/c", "/skip/c/y"]
    );
    d.delete("/skip").await.expect("clean up");
}

/// A container that does not exist yet is created by the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_created() {
    let Some(mut s) = swift().await else { return };
    let name = format!("regstore-auto-{}", std::process::id());
    s.raw.insert("container".into(), name.clone().into());
    let d = Driver::new(open(&s.raw).await);
    d.put_content("/c/f", "in a new container")
        .await
        .expect("put");
    assert_eq!(
        d.get_content("/c/f").await.expect("get"),
        "in a new container".as_bytes()
    );
    d.delete("/c").await.expect("empty it");
    let account = |c: &str| c.trim_end_matches("/regstore").to_owned();
    let resp = s
        .send(|c| s.http.delete(format!("{}/{name}", account(c))))
        .await;
    assert_eq!(resp.status(), 204, "the container existed, empty");
}

/// A Swift of the test's own (`scripts/backends.sh start swift` with its
/// own state directory and ports: 19230–19235 for one test, 19240–19248
/// for another), stopped when dropped, so its servers can be stopped or
/// reconfigured without disturbing other tests.
struct OwnSwift {
    state: tempfile::TempDir,
    /// The proxy's port; the servers use the next five.
    port: u16,
    container_server: Option<std::process::Child>,
    /// More servers the test started; killed on drop.
    extra: Vec<std::process::Child>,
}

impl OwnSwift {
    fn start(port: u16) -> OwnSwift {
        let own = OwnSwift {
            state: tempfile::tempdir().expect("temp dir"),
            port,
            container_server: None,
            extra: Vec::new(),
        };
        let out = own.script(&["start", "swift"]);
        assert!(
            out.status.success(),
            "a Swift of the test's own: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        own
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/backends.sh"
        ))
        .args(args)
        .env("BACKENDS_STATE", self.state.path())
        .env("SWIFT_PORT", self.port.to_string())
        .env("SWIFT_KEYSTONE", "0")
        .output()
        .expect("run scripts/backends.sh")
    }

    /// Stops the container server: object writes then succeed but their
    /// container updates wait on the object server (async_pending).
    async fn stop_container_server(&mut self) {
        if let Some(mut c) = self.container_server.take() {
            let _ = c.kill();
            let _ = c.wait();
        } else {
            let pid_file = self.state.path().join("run/swift-container.pid");
            let pid = std::fs::read_to_string(pid_file).expect("pid file");
            let ok = std::process::Command::new("kill")
                .arg(pid.trim())
                .status()
                .expect("kill");
            assert!(ok.success());
        }
        wait_port(self.port + 2, false).await;
    }

    async fn start_container_server(&mut self) {
        let conf = self.state.path().join("swift/etc/container-server.conf");
        let child = std::process::Command::new("swift-container-server")
            .arg(conf)
            .arg("-v")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("swift-container-server");
        self.container_server = Some(child);
        wait_port(self.port + 2, true).await;
    }
}

impl Drop for OwnSwift {
    fn drop(&mut self) {
        for mut c in self
            .container_server
            .take()
            .into_iter()
            .chain(self.extra.drain(..))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.script(&["stop", "swift"]);
    }
}

/// Waits (up to 30 s) until 127.0.0.1:`port` accepts connections, or
/// refuses them.
async fn wait_port(port: u16, open: bool) {
    for _ in 0..300 {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if up == open {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "port {port} did not become {}",
        if open { "open" } else { "closed" }
    );
}

/// Real listing lag: with the container server down (the proxy has the
/// container's info cached), a PUT succeeds and its listing update waits
/// on the object server; once the container server is back the object is
/// there (HEAD) but not listed. The driver that wrote it lists, walks and
/// deletes it anyway; a driver with `consistencywindow: 0s` shows the lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_that_lag_a_write_still_show_it_to_the_writer() {
    if regstore_testenv::backend::emulator_params_or_skip("swift")
        .await
        .is_none()
    {
        return;
    }
    let mut own = OwnSwift::start(19230);
    let mut raw = RawParams::new();
    for (k, v) in [
        (
            "authurl",
            format!("http://127.0.0.1:{}/auth/v1.0", own.port),
        ),
        ("username", "test:tester".into()),
        ("password", "testing".into()),
        ("container", "regstore".into()),
        ("prefix", "lag-test".into()),
    ] {
        raw.insert(k.into(), v.into());
    }
    let d = Driver::new(open(&raw).await);
    raw.insert("consistencywindow".into(), "0s".into());
    let plain = Driver::new(open(&raw).await);
    d.put_content("/lag/warm", "w").await.expect("put");

    own.stop_container_server().await;
    d.put_content("/lag/dir/late", "late")
        .await
        .expect("a PUT without the container server");
    own.start_container_server().await;

    assert_eq!(
        plain.list("/lag").await.expect("list"),
        vec!["/lag/warm"],
        "the listing lags (the premise of this test)"
    );
    assert_eq!(plain.stat("/lag/dir/late").await.expect("stat").size, 4);
    assert_eq!(
        d.list("/lag").await.expect("list"),
        vec!["/lag/dir", "/lag/warm"]
    );
    let walked: Vec<String> = d
        .walk_all("/lag")
        .await
        .expect("walk")
        .into_iter()
        .map(|i| i.path.to_string())
        .collect();
    assert_eq!(walked, ["/lag/dir", "/lag/dir/late", "/lag/warm"]);
    d.delete("/lag").await.expect("delete");
    assert!(
        plain.stat("/lag/dir/late").await.is_err(),
        "the lagging object was deleted with its directory"
    );
}

/// Replacing a large object — a new commit at its path, or a rename onto
/// it — deletes the replaced object's segments; the new content reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_large_object_drops_its_segments() {
    let Some(s) = swift().await else { return };
    let d = &s.shared;
    let write = |path: &'static str, seed: u8| async move {
        let body = data(2 * MIB + 5, seed);
        let mut w = d.writer(path, false).await.expect("writer");
        w.write(body.clone()).await.expect("write");
        w.commit().await.expect("commit");
        body
    };
    write("/rep/a", 1).await;
    let b = write("/rep/a", 2).await;
    assert_eq!(
        s.names(&s.segments()).await.len(),
        3,
        "only the new object's"
    );
    assert_eq!(d.get_content("/rep/a").await.expect("read"), b);
    let c = write("/rep/c", 3).await;
    d.rename("/rep/c", "/rep/a").await.expect("rename onto it");
    assert_eq!(s.names(&s.segments()).await.len(), 3, "only c's");
    assert_eq!(d.get_content("/rep/a").await.expect("read"), c);
    d.delete("/rep").await.expect("clean up");
    assert_eq!(s.names(&s.segments()).await, Vec::<String>::new());
}

/// `insecureskipverify`: Swift behind a TLS terminator with a self-signed
/// certificate (a second proxy of the test's own Swift, whose TempAuth
/// hands out https storage URLs, so every request goes through TLS). The
/// certificate is refused without the flag and accepted with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecureskipverify_accepts_a_self_signed_certificate() {
    use tokio_rustls::rustls;
    if regstore_testenv::backend::emulator_params_or_skip("swift")
        .await
        .is_none()
    {
        return;
    }
    let mut own = OwnSwift::start(19240);
    let etc = own.state.path().join("swift/etc");
    let conf = std::fs::read_to_string(etc.join("proxy-server.conf")).expect("proxy config");
    let https_port = own.port + 8;
    let https_conf = conf
        .replace(
            &format!("bind_port = {}\n", own.port),
            &format!("bind_port = {https_port}\n"),
        )
        .replace(
            "[filter:tempauth]\n",
            "[filter:tempauth]\nstorage_url_scheme = https\n",
        );
    assert!(
        https_conf.contains("storage_url_scheme") && https_conf.contains(&https_port.to_string())
    );
    std::fs::write(etc.join("proxy-https.conf"), https_conf).expect("write config");
    let proxy = std::process::Command::new("swift-proxy-server")
        .arg(etc.join("proxy-https.conf"))
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("swift-proxy-server");
    own.extra.push(proxy);
    wait_port(https_port, true).await;

    // The TLS terminator.
    let (cert, key) = regstore_testenv::openssl::self_signed(own.state.path()).expect("cert");
    let config = {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config")
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tls_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", https_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });

    let mut raw = RawParams::new();
    for (k, v) in [
        ("authurl", format!("https://127.0.0.1:{tls_port}/auth/v1.0")),
        ("username", "test:tester".into()),
        ("password", "testing".into()),
        ("container", "regstore".into()),
        ("prefix", "tls-test".into()),
    ] {
        raw.insert(k.into(), v.into());
    }
    regstore_driver_swift::register();
    let err = regstore_core::registry::create("swift", &raw)
        .await
        .expect_err("a self-signed certificate is refused by default");
    assert!(err.to_string().contains("certificate"), "{err}");
    raw.insert("insecureskipverify".into(), "true".into());
    let d = Driver::new(open(&raw).await);
    d.put_content("/tls/f", "over tls").await.expect("put");
    assert_eq!(d.list("/tls").await.expect("list"), vec!["/tls/f"]);
    assert_eq!(
        d.get_content("/tls/f").await.expect("get"),
        "over tls".as_bytes()
    );
    d.delete("/tls").await.expect("delete");
}

/// A password the auth service refuses is a credentials error (what to
/// change is the configuration), not a backend failure worth retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_credentials_error() {
    let Some(mut raw) = regstore_testenv::backend::emulator_params_or_skip("swift").await else {
        return;
    };
    raw.insert("password".into(), "not-the-password".into());
    regstore_driver_swift::register();
    let Err(err) = regstore_core::registry::create("swift", &raw).await else {
        panic!("Swift accepted a wrong password");
    };
    assert_eq!(err.kind(), regstore_core::ErrorKind::Credentials, "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
}
