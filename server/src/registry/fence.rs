//! The in-process fence between requests and an online garbage collection.
//!
//! Garbage collection decides from a listing taken some time ago which
//! blobs nobody references; a request of this instance may start to rely on
//! one of them in the meantime (a client's `HEAD` before it skips an
//! upload, a mount, a manifest that references it, an upload of the same
//! bytes). The fence closes that gap for every request of the instance
//! that runs the collection:
//!
//! - every request that relies on a digest *uses* it first
//!   ([`GcFence::use_digest`]); while online GC is enabled, the time of the
//!   last use of each digest is remembered (for the grace period, then
//!   forgotten);
//! - the collection, just before it deletes, drops from its plan every
//!   digest used since its mark began (minus the grace period) and marks the
//!   rest *doomed* — in one step under the fence's lock, so a use either
//!   comes before it (and saves the digest) or after it (and sees the digest
//!   doomed);
//! - a request that uses a doomed digest is told it is gone: a `HEAD` or a
//!   mount answers that the blob is unknown, a manifest referencing it is
//!   refused, and an upload or manifest write of those very bytes waits
//!   ([`GcFence::wait_until_undoomed`]) until the delete is over and then
//!   stores them afresh.
//!
//! So no request of this instance succeeds on the strength of a blob that
//! the collection then deletes. Requests of *other* instances on the same
//! storage are not fenced; for them the grace period on storage times
//! holds (see [`crate::gc`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::digest::Digest;
use super::names::RepoName;

/// See the module docs. One per [`Registry`](super::Registry).
#[derive(Debug, Default)]
pub struct GcFence {
    state: Mutex<State>,
    undoomed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Online GC is enabled: uses are remembered.
    remember: bool,
    /// Last use of each digest, while `remember`.
    used: HashMap<Digest, Instant>,
    /// Blobs a collection is deleting right now.
    doomed: HashSet<Digest>,
    /// Manifest revisions (repository, digest) it is deleting.
    doomed_manifests: HashSet<(RepoName, Digest)>,
}

impl State {
    /// Records a use of `d` unless `doomed` says it is being deleted.
    fn use_unless(&mut self, d: &Digest, doomed: bool) -> bool {
        if doomed {
            return false;
        }
        if self.remember {
            self.used.insert(d.clone(), Instant::now());
        }
        true
    }
}

impl GcFence {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts remembering uses (online GC is enabled in this process).
    pub fn remember_uses(&self) {
        self.state().remember = true;
    }

    /// Records that a request relies on blob `d` now. `false`: a
    /// collection is deleting it — treat it as absent (or wait, to write it
    /// afresh).
    pub fn use_digest(&self, d: &Digest) -> bool {
        let mut s = self.state();
        let doomed = s.doomed.contains(d);
        s.use_unless(d, doomed)
    }

    /// Records that a request relies on manifest `d` of `repo` now.
    /// `false`: a collection is deleting that revision — treat it as
    /// absent. (Other repositories' revisions of the same digest are not
    /// affected.)
    pub fn use_manifest(&self, repo: &RepoName, d: &Digest) -> bool {
        let mut s = self.state();
        let doomed = s.doomed_manifests.contains(&(repo.clone(), d.clone()));
        s.use_unless(d, doomed)
    }

    /// Waits while a collection is deleting blob `d` (and, with `repo`,
    /// the revision `d` of `repo`), then records the use. For writes of
    /// those bytes or that revision: they must land after the delete.
    pub async fn wait_until_undoomed(&self, repo: Option<&RepoName>, d: &Digest) {
        loop {
            let notified = self.undoomed.notified();
            {
                let mut s = self.state();
                let doomed = s.doomed.contains(d)
                    || repo.is_some_and(|r| s.doomed_manifests.contains(&(r.clone(), d.clone())));
                if s.use_unless(d, doomed) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The collection's last step before it deletes: removes from `blobs`
    /// and `manifests` (revisions: repository and digest) every digest used
    /// at or after `since`, dooms the rest, and forgets uses older than
    /// `since`. The returned guard undooms them when dropped (after the
    /// deletes, or when the collection fails).
    pub(crate) fn doom(
        &self,
        since: Instant,
        blobs: &mut Vec<Digest>,
        manifests: &mut Vec<(RepoName, Digest)>,
    ) -> Doomed<'_> {
        let mut s = self.state();
        s.used.retain(|_, at| *at >= since);
        blobs.retain(|d| !s.used.contains_key(d));
        manifests.retain(|(_, d)| !s.used.contains_key(d));
        s.doomed.extend(blobs.iter().cloned());
        s.doomed_manifests.extend(manifests.iter().cloned());
        Doomed {
            fence: self,
            blobs: blobs.clone(),
            manifests: manifests.clone(),
        }
    }

    /// Forgets uses older than `age` ago (when no collection runs for a
    /// long time, the map does not keep growing).
    pub fn forget_older_than(&self, age: Duration) {
        if let Some(since) = Instant::now().checked_sub(age) {
            self.state().used.retain(|_, at| *at >= since);
        }
    }
}

/// Blobs a collection is deleting; undoomed when dropped.
#[derive(Debug)]
pub(crate) struct Doomed<'a> {
    fence: &'a GcFence,
    blobs: Vec<Digest>,
    manifests: Vec<(RepoName, Digest)>,
}

impl Drop for Doomed<'_> {
    fn drop(&mut self) {
        let mut s = self.fence.state();
        for d in &self.blobs {
            s.doomed.remove(d);
        }
        for m in &self.manifests {
            s.doomed_manifests.remove(m);
        }
        drop(s);
        self.fence.undoomed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Algorithm;

    #[test]
    fn a_use_before_the_doom_saves_the_digest_and_one_after_sees_it_doomed() {
        let fence = GcFence::default();
        fence.remember_uses();
        let since = Instant::now();
        let (a, b) = (
            Digest::of(Algorithm::Sha256, b"a"),
            Digest::of(Algorithm::Sha256, b"b"),
        );
        assert!(fence.use_digest(&a));
        let (app, other) = (
            RepoName::parse("app").unwrap(),
            RepoName::parse("other").unwrap(),
        );
        let mut blobs = vec![a.clone(), b.clone()];
        let mut manifests = vec![(app.clone(), a.clone()), (app.clone(), b.clone())];
        let doomed = fence.doom(since, &mut blobs, &mut manifests);
        assert_eq!(blobs, vec![b.clone()]);
        assert_eq!(manifests, vec![(app.clone(), b.clone())]);
        assert!(fence.use_digest(&a));
        assert!(!fence.use_digest(&b));
        assert!(!fence.use_manifest(&app, &b));
        assert!(
            fence.use_manifest(&other, &b),
            "another repository's revision is not being deleted"
        );
        drop(doomed);
        assert!(fence.use_digest(&b));
        assert!(fence.use_manifest(&app, &b));
    }

    #[tokio::test]
    async fn a_writer_waits_until_the_delete_is_over() {
        let fence = std::sync::Arc::new(GcFence::default());
        let d = Digest::of(Algorithm::Sha256, b"d");
        let mut blobs = vec![d.clone()];
        let doomed = fence.doom(Instant::now(), &mut blobs, &mut Vec::new());
        let waiter = {
            let fence = std::sync::Arc::clone(&fence);
            let d = d.clone();
            tokio::spawn(async move { fence.wait_until_undoomed(None, &d).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the writer must wait for the delete");
        drop(doomed);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the writer goes on once undoomed")
            .expect("no panic");
    }
}
