//! `health`: periodic checks (distribution's keys) that `/debug/health`
//! reports and that take the `/v2/` API out of service while one fails.
//!
//! ```yaml
//! health:
//!   storagedriver:
//!     enabled: true
//!     interval: 10s
//!     threshold: 3
//!   file:
//!     - file: /etc/registry/out-of-rotation
//!   http:
//!     - uri: http://auth.internal/health
//!       headers:
//!         Authorization: [Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==]
//!       statuscode: 200
//!       timeout: 3s
//!   tcp:
//!     - addr: redis.internal:6379
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::value::{ConfigDuration, flag};

/// How often a check runs when its `interval` is not given (distribution's
/// default).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// `health.storagedriver.threshold` when not given.
pub const DEFAULT_STORAGE_THRESHOLD: u32 = 3;

/// `timeout` of an `http` or `tcp` check when not given. distribution waits
/// without limit; regstore bounds every check so a hung peer cannot hold
/// its task (3s, the value distribution's reference shows).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `health`, as the registry runs it. Empty (the default) when the section
/// is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// `storagedriver`, when `enabled: true`: the backend is asked
    /// periodically. `None`: `/debug/health` asks it on demand instead (and
    /// the API is not held by it).
    pub storage: Option<Periodic>,
    /// `file[]`: failing while the file exists.
    pub files: Vec<FileCheck>,
    /// `http[]`: failing while a `HEAD` of the URI does not answer the
    /// expected status in time.
    pub http: Vec<HttpCheck>,
    /// `tcp[]`: failing while a connection to the address cannot be opened
    /// in time.
    pub tcp: Vec<TcpCheck>,
}

impl HealthConfig {
    /// Whether any periodic check is configured.
    pub fn any(&self) -> bool {
        self.storage.is_some()
            || !self.files.is_empty()
            || !self.http.is_empty()
            || !self.tcp.is_empty()
    }
}

/// When a check runs and when it counts as failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periodic {
    /// Time between the end of one run and the start of the next (the
    /// first run is at startup).
    pub interval: Duration,
    /// Consecutive failed runs after which the check is failing (at least
    /// 1); one success makes it pass again.
    pub threshold: u32,
}

/// `health.file[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// `file`: the check fails while something exists at this path.
    pub path: std::path::PathBuf,
    /// `interval`; the threshold is always 1, as in distribution.
    pub periodic: Periodic,
}

/// `health.http[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// `uri`: an `http://` or `https://` URL asked with `HEAD`.
    pub uri: String,
    /// `headers`: sent with every request, one pair per value.
    pub headers: Vec<(String, String)>,
    /// `statuscode` (default 200): the status that passes.
    pub status: u16,
    /// `timeout` (default [`DEFAULT_CHECK_TIMEOUT`]).
    pub timeout: Duration,
    /// `interval` and `threshold` (default 1).
    pub periodic: Periodic,
}

/// `health.tcp[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpCheck {
    /// `addr`: `host:port`.
    pub addr: String,
    /// `timeout` (default [`DEFAULT_CHECK_TIMEOUT`]).
    pub timeout: Duration,
    /// `interval` and `threshold` (default 1).
    pub periodic: Periodic,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    storagedriver: StorageDriver,
    file: Vec<File>,
    http: Vec<Http>,
    tcp: Vec<Tcp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StorageDriver {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
    interval: Option<ConfigDuration>,
    threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct File {
    file: String,
    #[serde(default)]
    interval: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
struct Http {
    uri: String,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    statuscode: Option<u16>,
    #[serde(default)]
    timeout: Option<ConfigDuration>,
    #[serde(default)]
    interval: Option<ConfigDuration>,
    #[serde(default)]
    threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Tcp {
    addr: String,
    #[serde(default)]
    timeout: Option<ConfigDuration>,
    #[serde(default)]
    interval: Option<ConfigDuration>,
    #[serde(default)]
    threshold: Option<u32>,
}

/// `interval` and `threshold` read: absent (or 0, which distribution reads
/// as "not set") gives the default; an interval of 0s is refused.
fn periodic(
    key: &str,
    interval: Option<ConfigDuration>,
    threshold: Option<u32>,
    default_threshold: u32,
) -> Result<Periodic, String> {
    let interval = interval.map_or(DEFAULT_INTERVAL, |d| d.0);
    if interval.is_zero() {
        return Err(format!("{key}.interval must be longer than 0s"));
    }
    Ok(Periodic {
        interval,
        threshold: match threshold {
            None | Some(0) => default_threshold,
            Some(n) => n,
        },
    })
}

/// A `timeout` read: absent gives [`DEFAULT_CHECK_TIMEOUT`], 0s is refused.
fn timeout(key: &str, t: Option<ConfigDuration>) -> Result<Duration, String> {
    match t {
        None => Ok(DEFAULT_CHECK_TIMEOUT),
        Some(ConfigDuration(d)) if d.is_zero() => {
            Err(format!("{key}.timeout must be longer than 0s"))
        }
        Some(ConfigDuration(d)) => Ok(d),
    }
}

impl Section {
    /// The checked `health` settings.
    ///
    /// # Errors
    /// What is wrong, naming the key (`health.http[0].uri`, …): an empty
    /// path or address, a URI that is not http(s), an address without a
    /// port, a header that is not valid HTTP, a zero interval or timeout.
    pub(super) fn resolve(self) -> Result<HealthConfig, String> {
        let storage = match self.storagedriver.enabled {
            Some(true) => Some(periodic(
                "health.storagedriver",
                self.storagedriver.interval,
                self.storagedriver.threshold,
                DEFAULT_STORAGE_THRESHOLD,
            )?),
            _ => None,
        };
        let mut files = Vec::new();
        for (i, f) in self.file.into_iter().enumerate() {
            let key = format!("health.file[{i}]");
            if f.file.trim().is_empty() {
                return Err(format!("{key}.file must name a path"));
            }
            files.push(FileCheck {
                path: f.file.into(),
                periodic: periodic(&key, f.interval, None, 1)?,
            });
        }
        let mut http = Vec::new();
        for (i, h) in self.http.into_iter().enumerate() {
            let key = format!("health.http[{i}]");
            match url::Url::parse(&h.uri) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                Ok(_) => return Err(format!("{key}.uri {:?} is not an http(s) URL", h.uri)),
                Err(e) => return Err(format!("{key}.uri {:?}: {e}", h.uri)),
            }
            let status = h.statuscode.unwrap_or(200);
            if !(100..=599).contains(&status) {
                return Err(format!("{key}.statuscode {status} is not an HTTP status"));
            }
            http.push(HttpCheck {
                headers: super::http::header_pairs(&format!("{key}.headers"), h.headers)?,
                uri: h.uri,
                status,
                timeout: timeout(&key, h.timeout)?,
                periodic: periodic(&key, h.interval, h.threshold, 1)?,
            });
        }
        let mut tcp = Vec::new();
        for (i, t) in self.tcp.into_iter().enumerate() {
            let key = format!("health.tcp[{i}]");
            let port_ok = t
                .addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!("{key}.addr {:?} must be host:port", t.addr));
            }
            tcp.push(TcpCheck {
                timeout: timeout(&key, t.timeout)?,
                periodic: periodic(&key, t.interval, t.threshold, 1)?,
                addr: t.addr,
            });
        }
        Ok(HealthConfig {
            storage,
            files,
            http,
            tcp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(health: &str) -> Result<HealthConfig, String> {
        Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\n{health}"),
            "t.yml",
            [],
        )
        .map(|c| c.health)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_or_disabled_means_no_periodic_checks() {
        assert_eq!(load("").unwrap(), HealthConfig::default());
        assert_eq!(load("health:\n").unwrap(), HealthConfig::default());
        let c = load("health:\n  storagedriver:\n    enabled: false\n").unwrap();
        assert!(!c.any(), "{c:?}");
    }

    #[test]
    fn defaults_are_distributions() {
        let c = load(
            "health:\n  storagedriver:\n    enabled: true\n  file:\n    - file: /x\n  http:\n    - uri: http://h/\n  tcp:\n    - addr: h:1\n",
        )
        .unwrap();
        assert_eq!(
            c.storage,
            Some(Periodic {
                interval: DEFAULT_INTERVAL,
                threshold: DEFAULT_STORAGE_THRESHOLD
            })
        );
        let one = Periodic {
            interval: DEFAULT_INTERVAL,
            threshold: 1,
        };
        assert_eq!(c.files[0].periodic, one);
        assert_eq!(c.http[0].status, 200);
        assert_eq!(c.http[0].timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(c.http[0].periodic, one);
        assert_eq!(c.tcp[0].timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(c.tcp[0].periodic, one);
    }

    #[test]
    fn every_key_is_read() {
        let c = load(
            "health:\n  storagedriver:\n    enabled: 'true'\n    interval: 1m\n    threshold: 5\n  http:\n    - uri: https://h/x\n      headers:\n        Authorization: [Basic abc]\n      statuscode: 204\n      timeout: 500ms\n      interval: 2s\n      threshold: 2\n  tcp:\n    - addr: h:6379\n      timeout: 1s\n      interval: 3s\n      threshold: 4\n",
        )
        .unwrap();
        assert_eq!(
            c.storage,
            Some(Periodic {
                interval: Duration::from_secs(60),
                threshold: 5
            })
        );
        let h = &c.http[0];
        assert_eq!(
            h.headers,
            vec![("Authorization".to_owned(), "Basic abc".to_owned())]
        );
        assert_eq!(
            (
                h.status,
                h.timeout,
                h.periodic.interval,
                h.periodic.threshold
            ),
            (204, Duration::from_millis(500), Duration::from_secs(2), 2)
        );
        let t = &c.tcp[0];
        assert_eq!(
            (t.timeout, t.periodic.interval, t.periodic.threshold),
            (Duration::from_secs(1), Duration::from_secs(3), 4)
        );
    }

    #[test]
    fn unusable_checks_name_the_key() {
        for (yaml, says) in [
            (
                "health:\n  http:\n    - uri: ftp://h/\n",
                "health.http[0].uri",
            ),
            (
                "health:\n  http:\n    - statuscode: 200\n",
                "health.http[0]",
            ),
            (
                "health:\n  http:\n    - uri: http://h/\n      statuscode: 42\n",
                "health.http[0].statuscode",
            ),
            (
                "health:\n  tcp:\n    - addr: h:1\n    - addr: nohost\n",
                "health.tcp[1].addr",
            ),
            (
                "health:\n  tcp:\n    - addr: h:1\n      timeout: 0s\n",
                "health.tcp[0].timeout",
            ),
            (
                "health:\n  file:\n    - file: /x\n      interval: 0\n",
                "health.file[0].interval",
            ),
            (
                "health:\n  storagedriver:\n    enabled: yes please\n",
                "health.storagedriver.enabled",
            ),
            (
                "health:\n  http:\n    - uri: http://h/\n      headers:\n        'bad name': [x]\n",
                "health.http[0].headers",
            ),
        ] {
            let e = load(yaml).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
