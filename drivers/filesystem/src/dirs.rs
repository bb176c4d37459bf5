//! Directories: creating them (their entries flushed into their parents
//! together with what is stored in them), renaming and linking files into
//! place through them, and pruning the ones left empty — all while other
//! operations on the same root remove empty directories concurrently. Owns
//! the retry that wins those races; knows nothing of the staging layout.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regstore_core::{Error, Result, StoragePath};

use crate::fsio::{At, FsResult, exists, parent_of};
use crate::layout::Layout;
use crate::sync::{Barrier, Target};

/// How long an operation keeps retrying when a directory it needs is
/// removed by a concurrent clean-up between creating it and using it. Each
/// clean-up removes only empty directories, so a creator that keeps trying
/// wins; many writers committing in one directory at once (16 uploads into
/// one repository) can make it lose dozens of times in a row.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Retries of an operation racing with directory clean-up: as many as fit
/// in [`RETRY_FOR`], backing off a little after the first few.
pub(crate) struct Retry {
    attempt: u32,
    started: std::time::Instant,
}

impl Retry {
    pub(crate) fn new() -> Self {
        Retry {
            attempt: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Whether to try again (after a short pause once it has lost a few times).
    pub(crate) fn again(&mut self) -> bool {
        self.attempt += 1;
        if self.started.elapsed() > RETRY_FOR {
            return false;
        }
        if self.attempt > 4 {
            std::thread::sleep(Duration::from_micros(50 * u64::from(self.attempt.min(40))));
        }
        true
    }
}

/// Runs `op`, which creates something directly in `dir`; when it fails
/// because `dir` is missing (never created, or removed by a concurrent
/// clean-up), creates `dir` and tries again. The directories it creates are
/// added to `created`, not flushed: see [`flush_targets`].
pub(crate) fn in_dir<T>(
    root: &Path,
    dir: &Path,
    created: &mut Vec<PathBuf>,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut retry = Retry::new();
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry.again() => {
                make_dirs(root, dir, created)?;
            }
            other => return other,
        }
    }
}

/// What makes a new entry in `dir` durable, with the directories created
/// on the way to it (see [`make_dirs`]): `dir` itself and the parent of
/// each created directory, each once.
pub(crate) fn flush_targets(dir: &Path, created: &[PathBuf]) -> Vec<Target> {
    let mut dirs: BTreeSet<&Path> = created.iter().filter_map(|d| d.parent()).collect();
    dirs.insert(dir);
    dirs.into_iter()
        .map(|d| Target::Dir(d.to_path_buf()))
        .collect()
}

/// Renames `src` over `dst`, creating `dst`'s directories as needed, then
/// flushes `dst`'s directory and the parents of the directories it created
/// (one barrier, shared with concurrent operations; none if `barrier` is
/// `Volatile`). A missing `src` comes back as a `NotFound` error.
pub(crate) fn rename_into(l: &Layout, src: &Path, dst: &Path, barrier: Barrier) -> FsResult<()> {
    let dir = parent_of(dst)?;
    let mut created = Vec::new();
    let mut retry = Retry::new();
    loop {
        match fs::rename(src, dst) {
            Ok(()) => {
                return l
                    .syncer
                    .sync_for(barrier, flush_targets(dir, &created))
                    .at("sync directories of", dst);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry.again() => {
                if !exists(src)? {
                    return Err(e).at("rename", src);
                }
                make_dirs(&l.root, dir, &mut created).at("create directory", dir)?;
            }
            Err(e) => return Err(e).at("rename", dst),
        }
    }
}

/// Hard-links `src` as `dst` (creating directories) unless `dst` exists:
/// `false` then. The new entry is flushed as [`rename_into`] flushes.
pub(crate) fn link_into(l: &Layout, src: &Path, dst: &Path, barrier: Barrier) -> FsResult<bool> {
    let dir = parent_of(dst)?;
    let mut created = Vec::new();
    let mut retry = Retry::new();
    loop {
        match fs::hard_link(src, dst) {
            Ok(()) => {
                return l
                    .syncer
                    .sync_for(barrier, flush_targets(dir, &created))
                    .at("sync directories of", dst)
                    .map(|()| true);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry.again() => {
                make_dirs(&l.root, dir, &mut created).at("create directory", dir)?;
            }
            Err(e) => return Err(e).at("link", dst),
        }
    }
}

/// Renames `src` over `dst` (see [`rename_into`]), then removes the
/// directories below `prune_top` that the move left empty. A `src` that
/// vanished before the rename is `PathNotFound` for `path`.
pub(crate) fn move_into_place(
    l: &Layout,
    src: &Path,
    dst: &Path,
    prune_top: &Path,
    path: &StoragePath,
) -> Result<()> {
    match rename_into(l, src, dst, Barrier::Durable) {
        Ok(()) => {}
        Err(e) if e.is_missing() && !exists(src)? => return Err(Error::not_found(path)),
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = src.parent() {
        prune_empty_dirs(prune_top, dir);
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors (the root included), adding each
/// one it created to `created`, unflushed: the caller flushes them (see
/// [`flush_targets`]) once something is stored in them, and a concurrent
/// clean-up that removes them empty before that makes the caller's store
/// fail with `NotFound` and create them again.
fn make_dirs(root: &Path, dir: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut retry = Retry::new();
    while retry.again() {
        // The missing directories, deepest first.
        let mut missing = Vec::new();
        let mut cur = dir;
        loop {
            match fs::metadata(cur) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is a file, not a directory", cur.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && cur.starts_with(root) => {
                    missing.push(cur);
                    if cur == root {
                        break;
                    }
                    cur = cur.parent().unwrap_or(root);
                }
                Err(e) => return Err(e),
            }
        }
        let mut vanished = false;
        for d in missing.iter().rev() {
            if *d == root {
                fs::create_dir_all(d)?;
                continue;
            }
            match fs::create_dir(d) {
                Ok(()) => created.push(d.to_path_buf()),
                // Created concurrently; if it is a file, the caller fails.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                // A parent was pruned half-way: start over.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    vanished = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !vanished {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "{} kept vanishing while being created",
        dir.display()
    )))
}

/// Removes `start` and its ancestors while they are empty, stopping below
/// `stop` (which is kept). Best effort: a directory that is not empty, or
/// cannot be removed, ends it.
pub(crate) fn prune_empty_dirs(stop: &Path, start: &Path) {
    let mut cur = start;
    while cur != stop && cur.starts_with(stop) {
        match fs::remove_dir(cur) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return,
        }
        match cur.parent() {
            Some(p) => cur = p,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_stops_at_non_empty_and_keeps_stop() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        fs::create_dir_all(root.join("a/b/c"))?;
        fs::write(root.join("a/keep"), b"x")?;
        prune_empty_dirs(root, &root.join("a/b/c"));
        assert!(!root.join("a/b").exists());
        assert!(root.join("a/keep").exists());
        fs::create_dir_all(root.join("x/y"))?;
        prune_empty_dirs(root, &root.join("x/y"));
        assert!(!root.join("x").exists());
        assert!(root.exists());
        Ok(())
    }
}
