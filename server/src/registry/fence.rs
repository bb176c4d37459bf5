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
    /// Digests a collection is deleting right now.
    doomed: HashSet<Digest>,
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

    /// Records that a request relies on `d` now. `false`: a collection is
    /// deleting it — treat it as absent (or wait, to write it afresh).
    pub fn use_digest(&self, d: &Digest) -> bool {
        let mut s = self.state();
        if s.doomed.contains(d) {
            return false;
        }
        if s.remember {
            s.used.insert(d.clone(), Instant::now());
        }
        true
    }

    /// Waits while a collection is deleting `d`, then records the use.
    /// For writes of those bytes: they must land after the delete.
    pub async fn wait_until_undoomed(&self, d: &Digest) {
        loop {
            let notified = self.undoomed.notified();
            if self.use_digest(d) {
                return;
            }
            notified.await;
        }
    }

    /// The collection's last step before it deletes: removes from `blobs`
    /// and `manifests` (whose digest `digest_of` gives) every digest used
    /// at or after `since`, dooms the rest, and forgets uses older than
    /// `since`. The returned guard undooms them when dropped (after the
    /// deletes, or when the collection fails).
    pub(crate) fn doom<M>(
        &self,
        since: Instant,
        blobs: &mut Vec<Digest>,
        manifests: &mut Vec<M>,
        digest_of: fn(&M) -> &Digest,
    ) -> Doomed<'_> {
        let mut s = self.state();
        s.used.retain(|_, at| *at >= since);
        blobs.retain(|d| !s.used.contains_key(d));
        manifests.retain(|m| !s.used.contains_key(digest_of(m)));
        let digests: Vec<Digest> = blobs
            .iter()
            .cloned()
            .chain(manifests.iter().map(|m| digest_of(m).clone()))
            .collect();
        s.doomed.extend(digests.iter().cloned());
        Doomed {
            fence: self,
            digests,
        }
    }

    /// Digests remembered as used (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.state().used.len()
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
    digests: Vec<Digest>,
}

impl Drop for Doomed<'_> {
    fn drop(&mut self) {
        let mut s = self.fence.state();
        for d in &self.digests {
            s.doomed.remove(d);
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
        let mut blobs = vec![a.clone(), b.clone()];
        let mut manifests = vec![a.clone()];
        let doomed = fence.doom(since, &mut blobs, &mut manifests, |d| d);
        assert_eq!(blobs, vec![b.clone()]);
        assert!(manifests.is_empty());
        assert!(fence.use_digest(&a));
        assert!(!fence.use_digest(&b));
        drop(doomed);
        assert!(fence.use_digest(&b));
    }

    #[tokio::test]
    async fn a_writer_waits_until_the_delete_is_over() {
        let fence = std::sync::Arc::new(GcFence::default());
        let d = Digest::of(Algorithm::Sha256, b"d");
        let mut blobs = vec![d.clone()];
        let doomed = fence.doom(Instant::now(), &mut blobs, &mut Vec::new(), |d| d);
        let waiter = {
            let fence = std::sync::Arc::clone(&fence);
            let d = d.clone();
            tokio::spawn(async move { fence.wait_until_undoomed(&d).await })
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
