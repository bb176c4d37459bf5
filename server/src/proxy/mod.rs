//! The pull-through cache (distribution's `proxy:` section): a registry
//! that serves pulls from its storage and fetches what it lacks from one
//! upstream registry.
//!
//! - **Blobs** are immutable. A `GET` the storage cannot answer joins or
//!   starts the single fetch of that digest ([`fetch`]): the bytes stream
//!   to the client while they are stored, and the blob becomes visible
//!   only once it hashed to its digest. A `HEAD` miss asks upstream with a
//!   `HEAD` and fetches nothing. A blob the storage holds for another
//!   repository is linked into the one asked for once upstream confirms
//!   (`HEAD`) that this repository has it: its bytes are not fetched again,
//!   and no repository reads another's blobs without upstream's word.
//! - **Manifests by digest** are fetched once, then served locally.
//! - **Manifests by tag** are revalidated with an upstream `HEAD` at most
//!   once per `ttl` window (on every request when `ttl: 0`), and fetched
//!   when upstream's digest differs from the cached one. When upstream
//!   cannot be asked (unreachable, 5xx, refusing the credentials) a cached
//!   tag is served as it is, with a warning in the log; when upstream says
//!   the tag is gone, the request gets that 404.
//! - **Tag lists** are upstream's when it answers, the cached tags when it
//!   cannot; the catalog lists the cached repositories.
//! - Writes (`PUT`, `POST`, `PATCH`, `DELETE`) answer 405 `UNSUPPORTED`
//!   (the HTTP layer refuses them).
//! - **Expiry** ([`expiry`]): content is removed `ttl` after it was
//!   fetched; the schedule is the write times the storage keeps, so it
//!   survives restarts.
//!
//! [`Proxy::stats`] counts hits, misses and bytes fetched; every fetch and
//! every stale answer is logged.

pub mod expiry;
pub mod fetch;
pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ProxyConfig;
use crate::registry::{
    BlobInfo, Digest, Reference, Registry, RegistryError, RepoName, StoredManifest, Tag,
};
use fetch::{BlobBytes, Fetches};
use upstream::{Upstream, UpstreamError};

/// Most tags whose last revalidation is remembered; past it, those whose
/// window is over are forgotten.
const MAX_REMEMBERED_TAGS: usize = 100_000;

/// What a proxied request fails with.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The local storage failed, or refused the fetched content.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Upstream could not give the manifest.
    #[error("manifest {reference} of {name}: {source}")]
    Manifest {
        /// The repository.
        name: RepoName,
        /// The tag or digest asked for.
        reference: String,
        /// What upstream did.
        source: UpstreamError,
    },
    /// Upstream could not give the blob.
    #[error("blob {digest} of {name}: {source}")]
    Blob {
        /// The repository.
        name: RepoName,
        /// The blob.
        digest: Digest,
        /// What upstream did.
        source: UpstreamError,
    },
}

/// What a blob request the storage could not answer gets.
pub enum BlobMiss {
    /// The storage held the bytes for another repository; upstream
    /// confirmed this one has it, so it is now linked here too.
    Adopted(BlobInfo),
    /// For a `HEAD`: upstream has it, with this size.
    Upstream(u64),
    /// For a `GET`: the fetch's bytes, with the length upstream announced.
    Fetching(Option<u64>, BlobBytes),
}

/// Counters since startup, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Manifest requests answered from the storage (revalidated or not).
    pub manifest_hits: u64,
    /// Manifest requests that fetched from upstream.
    pub manifest_misses: u64,
    /// Cached tags served without revalidation because upstream could not
    /// be asked.
    pub stale_served: u64,
    /// Upstream `HEAD`s made to revalidate a tag.
    pub revalidations: u64,
    /// Blob requests answered from the storage.
    pub blob_hits: u64,
    /// Blob requests the storage could not answer alone.
    pub blob_misses: u64,
    /// Blobs fetched from upstream and stored.
    pub blobs_fetched: u64,
    /// Blob fetches that failed after upstream answered (cut, wrong
    /// digest, storage error): nothing was stored.
    pub blob_fetches_failed: u64,
    /// Bytes of blobs fetched and stored.
    pub blob_bytes_fetched: u64,
    /// Bytes of manifests fetched.
    pub manifest_bytes_fetched: u64,
}

#[derive(Default)]
struct Counters {
    manifest_hits: AtomicU64,
    manifest_misses: AtomicU64,
    stale_served: AtomicU64,
    revalidations: AtomicU64,
    blob_hits: AtomicU64,
    blob_misses: AtomicU64,
    manifest_bytes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A registry's pull-through cache: the upstream client, the fetches in
/// flight, and when each tag was last revalidated. One per registry.
pub struct Proxy {
    upstream: Upstream,
    fetches: Arc<Fetches>,
    ttl: Option<Duration>,
    /// When each cached tag last matched upstream.
    checked: Mutex<HashMap<(RepoName, Tag), Instant>>,
    counters: Counters,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstream", &self.upstream)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// The cache `config` describes.
    ///
    /// # Errors
    /// [`UpstreamError::Config`] for a `remoteurl` that is not usable.
    pub fn new(config: &ProxyConfig) -> Result<Proxy, UpstreamError> {
        Ok(Proxy {
            upstream: Upstream::new(
                &config.remote_url,
                config.username.as_deref(),
                config.password.as_deref(),
            )?,
            fetches: Arc::new(Fetches::default()),
            ttl: config.ttl,
            checked: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        })
    }

    /// The upstream client.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// How long content is kept (`None`: until garbage collection).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The counters since startup.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (blobs_fetched, blob_fetches_failed, blob_bytes_fetched) = self.fetches.totals();
        ProxyStats {
            manifest_hits: load(&c.manifest_hits),
            manifest_misses: load(&c.manifest_misses),
            stale_served: load(&c.stale_served),
            revalidations: load(&c.revalidations),
            blob_hits: load(&c.blob_hits),
            blob_misses: load(&c.blob_misses),
            blobs_fetched,
            blob_fetches_failed,
            blob_bytes_fetched,
            manifest_bytes_fetched: load(&c.manifest_bytes),
        }
    }

    /// Counts a blob request the storage answered.
    pub fn note_blob_hit(&self) {
        bump(&self.counters.blob_hits);
    }

    fn checked(&self) -> std::sync::MutexGuard<'_, HashMap<(RepoName, Tag), Instant>> {
        // Every critical section leaves the map consistent.
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the tag matched upstream within the current window.
    fn fresh(&self, name: &RepoName, tag: &Tag) -> bool {
        let Some(ttl) = self.ttl else {
            return false;
        };
        self.checked()
            .get(&(name.clone(), tag.clone()))
            .is_some_and(|at| at.elapsed() < ttl)
    }

    fn mark_checked(&self, name: &RepoName, tag: &Tag) {
        let Some(ttl) = self.ttl else {
            return;
        };
        let mut checked = self.checked();
        if checked.len() >= MAX_REMEMBERED_TAGS {
            checked.retain(|_, at| at.elapsed() < ttl);
        }
        checked.insert((name.clone(), tag.clone()), Instant::now());
    }

    /// The manifest `reference` names in `name`: from the storage when it
    /// is there (and, for a tag, still upstream's), else fetched from
    /// upstream and stored. `accept` is the client's `Accept` media types,
    /// asked of upstream besides the types regstore stores.
    ///
    /// # Errors
    /// [`ProxyError::Manifest`] when upstream cannot give an uncached
    /// manifest (or says a tag is gone); `Registry` when the storage fails
    /// or refuses the fetched manifest.
    pub async fn manifest(
        &self,
        registry: &Registry,
        name: &RepoName,
        reference: &Reference,
        accept: &[&str],
    ) -> Result<StoredManifest, ProxyError> {
        let local = match registry.get_manifest(name, reference).await {
            Ok(m) => Some(m),
            Err(RegistryError::ManifestUnknown(_) | RegistryError::NameUnknown(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let accept = accept_types(accept);
        let upstream_error = |source| ProxyError::Manifest {
            name: name.clone(),
            reference: reference.to_string(),
            source,
        };
        let (tag, cached) = match (reference, local) {
            (Reference::Digest(_), Some(m)) => {
                bump(&self.counters.manifest_hits);
                return Ok(m);
            }
            (Reference::Digest(_), None) => {
                return self
                    .fetch_manifest(registry, name, reference, &accept)
                    .await;
            }
            (Reference::Tag(tag), None) => {
                let m = self
                    .fetch_manifest(registry, name, reference, &accept)
                    .await?;
                self.mark_checked(name, tag);
                return Ok(m);
            }
            (Reference::Tag(tag), Some(m)) => {
                if self.fresh(name, tag) {
                    bump(&self.counters.manifest_hits);
                    return Ok(m);
                }
                (tag, m)
            }
        };
        bump(&self.counters.revalidations);
        let refs: Vec<&str> = accept.iter().map(String::as_str).collect();
        match self.upstream.head_manifest(name, reference, &refs).await {
            Ok(head) if head.digest.as_ref() == Some(&cached.digest) => {
                self.mark_checked(name, tag);
                bump(&self.counters.manifest_hits);
                Ok(cached)
            }
            Ok(head) => {
                tracing::info!(repository = %name, %tag, cached = %cached.digest, upstream = ?head.digest.map(|d| d.to_string()), "proxy: tag changed upstream; fetching it");
                match self
                    .fetch_manifest(registry, name, reference, &accept)
                    .await
                {
                    Ok(m) => {
                        self.mark_checked(name, tag);
                        Ok(m)
                    }
                    Err(ProxyError::Manifest { source, .. }) if unavailable(&source) => {
                        Ok(self.stale(name, tag, cached, &source))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) if unavailable(&e) => Ok(self.stale(name, tag, cached, &e)),
            Err(e) => Err(upstream_error(e)),
        }
    }

    /// A cached tag served because upstream cannot be asked.
    fn stale(
        &self,
        name: &RepoName,
        tag: &Tag,
        cached: StoredManifest,
        why: &UpstreamError,
    ) -> StoredManifest {
        bump(&self.counters.stale_served);
        bump(&self.counters.manifest_hits);
        tracing::warn!(repository = %name, %tag, digest = %cached.digest, "proxy: serving the cached tag without revalidation: {why}");
        cached
    }

    async fn fetch_manifest(
        &self,
        registry: &Registry,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
    ) -> Result<StoredManifest, ProxyError> {
        bump(&self.counters.manifest_misses);
        let refs: Vec<&str> = accept.iter().map(String::as_str).collect();
        let m = self
            .upstream
            .get_manifest(name, reference, &refs)
            .await
            .map_err(|source| ProxyError::Manifest {
                name: name.clone(),
                reference: reference.to_string(),
                source,
            })?;
        self.counters
            .manifest_bytes
            .fetch_add(m.body.len() as u64, Ordering::Relaxed);
        let put = registry
            .cache_manifest(name, reference, Some(&m.media_type), m.body.clone())
            .await?;
        tracing::info!(repository = %name, %reference, digest = %put.digest, bytes = m.body.len(), "proxy: manifest fetched from upstream and stored");
        Ok(StoredManifest {
            digest: put.digest,
            media_type: m.media_type,
            body: m.body,
        })
    }

    /// A blob request on `name` that the storage could not answer: adopts
    /// the bytes the storage holds for another repository, or asks
    /// upstream (`get`: fetches, joining a fetch in flight; else `HEAD`).
    ///
    /// # Errors
    /// [`ProxyError::Blob`] when upstream cannot give it; `Registry` when
    /// the storage fails.
    pub async fn blob_miss(
        &self,
        registry: &Registry,
        name: &RepoName,
        d: &Digest,
        get: bool,
    ) -> Result<BlobMiss, ProxyError> {
        bump(&self.counters.blob_misses);
        let upstream_error = |source| ProxyError::Blob {
            name: name.clone(),
            digest: d.clone(),
            source,
        };
        if registry.holds_blob(d).await? {
            self.upstream
                .head_blob(name, d)
                .await
                .map_err(upstream_error)?;
            if let Some(info) = registry.adopt_blob(name, d).await? {
                return Ok(BlobMiss::Adopted(info));
            }
        }
        if !get {
            let size = self
                .upstream
                .head_blob(name, d)
                .await
                .map_err(upstream_error)?;
            return Ok(BlobMiss::Upstream(size));
        }
        let (up, repo, digest) = (self.upstream.clone(), name.clone(), d.clone());
        let (size, bytes) = self
            .fetches
            .fetch(registry, name, d, move || async move {
                let b = up.get_blob(&repo, &digest).await?;
                Ok((b.size, b.stream))
            })
            .await
            .map_err(upstream_error)?;
        Ok(BlobMiss::Fetching(size, bytes))
    }

    /// The tags of `name`, sorted (byte order): upstream's list when it
    /// answers, else the cached tags (with a warning).
    ///
    /// # Errors
    /// `Registry` when upstream cannot answer and the storage has no such
    /// repository (or fails).
    pub async fn tags(
        &self,
        registry: &Registry,
        name: &RepoName,
    ) -> Result<std::sync::Arc<[String]>, ProxyError> {
        match self.upstream.tags(name).await {
            Ok(mut tags) => {
                // The storage's list comes sorted; an upstream's need not.
                if !tags.is_sorted() {
                    tags.sort_unstable();
                }
                Ok(tags.into())
            }
            Err(e) => {
                if !matches!(e, UpstreamError::NotFound { .. }) {
                    tracing::warn!(repository = %name, "proxy: listing the cached tags: {e}");
                }
                Ok(registry.tags(name).await?)
            }
        }
    }

    /// Fetches in flight now.
    pub fn fetches_in_flight(&self) -> usize {
        self.fetches.in_flight()
    }
}

/// Whether `e` means upstream cannot be asked now (rather than an answer
/// about the content): a cached tag is then served as it is.
pub fn unavailable(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Unreachable { .. } | UpstreamError::Unauthorized { .. } => true,
        UpstreamError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// The media types asked of upstream: the client's, then the ones
/// regstore stores, without repeats.
fn accept_types(client: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in client
        .iter()
        .copied()
        .chain(upstream::DEFAULT_ACCEPT.iter().copied())
    {
        let t = t.trim();
        if !t.is_empty() && t != "*/*" && !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_types_keep_the_clients_first_without_repeats() {
        let got = accept_types(&[
            "application/vnd.docker.distribution.manifest.v2+json",
            "*/*",
            " ",
        ]);
        assert_eq!(
            got[0],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(got.len(), upstream::DEFAULT_ACCEPT.len());
        assert!(got.iter().all(|t| t != "*/*"));
    }
}
