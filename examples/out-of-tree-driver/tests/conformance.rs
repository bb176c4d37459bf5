//! The whole conformance suite on `flatdir`, a fresh directory per case.

use regstore_core::Driver;
use regstore_flatdir::FlatDirDriver;
use regstore_testsuite::Subject;

regstore_testsuite::conformance_main!(|| async {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let driver = FlatDirDriver::new(dir.path()).map_err(|e| e.to_string())?;
    // The full sizes (a 5 GiB stream) run on the built-in filesystem
    // driver; this example shows the route, not disk throughput.
    Ok(Subject::new(Driver::new(driver))
        .keep(dir)
        .reduced_sizes("an example driver: the full sizes run on filesystem"))
});
