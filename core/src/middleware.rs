//! The pass-through every storage middleware starts from.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::base::Driver;
use crate::driver::{
    ByteStream, Capabilities, FileInfo, FileWriter, RedirectRequest, StorageDriver, WalkVisitor,
};
use crate::error::Result;
use crate::metrics::RequestCounter;
use crate::path::StoragePath;

/// A storage middleware: a driver around another one ([`Middleware::inner`])
/// that changes only some operations.
///
/// Every method defaults to passing the call, unchanged, to the inner
/// driver's backend (the path is already validated; the inner [`Driver`]'s
/// metrics are not counted twice). Override the ones the middleware
/// changes; every `Middleware` is a [`StorageDriver`] through a blanket
/// implementation, registered with a
/// [`MiddlewareFactory`](crate::MiddlewareFactory). The registry name is the
/// inner driver's, so errors keep naming the backend.
///
/// One call is not passed on: [`StorageDriver::children_stamp`] is `None`
/// behind every middleware, which never claims
/// [`Capabilities::children_stamps`] (a middleware may change what `list`
/// returns, and the inner driver's stamp would not see that change).
#[async_trait]
pub trait Middleware: Send + Sync + fmt::Debug + 'static {
    /// The wrapped driver.
    fn inner(&self) -> &Driver;

    /// See [`StorageDriver::capabilities`].
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    /// See [`StorageDriver::get_content`].
    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        self.inner().backend().get_content(path).await
    }

    /// See [`StorageDriver::put_content`].
    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        self.inner().backend().put_content(path, content).await
    }

    /// See [`StorageDriver::put_content_if_absent`].
    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        self.inner()
            .backend()
            .put_content_if_absent(path, content)
            .await
    }

    /// See [`StorageDriver::put_contents_in_order`]. Defaults to this
    /// middleware's own `put_content` for each item in turn, so a
    /// middleware that changes `put_content` stays correct without knowing
    /// of this call; one that passes it on overrides this.
    async fn put_contents_in_order(&self, items: &[(StoragePath, Bytes)]) -> Result<()> {
        for (path, content) in items {
            Middleware::put_content(self, path, content.clone()).await?;
        }
        Ok(())
    }

    /// See [`StorageDriver::volatile_epoch`]. The inner driver's: writers
    /// pass through by default, and so does their
    /// [`FileWriter::close_volatile`].
    fn volatile_epoch(&self) -> Option<&str> {
        self.inner().volatile_epoch()
    }

    /// See [`StorageDriver::put_content_volatile`]. Defaults to this
    /// middleware's own (durable) `put_content`, so a middleware that
    /// changes `put_content` stays correct without knowing of volatile
    /// writes; one that passes them on overrides this.
    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        Middleware::put_content(self, path, content).await
    }

    /// See [`StorageDriver::put_content_if_absent_volatile`]. Defaults to
    /// this middleware's own `put_content_if_absent`, as
    /// [`Middleware::put_content_volatile`] does.
    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        Middleware::put_content_if_absent(self, path, content).await
    }

    /// See [`StorageDriver::reader`].
    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        self.inner().backend().reader(path, offset).await
    }

    /// See [`StorageDriver::writer`].
    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        self.inner().backend().writer(path, append).await
    }

    /// See [`StorageDriver::stat`].
    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        self.inner().backend().stat(path).await
    }

    /// See [`StorageDriver::list`].
    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        self.inner().backend().list(path).await
    }

    /// See [`StorageDriver::rename`].
    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        self.inner().backend().rename(from, to).await
    }

    /// See [`StorageDriver::delete`].
    async fn delete(&self, path: &StoragePath) -> Result<()> {
        self.inner().backend().delete(path).await
    }

    /// See [`StorageDriver::delete_files`]. The default passes the whole
    /// batch on, so a middleware that changes `delete` must change this too.
    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        self.inner().backend().delete_files(paths).await
    }

    /// See [`StorageDriver::redirect_url`].
    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<url::Url>> {
        self.inner().backend().redirect_url(request, path).await
    }

    /// See [`StorageDriver::walk`].
    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        self.inner()
            .backend()
            .walk(path, start_after, visitor)
            .await
    }
}

#[async_trait]
impl<M: Middleware> StorageDriver for M {
    fn name(&self) -> &'static str {
        self.inner().name()
    }

    fn capabilities(&self) -> Capabilities {
        Middleware::capabilities(self).with_children_stamps(false)
    }

    fn concurrency_limit(&self) -> Option<usize> {
        self.inner().backend().concurrency_limit()
    }

    fn request_counter(&self) -> Option<&RequestCounter> {
        self.inner().backend().request_counter()
    }

    fn object_key(&self, path: &StoragePath) -> Option<String> {
        self.inner().backend().object_key(path)
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        Middleware::get_content(self, path).await
    }

    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        Middleware::put_content(self, path, content).await
    }

    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        Middleware::put_content_if_absent(self, path, content).await
    }

    async fn put_contents_in_order(&self, items: &[(StoragePath, Bytes)]) -> Result<()> {
        Middleware::put_contents_in_order(self, items).await
    }

    fn volatile_epoch(&self) -> Option<&str> {
        Middleware::volatile_epoch(self)
    }

    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        Middleware::put_content_volatile(self, path, content).await
    }

    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        Middleware::put_content_if_absent_volatile(self, path, content).await
    }

    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        Middleware::reader(self, path, offset).await
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        Middleware::writer(self, path, append).await
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        Middleware::stat(self, path).await
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        Middleware::list(self, path).await
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        Middleware::rename(self, from, to).await
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        Middleware::delete(self, path).await
    }

    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        Middleware::delete_files(self, paths).await
    }

    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<url::Url>> {
        Middleware::redirect_url(self, request, path).await
    }

    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        Middleware::walk(self, path, start_after, visitor).await
    }
}
