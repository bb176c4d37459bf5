//! `/v2/<name>/blobs/<digest>`: GET and HEAD (ranges, redirects), DELETE.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use regstore_core::RedirectMethod;

use super::request::{Req, parse_range};
use super::response::{docker_content_digest, empty, hv};
use super::{ApiError, AppState};
use crate::registry::{Digest, RepoName};

/// A request on one blob.
pub(super) async fn handle(
    state: &AppState,
    name: &RepoName,
    d: &Digest,
    req: &Req,
) -> Result<Response, ApiError> {
    match req.method {
        Method::GET | Method::HEAD => get_blob(state, name, d, req).await,
        Method::DELETE => {
            state.registry.delete_blob(name, d).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        ref m => Err(ApiError::method_not_allowed(m, "a blob")),
    }
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
