//! The `storage` and `middleware.storage` sections of a distribution-style
//! `config.yml`, enough to build the configured driver.
//!
//! ```yaml
//! storage:
//!   filesystem:
//!     rootdirectory: /var/lib/registry
//!   delete:
//!     enabled: true
//! middleware:
//!   storage:
//!     - name: redirect
//!       options:
//!         baseurl: https://cdn.example.com
//! ```
//!
//! Exactly one key of `storage` other than distribution's settings keys
//! (`delete`, `redirect`, `maintenance`, `cache`, `tag`) names the driver.

use std::path::Path;

use regstore_core::{Driver, RawParams};

/// Keys of `storage` that are settings, not drivers.
const SETTINGS_KEYS: &[&str] = &["delete", "redirect", "maintenance", "cache", "tag"];

/// A config file that cannot be used, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("config {path} is not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The content is valid YAML but not a usable config.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What to change.
        message: String,
    },
}

/// The storage driver and middleware a config asks for.
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
    /// Reads the storage sections of the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] saying what is wrong and where.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_yaml(&text, &shown)
    }

    /// Parses the storage sections of a config given as YAML text; `origin`
    /// names it in errors.
    ///
    /// # Errors
    /// [`ConfigError`] saying what is wrong.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let doc: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let storage = doc
            .get("storage")
            .and_then(|s| s.as_object())
            .ok_or_else(|| invalid("no `storage` section: add e.g. `storage: {filesystem: {rootdirectory: ./data}}`".into()))?;
        let drivers: Vec<(&String, &serde_json::Value)> = storage
            .iter()
            .filter(|(k, _)| !SETTINGS_KEYS.contains(&k.as_str()))
            .collect();
        let (driver, params) = match drivers.as_slice() {
            [one] => *one,
            [] => {
                return Err(invalid(
                    "`storage` names no driver: add one key such as `filesystem:` or `s3:`".into(),
                ));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|(k, _)| k.as_str()).collect();
                return Err(invalid(format!(
                    "`storage` names {} drivers ({}): keep exactly one",
                    names.len(),
                    names.join(", ")
                )));
            }
        };
        let params = as_params(params).map_err(|m| invalid(format!("storage.{driver}: {m}")))?;

        let mut middleware = Vec::new();
        if let Some(list) = doc.get("middleware").and_then(|m| m.get("storage")) {
            let list = list.as_array().ok_or_else(|| {
                invalid("middleware.storage must be a list of {name, options}".into())
            })?;
            for (i, entry) in list.iter().enumerate() {
                let name = entry
                    .get("name")
                    .and_then(|n| n.as_str())
                    .ok_or_else(|| invalid(format!("middleware.storage[{i}] has no `name`")))?;
                let options = entry.get("options").unwrap_or(&serde_json::Value::Null);
                let options = as_params(options).map_err(|m| {
                    invalid(format!("middleware.storage[{i}] ({name}) options: {m}"))
                })?;
                middleware.push((name.to_owned(), options));
            }
        }
        Ok(StorageSpec {
            driver: driver.clone(),
            params,
            middleware,
        })
    }

    /// Builds the driver and applies the middleware in order.
    ///
    /// # Errors
    /// What [`regstore_core::create`] and [`regstore_core::wrap`] return.
    pub async fn build(&self) -> regstore_core::Result<Driver> {
        regstore_drivers::link();
        let mut driver = regstore_core::create(&self.driver, &self.params).await?;
        for (name, options) in &self.middleware {
            driver = regstore_core::wrap(driver, name, options).await?;
        }
        Ok(driver)
    }
}

fn as_params(v: &serde_json::Value) -> Result<RawParams, String> {
    match v {
        serde_json::Value::Null => Ok(RawParams::new()),
        serde_json::Value::Object(m) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        other => Err(format!("expected a map of parameters, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_driver_params_and_middleware() {
        let spec = StorageSpec::from_yaml(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n    maxthreads: 30\n  delete:\n    enabled: true\nmiddleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://cdn\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(spec.driver, "filesystem");
        assert_eq!(spec.params["rootdirectory"], serde_json::json!("/x"));
        assert_eq!(spec.params["maxthreads"], serde_json::json!(30));
        assert_eq!(spec.middleware.len(), 1);
        assert_eq!(spec.middleware[0].0, "redirect");
    }

    #[test]
    fn a_driver_without_parameters_may_be_empty() {
        let spec = StorageSpec::from_yaml("storage:\n  inmemory:\n", "t.yml").unwrap();
        assert_eq!(spec.driver, "inmemory");
        assert!(spec.params.is_empty());
    }

    #[test]
    fn unusable_configs_say_what_to_change() {
        let e = StorageSpec::from_yaml("storage:\n  delete:\n    enabled: true\n", "t.yml")
            .unwrap_err();
        assert!(e.to_string().contains("names no driver"), "{e}");
        let e =
            StorageSpec::from_yaml("storage:\n  inmemory:\n  filesystem:\n", "t.yml").unwrap_err();
        assert!(
            e.to_string()
                .contains("names 2 drivers (filesystem, inmemory)")
                || e.to_string()
                    .contains("names 2 drivers (inmemory, filesystem)"),
            "{e}"
        );
        let e = StorageSpec::from_yaml("storage: [a, b\n", "t.yml").unwrap_err();
        assert!(
            e.to_string().starts_with("config t.yml is not valid YAML"),
            "{e}"
        );
        let e = StorageSpec::from_yaml("log:\n  level: info\n", "t.yml").unwrap_err();
        assert!(e.to_string().contains("no `storage` section"), "{e}");
    }
}
