//! Listings of large directories kept between walks.
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
//! The stamp is taken after the listing, which is sound only because a
//! stamp is given to a directory unchanged for [`crate::STAMP_SETTLE`]:
//! an entry added or removed while the listing was read would have moved
//! the modification time to within the last moments, and the directory
//! would get no stamp, so its listing is not kept.
//!
//! Kept only where stamps exist (a local filesystem: the driver has a
//! volatile epoch), and only listings of directories: a file's size and
//! time can change without changing its directory.
//!
//! Memory: at most [`BUDGET`] entries in all (about 100 bytes each); the
//! listing used longest ago goes first.

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};

use regstore_core::{DirStamp, Listed, StampedLists, StoragePath};

/// Directories with fewer entries are read each time.
const LARGE: usize = 256;

/// How many entries the kept listings may hold together.
const BUDGET: usize = 100_000;

/// The kept listings of one driver.
#[derive(Debug)]
pub(crate) struct Listings {
    kept: StampedLists<StoragePath, Listed>,
    /// Listings served from here.
    #[cfg(test)]
    hits: AtomicU64,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            kept: StampedLists::new(BUDGET),
            #[cfg(test)]
            hits: AtomicU64::new(0),
        }
    }
}

impl Listings {
    /// Whether a listing of `dir` is kept (with whatever stamp).
    pub(crate) fn holds(&self, dir: &StoragePath) -> bool {
        self.kept.holds(dir)
    }

    /// The kept listing of `dir` if it was kept with `stamp`.
    pub(crate) fn get(&self, dir: &StoragePath, stamp: DirStamp) -> Option<Vec<Listed>> {
        let children = self.kept.get(dir, stamp)?;
        #[cfg(test)]
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(children.to_vec())
    }

    /// How many listings were served from here.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Whether `children` is a listing to keep: large, and directories
    /// only.
    pub(crate) fn worth_keeping(children: &[Listed]) -> bool {
        children.len() >= LARGE
            && children
                .iter()
                .all(|c| matches!(c, Listed::Info(i) if i.is_dir))
    }

    /// Keeps `children`, the listing of `dir` whose stamp after the
    /// listing was `stamp`, in place of what was kept for it.
    pub(crate) fn keep(&self, dir: &StoragePath, stamp: DirStamp, children: &[Listed]) {
        // In walk order (siblings: the order of their paths), so the
        // walk's sort of a kept listing finds it sorted.
        let mut children = children.to_vec();
        children.sort_unstable_by(|a, b| path_of(a).cmp(path_of(b)));
        self.kept.keep(dir, stamp, children.into());
    }
}

fn path_of(l: &Listed) -> &str {
    match l {
        Listed::Path(p) => p.as_str(),
        Listed::Info(i) => i.path.as_str(),
    }
}
