//! The wrapper every constructed driver runs in.
//!
//! [`Driver`] is what the registry server, the conformance suite, the
//! benchmarks and middleware hold. It owns the cross-cutting work so that
//! driver crates hold backend logic only:
//! - paths arrive as strings (or [`StoragePath`]s) and are validated here,
//!   file operations refuse `/`;
//! - every error leaving it names the driver;
//! - every operation runs in a `tracing` span (`storage`, with `driver`,
//!   `op`, `path`; `delete_files` gives its first path and `count`) and is
//!   counted in [`Metrics`];
//! - at most [`StorageDriver::concurrency_limit`] operations run at once
//!   (distribution's `maxthreads`). Streams returned by `reader` do not hold
//!   a slot: a slow client must not starve everyone else.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::driver::{
    ByteStream, Capabilities, DirStamp, FileInfo, FileWriter, RedirectRequest, StorageDriver,
    WalkControl, WalkVisitor,
};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Op};
use crate::path::StoragePath;

/// A storage driver in its wrapper; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Driver {
    shared: Arc<Shared>,
}

struct Shared {
    backend: Box<dyn StorageDriver>,
    name: &'static str,
    metrics: Metrics,
    limit: Option<Semaphore>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("name", &self.shared.name)
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl Driver {
    /// Wraps `backend`. The factory in [`crate::registry`] does this for every
    /// driver it builds; call it directly only for drivers built by hand.
    pub fn new(backend: impl StorageDriver) -> Self {
        Self::from_box(Box::new(backend))
    }

    /// Wraps an already boxed backend.
    pub fn from_box(backend: Box<dyn StorageDriver>) -> Self {
        let name = backend.name();
        let limit = backend.concurrency_limit().map(Semaphore::new);
        Driver {
            shared: Arc::new(Shared {
                backend,
                name,
                metrics: Metrics::default(),
                limit,
            }),
        }
    }

    /// Registry name of the driver (or middleware) inside.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// What the driver inside claims it can do.
    pub fn capabilities(&self) -> Capabilities {
        self.shared.backend.capabilities()
    }

    /// Call counts and times per operation since construction.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Requests the driver inside has sent to its backend so far; `None`
    /// when it does not count them (see [`StorageDriver::request_counter`]).
    pub fn backend_requests(&self) -> Option<u64> {
        self.shared.backend.request_counter().map(|c| c.get())
    }

    /// The backend inside, for middleware that needs its concrete type.
    pub fn backend(&self) -> &dyn StorageDriver {
        self.shared.backend.as_ref()
    }

    fn parse(&self, path: &str, file: bool) -> Result<StoragePath> {
        let p = StoragePath::parse(path).map_err(|e| e.named(self.name()))?;
        if file && p.is_root() {
            return Err(
                Error::invalid_path(path, "the root is a directory, not a file").named(self.name()),
            );
        }
        Ok(p)
    }

    async fn run<T>(&self, op: Op, path: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let span = tracing::debug_span!("storage", driver = self.name(), op = op.as_str(), path);
        self.run_traced(op, span, fut).await
    }

    /// [`Driver::run`] in a span of the caller's making.
    async fn run_traced<T>(
        &self,
        op: Op,
        span: tracing::Span,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        async {
            let _permit = match &self.shared.limit {
                Some(sem) => Some(sem.acquire().await.map_err(Error::backend)?),
                None => None,
            };
            let started = Instant::now();
            let result = fut.await.map_err(|e| e.named(self.name()));
            self.shared.metrics.record(
                op,
                result.as_ref().err().map(Error::kind),
                started.elapsed(),
            );
            if let Err(e) = &result {
                if e.is_not_found() {
                    tracing::trace!(error = %e, "not found");
                } else {
                    tracing::debug!(error = %e, "failed");
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    /// The whole object at `path`.
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound`, `Backend`.
    pub async fn get_content(&self, path: impl AsRef<str>) -> Result<Bytes> {
        let path = path.as_ref();
        let p = self.parse(path, true)?;
        self.run(Op::GetContent, path, self.shared.backend.get_content(&p))
            .await
    }

    /// Stores `content` at `path` atomically, replacing what was there.
    ///
    /// # Errors
    /// `InvalidPath`, `Backend`.
    pub async fn put_content(
        &self,
        path: impl AsRef<str>,
        content: impl Into<Bytes>,
    ) -> Result<()> {
        self.put(path.as_ref(), content.into(), false).await
    }

    /// Stores `content` at `path` if nothing is there; see
    /// [`StorageDriver::put_content_if_absent`]. `Ok(false)`: something was.
    ///
    /// # Errors
    /// `InvalidPath`, `Unsupported` (the driver cannot create atomically),
    /// `Backend`.
    pub async fn put_content_if_absent(
        &self,
        path: impl AsRef<str>,
        content: impl Into<Bytes>,
    ) -> Result<bool> {
        self.put_if_absent(path.as_ref(), content.into(), false)
            .await
    }

    /// Stores each `(path, content)` of `items` in order, each visible only
    /// once those before it are durable; see
    /// [`StorageDriver::put_contents_in_order`]. Every path is checked
    /// before anything is stored. Counted as one `put_content` per item,
    /// each with the latency of the whole call.
    ///
    /// # Errors
    /// `InvalidPath` (then nothing is stored), `Backend`.
    pub async fn put_contents_in_order<P: AsRef<str>>(&self, items: Vec<(P, Bytes)>) -> Result<()> {
        let mut parsed = Vec::with_capacity(items.len());
        for (path, content) in items {
            parsed.push((self.parse(path.as_ref(), true)?, content));
        }
        let Some(((first, _), rest)) = parsed.split_first() else {
            return Ok(());
        };
        let started = Instant::now();
        let call = self.shared.backend.put_contents_in_order(&parsed);
        let result = self.run(Op::PutContent, first.as_str(), call).await;
        for _ in rest {
            self.shared.metrics.record(
                Op::PutContent,
                result.as_ref().err().map(Error::kind),
                started.elapsed(),
            );
        }
        result
    }

    /// See [`StorageDriver::volatile_epoch`]: `Some` when the driver's
    /// `_volatile` calls skip the durability barrier.
    pub fn volatile_epoch(&self) -> Option<&str> {
        self.shared.backend.volatile_epoch()
    }

    /// [`Driver::put_content`] without the durability barrier (see
    /// [`StorageDriver::volatile_epoch`]); counted as `put_content`.
    ///
    /// # Errors
    /// `InvalidPath`, `Backend`.
    pub async fn put_content_volatile(
        &self,
        path: impl AsRef<str>,
        content: impl Into<Bytes>,
    ) -> Result<()> {
        self.put(path.as_ref(), content.into(), true).await
    }

    /// [`Driver::put_content_if_absent`] without the durability barrier
    /// (see [`StorageDriver::volatile_epoch`]); counted as
    /// `put_content_if_absent`.
    ///
    /// # Errors
    /// As [`Driver::put_content_if_absent`].
    pub async fn put_content_if_absent_volatile(
        &self,
        path: impl AsRef<str>,
        content: impl Into<Bytes>,
    ) -> Result<bool> {
        self.put_if_absent(path.as_ref(), content.into(), true)
            .await
    }

    /// `put_content`, or with `volatile` its volatile form.
    async fn put(&self, path: &str, content: Bytes, volatile: bool) -> Result<()> {
        let p = self.parse(path, true)?;
        let backend = &self.shared.backend;
        let call = async {
            if volatile {
                backend.put_content_volatile(&p, content).await
            } else {
                backend.put_content(&p, content).await
            }
        };
        self.run(Op::PutContent, path, call).await
    }

    /// `put_content_if_absent`, or with `volatile` its volatile form.
    async fn put_if_absent(&self, path: &str, content: Bytes, volatile: bool) -> Result<bool> {
        let p = self.parse(path, true)?;
        let backend = &self.shared.backend;
        let call = async {
            if volatile {
                backend.put_content_if_absent_volatile(&p, content).await
            } else {
                backend.put_content_if_absent(&p, content).await
            }
        };
        self.run(Op::PutContentIfAbsent, path, call).await
    }

    /// Streams the object at `path` from `offset`.
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound`, `InvalidOffset` (past the end),
    /// `Backend`; stream items carry errors named like the others.
    pub async fn reader(&self, path: impl AsRef<str>, offset: u64) -> Result<ByteStream> {
        let path = path.as_ref();
        let p = self.parse(path, true)?;
        let stream = self
            .run(Op::Reader, path, self.shared.backend.reader(&p, offset))
            .await?;
        let name = self.name();
        Ok(Box::pin(
            stream.map(move |item| item.map_err(|e| e.named(name))),
        ))
    }

    /// A writer for `path`; see [`StorageDriver::writer`] for `append`.
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound` (append with nothing to resume),
    /// `Unsupported` (append to a committed non-empty object), `Backend`.
    pub async fn writer(&self, path: impl AsRef<str>, append: bool) -> Result<Writer> {
        let path = path.as_ref();
        let p = self.parse(path, true)?;
        let inner = self
            .run(Op::Writer, path, self.shared.backend.writer(&p, append))
            .await?;
        Ok(Writer {
            inner,
            driver: self.clone(),
            path: p,
        })
    }

    /// Metadata of `path` (`/` included).
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound`, `Backend`.
    pub async fn stat(&self, path: impl AsRef<str>) -> Result<FileInfo> {
        let path = path.as_ref();
        let p = self.parse(path, false)?;
        self.run(Op::Stat, path, self.shared.backend.stat(&p)).await
    }

    /// Direct children of the directory `path`, sorted in walk order.
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound`, `Backend`.
    pub async fn list(&self, path: impl AsRef<str>) -> Result<Vec<StoragePath>> {
        let path = path.as_ref();
        let p = self.parse(path, false)?;
        let mut children = self
            .run(Op::List, path, self.shared.backend.list(&p))
            .await?;
        crate::walk::sort_children(&p, &mut children, |c| c);
        Ok(children)
    }

    /// See [`StorageDriver::children_stamp`]: a stamp of the children of
    /// the directory `path`, or `None`; counted as a `stat`. A driver that
    /// does not claim [`Capabilities::children_stamps`] is not asked, and
    /// nothing is counted.
    ///
    /// # Errors
    /// `InvalidPath`, `Backend`.
    pub async fn children_stamp(&self, path: impl AsRef<str>) -> Result<Option<DirStamp>> {
        let path = path.as_ref();
        let p = self.parse(path, false)?;
        if !self.capabilities().children_stamps {
            return Ok(None);
        }
        self.run(Op::Stat, path, self.shared.backend.children_stamp(&p))
            .await
    }

    /// Moves the file `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound` (`from` missing; `to` untouched), `Backend`.
    pub async fn rename(&self, from: impl AsRef<str>, to: impl AsRef<str>) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let f = self.parse(from, true)?;
        let t = self.parse(to, true)?;
        self.run(Op::Rename, from, self.shared.backend.rename(&f, &t))
            .await
    }

    /// Deletes `path` and everything below it.
    ///
    /// # Errors
    /// `InvalidPath` (`/` cannot be deleted), `PathNotFound`, `Backend`.
    pub async fn delete(&self, path: impl AsRef<str>) -> Result<()> {
        let path = path.as_ref();
        let p = self.parse(path, true)?;
        self.run(Op::Delete, path, self.shared.backend.delete(&p))
            .await
    }

    /// Deletes the file at each of `paths`, in as few backend requests as
    /// the driver can; see [`StorageDriver::delete_files`] for the contract
    /// (a path with nothing there is fine; directory paths are
    /// implementation defined; on error some files may be deleted already).
    /// Every path is validated first: one invalid path, and nothing is
    /// deleted. The call is one operation (`delete_files`) in the metrics
    /// and takes one slot of the concurrency limit, however many paths.
    ///
    /// # Errors
    /// `InvalidPath` (a malformed path, or `/`), `Backend` (the first
    /// failure of the backend).
    pub async fn delete_files<S: AsRef<str> + Sync>(&self, paths: &[S]) -> Result<()> {
        let parsed = paths
            .iter()
            .map(|p| self.parse(p.as_ref(), true))
            .collect::<Result<Vec<_>>>()?;
        let first = parsed.first().map_or("", StoragePath::as_str);
        self.run_traced(
            Op::DeleteFiles,
            tracing::debug_span!(
                "storage",
                driver = self.name(),
                op = Op::DeleteFiles.as_str(),
                path = first,
                count = parsed.len(),
            ),
            self.shared.backend.delete_files(&parsed),
        )
        .await
    }

    /// A URL the client may fetch instead of the bytes, if the driver has one.
    ///
    /// # Errors
    /// `InvalidPath`, `Backend` (e.g. signing failed).
    pub async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: impl AsRef<str>,
    ) -> Result<Option<url::Url>> {
        let path = path.as_ref();
        let p = self.parse(path, true)?;
        self.run(
            Op::RedirectUrl,
            path,
            self.shared.backend.redirect_url(request, &p),
        )
        .await
    }

    /// Walks below `path`; see [`StorageDriver::walk`].
    ///
    /// # Errors
    /// `InvalidPath`, `PathNotFound`, `Backend`, or the visitor's error.
    pub async fn walk(
        &self,
        path: impl AsRef<str>,
        start_after: Option<&str>,
        mut visitor: impl FnMut(&FileInfo) -> Result<WalkControl> + Send,
    ) -> Result<()> {
        let path = path.as_ref();
        let p = self.parse(path, false)?;
        let hint = start_after.map(|h| self.parse(h, false)).transpose()?;
        self.run(
            Op::Walk,
            path,
            self.shared.backend.walk(&p, hint.as_ref(), &mut visitor),
        )
        .await
    }

    /// Every entry below `path`, in walk order.
    ///
    /// # Errors
    /// As [`Driver::walk`].
    pub async fn walk_all(&self, path: impl AsRef<str>) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        self.walk(path, None, |fi| {
            out.push(fi.clone());
            Ok(WalkControl::Continue)
        })
        .await?;
        Ok(out)
    }
}

/// A writer in the wrapper: errors named, calls counted and limited.
#[derive(Debug)]
pub struct Writer {
    inner: Box<dyn FileWriter>,
    driver: Driver,
    path: StoragePath,
}

impl Writer {
    /// The path the writer commits to.
    pub fn path(&self) -> &StoragePath {
        &self.path
    }

    /// Appends `data` (empty data is a no-op).
    ///
    /// # Errors
    /// `Backend`; after an error the writer should be rolled back or cancelled.
    pub async fn write(&mut self, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        let Writer {
            inner,
            driver,
            path,
        } = self;
        driver
            .run(Op::Write, path.as_str(), inner.write(data))
            .await
    }

    /// Bytes written so far, earlier sessions included.
    pub fn size(&self) -> u64 {
        self.inner.size()
    }

    /// Persists for a later `writer(path, true)`; publishes nothing.
    ///
    /// # Errors
    /// `Backend`.
    pub async fn close(self) -> Result<()> {
        let Writer {
            inner,
            driver,
            path,
        } = self;
        driver.run(Op::Close, path.as_str(), inner.close()).await
    }

    /// [`Writer::close`] without the durability barrier (see
    /// [`FileWriter::close_volatile`]); counted as `close`.
    ///
    /// # Errors
    /// `Backend`.
    pub async fn close_volatile(self) -> Result<()> {
        let Writer {
            inner,
            driver,
            path,
        } = self;
        driver
            .run(Op::Close, path.as_str(), inner.close_volatile())
            .await
    }

    /// Publishes everything written at the path, atomically.
    ///
    /// # Errors
    /// `Backend`; the committed object at the path is then unchanged.
    pub async fn commit(self) -> Result<()> {
        let Writer {
            inner,
            driver,
            path,
        } = self;
        driver.run(Op::Commit, path.as_str(), inner.commit()).await
    }

    /// Discards everything written, earlier sessions included.
    ///
    /// # Errors
    /// `Backend`.
    pub async fn cancel(self) -> Result<()> {
        let Writer {
            inner,
            driver,
            path,
        } = self;
        driver.run(Op::Cancel, path.as_str(), inner.cancel()).await
    }

    /// Ends the session discarding what it wrote: a resumed writer stays
    /// as it was resumed, a fresh one is cancelled (see
    /// [`FileWriter::rollback`]).
    ///
    /// # Errors
    /// `Backend`, `Unsupported`; the writer should then be cancelled.
    pub async fn rollback(self) -> Result<()> {
        let Writer {
            inner,
            driver,
            path,
        } = self;
        driver
            .run(Op::Rollback, path.as_str(), inner.rollback())
            .await
    }
}

#[async_trait]
impl FileWriter for Writer {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        Writer::write(self, data).await
    }
    fn size(&self) -> u64 {
        Writer::size(self)
    }
    async fn close(self: Box<Self>) -> Result<()> {
        Writer::close(*self).await
    }
    async fn close_volatile(self: Box<Self>) -> Result<()> {
        Writer::close_volatile(*self).await
    }
    async fn commit(self: Box<Self>) -> Result<()> {
        Writer::commit(*self).await
    }
    async fn cancel(self: Box<Self>) -> Result<()> {
        Writer::cancel(*self).await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        Writer::rollback(*self).await
    }
}

/// A `Driver` is itself a [`StorageDriver`], so middleware can wrap one and be
/// wrapped again; errors keep the name of the innermost driver that raised
/// them.
#[async_trait]
impl StorageDriver for Driver {
    fn name(&self) -> &'static str {
        Driver::name(self)
    }
    fn capabilities(&self) -> Capabilities {
        Driver::capabilities(self)
    }
    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        Driver::get_content(self, path).await
    }
    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        Driver::put_content(self, path, content).await
    }
    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        Driver::put_content_if_absent(self, path, content).await
    }
    fn volatile_epoch(&self) -> Option<&str> {
        Driver::volatile_epoch(self)
    }
    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        Driver::put_content_volatile(self, path, content).await
    }
    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        Driver::put_content_if_absent_volatile(self, path, content).await
    }
    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        Driver::reader(self, path, offset).await
    }
    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(Driver::writer(self, path, append).await?))
    }
    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        Driver::stat(self, path).await
    }
    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        Driver::list(self, path).await
    }
    async fn children_stamp(&self, path: &StoragePath) -> Result<Option<DirStamp>> {
        Driver::children_stamp(self, path).await
    }
    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        Driver::rename(self, from, to).await
    }
    async fn delete(&self, path: &StoragePath) -> Result<()> {
        Driver::delete(self, path).await
    }
    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        Driver::delete_files(self, paths).await
    }
    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<url::Url>> {
        Driver::redirect_url(self, request, path).await
    }
    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        Driver::walk(self, path, start_after.map(|p| p.as_str()), visitor).await
    }
}
