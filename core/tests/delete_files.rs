//! `delete_files` through the wrapper, on a driver that keeps the default.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use regstore_core::{
    ByteStream, Driver, Error, ErrorKind, FileInfo, FileWriter, Op, Result, StorageDriver,
    StoragePath, async_trait,
};

#[derive(Debug, Default)]
struct State {
    names: Mutex<BTreeSet<String>>,
    active: AtomicUsize,
    peak: AtomicUsize,
}

impl State {
    fn names(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A set of file names; `delete` takes a while, counts how many run at
/// once, and fails for `/broken`.
#[derive(Debug, Default)]
struct Files(Arc<State>);

#[async_trait]
impl StorageDriver for Files {
    fn name(&self) -> &'static str {
        "files"
    }
    // One slot: the default's inner deletes must not need more.
    fn concurrency_limit(&self) -> Option<usize> {
        Some(1)
    }
    async fn get_content(&self, p: &StoragePath) -> Result<Bytes> {
        Err(Error::not_found(p))
    }
    async fn put_content(&self, p: &StoragePath, _: Bytes) -> Result<()> {
        self.0.names().insert(p.as_str().to_owned());
        Ok(())
    }
    async fn reader(&self, p: &StoragePath, _: u64) -> Result<ByteStream> {
        Err(Error::not_found(p))
    }
    async fn writer(&self, _: &StoragePath, _: bool) -> Result<Box<dyn FileWriter>> {
        Err(Error::unsupported("writers"))
    }
    async fn stat(&self, p: &StoragePath) -> Result<FileInfo> {
        Err(Error::not_found(p))
    }
    async fn list(&self, _: &StoragePath) -> Result<Vec<StoragePath>> {
        Ok(Vec::new())
    }
    async fn rename(&self, a: &StoragePath, _: &StoragePath) -> Result<()> {
        Err(Error::not_found(a))
    }
    async fn delete(&self, p: &StoragePath) -> Result<()> {
        let now = self.0.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        if p.as_str() == "/broken" {
            return Err(Error::backend("disk on fire"));
        }
        if self.0.names().remove(p.as_str()) {
            Ok(())
        } else {
            Err(Error::not_found(p))
        }
    }
}

async fn driver_with(names: &[String]) -> Result<(Driver, Arc<State>)> {
    let state = Arc::new(State::default());
    let d = Driver::new(Files(Arc::clone(&state)));
    for n in names {
        d.put_content(n, "").await?;
    }
    Ok((d, state))
}

#[tokio::test]
async fn the_default_deletes_16_at_once_in_one_slot_and_ignores_missing() -> Result<()> {
    let present: Vec<String> = (0..40).map(|i| format!("/d{}/f{i}", i % 3)).collect();
    let (d, state) = driver_with(&present).await?;
    d.put_content("/d0/keep", "").await?;
    let mut batch = present.clone();
    batch.push("/d0/missing".into());
    tokio::time::timeout(Duration::from_secs(10), d.delete_files(&batch))
        .await
        .map_err(|_| {
            Error::backend("delete_files hung: a slot held by the batch was waited for")
        })??;
    assert_eq!(
        state.names().iter().collect::<Vec<_>>(),
        ["/d0/keep"],
        "only the file outside the batch is left"
    );
    let peak = state.peak.load(Ordering::SeqCst);
    assert!((2..=16).contains(&peak), "{peak} deletes ran at once");
    assert_eq!(d.metrics().get(Op::DeleteFiles).calls, 1);
    assert_eq!(
        d.metrics().get(Op::Delete).calls,
        0,
        "one operation, however many paths"
    );
    // Nothing is fine too.
    d.delete_files::<&str>(&[]).await?;
    Ok(())
}

#[tokio::test]
async fn a_failure_is_returned_named() -> Result<()> {
    let (d, _) = driver_with(&["/a".into()]).await?;
    let e = d
        .delete_files(&["/a", "/broken"])
        .await
        .expect_err("the broken path fails");
    assert_eq!(e.kind(), ErrorKind::Backend);
    let text = e.to_string();
    assert!(
        text.contains("files") && text.contains("disk on fire"),
        "{text}"
    );
    assert_eq!(d.metrics().get(Op::DeleteFiles).errors, 1);
    Ok(())
}

#[tokio::test]
async fn an_invalid_path_deletes_nothing() -> Result<()> {
    let (d, state) = driver_with(&["/a".into(), "/b".into()]).await?;
    for bad in ["/", "relative", "/a//b"] {
        let e = d
            .delete_files(&["/a", bad, "/b"])
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidPath, "{bad}: {e}");
        assert!(e.to_string().contains("files"), "{e}");
    }
    assert_eq!(state.names().len(), 2);
    Ok(())
}
