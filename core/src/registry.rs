//! The factory registry: drivers and middleware by name.
//!
//! A driver crate registers itself at compile time:
//!
//! ```ignore
//! inventory::submit! {
//!     regstore_core::DriverFactory {
//!         name: "inmemory",
//!         description: "Everything in process memory; lost on exit.",
//!         params: &[],
//!         build: build_inmemory,
//!     }
//! }
//! ```
//!
//! and exists in a binary once the crate is linked (`regstore-drivers` links
//! every driver in). Middleware registers a [`MiddlewareFactory`] the same
//! way; [`create`] and [`wrap`] build and wrap by name.

use std::future::Future;
use std::pin::Pin;

use crate::base::Driver;
use crate::driver::StorageDriver;
use crate::error::{Error, Result};
use crate::params::{ParamSpec, Params, RawParams, nearest, resolve};

/// What a factory's `build` returns.
pub type BuildFuture = Pin<Box<dyn Future<Output = Result<Box<dyn StorageDriver>>> + Send>>;

/// A storage driver that can be built by name.
#[derive(Debug)]
pub struct DriverFactory {
    /// Name used in config (`storage: <name>:`) and on the command line.
    pub name: &'static str,
    /// One line shown by `regstore drivers`.
    pub description: &'static str,
    /// Every parameter the driver accepts.
    pub params: &'static [ParamSpec],
    /// Builds the driver from checked parameters.
    pub build: fn(Params) -> BuildFuture,
}

/// A storage middleware: wraps any driver (`middleware: storage:` in config).
#[derive(Debug)]
pub struct MiddlewareFactory {
    /// Name used in config.
    pub name: &'static str,
    /// One line shown by `regstore drivers`.
    pub description: &'static str,
    /// Every option the middleware accepts.
    pub params: &'static [ParamSpec],
    /// Wraps `inner` with checked options.
    pub build: fn(Driver, Params) -> BuildFuture,
}

inventory::collect!(DriverFactory);
inventory::collect!(MiddlewareFactory);

/// Every registered driver, sorted by name.
pub fn drivers() -> Vec<&'static DriverFactory> {
    let mut v: Vec<_> = inventory::iter::<DriverFactory>.into_iter().collect();
    v.sort_by_key(|f| f.name);
    v
}

/// Every registered middleware, sorted by name.
pub fn middlewares() -> Vec<&'static MiddlewareFactory> {
    let mut v: Vec<_> = inventory::iter::<MiddlewareFactory>.into_iter().collect();
    v.sort_by_key(|f| f.name);
    v
}

fn unknown(kind: &str, name: &str, known: &[&'static str]) -> Error {
    let hint = nearest(name, known.iter().copied())
        .map(|n| format!("did you mean {n:?}? "))
        .unwrap_or_default();
    let known = if known.is_empty() {
        "none are linked into this binary".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    };
    Error::config(format!("unknown storage {kind} {name:?} ({hint}{known})")).named("regstore")
}

/// Builds the driver registered as `name` from `raw` parameters, in its
/// wrapper.
///
/// # Errors
/// `Config` for an unknown driver (listing the known ones), an unknown or
/// mistyped parameter; whatever the driver's constructor returns.
pub async fn create(name: &str, raw: &RawParams) -> Result<Driver> {
    let factory = lookup("driver", name, drivers(), |f| f.name)?;
    let params = resolve(factory.name, factory.params, raw)?;
    let backend = (factory.build)(params)
        .await
        .map_err(|e| e.named(factory.name))?;
    Ok(Driver::from_box(backend))
}

/// The factory called `name` among `all`, or an error listing the known ones.
fn lookup<F>(
    kind: &str,
    name: &str,
    all: Vec<&'static F>,
    name_of: fn(&F) -> &'static str,
) -> Result<&'static F> {
    match all.iter().find(|f| name_of(f) == name) {
        Some(f) => Ok(*f),
        None => Err(unknown(
            kind,
            name,
            &all.iter().map(|f| name_of(f)).collect::<Vec<_>>(),
        )),
    }
}

/// Wraps `inner` in the middleware registered as `name`.
///
/// # Errors
/// As [`create`], for middleware.
pub async fn wrap(inner: Driver, name: &str, raw: &RawParams) -> Result<Driver> {
    let factory = lookup("middleware", name, middlewares(), |f| f.name)?;
    let params = resolve(factory.name, factory.params, raw)?;
    let backend = (factory.build)(inner, params)
        .await
        .map_err(|e| e.named(factory.name))?;
    Ok(Driver::from_box(backend))
}
