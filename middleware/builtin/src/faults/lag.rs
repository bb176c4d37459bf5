//! The `lag` option of `faults`: listings that trail the writes, as on an
//! eventually consistent object store.
//!
//! What is modelled: **list-after-write and list-after-delete lag**. For
//! `lag` after a path changes (`put_content`, a successful
//! `put_content_if_absent`, a writer's `commit`, either end of a `rename`,
//! `delete`, `delete_files`), `list`, `walk` and the answer of `stat` for a
//! *directory* show the namespace as it was before the change: a new file
//! is missing (and so is a directory that only new files make), a deleted
//! file is still listed (with the size and time it had), and a directory
//! that only deleted files made is still there. A path that keeps changing
//! shows its state from before the first change until `lag` after the last.
//!
//! What is not: `get_content`, `reader` and `stat` of a *file* answer the
//! current object at once. That is what the stores regstore runs on do:
//! S3 (since 2020), GCS and Azure are strongly consistent for reads and
//! listings; Swift answers a `GET`/`HEAD` of a new object at once but
//! updates container listings asynchronously (its driver merges the names
//! it wrote itself into its listings; another instance, or the same one
//! after a restart, does not know them). The object-store drivers answer a
//! file's `stat` with a `HEAD` and a directory's with a listing, which is
//! why only the latter lags here. Stale reads of an overwritten or deleted
//! object (S3 before 2020) are not modelled: they would need the old
//! bytes, and no store regstore supports has them any more.
//!
//! The changes are remembered in this process, per middleware: two
//! registries each with its own `faults` do not see each other's lag.
//! Under `lag`, a `list`, `walk` or directory `stat` below a recent change
//! costs a walk of the changed subtree in the inner driver: for tests.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use regstore_core::{
    Error, FileInfo, Listed, Result, StorageDriver, StoragePath, WalkControl, WalkVisitor,
};
use tokio::time::Instant;

/// A change listings do not show yet.
#[derive(Clone, Debug)]
struct Change {
    /// The last change of the path.
    at: Instant,
    /// What listings show until `at + window`: the file that was there
    /// before the first of the changes, or nothing.
    before: Option<FileInfo>,
}

/// The changes of the last `window`, by path.
#[derive(Debug)]
pub(super) struct Lag {
    window: Duration,
    changes: Mutex<BTreeMap<StoragePath, Change>>,
}

/// What a file was before a write (taken before the write, recorded after
/// it succeeds).
#[derive(Clone, Debug)]
pub(super) struct Prior(Option<FileInfo>);

impl Prior {
    /// Nothing was there.
    pub(super) const ABSENT: Prior = Prior(None);
}

impl Lag {
    /// Listings that trail changes by `window`.
    pub(super) fn new(window: Duration) -> Self {
        Lag {
            window,
            changes: Mutex::new(BTreeMap::new()),
        }
    }

    /// The file at `path` before a write to it (a directory or nothing:
    /// `None`); pass it to [`Lag::changed`] once the write succeeded.
    ///
    /// # Errors
    /// The inner `stat`'s, but not-found.
    pub(super) async fn prior(
        &self,
        inner: &dyn StorageDriver,
        path: &StoragePath,
    ) -> Result<Prior> {
        let before = Error::into_option(inner.stat(path).await)?.filter(|fi| !fi.is_dir);
        Ok(Prior(before))
    }

    /// Every file at or below `path` (what a `delete` of it removes), as
    /// priors of a delete.
    ///
    /// # Errors
    /// The inner `stat`'s or `walk`'s, but not-found.
    pub(super) async fn prior_tree(
        &self,
        inner: &dyn StorageDriver,
        path: &StoragePath,
    ) -> Result<Vec<(StoragePath, Prior)>> {
        let Some(top) = Error::into_option(inner.stat(path).await)? else {
            return Ok(Vec::new());
        };
        if !top.is_dir {
            return Ok(vec![(path.clone(), Prior(Some(top)))]);
        }
        let mut files = Vec::new();
        let walked = inner
            .walk(path, None, &mut |fi: &FileInfo| {
                if !fi.is_dir {
                    files.push((fi.path.clone(), Prior(Some(fi.clone()))));
                }
                Ok(WalkControl::Continue)
            })
            .await;
        Error::into_option(walked)?;
        Ok(files)
    }

    /// `path` changed just now; `prior` is what it was before.
    pub(super) fn changed(&self, path: &StoragePath, prior: Prior) {
        self.changed_all([(path.clone(), prior)]);
    }

    /// Each path changed just now.
    pub(super) fn changed_all(&self, changes: impl IntoIterator<Item = (StoragePath, Prior)>) {
        let now = Instant::now();
        let Ok(mut map) = self.changes.lock() else {
            return;
        };
        map.retain(|_, c| now.duration_since(c.at) < self.window);
        for (path, Prior(before)) in changes {
            // A path changed again within the window keeps showing what it
            // was before the first change.
            let before = match map.get(&path) {
                Some(c) => c.before.clone(),
                None => before,
            };
            map.insert(path, Change { at: now, before });
        }
    }

    /// The changes listings do not show yet at or below `path`.
    fn pending(&self, path: &StoragePath) -> BTreeMap<StoragePath, Change> {
        let now = Instant::now();
        let Ok(map) = self.changes.lock() else {
            return BTreeMap::new();
        };
        // Pre-order: `path`'s subtree follows it without a gap.
        map.range(path.clone()..)
            .take_while(|(p, _)| *p == path || path.is_ancestor_of(p))
            .filter(|(_, c)| now.duration_since(c.at) < self.window)
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    }

    /// `list` as the lagging listing answers it.
    ///
    /// # Errors
    /// The inner driver's; not-found when `path` (not the root) shows no
    /// child.
    pub(super) async fn list(
        &self,
        inner: &dyn StorageDriver,
        path: &StoragePath,
    ) -> Result<Vec<StoragePath>> {
        let pending = self.pending(path);
        if pending.keys().all(|p| p == path) {
            return inner.list(path).await;
        }
        let view = View::new(&pending);
        let mut children = BTreeSet::new();
        for child in Error::into_option(inner.list(path).await)?.unwrap_or_default() {
            if view.shows(inner, &child).await? {
                children.insert(child);
            }
        }
        // Deleted files still listed, and the directories they made.
        for p in view.lingering.keys() {
            if let Some(child) = child_toward(path, p) {
                children.insert(child);
            }
        }
        if children.is_empty() && !path.is_root() {
            return Err(Error::not_found(path));
        }
        Ok(children.into_iter().collect())
    }

    /// `stat` as the lagging store answers it: a file as it is now, a
    /// directory as listings show it.
    ///
    /// # Errors
    /// The inner driver's; not-found for a directory no listing shows.
    pub(super) async fn stat(
        &self,
        inner: &dyn StorageDriver,
        path: &StoragePath,
    ) -> Result<FileInfo> {
        let current = inner.stat(path).await;
        if matches!(&current, Ok(fi) if !fi.is_dir) || path.is_root() {
            return current;
        }
        let pending = self.pending(path);
        if pending.keys().all(|p| p == path) {
            return current;
        }
        let view = View::new(&pending);
        if view.lingering.keys().any(|p| path.is_ancestor_of(p)) {
            return match current {
                Ok(fi) => Ok(fi),
                Err(e) if e.is_not_found() => Ok(FileInfo::dir(path.clone(), None)),
                Err(e) => Err(e),
            };
        }
        let fi = current?;
        if view.holds_visible(inner, path).await? {
            Ok(fi)
        } else {
            Err(Error::not_found(path))
        }
    }

    /// `walk` over the lagging listing.
    ///
    /// # Errors
    /// As [`StorageDriver::walk`].
    pub(super) async fn walk(
        &self,
        inner: &dyn StorageDriver,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        if self.pending(path).is_empty() {
            return inner.walk(path, start_after, visitor).await;
        }
        regstore_core::walk_listing(inner, path, start_after, visitor, |dir| {
            Box::pin(async move {
                let pending = self.pending(&dir);
                let mut entries = Vec::new();
                for child in self.list(inner, &dir).await? {
                    let entry = match pending.get(&child) {
                        // A deleted file, still listed.
                        Some(Change {
                            before: Some(fi), ..
                        }) if Error::into_option(inner.stat(&child).await)?.is_none() => FileInfo {
                            path: child,
                            ..fi.clone()
                        },
                        _ => match Error::into_option(self.stat(inner, &child).await)? {
                            Some(fi) => fi,
                            None => continue,
                        },
                    };
                    entries.push(Listed::Info(entry));
                }
                Ok(entries.into())
            })
        })
        .await
    }
}

/// The pending changes below one directory, sorted by what listings do
/// with them.
struct View {
    /// Files written within the window that were not there before: not
    /// listed.
    new: HashSet<StoragePath>,
    /// Files changed within the window that were there before: listed
    /// (deleted or not).
    lingering: BTreeMap<StoragePath, FileInfo>,
}

impl View {
    fn new(pending: &BTreeMap<StoragePath, Change>) -> Self {
        let mut new = HashSet::new();
        let mut lingering = BTreeMap::new();
        for (p, c) in pending {
            match &c.before {
                None => {
                    new.insert(p.clone());
                }
                Some(fi) => {
                    lingering.insert(p.clone(), fi.clone());
                }
            }
        }
        View { new, lingering }
    }

    /// Whether a listing shows `child`, which the inner listing has.
    async fn shows(&self, inner: &dyn StorageDriver, child: &StoragePath) -> Result<bool> {
        let touched = self
            .new
            .iter()
            .any(|p| p == child || child.is_ancestor_of(p));
        if !touched {
            return Ok(true);
        }
        let lingers = self
            .lingering
            .keys()
            .any(|p| p == child || child.is_ancestor_of(p));
        Ok(lingers || self.holds_visible(inner, child).await?)
    }

    /// Whether the inner driver holds, at or below `path`, a file that is
    /// not new.
    async fn holds_visible(&self, inner: &dyn StorageDriver, path: &StoragePath) -> Result<bool> {
        match Error::into_option(inner.stat(path).await)? {
            None => return Ok(false),
            Some(fi) if !fi.is_dir => return Ok(!self.new.contains(path)),
            Some(_) => {}
        }
        let mut found = false;
        let walked = inner
            .walk(path, None, &mut |fi: &FileInfo| {
                if !fi.is_dir && !self.new.contains(&fi.path) {
                    found = true;
                    return Ok(WalkControl::Stop);
                }
                Ok(WalkControl::Continue)
            })
            .await;
        Error::into_option(walked)?;
        Ok(found)
    }
}

/// The child of `dir` that `below` is or lies under; `None` when `below`
/// is not below `dir`.
fn child_toward(dir: &StoragePath, below: &StoragePath) -> Option<StoragePath> {
    let mut p = below.clone();
    loop {
        let parent = p.parent()?;
        if parent == *dir {
            return Some(p);
        }
        p = parent;
    }
}
