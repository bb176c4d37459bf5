//! regstore-middleware-builtin: the built-in storage middleware, configured
//! under `middleware: storage:` as in distribution and applied in order
//! (`cloudfront`, which needs RSA signing, is its own crate).
//!
//! - [`redirect`]: blob downloads go to `baseurl/<path>` (a CDN or mirror
//!   of the storage).
//! - [`rewrite`]: changes the scheme, host or path prefix of the redirect
//!   URLs the inner driver gives (e.g. presigned URLs through a proxy).
//! - [`latency`]: adds a fixed delay to every backend request, so
//!   benchmarks on loopback emulators show what request counts cost.
//! - [`faults`]: injects errors, timeouts, latency, short reads and writer
//!   failures, for tests and for rehearsing outages.

#![warn(missing_docs)]

pub mod faults;
pub mod latency;
pub mod redirect;
pub mod rewrite;

/// Registers `redirect`, `rewrite`, `latency` and `faults` (see
/// `regstore_core::register_middleware`). Idempotent.
pub fn register() {
    redirect::register();
    rewrite::register();
    latency::register();
    faults::register();
}
