//! `/v2/<name>/blobs/<digest>`: GET and HEAD (ranges, redirects), DELETE.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use regstore_core::RedirectMethod;

use super::events;
use super::request::{Req, parse_range};
use super::response::{docker_content_digest, empty, hv};
use super::{ApiError, AppState};
use crate::proxy::BlobMiss;
use crate::registry::{Digest, RegistryError, RepoName};

/// A request on one blob.
pub(super) async fn handle(
    state: &AppState,
    name: &RepoName,
    d: &Digest,
    req: &Req,
) -> Result<Response, ApiError> {
    match req.method {
        Method::GET | Method::HEAD => {
            let (resp, size) = get_blob(state, name, d, req).await?;
            if req.method == Method::GET {
                events::blob_pulled(state, req, name, d, size);
            }
            Ok(resp)
        }
        Method::DELETE => {
            state.registry.delete_blob(name, d).await?;
            events::blob_deleted(state, req, name, d);
            Ok(empty(StatusCode::ACCEPTED))
        }
        ref m => Err(ApiError::method_not_allowed(m, "a blob")),
    }
}

/// The answer to a GET or HEAD, and the blob's size when known (a
/// pull-through fetch may not announce it).
async fn get_blob(
    state: &AppState,
    name: &RepoName,
    d: &Digest,
    req: &Req,
) -> Result<(Response, Option<u64>), ApiError> {
    let reg = &state.registry;
    let get = req.method == Method::GET;
    let info = match (reg.stat_blob(name, d).await, &state.proxy) {
        (Ok(info), proxy) => {
            if let Some(p) = proxy {
                p.note_blob_hit();
            }
            info
        }
        (Err(RegistryError::BlobUnknown(_)), Some(proxy)) => {
            match proxy.blob_miss(reg, name, d, get).await? {
                BlobMiss::Adopted(info) => info,
                BlobMiss::Upstream(size) => {
                    return Ok((
                        blob_response(d, req.header(&header::RANGE), size)?.0,
                        Some(size),
                    ));
                }
                BlobMiss::Fetching(size, bytes) => {
                    return Ok((fetched(d, req, size, bytes)?, size));
                }
            }
        }
        (Err(e), _) => return Err(e.into()),
    };
    let method = if get {
        RedirectMethod::Get
    } else {
        RedirectMethod::Head
    };
    if let Some(url) = reg.blob_redirect(d, &req.redirect_request(method)).await? {
        let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
        resp.headers_mut()
            .insert(header::LOCATION, hv(url.as_str()));
        resp.headers_mut()
            .insert(docker_content_digest(), hv(&d.to_string()));
        return Ok((resp, Some(info.size)));
    }
    let (mut resp, start, len) = blob_response(d, req.header(&header::RANGE), info.size)?;
    if get && len > 0 {
        let stream = reg.read_blob(d, start).await?;
        *resp.body_mut() = Body::from_stream(byte_range(stream, 0, len));
    }
    Ok((resp, Some(info.size)))
}

/// A blob being fetched by the pull-through cache, as the request asks:
/// whole, or the `Range` of it, when upstream announced the length;
/// whole (a `Range` ignored, as HTTP allows), without `Content-Length`,
/// when it did not.
fn fetched(
    d: &Digest,
    req: &Req,
    size: Option<u64>,
    bytes: crate::proxy::fetch::BlobBytes,
) -> Result<Response, ApiError> {
    let Some(size) = size else {
        let (mut resp, _, _) = blob_response(d, None, 0)?;
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        resp.headers_mut().remove(header::ACCEPT_RANGES);
        *resp.body_mut() = Body::from_stream(bytes.map(|r| r.map_err(std::io::Error::other)));
        return Ok(resp);
    };
    let (mut resp, start, len) = blob_response(d, req.header(&header::RANGE), size)?;
    if len > 0 {
        *resp.body_mut() = Body::from_stream(
            byte_range(bytes, start, len).map(|r| r.map_err(std::io::Error::other)),
        );
    }
    Ok(resp)
}

/// The headers of a blob of `size` bytes as asked (whole, or the `range`
/// header's bytes), with an empty body: the response, and the offset and
/// length of the bytes it is to carry. A `Range` that cannot be served is
/// 416 `RANGE_INVALID` (distribution's code for it; the blob is known, so
/// not `BLOB_UNKNOWN`) with `Content-Range: bytes */<size>`.
fn blob_response(
    d: &Digest,
    range: Option<&str>,
    size: u64,
) -> Result<(Response, u64, u64), ApiError> {
    let range = match range {
        None => None,
        Some(v) => parse_range(v, size).map_err(|()| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                format!("range {v:?} is not satisfiable for a blob of {size} bytes"),
            )
            .header(header::CONTENT_RANGE, hv(&format!("bytes */{size}")))
        })?,
    };
    let (status, start, len) = match range {
        Some((start, len)) => (StatusCode::PARTIAL_CONTENT, start, len),
        None => (StatusCode::OK, 0, size),
    };
    let mut resp = Response::new(Body::empty());
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
            hv(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    Ok((resp, start, len))
}

/// Bytes `skip..skip + len` of a stream of chunks: what a `Range` takes
/// from a stored blob (read from its offset, so `skip` is 0) or from a
/// pull-through fetch (which always starts at the blob's first byte).
fn byte_range<S, E>(stream: S, skip: u64, len: u64) -> impl Stream<Item = Result<Bytes, E>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: Send,
{
    stream.scan((skip, len), |(skip, left), item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(_) if *left == 0 => None,
            Ok(mut chunk) => {
                let drop = (*skip).min(chunk.len() as u64);
                *skip -= drop;
                let mut chunk = chunk.split_off(drop as usize);
                if chunk.len() as u64 > *left {
                    chunk.truncate(*left as usize);
                }
                *left -= chunk.len() as u64;
                Some(Ok(chunk))
            }
        };
        std::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_range_skips_and_stops_across_chunks() {
        let chunks: Vec<Result<bytes::Bytes, String>> = (0u8..10)
            .map(|i| Ok(bytes::Bytes::from(vec![i; 4])))
            .collect();
        let s = futures_util::stream::iter(chunks);
        let got: Vec<u8> = byte_range(s, 6, 7)
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(got, [1, 1, 2, 2, 2, 2, 3]);
        let whole = futures_util::stream::iter(vec![Ok::<_, String>(Bytes::from(vec![7u8; 10]))]);
        let got: Vec<u8> = byte_range(whole, 0, 4)
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(got, [7, 7, 7, 7], "from the start, cut at the length");
    }
}
