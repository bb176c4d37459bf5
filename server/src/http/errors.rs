//! OCI error responses: `{"errors":[{"code","message","detail"}]}` with the
//! status each code has in the Distribution Spec.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::{NameKind, RegistryError};

/// One OCI error, ready to be sent.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The spec's code (`BLOB_UNKNOWN`, …).
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// Structured detail, `null` if none.
    pub detail: Value,
    /// Extra headers (e.g. `Range` with a 416).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with no detail.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: Value::Null,
            headers: Vec::new(),
        }
    }

    /// Adds detail.
    pub fn detail(mut self, detail: Value) -> ApiError {
        self.detail = detail;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// 405 `UNSUPPORTED` for a method the endpoint does not offer.
    pub fn method_not_allowed(method: &axum::http::Method, what: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!("{method} is not supported on {what}"),
        )
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        use RegistryError as E;
        let message = e.to_string();
        match &e {
            E::BlobUnknown(d) => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", message)
                .detail(json!({ "digest": d.to_string() })),
            E::BlobUploadUnknown(_) | E::UploadDiscarded { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", message)
            }
            E::BlobUploadInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
            }
            E::DigestMismatch { expected, actual } => {
                ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message).detail(
                    json!({ "expected": expected.to_string(), "actual": actual.to_string() }),
                )
            }
            E::DigestInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
            }
            E::ManifestUnknown(r) => {
                ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
                    .detail(json!({ "reference": r }))
            }
            E::ManifestInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
            }
            E::ManifestTooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID", message)
            }
            E::ManifestBlobUnknown(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", message)
                    .detail(json!({ "digest": d.to_string() }))
            }
            E::NameInvalid(n) => {
                let code = match n.what {
                    NameKind::Repository => "NAME_INVALID",
                    NameKind::Tag => "TAG_INVALID",
                    NameKind::Reference => "DIGEST_INVALID",
                };
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            E::NameUnknown(n) => ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", message)
                .detail(json!({ "name": n.as_str() })),
            E::RangeInvalid { size, .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                message,
            )
            .header(header::RANGE, range_header(*size)),
            E::UploadBusy(_) => ApiError::new(StatusCode::CONFLICT, "BLOB_UPLOAD_INVALID", message)
                .header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            E::SizeInvalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", message),
            E::Unsupported(_) => {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
            }
            E::Corrupt(what) => {
                tracing::error!(problem = %what, "storage is inconsistent");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", message)
            }
            E::Catalog(inner) => {
                // As a storage failure: the detail (database host, file
                // path) goes to the log.
                tracing::warn!(error = %inner, "catalog index error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the catalog index (catalog.index) failed; retry later",
                )
                .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            E::Storage(inner) => {
                // The detail (paths on the server, backend answers) goes to
                // the log; the client learns which kind of failure it was.
                tracing::warn!(error = %inner, "storage error");
                let driver = inner.driver();
                if inner.kind() == regstore_core::ErrorKind::Credentials {
                    // The registry's own configuration, not the client's
                    // request: unavailable until an operator fixes it.
                    tracing::error!(error = %inner, "the storage backend refuses the registry's credentials");
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        format!(
                            "the storage backend ({driver}) refuses the registry's credentials"
                        ),
                    )
                } else if inner.is_storage_full() {
                    // Retrying does not help until an operator frees space.
                    tracing::error!(error = %inner, "the storage is full");
                    ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "UNAVAILABLE",
                        format!(
                            "the storage ({driver}) has no space left; this request stored nothing"
                        ),
                    )
                } else if matches!(inner, regstore_core::Error::Backend { .. }) {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UNAVAILABLE",
                        format!("the storage backend ({driver}) failed; retry later"),
                    )
                    .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                } else {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "UNKNOWN",
                        format!(
                            "the storage driver ({driver}) refused an operation ({})",
                            inner.kind()
                        ),
                    )
                }
            }
        }
    }
}

impl From<crate::proxy::ProxyError> for ApiError {
    /// Upstream's answer for the content asked: 404 with the resource's
    /// code when upstream has no such thing; 503 `UNAVAILABLE` when it
    /// cannot be reached (retryable); 429 when it limits the rate; 502
    /// `UNAVAILABLE` for anything else it did wrong (refused the
    /// credentials, answered 5xx or nonsense). The message names the
    /// upstream URL, never a credential.
    fn from(e: crate::proxy::ProxyError) -> ApiError {
        use crate::proxy::ProxyError as P;
        use crate::proxy::upstream::UpstreamError as U;
        let message = format!("pull-through cache: {e}");
        let (source, not_found, detail) = match e {
            P::Registry(inner) => return inner.into(),
            P::Manifest {
                reference, source, ..
            } => (
                source,
                "MANIFEST_UNKNOWN",
                json!({ "reference": reference }),
            ),
            P::Blob { digest, source, .. } => (
                source,
                "BLOB_UNKNOWN",
                json!({ "digest": digest.to_string() }),
            ),
        };
        let error = match &source {
            U::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, not_found, message),
            U::Unreachable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
                    .header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            }
            U::Status { status: 429, .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            }
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", message),
        };
        if !matches!(source, U::NotFound { .. }) {
            tracing::warn!("{}", error.message);
        }
        error.detail(detail)
    }
}

/// The `Range` header value for an upload holding `size` bytes: `0-<last>`
/// (`0-0` when empty, as distribution sends).
pub fn range_header(size: u64) -> HeaderValue {
    HeaderValue::try_from(format!("0-{}", size.saturating_sub(1)))
        .unwrap_or(HeaderValue::from_static("0-0"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": self.detail }]
        });
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.to_string(),
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}
