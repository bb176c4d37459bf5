//! Walk cases. distribution never ran these across drivers, and its S3
//! walk visits entries in a different order than its other drivers; here
//! every driver must give the contract's order.

use bytes::Bytes;
use regstore_core::{Error, ErrorKind, WalkControl};

use crate::cases::table;
use crate::{CaseResult, Ctx, Failure, Need, ensure, ensure_eq};

table![
    walk_full_order,
    walk_skip_dir,
    walk_start_after_before_everything,
    walk_start_after_inside,
    walk_start_after_directory,
    walk_start_after_after_everything,
    walk_start_after_nonexistent,
    walk_start_after_near_siblings,
    walk_stop_early,
    walk_error_propagation,
    walk_entry_removed_during_walk,
    walk_nonexistent,
    walk_requests_not_per_entry: CountsRequests,
    list_requests_not_per_entry: CountsRequests,
    walk_skipped_directory_not_listed: CountsRequests,
];

/// Files of the fixture, relative to its root. Names are chosen so that
/// plain string order of full paths (`/a-b` < `/a/1`) differs from walk
/// order, and so that byte order of `- . 0 Z _ a` is exercised.
const FILES: &[&str] = &[
    "a/1", "a/2", "a-b", "b/c/1", "b/c/2", "b/c-x", "b/d", "e", "-x", ".x", "0", "Z", "_",
];

/// The fixture's entries in walk order, files and directories.
const ORDER: &[&str] = &[
    "-x", ".x", "0", "Z", "_", "a", "a/1", "a/2", "a-b", "b", "b/c", "b/c/1", "b/c/2", "b/c-x",
    "b/d", "e",
];

async fn fixture(cx: &Ctx) -> Result<String, Failure> {
    let root = format!("/{}", cx.filename(12));
    cx.track(&root);
    for f in FILES {
        cx.driver
            .put_content(format!("{root}/{f}"), Bytes::from(f.to_string()))
            .await?;
    }
    Ok(root)
}

async fn walk_paths(cx: &Ctx, root: &str, hint: Option<&str>) -> Result<Vec<String>, Failure> {
    let mut seen = Vec::new();
    cx.driver
        .walk(root, hint, |fi| {
            seen.push(fi.path.as_str().to_owned());
            Ok(WalkControl::Continue)
        })
        .await?;
    Ok(seen)
}

fn under(root: &str, rel: &[&str]) -> Vec<String> {
    rel.iter().map(|r| format!("{root}/{r}")).collect()
}

async fn walk_full_order(cx: &Ctx) -> CaseResult {
    let root = fixture(cx).await?;
    let mut infos = Vec::new();
    cx.driver
        .walk(&root, None, |fi| {
            infos.push(fi.clone());
            Ok(WalkControl::Continue)
        })
        .await?;
    let paths: Vec<String> = infos.iter().map(|f| f.path.as_str().to_owned()).collect();
    ensure_eq!(paths, under(&root, ORDER), "walk order");
    for fi in &infos {
        let rel = fi
            .path
            .relative_to(&regstore_core::StoragePath::parse(&root)?)
            .unwrap_or("");
        let is_file = FILES.contains(&rel);
        ensure_eq!(fi.is_dir, !is_file, "is_dir of {}", fi.path);
        if is_file {
            ensure_eq!(fi.size, rel.len() as u64, "size of {}", fi.path);
        }
    }
    Ok(())
}

/// The paths a walk of `root` visits when it skips the directory `skip`.
async fn walk_skipping(cx: &Ctx, root: &str, skip: &str) -> Result<Vec<String>, Failure> {
    let mut seen = Vec::new();
    cx.driver
        .walk(root, None, |fi| {
            seen.push(fi.path.as_str().to_owned());
            Ok(if fi.path.as_str() == skip {
                WalkControl::SkipDir
            } else {
                WalkControl::Continue
            })
        })
        .await?;
    Ok(seen)
}

async fn walk_skip_dir(cx: &Ctx) -> CaseResult {
    let root = fixture(cx).await?;
    let skip = format!("{root}/b");
    let seen = walk_skipping(cx, &root, &skip).await?;
    let want: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|p| !p.starts_with("b/"))
        .collect();
    ensure_eq!(seen, under(&root, &want), "walk skipping {skip}");
    Ok(())
}

async fn start_after(cx: &Ctx, hint_rel: &str, want_from: Option<&str>) -> CaseResult {
    let root = fixture(cx).await?;
    let hint = format!("{root}/{hint_rel}");
    let seen = walk_paths(cx, &root, Some(&hint)).await?;
    let want: Vec<&str> = match want_from {
        Some(first) => {
            let i = ORDER
                .iter()
                .position(|p| *p == first)
                .unwrap_or(ORDER.len());
            ORDER[i..].to_vec()
        }
        None => Vec::new(),
    };
    ensure_eq!(seen, under(&root, &want), "walk after {hint}");
    Ok(())
}

async fn walk_start_after_before_everything(cx: &Ctx) -> CaseResult {
    // "-" is a valid name that sorts before every name in the fixture.
    start_after(cx, "-", Some("-x")).await
}

async fn walk_start_after_inside(cx: &Ctx) -> CaseResult {
    start_after(cx, "b/c/1", Some("b/c/2")).await
}

async fn walk_start_after_directory(cx: &Ctx) -> CaseResult {
    // The directory itself is not visited again, what lies below it is.
    start_after(cx, "a", Some("a/1")).await
}

async fn walk_start_after_after_everything(cx: &Ctx) -> CaseResult {
    start_after(cx, "zzz", None).await
}

async fn walk_start_after_nonexistent(cx: &Ctx) -> CaseResult {
    // b/bb does not exist and sorts between b and b/c.
    start_after(cx, "b/bb", Some("b/c")).await
}

/// Hints whose walk continues with a sibling that sorts before the hint's
/// subtree byte-wise (`a-b` < `a/…`, `b/c-x` < `b/c/…`) but after it in the
/// walk: a driver that resumes a listing from the hint's key (or from any
/// key below its first segment) must still find them.
async fn walk_start_after_near_siblings(cx: &Ctx) -> CaseResult {
    let root = fixture(cx).await?;
    for (hint, first) in [
        ("a/2", "a-b"),
        ("b/c/2", "b/c-x"),
        ("b/c-x", "b/d"),
        ("b/c", "b/c/1"),
        ("b/c/1/deeper", "b/c/2"),
    ] {
        let hint = format!("{root}/{hint}");
        let seen = walk_paths(cx, &root, Some(&hint)).await?;
        let from = ORDER.iter().position(|p| *p == first).unwrap_or(0);
        ensure_eq!(seen, under(&root, &ORDER[from..]), "walk after {hint}");
    }
    Ok(())
}

async fn walk_stop_early(cx: &Ctx) -> CaseResult {
    let root = fixture(cx).await?;
    let mut seen = Vec::new();
    cx.driver
        .walk(&root, None, |fi| {
            seen.push(fi.path.as_str().to_owned());
            Ok(if seen.len() == 3 {
                WalkControl::Stop
            } else {
                WalkControl::Continue
            })
        })
        .await?;
    ensure_eq!(
        seen,
        under(&root, &ORDER[..3]),
        "walk stopped after three entries"
    );
    Ok(())
}

async fn walk_error_propagation(cx: &Ctx) -> CaseResult {
    let root = fixture(cx).await?;
    let mut visits = 0;
    let r = cx
        .driver
        .walk(&root, None, |_| {
            visits += 1;
            if visits == 4 {
                Err(Error::unsupported("planted visitor error"))
            } else {
                Ok(WalkControl::Continue)
            }
        })
        .await;
    match r {
        Err(Error::Unsupported { what, .. }) => {
            ensure_eq!(
                what.as_str(),
                "planted visitor error",
                "the visitor's error comes back unchanged"
            );
        }
        other => {
            return Err(Failure(format!(
                "walk must return the visitor's error, got {other:?}"
            )));
        }
    }
    ensure_eq!(visits, 4, "no visits after the visitor's error");
    Ok(())
}

async fn walk_entry_removed_during_walk(cx: &Ctx) -> CaseResult {
    let root = fixture(cx).await?;
    let doomed = format!("{root}/b");
    let handle = tokio::runtime::Handle::current();
    let driver = cx.driver.clone();
    let mut seen = Vec::new();
    let mut removed = false;
    cx.driver
        .walk(&root, None, |fi| {
            seen.push(fi.path.as_str().to_owned());
            if !removed && fi.path.as_str().ends_with("/a/1") {
                removed = true;
                // The visitor is synchronous; deleting from inside it is what
                // a concurrent deleter looks like to the walk.
                tokio::task::block_in_place(|| handle.block_on(driver.delete(&doomed)))?;
            }
            Ok(WalkControl::Continue)
        })
        .await?;
    ensure!(removed, "the walk never reached {root}/a/1");
    // Everything outside the removed directory is visited, once, in order.
    let kept: Vec<String> = seen
        .iter()
        .filter(|p| !p.starts_with(&doomed))
        .cloned()
        .collect();
    let want: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|p| *p != "b" && !p.starts_with("b/"))
        .collect();
    ensure_eq!(kept, under(&root, &want), "entries that were not removed");
    Ok(())
}

async fn walk_nonexistent(cx: &Ctx) -> CaseResult {
    let path = cx.path(24);
    let r = cx
        .driver
        .walk(&path, None, |_| Ok(WalkControl::Continue))
        .await;
    crate::expect_error(
        r,
        ErrorKind::PathNotFound,
        cx.name(),
        "walk of a missing directory",
    )
}

/// Backend requests the case's driver has sent so far.
fn requests(cx: &Ctx) -> Result<u64, Failure> {
    cx.driver
        .backend_requests()
        .ok_or_else(|| Failure("the driver stopped counting requests".into()))
}

/// `dirs` directories of `per_dir` one-byte files under a fresh root.
async fn wide_tree(cx: &Ctx, dirs: usize, per_dir: usize) -> Result<String, Failure> {
    let root = format!("/{}", cx.filename(12));
    cx.track(&root);
    for d in 0..dirs {
        for f in 0..per_dir {
            cx.driver
                .put_content(format!("{root}/d{d}/f{f:03}"), Bytes::from_static(b"x"))
                .await?;
        }
    }
    Ok(root)
}

/// A walk over 4 directories of 50 files (204 entries) costs a few listing
/// requests, not one request per entry as the stat-per-entry default would.
async fn walk_requests_not_per_entry(cx: &Ctx) -> CaseResult {
    let root = wide_tree(cx, 4, 50).await?;
    let before = requests(cx)?;
    let seen = walk_paths(cx, &root, None).await?;
    let used = requests(cx)? - before;
    ensure_eq!(seen.len(), 204, "entries walked");
    ensure!(
        used <= 4,
        "walking 204 entries sent {used} backend requests; a walk must list, not stat each entry"
    );
    Ok(())
}

/// Listing a directory of 50 files costs one or two requests.
async fn list_requests_not_per_entry(cx: &Ctx) -> CaseResult {
    let root = wide_tree(cx, 1, 50).await?;
    let dir = format!("{root}/d0");
    let before = requests(cx)?;
    let listed = cx.driver.list(&dir).await?;
    let used = requests(cx)? - before;
    ensure_eq!(listed.len(), 50, "entries listed");
    ensure!(used <= 2, "listing 50 entries sent {used} backend requests");
    Ok(())
}

/// Files in the skipped directory of `walk_skipped_directory_not_listed`:
/// more than two pages of S3's and GCS's listings (1,000 keys).
const SKIPPED_FILES: usize = 2_100;

/// A walk that skips a directory of 2,100 files, between two small ones,
/// visits the small ones and sends at most two requests: it does not page
/// through the skipped keys (a flat listing of 1,000 keys a page takes
/// three). This is the catalog's walk, which skips every repository's
/// `_layers` and `_manifests`.
async fn walk_skipped_directory_not_listed(cx: &Ctx) -> CaseResult {
    use futures_util::{StreamExt, TryStreamExt};
    let root = format!("/{}", cx.filename(12));
    cx.track(&root);
    let mut paths = vec![format!("{root}/a/x"), format!("{root}/c/y")];
    paths.extend((0..SKIPPED_FILES).map(|i| format!("{root}/big/f{i:05}")));
    futures_util::stream::iter(paths)
        .map(|p| async move { cx.driver.put_content(p, Bytes::new()).await })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    let before = requests(cx)?;
    let big = format!("{root}/big");
    let seen = walk_skipping(cx, &root, &big).await?;
    let used = requests(cx)? - before;
    let want: Vec<String> = ["a", "a/x", "big", "c", "c/y"]
        .iter()
        .map(|p| format!("{root}/{p}"))
        .collect();
    ensure_eq!(seen, want, "entries walked, {big} skipped");
    ensure!(
        used <= 2,
        "a walk skipping a directory of {SKIPPED_FILES} files sent {used} backend requests; \
         it should not list what it skips"
    );
    Ok(())
}
