//! The whole conformance suite against Azurite, one fresh root directory per
//! case in the container `scripts/backends.sh start azure` creates.
//!
//! `REGSTORE_AZURE_ENDPOINT` (default `http://127.0.0.1:19010`) points at the
//! server; the account is Azurite's well-known `devstoreaccount1`. Without it
//! reachable the cases are skipped, or fail under
//! `REGSTORE_REQUIRE_BACKENDS=1` (CI).

use regstore_core::{Driver, RawParams, registry};
use regstore_testsuite::Subject;

/// Azurite's documented development account key (public, emulator only).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

regstore_testsuite::conformance_main!(|| async {
    let endpoint = std::env::var("REGSTORE_AZURE_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:19010".to_owned());
    regstore_testsuite::backend::reachable(&endpoint).await?;
    let service = format!("{}/devstoreaccount1", endpoint.trim_end_matches('/'));
    let mut raw = RawParams::new();
    for (k, v) in [
        ("accountname", "devstoreaccount1"),
        ("accountkey", AZURITE_KEY),
        ("container", "regstore"),
        ("serviceurl", service.as_str()),
    ] {
        raw.insert(k.into(), v.into());
    }
    raw.insert(
        "rootdirectory".into(),
        regstore_testsuite::backend::unique_root("azure").into(),
    );
    std::hint::black_box(regstore_driver_azure::azure_driver);
    let driver: Driver = registry::create("azure", &raw)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Subject::new(driver))
});
