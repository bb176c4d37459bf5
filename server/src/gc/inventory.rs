//! What the storage holds, from two walks: every link file below
//! `repositories/` and every blob below `blobs/`. On object stores a walk
//! is one flat listing (1,000 keys per request), so the whole inventory
//! costs a request per thousand objects, not one per repository or blob.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};
use regstore_core::{Driver, FileInfo, WalkControl};

use crate::registry::layout;
use crate::registry::{Digest, RepoName, Tag};

/// A link file found by the walk: the digest its path names.
#[derive(Clone, Debug)]
pub struct Link {
    /// The digest in the link's path.
    pub digest: Digest,
    /// The link file's path.
    pub path: String,
    /// When it was written (`None` if the driver does not say).
    pub mod_time: Option<SystemTime>,
}

/// One repository's links.
#[derive(Clone, Debug, Default)]
pub struct Repository {
    /// `_manifests/revisions/<alg>/<hex>/link`.
    pub revisions: Vec<Link>,
    /// Tags with a `current/link`, and that link's path.
    pub tags: Vec<(Tag, String)>,
    /// `_manifests/tags/<tag>/index/<alg>/<hex>/link`: every digest a tag
    /// has had.
    pub tag_history: Vec<(Tag, Link)>,
    /// `_layers/<alg>/<hex>/link`.
    pub layers: Vec<Link>,
    /// `_manifests/referrers/<subject>/<referrer>/link` (regstore's
    /// referrers index): the subject, and the referrer as the link.
    pub referrers: Vec<(Digest, Link)>,
    /// Upload sessions (`_uploads/<id>`), never touched by collection.
    pub uploads: usize,
}

/// A blob's data file.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Its digest (from the path).
    pub digest: Digest,
    /// `blobs/<alg>/<xx>/<hex>/data`.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// When it was written.
    pub mod_time: Option<SystemTime>,
}

/// An entry the layout does not explain (reported by the storage check).
#[derive(Clone, Debug)]
pub struct Stray {
    /// Its path.
    pub path: String,
    /// Why it does not fit.
    pub why: &'static str,
}

impl std::fmt::Display for Stray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// Every repository's links, by name.
#[derive(Debug, Default)]
pub struct Repositories {
    /// The repositories, in name order.
    pub repos: BTreeMap<RepoName, Repository>,
    /// Entries that fit no rule of the layout.
    pub strays: Vec<Stray>,
}

fn digest_at(alg: &str, hex: &str) -> Option<Digest> {
    format!("{alg}:{hex}").parse().ok()
}

fn link(digest: Digest, fi: &FileInfo) -> Link {
    Link {
        digest,
        path: fi.path.as_str().to_owned(),
        mod_time: fi.mod_time,
    }
}

/// What the link files at `links` hold, read `concurrency` at a time, each
/// with its key: the digest, or (`Err`) "`<path>` names no digest (why)".
/// A link that is gone is left out.
///
/// # Errors
/// The driver's, for a read that fails otherwise.
pub async fn read_links<K: Send>(
    driver: &Driver,
    links: Vec<(K, String)>,
    concurrency: usize,
) -> regstore_core::Result<Vec<(K, Result<Digest, String>)>> {
    futures_util::stream::iter(links)
        .map(|(key, path)| async move {
            match driver.get_content(&path).await {
                Ok(b) => Ok(Some((
                    key,
                    layout::parse_link(&b).map_err(|e| format!("{path} names no digest ({e})")),
                ))),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_filter_map(|found| std::future::ready(Ok(found)))
        .try_collect()
        .await
}

/// Walks `repositories/` once. A missing directory is an empty registry.
///
/// # Errors
/// The driver's, when the walk fails.
pub async fn repositories(driver: &Driver) -> regstore_core::Result<Repositories> {
    let mut out = Repositories::default();
    let prefix = format!("{}/", layout::REPOSITORIES);
    let walked = driver
        .walk(layout::REPOSITORIES, None, |fi| {
            let rel = fi.path.as_str().strip_prefix(prefix.as_str()).unwrap_or("");
            let segs: Vec<&str> = rel.split('/').collect();
            // Repository names have no segment starting with `_`.
            let Some(at) = segs.iter().position(|s| s.starts_with('_')) else {
                // A directory may be part of a repository name; a file is
                // in no repository's `_layers`, `_manifests` or `_uploads`.
                if !fi.is_dir {
                    out.strays.push(Stray {
                        path: fi.path.as_str().to_owned(),
                        why: "a file outside every repository's _layers, _manifests and _uploads",
                    });
                }
                return Ok(WalkControl::Continue);
            };
            let Ok(name) = RepoName::parse(&segs[..at].join("/")) else {
                out.strays.push(Stray {
                    path: fi.path.as_str().to_owned(),
                    why: "not below a valid repository name",
                });
                return Ok(WalkControl::SkipDir);
            };
            let rest = &segs[at..];
            if fi.is_dir {
                if let ["_uploads", _id] = rest {
                    out.repos.entry(name).or_default().uploads += 1;
                    return Ok(WalkControl::SkipDir);
                }
                return Ok(WalkControl::Continue);
            }
            let repo = out.repos.entry(name).or_default();
            let fits = match rest {
                ["_layers", alg, hex, "link"] => digest_at(alg, hex)
                    .map(|d| repo.layers.push(link(d, fi)))
                    .ok_or("a layer link whose path names no digest"),
                ["_manifests", "revisions", alg, hex, "link"] => digest_at(alg, hex)
                    .map(|d| repo.revisions.push(link(d, fi)))
                    .ok_or("a revision link whose path names no digest"),
                ["_manifests", "tags", tag, "current", "link"] => Tag::parse(tag)
                    .map(|t| repo.tags.push((t, fi.path.as_str().to_owned())))
                    .map_err(|_| "a tag link whose tag is not a valid tag"),
                ["_manifests", "tags", tag, "index", alg, hex, "link"] => {
                    match (Tag::parse(tag), digest_at(alg, hex)) {
                        (Ok(t), Some(d)) => {
                            repo.tag_history.push((t, link(d, fi)));
                            Ok(())
                        }
                        _ => Err("a tag history link that names no tag and digest"),
                    }
                }
                ["_manifests", "referrers", salg, shex, alg, hex, "link"] => {
                    match (digest_at(salg, shex), digest_at(alg, hex)) {
                        (Some(s), Some(d)) => {
                            repo.referrers.push((s, link(d, fi)));
                            Ok(())
                        }
                        _ => Err("a referrer link that names no two digests"),
                    }
                }
                // The marker of an ended upload: purging removes it.
                ["_uploads", marker] if marker.ends_with(".ended") => Ok(()),
                _ => Err("not a file of distribution's layout"),
            };
            if let Err(why) = fits {
                out.strays.push(Stray {
                    path: fi.path.as_str().to_owned(),
                    why,
                });
            }
            Ok(WalkControl::Continue)
        })
        .await;
    match walked {
        Ok(()) => Ok(out),
        Err(e) if e.is_not_found() => Ok(Repositories::default()),
        Err(e) => Err(e),
    }
}

/// Walks `blobs/` once: every blob's data file, in path order.
///
/// # Errors
/// The driver's, when the walk fails.
pub async fn blobs(driver: &Driver) -> regstore_core::Result<(Vec<Blob>, Vec<Stray>)> {
    let root = format!("{}/blobs/", layout::ROOT);
    let mut blobs = Vec::new();
    let mut strays = Vec::new();
    let walked = driver
        .walk(root.trim_end_matches('/'), None, |fi| {
            if fi.is_dir {
                return Ok(WalkControl::Continue);
            }
            let rel = fi.path.as_str().strip_prefix(root.as_str()).unwrap_or("");
            let segs: Vec<&str> = rel.split('/').collect();
            let found = match segs.as_slice() {
                [alg, two, hex, "data"] if hex.get(..2) == Some(two) => digest_at(alg, hex),
                _ => None,
            };
            match found {
                Some(digest) => blobs.push(Blob {
                    digest,
                    path: fi.path.as_str().to_owned(),
                    size: fi.size,
                    mod_time: fi.mod_time,
                }),
                None => strays.push(Stray {
                    path: fi.path.as_str().to_owned(),
                    why: "not a blob's data file",
                }),
            }
            Ok(WalkControl::Continue)
        })
        .await;
    match walked {
        Ok(()) => Ok((blobs, strays)),
        Err(e) if e.is_not_found() => Ok((Vec::new(), Vec::new())),
        Err(e) => Err(e),
    }
}
