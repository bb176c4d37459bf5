//! Where things live under the root: committed objects, the staging area
//! with unfinished writers, and `put_content`'s temporary files (created,
//! flushed and published here; leftovers of a crash removed). See the crate
//! documentation (*Staging layout*).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use regstore_core::{Error, Result, StoragePath};

use crate::dirs::in_dir;
use crate::fsio::{At, FsResult};
use crate::sync::{Syncer, Target};

/// Name of the staging directory inside the root.
const STAGING: &str = "~staging";
/// Suffix of an unfinished writer's file name in the staging tree.
const WRITER_SUFFIX: &str = "~writer";
/// Prefix of `put_content` temporary files at the top of the staging area.
const PUT_PREFIX: &str = "~put.";
/// `put_content` leftovers older than this are removed at construction.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Where things live under the root, and the group commit of everything
/// flushed under it.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
    pub(crate) staging: PathBuf,
    pub(crate) syncer: Syncer,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        let staging = root.join(STAGING);
        Layout {
            root,
            staging,
            syncer: Syncer::default(),
        }
    }

    /// `base` extended by the segments of `path`.
    fn under(base: &Path, path: &StoragePath) -> PathBuf {
        let mut full = base.to_path_buf();
        full.extend(path.segments());
        full
    }

    /// The committed file (or directory) at `path`.
    pub(crate) fn committed(&self, path: &StoragePath) -> PathBuf {
        Self::under(&self.root, path)
    }

    /// The staging directory holding unfinished writers below `path`.
    pub(crate) fn staged_tree(&self, path: &StoragePath) -> PathBuf {
        Self::under(&self.staging, path)
    }

    /// The staging file of the unfinished writer at `path`.
    pub(crate) fn staged_writer(&self, path: &StoragePath) -> Result<PathBuf> {
        let leaf = path.file_name().ok_or_else(|| {
            Error::invalid_path(path.as_str(), "the root is a directory, not a file")
        })?;
        let mut staged = self.staged_tree(path);
        staged.set_file_name(format!("{leaf}{WRITER_SUFFIX}"));
        Ok(staged)
    }

    /// Creates a fresh, exclusively owned temporary file for `put_content`.
    /// Writes `content` to a new temporary file in the staging area, flushes
    /// it, and hands its path to `publish` (a rename or a link into place).
    /// The temporary name is gone afterwards, whatever happened.
    pub(crate) fn publish_temp<T>(
        &self,
        content: &[u8],
        publish: impl FnOnce(&Path) -> FsResult<T>,
    ) -> FsResult<T> {
        let (tmp, mut file) = self.create_temp()?;
        let published = (|| {
            file.write_all(content).at("write", &tmp)?;
            self.syncer
                .sync(vec![Target::File(Arc::new(file))])
                .at("sync", &tmp)?;
            publish(&tmp)
        })();
        // Renamed away already, or still there after a link or a failure.
        let _ = fs::remove_file(&tmp);
        published
    }

    fn create_temp(&self) -> FsResult<(PathBuf, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = self
                .staging
                .join(format!("{PUT_PREFIX}{}.{nanos}.{n}", std::process::id()));
            // The staging area's own entry need not be durable: the file
            // is renamed or linked away, and that destination is flushed.
            let created = in_dir(&self.root, &self.staging, &mut Vec::new(), || {
                OpenOptions::new().write(true).create_new(true).open(&tmp)
            });
            match created {
                Ok(file) => return Ok((tmp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).at("create", &tmp),
            }
        }
    }

    /// Removes `put_content` temporary files old enough to be leftovers of
    /// a crash. Best effort: failures are logged, not returned.
    pub(crate) fn remove_orphaned_puts(&self) {
        let Ok(entries) = fs::read_dir(&self.staging) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let is_put = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(PUT_PREFIX));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > ORPHAN_AGE);
            if is_put && old {
                let p = entry.path();
                match fs::remove_file(&p) {
                    Ok(()) => {
                        tracing::debug!(path = %p.display(), "removed orphaned temporary file")
                    }
                    Err(e) => {
                        tracing::debug!(path = %p.display(), error = %e, "cannot remove orphaned temporary file")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StoragePath {
        match StoragePath::parse(s) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn layout_maps_paths_and_keeps_writers_apart() -> Result<()> {
        let l = Layout::new(PathBuf::from("/r"));
        assert_eq!(l.committed(&p("/a/b")), Path::new("/r/a/b"));
        assert_eq!(l.committed(&StoragePath::root()), Path::new("/r"));
        assert_eq!(
            l.staged_writer(&p("/a/b"))?,
            Path::new("/r/~staging/a/b~writer")
        );
        assert_eq!(
            l.staged_writer(&p("/a/b/c"))?,
            Path::new("/r/~staging/a/b/c~writer")
        );
        assert_eq!(l.staged_tree(&p("/a/b")), Path::new("/r/~staging/a/b"));
        assert!(l.staged_writer(&StoragePath::root()).is_err());
        Ok(())
    }
}
