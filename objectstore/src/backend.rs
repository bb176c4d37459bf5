//! What a cloud driver supplies: a store for reads and listings, and the few
//! operations whose protocol differs between clouds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use object_store::list::PaginatedListStore;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult,
};
use regstore_core::{Capabilities, Error, RedirectMethod, RequestCounter, Result};
use serde::{Deserialize, Serialize};

use crate::map_err;

/// One uploaded part of an unfinished writer, as the backend identifies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The backend's id of the part (S3 ETag, Azure block id, GCS offset).
    pub id: String,
    /// Bytes in the part.
    pub size: u64,
}

/// The outcome of a `PutMode::Create` put: `true` stored, `false` when the
/// store refused it because `key` exists (object_store's `AlreadyExists`;
/// some stores answer a failed precondition instead).
///
/// # Errors
/// Any other failure, mapped with [`map_err`].
pub fn created(r: object_store::Result<PutResult>, key: &Path) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(e) => Err(map_err(e, key)),
    }
}

/// A cloud backend under [`crate::ObjectDriver`].
///
/// Reads, heads, listings and deletes go through [`Backend::store`]; the
/// write side has defaults built on `object_store` ([`ObjectStoreExt::put`],
/// `copy` and [`MultipartStore`] via [`Backend::multipart`]) that a backend
/// overrides where its emulator or API needs something else (GCS writes
/// through its JSON API).
///
/// Every method gets full object keys (the root directory already applied).
/// Errors are built with [`map_err`] or [`Error`]'s constructors; a missing
/// object is [`Error::PathNotFound`].
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Registry name of the driver (`"s3"`).
    fn name(&self) -> &'static str;

    /// The store used for get, head, list and delete.
    fn store(&self) -> &Arc<dyn ObjectStore>;

    /// Counts every request sent to the backend: the store's client is
    /// built with a [`crate::CountingConnector`] on it, and requests the
    /// backend sends by other means count into it too.
    fn requests(&self) -> &RequestCounter;

    /// The multipart API used by the default upload methods.
    fn multipart(&self) -> Option<&dyn MultipartStore>;

    /// The store's paged listing (one request a page, resumable after any
    /// key), when it has one. A walk then lists page by page, and when a
    /// page ends inside a directory its visitor skips, the next page
    /// starts after that directory instead of listing the rest of it (see
    /// the crate docs). `None`, the default: the walk lists every key
    /// with [`ObjectStore::list`].
    fn pages(&self) -> Option<&dyn PaginatedListStore> {
        None
    }

    /// Size of every part of a writer but the last (the driver's `chunksize`).
    fn part_size(&self) -> usize;

    /// Optional capabilities; `redirect` when [`Backend::signed_url`] gives URLs.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// Stores `data` at `key` in one atomic request.
    async fn put(&self, key: &Path, data: PutPayload) -> Result<()> {
        self.store()
            .put(key, data)
            .await
            .map(drop)
            .map_err(|e| map_err(e, key))
    }

    /// Stores `data` at `key` only if no object is there, atomically in the
    /// backend (`PutMode::Create`: a conditional request the store checks).
    /// `Ok(false)`: an object was there and nothing changed.
    async fn put_if_absent(&self, key: &Path, data: PutPayload) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        created(self.store().put_opts(key, data, opts).await, key)
    }

    /// Server-side copy of `from` to `to` (replacing `to`). A missing `from`
    /// is `PathNotFound` and leaves `to` untouched.
    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.store()
            .copy(from, to)
            .await
            .map_err(|e| map_err(e, from))
    }

    /// Starts a multipart upload to `key`; nothing is visible at `key` until
    /// [`Backend::complete_upload`]. Returns the upload's id.
    async fn create_upload(&self, key: &Path) -> Result<String> {
        let mp = self.require_multipart()?;
        mp.create_multipart(key).await.map_err(|e| map_err(e, key))
    }

    /// Uploads part number `index` (from 0), which starts at byte `offset`
    /// of the object and is exactly [`Backend::part_size`] long.
    async fn upload_part(
        &self,
        key: &Path,
        upload: &str,
        index: usize,
        _offset: u64,
        data: PutPayload,
    ) -> Result<String> {
        let mp = self.require_multipart()?;
        let part = mp
            .put_part(key, &upload.to_owned(), index, data)
            .await
            .map_err(|e| map_err(e, key))?;
        Ok(part.content_id)
    }

    /// Publishes `parts` followed by `last` (possibly empty) at `key`,
    /// atomically; `total` is the size of the whole object.
    async fn complete_upload(
        &self,
        key: &Path,
        upload: &str,
        parts: &[Part],
        last: PutPayload,
        _total: u64,
    ) -> Result<()> {
        let mp = self.require_multipart()?;
        let upload = upload.to_owned();
        let mut ids: Vec<PartId> = parts
            .iter()
            .map(|p| PartId {
                content_id: p.id.clone(),
            })
            .collect();
        if last.content_length() > 0 {
            let part = mp
                .put_part(key, &upload, parts.len(), last)
                .await
                .map_err(|e| map_err(e, key))?;
            ids.push(part);
        }
        mp.complete_multipart(key, &upload, ids)
            .await
            .map(drop)
            .map_err(|e| map_err(e, key))
    }

    /// Discards an unfinished upload and its parts. An upload that is
    /// already gone is not an error.
    async fn abort_upload(&self, key: &Path, upload: &str) -> Result<()> {
        let mp = self.require_multipart()?;
        match mp.abort_multipart(key, &upload.to_owned()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e, key)),
        }
    }

    /// Takes back parts `from..to` of `upload`, sent by a writer session
    /// that is being rolled back; the parts before `from` stay. The default
    /// does nothing: where completing an upload names the parts it keeps
    /// (S3 multipart, Azure block lists), parts left out are dropped by the
    /// store, and a later part with the same number replaces one.
    ///
    /// # Errors
    /// `Unsupported` where parts cannot be taken back (a GCS resumable
    /// session keeps every byte it was sent); `Backend`.
    async fn discard_parts(
        &self,
        _key: &Path,
        _upload: &str,
        _from: usize,
        _to: usize,
    ) -> Result<()> {
        Ok(())
    }

    /// Whether any object of this backend may be composite (see
    /// [`Backend::is_composite`]). When not, a batch of file deletes
    /// (`delete_files`) goes straight to batched delete requests without
    /// looking at the objects first. The default: none may be.
    fn may_hold_composites(&self) -> bool {
        false
    }

    /// Whether deleting the object `meta` describes (as listed or headed)
    /// must also delete parts stored under other keys, through
    /// [`Backend::delete_composite`]: Swift's static large objects. The
    /// default: no object is.
    fn is_composite(&self, _meta: &ObjectMeta) -> bool {
        false
    }

    /// Deletes the composite object at `key` and the parts it owns. Called
    /// by directory and file deletes only, never by `rename` (which moves
    /// the object and keeps its parts). A missing object is not an error.
    async fn delete_composite(&self, key: &Path) -> Result<()> {
        crate::delete_keys(self.store().as_ref(), vec![key.clone()]).await
    }

    /// A URL a client can fetch `key` from with `method` for `expires`
    /// (presigned, SAS, signed), or `None` when the backend has none.
    async fn signed_url(
        &self,
        _key: &Path,
        _method: RedirectMethod,
        _expires: Duration,
    ) -> Result<Option<url::Url>> {
        Ok(None)
    }

    /// [`Backend::multipart`], or an error saying the backend has none.
    fn require_multipart(&self) -> Result<&dyn MultipartStore> {
        self.multipart()
            .ok_or_else(|| Error::unsupported("multipart uploads on this backend"))
    }
}
