//! The storage check (`regstore check`): a scrub of distribution's layout
//! that reads everything the registry stores and reports what is wrong, as
//! zot's scrub does; distribution has none.
//!
//! # What is checked
//! 1. Every blob's bytes hash to its name (streamed through [`Hasher`],
//!    `concurrency` blobs at once; no blob is held in memory, only
//!    manifests, which are at most [`MAX_MANIFEST_SIZE`]).
//! 2. Every link names an existing blob and holds the digest its path
//!    names: layer links, revision links, tag history (index) links; a
//!    tag's current link must name a digest whose blob exists and that is
//!    a manifest of the repository (has a revision link there). Referrer
//!    links are not checked: one whose manifest is gone is ignored by the
//!    referrers API by design (see [`layout`]).
//! 3. Every manifest revision parses ([`references`]), and what it
//!    references is there: its config and layers have data and a layer link
//!    in the repository, its children (index entries) are revisions of the
//!    repository with data. Foreign layers (with `urls`) live elsewhere and
//!    are not required; a manifest's `subject` need not exist.
//!
//! Each finding is a [`Problem`]. Files the layout does not explain (see
//! [`inventory::Stray`]) are reported apart as
//! [`CheckReport::unexpected`]: they are not corruption and are not
//! problems (they do not make `regstore check` exit with 1).
//!
//! # Repair
//! With [`Options::repair`], dangling links — links whose blob data is
//! missing — are removed, and nothing else: no blob or manifest data is
//! ever deleted, and a link whose content is wrong, a corrupt blob, a
//! broken manifest or a missing reference stays (and stays a problem).
//! A dangling tag current link removes the tag's whole directory (its
//! history included), as deleting the tag through the API does: a tag
//! with no current link is meaningless. Each link's blob is looked up once
//! more just before its removal, so a push that just brought the blob back
//! keeps its link.
//!
//! # Cost
//! Two walks (one flat listing each on object stores) find every link and
//! blob; then every blob is read whole once (manifests are parsed from that
//! same read) and every link once.
//!
//! # While the registry runs
//! Links are walked before blobs, a push writes a blob before its link and
//! a manifest after its blobs, so a push racing the check is not reported
//! (what it writes after a walk is just not checked) — except a tag moved,
//! after the walks, to a new manifest: its link is read later and names a
//! manifest the walks did not see. Deletes racing the check can be
//! reported too: a garbage collection deletes blobs before their links,
//! which look dangling meanwhile. Repair looks at each blob again just
//! before removing a link to it; still, do not repair while a collection
//! runs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::{StreamExt, TryStreamExt};
use regstore_core::Driver;

use crate::gc::inventory::{self, Blob, Stray};
use crate::registry::{
    Digest, Hasher, MAX_MANIFEST_SIZE, References, Registry, RepoName, Tag, layout, references,
};

/// How a check runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Remove dangling links (see the module docs); nothing else is changed.
    pub repair: bool,
    /// Blobs hashed at once, and link reads in flight at once. `0` counts
    /// as `1`.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            repair: false,
            concurrency: 8,
        }
    }
}

/// Which kind of link a problem is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// `_layers/<alg>/<hex>/link`: the blob is in the repository.
    Layer,
    /// `_manifests/revisions/<alg>/<hex>/link`: the manifest is in the
    /// repository.
    Revision,
    /// `_manifests/tags/<tag>/current/link`: what the tag points at.
    TagCurrent(Tag),
    /// `_manifests/tags/<tag>/index/<alg>/<hex>/link`: a digest the tag
    /// has had.
    TagHistory(Tag),
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkKind::Layer => "layer",
            LinkKind::Revision => "revision",
            LinkKind::TagCurrent(_) => "tag",
            LinkKind::TagHistory(_) => "tag history",
        })
    }
}

/// What a manifest references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReferenceKind {
    /// A config or layer: must have data and a layer link.
    Blob,
    /// An index entry: must have data and a revision link.
    Manifest,
}

impl fmt::Display for ReferenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReferenceKind::Blob => "blob",
            ReferenceKind::Manifest => "manifest",
        })
    }
}

/// One thing wrong in the storage. `Display` gives the line
/// `regstore check` prints: what is wrong, naming the path, repository and
/// digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A blob's bytes do not hash to its name.
    CorruptBlob {
        /// Its name.
        digest: Digest,
        /// What its bytes hash to.
        actual: Digest,
        /// Its data file.
        path: String,
    },
    /// A link whose blob data does not exist; removed by repair.
    DanglingLink {
        /// Its repository.
        repo: RepoName,
        /// Which link it is.
        kind: LinkKind,
        /// The link file.
        path: String,
        /// The digest it names (whose blob is missing).
        digest: Digest,
    },
    /// A link that does not hold the digest its path names (or, for a tag,
    /// holds no digest at all). Not repaired.
    WrongLink {
        /// Its repository.
        repo: RepoName,
        /// Which link it is.
        kind: LinkKind,
        /// The link file.
        path: String,
        /// The digest its path names (`None` for a tag's current link).
        expected: Option<Digest>,
        /// What it holds (trimmed, at most 200 characters).
        content: String,
    },
    /// A tag points at a blob that exists but is not a manifest of the
    /// repository (no revision link): pulling the tag fails. Not repaired.
    TagWithoutRevision {
        /// Its repository.
        repo: RepoName,
        /// The tag.
        tag: Tag,
        /// What it points at.
        digest: Digest,
        /// The tag's current link.
        path: String,
    },
    /// A manifest revision whose bytes are not a manifest.
    BrokenManifest {
        /// The repository holding the revision.
        repo: RepoName,
        /// The manifest.
        digest: Digest,
        /// What is wrong.
        why: String,
    },
    /// A manifest references a blob or child manifest that is not in the
    /// repository, or whose data is gone.
    MissingReference {
        /// The repository holding the manifest.
        repo: RepoName,
        /// The manifest.
        manifest: Digest,
        /// What it references.
        reference: Digest,
        /// A blob (config, layer) or a child manifest.
        kind: ReferenceKind,
        /// The repository links it (a layer link for a blob, a revision
        /// link for a manifest).
        linked: bool,
        /// Its data exists.
        data: bool,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlob { digest, actual, .. } => {
                write!(f, "blob {digest}: content hashes to {actual} (corrupt)")
            }
            Problem::DanglingLink {
                kind, path, digest, ..
            } => write!(
                f,
                "dangling {kind} link {path}: blob {digest} does not exist"
            ),
            Problem::WrongLink {
                kind,
                path,
                expected: Some(d),
                content,
                ..
            } => write!(f, "{kind} link {path} holds {content:?}, not {d}"),
            Problem::WrongLink {
                kind,
                path,
                expected: None,
                content,
                ..
            } => write!(f, "{kind} link {path} holds {content:?}, not a digest"),
            Problem::TagWithoutRevision {
                repo, tag, digest, ..
            } => write!(
                f,
                "tag {repo}:{tag} points at {digest}, which is not a manifest of {repo} (no revision link)"
            ),
            Problem::BrokenManifest { repo, digest, why } => {
                write!(f, "manifest {repo}@{digest} cannot be read: {why}")
            }
            Problem::MissingReference {
                repo,
                manifest,
                reference,
                kind,
                linked,
                data,
            } => {
                write!(
                    f,
                    "manifest {repo}@{manifest} references {kind} {reference} "
                )?;
                match (linked, data) {
                    (false, true) => f.write_str("which is not in the repository"),
                    (true, false) => f.write_str("whose data does not exist"),
                    _ => {
                        f.write_str("which is not in the repository and whose data does not exist")
                    }
                }
            }
        }
    }
}

/// A problem that repair fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The problem (a [`Problem::DanglingLink`]).
    pub problem: Problem,
    /// What was removed: the link file, or a tag's directory.
    pub removed: String,
}

impl fmt::Display for Repaired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (repaired: removed {})", self.problem, self.removed)
    }
}

/// What a check found (and, with repair, fixed).
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// The problems that remain: every problem found, less those repaired;
    /// blobs first (by digest), then links (in walk order), then
    /// manifests (by repository and digest). Empty means the storage is
    /// sound (`regstore check` exits with 0).
    pub problems: Vec<Problem>,
    /// The problems repair fixed (empty without [`Options::repair`]).
    pub repaired: Vec<Repaired>,
    /// Files the layout does not explain; not problems.
    pub unexpected: Vec<Stray>,
    /// Blobs hashed.
    pub blobs_checked: usize,
    /// Their bytes.
    pub bytes_read: u64,
    /// Layer, revision, tag and tag history links read.
    pub links_checked: usize,
    /// Manifest revisions read (one per repository holding it).
    pub manifests_checked: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl CheckReport {
    /// The one-line summary: blobs checked, bytes read, links checked,
    /// manifests checked, problems found, repaired and remaining,
    /// unexpected files, time.
    pub fn summary(&self) -> String {
        format!(
            "{} blobs checked ({} bytes read), {} links checked, {} manifests checked: {} problems found, {} repaired, {} remaining; {} unexpected files; in {:.2}s",
            self.blobs_checked,
            self.bytes_read,
            self.links_checked,
            self.manifests_checked,
            self.problems.len() + self.repaired.len(),
            self.repaired.len(),
            self.problems.len(),
            self.unexpected.len(),
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Why a check stopped. Nothing is repaired after the error; what was
/// repaired before it stays repaired (it was dangling).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The storage failed; `what` says what the check was doing.
    #[error("storage failed while {what}: {error}")]
    Storage {
        /// What the check was doing (naming the path).
        what: String,
        /// The driver's error.
        error: regstore_core::Error,
    },
    /// Hashing a blob stopped without an answer (the async runtime is
    /// shutting down).
    #[error("checking blob {0} was cancelled")]
    Cancelled(Digest),
}

fn storage(what: impl Into<String>) -> impl FnOnce(regstore_core::Error) -> CheckError {
    let what = what.into();
    move |error| CheckError::Storage { what, error }
}

/// Checks `registry`'s storage (see the module docs), and with
/// [`Options::repair`] removes the dangling links found. Takes no lock.
///
/// # Errors
/// [`CheckError::Storage`] when a walk, a read or a removal fails (the
/// message names it); [`CheckError::Cancelled`] when the runtime stops.
/// Problems in the storage are not errors: they are the report.
pub async fn check(registry: &Registry, opts: &Options) -> Result<CheckReport, CheckError> {
    let driver = registry.driver();
    let started = Instant::now();
    let concurrency = opts.concurrency.max(1);
    let mut report = CheckReport::default();

    // Links first: every link seen then had its blob written before it, so
    // the blob walk that follows sees that blob unless it is really gone.
    let repos = inventory::repositories(driver)
        .await
        .map_err(storage(format!("walking {}", layout::REPOSITORIES)))?;
    let (blobs, blob_strays) = inventory::blobs(driver)
        .await
        .map_err(storage(format!("walking {}/blobs", layout::ROOT)))?;
    report.unexpected = repos.strays;
    report.unexpected.extend(blob_strays);

    // 1. Blobs, hashed; manifests parsed from the same read.
    let revisions: HashSet<&Digest> = repos
        .repos
        .values()
        .flat_map(|r| r.revisions.iter().map(|l| &l.digest))
        .collect();
    let mut hashed: Vec<Hashed> = futures_util::stream::iter(blobs)
        .map(|blob| {
            let is_manifest = revisions.contains(&blob.digest);
            let driver = driver.clone();
            let digest = blob.digest.clone();
            let task = tokio::spawn(hash_blob(driver, blob, is_manifest));
            async move {
                match task.await {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => Err(CheckError::Cancelled(digest)),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    hashed.sort_by(|a, b| a.digest.cmp(&b.digest));
    let mut existing: HashSet<Digest> = HashSet::new();
    let mut manifests: HashMap<Digest, Result<References, String>> = HashMap::new();
    let mut problems = Vec::new();
    for h in hashed {
        let Some(read) = h.read else { continue };
        report.blobs_checked += 1;
        report.bytes_read += read.bytes;
        if read.actual != h.digest {
            problems.push(Problem::CorruptBlob {
                digest: h.digest.clone(),
                actual: read.actual,
                path: h.path,
            });
        }
        if let Some(refs) = read.references {
            manifests.insert(h.digest.clone(), refs);
        }
        existing.insert(h.digest);
    }

    // 2. Links.
    let mut jobs: Vec<LinkJob> = Vec::new();
    for (name, repo) in &repos.repos {
        let job = |kind, path: &str, named: Option<&Digest>| LinkJob {
            repo: name.clone(),
            kind,
            path: path.to_owned(),
            named: named.cloned(),
        };
        jobs.extend(
            repo.layers
                .iter()
                .map(|l| job(LinkKind::Layer, &l.path, Some(&l.digest))),
        );
        jobs.extend(
            repo.revisions
                .iter()
                .map(|l| job(LinkKind::Revision, &l.path, Some(&l.digest))),
        );
        jobs.extend(
            repo.tags
                .iter()
                .map(|(t, path)| job(LinkKind::TagCurrent(t.clone()), path, None)),
        );
        jobs.extend(
            repo.tag_history
                .iter()
                .map(|(t, l)| job(LinkKind::TagHistory(t.clone()), &l.path, Some(&l.digest))),
        );
    }
    let read: Vec<(LinkJob, Option<String>)> = futures_util::stream::iter(jobs)
        .map(|job| {
            let driver = driver.clone();
            async move {
                match driver.get_content(&job.path).await {
                    Ok(b) => Ok((job, Some(String::from_utf8_lossy(&b).trim().to_owned()))),
                    // Removed since the walk (a delete, a collection).
                    Err(e) if e.is_not_found() => Ok((job, None)),
                    Err(e) => Err(storage(format!("reading link {}", job.path))(e)),
                }
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    // What each repository links (with the right content; dangling or not).
    let mut linked: HashMap<RepoName, Linked> = HashMap::new();
    let mut tags: Vec<(LinkJob, Digest)> = Vec::new();
    for (job, content) in read {
        let Some(content) = content else { continue };
        report.links_checked += 1;
        let parsed = layout::parse_link(content.as_bytes()).ok();
        let digest = match (&job.named, parsed) {
            (Some(named), Some(p)) if *named == p => p,
            (None, Some(p)) => p,
            (expected, _) => {
                problems.push(Problem::WrongLink {
                    repo: job.repo,
                    kind: job.kind,
                    path: job.path,
                    expected: expected.clone(),
                    content: content.chars().take(200).collect(),
                });
                continue;
            }
        };
        let l = linked.entry(job.repo.clone()).or_default();
        match job.kind {
            LinkKind::Layer => {
                l.layers.insert(digest.clone());
            }
            LinkKind::Revision => {
                l.revisions.insert(digest.clone());
            }
            LinkKind::TagCurrent(_) => {
                // Judged once every revision link is known.
                tags.push((job, digest));
                continue;
            }
            LinkKind::TagHistory(_) => {}
        }
        if !existing.contains(&digest) {
            problems.push(Problem::DanglingLink {
                repo: job.repo,
                kind: job.kind,
                path: job.path,
                digest,
            });
        }
    }
    for (job, digest) in tags {
        if !existing.contains(&digest) {
            problems.push(Problem::DanglingLink {
                repo: job.repo,
                kind: job.kind,
                path: job.path,
                digest,
            });
        } else if !linked
            .get(&job.repo)
            .is_some_and(|l| l.revisions.contains(&digest))
            && let LinkKind::TagCurrent(tag) = job.kind
        {
            problems.push(Problem::TagWithoutRevision {
                repo: job.repo,
                tag,
                digest,
                path: job.path,
            });
        }
    }

    // 3. Manifests, each revision of each repository.
    let mut names: Vec<&RepoName> = linked.keys().collect();
    names.sort();
    let empty = Linked::default();
    for name in names {
        let l = linked.get(name).unwrap_or(&empty);
        let mut revs: Vec<&Digest> = l.revisions.iter().collect();
        revs.sort();
        for d in revs {
            // A revision with no data is a dangling link, reported above.
            let Some(refs) = manifests.get(d) else {
                continue;
            };
            report.manifests_checked += 1;
            let refs = match refs {
                Ok(r) => r,
                Err(why) => {
                    problems.push(Problem::BrokenManifest {
                        repo: name.clone(),
                        digest: d.clone(),
                        why: why.clone(),
                    });
                    continue;
                }
            };
            let blobs: BTreeSet<&Digest> = refs.blobs.iter().collect();
            let children: BTreeSet<&Digest> = refs.manifests.iter().collect();
            let wanted = blobs
                .into_iter()
                .map(|b| (b, ReferenceKind::Blob, l.layers.contains(b)))
                .chain(
                    children
                        .into_iter()
                        .map(|m| (m, ReferenceKind::Manifest, l.revisions.contains(m))),
                );
            for (reference, kind, is_linked) in wanted {
                let data = existing.contains(reference);
                if !(is_linked && data) {
                    problems.push(Problem::MissingReference {
                        repo: name.clone(),
                        manifest: d.clone(),
                        reference: reference.clone(),
                        kind,
                        linked: is_linked,
                        data,
                    });
                }
            }
        }
    }

    if opts.repair {
        let mut remaining = Vec::with_capacity(problems.len());
        for p in problems {
            match repair(driver, &p).await? {
                Some(removed) => {
                    forget_repaired(registry, &p).await;
                    report.repaired.push(Repaired {
                        problem: p,
                        removed,
                    });
                }
                None => remaining.push(p),
            }
        }
        // A reference whose link repair removed is no longer linked.
        let unlinked: HashSet<(&RepoName, ReferenceKind, &Digest)> = report
            .repaired
            .iter()
            .filter_map(|r| match &r.problem {
                Problem::DanglingLink {
                    repo,
                    kind: LinkKind::Layer,
                    digest,
                    ..
                } => Some((repo, ReferenceKind::Blob, digest)),
                Problem::DanglingLink {
                    repo,
                    kind: LinkKind::Revision,
                    digest,
                    ..
                } => Some((repo, ReferenceKind::Manifest, digest)),
                _ => None,
            })
            .collect();
        for p in &mut remaining {
            if let Problem::MissingReference {
                repo,
                reference,
                kind,
                linked,
                ..
            } = p
                && unlinked.contains(&(&*repo, *kind, &*reference))
            {
                *linked = false;
            }
        }
        problems = remaining;
    }
    report.problems = problems;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Tells the registry's blob-descriptor cache what a repaired dangling
/// link says: the blob's data is gone, and so is a `_layers` link.
async fn forget_repaired(registry: &Registry, p: &Problem) {
    let (
        Some(cache),
        Problem::DanglingLink {
            repo, kind, digest, ..
        },
    ) = (registry.blob_cache(), p)
    else {
        return;
    };
    if matches!(kind, LinkKind::Layer) {
        cache
            .forget_members(&[(repo.clone(), digest.clone())])
            .await;
    }
    cache.forget_descriptors(std::slice::from_ref(digest)).await;
}

/// Removes what a dangling link problem names; returns what was removed,
/// or `None` for a problem repair leaves (or a link whose blob is back).
async fn repair(driver: &Driver, p: &Problem) -> Result<Option<String>, CheckError> {
    let Problem::DanglingLink {
        repo,
        kind,
        path,
        digest,
    } = p
    else {
        return Ok(None);
    };
    let data = layout::blob_data(digest);
    match driver.stat(&data).await {
        Ok(_) => return Ok(None),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(storage(format!("looking at {data}"))(e)),
    }
    let target = match kind {
        LinkKind::TagCurrent(tag) => layout::tag_dir(repo, tag),
        _ => path.clone(),
    };
    match driver.delete(&target).await {
        Ok(()) => {}
        // Gone with its tag's directory, or by someone else.
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(storage(format!("removing dangling link {target}"))(e)),
    }
    Ok(Some(target))
}

/// A link to read.
struct LinkJob {
    repo: RepoName,
    kind: LinkKind,
    path: String,
    /// The digest its path names (`None` for a tag's current link).
    named: Option<Digest>,
}

/// The digests a repository links with the right content.
#[derive(Default)]
struct Linked {
    layers: HashSet<Digest>,
    revisions: HashSet<Digest>,
}

/// A blob, hashed.
struct Hashed {
    digest: Digest,
    path: String,
    /// `None`: its data was removed since the walk.
    read: Option<Read>,
}

struct Read {
    bytes: u64,
    actual: Digest,
    /// For a blob some repository holds as a manifest: what it references,
    /// or why it cannot be read as a manifest.
    references: Option<Result<References, String>>,
}

/// Streams `blob` through its algorithm's hasher; a manifest's bytes (at
/// most [`MAX_MANIFEST_SIZE`]) are kept and parsed.
async fn hash_blob(driver: Driver, blob: Blob, is_manifest: bool) -> Result<Hashed, CheckError> {
    let Blob { digest, path, .. } = blob;
    let what = || format!("reading blob {digest} ({path})");
    let mut stream = match driver.reader(&path, 0).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Ok(Hashed {
                digest,
                path,
                read: None,
            });
        }
        Err(e) => return Err(storage(what())(e)),
    };
    let mut hasher = Hasher::new(digest.algorithm());
    let mut bytes = 0u64;
    let mut body = is_manifest.then(BytesMut::new);
    let mut too_large = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(storage(what()))?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        if let Some(b) = &mut body {
            if b.len() + chunk.len() > MAX_MANIFEST_SIZE {
                body = None;
                too_large = true;
            } else {
                b.extend_from_slice(&chunk);
            }
        }
    }
    let references = if too_large {
        Some(Err(format!(
            "it is {bytes} bytes, more than a manifest can be ({MAX_MANIFEST_SIZE} bytes)"
        )))
    } else {
        body.map(|b| references(&b))
    };
    Ok(Hashed {
        digest,
        path,
        read: Some(Read {
            bytes,
            actual: hasher.finish(),
            references,
        }),
    })
}
