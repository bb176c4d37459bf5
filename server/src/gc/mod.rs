//! Garbage collection: deletes the blobs no manifest references, on
//! distribution's layout, offline (`regstore garbage-collect`) or inside a
//! running registry (`storage.maintenance.gc`).
//!
//! # What is kept (mark)
//! Every manifest revision of every repository (with `delete_untagged`:
//! every manifest a tag points at, and every untagged one written within
//! the grace period), and recursively:
//! - the config and layers of each kept manifest (foreign layers too);
//! - the children of each kept index or manifest list;
//! - each manifest whose `subject` is a kept manifest of the same
//!   repository (found through regstore's referrers index), so an artifact
//!   attached to a kept image stays and one attached to a deleted image
//!   goes with it.
//!
//! These are distribution's rules (`registry garbage-collect`) except
//! where distribution loses data: with `--delete-untagged` distribution
//! (2.8) deletes the untagged children of a tagged index as manifests
//! (their revision links go, so the index names manifests its repository
//! no longer serves) together with their configs and layers, keeping only
//! the children's own bytes; and it knows no referrers. (It also stops
//! with "unknown repository" on a repository that has manifests but no
//! tag; regstore collects it.) `tests/gc_compat.rs` checks the rest
//! against distribution 2.8.2.
//!
//! # What is deleted (sweep)
//! - every blob not kept whose data was written before the grace period
//!   and that no repository linked within it;
//! - with `delete_untagged`, every manifest revision not kept: its revision
//!   link, its entries in tag histories and its referrers-index entry;
//! - the `_layers` links of the deleted blobs. distribution leaves them; a
//!   link to a blob that is gone makes the repository look as if it held
//!   the blob (it still appears in the catalog, and `regstore check` reports
//!   the link as dangling), so they go too. A link written within the grace
//!   period keeps its blob, so no link a push is relying on is removed.
//!
//! Uploads in progress are never touched (upload purging removes abandoned
//! ones). The registry's blob-descriptor cache ([`crate::cache`]) forgets
//! the deleted blobs and `_layers` links once they are gone.
//!
//! # Cost on object stores
//! Two walks (one flat listing each, 1,000 keys per request) find every
//! link and every blob; each manifest is read once however many
//! repositories hold it, `concurrency` at a time; tags are read only with
//! `delete_untagged`; deletes go through
//! [`Driver::delete_files`](regstore_core::Driver::delete_files), batches of
//! 1,000 keys per request on S3. Nothing is stat'ed one by one.
//!
//! # Safety with concurrent pushes
//! With a grace period `G` and a collection whose mark begins at `T`:
//! - a blob written, or linked into a repository, after `T - G` is not
//!   deleted: its data's or its link's modification time says so (this
//!   holds for pushes through any instance on the storage, given clocks
//!   within a few seconds of each other);
//! - through the instance that runs the collection, nothing a request
//!   relied on after `T - G` is deleted, and a request that comes while a
//!   blob is being deleted sees it as gone (see
//!   [`crate::registry::fence`]): no manifest is ever accepted that
//!   references a blob the collection deletes.
//!
//! So, through the collecting instance, a push is never broken and never
//! fails because of the collection as long as it takes less than `G` from
//! its first look at a blob (`HEAD`, upload, mount) to its manifest. Through
//! other instances a push is safe when each blob it relies on was uploaded
//! or linked into its repository within `G` before its manifest lands —
//! which holds for every push except one that reuses, through a `HEAD`
//! of an old link, a blob that no manifest has referenced for longer than
//! `G`, at the moment of the delete. Only one collection runs at a time
//! per storage: [`online`] holds a lease object (create-if-absent) while
//! it runs.
//!
//! On storage whose listings trail the writes by `L` (Swift; the `faults`
//! middleware's `lag`), the mark does not see a manifest pushed less than
//! `L` ago: read `G - L` for `G` above, and with `G = 0` (offline) start
//! at least `L` after the last push (docs/reliability.md, "Eventual
//! consistency").

pub mod inventory;
pub mod online;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use regstore_core::Driver;

use crate::registry::{Digest, References, Registry, RepoName, layout, references};
use inventory::{Link, Repository};

/// How a collection runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Also delete manifests no tag points at (and what only they keep).
    pub delete_untagged: bool,
    /// Storage requests in flight at once while reading manifests and tags.
    pub concurrency: usize,
    /// Blobs, links and untagged manifests written less than this before
    /// the mark began are kept (see the module docs). `0` is distribution's
    /// behaviour, right for a registry that is stopped or read-only.
    pub grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            delete_untagged: false,
            concurrency: 16,
            grace: Duration::ZERO,
        }
    }
}

/// A manifest revision deleted (or, in a dry run, to be deleted).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManifestRef {
    /// Its repository.
    pub repo: RepoName,
    /// Its digest.
    pub digest: Digest,
}

/// What a collection did (or, in a dry run, would do).
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// It was a dry run: nothing was deleted.
    pub dry_run: bool,
    /// Digests marked as in use (manifests and what they reference, as
    /// distribution counts them).
    pub blobs_marked: usize,
    /// Blobs deleted, with their sizes, in digest order.
    pub blobs_deleted: Vec<(Digest, u64)>,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Manifest revisions deleted (`delete_untagged`), in order.
    pub manifests_deleted: Vec<ManifestRef>,
    /// Links removed with the blobs they named: `_layers` links, tag
    /// history entries and referrers-index entries (besides those of the
    /// manifests deleted).
    pub links_deleted: usize,
    /// Unreferenced blobs kept because they were written, linked or used
    /// within the grace period.
    pub blobs_kept_recent: usize,
    /// Requests sent to the backend (object stores), else driver
    /// operations (filesystem, inmemory): see [`Report::requests_are_backend`].
    pub requests: u64,
    /// Whether [`Report::requests`] counts backend requests.
    pub requests_are_backend: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// Things found on the way that were skipped (a revision whose data is
    /// gone, a tag link that names no digest); `regstore check` says more.
    pub warnings: Vec<String>,
}

impl Report {
    /// The one-line summary: blobs marked, blobs deleted, bytes freed,
    /// manifests deleted, requests issued and time.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run {
            "eligible for deletion"
        } else {
            "deleted"
        };
        format!(
            "{} blobs marked, {} blobs {verb} ({} bytes), {} manifests {verb}, {} links to them {verb}, {} unreferenced blobs kept as recent, {} {} in {:.2}s",
            self.blobs_marked,
            self.blobs_deleted.len(),
            self.bytes_freed,
            self.manifests_deleted.len(),
            self.links_deleted,
            self.blobs_kept_recent,
            self.requests,
            if self.requests_are_backend {
                "backend requests"
            } else {
                "storage operations"
            },
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Why a collection stopped. Nothing is deleted after the error; what was
/// deleted before it stays deleted (and was unreferenced).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] regstore_core::Error),
    /// A stored manifest cannot be read as one, so what it references is
    /// unknown; collecting anyway could delete its blobs.
    #[error(
        "manifest {digest} (in {repo}) cannot be read as a manifest: {why}; nothing was deleted. Delete it (DELETE /v2/{repo}/manifests/{digest}) and run again; `regstore check` lists every problem"
    )]
    Unreadable {
        /// A repository that holds it.
        repo: RepoName,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        why: String,
    },
}

fn request_count(driver: &Driver) -> (u64, bool) {
    match driver.backend_requests() {
        Some(n) => (n, true),
        None => (driver.metrics().total_calls(), false),
    }
}

/// How coarse a stored modification time may be: S3 and the HTTP dates
/// other backends list times in whole seconds, so an object written at
/// 12:00:05.9 lists as 12:00:05.
const MOD_TIME_GRANULARITY: Duration = Duration::from_secs(1);

/// Whether an object stored at `t` (as listed) was written at or after
/// `cutoff`. An unknown time counts as recent: never delete on a guess.
fn recent(t: Option<SystemTime>, cutoff: SystemTime) -> bool {
    t.is_none_or(|t| t >= cutoff)
}

/// Runs one collection over `registry`'s storage (see the module docs).
/// Takes no lock: [`online`] holds the storage's GC lease around it; the
/// offline command runs it as the only collector.
///
/// # Errors
/// [`GcError`]; the registry is consistent after any of them.
pub async fn collect(registry: &Registry, opts: &Options) -> Result<Report, GcError> {
    let driver = registry.driver();
    let started = Instant::now();
    let (requests_before, requests_are_backend) = request_count(driver);
    // With a grace period, stored times are read as late as they may be.
    let slack = if opts.grace.is_zero() {
        Duration::ZERO
    } else {
        MOD_TIME_GRANULARITY
    };
    let cutoff = SystemTime::now()
        .checked_sub(opts.grace + slack)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let used_since = started.checked_sub(opts.grace).unwrap_or(started);
    let concurrency = opts.concurrency.max(1);
    let mut report = Report {
        dry_run: opts.dry_run,
        requests_are_backend,
        ..Report::default()
    };

    let repos: Vec<(RepoName, Repository)> = inventory::repositories(driver)
        .await?
        .repos
        .into_iter()
        .collect();
    // The blob listing does not depend on the mark: both run at once. A
    // blob stored meanwhile is recent (after `cutoff`), so kept.
    let (mark, blobs) = futures_util::future::join(
        mark(driver, &repos, opts, cutoff, concurrency, &mut report),
        inventory::blobs(driver),
    )
    .await;
    let mark = mark?;
    let (blobs, _) = blobs?;
    report.blobs_marked = mark.blobs.len();

    // Sweep: what is not marked and not recent.
    let linked_recently: HashSet<&Digest> = repos
        .iter()
        .flat_map(|(_, r)| r.layers.iter().chain(r.revisions.iter()))
        .filter(|l| recent(l.mod_time, cutoff))
        .map(|l| &l.digest)
        .collect();
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    let mut doomed_blobs = Vec::new();
    for b in &blobs {
        if mark.blobs.contains(&b.digest) {
            continue;
        }
        if recent(b.mod_time, cutoff) || linked_recently.contains(&b.digest) {
            report.blobs_kept_recent += 1;
            continue;
        }
        sizes.insert(b.digest.clone(), b.size);
        doomed_blobs.push(b.digest.clone());
    }
    let mut doomed_manifests: Vec<ManifestRef> = Vec::new();
    if opts.delete_untagged {
        for (i, (name, repo)) in repos.iter().enumerate() {
            for rev in &repo.revisions {
                if !mark.manifests[i].contains(&rev.digest) {
                    doomed_manifests.push(ManifestRef {
                        repo: name.clone(),
                        digest: rev.digest.clone(),
                    });
                }
            }
        }
    }

    if opts.dry_run {
        let links = links_to(&repos, &doomed_blobs).len();
        finish(&mut report, doomed_blobs, &sizes, doomed_manifests, links);
        report.requests = request_count(driver).0.saturating_sub(requests_before);
        report.elapsed = started.elapsed();
        return Ok(report);
    }

    // From here on, requests of this instance that rely on a doomed digest
    // see it as gone; uses since the mark began save a digest.
    let found = doomed_blobs.len();
    let mut revisions: Vec<(RepoName, Digest)> = doomed_manifests
        .into_iter()
        .map(|m| (m.repo, m.digest))
        .collect();
    let _doomed = registry
        .gc_fence()
        .doom(used_since, &mut doomed_blobs, &mut revisions);
    let doomed_manifests: Vec<ManifestRef> = revisions
        .into_iter()
        .map(|(repo, digest)| ManifestRef { repo, digest })
        .collect();
    report.blobs_kept_recent += found - doomed_blobs.len();

    // Manifests first: a revision link never outlives the bytes it names.
    let by_name: HashMap<&RepoName, &Repository> = repos.iter().map(|(n, r)| (n, r)).collect();
    let mut manifest_links = Vec::new();
    for m in &doomed_manifests {
        let Some(repo) = by_name.get(&m.repo) else {
            continue;
        };
        let is = |l: &Link| l.digest == m.digest;
        manifest_links.extend(
            repo.revisions
                .iter()
                .filter(|l| is(l))
                .map(|l| l.path.clone()),
        );
        manifest_links.extend(
            repo.tag_history
                .iter()
                .filter(|(_, l)| is(l))
                .map(|(_, l)| l.path.clone()),
        );
        manifest_links.extend(
            repo.referrers
                .iter()
                .filter(|(_, l)| is(l))
                .map(|(_, l)| l.path.clone()),
        );
    }
    delete_files(driver, manifest_links).await?;
    // Repositories left without manifests leave the catalog index.
    let touched: HashSet<&RepoName> = doomed_manifests.iter().map(|m| &m.repo).collect();
    registry
        .forget_if_no_manifests(&touched.into_iter().collect::<Vec<_>>())
        .await;

    let gone: HashSet<&Digest> = doomed_blobs.iter().collect();
    delete_files(
        driver,
        blobs
            .iter()
            .filter(|b| gone.contains(&b.digest))
            .map(|b| b.path.clone())
            .collect(),
    )
    .await?;
    let links = links_to(&repos, &doomed_blobs);
    let links_deleted = links.len();
    delete_files(driver, links).await?;
    if let Some(cache) = registry.blob_cache() {
        // Memberships first: a descriptor that goes takes them along.
        cache
            .forget_members(&layers_of(&repos, &doomed_blobs))
            .await;
        cache.forget_descriptors(&doomed_blobs).await;
    }
    finish(
        &mut report,
        doomed_blobs,
        &sizes,
        doomed_manifests,
        links_deleted,
    );
    report.requests = request_count(driver).0.saturating_sub(requests_before);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The paths of the links that name one of `blobs`: `_layers` links, tag
/// history entries (of manifests deleted through the API, whose history
/// other tags keep) and referrers-index entries. Revision links are not
/// among them: a kept revision's blob is never deleted.
fn links_to(repos: &[(RepoName, Repository)], blobs: &[Digest]) -> Vec<String> {
    let gone: HashSet<&Digest> = blobs.iter().collect();
    repos
        .iter()
        .flat_map(|(_, r)| {
            r.layers
                .iter()
                .chain(r.tag_history.iter().map(|(_, l)| l))
                .chain(r.referrers.iter().map(|(_, l)| l))
        })
        .filter(|l| gone.contains(&l.digest))
        .map(|l| l.path.clone())
        .collect()
}

/// The `_layers` links (repository, digest) that name one of `blobs`.
fn layers_of(repos: &[(RepoName, Repository)], blobs: &[Digest]) -> Vec<(RepoName, Digest)> {
    let gone: HashSet<&Digest> = blobs.iter().collect();
    repos
        .iter()
        .flat_map(|(name, r)| {
            r.layers
                .iter()
                .filter(|l| gone.contains(&l.digest))
                .map(move |l| (name.clone(), l.digest.clone()))
        })
        .collect()
}

fn finish(
    report: &mut Report,
    mut blobs: Vec<Digest>,
    sizes: &HashMap<Digest, u64>,
    mut manifests: Vec<ManifestRef>,
    links: usize,
) {
    blobs.sort();
    manifests.sort();
    report.blobs_deleted = blobs
        .into_iter()
        .map(|d| {
            let size = sizes.get(&d).copied().unwrap_or(0);
            (d, size)
        })
        .collect();
    report.bytes_freed = report.blobs_deleted.iter().map(|(_, s)| s).sum();
    report.manifests_deleted = manifests;
    report.links_deleted = links;
}

/// Deletes the files at `paths` (already gone is fine), in batches where
/// the driver has them.
async fn delete_files(driver: &Driver, paths: Vec<String>) -> regstore_core::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    driver.delete_files(&paths).await
}

/// What the mark found in use.
struct Mark {
    /// Every digest in use: kept manifests and what they reference.
    blobs: HashSet<Digest>,
    /// Per repository (index into the list), the manifests kept there.
    manifests: Vec<HashSet<Digest>>,
}

/// Reads the tags of every repository: (repository index, digest).
async fn read_tags(
    driver: &Driver,
    repos: &[(RepoName, Repository)],
    concurrency: usize,
    report: &mut Report,
) -> Result<Vec<(usize, Digest)>, GcError> {
    let reads: Vec<(usize, String)> = repos
        .iter()
        .enumerate()
        .flat_map(|(i, (_, r))| r.tags.iter().map(move |(_, path)| (i, path.clone())))
        .collect();
    let mut out = Vec::new();
    for (i, read) in inventory::read_links(driver, reads, concurrency).await? {
        match read {
            Ok(d) => out.push((i, d)),
            Err(why) => report.warnings.push(format!("tag link {why}; skipped")),
        }
    }
    Ok(out)
}

/// Marks what is in use; see the module docs.
async fn mark(
    driver: &Driver,
    repos: &[(RepoName, Repository)],
    opts: &Options,
    cutoff: SystemTime,
    concurrency: usize,
    report: &mut Report,
) -> Result<Mark, GcError> {
    let mut kept: Vec<HashSet<Digest>> = vec![HashSet::new(); repos.len()];
    let mut frontier: Vec<(usize, Digest)> = Vec::new();
    let mut keep = |kept: &mut Vec<HashSet<Digest>>, i: usize, d: &Digest| {
        if kept[i].insert(d.clone()) {
            frontier.push((i, d.clone()));
        }
    };
    if opts.delete_untagged {
        for (i, d) in read_tags(driver, repos, concurrency, report).await? {
            keep(&mut kept, i, &d);
        }
        for (i, (_, repo)) in repos.iter().enumerate() {
            for rev in repo.revisions.iter().filter(|l| recent(l.mod_time, cutoff)) {
                keep(&mut kept, i, &rev.digest);
            }
        }
    } else {
        for (i, (_, repo)) in repos.iter().enumerate() {
            for rev in &repo.revisions {
                keep(&mut kept, i, &rev.digest);
            }
        }
    }
    let revisions: Vec<HashSet<&Digest>> = repos
        .iter()
        .map(|(_, r)| r.revisions.iter().map(|l| &l.digest).collect())
        .collect();

    let mut blobs: HashSet<Digest> = HashSet::new();
    let mut read: HashMap<Digest, Option<Arc<References>>> = HashMap::new();
    loop {
        while !frontier.is_empty() {
            // Each manifest is read once, however many repositories keep it.
            let mut wanted: Vec<(usize, Digest)> = Vec::new();
            let mut asked: HashSet<&Digest> = HashSet::new();
            for (i, d) in &frontier {
                if !read.contains_key(d) && asked.insert(d) {
                    wanted.push((*i, d.clone()));
                }
            }
            let fetched: Vec<(Digest, Option<Arc<References>>)> =
                futures_util::stream::iter(wanted)
                    .map(|(i, d)| read_manifest(driver.clone(), repos[i].0.clone(), d))
                    .buffer_unordered(concurrency)
                    .try_collect()
                    .await?;
            for (d, refs) in fetched {
                if refs.is_none() && revisions.iter().any(|r| r.contains(&d)) {
                    report.warnings.push(format!(
                        "manifest {d} has a revision link but no data; skipped (`regstore check --repair` removes the link)"
                    ));
                }
                read.insert(d, refs);
            }
            let mut next = Vec::new();
            for (i, d) in std::mem::take(&mut frontier) {
                if let Some(Some(refs)) = read.get(&d) {
                    blobs.extend(refs.blobs.iter().chain(&refs.foreign).cloned());
                    for child in &refs.manifests {
                        if kept[i].insert(child.clone()) {
                            next.push((i, child.clone()));
                        }
                    }
                }
                blobs.insert(d);
            }
            frontier = next;
        }
        // Referrers of kept manifests are kept too (and then theirs).
        for (i, (_, repo)) in repos.iter().enumerate() {
            for (subject, link) in &repo.referrers {
                if kept[i].contains(subject)
                    && revisions[i].contains(&link.digest)
                    && kept[i].insert(link.digest.clone())
                {
                    frontier.push((i, link.digest.clone()));
                }
            }
        }
        if frontier.is_empty() {
            break;
        }
    }
    Ok(Mark {
        blobs,
        manifests: kept,
    })
}

/// Reads manifest `d` (held by `repo`): its references, or `None` when its
/// data is gone.
async fn read_manifest(
    driver: Driver,
    repo: RepoName,
    d: Digest,
) -> Result<(Digest, Option<Arc<References>>), GcError> {
    let body = match driver.get_content(layout::blob_data(&d)).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok((d, None)),
        Err(e) => return Err(e.into()),
    };
    match references(&body) {
        Ok(r) => Ok((d, Some(Arc::new(r)))),
        Err(why) => Err(GcError::Unreadable {
            repo,
            digest: d,
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::registry::{Algorithm, RegistryError, Settings};

    async fn registry() -> Registry {
        let driver = crate::registry::inmemory_for_tests().await;
        Registry::new(driver, Settings::default())
    }

    fn body(
        data: &'static [u8],
    ) -> futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes, String>>> {
        futures_util::stream::iter(vec![Ok(Bytes::from_static(data))])
    }

    /// While a collection deletes a blob, the registry treats it as gone,
    /// and an upload of the same bytes lands after the delete.
    #[tokio::test]
    async fn requests_see_a_doomed_blob_as_gone_and_uploads_of_it_wait() {
        let reg = registry().await;
        let repo = RepoName::parse("app").unwrap();
        let data: &'static [u8] = b"layer";
        let d = Digest::of(Algorithm::Sha256, data);
        reg.put_blob(&repo, &d, body(data)).await.unwrap();
        let mut blobs = vec![d.clone()];
        let doomed = reg
            .gc_fence()
            .doom(Instant::now(), &mut blobs, &mut Vec::new());
        assert!(matches!(
            reg.stat_blob(&repo, &d).await,
            Err(RegistryError::BlobUnknown(_))
        ));
        let upload = {
            let (reg, repo, d) = (reg.clone(), repo.clone(), d.clone());
            tokio::spawn(async move { reg.put_blob(&repo, &d, body(data)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!upload.is_finished(), "the upload waits for the delete");
        // The collection deletes, then lets go.
        reg.driver().delete(layout::blob_data(&d)).await.unwrap();
        drop(doomed);
        tokio::time::timeout(Duration::from_secs(5), upload)
            .await
            .expect("the upload goes on")
            .expect("no panic")
            .expect("the upload succeeds");
        assert_eq!(reg.stat_blob(&repo, &d).await.unwrap().size, 5);
    }
}
