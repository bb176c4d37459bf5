//! `latency`: a fixed delay per backend request, so a benchmark against a
//! loopback emulator shows what a driver's request count would cost against
//! a distant cloud.
//!
//! ```yaml
//! middleware:
//!   storage:
//!     - name: latency
//!       options:
//!         delay: 20ms
//! ```
//!
//! For drivers that count their requests (s3, azure, gcs: see
//! [`StorageDriver::request_counter`]) the delay is added inside the HTTP
//! client before every request — retries, listing pages and writer parts
//! included — so concurrent requests wait concurrently, as on a real
//! network. Drivers without a remote backend (filesystem, inmemory) take
//! the delay once per operation instead: each call, and each `write`,
//! `commit`, `close` and `cancel` of a writer.

use std::time::Duration;

use bytes::Bytes;
use regstore_core::{
    BuildFuture, ByteStream, Driver, Error, FileInfo, FileWriter, Middleware, MiddlewareFactory,
    ParamKind, ParamSpec, Params, RedirectRequest, Result, StorageDriver, StoragePath, WalkVisitor,
    async_trait,
};

/// Registry name of the middleware.
pub const NAME: &str = "latency";

const PARAMS: &[ParamSpec] = &[ParamSpec::new(
    "delay",
    ParamKind::Duration,
    "added before every backend request (e.g. 20ms)",
)
.required()];

/// The middleware's factory, as [`register`] adds it.
pub static FACTORY: MiddlewareFactory = MiddlewareFactory {
    name: NAME,
    description: "Adds a fixed delay to every backend request (per operation for local drivers).",
    params: PARAMS,
    build,
};

/// Makes this middleware known by name to `regstore_core::wrap` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_middleware(&FACTORY);
}

fn build(inner: Driver, params: Params) -> BuildFuture {
    Box::pin(async move {
        let delay = params
            .duration("delay")
            .ok_or_else(|| Error::config("delay is required, e.g. delay: 20ms"))?;
        Ok(Box::new(Latency::new(inner, delay)) as Box<dyn StorageDriver>)
    })
}

/// The middleware.
#[derive(Debug)]
pub struct Latency {
    inner: Driver,
    /// The delay per operation when the inner driver counts no requests.
    per_call: Option<Duration>,
}

impl Latency {
    /// Wraps `inner`: sets `delay` on its request counter, or adds it per
    /// operation when it has none.
    pub fn new(inner: Driver, delay: Duration) -> Self {
        let per_call = match inner.backend().request_counter() {
            Some(counter) => {
                counter.set_delay(delay);
                None
            }
            None => Some(delay),
        };
        Latency { inner, per_call }
    }

    async fn wait(&self) {
        if let Some(d) = self.per_call {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl Middleware for Latency {
    fn inner(&self) -> &Driver {
        &self.inner
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        self.wait().await;
        self.inner.backend().get_content(path).await
    }

    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        self.wait().await;
        self.inner.backend().put_content(path, content).await
    }

    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        self.wait().await;
        self.inner
            .backend()
            .put_content_if_absent(path, content)
            .await
    }

    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        self.wait().await;
        self.inner
            .backend()
            .put_content_volatile(path, content)
            .await
    }

    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        self.wait().await;
        self.inner
            .backend()
            .put_content_if_absent_volatile(path, content)
            .await
    }

    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        self.wait().await;
        self.inner.backend().reader(path, offset).await
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        self.wait().await;
        let w = self.inner.backend().writer(path, append).await?;
        Ok(match self.per_call {
            Some(delay) => Box::new(SlowWriter { inner: w, delay }),
            None => w,
        })
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        self.wait().await;
        self.inner.backend().stat(path).await
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        self.wait().await;
        self.inner.backend().list(path).await
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        self.wait().await;
        self.inner.backend().rename(from, to).await
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        self.wait().await;
        self.inner.backend().delete(path).await
    }

    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        self.wait().await;
        self.inner.backend().delete_files(paths).await
    }

    async fn redirect_url(
        &self,
        request: &RedirectRequest,
        path: &StoragePath,
    ) -> Result<Option<url::Url>> {
        // Signing is local computation, not a request.
        self.inner.backend().redirect_url(request, path).await
    }

    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        self.wait().await;
        self.inner.backend().walk(path, start_after, visitor).await
    }
}

/// A writer of a local driver, delayed per call.
#[derive(Debug)]
struct SlowWriter {
    inner: Box<dyn FileWriter>,
    delay: Duration,
}

#[async_trait]
impl FileWriter for SlowWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.write(data).await
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn close(self: Box<Self>) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.close().await
    }

    async fn close_volatile(self: Box<Self>) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.close_volatile().await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.commit().await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.cancel().await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.rollback().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_operation_of_a_local_driver_waits_the_delay() -> Result<()> {
        regstore_driver_inmemory::InMemoryDriver::new();
        regstore_driver_inmemory::register();
        let inner = regstore_core::create("inmemory", &Default::default()).await?;
        let mut raw = regstore_core::RawParams::new();
        raw.insert("delay".into(), "250ms".into());
        super::register();
        let d = regstore_core::wrap(inner, NAME, &raw).await?;
        let started = tokio::time::Instant::now();
        d.put_content("/a", "x").await?;
        d.stat("/a").await?;
        let mut w = d.writer("/b", false).await?;
        w.write(Bytes::from_static(b"y")).await?;
        w.commit().await?;
        // put, stat, writer, write, commit: five delays of the paused clock.
        assert_eq!(started.elapsed(), Duration::from_millis(1250));
        assert_eq!(d.get_content("/b").await?.as_ref(), b"y");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_delete_of_a_local_driver_waits_once() -> Result<()> {
        regstore_driver_inmemory::InMemoryDriver::new();
        regstore_driver_inmemory::register();
        let inner = regstore_core::create("inmemory", &Default::default()).await?;
        inner.put_content("/a/1", "x").await?;
        inner.put_content("/b/2", "y").await?;
        let mut raw = regstore_core::RawParams::new();
        raw.insert("delay".into(), "250ms".into());
        super::register();
        let d = regstore_core::wrap(inner, NAME, &raw).await?;
        let started = tokio::time::Instant::now();
        d.delete_files(&["/a/1", "/b/2", "/c/3"]).await?;
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert!(d.list("/").await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_or_bad_delay_is_a_config_error() {
        regstore_driver_inmemory::InMemoryDriver::new();
        for raw in [None, Some("soon")] {
            regstore_driver_inmemory::register();
            let inner = regstore_core::create("inmemory", &Default::default())
                .await
                .expect("inmemory");
            let mut params = regstore_core::RawParams::new();
            if let Some(v) = raw {
                params.insert("delay".into(), v.into());
            }
            super::register();
            let e = regstore_core::wrap(inner, NAME, &params)
                .await
                .expect_err("refused");
            assert!(e.to_string().contains("delay"), "{e}");
        }
    }
}
