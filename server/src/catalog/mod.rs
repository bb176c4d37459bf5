//! The catalog index (`catalog.index`, a regstore extension): the names of
//! the repositories that hold at least one manifest, kept apart from the
//! storage so that `/v2/_catalog` and its search (`?q=`) do not walk the
//! bucket.
//!
//! - [`CatalogIndex::Storage`]: no index; the catalog walks the storage
//!   ([`crate::registry::Registry::catalog`]), distribution's behaviour.
//! - [`CatalogIndex::File`] ([`file`]): the names in memory, persisted to
//!   one file, rewritten atomically on every change. One instance only.
//! - [`CatalogIndex::Sql`] ([`sql`]): the `repositories(name, createTime)`
//!   table of a SQLite, MySQL/MariaDB or PostgreSQL database, shared safely
//!   by any number of instances.
//!
//! Every index answers in byte order of the names (SQL columns are created
//! with a bytewise collation). This module owns the index operations only;
//! when the registry adds and removes names (and the race with a push on
//! another instance) is decided by the registry's storage service
//! ([`crate::registry::Registry::note_manifest_stored`],
//! [`crate::registry::Registry::forget_if_no_manifests`]).

pub mod file;
pub mod sql;

use crate::config::CatalogConfig;

/// Names a search term is checked against: the characters a repository
/// name may contain.
const NAME_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789._-/";

/// What an index operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file of `catalog.path` cannot be read or written.
    #[error("catalog file {path}: {source}")]
    File {
        /// `catalog.path` (or its temporary sibling).
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the file of `catalog.path` is not a repository name.
    #[error("catalog file {path}, line {line}: {text:?} is not a repository name")]
    FileContent {
        /// `catalog.path`.
        path: std::path::PathBuf,
        /// 1-based.
        line: usize,
        /// What the line holds.
        text: String,
    },
    /// The database of `catalog.url` failed or refused a statement.
    #[error("catalog database {url}: {source}")]
    Sql {
        /// `catalog.url` without its password.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The storage walk was asked for what only an index can do.
    #[error("catalog.index is storage: the catalog has no index to read")]
    NotIndexed,
}

/// Result of index operations.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The configured index. Cheap operations; hold it in an `Arc`.
#[derive(Debug, Default)]
pub enum CatalogIndex {
    /// `index: storage`: no index.
    #[default]
    Storage,
    /// `index: file`.
    File(file::FileIndex),
    /// `index: sql`.
    Sql(sql::SqlIndex),
}

impl CatalogIndex {
    /// Opens the index `config` describes: reads the file, or connects to
    /// the database and creates the `repositories` table if missing.
    ///
    /// # Errors
    /// The file cannot be read or holds a line that is not a name; the
    /// database cannot be reached or refuses the table.
    pub async fn open(config: &CatalogConfig) -> Result<CatalogIndex> {
        Ok(match config {
            CatalogConfig::Storage => CatalogIndex::Storage,
            CatalogConfig::File { path } => CatalogIndex::File(file::FileIndex::open(path).await?),
            CatalogConfig::Sql { url } => CatalogIndex::Sql(sql::SqlIndex::open(url).await?),
        })
    }

    /// `storage`, `file` or `sql`, as `catalog.index` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            CatalogIndex::Storage => "storage",
            CatalogIndex::File(_) => "file",
            CatalogIndex::Sql(_) => "sql",
        }
    }

    /// Whether there is no index (the catalog walks the storage).
    pub fn is_storage(&self) -> bool {
        matches!(self, CatalogIndex::Storage)
    }

    /// Adds `name` if absent (a no-op for `storage`). Idempotent and safe
    /// when several instances add the same name at once.
    ///
    /// # Errors
    /// The file cannot be written, the database fails.
    pub async fn add(&self, name: &str) -> Result<()> {
        match self {
            CatalogIndex::Storage => Ok(()),
            CatalogIndex::File(f) => f.add(name).await,
            CatalogIndex::Sql(s) => s.add(name).await,
        }
    }

    /// Removes `name` if present (a no-op for `storage`).
    ///
    /// # Errors
    /// The file cannot be written, the database fails.
    pub async fn remove(&self, name: &str) -> Result<()> {
        match self {
            CatalogIndex::Storage => Ok(()),
            CatalogIndex::File(f) => f.remove(name).await,
            CatalogIndex::Sql(s) => s.remove(name).await,
        }
    }

    /// Up to `limit` names after `after` (`""`: from the start) in byte
    /// order, only those containing `term` when given (a substring, taken
    /// literally: check it with [`search_term`] first).
    ///
    /// # Errors
    /// [`CatalogError::NotIndexed`] for `storage`; the database fails.
    pub async fn page(&self, after: &str, term: Option<&str>, limit: usize) -> Result<Vec<String>> {
        match self {
            CatalogIndex::Storage => Err(CatalogError::NotIndexed),
            CatalogIndex::File(f) => Ok(f.page(after, term, limit).await),
            CatalogIndex::Sql(s) => s.page(after, term, limit).await,
        }
    }

    /// Whether the index holds no name (`storage`: false, nothing to fill).
    ///
    /// # Errors
    /// The database fails.
    pub async fn is_empty(&self) -> Result<bool> {
        match self {
            CatalogIndex::Storage => Ok(false),
            CatalogIndex::File(f) => Ok(f.is_empty().await),
            CatalogIndex::Sql(s) => s.is_empty().await,
        }
    }

    /// Replaces the whole content by `names` (a rebuild): one file rewrite,
    /// or one transaction (readers see the old or the new list, never a
    /// mix) inserting in batches.
    ///
    /// # Errors
    /// [`CatalogError::NotIndexed`] for `storage`; the file cannot be
    /// written, the database fails (nothing is changed then).
    pub async fn replace_all(&self, names: Vec<String>) -> Result<()> {
        match self {
            CatalogIndex::Storage => Err(CatalogError::NotIndexed),
            CatalogIndex::File(f) => f.replace_all(names).await,
            CatalogIndex::Sql(s) => s.replace_all(names).await,
        }
    }
}

/// Checks a search term (`?q=`): 1 to 255 characters, each one that a
/// repository name may contain (`a-z 0-9 . _ - /`).
///
/// # Errors
/// What is wrong with it, naming the first character that cannot be part
/// of a name.
pub fn search_term(q: &str) -> Result<&str, String> {
    if q.is_empty() {
        return Err("q= is empty: give part of a repository name".into());
    }
    if q.len() > crate::registry::names::MAX_NAME_LEN {
        return Err(format!(
            "q= is longer than a repository name can be ({} characters)",
            crate::registry::names::MAX_NAME_LEN
        ));
    }
    if let Some(c) = q.chars().find(|c| !NAME_CHARS.contains(*c)) {
        return Err(format!(
            "q={q:?}: {c:?} cannot appear in a repository name (a-z, 0-9, '.', '_', '-', '/')"
        ));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_name_characters() {
        assert_eq!(search_term("team/a_b-c.d"), Ok("team/a_b-c.d"));
        for (q, says) in [
            ("", "empty"),
            ("Team", "'T'"),
            ("a%", "'%'"),
            ("a b", "' '"),
            ("ä", "'ä'"),
        ] {
            let e = search_term(q).unwrap_err();
            assert!(e.contains(says), "{q}: {e}");
        }
        assert!(search_term(&"a".repeat(256)).is_err());
    }
}
