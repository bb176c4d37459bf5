//! regstore-driver-s3: the `s3` storage driver, for Amazon S3 and
//! S3-compatible stores (MinIO, Ceph RGW, moto), on the `object_store` crate.
//!
//! Keys, directories, walk and resumable writers come from
//! [`regstore_objectstore`]; this crate maps distribution's parameters onto
//! `object_store`'s S3 client and adds presigned redirects.
//!
//! # Parameters
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `bucket` | required | bucket name |
//! | `region` | `us-east-1` | AWS region (any value for most S3-compatible stores) |
//! | `regionendpoint` | AWS | endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000` |
//! | `forcepathstyle` | `false` | `endpoint/bucket/key` URLs instead of `bucket.endpoint/key` |
//! | `accesskey`, `secretkey` | none | static credentials; without them the standard chain is used: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, EKS), ECS container credentials, then EC2 instance metadata — refreshed before they expire |
//! | `sessiontoken` | none | session token for temporary static credentials |
//! | `rootdirectory` | `""` | key prefix of everything stored |
//! | `encrypt` | `false` | server-side encryption: SSE-S3 (AES256), or SSE-KMS with `keyid` |
//! | `keyid` | none | KMS key for SSE-KMS (with `encrypt: true`) |
//! | `secure` | `true` | `https` for a `regionendpoint` written without scheme |
//! | `skipverify` | `false` | accept any TLS certificate (test setups only) |
//! | `chunksize` | `10MiB` | multipart part size, 5 MiB to 5 GiB |
//! | `storageclass` | `STANDARD` | storage class of new objects; `NONE` sends none (for stores that reject the header) |
//! | `redirectendpoint` | none | endpoint presigned redirect URLs point at (e.g. a public name when `regionendpoint` is internal) |
//! | `multipartcopythresholdsize` | `32MiB` | moves of larger objects use a multipart copy (`UploadPartCopy` in parallel), smaller ones one `CopyObject`; at most 5 GiB |
//! | `multipartcopychunksize` | `32MiB` | bytes per copied part, 5 MiB to 5 GiB (raised when an object would need more than 10,000 parts) |
//! | `multipartcopymaxconcurrency` | `100` | parts copied at once |
//! | `connecttimeout` | `10s` | longest wait for a connection to the backend, per attempt |
//! | `timeout` | `60s` | longest wait for a byte of an answer, per attempt; failed attempts are retried for at most 3 × `timeout`, so a hung backend fails a call within about that (a part of a multipart copy waits 5 × `timeout`) |
//! | `v4auth`, `objectacl`, `useragent`, `usedualstack`, `accelerate`, `loglevel` | | accepted as distribution does where regstore can honour them; a value it cannot honour is a startup error |
//!
//! Moves (`rename`) read the source's size with one HEAD, then copy server
//! side: one `CopyObject` up to the threshold, else a multipart upload whose
//! parts are `UploadPartCopy` ranges of the source (what objects above
//! 5 GiB need, and faster for large ones). `object_store` has no part copy,
//! so the driver signs those requests itself (SigV4, the `sigv4` module) with the
//! credentials `object_store` resolved; they count as backend requests.
//!
//! Redirects: [`StorageDriver::redirect_url`](regstore_core::StorageDriver)
//! gives a SigV4-presigned GET or HEAD URL valid for 20 minutes.
//!
//! Tested against moto (`scripts/backends.sh start s3`) on every CI run.
//! moto does not verify signatures, so the redirect case there proves the
//! presigned URLs are well formed and fetchable, not that AWS accepts them;
//! likewise moto accepts the driver's own `UploadPartCopy` signatures
//! unchecked, which is why the `sigv4` module is unit-tested against the signature
//! AWS publishes for its header-signing example.

#![warn(missing_docs)]

mod sigv4;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use regstore_core::params::ParamKind::{Bool, Integer, Secret, Size, String as Str};
use regstore_core::retry::{Backoff, Verdict, is_retryable_status, retry};
use regstore_core::{
    BuildFuture, Capabilities, DriverFactory, Error, ParamSpec, Params, RedirectMethod,
    RequestCounter, Result, StorageDriver,
};
use regstore_objectstore::http::retry_after_of;
use regstore_objectstore::{
    Backend, CountingConnector, ObjectDriver, Timeouts, created, map_err, signed_method,
};

/// What an `UploadPartCopy` answers: `<CopyPartResult><ETag>` on success,
/// `<Error><Code>…<Message>` on failure (entities such as `&quot;` are
/// decoded by the parser).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PartCopyAnswer {
    e_tag: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// Retries of an UploadPartCopy that failed retryably (network, 5xx, 429,
/// or an `<Error>` S3 calls transient): four attempts, waits from 200 ms
/// growing fourfold, jittered.
const COPY_RETRY: Backoff = Backoff::new(4, Duration::from_millis(200));

/// S3's smallest part (but the last) of a multipart upload.
pub const MIN_CHUNK: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_CHUNK: u64 = 5 << 30;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new("bucket", Str, "bucket name").required(),
    ParamSpec::new("region", Str, "AWS region").default("us-east-1"),
    ParamSpec::new("regionendpoint", Str, "endpoint of an S3-compatible store"),
    ParamSpec::new(
        "forcepathstyle",
        Bool,
        "path-style URLs (endpoint/bucket/key)",
    )
    .default("false"),
    ParamSpec::new(
        "accesskey",
        Str,
        "access key id; else the standard AWS credential chain",
    ),
    ParamSpec::new("secretkey", Secret, "secret access key (with accesskey)"),
    ParamSpec::new(
        "sessiontoken",
        Secret,
        "session token of temporary credentials",
    ),
    ParamSpec::new("rootdirectory", Str, "key prefix of everything stored").default(""),
    ParamSpec::new(
        "encrypt",
        Bool,
        "server-side encryption (SSE-S3, or SSE-KMS with keyid)",
    )
    .default("false"),
    ParamSpec::new("keyid", Str, "KMS key id for SSE-KMS"),
    ParamSpec::new("secure", Bool, "https for a regionendpoint without scheme").default("true"),
    ParamSpec::new("skipverify", Bool, "accept any TLS certificate").default("false"),
    ParamSpec::new("chunksize", Size, "multipart part size (5 MiB to 5 GiB)").default("10MiB"),
    ParamSpec::new(
        "storageclass",
        Str,
        "storage class of new objects; NONE sends none",
    )
    .default("STANDARD"),
    ParamSpec::new(
        "redirectendpoint",
        Str,
        "endpoint presigned redirect URLs point at",
    ),
    ParamSpec::new(
        "multipartcopythresholdsize",
        Size,
        "objects above this size are moved by multipart copy",
    )
    .default("32MiB"),
    ParamSpec::new(
        "multipartcopychunksize",
        Size,
        "part size of a multipart copy",
    )
    .default("32MiB"),
    ParamSpec::new(
        "multipartcopymaxconcurrency",
        Integer,
        "parts of a multipart copy in flight at once",
    )
    .default("100"),
    ParamSpec::new("v4auth", Bool, "Signature V4 (the only one supported)").default("true"),
    ParamSpec::new("objectacl", Str, "canned ACL of new objects (private only)").default("private"),
    ParamSpec::new("useragent", Str, "User-Agent of requests"),
    ParamSpec::new(
        "usedualstack",
        Bool,
        "dual-stack endpoints (give regionendpoint instead)",
    )
    .default("false"),
    ParamSpec::new(
        "accelerate",
        Bool,
        "transfer acceleration (give regionendpoint instead)",
    )
    .default("false"),
    ParamSpec::new(
        "loglevel",
        Str,
        "accepted for compatibility; logging goes through RUST_LOG",
    ),
    regstore_objectstore::CONNECT_TIMEOUT_PARAM,
    regstore_objectstore::TIMEOUT_PARAM,
];

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: "s3",
    description: "Amazon S3 and S3-compatible stores (MinIO, Ceph, moto); presigned redirects",
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
        let driver = s3_driver(&params)?;
        Ok(Box::new(driver) as Box<dyn StorageDriver>)
    })
}

/// The `s3` driver: [`ObjectDriver`] on [`S3Backend`].
pub type S3Driver = ObjectDriver<S3Backend>;

/// S3 under [`ObjectDriver`]: object_store's client, storage class on new
/// objects, presigned redirects.
#[derive(Debug)]
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    client: Arc<AmazonS3>,
    /// Signs redirect URLs (the same client unless `redirectendpoint` is set).
    signer: Arc<AmazonS3>,
    requests: RequestCounter,
    part_size: usize,
    storage_class: Option<String>,
    copy: PartCopy,
}

/// What multipart copies need besides `object_store`'s client.
#[derive(Debug)]
struct PartCopy {
    http: reqwest::Client,
    /// URL of the bucket's root (`…/bucket` path style, `bucket.…` virtual).
    base: url::Url,
    bucket: String,
    region: String,
    threshold: u64,
    chunk: u64,
    concurrency: usize,
}

/// The `s3` driver from checked parameters (see the crate docs).
///
/// # Errors
/// `Config` naming the parameter when one cannot work.
pub fn s3_driver(params: &Params) -> Result<S3Driver> {
    regstore_objectstore::install_crypto();
    let bucket = params.require_string("bucket")?;
    let force_path_style = params.require_bool("forcepathstyle")?;
    let skip_verify = params.require_bool("skipverify")?;
    if !params.require_bool("v4auth")? {
        return Err(Error::config(
            "v4auth: false (Signature V2) is not supported; remove it or set it to true",
        ));
    }
    match params.string("objectacl") {
        None | Some("private") => {}
        Some(other) => {
            return Err(Error::config(format!(
                "objectacl {other:?} is not supported (only \"private\"); \
                     grant access with a bucket policy instead"
            )));
        }
    }
    for (name, what) in [
        ("usedualstack", "dual-stack"),
        ("accelerate", "transfer-acceleration"),
    ] {
        if params.require_bool(name)? {
            return Err(Error::config(format!(
                "{name}: true is not supported; set regionendpoint to the {what} endpoint instead"
            )));
        }
    }
    let chunk = params.require_size("chunksize")?;
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk) {
        return Err(Error::config(format!(
            "chunksize {chunk} is outside S3's part sizes (5 MiB to 5 GiB)"
        )));
    }
    let secure = params.require_bool("secure")?;
    let region = params.require_string("region")?;
    let endpoint = params
        .string("regionendpoint")
        .map(|e| endpoint_url(e, secure, bucket, force_path_style))
        .transpose()?;
    let redirect_endpoint = params
        .string("redirectendpoint")
        .map(|e| endpoint_url(e, secure, bucket, force_path_style))
        .transpose()?;

    let timeouts = Timeouts::from_params(params)?;
    let requests = RequestCounter::default();
    let builder = |endpoint: Option<&url::Url>| -> Result<AmazonS3> {
        let mut b = if params.string("accesskey").is_some() {
            AmazonS3Builder::new()
        } else {
            // The standard chain: environment, web identity, ECS, IMDS.
            AmazonS3Builder::from_env()
        };
        let mut options = timeouts
            .client_options()
            .with_allow_invalid_certificates(skip_verify)
            .with_allow_http(!secure);
        if let Some(agent) = params.string("useragent") {
            let value = agent.parse().map_err(|_| {
                Error::config(format!("useragent {agent:?} is not a valid header value"))
            })?;
            options = options.with_user_agent(value);
        }
        b = b
            .with_bucket_name(bucket)
            .with_region(region)
            .with_client_options(options)
            .with_retry(timeouts.retry_config())
            .with_http_connector(CountingConnector::new(requests.clone()));
        if let Some(ep) = endpoint {
            let virtual_hosted = !force_path_style;
            b = b
                .with_endpoint(ep.as_str().trim_end_matches('/'))
                .with_virtual_hosted_style_request(virtual_hosted)
                .with_allow_http(ep.scheme() == "http");
        }
        if let Some(key) = params.string("accesskey") {
            b = b.with_access_key_id(key).with_secret_access_key(
                params.string("secretkey").ok_or_else(|| {
                    Error::config("accesskey is given but secretkey is not; give both or neither")
                })?,
            );
        }
        if let Some(token) = params.string("sessiontoken") {
            b = b.with_token(token);
        }
        if params.require_bool("encrypt")? {
            b = match params.string("keyid") {
                Some(key) => b.with_sse_kms_encryption(key),
                None => {
                    let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                        .parse()
                        .map_err(|e| Error::config(format!("SSE-S3: {e}")))?;
                    b.with_config(key, "AES256")
                }
            };
        } else if params.string("keyid").is_some() {
            return Err(Error::config(
                "keyid is given but encrypt is false; set encrypt: true",
            ));
        }
        b.build()
            .map_err(|e| Error::config(format!("cannot build the S3 client: {e}")))
    };
    let client = Arc::new(builder(endpoint.as_ref())?);
    let signer = match &redirect_endpoint {
        Some(ep) => Arc::new(builder(Some(ep))?),
        None => Arc::clone(&client),
    };
    let base = match &endpoint {
        Some(ep) if force_path_style => ep
            .join(&format!("{}/", sigv4::escape(bucket)))
            .map_err(|e| Error::config(format!("bucket {bucket:?} in a URL: {e}")))?,
        Some(ep) => ep.clone(),
        None => url::Url::parse(&format!("https://{bucket}.s3.{region}.amazonaws.com/"))
            .map_err(|e| Error::config(format!("bucket {bucket:?} in a URL: {e}")))?,
    };
    let copy_chunk = params.require_size("multipartcopychunksize")?;
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&copy_chunk) {
        return Err(Error::config(format!(
            "multipartcopychunksize {copy_chunk} is outside S3's part sizes (5 MiB to 5 GiB)"
        )));
    }
    let concurrency = params.require_integer("multipartcopymaxconcurrency")?;
    let concurrency = usize::try_from(concurrency)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| {
            Error::config(format!(
                "multipartcopymaxconcurrency {concurrency} must be at least 1"
            ))
        })?;
    let threshold = params
        .size("multipartcopythresholdsize")
        .unwrap_or(32 << 20)
        .min(MAX_CHUNK);
    let copy = PartCopy {
        // A part copy answers once the backend has copied the part.
        http: Timeouts {
            read: timeouts.read.saturating_mul(5),
            ..timeouts
        }
        .http_client()
        .danger_accept_invalid_certs(skip_verify)
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?,
        base,
        bucket: bucket.to_owned(),
        region: region.to_owned(),
        threshold,
        chunk: copy_chunk,
        concurrency,
    };
    let storage_class = match params.string("storageclass") {
        None | Some("NONE") => None,
        Some(class) => Some(class.to_owned()),
    };
    let backend = S3Backend {
        store: Arc::clone(&client) as Arc<dyn ObjectStore>,
        client,
        signer,
        requests,
        part_size: usize::try_from(chunk)
            .map_err(|_| Error::config("chunksize does not fit in memory"))?,
        storage_class,
        copy,
    };
    ObjectDriver::new(backend, params.require_string("rootdirectory")?)
}

/// The endpoint URL from distribution's `regionendpoint`: a scheme is added
/// when missing (`secure` picks https or http); for virtual-hosted requests
/// the bucket becomes part of the host, as the AWS SDKs do.
fn endpoint_url(raw: &str, secure: bool, bucket: &str, path_style: bool) -> Result<url::Url> {
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("{}://{raw}", if secure { "https" } else { "http" })
    };
    let mut url = url::Url::parse(&with_scheme)
        .map_err(|e| Error::config(format!("endpoint {raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::config(format!(
            "endpoint {raw:?} must be an http or https URL with a host"
        )));
    }
    if !path_style {
        let host = url.host_str().unwrap_or_default();
        if !host.starts_with(&format!("{bucket}.")) {
            let virtual_host = format!("{bucket}.{host}");
            url.set_host(Some(&virtual_host)).map_err(|e| {
                Error::config(format!(
                    "bucket {bucket:?} cannot prefix the endpoint host: {e}"
                ))
            })?;
        }
    }
    Ok(url)
}

/// S3's most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

impl S3Backend {
    /// Server-side copy of `size` bytes from `from` to `to` as a multipart
    /// upload of `UploadPartCopy` ranges, `concurrency` at a time. On any
    /// failure the upload is aborted and `to` is untouched.
    async fn multipart_copy(&self, from: &Path, to: &Path, size: u64) -> Result<()> {
        let chunk = self.copy.chunk.max(size.div_ceil(MAX_PARTS));
        let upload = self.create_upload(to).await?;
        let ranges: Vec<(u64, u64)> = (0..size)
            .step_by(usize::try_from(chunk).unwrap_or(usize::MAX))
            .map(|start| (start, (start + chunk).min(size) - 1))
            .collect();
        let copied: Vec<Result<PartId>> =
            futures_util::stream::iter(ranges.into_iter().enumerate())
                .map(|(i, range)| self.copy_part(from, to, &upload, i + 1, range))
                .buffered(self.copy.concurrency)
                .collect()
                .await;
        let parts: Result<Vec<PartId>> = copied.into_iter().collect();
        let done = match parts {
            Ok(parts) => self
                .client
                .complete_multipart(to, &upload, parts)
                .await
                .map(drop)
                .map_err(|e| map_err(e, to)),
            Err(e) => Err(e),
        };
        if done.is_err() {
            // The copy's error is what the caller needs; a failed abort
            // leaves parts for the bucket's lifecycle rule.
            if let Err(e) = self.abort_upload(to, &upload).await {
                tracing::warn!(key = %to, error = %e, "aborting a failed multipart copy");
            }
        }
        done
    }

    /// One `UploadPartCopy`: bytes `first..=last` of `from` as part `number`.
    /// UploadPartCopy of bytes `first..=last` of `from` as part `number`
    /// of `upload` to `to`, retried under [`COPY_RETRY`] when S3 fails or
    /// throttles (an `<Error>` in a 200 answer included), waiting what a
    /// `Retry-After` asks.
    async fn copy_part(
        &self,
        from: &Path,
        to: &Path,
        upload: &str,
        number: usize,
        range: (u64, u64),
    ) -> Result<PartId> {
        retry(&COPY_RETRY, "UploadPartCopy", |_| {
            self.copy_part_once(from, to, upload, number, range)
        })
        .await
    }

    async fn copy_part_once(
        &self,
        from: &Path,
        to: &Path,
        upload: &str,
        number: usize,
        (first, last): (u64, u64),
    ) -> Verdict<Result<PartId>> {
        let cred = match self.client.credentials().get_credential().await {
            Ok(cred) => cred,
            Err(e) => return Verdict::Done(Err(Error::backend(e))),
        };
        let path = format!(
            "{}{}",
            self.copy.base.path(),
            sigv4::escape_key(to.as_ref())
        );
        let query = [
            ("partNumber".to_owned(), number.to_string()),
            ("uploadId".to_owned(), sigv4::escape(upload)),
        ];
        let headers = [
            (
                "x-amz-copy-source",
                format!(
                    "/{}/{}",
                    sigv4::escape(&self.copy.bucket),
                    sigv4::escape_key(from.as_ref())
                ),
            ),
            ("x-amz-copy-source-range", format!("bytes={first}-{last}")),
        ];
        let host = match (self.copy.base.host_str(), self.copy.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Verdict::Done(Err(Error::backend("the S3 endpoint has no host")));
            }
        };
        let request = sigv4::Request {
            method: "PUT",
            host: &host,
            path: &path,
            query: &query,
            headers: &headers,
        };
        let creds = sigv4::Credentials {
            key_id: &cred.key_id,
            secret: &cred.secret_key,
            token: cred.token.as_deref(),
        };
        let signed = sigv4::sign(&request, &creds, &self.copy.region, SystemTime::now());
        let mut url = self.copy.base.clone();
        url.set_path(&path);
        url.set_query(Some(&format!(
            "partNumber={number}&uploadId={}",
            sigv4::escape(upload)
        )));
        let mut req = self.copy.http.put(url).header("content-length", "0");
        for (k, v) in headers.iter().chain(signed.iter()) {
            req = req.header(*k, v);
        }
        self.requests.request().await;
        let failed = |e: reqwest::Error| {
            let why = e.to_string();
            Verdict::Retry {
                last: Err(Error::backend(format!(
                    "UploadPartCopy {number} of {from} to {to}: {why}"
                ))),
                after: None,
                why,
            }
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return failed(e),
        };
        let status = resp.status();
        let after = retry_after_of(&resp);
        let body = match resp.text().await {
            Ok(body) => body,
            Err(e) => return failed(e),
        };
        let (transient, outcome) = read_part_copy(status, &body, (from, to, number));
        if is_retryable_status(status.as_u16()) || transient {
            return Verdict::Retry {
                why: format!("HTTP {status}"),
                last: outcome,
                after,
            };
        }
        Verdict::Done(outcome)
    }

    fn put_options(&self) -> PutOptions {
        let mut attributes = Attributes::new();
        if let Some(class) = &self.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        PutOptions {
            attributes,
            ..PutOptions::default()
        }
    }
}

/// Reads an UploadPartCopy answer: whether it reports an error S3 calls
/// transient, and the part it names or the error it reports.
fn read_part_copy(
    status: reqwest::StatusCode,
    body: &str,
    ids: (&Path, &Path, usize),
) -> (bool, Result<PartId>) {
    // `<CopyPartResult>` with the part's ETag, or `<Error>` — which S3
    // may also send with 200 once the copy has started.
    let answer: PartCopyAnswer = quick_xml::de::from_str(body).unwrap_or_default();
    let transient = matches!(
        answer.code.as_deref(),
        Some("InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout")
    );
    (transient, part_copy_outcome(status, body, answer, ids))
}

/// Entry points for the fuzz targets in `fuzz/` (see `docs/fuzzing.md`).
/// Not a stable API; nothing else should call these. Bucket listings are
/// parsed by `object_store`, not here, so the only S3 XML this crate reads
/// itself is the UploadPartCopy answer.
#[doc(hidden)]
pub mod fuzzing {
    use object_store::path::Path;

    /// An UploadPartCopy answer with HTTP `status` and `body` as the driver
    /// reads it: whether it is retried as transient, and the part's ETag or
    /// the error message.
    ///
    /// # Errors
    /// `status` is not an HTTP status code (100..=999).
    pub fn part_copy_answer(
        status: u16,
        body: &str,
    ) -> Result<(bool, Result<String, String>), String> {
        let status = reqwest::StatusCode::from_u16(status).map_err(|e| e.to_string())?;
        let (from, to) = (Path::from("from"), Path::from("to"));
        let (transient, outcome) = super::read_part_copy(status, body, (&from, &to, 1));
        Ok((
            transient,
            outcome.map(|p| p.content_id).map_err(|e| e.to_string()),
        ))
    }
}

/// The part an UploadPartCopy answer names, or the error it reports
/// (`PathNotFound` for a missing source).
fn part_copy_outcome(
    status: reqwest::StatusCode,
    body: &str,
    answer: PartCopyAnswer,
    (from, to, number): (&Path, &Path, usize),
) -> Result<PartId> {
    if !status.is_success() || answer.code.is_some() {
        if status == reqwest::StatusCode::NOT_FOUND || answer.code.as_deref() == Some("NoSuchKey") {
            return Err(Error::not_found(format!("/{from}")));
        }
        let said = match (&answer.code, &answer.message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            _ => body.chars().take(300).collect(),
        };
        return Err(Error::backend(format!(
            "UploadPartCopy {number} of {from} to {to}: HTTP {status}: {said}"
        )));
    }
    let etag = answer.e_tag.ok_or_else(|| {
        Error::backend(format!(
            "UploadPartCopy {number} of {from}: no ETag in the answer"
        ))
    })?;
    Ok(PartId { content_id: etag })
}

#[async_trait]
impl Backend for S3Backend {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn requests(&self) -> &RequestCounter {
        &self.requests
    }

    fn multipart(&self) -> Option<&dyn MultipartStore> {
        Some(self.client.as_ref())
    }

    fn pages(&self) -> Option<&dyn object_store::list::PaginatedListStore> {
        Some(self.client.as_ref())
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
            .with_redirect(true)
            .with_create_if_absent(true)
    }

    async fn put(&self, key: &Path, data: PutPayload) -> Result<()> {
        self.client
            .put_opts(key, data, self.put_options())
            .await
            .map(drop)
            .map_err(|e| map_err(e, key))
    }

    async fn put_if_absent(&self, key: &Path, data: PutPayload) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..self.put_options()
        };
        created(self.client.put_opts(key, data, opts).await, key)
    }

    /// One `CopyObject` up to `multipartcopythresholdsize`, else a
    /// multipart copy; the source's size comes from one HEAD.
    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        let size = self
            .client
            .head(from)
            .await
            .map_err(|e| map_err(e, from))?
            .size;
        if size <= self.copy.threshold {
            self.client
                .copy(from, to)
                .await
                .map_err(|e| map_err(e, from))
        } else {
            self.multipart_copy(from, to, size).await
        }
    }

    async fn create_upload(&self, key: &Path) -> Result<String> {
        let opts = object_store::PutMultipartOptions {
            attributes: self.put_options().attributes,
            ..Default::default()
        };
        self.client
            .create_multipart_opts(key, opts)
            .await
            .map_err(|e| map_err(e, key))
    }

    async fn signed_url(
        &self,
        key: &Path,
        method: RedirectMethod,
        expires: Duration,
    ) -> Result<Option<url::Url>> {
        self.signer
            .signed_url(signed_method(method), key, expires)
            .await
            .map(Some)
            .map_err(|e| map_err(e, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_virtual_hosts_the_bucket() {
        let u = endpoint_url("minio:9000", false, "b", true).unwrap();
        assert_eq!(u.as_str(), "http://minio:9000/");
        let u = endpoint_url("s3.example.com", true, "b", false).unwrap();
        assert_eq!(u.as_str(), "https://b.s3.example.com/");
        let err = endpoint_url("ftp://x", true, "b", true).unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
    }

    #[test]
    fn part_copy_answers_are_read_as_xml() {
        let ok: PartCopyAnswer = quick_xml::de::from_str(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyPartResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LastModified>2026-12-03T00:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>",
        )
        .unwrap();
        assert_eq!(
            ok.e_tag.as_deref(),
            Some("\"9b2cf535f27731c974343645a3985328\"")
        );
        assert_eq!(ok.code, None);
        let err: PartCopyAnswer = quick_xml::de::from_str(
            "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>1</RequestId></Error>",
        )
        .unwrap();
        assert_eq!(err.code.as_deref(), Some("NoSuchKey"));
        assert_eq!(err.e_tag, None);
    }
}
