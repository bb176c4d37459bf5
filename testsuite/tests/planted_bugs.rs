//! Proof that the suite can fail: a driver with one planted bug per class is
//! run through the case that must catch it, and that case must fail — while
//! the same case passes on the correct reference driver.

use bytes::Bytes;
use regstore_core::{
    ByteStream, Driver, FileInfo, FileWriter, Result, StorageDriver, StoragePath, WalkControl,
    WalkVisitor, async_trait,
};
use regstore_driver_inmemory::InMemoryDriver;
use regstore_testsuite::{Options, Outcome, case, run_case};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Bug {
    /// Deleting `/a` also deletes `/ab` (a plain string-prefix delete).
    PrefixDelete,
    /// `close` keeps only whole 64-byte blocks and loses the tail.
    AppendLosesTail,
    /// Listings come in pages of 1,000 and the last page is dropped.
    ListMissesLastPage,
    /// Walk visits entries in plain string order (`/a-b` before `/a/x`).
    WalkOutOfOrder,
    /// `stat` reports one byte too many for files (for the model test).
    StatOffByOne,
    /// `rollback` keeps what the session wrote (it closes the writer).
    RollbackKeeps,
}

#[derive(Debug)]
struct Buggy {
    inner: Driver,
    bug: Bug,
}

#[async_trait]
impl StorageDriver for Buggy {
    fn name(&self) -> &'static str {
        "buggy"
    }
    async fn get_content(&self, p: &StoragePath) -> Result<Bytes> {
        self.inner.get_content(p).await
    }
    async fn put_content(&self, p: &StoragePath, c: Bytes) -> Result<()> {
        self.inner.put_content(p, c).await
    }
    async fn reader(&self, p: &StoragePath, offset: u64) -> Result<ByteStream> {
        self.inner.reader(p, offset).await
    }
    async fn writer(&self, p: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        let w = self.inner.writer(p, append).await?;
        if self.bug == Bug::AppendLosesTail {
            return Ok(Box::new(TailLosingWriter {
                inner: Box::new(w),
                tail: Vec::new(),
            }));
        }
        if self.bug == Bug::RollbackKeeps {
            return Ok(Box::new(KeepingWriter(Box::new(w))));
        }
        Ok(Box::new(w))
    }
    async fn stat(&self, p: &StoragePath) -> Result<FileInfo> {
        let mut fi = self.inner.stat(p).await?;
        if self.bug == Bug::StatOffByOne && !fi.is_dir {
            fi.size += 1;
        }
        Ok(fi)
    }
    async fn list(&self, p: &StoragePath) -> Result<Vec<StoragePath>> {
        let mut all = self.inner.list(p).await?;
        if self.bug == Bug::ListMissesLastPage && all.len() > 1000 && all.len() % 1000 != 0 {
            all.truncate(all.len() / 1000 * 1000);
        }
        Ok(all)
    }
    async fn rename(&self, a: &StoragePath, b: &StoragePath) -> Result<()> {
        self.inner.rename(a, b).await
    }
    async fn delete(&self, p: &StoragePath) -> Result<()> {
        self.inner.delete(p).await?;
        if self.bug == Bug::PrefixDelete {
            let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
                return Ok(());
            };
            for sibling in self.inner.list(&parent).await.unwrap_or_default() {
                if sibling.file_name().is_some_and(|n| n.starts_with(name)) {
                    self.inner.delete(&sibling).await?;
                }
            }
        }
        Ok(())
    }
    async fn walk(
        &self,
        p: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        if self.bug != Bug::WalkOutOfOrder {
            return self
                .inner
                .walk(p, start_after.map(|s| s.as_str()), visitor)
                .await;
        }
        let mut all = self.inner.walk_all(p).await?;
        all.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        for fi in all {
            if visitor(&fi)? == WalkControl::Stop {
                break;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct TailLosingWriter {
    inner: Box<dyn FileWriter>,
    tail: Vec<u8>,
}

#[async_trait]
impl FileWriter for TailLosingWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.tail.extend_from_slice(&data);
        let whole = self.tail.len() / 64 * 64;
        let blocks: Vec<u8> = self.tail.drain(..whole).collect();
        self.inner.write(Bytes::from(blocks)).await
    }
    fn size(&self) -> u64 {
        self.inner.size() + self.tail.len() as u64
    }
    async fn close(self: Box<Self>) -> Result<()> {
        self.inner.close().await
    }
    async fn commit(mut self: Box<Self>) -> Result<()> {
        let tail = std::mem::take(&mut self.tail);
        self.inner.write(Bytes::from(tail)).await?;
        self.inner.commit().await
    }
    async fn cancel(self: Box<Self>) -> Result<()> {
        self.inner.cancel().await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.inner.rollback().await
    }
}

#[derive(Debug)]
struct KeepingWriter(Box<dyn FileWriter>);

#[async_trait]
impl FileWriter for KeepingWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.0.write(data).await
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn close(self: Box<Self>) -> Result<()> {
        self.0.close().await
    }
    async fn commit(self: Box<Self>) -> Result<()> {
        self.0.commit().await
    }
    async fn cancel(self: Box<Self>) -> Result<()> {
        self.0.cancel().await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.0.close().await
    }
}

async fn outcome(name: &str, driver: Driver) -> Outcome {
    let Some(c) = case(name) else {
        panic!("no case named {name}");
    };
    let opts = Options {
        short: true,
        seed: None,
    };
    run_case(c, driver, opts).await
}

async fn caught(bug: Bug, case_name: &str) {
    let reference = Driver::new(InMemoryDriver::new());
    let control = outcome(case_name, reference).await;
    assert!(
        matches!(control, Outcome::Passed),
        "{case_name} must pass on the reference driver: {control:?}"
    );
    let buggy = Driver::new(Buggy {
        inner: Driver::new(InMemoryDriver::new()),
        bug,
    });
    match outcome(case_name, buggy).await {
        Outcome::Failed(why) => eprintln!("{bug:?} caught by {case_name}: {why}"),
        other => panic!("{case_name} did not catch {bug:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_delete_is_caught() {
    caught(Bug::PrefixDelete, "delete_only_deletes_subpaths").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_delete_in_a_batch_is_caught() {
    caught(Bug::PrefixDelete, "delete_files").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_losing_the_tail_is_caught() {
    caught(Bug::AppendLosesTail, "continue_stream_append_small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_keeps_the_session_is_caught() {
    caught(Bug::RollbackKeeps, "rollback_small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_missing_the_last_page_is_caught() {
    caught(Bug::ListMissesLastPage, "list_large_directory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_out_of_order_is_caught() {
    caught(Bug::WalkOutOfOrder, "walk_full_order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_test_catches_a_driver_that_differs_from_the_reference() {
    let buggy = Driver::new(Buggy {
        inner: Driver::new(InMemoryDriver::new()),
        bug: Bug::StatOffByOne,
    });
    let r = outcome("model_matches_inmemory", buggy).await;
    assert!(
        matches!(r, Outcome::Failed(_)),
        "model test missed a wrong stat size: {r:?}"
    );
}

/// A failure names the seed of its data, and running the case again with
/// that seed gives the same data: the same paths in the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_names_its_seed_and_the_seed_replays_it() {
    let Some(c) = case("delete_only_deletes_subpaths") else {
        panic!("no such case");
    };
    let opts = Options {
        short: true,
        seed: Some(7),
    };
    let mut messages = Vec::new();
    for _ in 0..2 {
        let buggy = Driver::new(Buggy {
            inner: Driver::new(InMemoryDriver::new()),
            bug: Bug::PrefixDelete,
        });
        match run_case(c, buggy, opts).await {
            Outcome::Failed(why) => messages.push(why),
            other => panic!("the planted bug was not caught: {other:?}"),
        }
    }
    assert!(
        messages[0].contains("REGSTORE_TEST_SEED=7"),
        "{}",
        messages[0]
    );
    assert_eq!(messages[0], messages[1], "the same seed, the same data");
    // Unseeded runs pick their own seed and say which.
    let buggy = Driver::new(Buggy {
        inner: Driver::new(InMemoryDriver::new()),
        bug: Bug::PrefixDelete,
    });
    let unseeded = Options { seed: None, ..opts };
    match run_case(c, buggy, unseeded).await {
        Outcome::Failed(why) => assert!(why.contains("REGSTORE_TEST_SEED="), "{why}"),
        other => panic!("the planted bug was not caught: {other:?}"),
    }
}
