//! `filesystem`: objects stored as files under a local root directory.
//!
//! A storage path `/a/b` is the file `<root>/a/b`: the same layout as
//! docker/distribution's `filesystem` driver, so a root directory written by
//! one can be served by the other (see *Compatibility* below).
//!
//! # Parameters
//!
//! | name            | default             | meaning |
//! |-----------------|---------------------|---------|
//! | `rootdirectory` | `/var/lib/registry` | Directory under which everything is stored; created if missing. A relative path is resolved against the working directory at start-up. |
//! | `maxthreads`    | `100`               | Most filesystem operations running at once (each holds a blocking thread). At least 25, as in distribution; less is a configuration error. |
//!
//! The same driver is built by hand with [`FilesystemDriver::new`] and
//! [`FilesystemDriver::with_max_threads`].
//!
//! # Atomicity and durability
//!
//! "Atomic" means: a reader opening the path sees either the complete old
//! object or the complete new one, never a mix or a prefix, even when the
//! process or the machine dies half-way. `put_content` and a writer's
//! `commit` therefore never write in place: the bytes go to a file in the
//! staging area, are flushed to disk (`fsync`), and the file is then
//! `rename`d over the destination — which POSIX makes atomic — and the
//! destination's directory is flushed so that the rename itself survives a
//! crash. Directories created on the way are flushed into their parents as
//! well. A reader that opened the old file keeps reading the old bytes to
//! the end.
//!
//! # Staging layout
//!
//! Everything that is not (yet) a committed object lives below
//! `<root>/~staging/`. `~` is not allowed in a path segment, so nothing
//! there can collide with a storage path, and [`StorageDriver::list`] never
//! shows it (list shows only names that are valid segments).
//!
//! - Unfinished writers: the writer for `/a/b` writes
//!   `<root>/~staging/a/b~writer`. The `~writer` suffix keeps a writer at
//!   `/a/b` apart from writers below it (`<root>/~staging/a/b/c~writer`).
//!   A closed writer's file stays there, so `writer(path, true)` — in this
//!   process or in a new one over the same root — resumes it; `commit`
//!   renames it to `<root>/a/b`; `cancel` and `delete` remove it.
//!   Directories of `~staging` left empty are removed again.
//!
//! # One writer at a time
//!
//! A writer holds an exclusive `flock` on its staging file from `writer`
//! until `close`, `commit` or `cancel` returns (or its process ends: the
//! kernel drops the lock with the file). A second `writer` for the same
//! path, in this process or another over the same root, fails with
//! [`Error::Busy`] instead of writing into the same file. `commit` keeps the
//! lock until the file has been renamed into place, so no writer can ever
//! hold a committed object open: once published, its bytes are final. (The
//! registry relies on this: a request still sending an upload's bytes cannot
//! change a blob that another request has verified and published.) Over
//! NFS, Linux maps `flock` to NFS byte-range locks, which need the lock
//! manager the server offers.
//! - `put_content` temporary files: `<root>/~staging/~put.<pid>.<time>.<n>`,
//!   created exclusively (so processes sharing the root never share one)
//!   and renamed away at once. Leftovers of a crash older than an hour are
//!   removed when a driver is constructed over the root.
//!
//! # Directories
//!
//! Directories are implicit in the contract: one exists while something is
//! stored below it. The driver creates directories as files are stored and
//! removes directories that `delete` or `rename` leave empty (up to, not
//! including, the root), so listing a parent never shows an empty directory.
//! `/` always exists, even before the root directory has been created.
//!
//! # Compatibility with distribution
//!
//! Committed objects are plain files at the same paths as distribution's,
//! with the same permissions (`0666`/`0777` before the umask), so either
//! program can read what the other committed, and distribution's
//! repositories, blobs and uploads live below `/docker/registry/v2` where
//! `~staging` never appears. Two differences: distribution writes uploads in
//! place at their final path (visible before commit), while this driver
//! stages them, so an upload *in progress* cannot be handed from one program
//! to the other; and distribution would show the `~staging` directory if
//! asked to list `/`, which the registry never does.

#![warn(missing_docs)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use regstore_core::{
    BuildFuture, ByteStream, Capabilities, DriverFactory, Error, FileInfo, FileWriter, Listed,
    ParamKind, ParamSpec, Params, Result, StorageDriver, StoragePath, WalkVisitor, async_trait,
    check_segment,
};

/// Registry name of the driver.
pub const NAME: &str = "filesystem";
/// Root directory when `rootdirectory` is not given (distribution's default).
pub const DEFAULT_ROOT_DIRECTORY: &str = "/var/lib/registry";
/// `maxthreads` when not given (distribution's default).
pub const DEFAULT_MAX_THREADS: usize = 100;
/// The smallest `maxthreads` accepted (distribution's minimum).
pub const MIN_MAX_THREADS: usize = 25;

/// Name of the staging directory inside the root.
const STAGING: &str = "~staging";
/// Suffix of an unfinished writer's file name in the staging tree.
const WRITER_SUFFIX: &str = "~writer";
/// Prefix of `put_content` temporary files at the top of the staging area.
const PUT_PREFIX: &str = "~put.";
/// `put_content` leftovers older than this are removed at construction.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// Largest chunk a reader stream yields.
const READ_CHUNK: usize = 1 << 20;
/// Writers gather small writes into a buffer of this size.
const WRITE_BUFFER: usize = 1 << 20;
/// How long an operation keeps retrying when a directory it needs is
/// removed by a concurrent clean-up between creating it and using it. Each
/// clean-up removes only empty directories, so a creator that keeps trying
/// wins; many writers committing in one directory at once (16 uploads into
/// one repository) can make it lose dozens of times in a row.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Retries of an operation racing with directory clean-up: as many as fit
/// in [`RETRY_FOR`], backing off a little after the first few.
struct Retry {
    attempt: u32,
    started: std::time::Instant,
}

impl Retry {
    fn new() -> Self {
        Retry {
            attempt: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Whether to try again (after a short pause once it has lost a few times).
    fn again(&mut self) -> bool {
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

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "rootdirectory",
        ParamKind::String,
        "Directory under which everything is stored (created if missing)",
    )
    .default(DEFAULT_ROOT_DIRECTORY),
    ParamSpec::new(
        "maxthreads",
        ParamKind::Integer,
        "Most filesystem operations running at once (at least 25)",
    )
    .default("100"),
];

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: NAME,
    description: "Files under a local directory, in docker/distribution's layout.",
    params: PARAMS,
    build,
};

/// Makes this driver known by name to `regstore_core::create` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_driver(&FACTORY);
}

fn build(params: Params) -> BuildFuture {
    Box::pin(async move {
        let root = params
            .string("rootdirectory")
            .unwrap_or(DEFAULT_ROOT_DIRECTORY);
        if root.is_empty() {
            return Err(Error::config(
                "parameter \"rootdirectory\" must not be empty",
            ));
        }
        let threads = params
            .integer("maxthreads")
            .unwrap_or(DEFAULT_MAX_THREADS as i64);
        let threads = checked_max_threads(threads)?;
        let root = PathBuf::from(root);
        // Creating the root touches the disk: keep it off the async workers.
        let driver = blocking(move || FilesystemDriver::new(root)).await?;
        Ok(Box::new(driver.with_max_threads(threads)?) as Box<dyn StorageDriver>)
    })
}

fn checked_max_threads(n: i64) -> Result<usize> {
    match usize::try_from(n) {
        Ok(n) if n >= MIN_MAX_THREADS => Ok(n),
        _ => Err(Error::config(format!(
            "parameter \"maxthreads\" must be at least {MIN_MAX_THREADS}, got {n}"
        ))),
    }
}

/// A storage driver on a local directory tree; see the crate documentation
/// for the layout and guarantees. Cheap to clone (clones share the root).
#[derive(Clone, Debug)]
pub struct FilesystemDriver {
    layout: Arc<Layout>,
    max_threads: usize,
}

impl FilesystemDriver {
    /// A driver storing everything under `root`, with `maxthreads` at its
    /// default (100). Creates `root` (and its staging area) if missing, and
    /// removes `put_content` temporary files a crash left behind.
    ///
    /// A relative `root` is made absolute against the current directory now,
    /// so a later change of directory does not move the store.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty path; [`Error::Backend`] when the
    /// directories cannot be created (permissions, a file in the way).
    pub fn new<P: Into<PathBuf>>(root: P) -> Result<Self> {
        let root: PathBuf = root.into();
        if root.as_os_str().is_empty() {
            return Err(Error::config("the root directory must not be empty"));
        }
        let root = std::path::absolute(&root).at("resolve root directory", &root)?;
        let layout = Layout::new(root);
        fs::create_dir_all(&layout.root).at("create root directory", &layout.root)?;
        fs::create_dir_all(&layout.staging).at("create staging directory", &layout.staging)?;
        layout.remove_orphaned_puts();
        Ok(FilesystemDriver {
            layout: Arc::new(layout),
            max_threads: DEFAULT_MAX_THREADS,
        })
    }

    /// The same driver with at most `n` operations running at once (the
    /// `maxthreads` parameter, reported as
    /// [`StorageDriver::concurrency_limit`]).
    ///
    /// # Errors
    /// [`Error::Config`] when `n` is below 25.
    pub fn with_max_threads(mut self, n: usize) -> Result<Self> {
        self.max_threads = checked_max_threads(i64::try_from(n).unwrap_or(i64::MAX))?;
        Ok(self)
    }

    /// The (absolute) root directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// The `maxthreads` in force.
    pub fn max_threads(&self) -> usize {
        self.max_threads
    }

    /// The committed children of `dir` with what `stat` would say of each
    /// (names that are not valid segments, such as `~staging`, are hidden;
    /// entries removed meanwhile are left out).
    async fn read_dir_infos(&self, dir: StoragePath) -> Result<Vec<Listed>> {
        self.run(move |l| {
            let mut children = Vec::new();
            for (child, entry) in valid_entries(l, &dir)? {
                // Follows symlinks, as `stat` does.
                let meta = match fs::metadata(entry.path()) {
                    Ok(m) => m,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(e).at("stat", &entry.path()).map_err(Error::from),
                };
                let mtime = meta.modified().at("modification time of", &entry.path())?;
                if meta.is_dir() {
                    children.push(Listed::Info(FileInfo::dir(child, Some(mtime))));
                } else if meta.is_file() {
                    children.push(Listed::Info(FileInfo::file(child, meta.len(), mtime)));
                }
            }
            Ok(children)
        })
        .await
    }

    /// Runs `f` with the layout on a blocking thread.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Layout) -> Result<T> + Send + 'static,
    {
        let layout = Arc::clone(&self.layout);
        blocking(move || f(&layout)).await
    }
}

/// The entries of committed directory `dir` whose names are valid path
/// segments (this hides `~staging` and anything foreign), with their paths.
fn valid_entries(l: &Layout, dir: &StoragePath) -> Result<Vec<(StoragePath, fs::DirEntry)>> {
    let full = l.committed(dir);
    let entries = match fs::read_dir(&full) {
        Ok(rd) => rd,
        Err(e) if is_missing(&e) && dir.is_root() => return Ok(Vec::new()),
        Err(e) if is_missing(&e) => return Err(Error::not_found(dir)),
        Err(e) => return Err(e).at("list", &full).map_err(Error::from),
    };
    let mut children = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            // The directory was removed while being listed.
            Err(e) if is_missing(&e) => return Err(Error::not_found(dir)),
            Err(e) => return Err(e).at("list", &full).map_err(Error::from),
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if check_segment(name).is_ok() {
            children.push((dir.join(name)?, entry));
        }
    }
    Ok(children)
}

/// Runs blocking filesystem work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::backend)?
}

#[async_trait]
impl StorageDriver for FilesystemDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_create_if_absent(true)
    }

    fn concurrency_limit(&self) -> Option<usize> {
        Some(self.max_threads)
    }

    /// Reads the whole file in one blocking call.
    ///
    /// Errors: `PathNotFound` when nothing (or a directory) is at `path`.
    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            let (file, len) = open_regular(&full, &path)?;
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            (&file).take(len).read_to_end(&mut buf).at("read", &full)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    /// Writes a temporary file in the staging area, flushes it, renames it
    /// over the destination (creating directories) and flushes the
    /// destination directory.
    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            Ok(l.publish_temp(&content, |tmp| rename_into(&l.root, tmp, &full))?)
        })
        .await
    }

    /// Like `put_content`, but publishes the flushed temporary file with a
    /// hard link instead of a rename: `link` fails when the name exists,
    /// atomically, also between processes.
    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            Ok(l.publish_temp(&content, |tmp| link_into(&l.root, tmp, &full))?)
        })
        .await
    }

    /// Streams the file in chunks of up to 1 MiB, each read on a blocking
    /// thread; the first chunk is read together with opening the file.
    ///
    /// Errors: `PathNotFound` when nothing (or a directory) is at `path`,
    /// `InvalidOffset` when `offset` lies past the end.
    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        let path = path.clone();
        let state = self
            .run(move |l| {
                let full = l.committed(&path);
                let (mut file, len) = open_regular(&full, &path)?;
                if offset > len {
                    return Err(Error::invalid_offset(&path, offset));
                }
                if offset > 0 {
                    file.seek(SeekFrom::Start(offset)).at("seek", &full)?;
                }
                let mut state = ReadState {
                    file: Some(file),
                    pending: None,
                    remaining: len - offset,
                    full,
                };
                let first = state.read_chunk()?;
                state.pending = Some(first);
                Ok(state)
            })
            .await?;
        Ok(Box::pin(futures_util::stream::unfold(state, next_chunk)))
    }

    /// Opens the staging file of `path` and takes its writer lock; see the
    /// crate documentation (*One writer at a time*).
    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let path = path.clone();
        let layout = Arc::clone(&self.layout);
        self.run(move |l| {
            let staged = l.staged_writer(&path)?;
            if append {
                if let Some(file) = open_locked(&staged, &path, OpenOptions::new().append(true))? {
                    let size = file.metadata().at("stat", &staged)?.len();
                    return Ok(FsWriter::boxed(layout, path, staged, file, size));
                }
                let full = l.committed(&path);
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
            let mut retry = Retry::new();
            loop {
                // Created without truncating: the file may belong to a writer
                // that is still open, whose bytes only its lock may discard.
                in_dir(&l.root, dir, || {
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
                    return Ok(FsWriter::boxed(layout, path, staged, file, 0));
                }
                // Removed between creating and locking it: create it again.
                if !retry.again() {
                    return Err(Error::busy(&path));
                }
            }
        })
        .await
    }

    /// Files report their size and modification time, directories their
    /// modification time; `/` is a directory even before the root exists.
    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            let meta = match fs::metadata(&full) {
                Ok(m) => m,
                Err(e) if is_missing(&e) && path.is_root() => {
                    return Ok(FileInfo::dir(path, None));
                }
                Err(e) if is_missing(&e) => return Err(Error::not_found(&path)),
                Err(e) => return Err(e).at("stat", &full).map_err(Error::from),
            };
            let mtime = meta.modified().at("modification time of", &full)?;
            if meta.is_dir() {
                Ok(FileInfo::dir(path, Some(mtime)))
            } else if meta.is_file() && !path.is_root() {
                Ok(FileInfo::file(path, meta.len(), mtime))
            } else {
                Err(Error::not_found(&path))
            }
        })
        .await
    }

    /// Entries of the directory whose names are valid path segments (this
    /// hides `~staging` and anything foreign).
    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        let path = path.clone();
        self.run(move |l| {
            Ok(valid_entries(l, &path)?
                .into_iter()
                .map(|(child, _)| child)
                .collect())
        })
        .await
    }

    /// One `readdir` per directory, each entry's kind, size and time taken
    /// from it in the same blocking call: no `stat` per entry.
    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        regstore_core::walk_listing(self, path, start_after, visitor, |dir| {
            Box::pin(self.read_dir_infos(dir))
        })
        .await
    }

    /// `rename(2)`, creating the destination's directories, then removes
    /// directories the move left empty.
    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.run(move |l| {
            let (src, dst) = (l.committed(&from), l.committed(&to));
            match fs::symlink_metadata(&src) {
                Ok(_) => {}
                Err(e) if is_missing(&e) => return Err(Error::not_found(&from)),
                Err(e) => return Err(e).at("stat", &src).map_err(Error::from),
            }
            // A source moved or deleted by someone else meanwhile is not found.
            move_into_place(&l.root, &src, &dst, &l.root, &from)
        })
        .await
    }

    /// Removes the file or directory tree, the unfinished writers at and
    /// below `path`, and directories left empty.
    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            let found = match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => remove_missing_ok(fs::remove_dir_all(&full), &full)?,
                Ok(_) => remove_missing_ok(fs::remove_file(&full), &full)?,
                Err(e) if is_missing(&e) => false,
                Err(e) => return Err(e).at("stat", &full).map_err(Error::from),
            };
            let tree = l.staged_tree(&path);
            remove_missing_ok(fs::remove_dir_all(&tree), &tree)?;
            let writer = l.staged_writer(&path)?;
            remove_missing_ok(fs::remove_file(&writer), &writer)?;
            if let Some(dir) = writer.parent() {
                prune_empty_dirs(&l.staging, dir);
            }
            if !found {
                return Err(Error::not_found(&path));
            }
            if let Some(dir) = full.parent() {
                prune_empty_dirs(&l.root, dir);
            }
            Ok(())
        })
        .await
    }
}

/// Where things live under the root.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    staging: PathBuf,
}

impl Layout {
    fn new(root: PathBuf) -> Self {
        let staging = root.join(STAGING);
        Layout { root, staging }
    }

    /// `base` extended by the segments of `path`.
    fn under(base: &Path, path: &StoragePath) -> PathBuf {
        let mut full = base.to_path_buf();
        full.extend(path.segments());
        full
    }

    /// The committed file (or directory) at `path`.
    fn committed(&self, path: &StoragePath) -> PathBuf {
        Self::under(&self.root, path)
    }

    /// The staging directory holding unfinished writers below `path`.
    fn staged_tree(&self, path: &StoragePath) -> PathBuf {
        Self::under(&self.staging, path)
    }

    /// The staging file of the unfinished writer at `path`.
    fn staged_writer(&self, path: &StoragePath) -> Result<PathBuf> {
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
    fn publish_temp<T>(
        &self,
        content: &[u8],
        publish: impl FnOnce(&Path) -> FsResult<T>,
    ) -> FsResult<T> {
        let (tmp, mut file) = self.create_temp()?;
        let published = (|| {
            file.write_all(content).at("write", &tmp)?;
            file.sync_all().at("sync", &tmp)?;
            drop(file);
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
            let created = in_dir(&self.root, &self.staging, || {
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
    fn remove_orphaned_puts(&self) {
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

/// State of a reader stream.
struct ReadState {
    /// `None` once the stream failed.
    file: Option<File>,
    /// A chunk read ahead, yielded next.
    pending: Option<Bytes>,
    /// Bytes still to read.
    remaining: u64,
    full: PathBuf,
}

impl ReadState {
    /// Reads the next chunk (empty when nothing remains).
    fn read_chunk(&mut self) -> Result<Bytes> {
        let Some(file) = &self.file else {
            return Ok(Bytes::new());
        };
        let want = self.remaining.min(READ_CHUNK as u64);
        if want == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want)
            .read_to_end(&mut buf)
            .at("read", &self.full)?;
        if buf.is_empty() {
            return Err(Error::backend(format!(
                "{} ended {} bytes early (truncated by someone else?)",
                self.full.display(),
                self.remaining
            )));
        }
        self.remaining -= buf.len() as u64;
        Ok(Bytes::from(buf))
    }
}

async fn next_chunk(mut state: ReadState) -> Option<(Result<Bytes>, ReadState)> {
    if let Some(chunk) = state.pending.take().filter(|c| !c.is_empty()) {
        return Some((Ok(chunk), state));
    }
    if state.remaining == 0 || state.file.is_none() {
        return None;
    }
    let joined = tokio::task::spawn_blocking(move || {
        let chunk = state.read_chunk();
        (chunk, state)
    })
    .await;
    match joined {
        Ok((Ok(chunk), state)) => Some((Ok(chunk), state)),
        Ok((Err(e), mut state)) => {
            state.file = None;
            Some((Err(e), state))
        }
        // The state went down with the task: end after reporting.
        Err(e) => Some((
            Err(Error::backend(e)),
            ReadState {
                file: None,
                pending: None,
                remaining: 0,
                full: PathBuf::new(),
            },
        )),
    }
}

/// A writer appending to its staging file.
#[derive(Debug)]
struct FsWriter {
    layout: Arc<Layout>,
    path: StoragePath,
    staged: PathBuf,
    file: Arc<File>,
    /// Small writes gathered until [`WRITE_BUFFER`] bytes.
    buf: Vec<u8>,
    size: u64,
}

impl FsWriter {
    fn boxed(
        layout: Arc<Layout>,
        path: StoragePath,
        staged: PathBuf,
        file: File,
        size: u64,
    ) -> Box<dyn FileWriter> {
        Box::new(FsWriter {
            layout,
            path,
            staged,
            file: Arc::new(file),
            buf: Vec::new(),
            size,
        })
    }

    /// Writes the buffer out (keeping its allocation).
    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        self.buf = blocking(move || {
            (&*file).write_all(&buf).at("write", &staged)?;
            buf.clear();
            Ok(buf)
        })
        .await?;
        Ok(())
    }

    /// Flushes and syncs everything written to disk.
    async fn persist(&mut self) -> Result<()> {
        self.flush().await?;
        let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
        blocking(move || Ok(file.sync_all().at("sync", &staged)?)).await
    }
}

#[async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.size += data.len() as u64;
        if self.buf.is_empty() && data.len() >= WRITE_BUFFER {
            // Large writes go out as they came, without a copy.
            let (file, staged) = (Arc::clone(&self.file), self.staged.clone());
            return blocking(move || Ok((&*file).write_all(&data).at("write", &staged)?)).await;
        }
        self.buf.extend_from_slice(&data);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.persist().await?;
        let staged = self.staged.clone();
        blocking(move || {
            // Make the staging file's name durable too.
            let dir = parent_of(&staged)?;
            Ok(sync_dir(dir).at("sync directory", dir)?)
        })
        .await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.persist().await?;
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
            let moved = move_into_place(&layout.root, &staged, &full, &layout.staging, &path);
            drop(file);
            moved
        })
        .await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
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
}

/// An I/O error with the step that failed and the file it failed on.
#[derive(Debug)]
struct FsError {
    step: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl FsError {
    fn is_missing(&self) -> bool {
        is_missing(&self.source)
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.step, self.path.display(), self.source)
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<FsError> for Error {
    fn from(e: FsError) -> Self {
        Error::backend(e)
    }
}

type FsResult<T> = std::result::Result<T, FsError>;

/// Attaches the step and file to an I/O error.
trait At<T> {
    fn at(self, step: &'static str, path: &Path) -> FsResult<T>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, step: &'static str, path: &Path) -> FsResult<T> {
        self.map_err(|source| FsError {
            step,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Nothing there: the path or one of its directories is missing, or a
/// "directory" on the way is a file.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether anything is at `path` (without following a final symlink).
fn exists(path: &Path) -> FsResult<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e).at("stat", path),
    }
}

fn parent_of(path: &Path) -> FsResult<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))
        .at("find directory of", path)
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

/// Opens `full` for reading if it is a regular file; its length with it.
fn open_regular(full: &Path, path: &StoragePath) -> Result<(File, u64)> {
    let file = match File::open(full) {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Err(Error::not_found(path)),
        Err(e) => return Err(e).at("open", full).map_err(Error::from),
    };
    let meta = file.metadata().at("stat", full)?;
    if !meta.is_file() {
        return Err(Error::not_found(path));
    }
    Ok((file, meta.len()))
}

/// `Ok(true)` when removed, `Ok(false)` when nothing was there.
fn remove_missing_ok(r: io::Result<()>, path: &Path) -> FsResult<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e).at("remove", path),
    }
}

/// Flushes a directory's entries to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs `op`, which creates something directly in `dir`; when it fails
/// because `dir` is missing (never created, or removed by a concurrent
/// clean-up), creates `dir` and tries again.
fn in_dir<T>(root: &Path, dir: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut retry = Retry::new();
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry.again() => {
                make_dirs(root, dir)?;
            }
            other => return other,
        }
    }
}

/// Renames `src` over `dst`, creating `dst`'s directories as needed, then
/// flushes `dst`'s directory. A missing `src` comes back as a `NotFound`
/// error.
fn rename_into(root: &Path, src: &Path, dst: &Path) -> FsResult<()> {
    let dir = parent_of(dst)?;
    let mut retry = Retry::new();
    loop {
        match fs::rename(src, dst) {
            Ok(()) => return sync_dir(dir).at("sync directory", dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry.again() => {
                if !exists(src)? {
                    return Err(e).at("rename", src);
                }
                make_dirs(root, dir).at("create directory", dir)?;
            }
            Err(e) => return Err(e).at("rename", dst),
        }
    }
}

/// Hard-links `src` as `dst` (creating directories) unless `dst` exists:
/// `false` then. The new entry is flushed into its directory.
fn link_into(root: &Path, src: &Path, dst: &Path) -> FsResult<bool> {
    let dir = parent_of(dst)?;
    let mut retry = Retry::new();
    loop {
        match fs::hard_link(src, dst) {
            Ok(()) => return sync_dir(dir).at("sync directory", dir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound && retry.again() => {
                make_dirs(root, dir).at("create directory", dir)?;
            }
            Err(e) => return Err(e).at("link", dst),
        }
    }
}

/// Renames `src` over `dst` (see [`rename_into`]), then removes the
/// directories below `prune_top` that the move left empty. A `src` that
/// vanished before the rename is `PathNotFound` for `path`.
fn move_into_place(
    root: &Path,
    src: &Path,
    dst: &Path,
    prune_top: &Path,
    path: &StoragePath,
) -> Result<()> {
    match rename_into(root, src, dst) {
        Ok(()) => {}
        Err(e) if e.is_missing() && !exists(src)? => return Err(Error::not_found(path)),
        Err(e) => return Err(e.into()),
    }
    if let Some(dir) = src.parent() {
        prune_empty_dirs(prune_top, dir);
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors (the root included), flushing
/// each new directory's entry into its parent. Directories removed by a
/// concurrent clean-up half-way are created again.
fn make_dirs(root: &Path, dir: &Path) -> io::Result<()> {
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
                Ok(()) => {
                    if let Some(parent) = d.parent() {
                        match sync_dir(parent) {
                            Ok(()) => {}
                            // `d` (empty) and then its parent were pruned
                            // before the flush: start over.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                vanished = true;
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                // Created concurrently; if it is a file, the caller fails.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
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
fn prune_empty_dirs(stop: &Path, start: &Path) {
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

    #[test]
    fn max_threads_below_25_is_refused() {
        assert!(matches!(checked_max_threads(24), Err(Error::Config { .. })));
        assert!(matches!(checked_max_threads(-1), Err(Error::Config { .. })));
        assert!(matches!(checked_max_threads(25), Ok(25)));
    }

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
