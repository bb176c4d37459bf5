//! `children_stamp` through the wrapper: asked and counted only where the
//! driver claims `Capabilities::children_stamps`, never behind a middleware.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use regstore_core::{
    ByteStream, Capabilities, DirStamp, Driver, Error, FileInfo, FileWriter, Middleware, Op,
    Result, StorageDriver, StoragePath, async_trait,
};

/// A driver whose every directory has the same stamp; counts the calls.
#[derive(Debug)]
struct Stamper {
    claims: bool,
    asked: Arc<AtomicUsize>,
}

#[async_trait]
impl StorageDriver for Stamper {
    fn name(&self) -> &'static str {
        "stamper"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_children_stamps(self.claims)
    }
    async fn children_stamp(&self, _: &StoragePath) -> Result<Option<DirStamp>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(Some(DirStamp::new([1, 2, 3, 4])))
    }
    async fn get_content(&self, p: &StoragePath) -> Result<Bytes> {
        Err(Error::not_found(p))
    }
    async fn put_content(&self, _: &StoragePath, _: Bytes) -> Result<()> {
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
        Err(Error::not_found(p))
    }
}

/// A middleware that changes nothing.
#[derive(Debug)]
struct Pass(Driver);

impl Middleware for Pass {
    fn inner(&self) -> &Driver {
        &self.0
    }
}

fn stamper(claims: bool) -> (Driver, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let d = Driver::from_box(Box::new(Stamper {
        claims,
        asked: asked.clone(),
    }));
    (d, asked)
}

#[tokio::test]
async fn a_driver_that_claims_stamps_is_asked_and_counted() {
    let (d, asked) = stamper(true);
    assert_eq!(
        d.children_stamp("/a").await.expect("stamp"),
        Some(DirStamp::new([1, 2, 3, 4]))
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(d.metrics().get(Op::Stat).calls, 1);
}

#[tokio::test]
async fn a_driver_that_does_not_claim_stamps_is_neither_asked_nor_counted() {
    let (d, asked) = stamper(false);
    assert_eq!(d.children_stamp("/a").await.expect("stamp"), None);
    assert_eq!(asked.load(Ordering::SeqCst), 0);
    assert_eq!(d.metrics().get(Op::Stat).calls, 0);
    let err = d.children_stamp("no-slash").await.expect_err("bad path");
    assert!(
        err.to_string().contains("no-slash"),
        "an invalid path is still rejected, naming it: {err}"
    );
}

#[tokio::test]
async fn a_middleware_never_claims_stamps() {
    let (inner, asked) = stamper(true);
    let d = Driver::from_box(Box::new(Pass(inner)));
    assert!(!d.capabilities().children_stamps);
    assert_eq!(d.children_stamp("/a").await.expect("stamp"), None);
    assert_eq!(asked.load(Ordering::SeqCst), 0);
    assert_eq!(d.metrics().get(Op::Stat).calls, 0);
}
