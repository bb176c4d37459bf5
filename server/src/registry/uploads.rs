//! Blob uploads: streamed through one hash pass into a resumable driver
//! writer, with the hash state saved after every request, so any instance
//! sharing the storage can continue an upload.
//!
//! An upload's writer at `_uploads/<uuid>/data` is closed (not committed)
//! between requests; the driver contract keeps its bytes invisible until
//! commit and lets `writer(path, append = true)` continue it. After each
//! request the hash state for the new size is stored beside it (about 100
//! bytes). Completion commits the writer, moves the data to the blob's place
//! and links the blob into the repository — a blob becomes visible only
//! whole and verified.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use regstore_core::Writer;

use super::digest::{Algorithm, Digest, Hasher};
use super::names::RepoName;
use super::{BlobInfo, Registry, RegistryError, Result, layout};

/// Where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// The session id (a UUID).
    pub uuid: String,
    /// Bytes received so far.
    pub size: u64,
}

/// A fresh upload session id.
pub fn new_upload_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The session id in its canonical form, or `BlobUploadUnknown` for anything
/// that is not a UUID (so it can never form a strange storage path).
///
/// # Errors
/// `BlobUploadUnknown`.
pub fn parse_upload_id(s: &str) -> Result<String> {
    match uuid::Uuid::parse_str(s) {
        Ok(u) if u.hyphenated().to_string() == s => Ok(s.to_owned()),
        _ => Err(RegistryError::BlobUploadUnknown(
            s.chars().take(100).collect(),
        )),
    }
}

/// The algorithm chunked uploads hash with (and whose state they save).
const RESUMABLE_ALGORITHM: Algorithm = Algorithm::Sha256;

impl Registry {
    /// Begins an upload in `name`.
    ///
    /// # Errors
    /// `Storage`.
    pub async fn start_upload(&self, name: &RepoName) -> Result<String> {
        let uuid = new_upload_id();
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        // The writer is created by the first request that brings bytes:
        // `startedat` alone marks an upload that has received none yet.
        self.driver
            .put_content(layout::upload_started_at(name, &uuid), started.into_bytes())
            .await?;
        Ok(uuid)
    }

    /// The upload's writer: resumed, or new if the upload has received
    /// nothing yet.
    async fn resume_writer(&self, name: &RepoName, uuid: &str) -> Result<Writer> {
        let data = layout::upload_data(name, uuid);
        match self.driver.writer(&data, true).await {
            Ok(w) => return Ok(w),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        match self
            .driver
            .stat(layout::upload_started_at(name, uuid))
            .await
        {
            Ok(_) => Ok(self.driver.writer(&data, false).await?),
            Err(e) if e.is_not_found() => Err(RegistryError::BlobUploadUnknown(uuid.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes received so far.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `Storage`.
    pub async fn upload_status(&self, name: &RepoName, uuid: &str) -> Result<UploadStatus> {
        let writer = self.resume_writer(name, uuid).await?;
        let size = writer.size();
        writer.close().await?;
        Ok(UploadStatus {
            uuid: uuid.to_owned(),
            size,
        })
    }

    async fn load_hasher(
        &self,
        name: &RepoName,
        uuid: &str,
        size: u64,
        fresh: Algorithm,
    ) -> Result<Hasher> {
        if size == 0 {
            return Ok(Hasher::new(fresh));
        }
        let path = layout::upload_hash_state(name, uuid, RESUMABLE_ALGORITHM, size);
        let state = match self.driver.get_content(&path).await {
            Ok(state) => state,
            Err(e) if e.is_not_found() => {
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "upload {uuid} holds {size} bytes but no hash state for them; start the upload again"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        Hasher::restore(RESUMABLE_ALGORITHM, &state).ok_or_else(|| {
            RegistryError::BlobUploadInvalid(format!(
                "upload {uuid}: the saved hash state at {path} is unreadable; start the upload again"
            ))
        })
    }

    /// Saves the hash state for the writer's size, then closes the writer,
    /// so the upload can be continued by this or another instance. In this
    /// order, whoever sees the new size also finds its hash state.
    async fn suspend(&self, name: &RepoName, uuid: &str, w: Writer, h: &Hasher) -> Result<u64> {
        let size = w.size();
        if size > 0 && h.algorithm() == RESUMABLE_ALGORITHM {
            self.driver
                .put_content(
                    layout::upload_hash_state(name, uuid, RESUMABLE_ALGORITHM, size),
                    h.save(),
                )
                .await?;
        }
        w.close().await?;
        Ok(size)
    }

    /// Appends a request body to an upload; returns the new size.
    ///
    /// `start` (from `Content-Range`) must equal the bytes already received,
    /// and `length` (from `Content-Length`), when given, is checked against
    /// what arrives. If the body breaks off, what arrived is kept and the
    /// client may resume from the reported size.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `RangeInvalid`, `BlobUploadInvalid` (body broke
    /// off, hash state lost), `Storage`.
    pub async fn append_upload<S, E>(
        &self,
        name: &RepoName,
        uuid: &str,
        start: Option<u64>,
        body: S,
    ) -> Result<UploadStatus>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut w = self.resume_writer(name, uuid).await?;
        let size = w.size();
        if let Some(given) = start
            && given != size
        {
            w.close().await?;
            return Err(RegistryError::RangeInvalid { given, size });
        }
        let mut h = match self
            .load_hasher(name, uuid, size, RESUMABLE_ALGORITHM)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                w.close().await?;
                return Err(e);
            }
        };
        let fed = feed(&mut w, &mut h, body).await;
        match fed {
            Ok(()) => {
                let size = self.suspend(name, uuid, w, &h).await?;
                Ok(UploadStatus {
                    uuid: uuid.to_owned(),
                    size,
                })
            }
            Err(FeedError::Body(message)) => {
                let size = self.suspend(name, uuid, w, &h).await?;
                Err(RegistryError::BlobUploadInvalid(format!(
                    "the request body broke off ({message}); {size} bytes are kept, resume from there"
                )))
            }
            Err(FeedError::Storage(e)) => {
                // The writer's state is unknown after a failed write: close it
                // if it still can be; the saved hash states tell the next
                // request whether the upload can go on.
                let _ = w.close().await;
                Err(e.into())
            }
        }
    }

    /// Appends the final body (possibly empty), verifies the whole upload
    /// against `digest` and makes it a blob of `name`.
    ///
    /// On a digest mismatch the upload is cancelled, as distribution does.
    /// Chunked uploads hash with SHA-256; one whose digest is SHA-512 is
    /// verified by reading the committed data once more.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `DigestMismatch`, `BlobUploadInvalid`, `Storage`.
    pub async fn complete_upload<S, E>(
        &self,
        name: &RepoName,
        uuid: &str,
        digest: &Digest,
        body: S,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut w = self.resume_writer(name, uuid).await?;
        let size = w.size();
        let mut h = match self.load_hasher(name, uuid, size, digest.algorithm()).await {
            Ok(h) => h,
            Err(e) => {
                w.close().await?;
                return Err(e);
            }
        };
        match feed(&mut w, &mut h, body).await {
            Ok(()) => {}
            Err(FeedError::Body(message)) => {
                let size = self.suspend(name, uuid, w, &h).await?;
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "the request body broke off ({message}); {size} bytes are kept, resume from there"
                )));
            }
            Err(FeedError::Storage(e)) => {
                let _ = w.close().await;
                return Err(e.into());
            }
        }
        let size = w.size();
        let verified = h.algorithm() == digest.algorithm();
        if verified {
            let actual = h.finish();
            if actual != *digest {
                w.cancel().await?;
                self.delete_if_exists(&layout::upload_dir(name, uuid))
                    .await?;
                return Err(RegistryError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        w.commit().await?;
        let data = layout::upload_data(name, uuid);
        if !verified {
            let actual = self.hash_stored(&data, digest.algorithm()).await?;
            if actual != *digest {
                self.delete_if_exists(&layout::upload_dir(name, uuid))
                    .await?;
                return Err(RegistryError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        if self.blob_size(digest).await?.is_none() {
            self.driver.rename(&data, layout::blob_data(digest)).await?;
        }
        self.delete_if_exists(&layout::upload_dir(name, uuid))
            .await?;
        self.link_blob(name, digest).await?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
        })
    }

    async fn hash_stored(&self, path: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut stream = self.driver.reader(path, 0).await?;
        let mut h = Hasher::new(algorithm);
        while let Some(chunk) = stream.next().await {
            h.update(&chunk?);
        }
        Ok(h.finish())
    }

    /// Stores a whole blob sent in one request (`POST ?digest=`, or `PUT`
    /// right after `POST`): streamed and verified like a chunked upload.
    ///
    /// # Errors
    /// As [`Registry::complete_upload`].
    pub async fn put_blob<S, E>(
        &self,
        name: &RepoName,
        digest: &Digest,
        body: S,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let uuid = self.start_upload(name).await?;
        let result = self.complete_upload(name, &uuid, digest, body).await;
        if result.is_err() {
            // A one-shot upload has no session the client knows to resume.
            let _ = self.cancel_upload(name, &uuid).await;
        }
        result
    }

    /// Abandons an upload: its data and state are removed.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `Storage`.
    pub async fn cancel_upload(&self, name: &RepoName, uuid: &str) -> Result<()> {
        let w = self.resume_writer(name, uuid).await?;
        w.cancel().await?;
        self.delete_if_exists(&layout::upload_dir(name, uuid)).await
    }
}

enum FeedError {
    Body(String),
    Storage(regstore_core::Error),
}

/// Streams `body` into the writer, hashing each byte once after it is
/// written, so the hasher always covers exactly what the writer holds.
async fn feed<S, E>(w: &mut Writer, h: &mut Hasher, mut body: S) -> Result<(), FeedError>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FeedError::Body(e.to_string()))?;
        if chunk.is_empty() {
            continue;
        }
        w.write(chunk.clone()).await.map_err(FeedError::Storage)?;
        h.update(&chunk);
    }
    Ok(())
}

/// What an upload purge found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Upload directories removed (or, in a dry run, that would be).
    pub purged: Vec<String>,
    /// Uploads kept because they are younger than the cutoff.
    pub kept: usize,
}

impl Registry {
    /// Removes uploads that began before `cutoff`, in every repository, as
    /// distribution's `maintenance.uploadpurging` does. An upload whose
    /// `startedat` is missing or unreadable counts as old. With `dry_run`
    /// nothing is deleted.
    ///
    /// # Errors
    /// `Storage` (a failed walk; a failed delete is logged and skipped).
    pub async fn purge_uploads(
        &self,
        cutoff: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<PurgeReport> {
        let mut upload_dirs = Vec::new();
        let walked = self
            .driver
            .walk(layout::REPOSITORIES, None, |fi| {
                match fi.path.file_name() {
                    Some("_uploads") if fi.is_dir => upload_dirs.push(fi.path.to_string()),
                    Some(n) if fi.is_dir && n.starts_with('_') => {}
                    _ => return Ok(regstore_core::WalkControl::Continue),
                }
                Ok(regstore_core::WalkControl::SkipDir)
            })
            .await;
        match walked {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(PurgeReport::default()),
            Err(e) => return Err(e.into()),
        }
        let mut report = PurgeReport::default();
        for dir in upload_dirs {
            let uploads = match self.driver.list(&dir).await {
                Ok(u) => u,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for upload in uploads {
                let started = match self.driver.get_content(format!("{upload}/startedat")).await {
                    Ok(b) => parse_started_at(String::from_utf8_lossy(&b).trim()),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e.into()),
                };
                if started.is_some_and(|t| t >= cutoff) {
                    report.kept += 1;
                    continue;
                }
                if !dry_run && let Err(e) = self.driver.delete(upload.as_str()).await {
                    tracing::warn!(upload = %upload, error = %e, "cannot purge upload");
                    continue;
                }
                report.purged.push(upload.to_string());
            }
        }
        Ok(report)
    }
}

/// Reads a `startedat` time: RFC 3339 in UTC (`…Z`, as regstore writes) or
/// with a numeric offset (`…+01:00`, as distribution writes in local time).
fn parse_started_at(s: &str) -> Option<std::time::SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Some(t);
    }
    let split = s.len().checked_sub(6)?;
    let (time, offset) = s.split_at(split);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = offset[1..].split_once(':')?;
    let secs = sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60);
    let local = humantime::parse_rfc3339_weak(time).ok()?;
    let shift = std::time::Duration::from_secs(secs.unsigned_abs());
    // Local time minus its offset is UTC.
    if secs >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_at_in_utc_or_with_an_offset() {
        let utc = parse_started_at("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(parse_started_at("2024-01-02T04:04:05+01:00"), Some(utc));
        assert_eq!(parse_started_at("2024-01-02T01:04:05-02:00"), Some(utc));
        assert_eq!(parse_started_at("yesterday"), None);
    }
}
