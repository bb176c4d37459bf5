//! regstore-driver-swift: the `swift` storage driver for OpenStack Swift,
//! speaking Swift's REST API directly.
//!
//! Everything a registry needs from a driver beyond Swift's object API —
//! keys under a prefix, directories from delimiter listings, walks from
//! flat listings, writers resumable across processes — is
//! `regstore-objectstore`'s [`ObjectDriver`], on the container seen as an
//! `object_store` store ([`store::SwiftStore`]). What is Swift's own:
//!
//! - **Auth**: TempAuth / v1.0 (`authurl` ending in `/auth/v1.0`, or
//!   `authversion: 1`) and Keystone identity v3 (`authversion: 3`, or an
//!   `authurl` ending in `/v3`) with a password (user by name in
//!   `domain`/`domainid`, or by id) or an application credential, scoped to
//!   a project (`tenant`/`tenantid`, in `tenantdomain`/`tenantdomainid`,
//!   default: the user's domain) or a trust (`trustid`); the object-store
//!   endpoint is taken from the catalog by `region` and `endpointtype`.
//!   The token is renewed two minutes before it expires and after a 401.
//! - **Writers**: full chunks (`chunksize`) are segments under
//!   `<prefix>/~segments/<upload id>/`, which no listing of the registry
//!   tree shows (`~` is not a storage-path character); `commit` PUTs a
//!   Static Large Object manifest naming them at the final name. Past the
//!   cluster's `max_manifest_segments` (1,000 by default: 20 GB at the
//!   default chunk size) groups of segments become manifests themselves
//!   (nested SLOs), so object size has no practical limit. Objects
//!   smaller than a chunk are single PUTs. `cancel`, and `delete` of a
//!   directory holding unfinished writers, delete the segments, and so do
//!   a commit or a rename that replaces a large object (one HEAD more per
//!   commit of a large object and per rename).
//! - **Delete** of a directory: plain objects through the bulk middleware
//!   when `/info` advertises it (else one by one), large objects with
//!   `?multipart-manifest=delete`, so their segments go too.
//! - **Rename** is a server-side `COPY` with `?multipart-manifest=get`: a
//!   large object's manifest is copied (the segments stay where they are),
//!   then the old name is deleted without its segments.
//! - **Redirects** are TempURLs (HMAC-SHA256 over method, expiry and path)
//!   when `secretkey` is given. The key must be set on the account
//!   (`X-Account-Meta-Temp-URL-Key`) or, with `tempurlcontainerkey: true`,
//!   on the container; the driver sets it itself only with
//!   `settempurlkey: true`, and never touches account metadata otherwise.
//! - **Eventual consistency**: a manifest PUT that Swift refuses because a
//!   segment is not visible yet is retried (5 times over ~3 s); a
//!   rename whose source is not found yet is retried 3 times over ~0.7 s;
//!   listings, walks and directory deletes include the names this driver
//!   wrote in the last `consistencywindow` that the container listing does
//!   not show yet ([`recent`]).
//!
//! # Parameters
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `authurl` | required | TempAuth URL (`…/auth/v1.0`) or Keystone v3 URL (`…/v3`) |
//! | `username`, `password` | | user (`account:user` for TempAuth) and password / key |
//! | `authversion` | from `authurl` | `1` or `3` |
//! | `userid` | | Keystone user id instead of a name |
//! | `domain`, `domainid` | | the user's Keystone domain |
//! | `tenant`, `tenantid` | | project to scope to |
//! | `tenantdomain`, `tenantdomainid` | the user's domain | the project's domain |
//! | `trustid` | | Keystone trust to scope to |
//! | `applicationcredentialid`, `applicationcredentialname`, `applicationcredentialsecret` | | Keystone application credential (a name needs the user) |
//! | `region` | any | region of the object-store endpoint |
//! | `endpointtype` | `public` | `public`, `internal` or `admin` |
//! | `container` | required | container, created if missing |
//! | `prefix` | `""` | name prefix of everything stored (distribution's; `rootdirectory` is an alias) |
//! | `chunksize` | `20MiB` | segment size of large objects (≥ 1 MiB) |
//! | `consistencywindow` | `15s` | how long the driver merges its own writes into listings that lag them (see [`recent`]) |
//! | `listpagesize` | the cluster's `container_listing_limit` | names per listing request (listings page with `marker`) |
//! | `insecureskipverify` | `false` | accept any TLS certificate |
//! | `secretkey` | | TempURL key; enables redirects |
//! | `tempurlcontainerkey` | `false` | `secretkey` is the container's key |
//! | `settempurlkey` | `false` | store `secretkey` on the account (or container) at startup |
//! | `connecttimeout` | `10s` | longest wait for a connection to the backend, per attempt |
//! | `timeout` | `60s` | longest wait for a byte of an answer, per attempt; a failed attempt is retried 4 times, so a hung backend fails a call within 5 × `timeout` |
//!
//! Tested against a single-node Swift 2.30 (`scripts/backends.sh start
//! swift`, TempAuth) on every CI run: the whole conformance suite, with
//! TempURL redirects fetched (Swift verifies their signatures).

#![warn(missing_docs)]

pub mod auth;
mod backend;
mod builder;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod recent;
mod slo;
pub mod store;

pub use backend::{SwiftBackend, tempurl_query};
pub use builder::{FACTORY, credentials, register, swift_driver};
use regstore_objectstore::ObjectDriver;

/// Registry name of the driver.
pub const NAME: &str = "swift";

/// The `swift` driver: [`ObjectDriver`] on [`SwiftBackend`].
pub type SwiftDriver = ObjectDriver<SwiftBackend>;
