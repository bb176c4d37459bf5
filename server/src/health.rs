//! The `health` section at run time: periodic checks of the storage
//! backend, files, HTTP URIs and TCP addresses, each in its own background
//! task, and what `/debug/health` and the `/v2/` API make of them.
//!
//! A check is failing once `threshold` consecutive runs have failed, and
//! passing again at its next successful run; before its first run it is
//! passing. While any check is failing the `/v2/` API answers 503
//! `UNAVAILABLE` (see `http`), as distribution does.
//!
//! Without `health.storagedriver.enabled`, the storage backend is not
//! checked periodically: `/debug/health` asks it on demand, once per
//! request ([`HealthChecks::report`]), and a failure there answers 503 on
//! `/debug/health` only — it does not hold the API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::{HealthConfig, Periodic};
use crate::registry::Registry;

/// One check's state, as [`HealthChecks::statuses`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckStatus {
    /// The check's name, as distribution names it: `storagedriver_<driver>`,
    /// the file's path, the HTTP URI, the TCP address.
    pub name: String,
    /// The check has failed `threshold` consecutive runs and has not passed
    /// since.
    pub failing: bool,
    /// Failed runs since the last successful one.
    pub consecutive_failures: u32,
    /// The error of the latest run; `None` when it passed (or nothing ran
    /// yet).
    pub last_error: Option<String>,
}

/// A health check setup that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The HTTP client for `health.http` checks could not be built.
    #[error("health.http: cannot build the HTTP client: {0}")]
    Client(String),
    /// A configured header is not valid HTTP (the config reader refuses
    /// these first; kept for checks built by hand).
    #[error("{check}: header {name}: not valid HTTP")]
    Header {
        /// The check's URI.
        check: String,
        /// The header's name.
        name: String,
    },
}

/// The configured checks and their states; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct HealthChecks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// `health.storagedriver.enabled`: storage is among `checks`.
    storage_periodic: bool,
    checks: Vec<Check>,
    started: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Check {
    name: String,
    kind: Kind,
    periodic: Periodic,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    failing: bool,
    last_error: Option<String>,
}

#[derive(Debug)]
enum Kind {
    Storage,
    File(PathBuf),
    Http {
        client: reqwest::Client,
        uri: String,
        headers: reqwest::header::HeaderMap,
        status: u16,
        timeout: Duration,
    },
    Tcp {
        addr: String,
        timeout: Duration,
    },
}

impl HealthChecks {
    /// The checks `config` describes, on `registry` (for the storage
    /// check). Nothing runs until [`HealthChecks::spawn`].
    ///
    /// # Errors
    /// [`HealthError`] when the HTTP client or a header cannot be built.
    pub fn new(config: &HealthConfig, registry: Registry) -> Result<HealthChecks, HealthError> {
        let mut checks = Vec::new();
        if let Some(periodic) = config.storage {
            checks.push(Check::new(storage_name(&registry), Kind::Storage, periodic));
        }
        for f in &config.files {
            checks.push(Check::new(
                f.path.display().to_string(),
                Kind::File(f.path.clone()),
                f.periodic,
            ));
        }
        if !config.http.is_empty() {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| HealthError::Client(e.to_string()))?;
            for h in &config.http {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &h.headers {
                    let bad = || HealthError::Header {
                        check: h.uri.clone(),
                        name: name.clone(),
                    };
                    headers.append(
                        reqwest::header::HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| bad())?,
                        reqwest::header::HeaderValue::from_str(value).map_err(|_| bad())?,
                    );
                }
                checks.push(Check::new(
                    h.uri.clone(),
                    Kind::Http {
                        client: client.clone(),
                        uri: h.uri.clone(),
                        headers,
                        status: h.status,
                        timeout: h.timeout,
                    },
                    h.periodic,
                ));
            }
        }
        for t in &config.tcp {
            checks.push(Check::new(
                t.addr.clone(),
                Kind::Tcp {
                    addr: t.addr.clone(),
                    timeout: t.timeout,
                },
                t.periodic,
            ));
        }
        Ok(HealthChecks {
            inner: Arc::new(Inner {
                registry,
                storage_periodic: config.storage.is_some(),
                checks,
                started: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Starts one background task per check (the first run at once, then
    /// one every `interval` after the previous run ends). Calling it again
    /// does nothing. The tasks end when every clone of `self` is dropped.
    pub fn spawn(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        for index in 0..self.inner.checks.len() {
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(run_check(weak, index));
        }
    }

    /// The periodic checks and their states, in configuration order
    /// (storage, files, http, tcp). The on-demand storage check (when
    /// `health.storagedriver` is not enabled) is not among them: it has no
    /// state between requests.
    pub fn statuses(&self) -> Vec<CheckStatus> {
        self.inner.checks.iter().map(Check::status).collect()
    }

    /// The periodic checks that are failing now.
    pub fn failing(&self) -> Vec<CheckStatus> {
        self.inner
            .checks
            .iter()
            .map(Check::status)
            .filter(|s| s.failing)
            .collect()
    }

    /// What `/debug/health` reports: [`HealthChecks::statuses`], and, when
    /// storage is not checked periodically, the result of one storage
    /// request made now ([`Registry::check_health`], bounded by
    /// [`crate::registry::HEALTH_TIMEOUT`]) under the storage check's name.
    pub async fn report(&self) -> Vec<CheckStatus> {
        let mut all = self.statuses();
        if !self.inner.storage_periodic {
            let error = storage_error(&self.inner.registry).await;
            all.insert(
                0,
                CheckStatus {
                    name: storage_name(&self.inner.registry),
                    failing: error.is_some(),
                    consecutive_failures: u32::from(error.is_some()),
                    last_error: error,
                },
            );
        }
        all
    }
}

/// distribution's name of the storage check.
fn storage_name(registry: &Registry) -> String {
    format!("storagedriver_{}", registry.driver().name())
}

/// The storage check: `None` when the backend answers.
async fn storage_error(registry: &Registry) -> Option<String> {
    registry.check_health().await.err().map(|e| {
        format!(
            "storage driver {} is unhealthy: {e}",
            registry.driver().name()
        )
    })
}

impl Check {
    fn new(name: String, kind: Kind, periodic: Periodic) -> Check {
        Check {
            name,
            kind,
            periodic,
            state: Mutex::new(State::default()),
        }
    }

    fn status(&self) -> CheckStatus {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        CheckStatus {
            name: self.name.clone(),
            failing: s.failing,
            consecutive_failures: s.consecutive_failures,
            last_error: s.last_error.clone(),
        }
    }

    /// One run: `None` when it passes, else why it failed.
    async fn run(&self, registry: &Registry) -> Option<String> {
        match &self.kind {
            Kind::Storage => storage_error(registry).await,
            Kind::File(path) => match tokio::fs::symlink_metadata(path).await {
                // As distribution: only an existing file fails the check.
                Ok(_) => Some(format!("file {} exists", path.display())),
                Err(_) => None,
            },
            Kind::Http {
                client,
                uri,
                headers,
                status,
                timeout,
            } => {
                let sent = client
                    .head(uri)
                    .headers(headers.clone())
                    .timeout(*timeout)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == *status => None,
                    Ok(r) => Some(format!(
                        "HEAD {uri} answered {}, expected {status}",
                        r.status().as_u16()
                    )),
                    Err(e) => Some(format!("HEAD {uri}: {}", crate::proxy::upstream::chain(&e))),
                }
            }
            Kind::Tcp { addr, timeout } => {
                match tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(format!("connect to {addr}: {e}")),
                    Err(_) => Some(format!(
                        "connect to {addr}: no connection within {}",
                        humantime::format_duration(*timeout)
                    )),
                }
            }
        }
    }

    /// Records a run's result, logging when the check starts or stops
    /// failing.
    fn record(&self, error: Option<String>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            None => {
                if s.failing {
                    tracing::info!(check = %self.name, "health check passes again");
                }
                *s = State::default();
            }
            Some(e) => {
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                if !s.failing && s.consecutive_failures >= self.periodic.threshold {
                    s.failing = true;
                    tracing::warn!(
                        check = %self.name,
                        failures = s.consecutive_failures,
                        error = %e,
                        "health check failing: the /v2/ API answers 503 until it passes"
                    );
                } else {
                    tracing::debug!(check = %self.name, error = %e, "health check run failed");
                }
                s.last_error = Some(e);
            }
        }
    }
}

/// The task of check `index`: runs it, records the result, sleeps
/// `interval`; ends when the checks are dropped.
async fn run_check(inner: Weak<Inner>, index: usize) {
    loop {
        let interval = {
            let Some(inner) = inner.upgrade() else { return };
            let Some(check) = inner.checks.get(index) else {
                return;
            };
            let error = check.run(&inner.registry).await;
            check.record(error);
            check.periodic.interval
        };
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_check(threshold: u32) -> Check {
        Check::new(
            "h:1".into(),
            Kind::Tcp {
                addr: "h:1".into(),
                timeout: Duration::from_secs(1),
            },
            Periodic {
                interval: Duration::from_secs(1),
                threshold,
            },
        )
    }

    #[test]
    fn a_check_fails_after_threshold_consecutive_failures_and_passes_at_one_success() {
        let c = tcp_check(3);
        assert!(!c.status().failing, "passing before its first run");
        c.record(Some("one".into()));
        c.record(Some("two".into()));
        let s = c.status();
        assert!(!s.failing, "{s:?}");
        assert_eq!(
            (s.consecutive_failures, s.last_error.as_deref()),
            (2, Some("two"))
        );
        c.record(Some("three".into()));
        assert!(c.status().failing);
        c.record(Some("four".into()));
        assert_eq!(c.status().consecutive_failures, 4);
        c.record(None);
        assert_eq!(
            c.status(),
            CheckStatus {
                name: "h:1".into(),
                failing: false,
                consecutive_failures: 0,
                last_error: None,
            }
        );
        c.record(Some("again".into()));
        assert!(!c.status().failing, "the count starts over");
    }
}
