//! regstore-builtin: every built-in driver and middleware, registered by
//! one call.
//!
//! [`register_all`] calls the `register` function of each driver and
//! middleware crate enabled by a cargo feature (all by default). Calling a
//! crate's function is what links it into the binary, so every driver
//! listed here is there — a test below checks the whole list. A new
//! in-tree driver adds a feature, an optional dependency and one line in
//! [`register_all`].

/// Registers every driver and middleware enabled in this build. Idempotent;
/// call it before building drivers by name.
pub fn register_all() {
    #[cfg(feature = "inmemory")]
    regstore_driver_inmemory::register();
    #[cfg(feature = "filesystem")]
    regstore_driver_filesystem::register();
    #[cfg(feature = "s3")]
    regstore_driver_s3::register();
    #[cfg(feature = "azure")]
    regstore_driver_azure::register();
    #[cfg(feature = "gcs")]
    regstore_driver_gcs::register();
    #[cfg(feature = "swift")]
    regstore_driver_swift::register();
    #[cfg(feature = "middleware")]
    regstore_middleware_builtin::register();
    #[cfg(feature = "cloudfront")]
    regstore_middleware_cloudfront::register();
}

/// Names of the drivers enabled in this build, sorted.
pub fn driver_names() -> Vec<&'static str> {
    register_all();
    regstore_core::registry::drivers()
        .into_iter()
        .map(|f| f.name)
        .collect()
}

/// Names of the middleware enabled in this build, sorted.
pub fn middleware_names() -> Vec<&'static str> {
    register_all();
    regstore_core::registry::middlewares()
        .into_iter()
        .map(|f| f.name)
        .collect()
}

#[cfg(test)]
mod tests {
    /// With the default features, exactly the built-in drivers and
    /// middleware are registered: none missing, none unexpected.
    #[test]
    #[cfg(all(
        feature = "inmemory",
        feature = "filesystem",
        feature = "s3",
        feature = "azure",
        feature = "gcs",
        feature = "swift",
        feature = "middleware",
        feature = "cloudfront"
    ))]
    fn every_driver_and_middleware_is_registered() {
        assert_eq!(
            super::driver_names(),
            ["azure", "filesystem", "gcs", "inmemory", "s3", "swift"]
        );
        assert_eq!(
            super::middleware_names(),
            ["cloudfront", "faults", "latency", "redirect", "rewrite"]
        );
    }
}
