//! The whole conformance suite against a single-node OpenStack Swift
//! (`scripts/backends.sh start swift`: TempAuth, container `regstore`, the
//! account's TempURL key set), one fresh prefix per case.
//!
//! `REGSTORE_SWIFT_AUTHURL` (default `http://127.0.0.1:19030/auth/v1.0`)
//! points at the proxy. The chunk size is Swift's 1 MiB minimum, so the
//! writer cases build static large objects of many segments; the redirect
//! case fetches TempURLs whose signatures Swift checks. Without the server
//! the cases are skipped, or fail under `REGSTORE_REQUIRE_BACKENDS=1` (CI).

use regstore_core::{Driver, registry};
use regstore_testsuite::Subject;

regstore_testsuite::conformance_main!(|| async {
    let mut raw = regstore_testenv::backend::emulator_params("swift").await?;
    raw.insert("chunksize".into(), "1MiB".into());
    regstore_driver_swift::register();
    let driver: Driver = registry::create("swift", &raw)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Subject::new(driver))
});
