//! regstore-testenv: what the tests need around the conformance suite, and
//! nothing a product binary links: the loopback emulators' parameters
//! ([`backend`]), private emulator instances a test may kill and restart
//! ([`instance`]), the skip-or-fail rule for unreachable backends, a
//! loopback HTTP client, and the `openssl` shell-outs that make keys and
//! certificates ([`openssl`]).
//!
//! Environment:
//! - `REGSTORE_REQUIRE_BACKENDS=1` (CI): a test whose backend, program or
//!   server is missing fails instead of being skipped;
//! - `REGSTORE_<DRIVER>_ENDPOINT` and the like point at other servers (see
//!   [`backend::emulator_params`]).

#![warn(missing_docs)]

pub mod backend;
pub mod instance;
pub mod openssl;

/// True when the environment variable is set to `1`, `true` or `yes`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}
