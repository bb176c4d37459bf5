//! Group commit: the durability barriers of concurrent operations share
//! their flushes.
//!
//! An operation that must make something durable before it goes on (a
//! file's bytes before the file is renamed into place, a directory's
//! entries before the call returns) hands its targets to the driver's
//! [`Syncer`] and blocks until they are flushed. One blocked thread at a
//! time is the *leader*: it takes every target queued so far — its own and
//! those of the operations that queued while the previous batch was being
//! flushed — flushes them, and wakes the operations of the batch. The next
//! batch's leader is one of the threads that queued meanwhile, so under
//! load a batch holds whatever arrived during one flush: no timer, no
//! added latency.
//!
//! How a batch is flushed:
//! - the targets of **one operation** (a lone request): `fsync` of each
//!   file and of each distinct directory, as a driver without group commit
//!   would;
//! - the targets of **several operations**: one `syncfs(2)` per filesystem
//!   they are on (on Linux; elsewhere, as for one operation). One call
//!   writes every dirty page and commits the journal once for all of them.
//!
//! Why `syncfs` and not the batch's `fsync`s back to back: measured with
//! `server-bench --small-pushes` (16 concurrent 4 KiB pushes, ext4 on the
//! 2-core VM), the leader issuing each operation's `fsync`s in turn made
//! pushes slower than each request syncing on its own (about 250 against
//! 440 push/s: the journal had been merging the concurrent `fsync`s of
//! sixteen threads, and one thread issuing them serialises its commits),
//! while one `syncfs` per batch made them faster (about 630 push/s,
//! p99 37 ms against 60 ms). The cost of `syncfs`: it also writes dirty
//! data of other files on that filesystem, so a batch may wait for a large
//! upload's pages (the writer starts writing those early, see
//! `writer.rs`) or for another program's.
//!
//! The guarantee is the one of calling `fsync` directly: a flush starts
//! only after the operation queued its targets, so everything the
//! operation did to them before is covered. Failures are per operation:
//! an operation whose target cannot be flushed (a directory gone:
//! `NotFound`) or whose filesystem's `syncfs` failed gets that error (same
//! kind, same message); the other operations of the batch do not. `syncfs`
//! reports a write error of any file of the filesystem since the previous
//! call (Linux 5.8 and later; older kernels report none), so an error may
//! fail operations whose own data was written fine: they answer an error
//! and are retried, nothing is acknowledged that is not durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::fsio::sync_dir;

/// Whether an operation waits for its durability barrier: `Volatile`
/// writes (see [`regstore_core::StorageDriver::volatile_epoch`]) skip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Barrier {
    /// Flushed before the operation returns.
    Durable,
    /// Left to the kernel's writeback.
    Volatile,
}

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

/// Errors of failed tickets: kind and message.
type Failures = HashMap<u64, (io::ErrorKind, String)>;

#[derive(Debug, Default)]
struct State {
    /// Targets of the batch that has not started yet, with their tickets.
    queue: Vec<(u64, Target)>,
    next_ticket: u64,
    /// The number of the batch `queue` will be flushed in; every batch
    /// before it has been taken by a leader. Batches are numbered from 1.
    open_batch: u64,
    /// Every batch up to and including this one is flushed.
    done_batch: u64,
    /// A leader is flushing batch `open_batch - 1`.
    leading: bool,
    /// Errors of flushed tickets not yet picked up by their operation.
    failed: Failures,
    /// Flush calls issued and batches flushed, for the tests.
    flushes: u64,
    batches: u64,
}

impl Syncer {
    /// Blocks until every target is durable, sharing the flushes with
    /// concurrent callers. Call it from a blocking thread.
    ///
    /// # Errors
    /// The I/O error of a target that could not be flushed (a missing
    /// directory: `NotFound`), or of the `syncfs` that covered it.
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

    /// [`Syncer::sync`] for a `Durable` barrier; nothing for a `Volatile`
    /// one.
    ///
    /// # Errors
    /// As [`Syncer::sync`].
    pub(crate) fn sync_for(&self, barrier: Barrier, targets: Vec<Target>) -> io::Result<()> {
        match barrier {
            Barrier::Durable => self.sync(targets),
            Barrier::Volatile => Ok(()),
        }
    }

    /// Flush calls issued and batches flushed so far.
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

/// Flushes a batch (see the module docs); returns the failed tickets and
/// the number of flush calls issued.
fn flush(batch: Vec<(u64, Target)>) -> (Failures, u64) {
    let operations: HashSet<u64> = batch.iter().map(|(t, _)| *t).collect();
    if operations.len() > 1 {
        #[cfg(target_os = "linux")]
        return flush_filesystems(batch);
    }
    flush_each(batch)
}

/// `fsync` of each file and of each distinct directory.
fn flush_each(batch: Vec<(u64, Target)>) -> (Failures, u64) {
    let mut failed = Failures::new();
    let mut flushes = 0;
    let mut dirs: BTreeMap<PathBuf, Vec<u64>> = BTreeMap::new();
    for (ticket, target) in batch {
        match target {
            Target::File(file) => {
                flushes += 1;
                if let Err(e) = file.sync_all() {
                    fail(&mut failed, &[ticket], &e, "fsync");
                }
            }
            Target::Dir(dir) => dirs.entry(dir).or_default().push(ticket),
        }
    }
    for (dir, tickets) in dirs {
        flushes += 1;
        if let Err(e) = sync_dir(&dir) {
            fail(
                &mut failed,
                &tickets,
                &e,
                &format!("sync directory {}", dir.display()),
            );
        }
    }
    (failed, flushes)
}

/// One `syncfs` per filesystem the targets are on (found by `stat`: a
/// mount below the root is a filesystem of its own).
#[cfg(target_os = "linux")]
fn flush_filesystems(batch: Vec<(u64, Target)>) -> (Failures, u64) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let mut failed = Failures::new();
    // Per device: a handle on it, and the tickets with targets there.
    let mut devices: BTreeMap<u64, (Arc<File>, Vec<u64>)> = BTreeMap::new();
    let mut opened: HashMap<PathBuf, Arc<File>> = HashMap::new();
    for (ticket, target) in batch {
        let handle = match target {
            Target::File(file) => Ok(file),
            Target::Dir(dir) => match opened.get(&dir) {
                Some(f) => Ok(Arc::clone(f)),
                None => match File::open(&dir) {
                    Ok(f) => {
                        let f = Arc::new(f);
                        opened.insert(dir, Arc::clone(&f));
                        Ok(f)
                    }
                    Err(e) => Err((e, format!("sync directory {}", dir.display()))),
                },
            },
        };
        let found = handle.and_then(|h| match h.metadata() {
            Ok(m) => Ok((m.dev(), h)),
            Err(e) => Err((e, "stat before syncfs".to_owned())),
        });
        match found {
            Ok((dev, h)) => devices
                .entry(dev)
                .or_insert_with(|| (h, Vec::new()))
                .1
                .push(ticket),
            Err((e, step)) => fail(&mut failed, &[ticket], &e, &step),
        }
    }
    let flushes = devices.len() as u64;
    for (handle, tickets) in devices.into_values() {
        // SAFETY: `handle` is an open descriptor for the whole call; the
        // call reads no memory of ours.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
            let e = io::Error::last_os_error();
            fail(&mut failed, &tickets, &e, "syncfs");
        }
    }
    (failed, flushes)
}

/// Records `e` (after `step`) for each of `tickets` without an error yet.
fn fail(failed: &mut Failures, tickets: &[u64], e: &io::Error, step: &str) {
    for ticket in tickets {
        failed
            .entry(*ticket)
            .or_insert_with(|| (e.kind(), format!("{step}: {e}")));
    }
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
        s.sync(vec![
            Target::File(Arc::new(f)),
            Target::Dir(tmp.path().to_path_buf()),
        ])?;
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
            t.join()
                .map_err(|_| io::Error::other("a thread panicked"))??;
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

    #[test]
    fn a_batch_of_several_operations_is_one_flush_per_filesystem() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let f = Arc::new(File::create(tmp.path().join("f"))?);
        let g = Arc::new(File::create(tmp.path().join("g"))?);
        let dir = tmp.path().to_path_buf();
        let batch = vec![
            (1, Target::File(f)),
            (1, Target::Dir(dir.clone())),
            (2, Target::File(g)),
            (3, Target::Dir(dir)),
        ];
        let (failed, flushes) = flush(batch);
        assert!(failed.is_empty(), "{failed:?}");
        let expected = if cfg!(target_os = "linux") { 1 } else { 3 };
        assert_eq!(flushes, expected);
        Ok(())
    }

    #[test]
    fn in_a_batch_of_several_operations_a_missing_directory_fails_only_its_own() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let gone = tmp.path().join("gone");
        let batch = vec![
            (1, Target::Dir(tmp.path().to_path_buf())),
            (2, Target::Dir(gone)),
            (2, Target::Dir(tmp.path().to_path_buf())),
        ];
        let (failed, _) = flush(batch);
        assert_eq!(failed.keys().copied().collect::<Vec<_>>(), vec![2]);
        let (kind, message) = &failed[&2];
        assert_eq!(*kind, io::ErrorKind::NotFound);
        assert!(message.contains("gone"), "{message}");
        Ok(())
    }
}
