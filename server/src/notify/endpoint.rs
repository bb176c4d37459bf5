//! One endpoint: its bounded queue, its counters and the task that
//! delivers the queue in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, header};

use super::event::{EVENTS_MEDIA_TYPE, Envelope, Event};
use crate::config::EndpointConfig;

/// Most events one delivery carries.
pub(super) const MAX_BATCH: usize = 64;

/// The longest wait between two attempts, unless `backoff` is longer.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One endpoint's state, shared by the handlers (which enqueue) and its
/// sender task.
pub(super) struct Endpoint {
    pub(super) config: EndpointConfig,
    /// Headers sent with every delivery, checked when the config was read.
    headers: Vec<(HeaderName, HeaderValue)>,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    pub(super) sent: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) failing: AtomicBool,
}

struct Queue {
    /// Events not yet delivered, oldest first; the front ones may be in
    /// flight (they leave when delivered).
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    closed: bool,
}

impl Endpoint {
    /// An endpoint holding at most `capacity` undelivered events.
    pub(super) fn new(config: EndpointConfig, capacity: usize) -> Endpoint {
        let headers = config
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        Endpoint {
            config,
            headers,
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                capacity: capacity.max(1),
                closed: false,
            }),
            wake: tokio::sync::Notify::new(),
            sent: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a consistent queue: every
        // change is one call on the VecDeque.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `event` unless the queue is full (then it is dropped and
    /// counted). Never waits.
    pub(super) fn push(&self, event: Arc<Event>) {
        let mut q = self.queue();
        if q.events.len() >= q.capacity {
            drop(q);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    endpoint = self.config.name,
                    dropped = n,
                    "notification queue full: event dropped"
                );
            }
            return;
        }
        q.events.push_back(event);
        drop(q);
        self.wake.notify_one();
    }

    /// Events waiting or in flight.
    pub(super) fn queued(&self) -> usize {
        self.queue().events.len()
    }

    /// Stops the sender after its current attempt.
    pub(super) fn close(&self) {
        self.queue().closed = true;
        self.wake.notify_one();
    }

    fn closed(&self) -> bool {
        self.queue().closed
    }

    /// The oldest queued events (at most [`MAX_BATCH`]), once there are
    /// any; `None` once closed. They stay queued until [`Self::delivered`].
    async fn next_batch(&self) -> Option<Vec<Arc<Event>>> {
        loop {
            {
                let q = self.queue();
                if q.closed {
                    return None;
                }
                if !q.events.is_empty() {
                    return Some(q.events.iter().take(MAX_BATCH).cloned().collect());
                }
            }
            // notify_one keeps a permit when no task waits, so a push
            // between the check and here still wakes this.
            self.wake.notified().await;
        }
    }

    /// Removes the `n` oldest events: they were delivered. Only the
    /// sender removes events, so they are the ones it sent.
    fn delivered(&self, n: usize) {
        let mut q = self.queue();
        let n = n.min(q.events.len());
        q.events.drain(..n);
        // Under the lock: `queued` and `sent` are read consistent.
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One POST of `body`; 2xx and 3xx (after redirects) are delivered.
    async fn post(&self, client: &reqwest::Client, body: Vec<u8>) -> Result<(), String> {
        let mut req = client
            .post(self.config.url.clone())
            .timeout(self.config.timeout)
            .header(header::CONTENT_TYPE, EVENTS_MEDIA_TYPE);
        for (k, v) in &self.headers {
            req = req.header(k.clone(), v.clone());
        }
        let resp = req.body(body).send().await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }

    /// Delivers the queue in order until closed: each batch is retried
    /// until the endpoint takes it, waiting `backoff` after a failure and
    /// twice as long after each further one (up to [`MAX_BACKOFF`], or
    /// `backoff` when longer). After `threshold` consecutive failures the
    /// endpoint is reported failing (one warning), and recovering is
    /// logged once.
    pub(super) async fn run(self: Arc<Self>, client: reqwest::Client) {
        let name = self.config.name.as_str();
        let cap = MAX_BACKOFF.max(self.config.backoff);
        let mut consecutive: u32 = 0;
        while let Some(batch) = self.next_batch().await {
            let body = match serde_json::to_vec(&Envelope {
                events: batch.iter().map(|e| e.as_ref()).collect(),
            }) {
                Ok(b) => b,
                Err(e) => {
                    // Events are plain strings and numbers: this cannot
                    // happen; dropping the batch keeps the queue moving.
                    tracing::error!(endpoint = name, "cannot encode events: {e}");
                    self.delivered(batch.len());
                    continue;
                }
            };
            let mut wait = self.config.backoff;
            loop {
                match self.post(&client, body.clone()).await {
                    Ok(()) => {
                        self.delivered(batch.len());
                        if self.failing.swap(false, Ordering::Relaxed) {
                            tracing::info!(
                                endpoint = name,
                                after_failures = consecutive,
                                "notification endpoint recovered"
                            );
                        }
                        consecutive = 0;
                        break;
                    }
                    Err(e) => {
                        self.failures.fetch_add(1, Ordering::Relaxed);
                        consecutive = consecutive.saturating_add(1);
                        if consecutive >= self.config.threshold
                            && !self.failing.swap(true, Ordering::Relaxed)
                        {
                            tracing::warn!(
                                endpoint = name,
                                url = %self.config.url,
                                failures = consecutive,
                                queued = self.queued(),
                                "notification endpoint failing: {e}; events keep queueing"
                            );
                        } else {
                            tracing::debug!(endpoint = name, "notification not delivered: {e}");
                        }
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = self.wake_on_close() => {}
                        }
                        if self.closed() {
                            return;
                        }
                        wait = (wait * 2).min(cap);
                    }
                }
            }
        }
    }

    /// Returns once the endpoint is closed (wakes for pushes too, and
    /// then keeps waiting).
    async fn wake_on_close(&self) {
        while !self.closed() {
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::{Action, Actor, RequestRecord, Source, Target};
    use super::*;

    fn endpoint(capacity: usize) -> Endpoint {
        Endpoint::new(
            EndpointConfig {
                name: "e".into(),
                url: url::Url::parse("http://127.0.0.1:1/").unwrap(),
                headers: Vec::new(),
                timeout: crate::config::DEFAULT_NOTIFY_TIMEOUT,
                threshold: 1,
                backoff: crate::config::DEFAULT_NOTIFY_BACKOFF,
                ignored_media_types: Default::default(),
                ignored_actions: Default::default(),
            },
            capacity,
        )
    }

    fn event() -> Arc<Event> {
        Arc::new(Event::new(
            Action::Push,
            Target::default(),
            RequestRecord::default(),
            Actor::default(),
            Source::default(),
        ))
    }

    #[tokio::test]
    async fn a_full_queue_drops_new_events_and_counts_them() {
        let e = endpoint(2);
        let first = event();
        e.push(first.clone());
        for _ in 0..4 {
            e.push(event());
        }
        assert_eq!(e.queued(), 2);
        assert_eq!(e.dropped.load(Ordering::Relaxed), 3);
        let batch = e.next_batch().await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].id, first.id, "oldest first");
        assert_eq!(e.queued(), 2, "in flight still counts");
        e.delivered(1);
        assert_eq!(e.queued(), 1);
        assert_eq!(e.sent.load(Ordering::Relaxed), 1);
        e.push(event());
        assert_eq!(e.queued(), 2, "room again");
        e.close();
        assert!(e.next_batch().await.is_none());
    }
}
