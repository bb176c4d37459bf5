//! [`SwiftBackend`]: what `regstore-objectstore`'s [`ObjectDriver`] needs of
//! Swift beyond the container seen as an object store ([`crate::store`]):
//! moves, resumable writers as segments plus a manifest ([`crate::slo`]),
//! deletes of large objects with their segments, and TempURL redirects.
//! Also the start-up requests on the container (create it, set the
//! TempURL key).
//!
//! [`ObjectDriver`]: regstore_objectstore::ObjectDriver

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use regstore_core::{Capabilities, Error, RedirectMethod, RequestCounter, Result};
use regstore_objectstore::{Backend, Part};
use reqwest::Method;

use crate::NAME;
use crate::client::{Client, escape, http_error};
use crate::slo::upload_id;
use crate::store::{SLO, SwiftStore};

/// OpenStack Swift under [`ObjectDriver`].
#[derive(Debug)]
pub struct SwiftBackend {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The same store, typed: manifests and segments written outside it
    /// are recorded in its recent writes.
    pub(crate) swift: SwiftStore,
    pub(crate) client: Arc<Client>,
    pub(crate) part_size: usize,
    /// Segment names start with this (`<prefix>/~segments`).
    pub(crate) segments: String,
    pub(crate) tempurl_key: Option<String>,
}

impl SwiftBackend {
    /// Creates the container unless it exists (PUT is idempotent: 201 or 202).
    pub(crate) async fn ensure_container(&self) -> Result<()> {
        let resp = self
            .client
            .send(Method::PUT, None, "", |r| r.header("Content-Length", "0"))
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let e = http_error(resp, "creating the container", self.client.container()).await;
        if e.is_credentials() {
            return Err(e);
        }
        Err(Error::config(format!(
            "container {:?} is not usable: {e}",
            self.client.container()
        )))
    }

    pub(crate) async fn store_tempurl_key(&self, on_container: bool) -> Result<()> {
        let Some(key) = self.tempurl_key.clone() else {
            return Err(Error::config("settempurlkey needs secretkey"));
        };
        let (header, resp) = if on_container {
            let h = "X-Container-Meta-Temp-URL-Key";
            let r = self
                .client
                .send(Method::POST, None, "", |r| {
                    r.header(h, &key).header("Content-Length", "0")
                })
                .await?;
            (h, r)
        } else {
            let h = "X-Account-Meta-Temp-URL-Key";
            let r = self
                .client
                .send_to(
                    |s| s.storage_url.clone(),
                    Method::POST,
                    |r| r.header(h, &key).header("Content-Length", "0"),
                )
                .await?;
            (h, r)
        };
        if resp.status().is_success() {
            return Ok(());
        }
        let e = http_error(resp, "setting the TempURL key", self.client.container()).await;
        Err(Error::config(format!("cannot set {header}: {e}")))
    }
}

/// A TempURL for `path` (the URL path Swift sees, unescaped) and `method`
/// until `expires` (seconds since the epoch): the query Swift's tempurl
/// middleware checks, signed with HMAC-SHA256 under `key`.
pub fn tempurl_query(key: &str, method: &str, expires: u64, path: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    let tag = ring::hmac::sign(&k, format!("{method}\n{expires}\n{path}").as_bytes());
    format!(
        "temp_url_sig={}&temp_url_expires={expires}",
        hex::encode(tag.as_ref())
    )
}

#[async_trait]
impl Backend for SwiftBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn requests(&self) -> &RequestCounter {
        self.client.requests()
    }

    fn multipart(&self) -> Option<&dyn object_store::multipart::MultipartStore> {
        None
    }

    fn pages(&self) -> Option<&dyn object_store::list::PaginatedListStore> {
        Some(&self.swift)
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_redirect(self.tempurl_key.is_some())
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        let aside = self.set_aside(to.as_ref(), Some(from)).await?;
        // A source written a moment ago may not be visible on every node yet.
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=4 {
            match self.store.copy(from, to).await {
                Ok(()) => return self.drop_aside(aside).await,
                Err(object_store::Error::NotFound { .. }) if attempt < 4 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(regstore_objectstore::map_err(e, from)),
            }
        }
        Err(Error::not_found(format!("/{from}")))
    }

    async fn create_upload(&self, _key: &Path) -> Result<String> {
        upload_id()
    }

    async fn upload_part(
        &self,
        _key: &Path,
        upload: &str,
        index: usize,
        _offset: u64,
        data: PutPayload,
    ) -> Result<String> {
        self.put_segment(&self.segment(upload, index), Bytes::from(data))
            .await
    }

    async fn complete_upload(
        &self,
        key: &Path,
        upload: &str,
        parts: &[Part],
        last: PutPayload,
        _total: u64,
    ) -> Result<()> {
        let mut segments: Vec<(String, String, u64)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (self.segment(upload, i), p.id.clone(), p.size))
            .collect();
        let last = Bytes::from(last);
        if !last.is_empty() {
            let name = self.segment(upload, parts.len());
            let size = last.len() as u64;
            let etag = self.put_segment(&name, last).await?;
            segments.push((name, etag, size));
        }
        let max = self.client.info().await?.max_manifest_segments.max(2);
        // Past the cluster's limit, groups of segments become manifests of
        // their own (nested SLOs; Swift allows ten levels).
        let mut level = 0;
        while segments.len() > max {
            let mut grouped = Vec::with_capacity(segments.len().div_ceil(max));
            for (i, group) in segments.chunks(max).enumerate() {
                let name = format!("{}/{upload}/m{level}-{i:06}", self.segments);
                let size = group.iter().map(|s| s.2).sum();
                self.put_manifest(&name, group).await?;
                grouped.push((name, String::new(), size));
            }
            segments = grouped;
            level += 1;
        }
        let aside = self.set_aside(key.as_ref(), None).await?;
        self.put_manifest(key.as_ref(), &segments).await?;
        self.drop_aside(aside).await
    }

    async fn abort_upload(&self, _key: &Path, upload: &str) -> Result<()> {
        self.delete_segments(upload).await
    }

    async fn discard_parts(&self, _key: &Path, upload: &str, from: usize, to: usize) -> Result<()> {
        // Segments are named by index: left behind, one past the parts a
        // later completion names would outlive the object.
        let names = (from..to)
            .map(|i| Path::parse(self.segment(upload, i)).map_err(Error::backend))
            .collect::<Result<Vec<_>>>()?;
        regstore_objectstore::delete_keys(self.store.as_ref(), names).await
    }

    fn may_hold_composites(&self) -> bool {
        true
    }

    fn is_composite(&self, meta: &ObjectMeta) -> bool {
        meta.version.as_deref() == Some(SLO)
    }

    async fn delete_composite(&self, key: &Path) -> Result<()> {
        self.delete_slo(key.as_ref()).await
    }

    async fn signed_url(
        &self,
        key: &Path,
        method: RedirectMethod,
        expires: Duration,
    ) -> Result<Option<url::Url>> {
        let Some(secret) = &self.tempurl_key else {
            return Ok(None);
        };
        let session = self.client.session().await?;
        let base = url::Url::parse(&session.storage_url).map_err(Error::backend)?;
        let path = format!(
            "{}/{}/{}",
            base.path().trim_end_matches('/'),
            self.client.container(),
            key.as_ref()
        );
        let until = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(Error::backend)?
            + expires;
        let method = match method {
            RedirectMethod::Get => "GET",
            RedirectMethod::Head => "HEAD",
        };
        let query = tempurl_query(secret, method, until.as_secs(), &path);
        let url = format!(
            "{}/{}/{}?{query}",
            session.storage_url,
            escape(self.client.container()),
            escape(key.as_ref())
        );
        url::Url::parse(&url).map(Some).map_err(Error::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempurl_signature_matches_openssl() {
        // printf 'GET\n1700000000\n/v1/AUTH_test/c/o' | openssl dgst -sha256 -hmac key
        let q = tempurl_query("key", "GET", 1_700_000_000, "/v1/AUTH_test/c/o");
        assert_eq!(
            q,
            "temp_url_sig=84d09f8e15bef2209ab5fa1c8963201a1ec735f0c25dca12c9b713ed1a678dad\
             &temp_url_expires=1700000000"
        );
    }
}
