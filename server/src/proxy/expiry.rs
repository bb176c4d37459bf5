//! Removing cached content `proxy.ttl` after it was fetched.
//!
//! The schedule is what the storage already keeps: the write time of each
//! link (the layout writes a repository's `_layers/…/link` when a blob is
//! fetched into it, and `_manifests/revisions/…/link` when a manifest is).
//! Nothing else is written per fetch, nothing has to be loaded at startup,
//! and the schedule survives restarts and is shared by every instance on
//! the storage. distribution keeps a separate schedule file instead, which
//! an instance that stops between fetch and save loses.
//!
//! Each turn (every `ttl / 2`, between 1 s and 1 h apart):
//! 1. one walk of `repositories/` finds the revision and layer links
//!    written more than `ttl` ago; the tags that point at those revisions
//!    are read;
//! 2. those tags, revision links and layer links are deleted (a later pull
//!    finds them missing and fetches again);
//! 3. a garbage collection with a grace period of `ttl` deletes the blobs
//!    no remaining manifest references and that were written (or, through
//!    this instance, read) within the last `ttl`, with their links.
//!
//! So a blob an unexpired manifest still references stays (blobs are
//! immutable: a manifest fetched again after its tag moved keeps sharing
//! its base layers), and so does a blob this instance served within the
//! last `ttl` (the collection's fence: a pull in progress is never cut).
//! A turn holds the storage's GC lease, so it never runs beside a
//! collection or another instance's turn.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::gc::{self, GcError, Options, inventory};
use crate::registry::lease::{self, LeaseError};
use crate::registry::{Digest, Registry, RepoName, layout};

/// Time between turns for `ttl`: half of it, between 1 s and 1 h.
pub fn period(ttl: Duration) -> Duration {
    (ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// What one turn removed.
#[derive(Debug, Default)]
pub struct Expired {
    /// Manifest revisions whose link was older than the ttl.
    pub manifests: usize,
    /// Tags that pointed at them.
    pub tags: usize,
    /// Repository blob links older than the ttl.
    pub layer_links: usize,
    /// The collection that followed (blobs deleted, bytes freed).
    pub collection: gc::Report,
}

/// What a turn did.
#[derive(Debug)]
pub enum Turn {
    /// It removed what had expired.
    Expired(Expired),
    /// Another instance (or a collection) holds the GC lease.
    Skipped,
}

/// One turn: takes the GC lease (without waiting), expires, releases.
///
/// # Errors
/// The storage's, or the collection's ([`GcError`]).
pub async fn turn(registry: &Registry, ttl: Duration) -> Result<Turn, GcError> {
    let lease = match lease::acquire(registry.driver(), layout::GC_LEASE, Instant::now()).await {
        Ok(lease) => lease,
        Err(LeaseError::Held) => return Ok(Turn::Skipped),
        Err(LeaseError::Storage(e)) => return Err(e.into()),
    };
    let result = expire(registry, ttl, SystemTime::now()).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result.map(Turn::Expired)
}

/// Removes what was fetched more than `ttl` before `now` (see the module
/// docs). Takes no lock; [`turn`] holds the lease around it.
///
/// # Errors
/// The storage's, or the collection's.
pub async fn expire(
    registry: &Registry,
    ttl: Duration,
    now: SystemTime,
) -> Result<Expired, GcError> {
    let driver = registry.driver();
    let old = |t: Option<SystemTime>| {
        // An unknown time is never old: nothing is deleted on a guess.
        t.and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > ttl)
    };
    let repos = inventory::repositories(driver).await?;
    let mut out = Expired::default();
    let mut links: Vec<String> = Vec::new();
    let mut layer_links: Vec<(RepoName, Digest)> = Vec::new();
    let mut tag_dirs = Vec::new();
    let mut touched = Vec::new();
    for (name, repo) in &repos.repos {
        let expired: HashSet<&Digest> = repo
            .revisions
            .iter()
            .filter(|l| old(l.mod_time))
            .map(|l| &l.digest)
            .collect();
        if !expired.is_empty() {
            // A tag link that names no digest points at nothing to expire.
            let reads = repo.tags.to_vec();
            for (tag, read) in inventory::read_links(driver, reads, 16).await? {
                if read.is_ok_and(|d| expired.contains(&d)) {
                    tag_dirs.push(layout::tag_dir(name, &tag));
                }
            }
        }
        if !expired.is_empty() {
            touched.push(name);
        }
        out.manifests += expired.len();
        links.extend(
            repo.revisions
                .iter()
                .filter(|l| expired.contains(&l.digest))
                .map(|l| l.path.clone()),
        );
        let layers: Vec<&inventory::Link> =
            repo.layers.iter().filter(|l| old(l.mod_time)).collect();
        out.layer_links += layers.len();
        links.extend(layers.iter().map(|l| l.path.clone()));
        layer_links.extend(layers.iter().map(|l| (name.clone(), l.digest.clone())));
    }
    // Tags first: a tag never points at a revision that is gone.
    for dir in &tag_dirs {
        match driver.delete(dir.as_str()).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.tags = tag_dirs.len();
    if !links.is_empty() {
        driver.delete_files(&links).await?;
    }
    if let Some(cache) = registry.blob_cache() {
        cache.forget_members(&layer_links).await;
    }
    // Repositories left without manifests leave the catalog index.
    registry.forget_if_no_manifests(&touched).await;
    out.collection = gc::collect(
        registry,
        &Options {
            grace: ttl,
            ..Options::default()
        },
    )
    .await?;
    Ok(out)
}

/// Runs [`turn`] every [`period`] of `ttl`, logging what each removed,
/// forever.
pub async fn run(registry: Registry, ttl: Duration) {
    registry.gc_fence().remember_uses();
    let every = period(ttl);
    loop {
        tokio::time::sleep(every).await;
        match turn(&registry, ttl).await {
            Ok(Turn::Expired(e)) => {
                let c = &e.collection;
                if e.manifests + e.tags + e.layer_links + c.blobs_deleted.len() > 0 {
                    tracing::info!(
                        manifests = e.manifests,
                        tags = e.tags,
                        layer_links = e.layer_links,
                        blobs = c.blobs_deleted.len(),
                        bytes = c.bytes_freed,
                        "proxy: expired cached content older than {}",
                        humantime::format_duration(ttl)
                    );
                }
                for w in &c.warnings {
                    tracing::warn!("proxy expiry: {w}");
                }
            }
            Ok(Turn::Skipped) => {
                tracing::debug!("proxy expiry skipped: the GC lease is held");
            }
            Err(e) => tracing::warn!(error = %e, "proxy expiry failed; retrying next turn"),
        }
        registry.gc_fence().forget_older_than(ttl + every);
    }
}
