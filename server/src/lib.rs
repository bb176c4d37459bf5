//! regstore-server: the `regstore` binary's library.
//!
//! - [`registry`]: the registry storage service (blobs, uploads, manifests,
//!   tags, catalog, referrers) on any driver, in distribution's layout.
//! - [`http`]: the OCI Distribution v1.1 HTTP API on it (axum).
//! - [`serve`]: `regstore serve`: config → driver → listener, graceful shutdown.
//! - [`config`]: distribution's `config.yml` and `REGISTRY_*` overrides.
//! - [`cli`]: the command line.
//! - [`bench`]: `regstore bench`, the driver benchmark set across backends.

pub mod bench;
pub mod cli;
pub mod config;
pub mod http;
pub mod registry;
pub mod serve;
