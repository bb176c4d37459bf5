//! regstore-objectstore: the machinery the object-store drivers (`s3`,
//! `azure`, `gcs`) share, written once.
//!
//! A driver crate implements [`Backend`] (a configured `object_store` store,
//! plus whatever its cloud does differently) and wraps it in
//! [`ObjectDriver`], which implements the whole driver contract:
//!
//! - **Keys**: the storage path `/a/b` is the key `<rootdirectory>/a/b`,
//!   distribution's layout, so a bucket written by distribution is read as is.
//! - **Directories** are prefixes with something below them. `stat` is a HEAD,
//!   then (for a directory) a one-page listing; `list` is one delimiter
//!   listing; `delete` lists the prefix `key/` (whole segments: `/a` never
//!   touches `/ab`) and deletes in batches, however many keys there are;
//!   `delete_files` sends the files' keys straight to batch deletes.
//! - **Walk** is a flat listing of the subtree (one request per 1,000 keys,
//!   not one per entry or per directory), re-ordered into the walk order as
//!   it streams (see `order.rs`); `start_after` starts the listing near the
//!   hint. On stores with a paged listing ([`Backend::pages`]), a page that
//!   ends inside a directory the visitor skipped is followed by a page
//!   that starts after that directory (see `pages.rs`): the catalog's walk
//!   pays for the keys of a repository's `_layers` and `_manifests` at most
//!   the rest of the page they start in, however many tags it holds.
//! - **Reads**: a read at `offset == size` is an empty stream although S3 and
//!   GCS answer it with 416.
//! - **Writers** are resumable across processes. Full parts
//!   ([`Backend::part_size`]) go to a multipart upload on the final key,
//!   invisible until commit. `close` stores a small state object — the upload
//!   id, the parts, and the tail shorter than a part — under
//!   `<rootdirectory>/~writers/<path>/~state`; `~` cannot occur in a storage
//!   path, so `stat`, `list` and `walk` never show it. `writer(path, true)`
//!   loads it, `commit` completes the upload (or, below one part, does a
//!   single PUT) and removes it, `cancel` aborts the upload and removes it,
//!   and `delete` of a directory aborts the writers below it too.
//!
//! A process that dies between two `close`s leaves an upload no state points
//! to; configure the bucket to expire unfinished multipart uploads (S3
//! lifecycle `AbortIncompleteMultipartUpload`; Azure drops uncommitted blocks
//! after 7 days, GCS resumable sessions after 7 days).

#![warn(missing_docs)]

mod backend;
mod counting;
pub mod http;
mod order;
mod pages;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStoreExt};
use regstore_core::{
    ByteStream, Capabilities, Error, FileInfo, FileWriter, RedirectRequest, RequestCounter, Result,
    StorageDriver, StoragePath, WalkControl, WalkVisitor,
};

pub use backend::{Backend, Part, created};
pub use counting::CountingConnector;
pub use object_store;

use order::Reorder;
use pages::Listing;
use writer::ObjectWriter;

/// Top-level segment under the root where unfinished writers keep state.
const WRITERS: &str = "~writers";
/// Name of a writer's state object inside its directory.
const STATE: &str = "~state";
/// How long a redirect URL stays valid (distribution: 20 minutes).
pub const REDIRECT_EXPIRY: Duration = Duration::from_secs(20 * 60);
/// Keys deleted per batch request (S3's and Azure's batch limit).
const DELETE_BATCH: usize = 1000;
/// Objects headed at once by `delete_files` on backends with composites.
const HEAD_CONCURRENCY: usize = 16;

/// Makes rustls use ring in this process (the cloud drivers' HTTPS goes
/// through reqwest with rustls but no built-in provider, which keeps the
/// aws-lc C build out of the tree). Idempotent; every driver's constructor
/// calls it.
pub fn install_crypto() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `connecttimeout`, declared by every cloud driver (see [`Timeouts`]).
pub const CONNECT_TIMEOUT_PARAM: regstore_core::ParamSpec = regstore_core::ParamSpec::new(
    "connecttimeout",
    regstore_core::ParamKind::Duration,
    "longest wait for a connection to the backend, per attempt",
)
.default("10s");

/// `timeout`, declared by every cloud driver (see [`Timeouts`]).
pub const TIMEOUT_PARAM: regstore_core::ParamSpec = regstore_core::ParamSpec::new(
    "timeout",
    regstore_core::ParamKind::Duration,
    "longest wait for a byte of the backend's answer, per attempt (failed attempts are retried)",
)
.default("60s");

/// How long a cloud driver waits for its backend (`connecttimeout`,
/// `timeout`). A whole request has no limit (a multi-gigabyte blob streams
/// for minutes), but an attempt fails when it cannot connect within
/// `connect` or sees no byte move for `read`, so a backend that hangs fails
/// the call instead of holding it forever. Idempotent requests that fail
/// this way are retried with backoff until [`Timeouts::retry_budget`] has
/// passed since the call began. A registry request that needs several
/// calls (an upload's lease, data, clean-up) waits up to that for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, per attempt.
    pub connect: Duration,
    /// Without a byte moving, per attempt.
    pub read: Duration,
}

impl Timeouts {
    /// From the driver's `connecttimeout` and `timeout` parameters
    /// ([`CONNECT_TIMEOUT_PARAM`], [`TIMEOUT_PARAM`] in its declarations).
    ///
    /// # Errors
    /// `Config` naming a parameter that is missing or zero.
    pub fn from_params(params: &regstore_core::Params) -> Result<Self> {
        let get = |name: &str| -> Result<Duration> {
            let d = params.require_duration(name)?;
            if d.is_zero() {
                return Err(Error::config(format!("{name} must be longer than 0")));
            }
            Ok(d)
        };
        Ok(Timeouts {
            connect: get(CONNECT_TIMEOUT_PARAM.name)?,
            read: get(TIMEOUT_PARAM.name)?,
        })
    }

    /// How long after a call began its retries stop: 3 × `read`.
    pub fn retry_budget(&self) -> Duration {
        self.read.saturating_mul(3)
    }

    /// `object_store` client options with these timeouts.
    pub fn client_options(&self) -> object_store::ClientOptions {
        object_store::ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(self.connect)
            .with_read_timeout(self.read)
    }

    /// `object_store`'s retry policy within [`Timeouts::retry_budget`] (its
    /// backoff and retry count as they are).
    pub fn retry_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            retry_timeout: self.retry_budget(),
            ..Default::default()
        }
    }

    /// A `reqwest` client builder with these timeouts, for a driver's own
    /// HTTP client.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.read)
    }
}

/// The HTTP method a signed redirect URL is made for.
pub fn signed_method(method: regstore_core::RedirectMethod) -> object_store::signer::Method {
    match method {
        regstore_core::RedirectMethod::Get => object_store::signer::Method::GET,
        regstore_core::RedirectMethod::Head => object_store::signer::Method::HEAD,
    }
}

/// Maps an `object_store` error: not-found becomes [`Error::PathNotFound`]
/// for `key`, the rest as [`store_err`] says.
pub fn map_err(e: object_store::Error, key: &Path) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::not_found(format!("/{key}")),
        other => store_err(other),
    }
}

/// Maps an `object_store` error that is not about one key: credentials the
/// store refused (HTTP 401, 403: a wrong secret, an expired token, a
/// signature that does not match) become [`Error::Credentials`], everything
/// else [`Error::Backend`].
///
/// Some clients report a refused request as `Generic` (Azure's listings);
/// its status is then only in the message (`object_store`'s `RetryError`,
/// which knows it, is not public), so the message is read for it.
pub fn store_err(e: object_store::Error) -> Error {
    match e {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => Error::credentials_from(&e),
        other => {
            let text = regstore_core::causes(&other);
            let refused = ["401", "403"]
                .iter()
                .any(|code| text.contains(&format!("non-2xx status code: {code}")));
            if refused {
                Error::credentials(text)
            } else {
                Error::backend(other)
            }
        }
    }
}

/// Deletes `keys` from `store` in batches of up to 1,000 (`delete_stream`,
/// one request per batch where the store has a batch API); keys already
/// gone are fine.
///
/// # Errors
/// The first failure the store reports.
pub async fn delete_keys(store: &dyn object_store::ObjectStore, mut keys: Vec<Path>) -> Result<()> {
    while !keys.is_empty() {
        let rest = keys.split_off(keys.len().min(DELETE_BATCH));
        let batch = std::mem::replace(&mut keys, rest);
        let input = futures_util::stream::iter(batch.into_iter().map(Ok)).boxed();
        let mut results = store.delete_stream(input);
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
    }
    Ok(())
}

/// The driver contract on an object store; see the crate docs.
pub struct ObjectDriver<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    backend: B,
    /// Root directory as key segments (empty: the bucket's root).
    root: Vec<String>,
}

/// Clones share the backend (one `Arc`).
impl<B> Clone for ObjectDriver<B> {
    fn clone(&self) -> Self {
        ObjectDriver {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> fmt::Debug for ObjectDriver<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectDriver")
            .field("backend", &self.inner.backend)
            .field("root", &self.inner.root.join("/"))
            .finish()
    }
}

impl<B: Backend> ObjectDriver<B> {
    /// The driver on `backend`, with every key under `rootdirectory`
    /// (distribution's parameter; `""` or `"/"` for the bucket's root).
    ///
    /// # Errors
    /// `Config` when `rootdirectory` has an empty, `.` or `..` segment or a
    /// control character.
    pub fn new(backend: B, rootdirectory: &str) -> Result<Self> {
        let trimmed = rootdirectory.trim_matches('/');
        let root = if trimmed.is_empty() {
            Vec::new()
        } else {
            let parsed = Path::parse(trimmed)
                .ok()
                .filter(|p| p.as_ref() == trimmed)
                .ok_or_else(|| {
                    Error::config(format!(
                        "rootdirectory {rootdirectory:?} is not a valid key prefix \
                         (empty, \".\" or \"..\" segments, or control characters)"
                    ))
                })?;
            parsed.parts().map(|p| p.as_ref().to_owned()).collect()
        };
        if root.iter().any(|s| s == "." || s == "..") {
            return Err(Error::config(format!(
                "rootdirectory {rootdirectory:?} must not contain \".\" or \"..\""
            )));
        }
        Ok(ObjectDriver {
            inner: Arc::new(Inner { backend, root }),
        })
    }

    /// The backend inside.
    pub fn backend(&self) -> &B {
        &self.inner.backend
    }

    /// The object key `path` is stored under (for middleware such as
    /// CloudFront that signs URLs for the key).
    pub fn key(&self, path: &StoragePath) -> Path {
        self.inner.key(path)
    }
}

/// A run of keys in byte order that is also a run of the walk order.
struct KeyRange {
    /// Listed below this directory key (`None`: the whole store).
    prefix: Option<Path>,
    /// After this key (exclusive).
    offset: Option<Path>,
    /// Ends before the first key at or after this string.
    end: Option<String>,
}

impl KeyRange {
    /// Everything below `prefix`.
    fn all(prefix: Option<Path>) -> Self {
        KeyRange {
            prefix,
            offset: None,
            end: None,
        }
    }
}

/// A segment that sorts after every segment a storage path may hold (its
/// characters are `A-Z a-z 0-9 . _ -`): `S/~` is after every key below `S`.
const AFTER_EVERY_SEGMENT: &str = "~";

impl<B: Backend> Inner<B> {
    fn key(&self, path: &StoragePath) -> Path {
        Path::from_iter(
            self.root
                .iter()
                .map(String::as_str)
                .chain(path.segments())
                .map(object_store::path::PathPart::from),
        )
    }

    /// The key ranges holding, in walk order, what comes after `hint` in a
    /// walk of `path`: the hint's descendants; then, from the hint up to
    /// `path`'s child on its way, for each of those `S` (child of `P`): the
    /// children of `P` named `S`'s name followed by `-` or `.` (keys between
    /// `S` and `S/`; they sort before `S/` byte-wise but after `S`'s subtree
    /// in the walk, see order.rs), then the rest of `P` (keys after `S/~`).
    /// So a resumed walk lists only what follows the hint, however far down
    /// the hint is (a single offset could only resume at its first segment
    /// below `path`, re-listing that segment's whole subtree). A hint not
    /// below `path` gives one range of everything.
    fn resume_ranges(&self, path: &StoragePath, hint: &StoragePath) -> Vec<KeyRange> {
        let dir_key = |p: &StoragePath| {
            let k = self.key(p);
            (!k.as_ref().is_empty()).then_some(k)
        };
        if hint.relative_to(path).is_none_or(str::is_empty) {
            return vec![KeyRange::all(dir_key(path))];
        }
        let mut ranges = vec![KeyRange::all(Some(self.key(hint)))];
        let mut s = hint.clone();
        while let Some(parent) = s.parent() {
            let key = self.key(&s);
            ranges.push(KeyRange {
                prefix: dir_key(&parent),
                offset: Some(key.clone()),
                end: Some(format!("{key}/")),
            });
            ranges.push(KeyRange {
                prefix: dir_key(&parent),
                // Parsed, not built from parts: a part would be
                // percent-encoded (`%7E`), which sorts first.
                offset: Path::parse(format!("{key}/{AFTER_EVERY_SEGMENT}")).ok(),
                end: None,
            });
            if parent == *path {
                break;
            }
            s = parent;
        }
        ranges
    }

    /// Directory holding the writer state of `path` and of everything below.
    fn writers_dir(&self, path: &StoragePath) -> Path {
        Path::from_iter(
            self.root
                .iter()
                .map(String::as_str)
                .chain(std::iter::once(WRITERS))
                .chain(path.segments())
                .map(object_store::path::PathPart::from),
        )
    }

    fn state_key(&self, path: &StoragePath) -> Path {
        self.writers_dir(path).join(STATE)
    }

    /// The storage path of a listed key, or `None` for keys outside the
    /// root or that no storage path maps to (writer state, foreign keys).
    fn path_of(&self, key: &Path) -> Option<StoragePath> {
        let mut parts = key.parts();
        for seg in &self.root {
            if parts.next()?.as_ref() != seg {
                return None;
            }
        }
        let mut s = String::new();
        for part in parts {
            s.push('/');
            s.push_str(part.as_ref());
        }
        StoragePath::parse(&s).ok().filter(|p| !p.is_root())
    }

    fn store(&self) -> &dyn object_store::ObjectStore {
        self.backend.store().as_ref()
    }

    async fn head(&self, key: &Path) -> Result<Option<ObjectMeta>> {
        match self.store().head(key).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e, key)),
        }
    }

    /// Deletes `keys` in batches; keys already gone are fine.
    async fn delete_keys(&self, keys: Vec<Path>) -> Result<()> {
        delete_keys(self.store(), keys).await
    }

    /// Deletes the listed or headed `objects` and `extra` keys (already gone
    /// is fine): composite objects one by one with their parts, the rest
    /// in batches.
    async fn delete_objects(&self, objects: Vec<ObjectMeta>, extra: Vec<Path>) -> Result<()> {
        let mut plain = extra;
        for meta in objects {
            if self.backend.is_composite(&meta) {
                self.backend.delete_composite(&meta.location).await?;
            } else {
                plain.push(meta.location);
            }
        }
        self.delete_keys(plain).await
    }

    /// Every object below the directory `prefix` (not `prefix` itself).
    async fn objects_below(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        self.store()
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| map_err(e, prefix))
    }

    /// Every key below the directory `prefix` (not `prefix` itself).
    async fn keys_below(&self, prefix: &Path) -> Result<Vec<Path>> {
        let objects = self.objects_below(prefix).await?;
        Ok(objects.into_iter().map(|m| m.location).collect())
    }

    /// Aborts and removes every unfinished writer at `path` or below it.
    async fn drop_writers(&self, path: &StoragePath) -> Result<()> {
        let states = self.keys_below(&self.writers_dir(path)).await?;
        for state_key in &states {
            if state_key.filename() != Some(STATE) {
                continue;
            }
            match writer::load_state(self, state_key).await {
                Ok(Some(state)) => {
                    if let Some(upload) = &state.upload {
                        let target = state_key_target(state_key, self);
                        if let Some(target) = target {
                            self.backend.abort_upload(&target, upload).await?;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key = %state_key, error = %e, "unreadable writer state removed")
                }
            }
        }
        self.delete_keys(states).await
    }
}

/// The object key a writer state key belongs to:
/// `<root>/~writers/<path>/~state` → `<root>/<path>`.
fn state_key_target<B: Backend>(state_key: &Path, inner: &Inner<B>) -> Option<Path> {
    let parts: Vec<_> = state_key.parts().collect();
    let n = inner.root.len();
    if parts.len() < n + 3 || parts.get(n)?.as_ref() != WRITERS {
        return None;
    }
    Some(Path::from_iter(
        parts[..n]
            .iter()
            .chain(&parts[n + 1..parts.len() - 1])
            .cloned(),
    ))
}

fn mod_time(meta: &ObjectMeta) -> SystemTime {
    let dt = meta.last_modified;
    let secs = u64::try_from(dt.timestamp()).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, dt.timestamp_subsec_nanos())
}

#[async_trait]
impl<B: Backend> StorageDriver for ObjectDriver<B> {
    fn name(&self) -> &'static str {
        self.inner.backend.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.backend.capabilities()
    }

    fn request_counter(&self) -> Option<&RequestCounter> {
        Some(self.inner.backend.requests())
    }

    fn object_key(&self, path: &StoragePath) -> Option<String> {
        Some(self.inner.key(path).to_string())
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        let key = self.inner.key(path);
        let got = self
            .inner
            .store()
            .get(&key)
            .await
            .map_err(|e| map_err(e, &key))?;
        got.bytes().await.map_err(|e| map_err(e, &key))
    }

    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let key = self.inner.key(path);
        self.inner.backend.put(&key, content.into()).await
    }

    /// Only where the backend claims `create_if_absent` (its conditional
    /// put is atomic); `Unsupported` elsewhere.
    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        if !self.capabilities().create_if_absent {
            return Err(Error::unsupported(
                "create-if-absent: the backend's conditional put is not atomic",
            ));
        }
        let key = self.inner.key(path);
        self.inner.backend.put_if_absent(&key, content.into()).await
    }

    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        let key = self.inner.key(path);
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..GetOptions::default()
        };
        let got = match self.inner.store().get_opts(&key, opts).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::not_found(path)),
            // At or past the end, S3 and GCS answer 416 and Azure's client
            // refuses before asking; which one it is, only the size tells.
            Err(e) if offset > 0 => match self.inner.head(&key).await? {
                None => return Err(Error::not_found(path)),
                Some(meta) if meta.size == offset => {
                    return Ok(Box::pin(futures_util::stream::empty()));
                }
                Some(meta) if meta.size < offset => {
                    return Err(Error::invalid_offset(path, offset));
                }
                Some(_) => return Err(store_err(e)),
            },
            Err(e) => return Err(store_err(e)),
        };
        let key_for_errors = key.clone();
        Ok(Box::pin(
            got.into_stream()
                .map_err(move |e| map_err(e, &key_for_errors)),
        ))
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(
            ObjectWriter::open(Arc::clone(&self.inner), path, append).await?,
        ))
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        if path.is_root() {
            return Ok(FileInfo::dir(path.clone(), None));
        }
        let key = self.inner.key(path);
        if let Some(meta) = self.inner.head(&key).await? {
            return Ok(FileInfo::file(path.clone(), meta.size, mod_time(&meta)));
        }
        let first = self.inner.store().list(Some(&key)).next().await;
        match first {
            Some(Ok(_)) => Ok(FileInfo::dir(path.clone(), None)),
            Some(Err(e)) => Err(map_err(e, &key)),
            None => Err(Error::not_found(path)),
        }
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        let key = self.inner.key(path);
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let listed = self
            .inner
            .store()
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| map_err(e, &key))?;
        let children: Vec<StoragePath> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|m| &m.location))
            .filter_map(|k| self.inner.path_of(k))
            .filter(|p| p.parent().as_ref() == Some(path))
            .collect();
        if children.is_empty() && !path.is_root() {
            return Err(Error::not_found(path));
        }
        Ok(children)
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let (f, t) = (self.inner.key(from), self.inner.key(to));
        if f == t {
            // Copy-then-delete would lose the object.
            return match self.inner.head(&f).await? {
                Some(_) => Ok(()),
                None => Err(Error::not_found(from)),
            };
        }
        self.inner.backend.copy(&f, &t).await.map_err(|e| {
            if e.is_not_found() {
                Error::not_found(from)
            } else {
                e
            }
        })?;
        self.inner.delete_keys(vec![f]).await
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let key = self.inner.key(path);
        let mut objects = self.inner.objects_below(&key).await?;
        let mut extra = Vec::new();
        let found = if objects.is_empty() {
            // A file, or nothing.
            match self.inner.head(&key).await? {
                Some(meta) => {
                    objects.push(meta);
                    true
                }
                None => false,
            }
        } else {
            // A directory; the key itself too, in case it is also a file
            // (a missing one is fine in the batch).
            extra.push(key);
            true
        };
        if found {
            self.inner.delete_objects(objects, extra).await?;
        }
        self.inner.drop_writers(path).await?;
        if found {
            Ok(())
        } else {
            Err(Error::not_found(path))
        }
    }

    /// Batched deletes of the files' keys (S3 DeleteObjects and Swift bulk
    /// delete: up to 1,000 keys a request; Azure blob batch: 256; GCS one
    /// request a key, several at once). Where objects may be composite
    /// (Swift's large objects), each key is headed first (16 at once) and
    /// a composite one is deleted with its parts. A directory path deletes
    /// nothing; unfinished writers at the paths are left alone.
    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        let keys: Vec<Path> = paths.iter().map(|p| self.inner.key(p)).collect();
        if !self.inner.backend.may_hold_composites() {
            return self.inner.delete_keys(keys).await;
        }
        let found: Vec<ObjectMeta> = futures_util::stream::iter(keys)
            .map(|key| async move { self.inner.head(&key).await })
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_filter_map(|meta| std::future::ready(Ok(meta)))
            .try_collect()
            .await?;
        self.inner.delete_objects(found, Vec::new()).await
    }

    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<url::Url>> {
        let key = self.inner.key(path);
        self.inner
            .backend
            .signed_url(&key, request.method, REDIRECT_EXPIRY)
            .await
    }

    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        let key = self.inner.key(path);
        let prefix = (!key.as_ref().is_empty()).then_some(&key);
        let ranges = match start_after {
            Some(hint) => self.inner.resume_ranges(path, hint),
            None => vec![KeyRange::all(prefix.cloned())],
        };
        let resumed = start_after.is_some();
        let mut skipping: Option<StoragePath> = None;
        let mut seen_any = false;
        let mut visit = |info: FileInfo, skipping: &mut Option<StoragePath>| -> Result<bool> {
            if let Some(h) = start_after
                && info.path <= *h
            {
                return Ok(true);
            }
            if let Some(dir) = skipping.as_ref() {
                if dir.is_ancestor_of(&info.path) {
                    return Ok(true);
                }
                *skipping = None;
            }
            match visitor(&info)? {
                WalkControl::Stop => Ok(false),
                WalkControl::SkipDir => {
                    if info.is_dir {
                        *skipping = Some(info.path);
                    }
                    Ok(true)
                }
                WalkControl::Continue => Ok(true),
            }
        };
        for range in ranges {
            let mut listing = match self.inner.backend.pages() {
                Some(pages) => Listing::paged(pages, range.prefix.as_ref(), range.offset.as_ref()),
                None => Listing::stream(match &range.offset {
                    Some(o) => self
                        .inner
                        .store()
                        .list_with_offset(range.prefix.as_ref(), o),
                    None => self.inner.store().list(range.prefix.as_ref()),
                }),
            };
            // Each range is a run of the walk: its entries are re-ordered
            // among themselves, and all come after the previous range's.
            let mut reorder = Reorder::new(path);
            'pages: while let Some(page) = listing.next().await {
                let page = page.map_err(|e| map_err(e, &key))?;
                let last = page.last().map(|m| m.location.clone());
                for meta in page {
                    // Some servers (Azurite) ignore the offset; it is only
                    // a saving.
                    let before = |o: &str| meta.location.as_ref() <= o;
                    if range.offset.as_ref().is_some_and(|o| before(o.as_ref()))
                        || listing.offset().is_some_and(before)
                    {
                        continue;
                    }
                    if range
                        .end
                        .as_deref()
                        .is_some_and(|end| meta.location.as_ref() >= end)
                    {
                        break 'pages;
                    }
                    seen_any = true;
                    let Some(file) = self.inner.path_of(&meta.location) else {
                        continue;
                    };
                    if !path.is_ancestor_of(&file) {
                        continue;
                    }
                    let mut dirs = Vec::new();
                    let mut d = file.parent();
                    while let Some(dir) = d {
                        if dir == *path {
                            break;
                        }
                        d = dir.parent();
                        dirs.push(dir);
                    }
                    dirs.reverse();
                    reorder.push(FileInfo::file(file, meta.size, mod_time(&meta)), dirs);
                    while let Some(info) = reorder.ready() {
                        if !visit(info, &mut skipping)? {
                            return Ok(());
                        }
                    }
                }
                // A page that ends inside a skipped directory: the next
                // one starts after it (see pages.rs).
                if let (Some(dir), Some(last)) = (&skipping, last) {
                    let dir_key = self.inner.key(dir);
                    if last.prefix_matches(&dir_key) {
                        listing.jump_past(format!("{dir_key}/{AFTER_EVERY_SEGMENT}"));
                    }
                }
            }
            for info in reorder.drain() {
                if !visit(info, &mut skipping)? {
                    return Ok(());
                }
            }
        }
        if !seen_any && !path.is_root() {
            // Resumed, an empty listing may only mean nothing is left
            // after the hint.
            let exists = resumed
                && match self.inner.store().list(prefix).next().await {
                    Some(Ok(_)) => true,
                    Some(Err(e)) => return Err(map_err(e, &key)),
                    None => false,
                };
            if !exists {
                return Err(Error::not_found(path));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regstore_core::ErrorKind;

    fn source(text: &str) -> Box<dyn std::error::Error + Send + Sync> {
        text.to_owned().into()
    }

    #[test]
    fn refused_requests_are_credentials_errors() {
        let key = Path::from("a");
        let denied = object_store::Error::PermissionDenied {
            path: "a".into(),
            source: source("403 Forbidden: SignatureDoesNotMatch"),
        };
        assert_eq!(map_err(denied, &key).kind(), ErrorKind::Credentials);
        let unauthenticated = object_store::Error::Unauthenticated {
            path: "a".into(),
            source: source("401 Unauthorized"),
        };
        assert_eq!(store_err(unauthenticated).kind(), ErrorKind::Credentials);
        let listing = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: source(
                "Error performing list request: Server returned non-2xx status code: 403 Forbidden",
            ),
        };
        assert_eq!(store_err(listing).kind(), ErrorKind::Credentials);
    }

    #[test]
    fn other_failures_stay_backend_errors() {
        let key = Path::from("a");
        let failing = object_store::Error::Generic {
            store: "S3",
            source: source("Server returned non-2xx status code: 503 Service Unavailable"),
        };
        assert_eq!(store_err(failing).kind(), ErrorKind::Backend);
        let missing = object_store::Error::NotFound {
            path: "a".into(),
            source: source("404"),
        };
        assert_eq!(map_err(missing, &key).kind(), ErrorKind::PathNotFound);
    }
}

#[cfg(test)]
mod delete_files_tests {
    use std::sync::Mutex;

    use futures_util::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetResult, ListResult, MultipartUpload, ObjectStore, PutMultipartOptions,
        PutOptions, PutPayload, PutResult,
    };

    use super::*;

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of keys of each delete request, in order.
    type Batches = Arc<Mutex<Vec<usize>>>;

    /// An in-memory store that records the keys of each delete request
    /// (each `delete_stream` call).
    #[derive(Debug, Default)]
    struct Recording {
        inner: InMemory,
        batches: Batches,
    }

    impl fmt::Display for Recording {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Recording")
        }
    }

    #[async_trait]
    impl ObjectStore for Recording {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            let batches = Arc::clone(&self.batches);
            let n = {
                let mut b = lock(&batches);
                b.push(0);
                b.len() - 1
            };
            let counted = locations.inspect(move |_| lock(&batches)[n] += 1).boxed();
            self.inner.delete_stream(counted)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A backend on [`Recording`]; when `composites`, objects named `slo…`
    /// are composite.
    #[derive(Debug)]
    struct Memory {
        store: Arc<dyn ObjectStore>,
        requests: RequestCounter,
        composites: bool,
        composite_deletes: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Backend for Memory {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn store(&self) -> &Arc<dyn ObjectStore> {
            &self.store
        }
        fn requests(&self) -> &RequestCounter {
            &self.requests
        }
        fn multipart(&self) -> Option<&dyn object_store::multipart::MultipartStore> {
            None
        }
        fn part_size(&self) -> usize {
            5 << 20
        }
        fn may_hold_composites(&self) -> bool {
            self.composites
        }
        fn is_composite(&self, meta: &ObjectMeta) -> bool {
            meta.location
                .filename()
                .is_some_and(|n| n.starts_with("slo"))
        }
        async fn delete_composite(&self, key: &Path) -> Result<()> {
            lock(&self.composite_deletes).push(key.to_string());
            delete_keys(self.store.as_ref(), vec![key.clone()]).await
        }
    }

    fn driver(composites: bool) -> Result<(ObjectDriver<Memory>, Batches)> {
        let store = Recording::default();
        let batches = Arc::clone(&store.batches);
        let backend = Memory {
            store: Arc::new(store),
            requests: RequestCounter::default(),
            composites,
            composite_deletes: Mutex::new(Vec::new()),
        };
        Ok((ObjectDriver::new(backend, "root")?, batches))
    }

    fn path(s: &str) -> Result<StoragePath> {
        StoragePath::parse(s)
    }

    fn listed(paths: Vec<StoragePath>) -> Vec<String> {
        let mut names: Vec<String> = paths.iter().map(|p| p.as_str().to_owned()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn files_are_deleted_in_batches_of_1000() -> Result<()> {
        let (d, batches) = driver(false)?;
        let mut doomed = Vec::new();
        for i in 0..2345 {
            let p = path(&format!("/blobs/f{i:04}"))?;
            d.put_content(&p, Bytes::new()).await?;
            doomed.push(p);
        }
        doomed.push(path("/blobs/missing")?);
        for keep in ["/blobs/keep", "/blobs-x/f0000"] {
            d.put_content(&path(keep)?, Bytes::new()).await?;
        }
        d.delete_files(&doomed).await?;
        assert_eq!(*lock(&batches), [1000, 1000, 346]);
        assert_eq!(listed(d.list(&path("/blobs")?).await?), ["/blobs/keep"]);
        assert_eq!(listed(d.list(&path("/")?).await?), ["/blobs", "/blobs-x"]);
        Ok(())
    }

    #[tokio::test]
    async fn composite_objects_are_deleted_with_their_parts() -> Result<()> {
        let (d, batches) = driver(true)?;
        for p in ["/d/slo1", "/d/slo1x", "/d/plain1", "/d/plain2", "/e/slo2"] {
            d.put_content(&path(p)?, Bytes::from_static(b"x")).await?;
        }
        let doomed = [
            "/d/slo1",
            "/d/plain1",
            "/d/plain2",
            "/e/slo2",
            "/d/slo3",
            "/f",
        ]
        .into_iter()
        .map(path)
        .collect::<Result<Vec<_>>>()?;
        d.delete_files(&doomed).await?;
        let mut composites = lock(&d.backend().composite_deletes).clone();
        composites.sort();
        assert_eq!(composites, ["root/d/slo1", "root/e/slo2"]);
        // One batch of the two plain files, one request per composite.
        let mut sizes = lock(&batches).clone();
        sizes.sort();
        assert_eq!(sizes, [1, 1, 2]);
        assert_eq!(listed(d.list(&path("/")?).await?), ["/d"]);
        assert_eq!(listed(d.list(&path("/d")?).await?), ["/d/slo1x"]);
        Ok(())
    }
}
