//! The factory registry: drivers and middleware by name.
//!
//! Registration is explicit. A driver crate declares its factory once, as
//! a static, and offers a `register` function:
//!
//! ```ignore
//! pub static FACTORY: regstore_core::DriverFactory = regstore_core::DriverFactory {
//!     name: "inmemory",
//!     description: "Everything in process memory; lost on exit.",
//!     params: &[],
//!     build: build_inmemory,
//! };
//!
//! /// Makes `inmemory` known to [`regstore_core::create`].
//! pub fn register() {
//!     regstore_core::register_driver(&FACTORY);
//! }
//! ```
//!
//! A binary calls the `register` of every driver it wants
//! (`regstore_builtin::register_all()` for the built-in ones) before
//! [`create`] and [`wrap`] build and wrap by name. Calling a function of the
//! crate is what links it in, so a registered driver is always there — no
//! linker tricks, no driver that silently goes missing. Middleware
//! registers a [`MiddlewareFactory`] with [`register_middleware`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

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

static DRIVERS: Mutex<Vec<&'static DriverFactory>> = Mutex::new(Vec::new());
static MIDDLEWARES: Mutex<Vec<&'static MiddlewareFactory>> = Mutex::new(Vec::new());

/// Adds `factory` to `list`, replacing one of the same name (the last
/// registration wins, so a binary may override a built-in driver).
fn register<F>(list: &Mutex<Vec<&'static F>>, factory: &'static F, name: fn(&F) -> &'static str) {
    // Every critical section leaves the list consistent.
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|f| name(f) != name(factory));
    list.push(factory);
}

fn sorted<F>(list: &Mutex<Vec<&'static F>>, name: fn(&F) -> &'static str) -> Vec<&'static F> {
    let mut v = list.lock().unwrap_or_else(|e| e.into_inner()).clone();
    v.sort_by_key(|f| name(f));
    v
}

/// Makes `factory` buildable by its name with [`create`]. Registering the
/// same name again replaces the earlier factory. Idempotent, cheap, safe
/// from any thread.
pub fn register_driver(factory: &'static DriverFactory) {
    register(&DRIVERS, factory, |f| f.name);
}

/// Makes `factory` usable by its name with [`wrap`]; as
/// [`register_driver`].
pub fn register_middleware(factory: &'static MiddlewareFactory) {
    register(&MIDDLEWARES, factory, |f| f.name);
}

/// Every registered driver, sorted by name.
pub fn drivers() -> Vec<&'static DriverFactory> {
    sorted(&DRIVERS, |f| f.name)
}

/// Every registered middleware, sorted by name.
pub fn middlewares() -> Vec<&'static MiddlewareFactory> {
    sorted(&MIDDLEWARES, |f| f.name)
}

fn unknown(kind: &str, name: &str, known: &[&'static str]) -> Error {
    let hint = nearest(name, known.iter().copied())
        .map(|n| format!("did you mean {n:?}? "))
        .unwrap_or_default();
    let known = if known.is_empty() {
        "none are registered in this binary".to_owned()
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
