//! Helpers for suites that run against a real server (moto, Azurite,
//! fake-gcs-server, Swift) started by `scripts/backends.sh`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
