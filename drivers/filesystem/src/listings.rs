//! Listings of directories kept between walks.
//!
//! A catalog page walks `repositories/`, and every page reads each
//! namespace directory on the way whole: on ext4 the `readdir` of an
//! indexed directory hashes every name in the kernel, and the walk then
//! builds and sorts a path per entry, before it can skip to where the page
//! starts. With 1,000 repositories in one namespace that was about 0.3 ms
//! of each page; with 100,000 it is most of a page. So the driver keeps the
//! listing of a directory of at least [`LARGE`] entries, all of them
//! directories, with the directory's stamp (see
//! [`crate::FilesystemDriver::children_stamp`]), and a walk that meets the
//! directory again uses it while a fresh stamp (one `fstat` of the open
//! directory) is the same. An entry added or removed since changes the
//! stamp, and the directory is read again.
//!
//! The children of such a large directory are what a walk then meets by
//! the thousand: the repositories of a namespace, each read only to find
//! its `_layers` and `_manifests`. Reading one costs an `openat`, two
//! `getdents64` and a `close`; so their listings are kept too (when they
//! hold directories only, however few), and checked with one `stat`
//! relative to the open parent, without opening them. A 1,000-repository
//! catalog page went from about 4,000 system calls to about 1,000.
//!
//! The stamp is taken after the listing, which is sound only because a
//! stamp is given to a directory unchanged for [`crate::STAMP_SETTLE`]:
//! an entry added or removed while the listing was read would have moved
//! the modification time to within the last moments, and the directory
//! would get no stamp, so its listing is not kept.
//!
//! Kept only where stamps exist (a local filesystem: the driver has a
//! volatile epoch), and only listings of directories, as their entries'
//! own types say: a file's size and time can change without changing its
//! directory (a directory's entry carries neither), and so can where a
//! symbolic link points.
//!
//! Memory: a listing is kept as its names alone (equal listings kept one
//! after the other share them), and costs its key and bookkeeping besides
//! (about 240 bytes). The budget counts a name as [`NAME_BYTES`] and a
//! listing as [`LIST_COST`] names more, so that it bounds the memory (the
//! `listingcachemb` parameter, [`DEFAULT_MIB`] by default); the listing used
//! longest ago goes first. 100,000 repositories of three entries each in
//! one namespace take about 1,000,000 names' worth: 40 MiB.

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::{Arc, Mutex, PoisonError};

use regstore_core::{DirStamp, Listed, StampedLists, StoragePath};

/// Directories with fewer entries are kept only as children of a larger
/// one.
pub(crate) const LARGE: usize = 256;

/// The memory a kept name is counted as: its `Box<str>` and a short
/// name's allocation.
pub(crate) const NAME_BYTES: usize = 40;

/// What a kept listing costs beyond its names, in names: its path twice
/// (the key, and in the index by use) and its entry.
const LIST_COST: usize = 6;

/// The `listingcachemb` default: the repository directories of 100,000
/// repositories in one namespace (two or three names each) and the
/// namespace's listing fit.
pub(crate) const DEFAULT_MIB: usize = 48;

/// The kept listings of one driver.
#[derive(Debug)]
pub(crate) struct Listings {
    kept: StampedLists<StoragePath, Box<str>>,
    /// The listing kept last: the next one, if equal, shares its names
    /// (the repositories of a namespace nearly all hold the same two or
    /// three).
    last: Mutex<Option<Arc<[Box<str>]>>>,
    /// Listings served from here.
    #[cfg(test)]
    hits: AtomicU64,
}

impl Listings {
    /// Listings kept within about `mib` MiB; `None` for 0 (none kept).
    pub(crate) fn within(mib: usize) -> Option<Listings> {
        let names = mib.saturating_mul(1 << 20) / NAME_BYTES;
        (names > 0).then(|| Listings {
            kept: StampedLists::new(names).with_list_cost(LIST_COST),
            last: Mutex::new(None),
            #[cfg(test)]
            hits: AtomicU64::new(0),
        })
    }

    /// Whether a listing of `dir` is kept (with whatever stamp).
    pub(crate) fn holds(&self, dir: &StoragePath) -> bool {
        self.kept.holds(dir)
    }

    /// The kept listing of `dir` if it was kept with `stamp`: its
    /// children's names, all directories, sorted.
    pub(crate) fn get(&self, dir: &StoragePath, stamp: DirStamp) -> Option<Arc<[Box<str>]>> {
        let names = self.kept.get(dir, stamp)?;
        #[cfg(test)]
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(names)
    }

    /// How many listings were served from here.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Whether a listing of `entries` entries is one to keep: directories
    /// only, as the entries' own types say (`dirents_only`), and large or
    /// (not empty and) the listing of a child of a large directory.
    pub(crate) fn worth_keeping(entries: usize, dirents_only: bool, parent_large: bool) -> bool {
        dirents_only && (entries >= LARGE || parent_large && entries > 0)
    }

    /// Keeps `children`, the listing of `dir` whose stamp after the
    /// listing was `stamp`, in place of what was kept for it.
    pub(crate) fn keep(&self, dir: &StoragePath, stamp: DirStamp, children: &[Listed]) {
        // In walk order (siblings: the byte order of their names), as
        // `Children::SortedDirs` has them.
        let mut names: Vec<Box<str>> = children
            .iter()
            .filter_map(|c| c.path().file_name())
            .map(Box::from)
            .collect();
        names.sort_unstable();
        let names = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            match &*last {
                Some(l) if **l == *names => Arc::clone(l),
                _ => {
                    let names: Arc<[Box<str>]> = names.into();
                    *last = Some(Arc::clone(&names));
                    names
                }
            }
        };
        self.kept.keep(dir, stamp, names);
    }
}
