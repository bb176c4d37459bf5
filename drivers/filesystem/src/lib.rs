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
//! Flushes go through one group-commit queue per driver (`sync.rs`): an
//! operation queues what it must make durable and waits; one waiting
//! thread flushes everything queued so far — the targets of a lone
//! operation with `fsync` each, those of several operations with one
//! `syncfs` per filesystem — and wakes the operations it covered. Each
//! operation still returns only after its own data and names are durable,
//! and its barriers stay in order: a file's bytes are flushed before the
//! rename that publishes it.
//!
//! # Volatile writes
//!
//! On a local filesystem (ext4, xfs, btrfs, tmpfs, zfs, f2fs, bcachefs,
//! overlayfs, jfs, reiserfs: the `statfs` type of the root at start-up)
//! [`StorageDriver::volatile_epoch`] is the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`), and `put_content_volatile`,
//! `put_content_if_absent_volatile` and a writer's `close_volatile` skip
//! their `fsync`s: every process on this machine reads what they wrote from
//! the page cache, which a crash of the process keeps and a crash of the
//! machine — which changes the boot id — may lose. A writer's first
//! volatile close still flushes the staging directories its opening
//! created, so that a later durable `close` of the resumed writer (which
//! flushes the file and its directory) leaves nothing unsynced; `commit`
//! flushes the file as always. On any other filesystem (NFS, CIFS, Ceph,
//! FUSE, GFS2, …) another machine may read what this one wrote, so the
//! epoch is `None` and the volatile calls are the durable ones.
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
//! manager the server offers. On a local filesystem (where the driver has
//! an epoch, *Volatile writes* below) every process that can open the root
//! runs on this kernel, so the driver claims
//! [`Capabilities::exclusive_writers`] there, and the registry orders an
//! upload's requests with the writer's lock alone; elsewhere it does not,
//! and the registry adds its lease objects.
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

mod dirs;
mod fsio;
mod layout;
mod listings;
mod reader;
mod sync;
mod writer;

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use regstore_core::{
    BuildFuture, ByteStream, Capabilities, Children, DirStamp, DriverFactory, Error, FileInfo,
    FileWriter, Listed, ParamKind, ParamSpec, Params, Result, StorageDriver, StoragePath,
    WalkVisitor, async_trait,
};

use crate::dirs::{link_into, move_into_place, prune_empty_dirs};
use crate::fsio::{At, is_missing, remove_missing_ok};
use crate::layout::Layout;
use crate::listings::Listings;
use crate::reader::open_regular;
use crate::sync::Barrier;

/// Registry name of the driver.
pub const NAME: &str = "filesystem";
/// Root directory when `rootdirectory` is not given (distribution's default).
pub const DEFAULT_ROOT_DIRECTORY: &str = "/var/lib/registry";
/// The smallest `maxthreads` accepted (distribution's minimum).
pub const MIN_MAX_THREADS: usize = 25;

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
    ParamSpec::new(
        "listingcachemb",
        ParamKind::Integer,
        "Memory for directory listings kept between walks, in MiB (0: none; local filesystems only)",
    )
    .default("48"),
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
        let root = params.require_string("rootdirectory")?;
        if root.is_empty() {
            return Err(Error::config(
                "parameter \"rootdirectory\" must not be empty",
            ));
        }
        let threads = checked_max_threads(params.require_integer("maxthreads")?)?;
        let cache = params.require_integer("listingcachemb")?;
        let cache = usize::try_from(cache).map_err(|_| {
            Error::config(format!(
                "parameter \"listingcachemb\" must be 0 or more, got {cache}"
            ))
        })?;
        let root = PathBuf::from(root);
        // Creating the root touches the disk: keep it off the async workers.
        let driver = blocking(move || FilesystemDriver::with_listing_cache(root, cache)).await?;
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
        Self::with_listing_cache(root, listings::DEFAULT_MIB)
    }

    /// As [`FilesystemDriver::new`], keeping directory listings between
    /// walks within about `mib` MiB (the `listingcachemb` parameter; 0
    /// keeps none). Only on a local filesystem, where directories have
    /// stamps; see `listings.rs` for what is kept.
    ///
    /// # Errors
    /// As [`FilesystemDriver::new`].
    pub fn with_listing_cache<P: Into<PathBuf>>(root: P, mib: usize) -> Result<Self> {
        let root: PathBuf = root.into();
        if root.as_os_str().is_empty() {
            return Err(Error::config("the root directory must not be empty"));
        }
        let root = std::path::absolute(&root).at("resolve root directory", &root)?;
        let mut layout = Layout::new(root);
        fs::create_dir_all(&layout.root).at("create root directory", &layout.root)?;
        fs::create_dir_all(&layout.staging).at("create staging directory", &layout.staging)?;
        layout.find_epoch(mib);
        layout.remove_orphaned_puts();
        let max_threads =
            regstore_core::params::defaults(NAME, PARAMS)?.require_integer("maxthreads")?;
        Ok(FilesystemDriver {
            layout: Arc::new(layout),
            max_threads: checked_max_threads(max_threads)?,
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

    /// `put_content` with `barrier`.
    async fn put(&self, path: &StoragePath, content: Bytes, barrier: Barrier) -> Result<()> {
        let item = [(path.clone(), content)];
        self.run(move |l| Ok(l.publish_temps_in_order(&item, barrier)?))
            .await
    }

    /// `put_content_if_absent` with `barrier`.
    async fn put_if_absent(
        &self,
        path: &StoragePath,
        content: Bytes,
        barrier: Barrier,
    ) -> Result<bool> {
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            Ok(l.publish_temp(&content, barrier, |tmp| link_into(l, tmp, &full, barrier))?)
        })
        .await
    }

    /// [`DirReader::read_infos`] on a blocking thread.
    async fn read_dir_infos(&self, dir: StoragePath) -> Result<Children> {
        self.run(move |l| DirReader::default().read_infos(l, &dir))
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

/// Reads the directories of one walk. The directory just read stays open
/// (with its ancestors up to where the walk is), and a directory whose
/// parent is open is opened relative to it (`openat`) and read with
/// `getdents` alone: a catalog walk opens the thousands of repositories of
/// one namespace in turn, and resolving each one's full path from the root
/// again (plus the `fstat` of `opendir`) cost more than reading it. At most
/// one directory per level of the walk's depth is open.
///
/// On Linux the entries are read with `getdents64` into a buffer of
/// [`DIR_BUFFER`] bytes on the stack: no allocation per entry (a `Dir`'s
/// entries each own their name) and, for a tag list of 1,000 tags, two
/// `getdents64` calls instead of seven (a `Dir` starts with room for 32
/// entries and grows from there). On the stack rather than in the reader:
/// a tag list reads one directory with a new reader, and a 32 KiB
/// allocation per list made glibc consolidate its free lists each time
/// (`malloc_consolidate`: 4 % of a tag list's samples in `perf` just after
/// a change, 2 % since; the list's time did not move measurably).
#[derive(Default)]
struct DirReader {
    /// The branch the walk is on: each directory the parent of the next.
    open: Vec<OpenDir>,
}

/// One directory of a [`DirReader`]'s branch.
struct OpenDir {
    dir: StoragePath,
    /// `None` while its listing came from a kept one checked without
    /// opening it; opened when the walk reads a child of it.
    fd: Option<OwnedFd>,
    /// Its listing had [`listings::LARGE`] entries or more.
    large: bool,
}

/// The size of a [`DirReader`]'s `getdents64` buffer: 1,000 entries with
/// names of up to 8 bytes fit in 32 KiB.
#[cfg(target_os = "linux")]
const DIR_BUFFER: usize = 32 << 10;

impl DirReader {
    /// The committed children of `dir` for a walk (names that are not
    /// valid segments, such as `~staging`, are hidden; entries removed
    /// meanwhile are left out): files with their size and modification
    /// time, directories without a time. A directory's kind comes from the
    /// `readdir` entry itself, so it costs no `stat`: a catalog walk meets
    /// thousands of directories and no file, and no walker reads a
    /// directory's time (the contract lets directories have none, as on
    /// object stores; `stat` still gives it). Files, symbolic links and
    /// entries of unknown kind are `stat`ed (following links, as `stat`
    /// does).
    fn read_infos(&mut self, l: &Layout, dir: &StoragePath) -> Result<Children> {
        self.leave_for(dir);
        // A kept listing is used while the directory's stamp is the one it
        // was kept with: one `stat` of it relative to its open parent, or
        // one `fstat` once it is open. Only directories held are stamped
        // before they are read, and only the ones found worth keeping
        // after (see `listings.rs`).
        let held = l.listings.as_ref().filter(|k| k.holds(dir));
        let mut checked = false;
        if let Some(k) = held
            && let Some((parent, name)) = self.parent_fd(l, dir)
        {
            checked = true;
            if let Some(names) = statat_stamp(parent, name).and_then(|s| k.get(dir, s)) {
                self.push(dir, None, names.len());
                return Ok(Children::SortedDirs(names));
            }
        }
        let Some((opened, full)) = self.open_dir(l, dir)? else {
            return Ok(Children::Listed(Vec::new()));
        };
        if let Some(k) = held
            && !checked
            && let Some(names) = fstat_stamp(&opened).and_then(|s| k.get(dir, s))
        {
            self.push(dir, Some(opened), names.len());
            return Ok(Children::SortedDirs(names));
        }
        let (children, dirents_only) = self.read_opened(&opened, dir, &full)?;
        let parent_large = self.parent_of(dir).is_some_and(|p| p.large);
        // Only listings whose directories the entries themselves say are
        // directories: a symbolic link to one can be pointed elsewhere
        // without changing this directory's stamp.
        if let Some(k) = l.listings.as_ref()
            && Listings::worth_keeping(children.len(), dirents_only, parent_large)
            && let Some(stamp) = fstat_stamp(&opened)
        {
            k.keep(dir, stamp, &children);
        }
        self.push(dir, Some(opened), children.len());
        Ok(Children::Listed(children))
    }

    /// Puts `dir`, just listed with `children` entries, at the end of the
    /// branch.
    fn push(&mut self, dir: &StoragePath, fd: Option<OwnedFd>, children: usize) {
        self.open.push(OpenDir {
            dir: dir.clone(),
            fd,
            large: children >= listings::LARGE,
        });
    }

    /// Closes the directories of the branch that are not ancestors of
    /// `dir`: the walk has left them.
    fn leave_for(&mut self, dir: &StoragePath) {
        while self.open.last().is_some_and(|o| !o.dir.is_ancestor_of(dir)) {
            self.open.pop();
        }
    }

    /// The end of the branch if it is `dir`'s parent (after
    /// [`DirReader::leave_for`]).
    fn parent_of(&self, dir: &StoragePath) -> Option<&OpenDir> {
        self.open.last().filter(|o| {
            dir.relative_to(&o.dir)
                .is_some_and(|rest| !rest.contains('/'))
        })
    }

    /// The open parent of `dir` and `dir`'s name in it, when the end of the
    /// branch is that parent; a parent not opened yet is opened now
    /// (relative to its own parent, else by its full path). `None` also
    /// when that fails: the caller then opens `dir` by its full path, which
    /// reports what is wrong.
    fn parent_fd<'a>(&mut self, l: &Layout, dir: &'a StoragePath) -> Option<(&OwnedFd, &'a str)> {
        let name = dir.file_name()?;
        let at = self.open.len().checked_sub(1)?;
        self.parent_of(dir)?;
        if self.open[at].fd.is_none() {
            let flags = dir_flags();
            let (below, mine) = self.open.split_at_mut(at);
            let mine = &mut mine[0];
            let opened = match (below.last(), mine.dir.file_name()) {
                (Some(OpenDir { fd: Some(p), .. }), Some(n)) => {
                    rustix::fs::openat(p, n, flags, rustix::fs::Mode::empty())
                }
                _ => rustix::fs::openat(
                    rustix::fs::CWD,
                    l.committed(&mine.dir),
                    flags,
                    rustix::fs::Mode::empty(),
                ),
            };
            mine.fd = Some(opened.ok()?);
        }
        Some((self.open[at].fd.as_ref()?, name))
    }

    /// [`DirReader::read_infos`] of the directory `opened` (at `full`),
    /// without the kept listings; and whether every entry's own type said
    /// directory (no entry needed a `stat`).
    fn read_opened(
        &mut self,
        opened: &OwnedFd,
        dir: &StoragePath,
        full: &Path,
    ) -> Result<(Vec<Listed>, bool)> {
        let mut children = Vec::new();
        let mut dirents_only = true;
        for (child, kind) in self.read_valid(opened, dir, full)? {
            if kind == rustix::fs::FileType::Directory {
                children.push(Listed::Info(FileInfo::dir(child, None)));
                continue;
            }
            dirents_only = false;
            let name = child.file_name().unwrap_or_default();
            let meta = rustix::fs::statat(opened, name, rustix::fs::AtFlags::empty());
            let meta = match meta {
                Ok(m) => m,
                Err(e) if is_missing(&e.into()) => continue,
                Err(e) => {
                    return Err(io::Error::from(e))
                        .at("stat", &full.join(name))
                        .map_err(Error::from);
                }
            };
            match rustix::fs::FileType::from_raw_mode(meta.st_mode) {
                rustix::fs::FileType::Directory => {
                    children.push(Listed::Info(FileInfo::dir(child, None)));
                }
                rustix::fs::FileType::RegularFile => {
                    // The fields' types differ between platforms.
                    #[allow(clippy::unnecessary_cast)]
                    let mtime = unix_time(meta.st_mtime as i64, meta.st_mtime_nsec as u32);
                    let size = u64::try_from(meta.st_size).unwrap_or(0);
                    children.push(Listed::Info(FileInfo::file(child, size, mtime)));
                }
                _ => {}
            }
        }
        Ok((children, dirents_only))
    }

    /// The paths of the committed children of `dir` (as [`read_valid`]).
    fn paths(&mut self, l: &Layout, dir: &StoragePath) -> Result<Vec<StoragePath>> {
        let Some((opened, full)) = self.open_dir(l, dir)? else {
            return Ok(Vec::new());
        };
        Ok(self
            .read_valid(&opened, dir, &full)?
            .into_iter()
            .map(|(child, _)| child)
            .collect())
    }

    /// The entries of the open directory `opened` (the committed `dir`, at
    /// `full`) whose names are valid path segments (this hides `.`, `..`,
    /// `~staging` and anything foreign), with their paths and the kind the
    /// directory entry gives (`Unknown` on filesystems that give none).
    fn read_valid(
        &mut self,
        opened: &OwnedFd,
        dir: &StoragePath,
        full: &Path,
    ) -> Result<Vec<(StoragePath, rustix::fs::FileType)>> {
        let mut children = Vec::new();
        let mut push = |name: &std::ffi::CStr, kind| {
            // `join` checks the segment (once) as it builds the path.
            if let Some(child) = name.to_str().ok().and_then(|n| dir.join(n).ok()) {
                children.push((child, kind));
            }
        };
        #[cfg(target_os = "linux")]
        let read = {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); DIR_BUFFER];
            let mut raw = rustix::fs::RawDir::new(opened, &mut buf);
            loop {
                match raw.next() {
                    None => break Ok(()),
                    Some(Ok(entry)) => push(entry.file_name(), entry.file_type()),
                    Some(Err(e)) => break Err(e),
                }
            }
        };
        #[cfg(not(target_os = "linux"))]
        let read = rustix::fs::Dir::read_from(opened).and_then(|mut d| {
            loop {
                match d.read() {
                    None => break Ok(()),
                    Some(Ok(entry)) => push(entry.file_name(), entry.file_type()),
                    Some(Err(e)) => break Err(e),
                }
            }
        });
        match read {
            Ok(()) => Ok(children),
            Err(e) => {
                let e = io::Error::from(e);
                // The directory was removed while being listed.
                if is_missing(&e) {
                    return Err(Error::not_found(dir));
                }
                Err(e).at("list", full).map_err(Error::from)
            }
        }
    }

    /// Opens `dir`: relative to its parent when that is the end of the
    /// branch (after [`DirReader::leave_for`]), else by its full path.
    /// Returns it with its full path (for messages); `None` for the root
    /// before anything was stored.
    fn open_dir(&mut self, l: &Layout, dir: &StoragePath) -> Result<Option<(OwnedFd, PathBuf)>> {
        self.leave_for(dir);
        let full = l.committed(dir);
        let opened = match self.parent_fd(l, dir) {
            Some((parent, name)) => {
                rustix::fs::openat(parent, name, dir_flags(), rustix::fs::Mode::empty())
            }
            None => rustix::fs::openat(
                rustix::fs::CWD,
                &full,
                dir_flags(),
                rustix::fs::Mode::empty(),
            ),
        };
        match opened {
            Ok(d) => Ok(Some((d, full))),
            Err(e) => match io::Error::from(e) {
                // No root directory yet: an empty store.
                e if is_missing(&e) && dir.is_root() => Ok(None),
                e if is_missing(&e) => Err(Error::not_found(dir)),
                e => Err(e).at("list", &full).map_err(Error::from),
            },
        }
    }
}

/// How a [`DirReader`] opens a directory.
fn dir_flags() -> rustix::fs::OFlags {
    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC
}

/// Whether the current task runs on tokio's multi-threaded runtime, where
/// `block_in_place` may be used (it panics on the current-thread one).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The time `secs` and `nanos` after (or before) the Unix epoch.
fn unix_time(secs: i64, nanos: u32) -> SystemTime {
    let since = Duration::new(secs.unsigned_abs(), nanos);
    if secs >= 0 {
        UNIX_EPOCH + since
    } else {
        UNIX_EPOCH - since
    }
}

/// How long a directory must have been unchanged before
/// [`FilesystemDriver::children_stamp`] stamps it: more than the coarsest
/// timestamp granularity of the local filesystems it stamps (one second).
const STAMP_SETTLE: Duration = Duration::from_secs(2);

/// The [`DirStamp`] of a directory from its `stat`: `None` for anything
/// else, or for a directory modified less than [`STAMP_SETTLE`] ago (see
/// [`FilesystemDriver::children_stamp`]).
fn settled_stamp(st: &rustix::fs::Stat) -> Option<DirStamp> {
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return None;
    }
    // The fields' types differ between platforms.
    #[allow(clippy::unnecessary_cast)]
    let (mtime, ctime) = (
        (st.st_mtime as i64, st.st_mtime_nsec as u32),
        (st.st_ctime as i64, st.st_ctime_nsec as u32),
    );
    let settled = SystemTime::now()
        .duration_since(unix_time(mtime.0, mtime.1))
        .is_ok_and(|age| age >= STAMP_SETTLE);
    if !settled {
        return None;
    }
    let nanos = |(secs, ns): (i64, u32)| (secs as u64).wrapping_mul(1_000_000_000) + ns as u64;
    #[allow(clippy::unnecessary_cast)]
    Some(DirStamp::new([
        st.st_ino as u64,
        nanos(mtime),
        nanos(ctime),
        st.st_nlink as u64,
    ]))
}

/// The settled stamp of the open directory `dir` (see [`settled_stamp`]);
/// `None` too if it cannot be `stat`ed (the caller then reads it).
fn fstat_stamp(dir: &OwnedFd) -> Option<DirStamp> {
    rustix::fs::fstat(dir)
        .ok()
        .and_then(|st| settled_stamp(&st))
}

/// The settled stamp of the directory `name` in the open directory
/// `parent` (see [`settled_stamp`]), following a symbolic link as opening
/// it would; `None` too if it cannot be `stat`ed.
fn statat_stamp(parent: &OwnedFd, name: &str) -> Option<DirStamp> {
    rustix::fs::statat(parent, name, rustix::fs::AtFlags::empty())
        .ok()
        .and_then(|st| settled_stamp(&st))
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
        Capabilities::NONE
            .with_create_if_absent(true)
            .with_children_stamps(self.layout.epoch.is_some())
            // Every process that can open a root on a local filesystem
            // shares this kernel's `flock`s (*One writer at a time*).
            .with_exclusive_writers(self.layout.epoch.is_some())
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
        self.put(path, content, Barrier::Durable).await
    }

    /// The temporary files of all items flushed in one barrier, then each
    /// renamed into place in turn with its directories flushed before the
    /// next (`Layout::publish_temps_in_order`).
    async fn put_contents_in_order(&self, items: &[(StoragePath, Bytes)]) -> Result<()> {
        let items = items.to_vec();
        self.run(move |l| Ok(l.publish_temps_in_order(&items, Barrier::Durable)?))
            .await
    }

    /// Like `put_content`, but publishes the flushed temporary file with a
    /// hard link instead of a rename: `link` fails when the name exists,
    /// atomically, also between processes.
    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        self.put_if_absent(path, content, Barrier::Durable).await
    }

    /// The boot id on a local filesystem (ext4, xfs, btrfs, tmpfs, zfs,
    /// overlayfs, …), `None` elsewhere; see the crate documentation
    /// (*Volatile writes*).
    fn volatile_epoch(&self) -> Option<&str> {
        self.layout.epoch.as_deref()
    }

    /// `put_content` without its `fsync`s where the driver has an epoch.
    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        self.put(path, content, self.layout.volatile()).await
    }

    /// `put_content_if_absent` without its `fsync`s where the driver has
    /// an epoch.
    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        self.put_if_absent(path, content, self.layout.volatile())
            .await
    }

    /// Streams the file in chunks of up to 1 MiB, each read on a blocking
    /// thread; the first chunk is read together with opening the file.
    ///
    /// Errors: `PathNotFound` when nothing (or a directory) is at `path`,
    /// `InvalidOffset` when `offset` lies past the end.
    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        let path = path.clone();
        let state = self.run(move |l| reader::open(l, &path, offset)).await?;
        Ok(reader::stream(state))
    }

    /// Opens the staging file of `path` and takes its writer lock; see the
    /// crate documentation (*One writer at a time*).
    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let path = path.clone();
        let layout = Arc::clone(&self.layout);
        self.run(move |_| writer::open(layout, path, append)).await
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
        self.run(move |l| DirReader::default().paths(l, &path))
            .await
    }

    /// One `stat` of the directory. `None` unless the filesystem is local
    /// (the allow-list of [`StorageDriver::volatile_epoch`]: its
    /// timestamps then come from this machine's clock, never from a
    /// server's) and the directory was last modified [`STAMP_SETTLE`] or
    /// more ago: an entry added or removed after the stamp is taken then
    /// moves the modification time past the stamped one, even where
    /// timestamps have a granularity of a second (ext4 with 128-byte
    /// inodes) or come from the kernel's coarse clock (a few ms). The
    /// change time and link count (one per subdirectory) are in the stamp
    /// too, so a clock stepped back would also have to meet them exactly.
    async fn children_stamp(&self, path: &StoragePath) -> Result<Option<DirStamp>> {
        if self.layout.epoch.is_none() {
            return Ok(None);
        }
        let path = path.clone();
        self.run(move |l| {
            let full = l.committed(&path);
            match rustix::fs::stat(&full) {
                Ok(st) => Ok(settled_stamp(&st)),
                Err(e) if is_missing(&e.into()) => Ok(None),
                Err(e) => Err(io::Error::from(e))
                    .at("stat", &full)
                    .map_err(Error::from),
            }
        })
        .await
    }

    /// One `readdir` per directory entered, with a `stat` per file (not
    /// per directory: directories come without a modification time, see
    /// [`DirReader::read_infos`]; a directory whose parent was just read
    /// is opened relative to it).
    ///
    /// On tokio's multi-threaded runtime the whole walk is one blocking
    /// section (`block_in_place`: the worker hands its other tasks to
    /// another thread), the visitor called between the reads. The visitor
    /// decides whether a directory is read at all (`SkipDir`), so reading
    /// ahead of it would read what walks must not (a catalog stops at
    /// `_layers`); and a trip to the blocking pool per directory costs
    /// more than the `readdir` itself (see `docs/listing-perf.md`).
    /// Elsewhere (a current-thread runtime, where blocking in
    /// place is not allowed) each directory is read on the blocking pool.
    /// Either way the order, `start_after` and `SkipDir` are
    /// [`regstore_core::walk_listing`]'s. A timeout around the walk fires
    /// only after it (a walk of 100,000 repositories takes well under a
    /// second).
    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        if on_multi_thread_runtime() {
            let layout = &*self.layout;
            let mut reader = DirReader::default();
            let runtime = tokio::runtime::Handle::current();
            return tokio::task::block_in_place(|| {
                runtime.block_on(regstore_core::walk_listing(
                    self,
                    path,
                    start_after,
                    visitor,
                    |dir| Box::pin(std::future::ready(reader.read_infos(layout, &dir))),
                ))
            });
        }
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
            move_into_place(l, &src, &dst, &l.root, &from)
        })
        .await
    }

    /// Removes the file or directory tree, the unfinished writers at and
    /// below `path`, and directories left empty.
    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let path = path.clone();
        self.run(move |l| {
            if delete_now(l, &path)? {
                Ok(())
            } else {
                Err(Error::not_found(&path))
            }
        })
        .await
    }

    /// `delete` of each path in turn, in one task of the blocking pool
    /// (one slot of `maxthreads`): directories left empty are removed, a
    /// directory path is deleted with everything below it.
    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        let paths = paths.to_vec();
        self.run(move |l| {
            for path in &paths {
                delete_now(l, path)?;
            }
            Ok(())
        })
        .await
    }
}

/// Deletes what is at `path` (a file, or a directory with everything in it)
/// and the unfinished writers at and below it, then the directories that
/// left empty. `Ok(false)`: nothing was committed there.
fn delete_now(l: &Layout, path: &StoragePath) -> Result<bool> {
    let full = l.committed(path);
    let found = match fs::symlink_metadata(&full) {
        Ok(m) if m.is_dir() => remove_missing_ok(fs::remove_dir_all(&full), &full)?,
        Ok(_) => remove_missing_ok(fs::remove_file(&full), &full)?,
        Err(e) if is_missing(&e) => false,
        Err(e) => return Err(e).at("stat", &full).map_err(Error::from),
    };
    let tree = l.staged_tree(path);
    let staged = remove_missing_ok(fs::remove_dir_all(&tree), &tree)?;
    let writer = l.staged_writer(path)?;
    // Nothing staged removed, nothing to prune: most deletes (a finished
    // small push's upload, a tag) have no writer.
    if (remove_missing_ok(fs::remove_file(&writer), &writer)? || staged)
        && let Some(dir) = writer.parent()
    {
        prune_empty_dirs(&l.staging, dir);
    }
    if found && let Some(dir) = full.parent() {
        prune_empty_dirs(&l.root, dir);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_threads_below_25_is_refused() {
        assert!(matches!(checked_max_threads(24), Err(Error::Config { .. })));
        assert!(matches!(checked_max_threads(-1), Err(Error::Config { .. })));
        assert!(matches!(checked_max_threads(25), Ok(25)));
    }

    /// `listingcachemb`: 0 keeps no listings, a negative size is refused
    /// naming the parameter, and the default keeps them.
    #[tokio::test]
    async fn the_listing_cache_follows_its_parameter() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(Error::backend)?;
        register();
        let root = tmp.path().display().to_string();
        let with = |mib: &str| {
            let mut p = regstore_core::RawParams::new();
            p.insert("rootdirectory".into(), root.as_str().into());
            p.insert("listingcachemb".into(), mib.into());
            p
        };
        let none = FilesystemDriver::with_listing_cache(tmp.path(), 0)?;
        assert!(none.layout.listings.is_none(), "listings kept with 0 MiB");
        assert!(FilesystemDriver::new(tmp.path())?.layout.listings.is_some());
        let Err(e) = regstore_core::create(NAME, &with("-1")).await else {
            panic!("a negative listingcachemb was accepted");
        };
        assert!(e.to_string().contains("listingcachemb"), "{e}");
        regstore_core::create(NAME, &with("0")).await?;
        Ok(())
    }

    /// A directory's stamp: none while it changed within `STAMP_SETTLE`;
    /// once settled, the same while its children are (a file below a
    /// child may change), and another once a child is added or removed —
    /// even when the modification time is then set back to the stamped
    /// one, as a clock stepped back could (the link count differs).
    #[tokio::test]
    async fn children_stamps_change_with_the_children_once_settled() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(Error::backend)?;
        let d = FilesystemDriver::new(tmp.path())?;
        let path = |p: &str| StoragePath::parse(p);
        let dir = path("/t")?;
        let full = d.layout.committed(&dir);
        let long_ago = SystemTime::now() - Duration::from_secs(60);
        let set_back = || {
            fs::File::open(&full)
                .and_then(|f| f.set_modified(long_ago))
                .map_err(Error::backend)
        };
        d.put_content(&path("/t/a/link")?, Bytes::from_static(b"1"))
            .await?;
        assert_eq!(
            d.children_stamp(&dir).await?,
            None,
            "stamped while changing"
        );
        set_back()?;
        let first = d.children_stamp(&dir).await?;
        assert!(first.is_some(), "a settled directory got no stamp");
        d.put_content(&path("/t/a/link")?, Bytes::from_static(b"2"))
            .await?;
        assert_eq!(
            d.children_stamp(&dir).await?,
            first,
            "a grandchild changed the stamp"
        );

        d.put_content(&path("/t/b/link")?, Bytes::from_static(b"1"))
            .await?;
        assert_eq!(
            d.children_stamp(&dir).await?,
            None,
            "stamped just after a child was added"
        );
        set_back()?;
        let added = d.children_stamp(&dir).await?;
        assert!(
            added.is_some() && added != first,
            "adding a child kept the stamp"
        );
        d.delete(&path("/t/b")?).await?;
        set_back()?;
        let removed = d.children_stamp(&dir).await?;
        assert!(removed.is_some(), "a settled directory got no stamp");
        assert_ne!(removed, added, "removing a child kept the stamp");

        assert_eq!(d.children_stamp(&path("/missing")?).await?, None);
        assert_eq!(
            d.children_stamp(&path("/t/a/link")?).await?,
            None,
            "a file got a stamp"
        );
        Ok(())
    }

    /// The paths a walk of `dir` reports, in order.
    async fn walked(d: &FilesystemDriver, dir: &StoragePath) -> Result<Vec<String>> {
        let mut seen = Vec::new();
        StorageDriver::walk(d, dir, None, &mut |fi| {
            seen.push(fi.path.as_str().to_owned());
            Ok(regstore_core::WalkControl::Continue)
        })
        .await?;
        Ok(seen)
    }

    /// Sets the modification time of `dir` a minute back, as if it had
    /// been unchanged since: its stamp is given at once.
    fn settle(dir: &Path) -> Result<()> {
        fs::File::open(dir)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(60)))
            .map_err(Error::backend)
    }

    /// The paths a walk of `dir` after `start_after` reports: by the
    /// driver's walk (`kept`), or by the generic one of `list` and `stat`.
    async fn walked_after(
        d: &FilesystemDriver,
        dir: &StoragePath,
        start_after: Option<&StoragePath>,
        kept: bool,
    ) -> Result<Vec<String>> {
        let mut seen = Vec::new();
        let mut visit = |fi: &FileInfo| {
            seen.push(fi.path.as_str().to_owned());
            Ok(regstore_core::WalkControl::Continue)
        };
        if kept {
            StorageDriver::walk(d, dir, start_after, &mut visit).await?;
        } else {
            regstore_core::walk_by_listing(d, dir, start_after, &mut visit).await?;
        }
        Ok(seen)
    }

    /// A walk resumed after a path inside a kept listing (which it enters
    /// by a binary search) reports what the generic walk reports, also
    /// where a name sorts between a sibling and that sibling's children
    /// (`ab`, `ab-x`, `ab.c`, `ab/…`), and for places that do not exist.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_walk_resumed_in_a_kept_listing_matches_the_generic_walk() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(Error::backend)?;
        let d = FilesystemDriver::new(tmp.path())?;
        let Some(kept) = d.layout.listings.as_ref() else {
            panic!("no kept listings on a local filesystem");
        };
        let ns = StoragePath::parse("/n")?;
        let full = d.layout.committed(&ns);
        let mut names: Vec<String> = (0..300).map(|i| format!("r{i:03}")).collect();
        names.extend(["ab", "ab-x", "ab.c", "abc", "r150-z"].map(String::from));
        for n in &names {
            fs::create_dir_all(full.join(n).join("_manifests/tags")).map_err(Error::backend)?;
            fs::create_dir_all(full.join(n).join("_layers")).map_err(Error::backend)?;
        }
        for n in &names {
            settle(&full.join(n))?;
        }
        settle(&full)?;
        // Keeps the listings.
        let all = walked_after(&d, &ns, None, true).await?;
        assert_eq!(all, walked_after(&d, &ns, None, false).await?);
        assert!(kept.holds(&ns) && kept.holds(&ns.join("ab")?));
        let hits = kept.hits();
        for after in [
            "/n/ab",
            "/n/ab/_layers",
            "/n/ab/_manifests/tags",
            "/n/ab-",
            "/n/ab-x/_manifests",
            "/n/ab.c",
            "/n/abb",
            "/n/r150",
            "/n/r150/_manifests/tags/zzz",
            "/n/r150-z",
            "/n/r299/_manifests",
            "/n/zzz",
            "/n",
            "/a",
        ] {
            let after = StoragePath::parse(after)?;
            let got = walked_after(&d, &ns, Some(&after), true).await?;
            let want = walked_after(&d, &ns, Some(&after), false).await?;
            let differ = got.iter().zip(&want).position(|(g, w)| g != w);
            assert!(
                got.len() == want.len() && differ.is_none(),
                "after {after}: {} paths against {}; first difference at {differ:?}: {:?} against {:?}",
                got.len(),
                want.len(),
                differ.and_then(|i| got.get(i)),
                differ.and_then(|i| want.get(i)),
            );
        }
        assert!(kept.hits() > hits, "the kept listings were not used");
        Ok(())
    }

    /// A large directory's listing is kept once it settled and served to
    /// the next walk while its stamp holds; a child added since is seen at
    /// once (the stamp changed), and a directory holding a file is never
    /// kept. So are the listings of its children, however small (on the
    /// multi-threaded runtime, where one reader reads a whole walk).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn walks_use_a_kept_listing_only_while_the_directory_is_unchanged() -> Result<()> {
        kept_listings(true).await
    }

    /// As above on a current-thread runtime, where each directory is read
    /// on its own: large directories only.
    #[tokio::test]
    async fn walks_on_one_thread_use_kept_large_listings() -> Result<()> {
        kept_listings(false).await
    }

    async fn kept_listings(children_too: bool) -> Result<()> {
        let tmp = tempfile::tempdir().map_err(Error::backend)?;
        let d = FilesystemDriver::new(tmp.path())?;
        let Some(kept) = d.layout.listings.as_ref() else {
            panic!("no kept listings on a local filesystem");
        };
        let dir = StoragePath::parse("/t")?;
        let full = d.layout.committed(&dir);
        for i in 0..300 {
            fs::create_dir_all(full.join(format!("r{i:03}"))).map_err(Error::backend)?;
        }
        // Just changed: read, not kept.
        let fresh = walked(&d, &dir).await?;
        assert_eq!(fresh.len(), 300);
        assert!(!kept.holds(&dir), "kept while changing");
        settle(&full)?;
        assert_eq!(walked(&d, &dir).await?, fresh);
        assert!(kept.holds(&dir), "a settled large directory was not kept");
        assert_eq!(kept.hits(), 0);
        assert_eq!(walked(&d, &dir).await?, fresh, "the kept listing differs");
        assert_eq!(kept.hits(), 1, "the kept listing was not used");

        // A child added: seen by the very next walk.
        fs::create_dir(full.join("r999")).map_err(Error::backend)?;
        let added = walked(&d, &dir).await?;
        assert_eq!(added.len(), 301, "a stale listing was served");
        assert_eq!(added.last().map(String::as_str), Some("/t/r999"));
        assert_eq!(kept.hits(), 1);
        // Settled again (even at the old time): read again and kept anew.
        settle(&full)?;
        assert_eq!(walked(&d, &dir).await?, added);
        assert_eq!(walked(&d, &dir).await?, added);
        assert_eq!(kept.hits(), 2);

        // A directory with a file among its entries is not kept.
        let mixed = StoragePath::parse("/m")?;
        let mixed_full = d.layout.committed(&mixed);
        for i in 0..300 {
            fs::create_dir_all(mixed_full.join(format!("r{i:03}"))).map_err(Error::backend)?;
        }
        fs::write(mixed_full.join("file"), b"x").map_err(Error::backend)?;
        settle(&mixed_full)?;
        assert_eq!(walked(&d, &mixed).await?.len(), 301);
        assert!(!kept.holds(&mixed), "a directory holding a file was kept");

        // Nor one with a symbolic link to a directory among its entries:
        // the link can be pointed elsewhere without changing the stamp.
        let linked = StoragePath::parse("/l")?;
        let linked_full = d.layout.committed(&linked);
        for i in 0..300 {
            fs::create_dir_all(linked_full.join(format!("r{i:03}"))).map_err(Error::backend)?;
        }
        std::os::unix::fs::symlink(linked_full.join("r000"), linked_full.join("zz"))
            .map_err(Error::backend)?;
        settle(&linked_full)?;
        assert_eq!(walked(&d, &linked).await?.len(), 301);
        assert!(
            !kept.holds(&linked),
            "a directory holding a symbolic link was kept"
        );
        if !children_too {
            return Ok(());
        }

        // The children of a large directory are kept too, however small
        // (but not one holding a file), and checked without opening them;
        // a walk that goes into one opens it then.
        let ns = StoragePath::parse("/n")?;
        let ns_full = d.layout.committed(&ns);
        for i in 0..300 {
            fs::create_dir_all(ns_full.join(format!("r{i:03}/_manifests")))
                .map_err(Error::backend)?;
        }
        fs::create_dir_all(ns_full.join("r000/_layers/x")).map_err(Error::backend)?;
        fs::write(ns_full.join("r001/file"), b"x").map_err(Error::backend)?;
        for i in 0..300 {
            settle(&ns_full.join(format!("r{i:03}")))?;
        }
        settle(&ns_full)?;
        let first = walked(&d, &ns).await?;
        assert_eq!(first.len(), 300 + 300 + 3);
        let (r0, r1) = (ns.join("r000")?, ns.join("r001")?);
        assert!(kept.holds(&ns) && kept.holds(&r0), "not kept");
        assert!(!kept.holds(&r1), "a directory holding a file was kept");
        assert!(
            !kept.holds(&r0.join("_layers")?),
            "a small directory under a small one was kept"
        );
        let hits = kept.hits();
        assert_eq!(walked(&d, &ns).await?, first, "the kept listings differ");
        assert_eq!(kept.hits(), hits + 1 + 299, "kept listings were not used");
        assert!(first.contains(&"/n/r000/_layers/x".to_owned()));

        // An entry added to a kept small directory: seen by the next walk.
        fs::create_dir(ns_full.join("r002/_uploads")).map_err(Error::backend)?;
        let added = walked(&d, &ns).await?;
        assert_eq!(added.len(), first.len() + 1, "a stale listing was served");
        assert!(added.contains(&"/n/r002/_uploads".to_owned()));
        Ok(())
    }

    /// On a local filesystem (the test's temporary directory: ext4,
    /// overlayfs or tmpfs) the epoch is the boot id and volatile writes
    /// flush nothing — but the directories a writer's opening created,
    /// once — while durable ones flush.
    #[tokio::test]
    async fn volatile_writes_flush_nothing_on_a_local_filesystem() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(Error::backend)?;
        let d = FilesystemDriver::new(tmp.path())?;
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").map_err(Error::backend)?;
        assert_eq!(d.volatile_epoch(), Some(boot.trim()));
        let flushes = || d.layout.syncer.counts().0;
        let path = |p: &str| StoragePath::parse(p);
        let start = flushes();
        d.put_content_volatile(&path("/a/b")?, Bytes::from_static(b"x"))
            .await?;
        assert!(
            d.put_content_if_absent_volatile(&path("/a/c")?, Bytes::from_static(b"y"))
                .await?
        );
        assert_eq!(flushes(), start, "volatile puts flushed");

        let data = path("/u/v/data")?;
        let mut w = d.writer(&data, false).await?;
        w.write(Bytes::from_static(b"first")).await?;
        w.close_volatile().await?;
        let first = flushes();
        assert!(
            first > start,
            "the writer's new directories were not flushed"
        );
        let mut w = d.writer(&data, true).await?;
        w.write(Bytes::from_static(b"second")).await?;
        w.close_volatile().await?;
        assert_eq!(
            flushes(),
            first,
            "a resumed writer's volatile close flushed"
        );

        d.put_content(&path("/a/b")?, Bytes::from_static(b"z"))
            .await?;
        assert!(flushes() > first, "put_content did not flush");
        let w = d.writer(&data, true).await?;
        assert_eq!(w.size(), 11);
        w.commit().await?;
        assert_eq!(
            d.get_content(&data).await?,
            Bytes::from_static(b"firstsecond")
        );
        Ok(())
    }
}
