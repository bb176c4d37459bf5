//! `http`: where and how the API is served.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::value::{ConfigDuration, flag};

/// Default for `http.draintimeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `http`, as `regstore serve` uses it.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `http.addr`, as written (`:5000`, `127.0.0.1:5000`).
    pub addr: String,
    /// `http.tls`: serve HTTPS.
    pub tls: Option<TlsSettings>,
    /// `http.host`: base URL for absolute `Location` headers.
    pub host: Option<String>,
    /// `http.relativeurls`.
    pub relative_urls: bool,
    /// `http.headers`: sent on every response, one pair per value.
    pub headers: Vec<(String, String)>,
    /// `http.draintimeout`: how long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// `http.headertimeout`, `http.bodytimeout`, `http.maxconnections`.
    pub limits: HttpLimits,
    /// `http.h2c.enabled`: plain-text connections may speak HTTP/2 (prior
    /// knowledge), besides HTTP/1.1. Off by default, as in distribution.
    pub h2c: bool,
    /// `http.debug`: the debug server; `None` without `http.debug.addr`.
    pub debug: Option<DebugConfig>,
    /// `http.cors` (a regstore extension): cross-origin access for
    /// browsers; `None` sends no CORS headers.
    pub cors: Option<CorsConfig>,
}

/// `http.debug`: a second listener for operators (`/debug/health`,
/// `/debug/vars`, and the Prometheus metrics when enabled). Plain HTTP:
/// bind it where only operators reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugConfig {
    /// `http.debug.addr`, as written (`:5001`, `127.0.0.1:5001`).
    pub addr: String,
    /// `http.debug.prometheus`: the path metrics are served at (default
    /// `/metrics`) when `enabled`; `None` when disabled (the default, as
    /// in distribution: nothing is recorded then).
    pub prometheus: Option<String>,
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
    /// for this long is cut off (an upload keeps none of it, as after a cut
    /// connection: the same request can be sent again).
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

/// `http.tls`: serve HTTPS with this certificate chain and key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `minimumtls`: `tls1.2` (default) or `tls1.3`.
    pub tls13_only: bool,
    /// HTTP/2 offered by ALPN (`h2`, then `http/1.1`), as distribution
    /// does; `http.http2.disabled: true` offers HTTP/1.1 only.
    pub http2: bool,
    /// `clientcas`: PEM files of the CAs a client certificate must chain
    /// to. When any are given, every connection must present a valid
    /// client certificate (mutual TLS, distribution's
    /// `RequireAndVerifyClientCert`).
    pub client_cas: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    addr: Option<String>,
    host: Option<String>,
    #[serde(deserialize_with = "flag")]
    relativeurls: Option<bool>,
    draintimeout: Option<ConfigDuration>,
    headertimeout: Option<ConfigDuration>,
    bodytimeout: Option<ConfigDuration>,
    maxconnections: Option<usize>,
    tls: Option<Tls>,
    /// One value or a list of values per header name.
    headers: BTreeMap<String, Value>,
    http2: Http2,
    h2c: H2c,
    debug: Option<Debug>,
    cors: Option<Cors>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Debug {
    addr: Option<String>,
    prometheus: Prometheus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Prometheus {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tls {
    certificate: Option<String>,
    key: Option<String>,
    minimumtls: Option<String>,
    clientcas: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Http2 {
    #[serde(deserialize_with = "flag")]
    disabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct H2c {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
}

/// The pairs of a map of header names to one value or a list of values
/// (`http.headers`, `notifications.endpoints[].headers`,
/// `health.http[].headers`), one pair per
/// value, in name order; numbers and booleans are written as YAML gives
/// them.
///
/// # Errors
/// A name or value that is not a valid HTTP header, naming `key`.
pub(super) fn header_pairs(
    key: &str,
    map: BTreeMap<String, Value>,
) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (name, values) in map {
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
                return Err(format!("{key}: {name}: {v:?} is not a valid HTTP header"));
            }
            headers.push((name.clone(), v));
        }
    }
    Ok(headers)
}

impl Section {
    /// The checked `http` settings.
    ///
    /// # Errors
    /// What is wrong, naming the key.
    pub(super) fn resolve(self) -> Result<HttpConfig, String> {
        let http2 = !self.http2.disabled.unwrap_or(false);
        let tls = match self.tls {
            None => None,
            Some(t) => {
                let tls13_only = match t.minimumtls.as_deref() {
                    None | Some("tls1.2") => false,
                    Some("tls1.3") => true,
                    Some(other) => {
                        return Err(format!(
                            "http.tls.minimumtls {other:?}: regstore supports tls1.2 and tls1.3"
                        ));
                    }
                };
                match (t.certificate, t.key) {
                    (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => Some(TlsSettings {
                        certificate: c.into(),
                        key: k.into(),
                        tls13_only,
                        http2,
                        client_cas: t.clientcas,
                    }),
                    (None, None) if !t.clientcas.is_empty() => {
                        return Err(
                            "http.tls.clientcas needs http.tls.certificate and key: client certificates are asked for over TLS".into(),
                        );
                    }
                    (None, None) => None,
                    _ => {
                        return Err(
                            "http.tls needs both `certificate` and `key` (PEM files)".into()
                        );
                    }
                }
            }
        };
        let headers = header_pairs("http.headers", self.headers)?;
        let cors = self.cors.map(Cors::resolve).transpose()?;
        let defaults = HttpLimits::default();
        let limits = HttpLimits {
            header_timeout: self.headertimeout.map_or(defaults.header_timeout, |d| d.0),
            body_timeout: self.bodytimeout.map_or(defaults.body_timeout, |d| d.0),
            max_connections: match self.maxconnections {
                None => defaults.max_connections,
                Some(0) => return Err("http.maxconnections must be at least 1".into()),
                Some(n) => n,
            },
        };
        for (key, d) in [
            ("headertimeout", limits.header_timeout),
            ("bodytimeout", limits.body_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("http.{key} must be longer than 0s"));
            }
        }
        let debug = match self.debug {
            None => None,
            Some(d) => match d.addr.filter(|a| !a.trim().is_empty()) {
                None if d.prometheus.enabled == Some(true) => {
                    return Err(
                        "http.debug.prometheus.enabled needs http.debug.addr: metrics are served on the debug server".into(),
                    );
                }
                None => None,
                Some(addr) => Some(DebugConfig {
                    addr,
                    prometheus: match (d.prometheus.enabled, d.prometheus.path) {
                        (Some(true), None) => Some("/metrics".into()),
                        (Some(true), Some(p)) if p.starts_with('/') && p.len() > 1 => Some(p),
                        (Some(true), Some(p)) => {
                            return Err(format!(
                                "http.debug.prometheus.path {p:?} must be a path such as /metrics"
                            ));
                        }
                        _ => None,
                    },
                }),
            },
        };
        Ok(HttpConfig {
            debug,
            addr: self.addr.unwrap_or_else(|| ":5000".into()),
            tls,
            host: self.host.filter(|h| !h.is_empty()),
            relative_urls: self.relativeurls.unwrap_or(false),
            headers,
            drain_timeout: self.draintimeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
            limits,
            h2c: self.h2c.enabled.unwrap_or(false),
            cors,
        })
    }
}

/// Methods a cross-origin request may use when `allowedmethods` is not given.
pub const DEFAULT_CORS_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

/// Request headers a cross-origin request may send when `allowedheaders` is
/// not given: what a browser client of the API sends (credentials, content
/// negotiation of manifests, ranged blob reads, digests of pushes).
pub const DEFAULT_CORS_ALLOWED_HEADERS: &[&str] = &[
    "Authorization",
    "Content-Type",
    "Accept",
    "Range",
    "Docker-Content-Digest",
];

/// Response headers a browser script may read when `exposedheaders` is not
/// given: what a client of the API needs beyond the CORS-safelisted ones.
pub const DEFAULT_CORS_EXPOSED_HEADERS: &[&str] = &[
    "Docker-Content-Digest",
    "Link",
    "Content-Range",
    "WWW-Authenticate",
    "Docker-Distribution-API-Version",
    "Location",
];

/// `http.cors`: which web origins may call the API from a browser, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    /// `allowedorigins`: origins as browsers send them
    /// (`https://ui.example.com`); `*` allows every origin.
    pub allowed_origins: Vec<String>,
    /// `allowedmethods` (default [`DEFAULT_CORS_METHODS`]).
    pub allowed_methods: Vec<String>,
    /// `allowedheaders` (default [`DEFAULT_CORS_ALLOWED_HEADERS`]).
    pub allowed_headers: Vec<String>,
    /// `exposedheaders` (default [`DEFAULT_CORS_EXPOSED_HEADERS`]).
    pub exposed_headers: Vec<String>,
    /// `allowcredentials`: browsers may send cookies and `Authorization`.
    pub allow_credentials: bool,
    /// `maxage`: how long a browser may cache a preflight's answer; `None`
    /// sends no `Access-Control-Max-Age`.
    pub max_age: Option<Duration>,
}

impl CorsConfig {
    /// Whether `allowedorigins` holds `*`.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    /// Whether a request from `origin` gets CORS headers.
    pub fn allows(&self, origin: &str) -> bool {
        self.any_origin()
            || self
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cors {
    allowedorigins: Vec<String>,
    allowedmethods: Option<Vec<String>>,
    allowedheaders: Option<Vec<String>>,
    exposedheaders: Option<Vec<String>>,
    #[serde(deserialize_with = "flag")]
    allowcredentials: Option<bool>,
    maxage: Option<ConfigDuration>,
}

impl Cors {
    /// # Errors
    /// No origin, an origin with a path, a method or header name that is
    /// not valid HTTP, naming the key.
    fn resolve(self) -> Result<CorsConfig, String> {
        if self.allowedorigins.is_empty() {
            return Err("http.cors.allowedorigins must list at least one origin (or \"*\")".into());
        }
        for o in &self.allowedorigins {
            let ok = o == "*"
                || url::Url::parse(o).is_ok_and(|u| {
                    u.has_host() && u.path() == "/" && !o.ends_with('/') && u.query().is_none()
                });
            if !ok {
                return Err(format!(
                    "http.cors.allowedorigins: {o:?} is not an origin (scheme://host[:port], or \"*\")"
                ));
            }
        }
        let list = |key: &str, given: Option<Vec<String>>, default: &[&str], method: bool| {
            let values = given.unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect());
            for v in &values {
                let ok = if method {
                    axum::http::Method::from_bytes(v.as_bytes()).is_ok()
                } else {
                    axum::http::HeaderName::from_bytes(v.as_bytes()).is_ok()
                };
                if !ok {
                    return Err(format!("http.cors.{key}: {v:?} is not a valid HTTP name"));
                }
            }
            Ok(values)
        };
        Ok(CorsConfig {
            allowed_methods: list(
                "allowedmethods",
                self.allowedmethods,
                DEFAULT_CORS_METHODS,
                true,
            )?,
            allowed_headers: list(
                "allowedheaders",
                self.allowedheaders,
                DEFAULT_CORS_ALLOWED_HEADERS,
                false,
            )?,
            exposed_headers: list(
                "exposedheaders",
                self.exposedheaders,
                DEFAULT_CORS_EXPOSED_HEADERS,
                false,
            )?,
            allowed_origins: self.allowedorigins,
            allow_credentials: self.allowcredentials.unwrap_or(false),
            max_age: self.maxage.map(|d| d.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(http: &str) -> Result<Option<CorsConfig>, String> {
        Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\nhttp:\n{http}"),
            "t.yml",
            [],
        )
        .map(|c| c.http.cors)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn cors_is_off_by_default_and_has_documented_defaults() {
        assert_eq!(load("  addr: :1\n").unwrap(), None);
        let c = load("  cors:\n    allowedorigins: ['https://ui.example.com']\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.allowed_methods, DEFAULT_CORS_METHODS);
        assert_eq!(c.allowed_headers, DEFAULT_CORS_ALLOWED_HEADERS);
        assert_eq!(c.exposed_headers, DEFAULT_CORS_EXPOSED_HEADERS);
        assert!(!c.allow_credentials);
        assert_eq!(c.max_age, None);
        assert!(c.allows("https://UI.example.com") && !c.allows("https://evil.example"));
        assert!(!c.any_origin());
    }

    #[test]
    fn cors_keys_are_read() {
        let c = load(
            "  cors:\n    allowedorigins: ['*']\n    allowedmethods: [GET, PUT]\n    allowedheaders: [X-A]\n    exposedheaders: [X-B]\n    allowcredentials: true\n    maxage: 10m\n",
        )
        .unwrap()
        .unwrap();
        assert!(c.any_origin() && c.allows("http://anything"));
        assert_eq!(c.allowed_methods, ["GET", "PUT"]);
        assert_eq!(c.allowed_headers, ["X-A"]);
        assert_eq!(c.exposed_headers, ["X-B"]);
        assert!(c.allow_credentials);
        assert_eq!(c.max_age, Some(Duration::from_secs(600)));
    }

    #[test]
    fn unusable_cors_settings_name_the_key() {
        for (yaml, says) in [
            (
                "  cors:\n    maxage: 1m\n",
                "http.cors.allowedorigins must list",
            ),
            (
                "  cors:\n    allowedorigins: ['https://ui/path']\n",
                "is not an origin",
            ),
            (
                "  cors:\n    allowedorigins: [ui.example.com]\n",
                "is not an origin",
            ),
            (
                "  cors:\n    allowedorigins: ['*']\n    allowedheaders: ['a b']\n",
                "http.cors.allowedheaders",
            ),
            (
                "  cors:\n    allowedorigins: ['*']\n    maxage: soon\n",
                "http.cors.maxage",
            ),
        ] {
            let e = load(yaml).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
