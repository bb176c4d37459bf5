//! `catalog`: where `/v2/_catalog` (and its search) reads repository names
//! from — a regstore extension; distribution always walks the storage.
//!
//! ```yaml
//! catalog:
//!   index: sql          # storage (default: the walk) | file | sql
//!   url: sqlite:///var/lib/regstore/catalog.db   # sql: sqlite://…, mysql://…, postgres://…
//!   path: /opt/registry/repositories             # file: one name per line
//! ```
//!
//! Each key has its `REGISTRY_CATALOG_*` override (`REGISTRY_CATALOG_INDEX=sql`).
//! distribution 3's `catalog.maxentries` is accepted and ignored (see `keys`).

use std::path::PathBuf;

use serde::Deserialize;

/// `catalog`, as the registry uses it. [`CatalogConfig::Storage`] when the
/// section is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CatalogConfig {
    /// `index: storage`: every `_catalog` request walks the storage, as
    /// distribution does (no search).
    #[default]
    Storage,
    /// `index: file`: the names in memory, kept in the file at `path` (one
    /// per line). One registry instance only.
    File {
        /// `path`.
        path: PathBuf,
    },
    /// `index: sql`: the `repositories` table of the database at `url`.
    Sql {
        /// `url`: `sqlite://…`, `mysql://…` or `postgres://…` (or
        /// `postgresql://…`).
        url: String,
    },
}

/// The URL schemes `catalog.url` may have.
pub const SQL_SCHEMES: [&str; 4] = ["sqlite", "mysql", "postgres", "postgresql"];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    index: Option<String>,
    url: Option<String>,
    path: Option<String>,
}

impl Section {
    /// The checked `catalog` settings.
    ///
    /// # Errors
    /// An unknown `index`, `sql` without `url` or with a scheme that is not
    /// one of [`SQL_SCHEMES`], `file` without `path`, or a key that the
    /// chosen index does not read (`url` with `file`, …), naming the key.
    pub(super) fn resolve(self) -> Result<CatalogConfig, String> {
        let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let (url, path) = (given(self.url), given(self.path));
        let index = given(self.index).unwrap_or_else(|| "storage".into());
        match index.as_str() {
            "storage" => {
                if url.is_some() || path.is_some() {
                    return Err(format!(
                        "catalog.{} is set but catalog.index is storage: set catalog.index to {}",
                        if url.is_some() { "url" } else { "path" },
                        if url.is_some() { "sql" } else { "file" },
                    ));
                }
                Ok(CatalogConfig::Storage)
            }
            "file" => {
                if url.is_some() {
                    return Err("catalog.url is read by catalog.index: sql, not file".into());
                }
                let path = path.ok_or(
                    "catalog.index: file needs catalog.path (the file of repository names)",
                )?;
                Ok(CatalogConfig::File { path: path.into() })
            }
            "sql" => {
                if path.is_some() {
                    return Err("catalog.path is read by catalog.index: file, not sql".into());
                }
                let url = url.ok_or(
                    "catalog.index: sql needs catalog.url (sqlite://…, mysql://… or postgres://…)",
                )?;
                let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
                match scheme {
                    Some(s) if SQL_SCHEMES.contains(&s.as_str()) => Ok(CatalogConfig::Sql { url }),
                    _ => Err(format!(
                        "catalog.url: {:?} is not a sqlite://, mysql:// or postgres:// URL",
                        redact(&url)
                    )),
                }
            }
            other => Err(format!(
                "catalog.index: unknown index {other:?}: use storage, file or sql"
            )),
        }
    }
}

/// `url` without the password of its user part, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxx"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(catalog: &str, env: &[(&str, &str)]) -> Result<CatalogConfig, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\n{catalog}"),
            "t.yml",
            env,
        )
        .map(|c| c.catalog)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_the_storage_walk() {
        assert_eq!(load("", &[]).unwrap(), CatalogConfig::Storage);
        assert_eq!(load("catalog:\n", &[]).unwrap(), CatalogConfig::Storage);
        assert_eq!(
            load("catalog:\n  index: storage\n", &[]).unwrap(),
            CatalogConfig::Storage
        );
    }

    #[test]
    fn every_index_is_read_from_the_file_and_from_the_environment() {
        assert_eq!(
            load("catalog:\n  index: file\n  path: /x/repos\n", &[]).unwrap(),
            CatalogConfig::File {
                path: "/x/repos".into()
            }
        );
        assert_eq!(
            load(
                "catalog:\n  index: sql\n  url: sqlite:///var/lib/c.db\n",
                &[]
            )
            .unwrap(),
            CatalogConfig::Sql {
                url: "sqlite:///var/lib/c.db".into()
            }
        );
        assert_eq!(
            load(
                "",
                &[
                    ("REGISTRY_CATALOG_INDEX", "sql"),
                    ("REGISTRY_CATALOG_URL", "mysql://u:p@db:3306/registry"),
                ]
            )
            .unwrap(),
            CatalogConfig::Sql {
                url: "mysql://u:p@db:3306/registry".into()
            }
        );
        assert_eq!(
            load(
                "catalog:\n  index: sql\n  url: sqlite:///a.db\n",
                &[
                    ("REGISTRY_CATALOG_INDEX", "file"),
                    ("REGISTRY_CATALOG_URL", ""),
                    ("REGISTRY_CATALOG_PATH", "/r")
                ]
            )
            .unwrap(),
            CatalogConfig::File { path: "/r".into() },
            "the environment wins over the file"
        );
    }

    #[test]
    fn maxentries_of_distribution_3_is_accepted() {
        let c = Config::from_yaml(
            "version: 0.1\nstorage:\n  inmemory:\ncatalog:\n  maxentries: 100\n",
            "t.yml",
            [],
        )
        .unwrap();
        assert_eq!(c.catalog, CatalogConfig::Storage);
        assert!(
            c.warnings.iter().any(|w| w.contains("catalog.maxentries")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn unusable_settings_name_the_key() {
        for (yaml, says) in [
            (
                "catalog:\n  index: redis\n",
                "catalog.index: unknown index \"redis\"",
            ),
            ("catalog:\n  index: sql\n", "needs catalog.url"),
            ("catalog:\n  index: file\n", "needs catalog.path"),
            (
                "catalog:\n  index: sql\n  url: oracle://u:secret@db/x\n",
                "catalog.url: \"oracle://u:xxx@db/x\"",
            ),
            ("catalog:\n  index: sql\n  url: catalog.db\n", "catalog.url"),
            (
                "catalog:\n  url: sqlite:///a.db\n",
                "set catalog.index to sql",
            ),
            ("catalog:\n  path: /a\n", "set catalog.index to file"),
            (
                "catalog:\n  index: file\n  path: /a\n  url: sqlite:///a.db\n",
                "catalog.url is read by catalog.index: sql",
            ),
        ] {
            let e = load(yaml, &[]).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
