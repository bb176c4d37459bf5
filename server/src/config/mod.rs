//! Distribution's `config.yml`, read so that an existing distribution config
//! file starts regstore unchanged, with distribution's `REGISTRY_*`
//! environment overrides.
//!
//! ```yaml
//! version: 0.1
//! log:
//!   level: info
//! storage:
//!   filesystem:
//!     rootdirectory: /var/lib/registry
//!   delete:
//!     enabled: true
//! http:
//!   addr: :5000
//!   headers:
//!     X-Content-Type-Options: [nosniff]
//! middleware:
//!   storage:
//!     - name: redirect
//!       options:
//!         baseurl: https://cdn.example.com
//! ```
//!
//! **How a file is read**, in this order:
//! 1. the YAML is parsed, and the `REGISTRY_*` overrides are applied to it
//!    (`env`);
//! 2. the keys regstore does not act on are taken out by the one table in
//!    `keys`: ignored ones with a warning, refused ones (`auth.silly`,
//!    `http.tls.letsencrypt`, `http.prefix`, `http.net` other than `tcp`) stop
//!    startup, rather than run a registry that is not what the file asks for;
//! 3. the one driver key of `storage` is taken out (exactly one key of
//!    `storage` other than its settings `delete`, `redirect`, `maintenance`,
//!    `cache`, `tag` names the driver);
//! 4. the rest is read into one typed struct per section (`storage`,
//!    `http`, `log`, `auth`, `middleware`, `validation`, `proxy`,
//!    `notifications`, `health`, `storage.cache` with `redis`, `catalog`); a key no section knows
//!    gives a warning naming its path, a value of the wrong type an error
//!    naming its path.
//!
//! A new section is a module here with a `Section` struct (serde) and its
//! `resolve` into the public settings; a key leaves `keys`'s table when a
//! section starts using it.
//!
//! `version` must be `0.1` (distribution's only version); a file without it
//! is read as 0.1, with a warning. Durations take Go's syntax (`1h30m`,
//! `500ms`) or whole seconds ([`ConfigDuration`]).

mod access;
mod auth;
mod cache;
mod catalog;
mod env;
mod health;
mod http;
mod keys;
mod log;
mod notifications;
mod proxy;
mod storage;
mod validation;
mod value;

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use self::auth::AuthConfig;
pub use self::cache::{
    BlobCacheConfig, DEFAULT_BLOB_DESCRIPTOR_SIZE,
    DEFAULT_DIAL_TIMEOUT as DEFAULT_REDIS_DIAL_TIMEOUT,
    DEFAULT_READ_TIMEOUT as DEFAULT_REDIS_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT as DEFAULT_REDIS_WRITE_TIMEOUT, RedisConfig,
};
pub use self::catalog::{CatalogConfig, SQL_SCHEMES, redact as redact_url};
pub use self::health::{
    DEFAULT_CHECK_TIMEOUT, DEFAULT_INTERVAL as DEFAULT_HEALTH_INTERVAL, DEFAULT_STORAGE_THRESHOLD,
    FileCheck, HealthConfig, HttpCheck, Periodic, TcpCheck,
};
pub use self::http::{
    CorsConfig, DEFAULT_CORS_ALLOWED_HEADERS, DEFAULT_CORS_EXPOSED_HEADERS, DEFAULT_CORS_METHODS,
    DEFAULT_DRAIN_TIMEOUT, DebugConfig, HttpConfig, HttpLimits, TlsSettings,
};
pub use self::log::{LogConfig, LogFormat};
pub use self::notifications::{
    DEFAULT_BACKOFF as DEFAULT_NOTIFY_BACKOFF, DEFAULT_THRESHOLD as DEFAULT_NOTIFY_THRESHOLD,
    DEFAULT_TIMEOUT as DEFAULT_NOTIFY_TIMEOUT, EndpointConfig, NotificationsConfig,
};
pub use self::proxy::{DEFAULT_TTL as DEFAULT_PROXY_TTL, ProxyConfig};
pub use self::storage::{StorageConfig, UploadPurging};
pub use self::validation::ValidationConfig;
pub use self::value::ConfigDuration;
pub use regstore_core::StorageSpec;

/// The configuration used when no file is given: filesystem under `./data`,
/// port 5000, deletes enabled.
pub const DEFAULT_CONFIG: &str = "\
version: 0.1
storage:
  filesystem:
    rootdirectory: ./data
  delete:
    enabled: true
http:
  addr: :5000
";

/// A config that cannot be used, and what to change.
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
        /// The file (or "built-in defaults").
        path: String,
        /// What to change, naming the key.
        message: String,
    },
}

/// A whole registry configuration: what `regstore serve` runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from (a path, or "built-in defaults").
    pub origin: String,
    /// `storage` and `middleware.storage`.
    pub storage: StorageConfig,
    /// `http`.
    pub http: HttpConfig,
    /// `log`.
    pub log: LogConfig,
    /// `auth`.
    pub auth: AuthConfig,
    /// `validation`: the foreign-layer URL rules and reference limit for
    /// pushed manifests.
    pub validation: ValidationConfig,
    /// `proxy`: a pull-through cache of this upstream; `None` for an
    /// ordinary registry.
    pub proxy: Option<ProxyConfig>,
    /// `notifications`: webhooks told of pushes, pulls, mounts and
    /// deletes; no endpoints when the section is absent.
    pub notifications: NotificationsConfig,
    /// `health`: the periodic checks `/debug/health` reports.
    pub health: HealthConfig,
    /// `storage.cache` (with `redis`): the blob-descriptor cache; `None`
    /// without one.
    pub blob_cache: Option<BlobCacheConfig>,
    /// `catalog` (a regstore extension): where `_catalog` reads names from.
    pub catalog: CatalogConfig,
    /// Warnings about keys that are not used, to log once logging is set up.
    pub warnings: Vec<String>,
}

/// The sections regstore reads, as the file spells them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct File {
    version: Option<Value>,
    log: log::Section,
    loglevel: Option<String>,
    storage: storage::Section,
    http: http::Section,
    middleware: storage::Middleware,
    validation: validation::Section,
    auth: auth::Section,
    proxy: Option<proxy::Section>,
    notifications: notifications::Section,
    health: Option<health::Section>,
    redis: cache::RedisSection,
    catalog: Option<catalog::Section>,
}

impl Config {
    /// Loads `path` (or [`DEFAULT_CONFIG`] when `None`) and applies the
    /// `REGISTRY_*` overrides in `env`.
    ///
    /// # Errors
    /// [`ConfigError`] saying what is wrong and what to change.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(p) => {
                let shown = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                (text, shown)
            }
            None => (DEFAULT_CONFIG.to_owned(), "built-in defaults".to_owned()),
        };
        Config::from_yaml(&text, &origin, env)
    }

    /// Parses a config given as YAML text; `origin` names it in messages.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_yaml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let mut doc: Value = serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        if doc.is_null() {
            doc = Value::Object(Map::new());
        }
        if !doc.is_object() {
            return Err(invalid("the config must be a map of sections".into()));
        }
        env::apply(&mut doc, env).map_err(&invalid)?;
        let mut warnings = Vec::new();
        keys::take(&mut doc, &mut warnings).map_err(&invalid)?;
        let driver = storage::take_driver(&mut doc).map_err(&invalid)?;

        let mut unknown = Vec::new();
        let mut note_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
        let mut file: File = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
            &doc,
            &mut note_unknown,
        ))
        .map_err(|e| invalid(format!("{}: {}", e.path(), e.inner())))?;
        warnings.extend(
            unknown
                .into_iter()
                .map(|p| format!("unknown config key `{p}` is ignored")),
        );
        match &file.version {
            None => warnings.push("no `version`: read as version 0.1".into()),
            Some(v) if is_version_01(v) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "version {v}: regstore reads config version 0.1 (distribution's only version)"
                )));
            }
        }
        let blob_cache = cache::resolve(std::mem::take(&mut file.storage.cache), file.redis)
            .map_err(&invalid)?;
        Ok(Config {
            origin: origin.to_owned(),
            storage: file.storage.resolve(driver, file.middleware),
            http: file.http.resolve().map_err(&invalid)?,
            log: file.log.resolve(file.loglevel),
            auth: file.auth.resolve().map_err(&invalid)?,
            validation: file.validation.resolve().map_err(&invalid)?,
            proxy: file.proxy.unwrap_or_default().resolve().map_err(&invalid)?,
            notifications: file.notifications.resolve().map_err(&invalid)?,
            health: file
                .health
                .unwrap_or_default()
                .resolve()
                .map_err(&invalid)?,
            blob_cache,
            catalog: file
                .catalog
                .unwrap_or_default()
                .resolve()
                .map_err(&invalid)?,
            warnings,
        })
    }
}

/// `0.1` as YAML gives it (a number) or as a quoted string.
fn is_version_01(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.1),
        Value::String(s) => s == "0.1",
        _ => false,
    }
}

/// The storage sections (driver and middleware) of the config file at
/// `path`, with the process's `REGISTRY_*` overrides applied.
///
/// # Errors
/// [`ConfigError`] saying what is wrong and where.
pub fn storage_from_file(path: &Path) -> Result<StorageSpec, ConfigError> {
    Ok(Config::load(Some(path), std::env::vars())?.storage.spec)
}

/// The storage sections of a config given as YAML text (no environment
/// overrides); `origin` names it in errors.
///
/// # Errors
/// [`ConfigError`] saying what is wrong.
pub fn storage_from_yaml(text: &str, origin: &str) -> Result<StorageSpec, ConfigError> {
    Ok(Config::from_yaml(text, origin, [])?.storage.spec)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_driver_params_and_middleware() {
        let spec = storage_from_yaml(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n    maxthreads: 30\n  delete:\n    enabled: true\nmiddleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://cdn\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(spec.driver, "filesystem");
        assert_eq!(spec.params["rootdirectory"], serde_json::json!("/x"));
        assert_eq!(spec.params["maxthreads"], serde_json::json!(30));
        assert_eq!(spec.middleware.len(), 1);
        assert_eq!(spec.middleware[0].0, "redirect");
        let spec = storage_from_yaml(
            "storage:\n  inmemory:\nmiddleware:\n  storage:\n    - name: redirect\n      disabled: true\n    - name: latency\n      disabled: false\n",
            "t.yml",
        )
        .unwrap();
        let names: Vec<&str> = spec.middleware.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["latency"], "a disabled entry is not used");
    }

    #[test]
    fn a_driver_without_parameters_may_be_empty() {
        let spec = storage_from_yaml("storage:\n  inmemory:\n", "t.yml").unwrap();
        assert_eq!(spec.driver, "inmemory");
        assert!(spec.params.is_empty());
    }

    #[test]
    fn unusable_configs_say_what_to_change() {
        let e = storage_from_yaml("storage:\n  delete:\n    enabled: true\n", "t.yml").unwrap_err();
        assert!(e.to_string().contains("names no driver"), "{e}");
        let e = storage_from_yaml("storage:\n  inmemory:\n  filesystem:\n", "t.yml").unwrap_err();
        assert!(
            e.to_string()
                .contains("names 2 drivers (filesystem, inmemory)")
                || e.to_string()
                    .contains("names 2 drivers (inmemory, filesystem)"),
            "{e}"
        );
        let e = storage_from_yaml("storage: [a, b\n", "t.yml").unwrap_err();
        assert!(
            e.to_string().starts_with("config t.yml is not valid YAML"),
            "{e}"
        );
        let e = storage_from_yaml("log:\n  level: info\n", "t.yml").unwrap_err();
        assert!(e.to_string().contains("no `storage` section"), "{e}");
        let e = Config::from_yaml(
            "storage:\n  inmemory:\n  delete:\n    enabled: sometimes\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("storage.delete.enabled: must be true or false"),
            "{e}"
        );
        let e = Config::from_yaml(
            "storage:\n  inmemory:\nauth:\n  token:\n    realm: x\n  htpasswd:\n    realm: x\n    path: /p\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("auth names two schemes"), "{e}");
        let e = Config::from_yaml(
            "storage:\n  inmemory:\nauth:\n  htpasswd:\n    path: /p\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("auth.htpasswd: missing field `realm`"),
            "{e}"
        );
    }

    #[test]
    fn defaults_serve_the_filesystem_under_data_on_5000_with_deletes() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.storage.spec.driver, "filesystem");
        assert_eq!(
            c.storage.spec.params["rootdirectory"],
            serde_json::json!("./data")
        );
        assert_eq!(c.http.addr, ":5000");
        assert!(c.storage.delete_enabled);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn environment_overrides_keys_like_distribution() {
        let c = Config::load(
            None,
            env(&[
                ("REGISTRY_STORAGE_INMEMORY_FOO", "1"),
                ("REGISTRY_STORAGE", "inmemory"),
                ("REGISTRY_HTTP_ADDR", ":5001"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
                ("REGISTRY_HTTP_HEADERS_X-TEST", "[a, b]"),
                ("REGISTRY_CONFIGURATION_PATH", "/ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.storage.spec.driver, "inmemory");
        assert_eq!(c.storage.spec.params["foo"], serde_json::json!(1));
        assert_eq!(c.http.addr, ":5001");
        assert!(!c.storage.delete_enabled);
        assert_eq!(
            c.http.headers,
            vec![
                ("x-test".to_owned(), "a".to_owned()),
                ("x-test".to_owned(), "b".to_owned())
            ]
        );
        let c = Config::from_yaml(
            "storage:\n  filesystem:\n    rootDirectory: /a\n",
            "t.yml",
            env(&[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/x")]),
        )
        .unwrap();
        assert_eq!(
            c.storage.spec.params["rootDirectory"],
            serde_json::json!("/x")
        );
    }

    #[test]
    fn upload_purging_is_on_by_default_and_configurable() {
        let c = Config::from_yaml("storage:\n  inmemory:\n", "t.yml", []).unwrap();
        assert_eq!(c.storage.upload_purging, Some(UploadPurging::default()));
        let c = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 2h\n      interval: 10m\n      dryrun: true\n",
            "t.yml",
            [],
        )
        .unwrap();
        assert_eq!(
            c.storage.upload_purging,
            Some(UploadPurging {
                age: Duration::from_secs(7200),
                interval: Duration::from_secs(600),
                dry_run: true
            })
        );
        let c = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    uploadpurging:\n      enabled: false\n",
            "t.yml",
            [],
        )
        .unwrap();
        assert_eq!(c.storage.upload_purging, None);
        let e = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    uploadpurging:\n      age: soon\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("uploadpurging.age"), "{e}");
    }

    #[test]
    fn online_gc_is_off_by_default_and_configurable() {
        let c = Config::from_yaml("storage:\n  inmemory:\n", "t.yml", []).unwrap();
        assert!(c.storage.gc.is_none());
        let c = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    gc:\n      enabled: true\n",
            "t.yml",
            [],
        )
        .unwrap();
        let gc = c.storage.gc.expect("enabled");
        assert_eq!(
            (gc.interval, gc.options.grace),
            (storage::GC_INTERVAL, storage::GC_GRACE)
        );
        assert!(!gc.options.delete_untagged && !gc.options.dry_run);
        let c = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    gc:\n      enabled: true\n      interval: 10m\n      graceperiod: 30m\n      deleteuntagged: true\n      dryrun: true\n      concurrency: 4\n",
            "t.yml",
            [(
                "REGISTRY_STORAGE_MAINTENANCE_GC_CONCURRENCY".to_owned(),
                "8".to_owned(),
            )],
        )
        .unwrap();
        let gc = c.storage.gc.expect("enabled");
        assert_eq!(gc.interval, Duration::from_secs(600));
        assert_eq!(gc.options.grace, Duration::from_secs(1800));
        assert!(gc.options.delete_untagged && gc.options.dry_run);
        assert_eq!(
            gc.options.concurrency, 8,
            "the environment overrides the file"
        );
        let e = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    gc:\n      graceperiod: -1\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("gc.graceperiod"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_in_warnings() {
        let c = Config::from_yaml(
            "storage:\n  inmemory:\nhttp:\n  addr: :1\n  adr: :2\nfrobnicate: 1\nreporting: {}\nredis:\n  adr: x\n",
            "t.yml",
            [],
        )
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("`http.adr`"), "{w}");
        assert!(w.contains("`frobnicate`"), "{w}");
        assert!(w.contains("`reporting` is not used"), "{w}");
        assert!(w.contains("`redis.adr`"), "{w}");
    }

    #[test]
    fn version_must_be_0_1() {
        for ok in ["version: 0.1\n", "version: '0.1'\n"] {
            let c =
                Config::from_yaml(&format!("{ok}storage:\n  inmemory:\n"), "t.yml", []).unwrap();
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        }
        let c = Config::from_yaml("storage:\n  inmemory:\n", "t.yml", []).unwrap();
        assert_eq!(c.warnings, vec!["no `version`: read as version 0.1"]);
        let e =
            Config::from_yaml("version: 0.2\nstorage:\n  inmemory:\n", "t.yml", []).unwrap_err();
        assert!(
            e.to_string()
                .contains("version 0.2: regstore reads config version 0.1"),
            "{e}"
        );
    }

    #[test]
    fn durations_are_go_syntax_or_whole_seconds_never_negative() {
        let read = |v: &str| {
            Config::from_yaml(
                &format!("version: 0.1\nstorage:\n  inmemory:\nhttp:\n  draintimeout: {v}\n"),
                "t.yml",
                [],
            )
            .map(|c| c.http.drain_timeout)
            .map_err(|e| e.to_string())
        };
        assert_eq!(read("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(read("45"), Ok(Duration::from_secs(45)));
        assert_eq!(read("~"), Ok(DEFAULT_DRAIN_TIMEOUT));
        let e = read("-5").unwrap_err();
        assert!(e.contains("http.draintimeout: must not be negative"), "{e}");
        let e = read("2.5").unwrap_err();
        assert!(
            e.contains("http.draintimeout: must be a whole number"),
            "{e}"
        );
    }

    #[test]
    fn log_section_formatter_fields_and_access_log() {
        let c = Config::from_yaml("version: 0.1\nstorage:\n  inmemory:\n", "t.yml", []).unwrap();
        assert_eq!(
            c.log,
            LogConfig {
                access_log: true,
                ..LogConfig::default()
            }
        );
        let c = Config::from_yaml(
            "version: 0.1\nloglevel: debug\nstorage:\n  inmemory:\nlog:\n  formatter: logstash\n  fields:\n    service: registry\n  accesslog:\n    disabled: true\n",
            "t.yml",
            [],
        )
        .unwrap();
        assert_eq!(c.log.level.as_deref(), Some("debug"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.fields["service"], serde_json::json!("registry"));
        assert!(!c.log.access_log);
        let e = Config::from_yaml(
            "version: 0.1\nstorage:\n  inmemory:\nlog:\n  formatter: xml\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("log.formatter: unknown variant `xml`"),
            "{e}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_path() {
        let e = Config::from_yaml(
            "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  maxconnections: many\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("config t.yml: http.maxconnections: invalid type"),
            "{e}"
        );
        let e = Config::from_yaml(
            "version: 0.1\nstorage:\n  inmemory:\nmiddleware:\n  storage:\n    - options: {}\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("middleware.storage[0]: missing field `name`"),
            "{e}"
        );
    }
}
