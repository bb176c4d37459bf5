//! The whole conformance suite against fake-gcs-server, one fresh root
//! directory per case in the bucket `scripts/backends.sh start gcs` creates.
//!
//! `REGSTORE_GCS_ENDPOINT` (default `http://127.0.0.1:19020`) points at the
//! server. Signed URLs need a service-account private key: the test makes a
//! throwaway RSA key with `openssl` (installed by scripts/clients.sh).

use std::sync::OnceLock;

use regstore_core::{Driver, RawParams, registry};
use regstore_testsuite::Subject;

/// A service-account JSON with a fresh RSA key, made once per process.
fn service_account() -> Result<&'static str, String> {
    static ACCOUNT: OnceLock<Result<String, String>> = OnceLock::new();
    ACCOUNT
        .get_or_init(|| {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .output()
                .map_err(|e| {
                    format!("openssl genpkey: {e} (scripts/clients.sh installs openssl)")
                })?;
            if !out.status.success() {
                return Err(format!(
                    "openssl genpkey failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let pem = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
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

regstore_testsuite::conformance_main!(|| async {
    let endpoint = std::env::var("REGSTORE_GCS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:19020".to_owned());
    regstore_testsuite::backend::reachable(&endpoint).await?;
    let mut raw = RawParams::new();
    for (k, v) in [
        ("bucket", "regstore"),
        ("endpoint", endpoint.as_str()),
        ("noauth", "true"),
        ("credentials", service_account()?),
        // The smallest chunk, so the writer cases cross many chunks.
        ("chunksize", "256KiB"),
    ] {
        raw.insert(k.into(), v.into());
    }
    raw.insert(
        "rootdirectory".into(),
        regstore_testsuite::backend::unique_root("gcs").into(),
    );
    std::hint::black_box(regstore_driver_gcs::gcs_driver);
    let driver: Driver = registry::create("gcs", &raw)
        .await
        .map_err(|e| e.to_string())?;
    // fake-gcs-server (memory backend) holds every object, and buffers
    // each resumable upload, in its own memory; the 5 GiB stream is not
    // something it was built to hold, so this suite runs the shrunken sizes.
    Ok(Subject::new(driver)
        .reduced_sizes("fake-gcs-server keeps objects and resumable uploads in process memory"))
});
