//! The whole conformance suite against the filesystem driver, one fresh
//! temporary root per case.
use regstore_core::Driver;
use regstore_driver_filesystem::FilesystemDriver;
use regstore_testsuite::Subject;

regstore_testsuite::conformance_main!(|| async {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let driver = FilesystemDriver::new(dir.path().join("root")).map_err(|e| e.to_string())?;
    Ok(Subject::new(Driver::new(driver)).keep(dir))
});
