//! regstore-server: the registry server as a library, on any storage
//! driver. The `regstore` binary (`regstore-cli`) runs it with
//! `regstore serve`; nothing here is test or benchmark code.
//!
//! - [`registry`]: the registry storage service (blobs, uploads, manifests,
//!   tags, catalog, referrers) on any driver, in distribution's layout.
//! - [`http`]: the OCI Distribution v1.1 HTTP API on it (axum).
//! - [`serve`]: config → driver → listener, graceful shutdown.
//! - [`config`]: distribution's `config.yml` and `REGISTRY_*` overrides.
//! - [`health`]: the `health` section's periodic checks, reported by
//!   `/debug/health`; a failing one takes the `/v2/` API out of service.
//! - [`gc`]: garbage collection, offline and online.
//! - [`metrics`]: Prometheus metrics (`http.debug.prometheus`).
//! - [`check`]: the storage check (`regstore check`): blobs re-hashed,
//!   links and manifests verified, dangling links optionally removed.
//! - [`proxy`]: the pull-through cache (`proxy:`): [`proxy::upstream`]
//!   (the upstream registry's client: token and Basic auth, bounded reads),
//!   [`proxy::fetch`] (single-flight blob fetches that store while they
//!   stream) and [`proxy::expiry`] (`ttl`).
//! - [`notify`]: notifications (`notifications:`): events POSTed to
//!   webhook endpoints, each with its own bounded queue and sender.
//! - [`catalog`]: the catalog index (`catalog:`): file or SQL, so that
//!   `/v2/_catalog` and its search do not walk the storage.

pub mod auth;
pub mod cache;
pub mod catalog;
pub mod check;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod health;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod registry;
pub mod serve;
