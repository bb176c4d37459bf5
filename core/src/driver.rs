//! The contract every storage driver implements.
//!
//! A driver crate implements [`StorageDriver`] (and a [`FileWriter`] for its
//! writers) with backend logic only. It receives paths already validated —
//! file operations never see the root — and returns errors built with the
//! constructors of [`Error`], leaving the driver name empty: the wrapper
//! [`crate::Driver`], which every constructed driver runs in, validates,
//! names errors, traces, counts and limits concurrency.

use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use futures_util::TryStreamExt;

use crate::error::{Error, Result};
use crate::path::StoragePath;

/// A stream of an object's bytes, in order. Ends after the last byte; an
/// error item ends the stream too.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// See [`StorageDriver::children_stamp`]: equal stamps of one directory
/// (from one driver) mean the same children. Opaque to callers; a driver
/// builds one from whatever changes with the directory's entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirStamp([u64; 4]);

impl DirStamp {
    /// A stamp made of `parts` (the driver's choice of what identifies the
    /// directory's state).
    pub fn new(parts: [u64; 4]) -> DirStamp {
        DirStamp(parts)
    }
}

/// What `stat` returns, and what `walk` visits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute path of the entry.
    pub path: StoragePath,
    /// Size in bytes of a file; 0 for a directory.
    pub size: u64,
    /// Last modification of a file. Directories may have none (object
    /// stores know no directory times).
    pub mod_time: Option<SystemTime>,
    /// True for a directory (on object stores: a prefix with children).
    pub is_dir: bool,
}

impl FileInfo {
    /// A file entry.
    pub fn file(path: StoragePath, size: u64, mod_time: SystemTime) -> Self {
        FileInfo {
            path,
            size,
            mod_time: Some(mod_time),
            is_dir: false,
        }
    }

    /// A directory entry.
    pub fn dir(path: StoragePath, mod_time: Option<SystemTime>) -> Self {
        FileInfo {
            path,
            size: 0,
            mod_time,
            is_dir: true,
        }
    }
}

/// What a driver can do beyond the required operations. The conformance
/// suite runs a case exactly when the driver claims what the case needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// `redirect_url` returns URLs that clients can fetch with GET and HEAD.
    pub redirect: bool,
    /// `put_content_if_absent` is atomic across processes (the backend
    /// checks the condition); drivers without it answer `Unsupported`.
    pub create_if_absent: bool,
    /// `children_stamp` may return a stamp. Without it, [`Driver`]'s
    /// `children_stamp` answers `None` without calling the driver or
    /// counting an operation; a [`Middleware`](crate::Middleware) never
    /// claims it.
    ///
    /// [`Driver`]: crate::Driver
    pub children_stamps: bool,
    /// A writer holds its path against every process that can reach the
    /// storage: from `writer` until `close`, `commit`, `cancel` or
    /// `rollback` returns (or its process ends), another `writer` of that
    /// path fails with [`Error::Busy`](crate::Error::Busy). The registry then
    /// orders the requests on an upload with the upload's writer alone,
    /// without a lease object. Passed on by middleware (the inner driver's
    /// writers are the ones that hold the path).
    pub exclusive_writers: bool,
}

impl Capabilities {
    /// No optional capability.
    pub const NONE: Capabilities = Capabilities {
        redirect: false,
        create_if_absent: false,
        children_stamps: false,
        exclusive_writers: false,
    };

    /// These capabilities with `create_if_absent` set.
    pub const fn with_create_if_absent(mut self, on: bool) -> Self {
        self.create_if_absent = on;
        self
    }

    /// These capabilities with `redirect` set.
    pub const fn with_redirect(mut self, on: bool) -> Self {
        self.redirect = on;
        self
    }

    /// These capabilities with `children_stamps` set.
    pub const fn with_children_stamps(mut self, on: bool) -> Self {
        self.children_stamps = on;
        self
    }

    /// These capabilities with `exclusive_writers` set.
    pub const fn with_exclusive_writers(mut self, on: bool) -> Self {
        self.exclusive_writers = on;
        self
    }
}

/// HTTP method of the request a redirect is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectMethod {
    /// `GET`: the client wants the bytes.
    Get,
    /// `HEAD`: the client wants the headers only.
    Head,
}

/// The little of an HTTP request that `redirect_url` may look at: drivers
/// know nothing else about requests.
#[derive(Clone, Debug)]
pub struct RedirectRequest {
    /// GET or HEAD.
    pub method: RedirectMethod,
    /// Address of the TCP peer.
    pub peer: Option<IpAddr>,
    /// The `X-Forwarded-For` header, as sent.
    pub forwarded_for: Option<String>,
    /// The `X-Real-Ip` header, as sent.
    pub real_ip: Option<String>,
}

impl RedirectRequest {
    /// A request with only a method (no client address known).
    pub fn new(method: RedirectMethod) -> Self {
        RedirectRequest {
            method,
            peer: None,
            forwarded_for: None,
            real_ip: None,
        }
    }

    /// The client's address: first entry of `X-Forwarded-For`, else
    /// `X-Real-Ip`, else the peer.
    pub fn client_addr(&self) -> Option<IpAddr> {
        let forwarded = self
            .forwarded_for
            .as_deref()
            .and_then(|h| h.split(',').next())
            .and_then(|s| s.trim().parse().ok());
        forwarded
            .or_else(|| self.real_ip.as_deref().and_then(|s| s.trim().parse().ok()))
            .or(self.peer)
    }
}

/// What a walk visitor wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkControl {
    /// Go on; enter the entry if it is a directory.
    Continue,
    /// Go on, but do not enter this directory (same as `Continue` for a file).
    SkipDir,
    /// End the walk now; `walk` returns `Ok`.
    Stop,
}

/// Called once per entry by `walk`. An error ends the walk and is returned
/// by `walk` unchanged.
pub type WalkVisitor<'a> = dyn FnMut(&FileInfo) -> Result<WalkControl> + Send + 'a;

/// A storage backend.
///
/// Contract (the conformance suite checks every line):
/// - `put_content` and a writer's `commit` are atomic: readers see the old
///   object or the new one, never a part.
/// - Uncommitted writer data is invisible to `get_content`, `reader`, `stat`,
///   `list`, `walk` and `delete`'s not-found check.
/// - Directories are implicit: a directory exists while something is stored
///   below it. Storing a file where a directory is, or below a file, is
///   implementation defined.
/// - Errors: [`Error::PathNotFound`] when nothing is there,
///   [`Error::InvalidOffset`] for reads past the end, [`Error::Unsupported`]
///   for what the backend cannot do, [`Error::Backend`] for everything else.
#[async_trait]
pub trait StorageDriver: Send + Sync + fmt::Debug + 'static {
    /// Registry name of the driver (`"s3"`); every error carries it.
    fn name(&self) -> &'static str;

    /// Optional capabilities; none by default.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// Most operations that may run at once (`maxthreads`); `None` = no limit.
    fn concurrency_limit(&self) -> Option<usize> {
        None
    }

    /// The counter of the requests this driver sends to its backend (see
    /// [`crate::RequestCounter`]); `None` for drivers with no remote backend
    /// (filesystem, inmemory). Middleware returns its inner driver's.
    fn request_counter(&self) -> Option<&crate::RequestCounter> {
        None
    }

    /// The object key `path` is stored under in the backend's bucket or
    /// container (root directory applied, no leading slash), for middleware
    /// that builds URLs to the object itself (CloudFront). `None` for
    /// drivers that do not store paths as object keys.
    fn object_key(&self, _path: &StoragePath) -> Option<String> {
        None
    }

    /// The whole object at `path`.
    async fn get_content(&self, path: &StoragePath) -> Result<Bytes>;

    /// Stores `content` at `path`, replacing what was there, atomically.
    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()>;

    /// Stores each `(path, content)` of `items` as
    /// [`StorageDriver::put_content`] does, in order: an item becomes
    /// visible only once every item before it is durable, so whoever finds
    /// an item (a reader, or a restart after a crash) finds the ones before
    /// it. Returns once every item is durable.
    ///
    /// On error, the items before the one that failed may be stored, that
    /// one is stored whole or not at all, and none after it is stored.
    /// An empty `items` does nothing.
    ///
    /// The default calls `put_content` for each item in turn. A driver
    /// whose durability barriers cost more than its writes overrides it to
    /// share them: the filesystem flushes the temporary files of all items
    /// in one barrier, then moves each into place in turn, so `n` items
    /// wait for `n + 1` barriers instead of `2n`.
    async fn put_contents_in_order(&self, items: &[(StoragePath, Bytes)]) -> Result<()> {
        for (path, content) in items {
            self.put_content(path, content.clone()).await?;
        }
        Ok(())
    }

    /// The epoch of this driver's *volatile* writes, or `None` (the
    /// default) when it has none.
    ///
    /// [`StorageDriver::put_content_volatile`],
    /// [`StorageDriver::put_content_if_absent_volatile`] and
    /// [`FileWriter::close_volatile`] are the same calls as the ones
    /// without the suffix, minus the durability barrier (`fsync`): for data
    /// a caller can rebuild or discard (the registry's upload state between
    /// chunks, its leases). With `Some(epoch)`, what they stored while the
    /// driver answered `epoch` reads back intact — to every process sharing
    /// the storage — for as long as it answers `epoch`; under another epoch
    /// (the machine restarted) it may be missing, older, cut short or
    /// damaged, so a caller that needs it records the epoch beside it and
    /// checks it before trusting it. With `None` the volatile calls are as
    /// durable as the others and nothing needs checking.
    ///
    /// Filesystem: the kernel's boot id on a local filesystem; `None` on
    /// network and cluster filesystems, where another machine may read
    /// what this one wrote. Object stores: `None` (every write is durable
    /// when it returns).
    fn volatile_epoch(&self) -> Option<&str> {
        None
    }

    /// [`StorageDriver::put_content`] without the durability barrier; see
    /// [`StorageDriver::volatile_epoch`]. Atomic like `put_content`: readers
    /// in this epoch see the old object or the new one.
    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        self.put_content(path, content).await
    }

    /// [`StorageDriver::put_content_if_absent`] without the durability
    /// barrier; see [`StorageDriver::volatile_epoch`]. Exactly one of
    /// concurrent callers stores, as with `put_content_if_absent`.
    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        self.put_content_if_absent(path, content).await
    }

    /// Stores `content` at `path` only if no object is there, atomically
    /// with respect to every other caller of the backend, in this process or
    /// any other: of concurrent calls for one path exactly one stores and
    /// returns `true`; the others return `false` and change nothing. An
    /// object at `path` (even one stored a moment ago) gives `false`.
    ///
    /// This is what instances sharing a backend build leases on (the
    /// registry's per-upload lease). A driver that implements it claims
    /// [`Capabilities::create_if_absent`]; the default is
    /// [`Error::Unsupported`], which makes such callers fall back to
    /// per-process locking. In-tree: S3 `If-None-Match: *`, Azure the same,
    /// GCS `ifGenerationMatch=0`, filesystem a hard link, inmemory; not
    /// Swift, whose `If-None-Match: *` is checked by each object server
    /// before the upload and lets two concurrent uploads both succeed.
    async fn put_content_if_absent(&self, _path: &StoragePath, _content: Bytes) -> Result<bool> {
        Err(Error::unsupported(
            "create-if-absent (put_content_if_absent)",
        ))
    }

    /// Streams the object from `offset`: `offset == size` gives an empty
    /// stream, `offset > size` is [`Error::InvalidOffset`].
    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream>;

    /// A writer for `path`. `append == false` starts afresh (discarding an
    /// unfinished writer at `path`); `append == true` resumes the closed,
    /// uncommitted writer at `path` — possibly left by another process — or
    /// starts from a committed zero-length object. With nothing to resume it
    /// is [`Error::PathNotFound`]; a committed non-empty object cannot be
    /// appended to ([`Error::Unsupported`]). The committed object at `path`
    /// stays as it was until `commit`.
    ///
    /// Drivers that can tell (filesystem: a lock on the staging file, also
    /// between processes) allow one open writer per path: opening another
    /// while one is open is [`Error::Busy`], and a committed object is never
    /// held open by a writer. Others (the object stores) leave callers to
    /// serialize writers of one path, as the registry does per upload.
    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>>;

    /// Metadata of the file or directory at `path`; `/` always exists.
    async fn stat(&self, path: &StoragePath) -> Result<FileInfo>;

    /// Direct children of the directory `path`, as absolute paths, in any
    /// order. `list("/")` of an empty store is empty; a missing directory is
    /// [`Error::PathNotFound`].
    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>>;

    /// A stamp of the set of children of the directory `path`, or `None`
    /// (the default) when the driver cannot give one now. Called only for
    /// a driver that claims [`Capabilities::children_stamps`].
    ///
    /// The promise: when two calls for one path return the same stamp, the
    /// directory had the same children (names, not contents) at both, by
    /// whichever process changed them. A stamp taken *before* a
    /// [`StorageDriver::list`] therefore lets a caller keep that list and
    /// serve it again for as long as the stamp stays the same: a change
    /// made after the stamp was taken yields another one. Cheaper than
    /// `list` (one `stat`), so a caller can check it on every request.
    ///
    /// Filesystem: on a local filesystem, from the directory's inode
    /// (number, change and modification times, link count), and only once
    /// the directory has been unchanged for two seconds, more than any
    /// timestamp granularity; `None` before that, on network and cluster
    /// filesystems, and for a missing directory. Object stores: `None`.
    async fn children_stamp(&self, _path: &StoragePath) -> Result<Option<DirStamp>> {
        Ok(None)
    }

    /// Moves the file `from` to `to`, replacing `to`. A missing `from` is
    /// [`Error::PathNotFound`] and leaves `to` untouched.
    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()>;

    /// Deletes the file at `path` and everything below `path/` (whole
    /// segments: `/a` never touches `/ab`), unfinished writers included.
    /// Nothing there is [`Error::PathNotFound`].
    async fn delete(&self, path: &StoragePath) -> Result<()>;

    /// Deletes the committed file (object) at each of `paths`: a batch of
    /// files a caller found by `list`, `walk` or `stat` (garbage
    /// collection), deleted in fewer requests where the backend allows.
    ///
    /// Contract:
    /// - A path with nothing there is fine: it is already gone, and no
    ///   [`Error::PathNotFound`] is returned for it. An empty `paths` does
    ///   nothing.
    /// - `paths` name files, not directories. What happens for a path that
    ///   is a directory is implementation defined: it may be deleted with
    ///   everything below it (as [`StorageDriver::delete`] does), or left
    ///   as it is.
    /// - Deleting never touches other paths (whole segments: `/a` never
    ///   touches `/ab`), and leaves no empty directory behind: a directory
    ///   whose last file was deleted is gone from `list`, `stat` and `walk`.
    /// - Unfinished writers at those paths may or may not be dropped.
    /// - On error some of the files may already be deleted, others not; the
    ///   error is the first failure seen, and the call may stop at it.
    ///
    /// The default calls [`StorageDriver::delete`] on `self` for each path
    /// (not-found ignored), up to 16 at once. Drivers that can delete many
    /// objects per request override it.
    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        delete_each(self, paths).await
    }

    /// A URL the client may fetch instead of the bytes (presigned, CDN).
    /// `None` means: serve the bytes directly.
    async fn redirect_url(
        &self,
        _request: &RedirectRequest,
        _path: &StoragePath,
    ) -> Result<Option<url::Url>> {
        Ok(None)
    }

    /// Visits everything below `path` in pre-order, siblings in byte order of
    /// their names (the [`Ord`] of [`StoragePath`]). Entries not after
    /// `start_after` in that order are not visited. A missing `path` is
    /// [`Error::PathNotFound`].
    ///
    /// The default lists each directory and stats each entry; drivers that
    /// can list a whole tree in fewer requests override it (keeping the
    /// order).
    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        crate::walk::walk_by_listing(self, path, start_after, visitor).await
    }
}

/// A writer returned by [`StorageDriver::writer`].
///
/// `close`, `commit` and `cancel` consume it. Dropping a writer without
/// calling one of them leaves it in an unspecified state: the data written
/// may or may not be resumable.
#[async_trait]
pub trait FileWriter: Send + fmt::Debug {
    /// Appends `data`.
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Bytes written so far, earlier sessions of a resumed writer included.
    fn size(&self) -> u64;

    /// Persists everything written so that `writer(path, true)` — in this
    /// process or another — can resume; publishes nothing.
    ///
    /// All or nothing: when it fails, the writer is left as
    /// [`FileWriter::rollback`] would leave it, as far as the backend allows
    /// (a driver that cannot take back what it sent says so in its docs).
    async fn close(self: Box<Self>) -> Result<()>;

    /// [`FileWriter::close`] without the durability barrier: what was
    /// written resumes as after `close` within the driver's epoch (see
    /// [`StorageDriver::volatile_epoch`]); a later `close` or `commit` makes
    /// every byte durable, those of volatile sessions included. Fails like
    /// `close`, all or nothing.
    async fn close_volatile(self: Box<Self>) -> Result<()> {
        self.close().await
    }

    /// Publishes everything written at the path, atomically. When it fails,
    /// the committed object is unchanged and the writer is left as after a
    /// failed [`FileWriter::close`].
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Discards everything written, earlier sessions included.
    async fn cancel(self: Box<Self>) -> Result<()>;

    /// Ends this session discarding what it wrote: a resumed writer is left
    /// closed exactly as it was when `writer(path, true)` opened it, so the
    /// next `writer(path, true)` resumes at that size; a writer opened afresh
    /// is cancelled. This is what lets a caller make a failed request change
    /// nothing (the registry's uploads).
    ///
    /// # Errors
    /// `Backend`; [`Error::Unsupported`] when the backend cannot take back
    /// bytes it already received (a GCS resumable session that was sent a
    /// part). After an error the writer's state is unspecified: cancel it.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// How many paths the default of [`StorageDriver::delete_files`] deletes at once.
const DELETE_FILES_CONCURRENCY: usize = 16;

/// The default of [`StorageDriver::delete_files`]: `driver.delete` of each
/// path, [`DELETE_FILES_CONCURRENCY`] at once, not-found ignored, stopping at
/// the first other error.
async fn delete_each<D: StorageDriver + ?Sized>(driver: &D, paths: &[StoragePath]) -> Result<()> {
    futures_util::stream::iter(paths.iter().map(Ok))
        .try_for_each_concurrent(DELETE_FILES_CONCURRENCY, |path| async move {
            match driver.delete(path).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            }
        })
        .await
}

impl Error {
    /// Maps "not found" to `Ok(None)`; other errors stay errors.
    pub fn into_option<T>(r: Result<T>) -> Result<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addr_prefers_forwarded_then_real_ip_then_peer() {
        let mut r = RedirectRequest::new(RedirectMethod::Get);
        r.peer = Some("10.0.0.9".parse().unwrap());
        assert_eq!(r.client_addr(), r.peer);
        r.real_ip = Some("192.0.2.7".into());
        assert_eq!(r.client_addr(), Some("192.0.2.7".parse().unwrap()));
        r.forwarded_for = Some("2001:db8::1, 10.1.1.1".into());
        assert_eq!(r.client_addr(), Some("2001:db8::1".parse().unwrap()));
    }
}
