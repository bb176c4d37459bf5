//! Writers: a staging file per unfinished writer, held under an exclusive
//! `flock` from `writer` until `close`, `commit` or `cancel` (see the crate
//! documentation, *One writer at a time*); `commit` renames it into place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use regstore_core::{Error, FileWriter, Result, StoragePath, async_trait};

use crate::blocking;
use crate::dirs::{Retry, flush_targets, in_dir, move_into_place, prune_empty_dirs};
use crate::fsio::{At, FsResult, is_missing, parent_of, remove_missing_ok};
use crate::layout::Layout;
use crate::sync::{Barrier, Target};

/// Writers gather small writes into a buffer of this size.
const WRITE_BUFFER: usize = 1 << 20;

/// A writer appending to its staging file.
///
/// Writes are pipelined: a full buffer goes to the file on a blocking
/// thread while the caller fills the next one (hashing, receiving), so the
/// copy into the page cache overlaps with the caller's work. At most one
/// write is in flight, so the bytes reach the file in order; a failed
/// write is reported by the next call (`write`, `close`, `commit`).
#[derive(Debug)]
struct FsWriter {
    layout: Arc<Layout>,
    path: StoragePath,
    staged: PathBuf,
    file: Arc<File>,
    /// Small writes gathered until [`WRITE_BUFFER`] bytes.
    buf: Vec<u8>,
    /// The write in flight; gives back its buffer (cleared) when done.
    pending: Option<tokio::task::JoinHandle<Result<Vec<u8>>>>,
    size: u64,
    /// The size it was resumed at; `None` for a writer opened afresh.
    resumed_at: Option<u64>,
    /// Staging directories its opening created, not flushed into their
    /// parents yet: `close` does (the staging file must survive a power
    /// cut then); `commit` need not (the file leaves them).
    unsynced_dirs: Vec<PathBuf>,
}

impl FsWriter {
    fn boxed(
        layout: Arc<Layout>,
        path: StoragePath,
        staged: PathBuf,
        file: File,
        resumed_at: Option<u64>,
        unsynced_dirs: Vec<PathBuf>,
    ) -> Box<dyn FileWriter> {
        Box::new(FsWriter {
            layout,
            path,
            staged,
            file: Arc::new(file),
            buf: Vec::new(),
            pending: None,
            size: resumed_at.unwrap_or(0),
            resumed_at,
            unsynced_dirs,
        })
    }

    /// After a failure: what this session wrote is cut off again (a fresh
    /// writer's file emptied) and the cut made durable, so the staging file
    /// is what the last close left. The error is the caller's to report;
    /// a failure here is logged.
    async fn take_back(&mut self) {
        let _ = self.settle().await;
        self.buf.clear();
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        let size = self.resumed_at.unwrap_or(0);
        let cut = blocking(move || Ok(cut(&file, &staged, size)?)).await;
        log_cut(cut, &self.path);
    }

    /// Waits for the write in flight; its buffer, if there was one.
    async fn settle(&mut self) -> Result<Option<Vec<u8>>> {
        match self.pending.take() {
            None => Ok(None),
            Some(write) => write.await.map_err(Error::backend)?.map(Some),
        }
    }

    /// Starts writing `data` once the write in flight is done.
    async fn start<B: AsRef<[u8]> + Send + 'static>(
        &mut self,
        data: B,
        give_back: impl FnOnce(B) -> Vec<u8> + Send + 'static,
    ) -> Result<Option<Vec<u8>>> {
        let spare = self.settle().await?;
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        // Where `data` goes in the file: after everything but the buffer
        // and `data` itself (`size` counts both already).
        let at = self
            .size
            .saturating_sub((self.buf.len() + data.as_ref().len()) as u64);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let bytes = data.as_ref();
            (&*file).write_all(bytes).at("write", &staged)?;
            start_writeback(&file, at, bytes.len() as u64);
            Ok(give_back(data))
        }));
        Ok(spare)
    }

    /// Starts writing the buffer out, continuing in the previous write's
    /// buffer.
    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.buf);
        let spare = self
            .start(full, |mut b| {
                b.clear();
                b
            })
            .await?;
        self.buf = spare.unwrap_or_default();
        Ok(())
    }

    /// Writes everything out and syncs it to disk, together with the
    /// entries of `dirs` (one barrier, shared with concurrent operations).
    /// With a `Volatile` barrier the file's bytes are left to the kernel's
    /// writeback; `dirs` are synced all the same.
    async fn persist(&mut self, dirs: Vec<Target>, barrier: Barrier) -> Result<()> {
        self.flush().await?;
        self.settle().await?;
        let mut targets = dirs;
        if barrier == Barrier::Durable {
            targets.push(Target::File(Arc::clone(&self.file)));
        }
        if targets.is_empty() {
            return Ok(());
        }
        let (layout, staged) = (Arc::clone(&self.layout), self.staged.clone());
        blocking(move || Ok(layout.syncer.sync(targets).at("sync", &staged)?)).await
    }

    /// `close` with `barrier`. The staging file's name must be durable
    /// too, with the names of the directories its opening created; a
    /// volatile close makes those durable (once: a resumed writer created
    /// none), so that a later durable `close` of the resumed writer, which
    /// flushes the file and its directory, leaves nothing behind.
    async fn close_with(mut self: Box<Self>, barrier: Barrier) -> Result<()> {
        let created = std::mem::take(&mut self.unsynced_dirs);
        let closed = match parent_of(&self.staged) {
            Ok(_) if barrier == Barrier::Volatile && created.is_empty() => {
                self.persist(Vec::new(), barrier).await
            }
            Ok(dir) => {
                let dirs = flush_targets(dir, &created);
                self.persist(dirs, barrier).await
            }
            Err(e) => Err(e.into()),
        };
        if closed.is_err() {
            self.take_back().await;
        }
        closed
    }
}

#[async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, mut data: Bytes) -> Result<()> {
        self.size += data.len() as u64;
        if self.buf.is_empty() && data.len() >= WRITE_BUFFER {
            // Large writes go out as they came, without a copy.
            if let Some(spare) = self.start(data, |_| Vec::new()).await? {
                self.buf = spare;
            }
            return Ok(());
        }
        // The buffer never grows past WRITE_BUFFER: a writer holds at most
        // two of them (one filling, one being written), whatever the sizes
        // of the writes.
        while !data.is_empty() {
            if self.buf.capacity() < WRITE_BUFFER {
                self.buf.reserve_exact(WRITE_BUFFER - self.buf.len());
            }
            let part = data.split_to(data.len().min(WRITE_BUFFER - self.buf.len()));
            self.buf.extend_from_slice(&part);
            if self.buf.len() == WRITE_BUFFER {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.close_with(Barrier::Durable).await
    }

    /// Without the `fsync` of the file where the driver has an epoch (see
    /// the crate documentation, *Volatile writes*).
    async fn close_volatile(self: Box<Self>) -> Result<()> {
        let barrier = self.layout.volatile();
        self.close_with(barrier).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if let Err(e) = self.persist(Vec::new(), Barrier::Durable).await {
            self.take_back().await;
            return Err(e);
        }
        let size = self.resumed_at.unwrap_or(0);
        let FsWriter {
            layout,
            path,
            staged,
            file,
            ..
        } = *self;
        blocking(move || {
            let full = layout.committed(&path);
            // The lock is held until the file is in place, so no other
            // writer can open it before it has left the staging path; and a
            // staging path that is no longer this writer's file (`delete`
            // removed it and another writer created it anew) is not moved.
            if !is_same_file(&file, &staged)? {
                return Err(Error::not_found(&path));
            }
            // An unfinished writer that `delete` removed meanwhile is not found.
            let moved = move_into_place(&layout, &staged, &full, &layout.staging, &path);
            if moved.is_err() && is_same_file(&file, &staged).unwrap_or(false) {
                // Still staged: back to what the last close left.
                log_cut(cut(&file, &staged, size), &path);
            }
            drop(file);
            moved
        })
        .await
    }

    async fn cancel(mut self: Box<Self>) -> Result<()> {
        // The file goes; a write still in flight must not outlive it.
        let _ = self.settle().await;
        let FsWriter {
            layout,
            staged,
            file,
            ..
        } = *self;
        blocking(move || {
            if is_same_file(&file, &staged)? {
                remove_missing_ok(fs::remove_file(&staged), &staged)?;
            }
            drop(file);
            if let Some(dir) = staged.parent() {
                prune_empty_dirs(&layout.staging, dir);
            }
            Ok(())
        })
        .await
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        if self.resumed_at.is_none() {
            return self.cancel().await;
        }
        let _ = self.settle().await;
        let size = self.resumed_at.unwrap_or(0);
        if self.size == size {
            // Nothing written this session (an upload's status, a request
            // refused before its body): the file is as it was opened, and
            // dropping `self` closes it, the lock with it.
            return Ok(());
        }
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        // Dropping `self` afterwards closes the file: the lock goes with it.
        blocking(move || Ok(cut(&file, &staged, size)?)).await
    }
}

/// Starts writing `len` bytes at `offset` of `file` to the disk, without
/// waiting (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`): the disk
/// works while the caller receives the next bytes, so the `fsync` of
/// `close` or `commit` waits only for the last ones instead of all of them
/// (a PATCH of 8 MiB, a blob of 512 MiB). Durability still comes from that
/// `fsync` alone; a failure here only loses the head start, so it is
/// ignored (the `fsync` reports a failed write).
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: `file` is an open descriptor for the whole call; the call
        // reads no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Cuts the staging file back to `size` bytes, durably.
fn cut(file: &File, staged: &Path, size: u64) -> FsResult<()> {
    file.set_len(size).at("truncate", staged)?;
    file.sync_data().at("sync", staged)
}

/// Logs a failed [`cut`] after a failure: the caller reports the failure.
fn log_cut<E: std::fmt::Display>(r: std::result::Result<(), E>, path: &StoragePath) {
    if let Err(e) = r {
        tracing::warn!(path = %path, error = %e, "cannot take back a failed writer session");
    }
}

/// Opens the staging file `staged` with `options` and takes its exclusive
/// writer lock (`flock`), which other processes sharing the root respect
/// too and which the kernel releases when the file is closed or its process
/// ends. `Ok(None)` if no file is there (or it was moved away or removed
/// between opening and locking: a commit or cancel of the writer that held
/// it); [`Error::Busy`] if another writer holds the lock.
fn open_locked(staged: &Path, path: &StoragePath, options: &OpenOptions) -> Result<Option<File>> {
    let file = match options.open(staged) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => return Err(e).at("open", staged).map_err(Error::from),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(Error::busy(path)),
        Err(fs::TryLockError::Error(e)) => return Err(e).at("lock", staged).map_err(Error::from),
    }
    // Locked; but the file may have left the staging path before that.
    if is_same_file(&file, staged)? {
        Ok(Some(file))
    } else {
        Ok(None)
    }
}

/// Whether `path` still names the open `file` (same device and inode).
fn is_same_file(file: &File, path: &Path) -> FsResult<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata().at("stat", path)?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e).at("stat", path),
    }
}

/// Opens (or, with `append`, resumes) the staging file of `path` and takes
/// its writer lock. Blocks: runs on a blocking thread.
pub(crate) fn open(
    layout: Arc<Layout>,
    path: StoragePath,
    append: bool,
) -> Result<Box<dyn FileWriter>> {
    let staged = layout.staged_writer(&path)?;
    if append {
        if let Some(file) = open_locked(&staged, &path, OpenOptions::new().append(true))? {
            let size = file.metadata().at("stat", &staged)?.len();
            return Ok(FsWriter::boxed(
                layout,
                path,
                staged,
                file,
                Some(size),
                Vec::new(),
            ));
        }
        let full = layout.committed(&path);
        match fs::metadata(&full) {
            Ok(m) if m.is_file() && m.len() == 0 => {}
            Ok(m) if m.is_file() => {
                return Err(Error::unsupported(format!(
                    "appending to {path}, a committed object of {} bytes",
                    m.len()
                )));
            }
            Ok(_) => return Err(Error::not_found(&path)),
            Err(e) if is_missing(&e) => return Err(Error::not_found(&path)),
            Err(e) => return Err(e).at("stat", &full).map_err(Error::from),
        }
    }
    let dir = parent_of(&staged)?;
    let mut unsynced_dirs = Vec::new();
    let mut retry = Retry::new();
    loop {
        // Created without truncating: the file may belong to a writer
        // that is still open, whose bytes only its lock may discard.
        in_dir(&layout.root, dir, &mut unsynced_dirs, || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&staged)
                .map(drop)
        })
        .at("create", &staged)?;
        if let Some(file) = open_locked(&staged, &path, OpenOptions::new().write(true))? {
            file.set_len(0).at("truncate", &staged)?;
            return Ok(FsWriter::boxed(
                layout,
                path,
                staged,
                file,
                None,
                unsynced_dirs,
            ));
        }
        // Removed between creating and locking it: create it again.
        if !retry.again() {
            return Err(Error::busy(&path));
        }
    }
}
