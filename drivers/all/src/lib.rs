//! regstore-drivers: every driver and middleware, linked in.
//!
//! Drivers register themselves with `inventory`, which only sees crates
//! that end up in the binary. Depending on this crate and calling [`link`]
//! once guarantees that every driver enabled by a cargo feature is there.
//! A new driver adds a feature, an optional dependency and one line below.

#[cfg(feature = "azure")]
use regstore_driver_azure as _;
#[cfg(feature = "filesystem")]
use regstore_driver_filesystem as _;
#[cfg(feature = "gcs")]
use regstore_driver_gcs as _;
#[cfg(feature = "inmemory")]
use regstore_driver_inmemory as _;
#[cfg(feature = "s3")]
use regstore_driver_s3 as _;
#[cfg(feature = "swift")]
use regstore_driver_swift as _;
#[cfg(feature = "middleware")]
use regstore_middleware as _;
#[cfg(feature = "cloudfront")]
use regstore_middleware_cloudfront as _;
#[cfg(feature = "redirect")]
use regstore_middleware_redirect as _;

/// Makes sure the registrations of every enabled driver are linked in.
/// Call it once before looking drivers up by name.
#[inline(never)]
pub fn link() {
    #[cfg(feature = "inmemory")]
    std::hint::black_box(regstore_driver_inmemory::InMemoryDriver::new);
    #[cfg(feature = "filesystem")]
    std::hint::black_box(regstore_driver_filesystem::FilesystemDriver::new::<std::path::PathBuf>);
    #[cfg(feature = "redirect")]
    std::hint::black_box(regstore_middleware_redirect::base_url);
    #[cfg(feature = "middleware")]
    regstore_middleware::link();
    #[cfg(feature = "cloudfront")]
    std::hint::black_box(regstore_middleware_cloudfront::base_url);
    #[cfg(feature = "s3")]
    std::hint::black_box(regstore_driver_s3::s3_driver);
    #[cfg(feature = "azure")]
    std::hint::black_box(regstore_driver_azure::azure_driver);
    #[cfg(feature = "gcs")]
    std::hint::black_box(regstore_driver_gcs::gcs_driver);
    #[cfg(feature = "swift")]
    std::hint::black_box(regstore_driver_swift::credentials);
}

/// Names of the drivers enabled in this build, sorted.
pub fn driver_names() -> Vec<&'static str> {
    link();
    regstore_core::registry::drivers()
        .into_iter()
        .map(|f| f.name)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_enabled_driver_is_registered() {
        let names = super::driver_names();
        #[cfg(feature = "inmemory")]
        assert!(names.contains(&"inmemory"), "{names:?}");
        #[cfg(feature = "filesystem")]
        assert!(names.contains(&"filesystem"), "{names:?}");
        #[cfg(feature = "s3")]
        assert!(names.contains(&"s3"), "{names:?}");
        #[cfg(feature = "azure")]
        assert!(names.contains(&"azure"), "{names:?}");
        #[cfg(feature = "gcs")]
        assert!(names.contains(&"gcs"), "{names:?}");
    }
}
