//! Garbage collection inside `regstore serve` (`storage.maintenance.gc`):
//! every `interval`, one collection with the configured grace period,
//! while the registry keeps serving pushes and pulls (see the safety
//! section of [`crate::gc`]).
//!
//! One collection at a time per storage: the collector holds the lease
//! object [`layout::GC_LEASE`], taken
//! with the driver's create-if-absent (the same lease the registry orders
//! upload requests with; see [`crate::registry::lease`]) and renewed while
//! the collection runs. An instance that finds it held skips its turn.
//! A driver without create-if-absent (Swift) cannot hold it: each instance
//! then collects on its own schedule, so run online GC on one instance only
//! there (a warning says so).

use std::time::{Duration, Instant};

use crate::registry::lease::{self, LeaseError};
use crate::registry::{Registry, layout};

use super::{Options, Report, collect};

/// `storage.maintenance.gc`.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Time between the end of one collection and the start of the next;
    /// the first starts one interval after startup.
    pub interval: Duration,
    /// How each collection runs (its grace period above all).
    pub options: Options,
}

/// What one turn of the schedule did.
#[derive(Debug)]
pub enum Turn {
    /// It collected.
    Collected(Report),
    /// Another instance holds the lease.
    Skipped,
}

/// One turn: takes the lease (without waiting), collects, releases.
///
/// # Errors
/// The collection's, or the storage failing while the lease is taken.
pub async fn turn(registry: &Registry, options: &Options) -> Result<Turn, super::GcError> {
    let driver = registry.driver();
    let lease = match lease::acquire(driver, layout::GC_LEASE, Instant::now()).await {
        Ok(lease) => lease,
        Err(LeaseError::Held) => return Ok(Turn::Skipped),
        Err(LeaseError::Storage(e)) => return Err(e.into()),
    };
    let result = collect(registry, options).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result.map(Turn::Collected)
}

/// Runs [`turn`] every `schedule.interval`, logging each result, forever.
pub async fn run(registry: Registry, schedule: Schedule) {
    registry.gc_fence().remember_uses();
    loop {
        tokio::time::sleep(schedule.interval).await;
        match turn(&registry, &schedule.options).await {
            Ok(Turn::Collected(report)) => {
                tracing::info!(
                    dry_run = report.dry_run,
                    blobs_deleted = report.blobs_deleted.len(),
                    bytes_freed = report.bytes_freed,
                    manifests_deleted = report.manifests_deleted.len(),
                    "garbage collection: {}",
                    report.summary()
                );
                for w in &report.warnings {
                    tracing::warn!("garbage collection: {w}");
                }
            }
            Ok(Turn::Skipped) => {
                tracing::info!("garbage collection skipped: another instance is collecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collection failed; retrying next interval")
            }
        }
        // Uses older than the grace period can save nothing any more.
        registry
            .gc_fence()
            .forget_older_than(schedule.options.grace + schedule.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Settings;

    /// While one instance holds the GC lease, another's turn is skipped;
    /// once it is released, the turn collects.
    #[tokio::test]
    async fn one_collection_at_a_time_per_storage() {
        let driver = crate::registry::inmemory_for_tests().await;
        let registry = Registry::new(driver.clone(), Settings::default());
        let other = lease::acquire(&driver, layout::GC_LEASE, Instant::now())
            .await
            .ok()
            .flatten()
            .expect("inmemory holds leases");
        let options = Options::default();
        assert!(matches!(turn(&registry, &options).await, Ok(Turn::Skipped)));
        other.release().await;
        assert!(matches!(
            turn(&registry, &options).await,
            Ok(Turn::Collected(_))
        ));
        // The collector released its lease too.
        assert!(driver.stat(layout::GC_LEASE).await.is_err());
    }
}
