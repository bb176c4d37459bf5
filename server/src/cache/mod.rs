//! The blob-descriptor cache (`storage.cache.blobdescriptor`): what the
//! registry knows about blobs without asking the storage — digest →
//! (size, media type), and which repositories link which digest.
//!
//! On an object store every blob `HEAD` costs two backend requests (the
//! repository's link, then the data's size); a hit costs none. This
//! module owns the cached facts and nothing else: it never reads or writes
//! the storage, and [`crate::registry::Registry`] decides when to fill and
//! when to forget (see its `stat_blob`, `delete_blob`; [`crate::gc`],
//! [`crate::proxy::expiry`] and [`crate::check`] forget what they delete).
//!
//! # Rules
//! - A membership answer needs both the repository's entry and the
//!   digest's descriptor: forgetting a descriptor (its data was deleted)
//!   hides it from every repository at once.
//! - The cache never fails a request: an error (Redis down, slow, or
//!   answering nonsense) is a miss, counted in
//!   [`CacheStats::errors`] and logged as a warning at most once per
//!   [`WARN_EVERY`]; the caller goes to the storage.
//! - Blobs are immutable, so a cached descriptor is right for as long as
//!   the data exists. What the cache cannot see is a delete it was not told
//!   of: the in-memory cache is **per instance** (a blob deleted or collected
//!   through another instance stays cached here until evicted); several
//!   instances on one storage should share a Redis cache. An invalidation
//!   sent while Redis is unreachable is lost too (it is counted as an error
//!   and logged); run `regstore garbage-collect` with Redis up.
//!
//! # Kinds
//! - [`BlobDescriptorCache::in_memory`]: one least-recently-used map of
//!   `blobdescriptorsize` entries (descriptors and memberships together).
//! - [`BlobDescriptorCache::redis`]: see [`redis`].

mod memory;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::BlobCacheConfig;
use crate::registry::{Digest, RepoName};

/// The media type of a blob descriptor: the registry does not know a
/// blob's own type (manifests give it per reference), so, as in
/// distribution, it is `application/octet-stream`.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// At most one warning per this long about cache errors (the rest are
/// counted and reported with the next warning).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the cache knows of a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Bytes.
    pub size: u64,
    /// Its media type (see [`BLOB_MEDIA_TYPE`]).
    pub media_type: String,
}

impl Descriptor {
    /// A blob of `size` bytes with [`BLOB_MEDIA_TYPE`].
    pub fn blob(size: u64) -> Descriptor {
        Descriptor {
            size,
            media_type: BLOB_MEDIA_TYPE.to_owned(),
        }
    }
}

/// Counters of one cache, read by the metrics collector.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups the cache could not answer (the storage was asked).
    pub misses: AtomicU64,
    /// Cache operations that failed (lookups among them are misses too).
    pub errors: AtomicU64,
}

/// Why a cache operation failed; never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis was unreachable a moment ago: not asked again yet.
    #[error("redis is unreachable; retrying in a moment")]
    Backoff,
    /// A stored value that is not what this module writes.
    #[error("redis key {key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
}

/// A blob-descriptor cache of either kind. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobDescriptorCache {
    store: Store,
    stats: Arc<CacheStats>,
    warned: Arc<Warnings>,
}

#[derive(Clone, Debug)]
enum Store {
    Memory(Arc<memory::MemoryCache>),
    Redis(Arc<redis::RedisCache>),
}

impl BlobDescriptorCache {
    /// The cache a config asks for.
    ///
    /// # Errors
    /// A Redis address that cannot make a client URL.
    pub fn from_config(config: &BlobCacheConfig) -> Result<BlobDescriptorCache, CacheError> {
        match config {
            BlobCacheConfig::InMemory { size } => Ok(Self::in_memory(*size)),
            BlobCacheConfig::Redis(r) => Self::redis(r),
        }
    }

    /// An in-memory cache of at most `size` entries (at least 1).
    pub fn in_memory(size: usize) -> BlobDescriptorCache {
        Self::with(Store::Memory(Arc::new(memory::MemoryCache::new(size))))
    }

    /// A Redis cache; connects on first use (an unreachable Redis at
    /// startup is a run of misses, not a startup failure).
    ///
    /// # Errors
    /// Settings the client refuses (an address that makes no URL).
    pub fn redis(config: &crate::config::RedisConfig) -> Result<BlobDescriptorCache, CacheError> {
        Ok(Self::with(Store::Redis(Arc::new(redis::RedisCache::new(
            config,
        )?))))
    }

    fn with(store: Store) -> BlobDescriptorCache {
        BlobDescriptorCache {
            store,
            stats: Arc::default(),
            warned: Arc::default(),
        }
    }

    /// `inmemory` or `redis`: the `cache` label of its metrics.
    pub fn kind(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "inmemory",
            Store::Redis(_) => "redis",
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The descriptor of `d`, or `None` (unknown, or the cache failed).
    pub async fn descriptor(&self, d: &Digest) -> Option<Descriptor> {
        let found = match &self.store {
            Store::Memory(m) => Ok(m.descriptor(d)),
            Store::Redis(r) => r.descriptor(d).await,
        };
        self.count_lookup(found, "looking up a blob descriptor")
    }

    /// The descriptor of `d` as a blob of `repo`: `None` unless the cache
    /// knows both that `repo` links `d` and `d`'s descriptor.
    pub async fn member(&self, repo: &RepoName, d: &Digest) -> Option<Descriptor> {
        let found = match &self.store {
            Store::Memory(m) => Ok(m.member(repo, d)),
            Store::Redis(r) => r.member(repo, d).await,
        };
        self.count_lookup(found, "looking up a repository's blob")
    }

    /// Records `d`'s descriptor (its data is stored).
    pub async fn set_descriptor(&self, d: &Digest, desc: &Descriptor) {
        let done = match &self.store {
            Store::Memory(m) => {
                m.set_descriptor(d, desc);
                Ok(())
            }
            Store::Redis(r) => r.set_descriptor(d, desc).await,
        };
        self.count_write(done, "storing a blob descriptor");
    }

    /// Records that `repo` links `d`, whose descriptor is `desc`.
    pub async fn add_member(&self, repo: &RepoName, d: &Digest, desc: &Descriptor) {
        let done = match &self.store {
            Store::Memory(m) => {
                m.add_member(repo, d, desc);
                Ok(())
            }
            Store::Redis(r) => r.add_member(repo, d, desc).await,
        };
        self.count_write(done, "storing a repository's blob");
    }

    /// Forgets that the repositories named link the digests (their links
    /// were deleted).
    pub async fn forget_members(&self, links: &[(RepoName, Digest)]) {
        if links.is_empty() {
            return;
        }
        let done = match &self.store {
            Store::Memory(m) => {
                m.forget_members(links);
                Ok(())
            }
            Store::Redis(r) => r.forget_members(links).await,
        };
        self.count_write(done, "forgetting repositories' blobs");
    }

    /// Forgets the descriptors of `digests` (their data was deleted), and
    /// so every repository's membership of them.
    pub async fn forget_descriptors(&self, digests: &[Digest]) {
        if digests.is_empty() {
            return;
        }
        let done = match &self.store {
            Store::Memory(m) => {
                m.forget_descriptors(digests);
                Ok(())
            }
            Store::Redis(r) => r.forget_descriptors(digests).await,
        };
        self.count_write(done, "forgetting blob descriptors");
    }

    fn count_lookup(
        &self,
        found: Result<Option<Descriptor>, CacheError>,
        what: &str,
    ) -> Option<Descriptor> {
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                self.failed(&e, what);
                None
            }
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn count_write(&self, done: Result<(), CacheError>, what: &str) {
        if let Err(e) = done {
            self.failed(&e, what);
        }
    }

    fn failed(&self, e: &CacheError, what: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.warned.due(Instant::now()) {
            tracing::warn!(
                cache = self.kind(),
                error = %e,
                suppressed,
                "blob-descriptor cache failed {what}; the storage answers instead ({suppressed} more failures in the last {}s were not logged)",
                WARN_EVERY.as_secs()
            );
        }
    }
}

/// Rate limit of the cache's warnings.
#[derive(Debug, Default)]
struct Warnings {
    last: std::sync::Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Warnings {
    /// `Some(failures not logged since the last warning)` when a warning
    /// is due now; else counts this one as suppressed.
    fn due(&self, now: Instant) -> Option<u64> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *last {
            Some(t) if now.duration_since(t) < WARN_EVERY => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_skipped() {
        let w = Warnings::default();
        let t0 = Instant::now();
        assert_eq!(w.due(t0), Some(0));
        assert_eq!(w.due(t0 + Duration::from_secs(1)), None);
        assert_eq!(w.due(t0 + Duration::from_secs(2)), None);
        assert_eq!(w.due(t0 + WARN_EVERY + Duration::from_secs(1)), Some(2));
    }

    #[tokio::test]
    async fn counts_hits_misses_and_needs_the_descriptor_for_a_member() {
        let c = BlobDescriptorCache::in_memory(10);
        let repo = RepoName::parse("a/b").unwrap();
        let d = Digest::of(crate::registry::Algorithm::Sha256, b"x");
        assert_eq!(c.member(&repo, &d).await, None);
        c.add_member(&repo, &d, &Descriptor::blob(1)).await;
        assert_eq!(c.member(&repo, &d).await, Some(Descriptor::blob(1)));
        assert_eq!(c.descriptor(&d).await, Some(Descriptor::blob(1)));
        c.forget_descriptors(std::slice::from_ref(&d)).await;
        assert_eq!(
            c.member(&repo, &d).await,
            None,
            "a membership without its descriptor is a miss"
        );
        c.forget_members(&[(repo.clone(), d.clone())]).await;
        c.set_descriptor(&d, &Descriptor::blob(1)).await;
        assert_eq!(c.member(&repo, &d).await, None, "the membership is gone");
        assert_eq!(c.stats().hits.load(Ordering::Relaxed), 2);
        assert_eq!(c.stats().misses.load(Ordering::Relaxed), 3);
        assert_eq!(c.stats().errors.load(Ordering::Relaxed), 0);
    }
}
