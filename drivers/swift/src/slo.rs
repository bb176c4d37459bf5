//! Static large objects: a writer's full chunks as segments under
//! `<prefix>/~segments/<upload id>/`, the manifest that publishes them
//! (nested past the cluster's `max_manifest_segments`), and deleting large
//! objects with their segments — including the segments of an object that a
//! commit or a rename replaces.

use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use regstore_core::{Error, Result};
use reqwest::{Method, StatusCode};

use crate::backend::SwiftBackend;
use crate::client::http_error;
use crate::store::SLO;

/// Top-level name under the prefix where segments live.
pub(crate) const SEGMENTS: &str = "~segments";

impl SwiftBackend {
    pub(crate) fn segment(&self, upload: &str, index: usize) -> String {
        format!("{}/{upload}/{index:08}", self.segments)
    }

    pub(crate) async fn put_segment(&self, name: &str, data: Bytes) -> Result<String> {
        let resp = self
            .client
            .send(Method::PUT, Some(name), "", |r| {
                r.header("Content-Type", "application/octet-stream")
                    .header("Content-Length", data.len())
                    .body(data.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(http_error(resp, "segment upload", name).await);
        }
        self.swift.recent().wrote(name);
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|e| e.trim_matches('"').to_owned())
            .ok_or_else(|| Error::backend(format!("Swift segment upload of {name}: no ETag")))
    }

    /// PUTs the static large object manifest `name` naming `segments`
    /// (name, ETag — empty for a nested manifest —, size).
    ///
    /// Swift checks every segment with a HEAD; on a cluster that has not
    /// made a fresh segment visible everywhere yet, it answers 400 with
    /// "404 Not Found" for that segment: that is retried 5 times, waiting
    /// 0.1 s, then twice as long each time (~3 s in all).
    pub(crate) async fn put_manifest(
        &self,
        name: &str,
        segments: &[(String, String, u64)],
    ) -> Result<()> {
        let container = self.client.container().to_owned();
        let manifest: Vec<serde_json::Value> = segments
            .iter()
            .map(|(segment, etag, size)| {
                serde_json::json!({
                    "path": format!("/{container}/{segment}"),
                    "etag": if etag.is_empty() { None } else { Some(etag) },
                    "size_bytes": size,
                })
            })
            .collect();
        let body = serde_json::to_vec(&manifest).map_err(Error::backend)?;
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=6 {
            let resp = self
                .client
                .send(Method::PUT, Some(name), "multipart-manifest=put", |r| {
                    r.header("Content-Type", "application/octet-stream")
                        .header("Content-Length", body.len())
                        .body(body.clone())
                })
                .await?;
            let status = resp.status();
            if status.is_success() {
                self.swift.recent().wrote(name);
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            if status == StatusCode::BAD_REQUEST && text.contains("404 Not Found") && attempt < 6 {
                tracing::debug!(%name, attempt, "Swift: a segment is not visible yet; manifest PUT retried");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            let text: String = text.chars().take(300).collect();
            return Err(Error::backend(format!(
                "Swift manifest upload of {name}: HTTP {status}: {text}"
            )));
        }
        Err(Error::backend(format!(
            "Swift manifest upload of {name}: segments never became visible"
        )))
    }

    /// Deletes the static large object `name` with its segments:
    /// `?multipart-manifest=delete`, one request. Swift refuses that for a
    /// nested object of more than ten times `max_manifest_segments`
    /// segments ("Too many buffered slo segments"); such an object's
    /// sub-manifests are deleted one by one first, then the rest.
    pub(crate) fn delete_slo<'a>(
        &'a self,
        name: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let resp = self
                .client
                .send(
                    Method::DELETE,
                    Some(name),
                    "multipart-manifest=delete",
                    |r| r.header("Accept", "application/json"),
                )
                .await?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                self.swift.recent().gone(name);
                return Ok(());
            }
            if !status.is_success() {
                return Err(http_error(resp, "large-object delete", name).await);
            }
            self.swift.recent().gone(name);
            // The answer is a report: 200 even when some deletes failed.
            let body = resp.bytes().await.map_err(Error::backend)?;
            let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let status = report["Response Status"].as_str().unwrap_or("200");
            let errors = report["Errors"].as_array().map(Vec::len).unwrap_or(0);
            if status.starts_with('2') || (status.starts_with("404") && errors == 0) {
                return Ok(());
            }
            if String::from_utf8_lossy(&body).contains("Too many buffered") {
                return self.delete_nested(name).await;
            }
            Err(Error::backend(format!(
                "Swift large-object delete of {name}: {status}: {}",
                report["Errors"]
            )))
        })
    }

    /// Deletes the nested large object `name` part by part: each
    /// sub-manifest with its segments, the direct segments in bulk, then
    /// the manifest itself.
    async fn delete_nested(&self, name: &str) -> Result<()> {
        let resp = self
            .client
            .send(Method::GET, Some(name), "multipart-manifest=get", |r| r)
            .await?;
        if !resp.status().is_success() {
            return Err(http_error(resp, "reading the manifest", name).await);
        }
        let body = resp.bytes().await.map_err(Error::backend)?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| Error::backend(format!("Swift manifest of {name}: {e}")))?;
        let own = format!("/{}/", self.client.container());
        let mut plain = Vec::new();
        for entry in &entries {
            let Some(segment) = entry["name"].as_str().and_then(|n| n.strip_prefix(&own)) else {
                continue; // in another container: not the driver's to delete
            };
            if entry["sub_slo"].as_bool() == Some(true) {
                self.delete_slo(segment).await?;
            } else {
                plain.push(Path::parse(segment).map_err(Error::backend)?);
            }
        }
        plain.push(Path::parse(name).map_err(Error::backend)?);
        regstore_objectstore::delete_keys(self.store.as_ref(), plain).await
    }

    /// Before the large object `name` is replaced (by a commit or a
    /// rename onto it): its manifest is copied to a name of its own under
    /// the segments, so that [`SwiftBackend::drop_aside`] can delete the
    /// old segments once the replacement is in. One HEAD when `name` is no
    /// large object; a plain PUT over a large object (`put_content`) does
    /// not do this.
    ///
    /// With `source` (a rename), nothing is set aside when the source has
    /// the same content (ETag): the two manifests may share segments.
    pub(crate) async fn set_aside(
        &self,
        name: &str,
        source: Option<&Path>,
    ) -> Result<Option<String>> {
        let path = Path::parse(name).map_err(Error::backend)?;
        let meta = match self.store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(regstore_objectstore::map_err(e, &path)),
        };
        if meta.version.as_deref() != Some(SLO) {
            return Ok(None);
        }
        if let Some(source) = source {
            match self.store.head(source).await {
                Ok(s) if s.e_tag.is_some() && s.e_tag == meta.e_tag => return Ok(None),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(regstore_objectstore::map_err(e, source)),
            }
        }
        let aside = format!("{}/{}/replaced", self.segments, upload_id()?);
        let to = Path::parse(&aside).map_err(Error::backend)?;
        self.store
            .copy(&path, &to)
            .await
            .map_err(|e| regstore_objectstore::map_err(e, &path))?;
        Ok(Some(aside))
    }

    /// Deletes a manifest [`SwiftBackend::set_aside`] kept, with the
    /// segments of the object it replaced.
    pub(crate) async fn drop_aside(&self, aside: Option<String>) -> Result<()> {
        match aside {
            Some(name) => self.delete_slo(&name).await,
            None => Ok(()),
        }
    }

    /// Deletes every segment of `upload`.
    pub(crate) async fn delete_segments(&self, upload: &str) -> Result<()> {
        // Parsed, not built from parts: `Path::from` would escape the `~`.
        let dir = Path::parse(format!("{}/{upload}", self.segments)).map_err(Error::backend)?;
        let names: Vec<Path> = {
            use futures_util::TryStreamExt;
            self.store
                .list(Some(&dir))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(Error::backend)?
        };
        regstore_objectstore::delete_keys(self.store.as_ref(), names).await
    }
}

/// A random upload id (128 bits, hex).
pub(crate) fn upload_id() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::backend("no randomness for an upload id"))?;
    Ok(hex::encode(bytes))
}
