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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use regstore_core::{DirStamp, Listed, StoragePath};

/// Directories with fewer entries are read each time.
const LARGE: usize = 256;

/// How many entries the kept listings may hold together.
const BUDGET: usize = 100_000;

/// The kept listings of one driver.
#[derive(Debug, Default)]
pub(crate) struct Listings {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    by_dir: HashMap<StoragePath, Listing>,
    /// The entries of all listings together.
    entries: usize,
    /// Counts uses, to find the listing used longest ago.
    clock: u64,
    /// Listings served from here.
    hits: u64,
}

#[derive(Debug)]
struct Listing {
    stamp: DirStamp,
    children: Arc<[Listed]>,
    used: u64,
}

impl Listings {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a listing of `dir` is kept (with whatever stamp).
    pub(crate) fn holds(&self, dir: &StoragePath) -> bool {
        self.lock().by_dir.contains_key(dir)
    }

    /// The kept listing of `dir` if it was kept with `stamp`.
    pub(crate) fn get(&self, dir: &StoragePath, stamp: DirStamp) -> Option<Vec<Listed>> {
        let mut kept = self.lock();
        kept.clock += 1;
        let now = kept.clock;
        let listing = kept.by_dir.get_mut(dir).filter(|l| l.stamp == stamp)?;
        listing.used = now;
        let children = listing.children.to_vec();
        kept.hits += 1;
        Some(children)
    }

    /// How many listings were served from here.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.lock().hits
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
    /// listing was `stamp`, in place of what was kept for it; listings used
    /// longest ago make room.
    pub(crate) fn keep(&self, dir: &StoragePath, stamp: DirStamp, children: &[Listed]) {
        let n = children.len();
        if n > BUDGET {
            return;
        }
        let mut kept = self.lock();
        kept.clock += 1;
        let now = kept.clock;
        if let Some(old) = kept.by_dir.remove(dir) {
            kept.entries -= old.children.len();
        }
        while kept.entries + n > BUDGET {
            let Some(oldest) = kept
                .by_dir
                .iter()
                .min_by_key(|(_, l)| l.used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            if let Some(old) = kept.by_dir.remove(&oldest) {
                kept.entries -= old.children.len();
            }
        }
        // In walk order (siblings: the order of their paths), so the
        // walk's sort of a kept listing finds it sorted.
        let mut children = children.to_vec();
        children.sort_unstable_by(|a, b| path_of(a).cmp(path_of(b)));
        kept.entries += n;
        kept.by_dir.insert(
            dir.clone(),
            Listing {
                stamp,
                children: children.into(),
                used: now,
            },
        );
    }
}

fn path_of(l: &Listed) -> &str {
    match l {
        Listed::Path(p) => p.as_str(),
        Listed::Info(i) => i.path.as_str(),
    }
}
