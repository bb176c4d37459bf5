//! `/v2/<name>/manifests/<reference>`: GET and HEAD, PUT (bounded in size
//! and in the memory all pushes share), DELETE.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;

use super::events;
use super::request::Req;
use super::response::{docker_content_digest, empty, hv, location};
use super::{ApiError, AppState};
use crate::registry::{MAX_MANIFEST_SIZE, Reference, RegistryError, RepoName};

/// A request on one manifest.
pub(super) async fn handle(
    state: &AppState,
    name: &RepoName,
    reference: &Reference,
    req: &Req,
    body: Body,
) -> Result<Response, ApiError> {
    let reg = &state.registry;
    match req.method {
        Method::GET | Method::HEAD => {
            let m = match &state.proxy {
                None => reg.get_manifest(name, reference).await?,
                Some(proxy) => {
                    let accept = accepted(req);
                    let accept: Vec<&str> = accept.iter().map(String::as_str).collect();
                    proxy.manifest(reg, name, reference, &accept).await?
                }
            };
            let mut resp = Response::new(Body::from(m.body.clone()));
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, hv(&m.media_type));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.body.len()));
            h.insert(docker_content_digest(), hv(&m.digest.to_string()));
            h.insert(header::ETAG, hv(&format!("\"{}\"", m.digest)));
            if req.method == Method::GET {
                events::manifest_pulled(state, req, name, reference, &m);
            }
            Ok(resp)
        }
        Method::PUT => put_manifest(state, name, reference, req, body).await,
        Method::DELETE => {
            reg.delete_manifest(name, reference).await?;
            events::manifest_deleted(state, req, name, reference);
            Ok(empty(StatusCode::ACCEPTED))
        }
        ref m => Err(ApiError::method_not_allowed(m, "a manifest")),
    }
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
        .put_manifest(name, reference, content_type.as_deref(), body.clone())
        .await?;
    events::manifest_pushed(state, req, name, reference, &put.digest, &body);
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

/// The media types of the request's `Accept` headers, without
/// parameters (`;q=…`).
fn accepted(req: &Req) -> Vec<String> {
    req.headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| t.split(';').next())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
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
