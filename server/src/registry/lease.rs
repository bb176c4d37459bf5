//! Upload leases: one request at a time per upload across every registry
//! instance that shares the storage.
//!
//! The in-process [`UploadLocks`](super::uploads::UploadLocks) order the
//! requests of one instance. Instances that share a bucket (or a
//! filesystem root) order theirs with a lease object in the upload's
//! directory, `_uploads/<uuid>/lease`, created with
//! [`put_content_if_absent`](regstore_core::Driver::put_content_if_absent) —
//! the backend's own create-if-absent (S3 `If-None-Match: *`, Azure the
//! same, GCS `ifGenerationMatch=0`, filesystem a hard link), so of two
//! instances that ask at once exactly one gets it.
//!
//! - A lease names its holder (a random id, the process) and an expiry
//!   [`LEASE_TTL`] ahead. The holder renews it every [`LEASE_RENEW`] while
//!   its request runs, and deletes it when the request ends (also when the
//!   request's connection died).
//! - A lease of this process that may be left in storage with no request
//!   holding it (its delete failed, or its create failed in a way that may
//!   have stored it: a backend that died mid-request) is taken back by the
//!   next request of this process on that upload at once; other instances
//!   wait for it to expire. So is a take-over this process claimed but
//!   could not complete (the claim stays, the expired lease with it).
//! - A lease whose holder vanished (a crashed process) expires. Taking an
//!   expired lease over goes through a second create-if-absent, of
//!   `lease-taken/<id of the expired lease>`: of two instances that find
//!   the same expired lease only one takes it.
//! - Leases are written *volatile*
//!   ([`StorageDriver::volatile_epoch`](regstore_core::StorageDriver::volatile_epoch):
//!   no `fsync` on a local filesystem): a lease only matters while its
//!   holder lives, and a machine crash ends every holder on it. A lease
//!   left torn or missing by that crash is taken over or free.
//! - Leases compare wall-clock times of different machines: instances need
//!   clocks within a few seconds of each other (NTP), far less than
//!   [`LEASE_TTL`].
//! - A driver that does not claim `create_if_absent` (Swift, whose
//!   `If-None-Match: *` lets two concurrent uploads both succeed; drivers
//!   written without it) gets no lease: requests are then ordered within
//!   each instance only, and a warning says so once.
//! - A driver that claims `exclusive_writers` (the filesystem driver on a
//!   local filesystem) needs none: the upload's writer orders the requests
//!   across processes (see `uploads.rs`, *No lease where the writer
//!   is enough*).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use regstore_core::Driver;
use tokio::task::JoinHandle;

/// How long a lease holds without renewal: a crashed holder blocks its
/// upload (requests answer 409 with `Retry-After`) for at most this long.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often a running request renews its lease.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);

/// A lease this close to its expiry is checked before it is renewed or
/// deleted, in case another instance has taken it over.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// First word of a lease object.
const LEASE_MAGIC: &str = "regstore-lease-1";

/// What a lease object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Random id of this lease (a UUID).
    pub id: String,
    /// Milliseconds since the Unix epoch after which the lease is void.
    pub expires_ms: u64,
    /// Who holds it, for people reading the bucket (`pid@host`).
    pub owner: String,
}

impl LeaseRecord {
    /// A new lease for this process, valid for `ttl` from now.
    pub fn new(ttl: Duration) -> Self {
        LeaseRecord {
            id: uuid::Uuid::new_v4().to_string(),
            expires_ms: now_ms().saturating_add(millis(ttl)),
            owner: owner(),
        }
    }

    /// The object's bytes: one line of four words.
    pub fn encode(&self) -> String {
        format!(
            "{LEASE_MAGIC} {} {} {}\n",
            self.id, self.expires_ms, self.owner
        )
    }

    /// Reads a lease object; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.split_whitespace();
        if words.next()? != LEASE_MAGIC {
            return None;
        }
        let id = words.next()?.to_owned();
        let expires_ms = words.next()?.parse().ok()?;
        let owner = words.next().unwrap_or("").to_owned();
        Some(LeaseRecord {
            id,
            expires_ms,
            owner,
        })
    }

    fn expired(&self) -> bool {
        now_ms() >= self.expires_ms
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// `pid@host` of this process, read once (every upload request makes a
/// lease record).
fn owner() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            let host: String = host
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            format!("{}@{}", std::process::id(), host)
        })
        .clone()
}

/// Why no lease was had.
#[derive(Debug)]
pub(crate) enum LeaseError {
    /// Another instance holds it, still at the deadline.
    Held,
    /// The storage failed.
    Storage(regstore_core::Error),
}

impl From<regstore_core::Error> for LeaseError {
    fn from(e: regstore_core::Error) -> Self {
        LeaseError::Storage(e)
    }
}

/// A lease held by a request; renewed in the background until
/// [`Lease::release`].
#[derive(Debug)]
pub(crate) struct Lease {
    driver: Driver,
    path: String,
    id: String,
    expires_ms: Arc<AtomicU64>,
    renewer: JoinHandle<()>,
}

/// Takes the lease at `path` (`_uploads/<uuid>/lease`), waiting for another
/// holder until `deadline`. `Ok(None)`: the driver cannot create atomically
/// (no lease; see the module docs).
///
/// # Errors
/// `Held` at the deadline, `Storage`.
pub(crate) async fn acquire(
    driver: &Driver,
    path: &str,
    deadline: Instant,
) -> Result<Option<Lease>, LeaseError> {
    if !driver.capabilities().create_if_absent {
        warn_unshared(driver.name());
        return Ok(None);
    }
    let mine = LeaseRecord::new(LEASE_TTL);
    let taken = take(driver, path, &mine, deadline).await;
    if let Err(LeaseError::Storage(_)) = &taken {
        // A write of `mine` may have stored it although its answer was
        // lost (a backend that died mid-request): no request holds it, so
        // the next request of this process takes it back at once instead
        // of waiting [`LEASE_TTL`] for it to expire.
        left_behind_ids().insert(mine.id.clone());
    }
    taken
}

/// The loop of [`acquire`] for the record `mine`.
async fn take(
    driver: &Driver,
    path: &str,
    mine: &LeaseRecord,
    deadline: Instant,
) -> Result<Option<Lease>, LeaseError> {
    loop {
        if driver
            .put_content_if_absent_volatile(path, mine.encode())
            .await?
        {
            return Ok(Some(Lease::start(driver, path, mine.clone())));
        }
        match driver.get_content(path).await {
            // Released in between: ask again at once.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
            Ok(bytes) => match LeaseRecord::decode(&bytes) {
                // A retried create whose first try did store.
                Some(held) if held.id == mine.id => {
                    return Ok(Some(Lease::start(driver, path, mine.clone())));
                }
                // This process's own lease that a finished request could
                // not delete (a storage failure): no request of ours holds
                // it now (we hold the upload's in-process lock), and no
                // other instance can have it, so take it back at once
                // instead of waiting for it to expire.
                Some(held) if left_behind(&held.id) => {
                    driver.put_content_volatile(path, mine.encode()).await?;
                    forget_left_behind(&held.id);
                    return Ok(Some(Lease::start(driver, path, mine.clone())));
                }
                Some(held) if !held.expired() => {}
                // Expired, or not a lease at all: take it over, once.
                held => {
                    let old = held.map(|h| h.id).unwrap_or_else(|| sha_id(&bytes));
                    let claim = format!("{}/lease-taken/{old}", parent(path));
                    let claimed = driver
                        .put_content_if_absent_volatile(&claim, mine.id.clone())
                        .await?
                        || own_failed_claim(driver, &claim).await?;
                    if claimed {
                        tracing::warn!(lease = path, "took over an expired upload lease");
                        driver.put_content_volatile(path, mine.encode()).await?;
                        return Ok(Some(Lease::start(driver, path, mine.clone())));
                    }
                }
            },
        }
        if Instant::now() >= deadline {
            return Err(LeaseError::Held);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the take-over claim at `claim` is this process's own, left by a
/// take-over that failed after claiming (so its lease write never
/// happened, and without this every later request would wait for a
/// take-over that nobody can make). Forgets it: the caller takes over.
///
/// # Errors
/// The storage failed to read the claim.
async fn own_failed_claim(driver: &Driver, claim: &str) -> regstore_core::Result<bool> {
    let id = match driver.get_content(claim).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    if left_behind(&id) {
        forget_left_behind(&id);
        Ok(true)
    } else {
        Ok(false)
    }
}

/// A stable name for bytes that are not a lease (so takers of the same
/// broken object agree on one claim).
fn sha_id(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(bytes)[..16])
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn warn_unshared(driver: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            driver,
            "the storage driver cannot create objects atomically (no create_if_absent): \
             requests on one upload are ordered within this instance only, \
             so run a single registry instance on this storage"
        );
    });
}

impl Lease {
    fn start(driver: &Driver, path: &str, record: LeaseRecord) -> Lease {
        let expires_ms = Arc::new(AtomicU64::new(record.expires_ms));
        let renewer = tokio::spawn(renew(
            driver.clone(),
            path.to_owned(),
            record.clone(),
            Arc::clone(&expires_ms),
        ));
        Lease {
            driver: driver.clone(),
            path: path.to_owned(),
            id: record.id,
            expires_ms,
            renewer,
        }
    }

    /// True while the lease is surely this holder's: not within
    /// [`LEASE_MARGIN`] of its expiry, so nobody can have taken it over.
    fn surely_mine(expires_ms: &AtomicU64) -> bool {
        now_ms().saturating_add(millis(LEASE_MARGIN)) < expires_ms.load(Ordering::Relaxed)
    }

    /// Stops renewing and deletes the lease object (unless it is no longer
    /// this holder's). Failures are logged: the lease then expires.
    pub(crate) async fn release(&self) {
        self.renewer.abort();
        if !Self::surely_mine(&self.expires_ms) {
            match held_by(&self.driver, &self.path, &self.id).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(lease = self.path, error = %e, "upload lease not released; it expires");
                    return;
                }
            }
        }
        match self.driver.delete(&self.path).await {
            Ok(()) => {}
            // The upload was completed or cancelled with it.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(lease = self.path, error = %e, "upload lease not released; the next request of this instance takes it back, others wait for it to expire");
                left_behind_ids().insert(self.id.clone());
            }
        }
    }
}

/// Ids of this process's leases that could not be deleted when their
/// request ended.
fn left_behind_ids() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static IDS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    // Every critical section leaves the set consistent.
    IDS.lock().unwrap_or_else(|e| e.into_inner())
}

fn left_behind(id: &str) -> bool {
    left_behind_ids().contains(id)
}

fn forget_left_behind(id: &str) {
    left_behind_ids().remove(id);
}

/// Whether the lease object at `path` is the lease `id` (`false` when it
/// is gone or another's).
///
/// # Errors
/// The storage failed to read it.
async fn held_by(driver: &Driver, path: &str, id: &str) -> regstore_core::Result<bool> {
    match driver.get_content(path).await {
        Ok(bytes) => Ok(LeaseRecord::decode(&bytes).is_some_and(|l| l.id == id)),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews the lease every [`LEASE_RENEW`] until aborted; stops when the
/// lease is found to be someone else's.
async fn renew(driver: Driver, path: String, mut record: LeaseRecord, expires_ms: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        if !Lease::surely_mine(&expires_ms) {
            let still = held_by(&driver, &path, &record.id).await.unwrap_or(false);
            if !still {
                tracing::warn!(lease = path, "upload lease lost before its request ended");
                return;
            }
        }
        record.expires_ms = now_ms().saturating_add(millis(LEASE_TTL));
        match driver.put_content_volatile(&path, record.encode()).await {
            Ok(()) => expires_ms.store(record.expires_ms, Ordering::Relaxed),
            Err(e) => tracing::warn!(lease = path, error = %e, "upload lease not renewed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A take-over that claimed an expired lease and then failed to write
    /// its own (the backend went away) leaves the claim: the next request
    /// of this process takes over at once instead of waiting forever.
    #[tokio::test]
    async fn a_take_over_that_failed_after_its_claim_is_taken_up_again() {
        let clean = crate::registry::inmemory_for_tests().await;
        let options: regstore_core::RawParams = [
            ("nth", "1"),
            ("operations", "put_content"),
            ("kinds", "error"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
        // Every put_content fails: the take-over's lease write does.
        let faulty = regstore_core::wrap(clean.clone(), "faults", &options)
            .await
            .expect("faults");
        let path = "/r/_uploads/u/lease";
        let expired = LeaseRecord {
            expires_ms: 1,
            ..LeaseRecord::new(Duration::ZERO)
        };
        clean
            .put_content(path, expired.encode())
            .await
            .expect("plant");
        let soon = || Instant::now() + Duration::from_millis(300);
        assert!(matches!(
            acquire(&faulty, path, soon()).await,
            Err(LeaseError::Storage(_))
        ));
        let claim = format!("/r/_uploads/u/lease-taken/{}", expired.id);
        assert!(clean.get_content(&claim).await.is_ok(), "the claim stays");
        let lease = acquire(&clean, path, soon())
            .await
            .expect("taken over, not Held")
            .expect("inmemory has create_if_absent");
        let now = LeaseRecord::decode(&clean.get_content(path).await.expect("lease"));
        assert_eq!(now.map(|r| r.id), Some(lease.id.clone()));
        lease.release().await;
    }

    #[test]
    fn a_record_reads_back_and_other_bytes_do_not() {
        let r = LeaseRecord::new(LEASE_TTL);
        assert_eq!(LeaseRecord::decode(r.encode().as_bytes()), Some(r.clone()));
        assert!(!r.expired());
        assert_eq!(
            LeaseRecord::decode(b"regstore-lease-1 id notanumber x"),
            None
        );
        assert_eq!(LeaseRecord::decode(b"something else"), None);
        let old = LeaseRecord { expires_ms: 1, ..r };
        assert!(old.expired());
    }
}
