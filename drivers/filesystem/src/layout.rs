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

use bytes::Bytes;
use regstore_core::{Error, Result, StoragePath};

use crate::dirs::{in_dir, rename_into};
use crate::fsio::{At, FsResult};
use crate::listings::Listings;
use crate::sync::{Barrier, Syncer, Target};
use crate::writer::BufferPool;

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
    /// Write buffers of finished writers, for the next ones.
    pub(crate) buffers: Arc<BufferPool>,
    /// Listings of directories kept between walks, where the filesystem
    /// gives stamps (set with the epoch) and `listingcachemb` is not 0.
    pub(crate) listings: Option<Listings>,
    /// The epoch of volatile writes (the boot id), `None` when they are
    /// durable: see [`volatile_epoch`].
    pub(crate) epoch: Option<String>,
}

impl Layout {
    /// The layout of `root`, with every write durable until
    /// [`Layout::find_epoch`] has looked at the root's filesystem.
    pub(crate) fn new(root: PathBuf) -> Self {
        let staging = root.join(STAGING);
        Layout {
            root,
            staging,
            syncer: Syncer::default(),
            buffers: Arc::default(),
            listings: None,
            epoch: None,
        }
    }

    /// Sets the epoch of volatile writes from the filesystem the root is
    /// on (see [`volatile_epoch`]), and keeps listings within `cache_mib`
    /// where it has one; call it once the root exists.
    pub(crate) fn find_epoch(&mut self, cache_mib: usize) {
        self.epoch = volatile_epoch(&self.root);
        self.listings = self
            .epoch
            .as_ref()
            .and_then(|_| Listings::within(cache_mib));
    }

    /// The barrier of a write the caller asked to be volatile: none where
    /// the driver has an epoch, the durable one elsewhere.
    pub(crate) fn volatile(&self) -> Barrier {
        match self.epoch {
            Some(_) => Barrier::Volatile,
            None => Barrier::Durable,
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

    /// Writes `content` to a new temporary file in the staging area, flushes
    /// it, and hands its path to `publish` (a link into place). The
    /// temporary name is removed afterwards, whatever happened.
    /// A `Volatile` barrier skips the flush.
    pub(crate) fn publish_temp<T>(
        &self,
        content: &[u8],
        barrier: Barrier,
        publish: impl FnOnce(&Path) -> FsResult<T>,
    ) -> FsResult<T> {
        let (tmp, mut file) = self.create_temp()?;
        let published = (|| {
            file.write_all(content).at("write", &tmp)?;
            self.syncer
                .sync_for(barrier, vec![Target::File(Arc::new(file))])
                .at("sync", &tmp)?;
            publish(&tmp)
        })();
        let _ = fs::remove_file(&tmp);
        published
    }

    /// `put_content` of each item in order (of one item: `put_content`),
    /// sharing one barrier: every item's temporary file is written and all
    /// are flushed together, then each is renamed into place in turn, its
    /// directories flushed before the next rename. So an item is visible
    /// only once the items before it are durable, and `n` items wait for
    /// `n + 1` barriers instead of `2n`. A `Volatile` barrier skips every
    /// flush. After a failure, the temporary files not renamed yet are
    /// removed; the items renamed before it stay.
    pub(crate) fn publish_temps_in_order(
        &self,
        items: &[(StoragePath, Bytes)],
        barrier: Barrier,
    ) -> FsResult<()> {
        let mut temps = Vec::with_capacity(items.len());
        let published = (|| {
            let mut files = Vec::with_capacity(items.len());
            for (_, content) in items {
                let (tmp, mut file) = self.create_temp()?;
                temps.push(tmp.clone());
                file.write_all(content).at("write", &tmp)?;
                files.push(Target::File(Arc::new(file)));
            }
            if let Some(first) = temps.first() {
                self.syncer.sync_for(barrier, files).at("sync", first)?;
            }
            for ((path, _), tmp) in items.iter().zip(&temps) {
                rename_into(self, tmp, &self.committed(path), barrier)?;
            }
            Ok(())
        })();
        if published.is_err() {
            for tmp in &temps {
                let _ = fs::remove_file(tmp);
            }
        }
        published
    }

    /// Creates a fresh, exclusively owned temporary file for `put_content`.
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

/// Filesystems (`statfs` type) that only this machine's kernel writes to,
/// so its page cache is the one truth until it restarts.
#[cfg(target_os = "linux")]
const LOCAL_FILESYSTEMS: [i64; 11] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58F6, // ramfs
    0x2FC1_2FC1, // zfs
    0xF2F5_2010, // f2fs
    0xCA45_1A4E, // bcachefs
    0x794C_7630, // overlayfs (container roots)
    0x3153_464A, // jfs
    0x5265_4973, // reiserfs
];

/// The epoch of volatile writes under `root`: the kernel's boot id when
/// `root` is on a local filesystem, so that what a volatile write left in
/// the page cache stays the truth for as long as the id holds (a process
/// crash keeps it; a machine crash changes the id). `None` — every write
/// durable — on any other filesystem (NFS, CIFS, Ceph, FUSE, GFS2, …:
/// another machine may read what this one wrote, and this machine's boot
/// id says nothing about its cache) and where the type or the boot id
/// cannot be read.
fn volatile_epoch(root: &Path) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_root = std::ffi::CString::new(root.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: `c_root` is a NUL-terminated path and `st` a buffer of
        // the size `statfs` writes.
        if unsafe { libc::statfs(c_root.as_ptr(), st.as_mut_ptr()) } != 0 {
            return None;
        }
        // `f_type` is a C long: the conversion is one only on 32-bit targets.
        // SAFETY: `statfs` succeeded, so it filled `st`.
        #[allow(clippy::useless_conversion)]
        let kind = i64::from(unsafe { st.assume_init() }.f_type);
        if !LOCAL_FILESYSTEMS.contains(&kind) {
            return None;
        }
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_owned())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        None
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
