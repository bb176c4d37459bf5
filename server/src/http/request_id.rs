//! Request ids: every request carries one, the client's `X-Request-Id`
//! when it is sane (printable ASCII, 1 to 128 characters) or a fresh UUID.
//! It is echoed as `X-Request-Id` on the response, written in the access
//! log (`request_id`), and stored as a request extension ([`RequestId`])
//! for the handlers (notification events name it).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// `X-Request-Id`.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-given id kept.
pub const MAX_LEN: usize = 128;

/// The id of the request being served (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's id if it is printable ASCII of 1 to [`MAX_LEN`]
/// characters.
fn sane(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    let ok = !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (0x20..0x7f).contains(c));
    ok.then(|| v.to_str().ok()).flatten()
}

/// The middleware: gives the request its id and echoes it.
pub(super) async fn layer(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(sane)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Sane ids and UUIDs are valid header values.
    let value = HeaderValue::from_str(&id).ok();
    request.extensions_mut().insert(RequestId(id));
    let mut resp = next.run(request).await;
    if let Some(v) = value {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_printable_ascii_up_to_128_is_kept() {
        let v = |s: &[u8]| HeaderValue::from_bytes(s).unwrap();
        assert_eq!(sane(&v(b"abc-123 x")), Some("abc-123 x"));
        assert_eq!(sane(&v(&[b'a'; 128])).map(str::len), Some(128));
        assert_eq!(sane(&v(&[b'a'; 129])), None);
        assert_eq!(sane(&v(b"")), None);
        assert_eq!(sane(&v(b"a\tb")), None);
        assert_eq!(sane(&v("é".as_bytes())), None);
    }
}
