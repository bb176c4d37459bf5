//! The OCI Distribution v1.1 / Docker Registry v2 HTTP API on a [`Registry`].
//!
//! [`router`] gives an axum `Router`; run it with
//! `into_make_service_with_connect_info::<SocketAddr>()` so redirects can
//! see the client's address.

mod errors;
pub mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use regstore_core::{RedirectMethod, RedirectRequest};
use serde_json::json;

pub use errors::{ApiError, range_header};
use routes::Route;

use crate::registry::{
    Digest, MAX_MANIFEST_SIZE, Reference, Registry, RegistryError, RepoName, parse_upload_id,
};

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
}

/// The whole HTTP surface: `/` (200 for load balancers), `/debug/health`
/// (checks the driver), and the `/v2/` API.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", axum::routing::get(|| async { StatusCode::OK }))
        .route("/debug/health", axum::routing::get(health))
        .fallback(api)
        .layer(axum::middleware::map_request_with_state(
            state.limits.body_timeout,
            body_timeout,
        ));
    let routes = if state.access_log {
        routes.layer(axum::middleware::from_fn(access_log))
    } else {
        routes
    };
    routes
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            add_configured_headers,
        ))
        .with_state(state)
}

/// One `info` line per request: method, path, status, time to the response
/// head (bodies stream on afterwards).
/// A request body that sends nothing for `idle` ends with an error, which
/// the handlers treat as a cut connection (an upload keeps what arrived).
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

async fn access_log(request: Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(request).await;
    tracing::info!(
        target: "regstore::access",
        %method,
        path,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

async fn add_configured_headers(State(state): State<AppState>, mut resp: Response) -> Response {
    for (k, v) in state.headers.iter() {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

async fn health(State(state): State<AppState>) -> Response {
    match state.registry.check_health().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!(
                "storage driver {} is unhealthy: {e}",
                state.registry.driver().name()
            ),
        )
        .into_response(),
    }
}

/// Everything a handler needs from the request.
struct Req {
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    peer: Option<SocketAddr>,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn redirect_request(&self, method: RedirectMethod) -> RedirectRequest {
        let mut r = RedirectRequest::new(method);
        r.peer = self.peer.map(|p| p.ip());
        r.forwarded_for = self
            .header(&HeaderName::from_static("x-forwarded-for"))
            .map(str::to_owned);
        r.real_ip = self
            .header(&HeaderName::from_static("x-real-ip"))
            .map(str::to_owned);
        r
    }
}

async fn api(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
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
    let query = parts
        .uri
        .query()
        .map(|q| {
            let mut m = HashMap::new();
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
            m
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        peer: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        headers: parts.headers,
        query,
    };
    let method = req.method.clone();
    let mut resp = match handle(&state, route, req, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if method == Method::HEAD {
        // HEAD answers carry the headers of GET and no body; keep the
        // Content-Length the handler set.
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, Body::empty());
    }
    add_api_version(&mut resp);
    resp
}

fn add_api_version(resp: &mut Response) {
    resp.headers_mut().insert(
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
}

fn repo(name: &str) -> Result<RepoName, ApiError> {
    RepoName::parse(name).map_err(|e| RegistryError::from(e).into())
}

fn digest_param(s: &str) -> Result<Digest, ApiError> {
    s.parse::<Digest>()
        .map_err(|e| RegistryError::DigestInvalid(e.to_string()).into())
}

async fn handle(
    state: &AppState,
    route: Route,
    req: Req,
    body: Body,
) -> Result<Response, ApiError> {
    let reg = &state.registry;
    if reg.settings().read_only && !matches!(req.method, Method::GET | Method::HEAD) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the registry is in read-only mode (storage.maintenance.readonly.enabled)",
        ));
    }
    match route {
        Route::Base => match req.method {
            Method::GET | Method::HEAD => Ok(json_response(StatusCode::OK, "{}".into())),
            ref m => Err(ApiError::method_not_allowed(m, "/v2/")),
        },
        Route::Catalog => match req.method {
            Method::GET => catalog(state, &req).await,
            ref m => Err(ApiError::method_not_allowed(m, "the catalog")),
        },
        Route::Tags(name) => {
            let name = repo(&name)?;
            match req.method {
                Method::GET => tags(state, &name, &req).await,
                ref m => Err(ApiError::method_not_allowed(m, "a tag list")),
            }
        }
        Route::Referrers(name, d) => {
            let name = repo(&name)?;
            let d = digest_param(&d)?;
            match req.method {
                Method::GET => referrers(state, &name, &d, &req).await,
                ref m => Err(ApiError::method_not_allowed(m, "referrers")),
            }
        }
        Route::Blob(name, d) => {
            let name = repo(&name)?;
            let d = digest_param(&d)?;
            match req.method {
                Method::GET | Method::HEAD => get_blob(state, &name, &d, &req).await,
                Method::DELETE => {
                    reg.delete_blob(&name, &d).await?;
                    Ok(empty(StatusCode::ACCEPTED))
                }
                ref m => Err(ApiError::method_not_allowed(m, "a blob")),
            }
        }
        Route::Manifest(name, reference) => {
            let name = repo(&name)?;
            let reference = Reference::parse(&reference).map_err(RegistryError::from)?;
            match req.method {
                Method::GET | Method::HEAD => {
                    let m = reg.get_manifest(&name, &reference).await?;
                    let mut resp = Response::new(Body::from(m.body.clone()));
                    let h = resp.headers_mut();
                    h.insert(header::CONTENT_TYPE, hv(&m.media_type));
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.body.len()));
                    h.insert(docker_content_digest(), hv(&m.digest.to_string()));
                    h.insert(header::ETAG, hv(&format!("\"{}\"", m.digest)));
                    Ok(resp)
                }
                Method::PUT => put_manifest(state, &name, &reference, &req, body).await,
                Method::DELETE => {
                    reg.delete_manifest(&name, &reference).await?;
                    Ok(empty(StatusCode::ACCEPTED))
                }
                ref m => Err(ApiError::method_not_allowed(m, "a manifest")),
            }
        }
        Route::UploadStart(name) => {
            let name = repo(&name)?;
            match req.method {
                Method::POST => start_upload(state, &name, &req, body).await,
                ref m => Err(ApiError::method_not_allowed(m, "the upload endpoint")),
            }
        }
        Route::Upload(name, uuid) => {
            let name = repo(&name)?;
            let uuid = parse_upload_id(&uuid)?;
            match req.method {
                Method::GET => {
                    let status = reg.upload_status(&name, &uuid).await?;
                    Ok(upload_response(
                        state,
                        StatusCode::NO_CONTENT,
                        &name,
                        &uuid,
                        status.size,
                    ))
                }
                Method::PATCH => patch_upload(state, &name, &uuid, &req, body).await,
                Method::PUT => put_upload(state, &name, &uuid, &req, body).await,
                Method::DELETE => {
                    reg.cancel_upload(&name, &uuid).await?;
                    Ok(empty(StatusCode::NO_CONTENT))
                }
                ref m => Err(ApiError::method_not_allowed(m, "an upload")),
            }
        }
    }
}

/// A header value from text the registry produced (digests, media types,
/// URLs of valid names); anything unprintable becomes empty rather than a panic.
fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

fn docker_content_digest() -> HeaderName {
    HeaderName::from_static("docker-content-digest")
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn location(state: &AppState, path: &str) -> HeaderValue {
    match &state.base_url {
        Some(base) => hv(&format!("{}{path}", base.trim_end_matches('/'))),
        None => hv(path),
    }
}

fn blob_created(state: &AppState, name: &RepoName, d: &Digest) -> Response {
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        location(state, &format!("/v2/{name}/blobs/{d}")),
    );
    h.insert(docker_content_digest(), hv(&d.to_string()));
    resp
}

fn upload_response(
    state: &AppState,
    status: StatusCode,
    name: &RepoName,
    uuid: &str,
    size: u64,
) -> Response {
    let mut resp = empty(status);
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        location(state, &format!("/v2/{name}/blobs/uploads/{uuid}")),
    );
    h.insert(header::RANGE, range_header(size));
    h.insert(HeaderName::from_static("docker-upload-uuid"), hv(uuid));
    resp
}

/// A byte range of a blob of `size` bytes: `(start, length)`, `Ok(None)` for
/// no (or an ignorable multi-) range, `Err` for an unsatisfiable one.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        let n = n.min(size);
        return Ok(Some((size - n, n)));
    }
    let start: u64 = a.parse().map_err(|_| ())?;
    if start >= size {
        return Err(());
    }
    let end = if b.is_empty() {
        size - 1
    } else {
        let end: u64 = b.parse().map_err(|_| ())?;
        if end < start {
            return Err(());
        }
        end.min(size - 1)
    };
    Ok(Some((start, end - start + 1)))
}

async fn get_blob(
    state: &AppState,
    name: &RepoName,
    d: &Digest,
    req: &Req,
) -> Result<Response, ApiError> {
    let reg = &state.registry;
    let info = reg.stat_blob(name, d).await?;
    let method = if req.method == Method::HEAD {
        RedirectMethod::Head
    } else {
        RedirectMethod::Get
    };
    if let Some(url) = reg.blob_redirect(d, &req.redirect_request(method)).await? {
        let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
        resp.headers_mut()
            .insert(header::LOCATION, hv(url.as_str()));
        resp.headers_mut()
            .insert(docker_content_digest(), hv(&d.to_string()));
        return Ok(resp);
    }
    let range = match req.header(&header::RANGE) {
        None => None,
        Some(v) => parse_range(v, info.size).map_err(|()| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!(
                    "range {v:?} is not satisfiable for a blob of {} bytes",
                    info.size
                ),
            )
            .header(header::CONTENT_RANGE, hv(&format!("bytes */{}", info.size)))
        })?,
    };
    let (status, start, len) = match range {
        Some((start, len)) => (StatusCode::PARTIAL_CONTENT, start, len),
        None => (StatusCode::OK, 0, info.size),
    };
    let body = if req.method == Method::HEAD || len == 0 {
        Body::empty()
    } else {
        let stream = reg.read_blob(d, start).await?;
        Body::from_stream(limit(stream, len))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(docker_content_digest(), hv(&d.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{d}\"")));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{}/{}", start + len - 1, info.size)),
        );
    }
    Ok(resp)
}

/// The first `len` bytes of a stream.
fn limit(
    stream: regstore_core::ByteStream,
    len: u64,
) -> impl futures_util::Stream<Item = regstore_core::Result<Bytes>> + Send {
    stream.scan(len, |left, item| {
        let out = match item {
            Ok(_) if *left == 0 => None,
            Ok(mut chunk) => {
                if chunk.len() as u64 > *left {
                    chunk.truncate(*left as usize);
                }
                *left -= chunk.len() as u64;
                Some(Ok(chunk))
            }
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    })
}

async fn put_manifest(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = req.header(&header::CONTENT_TYPE).map(str::to_owned);
    // Room for the body in the memory all manifest pushes share; a body
    // of unknown length may be as large as the limit.
    let declared = req
        .header(&header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(MAX_MANIFEST_SIZE);
    let _room = state.registry.reserve_manifest_bytes(declared).await;
    let body = read_bounded(body, MAX_MANIFEST_SIZE)
        .await
        .map_err(|e| match e {
            Bounded::TooLarge(n) => RegistryError::ManifestTooLarge(n),
            Bounded::Broken(m) => {
                RegistryError::ManifestInvalid(format!("the request body broke off: {m}"))
            }
        })?;
    let put = state
        .registry
        .put_manifest(name, reference, content_type.as_deref(), body)
        .await?;
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        location(state, &format!("/v2/{name}/manifests/{}", put.digest)),
    );
    h.insert(docker_content_digest(), hv(&put.digest.to_string()));
    if let Some(subject) = &put.subject {
        h.insert(
            HeaderName::from_static("oci-subject"),
            hv(&subject.to_string()),
        );
    }
    Ok(resp)
}

enum Bounded {
    TooLarge(String),
    Broken(String),
}

/// Reads a body of at most `limit` bytes. A larger body is drained (up to
/// four times the limit, so the client can read the error instead of
/// seeing a broken pipe) and refused.
async fn read_bounded(body: Body, limit: usize) -> Result<Bytes, Bounded> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Bounded::Broken(e.to_string()))?;
        total += chunk.len();
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > limit.saturating_mul(4) {
            return Err(Bounded::TooLarge(format!("more than {total}")));
        }
    }
    if total > limit {
        return Err(Bounded::TooLarge(total.to_string()));
    }
    Ok(buf.freeze())
}

async fn start_upload(
    state: &AppState,
    name: &RepoName,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let reg = &state.registry;
    if let (Some(mount), Some(from)) = (req.param("mount"), req.param("from")) {
        let d = digest_param(mount)?;
        if let Ok(from) = RepoName::parse(from)
            && reg.mount_blob(name, &from, &d).await?.is_some()
        {
            return Ok(blob_created(state, name, &d));
        }
    }
    if let Some(d) = req.param("digest") {
        let d = digest_param(d)?;
        let info = reg.put_blob(name, &d, body.into_data_stream()).await?;
        return Ok(blob_created(state, name, &info.digest));
    }
    let uuid = reg.start_upload(name).await?;
    Ok(upload_response(state, StatusCode::ACCEPTED, name, &uuid, 0))
}

/// `Content-Range: <start>-<end>` of a chunk (also accepted with a `bytes`
/// prefix); `None` if absent.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    let (a, b) = v.split_once('-')?;
    let b = b.split('/').next()?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Where a chunk says it starts: the start of `Content-Range` (checked
/// against `Content-Length`), or `None` without the header.
fn chunk_start(req: &Req) -> Result<Option<u64>, ApiError> {
    let Some(v) = req.header(&header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let Some((start, end)) = parse_content_range(v) else {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            format!("Content-Range {v:?} is not <start>-<end>"),
        ));
    };
    let length = req
        .header(&header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if end < start || length.is_some_and(|l| l != end - start + 1) {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Range {v} does not match Content-Length {}",
            length.map_or("(none)".into(), |l| l.to_string())
        ))
        .into());
    }
    Ok(Some(start))
}

/// The API error for `e`; a chunk that does not start where the upload
/// stands (416) also says where the upload is, so the client can go on.
fn upload_error(state: &AppState, name: &RepoName, uuid: &str, e: RegistryError) -> ApiError {
    match e {
        RegistryError::RangeInvalid { .. } => ApiError::from(e).header(
            header::LOCATION,
            location(state, &format!("/v2/{name}/blobs/uploads/{uuid}")),
        ),
        e => e.into(),
    }
}

async fn patch_upload(
    state: &AppState,
    name: &RepoName,
    uuid: &str,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let start = chunk_start(req)?;
    let status = state
        .registry
        .append_upload(name, uuid, start, body.into_data_stream())
        .await
        .map_err(|e| upload_error(state, name, uuid, e))?;
    Ok(upload_response(
        state,
        StatusCode::ACCEPTED,
        name,
        uuid,
        status.size,
    ))
}

async fn put_upload(
    state: &AppState,
    name: &RepoName,
    uuid: &str,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(d) = req.param("digest") else {
        return Err(RegistryError::DigestInvalid(
            "the final PUT of an upload needs ?digest=<digest>".into(),
        )
        .into());
    };
    let d = digest_param(d)?;
    let start = chunk_start(req)?;
    let info = state
        .registry
        .complete_upload(name, uuid, &d, start, body.into_data_stream())
        .await
        .map_err(|e| upload_error(state, name, uuid, e))?;
    Ok(blob_created(state, name, &info.digest))
}

fn page_link(path: &str, n: usize, last: &str) -> HeaderValue {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    hv(&format!("<{path}?{q}>; rel=\"next\""))
}

fn page_size(req: &Req, default: usize) -> Result<usize, ApiError> {
    match req.param("n") {
        None => Ok(default),
        Some(n) => n.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("n={n:?} is not a non-negative integer"),
            )
        }),
    }
}

async fn tags(state: &AppState, name: &RepoName, req: &Req) -> Result<Response, ApiError> {
    let all = state.registry.tags(name).await?;
    let n = page_size(req, usize::MAX)?;
    let after: Vec<String> = match req.param("last") {
        Some(last) => all.into_iter().filter(|t| t.as_str() > last).collect(),
        None => all,
    };
    let more = after.len() > n;
    let page: Vec<String> = after.into_iter().take(n).collect();
    let mut resp = json_response(
        StatusCode::OK,
        json!({ "name": name.as_str(), "tags": page }).to_string(),
    );
    if more && let Some(last) = page.last() {
        resp.headers_mut().insert(
            header::LINK,
            page_link(&format!("/v2/{name}/tags/list"), n, last),
        );
    }
    Ok(resp)
}

async fn catalog(state: &AppState, req: &Req) -> Result<Response, ApiError> {
    let n = page_size(req, MAX_CATALOG_ENTRIES)?.min(MAX_CATALOG_ENTRIES);
    let last = match req.param("last") {
        Some(l) => Some(repo(l)?),
        None => None,
    };
    let (names, more) = state.registry.catalog(n, last.as_ref()).await?;
    let mut resp = json_response(StatusCode::OK, json!({ "repositories": names }).to_string());
    if more && let Some(last) = names.last() {
        resp.headers_mut()
            .insert(header::LINK, page_link("/v2/_catalog", n, last));
    }
    Ok(resp)
}

async fn referrers(
    state: &AppState,
    name: &RepoName,
    subject: &Digest,
    req: &Req,
) -> Result<Response, ApiError> {
    let artifact_type = req.param("artifactType");
    let last = req.param("last").map(digest_param).transpose()?;
    let (list, next) = state
        .registry
        .referrers(name, subject, artifact_type, last.as_ref())
        .await?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": list.iter().map(|r| r.to_descriptor()).collect::<Vec<_>>(),
    });
    let mut resp = json_response(StatusCode::OK, index.to_string());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
    );
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            HeaderName::from_static("oci-filters-applied"),
            HeaderValue::from_static("artifactType"),
        );
    }
    if let Some(next) = next {
        // Further pages, as the spec allows: the same query after `next`.
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(at) = artifact_type {
            q.append_pair("artifactType", at);
        }
        q.append_pair("last", &next.to_string());
        let link = format!(
            "</v2/{name}/referrers/{subject}?{}>; rel=\"next\"",
            q.finish()
        );
        resp.headers_mut().insert(header::LINK, hv(&link));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=90-200", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-4", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=x-", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9)));
        assert_eq!(parse_content_range("x"), None);
    }
}
