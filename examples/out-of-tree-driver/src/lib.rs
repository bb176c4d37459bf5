//! `flatdir`: a regstore storage driver written outside regstore's
//! repository — every object is one file in a single flat directory.
//!
//! The object at `/a/b/c` is the file `a+b+c` under `rootdirectory` (`+`
//! never occurs in a storage path); directories are implicit, found by
//! prefix. An unfinished writer of `/a/b` is the file `~a+b`, invisible to
//! reads and listings; `commit` renames it into place. Listing scans the
//! whole directory, so this suits small stores: it is here to show what a
//! driver crate of a third party looks like, and it passes the whole
//! conformance suite.
//!
//! A driver crate needs three things:
//! 1. a [`StorageDriver`] (and a [`FileWriter`]) with backend logic only —
//!    paths arrive validated, errors are built with [`Error`]'s
//!    constructors and get the driver's name from the wrapper;
//! 2. a [`DriverFactory`] declared once, with its parameters;
//! 3. a [`register`] function, which a binary calls before
//!    `regstore_cli::main()` (see `src/main.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream;
use regstore_core::params::ParamKind;
use regstore_core::{
    BuildFuture, ByteStream, DriverFactory, Error, FileInfo, FileWriter, ParamSpec, Params, Result,
    StorageDriver, StoragePath, async_trait,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const NAME: &str = "flatdir";

/// Bytes per item of a reader's stream.
const CHUNK: usize = 1 << 20;

/// The driver's factory, as [`register`] adds it.
pub static FACTORY: DriverFactory = DriverFactory {
    name: NAME,
    description: "Every object one file in a flat directory (an out-of-tree example driver).",
    params: &[ParamSpec::new(
        "rootdirectory",
        ParamKind::String,
        "Directory holding the object files (created if missing)",
    )
    .required()],
    build,
};

/// Makes `flatdir` known by name to `regstore_core::create`, so configs
/// (`storage: flatdir:`) and `--driver flatdir` can use it. Idempotent.
pub fn register() {
    regstore_core::register_driver(&FACTORY);
}

fn build(params: Params) -> BuildFuture {
    Box::pin(async move {
        let root = params.require_string("rootdirectory")?;
        Ok(Box::new(FlatDirDriver::new(root)?) as Box<dyn StorageDriver>)
    })
}

/// The driver: object files under one directory.
#[derive(Debug)]
pub struct FlatDirDriver {
    root: PathBuf,
    temp: AtomicU64,
}

/// An I/O error as the contract wants it: not-found for `path`, else a
/// backend error.
fn io(e: std::io::Error, path: &StoragePath) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::not_found(path)
    } else {
        Error::backend(e)
    }
}

/// The file name of the object at `path` (`/a/b` → `a+b`).
fn encode(path: &StoragePath) -> String {
    path.segments().collect::<Vec<_>>().join("+")
}

impl FlatDirDriver {
    /// The driver on `root`, created if missing.
    ///
    /// # Errors
    /// `Config` when the directory cannot be created.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| {
            Error::config(format!(
                "rootdirectory {}: cannot create it: {e}",
                root.display()
            ))
        })?;
        Ok(FlatDirDriver {
            root,
            temp: AtomicU64::new(0),
        })
    }

    fn object(&self, path: &StoragePath) -> PathBuf {
        self.root.join(encode(path))
    }

    fn staging(&self, path: &StoragePath) -> PathBuf {
        self.root.join(format!("~{}", encode(path)))
    }

    /// Names of all committed objects.
    async fn names(&self) -> Result<Vec<String>> {
        let mut dir = tokio::fs::read_dir(&self.root)
            .await
            .map_err(Error::backend)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(Error::backend)? {
            if let Some(name) = entry.file_name().to_str()
                && !name.starts_with('~')
            {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    /// The name prefix of everything below the directory `path`.
    fn prefix(path: &StoragePath) -> String {
        if path.is_root() {
            String::new()
        } else {
            format!("{}+", encode(path))
        }
    }
}

#[async_trait]
impl StorageDriver for FlatDirDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        match tokio::fs::read(self.object(path)).await {
            Ok(b) => Ok(b.into()),
            // A directory of the same name is not a file.
            Err(e) => Err(io(e, path)),
        }
    }

    /// Writes a temporary file and renames it into place.
    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let n = self.temp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(format!("~tmp-{}-{n}", std::process::id()));
        let written = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&content).await?;
            f.sync_all().await?;
            tokio::fs::rename(&tmp, self.object(path)).await
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        written.map_err(Error::backend)
    }

    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        let mut file = tokio::fs::File::open(self.object(path))
            .await
            .map_err(|e| io(e, path))?;
        let len = file.metadata().await.map_err(Error::backend)?.len();
        if offset > len {
            return Err(Error::invalid_offset(path, offset));
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(Error::backend)?;
        Ok(Box::pin(stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(Error::backend(e)), None)),
            }
        })))
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let staging = self.staging(path);
        let target = self.object(path);
        let mut options = tokio::fs::OpenOptions::new();
        if append {
            match tokio::fs::metadata(&staging).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Nothing unfinished: a committed empty object may be
                    // appended to, anything else may not.
                    match tokio::fs::metadata(&target).await {
                        Ok(m) if m.is_file() && m.len() == 0 => {}
                        Ok(_) => {
                            return Err(Error::unsupported(
                                "appending to a committed non-empty object",
                            ));
                        }
                        Err(e) => return Err(io(e, path)),
                    }
                }
                Err(e) => return Err(Error::backend(e)),
            }
            options.create(true).append(true);
        } else {
            options.create(true).write(true).truncate(true);
        }
        let file = options.open(&staging).await.map_err(Error::backend)?;
        let size = file.metadata().await.map_err(Error::backend)?.len();
        Ok(Box::new(FlatDirWriter {
            file,
            staging,
            target,
            size,
            resumed_at: append.then_some(size),
        }))
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        if path.is_root() {
            return Ok(FileInfo::dir(path.clone(), None));
        }
        match tokio::fs::metadata(self.object(path)).await {
            Ok(m) => {
                let modified = m.modified().unwrap_or_else(|_| SystemTime::now());
                return Ok(FileInfo::file(path.clone(), m.len(), modified));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::backend(e)),
        }
        let prefix = Self::prefix(path);
        if self.names().await?.iter().any(|n| n.starts_with(&prefix)) {
            Ok(FileInfo::dir(path.clone(), None))
        } else {
            Err(Error::not_found(path))
        }
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        let prefix = Self::prefix(path);
        let mut children: Vec<&str> = Vec::new();
        let names = self.names().await?;
        for name in &names {
            if let Some(rest) = name.strip_prefix(&prefix) {
                let child = rest.split('+').next().unwrap_or(rest);
                if !children.contains(&child) {
                    children.push(child);
                }
            }
        }
        if children.is_empty() && !path.is_root() {
            return Err(Error::not_found(path));
        }
        children.into_iter().map(|c| path.join(c)).collect()
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        tokio::fs::rename(self.object(from), self.object(to))
            .await
            .map_err(|e| io(e, from))
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let own = encode(path);
        let prefix = Self::prefix(path);
        let mut found = false;
        let mut dir = tokio::fs::read_dir(&self.root)
            .await
            .map_err(Error::backend)?;
        while let Some(entry) = dir.next_entry().await.map_err(Error::backend)? {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let committed = name == own || name.starts_with(&prefix);
            let unfinished = name
                .strip_prefix('~')
                .is_some_and(|n| n == own || n.starts_with(&prefix));
            if committed || unfinished {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => found |= committed,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::backend(e)),
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(Error::not_found(path))
        }
    }
}

/// A writer: the staging file `~<name>`, renamed over the object on commit.
#[derive(Debug)]
struct FlatDirWriter {
    file: tokio::fs::File,
    staging: PathBuf,
    target: PathBuf,
    size: u64,
    /// The size `writer(path, true)` found; `None` for a fresh writer.
    resumed_at: Option<u64>,
}

#[async_trait]
impl FileWriter for FlatDirWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.file.write_all(&data).await.map_err(Error::backend)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.file.flush().await.map_err(Error::backend)?;
        self.file.sync_all().await.map_err(Error::backend)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.file.flush().await.map_err(Error::backend)?;
        self.file.sync_all().await.map_err(Error::backend)?;
        tokio::fs::rename(&self.staging, &self.target)
            .await
            .map_err(Error::backend)
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        drop(self.file);
        match tokio::fs::remove_file(&self.staging).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::backend(e)),
        }
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let Some(size) = self.resumed_at else {
            return self.cancel().await;
        };
        // Cut back to what the last close left, durably.
        self.file.set_len(size).await.map_err(Error::backend)?;
        self.file.sync_all().await.map_err(Error::backend)
    }
}
