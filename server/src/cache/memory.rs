//! `blobdescriptor: inmemory`: one least-recently-used map, bounded by
//! `blobdescriptorsize` entries, descriptors and memberships together (a
//! membership is worth as much memory as a descriptor). Per instance.

use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};

use lru::LruCache;

use super::Descriptor;
use crate::registry::{Digest, RepoName};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Blob(Digest),
    Member(RepoName, Digest),
}

/// The map. Every operation holds its lock for a few hash-map steps.
#[derive(Debug)]
pub(super) struct MemoryCache {
    entries: Mutex<LruCache<Key, Descriptor>>,
}

impl MemoryCache {
    /// At most `size` entries (at least 1).
    pub(super) fn new(size: usize) -> MemoryCache {
        MemoryCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(size).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, LruCache<Key, Descriptor>> {
        // Nothing can panic while the lock is held with the map half-changed.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn descriptor(&self, d: &Digest) -> Option<Descriptor> {
        self.entries().get(&Key::Blob(d.clone())).cloned()
    }

    pub(super) fn member(&self, repo: &RepoName, d: &Digest) -> Option<Descriptor> {
        let mut entries = self.entries();
        entries.get(&Key::Member(repo.clone(), d.clone()))?;
        entries.get(&Key::Blob(d.clone())).cloned()
    }

    pub(super) fn set_descriptor(&self, d: &Digest, desc: &Descriptor) {
        self.entries().put(Key::Blob(d.clone()), desc.clone());
    }

    pub(super) fn add_member(&self, repo: &RepoName, d: &Digest, desc: &Descriptor) {
        let mut entries = self.entries();
        entries.put(Key::Member(repo.clone(), d.clone()), desc.clone());
        entries.put(Key::Blob(d.clone()), desc.clone());
    }

    pub(super) fn forget_members(&self, links: &[(RepoName, Digest)]) {
        let mut entries = self.entries();
        for (repo, d) in links {
            entries.pop(&Key::Member(repo.clone(), d.clone()));
        }
    }

    pub(super) fn forget_descriptors(&self, digests: &[Digest]) {
        let mut entries = self.entries();
        for d in digests {
            entries.pop(&Key::Blob(d.clone()));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Algorithm;

    fn digest(i: u32) -> Digest {
        Digest::of(Algorithm::Sha256, &i.to_be_bytes())
    }

    #[test]
    fn holds_at_most_its_size_and_drops_the_least_recently_used() {
        let c = MemoryCache::new(3);
        for i in 0..3 {
            c.set_descriptor(&digest(i), &Descriptor::blob(u64::from(i)));
        }
        // 0 is used, so 1 is now the least recently used.
        assert_eq!(c.descriptor(&digest(0)), Some(Descriptor::blob(0)));
        c.set_descriptor(&digest(3), &Descriptor::blob(3));
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.descriptor(&digest(1)),
            None,
            "the least recently used went"
        );
        for i in [0, 2, 3] {
            assert_eq!(
                c.descriptor(&digest(i)),
                Some(Descriptor::blob(u64::from(i)))
            );
        }
        for i in 10..100 {
            c.set_descriptor(&digest(i), &Descriptor::blob(1));
        }
        assert_eq!(c.len(), 3, "the bound holds");
    }

    #[test]
    fn a_membership_counts_against_the_bound_and_needs_its_descriptor() {
        let c = MemoryCache::new(2);
        let repo = RepoName::parse("r").unwrap();
        c.add_member(&repo, &digest(0), &Descriptor::blob(5));
        assert_eq!(c.len(), 2);
        assert_eq!(c.member(&repo, &digest(0)), Some(Descriptor::blob(5)));
        // A third entry evicts the least recently used: the membership
        // (the member lookup touched it before its descriptor).
        c.set_descriptor(&digest(1), &Descriptor::blob(1));
        assert_eq!(c.len(), 2);
        assert_eq!(c.member(&repo, &digest(0)), None);
        assert_eq!(c.descriptor(&digest(0)), Some(Descriptor::blob(5)));
        let c = MemoryCache::new(0);
        c.set_descriptor(&digest(0), &Descriptor::blob(1));
        assert_eq!(c.len(), 1, "a size of 0 is read as 1");
    }
}
