//! A backend as a config file or a command line names it.

use crate::base::Driver;
use crate::error::Result;
use crate::params::RawParams;

/// A storage driver by name with its parameters, and the middleware to wrap
/// it in — what `storage:` and `middleware: storage:` of a config say, and
/// what `--driver`/`--param` give. `regstore serve`, `conformance` and
/// `bench` all build their backend from one.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageSpec {
    /// Driver name (`filesystem`, `s3`, …).
    pub driver: String,
    /// Its parameters as written.
    pub params: RawParams,
    /// Middleware to apply, innermost first: name and options.
    pub middleware: Vec<(String, RawParams)>,
}

impl StorageSpec {
    /// The driver `driver` with `params` and no middleware.
    pub fn new(driver: impl Into<String>, params: RawParams) -> Self {
        StorageSpec {
            driver: driver.into(),
            params,
            middleware: Vec::new(),
        }
    }

    /// Builds the driver and wraps it in each middleware, in order. The
    /// driver and middleware must be registered
    /// ([`crate::register_driver`]; `regstore_builtin::register_all` for
    /// the built-in ones).
    ///
    /// # Errors
    /// What [`crate::create`] and [`crate::wrap`] return: an unknown name
    /// (listing the registered ones), an unknown or mistyped parameter, the
    /// driver's own failure.
    pub async fn build(&self) -> Result<Driver> {
        let mut driver = crate::create(&self.driver, &self.params).await?;
        for (name, options) in &self.middleware {
            driver = crate::wrap(driver, name, options).await?;
        }
        Ok(driver)
    }
}
