//! The whole suite against the reference driver.
use regstore_core::Driver;
use regstore_driver_inmemory::InMemoryDriver;
use regstore_testsuite::Subject;

regstore_testsuite::conformance_main!(|| async {
    Ok(Subject::new(Driver::new(InMemoryDriver::new())))
});
