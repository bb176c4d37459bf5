//! Notifications (`notifications:`): events about pushes, pulls, mounts
//! and deletes, POSTed to webhook endpoints as distribution sends them.
//!
//! The HTTP handlers build an [`Event`] after a successful operation and
//! hand it to [`Notifier::publish`], which only queues it: each endpoint
//! has its own bounded queue and one sender task, which delivers the queue
//! in order (several queued events in one envelope), retrying a delivery
//! until the endpoint takes it. A slow or dead endpoint therefore never
//! slows a request; when its queue is full, new events for it are dropped
//! and counted ([`Notifier::stats`]).

mod endpoint;
mod event;

use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use event::{
    Action, Actor, BLOB_MEDIA_TYPE, Descriptor, EVENTS_MEDIA_TYPE, Event, RequestRecord, Source,
    Target, manifest_references,
};

use crate::config::NotificationsConfig;
use endpoint::Endpoint;

/// Events an endpoint holds before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// The `User-Agent` of deliveries.
const USER_AGENT: &str = concat!("regstore/", env!("CARGO_PKG_VERSION"), " notifications");

/// Why notifications cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The HTTP client could not be built (TLS setup).
    #[error("notifications: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// One endpoint's counters, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    /// The endpoint's `name`.
    pub name: String,
    /// Events waiting or being delivered.
    pub queued: usize,
    /// Events delivered.
    pub sent: u64,
    /// Failed delivery attempts (each retry of a batch counts).
    pub failures: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// `threshold` consecutive deliveries have failed and none has
    /// succeeded since.
    pub failing: bool,
}

/// The running notification endpoints of one registry instance.
pub struct Notifier {
    endpoints: Vec<Arc<Endpoint>>,
    include_references: bool,
    source: Source,
    tls: bool,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| e.config.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("source", &self.source)
            .finish()
    }
}

impl Notifier {
    /// Starts one sender task per endpoint of `config` (on the current
    /// tokio runtime), each with a queue of `capacity` events; `source_addr`
    /// is this instance's `host:port` as events name it, `tls` whether it
    /// serves HTTPS (the scheme of content URLs without `http.host`).
    /// `None` when no endpoint is enabled.
    ///
    /// # Errors
    /// [`NotifyError::Client`] if the HTTP client cannot be built.
    pub fn start(
        config: &NotificationsConfig,
        source_addr: String,
        tls: bool,
        capacity: usize,
    ) -> Result<Option<Notifier>, NotifyError> {
        if config.endpoints.is_empty() {
            return Ok(None);
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .map_err(NotifyError::Client)?;
        let endpoints: Vec<Arc<Endpoint>> = config
            .endpoints
            .iter()
            .map(|c| Arc::new(Endpoint::new(c.clone(), capacity)))
            .collect();
        for e in &endpoints {
            tracing::info!(
                endpoint = e.config.name,
                url = %e.config.url,
                timeout = %humantime::format_duration(e.config.timeout),
                threshold = e.config.threshold,
                backoff = %humantime::format_duration(e.config.backoff),
                "notification endpoint configured"
            );
            tokio::spawn(e.clone().run(client.clone()));
        }
        Ok(Some(Notifier {
            endpoints,
            include_references: config.include_references,
            source: Source {
                addr: source_addr,
                instance_id: uuid::Uuid::new_v4().to_string(),
            },
            tls,
        }))
    }

    /// Whether manifest events carry `target.references`.
    pub fn include_references(&self) -> bool {
        self.include_references
    }

    /// Whether this instance serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// This instance, as events name it.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Queues `event` for every endpoint that does not ignore its action
    /// or its target's media type. Never waits: an endpoint whose queue is
    /// full drops it (counted in [`EndpointStats::dropped`]).
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        for e in &self.endpoints {
            let ignored_type = event
                .target
                .media_type
                .as_ref()
                .is_some_and(|t| e.config.ignored_media_types.contains(t));
            if !ignored_type && !e.config.ignored_actions.contains(&event.action) {
                e.push(event.clone());
            }
        }
    }

    /// The counters of every endpoint, in config order.
    pub fn stats(&self) -> Vec<EndpointStats> {
        self.endpoints
            .iter()
            .map(|e| EndpointStats {
                name: e.config.name.clone(),
                queued: e.queued(),
                sent: e.sent.load(Ordering::Relaxed),
                failures: e.failures.load(Ordering::Relaxed),
                dropped: e.dropped.load(Ordering::Relaxed),
                failing: e.failing.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Drop for Notifier {
    /// Stops the sender tasks; undelivered events are lost (the queues
    /// live in memory, as distribution's do).
    fn drop(&mut self) {
        for e in &self.endpoints {
            e.close();
        }
    }
}

/// `host:port` of this instance for `http.addr` as written: the machine's
/// host name when the address names no host (`:5000`, `0.0.0.0:5000`).
pub fn source_addr(http_addr: &str) -> String {
    let (host, port) = http_addr.rsplit_once(':').unwrap_or((http_addr, ""));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() || host == "0.0.0.0" || host == "::" {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned())
    } else {
        http_addr[..http_addr.len() - port.len()]
            .trim_end_matches(':')
            .to_owned()
    };
    if port.is_empty() {
        host
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;

    fn event(action: Action, media_type: &str) -> Event {
        Event::new(
            action,
            Target {
                media_type: Some(media_type.into()),
                ..Target::default()
            },
            RequestRecord::default(),
            Actor::default(),
            Source::default(),
        )
    }

    #[tokio::test]
    async fn a_tiny_queue_drops_and_counts_and_ignored_events_are_not_queued() {
        // An endpoint that accepts and never answers: nothing leaves the
        // queue (events in flight still count).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let config = NotificationsConfig {
            include_references: false,
            endpoints: vec![EndpointConfig {
                name: "tiny".into(),
                url: url::Url::parse(&url).unwrap(),
                headers: Vec::new(),
                timeout: std::time::Duration::from_secs(30),
                threshold: 10,
                backoff: std::time::Duration::from_secs(1),
                ignored_media_types: ["text/ignored".to_owned()].into(),
                ignored_actions: [Action::Delete].into(),
            }],
        };
        let n = Notifier::start(&config, "h:1".into(), false, 2)
            .unwrap()
            .unwrap();
        n.publish(event(Action::Delete, "x"));
        n.publish(event(Action::Push, "text/ignored"));
        for _ in 0..5 {
            n.publish(event(Action::Push, "x"));
        }
        let s = n.stats().remove(0);
        assert_eq!(s.name, "tiny");
        assert_eq!((s.queued, s.dropped, s.sent), (2, 3, 0), "{s:?}");
        let off = NotificationsConfig::default();
        assert!(
            Notifier::start(&off, "h:1".into(), false, 2)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn source_addr_names_the_host() {
        assert_eq!(source_addr("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(source_addr("[::1]:5000"), "[::1]:5000");
        let a = source_addr(":5000");
        assert!(a.ends_with(":5000") && a.len() > 5, "{a}");
    }
}
