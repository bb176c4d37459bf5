//! Writers: a staging file per unfinished writer, held under an exclusive
//! `flock` from `writer` until `close`, `commit` or `cancel` (see the crate
//! documentation, *One writer at a time*); `commit` renames it into place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use regstore_core::{Error, FileWriter, Result, StoragePath, async_trait};

use crate::blocking;
use crate::dirs::{Retry, flush_targets, in_dir, move_into_place, prune_empty_dirs};
use crate::fsio::{At, FsResult, is_missing, parent_of, remove_missing_ok};
use crate::layout::Layout;
use crate::sync::{Barrier, Target};

/// Writers gather small writes into a buffer of this size.
const WRITE_BUFFER: usize = 1 << 20;

/// How many write buffers a driver keeps for its next writers.
const POOLED_BUFFERS: usize = 16;

/// The write buffers of a driver's finished writers, kept for the next
/// ones. A buffer freshly allocated costs a page fault per 4 KiB page on
/// its first fill (glibc maps a buffer this large on its own and unmaps it
/// when freed), and a writer that lives for one request (a PATCH of an
/// upload) fills only a few: four pushes of 512 MiB in 8 MiB PATCHes cost
/// the server 96,446 page faults without the pool and 3,931 with it
/// (`perf stat -e page-faults`, tmpfs). At most [`POOLED_BUFFERS`] are
/// kept: what a driver holds idle stays at 16 MiB or below.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A buffer of [`WRITE_BUFFER`] bytes' capacity, empty: a kept one if
    /// there is one.
    fn take(pool: &Arc<BufferPool>) -> WriteBuf {
        let kept = pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        WriteBuf {
            bytes: kept.unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER)),
            pool: Arc::clone(pool),
        }
    }
}

/// A write buffer that goes back to its [`BufferPool`] when dropped.
#[derive(Debug)]
struct WriteBuf {
    bytes: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for WriteBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for WriteBuf {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        if bytes.capacity() != WRITE_BUFFER {
            return;
        }
        bytes.clear();
        let mut free = self
            .pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if free.len() < POOLED_BUFFERS {
            free.push(bytes);
        }
    }
}

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
    /// Small writes gathered until [`WRITE_BUFFER`] bytes; taken from the
    /// pool at the first small write.
    buf: Option<WriteBuf>,
    /// The write in flight; gives back its buffer (cleared), if it wrote
    /// one, when done.
    pending: Option<tokio::task::JoinHandle<Result<Option<WriteBuf>>>>,
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
            buf: None,
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
        self.buf = None;
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        let size = self.resumed_at.unwrap_or(0);
        let cut = blocking(move || Ok(cut(&file, &staged, size)?)).await;
        log_cut(cut, &self.path);
    }

    /// Waits for the write in flight; its buffer, if it wrote one.
    async fn settle(&mut self) -> Result<Option<WriteBuf>> {
        match self.pending.take() {
            None => Ok(None),
            Some(write) => write.await.map_err(Error::backend)?,
        }
    }

    /// Bytes gathered in the buffer, not written yet.
    fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.bytes.len())
    }

    /// Starts writing `data` once the write in flight is done.
    async fn start<B: AsRef<[u8]> + Send + 'static>(
        &mut self,
        data: B,
        give_back: impl FnOnce(B) -> Option<WriteBuf> + Send + 'static,
    ) -> Result<Option<WriteBuf>> {
        let spare = self.settle().await?;
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        // Where `data` goes in the file: after everything but the buffer
        // and `data` itself (`size` counts both already).
        let at = self
            .size
            .saturating_sub((self.buffered() + data.as_ref().len()) as u64);
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
        let Some(full) = self.buf.take_if(|b| !b.bytes.is_empty()) else {
            return Ok(());
        };
        self.buf = self
            .start(full, |mut b| {
                b.bytes.clear();
                Some(b)
            })
            .await?;
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
        if self.buffered() == 0 && data.len() >= WRITE_BUFFER {
            // Large writes go out as they came, without a copy.
            if let Some(spare) = self.start(data, |_| None).await? {
                self.buf = Some(spare);
            }
            return Ok(());
        }
        // The buffer never grows past WRITE_BUFFER: a writer holds at most
        // two of them (one filling, one being written), whatever the sizes
        // of the writes.
        while !data.is_empty() {
            let pool = &self.layout.buffers;
            let buf = &mut self.buf.get_or_insert_with(|| BufferPool::take(pool)).bytes;
            let part = data.split_to(data.len().min(WRITE_BUFFER - buf.len()));
            buf.extend_from_slice(&part);
            if buf.len() == WRITE_BUFFER {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(layout: &Layout) -> usize {
        layout
            .buffers
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// A new writer of `name` (an absolute path), with the path.
    async fn new_writer(layout: &Arc<Layout>, name: &str) -> (StoragePath, Box<dyn FileWriter>) {
        let path = StoragePath::parse(name).expect("a valid path");
        let (l, p) = (Arc::clone(layout), path.clone());
        let w = tokio::task::spawn_blocking(move || open(l, p, false))
            .await
            .expect("the open task")
            .expect("a writer");
        (path, w)
    }

    /// Writes `data` in pieces smaller than a buffer to a new writer of
    /// `name`, commits it, and reads the file back.
    async fn write_small(layout: &Arc<Layout>, name: &str, data: &[u8]) -> Vec<u8> {
        let (path, mut w) = new_writer(layout, name).await;
        for piece in data.chunks(1000) {
            w.write(Bytes::copy_from_slice(piece)).await.expect("write");
        }
        w.commit().await.expect("commit");
        std::fs::read(layout.committed(&path)).expect("the committed file")
    }

    #[tokio::test]
    async fn finished_writers_leave_their_buffers_to_the_next_without_their_bytes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let layout = Arc::new(Layout::new(dir.path().to_path_buf()));
        assert_eq!(pooled(&layout), 0);
        // Two buffers' worth and a bit: the writer fills two buffers (one
        // written while the other fills) and gives both back.
        let first = vec![b'a'; 2 * WRITE_BUFFER + 10];
        assert_eq!(write_small(&layout, "/a/first", &first).await, first);
        assert_eq!(pooled(&layout), 2);
        // The next writer takes a kept buffer: nothing new is allocated,
        // and none of the first writer's bytes come along.
        let second = b"second writer".to_vec();
        let (path, mut w) = new_writer(&layout, "/a/second").await;
        w.write(Bytes::from(second.clone())).await.expect("write");
        assert_eq!(pooled(&layout), 1, "the writer took a kept buffer");
        w.commit().await.expect("commit");
        assert_eq!(pooled(&layout), 2, "and gave it back");
        let read = std::fs::read(layout.committed(&path)).expect("the committed file");
        assert_eq!(read, second);
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_its_bound() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let layout = Arc::new(Layout::new(dir.path().to_path_buf()));
        let held: Vec<WriteBuf> = (0..POOLED_BUFFERS + 3)
            .map(|_| BufferPool::take(&layout.buffers))
            .collect();
        drop(held);
        assert_eq!(pooled(&layout), POOLED_BUFFERS);
    }
}
