//! Requests to the Swift proxy: token handling, retries, the cluster's
//! `/info`, and how answers become errors.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use regstore_core::retry::{Backoff, Verdict, is_retryable_status, retry};
use regstore_core::{Error, RequestCounter, Result};
use regstore_objectstore::http::answer_verdict;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::OnceCell;

use crate::auth::{Auth, Session};

/// Retries of a request that failed retryably (network, 5xx, 429, 498):
/// four attempts, waits from 100 ms growing fourfold, jittered.
const RETRY: Backoff = Backoff::new(4, Duration::from_millis(100));

/// A status worth another attempt: 5xx, 429, and 498 (Swift's rate limit).
fn is_retryable(status: StatusCode) -> bool {
    is_retryable_status(status.as_u16()) || status.as_u16() == 498
}

/// What an object name needs escaped in a URL path: controls, space and the
/// characters with a meaning in URLs; `/` stays (Swift names contain it).
const OBJECT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'&')
    .add(b'+')
    .add(b';')
    .add(b'=');

/// `e` with its causes (`a: b: c`), each once: reqwest's own message leaves
/// out why a request failed (a refused certificate, a reset connection).
pub use regstore_core::causes as chain;

/// `name` escaped for a URL path.
pub fn escape(name: &str) -> String {
    utf8_percent_encode(name, OBJECT).to_string()
}

/// What the cluster says it supports (`GET /info`), as far as the driver
/// cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `bulk_delete.max_deletes_per_request`, when bulk delete is on.
    pub bulk_delete: Option<usize>,
    /// `slo.max_manifest_segments` (Swift's default 1000).
    pub max_manifest_segments: usize,
    /// `slo.min_segment_size` (Swift's default 1 MiB).
    pub min_segment_size: u64,
    /// `swift.container_listing_limit`: names per listing page at most
    /// (Swift's default 10,000).
    pub listing_limit: usize,
}

impl Info {
    /// From the `/info` JSON; Swift's defaults for what it leaves out.
    pub fn parse(body: &[u8]) -> Info {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let n = |v: &serde_json::Value| v.as_u64();
        Info {
            bulk_delete: v
                .get("bulk_delete")
                .map(|b| n(&b["max_deletes_per_request"]).unwrap_or(10_000))
                .and_then(|m| usize::try_from(m).ok()),
            max_manifest_segments: n(&v["slo"]["max_manifest_segments"])
                .and_then(|m| usize::try_from(m).ok())
                .unwrap_or(1000),
            min_segment_size: n(&v["slo"]["min_segment_size"]).unwrap_or(1 << 20),
            listing_limit: n(&v["swift"]["container_listing_limit"])
                .and_then(|m| usize::try_from(m).ok())
                .unwrap_or(10_000),
        }
    }
}

/// The account's container, reached through one HTTP client and token.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    auth: Auth,
    requests: RequestCounter,
    container: String,
    info: OnceCell<Info>,
}

impl Client {
    /// A client of `container` in the account `auth` logs in to.
    pub fn new(
        http: reqwest::Client,
        auth: Auth,
        requests: RequestCounter,
        container: String,
    ) -> Client {
        Client {
            http,
            auth,
            requests,
            container,
            info: OnceCell::new(),
        }
    }

    /// The container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Counts (and delays, under the latency middleware) every request.
    pub fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    /// The current session (see [`Auth::session`]).
    pub async fn session(&self) -> Result<std::sync::Arc<Session>> {
        self.auth.session().await
    }

    /// URL of the container, or of `name` in it.
    pub fn url(session: &Session, container: &str, name: Option<&str>) -> String {
        match name {
            Some(n) => format!(
                "{}/{}/{}",
                session.storage_url,
                escape(container),
                escape(n)
            ),
            None => format!("{}/{}", session.storage_url, escape(container)),
        }
    }

    /// Sends `method` to the object `name` (the container when `None`) with
    /// the query `query` (already encoded, without `?`), the rest of the
    /// request built by `extra`. Retries network errors, 5xx, 429 and 498
    /// with backoff (honouring `Retry-After`), and a 401 once per attempt after
    /// logging in again; every call here
    /// is safe to repeat. Returns the final answer, successful or not.
    ///
    /// # Errors
    /// Login failed, or the last attempt did not get an answer.
    pub async fn send(
        &self,
        method: Method,
        name: Option<&str>,
        query: &str,
        extra: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        self.send_to(
            |s| {
                let url = Self::url(s, &self.container, name);
                if query.is_empty() {
                    url
                } else {
                    format!("{url}?{query}")
                }
            },
            method,
            extra,
        )
        .await
    }

    /// [`Client::send`] to the URL `url` builds from the session.
    pub async fn send_to(
        &self,
        url: impl Fn(&Session) -> String,
        method: Method,
        extra: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        retry(&RETRY, "Swift request", |_| async {
            let mut relogged = false;
            loop {
                let session = match self.auth.session().await {
                    Ok(s) => s,
                    Err(e) => return Verdict::Done(Err(e)),
                };
                let req = extra(
                    self.http
                        .request(method.clone(), url(&session))
                        .header("X-Auth-Token", &session.token),
                );
                self.requests.request().await;
                return match req.send().await {
                    Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !relogged => {
                        // Expired or revoked early: log in again, once.
                        self.auth.invalidate(&session.token).await;
                        relogged = true;
                        continue;
                    }
                    sent => answer_verdict(sent, is_retryable, |e| {
                        format!("Swift {method}: {}", chain(e))
                    }),
                };
            }
        })
        .await
    }

    /// The cluster's capabilities, fetched once (`GET /info` at the
    /// proxy's root). A cluster that hides `/info` gets the defaults: no
    /// bulk delete.
    pub async fn info(&self) -> Result<&Info> {
        self.info
            .get_or_try_init(|| async {
                let resp = self
                    .send_to(|s| info_url(&s.storage_url), Method::GET, |r| r)
                    .await?;
                if !resp.status().is_success() {
                    tracing::warn!(status = %resp.status(), "Swift /info unavailable; assuming no bulk delete");
                    return Ok(Info::parse(b"{}"));
                }
                let body = resp.bytes().await.map_err(Error::backend)?;
                Ok(Info::parse(&body))
            })
            .await
    }
}

/// `/info` at the root of the proxy serving `storage_url`
/// (`https://host/v1/AUTH_x` → `https://host/info`).
pub fn info_url(storage_url: &str) -> String {
    match storage_url.rfind("/v1/") {
        Some(i) => format!("{}/info", &storage_url[..i]),
        None => match url::Url::parse(storage_url) {
            Ok(mut u) => {
                u.set_path("/info");
                u.set_query(None);
                u.to_string()
            }
            Err(_) => format!("{storage_url}/info"),
        },
    }
}

/// The error for an unexpected answer to `what` on `name`: 404 is
/// `PathNotFound`, 401 and 403 (after a fresh login) `Credentials`,
/// anything else `Backend` with the status and the start of the body.
pub async fn http_error(resp: Response, what: &str, name: &str) -> Error {
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Error::not_found(format!("/{name}"));
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    let message = format!("Swift {what} of {name}: HTTP {status}: {body}");
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Error::credentials(message);
    }
    Error::backend(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_at_the_proxy_root() {
        assert_eq!(
            info_url("http://127.0.0.1:19030/v1/AUTH_test"),
            "http://127.0.0.1:19030/info"
        );
        assert_eq!(
            info_url("https://swift.example/object/v1/AUTH_x"),
            "https://swift.example/object/info"
        );
    }

    #[test]
    fn info_defaults_and_values() {
        let none = Info::parse(b"{}");
        assert_eq!(none.bulk_delete, None);
        assert_eq!(none.max_manifest_segments, 1000);
        assert_eq!(none.listing_limit, 10_000);
        let some = Info::parse(
            br#"{"bulk_delete":{"max_deletes_per_request":500},"slo":{"max_manifest_segments":2000,"min_segment_size":1},"swift":{"container_listing_limit":500}}"#,
        );
        assert_eq!(some.bulk_delete, Some(500));
        assert_eq!(some.max_manifest_segments, 2000);
        assert_eq!(some.min_segment_size, 1);
        assert_eq!(some.listing_limit, 500);
    }

    #[test]
    fn names_keep_slashes_and_escape_url_syntax() {
        assert_eq!(escape("a/b c/d?e#f%"), "a/b%20c/d%3Fe%23f%25");
    }
}
