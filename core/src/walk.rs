//! The walk every driver gets unless it brings a better one.

use crate::driver::{StorageDriver, WalkControl, WalkVisitor};
use crate::error::Result;
use crate::path::StoragePath;

/// Walks `path` with one `list` per directory and one `stat` per visited
/// entry, in the contract's order (see [`StorageDriver::walk`]).
///
/// Entries that vanish between `list` and `stat` are skipped, as are
/// directories that vanish before they are listed: a walk races with writers
/// and deleters and reports what it could see. Subtrees that lie wholly
/// before `start_after` are neither stat'ed nor listed.
///
/// # Errors
/// [`crate::Error::PathNotFound`] when `path` is not a directory; any other
/// driver error, or the visitor's error, ends the walk and is returned.
pub async fn walk_by_listing<D: StorageDriver + ?Sized>(
    driver: &D,
    path: &StoragePath,
    start_after: Option<&StoragePath>,
    visitor: &mut WalkVisitor<'_>,
) -> Result<()> {
    let mut pending = vec![sorted_children(driver, path).await?];
    while let Some(level) = pending.last_mut() {
        let Some(child) = level.next() else {
            pending.pop();
            continue;
        };
        let mut report = true;
        if let Some(hint) = start_after {
            if child <= *hint {
                if child == *hint || child.is_ancestor_of(hint) {
                    // Not reported, but what lies below may come after the hint.
                    report = false;
                } else {
                    continue;
                }
            }
        }
        let info = match driver.stat(&child).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let control = if report {
            visitor(&info)?
        } else {
            WalkControl::Continue
        };
        match control {
            WalkControl::Stop => return Ok(()),
            WalkControl::SkipDir => continue,
            WalkControl::Continue if info.is_dir => match sorted_children(driver, &child).await {
                Ok(children) => pending.push(children),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            },
            WalkControl::Continue => {}
        }
    }
    Ok(())
}

async fn sorted_children<D: StorageDriver + ?Sized>(
    driver: &D,
    dir: &StoragePath,
) -> Result<std::vec::IntoIter<StoragePath>> {
    let mut children = driver.list(dir).await?;
    children.sort();
    Ok(children.into_iter())
}
