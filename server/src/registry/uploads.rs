//! Blob uploads: streamed through one hash pass into a resumable driver
//! writer, with the hash state saved after every request, so any instance
//! sharing the storage can continue an upload.
//!
//! Starting an upload stores nothing: its id carries its start time
//! ([`super::upload_id`]), and its directory appears with the first request
//! that brings bytes. An upload that ends (completed, cancelled, discarded)
//! leaves the [`layout::upload_ended`] marker, so requests on it answer
//! `BLOB_UPLOAD_UNKNOWN`; the purge removes markers and uploads by the
//! time in their ids ([`Registry::purge_uploads`]).
//!
//! An upload's writer at `_uploads/<uuid>/data` is closed (not committed)
//! between requests; the driver contract keeps its bytes invisible until
//! commit and lets `writer(path, append = true)` continue it. Each request
//! stores the hash state for its new size beside it (about 100 bytes).
//! The instance that served it also keeps the hasher ([`KeptHashers`]),
//! so its next request on the upload resumes without reading the state
//! back; another instance, or this one after a restart, reads it.
//! Completion commits the writer, moves the data to the blob's place and
//! links the blob into the repository — a blob becomes visible only whole
//! and verified.
//!
//! A blob that arrives whole in one request of at most [`SMALL_BLOB`]
//! bytes — a PUT ending an upload that has received nothing yet, or a
//! `POST ?digest=` — skips the writer: its body is read into memory,
//! hashed, checked and stored at the blob's place with one `put_content`
//! (one that does not hash to the digest is refused the usual way).
//! That spares a small push the files it would create only to delete them
//! again (data, hash state, lease), which on a filesystem cost more than
//! the bytes. Its end marker is written volatile: it guards no bytes
//! ([`Registry::mark_ended`]), so the push waits for the barriers of the
//! blob and its link alone.
//!
//! # A failed request changes nothing
//!
//! A PATCH or PUT either succeeds or leaves the upload at its last
//! acknowledged size, with that size's hash state, so the client can send
//! the same request again: a body that breaks off, a backend error while
//! writing, a failed state save or close, a failed commit — each takes back
//! what the request wrote ([`regstore_core::FileWriter::rollback`]; a failed
//! `close` or `commit` takes itself back). When a driver cannot take bytes
//! back (GCS, once a part went to its resumable session) or the rollback
//! itself fails, the upload is discarded and the next request on it answers
//! `BLOB_UPLOAD_UNKNOWN`, which clients answer by starting the blob again.
//! After a commit the upload cannot be resumed; a failure while moving or
//! linking the blob discards it the same way.
//!
//! # Integrity
//!
//! What is published under a digest is exactly the bytes that were hashed to
//! it, and nothing changes it afterwards:
//! - **One request at a time per upload.** Every request on an upload
//!   (PATCH, PUT, GET status, DELETE) holds the upload's lock in this
//!   instance ([`UploadLocks`]) while it runs; the lock is dropped with the
//!   request, also when its connection dies. A second request waits up to
//!   [`UPLOAD_LOCK_WAIT`] and is then refused with
//!   [`RegistryError::UploadBusy`] (409, retryable), never interleaved.
//!   Across instances that share the storage, the request also holds the
//!   upload's lease object ([`super::lease`]: created with the backend's
//!   create-if-absent, renewed while the request runs, expiring if its
//!   holder crashed); a request that cannot get it by the same deadline is
//!   refused the same way. Beneath that, drivers that can enforce one open
//!   writer per path do (filesystem: an `flock` on the staging file).
//! - **No lease where the writer is enough.** A driver that claims
//!   [`regstore_core::Capabilities::exclusive_writers`] (the filesystem
//!   driver on a local filesystem) excludes a second writer of the upload's
//!   data in any process, from `writer` until the writer is closed,
//!   committed or rolled back. Every step of a request that reads or
//!   writes the upload's bytes or hash states runs inside that window: the
//!   writer is opened (`resume`) before the hash state is read and closed
//!   only after the new state is saved; a final PUT commits and moves the
//!   data under it. So the writer orders requests across instances as the
//!   lease would, and the lease (an object created and deleted per request,
//!   two storage calls and a file) is skipped. What runs outside the
//!   window cannot publish other bytes: a DELETE of the upload in another
//!   instance removes its files and leaves the end marker (a PATCH racing
//!   it then fails, or is followed by `BLOB_UPLOAD_UNKNOWN`); a request on
//!   an upload whose final PUT is publishing finds no writer to resume and
//!   answers `BLOB_UPLOAD_UNKNOWN`. A crashed instance's requests hold
//!   nothing afterwards (the kernel drops its locks): no lease to wait for.
//! - **The hash state comes before the data.** A request stores the hash
//!   state for its new size first and only then closes (flushes and
//!   persists) its writer, and a failed close leaves the writer at its old
//!   size, so a writer is never closed at a size with no state. A state left
//!   by a failed close covers exactly the bytes that request hashed and
//!   is replaced by the next request that reaches its size. The state
//!   records the byte count it covers, and a request that resumes checks it
//!   against the writer's size: a mismatch answers `BLOB_UPLOAD_INVALID`
//!   and nothing is committed; a size with no state (bytes of a request cut
//!   off by a crash, on a driver whose writer grows before `close`: the
//!   filesystem) discards the upload, answered `BLOB_UPLOAD_UNKNOWN`, so
//!   the client starts the blob again.
//! - **Volatile between requests, durable at the end.** A PATCH's bytes,
//!   its hash state and the lease are written *volatile*
//!   ([`regstore_core::StorageDriver::volatile_epoch`]: on a local
//!   filesystem, without `fsync`; on object stores every write is durable
//!   anyway), and the state records the driver's epoch (the boot id). Its
//!   202 therefore survives a crash of the registry process, whose writes
//!   the kernel keeps, but not one of the machine: a request after a
//!   restart finds a state from another epoch and discards the upload
//!   (`BLOB_UPLOAD_UNKNOWN`, the client pushes the blob again) instead of
//!   trusting bytes that may never have reached the disk — a filesystem
//!   without ordered data can show a file at its new size with stale
//!   blocks. The final PUT commits the writer, which flushes every byte,
//!   before the blob is published and the push acknowledged (201): a
//!   pushed blob survives a power cut as before. What this buys: a
//!   chunked push waits for one flush instead of several per chunk.
//! - **Publishing.** The digest is checked before the writer commits; the
//!   committing writer is the only open writer of the upload (above), and
//!   the filesystem driver keeps its lock until the file has been renamed
//!   into place, so no file descriptor that can write to a published blob
//!   exists. On object stores the blob is a server-side copy, a new object
//!   no writer has open. A small blob (above) holds this instance's lock
//!   but needs no lease: what it stores is the buffer it hashed, which no
//!   other request, here or in another instance, can reach.
//! - **Pushing a digest again replaces the stored copy** with the bytes just
//!   verified instead of trusting what is there (a rename over it, or for
//!   a small blob a `put_content`: atomic either way), so a damaged copy
//!   heals on the next push rather than serving every repository bad
//!   bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt};
use regstore_core::Writer;
use tokio::sync::OwnedMutexGuard;

use super::digest::{Algorithm, Digest, Hasher};
use super::lease::{self, Lease, LeaseError};
use super::names::RepoName;
use super::upload_id::{CLOCK_SKEW, new_upload_id, upload_started};
use super::{BlobInfo, Registry, RegistryError, Result, expect_digest, layout};

/// Where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// The session id (a UUID).
    pub uuid: String,
    /// Bytes received so far.
    pub size: u64,
}

/// Told the size of a blob once its bytes are verified (see
/// [`Registry::cache_blob`]).
pub type Verified = Box<dyn FnOnce(u64) + Send>;

/// The algorithm chunked uploads hash with (and whose state they save).
const RESUMABLE_ALGORITHM: Algorithm = Algorithm::Sha256;

/// How long a request waits for another request on the same upload to
/// finish before it is refused with [`RegistryError::UploadBusy`]. Long
/// enough for a request whose client went away to save its state; short
/// enough that a client stalling a request cannot queue others behind it.
pub const UPLOAD_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The per-upload locks of one registry instance (shared by its clones).
#[derive(Debug, Default)]
pub struct UploadLocks {
    held: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds an upload's lock, and its lease when the driver gives one;
/// dropping it (the request ended, or its future was dropped with its
/// connection) releases both: the lease first, then the lock, so the next
/// request of this instance finds the lease free.
#[derive(Debug)]
pub struct UploadGuard {
    locks: Arc<UploadLocks>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
    lease: Option<Lease>,
}

impl UploadLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // Every critical section leaves the map consistent.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock of `key`, waiting until `deadline` at most.
    async fn acquire(self: &Arc<Self>, key: String, deadline: Instant) -> Option<UploadGuard> {
        let lock = Arc::clone(self.map().entry(key.clone()).or_default());
        let waited = tokio::time::timeout_at(deadline.into(), Arc::clone(&lock).lock_owned()).await;
        drop(lock);
        let guard = match waited {
            Ok(g) => Some(g),
            Err(_) => {
                self.forget_if_unused(&key);
                return None;
            }
        };
        Some(UploadGuard {
            locks: Arc::clone(self),
            key,
            guard,
            lease: None,
        })
    }

    /// Removes `key`'s entry when nobody holds or awaits it.
    fn forget_if_unused(&self, key: &str) {
        let mut map = self.map();
        if map.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(key);
        }
    }

    /// Uploads locked (or awaited) right now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when no upload is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many uploads' hashers an instance keeps ([`KeptHashers`]); one
/// costs a few hundred bytes.
const KEPT_HASHERS: usize = 1024;

/// Each upload's hasher as this instance's last request on it left it,
/// with the size it covers, so that the next request here resumes without
/// reading the hash state back from storage (a round trip to the
/// backend, on a filesystem a blocking call and four system calls per
/// chunk).
///
/// A kept hasher is used only for a writer opened at exactly its size,
/// with the upload's lock held (and its lease, or its exclusive writer):
/// the bytes below a size a request ended at never change (requests only
/// append, and a failed one is cut back to the size it resumed at, or the
/// upload is discarded), so it covers the same bytes as the state stored
/// for that size. Another instance that moved the upload on leaves a
/// writer of another size, and the state is read as before. A hasher is
/// taken out when used and kept again only by a request that ended well,
/// so a failure leaves nothing behind to trust.
#[derive(Debug, Default)]
pub(super) struct KeptHashers {
    kept: Mutex<KeptMap>,
}

#[derive(Debug, Default)]
struct KeptMap {
    /// Per upload (`name/uuid`): the size covered, when it was kept (a
    /// count, to drop the oldest), the hasher.
    by_upload: HashMap<String, (u64, u64, Hasher)>,
    kept: u64,
}

impl KeptHashers {
    fn map(&self) -> std::sync::MutexGuard<'_, KeptMap> {
        // Every critical section leaves the map consistent.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `hasher`, covering `size` bytes of upload `key`, dropping
    /// the one kept longest ago when [`KEPT_HASHERS`] are kept.
    fn keep(&self, key: String, size: u64, hasher: Hasher) {
        let mut map = self.map();
        map.kept += 1;
        let when = map.kept;
        map.by_upload.insert(key, (size, when, hasher));
        if map.by_upload.len() > KEPT_HASHERS
            && let Some(oldest) = map
                .by_upload
                .iter()
                .min_by_key(|(_, (_, when, _))| *when)
                .map(|(k, _)| k.clone())
        {
            map.by_upload.remove(&oldest);
        }
    }

    /// The hasher kept for upload `key` if it covers exactly `size` bytes;
    /// whatever was kept for `key` is dropped either way.
    fn take(&self, key: &str, size: u64) -> Option<Hasher> {
        let (covered, _, hasher) = self.map().by_upload.remove(key)?;
        (covered == size).then_some(hasher)
    }

    /// Drops what was kept for upload `key`.
    fn forget(&self, key: &str) {
        self.map().by_upload.remove(key);
    }
}

/// The key of an upload in [`UploadLocks`] and [`KeptHashers`].
fn upload_key(name: &RepoName, uuid: &str) -> String {
    format!("{name}/{uuid}")
}

impl UploadGuard {
    /// Releases the lease (deleting it; awaited, so that it is free when
    /// the request's answer is sent) and then the lock. Dropping the guard
    /// does the same in the background.
    async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let guard = self.guard.take();
        let locks = Arc::clone(&self.locks);
        let key = std::mem::take(&mut self.key);
        let release = move |guard| {
            drop(guard);
            locks.forget_if_unused(&key);
        };
        match (self.lease.take(), tokio::runtime::Handle::try_current()) {
            (Some(lease), Ok(rt)) => {
                rt.spawn(async move {
                    lease.release().await;
                    release(guard);
                });
            }
            // No runtime left to delete it with: the lease expires.
            _ => release(guard),
        }
    }
}

/// `RangeInvalid` unless a chunk said to start at `start` (its
/// `Content-Range`, if it had one) starts where the upload stands.
fn starts_at(start: Option<u64>, size: u64) -> Result<()> {
    match start {
        Some(given) if given != size => Err(RegistryError::RangeInvalid { given, size }),
        _ => Ok(()),
    }
}

/// The stored hash state of an upload: a header, the byte count it covers,
/// the epoch it was written in (see [`suspend`](Registry::suspend); empty
/// for a durable write), then the hasher's state.
const STATE_MAGIC: &[u8; 8] = b"RSHASH2\n";

/// The format without an epoch (regstore before volatile chunks), read as
/// a durable state.
const STATE_MAGIC_V1: &[u8; 8] = b"RSHASH1\n";

/// A hash state as stored.
struct SavedState {
    /// The byte count the hasher has seen.
    covered: u64,
    /// The driver's epoch when the state was written volatile.
    epoch: Option<String>,
    hasher: Hasher,
}

fn encode_state(covered: u64, epoch: Option<&str>, h: &Hasher) -> Bytes {
    let epoch = epoch.unwrap_or_default().as_bytes();
    // An epoch longer than the length field allows (no driver's is) is
    // cut, and then never matches: its uploads are discarded, not trusted.
    let epoch = &epoch[..epoch.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(18 + epoch.len() + 128);
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&covered.to_be_bytes());
    out.extend_from_slice(&(epoch.len() as u16).to_be_bytes());
    out.extend_from_slice(epoch);
    out.extend_from_slice(&h.save());
    out.into()
}

/// The stored state; `None` if unreadable (cut short, not a state).
fn decode_state(algorithm: Algorithm, state: &[u8]) -> Option<SavedState> {
    let (rest, with_epoch) = match state.strip_prefix(STATE_MAGIC) {
        Some(rest) => (rest, true),
        None => (state.strip_prefix(STATE_MAGIC_V1)?, false),
    };
    let (count, mut raw) = rest.split_at_checked(8)?;
    let covered = u64::from_be_bytes(count.try_into().ok()?);
    let mut epoch = None;
    if with_epoch {
        let (len, rest) = raw.split_at_checked(2)?;
        let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
        let (e, rest) = rest.split_at_checked(len)?;
        epoch = (len > 0).then(|| String::from_utf8_lossy(e).into_owned());
        raw = rest;
    }
    Some(SavedState {
        covered,
        epoch,
        hasher: Hasher::restore(algorithm, raw)?,
    })
}

impl Registry {
    /// Takes the upload's lock (see the module docs): waits up to
    /// [`UPLOAD_LOCK_WAIT`] for a request already running on it.
    ///
    /// # Errors
    /// `UploadBusy`.
    async fn lock_upload(&self, name: &RepoName, uuid: &str) -> Result<(UploadGuard, Instant)> {
        let (mut guard, deadline) = self.lock_locally(name, uuid).await?;
        self.take_lease(&mut guard, name, uuid, deadline).await?;
        Ok((guard, deadline))
    }

    /// The upload's lock in this instance only (see the module docs),
    /// waited for up to [`UPLOAD_LOCK_WAIT`]; returns it with its deadline.
    /// An upload whose id says it expired is refused first
    /// ([`Registry::check_age`]).
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `UploadBusy`.
    async fn lock_locally(&self, name: &RepoName, uuid: &str) -> Result<(UploadGuard, Instant)> {
        self.check_age(uuid)?;
        let deadline = Instant::now() + UPLOAD_LOCK_WAIT;
        match self
            .upload_locks
            .acquire(upload_key(name, uuid), deadline)
            .await
        {
            Some(guard) => Ok((guard, deadline)),
            None => Err(RegistryError::UploadBusy(uuid.to_owned())),
        }
    }

    /// Refuses an upload whose id carries a start time older than
    /// [`super::Settings::upload_max_age`] (the purge age: the purge may
    /// have removed it, or will) or further in the future than clocks of
    /// instances differ ([`CLOCK_SKEW`]).
    ///
    /// # Errors
    /// `BlobUploadUnknown`.
    fn check_age(&self, uuid: &str) -> Result<()> {
        let Some(started) = upload_started(uuid) else {
            return Ok(());
        };
        let now = SystemTime::now();
        let expired = self
            .settings
            .upload_max_age
            .is_some_and(|age| now.duration_since(started).is_ok_and(|d| d > age));
        if expired || started.duration_since(now).is_ok_and(|d| d > CLOCK_SKEW) {
            return Err(RegistryError::BlobUploadUnknown(uuid.to_owned()));
        }
        Ok(())
    }

    /// Adds the upload's lease to `guard`, waiting for it until `deadline`;
    /// nothing where the driver's writers are exclusive across processes.
    ///
    /// # Errors
    /// `UploadBusy`, `Storage`.
    async fn take_lease(
        &self,
        guard: &mut UploadGuard,
        name: &RepoName,
        uuid: &str,
        deadline: Instant,
    ) -> Result<()> {
        if self.driver.capabilities().exclusive_writers {
            // The upload's writer orders the requests (see the module
            // docs): no lease object to create and delete per request.
            return Ok(());
        }
        let path = layout::upload_lease(name, uuid);
        guard.lease = match lease::acquire(&self.driver, &path, deadline).await {
            Ok(lease) => lease,
            Err(LeaseError::Held) => return Err(RegistryError::UploadBusy(uuid.to_owned())),
            Err(LeaseError::Storage(e)) => return Err(e.into()),
        };
        Ok(())
    }

    /// Runs `work` (given the lock's deadline) holding the upload's lock and
    /// lease, and releases both before returning, so the next request
    /// finds them free when this one's answer is sent.
    ///
    /// # Errors
    /// `UploadBusy` (see [`Registry::lock_upload`]), `Storage`, and what
    /// `work` returns.
    async fn with_upload<T, F>(
        &self,
        name: &RepoName,
        uuid: &str,
        work: impl FnOnce(Instant) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let (lock, deadline) = self.lock_upload(name, uuid).await?;
        let result = work(deadline).await;
        lock.release().await;
        result
    }

    /// The upload's writer: resumed, or new if the upload has received
    /// nothing yet. A writer held open elsewhere (another instance's
    /// request) is waited for until `deadline`, then `UploadBusy`.
    async fn resume_writer(
        &self,
        name: &RepoName,
        uuid: &str,
        deadline: Instant,
    ) -> Result<Writer> {
        loop {
            match self.open_writer(name, uuid).await {
                Err(RegistryError::Storage(e)) if e.is_busy() => {
                    if Instant::now() >= deadline {
                        return Err(RegistryError::UploadBusy(uuid.to_owned()));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_writer(&self, name: &RepoName, uuid: &str) -> Result<Writer> {
        let data = layout::upload_data(name, uuid);
        match self.driver.writer(&data, true).await {
            Ok(w) => return Ok(w),
            Err(e) if e.is_not_found() => {}
            // Committed but not moved to the blob's place: the server
            // stopped while completing it. The digest it was verified
            // against is not kept, so the upload cannot be finished.
            Err(e) if e.kind() == regstore_core::ErrorKind::Unsupported => {
                return Err(RegistryError::UploadDiscarded {
                    uuid: uuid.to_owned(),
                    why: "its data was committed but not published (the server stopped while completing it)".into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.upload_known(name, uuid).await?;
        // No data, but hash states: the upload received bytes and then lost
        // them (its data was published and the clean-up failed). Starting
        // afresh would append the client's next bytes at offset 0.
        let states = layout::upload_hash_states(name, uuid, RESUMABLE_ALGORITHM);
        match self.driver.stat(&states).await {
            Ok(_) => Err(RegistryError::UploadDiscarded {
                uuid: uuid.to_owned(),
                why: "its data is gone (published by a request whose clean-up failed)".into(),
            }),
            Err(e) if e.is_not_found() => Ok(self.driver.writer(&data, false).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes received so far.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `Storage`.
    pub async fn upload_status(&self, name: &RepoName, uuid: &str) -> Result<UploadStatus> {
        self.with_upload(name, uuid, |deadline| async move {
            // Checked like a request that brings bytes: the size reported is
            // one an acknowledged request ended at.
            let (writer, hasher) = self
                .resume(name, uuid, None, RESUMABLE_ALGORITHM, deadline)
                .await?;
            let size = writer.size();
            // Nothing was written: ending the session changes nothing.
            writer.rollback().await?;
            if size > 0 {
                self.kept_hashers.keep(upload_key(name, uuid), size, hasher);
            }
            Ok(UploadStatus {
                uuid: uuid.to_owned(),
                size,
            })
        })
        .await
    }

    /// The hasher for an upload holding `size` bytes: fresh for none, else
    /// restored from the state saved for exactly that size (a missing one
    /// is waited for until `deadline`).
    async fn load_hasher(
        &self,
        name: &RepoName,
        uuid: &str,
        size: u64,
        fresh: Algorithm,
        deadline: Instant,
    ) -> Result<Hasher> {
        if size == 0 {
            return Ok(Hasher::new(fresh));
        }
        if let Some(kept) = self.kept_hashers.take(&upload_key(name, uuid), size) {
            return Ok(kept);
        }
        let path = layout::upload_hash_state(name, uuid, RESUMABLE_ALGORITHM, size);
        let state = loop {
            match self.driver.get_content(&path).await {
                Ok(state) => break state,
                // The state is stored before the writer is closed, but a
                // store may show a fresh object late (or an instance of an
                // earlier version saved it after closing): wait a little.
                Err(e) if e.is_not_found() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Bytes past the last acknowledged request: a server that
                // stopped mid-request (or a rollback and the discard after
                // it that both failed). Nothing can tell which bytes a client
                // had acknowledged, so the upload cannot go on.
                Err(e) if e.is_not_found() => {
                    return Err(RegistryError::UploadDiscarded {
                        uuid: uuid.to_owned(),
                        why: format!(
                            "it holds {size} bytes and no acknowledged request ended there (a request was cut off by a crash)"
                        ),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        };
        let discarded = |why: String| RegistryError::UploadDiscarded {
            uuid: uuid.to_owned(),
            why,
        };
        match decode_state(RESUMABLE_ALGORITHM, &state) {
            // Written volatile before the storage's machine restarted: its
            // bytes may not have reached the disk (see `suspend`).
            Some(saved)
                if saved
                    .epoch
                    .as_deref()
                    .is_some_and(|e| self.driver.volatile_epoch() != Some(e)) =>
            {
                Err(discarded(format!(
                    "its last chunk ({size} bytes in all) was acknowledged before the storage's machine restarted, and was not on disk yet"
                )))
            }
            Some(saved) if saved.covered == size => Ok(saved.hasher),
            Some(saved) => Err(RegistryError::BlobUploadInvalid(format!(
                "upload {uuid} holds {size} bytes but its hash state covers {}; start the upload again",
                saved.covered
            ))),
            // A state cut short by a machine crash, most likely.
            None => Err(discarded(format!(
                "the saved hash state for {size} bytes is unreadable"
            ))),
        }
    }

    /// Ends a request whose body was all written: saves the hash state for
    /// the new size, then closes the writer (its bytes flushed). A failure
    /// to save the state takes the request back; a failed close takes
    /// itself back (the driver contract). Either way a failed request
    /// leaves the upload where it was, and a state is never missing for a
    /// size the writer was closed at.
    ///
    /// Both writes are *volatile* (no `fsync` where the driver has an
    /// epoch, see the module docs), and the state records the epoch, so a
    /// request after the machine restarted discards the upload instead of
    /// trusting bytes that may not have reached the disk.
    ///
    /// `start` is the size the request resumed at, `covered` the byte count
    /// the hasher has seen; a writer of another size is taken back
    /// (`BlobUploadInvalid`).
    async fn suspend(
        &self,
        name: &RepoName,
        uuid: &str,
        w: Writer,
        h: &Hasher,
        start: u64,
        covered: u64,
    ) -> Result<u64> {
        let size = w.size();
        if size != covered {
            return Err(self
                .take_back(name, uuid, w, hashed_other_bytes(uuid, size, covered))
                .await);
        }
        let saved = size > start && h.algorithm() == RESUMABLE_ALGORITHM;
        if saved {
            let state = layout::upload_hash_state(name, uuid, RESUMABLE_ALGORITHM, size);
            let encoded = encode_state(size, self.driver.volatile_epoch(), h);
            if let Err(e) = self.driver.put_content_volatile(state, encoded).await {
                return Err(self.take_back(name, uuid, w, e.into()).await);
            }
        }
        w.close_volatile().await?;
        if saved {
            self.kept_hashers
                .keep(upload_key(name, uuid), size, h.clone());
        }
        Ok(size)
    }

    /// Ends a request that failed after opening the upload's writer: what it
    /// wrote is taken back, so the upload stays at its last acknowledged
    /// size with that size's hash state, and the same request can be sent
    /// again. When the writer cannot be taken back, the upload is discarded
    /// instead (the next request on it answers `BLOB_UPLOAD_UNKNOWN`), so it
    /// can never go on from bytes no hash state covers. Returns `error`.
    async fn take_back(
        &self,
        name: &RepoName,
        uuid: &str,
        w: Writer,
        error: RegistryError,
    ) -> RegistryError {
        let Err(e) = w.rollback().await else {
            return error;
        };
        tracing::warn!(upload = uuid, error = %e, "cannot take back a failed upload request; discarding the upload");
        if let Err(e) = self.end_upload(name, uuid).await {
            tracing::warn!(upload = uuid, error = %e, "cannot discard a damaged upload");
        }
        error
    }

    /// The writer and hasher for a request on an upload: resumed where the
    /// last acknowledged request left it, after checking `start` (from
    /// `Content-Range`) against its size.
    async fn resume(
        &self,
        name: &RepoName,
        uuid: &str,
        start: Option<u64>,
        fresh: Algorithm,
        deadline: Instant,
    ) -> Result<(Writer, Hasher)> {
        let w = self.resume_writer(name, uuid, deadline).await?;
        let size = w.size();
        // The state first: a size no acknowledged request ended at is
        // discarded whatever the request says.
        let hasher = match self.load_hasher(name, uuid, size, fresh, deadline).await {
            Ok(h) => starts_at(start, size).map(|()| h),
            Err(e) => Err(e),
        };
        match hasher {
            Ok(h) => Ok((w, h)),
            Err(e @ RegistryError::UploadDiscarded { .. }) => {
                w.cancel().await?;
                self.end_upload(name, uuid).await?;
                Err(e)
            }
            Err(e) => {
                // Nothing was written: ending the session changes nothing.
                w.rollback().await?;
                Err(e)
            }
        }
    }

    /// Appends a request body to an upload; returns the new size.
    ///
    /// `start` (from `Content-Range`) must equal the bytes already received,
    /// and `length` (from `Content-Length`), when given, is checked against
    /// what arrives. A request that fails (its body broke off, the storage
    /// failed) keeps nothing of its body: the upload stays at the size it
    /// had, and the same request may be sent again (see the module docs).
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
        self.with_upload(name, uuid, |deadline| async move {
            let (mut w, mut h) = self
                .resume(name, uuid, start, RESUMABLE_ALGORITHM, deadline)
                .await?;
            let resumed_at = w.size();
            let mut fed = 0;
            if let Err(e) = feed(&mut w, &mut h, body, &mut fed).await {
                return Err(self
                    .take_back(name, uuid, w, e.into_error(resumed_at))
                    .await);
            }
            let size = self
                .suspend(name, uuid, w, &h, resumed_at, resumed_at + fed)
                .await?;
            Ok(UploadStatus {
                uuid: uuid.to_owned(),
                size,
            })
        })
        .await
    }

    /// Appends the final body (possibly empty), verifies the whole upload
    /// against `digest` and makes it a blob of `name`.
    ///
    /// On a digest mismatch the upload is cancelled, as distribution does.
    /// Chunked uploads hash with SHA-256; one whose digest is SHA-512 is
    /// verified by reading the committed data once more. `start` (from
    /// `Content-Range`), when given, must equal the bytes already received,
    /// as for [`Registry::append_upload`]; otherwise nothing changes.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `RangeInvalid`, `DigestMismatch`,
    /// `BlobUploadInvalid`, `Storage`.
    pub async fn complete_upload<S, E>(
        &self,
        name: &RepoName,
        uuid: &str,
        digest: &Digest,
        start: Option<u64>,
        body: S,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        // A small body is read before anything is looked up: a final PUT
        // after PATCHes pays one `stat` for the chance of the small path, a
        // large body none.
        let body = take_small(body)
            .await
            .map_err(|message| broke_off(&message, "where it was"))?;
        self.finish_upload(name, uuid, digest, start, body, None)
            .await
    }

    /// [`Registry::complete_upload`] of a body [`take_small`] has begun,
    /// calling `on_verified` with the size once the bytes are known to
    /// hash to `digest`, before they are committed.
    async fn finish_upload<S, E>(
        &self,
        name: &RepoName,
        uuid: &str,
        digest: &Digest,
        start: Option<u64>,
        body: Taken<S>,
        on_verified: Option<Verified>,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let (mut lock, deadline) = self.lock_locally(name, uuid).await?;
        let result = async {
            let body = match body {
                // A body that does not hash to the digest goes the streamed
                // way, which refuses it (or, where `is_fresh` saw a listing
                // that lags, appends it to the bytes it missed).
                Taken::Whole(data)
                    if start.unwrap_or(0) == 0
                        && self.is_fresh(name, uuid).await?
                        && Digest::of(digest.algorithm(), &data) == *digest =>
                {
                    // The upload's end is marked while the blob is stored,
                    // and taken back if the blob is not stored: the request
                    // then changes nothing. The marker is volatile: it
                    // guards no bytes (see `mark_ended`), so it waits for
                    // no durability barrier of its own.
                    //
                    // What a fresh upload may hold goes too: a released
                    // lease's directory, an empty writer's file, or an
                    // older id's `startedat`. For an id that carries its
                    // start time none of it is needed (no bytes, and the id
                    // itself makes the upload known), so it goes while the
                    // blob is stored, off the request's path. An older id's
                    // `startedat` goes only once the blob is stored: it is
                    // what makes that upload known if storing fails.
                    let dir = layout::upload_dir(name, uuid);
                    let early = upload_started(uuid).is_some();
                    let (stored, marked, cleaned) = tokio::join!(
                        self.store_small(name, digest, data, on_verified),
                        self.mark_ended(name, uuid, false),
                        async {
                            if early {
                                Some(self.delete_if_exists(&dir).await)
                            } else {
                                None
                            }
                        }
                    );
                    match (&stored, marked) {
                        (Ok(_), Ok(())) => {
                            let cleaned = match cleaned {
                                Some(cleaned) => cleaned,
                                None => self.delete_if_exists(&dir).await,
                            };
                            if let Err(e) = cleaned {
                                tracing::warn!(upload = uuid, error = %e, "cannot remove a finished upload");
                            }
                        }
                        // Tried once more, the failure logged.
                        (Ok(_), Err(_)) => self.remove_upload(name, uuid).await,
                        (Err(_), Ok(())) => self.unmark_ended(name, uuid).await,
                        (Err(_), Err(_)) => {}
                    }
                    return stored;
                }
                // One item type for both (an `E` need not be `Send`).
                Taken::Whole(data) => {
                    Either::Left(futures_util::stream::iter([Ok::<_, String>(data)]))
                }
                Taken::Part(body) => Either::Right(body.map(|r| r.map_err(|e| e.to_string()))),
            };
            self.finish_streamed(
                name,
                uuid,
                digest,
                start,
                body,
                on_verified,
                &mut lock,
                deadline,
            )
            .await
        }
        .await;
        lock.release().await;
        result
    }

    /// [`Registry::finish_upload`] through the upload's writer, holding its
    /// lock (`lock`, to which the upload's lease is added first).
    #[allow(clippy::too_many_arguments)]
    async fn finish_streamed<S, E>(
        &self,
        name: &RepoName,
        uuid: &str,
        digest: &Digest,
        start: Option<u64>,
        body: S,
        on_verified: Option<Verified>,
        lock: &mut UploadGuard,
        deadline: Instant,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        self.take_lease(lock, name, uuid, deadline).await?;
        let (mut w, mut h) = self
            .resume(name, uuid, start, digest.algorithm(), deadline)
            .await?;
        let resumed_at = w.size();
        let mut fed = 0;
        if let Err(e) = feed(&mut w, &mut h, body, &mut fed).await {
            return Err(self
                .take_back(name, uuid, w, e.into_error(resumed_at))
                .await);
        }
        let size = w.size();
        if size != resumed_at + fed {
            // The writer holds bytes the hash did not see (or the other way
            // round): nothing can be published from it.
            let e = hashed_other_bytes(uuid, size, resumed_at + fed);
            return Err(self.take_back(name, uuid, w, e).await);
        }
        let verified = h.algorithm() == digest.algorithm();
        if verified && let Err(e) = expect_digest(digest, h.finish()) {
            w.cancel().await?;
            self.end_upload(name, uuid).await?;
            return Err(e);
        }
        let mut on_verified = on_verified;
        if verified && let Some(f) = on_verified.take() {
            f(size);
        }
        // A failed commit takes itself back (the driver contract): the
        // upload stays where it was and the request can be sent again.
        w.commit().await?;
        // Committed, the upload cannot be resumed: if publishing fails
        // from here, it is discarded and the client starts again.
        let published = self
            .publish(name, uuid, digest, size, verified, on_verified)
            .await;
        if published.is_err()
            && let Err(e) = self.end_upload(name, uuid).await
        {
            tracing::warn!(upload = uuid, error = %e, "cannot discard an upload that failed to publish");
        }
        published
    }

    /// Moves an upload's committed data to the blob's place and links it
    /// into `name`; then removes the upload (a failure there is only
    /// logged: the blob is stored and linked, and the purge removes what
    /// is left). Data not hashed on the way in (`verified == false`) is
    /// hashed first.
    async fn publish(
        &self,
        name: &RepoName,
        uuid: &str,
        digest: &Digest,
        size: u64,
        verified: bool,
        mut on_verified: Option<Verified>,
    ) -> Result<BlobInfo> {
        let data = layout::upload_data(name, uuid);
        if !verified {
            expect_digest(digest, self.hash_stored(&data, digest.algorithm()).await?)?;
            if let Some(f) = on_verified.take() {
                f(size);
            }
        }
        // Replaces a stored copy too: what was just verified is what every
        // repository linking the digest is served from now on. A copy
        // that garbage collection is deleting goes first.
        self.gc_fence.wait_until_undoomed(None, digest).await;
        self.driver.rename(&data, layout::blob_data(digest)).await?;
        let stored = self.blob_stored(name, digest, size).await?;
        self.remove_upload(name, uuid).await;
        Ok(stored)
    }

    /// After a blob's data was stored at its place: its descriptor cached
    /// and the blob linked into `name`.
    async fn blob_stored(&self, name: &RepoName, digest: &Digest, size: u64) -> Result<BlobInfo> {
        self.descriptor_stored(digest, size).await;
        self.link_blob(name, digest, size).await?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
        })
    }

    /// Tells the blob-descriptor cache the size of a blob just stored: the
    /// copy may differ in size from a damaged one the cache knew.
    async fn descriptor_stored(&self, digest: &Digest, size: u64) {
        if let Some(c) = &self.blob_cache {
            c.set_descriptor(digest, &crate::cache::Descriptor::blob(size))
                .await;
        }
    }

    /// Removes a finished upload; a failure is only logged: upload purging
    /// removes what is left.
    async fn remove_upload(&self, name: &RepoName, uuid: &str) {
        if let Err(e) = self.end_upload(name, uuid).await {
            tracing::warn!(upload = uuid, error = %e, "cannot remove a finished upload");
        }
    }

    /// Whether the upload exists and has received no bytes: it has no hash
    /// state, which every request that brought bytes saved before it was
    /// acknowledged. (Bytes a crash cut off are no bytes the client was
    /// told of; removing the upload removes them.)
    ///
    /// The states are a directory, whose `stat` a store with lagging
    /// listings (Swift) may answer from before the first PATCH: `true` can
    /// be wrong there. Its caller therefore stores a body alone only if it
    /// hashes to the digest by itself, which with bytes before it would
    /// take a hash collision.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `Storage`.
    async fn is_fresh(&self, name: &RepoName, uuid: &str) -> Result<bool> {
        // The states first: an upload with bytes costs one lookup.
        let states = layout::upload_hash_states(name, uuid, RESUMABLE_ALGORITHM);
        match self.driver.stat(&states).await {
            Ok(_) => return Ok(false),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.upload_known(name, uuid).await.map(|()| true)
    }

    /// Whether an upload that holds no data exists: one whose id carries
    /// its start time (see [`super::upload_id`]) does until it ends (its
    /// [`layout::upload_ended`] marker) or expires (refused before, by
    /// [`Registry::lock_locally`]); one whose id does not, while its
    /// `startedat` is stored.
    ///
    /// # Errors
    /// `BlobUploadUnknown`, `Storage`.
    async fn upload_known(&self, name: &RepoName, uuid: &str) -> Result<()> {
        let unknown = || Err(RegistryError::BlobUploadUnknown(uuid.to_owned()));
        if upload_started(uuid).is_none() {
            return match self
                .driver
                .stat(layout::upload_started_at(name, uuid))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => unknown(),
                Err(e) => Err(e.into()),
            };
        }
        match self.driver.stat(layout::upload_ended(name, uuid)).await {
            Ok(_) => unknown(),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends an upload (completed, cancelled or discarded): for an id that
    /// carries its start time the [`layout::upload_ended`] marker is
    /// written, so requests on it answer `BLOB_UPLOAD_UNKNOWN` from then
    /// on, and then its directory is removed.
    ///
    /// The marker comes first: if the directory went first and the marker
    /// then failed, the id would look like an upload that received
    /// nothing, and a client going on from its acknowledged chunks would
    /// have its final PUT refused as the wrong digest (400) instead of
    /// being told to push the blob again (404) — the fault matrix found
    /// that. A failed marker leaves the upload as it was; a failed delete
    /// after it leaves what the purge removes.
    ///
    /// # Errors
    /// `Storage`.
    async fn end_upload(&self, name: &RepoName, uuid: &str) -> Result<()> {
        self.kept_hashers.forget(&upload_key(name, uuid));
        self.mark_ended(name, uuid, true).await?;
        self.delete_if_exists(&layout::upload_dir(name, uuid)).await
    }

    /// Writes the [`layout::upload_ended`] marker of an upload whose id
    /// carries its start time (for others, removing the directory with its
    /// `startedat` ends the upload).
    ///
    /// `durable: false` writes it volatile (no `fsync` on a local
    /// filesystem), for an upload that held no bytes and completed: a
    /// marker lost in a power cut only lets the id look like the empty
    /// upload it was before its PUT, and the blob that PUT stored is
    /// durable on its own. An upload that held bytes, or is discarded
    /// because they cannot be trusted, is marked durably: after its
    /// directory goes, the marker is what tells a client going on from
    /// its chunks to start again (see [`Registry::end_upload`]).
    ///
    /// # Errors
    /// `Storage`.
    async fn mark_ended(&self, name: &RepoName, uuid: &str, durable: bool) -> Result<()> {
        if upload_started(uuid).is_none() {
            return Ok(());
        }
        let path = layout::upload_ended(name, uuid);
        let ended = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        if durable {
            self.driver.put_content(path, ended.into_bytes()).await?;
        } else {
            self.driver
                .put_content_volatile(path, ended.into_bytes())
                .await?;
        }
        Ok(())
    }

    /// Takes back [`Registry::mark_ended`] after the request it was made
    /// for failed; a failure is only logged (the upload then answers
    /// `BLOB_UPLOAD_UNKNOWN` and the client starts the blob again).
    async fn unmark_ended(&self, name: &RepoName, uuid: &str) {
        if let Err(e) = self
            .delete_if_exists(&layout::upload_ended(name, uuid))
            .await
        {
            tracing::warn!(upload = uuid, error = %e, "cannot take back the end of a failed upload");
        }
    }

    /// Stores a whole blob held in memory (a body of at most
    /// [`SMALL_BLOB`] bytes) that the caller checked hashes to `digest`,
    /// with one `put_content` at its place: no upload data, no writer, no
    /// move.
    async fn store_small(
        &self,
        name: &RepoName,
        digest: &Digest,
        data: Bytes,
        on_verified: Option<Verified>,
    ) -> Result<BlobInfo> {
        let size = data.len() as u64;
        if let Some(f) = on_verified {
            f(size);
        }
        // As in `publish`: replaces a stored copy with what was verified.
        self.gc_fence.wait_until_undoomed(None, digest).await;
        // The blob and then its link, in one call: the link is visible only
        // once the blob is durable, as with two `put_content`s, but the
        // filesystem flushes both files in one barrier (3 barriers in a
        // row instead of 4).
        let link = Bytes::from(layout::link_content(digest));
        self.driver
            .put_contents_in_order(vec![
                (layout::blob_data(digest), data),
                (layout::layer_link(name, digest), link),
            ])
            .await?;
        self.descriptor_stored(digest, size).await;
        self.blob_linked(name, digest, size).await;
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
        self.store_blob(name, digest, body, None).await
    }

    /// [`Registry::put_blob`] for a pull-through cache: `on_verified` is
    /// called with the size as soon as the bytes are known to hash to
    /// `digest` (SHA-256: after the last byte; other algorithms: after the
    /// commit, when the stored data has been hashed), which for SHA-256 is
    /// before they are committed and synced. A client streamed the bytes
    /// as they came can be told the transfer is complete and right from
    /// then on, without waiting for the storage's durability. Not called
    /// when the bytes do not match; if the commit fails afterwards the
    /// blob is not stored (the call's error says why).
    ///
    /// # Errors
    /// As [`Registry::put_blob`].
    pub async fn cache_blob<S, E>(
        &self,
        name: &RepoName,
        digest: &Digest,
        body: S,
        on_verified: Verified,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        self.store_blob(name, digest, body, Some(on_verified)).await
    }

    async fn store_blob<S, E>(
        &self,
        name: &RepoName,
        digest: &Digest,
        body: S,
        on_verified: Option<Verified>,
    ) -> Result<BlobInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let body = match take_small(body).await {
            Ok(Taken::Whole(data)) => {
                expect_digest(digest, Digest::of(digest.algorithm(), &data))?;
                return self.store_small(name, digest, data, on_verified).await;
            }
            Ok(part) => part,
            Err(message) => return Err(broke_off(&message, "unstored")),
        };
        let uuid = new_upload_id();
        let result = self
            .finish_upload(name, &uuid, digest, None, body, on_verified)
            .await;
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
        self.with_upload(name, uuid, |deadline| async move {
            let w = self.resume_writer(name, uuid, deadline).await?;
            w.cancel().await?;
            self.end_upload(name, uuid).await
        })
        .await
    }
}

/// Bodies up to this many bytes that store a whole blob (a PUT ending an
/// upload that has received nothing yet, a `POST ?digest=`) are collected
/// in memory, checked and stored with one `put_content`: no upload data
/// file, hash state or lease, and no move into place. A small push then
/// creates no file it deletes again. The same bound as the filesystem
/// writer's buffer, which holds as many bytes per upload.
pub const SMALL_BLOB: usize = 1 << 20;

/// A request body after [`take_small`].
enum Taken<S> {
    /// It ended within [`SMALL_BLOB`] bytes.
    Whole(Bytes),
    /// It goes on: what was read, then the rest.
    Part(S),
}

/// A body with what was read of it put back in front.
type Unread<S, E> = futures_util::stream::Chain<
    futures_util::stream::Map<
        futures_util::stream::Iter<std::vec::IntoIter<Bytes>>,
        fn(Bytes) -> std::result::Result<Bytes, E>,
    >,
    S,
>;

/// `read` put back in front of the rest of `body`.
fn unread<S, E>(read: Vec<Bytes>, body: S) -> Unread<S, E>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
{
    let ok: fn(Bytes) -> std::result::Result<Bytes, E> = Ok;
    futures_util::stream::iter(read).map(ok).chain(body)
}

/// Reads `body` until it ends or passes [`SMALL_BLOB`] bytes. Errors with
/// the body's own message when it breaks off.
async fn take_small<S, E>(mut body: S) -> std::result::Result<Taken<Unread<S, E>>, String>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut read = Vec::new();
    let mut len = 0;
    while len <= SMALL_BLOB {
        match body.next().await {
            None if read.len() == 1 => return Ok(Taken::Whole(read.swap_remove(0))),
            None => return Ok(Taken::Whole(read.concat().into())),
            Some(Ok(chunk)) => {
                len += chunk.len();
                read.push(chunk);
            }
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
    Ok(Taken::Part(unread(read, body)))
}

enum FeedError {
    Body(String),
    Storage(regstore_core::Error),
}

impl FeedError {
    /// What the client is told; the upload stays at `kept` bytes.
    fn into_error(self, kept: u64) -> RegistryError {
        match self {
            FeedError::Body(message) => broke_off(&message, &format!("at {kept} bytes")),
            FeedError::Storage(e) => e.into(),
        }
    }
}

/// A request body broke off (`message`): nothing of it was kept, and the
/// upload (or blob) stays `where`.
fn broke_off(message: &str, stays: &str) -> RegistryError {
    RegistryError::BlobUploadInvalid(format!(
        "the request body broke off ({message}); none of it was kept: the upload stays {stays}, send the request again"
    ))
}

/// Streams `body` into the writer, hashing each byte once after it is
/// written, so the hasher always covers exactly what the writer holds.
/// `fed` counts the bytes written and hashed, also when it fails.
async fn feed<S, E>(
    w: &mut Writer,
    h: &mut Hasher,
    mut body: S,
    fed: &mut u64,
) -> Result<(), FeedError>
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
        *fed += chunk.len() as u64;
    }
    Ok(())
}

/// The writer and the hasher disagree on the upload's length.
fn hashed_other_bytes(uuid: &str, size: u64, hashed: u64) -> RegistryError {
    RegistryError::BlobUploadInvalid(format!(
        "upload {uuid} holds {size} bytes but {hashed} were hashed; start the upload again"
    ))
}

/// What an upload purge found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Upload directories removed (or, in a dry run, that would be).
    pub purged: Vec<String>,
    /// Uploads kept because they are younger than the cutoff.
    pub kept: usize,
    /// Markers of ended uploads ([`layout::upload_ended`]) removed (or, in
    /// a dry run, that would be): ids older than the cutoff have expired,
    /// so their markers are needed no more.
    pub ended: usize,
}

impl Registry {
    /// Removes uploads that began before `cutoff`, in every repository, as
    /// distribution's `maintenance.uploadpurging` does, and the markers of
    /// ended uploads whose ids are that old. An upload's start is the time
    /// its id carries, or else its `startedat`; one whose `startedat` is
    /// missing or unreadable counts as old. With `dry_run` nothing is
    /// deleted.
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
                let name = upload.file_name().unwrap_or_default();
                let marker = name.strip_suffix(".ended");
                let started = match upload_started(marker.unwrap_or(name)) {
                    Some(t) => Some(t),
                    None if marker.is_some() => None,
                    None => match self.driver.get_content(format!("{upload}/startedat")).await {
                        Ok(b) => parse_started_at(String::from_utf8_lossy(&b).trim()),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e.into()),
                    },
                };
                if started.is_some_and(|t| t >= cutoff) {
                    if marker.is_none() {
                        report.kept += 1;
                    }
                    continue;
                }
                if !dry_run {
                    match self.driver.delete(upload.as_str()).await {
                        Ok(()) => {}
                        // Ended (and removed) since the listing.
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => {
                            tracing::warn!(upload = %upload, error = %e, "cannot purge upload");
                            continue;
                        }
                    }
                }
                if marker.is_some() {
                    report.ended += 1;
                } else {
                    report.purged.push(upload.to_string());
                }
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

    /// A kept hasher is given back only for its size and only once; past
    /// the limit the one kept longest ago goes.
    #[test]
    fn kept_hashers_match_their_size_and_drop_the_oldest() {
        let kept = KeptHashers::default();
        let mut h = Hasher::new(RESUMABLE_ALGORITHM);
        h.update(b"abc");
        kept.keep("r/u".into(), 3, h.clone());
        assert!(kept.take("r/u", 4).is_none(), "another size");
        assert!(kept.take("r/u", 3).is_none(), "dropped by the miss");
        kept.keep("r/u".into(), 3, h.clone());
        let got = kept.take("r/u", 3).expect("its size");
        assert_eq!(got.finish(), h.clone().finish());
        assert!(kept.take("r/u", 3).is_none(), "taken once");
        for i in 0..=KEPT_HASHERS {
            kept.keep(format!("r/{i}"), 1, h.clone());
        }
        assert_eq!(kept.map().by_upload.len(), KEPT_HASHERS);
        assert!(kept.take("r/0", 1).is_none(), "the oldest went");
        assert!(kept.take(&format!("r/{KEPT_HASHERS}"), 1).is_some());
        kept.forget("r/1");
        assert!(kept.take("r/1", 1).is_none());
    }

    #[test]
    fn started_at_in_utc_or_with_an_offset() {
        let utc = parse_started_at("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(parse_started_at("2024-01-02T04:04:05+01:00"), Some(utc));
        assert_eq!(parse_started_at("2024-01-02T01:04:05-02:00"), Some(utc));
        assert_eq!(parse_started_at("yesterday"), None);
    }

    /// A state keeps its byte count, epoch (or none) and hasher; the
    /// format before epochs reads as durable; a cut one is unreadable.
    #[test]
    fn hash_states_round_trip_with_and_without_an_epoch() {
        let mut h = Hasher::new(RESUMABLE_ALGORITHM);
        h.update(b"abc");
        let digest = |h: Hasher| h.finish().to_string();
        for epoch in [Some("b0b5-1d"), None] {
            let saved = encode_state(3, epoch, &h);
            let got = decode_state(RESUMABLE_ALGORITHM, &saved).unwrap();
            assert_eq!((got.covered, got.epoch.as_deref()), (3, epoch));
            assert_eq!(digest(got.hasher), digest(h.clone()));
            for cut in [0, 8, 17, 20, saved.len() - 1] {
                assert!(
                    decode_state(RESUMABLE_ALGORITHM, &saved[..cut]).is_none(),
                    "{cut}"
                );
            }
        }
        let mut v1 = STATE_MAGIC_V1.to_vec();
        v1.extend_from_slice(&3u64.to_be_bytes());
        v1.extend_from_slice(&h.save());
        let got = decode_state(RESUMABLE_ALGORITHM, &v1).unwrap();
        assert_eq!((got.covered, got.epoch), (3, None));
        assert_eq!(digest(got.hasher), digest(h));
    }
}
