//! regstore-core: the storage-driver contract and what every driver shares.
//!
//! - [`StorageDriver`] / [`FileWriter`]: what a driver crate implements.
//! - [`Driver`]: the wrapper every constructed driver runs in (validation,
//!   error naming, tracing, metrics, concurrency limit); what callers hold.
//! - [`Middleware`]: what a storage middleware implements (pass-through
//!   by default).
//! - [`StoragePath`]: validated paths, with the walk order as `Ord`.
//! - [`registry`]: drivers and middleware registered, then built by name
//!   from [`RawParams`]; [`StorageSpec`]: a driver with its middleware, as
//!   configs and command lines name them.
//! - [`Error`]: the one error type; every value names its driver.
//! - [`retry`]: the backoff (with jitter, honouring `Retry-After`) of the
//!   drivers that send HTTP requests themselves.

#![warn(missing_docs)]

mod base;
mod driver;
mod error;
mod metrics;
mod middleware;
pub mod params;
mod path;
pub mod registry;
pub mod retry;
mod spec;
mod stamped;
mod walk;

pub use base::{Driver, Writer};
pub use driver::{
    ByteStream, Capabilities, DirStamp, FileInfo, FileWriter, RedirectMethod, RedirectRequest,
    StorageDriver, WalkControl, WalkVisitor,
};
pub use error::{BoxError, DriverName, Error, ErrorKind, Result, causes};
pub use metrics::{LATENCY_BUCKETS, Metrics, Op, OpStats, RequestCounter};
pub use middleware::Middleware;
pub use params::{ParamKind, ParamSpec, Params, RawParams};
pub use path::{StoragePath, check_segment};
pub use registry::{
    BuildFuture, DriverFactory, MiddlewareFactory, create, register_driver, register_middleware,
    wrap,
};
pub use spec::StorageSpec;
pub use stamped::StampedLists;
pub use walk::{Children, Listed, ReadDirFuture, walk_by_listing, walk_listing};

pub use async_trait::async_trait;
pub use bytes::Bytes;
