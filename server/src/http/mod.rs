//! The OCI Distribution v1.1 / Docker Registry v2 HTTP API on a [`Registry`].
//!
//! [`router`] gives an axum `Router`; run it with
//! `into_make_service_with_connect_info::<SocketAddr>()` so redirects can
//! see the client's address.
//!
//! Here: the router, its layers (body timeout, CORS, access log, request
//! ids ([`request_id`]), configured headers, metrics), `/debug/health` and
//! the 503 of the API while a health check fails, the debug server's
//! routes, and the dispatch of a parsed [`routes::Route`]
//! to the module of its resource — `blobs`, `uploads`, `manifests`,
//! `listings` (tags, catalog, referrers). `request` reads what a request
//! carries (query, `Range`, `Content-Range`, names and digests), `response`
//! builds the headers the API answers with, `errors` maps registry errors
//! to the spec's codes and bodies, `events` builds the notification events
//! the handlers emit.

mod blobs;
mod cors;
mod errors;
mod events;
mod listings;
mod manifests;
mod request;
pub mod request_id;
mod response;
pub mod routes;
mod uploads;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

pub use errors::{ApiError, range_header};
use routes::Route;

use crate::registry::{Reference, Registry, RegistryError};
use request::{Req, digest_param, repo};
// For the fuzz targets (`crate::fuzzing`).
pub(crate) use request::{parse_content_range, parse_range};

/// `Docker-Distribution-API-Version`, sent on every `/v2/` response.
pub const API_VERSION: &str = "registry/2.0";

/// Most entries a catalog page returns (distribution's default
/// `catalog.maxentries`).
pub const MAX_CATALOG_ENTRIES: usize = 1000;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The storage service.
    pub registry: Registry,
    /// `http.host`: when set, `Location` headers are absolute URLs on it;
    /// otherwise they are absolute paths, which every client resolves.
    pub base_url: Option<String>,
    /// `http.headers`: added to every response.
    pub headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    /// Timeouts and the connection limit.
    pub limits: crate::config::HttpLimits,
    /// One `info` line per request (target `regstore::access`); off with
    /// `log.accesslog.disabled: true`.
    pub access_log: bool,
    /// `auth`: who may ask.
    pub auth: crate::auth::Auth,
    /// `proxy`: a pull-through cache of another registry; `None` for an
    /// ordinary registry.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
    /// `http.debug.prometheus`: what requests record; `None` when metrics
    /// are off (nothing is recorded).
    pub metrics: Option<crate::metrics::Metrics>,
    /// `notifications`: where events about pushes, pulls, mounts and
    /// deletes go; `None` without an enabled endpoint.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
    /// `health`: the checks `/debug/health` reports; while one fails the
    /// `/v2/` API answers 503.
    pub health: crate::health::HealthChecks,
    /// `http.cors`: cross-origin access for browsers; `None` sends no CORS
    /// headers.
    pub cors: Option<Arc<crate::config::CorsConfig>>,
}

/// The whole HTTP surface: `/` (200 for load balancers), `/debug/health`
/// (the health checks, [`crate::health`]), and the `/v2/` API; with
/// `http.cors`, CORS headers on every answer to an allowed origin and
/// preflights answered before authentication.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", axum::routing::get(|| async { StatusCode::OK }))
        .route("/debug/health", axum::routing::get(health))
        .fallback(api)
        .layer(axum::middleware::map_request_with_state(
            state.limits.body_timeout,
            body_timeout,
        ));
    let routes = match &state.cors {
        Some(cors) => routes.layer(axum::middleware::from_fn_with_state(
            Arc::clone(cors),
            cors::layer,
        )),
        None => routes,
    };
    let routes = if state.access_log {
        routes.layer(axum::middleware::from_fn(access_log))
    } else {
        routes
    };
    let routes = routes
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .layer(axum::middleware::from_fn(request_id::layer))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            add_configured_headers,
        ));
    let routes = match &state.metrics {
        Some(m) => routes.layer(axum::middleware::from_fn_with_state(m.clone(), track)),
        None => routes,
    };
    routes.with_state(state)
}

/// Records the request in the metrics (see [`crate::metrics`]).
async fn track(
    State(metrics): State<crate::metrics::Metrics>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let (tracked, body) = metrics.track(&parts.method, parts.uri.query(), &parts.headers, body);
    tracked.finish(next.run(Request::from_parts(parts, body)).await)
}

/// The debug server's routes (`http.debug.addr`): `/debug/health` (as on
/// the API address), `/debug/vars` (a JSON summary: version, uptime,
/// driver and its operation counts, requests in flight), and the
/// Prometheus metrics at `metrics_path` when enabled.
pub fn debug_router(state: AppState, metrics_path: Option<&str>) -> Router {
    let started = std::time::Instant::now();
    let mut routes = Router::new()
        .route("/debug/health", axum::routing::get(health))
        .route(
            "/debug/vars",
            axum::routing::get(move |State(state): State<AppState>| async move {
                vars(&state, started)
            }),
        );
    if let (Some(path), Some(metrics)) = (metrics_path, state.metrics.clone()) {
        routes = routes.route(
            path,
            axum::routing::get(move || async move {
                match metrics.encode() {
                    Ok(text) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                        text,
                    )
                        .into_response(),
                    Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }),
        );
    }
    routes.with_state(state)
}

fn vars(state: &AppState, started: std::time::Instant) -> Response {
    let driver = state.registry.driver();
    let ops: serde_json::Map<String, serde_json::Value> = driver
        .metrics()
        .snapshot()
        .into_iter()
        .map(|(op, s)| {
            (
                op.as_str().to_owned(),
                serde_json::json!({
                    "calls": s.calls,
                    "errors": s.errors,
                    "seconds": s.total.as_secs_f64(),
                }),
            )
        })
        .collect();
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": started.elapsed().as_secs_f64(),
        "driver": driver.name(),
        "storage_operations": ops,
        "backend_requests": driver.backend_requests(),
        "proxy": state.proxy.as_ref().map(|p| {
            let s = p.stats();
            serde_json::json!({
                "upstream": p.upstream().url().as_str(),
                "manifest_hits": s.manifest_hits,
                "manifest_misses": s.manifest_misses,
                "blob_hits": s.blob_hits,
                "blob_misses": s.blob_misses,
                "blob_bytes_fetched": s.blob_bytes_fetched,
            })
        }),
    });
    response::json_response(StatusCode::OK, body.to_string())
}

/// A request body that sends nothing for `idle` ends with an error, which
/// the handlers treat as a cut connection (an upload keeps none of it).
async fn body_timeout(State(idle): State<std::time::Duration>, request: Request) -> Request {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE
    ) {
        return request;
    }
    request.map(|body| {
        let frames = body.into_data_stream();
        Body::from_stream(futures_util::stream::unfold(
            Some(frames),
            move |s| async move {
                let mut s = s?;
                match tokio::time::timeout(idle, s.next()).await {
                    Ok(Some(item)) => Some((item, Some(s))),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(axum::Error::new(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no request body byte for {} (http.bodytimeout)",
                                humantime::format_duration(idle)
                            ),
                        ))),
                        None,
                    )),
                }
            },
        ))
    })
}

/// One `info` line per request: method, path, request id, user (when
/// authenticated; never a password or token), status, time to the
/// response head (bodies stream on afterwards).
async fn access_log(request: Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let request_id = request
        .extensions()
        .get::<request_id::RequestId>()
        .map(|r| r.0.clone());
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(request).await;
    let user = resp
        .extensions()
        .get::<crate::auth::Identity>()
        .and_then(|i| i.user());
    tracing::info!(
        target: "regstore::access",
        %method,
        path,
        request_id,
        user,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// Adds `Connection: close` to an error answer to a request that carries
/// a body (a PUT or PATCH refused for a full disk, a wrong range, a missing
/// upload, a failed authentication). Such an answer is often sent before
/// the body was read, and the server then closes the connection; without
/// the header a client may send its next request on that connection just
/// as it closes and see the request fail (hyper: `IncompleteMessage`, in
/// `server/tests/disk_full.rs` under CI's load). With it, the client opens
/// a new connection for the next request. Requests without a body, and
/// successful answers, keep their connection.
async fn close_after_refused_body(request: Request, next: axum::middleware::Next) -> Response {
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut resp = next.run(request).await;
    if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn add_configured_headers(State(state): State<AppState>, mut resp: Response) -> Response {
    for (k, v) in state.headers.iter() {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

/// `/debug/health`: 200 when no check fails, 503 when one does; the body is
/// distribution's, a JSON map of each failing check's name to its error
/// (`{}` when all pass). With `?verbose` (or `?verbose=true`/`1`) the body
/// lists every check instead: `{"checks": [{"name", "failing",
/// "consecutive_failures", "last_error"}]}` (a regstore extension; the
/// default body stays what distribution's clients read).
///
/// The checks are [`crate::health::HealthChecks::report`]'s: the periodic
/// ones as their last runs left them, and, without
/// `health.storagedriver.enabled`, one storage request made now.
async fn health(State(state): State<AppState>, request: Request) -> Response {
    let verbose = request.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "verbose" && matches!(v.as_ref(), "" | "true" | "1"))
    });
    let report = state.health.report().await;
    let status = if report.iter().any(|c| c.failing) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = if verbose {
        let checks: Vec<serde_json::Value> = report
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "failing": c.failing,
                    "consecutive_failures": c.consecutive_failures,
                    "last_error": c.last_error,
                })
            })
            .collect();
        serde_json::json!({ "checks": checks })
    } else {
        failing_map(&report)
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// distribution's health body: failing check name → its error.
fn failing_map(checks: &[crate::health::CheckStatus]) -> serde_json::Value {
    serde_json::Value::Object(
        checks
            .iter()
            .filter(|c| c.failing)
            .map(|c| {
                (
                    c.name.clone(),
                    serde_json::Value::from(c.last_error.clone().unwrap_or_default()),
                )
            })
            .collect(),
    )
}

/// 503 `UNAVAILABLE` naming the failing health checks (detail: the same map
/// as `/debug/health`), or `None` when none fails.
fn unavailable(state: &AppState) -> Option<ApiError> {
    let failing = state.health.failing();
    if failing.is_empty() {
        return None;
    }
    let names: Vec<&str> = failing.iter().map(|c| c.name.as_str()).collect();
    Some(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!(
                "the registry is out of service while health checks fail: {}",
                names.join(", ")
            ),
        )
        .detail(failing_map(&failing)),
    )
}

/// A HEAD answer: the headers of GET (`Content-Length` kept), no body.
fn without_body(resp: Response) -> Response {
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::empty())
}

async fn api(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path().starts_with("/v2")
        && let Some(e) = unavailable(&state)
    {
        let mut resp = e.into_response();
        if parts.method == Method::HEAD {
            resp = without_body(resp);
        }
        add_api_version(&mut resp);
        return resp;
    }
    let Some(route) = routes::parse(parts.uri.path()) else {
        let mut resp = ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no API endpoint at {}", parts.uri.path()),
        )
        .into_response();
        if parts.uri.path().starts_with("/v2/") {
            add_api_version(&mut resp);
        }
        return resp;
    };
    // Without auth nothing reads the scopes: no request pays for them.
    let auth_on = state.auth.enabled();
    let route_name = crate::metrics::RouteName(route.name());
    let mut req = Req::from_parts(parts);
    let method = req.method.clone();
    let needs = if auth_on {
        route.needs(&method, req.param("mount").and(req.param("from")))
    } else {
        Vec::new()
    };
    let host = if auth_on { req.host.as_deref() } else { None };
    let identity = state.auth.authenticate(&req.headers, host, &needs).await;
    let mut resp = match identity {
        Ok(identity) => {
            req.user = identity.user().map(str::to_owned);
            let handled = match state.auth.authorize(&identity, &needs) {
                Ok(()) => handle(&state, &identity, route, req, body).await,
                Err(denied) => Err(denied),
            };
            let mut resp = handled.unwrap_or_else(IntoResponse::into_response);
            resp.extensions_mut().insert(identity);
            resp
        }
        Err(e) => e.into_response(),
    };
    if method == Method::HEAD {
        resp = without_body(resp);
    }
    add_api_version(&mut resp);
    resp.extensions_mut().insert(route_name);
    resp
}

fn add_api_version(resp: &mut Response) {
    resp.headers_mut().insert(
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
}

/// Refuses writes in read-only mode and in a pull-through cache, then hands the request to the module
/// of its resource; `who` has been authorized for what the route needs.
async fn handle(
    state: &AppState,
    who: &crate::auth::Identity,
    route: Route,
    req: Req,
    body: Body,
) -> Result<Response, ApiError> {
    if state.registry.settings().read_only && !matches!(req.method, Method::GET | Method::HEAD) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the registry is in read-only mode (storage.maintenance.readonly.enabled)",
        ));
    }
    if let Some(proxy) = &state.proxy
        && !matches!(req.method, Method::GET | Method::HEAD)
        && !matches!(route, Route::Base)
    {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!(
                "the registry is a pull-through cache of {} (proxy.remoteurl): {} is not supported",
                proxy.upstream().url(),
                req.method
            ),
        ));
    }
    match route {
        Route::Base => match req.method {
            Method::GET | Method::HEAD => Ok(response::json_response(StatusCode::OK, "{}".into())),
            ref m => Err(ApiError::method_not_allowed(m, "/v2/")),
        },
        Route::Catalog => listings::handle_catalog(state, who, &req).await,
        Route::Tags(name) => listings::handle_tags(state, &repo(&name)?, &req).await,
        Route::Referrers(name, d) => {
            listings::handle_referrers(state, &repo(&name)?, &digest_param(&d)?, &req).await
        }
        Route::Blob(name, d) => blobs::handle(state, &repo(&name)?, &digest_param(&d)?, &req).await,
        Route::Manifest(name, reference) => {
            let name = repo(&name)?;
            let reference = Reference::parse(&reference).map_err(RegistryError::from)?;
            manifests::handle(state, &name, &reference, &req, body).await
        }
        Route::UploadStart(name) => uploads::handle_start(state, &repo(&name)?, &req, body).await,
        Route::Upload(name, uuid) => uploads::handle(state, &repo(&name)?, &uuid, &req, body).await,
    }
}
