//! Tag lists kept in memory between requests.
//!
//! A tag list is one listing of `_manifests/tags/`, and on a large
//! repository that listing is most of a tag-list request (on ext4, hashing
//! and sorting a thousand directory entries in the kernel, then building
//! and sorting the names). Tools that poll tag lists (image updaters,
//! dependency bots) ask for the same unchanged list again and again. So
//! the registry keeps each list it read together with the driver's
//! [`DirStamp`] of the directory, taken *before* the listing, and serves
//! it again only while a fresh stamp (one `stat`) is the same: a tag
//! added or removed since, by this process or any other sharing the
//! storage, gives another stamp, and the list is read again. A driver
//! without stamps (object stores, middleware, a directory changed within
//! the last seconds) is listed every time, as before.
//!
//! Memory: at most [`TAG_BUDGET`] tags in all (a few MiB); the list used
//! longest ago goes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regstore_core::{DirStamp, StampedLists};

use super::names::RepoName;

/// How many tags the kept lists may hold together.
pub const TAG_BUDGET: usize = 100_000;

/// The kept tag lists and how often they were used.
#[derive(Debug)]
pub struct TagLists {
    kept: StampedLists<RepoName, String>,
    stats: TagListStats,
}

impl Default for TagLists {
    fn default() -> Self {
        TagLists {
            kept: StampedLists::new(TAG_BUDGET),
            stats: TagListStats::default(),
        }
    }
}

/// Tag-list requests by how they were answered.
#[derive(Debug, Default)]
pub struct TagListStats {
    /// Served from memory: the stamp was the kept one.
    pub hits: AtomicU64,
    /// Listed, and kept with the stamp.
    pub misses: AtomicU64,
    /// Listed, and not kept: the driver gave no stamp.
    pub unstamped: AtomicU64,
}

impl TagLists {
    /// The kept list of `repo` if it was kept with `stamp` (and counts a
    /// hit); `None` otherwise.
    pub fn get(&self, repo: &RepoName, stamp: DirStamp) -> Option<Arc<[String]>> {
        let tags = self.kept.get(repo, stamp)?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(tags)
    }

    /// Keeps `tags`, listed after `stamp` was taken (`None`: counted, not
    /// kept), in place of what was kept for `repo`; lists used longest ago
    /// make room. A list longer than the whole budget is not kept.
    pub fn keep(&self, repo: &RepoName, stamp: Option<DirStamp>, tags: &Arc<[String]>) {
        let Some(stamp) = stamp else {
            self.stats.unstamped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.kept.keep(repo, stamp, Arc::clone(tags));
    }

    /// The counts of answers so far.
    pub fn stats(&self) -> &TagListStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(n: &str) -> RepoName {
        RepoName::parse(n).expect("a valid name")
    }

    fn tags(n: usize) -> Arc<[String]> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    /// A list is served only with the stamp it was kept with; without a
    /// stamp nothing is kept; each answer is counted once.
    #[test]
    fn a_list_is_served_only_with_its_stamp() {
        let lists = TagLists::default();
        let (a, b) = (DirStamp::new([1, 2, 3, 4]), DirStamp::new([1, 2, 3, 5]));
        let r = repo("x/y");
        assert!(lists.get(&r, a).is_none());
        lists.keep(&r, None, &tags(3));
        assert!(lists.get(&r, a).is_none(), "kept without a stamp");
        lists.keep(&r, Some(a), &tags(3));
        assert_eq!(lists.get(&r, a).as_deref(), Some(&*tags(3)));
        assert!(lists.get(&r, b).is_none(), "served with another stamp");
        assert!(
            lists.get(&repo("x/z"), a).is_none(),
            "served for another repository"
        );
        let s = lists.stats();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!((n(&s.hits), n(&s.misses), n(&s.unstamped)), (1, 1, 1));
    }
}
