//! The whole conformance suite against Azurite, one fresh root directory per
//! case in the container `scripts/backends.sh start azure` creates.
//!
//! `REGSTORE_AZURE_ENDPOINT` (default `http://127.0.0.1:19010`) points at the
//! server; the account is Azurite's well-known `devstoreaccount1`. Without it
//! reachable the cases are skipped, or fail under
//! `REGSTORE_REQUIRE_BACKENDS=1` (CI).

use regstore_core::{Driver, registry};
use regstore_testsuite::Subject;

regstore_testsuite::conformance_main!(|| async {
    let raw = regstore_testenv::backend::emulator_params("azure").await?;
    regstore_driver_azure::register();
    let driver: Driver = registry::create("azure", &raw)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Subject::new(driver))
});
