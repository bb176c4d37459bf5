//! `catalog.index: sql`: the `repositories(name, createTime)` table (seed
//! 004's) in SQLite (embedded, `sqlite://…`), MySQL/MariaDB (`mysql://…`)
//! or PostgreSQL (`postgres://…`), through one `sqlx` pool type.
//!
//! The table is created when missing:
//!
//! | backend | `name` column |
//! |---|---|
//! | SQLite | `VARCHAR(255)` (SQLite compares bytes: `BINARY` collation) |
//! | MySQL/MariaDB | `VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin` |
//! | PostgreSQL | `VARCHAR(255) COLLATE "C"` |
//!
//! `name` is the primary key; `createTime` is set by the database when a
//! row is inserted. The collations make `ORDER BY name` and `name > ?` byte
//! order on every backend (a locale collation would sort `a-b` after `a/b`
//! or ignore punctuation). A table that already exists is used as it is.
//!
//! **Several instances share one database safely**: an add is an insert
//! that does nothing when the row exists (`ON CONFLICT DO NOTHING`;
//! MySQL `ON DUPLICATE KEY UPDATE name = name`), so concurrent first
//! pushes of one repository leave one row and no error; a statement the
//! database aborts as a deadlock or serialization failure (SQLSTATE class
//! `40`) is retried. A rebuild replaces the content in one transaction.
//!
//! TLS to MySQL/PostgreSQL goes through the rustls the server already
//! links, with the system's root certificates (`?sslmode=require` /
//! `?ssl-mode=required` in the URL, as sqlx reads them).

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

use super::{CatalogError, Result};

/// Rows inserted per statement during a rebuild (far below every
/// backend's limit on bound parameters: SQLite's is 32,766).
const BATCH: usize = 500;

/// How often a statement aborted as a deadlock is tried.
const ATTEMPTS: usize = 4;

/// The SQL spoken to the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    MySql,
    Postgres,
}

impl Dialect {
    /// The `n`th (1-based) bind parameter.
    fn param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite | Dialect::MySql => "?".into(),
        }
    }

    fn create_table(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "CREATE TABLE IF NOT EXISTS repositories (name VARCHAR(255) NOT NULL PRIMARY KEY, createTime TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            }
            Dialect::MySql => {
                "CREATE TABLE IF NOT EXISTS repositories (name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, createTime TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            }
            Dialect::Postgres => {
                "CREATE TABLE IF NOT EXISTS repositories (name VARCHAR(255) COLLATE \"C\" NOT NULL PRIMARY KEY, createTime TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            }
        }
    }

    /// An insert of `rows` names that skips the ones already there.
    fn insert(self, rows: usize) -> String {
        let values: Vec<String> = (1..=rows).map(|i| format!("({})", self.param(i))).collect();
        let values = values.join(", ");
        match self {
            Dialect::MySql => format!(
                "INSERT INTO repositories (name) VALUES {values} ON DUPLICATE KEY UPDATE name = name"
            ),
            Dialect::Sqlite | Dialect::Postgres => format!(
                "INSERT INTO repositories (name) VALUES {values} ON CONFLICT (name) DO NOTHING"
            ),
        }
    }
}

/// The SQL index. See the module docs.
#[derive(Debug)]
pub struct SqlIndex {
    pool: AnyPool,
    dialect: Dialect,
    /// `catalog.url` without its password, for messages.
    shown: String,
}

impl SqlIndex {
    /// Connects to `url` and creates the table if it is missing. A SQLite
    /// file is created if missing (its directory must exist).
    ///
    /// # Errors
    /// An unknown scheme, an unreachable database, refused credentials, a
    /// table that cannot be created.
    pub async fn open(url: &str) -> Result<SqlIndex> {
        sqlx::any::install_default_drivers();
        let shown = crate::config::redact_url(url);
        let err = |source| CatalogError::Sql {
            url: shown.clone(),
            source,
        };
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        let (dialect, url, connections) = match scheme.as_deref() {
            Some("sqlite") => {
                // Created when missing; one connection, as an embedded
                // database has one writer anyway and `:memory:` is one
                // database per connection.
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                (Dialect::Sqlite, url, 1)
            }
            Some("mysql") => (Dialect::MySql, url.to_owned(), 16),
            Some("postgres" | "postgresql") => (Dialect::Postgres, url.to_owned(), 16),
            _ => {
                return Err(err(sqlx::Error::Configuration(
                    format!("{shown:?} is not a sqlite://, mysql:// or postgres:// URL").into(),
                )));
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(err)?;
        let index = SqlIndex {
            pool,
            dialect,
            shown: shown.clone(),
        };
        // Two instances starting at once may race on CREATE TABLE (on
        // PostgreSQL the loser gets a unique-violation on the catalog);
        // the second try sees the table.
        if sqlx::query(dialect.create_table())
            .execute(&index.pool)
            .await
            .is_err()
        {
            sqlx::query(dialect.create_table())
                .execute(&index.pool)
                .await
                .map_err(err)?;
        }
        Ok(index)
    }

    fn error(&self, source: sqlx::Error) -> CatalogError {
        CatalogError::Sql {
            url: self.shown.clone(),
            source,
        }
    }

    /// Runs the single-name statement `sql` with `name`, retrying
    /// deadlocks and serialization failures.
    async fn execute_with(&self, sql: &str, name: &str) -> Result<()> {
        let mut attempt = 1;
        loop {
            match sqlx::query(sql).bind(name).execute(&self.pool).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "catalog statement retried");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await;
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// Inserts `name` unless it is there.
    ///
    /// # Errors
    /// The database fails.
    pub async fn add(&self, name: &str) -> Result<()> {
        self.execute_with(&self.dialect.insert(1), name).await
    }

    /// Deletes the row of `name`, if any.
    ///
    /// # Errors
    /// The database fails.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let sql = format!(
            "DELETE FROM repositories WHERE name = {}",
            self.dialect.param(1)
        );
        self.execute_with(&sql, name).await
    }

    /// See [`super::CatalogIndex::page`]. A term is matched with `LIKE`,
    /// its `_` escaped (a legal name character, and `LIKE`'s one-character
    /// wildcard); [`super::search_term`] has refused `%` and `!` (the
    /// escape character) already.
    ///
    /// # Errors
    /// The database fails.
    pub async fn page(&self, after: &str, term: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let d = self.dialect;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<AnyRow> = match term {
            None => {
                let sql = format!(
                    "SELECT name FROM repositories WHERE name > {} ORDER BY name LIMIT {}",
                    d.param(1),
                    d.param(2)
                );
                sqlx::query(&sql)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Some(term) => {
                let pattern = format!("%{}%", term.replace('_', "!_"));
                let sql = format!(
                    "SELECT name FROM repositories WHERE name > {} AND name LIKE {} ESCAPE '!' ORDER BY name LIMIT {}",
                    d.param(1),
                    d.param(2),
                    d.param(3)
                );
                sqlx::query(&sql)
                    .bind(after)
                    .bind(pattern)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| name_of(r).map_err(|e| self.error(e)))
            .collect()
    }

    /// Whether the table has no row.
    ///
    /// # Errors
    /// The database fails.
    pub async fn is_empty(&self) -> Result<bool> {
        let row = sqlx::query("SELECT name FROM repositories LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.is_none())
    }

    /// Replaces every row by `names` in one transaction, inserting
    /// [`BATCH`] rows per statement.
    ///
    /// # Errors
    /// The database fails (the transaction is rolled back).
    pub async fn replace_all(&self, names: Vec<String>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        sqlx::query("DELETE FROM repositories")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(e))?;
        for chunk in names.chunks(BATCH) {
            let sql = self.dialect.insert(chunk.len());
            let mut q = sqlx::query(&sql);
            for n in chunk {
                q = q.bind(n.as_str());
            }
            q.execute(&mut *tx).await.map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))
    }

    /// The pool (for tests and benchmarks that look at the table).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The `name` column of `row`: text, or bytes where the driver reports a
/// binary collation as such (MySQL's `utf8mb4_bin`).
fn name_of(row: &AnyRow) -> std::result::Result<String, sqlx::Error> {
    match row.try_get::<String, _>(0) {
        Ok(s) => Ok(s),
        Err(text_error) => match row.try_get::<Vec<u8>, _>(0) {
            Ok(b) => String::from_utf8(b).map_err(|e| sqlx::Error::Decode(Box::new(e))),
            Err(_) => Err(text_error),
        },
    }
}

/// A deadlock or serialization failure (SQLSTATE class 40), which the
/// database asks the client to retry.
fn retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("40"))
}
