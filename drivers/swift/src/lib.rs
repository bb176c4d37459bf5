//! regstore-driver-swift: the `swift` storage driver for OpenStack Swift,
//! speaking Swift's REST API directly.
//!
//! Everything a registry needs from a driver beyond Swift's object API —
//! keys under a prefix, directories from delimiter listings, walks from
//! flat listings, writers resumable across processes — is
//! `regstore-objectstore`'s [`ObjectDriver`], on the container seen as an
//! `object_store` store ([`store::SwiftStore`]). What is Swift's own:
//!
//! - **Auth**: TempAuth / v1.0 (`authurl` ending in `/auth/v1.0`, or
//!   `authversion: 1`) and Keystone identity v3 (`authversion: 3`, or an
//!   `authurl` ending in `/v3`) with a password (user by name in
//!   `domain`/`domainid`, or by id) or an application credential, scoped to
//!   a project (`tenant`/`tenantid`, in `tenantdomain`/`tenantdomainid`,
//!   default: the user's domain) or a trust (`trustid`); the object-store
//!   endpoint is taken from the catalog by `region` and `endpointtype`.
//!   The token is renewed two minutes before it expires and after a 401.
//! - **Writers**: full chunks (`chunksize`) are segments under
//!   `<prefix>/~segments/<upload id>/`, which no listing of the registry
//!   tree shows (`~` is not a storage-path character); `commit` PUTs a
//!   Static Large Object manifest naming them at the final name. Past the
//!   cluster's `max_manifest_segments` (1,000 by default: 20 GB at the
//!   default chunk size) groups of segments become manifests themselves
//!   (nested SLOs), so object size has no practical limit. Objects
//!   smaller than a chunk are single PUTs. `cancel`, and `delete` of a
//!   directory holding unfinished writers, delete the segments, and so do
//!   a commit or a rename that replaces a large object (one HEAD more per
//!   commit of a large object and per rename).
//! - **Delete** of a directory: plain objects through the bulk middleware
//!   when `/info` advertises it (else one by one), large objects with
//!   `?multipart-manifest=delete`, so their segments go too.
//! - **Rename** is a server-side `COPY` with `?multipart-manifest=get`: a
//!   large object's manifest is copied (the segments stay where they are),
//!   then the old name is deleted without its segments.
//! - **Redirects** are TempURLs (HMAC-SHA256 over method, expiry and path)
//!   when `secretkey` is given. The key must be set on the account
//!   (`X-Account-Meta-Temp-URL-Key`) or, with `tempurlcontainerkey: true`,
//!   on the container; the driver sets it itself only with
//!   `settempurlkey: true`, and never touches account metadata otherwise.
//! - **Eventual consistency**: a manifest PUT that Swift refuses because a
//!   segment is not visible yet is retried (5 times over ~3 s); a
//!   rename whose source is not found yet is retried 3 times over ~0.7 s;
//!   listings, walks and directory deletes include the names this driver
//!   wrote in the last `consistencywindow` that the container listing does
//!   not show yet ([`recent`]).
//!
//! # Parameters
//!
//! | name | default | meaning |
//! |---|---|---|
//! | `authurl` | required | TempAuth URL (`…/auth/v1.0`) or Keystone v3 URL (`…/v3`) |
//! | `username`, `password` | | user (`account:user` for TempAuth) and password / key |
//! | `authversion` | from `authurl` | `1` or `3` |
//! | `userid` | | Keystone user id instead of a name |
//! | `domain`, `domainid` | | the user's Keystone domain |
//! | `tenant`, `tenantid` | | project to scope to |
//! | `tenantdomain`, `tenantdomainid` | the user's domain | the project's domain |
//! | `trustid` | | Keystone trust to scope to |
//! | `applicationcredentialid`, `applicationcredentialname`, `applicationcredentialsecret` | | Keystone application credential (a name needs the user) |
//! | `region` | any | region of the object-store endpoint |
//! | `endpointtype` | `public` | `public`, `internal` or `admin` |
//! | `container` | required | container, created if missing |
//! | `prefix` | `""` | name prefix of everything stored (distribution's; `rootdirectory` is an alias) |
//! | `chunksize` | `20MiB` | segment size of large objects (≥ 1 MiB) |
//! | `consistencywindow` | `15s` | how long the driver merges its own writes into listings that lag them (see [`recent`]) |
//! | `listpagesize` | the cluster's `container_listing_limit` | names per listing request (listings page with `marker`) |
//! | `insecureskipverify` | `false` | accept any TLS certificate |
//! | `secretkey` | | TempURL key; enables redirects |
//! | `tempurlcontainerkey` | `false` | `secretkey` is the container's key |
//! | `settempurlkey` | `false` | store `secretkey` on the account (or container) at startup |
//!
//! Tested against a single-node Swift 2.30 (`scripts/backends.sh start
//! swift`, TempAuth) on every CI run: the whole conformance suite, with
//! TempURL redirects fetched (Swift verifies their signatures).

#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod recent;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use regstore_core::params::ParamKind::{self, Bool, Integer, Secret, Size, String as Str};
use regstore_core::{
    BuildFuture, Capabilities, DriverFactory, Error, ParamSpec, Params, RedirectMethod,
    RequestCounter, Result, StorageDriver,
};
use regstore_objectstore::{Backend, ObjectDriver, Part};
use reqwest::{Method, StatusCode};

use crate::auth::{Auth, Credentials, Identity, Ref};
use crate::client::{Client, escape, http_error};
use crate::store::{SLO, SwiftStore};

/// Registry name of the driver.
pub const NAME: &str = "swift";
const DEFAULT_CHUNK: u64 = 20 << 20;
const MIN_CHUNK: u64 = 1 << 20;
/// Top-level name under the prefix where segments live.
const SEGMENTS: &str = "~segments";

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "authurl",
        Str,
        "TempAuth (…/auth/v1.0) or Keystone v3 (…/v3) URL",
    )
    .required(),
    ParamSpec::new("username", Str, "user name (account:user for TempAuth)"),
    ParamSpec::new("password", Secret, "password (TempAuth key)"),
    ParamSpec::new(
        "authversion",
        Integer,
        "1 (TempAuth) or 3 (Keystone); default from authurl",
    ),
    ParamSpec::new("userid", Str, "Keystone user id (instead of username)"),
    ParamSpec::new("domain", Str, "the user's Keystone domain name"),
    ParamSpec::new("domainid", Str, "the user's Keystone domain id"),
    ParamSpec::new("tenant", Str, "project name to scope to"),
    ParamSpec::new("tenantid", Str, "project id to scope to"),
    ParamSpec::new(
        "tenantdomain",
        Str,
        "the project's domain name (default: the user's)",
    ),
    ParamSpec::new("tenantdomainid", Str, "the project's domain id"),
    ParamSpec::new("trustid", Str, "Keystone trust id to scope to"),
    ParamSpec::new(
        "applicationcredentialid",
        Str,
        "Keystone application credential id",
    ),
    ParamSpec::new(
        "applicationcredentialname",
        Str,
        "application credential name (with username)",
    ),
    ParamSpec::new(
        "applicationcredentialsecret",
        Secret,
        "application credential secret",
    ),
    ParamSpec::new("region", Str, "region of the object-store endpoint"),
    ParamSpec::new("endpointtype", Str, "public, internal or admin").default("public"),
    ParamSpec::new("container", Str, "container, created if missing").required(),
    ParamSpec::new("prefix", Str, "name prefix of everything stored").default(""),
    ParamSpec::new("rootdirectory", Str, "alias of prefix"),
    ParamSpec::new("chunksize", Size, "segment size of large objects (>= 1MiB)").default("20MiB"),
    ParamSpec::new(
        "consistencywindow",
        ParamKind::Duration,
        "how long the driver merges its own writes into listings that lag them (0s: never)",
    )
    .default("15s"),
    ParamSpec::new(
        "listpagesize",
        Integer,
        "names per listing request (default: the cluster's container_listing_limit)",
    ),
    ParamSpec::new("insecureskipverify", Bool, "accept any TLS certificate").default("false"),
    ParamSpec::new("secretkey", Secret, "TempURL key; enables redirects"),
    ParamSpec::new(
        "tempurlcontainerkey",
        Bool,
        "secretkey is the container's TempURL key",
    )
    .default("false"),
    ParamSpec::new(
        "settempurlkey",
        Bool,
        "store secretkey on the account (or container) at startup",
    )
    .default("false"),
];

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: NAME,
    description: "OpenStack Swift (TempAuth or Keystone v3); large objects as SLOs; TempURL redirects",
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
        let driver = swift_driver(&params).await?;
        Ok(Box::new(driver) as Box<dyn StorageDriver>)
    })
}

/// The `swift` driver: [`ObjectDriver`] on [`SwiftBackend`].
pub type SwiftDriver = ObjectDriver<SwiftBackend>;

/// OpenStack Swift under [`ObjectDriver`].
#[derive(Debug)]
pub struct SwiftBackend {
    store: Arc<dyn ObjectStore>,
    /// The same store, typed: manifests and segments written outside it
    /// are recorded in its recent writes.
    swift: SwiftStore,
    client: Arc<Client>,
    part_size: usize,
    /// Segment names start with this (`<prefix>/~segments`).
    segments: String,
    tempurl_key: Option<String>,
}

/// The credentials the parameters describe.
///
/// # Errors
/// `Config` naming what is missing or contradictory.
pub fn credentials(params: &Params) -> Result<Credentials> {
    let url = params.require_string("authurl")?.trim_end_matches('/');
    let version = match params.integer("authversion") {
        Some(v) => v,
        None if url.ends_with("/v3") => 3,
        None if url.contains("/v1") || url.ends_with("/auth") => 1,
        None => {
            return Err(Error::config(format!(
                "authurl {url:?}: cannot tell the auth version; set authversion: 1 (TempAuth) or 3 (Keystone)"
            )));
        }
    };
    let s = |name: &str| params.string(name).filter(|v| !v.is_empty());
    match version {
        1 => {
            let user = s("username")
                .ok_or_else(|| Error::config("username (account:user) is required for TempAuth"))?;
            let key =
                s("password").ok_or_else(|| Error::config("password is required for TempAuth"))?;
            Ok(Credentials::V1 {
                url: url.to_owned(),
                user: user.to_owned(),
                key: key.to_owned(),
            })
        }
        3 => {
            let user = Ref::from_parts(s("userid"), s("username"));
            let domain = Ref::from_parts(s("domainid"), s("domain"));
            let credential =
                Ref::from_parts(s("applicationcredentialid"), s("applicationcredentialname"));
            let identity = match credential {
                Some(credential) => {
                    let secret = s("applicationcredentialsecret").ok_or_else(|| {
                        Error::config("applicationcredentialsecret is required with an application credential")
                    })?;
                    if credential.id.is_none() && user.is_none() {
                        return Err(Error::config(
                            "applicationcredentialname needs username or userid (names are per user)",
                        ));
                    }
                    Identity::ApplicationCredential {
                        credential,
                        user,
                        domain,
                        secret: secret.to_owned(),
                    }
                }
                None => {
                    let user = user.ok_or_else(|| {
                        Error::config("username or userid is required for Keystone (or an application credential)")
                    })?;
                    if user.id.is_none() && domain.is_none() {
                        return Err(Error::config(
                            "a Keystone user named by username needs domain or domainid",
                        ));
                    }
                    let password = s("password")
                        .ok_or_else(|| Error::config("password is required for Keystone"))?;
                    Identity::Password {
                        user,
                        domain,
                        password: password.to_owned(),
                    }
                }
            };
            let project = Ref::from_parts(s("tenantid"), s("tenant"));
            let project_domain = Ref::from_parts(s("tenantdomainid"), s("tenantdomain")).or_else(
                || match &identity {
                    Identity::Password { domain, .. } => domain.clone(),
                    Identity::ApplicationCredential { .. } => None,
                },
            );
            if project.as_ref().is_some_and(|p| p.id.is_none()) && project_domain.is_none() {
                return Err(Error::config(
                    "a project named by tenant needs tenantdomain, tenantdomainid or the user's domain",
                ));
            }
            let interface = s("endpointtype").unwrap_or("public");
            if !matches!(interface, "public" | "internal" | "admin") {
                return Err(Error::config(format!(
                    "endpointtype {interface:?} must be public, internal or admin"
                )));
            }
            Ok(Credentials::V3 {
                url: url.to_owned(),
                identity,
                project,
                project_domain,
                trust_id: s("trustid").map(str::to_owned),
                region: s("region").map(str::to_owned),
                interface: interface.to_owned(),
            })
        }
        other => Err(Error::config(format!(
            "authversion {other} is not supported (1: TempAuth, 3: Keystone v3)"
        ))),
    }
}

/// The `swift` driver from checked parameters (see the crate docs): logs
/// in, creates the container if missing, and stores the TempURL key when
/// `settempurlkey` says so.
///
/// # Errors
/// `Config` for parameters that cannot work or credentials the auth service
/// refuses; `Backend` when Swift cannot be reached.
pub async fn swift_driver(params: &Params) -> Result<SwiftDriver> {
    regstore_objectstore::install_crypto();
    let creds = credentials(params)?;
    let container = params.require_string("container")?;
    if container.is_empty() || container.contains('/') {
        return Err(Error::config(format!(
            "container {container:?} must be a non-empty name without '/'"
        )));
    }
    let chunk = params.size("chunksize").unwrap_or(DEFAULT_CHUNK);
    if chunk < MIN_CHUNK {
        return Err(Error::config(format!(
            "chunksize {chunk} is below the minimum of 1 MiB (1048576)"
        )));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .danger_accept_invalid_certs(params.bool("insecureskipverify").unwrap_or(false))
        .build()
        .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
    let page = match params.integer("listpagesize") {
        None => 0,
        Some(n) if n >= 1 => usize::try_from(n.min(store::PAGE as i64)).unwrap_or(store::PAGE),
        Some(n) => {
            return Err(Error::config(format!(
                "listpagesize {n} must be at least 1"
            )));
        }
    };
    let requests = RequestCounter::default();
    let auth = Auth::new(creds, http.clone(), requests.clone());
    let client = Arc::new(Client::new(http, auth, requests, container.to_owned()));
    let window = params
        .duration("consistencywindow")
        .unwrap_or(Duration::from_secs(15));
    let swift = SwiftStore::new(Arc::clone(&client), page, window);
    let prefix = params
        .string("rootdirectory")
        .or(params.string("prefix"))
        .unwrap_or("");
    let trimmed = prefix.trim_matches('/');
    let segments = if trimmed.is_empty() {
        SEGMENTS.to_owned()
    } else {
        format!("{trimmed}/{SEGMENTS}")
    };
    let backend = SwiftBackend {
        store: Arc::new(swift.clone()),
        swift,
        client,
        part_size: usize::try_from(chunk)
            .map_err(|_| Error::config("chunksize does not fit in memory"))?,
        segments,
        tempurl_key: params.string("secretkey").map(str::to_owned),
    };
    backend.ensure_container().await?;
    if params.bool("settempurlkey").unwrap_or(false) {
        let on_container = params.bool("tempurlcontainerkey").unwrap_or(false);
        backend.store_tempurl_key(on_container).await?;
    }
    ObjectDriver::new(backend, prefix)
}

impl SwiftBackend {
    /// Creates the container unless it exists (PUT is idempotent: 201 or 202).
    async fn ensure_container(&self) -> Result<()> {
        let resp = self
            .client
            .send(Method::PUT, None, "", |r| r.header("Content-Length", "0"))
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let e = http_error(resp, "creating the container", self.client.container()).await;
        Err(Error::config(format!(
            "container {:?} is not usable: {e}",
            self.client.container()
        )))
    }

    async fn store_tempurl_key(&self, on_container: bool) -> Result<()> {
        let Some(key) = self.tempurl_key.clone() else {
            return Err(Error::config("settempurlkey needs secretkey"));
        };
        let (header, resp) = if on_container {
            let h = "X-Container-Meta-Temp-URL-Key";
            let r = self
                .client
                .send(Method::POST, None, "", |r| {
                    r.header(h, &key).header("Content-Length", "0")
                })
                .await?;
            (h, r)
        } else {
            let h = "X-Account-Meta-Temp-URL-Key";
            let r = self
                .client
                .send_to(
                    |s| s.storage_url.clone(),
                    Method::POST,
                    |r| r.header(h, &key).header("Content-Length", "0"),
                )
                .await?;
            (h, r)
        };
        if resp.status().is_success() {
            return Ok(());
        }
        let e = http_error(resp, "setting the TempURL key", self.client.container()).await;
        Err(Error::config(format!("cannot set {header}: {e}")))
    }

    fn segment(&self, upload: &str, index: usize) -> String {
        format!("{}/{upload}/{index:08}", self.segments)
    }

    async fn put_segment(&self, name: &str, data: Bytes) -> Result<String> {
        let resp = self
            .client
            .send(Method::PUT, Some(name), "", |r| {
                r.header("Content-Type", "application/octet-stream")
                    .header("Content-Length", data.len())
                    .body(data.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(http_error(resp, "segment upload", name).await);
        }
        self.swift.recent().wrote(name);
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|e| e.trim_matches('"').to_owned())
            .ok_or_else(|| Error::backend(format!("Swift segment upload of {name}: no ETag")))
    }

    /// PUTs the static large object manifest `name` naming `segments`
    /// (name, ETag — empty for a nested manifest —, size).
    ///
    /// Swift checks every segment with a HEAD; on a cluster that has not
    /// made a fresh segment visible everywhere yet, it answers 400 with
    /// "404 Not Found" for that segment: that is retried 5 times, waiting
    /// 0.1 s, then twice as long each time (~3 s in all).
    async fn put_manifest(&self, name: &str, segments: &[(String, String, u64)]) -> Result<()> {
        let container = self.client.container().to_owned();
        let manifest: Vec<serde_json::Value> = segments
            .iter()
            .map(|(segment, etag, size)| {
                serde_json::json!({
                    "path": format!("/{container}/{segment}"),
                    "etag": if etag.is_empty() { None } else { Some(etag) },
                    "size_bytes": size,
                })
            })
            .collect();
        let body = serde_json::to_vec(&manifest).map_err(Error::backend)?;
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=6 {
            let resp = self
                .client
                .send(Method::PUT, Some(name), "multipart-manifest=put", |r| {
                    r.header("Content-Type", "application/octet-stream")
                        .header("Content-Length", body.len())
                        .body(body.clone())
                })
                .await?;
            let status = resp.status();
            if status.is_success() {
                self.swift.recent().wrote(name);
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            if status == StatusCode::BAD_REQUEST && text.contains("404 Not Found") && attempt < 6 {
                tracing::debug!(%name, attempt, "Swift: a segment is not visible yet; manifest PUT retried");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            let text: String = text.chars().take(300).collect();
            return Err(Error::backend(format!(
                "Swift manifest upload of {name}: HTTP {status}: {text}"
            )));
        }
        Err(Error::backend(format!(
            "Swift manifest upload of {name}: segments never became visible"
        )))
    }

    /// Deletes the static large object `name` with its segments:
    /// `?multipart-manifest=delete`, one request. Swift refuses that for a
    /// nested object of more than ten times `max_manifest_segments`
    /// segments ("Too many buffered slo segments"); such an object's
    /// sub-manifests are deleted one by one first, then the rest.
    fn delete_slo<'a>(&'a self, name: &'a str) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let resp = self
                .client
                .send(
                    Method::DELETE,
                    Some(name),
                    "multipart-manifest=delete",
                    |r| r.header("Accept", "application/json"),
                )
                .await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                self.swift.recent().gone(name);
                return Ok(());
            }
            if !status.is_success() {
                return Err(http_error(resp, "large-object delete", name).await);
            }
            self.swift.recent().gone(name);
            // The answer is a report: 200 even when some deletes failed.
            let body = resp.bytes().await.map_err(Error::backend)?;
            let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let status = report["Response Status"].as_str().unwrap_or("200");
            let errors = report["Errors"].as_array().map(Vec::len).unwrap_or(0);
            if status.starts_with('2') || (status.starts_with("404") && errors == 0) {
                return Ok(());
            }
            if String::from_utf8_lossy(&body).contains("Too many buffered") {
                return self.delete_nested(name).await;
            }
            Err(Error::backend(format!(
                "Swift large-object delete of {name}: {status}: {}",
                report["Errors"]
            )))
        })
    }

    /// Deletes the nested large object `name` part by part: each
    /// sub-manifest with its segments, the direct segments in bulk, then
    /// the manifest itself.
    async fn delete_nested(&self, name: &str) -> Result<()> {
        let resp = self
            .client
            .send(Method::GET, Some(name), "multipart-manifest=get", |r| r)
            .await?;
        if !resp.status().is_success() {
            return Err(http_error(resp, "reading the manifest", name).await);
        }
        let body = resp.bytes().await.map_err(Error::backend)?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| Error::backend(format!("Swift manifest of {name}: {e}")))?;
        let own = format!("/{}/", self.client.container());
        let mut plain = Vec::new();
        for entry in &entries {
            let Some(segment) = entry["name"].as_str().and_then(|n| n.strip_prefix(&own)) else {
                continue; // in another container: not the driver's to delete
            };
            if entry["sub_slo"].as_bool() == Some(true) {
                self.delete_slo(segment).await?;
            } else {
                plain.push(Path::parse(segment).map_err(Error::backend)?);
            }
        }
        plain.push(Path::parse(name).map_err(Error::backend)?);
        regstore_objectstore::delete_keys(self.store.as_ref(), plain).await
    }

    /// Before the large object `name` is replaced (by a commit or a
    /// rename onto it): its manifest is copied to a name of its own under
    /// the segments, so that [`SwiftBackend::drop_aside`] can delete the
    /// old segments once the replacement is in. One HEAD when `name` is no
    /// large object; a plain PUT over a large object (`put_content`) does
    /// not do this.
    ///
    /// With `source` (a rename), nothing is set aside when the source has
    /// the same content (ETag): the two manifests may share segments.
    async fn set_aside(&self, name: &str, source: Option<&Path>) -> Result<Option<String>> {
        let path = Path::parse(name).map_err(Error::backend)?;
        let meta = match self.store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(regstore_objectstore::map_err(e, &path)),
        };
        if meta.version.as_deref() != Some(SLO) {
            return Ok(None);
        }
        if let Some(source) = source {
            match self.store.head(source).await {
                Ok(s) if s.e_tag.is_some() && s.e_tag == meta.e_tag => return Ok(None),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(regstore_objectstore::map_err(e, source)),
            }
        }
        let aside = format!("{}/{}/replaced", self.segments, upload_id()?);
        let to = Path::parse(&aside).map_err(Error::backend)?;
        self.store
            .copy(&path, &to)
            .await
            .map_err(|e| regstore_objectstore::map_err(e, &path))?;
        Ok(Some(aside))
    }

    /// Deletes a manifest [`SwiftBackend::set_aside`] kept, with the
    /// segments of the object it replaced.
    async fn drop_aside(&self, aside: Option<String>) -> Result<()> {
        match aside {
            Some(name) => self.delete_slo(&name).await,
            None => Ok(()),
        }
    }

    /// Deletes every segment of `upload`.
    async fn delete_segments(&self, upload: &str) -> Result<()> {
        // Parsed, not built from parts: `Path::from` would escape the `~`.
        let dir = Path::parse(format!("{}/{upload}", self.segments)).map_err(Error::backend)?;
        let names: Vec<Path> = {
            use futures_util::TryStreamExt;
            self.store
                .list(Some(&dir))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(Error::backend)?
        };
        regstore_objectstore::delete_keys(self.store.as_ref(), names).await
    }
}

/// A random upload id (128 bits, hex).
fn upload_id() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::backend("no randomness for an upload id"))?;
    Ok(hex::encode(bytes))
}

/// A TempURL for `path` (the URL path Swift sees, unescaped) and `method`
/// until `expires` (seconds since the epoch): the query Swift's tempurl
/// middleware checks, signed with HMAC-SHA256 under `key`.
pub fn tempurl_query(key: &str, method: &str, expires: u64, path: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    let tag = ring::hmac::sign(&k, format!("{method}\n{expires}\n{path}").as_bytes());
    format!(
        "temp_url_sig={}&temp_url_expires={expires}",
        hex::encode(tag.as_ref())
    )
}

#[async_trait]
impl Backend for SwiftBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn requests(&self) -> &RequestCounter {
        self.client.requests()
    }

    fn multipart(&self) -> Option<&dyn object_store::multipart::MultipartStore> {
        None
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_redirect(self.tempurl_key.is_some())
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        let aside = self.set_aside(to.as_ref(), Some(from)).await?;
        // A source written a moment ago may not be visible on every node yet.
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=4 {
            match self.store.copy(from, to).await {
                Ok(()) => return self.drop_aside(aside).await,
                Err(object_store::Error::NotFound { .. }) if attempt < 4 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(regstore_objectstore::map_err(e, from)),
            }
        }
        Err(Error::not_found(format!("/{from}")))
    }

    async fn create_upload(&self, _key: &Path) -> Result<String> {
        upload_id()
    }

    async fn upload_part(
        &self,
        _key: &Path,
        upload: &str,
        index: usize,
        _offset: u64,
        data: PutPayload,
    ) -> Result<String> {
        self.put_segment(&self.segment(upload, index), Bytes::from(data))
            .await
    }

    async fn complete_upload(
        &self,
        key: &Path,
        upload: &str,
        parts: &[Part],
        last: PutPayload,
        _total: u64,
    ) -> Result<()> {
        let mut segments: Vec<(String, String, u64)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (self.segment(upload, i), p.id.clone(), p.size))
            .collect();
        let last = Bytes::from(last);
        if !last.is_empty() {
            let name = self.segment(upload, parts.len());
            let size = last.len() as u64;
            let etag = self.put_segment(&name, last).await?;
            segments.push((name, etag, size));
        }
        let max = self.client.info().await?.max_manifest_segments.max(2);
        // Past the cluster's limit, groups of segments become manifests of
        // their own (nested SLOs; Swift allows ten levels).
        let mut level = 0;
        while segments.len() > max {
            let mut grouped = Vec::with_capacity(segments.len().div_ceil(max));
            for (i, group) in segments.chunks(max).enumerate() {
                let name = format!("{}/{upload}/m{level}-{i:06}", self.segments);
                let size = group.iter().map(|s| s.2).sum();
                self.put_manifest(&name, group).await?;
                grouped.push((name, String::new(), size));
            }
            segments = grouped;
            level += 1;
        }
        let aside = self.set_aside(key.as_ref(), None).await?;
        self.put_manifest(key.as_ref(), &segments).await?;
        self.drop_aside(aside).await
    }

    async fn abort_upload(&self, _key: &Path, upload: &str) -> Result<()> {
        self.delete_segments(upload).await
    }

    fn is_composite(&self, meta: &ObjectMeta) -> bool {
        meta.version.as_deref() == Some(SLO)
    }

    async fn delete_composite(&self, key: &Path) -> Result<()> {
        self.delete_slo(key.as_ref()).await
    }

    async fn signed_url(
        &self,
        key: &Path,
        method: RedirectMethod,
        expires: Duration,
    ) -> Result<Option<url::Url>> {
        let Some(secret) = &self.tempurl_key else {
            return Ok(None);
        };
        let session = self.client.session().await?;
        let base = url::Url::parse(&session.storage_url).map_err(Error::backend)?;
        let path = format!(
            "{}/{}/{}",
            base.path().trim_end_matches('/'),
            self.client.container(),
            key.as_ref()
        );
        let until = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(Error::backend)?
            + expires;
        let method = match method {
            RedirectMethod::Get => "GET",
            RedirectMethod::Head => "HEAD",
        };
        let query = tempurl_query(secret, method, until.as_secs(), &path);
        let url = format!(
            "{}/{}/{}?{query}",
            session.storage_url,
            escape(self.client.container()),
            escape(key.as_ref())
        );
        url::Url::parse(&url).map(Some).map_err(Error::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempurl_signature_matches_openssl() {
        // printf 'GET\n1700000000\n/v1/AUTH_test/c/o' | openssl dgst -sha256 -hmac key
        let q = tempurl_query("key", "GET", 1_700_000_000, "/v1/AUTH_test/c/o");
        assert_eq!(
            q,
            "temp_url_sig=84d09f8e15bef2209ab5fa1c8963201a1ec735f0c25dca12c9b713ed1a678dad\
             &temp_url_expires=1700000000"
        );
    }
}
