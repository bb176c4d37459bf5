//! I/O errors that name the step and the file they failed on, and the small
//! I/O helpers every module of the driver shares. Nothing here knows the
//! layout under the root.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use regstore_core::Error;

/// An I/O error with the step that failed and the file it failed on.
#[derive(Debug)]
pub(crate) struct FsError {
    step: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl FsError {
    pub(crate) fn is_missing(&self) -> bool {
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

pub(crate) type FsResult<T> = std::result::Result<T, FsError>;

/// Attaches the step and file to an I/O error.
pub(crate) trait At<T> {
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
pub(crate) fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Whether anything is at `path` (without following a final symlink).
pub(crate) fn exists(path: &Path) -> FsResult<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e).at("stat", path),
    }
}

pub(crate) fn parent_of(path: &Path) -> FsResult<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))
        .at("find directory of", path)
}

/// `Ok(true)` when removed, `Ok(false)` when nothing was there.
pub(crate) fn remove_missing_ok(r: io::Result<()>, path: &Path) -> FsResult<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e).at("remove", path),
    }
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
