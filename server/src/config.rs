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
//! Exactly one key of `storage` other than distribution's settings keys
//! (`delete`, `redirect`, `maintenance`, `cache`, `tag`) names the driver.
//!
//! **Environment overrides.** `REGISTRY_<SECTION>_<KEY>…=value` sets the
//! key at that path (matched case-insensitively), the value read as a YAML
//! scalar (`true`, `5000`, `[a, b]`): `REGISTRY_HTTP_ADDR=:5001`,
//! `REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x`,
//! `REGISTRY_STORAGE_DELETE_ENABLED=false`. `REGISTRY_STORAGE=inmemory`
//! switches the driver (the `delete`/`redirect`/… settings stay), and its
//! parameters come from `REGISTRY_STORAGE_INMEMORY_*`.
//!
//! **Keys regstore does not act on** produce a warning naming them; keys
//! that would change security or meaning if ignored (`auth`, `proxy`,
//! `http.tls.clientcas`, `http.prefix`, `http.net` other than `tcp`) stop startup with a
//! message, rather than running a registry that is not what the file asks for.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use regstore_core::RawParams;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Keys of `storage` that are settings, not drivers.
const SETTINGS_KEYS: &[&str] = &["delete", "redirect", "maintenance", "cache", "tag"];

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

/// Environment variables that name the config file, not a key in it.
const NOT_OVERRIDES: &[&str] = &["REGISTRY_CONFIGURATION_PATH"];

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
        /// What to change.
        message: String,
    },
}

pub use regstore_core::StorageSpec;

/// A whole registry configuration: what `regstore serve` runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it came from (a path, or "built-in defaults").
    pub origin: String,
    /// Driver and middleware.
    pub storage: StorageSpec,
    /// `storage.delete.enabled`.
    pub delete_enabled: bool,
    /// `storage.redirect.disable`.
    pub redirect_disabled: bool,
    /// `storage.maintenance.readonly.enabled`: refuse every write.
    pub read_only: bool,
    /// `storage.maintenance.uploadpurging`; `None` when disabled.
    pub upload_purging: Option<UploadPurging>,
    /// `http.addr`, as written (`:5000`, `127.0.0.1:5000`).
    pub addr: String,
    /// `http.tls`: serve HTTPS.
    pub tls: Option<TlsSettings>,
    /// `http.host`: base URL for absolute `Location` headers.
    pub host: Option<String>,
    /// `http.relativeurls`.
    pub relative_urls: bool,
    /// `http.headers`: sent on every response.
    pub headers: Vec<(String, String)>,
    /// `http.draintimeout`: how long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// `http.headertimeout`, `http.bodytimeout`, `http.maxconnections`.
    pub limits: HttpLimits,
    /// `http.h2c.enabled`: plain-text connections may speak HTTP/2 (prior
    /// knowledge), besides HTTP/1.1. Off by default, as in distribution.
    pub h2c: bool,
    /// `validation`: the foreign-layer URL rules for manifests.
    pub manifest_urls: crate::registry::ManifestUrls,
    /// `log.level` (or the old top-level `loglevel`).
    pub log_level: Option<String>,
    /// Warnings about keys that are not used, to log once logging is set up.
    pub warnings: Vec<String>,
}

/// `storage.maintenance.uploadpurging`: remove abandoned uploads. On by
/// default, as in distribution: every 24 h, uploads older than 168 h.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    /// Uploads begun longer ago than this are removed.
    pub age: Duration,
    /// How often to look.
    pub interval: Duration,
    /// Only log what would be removed.
    pub dry_run: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dry_run: false,
        }
    }
}

/// What one client may hold of the server (regstore's keys under `http`;
/// distribution has none: it relies on Go's defaults, which allow a client
/// to dribble a request head forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// `http.headertimeout` (default 30s): a request head (line and headers)
    /// must arrive within this time, and a keep-alive connection that sends
    /// no next request for this long is closed.
    pub header_timeout: Duration,
    /// `http.bodytimeout` (default 60s): a request body that sends no byte
    /// for this long is cut off (an upload keeps what arrived, as after a
    /// cut connection).
    pub body_timeout: Duration,
    /// `http.maxconnections` (default 4096): connections served at once;
    /// more wait in the listen backlog until one closes. Keep the process's
    /// file limit (`ulimit -n`) above it: uploads open files too.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// Default for `http.draintimeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    version: Option<Value>,
    log: RawLog,
    loglevel: Option<String>,
    storage: Option<Map<String, Value>>,
    http: RawHttp,
    middleware: Option<Map<String, Value>>,
    auth: Option<Value>,
    proxy: Option<Value>,
    notifications: Option<Value>,
    redis: Option<Value>,
    health: Option<Value>,
    reporting: Option<Value>,
    validation: Option<Value>,
    compatibility: Option<Value>,
    catalog: Option<Value>,
    policy: Option<Value>,
}

/// `validation` (distribution's keys; `enabled` is the old spelling).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawValidation {
    disabled: Option<bool>,
    enabled: Option<bool>,
    manifests: RawValidationManifests,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawValidationManifests {
    urls: RawUrlRules,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawUrlRules {
    allow: Vec<String>,
    deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLog {
    level: Option<String>,
    formatter: Option<String>,
    fields: Option<Map<String, Value>>,
    accesslog: Option<Value>,
    hooks: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHttp {
    addr: Option<String>,
    net: Option<String>,
    prefix: Option<String>,
    host: Option<String>,
    secret: Option<String>,
    relativeurls: Option<bool>,
    draintimeout: Option<Value>,
    headertimeout: Option<Value>,
    bodytimeout: Option<Value>,
    maxconnections: Option<usize>,
    tls: Option<RawTls>,
    headers: Option<BTreeMap<String, Value>>,
    debug: Option<Value>,
    http2: Option<Value>,
    h2c: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTls {
    certificate: Option<String>,
    key: Option<String>,
    clientcas: Option<Vec<String>>,
    minimumtls: Option<String>,
    ciphersuites: Option<Vec<String>>,
    letsencrypt: Option<Value>,
}

/// `http.tls`: serve HTTPS with this certificate chain and key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub certificate: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// `minimumtls`: `tls1.2` (default) or `tls1.3`.
    pub tls13_only: bool,
    /// HTTP/2 offered by ALPN (`h2`, then `http/1.1`), as distribution
    /// does; `http.http2.disabled: true` offers HTTP/1.1 only.
    pub http2: bool,
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
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("REGISTRY_") && !NOT_OVERRIDES.contains(&k.as_str()))
            .collect();
        // Shorter paths first, so REGISTRY_STORAGE picks the driver before
        // REGISTRY_STORAGE_<DRIVER>_* fill in its parameters.
        env.sort_by_key(|(k, _)| (k.matches('_').count(), k.clone()));
        for (key, value) in &env {
            apply_override(&mut doc, key, value).map_err(|m| invalid(format!("{key}: {m}")))?;
        }

        let mut warnings = Vec::new();
        let raw: RawConfig = serde_ignored::deserialize(&doc, |p| {
            warnings.push(format!("unknown config key `{p}` is ignored"));
        })
        .map_err(|e| invalid(e.to_string()))?;

        let storage = storage_spec(&doc).map_err(invalid)?;
        let settings = raw.storage.unwrap_or_default();
        let flag = |section: &str, path: &[&str]| -> Result<Option<bool>, ConfigError> {
            let mut v = settings.get(section);
            for p in path {
                v = v.and_then(|x| x.get(*p));
            }
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
                Some(other) => Err(invalid(format!(
                    "storage.{section}.{} must be true or false, not {other}",
                    path.join(".")
                ))),
            }
        };
        let delete_enabled = flag("delete", &["enabled"])?.unwrap_or(false);
        let redirect_disabled = flag("redirect", &["disable"])?.unwrap_or(false);
        let read_only = flag("maintenance", &["readonly", "enabled"])?.unwrap_or(false);
        let upload_purging = if flag("maintenance", &["uploadpurging", "enabled"])?.unwrap_or(true)
        {
            let section = settings
                .get("maintenance")
                .and_then(|m| m.get("uploadpurging"));
            let duration = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
                match section.and_then(|s| s.get(key)) {
                    None | Some(Value::Null) => Ok(default),
                    Some(Value::String(s)) => {
                        regstore_core::params::parse_duration(s).map_err(|m| {
                            invalid(format!("storage.maintenance.uploadpurging.{key}: {m}"))
                        })
                    }
                    Some(other) => Err(invalid(format!(
                        "storage.maintenance.uploadpurging.{key} must be a duration such as 168h, not {other}"
                    ))),
                }
            };
            let defaults = UploadPurging::default();
            Some(UploadPurging {
                age: duration("age", defaults.age)?,
                interval: duration("interval", defaults.interval)?,
                dry_run: flag("maintenance", &["uploadpurging", "dryrun"])?.unwrap_or(false),
            })
        } else {
            None
        };
        for s in ["cache", "tag"] {
            if settings.contains_key(s) {
                warnings.push(format!(
                    "storage.{s} is not used by regstore and is ignored"
                ));
            }
        }

        let http2_disabled = section_flag(raw.http.http2.as_ref(), "http.http2", "disabled")
            .map_err(invalid)?
            .unwrap_or(false);
        let h2c = section_flag(raw.http.h2c.as_ref(), "http.h2c", "enabled")
            .map_err(invalid)?
            .unwrap_or(false);
        let tls = match raw.http.tls {
            None => None,
            Some(t) => {
                if t.clientcas.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err(invalid(
                        "http.tls.clientcas (client certificate authentication) is not supported yet; remove it and authenticate clients in a proxy".into(),
                    ));
                }
                if t.letsencrypt.as_ref().is_some_and(|l| !l.is_null()) {
                    return Err(invalid(
                        "http.tls.letsencrypt is not supported; give certificate and key files"
                            .into(),
                    ));
                }
                if t.ciphersuites.is_some() {
                    warnings.push(
                        "http.tls.ciphersuites is ignored: regstore offers rustls's safe default suites".into(),
                    );
                }
                let tls13_only = match t.minimumtls.as_deref() {
                    None | Some("tls1.2") => false,
                    Some("tls1.3") => true,
                    Some(other) => {
                        return Err(invalid(format!(
                            "http.tls.minimumtls {other:?}: regstore supports tls1.2 and tls1.3"
                        )));
                    }
                };
                match (t.certificate, t.key) {
                    (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => Some(TlsSettings {
                        certificate: c.into(),
                        key: k.into(),
                        tls13_only,
                        http2: !http2_disabled,
                    }),
                    (None, None) => None,
                    _ => {
                        return Err(invalid(
                            "http.tls needs both `certificate` and `key` (PEM files)".into(),
                        ));
                    }
                }
            }
        };
        for (key, present) in [("auth", raw.auth.is_some()), ("proxy", raw.proxy.is_some())] {
            if present {
                return Err(invalid(format!(
                    "`{key}` is not supported by regstore yet; remove it and put a proxy in front for it, rather than run a registry without what the file asks for"
                )));
            }
        }
        if let Some(prefix) = raw.http.prefix.as_deref()
            && !prefix.is_empty()
            && prefix != "/"
        {
            return Err(invalid(format!(
                "http.prefix {prefix:?} is not supported yet: serve the registry at / (a proxy can map a prefix)"
            )));
        }
        if let Some(net) = raw.http.net.as_deref()
            && net != "tcp"
        {
            return Err(invalid(format!(
                "http.net {net:?} is not supported: only tcp is"
            )));
        }
        for (key, present) in [
            ("notifications", raw.notifications.is_some()),
            ("redis", raw.redis.is_some()),
            ("health", raw.health.is_some()),
            ("reporting", raw.reporting.is_some()),
            ("compatibility", raw.compatibility.is_some()),
            ("policy", raw.policy.is_some()),
            ("log.hooks", raw.log.hooks.is_some()),
            ("http.debug", raw.http.debug.is_some()),
        ] {
            if present {
                warnings.push(format!("`{key}` is not used by regstore and is ignored"));
            }
        }
        if let Some(mw) = &raw.middleware {
            for k in mw.keys().filter(|k| k.as_str() != "storage") {
                warnings.push(format!(
                    "middleware.{k} is not supported (only middleware.storage is) and is ignored"
                ));
            }
        }
        if raw.log.formatter.as_deref().is_some_and(|f| f != "text") {
            warnings.push("log.formatter: only `text` is supported; using text".into());
        }
        // Accepted and not needed: upload state lives in storage, so
        // `http.secret` is not required to continue uploads elsewhere.
        let _ = (
            &raw.version,
            &raw.log.fields,
            &raw.log.accesslog,
            &raw.http.secret,
            &raw.catalog,
        );

        let manifest_urls = match raw.validation {
            None => crate::registry::ManifestUrls::default(),
            Some(v) => {
                let v: RawValidation =
                    serde_json::from_value(v).map_err(|e| invalid(format!("validation: {e}")))?;
                let disabled = v.disabled.unwrap_or(false) || v.enabled == Some(false);
                if disabled {
                    crate::registry::ManifestUrls::any()
                } else {
                    crate::registry::ManifestUrls::new(
                        &v.manifests.urls.allow,
                        &v.manifests.urls.deny,
                    )
                    .map_err(invalid)?
                }
            }
        };
        let mut headers = Vec::new();
        for (name, values) in raw.http.headers.unwrap_or_default() {
            let values = match values {
                Value::Array(a) => a,
                one => vec![one],
            };
            for v in values {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || axum::http::HeaderValue::from_str(&v).is_err()
                {
                    return Err(invalid(format!(
                        "http.headers: {name}: {v:?} is not a valid HTTP header"
                    )));
                }
                headers.push((name.clone(), v));
            }
        }
        let duration = |key: &str, v: Option<Value>, default: Duration| {
            match v {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => regstore_core::params::parse_duration(&s)
                .map_err(|m| invalid(format!("http.{key}: {m}"))),
            Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
                invalid(format!(
                    "http.{key} must be a whole number of seconds or a duration such as 30s, not {n}"
                ))
            }),
            Some(other) => Err(invalid(format!(
                "http.{key} must be a duration such as 30s, not {other}"
            ))),
        }
        };
        let drain_timeout = duration("draintimeout", raw.http.draintimeout, DEFAULT_DRAIN_TIMEOUT)?;
        let defaults = HttpLimits::default();
        let limits = HttpLimits {
            header_timeout: duration(
                "headertimeout",
                raw.http.headertimeout,
                defaults.header_timeout,
            )?,
            body_timeout: duration("bodytimeout", raw.http.bodytimeout, defaults.body_timeout)?,
            max_connections: match raw.http.maxconnections {
                None => defaults.max_connections,
                Some(0) => return Err(invalid("http.maxconnections must be at least 1".into())),
                Some(n) => n,
            },
        };
        for (key, d) in [
            ("headertimeout", limits.header_timeout),
            ("bodytimeout", limits.body_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(format!("http.{key} must be longer than 0s")));
            }
        }
        Ok(Config {
            origin: origin.to_owned(),
            storage,
            delete_enabled,
            redirect_disabled,
            read_only,
            upload_purging,
            tls,
            addr: raw.http.addr.unwrap_or_else(|| ":5000".into()),
            host: raw.http.host.filter(|h| !h.is_empty()),
            relative_urls: raw.http.relativeurls.unwrap_or(false),
            headers,
            drain_timeout,
            limits,
            h2c,
            manifest_urls,
            log_level: raw.log.level.or(raw.loglevel),
            warnings,
        })
    }
}

/// The boolean `key` of a section such as `http.http2` (`true`/`false`, or
/// their strings as environment overrides give them); `None` when absent.
fn section_flag(section: Option<&Value>, name: &str, key: &str) -> Result<Option<bool>, String> {
    match section.and_then(|s| s.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(other) => Err(format!("{name}.{key} must be true or false, not {other}")),
    }
}

/// Sets the key `REGISTRY_A_B_C` names to `value` parsed as a YAML scalar.
fn apply_override(doc: &mut Value, key: &str, value: &str) -> Result<(), String> {
    let path: Vec<String> = key
        .trim_start_matches("REGISTRY_")
        .split('_')
        .map(str::to_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let parsed: Value = if value.is_empty() {
        Value::String(String::new())
    } else {
        serde_saphyr::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))
    };
    if path == ["storage"] {
        let Value::String(driver) = parsed else {
            return Err("REGISTRY_STORAGE names a driver, e.g. REGISTRY_STORAGE=s3".into());
        };
        let storage = object_at(doc, "storage");
        storage.retain(|k, _| SETTINGS_KEYS.contains(&k.as_str()));
        storage.insert(driver, Value::Object(Map::new()));
        return Ok(());
    }
    let mut cur = doc;
    for (i, seg) in path.iter().enumerate() {
        let obj = match cur {
            Value::Object(o) => o,
            other => {
                *other = Value::Object(Map::new());
                match other {
                    Value::Object(o) => o,
                    _ => return Err("cannot set a key inside a non-map value".into()),
                }
            }
        };
        let existing = obj
            .keys()
            .find(|k| k.eq_ignore_ascii_case(seg))
            .cloned()
            .unwrap_or_else(|| seg.clone());
        if i + 1 == path.len() {
            obj.insert(existing, parsed);
            return Ok(());
        }
        cur = obj.entry(existing).or_insert(Value::Object(Map::new()));
    }
    Ok(())
}

/// The object at top-level `key`, created (or replaced if not a map).
fn object_at<'a>(doc: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Value::Object(top) = doc else {
        unreachable!("made an object above")
    };
    let slot = top
        .entry(key.to_owned())
        .or_insert(Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(o) => o,
        _ => unreachable!("made an object above"),
    }
}

fn storage_spec(doc: &Value) -> Result<StorageSpec, String> {
    let storage = doc
        .get("storage")
        .and_then(|s| s.as_object())
        .ok_or_else(|| {
            "no `storage` section: add e.g. `storage: {filesystem: {rootdirectory: ./data}}`"
                .to_owned()
        })?;
    let drivers: Vec<(&String, &Value)> = storage
        .iter()
        .filter(|(k, _)| !SETTINGS_KEYS.contains(&k.as_str()))
        .collect();
    let (driver, params) = match drivers.as_slice() {
        [one] => *one,
        [] => {
            return Err(
                "`storage` names no driver: add one key such as `filesystem:` or `s3:`".into(),
            );
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(k, _)| k.as_str()).collect();
            return Err(format!(
                "`storage` names {} drivers ({}): keep exactly one",
                names.len(),
                names.join(", ")
            ));
        }
    };
    let params = as_params(params).map_err(|m| format!("storage.{driver}: {m}"))?;
    let mut middleware = Vec::new();
    if let Some(list) = doc.get("middleware").and_then(|m| m.get("storage")) {
        let list = list
            .as_array()
            .ok_or_else(|| "middleware.storage must be a list of {name, options}".to_owned())?;
        for (i, entry) in list.iter().enumerate() {
            let name = entry
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("middleware.storage[{i}] has no `name`"))?;
            let options = entry.get("options").unwrap_or(&Value::Null);
            let options = as_params(options)
                .map_err(|m| format!("middleware.storage[{i}] ({name}) options: {m}"))?;
            middleware.push((name.to_owned(), options));
        }
    }
    Ok(StorageSpec {
        driver: driver.clone(),
        params,
        middleware,
    })
}

/// The storage sections (driver and middleware) of the config file at
/// `path`, with the process's `REGISTRY_*` overrides applied.
///
/// # Errors
/// [`ConfigError`] saying what is wrong and where.
pub fn storage_from_file(path: &Path) -> Result<StorageSpec, ConfigError> {
    Ok(Config::load(Some(path), std::env::vars())?.storage)
}

/// The storage sections of a config given as YAML text (no environment
/// overrides); `origin` names it in errors.
///
/// # Errors
/// [`ConfigError`] saying what is wrong.
pub fn storage_from_yaml(text: &str, origin: &str) -> Result<StorageSpec, ConfigError> {
    Ok(Config::from_yaml(text, origin, [])?.storage)
}

fn as_params(v: &Value) -> Result<RawParams, String> {
    match v {
        Value::Null => Ok(RawParams::new()),
        Value::Object(m) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        other => Err(format!("expected a map of parameters, got {other}")),
    }
}

#[cfg(test)]
mod tests {
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
                .contains("storage.delete.enabled must be true or false"),
            "{e}"
        );
        let e = Config::from_yaml(
            "storage:\n  inmemory:\nauth:\n  htpasswd:\n    realm: x\n    path: /p\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("`auth` is not supported"), "{e}");
    }

    #[test]
    fn defaults_serve_the_filesystem_under_data_on_5000_with_deletes() {
        let c = Config::load(None, []).unwrap();
        assert_eq!(c.storage.driver, "filesystem");
        assert_eq!(
            c.storage.params["rootdirectory"],
            serde_json::json!("./data")
        );
        assert_eq!(c.addr, ":5000");
        assert!(c.delete_enabled);
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
        assert_eq!(c.storage.driver, "inmemory");
        assert_eq!(c.storage.params["foo"], serde_json::json!(1));
        assert_eq!(c.addr, ":5001");
        assert!(!c.delete_enabled);
        assert_eq!(
            c.headers,
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
        assert_eq!(c.storage.params["rootDirectory"], serde_json::json!("/x"));
    }

    #[test]
    fn upload_purging_is_on_by_default_and_configurable() {
        let c = Config::from_yaml("storage:\n  inmemory:\n", "t.yml", []).unwrap();
        assert_eq!(c.upload_purging, Some(UploadPurging::default()));
        let c = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 2h\n      interval: 10m\n      dryrun: true\n",
            "t.yml",
            [],
        )
        .unwrap();
        assert_eq!(
            c.upload_purging,
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
        assert_eq!(c.upload_purging, None);
        let e = Config::from_yaml(
            "storage:\n  inmemory:\n  maintenance:\n    uploadpurging:\n      age: soon\n",
            "t.yml",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("uploadpurging.age"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named_in_warnings() {
        let c = Config::from_yaml(
            "storage:\n  inmemory:\nhttp:\n  addr: :1\n  adr: :2\nfrobnicate: 1\nnotifications: {}\n",
            "t.yml",
            [],
        )
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("`http.adr`"), "{w}");
        assert!(w.contains("`frobnicate`"), "{w}");
        assert!(w.contains("`notifications` is not used"), "{w}");
    }
}
