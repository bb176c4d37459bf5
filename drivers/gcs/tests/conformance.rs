//! The whole conformance suite against fake-gcs-server, one fresh root
//! directory per case in the bucket `scripts/backends.sh start gcs` creates.
//!
//! `REGSTORE_GCS_ENDPOINT` (default `http://127.0.0.1:19020`) points at the
//! server. Signed URLs need a service-account private key: the test makes a
//! throwaway RSA key with `openssl` (see `regstore_testenv::backend`).

use regstore_core::{Driver, registry};
use regstore_testsuite::Subject;

regstore_testsuite::conformance_main!(|| async {
    let mut raw = regstore_testenv::backend::emulator_params("gcs").await?;
    // The smallest chunk, so the writer cases cross many chunks.
    raw.insert("chunksize".into(), "256KiB".into());
    regstore_driver_gcs::register();
    let driver: Driver = registry::create("gcs", &raw)
        .await
        .map_err(|e| e.to_string())?;
    // fake-gcs-server (memory backend) holds every object, and buffers
    // each resumable upload, in its own memory; the 5 GiB stream is not
    // something it was built to hold, so this suite runs the shrunken sizes.
    Ok(Subject::new(driver)
        .reduced_sizes("fake-gcs-server keeps objects and resumable uploads in process memory"))
});
