//! regstore-driver-gcs: the `gcs` storage driver for Google Cloud Storage.
//!
//! Reads, listings, deletes and signed URLs go through `object_store`;
//! writes go through GCS's JSON API — media uploads for `put_content`,
//! resumable upload sessions for writers, `rewriteTo` for moves — as
//! distribution's GCS driver does. `object_store` writes with the XML API,
//! which fake-gcs-server (the only GCS emulator in the package registries)
//! rejects with `invalid uploadType`, and Google's own Rust SDK speaks gRPC
//! for listings, which no local emulator serves. The JSON API requests carry
//! the bearer token of `object_store`'s credential provider, so both halves
//! authenticate the same way.
//!
//! A writer's session URL is its upload id: full chunks are PUT with
//! `Content-Range: bytes a-b/*` and answered 308, commit sends the tail with
//! the total size; the session URL and the tail live in the state object
//! between `close` and a resume (see [`regstore_objectstore`]). The driver
//! never asks a session for its offset (fake-gcs-server would finalize the
//! upload on such a query): the state object records it.
//!
//! # Parameters
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `bucket` | required | bucket name |
//! | `keyfile` | none | service-account JSON key file |
//! | `credentials` | none | the same JSON inline (a string) |
//! | `rootdirectory` | `""` | key prefix of everything stored |
//! | `chunksize` | `16MiB` | resumable-upload chunk, a multiple of 256 KiB |
//! | `endpoint` | `https://storage.googleapis.com` | base URL (an emulator's, for tests) |
//! | `noauth` | `false` | send no bearer token (emulators) |
//! | `connecttimeout` | `10s` | longest wait for a connection to the backend, per attempt |
//! | `timeout` | `60s` | longest wait for a byte of an answer, per attempt; failed attempts are retried for at most 3 × `timeout` (JSON API requests: 4 times), so a hung backend fails a call within 3 to 5 × `timeout` |
//!
//! Without `keyfile` and `credentials`, application default credentials are
//! used: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials, then
//! the instance metadata server (tokens refreshed by `object_store`).
//! Redirects are V4 signed URLs, which need a service-account private key
//! (`keyfile` or `credentials`); without one the registry serves blobs
//! itself.
//!
//! Tested against fake-gcs-server (`scripts/backends.sh start gcs`) on every
//! CI run, with a locally generated RSA key for signing. fake-gcs-server
//! does not verify signatures, so the redirect case proves URLs are well
//! formed and fetchable, not that Google accepts them.

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::gcp::{GcpCredential, GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, PutPayload, StaticCredentialProvider};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use regstore_core::params::ParamKind::{Bool, Secret, Size, String as Str};
use regstore_core::retry::{Backoff, Verdict, is_retryable_status, retry};
use regstore_core::{
    BuildFuture, Capabilities, DriverFactory, Error, ParamSpec, Params, RedirectMethod,
    RequestCounter, Result, StorageDriver,
};
use regstore_objectstore::http::answer_verdict;
use regstore_objectstore::{
    Backend, CountingConnector, ObjectDriver, Part, Timeouts, map_err, signed_method,
};

/// Resumable uploads take chunks in multiples of this.
pub const CHUNK_QUANTUM: u64 = 256 << 10;
/// Retries of a JSON API request that failed retryably (5xx, 429, network):
/// four attempts, waits from 100 ms growing fourfold, jittered.
const RETRY: Backoff = Backoff::new(4, Duration::from_millis(100));

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new("bucket", Str, "bucket name").required(),
    ParamSpec::new("keyfile", Str, "service-account JSON key file"),
    ParamSpec::new("credentials", Secret, "service-account JSON, inline"),
    ParamSpec::new("rootdirectory", Str, "key prefix of everything stored").default(""),
    ParamSpec::new("chunksize", Size, "upload chunk, a multiple of 256 KiB").default("16MiB"),
    ParamSpec::new("endpoint", Str, "base URL of the GCS API")
        .default("https://storage.googleapis.com"),
    ParamSpec::new("noauth", Bool, "send no bearer token (emulators)").default("false"),
    regstore_objectstore::CONNECT_TIMEOUT_PARAM,
    regstore_objectstore::TIMEOUT_PARAM,
];

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: "gcs",
    description: "Google Cloud Storage (fake-gcs-server for tests); V4 signed-URL redirects",
    params: PARAMS,
    build,
};

/// Makes this driver known by name to `regstore_core::create` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_driver(&FACTORY);
}

fn build(params: Params) -> BuildFuture {
    Box::pin(async move {
        if only_the_metadata_server(&params) {
            probe_metadata_server().await?;
        }
        let driver = gcs_driver(&params)?;
        Ok(Box::new(driver) as Box<dyn StorageDriver>)
    })
}

/// The `gcs` driver: [`ObjectDriver`] on [`GcsBackend`].
pub type GcsDriver = ObjectDriver<GcsBackend>;

/// Google Cloud Storage under [`ObjectDriver`].
#[derive(Debug)]
pub struct GcsBackend {
    store: Arc<dyn ObjectStore>,
    client: Arc<GoogleCloudStorage>,
    http: reqwest::Client,
    requests: RequestCounter,
    /// API base, without a trailing slash.
    endpoint: String,
    bucket: String,
    part_size: usize,
    can_sign: bool,
}

/// The `gcs` driver from checked parameters (see the crate docs).
///
/// # Errors
/// `Config` naming the parameter when one cannot work (a chunk size that is
/// not a multiple of 256 KiB, an unreadable key file, a bad endpoint).
pub fn gcs_driver(params: &Params) -> Result<GcsDriver> {
    regstore_objectstore::install_crypto();
    let bucket = params.require_string("bucket")?;
    let chunk = params.require_size("chunksize")?;
    if chunk == 0 || !chunk.is_multiple_of(CHUNK_QUANTUM) {
        return Err(Error::config(format!(
            "chunksize {chunk} must be a positive multiple of 256 KiB (262144)"
        )));
    }
    let endpoint = params.require_string("endpoint")?;
    let url = url::Url::parse(endpoint)
        .map_err(|e| Error::config(format!("endpoint {endpoint:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::config(format!(
            "endpoint {endpoint:?} must be an http or https URL"
        )));
    }
    let http_allowed = url.scheme() == "http";
    let timeouts = Timeouts::from_params(params)?;
    let requests = RequestCounter::default();
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_http_connector(CountingConnector::new(requests.clone()))
        .with_bucket_name(bucket)
        .with_base_url(endpoint.trim_end_matches('/'))
        .with_retry(timeouts.retry_config())
        .with_client_options(timeouts.client_options().with_allow_http(http_allowed));
    let mut can_sign = false;
    if let Some(file) = params.string("keyfile") {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::config(format!("keyfile {file:?} cannot be read: {e}")))?;
        can_sign = has_private_key(&text);
        b = b.with_service_account_path(file);
    } else if let Some(json) = params.string("credentials") {
        can_sign = has_private_key(json);
        b = b.with_service_account_key(json);
    }
    if params.require_bool("noauth")? {
        b = b.with_credentials(Arc::new(StaticCredentialProvider::new(GcpCredential {
            bearer: String::new(),
        })));
    }
    let client = Arc::new(
        b.build()
            .map_err(|e| Error::config(format!("cannot build the GCS client: {e}")))?,
    );
    let http = timeouts
        .http_client()
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
    let backend = GcsBackend {
        store: Arc::clone(&client) as Arc<dyn ObjectStore>,
        client,
        http,
        requests,
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        bucket: bucket.to_owned(),
        part_size: usize::try_from(chunk)
            .map_err(|_| Error::config("chunksize does not fit in memory"))?,
        can_sign,
    };
    ObjectDriver::new(backend, params.require_string("rootdirectory")?)
}

/// How long the metadata server may take to accept a connection before
/// the driver concludes there is none.
const METADATA_PROBE: Duration = Duration::from_millis(500);

/// Whether no credentials are configured, so that `object_store` would ask
/// the instance metadata server for every token: no `keyfile`,
/// `credentials` or `noauth`, none of the environment variables it reads,
/// and no gcloud application-default credentials file.
fn only_the_metadata_server(params: &Params) -> bool {
    let given = |name| params.string(name).is_some();
    let env = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let gcloud_file = std::env::var_os("HOME").is_some_and(|home| {
        std::path::Path::new(&home)
            .join(".config/gcloud/application_default_credentials.json")
            .exists()
    });
    !(given("keyfile")
        || given("credentials")
        || params.bool("noauth") == Some(true)
        || env("GOOGLE_APPLICATION_CREDENTIALS")
        || env("GOOGLE_SERVICE_ACCOUNT")
        || env("GOOGLE_SERVICE_ACCOUNT_PATH")
        || env("GOOGLE_SERVICE_ACCOUNT_KEY")
        || gcloud_file)
}

/// Fails fast, with [`Error::Credentials`], where no metadata server answers
/// (any machine outside Google Cloud): otherwise every request would spend
/// seconds in `object_store`'s retries of the token request before failing.
/// The address is `GCE_METADATA_HOST` (`host:port`) when set, as for
/// `object_store`, else 169.254.169.254:80.
async fn probe_metadata_server() -> Result<()> {
    let addr = std::env::var("GCE_METADATA_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.contains(':') {
                h
            } else {
                format!("{h}:80")
            }
        })
        .unwrap_or_else(|| "169.254.169.254:80".to_owned());
    let connect = tokio::net::TcpStream::connect(addr.as_str());
    let why = match tokio::time::timeout(METADATA_PROBE, connect).await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {METADATA_PROBE:?}"),
    };
    Err(Error::credentials(format!(
        "no GCS credentials are configured and no metadata server answers at {addr} ({why}): \
         set keyfile or credentials (or GOOGLE_APPLICATION_CREDENTIALS), or noauth: true for an emulator"
    )))
}

fn has_private_key(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v.get("private_key")
                .and_then(|k| k.as_str())
                .map(|k| k.contains("PRIVATE KEY"))
        })
        .unwrap_or(false)
}

/// What the JSON API wants escaped in an object name inside a URL path or
/// query value: everything but unreserved characters.
const NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NAME).to_string()
}

/// How a JSON API call went wrong.
fn http_error(what: &str, key: &Path, status: reqwest::StatusCode, body: &str) -> Error {
    if status == reqwest::StatusCode::NOT_FOUND {
        return Error::not_found(format!("/{key}"));
    }
    let body: String = body.chars().take(300).collect();
    let message = format!("GCS {what} of {key}: HTTP {status}: {body}");
    if matches!(
        status,
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
    ) {
        return Error::credentials(message);
    }
    Error::backend(message)
}

impl GcsBackend {
    async fn bearer(&self) -> Result<Option<String>> {
        let cred = self
            .client
            .credentials()
            .get_credential()
            .await
            .map_err(Error::backend)?;
        Ok((!cred.bearer.is_empty()).then(|| cred.bearer.clone()))
    }

    /// Sends the request `make` builds, retrying network errors, 429 and 5xx
    /// under [`RETRY`] (every call here is safe to repeat), waiting what a
    /// `Retry-After` asks. Returns the final response, successful or not.
    async fn send(
        &self,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        retry(&RETRY, "GCS request", |_| async {
            let mut req = make(&self.http);
            match self.bearer().await {
                Ok(Some(token)) => req = req.bearer_auth(token),
                Ok(None) => {}
                Err(e) => return Verdict::Done(Err(e)),
            }
            self.requests.request().await;
            answer_verdict(
                req.send().await,
                |s| is_retryable_status(s.as_u16()),
                ToString::to_string,
            )
        })
        .await
    }

    fn upload_url(&self, kind: &str, key: &Path) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}&name={}",
            self.endpoint,
            enc(&self.bucket),
            enc(key.as_ref())
        )
    }

    async fn expect_ok(
        resp: reqwest::Response,
        what: &str,
        key: &Path,
    ) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(http_error(what, key, status, &body))
    }
}

/// A `multipart/related` body of object metadata naming `name` and then
/// `data`, and its content type; the boundary is one that `data` does not
/// contain.
fn multipart_related(name: &str, data: &[u8]) -> (String, Bytes) {
    let mut boundary = format!("regstore-{:x}", data.len());
    while data
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let meta = serde_json::json!({ "name": name }).to_string();
    let mut body = Vec::with_capacity(data.len() + meta.len() + 4 * boundary.len() + 128);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; boundary={boundary}"),
        body.into(),
    )
}

#[async_trait]
impl Backend for GcsBackend {
    fn name(&self) -> &'static str {
        "gcs"
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    fn multipart(&self) -> Option<&dyn MultipartStore> {
        None
    }

    fn pages(&self) -> Option<&dyn object_store::list::PaginatedListStore> {
        Some(self.client.as_ref())
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_redirect(self.can_sign)
            .with_create_if_absent(true)
    }

    async fn put(&self, key: &Path, data: PutPayload) -> Result<()> {
        let body = Bytes::from(data);
        let url = self.upload_url("media", key);
        let resp = self
            .send(|c| {
                c.post(&url)
                    .header("Content-Type", "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        Self::expect_ok(resp, "upload", key).await.map(drop)
    }

    /// A multipart upload (metadata + bytes in one request) with
    /// `ifGenerationMatch=0`: it succeeds only where no live object is, and
    /// 412 means one is there. (fake-gcs-server checks the precondition on
    /// multipart uploads only; GCS on every kind.)
    async fn put_if_absent(&self, key: &Path, data: PutPayload) -> Result<bool> {
        let data = Bytes::from(data);
        let (content_type, body) = multipart_related(key.as_ref(), &data);
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart&ifGenerationMatch=0",
            self.endpoint,
            enc(&self.bucket),
        );
        let resp = self
            .send(|c| {
                c.post(&url)
                    .header("Content-Type", content_type.as_str())
                    .body(body.clone())
            })
            .await?;
        if resp.status() == reqwest::StatusCode::PRECONDITION_FAILED {
            return Ok(false);
        }
        Self::expect_ok(resp, "upload", key).await.map(|_| true)
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        let base = format!(
            "{}/storage/v1/b/{b}/o/{}/rewriteTo/b/{b}/o/{}",
            self.endpoint,
            enc(from.as_ref()),
            enc(to.as_ref()),
            b = enc(&self.bucket),
        );
        // Large or cross-location rewrites take several calls.
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let url = match &token {
                Some(t) => format!("{base}?rewriteToken={}", enc(t)),
                None => base.clone(),
            };
            let resp = self
                .send(|c| c.post(&url).header("Content-Length", "0"))
                .await?;
            let resp = Self::expect_ok(resp, "rewrite", from).await?;
            let raw = resp.bytes().await.map_err(Error::backend)?;
            let body: serde_json::Value = serde_json::from_slice(&raw).map_err(Error::backend)?;
            if body.get("done").and_then(|d| d.as_bool()).unwrap_or(true) {
                return Ok(());
            }
            token = body
                .get("rewriteToken")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            if token.is_none() {
                return Err(Error::backend(format!(
                    "GCS rewrite of {from}: not done and no rewriteToken"
                )));
            }
        }
        Err(Error::backend(format!(
            "GCS rewrite of {from}: did not finish"
        )))
    }

    async fn create_upload(&self, key: &Path) -> Result<String> {
        let url = self.upload_url("resumable", key);
        let resp = self
            .send(|c| {
                c.post(&url)
                    .header("Content-Type", "application/json")
                    .body("{}")
            })
            .await?;
        let resp = Self::expect_ok(resp, "starting a resumable upload", key).await?;
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::backend(format!("GCS resumable upload of {key}: no session URL")))
    }

    async fn upload_part(
        &self,
        key: &Path,
        upload: &str,
        _index: usize,
        offset: u64,
        data: PutPayload,
    ) -> Result<String> {
        let body = Bytes::from(data);
        let end = offset + body.len() as u64 - 1;
        let range = format!("bytes {offset}-{end}/*");
        let resp = self
            .send(|c| {
                c.put(upload)
                    .header("Content-Range", &range)
                    .body(body.clone())
            })
            .await?;
        let status = resp.status();
        // 308 "resume incomplete" is the answer to every chunk but the last.
        if status.as_u16() != 308 && !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(http_error("upload chunk", key, status, &text));
        }
        Ok(offset.to_string())
    }

    async fn complete_upload(
        &self,
        key: &Path,
        upload: &str,
        parts: &[Part],
        last: PutPayload,
        total: u64,
    ) -> Result<()> {
        let body = Bytes::from(last);
        let sent: u64 = parts.iter().map(|p| p.size).sum();
        let range = if body.is_empty() {
            format!("bytes */{total}")
        } else {
            format!("bytes {sent}-{}/{total}", total - 1)
        };
        let resp = self
            .send(|c| {
                c.put(upload)
                    .header("Content-Range", &range)
                    .body(body.clone())
            })
            .await?;
        Self::expect_ok(resp, "finishing an upload", key)
            .await
            .map(drop)
    }

    async fn discard_parts(
        &self,
        key: &Path,
        _upload: &str,
        _from: usize,
        _to: usize,
    ) -> Result<()> {
        Err(Error::unsupported(format!(
            "taking back bytes sent to the resumable upload session of {key}"
        )))
    }

    async fn abort_upload(&self, key: &Path, upload: &str) -> Result<()> {
        // GCS answers 499 to a cancelled session; gone is gone either way.
        match self
            .send(|c| c.delete(upload).header("Content-Length", "0"))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cancelling a GCS upload session failed");
                Ok(())
            }
        }
    }

    async fn signed_url(
        &self,
        key: &Path,
        method: RedirectMethod,
        expires: Duration,
    ) -> Result<Option<url::Url>> {
        if !self.can_sign {
            return Ok(None);
        }
        self.client
            .signed_url(signed_method(method), key, expires)
            .await
            .map(Some)
            .map_err(|e| map_err(e, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[&str]) -> Params {
        let raw = regstore_core::params::parse_pairs(pairs).expect("pairs");
        regstore_core::params::resolve("gcs", PARAMS, &raw).expect("params")
    }

    #[test]
    fn refused_answers_are_credentials_errors() {
        let key = Path::from("a/b");
        for status in [
            reqwest::StatusCode::UNAUTHORIZED,
            reqwest::StatusCode::FORBIDDEN,
        ] {
            let e = http_error("upload", &key, status, "denied");
            assert_eq!(e.kind(), regstore_core::ErrorKind::Credentials, "{e}");
        }
        let e = http_error("upload", &key, reqwest::StatusCode::BAD_GATEWAY, "");
        assert_eq!(e.kind(), regstore_core::ErrorKind::Backend);
        let e = http_error("upload", &key, reqwest::StatusCode::NOT_FOUND, "");
        assert_eq!(e.kind(), regstore_core::ErrorKind::PathNotFound);
    }

    #[test]
    fn configured_credentials_need_no_metadata_server() {
        assert!(!only_the_metadata_server(&params(&[
            "bucket=b",
            "noauth=true"
        ])));
        assert!(!only_the_metadata_server(&params(&[
            "bucket=b",
            "keyfile=/k.json"
        ])));
    }

    /// On a machine without a metadata server (every CI machine), a driver
    /// without credentials fails at once, as a credentials error, instead
    /// of spending seconds per request asking for a token.
    #[tokio::test]
    async fn no_credentials_and_no_metadata_server_fail_fast() {
        let p = params(&["bucket=b"]);
        if !only_the_metadata_server(&p) || std::env::var_os("GCE_METADATA_HOST").is_some() {
            return; // credentials configured in this environment
        }
        let started = std::time::Instant::now();
        let Err(e) = build(p).await else {
            return; // a metadata server answers: a Google Cloud machine
        };
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.kind(), regstore_core::ErrorKind::Credentials, "{e}");
        assert!(e.to_string().contains("noauth: true"), "{e}");
    }
}
