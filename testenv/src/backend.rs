//! Helpers for suites that run against a real server (moto, Azurite,
//! fake-gcs-server, Swift) started by `scripts/backends.sh`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regstore_core::RawParams;

/// Checks that something accepts TCP connections at `endpoint`'s host and
/// port within two seconds, so an absent server is reported at once instead
/// of after the HTTP client's retries.
///
/// # Errors
/// A message naming the endpoint and what failed, for the suite to report
/// (a skip, or a failure under `REGSTORE_REQUIRE_BACKENDS=1`).
pub async fn reachable(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{endpoint:?} has no host"))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("{endpoint:?} has no port"))?;
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "nothing listens at {endpoint} ({e}); start it with scripts/backends.sh start"
        )),
        Err(_) => Err(format!("{endpoint} did not accept a connection within 2 s")),
    }
}

/// A root directory no other case, test binary or earlier run uses:
/// `regstore-tests/<label>-<pid>-<time>-<n>`.
pub fn unique_root(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("regstore-tests/{label}-{}-{nanos}-{n}", std::process::id())
}

/// The test Redis, `host:port`: `REGSTORE_REDIS_ADDR`, else where
/// `scripts/backends.sh start redis` runs it (`127.0.0.1:19040`, 4096
/// databases).
pub fn redis_addr() -> String {
    std::env::var("REGSTORE_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:19040".into())
}

/// The test MySQL/MariaDB server as a URL without a database:
/// `REGSTORE_MYSQL_URL`, else where `scripts/backends.sh start mysql` runs
/// it (user `regstore`, who may create and drop databases).
pub fn mysql_url() -> String {
    std::env::var("REGSTORE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://regstore:regstore@127.0.0.1:19041".into())
}

/// The test PostgreSQL server as a URL without a database:
/// `REGSTORE_POSTGRES_URL`, else where `scripts/backends.sh start postgres`
/// runs it (role `regstore` with CREATEDB).
pub fn postgres_url() -> String {
    std::env::var("REGSTORE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://regstore:regstore@127.0.0.1:19042".into())
}

/// A `reqwest` client builder that works in any test or benchmark process.
///
/// The cloud drivers build reqwest with rustls but without a bundled crypto
/// provider (keeping aws-lc's C build out of the tree), and cargo unifies
/// that feature for every crate in a build; such a client panics unless a
/// provider is installed first. This installs ring (idempotent).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Azurite's documented development account key (public, emulator only).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The emulator-backed drivers `scripts/backends.sh` starts servers for.
pub const EMULATED: [&str; 4] = ["s3", "azure", "gcs", "swift"];

/// Driver parameters for `driver` (`s3`, `azure` or `gcs`) against the
/// emulator `scripts/backends.sh start` runs for it, with a fresh
/// [`unique_root`] as `rootdirectory`: moto (`REGSTORE_S3_ENDPOINT`, default
/// `http://127.0.0.1:19000`), Azurite (`REGSTORE_AZURE_ENDPOINT`, `:19010`,
/// account `devstoreaccount1`), fake-gcs-server (`REGSTORE_GCS_ENDPOINT`,
/// `:19020`, with a throwaway service-account key from `openssl` so signed
/// URLs work), a single-node Swift (`REGSTORE_SWIFT_AUTHURL`, TempAuth at
/// `http://127.0.0.1:19030/auth/v1.0`, user `test:tester`, with the TempURL
/// key `scripts/backends.sh` sets on the account). The bucket or container
/// is `regstore`.
///
/// This is the one place tests, benches and `regstore bench` examples learn
/// how to reach the emulators.
///
/// # Errors
/// The emulator is not reachable (see [`reachable`]), `openssl` is missing
/// (gcs), or `driver` is not one of [`EMULATED`].
pub async fn emulator_params(driver: &str) -> Result<RawParams, String> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let endpoint = match driver {
        "s3" => var("REGSTORE_S3_ENDPOINT", "http://127.0.0.1:19000"),
        "azure" => var("REGSTORE_AZURE_ENDPOINT", "http://127.0.0.1:19010"),
        "gcs" => var("REGSTORE_GCS_ENDPOINT", "http://127.0.0.1:19020"),
        "swift" => var("REGSTORE_SWIFT_AUTHURL", "http://127.0.0.1:19030/auth/v1.0"),
        other => return Err(not_emulated(other)),
    };
    emulator_params_at(driver, &endpoint).await
}

fn not_emulated(driver: &str) -> String {
    format!("no emulator for driver {driver:?}; emulated: {EMULATED:?}")
}

/// [`emulator_params`] for the emulator at `endpoint` instead of the one
/// the environment names: the service's base URL (s3, azure, gcs), or
/// Swift's TempAuth URL (`http://host:port/auth/v1.0`). For a test that
/// runs an instance of its own ([`crate::instance`]).
///
/// # Errors
/// As [`emulator_params`].
pub async fn emulator_params_at(driver: &str, endpoint: &str) -> Result<RawParams, String> {
    let endpoint = endpoint.to_owned();
    let pairs: Vec<(&str, String)> = match driver {
        "s3" => vec![
            ("bucket", "regstore".into()),
            ("region", "us-east-1".into()),
            ("regionendpoint", endpoint.clone()),
            ("forcepathstyle", "true".into()),
            ("accesskey", "test".into()),
            ("secretkey", "test".into()),
        ],
        "azure" => vec![
            ("accountname", "devstoreaccount1".into()),
            ("accountkey", AZURITE_KEY.into()),
            ("container", "regstore".into()),
            (
                "serviceurl",
                format!("{}/devstoreaccount1", endpoint.trim_end_matches('/')),
            ),
        ],
        "gcs" => vec![
            ("bucket", "regstore".into()),
            ("endpoint", endpoint.clone()),
            ("noauth", "true".into()),
            ("credentials", service_account()?.to_owned()),
        ],
        "swift" => vec![
            ("authurl", endpoint.clone()),
            ("username", "test:tester".into()),
            ("password", "testing".into()),
            ("container", "regstore".into()),
            ("secretkey", "regstore-tempurl-key".into()),
        ],
        other => return Err(not_emulated(other)),
    };
    reachable(&endpoint).await?;
    let mut raw: RawParams = pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    raw.insert("rootdirectory".into(), unique_root(driver).into());
    Ok(raw)
}

/// [`emulator_params`] for a test that needs the emulator: `None` (the test
/// returns early, reporting `SKIPPED` on stderr) when it is unreachable.
///
/// # Panics
/// The emulator is unreachable and `REGSTORE_REQUIRE_BACKENDS=1` (CI), so
/// a missing server fails the test instead of passing it.
pub async fn emulator_params_or_skip(driver: &str) -> Option<RawParams> {
    skip_unless_required(&format!("{driver} emulator"), emulator_params(driver).await)
}

/// What a test needs (`what`: a server, its setup), or `None` after
/// reporting `SKIPPED: what: why` on stderr, so the test returns early.
///
/// # Panics
/// `needed` is an error and `REGSTORE_REQUIRE_BACKENDS` is set (CI): a
/// missing backend fails the test instead of passing it.
pub fn skip_unless_required<T>(what: &str, needed: Result<T, String>) -> Option<T> {
    match needed {
        Ok(v) => Some(v),
        Err(why) => {
            assert!(
                !crate::env_flag("REGSTORE_REQUIRE_BACKENDS"),
                "{what}: {why}"
            );
            eprintln!("SKIPPED: {what}: {why}");
            None
        }
    }
}

/// Serves `body` as `application/json` to every request on a loopback
/// port until the runtime ends; the URL of `/<name>` there. For tests of
/// code that fetches a document (the cloudfront middleware's AWS ip ranges).
///
/// # Panics
/// No loopback port can be bound.
pub async fn serve_json(name: &str, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = sock.read(&mut request).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    format!("http://{addr}/{name}")
}

/// A GCS service-account JSON with a fresh 2048-bit RSA key made by
/// `openssl` (installed by `scripts/clients.sh`), once per process.
/// fake-gcs-server checks no signature; the key lets the driver sign URLs.
fn service_account() -> Result<&'static str, String> {
    static ACCOUNT: OnceLock<Result<String, String>> = OnceLock::new();
    ACCOUNT
        .get_or_init(|| {
            let pem = crate::openssl::rsa_private_pem()?;
            Ok(serde_json::json!({
                "type": "service_account",
                "private_key": pem,
                "private_key_id": "regstore-test",
                "client_email": "regstore-test@regstore.iam.gserviceaccount.com",
            })
            .to_string())
        })
        .as_deref()
        .map_err(Clone::clone)
}
