//! Prometheus metrics (`http.debug.prometheus`), served on the debug
//! server in the Prometheus text format (0.0.4) through `prometheus-client`.
//!
//! Recorded only when enabled: without it the HTTP layer does not even
//! look at a request. What is kept:
//! - **HTTP**, by route template (`manifest`, `blob`, `blob_upload`, …,
//!   never the raw path), method and status: requests, latency to the
//!   response head (histogram), request and response body bytes, requests
//!   in flight (until a streamed response body is sent; a body already in
//!   memory counts as sent with the response head).
//! - **Registry work**, read from the same requests: uploads started,
//!   completed and failed and the bytes they received; pushes and pulls by
//!   kind (blob, manifest) and manifest media type (the known ones; any
//!   other is `other`, so a client cannot make series without end);
//!   cross-repository mounts.
//! - **Storage**, at scrape time from the counters the driver wrapper
//!   keeps: operations by driver and operation, errors by kind, latency
//!   histograms, and the requests sent to the backend (cloud drivers).
//! - **Pull-through cache** hits, misses, revalidations and bytes fetched,
//!   when the registry is one.
//! - **Blob-descriptor cache** hits, misses and errors, when there is one.
//!
//! Every name starts with `regstore_`; the README's "Operating regstore"
//! lists them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, Method, StatusCode, header};
use hyper::body::{Frame, SizeHint};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as Prometheus;

use crate::registry::{ManifestKind, Registry};

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the HTTP latency histogram.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteMethod {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContentLabels {
    kind: &'static str,
    media_type: &'static str,
}

/// What every request updates.
#[derive(Debug)]
struct Http {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteMethod, Histogram, fn() -> Histogram>,
    bytes_in: Family<RouteLabel, Counter>,
    bytes_out: Family<RouteLabel, Counter>,
    in_flight: Gauge,
    uploads_started: Counter,
    uploads_completed: Counter,
    uploads_failed: Counter,
    upload_bytes: Counter,
    pushes: Family<ContentLabels, Counter>,
    pulls: Family<ContentLabels, Counter>,
    mounts: Counter,
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// The metrics of one registry. Cheap to clone (an [`Arc`] inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    prometheus: Prometheus,
    http: Http,
}

impl Metrics {
    /// Metrics for `registry` (its driver's counters are read at each
    /// scrape), with `extra` collectors (the pull-through cache's, …).
    pub fn new(registry: &Registry, extra: Vec<Box<dyn Collector>>) -> Metrics {
        let mut p = Prometheus::with_prefix("regstore");
        let http = Http {
            requests: Family::default(),
            duration: Family::new_with_constructor(http_histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            in_flight: Gauge::default(),
            uploads_started: Counter::default(),
            uploads_completed: Counter::default(),
            uploads_failed: Counter::default(),
            upload_bytes: Counter::default(),
            pushes: Family::default(),
            pulls: Family::default(),
            mounts: Counter::default(),
        };
        p.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http.requests.clone(),
        );
        p.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route template and method",
            http.duration.clone(),
        );
        p.register(
            "http_request_body_bytes",
            "Request body bytes received, by route template",
            http.bytes_in.clone(),
        );
        p.register(
            "http_response_body_bytes",
            "Response body bytes sent, by route template",
            http.bytes_out.clone(),
        );
        p.register(
            "http_requests_in_flight",
            "Requests being handled or having their response body sent",
            http.in_flight.clone(),
        );
        p.register(
            "uploads_started",
            "Blob upload sessions started (POST without a digest)",
            http.uploads_started.clone(),
        );
        p.register(
            "uploads_completed",
            "Blob uploads completed (final PUT, or a monolithic POST)",
            http.uploads_completed.clone(),
        );
        p.register(
            "uploads_failed",
            "Upload requests (PATCH, PUT, monolithic POST) answered with an error",
            http.uploads_failed.clone(),
        );
        p.register(
            "upload_bytes",
            "Bytes received by upload requests that succeeded",
            http.upload_bytes.clone(),
        );
        p.register(
            "pushes",
            "Blobs and manifests stored by clients, by kind and manifest media type",
            http.pushes.clone(),
        );
        p.register(
            "pulls",
            "Blobs and manifests served (GET), by kind and manifest media type",
            http.pulls.clone(),
        );
        p.register(
            "blob_mounts",
            "Cross-repository blob mounts",
            http.mounts.clone(),
        );
        p.register_collector(Box::new(StorageCollector {
            registry: registry.clone(),
        }));
        p.register_collector(Box::new(TagListCollector {
            registry: registry.clone(),
        }));
        p.register_collector(Box::new(BuildCollector {
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }));
        for c in extra {
            p.register_collector(c);
        }
        Metrics {
            inner: Arc::new(Inner {
                prometheus: p,
                http,
            }),
        }
    }

    /// Every metric in the Prometheus text format (0.0.4).
    ///
    /// # Errors
    /// Only if formatting fails (it writes to a `String`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.prometheus)?;
        Ok(out)
    }

    /// Starts tracking a request: counts it in flight and measures its
    /// request body. Call [`Tracked::finish`] with the response.
    pub fn track(
        &self,
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Body,
    ) -> (Tracked, Body) {
        let received = Arc::new(AtomicU64::new(0));
        // Requests that carry no body (GET, HEAD, DELETE) are not wrapped.
        let body = if matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
            body
        } else {
            Body::new(Counted {
                inner: body,
                count: Arc::clone(&received),
                on_end: None,
            })
        };
        let h = &self.inner.http;
        h.in_flight.inc();
        let tracked = Tracked {
            metrics: self.clone(),
            started: Instant::now(),
            method: method_label(method),
            manifest_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(manifest_type_label),
            received,
            upload_post: upload_post(query),
        };
        (tracked, body)
    }
}

/// A request being tracked (see [`Metrics::track`]).
#[derive(Debug)]
pub struct Tracked {
    metrics: Metrics,
    started: Instant,
    method: &'static str,
    /// The request's `Content-Type`, as a manifest media type label.
    manifest_type: Option<&'static str>,
    received: Arc<AtomicU64>,
    upload_post: UploadPost,
}

fn upload_post(query: Option<&str>) -> UploadPost {
    let has =
        |key: &str| query.is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(key)));
    if has("mount") && has("from") {
        UploadPost::Mount
    } else if has("digest") {
        UploadPost::Monolithic
    } else {
        UploadPost::Session
    }
}

/// The route a response answered, put in its extensions by the API
/// handler for the metrics layer (absent: not an API route).
#[derive(Clone, Copy, Debug)]
pub struct RouteName(pub &'static str);

/// What kind of upload POST a request is, from its query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UploadPost {
    /// `?mount=…&from=…` answered 201: a mount.
    Mount,
    /// `?digest=…`: a monolithic upload.
    Monolithic,
    /// A session.
    Session,
}

impl Tracked {
    /// Records the request with its response; the response body is
    /// counted as it is sent, and the request leaves the in-flight gauge
    /// when it has been.
    pub fn finish(self, mut resp: axum::response::Response) -> axum::response::Response {
        let h = &self.metrics.inner.http;
        let route = resp
            .extensions()
            .get::<RouteName>()
            .map_or("other", |r| r.0);
        let status = resp.status();
        h.requests
            .get_or_create(&RequestLabels {
                route,
                method: self.method,
                status: status.as_u16(),
            })
            .inc();
        h.duration
            .get_or_create(&RouteMethod {
                route,
                method: self.method,
            })
            .observe(self.started.elapsed().as_secs_f64());
        let received = self.received.load(Ordering::Relaxed);
        if received > 0 {
            h.bytes_in
                .get_or_create(&RouteLabel { route })
                .inc_by(received);
        }
        self.registry_work(&resp, route, status, received);
        let sent = h.bytes_out.get_or_create(&RouteLabel { route }).clone();
        // A body already in memory (manifests, errors, HEAD answers) is
        // counted now; only streamed ones are followed to their end.
        if let Some(n) = resp.body().size_hint().exact() {
            sent.inc_by(n);
            h.in_flight.dec();
            return resp;
        }
        let metrics = self.metrics.clone();
        let body = std::mem::take(resp.body_mut());
        *resp.body_mut() = Body::new(Counted {
            inner: body,
            count: Arc::new(AtomicU64::new(0)),
            on_end: Some(Box::new(move |n| {
                sent.inc_by(n);
                metrics.inner.http.in_flight.dec();
            })),
        });
        resp
    }

    /// Uploads, pushes, pulls and mounts, from what the request was and
    /// how it was answered.
    fn registry_work(
        &self,
        resp: &axum::response::Response,
        route: &'static str,
        status: StatusCode,
        received: u64,
    ) {
        let h = &self.metrics.inner.http;
        let ok = status.is_success();
        let blob = ContentLabels {
            kind: "blob",
            media_type: "application/octet-stream",
        };
        match (route, self.method) {
            ("blob_upload_start", "POST") => match self.upload_post {
                // A mount that finds nothing starts a session (202).
                UploadPost::Mount if status == StatusCode::CREATED => {
                    h.mounts.inc();
                }
                UploadPost::Monolithic if ok => {
                    h.uploads_completed.inc();
                    h.upload_bytes.inc_by(received);
                    h.pushes.get_or_create(&blob).inc();
                }
                UploadPost::Monolithic => {
                    h.uploads_failed.inc();
                }
                _ if ok => {
                    h.uploads_started.inc();
                }
                _ => {}
            },
            ("blob_upload", "PATCH") if ok => {
                h.upload_bytes.inc_by(received);
            }
            ("blob_upload", "PUT") if ok => {
                h.uploads_completed.inc();
                h.upload_bytes.inc_by(received);
                h.pushes.get_or_create(&blob).inc();
            }
            ("blob_upload", "PATCH" | "PUT") => {
                h.uploads_failed.inc();
            }
            ("manifest", "PUT") if ok => {
                h.pushes
                    .get_or_create(&ContentLabels {
                        kind: "manifest",
                        media_type: self.manifest_type.unwrap_or("other"),
                    })
                    .inc();
            }
            ("manifest", "GET") if ok => {
                let media_type = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map_or("other", manifest_type_label);
                h.pulls
                    .get_or_create(&ContentLabels {
                        kind: "manifest",
                        media_type,
                    })
                    .inc();
            }
            ("blob", "GET") if ok || status == StatusCode::TEMPORARY_REDIRECT => {
                h.pulls.get_or_create(&blob).inc();
            }
            _ => {}
        }
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A manifest media type as a label: the known ones, else `other`.
fn manifest_type_label(content_type: &str) -> &'static str {
    let mt = content_type.split(';').next().unwrap_or("").trim();
    ManifestKind::from_media_type(mt).map_or("other", ManifestKind::media_type)
}

/// A body that counts the bytes passing and, once it ends or is dropped,
/// calls `on_end` with the count.
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
    on_end: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.count.load(Ordering::Relaxed));
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The storage driver's counters, read at each scrape.
#[derive(Debug)]
struct StorageCollector {
    registry: Registry,
}

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let driver = self.registry.driver();
        let name = driver.name();
        let ops = driver.metrics().snapshot();
        let mut e = encoder.encode_descriptor(
            "storage_operations",
            "Storage driver operations, by driver and operation",
            None,
            MetricType::Counter,
        )?;
        for (op, s) in &ops {
            let labels = [("driver", name), ("operation", op.as_str())];
            ConstCounter::new(s.calls).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "storage_operation_errors",
            "Storage driver operations that failed, by driver, operation and error kind (path_not_found is often expected)",
            None,
            MetricType::Counter,
        )?;
        for (op, s) in &ops {
            for (kind, n) in s.errors_by_kind.iter().filter(|(_, n)| *n > 0) {
                let labels = [
                    ("driver", name),
                    ("operation", op.as_str()),
                    ("kind", kind.as_str()),
                ];
                ConstCounter::new(*n).encode(e.encode_family(&labels)?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "storage_operation_duration_seconds",
            "Storage driver operation latency, by driver and operation",
            None,
            MetricType::Histogram,
        )?;
        for (op, s) in &ops {
            let labels = [("driver", name), ("operation", op.as_str())];
            let mut buckets: Vec<(f64, u64)> = regstore_core::LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(s.latency.iter().copied())
                .collect();
            buckets.push((f64::MAX, s.latency[regstore_core::LATENCY_BUCKETS.len()]));
            e.encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    s.total.as_secs_f64(),
                    s.calls,
                    &buckets,
                    None,
                )?;
        }
        if let Some(n) = driver.backend_requests() {
            let e = encoder.encode_descriptor(
                "storage_backend_requests",
                "Requests the storage driver sent to its backend (retries included)",
                None,
                MetricType::Counter,
            )?;
            let labels = [("driver", name)];
            let mut e = e;
            ConstCounter::new(n).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `regstore_build_info` and `regstore_start_time_seconds`.
#[derive(Debug)]
struct BuildCollector {
    started: f64,
}

impl Collector for BuildCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut e = encoder.encode_descriptor(
            "build_info",
            "The running version (value 1)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(e.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        let e = encoder.encode_descriptor(
            "start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.started).encode(e)?;
        Ok(())
    }
}

/// One family of constant series (read from counters kept elsewhere).
fn series_of<V: Copy + prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(&[(&str, &str)], V)],
) -> Result<(), std::fmt::Error>
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let mut e = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        let family = e.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(family)?,
            _ => ConstGauge::new(*v).encode(family)?,
        }
    }
    Ok(())
}

/// How tag lists were answered ([`crate::registry::tag_lists`]), read at
/// each scrape.
#[derive(Debug)]
struct TagListCollector {
    registry: Registry,
}

impl Collector for TagListCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.registry.tag_list_stats();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        series_of(
            &mut encoder,
            "tag_lists",
            "Tag lists answered, by result (hit: the list kept in memory, its directory unchanged; miss: listed and kept; unstamped: listed, the driver gave no stamp to keep it by)",
            MetricType::Counter,
            &[
                (&[("result", "hit")], n(&s.hits)),
                (&[("result", "miss")], n(&s.misses)),
                (&[("result", "unstamped")], n(&s.unstamped)),
            ],
        )
    }
}

/// The blob-descriptor cache's counters ([`crate::cache::CacheStats`]),
/// read at each scrape, labelled by its kind (`inmemory`, `redis`).
#[derive(Debug)]
pub struct BlobCacheCollector(pub crate::cache::BlobDescriptorCache);

impl Collector for BlobCacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let labels: &[(&str, &str)] = &[("cache", self.0.kind())];
        for (name, help, n) in [
            (
                "storage_cache_hits",
                "Blob-descriptor cache lookups answered from the cache, by cache kind",
                &s.hits,
            ),
            (
                "storage_cache_misses",
                "Blob-descriptor cache lookups the storage answered, by cache kind (errors included)",
                &s.misses,
            ),
            (
                "storage_cache_errors",
                "Blob-descriptor cache operations that failed (the storage answered instead), by cache kind",
                &s.errors,
            ),
        ] {
            series_of(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                &[(labels, n.load(Ordering::Relaxed))],
            )?;
        }
        Ok(())
    }
}

/// The pull-through cache's counters ([`crate::proxy::Proxy::stats`]),
/// read at each scrape.
#[derive(Debug)]
pub struct ProxyCollector(pub Arc<crate::proxy::Proxy>);

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        let counter = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       series: &[(&[(&str, &str)], u64)]| {
            series_of(encoder, name, help, MetricType::Counter, series)
        };
        counter(
            &mut encoder,
            "proxy_requests",
            "Pull-through cache requests, by kind and result (hit: served from storage)",
            &[
                (&[("kind", "manifest"), ("result", "hit")], s.manifest_hits),
                (
                    &[("kind", "manifest"), ("result", "miss")],
                    s.manifest_misses,
                ),
                (&[("kind", "blob"), ("result", "hit")], s.blob_hits),
                (&[("kind", "blob"), ("result", "miss")], s.blob_misses),
            ],
        )?;
        counter(
            &mut encoder,
            "proxy_fetched_bytes",
            "Bytes fetched from upstream and stored, by kind",
            &[
                (&[("kind", "blob")], s.blob_bytes_fetched),
                (&[("kind", "manifest")], s.manifest_bytes_fetched),
            ],
        )?;
        counter(
            &mut encoder,
            "proxy_blob_fetches",
            "Blob fetches from upstream, by result (failed: nothing stored)",
            &[
                (&[("result", "stored")], s.blobs_fetched),
                (&[("result", "failed")], s.blob_fetches_failed),
            ],
        )?;
        counter(
            &mut encoder,
            "proxy_tag_revalidations",
            "Upstream HEADs made to revalidate a cached tag",
            &[(&[], s.revalidations)],
        )?;
        counter(
            &mut encoder,
            "proxy_stale_served",
            "Cached tags served without revalidation because upstream could not be asked",
            &[(&[], s.stale_served)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Settings;

    #[tokio::test]
    async fn the_exposition_names_every_family_with_the_prefix() {
        let driver = crate::registry::inmemory_for_tests().await;
        let registry = Registry::new(driver, Settings::default());
        let proxy = crate::proxy::Proxy::new(&crate::config::ProxyConfig {
            remote_url: "http://127.0.0.1:9".into(),
            username: None,
            password: None,
            ttl: None,
        })
        .expect("a proxy");
        let m = Metrics::new(&registry, vec![Box::new(ProxyCollector(Arc::new(proxy)))]);
        let _ = registry.driver().stat("/").await;
        let text = m.encode().expect("encodes");
        // Families without a series yet (requests by route) print nothing.
        for family in [
            "regstore_http_requests_in_flight 0",
            "regstore_uploads_started_total 0",
            "regstore_storage_operations_total{driver=\"inmemory\",operation=\"stat\"} 1",
            "regstore_storage_operation_duration_seconds_bucket{driver=\"inmemory\",operation=\"stat\",le=\"+Inf\"} 1",
            "regstore_proxy_requests_total{kind=\"blob\",result=\"hit\"} 0",
            "regstore_proxy_fetched_bytes_total{kind=\"blob\"} 0",
            "regstore_build_info{version=",
        ] {
            assert!(text.contains(family), "{family} in:\n{text}");
        }
        assert!(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .all(|l| l.starts_with("regstore_")),
            "{text}"
        );
    }

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(
            manifest_type_label("application/vnd.oci.image.manifest.v1+json; charset=x"),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(manifest_type_label("text/evil-series-12345"), "other");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(
            upload_post(Some("mount=sha256:x&from=a")),
            UploadPost::Mount
        );
        assert_eq!(upload_post(Some("digest=sha256:x")), UploadPost::Monolithic);
        assert_eq!(upload_post(Some("mount=sha256:x")), UploadPost::Session);
        assert_eq!(upload_post(None), UploadPost::Session);
    }
}

/// The notification endpoints' counters
/// ([`crate::notify::Notifier::stats`]), read at each scrape.
#[derive(Debug)]
pub struct NotifyCollector(pub Arc<crate::notify::Notifier>);

impl Collector for NotifyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let labels: Vec<[(&str, &str); 1]> = stats
            .iter()
            .map(|e| [("endpoint", e.name.as_str())])
            .collect();
        let events: Vec<[(&str, &str); 2]> = stats
            .iter()
            .flat_map(|e| {
                [
                    [("endpoint", e.name.as_str()), ("result", "sent")],
                    [("endpoint", e.name.as_str()), ("result", "dropped")],
                ]
            })
            .collect();
        let counts: Vec<(&[(&str, &str)], u64)> = events
            .iter()
            .zip(stats.iter().flat_map(|e| [e.sent, e.dropped]))
            .map(|(l, n)| (&l[..], n))
            .collect();
        series_of(
            &mut encoder,
            "notification_events",
            "Notification events by endpoint and result (dropped: the endpoint's queue was full)",
            MetricType::Counter,
            &counts,
        )?;
        let series = |f: fn(&crate::notify::EndpointStats) -> u64| -> Vec<(&[(&str, &str)], u64)> {
            labels
                .iter()
                .zip(&stats)
                .map(|(l, e)| (&l[..], f(e)))
                .collect()
        };
        series_of(
            &mut encoder,
            "notification_delivery_failures",
            "Failed delivery attempts by endpoint (each retry counts)",
            MetricType::Counter,
            &series(|e| e.failures),
        )?;
        series_of(
            &mut encoder,
            "notification_queue_length",
            "Events waiting or being delivered, by endpoint",
            MetricType::Gauge,
            &series(|e| e.queued as u64),
        )?;
        series_of(
            &mut encoder,
            "notification_endpoint_failing",
            "1 while an endpoint has failed `threshold` consecutive deliveries",
            MetricType::Gauge,
            &series(|e| u64::from(e.failing)),
        )
    }
}

/// The health checks' states ([`crate::health::HealthChecks::statuses`]),
/// read at each scrape.
#[derive(Debug)]
pub struct HealthCollector(pub crate::health::HealthChecks);

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.0.statuses();
        let labels: Vec<[(&str, &str); 1]> = statuses
            .iter()
            .map(|c| [("check", c.name.as_str())])
            .collect();
        let series = |f: fn(&crate::health::CheckStatus) -> u64| -> Vec<(&[(&str, &str)], u64)> {
            labels
                .iter()
                .zip(&statuses)
                .map(|(l, c)| (&l[..], f(c)))
                .collect()
        };
        series_of(
            &mut encoder,
            "health_check_failing",
            "1 while a health check has failed `threshold` consecutive runs (the API answers 503)",
            MetricType::Gauge,
            &series(|c| u64::from(c.failing)),
        )?;
        series_of(
            &mut encoder,
            "health_check_consecutive_failures",
            "Failed runs of a health check since its last success",
            MetricType::Gauge,
            &series(|c| u64::from(c.consecutive_failures)),
        )
    }
}
