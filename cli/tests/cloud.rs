//! `regstore serve` on each emulator-backed cloud driver — s3 on moto, azure
//! on Azurite, gcs on fake-gcs-server, swift on a single-node Swift, started
//! by `scripts/backends.sh` —
//! with real clients: skopeo pushes an image and copies it back out with the
//! same digests (blob GETs answered with 307 to the backend's signed URLs),
//! and a chunked upload begun on one `regstore serve` process is finished by
//! another on the same bucket.
//!
//! Each test uses a fresh root directory in the emulator's bucket. Without
//! the emulator (or skopeo) a test is skipped, and fails under
//! `REGSTORE_REQUIRE_BACKENDS=1` (CI).

mod common;

use std::path::Path;

use common::image::{build_image, manifest_of_layout, run, tools};
use common::{Server, cloud_config as config, serve, sha256};

fn serve_with(dir: &Path, config: &Path) -> Server {
    serve(
        dir,
        &["--config", config.to_str().expect("utf-8 path")],
        &[],
    )
}

async fn skopeo_push_and_pull(driver: &str) {
    let Some(t) = tools() else { return };
    let work = tempfile::tempdir().expect("temp dir");
    let Some(cfg) = config(driver, work.path()).await else {
        return;
    };
    let image = build_image(&t.umoci, work.path());
    let (src_digest, src_manifest) = manifest_of_layout(&work.path().join("oci"));
    let server = serve_with(work.path(), &cfg);
    let host = server.base.trim_start_matches("http://").to_owned();
    let dest = format!("docker://{host}/cloud/{driver}:v1");
    run(
        &t.skopeo,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{image}"),
            &dest,
        ],
    );
    let raw = run(
        &t.skopeo,
        &["inspect", "--tls-verify=false", "--raw", &dest],
    )
    .stdout;
    assert_eq!(
        sha256(&raw),
        src_digest,
        "the manifest arrives byte for byte"
    );

    let out = work.path().join("out");
    run(
        &t.skopeo,
        &[
            "copy",
            "--src-tls-verify=false",
            &dest,
            &format!("oci:{}:v1", out.display()),
        ],
    );
    let (out_digest, out_manifest) = manifest_of_layout(&out);
    assert_eq!(out_digest, src_digest);
    assert_eq!(out_manifest["layers"], src_manifest["layers"]);
    for layer in out_manifest["layers"].as_array().expect("layers") {
        let d = layer["digest"].as_str().expect("digest");
        let bytes = std::fs::read(out.join("blobs/sha256").join(&d[7..])).expect("layer");
        assert_eq!(sha256(&bytes), d, "layer {d} intact after the round trip");
    }
    // The pull went through the backend's signed URLs, not the registry.
    let log = server.log.lock().expect("log").join("\n");
    assert!(
        log.contains("status=307"),
        "blob GETs were not redirected to {driver}'s signed URLs:\n{log}"
    );
}

/// 6 MiB + 6 MiB + 3 MiB: with the smallest chunk size the first process
/// leaves a completed part and a tail in the writer's state object.
async fn chunked_upload_across_processes(driver: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let Some(cfg) = config(driver, work.path()).await else {
        return;
    };
    const MIB: usize = 1 << 20;
    common::upload_continued_by_another_process(
        || serve_with(work.path(), &cfg),
        [6 * MIB, 6 * MIB, 3 * MIB],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_skopeo_push_and_pull() {
    skopeo_push_and_pull("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_skopeo_push_and_pull() {
    skopeo_push_and_pull("azure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_skopeo_push_and_pull() {
    skopeo_push_and_pull("gcs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_skopeo_push_and_pull() {
    skopeo_push_and_pull("swift").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_chunked_upload_continued_by_another_process() {
    chunked_upload_across_processes("swift").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_chunked_upload_continued_by_another_process() {
    chunked_upload_across_processes("s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_chunked_upload_continued_by_another_process() {
    chunked_upload_across_processes("azure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_chunked_upload_continued_by_another_process() {
    chunked_upload_across_processes("gcs").await;
}

/// The latency middleware on s3 delays every backend request: a listing and
/// two puts cost three delays, and the request count is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_middleware_delays_each_s3_request() {
    let Some(params) = regstore_testenv::backend::emulator_params_or_skip("s3").await else {
        return;
    };
    regstore_builtin::register_all();
    let inner = regstore_core::registry::create("s3", &params)
        .await
        .expect("s3 driver");
    let mut raw = regstore_core::RawParams::new();
    raw.insert("delay".into(), "150ms".into());
    let d = regstore_core::registry::wrap(inner, "latency", &raw)
        .await
        .expect("latency middleware");
    let before = d.backend_requests().expect("s3 counts requests");
    let started = std::time::Instant::now();
    d.put_content("/lat/a", "a").await.expect("put");
    d.put_content("/lat/b", "b").await.expect("put");
    let listed = d.list("/lat").await.expect("list");
    let took = started.elapsed();
    let used = d.backend_requests().expect("counted") - before;
    assert_eq!(listed.len(), 2);
    assert_eq!(used, 3, "two PUTs and one LIST");
    assert!(
        took >= std::time::Duration::from_millis(450),
        "three requests with 150 ms each took {took:?}"
    );
    d.delete("/lat").await.expect("clean up");
}

/// `regstore serve` on s3 (moto) with the cloudfront middleware: a blob GET
/// or HEAD from outside AWS gets a 307 to the distribution with a canned
/// policy signature that openssl verifies with the public key; a client
/// whose `X-Forwarded-For` address is in the (loopback-served) AWS ranges
/// gets moto's presigned URL instead, and following it returns the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_cloudfront_middleware_signs_blob_redirects() {
    let work = tempfile::tempdir().expect("temp dir");
    let Some(params) = regstore_testenv::backend::emulator_params_or_skip("s3").await else {
        return;
    };
    let root = params
        .get("rootdirectory")
        .and_then(|v| v.as_str())
        .expect("root directory")
        .to_owned();
    let (private, public) =
        regstore_testenv::openssl::rsa_key_pair(work.path(), false).expect("openssl key pair");
    let ranges = regstore_testenv::backend::serve_json(
        "ip-ranges.json",
        r#"{"prefixes":[{"ip_prefix":"3.5.140.0/22","region":"eu-west-1","service":"AMAZON"}],
            "ipv6_prefixes":[{"ipv6_prefix":"2600:1f14::/35","region":"eu-west-1","service":"AMAZON"}]}"#,
    )
    .await;
    let config = serde_json::json!({
        "version": "0.1",
        "storage": { "s3": params },
        "middleware": { "storage": [{
            "name": "cloudfront",
            "options": {
                "baseurl": "d111111abcdef8.cloudfront.net/reg",
                "privatekey": private,
                "keypairid": "APKAREGSTORE",
                "duration": "15m",
                "ipfilteredby": "aws",
                "iprangesurl": ranges,
            },
        }]},
    });
    let cfg = work.path().join("config.yml");
    std::fs::write(&cfg, config.to_string()).expect("write config");
    let server = serve_with(work.path(), &cfg);
    let api = common::Api::new(server.base.clone());
    let data = b"behind a CDN".repeat(100);
    let digest = api.push_blob("cdn/app", &data).await;
    let hex = &digest[7..];
    let key = format!(
        "{root}/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    );

    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = api
            .client
            .request(
                method.clone(),
                api.url(&format!("/v2/cdn/app/blobs/{digest}")),
            )
            .header("x-forwarded-for", "198.51.100.7, 10.0.0.1")
            .send()
            .await
            .expect("blob request");
        assert_eq!(
            r.status(),
            reqwest::StatusCode::TEMPORARY_REDIRECT,
            "{method}"
        );
        let location = url::Url::parse(&common::header(&r, "location")).expect("a URL");
        assert_eq!(location.host_str(), Some("d111111abcdef8.cloudfront.net"));
        assert_eq!(location.path(), format!("/reg/{key}"), "{method}");
        let expires =
            regstore_testenv::openssl::verify_cloudfront_url(&location, &public, "APKAREGSTORE")
                .expect("the signature verifies with the public key");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(
            (890..=901).contains(&expires.saturating_sub(now)),
            "15 minutes from now: {expires} vs {now}"
        );
    }

    // From inside AWS (IPv6 here): moto's own presigned URL, which serves the blob.
    let r = api
        .client
        .get(api.url(&format!("/v2/cdn/app/blobs/{digest}")))
        .header("x-forwarded-for", "2600:1f14::99")
        .send()
        .await
        .expect("blob request");
    assert_eq!(r.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    let location = common::header(&r, "location");
    assert!(location.contains("X-Amz-Signature"), "{location}");
    let body = api
        .client
        .get(&location)
        .send()
        .await
        .expect("follow")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256(&body), digest, "the presigned URL serves the blob");
}

/// Runs `regstore serve` on `storage` (a driver key and its parameters)
/// until it exits or `limit` passes; the exit status (`None`: still
/// running, then killed) and stderr.
fn serve_until_exit(
    dir: &Path,
    storage: serde_json::Value,
    limit: std::time::Duration,
) -> (Option<std::process::ExitStatus>, String) {
    use std::io::Read;
    let cfg = dir.join("config.yml");
    let yaml = serde_json::json!({"version": "0.1", "storage": storage});
    std::fs::write(&cfg, yaml.to_string()).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(["serve", "--config", cfg.to_str().expect("utf-8 path")])
        .env_remove("REGSTORE_LOG")
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        // No cloud metadata server: nothing listens on port 9 on loopback.
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start regstore serve");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, stderr)
}

/// A backend that refuses the configured credentials stops `regstore serve`
/// at startup with one line that names the driver, what the backend said
/// (once) and where the credentials are configured — on every emulator that
/// checks credentials: Azurite (a wrong account key) and Swift (a wrong
/// password) — and so does gcs with no credentials at all and no metadata
/// server, at once rather than after seconds of asking for one. (moto, the
/// S3 server here, accepts any key; the S3 mapping has unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_startup_with_one_line() {
    let cases: [(&str, &str, &str); 2] = [
        (
            "azure",
            "accountkey",
            // A well-formed key that is not Azurite's.
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        ),
        ("swift", "password", "not-the-password"),
    ];
    for (driver, key, wrong) in cases {
        let Some(mut params) = regstore_testenv::backend::emulator_params_or_skip(driver).await
        else {
            continue;
        };
        params.insert(key.into(), wrong.into());
        let dir = tempfile::tempdir().expect("temp dir");
        let (status, stderr) = tokio::task::spawn_blocking({
            let dir = dir.path().to_owned();
            move || {
                serve_until_exit(
                    &dir,
                    serde_json::json!({ driver: params }),
                    std::time::Duration::from_secs(60),
                )
            }
        })
        .await
        .expect("join");
        let status = status.unwrap_or_else(|| panic!("{driver}: still serving:\n{stderr}"));
        assert!(!status.success(), "{driver}: {stderr}");
        let error: Vec<&str> = stderr
            .lines()
            .filter(|l| l.to_lowercase().contains("error"))
            .collect();
        assert_eq!(error.len(), 1, "{driver}: one error line:\n{stderr}");
        let line = error[0];
        assert!(
            line.contains("credentials refused or missing")
                && line.contains(&format!("storage.{driver}")),
            "{driver}: {line}"
        );
        assert!(
            !stderr.contains("listening on"),
            "{driver}: served before the check:\n{stderr}"
        );
    }
    // gcs without credentials needs no emulator.
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, stderr) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            serve_until_exit(
                &dir,
                serde_json::json!({"gcs": {"bucket": "regstore"}}),
                std::time::Duration::from_secs(60),
            )
        }
    })
    .await
    .expect("join");
    let status = status.unwrap_or_else(|| panic!("gcs: still serving:\n{stderr}"));
    assert!(!status.success(), "gcs: {stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "gcs: one line:\n{stderr}");
    assert!(
        line.contains("credentials refused or missing") && line.contains("storage.gcs"),
        "gcs: {line}"
    );
}

/// A backend that does not answer at startup is not fatal: `regstore serve`
/// logs it, serves, and `/debug/health` answers 503 naming the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_logged_and_served_with_health_503() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens on port 9 (discard) on loopback. (Not Swift: its
    // driver logs in and creates its container while it is built, so an
    // unreachable Swift stops startup.)
    let cfg = dir.path().join("config.yml");
    let yaml = serde_json::json!({"version": "0.1", "storage": {"s3": {
        "bucket": "regstore",
        "region": "us-east-1",
        "regionendpoint": "http://127.0.0.1:9",
        "forcepathstyle": "true",
        "accesskey": "test",
        "secretkey": "test",
    }}});
    std::fs::write(&cfg, yaml.to_string()).expect("write config");
    let server = serve_with(dir.path(), &cfg);
    let log = server.log.lock().expect("log").join("\n");
    assert!(
        log.contains("storage backend not answering at startup"),
        "{log}"
    );
    let r = common::client_builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("client")
        .get(format!("{}/debug/health", server.base))
        .send()
        .await
        .expect("health answers");
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body = r.text().await.expect("body");
    assert!(body.contains("storage driver s3 is unhealthy"), "{body}");
}
