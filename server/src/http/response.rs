//! Building answers: the headers the API sends (`Location`,
//! `Docker-Content-Digest`, `Range`, `Link`) and the empty and JSON bodies.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{AppState, range_header};
use crate::registry::{Digest, RepoName};

/// A header value from text the registry produced (digests, media types,
/// URLs of valid names); anything unprintable becomes empty rather than a panic.
pub(super) fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

pub(super) fn docker_content_digest() -> HeaderName {
    HeaderName::from_static("docker-content-digest")
}

pub(super) fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn location(state: &AppState, path: &str) -> HeaderValue {
    match &state.base_url {
        Some(base) => hv(&format!("{}{path}", base.trim_end_matches('/'))),
        None => hv(path),
    }
}

pub(super) fn blob_created(state: &AppState, name: &RepoName, d: &Digest) -> Response {
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        location(state, &format!("/v2/{name}/blobs/{d}")),
    );
    h.insert(docker_content_digest(), hv(&d.to_string()));
    resp
}

pub(super) fn upload_response(
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

/// `Link: <path?[keep&]n=…&last=…>; rel="next"`; `keep` are the query
/// pairs the next page repeats (a catalog search's `q`).
pub(super) fn page_link(path: &str, keep: &[(&str, &str)], n: usize, last: &str) -> HeaderValue {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in keep {
        q.append_pair(k, v);
    }
    let q = q
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    hv(&format!("<{path}?{q}>; rel=\"next\""))
}
