//! Reading a request: its query, the headers the API defines (`Range`,
//! `Content-Range`, `Content-Length`, the addresses a redirect needs) and
//! the path parameters (names, digests, page sizes), each checked into the
//! API error that names what is wrong.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use regstore_core::{RedirectMethod, RedirectRequest};

use super::ApiError;
use crate::registry::{Digest, RegistryError, RepoName};

/// Everything a handler needs from the request.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
    query: HashMap<String, String>,
    pub(super) peer: Option<SocketAddr>,
    /// The request's id ([`super::request_id`]); empty when the router's
    /// layer did not run (handlers called directly).
    pub(super) request_id: String,
    /// `Host`, else the authority of the request line.
    pub(super) host: Option<String>,
    /// The authenticated user, once the request is authorized.
    pub(super) user: Option<String>,
}

impl Req {
    /// The parts of an incoming request a handler reads; the first value
    /// of a repeated query parameter counts.
    pub(super) fn from_parts(parts: Parts) -> Req {
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
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        Req {
            method: parts.method,
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            request_id: parts
                .extensions
                .get::<super::request_id::RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            host,
            user: None,
            headers: parts.headers,
            query,
        }
    }

    pub(super) fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    pub(super) fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(super) fn redirect_request(&self, method: RedirectMethod) -> RedirectRequest {
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

pub(super) fn repo(name: &str) -> Result<RepoName, ApiError> {
    RepoName::parse(name).map_err(|e| RegistryError::from(e).into())
}

pub(super) fn digest_param(s: &str) -> Result<Digest, ApiError> {
    s.parse::<Digest>()
        .map_err(|e| RegistryError::DigestInvalid(e.to_string()).into())
}

/// A byte range of a blob of `size` bytes: `(start, length)`, `Ok(None)` for
/// no (or an ignorable multi-) range, `Err` for an unsatisfiable one.
pub(crate) fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
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

/// `Content-Range: <start>-<end>` of a chunk (also accepted with a `bytes`
/// prefix); `None` if absent.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64)> {
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
pub(super) fn chunk_start(req: &Req) -> Result<Option<u64>, ApiError> {
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
    // Checked: `0-18446744073709551615` is 2^64 bytes, one more than a u64.
    let chunk_len = end.checked_sub(start).and_then(|d| d.checked_add(1));
    if chunk_len.is_none() || length.is_some_and(|l| Some(l) != chunk_len) {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Range {v} does not match Content-Length {}",
            length.map_or("(none)".into(), |l| l.to_string())
        ))
        .into());
    }
    Ok(Some(start))
}

pub(super) fn page_size(req: &Req, default: usize) -> Result<usize, ApiError> {
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
        assert_eq!(
            parse_content_range("0-18446744073709551615"),
            Some((0, u64::MAX))
        );
    }
}
