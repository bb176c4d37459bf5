//! `cloudfront`: storage middleware that sends blob downloads through an
//! Amazon CloudFront distribution in front of the S3 bucket, with URLs
//! signed by a canned policy — distribution's middleware of that name,
//! with the same options:
//!
//! ```yaml
//! storage:
//!   s3:
//!     bucket: registry
//!     region: eu-west-1
//! middleware:
//!   storage:
//!     - name: cloudfront
//!       options:
//!         baseurl: https://d111111abcdef8.cloudfront.net/
//!         privatekey: /etc/regstore/cloudfront/pk-APKAEXAMPLE.pem
//!         keypairid: APKAEXAMPLE
//!         duration: 20m          # URL lifetime (Go-style durations)
//!         ipfilteredby: awsregion  # none | aws | awsregion
//!         awsregion: eu-west-1,eu-central-1
//!         updatefrequency: 12h   # refresh of the AWS ip-ranges document
//! ```
//!
//! The URL is `baseurl` + the object key the inner driver stores the path
//! under (so the distribution's origin is the bucket itself), plus
//! `Expires`, `Signature` (RSA-SHA1 over the canned policy, in CloudFront's
//! URL-safe base64) and `Key-Pair-Id`. The inner driver must store paths
//! as object keys (s3; see `StorageDriver::object_key`); any other driver
//! is a startup error.
//!
//! With `ipfilteredby: aws` (or `awsregion`), clients whose address is in
//! AWS's published ranges (or those of the listed regions) — the first
//! `X-Forwarded-For` address, else `X-Real-Ip`, else the peer — get the
//! inner driver's own presigned URL instead: traffic inside AWS stays off
//! CloudFront. The ranges document (`iprangesurl`) is fetched at startup and
//! every `updatefrequency`; when it cannot be fetched, that is logged as an
//! error and retried every minute, and meanwhile every client gets
//! CloudFront.

#![warn(missing_docs)]

use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use regstore_core::{
    BuildFuture, Capabilities, Driver, Error, Middleware, MiddlewareFactory, ParamKind, ParamSpec,
    Params, RedirectRequest, Result, StorageDriver, StoragePath, async_trait,
};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use url::Url;

/// Registry name of the middleware.
pub const NAME: &str = "cloudfront";

/// AWS's published address ranges.
pub const AWS_IP_RANGES: &str = "https://ip-ranges.amazonaws.com/ip-ranges.json";

/// Retry interval while the ranges document cannot be fetched.
const RETRY: Duration = Duration::from_secs(60);

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "baseurl",
        ParamKind::String,
        "the distribution's URL (https:// added when no scheme is given)",
    )
    .required(),
    ParamSpec::new(
        "privatekey",
        ParamKind::String,
        "PEM file of the key pair's RSA private key (PKCS#1 or PKCS#8)",
    )
    .required(),
    ParamSpec::new(
        "keypairid",
        ParamKind::String,
        "CloudFront key pair (public key) id",
    )
    .required(),
    ParamSpec::new("duration", ParamKind::Duration, "lifetime of a signed URL").default("20m"),
    ParamSpec::new(
        "ipfilteredby",
        ParamKind::String,
        "none, aws (AWS clients get the inner driver's URL) or awsregion (only those in awsregion)",
    )
    .default("none"),
    ParamSpec::new(
        "awsregion",
        ParamKind::String,
        "comma-separated regions for ipfilteredby: awsregion",
    ),
    ParamSpec::new(
        "updatefrequency",
        ParamKind::Duration,
        "how often the ranges document is fetched again",
    )
    .default("12h"),
    ParamSpec::new(
        "iprangesurl",
        ParamKind::String,
        "URL of the AWS ip-ranges document",
    )
    .default(AWS_IP_RANGES),
];

/// The middleware's factory, as [`register`] adds it.
pub static FACTORY: MiddlewareFactory = MiddlewareFactory {
    name: NAME,
    description: "Redirects blob downloads to Amazon CloudFront with signed URLs (canned policy); optionally AWS clients go to S3 directly.",
    params: PARAMS,
    build,
};

/// Makes this middleware known by name to `regstore_core::wrap` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_middleware(&FACTORY);
}

fn build(inner: Driver, params: Params) -> BuildFuture {
    Box::pin(async move {
        let mw = CloudFront::from_params(inner, &params).await?;
        Ok(Box::new(mw) as Box<dyn StorageDriver>)
    })
}

/// `baseurl` as a URL whose path ends with `/`: `https://` is added when no
/// scheme is given.
///
/// # Errors
/// `Config` when it is not an http(s) URL with a host.
pub fn base_url(raw: &str) -> Result<Url> {
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("https://{raw}")
    };
    let mut url = Url::parse(&with_scheme)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            Error::config(format!("baseurl {raw:?} is not an http(s) URL with a host"))
        })?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    Ok(url)
}

/// Signs CloudFront URLs with a canned policy.
pub struct UrlSigner {
    key: rsa::pkcs1v15::SigningKey<sha1::Sha1>,
    key_pair_id: String,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner")
            .field("key_pair_id", &self.key_pair_id)
            .finish_non_exhaustive()
    }
}

impl UrlSigner {
    /// A signer from the PEM text of an RSA private key (PKCS#1 `RSA PRIVATE
    /// KEY` or PKCS#8 `PRIVATE KEY`); `origin` names the key in errors.
    ///
    /// # Errors
    /// `Config` when the text holds no RSA private key.
    pub fn from_pem(pem: &str, key_pair_id: &str, origin: &str) -> Result<Self> {
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|e| {
                Error::config(format!(
                    "privatekey {origin}: not an RSA private key in PEM (PKCS#1 or PKCS#8): {e}"
                ))
            })?;
        Ok(UrlSigner {
            key: rsa::pkcs1v15::SigningKey::new(key),
            key_pair_id: key_pair_id.to_owned(),
        })
    }

    /// `resource` signed to be valid until `expires` (seconds since the
    /// epoch): `Expires`, `Signature`, `Key-Pair-Id` appended to its query.
    pub fn sign(&self, resource: &Url, expires: u64) -> Url {
        let policy = canned_policy(resource.as_str(), expires);
        let signature = self.key.sign(policy.as_bytes()).to_vec();
        let mut url = resource.clone();
        url.query_pairs_mut()
            .append_pair("Expires", &expires.to_string())
            .append_pair("Signature", &url_safe_base64(&signature))
            .append_pair("Key-Pair-Id", &self.key_pair_id);
        url
    }
}

/// CloudFront's canned policy for `resource` until `expires`, byte for byte
/// as CloudFront rebuilds it to check the signature (no whitespace).
pub fn canned_policy(resource: &str, expires: u64) -> String {
    let resource = serde_json::Value::String(resource.to_owned());
    format!(
        r#"{{"Statement":[{{"Resource":{resource},"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    )
}

/// Base64 in CloudFront's URL-safe alphabet: `+` → `-`, `=` → `_`, `/` → `~`.
pub fn url_safe_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// Address ranges from an AWS ip-ranges document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    v4: Vec<(u32, u8)>,
    v6: Vec<(u128, u8)>,
}

#[derive(serde::Deserialize)]
struct Document {
    #[serde(default)]
    prefixes: Vec<V4Prefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<V6Prefix>,
}

#[derive(serde::Deserialize)]
struct V4Prefix {
    ip_prefix: String,
    #[serde(default)]
    region: String,
}

#[derive(serde::Deserialize)]
struct V6Prefix {
    ipv6_prefix: String,
    #[serde(default)]
    region: String,
}

impl Ranges {
    /// The ranges of `json` (AWS's ip-ranges format), only those of
    /// `regions` when given.
    ///
    /// # Errors
    /// A message naming what is malformed.
    pub fn parse(json: &[u8], regions: Option<&[String]>) -> std::result::Result<Self, String> {
        let doc: Document =
            serde_json::from_slice(json).map_err(|e| format!("not an ip-ranges document: {e}"))?;
        let wanted = |region: &str| regions.is_none_or(|r| r.iter().any(|w| w == region));
        let mut out = Ranges::default();
        for p in doc.prefixes.iter().filter(|p| wanted(&p.region)) {
            let (addr, len) = split_cidr(&p.ip_prefix)?;
            let IpAddr::V4(a) = addr else {
                return Err(format!("{} is not an IPv4 prefix", p.ip_prefix));
            };
            out.v4.push((u32::from(a), len.min(32)));
        }
        for p in doc.ipv6_prefixes.iter().filter(|p| wanted(&p.region)) {
            let (addr, len) = split_cidr(&p.ipv6_prefix)?;
            let IpAddr::V6(a) = addr else {
                return Err(format!("{} is not an IPv6 prefix", p.ipv6_prefix));
            };
            out.v6.push((u128::from(a), len.min(128)));
        }
        Ok(out)
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is in a range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|(net, len)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    a & mask == net & mask
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|(net, len)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    a & mask == net & mask
                })
            }
        }
    }
}

fn split_cidr(s: &str) -> std::result::Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not an address/length prefix"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| format!("{s:?}: bad address: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{s:?}: bad length: {e}"))?;
    Ok((addr, len))
}

/// Who gets the inner driver's URL instead of CloudFront's.
#[derive(Debug)]
struct IpFilter {
    url: String,
    regions: Option<Vec<String>>,
    client: reqwest::Client,
    ranges: Arc<RwLock<Arc<Ranges>>>,
}

impl IpFilter {
    async fn fetch(&self) -> std::result::Result<Ranges, String> {
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if !resp.status().is_success() {
            return Err(format!("GET {}: HTTP {}", self.url, resp.status()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        Ranges::parse(&body, self.regions.as_deref()).map_err(|e| format!("{}: {e}", self.url))
    }

    fn set(&self, ranges: Ranges) {
        if let Ok(mut slot) = self.ranges.write() {
            *slot = Arc::new(ranges);
        }
    }

    fn current(&self) -> Arc<Ranges> {
        self.ranges
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Fetches again every `every` (every minute after a failure) while the
    /// middleware lives.
    fn refresh_in_background(self: &Arc<Self>, every: Duration, failed: bool) {
        let weak: Weak<IpFilter> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = if failed { RETRY.min(every) } else { every };
            loop {
                tokio::time::sleep(wait).await;
                let Some(filter) = weak.upgrade() else { break };
                match filter.fetch().await {
                    Ok(r) => {
                        tracing::info!(url = %filter.url, "cloudfront: AWS ip ranges updated");
                        filter.set(r);
                        wait = every;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cloudfront: cannot update the AWS ip ranges; retrying");
                        wait = RETRY.min(every);
                    }
                }
            }
        });
    }
}

/// The middleware.
#[derive(Debug)]
pub struct CloudFront {
    inner: Driver,
    base: Url,
    signer: UrlSigner,
    duration: Duration,
    filter: Option<Arc<IpFilter>>,
}

impl CloudFront {
    /// Builds the middleware from its options (see the crate docs).
    ///
    /// # Errors
    /// `Config` naming the option: an inner driver without object keys, a
    /// bad `baseurl`, an unreadable or non-RSA `privatekey`, an unknown
    /// `ipfilteredby`, `awsregion` missing for `awsregion`. An unreachable
    /// ranges document is not an error (logged, retried).
    pub async fn from_params(inner: Driver, params: &Params) -> Result<Self> {
        let probe = StoragePath::parse("/probe").map_err(Error::backend)?;
        if inner.backend().object_key(&probe).is_none() {
            return Err(Error::config(format!(
                "cloudfront needs a driver that stores paths as object keys (s3, or another object-store driver); {} does not",
                inner.name()
            )));
        }
        let base = base_url(params.require_string("baseurl")?)?;
        let file = params.require_string("privatekey")?;
        let pem = std::fs::read_to_string(file)
            .map_err(|e| Error::config(format!("privatekey {file:?} cannot be read: {e}")))?;
        let signer = UrlSigner::from_pem(&pem, params.require_string("keypairid")?, file)?;
        let duration = params.require_duration("duration")?;
        let regions = params.string("awsregion").map(|r| {
            r.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        let regions = match params.require_string("ipfilteredby")? {
            "none" | "" => None,
            "aws" => Some(None),
            "awsregion" => match regions {
                Some(r) if !r.is_empty() => Some(Some(r)),
                _ => {
                    return Err(Error::config(
                        "ipfilteredby: awsregion needs awsregion (e.g. awsregion: us-east-1,eu-west-1)",
                    ));
                }
            },
            other => {
                return Err(Error::config(format!(
                    "ipfilteredby {other:?} must be none, aws or awsregion"
                )));
            }
        };
        let filter = match regions {
            None => None,
            Some(regions) => {
                regstore_objectstore::install_crypto();
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
                let filter = Arc::new(IpFilter {
                    url: params.require_string("iprangesurl")?.to_owned(),
                    regions,
                    client,
                    ranges: Arc::default(),
                });
                let failed = match filter.fetch().await {
                    Ok(r) => {
                        filter.set(r);
                        false
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            "cloudfront: cannot fetch the AWS ip ranges; every client gets CloudFront until a retry succeeds"
                        );
                        true
                    }
                };
                let every = params.require_duration("updatefrequency")?;
                filter.refresh_in_background(every, failed);
                Some(filter)
            }
        };
        Ok(CloudFront {
            inner,
            base,
            signer,
            duration,
            filter,
        })
    }

    /// Whether `request` comes from inside the filtered AWS ranges.
    fn inside_aws(&self, request: &RedirectRequest) -> bool {
        match (&self.filter, request.client_addr()) {
            (Some(filter), Some(ip)) => filter.current().contains(ip),
            _ => false,
        }
    }
}

#[async_trait]
impl Middleware for CloudFront {
    fn inner(&self) -> &Driver {
        &self.inner
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_redirect(true)
    }

    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<Url>> {
        if self.inside_aws(request) {
            return self.inner.backend().redirect_url(request, path).await;
        }
        let key = self
            .inner
            .backend()
            .object_key(path)
            .ok_or_else(|| Error::backend(format!("no object key for {path}")))?;
        let mut resource = self.base.clone();
        let joined = format!("{}{}", self.base.path(), key);
        resource.set_path(&joined);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(Error::backend)?;
        let expires = (now + self.duration).as_secs();
        Ok(Some(self.signer.sign(&resource, expires)))
    }
}
