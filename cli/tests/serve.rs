//! `regstore serve` as a process: defaults, config errors, graceful
//! shutdown, and an upload continued by a second process.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{header, serve, sha256};
use reqwest::StatusCode;

fn client() -> reqwest::Client {
    common::client_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(start.elapsed() < limit, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_config_it_stores_under_data_and_deletes_are_on() {
    let cwd = tempfile::tempdir().unwrap();
    let server = serve(cwd.path(), &[], &[]);
    let c = client();
    let d = sha256(b"default config");
    let r = c
        .post(format!(
            "{}/v2/first/blobs/uploads/?digest={d}",
            server.base
        ))
        .body("default config")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let blob = cwd.path().join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{}/data",
        &d[7..9],
        &d[7..]
    ));
    assert_eq!(std::fs::read(&blob).unwrap(), b"default config");
    let r = c
        .delete(format!("{}/v2/first/blobs/{d}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "deletes are enabled");
    let r = c
        .get(format!("{}/debug/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn an_unusable_config_stops_startup_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "version: 0.1\nstorage:\n  inmemory:\n  filesystem:\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names 2 drivers") && err.contains("keep exactly one"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(["serve"])
        .env("REGISTRY_STORAGE_FILESYSTEM_MAXTHREADS", "lots")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("maxthreads"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_warned_about_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  secrett: x\n",
    )
    .unwrap();
    let server = serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    let r = client()
        .get(format!("{}/v2/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("`http.secrett`"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish() {
    let cwd = tempfile::tempdir().unwrap();
    let mut server = serve(cwd.path(), &[], &[]);
    let c = client();
    let base = server.base.clone();
    let r = c
        .post(format!("{base}/v2/slow/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = format!("{base}{}", header(&r, "location"));
    // A body that arrives over about a second, in 10 pieces.
    let body = futures_util::stream::unfold(0u8, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(vec![i; 1000]), i + 1))
    });
    let patch = tokio::spawn({
        let c = c.clone();
        let loc = loc.clone();
        async move {
            c.patch(&loc)
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&server.child);
    let r = patch
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-9999");
    let status = wait_exit(&mut server.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    // The data survived: a new server continues the same upload.
    let server = serve(cwd.path(), &[], &[]);
    let all: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 1000]).collect();
    let loc = loc.replace(&base, &server.base);
    let r = c
        .put(format!("{loc}?digest={}", sha256(&all)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_begun_on_one_process_finishes_on_another() {
    let root = tempfile::tempdir().unwrap();
    let rootdir = root.path().join("shared");
    let env = [
        (
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            rootdir.to_str().unwrap(),
        ),
        ("REGISTRY_HTTP_SECRET", "shared-secret"),
    ];
    common::upload_continued_by_another_process(
        || serve(root.path(), &[], &env),
        [1_000_000, 1_000_000, 1_000_000],
    )
    .await;
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    regstore_testenv::openssl::self_signed(dir).expect("openssl is installed")
}

#[test]
fn http_tls_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: {}\n    key: {}\n    minimumtls: tls1.2\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let server = serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    // HTTP/2 by ALPN, as containerd and Docker use it; HTTP/1.1 still.
    for (flag, status) in [("--http2", "http/2 200"), ("--http1.1", "http/1.1 200")] {
        let text = curl_head(&[flag, "--cacert", cert.to_str().unwrap()], &server.base);
        assert!(text.starts_with(status), "{flag}: {text}");
        assert!(
            text.contains("docker-distribution-api-version: registry/2.0"),
            "{text}"
        );
    }
    // Plain HTTP to the TLS port gets no registry answer.
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(server.base.replace("https://", "http://") + "/v2/")
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");

    // A key that does not match the certificate stops startup.
    let other = tempfile::tempdir().unwrap();
    let (_, wrong_key) = self_signed(other.path());
    std::fs::write(
        &cfg,
        format!(
            "storage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            wrong_key.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not fit the certificate"), "{err}");
}

/// `curl -i <base>/v2/` with `args`; the answer's head, lower-cased.
fn curl_head(args: &[&str], base: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-i", "-m", "10"])
        .args(args)
        .arg(format!("{base}/v2/"))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

/// `http.http2.disabled: true` offers HTTP/1.1 only over TLS; plain HTTP
/// speaks HTTP/2 (prior knowledge) only with `http.h2c.enabled: true`.
#[test]
fn http2_follows_http_http2_and_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  http2:\n    disabled: true\n  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let server = serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    let text = curl_head(
        &["--http2", "--cacert", cert.to_str().unwrap()],
        &server.base,
    );
    assert!(text.starts_with("http/1.1 200"), "{text}");
    drop(server);

    let plain = |h2c: &str| {
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  h2c:\n    enabled: {h2c}\n"
            ),
        )
        .unwrap();
        serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[])
    };
    let server = plain("true");
    let text = curl_head(&["--http2-prior-knowledge"], &server.base);
    assert!(text.starts_with("http/2 200"), "{text}");
    let text = curl_head(&["--http1.1"], &server.base);
    assert!(text.starts_with("http/1.1 200"), "{text}");
    drop(server);
    let server = plain("false");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
        ])
        .arg(format!("{}/v2/", server.base))
        .output()
        .unwrap();
    assert!(!out.status.success(), "h2c must be refused unless enabled");
}

/// `log.formatter: json` (and `logstash`) writes one JSON object per line
/// with `log.fields` in each; `log.accesslog.disabled: true` leaves out the
/// per-request lines and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_formatter_json_with_fields_and_the_access_log_switch() {
    for (formatter, access_disabled) in [("json", false), ("logstash", true)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  formatter: {formatter}\n  fields:\n    service: registry\n    environment: test\n  accesslog:\n    disabled: {access_disabled}\nstorage:\n  inmemory:\n"
            ),
        )
        .unwrap();
        let mut server = serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
        let r = client()
            .get(format!("{}/v2/", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        sigterm(&server.child);
        assert!(wait_exit(&mut server.child, Duration::from_secs(30)).success());
        // The reader thread has the lines once stderr closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let lines = server.log.lock().unwrap().clone();
            if lines.iter().any(|l| l.contains("shutting down")) || Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(lines.len() >= 2, "{lines:?}");
        let mut access = 0;
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{formatter}: not a JSON line ({e}): {line}"));
            assert_eq!(v["service"], "registry", "{line}");
            assert_eq!(v["environment"], "test", "{line}");
            assert!(v["time"].is_string() && v["level"].is_string(), "{line}");
            assert!(v["msg"].is_string(), "{line}");
            if v["target"] == "regstore::access" {
                assert_eq!(v["path"], "/v2/", "{line}");
                assert_eq!(v["status"], 200, "{line}");
                access += 1;
            }
        }
        let expected = if access_disabled { 0 } else { 1 };
        assert_eq!(access, expected, "{formatter}: {lines:?}");
    }
}

/// `http.tls.clientcas`: mutual TLS. curl with a client certificate the
/// listed CA signed gets the API; without one, or with one from another
/// CA, the handshake fails and no request is served.
#[test]
fn http_tls_clientcas_requires_a_client_certificate_from_the_listed_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let cas = dir.path().join("cas");
    std::fs::create_dir_all(&cas).unwrap();
    let (ca, client, client_key) =
        regstore_testenv::openssl::client_ca(&cas).expect("openssl is installed");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (_, stranger, stranger_key) =
        regstore_testenv::openssl::client_ca(&other).expect("openssl is installed");
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    )
    .unwrap();
    let server = serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    let cacert = cert.to_str().unwrap();
    let text = curl_head(
        &[
            "--cacert",
            cacert,
            "--cert",
            client.to_str().unwrap(),
            "--key",
            client_key.to_str().unwrap(),
        ],
        &server.base,
    );
    assert!(text.contains(" 200"), "{text}");
    let refused = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-m", "10", "--cacert", cacert])
            .args(extra)
            .arg(format!("{}/v2/", server.base))
            .output()
            .expect("curl is installed");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !out.status.success() && !stdout.contains(" 200"),
            "{extra:?} was served: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    refused(&[]);
    refused(&[
        "--cert",
        stranger.to_str().unwrap(),
        "--key",
        stranger_key.to_str().unwrap(),
    ]);

    // A clientcas file that is not PEM stops startup, naming it.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: {}\n    key: {}\n    clientcas: [{}]\n",
            cert.display(),
            key.display(),
            dir.path().join("junk.pem").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tls.clientcas") && err.contains("junk.pem"),
        "{err}"
    );
}

/// Auth settings that cannot work stop `regstore serve` with one line that
/// names the key: a token section without realm, an unreadable bundle, an
/// unknown algorithm, an htpasswd section without path.
#[test]
fn bad_auth_settings_stop_startup_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            format!(
                "auth:\n  token:\n    service: s\n    issuer: i\n    rootcertbundle: {}\n",
                missing.display()
            ),
            "auth.token.realm is missing".to_owned(),
        ),
        (
            format!(
                "auth:\n  token:\n    realm: https://a/t\n    service: s\n    issuer: i\n    rootcertbundle: {}\n",
                missing.display()
            ),
            format!(
                "auth.token.rootcertbundle: cannot read {}",
                missing.display()
            ),
        ),
        (
            format!(
                "auth:\n  token:\n    realm: https://a/t\n    service: s\n    issuer: i\n    rootcertbundle: {}\n    signingalgorithms: [RS256, HS256]\n",
                missing.display()
            ),
            "auth.token.signingalgorithms: \"HS256\" is not supported".to_owned(),
        ),
        (
            "auth:\n  htpasswd:\n    realm: r\n".to_owned(),
            "auth.htpasswd: missing field `path`".to_owned(),
        ),
    ];
    for (auth, expected) in cases {
        std::fs::write(&cfg, format!("version: 0.1\nstorage:\n  inmemory:\n{auth}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_regstore"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{auth}");
        let err = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(&expected), "{expected}: {err}");
    }
}

/// The top-level section `key` of the first example in distribution's
/// configuration reference that has one: its lines, `key:` included, up
/// to the next top-level key.
fn reference_section(md: &str, key: &str) -> String {
    let start = md
        .find(&format!("\n{key}:\n"))
        .unwrap_or_else(|| panic!("no `{key}:` example in the reference"));
    md[start + 1..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' ') || l.is_empty())
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `notifications` and `http.debug` (with `prometheus`) examples of
/// distribution's configuration reference, as Debian installs it, start
/// `regstore serve`: the API and the debug server answer, metrics are
/// served at the documented path, and a push completes although the
/// documented endpoint (`https://my.listener.com/event`) is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributions_documented_notifications_and_debug_prometheus_start() {
    let docs = "/usr/share/doc/docker-registry/configuration.md.gz";
    let Some(md) = regstore_testenv::backend::skip_unless_required(
        "distribution's configuration reference",
        std::process::Command::new("zcat")
            .arg(docs)
            .output()
            .map_err(|e| e.to_string())
            .and_then(|o| {
                if o.status.success() {
                    String::from_utf8(o.stdout).map_err(|e| e.to_string())
                } else {
                    Err(format!("{docs}: scripts/clients.sh install"))
                }
            }),
    ) else {
        return;
    };
    // `headers: <http.Header>` is the reference naming a Go type.
    let notifications: String = reference_section(&md, "notifications")
        .lines()
        .filter(|l| !l.contains("<http.Header>"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(notifications.contains("url: https://my.listener.com/event"));
    let http = reference_section(&md, "http");
    let debug: Vec<&str> = http
        .lines()
        .skip_while(|l| *l != "  debug:")
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("    "))
        .map(|(_, l)| l)
        .collect();
    let debug = debug
        .join("\n")
        .replace("addr: localhost:5001", "addr: 127.0.0.1:0");
    assert!(
        debug.contains("prometheus:") && debug.contains("path: /metrics"),
        "{debug}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!("version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n{debug}\n{notifications}\n"),
    )
    .unwrap();
    let server = serve(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    let c = client();
    let d = sha256(b"documented");
    let r = c
        .post(format!("{}/v2/doc/blobs/uploads/?digest={d}", server.base))
        .body("documented")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let log = server.log.lock().unwrap().join("\n");
    let debug_base = log
        .lines()
        .find_map(|l| {
            let i = l.find("debug server on http://")?;
            let url = &l[i + "debug server on ".len()..];
            url.split("/debug/").next().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no debug server line: {log}"));
    let r = c.get(format!("{debug_base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("regstore_uploads_completed_total 1"),
        "the push was recorded: {text}"
    );
    assert!(
        !log.contains("unknown config key"),
        "every documented key is known: {log}"
    );
}
