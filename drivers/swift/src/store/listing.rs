//! Container listings: JSON pages with `marker`, their entries as
//! `ObjectMeta` (large objects marked [`SLO`]), and the names this store
//! wrote recently merged into pages that lag them ([`crate::recent`]).

use std::collections::HashSet;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListResult, PaginatedListStore};
use object_store::path::Path;
use object_store::{GetOptions, ListResult, ObjectMeta, ObjectStore};
use reqwest::{Method, StatusCode};

use super::{PAGE, SLO, SwiftStore, from_core, generic, status_error};
use crate::auth::parse_iso8601;

impl SwiftStore {
    /// `name`'s metadata by HEAD, `None` (and forgotten) when it is gone.
    pub(super) async fn confirm(&self, name: &str) -> object_store::Result<Option<ObjectMeta>> {
        let opts = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.get_opts(&path_of(name)?, opts).await {
            Ok(got) => Ok(Some(got.meta)),
            Err(object_store::Error::NotFound { .. }) => {
                self.recent.gone(name);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Adds to `metas` (one listing page, sorted) the remembered names in
    /// `pending` up to `upto` (all when `None`) that it lacks and that
    /// still exist; keeps the order.
    async fn merge_recent(
        &self,
        metas: &mut Vec<ObjectMeta>,
        pending: &mut std::collections::VecDeque<String>,
        upto: Option<&str>,
    ) -> object_store::Result<()> {
        let due = |name: &String| upto.is_none_or(|u| name.as_str() <= u);
        if !pending.front().is_some_and(due) {
            return Ok(());
        }
        let listed: HashSet<&str> = metas.iter().map(|m| m.location.as_ref()).collect();
        let mut found = Vec::new();
        while pending.front().is_some_and(due) {
            let Some(name) = pending.pop_front() else {
                break;
            };
            if listed.contains(name.as_str()) {
                continue;
            }
            if let Some(meta) = self.confirm(&name).await? {
                tracing::debug!(%name, "Swift listing lags a write of this driver; merged");
                found.push(meta);
            }
        }
        drop(listed);
        if !found.is_empty() {
            metas.extend(found);
            metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        }
        Ok(())
    }

    /// Names per listing request: a page shorter than this is the last.
    pub(super) async fn page_size(&self) -> object_store::Result<usize> {
        if self.page > 0 {
            return Ok(self.page);
        }
        let info = self.client.info().await.map_err(|e| from_core(e, "info"))?;
        Ok(info.listing_limit.clamp(1, PAGE))
    }

    /// One page of the listing of names starting with `dir` (a directory's
    /// `p/`, or `""`: everything), after `marker`, grouped by `/` when
    /// `delimiter`.
    pub(super) async fn page(
        &self,
        dir: &str,
        marker: Option<&str>,
        delimiter: bool,
        limit: usize,
    ) -> object_store::Result<Vec<Entry>> {
        let mut query = format!("format=json&limit={limit}");
        if !dir.is_empty() {
            query.push_str(&format!("&prefix={}", query_escape(dir)));
        }
        if let Some(m) = marker {
            query.push_str(&format!("&marker={}", query_escape(m)));
        }
        if delimiter {
            query.push_str("&delimiter=%2F");
        }
        let what = dir.trim_end_matches('/');
        let resp = self
            .client
            .send(Method::GET, None, &query, |r| r)
            .await
            .map_err(|e| from_core(e, what))?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            return Err(status_error(resp, "listing", what).await);
        }
        let body = resp.bytes().await.map_err(generic)?;
        parse_page(&body, what)
    }

    /// The objects of one listing page of names starting with `dir`
    /// after `marker`, with the names this store wrote recently that the
    /// page lacks merged in (those up to its last name; all of them after
    /// `marker` on the last page). Returns the marker of the next page,
    /// `None` after the last.
    pub(super) async fn objects_page(
        &self,
        dir: &str,
        marker: Option<&str>,
    ) -> object_store::Result<(Vec<ObjectMeta>, Option<String>)> {
        let limit = self.page_size().await?;
        let entries = self.page(dir, marker, false, limit).await?;
        let next = if entries.len() < limit {
            None
        } else {
            entries.last().and_then(|e| e.name.clone())
        };
        let mut metas: Vec<ObjectMeta> = entries
            .into_iter()
            .map(Entry::meta)
            .filter_map(Result::transpose)
            .collect::<object_store::Result<_>>()?;
        let mut pending: std::collections::VecDeque<String> = self.recent.under(dir, marker).into();
        self.merge_recent(&mut metas, &mut pending, next.as_deref())
            .await?;
        Ok((metas, next))
    }

    /// Every object under `prefix` after `offset`, page by page.
    pub(super) fn listing(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let dir = dir_prefix(prefix);
        let start = offset.map(|o| o.to_string());
        stream::try_unfold(Some(start), move |marker| {
            let store = store.clone();
            let dir = dir.clone();
            async move {
                let Some(marker) = marker else {
                    return Ok::<_, object_store::Error>(None);
                };
                let (metas, next) = store.objects_page(&dir, marker.as_deref()).await?;
                Ok(Some((
                    stream::iter(metas.into_iter().map(Ok)),
                    next.map(Some),
                )))
            }
        })
        .try_flatten()
        .boxed()
    }
}

#[async_trait::async_trait]
impl PaginatedListStore for SwiftStore {
    /// One page of objects whose names start with `prefix` (taken as
    /// given: a directory is `p/`), after `page_token` or else `offset`
    /// (Swift's `marker`, exclusive); the page token is the page's last
    /// name. Recent writes the listing lags are merged in, as in `list`.
    /// Only objects: `delimiter` and `max_keys` are not supported (the
    /// page holds the cluster's listing limit of names).
    ///
    /// # Errors
    /// A delimiter or a page size asked for; the listing request's error.
    async fn list_paginated(
        &self,
        prefix: Option<&str>,
        opts: PaginatedListOptions,
    ) -> object_store::Result<PaginatedListResult> {
        if opts.delimiter.is_some() || opts.max_keys.is_some() {
            return Err(object_store::Error::NotImplemented {
                operation: "a paged Swift listing with a delimiter or a page size".into(),
                implementer: self.to_string(),
            });
        }
        let marker = opts.page_token.or(opts.offset);
        let (objects, page_token) = self
            .objects_page(prefix.unwrap_or(""), marker.as_deref())
            .await?;
        Ok(PaginatedListResult {
            result: ListResult {
                common_prefixes: Vec::new(),
                objects,
                extensions: Default::default(),
            },
            page_token,
        })
    }
}

/// One page of a JSON container listing (`what` names the directory in
/// the error).
///
/// # Errors
/// The body is not a JSON array of listing entries.
pub(crate) fn parse_page(body: &[u8], what: &str) -> object_store::Result<Vec<Entry>> {
    serde_json::from_slice(body).map_err(|e| generic(format!("Swift listing of {what}: {e}")))
}

/// One entry of a JSON container listing.
#[derive(serde::Deserialize)]
pub(crate) struct Entry {
    pub(super) name: Option<String>,
    pub(super) subdir: Option<String>,
    #[serde(default)]
    pub(super) bytes: u64,
    pub(super) hash: Option<String>,
    pub(super) last_modified: Option<String>,
    pub(super) slo_etag: Option<String>,
}

pub(super) fn path_of(name: &str) -> object_store::Result<Path> {
    Path::parse(name).map_err(|e| generic(format!("listed name {name:?}: {e}")))
}

impl Entry {
    /// The object this entry lists (`None` for a `subdir` entry).
    ///
    /// # Errors
    /// The name is not a valid object path.
    pub(crate) fn meta(self) -> object_store::Result<Option<ObjectMeta>> {
        let Some(name) = self.name else {
            return Ok(None);
        };
        let modified = self
            .last_modified
            .as_deref()
            .and_then(parse_iso8601)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some(ObjectMeta {
            location: path_of(&name)?,
            last_modified: DateTime::<Utc>::from(modified),
            size: self.bytes,
            e_tag: self
                .slo_etag
                .as_deref()
                .map(|e| e.trim_matches('"').to_owned())
                .or(self.hash),
            version: self.slo_etag.is_some().then(|| SLO.to_owned()),
        }))
    }
}

/// The name prefix of everything below the directory `prefix`: `p/`, or
/// `""` for the container's root.
pub(super) fn dir_prefix(prefix: Option<&Path>) -> String {
    prefix
        .filter(|p| !p.as_ref().is_empty())
        .map(|p| format!("{p}/"))
        .unwrap_or_default()
}

/// `s` escaped for a query value.
fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_entries_mark_large_objects() {
        let entries: Vec<Entry> = serde_json::from_str(
            r#"[{"bytes": 3500, "hash": "8ecb", "name": "p/a/big", "content_type": "x",
                 "last_modified": "2026-12-02T04:12:09.913440", "slo_etag": "\"1552\""},
                {"bytes": 6, "hash": "d15d", "name": "p/a/small", "last_modified": "2026-12-02T04:12:09.961280"},
                {"subdir": "p/a/dir/"}]"#,
        )
        .expect("listing");
        let metas: Vec<_> = entries
            .into_iter()
            .map(|e| e.meta().expect("valid"))
            .collect();
        let big = metas[0].as_ref().expect("object");
        assert_eq!(big.version.as_deref(), Some(SLO));
        assert_eq!(big.e_tag.as_deref(), Some("1552"));
        assert_eq!(big.size, 3500);
        let small = metas[1].as_ref().expect("object");
        assert_eq!(small.version, None);
        assert_eq!(small.e_tag.as_deref(), Some("d15d"));
        assert!(metas[2].is_none(), "a subdir is no object");
    }
}
