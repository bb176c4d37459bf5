//! The registry's storage service: blobs, uploads, manifests, tags, catalog
//! and referrers, on any [`Driver`], in distribution's layout ([`layout`]).
//!
//! Nothing here knows HTTP; the server maps [`RegistryError`] to the OCI
//! error codes. Every method takes validated names ([`RepoName`], [`Tag`],
//! [`Digest`]), so no request can produce an invalid storage path.

pub mod digest;
pub mod fence;
pub mod layout;
pub mod lease;
mod manifests;
pub mod names;
pub mod tag_lists;
mod upload_id;
mod uploads;

use regstore_core::{Driver, RedirectRequest, WalkControl};

use crate::cache::{BlobDescriptorCache, Descriptor};

pub use digest::{Algorithm, Digest, Hasher};
pub use manifests::{
    MAX_MANIFEST_SIZE, ManifestKind, PutManifest, REFERRERS_PAGE_BYTES, References, Referrer,
    StoredManifest, media_type_of, references,
};
// For the fuzz targets (`crate::fuzzing`).
pub(crate) use manifests::{Parsed, parse as parse_manifest};
pub use names::{NameError, NameKind, Reference, RepoName, Tag};
pub use upload_id::{new_upload_id, parse_upload_id, upload_started};
pub use uploads::{PurgeReport, SMALL_BLOB, UPLOAD_LOCK_WAIT, UploadLocks, UploadStatus, Verified};

/// What a registry operation can fail with. Each variant maps to one OCI
/// error code; [`RegistryError::Storage`] is the backend failing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The blob is not in the repository.
    #[error("blob {0} is not in this repository")]
    BlobUnknown(Digest),
    /// No upload session with this id.
    #[error("no upload session {0}")]
    BlobUploadUnknown(String),
    /// The upload was found damaged and removed (answered like an unknown
    /// upload, so clients start the blob again): `why` says what was wrong.
    #[error("upload {uuid} was discarded: {why}; start the blob again")]
    UploadDiscarded {
        /// The session id.
        uuid: String,
        /// What was wrong with it.
        why: String,
    },
    /// The upload cannot continue (e.g. its hash state is lost).
    #[error("{0}")]
    BlobUploadInvalid(String),
    /// The content does not hash to the digest given.
    #[error("the content's digest is {actual}, not {expected}")]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// A malformed digest parameter.
    #[error("{0}")]
    DigestInvalid(String),
    /// No such manifest (or tag).
    #[error("manifest {0} is not in this repository")]
    ManifestUnknown(String),
    /// The manifest is not valid; the message says why.
    #[error("{0}")]
    ManifestInvalid(String),
    /// The manifest is larger than [`MAX_MANIFEST_SIZE`] (413); the message
    /// gives its size (or a lower bound) and the limit.
    #[error("the manifest is {0} bytes; the limit is {MAX_MANIFEST_SIZE} bytes (4 MiB)")]
    ManifestTooLarge(String),
    /// The manifest references a blob or manifest the repository lacks.
    #[error("the manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    /// A malformed repository name, tag or reference.
    #[error(transparent)]
    NameInvalid(#[from] NameError),
    /// The repository does not exist.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// Another request on the same upload is running (in this instance or,
    /// where the driver can tell, in another); retry when it has finished.
    #[error("another request on upload {0} is in progress; retry when it has finished")]
    UploadBusy(String),
    /// A chunk that does not start where the upload ends.
    #[error("the chunk starts at byte {given}, but the upload holds {size} bytes")]
    RangeInvalid {
        /// Where the client said the chunk starts.
        given: u64,
        /// Bytes the upload holds.
        size: u64,
    },
    /// A length that does not match the content.
    #[error("{0}")]
    SizeInvalid(String),
    /// The operation is switched off (e.g. deletes) or not offered.
    #[error("{0}")]
    Unsupported(String),
    /// Something in storage is not what the layout says it must be (e.g. a
    /// link file that holds no digest).
    #[error("{0}")]
    Corrupt(String),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Storage(#[from] regstore_core::Error),
    /// The catalog index (`catalog.index: file | sql`) failed.
    #[error("catalog index: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// How long [`Registry::check_health`] waits for the backend.
pub const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shorthand for results of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// `actual` when it is `expected`, else `DigestMismatch` naming both.
///
/// # Errors
/// `DigestMismatch`.
fn expect_digest(expected: &Digest, actual: Digest) -> Result<Digest> {
    if actual == *expected {
        Ok(actual)
    } else {
        Err(RegistryError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// Registry behaviour chosen by configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `storage.delete.enabled`: blob and manifest deletes are allowed.
    pub delete_enabled: bool,
    /// `storage.redirect.disable` negated: blob GET/HEAD may redirect to the
    /// driver's URL.
    pub redirect: bool,
    /// `storage.maintenance.readonly.enabled`: every write is refused.
    pub read_only: bool,
    /// `validation.manifests.urls`: which foreign-layer URLs manifests may
    /// carry.
    pub manifest_urls: ManifestUrls,
    /// `validation.manifests.maxreferences`: the most blobs (config and
    /// layers) or child manifests a pushed manifest may reference. Each is
    /// looked up before the push is accepted, so the limit bounds the
    /// storage requests one push can cause.
    pub max_manifest_references: usize,
    /// `storage.maintenance.uploadpurging.age` (`None`: purging is off):
    /// an upload whose id says it began longer ago than this answers
    /// `BLOB_UPLOAD_UNKNOWN`, as it would once purged.
    pub upload_max_age: Option<std::time::Duration>,
}

/// Default of [`Settings::max_manifest_references`]: far above any image a
/// container runtime can run (overlayfs stacks at most 128 layers) and any
/// multi-platform index, far below the ~20,000 descriptors that fit in the
/// 4 MiB manifest limit.
pub const DEFAULT_MAX_MANIFEST_REFERENCES: usize = 1000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            delete_enabled: true,
            redirect: true,
            read_only: false,
            manifest_urls: ManifestUrls::default(),
            max_manifest_references: DEFAULT_MAX_MANIFEST_REFERENCES,
            upload_max_age: None,
        }
    }
}

/// `validation.manifests.urls`, as distribution reads it: a layer with
/// `urls` (a foreign layer, fetched by clients from elsewhere, so its blob
/// is not required in the repository) is accepted only if every URL is
/// `http`/`https` without a fragment, matches `allow` and does not match
/// `deny`. With no `allow` list, manifests with `urls` are refused;
/// `validation.disabled: true` accepts any http(s) URL ([`ManifestUrls::any`]).
#[derive(Clone, Debug, Default)]
pub struct ManifestUrls {
    allow: Option<regex::Regex>,
    deny: Option<regex::Regex>,
    any: bool,
}

impl ManifestUrls {
    /// Rules from the `allow` and `deny` regular expressions (each list
    /// joined by `|`, unanchored as in distribution: anchor with `^`).
    ///
    /// # Errors
    /// A pattern that is not a valid regular expression, named.
    pub fn new(allow: &[String], deny: &[String]) -> Result<ManifestUrls, String> {
        let join = |key: &str, list: &[String]| -> Result<Option<regex::Regex>, String> {
            for p in list {
                regex::Regex::new(p).map_err(|e| {
                    format!(
                        "validation.manifests.urls.{key}: {p:?} is not a regular expression: {e}"
                    )
                })?;
            }
            if list.is_empty() {
                return Ok(None);
            }
            let joined = list
                .iter()
                .map(|p| format!("(?:{p})"))
                .collect::<Vec<_>>()
                .join("|");
            regex::Regex::new(&joined)
                .map(Some)
                .map_err(|e| format!("validation.manifests.urls.{key}: {e}"))
        };
        Ok(ManifestUrls {
            allow: join("allow", allow)?,
            deny: join("deny", deny)?,
            any: false,
        })
    }

    /// Any `http`/`https` URL (`validation.disabled: true`).
    pub fn any() -> ManifestUrls {
        ManifestUrls {
            any: true,
            ..ManifestUrls::default()
        }
    }

    /// Checks the URLs of the layer at `at` (e.g. `layers[2]`).
    ///
    /// # Errors
    /// `ManifestInvalid`, naming the layer, the URL and the rule.
    pub fn check(&self, at: &str, urls: &[String]) -> Result<()> {
        for u in urls {
            let refuse = |why: &str| {
                Err(RegistryError::ManifestInvalid(format!(
                    "{at}.urls: {u:?} {why}"
                )))
            };
            match url::Url::parse(u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https")
                        && parsed.fragment().is_none() => {}
                _ => return refuse("is not an http or https URL without a fragment"),
            }
            if self.any {
                continue;
            }
            match &self.allow {
                None => {
                    return refuse(
                        "is not accepted: this registry takes no foreign layers (allow them with validation.manifests.urls.allow)",
                    );
                }
                Some(allow) if !allow.is_match(u) => {
                    return refuse("does not match validation.manifests.urls.allow");
                }
                Some(_) => {}
            }
            if self.deny.as_ref().is_some_and(|d| d.is_match(u)) {
                return refuse("matches validation.manifests.urls.deny");
            }
        }
        Ok(())
    }
}

/// Bytes of manifest bodies that may be in memory at once (read and being
/// parsed), across all requests: 16 manifests of the largest size. Further
/// pushes wait for room instead of growing memory.
pub const MANIFEST_BUDGET: usize = 16 * MAX_MANIFEST_SIZE;

/// The registry on one driver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    driver: Driver,
    settings: Settings,
    upload_locks: std::sync::Arc<UploadLocks>,
    kept_hashers: std::sync::Arc<uploads::KeptHashers>,
    manifest_budget: std::sync::Arc<tokio::sync::Semaphore>,
    gc_fence: std::sync::Arc<fence::GcFence>,
    blob_cache: Option<BlobDescriptorCache>,
    catalog: std::sync::Arc<crate::catalog::CatalogIndex>,
    tag_lists: std::sync::Arc<tag_lists::TagLists>,
}

/// Which directories make a repository for a walk of `repositories/`
/// ([`Registry::walk_repositories`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepositoryMarker {
    /// `_layers` or `_manifests`: distribution 2.x's catalog.
    LayersOrManifests,
    /// `_manifests` only: what the catalog index lists.
    Manifests,
}

/// A blob found in a repository.
#[derive(Clone, Debug)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

impl Registry {
    /// A registry storing through `driver`.
    pub fn new(driver: Driver, settings: Settings) -> Registry {
        Registry {
            driver,
            settings,
            upload_locks: Default::default(),
            kept_hashers: Default::default(),
            manifest_budget: std::sync::Arc::new(tokio::sync::Semaphore::new(
                MANIFEST_BUDGET / 1024,
            )),
            gc_fence: Default::default(),
            blob_cache: None,
            catalog: Default::default(),
            tag_lists: Default::default(),
        }
    }

    /// How tag lists were answered: from memory or by listing (see
    /// [`tag_lists`]).
    pub fn tag_list_stats(&self) -> &tag_lists::TagListStats {
        self.tag_lists.stats()
    }

    /// This registry answering blob lookups (`HEAD`/`GET` of a blob, mount
    /// sources, a manifest's references) from `cache` where it can, and
    /// keeping it up to date with what goes through it (see
    /// [`crate::cache`]).
    pub fn with_blob_cache(mut self, cache: BlobDescriptorCache) -> Registry {
        self.blob_cache = Some(cache);
        self
    }

    /// The blob-descriptor cache, if there is one: whatever deletes blob
    /// data or `_layers` links outside this type must tell it
    /// ([`BlobDescriptorCache::forget_descriptors`],
    /// [`BlobDescriptorCache::forget_members`]).
    pub fn blob_cache(&self) -> Option<&BlobDescriptorCache> {
        self.blob_cache.as_ref()
    }

    /// This registry with `index` as its catalog index (default: none,
    /// [`crate::catalog::CatalogIndex::Storage`]): manifest pushes and
    /// deletes keep it current, and [`Registry::catalog`] reads it.
    pub fn with_catalog(mut self, index: crate::catalog::CatalogIndex) -> Registry {
        self.catalog = std::sync::Arc::new(index);
        self
    }

    /// The catalog index.
    pub fn catalog_index(&self) -> &crate::catalog::CatalogIndex {
        &self.catalog
    }

    /// The fence between this registry's requests and an online garbage
    /// collection (see [`fence`]).
    pub fn gc_fence(&self) -> &fence::GcFence {
        &self.gc_fence
    }

    /// The driver.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The locks of the uploads that requests are working on right now.
    pub fn upload_locks(&self) -> &UploadLocks {
        &self.upload_locks
    }

    /// Reserves room for a manifest of up to `len` bytes (at most
    /// [`MAX_MANIFEST_SIZE`]) in [`MANIFEST_BUDGET`], waiting while other
    /// requests hold it; hold the permit while the body is read and
    /// parsed. This bounds the memory all manifest pushes together take.
    pub async fn reserve_manifest_bytes(&self, len: usize) -> tokio::sync::OwnedSemaphorePermit {
        let kib = len.clamp(1, MAX_MANIFEST_SIZE).div_ceil(1024);
        let permits = u32::try_from(kib).unwrap_or(u32::MAX);
        std::sync::Arc::clone(&self.manifest_budget)
            .acquire_many_owned(permits)
            .await
            // The semaphore is never closed.
            .unwrap_or_else(|_| unreachable!("the manifest budget is never closed"))
    }

    /// Fails with `Unsupported` unless deletes are enabled.
    fn check_delete_enabled(&self) -> Result<()> {
        if self.settings.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::Unsupported(
                "deletes are disabled on this registry (storage.delete.enabled: false)".into(),
            ))
        }
    }

    /// Reads a link file; `Ok(None)` if it does not exist.
    ///
    /// Link files are tiny; anything that is not a digest is reported as a
    /// broken link, naming the path, rather than a server error.
    async fn read_link(&self, path: &str) -> Result<Option<Digest>> {
        match self.driver.get_content(path).await {
            Ok(bytes) => layout::parse_link(&bytes)
                .map(Some)
                .map_err(|e| RegistryError::Corrupt(format!("link {path} is broken: {e}"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_link(&self, path: &str, d: &Digest) -> Result<()> {
        self.driver
            .put_content(path, layout::link_content(d).into_bytes())
            .await?;
        Ok(())
    }

    /// Deletes `path` and everything below it; a missing path is fine.
    async fn delete_if_exists(&self, path: &str) -> Result<()> {
        match self.driver.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Size of the blob's data, `None` if the registry does not hold it:
    /// from the cache, else from the storage (and then cached).
    async fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        if let Some(c) = &self.blob_cache
            && let Some(desc) = c.descriptor(d).await
        {
            return Ok(Some(desc.size));
        }
        let size = self.stored_blob_size(d).await?;
        if let (Some(c), Some(size)) = (&self.blob_cache, size) {
            c.set_descriptor(d, &Descriptor::blob(size)).await;
        }
        Ok(size)
    }

    /// Size of the blob's data as the storage says it, never the cache's.
    async fn stored_blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        match self.driver.stat(layout::blob_data(d)).await {
            Ok(fi) if !fi.is_dir => Ok(Some(fi.size)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The blob `d` as seen from repository `name`: linked there and
    /// present. Answered by the blob-descriptor cache when it knows both;
    /// else by the storage, whose answer is then cached.
    ///
    /// # Errors
    /// `BlobUnknown` if it is not linked in `name` or its data is gone (or
    /// garbage collection is deleting it), `Storage`.
    pub async fn stat_blob(&self, name: &RepoName, d: &Digest) -> Result<BlobInfo> {
        // A blob that garbage collection is deleting is gone already,
        // whatever the cache says.
        if !self.gc_fence.use_digest(d) {
            return Err(RegistryError::BlobUnknown(d.clone()));
        }
        let Some(cache) = &self.blob_cache else {
            return self.stat_stored_blob(name, d).await;
        };
        if let Some(desc) = cache.member(name, d).await {
            return Ok(BlobInfo {
                digest: d.clone(),
                size: desc.size,
            });
        }
        let info = self.stat_stored_blob(name, d).await?;
        cache
            .add_member(name, d, &Descriptor::blob(info.size))
            .await;
        Ok(info)
    }

    /// [`Registry::stat_blob`] from the storage alone (no fence, no cache).
    async fn stat_stored_blob(&self, name: &RepoName, d: &Digest) -> Result<BlobInfo> {
        let linked = self.read_link(&layout::layer_link(name, d)).await?;
        if linked.as_ref() != Some(d) {
            return Err(RegistryError::BlobUnknown(d.clone()));
        }
        match self.stored_blob_size(d).await? {
            Some(size) => Ok(BlobInfo {
                digest: d.clone(),
                size,
            }),
            None => Err(RegistryError::BlobUnknown(d.clone())),
        }
    }

    /// The blob's bytes from `offset`, streamed from the driver.
    ///
    /// # Errors
    /// `Storage` if the driver cannot open it.
    pub async fn read_blob(&self, d: &Digest, offset: u64) -> Result<regstore_core::ByteStream> {
        Ok(self.driver.reader(layout::blob_data(d), offset).await?)
    }

    /// A URL the client may fetch the blob from instead, when the driver
    /// offers one and redirects are not disabled.
    ///
    /// # Errors
    /// `Storage` if signing fails.
    pub async fn blob_redirect(
        &self,
        d: &Digest,
        request: &RedirectRequest,
    ) -> Result<Option<url::Url>> {
        if !self.settings.redirect || !self.driver.capabilities().redirect {
            return Ok(None);
        }
        Ok(self
            .driver
            .redirect_url(request, layout::blob_data(d))
            .await?)
    }

    /// Links an existing blob of `size` bytes into a repository, and tells
    /// the cache.
    async fn link_blob(&self, name: &RepoName, d: &Digest, size: u64) -> Result<()> {
        self.write_link(&layout::layer_link(name, d), d).await?;
        self.blob_linked(name, d, size).await;
        Ok(())
    }

    /// Tells the cache that a blob of `size` bytes was just linked into a
    /// repository.
    async fn blob_linked(&self, name: &RepoName, d: &Digest, size: u64) {
        if let Some(c) = &self.blob_cache {
            c.add_member(name, d, &Descriptor::blob(size)).await;
        }
    }

    /// Removes the blob from the repository (the data stays until garbage
    /// collection, as other repositories may link it).
    ///
    /// # Errors
    /// `Unsupported` if deletes are disabled, `BlobUnknown`.
    pub async fn delete_blob(&self, name: &RepoName, d: &Digest) -> Result<()> {
        self.check_delete_enabled()?;
        // The storage decides: a cached membership whose link is gone
        // (deleted through another instance) must not make this a 503.
        let forget = || async {
            if let Some(c) = &self.blob_cache {
                c.forget_members(&[(name.clone(), d.clone())]).await;
            }
        };
        if !self.gc_fence.use_digest(d) {
            return Err(RegistryError::BlobUnknown(d.clone()));
        }
        if let Err(e) = self.stat_stored_blob(name, d).await {
            if matches!(e, RegistryError::BlobUnknown(_)) {
                forget().await;
            }
            return Err(e);
        }
        let link = layout::layer_link(name, d);
        let dir = link.trim_end_matches("/link");
        self.driver.delete(dir).await?;
        forget().await;
        Ok(())
    }

    /// Cross-repository mount: links `d` into `name` if `from` has it.
    /// `Ok(None)` when `from` does not hold it (the caller falls back to an
    /// upload).
    ///
    /// # Errors
    /// `Storage`.
    pub async fn mount_blob(
        &self,
        name: &RepoName,
        from: &RepoName,
        d: &Digest,
    ) -> Result<Option<BlobInfo>> {
        match self.stat_blob(from, d).await {
            Ok(info) => {
                self.link_blob(name, d, info.size).await?;
                Ok(Some(info))
            }
            Err(RegistryError::BlobUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Links `d` into `name` if the registry holds its data (in any
    /// repository); `Ok(None)` if it does not. For a pull-through cache,
    /// once the upstream has confirmed that `name` holds the blob: its
    /// bytes need not be fetched again.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn adopt_blob(&self, name: &RepoName, d: &Digest) -> Result<Option<BlobInfo>> {
        if !self.gc_fence.use_digest(d) {
            return Ok(None);
        }
        let Some(size) = self.blob_size(d).await? else {
            return Ok(None);
        };
        self.link_blob(name, d, size).await?;
        Ok(Some(BlobInfo {
            digest: d.clone(),
            size,
        }))
    }

    /// Whether the registry holds the data of `d`, in any repository.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn holds_blob(&self, d: &Digest) -> Result<bool> {
        Ok(self.blob_size(d).await?.is_some())
    }

    /// Up to `n` repository names after `last` for which `visible` is
    /// true, and whether more visible ones follow. Names `visible` refuses
    /// are passed over without counting, so a page is full whenever more
    /// visible names exist (at the cost of reading the hidden ones).
    ///
    /// Without an index (`catalog.index: storage`) the storage is walked,
    /// in walk order, and a repository is a directory holding `_layers` or
    /// `_manifests`, as distribution 2.x lists it. With an index, names
    /// come from it in byte order, only repositories holding manifests, and
    /// only those containing `term` when one is given (a search).
    ///
    /// # Errors
    /// `Storage`, `Catalog`; `Unsupported` for a `term` without an index.
    pub async fn catalog(
        &self,
        n: usize,
        last: Option<&RepoName>,
        term: Option<&str>,
        visible: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<(Vec<String>, bool)> {
        if !self.catalog.is_storage() {
            return self.indexed_catalog(n, last, term, visible).await;
        }
        if term.is_some() {
            return Err(RegistryError::Unsupported(
                "searching repositories needs a catalog index: set catalog.index to file or sql"
                    .into(),
            ));
        }
        let mut names = Vec::new();
        let mut more = false;
        self.walk_repositories(last, RepositoryMarker::LayersOrManifests, |repo| {
            if !visible(&repo) {
                return true;
            }
            if names.len() == n {
                more = true;
                return false;
            }
            names.push(repo);
            true
        })
        .await?;
        Ok((names, more))
    }

    /// [`Registry::catalog`] from the index: pages of `n + 1` names until
    /// `n` visible ones and one more are found, or the index ends.
    async fn indexed_catalog(
        &self,
        n: usize,
        last: Option<&RepoName>,
        term: Option<&str>,
        visible: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<(Vec<String>, bool)> {
        let batch = n.saturating_add(1);
        let mut after = last.map(|l| l.as_str().to_owned()).unwrap_or_default();
        let mut names = Vec::new();
        loop {
            let page = self.catalog.page(&after, term, batch).await?;
            let ended = page.len() < batch;
            for name in page {
                if visible(&name) {
                    if names.len() == n {
                        return Ok((names, true));
                    }
                    names.push(name.clone());
                }
                after = name;
            }
            if ended {
                return Ok((names, false));
            }
        }
    }

    /// Walks `repositories/` in storage walk order (pre-order, siblings in
    /// byte order: `a`, `a/b`, `a-b`), calling `visit` once per repository
    /// `marker` recognises, after `start_after` (not included), until it
    /// returns false. The one walker of repositories: the catalog without
    /// an index, and the index's rebuild, use it.
    ///
    /// # Errors
    /// `Storage` (an absent `repositories/` is no repository, not an error).
    pub async fn walk_repositories(
        &self,
        start_after: Option<&RepoName>,
        marker: RepositoryMarker,
        mut visit: impl FnMut(String) -> bool + Send,
    ) -> Result<()> {
        let start = start_after.map(layout::repository);
        let prefix = format!("{}/", layout::REPOSITORIES);
        let mut met: Option<String> = start_after.map(|l| l.as_str().to_owned());
        let walked = self
            .driver
            .walk(layout::REPOSITORIES, start.as_deref(), |fi| {
                let Some(file) = fi.path.file_name() else {
                    return Ok(WalkControl::Continue);
                };
                if !fi.is_dir {
                    return Ok(WalkControl::Continue);
                }
                // `_layers` and `_manifests` sort next to each other among
                // a repository's children (`_` comes after every other
                // character a name's path may start with), so one
                // repository is met at most twice in a row.
                let counts = match marker {
                    RepositoryMarker::LayersOrManifests => {
                        file == "_layers" || file == "_manifests"
                    }
                    RepositoryMarker::Manifests => file == "_manifests",
                };
                if counts {
                    // `<prefix><repo>/<file>`, sliced rather than built:
                    // this runs for every repository of a catalog walk.
                    let full = fi.path.as_str();
                    let repo = full
                        .get(prefix.len()..full.len() - file.len() - 1)
                        .unwrap_or_default();
                    // Met already (its `_layers`), or `start_after`
                    // itself, which the walk resumes after and so meets
                    // again; or no name at all (`repositories/_layers`).
                    if repo.is_empty() || met.as_deref() == Some(repo) {
                        return Ok(WalkControl::SkipDir);
                    }
                    met = Some(repo.to_owned());
                    if !visit(repo.to_owned()) {
                        return Ok(WalkControl::Stop);
                    }
                    return Ok(WalkControl::SkipDir);
                }
                if file.starts_with('_') {
                    return Ok(WalkControl::SkipDir);
                }
                Ok(WalkControl::Continue)
            })
            .await;
        match walked {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that a manifest was stored in `name`: the index lists it
    /// from now on (an insert-if-absent, done on every manifest put: one
    /// cheap statement, where checking storage first would cost a backend
    /// request as well).
    ///
    /// # Errors
    /// `Catalog`: the push fails, and its retry (idempotent) adds it.
    pub(crate) async fn note_manifest_stored(&self, name: &RepoName) -> Result<()> {
        Ok(self.catalog.add(name.as_str()).await?)
    }

    /// After manifests of `names` were deleted: takes each repository that
    /// holds no manifest any more (its `_manifests` is no longer a
    /// directory) out of the index.
    ///
    /// It removes first and looks at the storage after: a push of a first
    /// manifest on another instance writes its revision link before it
    /// adds the name, so either that add comes after this removal, or the
    /// look that follows the removal sees the revision and adds the name
    /// back. (Looking first could see no manifest, then lose the other
    /// instance's add to this removal.) Failures are logged, not returned:
    /// the manifests are deleted already; `regstore catalog rebuild`
    /// repairs the index.
    pub async fn forget_if_no_manifests(&self, names: &[&RepoName]) {
        if self.catalog.is_storage() {
            return;
        }
        for name in names {
            let result = async {
                self.catalog.remove(name.as_str()).await?;
                if self.holds_manifests(name).await? {
                    self.catalog.add(name.as_str()).await?;
                }
                Ok::<_, RegistryError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(
                    repository = %name,
                    error = %e,
                    "the catalog index could not be updated after a delete; run `regstore catalog rebuild`"
                );
            }
        }
    }

    /// Whether `name`'s `_manifests` is a directory (the filesystem driver
    /// prunes empty directories; object stores have none).
    async fn holds_manifests(&self, name: &RepoName) -> Result<bool> {
        match self.driver.stat(layout::manifests_dir(name)).await {
            Ok(fi) => Ok(fi.is_dir),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Fills the catalog index from the storage: every repository holding
    /// manifests, replacing what the index held. Returns how many.
    ///
    /// # Errors
    /// `Storage`, `Catalog` (the index keeps its old content then);
    /// `Unsupported` without an index.
    pub async fn rebuild_catalog(&self) -> Result<usize> {
        if self.catalog.is_storage() {
            return Err(RegistryError::Unsupported(
                "catalog.index is storage: there is no index to rebuild".into(),
            ));
        }
        let mut names = Vec::new();
        self.walk_repositories(None, RepositoryMarker::Manifests, |repo| {
            names.push(repo);
            true
        })
        .await?;
        let count = names.len();
        self.catalog.replace_all(names).await?;
        Ok(count)
    }

    /// Every tag of the repository, sorted (byte order): one listing of
    /// `_manifests/tags/`, nothing read per tag — or, while the driver's
    /// stamp of that directory is the one the list was read under, the
    /// list kept in memory ([`tag_lists`]: one `stat` instead).
    ///
    /// # Errors
    /// `NameUnknown` if the repository has no manifests, `Storage`.
    pub async fn tags(&self, name: &RepoName) -> Result<std::sync::Arc<[String]>> {
        let dir = layout::tags_dir(name);
        // Taken before the listing: a change after it changes the stamp.
        let stamp = self.driver.children_stamp(&dir).await?;
        if let Some(kept) = stamp.and_then(|s| self.tag_lists.get(name, s)) {
            return Ok(kept);
        }
        match self.driver.list(&dir).await {
            // `list` sorts in walk order, which for the children of one
            // directory is the byte order of their names.
            Ok(children) => {
                let tags: std::sync::Arc<[String]> = children
                    .iter()
                    .filter_map(|p| p.file_name().map(str::to_owned))
                    .collect();
                self.tag_lists.keep(name, stamp, &tags);
                Ok(tags)
            }
            Err(e) if e.is_not_found() => {
                if self.repository_exists(name).await? {
                    Ok(std::sync::Arc::from([]))
                } else {
                    Err(RegistryError::NameUnknown(name.clone()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the repository exists: it holds manifests or layers (as
    /// the catalog lists it).
    async fn repository_exists(&self, name: &RepoName) -> Result<bool> {
        for dir in [layout::manifests_dir(name), layout::layers_dir(name)] {
            match self.driver.stat(dir).await {
                Ok(fi) if fi.is_dir => return Ok(true),
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Health check: the driver lists the direct children of the layout's
    /// root ([`layout::ROOT`]) within [`HEALTH_TIMEOUT`]; not-found (an
    /// empty store) is healthy.
    ///
    /// Why a listing of the root: it always reaches the backend, and is its
    /// cheapest question. A stat of `/` does not (object-store drivers answer
    /// it without a request), and a stat of the root costs object stores a
    /// `HEAD` plus a listing without delimiter (a page of up to 1,000 keys).
    /// The listing is one delimited list request on S3, Azure, GCS and Swift
    /// (its answer holds the few top-level prefixes, `blobs/` and
    /// `repositories/`), a `readdir` on the filesystem. Bounded so that a
    /// load balancer's probe, or startup, is not held by a client's own
    /// retries against a backend that does not answer.
    ///
    /// # Errors
    /// `Storage` when the backend does not answer properly (its error keeps
    /// its kind: `Credentials` for refused credentials), or in time
    /// (a `Backend` error saying so).
    pub async fn check_health(&self) -> Result<()> {
        match tokio::time::timeout(HEALTH_TIMEOUT, self.driver.list(layout::ROOT)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_not_found() => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(regstore_core::Error::backend(format!(
                "{}: no answer within {}s",
                self.driver.name(),
                HEALTH_TIMEOUT.as_secs()
            ))
            .into()),
        }
    }
}

/// A fresh `inmemory` driver for unit tests (every built-in driver and
/// middleware registered, so tests may wrap it by name).
#[cfg(test)]
pub(crate) async fn inmemory_for_tests() -> Driver {
    regstore_builtin::register_all();
    regstore_core::create("inmemory", &Default::default())
        .await
        .expect("inmemory")
}
