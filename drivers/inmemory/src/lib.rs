//! `inmemory`: every object in process memory, lost when the process ends.
//!
//! This driver is the reference semantics of the contract: the model-based
//! property tests run random operation sequences against another driver and
//! against this one and demand the same results. It takes no parameters.
//!
//! Objects are kept as lists of immutable [`Bytes`] chunks, so writing a
//! large stream costs one copy of each byte (into a chunk of up to 1 MiB),
//! never a re-copy of everything written so far; readers stream the chunks
//! of the version that was current when they opened. Files are kept in one
//! ordered map keyed by [`StoragePath`], whose order is the walk order: a
//! directory's descendants are the contiguous run of keys after it.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use regstore_core::{
    BuildFuture, ByteStream, Capabilities, DriverFactory, Error, FileInfo, FileWriter, Params,
    Result, StorageDriver, StoragePath, async_trait,
};

const NAME: &str = "inmemory";
/// Writes are gathered into chunks of this size before they are frozen.
const CHUNK: usize = 1 << 20;

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: NAME,
    description: "Keeps everything in process memory (lost on exit); the reference driver for tests.",
    params: &[],
    build,
};

/// Makes this driver known by name to `regstore_core::create` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_driver(&FACTORY);
}

fn build(_params: Params) -> BuildFuture {
    Box::pin(async { Ok(Box::new(InMemoryDriver::new()) as Box<dyn StorageDriver>) })
}

/// An immutable object body: chunks and the offset at which each starts.
#[derive(Clone, Debug, Default)]
struct Content {
    chunks: Arc<[Bytes]>,
    starts: Arc<[u64]>,
    size: u64,
}

impl Content {
    fn from_chunks(chunks: Vec<Bytes>) -> Self {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut size = 0u64;
        for c in &chunks {
            starts.push(size);
            size += c.len() as u64;
        }
        Content {
            chunks: chunks.into(),
            starts: starts.into(),
            size,
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut out = BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
                for c in self.chunks.iter() {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }

    /// The chunks from `offset` on, the first one sliced.
    fn chunks_from(&self, offset: u64) -> Vec<Bytes> {
        let first = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let mut out = Vec::with_capacity(self.chunks.len().saturating_sub(first));
        for (i, c) in self.chunks.iter().enumerate().skip(first) {
            let skip = offset.saturating_sub(self.starts[i]) as usize;
            if skip < c.len() {
                out.push(c.slice(skip..));
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
struct File {
    content: Content,
    mod_time: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<StoragePath, File>,
    /// Closed, uncommitted writers by path.
    pending: HashMap<StoragePath, Vec<Bytes>>,
}

impl State {
    /// Keys at `dir` or below it, as a range of the ordered map.
    fn subtree(&self, dir: &StoragePath) -> impl Iterator<Item = (&StoragePath, &File)> {
        self.files
            .range((Bound::Included(dir), Bound::Unbounded))
            .take_while(move |(p, _)| *p == dir || dir.is_ancestor_of(p))
    }
}

/// The in-memory driver; cheap to clone, clones share the same store.
#[derive(Clone, Debug, Default)]
pub struct InMemoryDriver {
    state: Arc<Mutex<State>>,
}

impl InMemoryDriver {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No operation leaves the state half-updated, so a poisoned lock
        // (a panic elsewhere) still guards a consistent map.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self, path: &StoragePath) -> Result<File> {
        self.lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| Error::not_found(path))
    }
}

#[async_trait]
impl StorageDriver for InMemoryDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_create_if_absent(true)
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        Ok(self.file(path)?.content.to_bytes())
    }

    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let file = File {
            content: Content::from_chunks(vec![content]),
            mod_time: SystemTime::now(),
        };
        self.lock().files.insert(path.clone(), file);
        Ok(())
    }

    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        let mut state = self.lock();
        if state.files.contains_key(path) {
            return Ok(false);
        }
        let file = File {
            content: Content::from_chunks(vec![content]),
            mod_time: SystemTime::now(),
        };
        state.files.insert(path.clone(), file);
        Ok(true)
    }

    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        let file = self.file(path)?;
        if offset > file.content.size {
            return Err(Error::invalid_offset(path, offset));
        }
        let chunks = file.content.chunks_from(offset);
        Ok(Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(Ok),
        )))
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let mut state = self.lock();
        let chunks = if !append {
            state.pending.remove(path);
            Vec::new()
        } else if let Some(chunks) = state.pending.get(path) {
            chunks.clone()
        } else {
            match state.files.get(path) {
                Some(f) if f.content.size == 0 => Vec::new(),
                Some(f) => {
                    return Err(Error::unsupported(format!(
                        "appending to {path}, a committed object of {} bytes",
                        f.content.size
                    )));
                }
                None => return Err(Error::not_found(path)),
            }
        };
        let size = chunks.iter().map(|c| c.len() as u64).sum();
        Ok(Box::new(InMemoryWriter {
            driver: self.clone(),
            path: path.clone(),
            chunks,
            tail: BytesMut::new(),
            size,
            resumed: append,
        }))
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        if path.is_root() {
            return Ok(FileInfo::dir(path.clone(), None));
        }
        let state = self.lock();
        let mut below = state.subtree(path);
        match below.next() {
            Some((p, f)) if p == path => {
                Ok(FileInfo::file(path.clone(), f.content.size, f.mod_time))
            }
            Some(_) => Ok(FileInfo::dir(path.clone(), None)),
            None => Err(Error::not_found(path)),
        }
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        let state = self.lock();
        let mut children: Vec<StoragePath> = Vec::new();
        for (p, _) in state.subtree(path) {
            let Some(rel) = p.relative_to(path) else {
                continue;
            };
            let Some(first) = rel.split('/').next().filter(|s| !s.is_empty()) else {
                continue;
            };
            if children.last().and_then(|c| c.file_name()) != Some(first) {
                children.push(path.join(first)?);
            }
        }
        if children.is_empty() && !path.is_root() {
            return Err(Error::not_found(path));
        }
        Ok(children)
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let mut state = self.lock();
        let file = state
            .files
            .remove(from)
            .ok_or_else(|| Error::not_found(from))?;
        state.files.insert(to.clone(), file);
        Ok(())
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let mut state = self.lock();
        let doomed: Vec<StoragePath> = state.subtree(path).map(|(p, _)| p.clone()).collect();
        for p in &doomed {
            state.files.remove(p);
        }
        state
            .pending
            .retain(|p, _| !(p == path || path.is_ancestor_of(p)));
        if doomed.is_empty() {
            return Err(Error::not_found(path));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct InMemoryWriter {
    driver: InMemoryDriver,
    path: StoragePath,
    chunks: Vec<Bytes>,
    tail: BytesMut,
    size: u64,
    /// Opened with `append`: its closed state is still in `pending`.
    resumed: bool,
}

impl InMemoryWriter {
    fn finish(mut self) -> (InMemoryDriver, StoragePath, Vec<Bytes>) {
        if !self.tail.is_empty() {
            self.chunks.push(self.tail.split().freeze());
        }
        (self.driver, self.path, self.chunks)
    }
}

#[async_trait]
impl FileWriter for InMemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.size += data.len() as u64;
        if data.len() >= CHUNK && self.tail.is_empty() {
            // Large writes are kept as they came: no copy at all.
            self.chunks.push(data);
            return Ok(());
        }
        self.tail.extend_from_slice(&data);
        if self.tail.len() >= CHUNK {
            self.chunks.push(self.tail.split().freeze());
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(self: Box<Self>) -> Result<()> {
        let (driver, path, chunks) = self.finish();
        driver.lock().pending.insert(path, chunks);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let (driver, path, chunks) = self.finish();
        let mut state = driver.lock();
        state.pending.remove(&path);
        state.files.insert(
            path,
            File {
                content: Content::from_chunks(chunks),
                mod_time: SystemTime::now(),
            },
        );
        Ok(())
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        let (driver, path, _) = self.finish();
        driver.lock().pending.remove(&path);
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        // A resumed writer worked on a copy: what `pending` holds is the
        // state it was resumed from.
        if self.resumed {
            Ok(())
        } else {
            self.cancel().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use regstore_core::Driver;

    #[tokio::test]
    async fn reader_slices_chunks_at_any_offset() {
        let d = Driver::new(InMemoryDriver::new());
        let mut w = d.writer("/f", false).await.unwrap();
        for part in [&b"abc"[..], b"", b"defg", b"h"] {
            w.write(Bytes::copy_from_slice(part)).await.unwrap();
        }
        w.close().await.unwrap();
        let mut w = d.writer("/f", true).await.unwrap();
        w.write(Bytes::from_static(b"ij")).await.unwrap();
        w.commit().await.unwrap();
        for off in 0..=10u64 {
            let got: Vec<Bytes> = d
                .reader("/f", off)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got.concat(), &b"abcdefghij"[off as usize..], "offset {off}");
        }
        assert!(matches!(
            d.reader("/f", 11).await,
            Err(Error::InvalidOffset { offset: 11, .. })
        ));
    }

    #[tokio::test]
    async fn large_writes_are_not_copied() {
        let d = Driver::new(InMemoryDriver::new());
        let big = Bytes::from(vec![7u8; 4 * CHUNK]);
        let mut w = d.writer("/big", false).await.unwrap();
        w.write(big.clone()).await.unwrap();
        w.commit().await.unwrap();
        let got = d.get_content("/big").await.unwrap();
        // One chunk: handed back as the same allocation.
        assert_eq!(got.as_ptr(), big.as_ptr());
    }
}
