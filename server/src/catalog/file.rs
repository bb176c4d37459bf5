//! `catalog.index: file`: the names in memory (a sorted set), loaded from
//! `catalog.path` at startup and written back whole after every change.
//!
//! The file holds one name per line, in byte order. It is rewritten
//! atomically: a temporary file beside it is written and fsynced, renamed
//! over it, and the directory fsynced, so after a crash the file is the old
//! list or the new one. Changes are serialized by one lock that is held
//! while the file is written, so the file never goes back in time.
//!
//! **One registry instance only**: the set lives in this process; a second
//! instance on the same file would overwrite its changes. Use
//! `catalog.index: sql` for several instances. Each change costs a rewrite
//! of the whole file (fine up to some ten thousand repositories; a push to
//! a repository already listed writes nothing).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::{CatalogError, Result};
use crate::registry::RepoName;

/// The file index. See the module docs.
#[derive(Debug)]
pub struct FileIndex {
    path: PathBuf,
    names: tokio::sync::Mutex<BTreeSet<String>>,
}

impl FileIndex {
    /// Reads the file at `path`; a missing file is an empty index (created
    /// at the first change). Blank lines are skipped.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not a repository name.
    pub async fn open(path: &Path) -> Result<FileIndex> {
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(CatalogError::File {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut names = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            RepoName::parse(line).map_err(|_| CatalogError::FileContent {
                path: path.to_owned(),
                line: i + 1,
                text: line.to_owned(),
            })?;
            names.insert(line.to_owned());
        }
        Ok(FileIndex {
            path: path.to_owned(),
            names: tokio::sync::Mutex::new(names),
        })
    }

    /// Adds `name`; writes the file only if it was not there.
    ///
    /// # Errors
    /// The file cannot be written (the name is then not added).
    pub async fn add(&self, name: &str) -> Result<()> {
        let mut names = self.names.lock().await;
        if names.contains(name) {
            return Ok(());
        }
        let mut next = names.clone();
        next.insert(name.to_owned());
        self.write(&next).await?;
        *names = next;
        Ok(())
    }

    /// Removes `name`; writes the file only if it was there.
    ///
    /// # Errors
    /// The file cannot be written (the name then stays).
    pub async fn remove(&self, name: &str) -> Result<()> {
        let mut names = self.names.lock().await;
        if !names.contains(name) {
            return Ok(());
        }
        let mut next = names.clone();
        next.remove(name);
        self.write(&next).await?;
        *names = next;
        Ok(())
    }

    /// See [`super::CatalogIndex::page`].
    pub async fn page(&self, after: &str, term: Option<&str>, limit: usize) -> Vec<String> {
        let names = self.names.lock().await;
        names
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .filter(|n| term.is_none_or(|t| n.contains(t)))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Whether no name is listed.
    pub async fn is_empty(&self) -> bool {
        self.names.lock().await.is_empty()
    }

    /// Replaces every name by `names` (one write).
    ///
    /// # Errors
    /// The file cannot be written (nothing changes then).
    pub async fn replace_all(&self, names: Vec<String>) -> Result<()> {
        let mut held = self.names.lock().await;
        let next: BTreeSet<String> = names.into_iter().collect();
        self.write(&next).await?;
        *held = next;
        Ok(())
    }

    /// Writes `names` to the file atomically (see the module docs), on the
    /// blocking pool.
    async fn write(&self, names: &BTreeSet<String>) -> Result<()> {
        let mut text = String::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for n in names {
            text.push_str(n);
            text.push('\n');
        }
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, text.as_bytes()))
            .await
            .map_err(|e| std::io::Error::other(format!("the writing task failed: {e}")));
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err((path, source))) => Err(CatalogError::File { path, source }),
            Err(source) => Err(CatalogError::File {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Temp file + fsync + rename + directory fsync. The error names the path
/// that failed.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "catalog".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e| (p, e)
    };
    let mut f = std::fs::File::create(&tmp).map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    drop(f);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err((path.to_owned(), e));
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(at(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_survive_a_reopen_and_the_file_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repositories");
        let index = FileIndex::open(&path).await.unwrap();
        assert!(index.is_empty().await);
        for n in ["b/x", "a", "a-b", "c_d"] {
            index.add(n).await.unwrap();
        }
        index.add("a").await.unwrap();
        index.remove("b/x").await.unwrap();
        index.remove("never").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\na-b\nc_d\n");
        let again = FileIndex::open(&path).await.unwrap();
        assert_eq!(again.page("", None, 10).await, ["a", "a-b", "c_d"]);
        assert_eq!(again.page("a", None, 1).await, ["a-b"]);
        assert_eq!(again.page("", Some("_"), 10).await, ["c_d"]);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["repositories"], "no temporary file stays");
    }

    #[tokio::test]
    async fn a_line_that_is_not_a_name_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repositories");
        std::fs::write(&path, "a\n\nBad Name\n").unwrap();
        let e = FileIndex::open(&path).await.unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("Bad Name"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/repositories");
        let index = FileIndex::open(&path).await.unwrap();
        let e = index.add("a").await.unwrap_err().to_string();
        assert!(e.contains("missing-dir"), "{e}");
        assert!(index.is_empty().await);
    }
}
