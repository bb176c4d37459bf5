//! Group commit: the durability barriers of concurrent operations share
//! their flushes.
//!
//! An operation that must make something durable before it goes on (a
//! file's bytes before the file is renamed into place, a directory's
//! entries before the call returns) hands its targets to the driver's
//! [`Syncer`] and blocks until they are flushed. One blocked thread at a
//! time is the *leader*: it takes every target queued so far — its own and
//! those of the operations that queued while the previous batch was being
//! flushed — flushes each distinct one once, and wakes the operations of
//! the batch. The next batch's leader is one of the threads that queued
//! meanwhile, so a lone operation waits for nothing but its own flushes,
//! and under load a batch holds whatever arrived during one flush: no
//! timer, no added latency.
//!
//! The guarantee is the one of calling `fsync` directly: a flush of a
//! target starts only after the operation queued it, so everything the
//! operation did to it before is covered. What concurrent operations
//! save: a directory many of them write into (an `_uploads` directory, a
//! `blobs/sha256/<xx>` directory, the staging area) is flushed once per
//! batch instead of once per operation, and one thread issues the flushes
//! back to back, so the filesystem's journal commits them together instead
//! of each waiting for the commit before it.
//!
//! Failures are per operation: when a flush fails, every operation that
//! queued that target gets its error (same kind, same message), and no
//! other.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::fsio::sync_dir;

/// Something to make durable.
#[derive(Debug)]
pub(crate) enum Target {
    /// A file's bytes and metadata (`fsync` of the handle).
    File(Arc<File>),
    /// A directory's entries (`fsync` of the directory).
    Dir(PathBuf),
}

/// The group-commit queue of one driver (see the module docs). Shared by
/// everything that flushes under the driver's root.
#[derive(Debug, Default)]
pub(crate) struct Syncer {
    state: Mutex<State>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Targets of the batch that has not started yet, with their tickets.
    queue: Vec<(u64, Target)>,
    next_ticket: u64,
    /// The number of the batch `queue` will be flushed in; every batch
    /// before it has been taken by a leader.
    open_batch: u64,
    /// Every batch up to and including this one is flushed (batches are
    /// numbered from 1).
    done_batch: u64,
    /// A leader is flushing batch `open_batch - 1`.
    leading: bool,
    /// Errors of flushed tickets not yet picked up by their operation.
    failed: HashMap<u64, (io::ErrorKind, String)>,
    /// Flushes issued and batches flushed, for the tests and for logging.
    flushes: u64,
    batches: u64,
}

impl Syncer {
    /// Blocks until every target is durable, sharing the flushes with
    /// concurrent callers. Call it from a blocking thread.
    ///
    /// # Errors
    /// The I/O error of the first target whose flush failed (a missing
    /// directory: `NotFound`).
    pub(crate) fn sync(&self, targets: Vec<Target>) -> io::Result<()> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut s = self.lock();
        if s.open_batch == 0 {
            s.open_batch = 1;
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        let batch = s.open_batch;
        s.queue.extend(targets.into_iter().map(|t| (ticket, t)));
        loop {
            if s.done_batch >= batch {
                return match s.failed.remove(&ticket) {
                    None => Ok(()),
                    Some((kind, message)) => Err(io::Error::new(kind, message)),
                };
            }
            if !s.leading {
                // The batch holding our targets is the open one: flush it.
                s.leading = true;
                let taken = std::mem::take(&mut s.queue);
                let number = s.open_batch;
                s.open_batch += 1;
                drop(s);
                let (failed, flushes) = flush(taken);
                s = self.lock();
                s.failed.extend(failed);
                s.flushes += flushes;
                s.batches += 1;
                s.done_batch = number;
                s.leading = false;
                self.flushed.notify_all();
                continue;
            }
            s = self
                .flushed
                .wait(s)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Flushes issued and batches flushed so far.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.flushes, s.batches)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds
        // consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Flushes a batch: each file, then each distinct directory once. Returns
/// the failed tickets and the number of flushes issued.
fn flush(batch: Vec<(u64, Target)>) -> (HashMap<u64, (io::ErrorKind, String)>, u64) {
    let mut failed = HashMap::new();
    let mut flushes = 0;
    let mut dirs: BTreeMap<PathBuf, Vec<u64>> = BTreeMap::new();
    for (ticket, target) in batch {
        match target {
            Target::File(file) => {
                flushes += 1;
                if let Err(e) = file.sync_all() {
                    failed
                        .entry(ticket)
                        .or_insert_with(|| (e.kind(), e.to_string()));
                }
            }
            Target::Dir(dir) => dirs.entry(dir).or_default().push(ticket),
        }
    }
    for (dir, tickets) in dirs {
        flushes += 1;
        if let Err(e) = sync_dir(&dir) {
            let message = format!("sync directory {}: {e}", dir.display());
            for ticket in tickets {
                failed
                    .entry(ticket)
                    .or_insert_with(|| (e.kind(), message.clone()));
            }
        }
    }
    (failed, flushes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_lone_caller_flushes_its_own_targets() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let f = File::create(tmp.path().join("f"))?;
        let s = Syncer::default();
        s.sync(vec![Target::File(Arc::new(f)), Target::Dir(tmp.path().to_path_buf())])?;
        assert_eq!(s.counts(), (2, 1));
        s.sync(Vec::new())?;
        assert_eq!(s.counts(), (2, 1), "nothing to flush costs nothing");
        Ok(())
    }

    #[test]
    fn concurrent_callers_share_directory_flushes() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let s = Arc::new(Syncer::default());
        let n = 16;
        let start = Arc::new(Barrier::new(n));
        let mut threads = Vec::new();
        for _ in 0..n {
            let (s, start, dir) = (Arc::clone(&s), Arc::clone(&start), tmp.path().to_owned());
            threads.push(std::thread::spawn(move || {
                start.wait();
                for _ in 0..20 {
                    s.sync(vec![Target::Dir(dir.clone())])?;
                }
                io::Result::Ok(())
            }));
        }
        for t in threads {
            t.join().map_err(|_| io::Error::other("a thread panicked"))??;
        }
        let (flushes, batches) = s.counts();
        assert_eq!(
            flushes, batches,
            "one flush per batch for one shared directory"
        );
        assert!(
            batches < (n * 20) as u64,
            "{batches} batches for {} calls: none was shared",
            n * 20
        );
        Ok(())
    }

    #[test]
    fn a_failed_flush_fails_only_the_callers_that_queued_it() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let s = Syncer::default();
        let gone = tmp.path().join("gone");
        let e = match s.sync(vec![
            Target::Dir(tmp.path().to_path_buf()),
            Target::Dir(gone.clone()),
        ]) {
            Err(e) => e,
            Ok(()) => panic!("flushing a missing directory succeeded"),
        };
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("gone"), "{e}");
        s.sync(vec![Target::Dir(tmp.path().to_path_buf())])?;
        Ok(())
    }
}
