//! The container as an `object_store::ObjectStore`, so the machinery of
//! `regstore-objectstore` (keys, directories, walks, resumable writers)
//! runs on Swift unchanged: GET/HEAD with ranges, PUT, COPY (manifests as
//! manifests), paginated JSON listings with `marker`, and deletes through
//! the bulk middleware when the cluster has it.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use crate::client::{Client, escape};
use crate::recent::Recent;

mod delete;
mod listing;

// For the fuzz targets (`crate::fuzzing`).
pub(crate) use listing::parse_page;

use listing::{dir_prefix, path_of};

/// `ObjectMeta::version` of a static large object's manifest, in listings
/// and heads: the driver deletes such objects with their segments.
pub const SLO: &str = "swift-slo";
/// Names per listing page at most (Swift's default `container_listing_limit`).
pub const PAGE: usize = 10_000;
/// Deletes per bulk request, at most (the cluster may allow fewer).
const BULK: usize = 1000;

/// The container as an object store; cheap to clone.
#[derive(Clone, Debug)]
pub struct SwiftStore {
    client: Arc<Client>,
    /// Names asked for per listing request; 0: the cluster's limit.
    page: usize,
    recent: Arc<Recent>,
}

impl SwiftStore {
    /// The store on `client`'s container, listing `page` names per request
    /// (0: the cluster's `container_listing_limit`, at most [`PAGE`]), and
    /// merging its own writes of the last `window` into listings that lack
    /// them (see [`crate::recent`]).
    pub fn new(client: Arc<Client>, page: usize, window: std::time::Duration) -> Self {
        SwiftStore {
            client,
            page,
            recent: Arc::new(Recent::new(window)),
        }
    }

    /// The names this store wrote recently.
    pub fn recent(&self) -> &Recent {
        &self.recent
    }
}

impl fmt::Display for SwiftStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Swift({})", self.client.container())
    }
}

fn generic(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "Swift",
        source: e.into(),
    }
}

fn from_core(e: regstore_core::Error, path: &str) -> object_store::Error {
    if e.is_not_found() {
        object_store::Error::NotFound {
            path: path.to_owned(),
            source: e.into(),
        }
    } else {
        generic(e)
    }
}

/// The error for an unsuccessful answer about `path`.
async fn status_error(resp: reqwest::Response, what: &str, path: &str) -> object_store::Error {
    let status = resp.status();
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let source = format!("Swift {what} of {path}: HTTP {status}: {body}").into();
    match status {
        StatusCode::NOT_FOUND => object_store::Error::NotFound {
            path: path.to_owned(),
            source,
        },
        StatusCode::PRECONDITION_FAILED => object_store::Error::AlreadyExists {
            path: path.to_owned(),
            source,
        },
        StatusCode::NOT_MODIFIED => object_store::Error::NotModified {
            path: path.to_owned(),
            source,
        },
        StatusCode::UNAUTHORIZED => object_store::Error::Unauthenticated {
            path: path.to_owned(),
            source,
        },
        StatusCode::FORBIDDEN => object_store::Error::PermissionDenied {
            path: path.to_owned(),
            source,
        },
        _ => object_store::Error::Generic {
            store: "Swift",
            source,
        },
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Swift's `X-Timestamp` (seconds since the epoch, with a fraction).
fn timestamp(h: &HeaderMap) -> DateTime<Utc> {
    let t = header(h, "x-timestamp")
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| UNIX_EPOCH + std::time::Duration::from_secs_f64(t))
        .unwrap_or(UNIX_EPOCH);
    DateTime::<Utc>::from(t)
}

fn meta_from_headers(location: &Path, h: &HeaderMap, size: u64) -> ObjectMeta {
    let slo = header(h, "x-static-large-object").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    ObjectMeta {
        location: location.clone(),
        last_modified: timestamp(h),
        size,
        e_tag: header(h, "etag").map(|e| e.trim_matches('"').to_owned()),
        version: slo.then(|| SLO.to_owned()),
    }
}

fn range_header(range: &GetRange) -> String {
    match range {
        GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
        GetRange::Offset(o) => format!("bytes={o}-"),
        GetRange::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// `bytes a-b/total` → (a..b+1, total).
fn content_range(h: &HeaderMap) -> Option<(Range<u64>, u64)> {
    let v = header(h, "content-range")?.strip_prefix("bytes ")?;
    let (span, total) = v.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total) = (a.parse().ok()?, b.parse::<u64>().ok()?, total.parse().ok()?);
    Some((a..b + 1, total))
}

#[async_trait]
impl ObjectStore for SwiftStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create_only = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put with PutMode::Update".into(),
                    implementer: self.to_string(),
                });
            }
        };
        let body = Bytes::from(payload);
        let resp = self
            .client
            .send(Method::PUT, Some(location.as_ref()), "", |r| {
                // reqwest leaves Content-Length out of an empty body, which
                // Swift refuses (411).
                let r = r
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Length", body.len())
                    .body(body.clone());
                if create_only {
                    r.header("If-None-Match", "*")
                } else {
                    r
                }
            })
            .await
            .map_err(|e| from_core(e, location.as_ref()))?;
        if !resp.status().is_success() {
            return Err(status_error(resp, "upload", location.as_ref()).await);
        }
        self.recent.wrote(location.as_ref());
        Ok(PutResult {
            e_tag: header(resp.headers(), "etag").map(|e| e.trim_matches('"').to_owned()),
            version: None,
            extensions: Default::default(),
        })
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // The driver's writers upload segments and a manifest themselves.
        Err(object_store::Error::NotImplemented {
            operation: "put_multipart".into(),
            implementer: self.to_string(),
        })
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let method = if options.head {
            Method::HEAD
        } else {
            Method::GET
        };
        let range = options.range.clone().filter(|_| !options.head);
        let resp = self
            .client
            .send(method, Some(location.as_ref()), "", |r| match &range {
                Some(g) => r.header("Range", range_header(g)),
                None => r,
            })
            .await
            .map_err(|e| from_core(e, location.as_ref()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(resp, "read", location.as_ref()).await);
        }
        let h = resp.headers().clone();
        let length = header(&h, "content-length")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let (span, size) = if status == StatusCode::PARTIAL_CONTENT {
            content_range(&h).ok_or_else(|| {
                generic(format!(
                    "Swift read of {location}: 206 without a usable Content-Range"
                ))
            })?
        } else {
            (0..length, length)
        };
        let meta = meta_from_headers(location, &h, size);
        let payload = if options.head {
            stream::empty().boxed()
        } else {
            resp.bytes_stream().map_err(generic).boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta,
            range: span,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .try_chunks(BULK)
            .map_err(|e| e.1)
            .and_then(move |names| {
                let store = store.clone();
                async move { store.delete_batch(names).await }
            })
            .map_ok(|names| stream::iter(names.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listing(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.listing(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut marker: Option<String> = None;
        let limit = self.page_size().await?;
        loop {
            let entries = self
                .page(&dir_prefix(prefix), marker.as_deref(), true, limit)
                .await?;
            let full = entries.len() >= limit;
            marker = entries
                .last()
                .and_then(|e| e.name.clone().or_else(|| e.subdir.clone()));
            for e in entries {
                if let Some(dir) = &e.subdir {
                    out.common_prefixes
                        .push(path_of(dir.trim_end_matches('/'))?);
                } else if let Some(meta) = e.meta()? {
                    out.objects.push(meta);
                }
            }
            if !full || marker.is_none() {
                break;
            }
        }
        // Names this driver wrote that the listing does not show yet.
        let under = dir_prefix(prefix);
        let mut changed = false;
        let recent = self.recent.under(&under, None);
        if !recent.is_empty() {
            let mut dirs: HashSet<String> = out
                .common_prefixes
                .iter()
                .map(|p| p.as_ref().to_owned())
                .collect();
            let files: HashSet<String> = out
                .objects
                .iter()
                .map(|m| m.location.as_ref().to_owned())
                .collect();
            for name in recent {
                let rest = &name[under.len()..];
                match rest.split_once('/') {
                    Some((dir, _)) => {
                        let dir = format!("{under}{dir}");
                        if dirs.contains(&dir) {
                            continue;
                        }
                        if self.confirm(&name).await?.is_some() {
                            out.common_prefixes.push(path_of(&dir)?);
                            dirs.insert(dir);
                            changed = true;
                        }
                    }
                    None => {
                        if files.contains(&name) {
                            continue;
                        }
                        if let Some(meta) = self.confirm(&name).await? {
                            out.objects.push(meta);
                            changed = true;
                        }
                    }
                }
            }
        }
        if changed {
            tracing::debug!(prefix = %under, "Swift listing lags writes of this driver; merged");
            out.common_prefixes
                .sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
            out.objects
                .sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        }
        Ok(out)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        // `multipart-manifest=get` copies a large object's manifest (a new
        // manifest naming the same segments), and other objects as they are.
        let destination = format!(
            "/{}/{}",
            escape(self.client.container()),
            escape(to.as_ref())
        );
        let resp = self
            .client
            .send(
                Method::from_bytes(b"COPY").map_err(generic)?,
                Some(from.as_ref()),
                "multipart-manifest=get",
                |r| r.header("Destination", &destination),
            )
            .await
            .map_err(|e| from_core(e, from.as_ref()))?;
        if !resp.status().is_success() {
            return Err(status_error(resp, "copy", from.as_ref()).await);
        }
        self.recent.wrote(to.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_content_ranges() {
        assert_eq!(range_header(&GetRange::Bounded(2..6)), "bytes=2-5");
        assert_eq!(range_header(&GetRange::Offset(10)), "bytes=10-");
        let mut h = HeaderMap::new();
        h.insert("content-range", "bytes 2-5/3500".parse().expect("value"));
        assert_eq!(content_range(&h), Some((2..6, 3500)));
    }
}
