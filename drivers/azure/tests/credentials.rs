//! A key the emulator refuses is a credentials error (what to change is the
//! configuration), not a backend failure worth retrying. Skipped without the
//! emulator, failed under `REGSTORE_REQUIRE_BACKENDS=1`.

use regstore_core::{ErrorKind, StoragePath, registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_credentials_error() {
    let Some(mut raw) = regstore_testenv::backend::emulator_params_or_skip("azure").await else {
        return;
    };
    raw.insert(
        "accountkey".into(),
        "bm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXk=".into(),
    );
    regstore_driver_azure::register();
    let err = match registry::create("azure", &raw).await {
        Err(e) => e,
        Ok(driver) => driver
            .list(&StoragePath::root())
            .await
            .expect_err("the emulator accepted a wrong key"),
    };
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err}");
}
