//! The client of the upstream registry a pull-through cache reads from
//! (distribution's `proxy.remoteurl`, `username`, `password`).
//!
//! It speaks the read side of the OCI Distribution API: `HEAD`/`GET
//! /v2/<name>/manifests/<reference>`, `GET /v2/<name>/blobs/<digest>`
//! (streamed, following redirects to storage URLs) and `GET
//! /v2/<name>/tags/list` (following `Link: <…>; rel="next"` pagination).
//!
//! Authentication follows the Docker registry protocol. A request goes out
//! with what is known to work (a cached token for its scope, or Basic
//! credentials once the upstream asked for them); on `401` the
//! `WWW-Authenticate` challenges decide:
//! - `Basic realm=…`: the request is retried once with the configured
//!   credentials ([`UpstreamError::Unauthorized`] when there are none);
//! - `Bearer realm=…,service=…,scope=…`: a token is fetched from the realm
//!   (`GET realm?service=…&scope=repository:<name>:pull`, with Basic
//!   credentials if configured, anonymously otherwise), its JSON answer's
//!   `token` (or `access_token`) is cached per scope until `expires_in`
//!   (60 s when absent, as the token spec says; renewed 5 s early), and
//!   the request is retried once with `Authorization: Bearer`. Concurrent
//!   requests for one scope wait for a single fetch. Once the upstream has
//!   shown a Bearer challenge, requests for a new scope fetch their token
//!   first instead of collecting a `401` each.
//!
//! reqwest drops `Authorization` when a redirect leaves the origin
//! (scheme, host or port), so a blob redirect to S3 or a CDN carries only
//! its own signed query, as those services require.
//!
//! Timeouts: 10 s to connect, and 60 s at most without a byte arriving
//! (no limit on a whole request: blobs are large). Manifests are read up
//! to [`MAX_MANIFEST_SIZE`] as a stream, whatever `Content-Length` says, and
//! checked against the digest asked for and the `Docker-Content-Digest`
//! the upstream sent. Blob streams are passed on as they arrive; whoever
//! stores them verifies their digest (an upload commit does).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LINK,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::registry::{Digest, MAX_MANIFEST_SIZE, Reference, RepoName};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("regstore/", env!("CARGO_PKG_VERSION"));

/// Time allowed to connect (TCP and TLS) to the upstream or its token realm.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the next bytes of a response before it fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Most `tags/list` pages followed for one listing.
pub const MAX_TAG_PAGES: usize = 100;

/// Largest `tags/list` page, token response or error body read.
const MAX_SMALL_BODY: usize = 4 << 20;

/// Largest error body parsed for its OCI error.
const MAX_ERROR_BODY: usize = 64 << 10;

/// A token's lifetime when the realm gives no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Scopes with a cached token past which expired ones are dropped (a
/// proxy asked for many repositories must not grow without end).
const MAX_CACHED_SCOPES: usize = 1024;

/// How long before its expiry a cached token is renewed.
const TOKEN_RENEW_EARLY: Duration = Duration::from_secs(5);

/// Manifest media types asked for when the caller gives none.
pub const DEFAULT_ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What an upstream operation fails with. Every variant names the URL
/// concerned (never with credentials: `remoteurl` may not carry any).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// `remoteurl` is not usable (see [`Upstream::new`]).
    #[error("invalid proxy remoteurl {url:?}: {reason}")]
    Config {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be made or its answer stopped arriving:
    /// connection refused or reset, DNS, TLS, a timeout.
    #[error("upstream {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// The cause, with its chain of sources.
        reason: String,
    },
    /// The upstream (or its token realm) refused the credentials, or asked
    /// for credentials none are configured for.
    #[error(
        "upstream {url} refused {}{}",
        match user { Some(u) => format!("the credentials of user {u:?}"), None => "anonymous access".to_owned() },
        match realm { Some(r) => format!(" (realm {r:?})"), None => String::new() }
    )]
    Unauthorized {
        /// The URL refused (a registry URL or the token realm).
        url: String,
        /// The realm of the challenge, if any.
        realm: Option<String>,
        /// The configured user, `None` when anonymous.
        user: Option<String>,
    },
    /// 404: the repository, manifest or blob is not upstream.
    #[error("not found upstream: {url}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    NotFound {
        /// The URL requested.
        url: String,
        /// The OCI error code of the body, if one was sent (e.g.
        /// `MANIFEST_UNKNOWN`, `NAME_UNKNOWN`).
        code: Option<String>,
    },
    /// Any other unexpected status; the OCI error body's first error when
    /// there is one.
    #[error("upstream {url} answered {status}{}{}",
        code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
        if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The first error's `code`, if the body had one.
        code: Option<String>,
        /// The first error's `message` (or empty).
        message: String,
    },
    /// The upstream's answer is malformed: a bad digest header, content not
    /// matching its digest, missing headers, unparsable JSON.
    #[error("invalid answer from upstream {url}: {reason}")]
    Invalid {
        /// The URL requested.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A body exceeded its limit ([`MAX_MANIFEST_SIZE`] for manifests).
    #[error("upstream {url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
}

/// What `HEAD` on a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`, if sent.
    pub digest: Option<Digest>,
    /// `Content-Type`.
    pub media_type: String,
    /// `Content-Length`.
    pub size: u64,
}

/// A manifest fetched with `GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bytes, at most [`MAX_MANIFEST_SIZE`].
    pub body: Bytes,
    /// `Content-Type`.
    pub media_type: String,
    /// `Docker-Content-Digest`, if sent (the body is checked against it).
    pub digest: Option<Digest>,
}

/// A blob being downloaded.
pub struct BlobStream {
    /// `Content-Length`, if sent.
    pub size: Option<u64>,
    /// The bytes as they arrive; an interrupted transfer ends with
    /// [`UpstreamError::Unreachable`]. Not verified against the digest.
    pub stream: BoxStream<'static, Result<Bytes, UpstreamError>>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The client of one upstream registry. Cheap to clone (an [`Arc`]
/// inside); clones share connections and cached tokens.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.inner.base.as_str())
            .field("user", &self.inner.credentials.as_ref().map(|c| &c.user))
            .finish_non_exhaustive()
    }
}

struct Credentials {
    user: String,
    /// `Basic <base64(user:password)>`.
    basic: HeaderValue,
}

struct Inner {
    /// `scheme://host[:port]/`.
    base: Url,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    /// The upstream asked for Basic credentials: send them up front.
    basic: AtomicBool,
    /// The upstream's last Bearer challenge (realm, service): tokens for
    /// new scopes are fetched before the first request.
    bearer: Mutex<Option<BearerChallenge>>,
    /// Tokens by scope; each slot's async lock makes one fetch at a time.
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Token>>>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

struct Token {
    value: String,
    /// When to stop using it (expiry less the renewal margin).
    renew_at: Instant,
}

impl Upstream {
    /// A client of the registry at `remoteurl` (`http://` or `https://`
    /// with a host and optional port). A path other than `/`, a query, a
    /// fragment or credentials in the URL are refused
    /// ([`UpstreamError::Config`]): the API lives at `/v2/` of the host,
    /// and credentials go in `username`/`password`. A `username` without
    /// `password` uses an empty password.
    ///
    /// Installs ring as the process's rustls provider if none is.
    pub fn new(
        remoteurl: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Upstream, UpstreamError> {
        let config = |reason: &str| UpstreamError::Config {
            url: remoteurl.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(remoteurl).map_err(|e| config(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config("the scheme must be http or https"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(config("no host"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(config(
                "credentials in the URL; use proxy.username and proxy.password",
            ));
        }
        if base.path() != "/" && !base.path().is_empty() {
            return Err(config(&format!(
                "path {:?}: the registry API is at /v2/ of the host, give the URL without a path",
                base.path()
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(config("a query or fragment"));
        }
        base.set_path("/");
        let credentials = match username {
            Some(user) if !user.is_empty() => {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.unwrap_or_default()));
                let mut basic = HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| config("the username or password cannot go in a header"))?;
                basic.set_sensitive(true);
                Some(Credentials {
                    user: user.to_owned(),
                    basic,
                })
            }
            _ => None,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| config(&chain(&e)))?;
        Ok(Upstream {
            inner: Arc::new(Inner {
                base,
                client,
                credentials,
                basic: AtomicBool::new(false),
                bearer: Mutex::new(None),
                tokens: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The upstream's base URL (`scheme://host[:port]/`).
    pub fn url(&self) -> &Url {
        &self.inner.base
    }

    /// `HEAD /v2/<repo>/manifests/<reference>` asking for `accept` media
    /// types ([`DEFAULT_ACCEPT`] when empty).
    ///
    /// Errors: [`UpstreamError::NotFound`] on 404; `Invalid` when
    /// `Content-Type` or `Content-Length` is missing, the digest header is
    /// malformed, or differs from the digest asked for; and the errors
    /// every request can have (`Unreachable`, `Unauthorized`, `Status`).
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<ManifestHead, UpstreamError> {
        let url = self.api_url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(Method::HEAD, &url, repo, Some(&accept_header(accept)))
            .await?;
        let resp = ok_or_error(resp, &url).await?;
        let headers = resp.headers();
        let digest = content_digest(headers, &url)?;
        check_reference(reference, digest.as_ref(), &url)?;
        let media_type = media_type(headers, &url)?;
        let size = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| invalid(&url, "no valid Content-Length"))?;
        Ok(ManifestHead {
            digest,
            media_type,
            size,
        })
    }

    /// `GET /v2/<repo>/manifests/<reference>` asking for `accept` media
    /// types ([`DEFAULT_ACCEPT`] when empty). The body is read up to
    /// [`MAX_MANIFEST_SIZE`] and must hash to the digest asked for (by
    /// digest) and to `Docker-Content-Digest` (when sent).
    ///
    /// Errors: `NotFound` on 404; `TooLarge` past 4 MiB; `Invalid` on a
    /// missing `Content-Type`, a malformed digest header, or content not
    /// matching a digest; `Unreachable`, `Unauthorized`, `Status`.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<Manifest, UpstreamError> {
        let url = self.api_url(&format!("v2/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(Method::GET, &url, repo, Some(&accept_header(accept)))
            .await?;
        let resp = ok_or_error(resp, &url).await?;
        let digest = content_digest(resp.headers(), &url)?;
        let media_type = media_type(resp.headers(), &url)?;
        let body = read_bounded(resp, MAX_MANIFEST_SIZE, &url).await?;
        for expected in [digest.as_ref(), reference_digest(reference)]
            .into_iter()
            .flatten()
        {
            let actual = Digest::of(expected.algorithm(), &body);
            if &actual != expected {
                return Err(invalid(
                    &url,
                    &format!("the manifest's content is {actual}, not {expected}"),
                ));
            }
        }
        Ok(Manifest {
            body,
            media_type,
            digest,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`, following redirects (to storage
    /// URLs; `Authorization` is not sent to another origin), streamed.
    ///
    /// Errors: `NotFound` on 404; `Unreachable`, `Unauthorized`, `Status`
    /// before the first byte; `Unreachable` as a stream item when the
    /// transfer breaks.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobStream, UpstreamError> {
        let url = self.api_url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::GET, &url, repo, None).await?;
        let resp = ok_or_error(resp, &url).await?;
        let size = resp.content_length();
        // Errors name the registry URL, not the storage URL redirected to
        // (its signed query does not belong in logs).
        let at = url.to_string();
        let stream = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| unreachable(&at, &e)))
            .boxed();
        Ok(BlobStream { size, stream })
    }

    /// `HEAD /v2/<repo>/blobs/<digest>` (following redirects): whether
    /// `repo` upstream holds the blob, and its `Content-Length`.
    ///
    /// Errors: `NotFound` on 404; `Invalid` without a `Content-Length`;
    /// `Unreachable`, `Unauthorized`, `Status`.
    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, UpstreamError> {
        let url = self.api_url(&format!("v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::HEAD, &url, repo, None).await?;
        let resp = ok_or_error(resp, &url).await?;
        resp.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| invalid(&url, "no valid Content-Length"))
    }

    /// Every tag of `repo` (`GET /v2/<repo>/tags/list`, following `Link`
    /// pagination on the same origin, [`MAX_TAG_PAGES`] pages at most),
    /// sorted, without duplicates.
    ///
    /// Errors: `NotFound` on 404 (`NAME_UNKNOWN`); `Invalid` for a body
    /// that is not a tag list, a `Link` to another origin, or more than
    /// [`MAX_TAG_PAGES`] pages; `TooLarge` for a page over 4 MiB;
    /// `Unreachable`, `Unauthorized`, `Status`.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let mut url = self.api_url(&format!("v2/{repo}/tags/list"))?;
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = self.send(Method::GET, &url, repo, None).await?;
            let resp = ok_or_error(resp, &url).await?;
            let next = next_link(resp.headers(), &url)?;
            let body = read_bounded(resp, MAX_SMALL_BODY, &url).await?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| invalid(&url, &format!("not a tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => {
                    if n.origin() != self.inner.base.origin() {
                        return Err(invalid(
                            &url,
                            &format!("Link to another origin: {}", n.as_str()),
                        ));
                    }
                    url = n;
                }
                None => {
                    tags.sort();
                    tags.dedup();
                    return Ok(tags);
                }
            }
        }
        Err(invalid(
            &url,
            &format!("more than {MAX_TAG_PAGES} pages of tags"),
        ))
    }

    fn api_url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.inner
            .base
            .join(path)
            .map_err(|e| invalid(self.inner.base.as_str(), &e.to_string()))
    }

    /// Sends `method url` with what authentication is known, and answers
    /// one `401` as its challenges ask (see the module doc).
    async fn send(
        &self,
        method: Method,
        url: &Url,
        repo: &RepoName,
        accept: Option<&str>,
    ) -> Result<Response, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        let sent = self.known_auth(&scope).await?;
        let resp = self.raw(method.clone(), url, accept, sent.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenges = parse_challenges_all(resp.headers());
        let user = self.inner.credentials.as_ref().map(|c| c.user.clone());
        let bearer = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
            .and_then(|c| {
                Some(BearerChallenge {
                    realm: c.param("realm")?.to_owned(),
                    service: c.param("service").map(str::to_owned),
                    scope: c.param("scope").map(str::to_owned),
                })
            });
        let auth = if let Some(challenge) = bearer {
            let stale = sent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            if let Ok(mut known) = self.inner.bearer.lock() {
                *known = Some(BearerChallenge {
                    scope: None,
                    ..challenge.clone()
                });
            }
            let token = self.token(&challenge, &scope, stale.as_deref()).await?;
            bearer_header(&token, url)?
        } else if let Some(basic) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("basic"))
        {
            let refused = || UpstreamError::Unauthorized {
                url: url.to_string(),
                realm: basic.param("realm").map(str::to_owned),
                user: user.clone(),
            };
            let Some(credentials) = &self.inner.credentials else {
                return Err(refused());
            };
            if sent.as_ref() == Some(&credentials.basic) {
                return Err(refused());
            }
            self.inner.basic.store(true, Ordering::Relaxed);
            credentials.basic.clone()
        } else {
            return Err(UpstreamError::Unauthorized {
                url: url.to_string(),
                realm: None,
                user,
            });
        };
        let resp = self.raw(method, url, accept, Some(&auth)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let realm = parse_challenges_all(resp.headers())
                .iter()
                .find_map(|c| c.param("realm").map(str::to_owned));
            return Err(UpstreamError::Unauthorized {
                url: url.to_string(),
                realm,
                user,
            });
        }
        Ok(resp)
    }

    /// The `Authorization` to send up front for `scope`, if any.
    async fn known_auth(&self, scope: &str) -> Result<Option<HeaderValue>, UpstreamError> {
        if self.inner.basic.load(Ordering::Relaxed)
            && let Some(c) = &self.inner.credentials
        {
            return Ok(Some(c.basic.clone()));
        }
        let known = self.inner.bearer.lock().ok().and_then(|b| b.clone());
        match known {
            Some(challenge) => {
                let token = self.token(&challenge, scope, None).await?;
                Ok(Some(bearer_header(&token, &self.inner.base)?))
            }
            None => Ok(None),
        }
    }

    /// A token for `scope`: the cached one if fresh and not `stale` (the
    /// one just refused), else one fetched from the challenge's realm.
    /// One fetch at a time per scope.
    async fn token(
        &self,
        challenge: &BearerChallenge,
        scope: &str,
        stale: Option<&str>,
    ) -> Result<String, UpstreamError> {
        let slot = {
            let mut tokens = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if tokens.len() >= MAX_CACHED_SCOPES && !tokens.contains_key(scope) {
                // Forget expired tokens nobody is using or fetching.
                let now = Instant::now();
                tokens.retain(|_, slot| match slot.try_lock() {
                    Ok(t) => t.as_ref().is_some_and(|t| t.renew_at > now),
                    Err(_) => true,
                });
            }
            tokens.entry(scope.to_owned()).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_ref()
            && t.renew_at > Instant::now()
            && Some(t.value.as_str()) != stale
        {
            return Ok(t.value.clone());
        }
        *cached = None;
        let token = self.fetch_token(challenge, scope).await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        challenge: &BearerChallenge,
        scope: &str,
    ) -> Result<Token, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
            issued_at: Option<String>,
        }
        let mut url = Url::parse(&challenge.realm).map_err(|e| {
            invalid(
                self.inner.base.as_str(),
                &format!("token realm {:?}: {e}", challenge.realm),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                self.inner.base.as_str(),
                &format!("token realm {:?} is not http(s)", challenge.realm),
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                q.append_pair("service", service);
            }
            q.append_pair("scope", challenge.scope.as_deref().unwrap_or(scope));
        }
        let mut req = self.inner.client.get(url.clone());
        if let Some(c) = &self.inner.credentials {
            req = req.header(AUTHORIZATION, c.basic.clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| unreachable(url.as_str(), &e))?;
        if matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(UpstreamError::Unauthorized {
                url: url.to_string(),
                realm: Some(challenge.realm.clone()),
                user: self.inner.credentials.as_ref().map(|c| c.user.clone()),
            });
        }
        let resp = ok_or_error(resp, &url).await?;
        let received = Instant::now();
        let body = read_bounded(resp, MAX_SMALL_BODY, &url).await?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| invalid(url.as_str(), &format!("not a token answer: {e}")))?;
        let value = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(url.as_str(), "no token in the answer"))?;
        let mut lifetime = answer
            .expires_in
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // A token issued earlier (a realm that caches them) has less left;
        // one "issued" in the future is clock skew, ignored.
        if let Some(issued) = answer
            .issued_at
            .as_deref()
            .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
            && let Ok(age) = SystemTime::now().duration_since(issued)
        {
            lifetime = lifetime.saturating_sub(age);
        }
        let margin = TOKEN_RENEW_EARLY.min(lifetime / 2);
        Ok(Token {
            value,
            renew_at: received + lifetime.saturating_sub(margin),
        })
    }

    async fn raw(
        &self,
        method: Method,
        url: &Url,
        accept: Option<&str>,
        auth: Option<&HeaderValue>,
    ) -> Result<Response, UpstreamError> {
        let mut req = self.inner.client.request(method, url.clone());
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req.send().await.map_err(|e| unreachable(url.as_str(), &e))
    }
}

fn bearer_header(token: &str, url: &Url) -> Result<HeaderValue, UpstreamError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| invalid(url.as_str(), "the token cannot go in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

fn accept_header(accept: &[&str]) -> String {
    if accept.is_empty() {
        DEFAULT_ACCEPT.join(", ")
    } else {
        accept.join(", ")
    }
}

fn reference_digest(reference: &Reference) -> Option<&Digest> {
    match reference {
        Reference::Digest(d) => Some(d),
        Reference::Tag(_) => None,
    }
}

fn check_reference(
    reference: &Reference,
    digest: Option<&Digest>,
    url: &Url,
) -> Result<(), UpstreamError> {
    if let (Some(asked), Some(got)) = (reference_digest(reference), digest)
        && asked != got
    {
        return Err(invalid(
            url.as_str(),
            &format!("Docker-Content-Digest is {got}, asked for {asked}"),
        ));
    }
    Ok(())
}

fn content_digest(headers: &HeaderMap, url: &Url) -> Result<Option<Digest>, UpstreamError> {
    let Some(v) = headers.get("docker-content-digest") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| invalid(url.as_str(), "Docker-Content-Digest is not text"))?;
    Digest::from_str(s.trim())
        .map(Some)
        .map_err(|e| invalid(url.as_str(), &format!("Docker-Content-Digest: {e}")))
}

fn media_type(headers: &HeaderMap, url: &Url) -> Result<String, UpstreamError> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(url.as_str(), "no Content-Type"))
}

/// The `rel="next"` target of a `Link` header, resolved against `url`.
fn next_link(headers: &HeaderMap, url: &Url) -> Result<Option<Url>, UpstreamError> {
    for v in headers.get_all(LINK) {
        let Ok(v) = v.to_str() else { continue };
        for link in v.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                continue;
            };
            let Some((target, params)) = rest.split_once('>') else {
                continue;
            };
            let next = params.split(';').any(|p| {
                p.trim()
                    .strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split(' ').any(|r| r == "next"))
                    .unwrap_or(false)
            });
            if next {
                return url
                    .join(target.trim())
                    .map(Some)
                    .map_err(|e| invalid(url.as_str(), &format!("Link {target:?}: {e}")));
            }
        }
    }
    Ok(None)
}

/// `resp` if 2xx; else its error, with the OCI error body parsed.
async fn ok_or_error(resp: Response, url: &Url) -> Result<Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let (code, message) = match read_bounded(resp, MAX_ERROR_BODY, url).await {
        Ok(body) => oci_error(&body),
        Err(_) => (None, String::new()),
    };
    if status == StatusCode::NOT_FOUND {
        return Err(UpstreamError::NotFound {
            url: url.to_string(),
            code,
        });
    }
    Err(UpstreamError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        code,
        message,
    })
}

/// The first `{code, message}` of an OCI error body.
fn oci_error(body: &[u8]) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => match b.errors.into_iter().next() {
            Some(e) => (e.code, e.message.unwrap_or_default()),
            None => (None, String::new()),
        },
        Err(_) => (None, String::new()),
    }
}

/// The body, refused past `limit` bytes as it streams in.
async fn read_bounded(resp: Response, limit: usize, url: &Url) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::TooLarge {
        url: url.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unreachable(url.as_str(), &e))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn invalid(url: impl fmt::Display, reason: &str) -> UpstreamError {
    UpstreamError::Invalid {
        url: url.to_string(),
        reason: reason.to_owned(),
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable {
        url: url.to_owned(),
        reason: chain(e),
    }
}

/// An error and its sources, `: `-separated (reqwest's own message names
/// the URL, which the variant already does; the causes say what failed).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    if e.is::<reqwest::Error>() && source.is_some() {
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            parts.push("timed out".to_owned());
        }
    } else {
        parts.push(e.to_string());
    }
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// One `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_challenges_all(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Parses a `WWW-Authenticate` value (RFC 9110 §11.6.1): one or more
/// challenges, `scheme k=v, k="quoted, \"escaped\""`, separated by commas.
/// A token68 (`Basic abc==`) is kept as a parameter with an empty name.
fn parse_challenges(s: &str) -> Vec<Challenge> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_delim = |c: u8| c == b',' || c == b'=' || c == b'"' || c.is_ascii_whitespace();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < b.len() && !is_delim(b[i]) {
            i += 1;
        }
        let token = &s[start..i];
        skip_ws(&mut i);
        if i < b.len() && b[i] == b'=' && !token.is_empty() {
            // A parameter of the current challenge (or a token68 ending in
            // `=` padding, if the next byte is `=`, `,` or the end).
            i += 1;
            let padding = i >= b.len() || b[i] == b'=' || b[i] == b',';
            if padding {
                while i < b.len() && b[i] == b'=' {
                    i += 1;
                }
                if let Some(c) = out.last_mut() {
                    let pad = "=".repeat(i - start - token.len());
                    c.params.push((String::new(), format!("{token}{pad}")));
                }
                continue;
            }
            skip_ws(&mut i);
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                let mut chars = s[i..].char_indices();
                let mut end = s.len();
                while let Some((k, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '"' => {
                            end = i + k + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                i = end;
                v
            } else {
                let vs = i;
                while i < b.len() && b[i] != b',' && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                s[vs..i].to_owned()
            };
            if let Some(c) = out.last_mut() {
                c.params.push((token.to_owned(), value));
            }
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_owned(),
                params: Vec::new(),
            });
        } else {
            // A stray `=` or `"`: skip it.
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "Bearer");
        assert_eq!(
            params(&c[0]),
            [
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/ubuntu:pull,push"),
            ]
        );
    }

    #[test]
    fn several_challenges_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="a \"quoted\", realm", Bearer realm=https://t/x , service = "s,1",error="invalid_token""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "Basic");
        assert_eq!(params(&c[0]), [("realm", r#"a "quoted", realm"#)]);
        assert_eq!(c[1].scheme, "Bearer");
        assert_eq!(c[1].param("REALM"), Some("https://t/x"));
        assert_eq!(c[1].param("service"), Some("s,1"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
    }

    #[test]
    fn token68_and_garbage() {
        let c = parse_challenges("Negotiate abc==, Basic realm=\"r\"");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(params(&c[0]), [("", "abc==")]);
        assert_eq!(c[1].param("realm"), Some("r"));
        // Unterminated quotes and stray characters end without a panic.
        for s in [
            "Bearer realm=\"x",
            "=,=\"",
            "Bearer ,,, realm",
            "",
            "\"\"\"",
        ] {
            let _ = parse_challenges(s);
        }
    }

    #[test]
    fn link_next() {
        let url = Url::parse("https://r.example/v2/a/tags/list").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#),
        );
        assert_eq!(
            next_link(&h, &url).unwrap().unwrap().as_str(),
            "https://r.example/v2/a/tags/list?n=2&last=b"
        );
        assert_eq!(next_link(&HeaderMap::new(), &url).unwrap(), None);
    }

    #[test]
    fn remoteurl_checks() {
        for (url, word) in [
            ("ftp://x", "scheme"),
            ("https://x/v2/", "path"),
            ("https://u:p@x", "credentials"),
            ("https://x/?a=b", "query"),
            ("not a url", "relative"),
        ] {
            let e = Upstream::new(url, None, None).unwrap_err().to_string();
            assert!(e.contains(word), "{url}: {e}");
        }
        let u = Upstream::new("https://registry-1.docker.io", Some("u"), Some("p")).unwrap();
        assert_eq!(u.url().as_str(), "https://registry-1.docker.io/");
        assert!(!format!("{u:?}").contains("Basic"), "{u:?}");
    }
}
