//! `http.cors` (a regstore extension): CORS headers for browser clients.
//!
//! - A request without `Origin` is untouched.
//! - A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an
//!   allowed origin is answered here, before authentication (browsers send
//!   no credentials on a preflight): 204 with `Access-Control-Allow-Origin`,
//!   `-Allow-Methods`, `-Allow-Headers`, `-Max-Age` (when `maxage` is set)
//!   and `-Allow-Credentials` (when `allowcredentials`).
//! - A preflight from an origin that is not allowed: 403, with no CORS
//!   headers.
//! - Any other request goes on as usual; when its origin is allowed, the
//!   answer (errors included: a browser needs to read a 401's
//!   `WWW-Authenticate`) gets `Access-Control-Allow-Origin`,
//!   `-Expose-Headers` and `-Allow-Credentials` (when `allowcredentials`).
//!
//! `Access-Control-Allow-Origin` is `*` only when `allowedorigins` holds `*`
//! and credentials are off (browsers refuse `*` with credentials);
//! otherwise it is the request's origin, with `Vary: Origin` so caches keep
//! answers to different origins apart.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::CorsConfig;

/// The CORS layer of [`super::router`].
pub(super) async fn layer(
    State(cors): State<Arc<CorsConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let allowed = origin.to_str().is_ok_and(|o| cors.allows(o));
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            tracing::debug!(?origin, "CORS preflight from an origin not allowed");
            return (
                StatusCode::FORBIDDEN,
                "origin not allowed (http.cors.allowedorigins)",
            )
                .into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow_origin(h, &cors, origin);
        set_list(
            h,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &cors.allowed_methods,
        );
        set_list(
            h,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &cors.allowed_headers,
        );
        if let Some(age) = cors.max_age {
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(age.as_secs()),
            );
        }
        return resp;
    }
    let mut resp = next.run(request).await;
    if allowed {
        let h = resp.headers_mut();
        allow_origin(h, &cors, origin);
        set_list(
            h,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &cors.exposed_headers,
        );
    }
    resp
}

/// `Access-Control-Allow-Origin` (with `Vary: Origin` when it names the
/// origin) and `-Allow-Credentials`.
fn allow_origin(h: &mut HeaderMap, cors: &CorsConfig, origin: HeaderValue) {
    if cors.any_origin() && !cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// A comma-separated list header; the names were checked when the config
/// was read, so a value that still does not fit is left out.
fn set_list(h: &mut HeaderMap, name: header::HeaderName, values: &[String]) {
    if values.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&values.join(", ")) {
        h.insert(name, v);
    }
}
