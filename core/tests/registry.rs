//! The factory registries as a driver or middleware author uses them, and
//! the driver wrapper's gates: `maxthreads`, and `children_stamp` asked and
//! counted only where the driver claims `Capabilities::children_stamps`,
//! never behind a middleware.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use regstore_core::{
    BuildFuture, ByteStream, Capabilities, DirStamp, Driver, DriverFactory, Error, FileInfo,
    FileWriter, Middleware, MiddlewareFactory, Op, ParamKind, ParamSpec, Params, RawParams, Result,
    StorageDriver, StoragePath, async_trait, create, wrap,
};

/// A driver that stores nothing and answers every read with its label;
/// every directory has the same stamp, whether it claims stamps or not.
#[derive(Debug, Default)]
struct Echo {
    label: String,
    limit: Option<usize>,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    claims_stamps: bool,
    stamps_asked: Arc<AtomicUsize>,
}

#[async_trait]
impl StorageDriver for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_children_stamps(self.claims_stamps)
    }
    fn concurrency_limit(&self) -> Option<usize> {
        self.limit
    }
    async fn children_stamp(&self, _: &StoragePath) -> Result<Option<DirStamp>> {
        self.stamps_asked.fetch_add(1, Ordering::SeqCst);
        Ok(Some(DirStamp::new([1, 2, 3, 4])))
    }
    async fn get_content(&self, p: &StoragePath) -> Result<Bytes> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        if p.as_str() == "/missing" {
            return Err(Error::not_found(p));
        }
        Ok(Bytes::from(self.label.clone()))
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

const ECHO_PARAMS: &[ParamSpec] = &[
    ParamSpec::new("label", ParamKind::String, "what reads return").required(),
    ParamSpec::new("maxthreads", ParamKind::Integer, "concurrency limit"),
];

fn build_echo(p: Params) -> BuildFuture {
    Box::pin(async move {
        Ok(Box::new(Echo {
            label: p.require_string("label")?.to_owned(),
            limit: p.integer("maxthreads").map(|n| n as usize),
            ..Echo::default()
        }) as Box<dyn StorageDriver>)
    })
}

static ECHO: DriverFactory = DriverFactory {
    name: "echo",
    description: "test driver",
    params: ECHO_PARAMS,
    build: build_echo,
};

/// Middleware that appends its suffix to what the inner driver returns.
#[derive(Debug)]
struct Suffix {
    inner: Driver,
    suffix: String,
}

#[async_trait]
impl StorageDriver for Suffix {
    fn name(&self) -> &'static str {
        "suffix"
    }
    async fn get_content(&self, p: &StoragePath) -> Result<Bytes> {
        let mut v = self.inner.get_content(p).await?.to_vec();
        v.extend_from_slice(self.suffix.as_bytes());
        Ok(v.into())
    }
    async fn put_content(&self, p: &StoragePath, c: Bytes) -> Result<()> {
        self.inner.put_content(p, c).await
    }
    async fn reader(&self, p: &StoragePath, o: u64) -> Result<ByteStream> {
        self.inner.reader(p, o).await
    }
    async fn writer(&self, p: &StoragePath, a: bool) -> Result<Box<dyn FileWriter>> {
        Ok(Box::new(self.inner.writer(p, a).await?))
    }
    async fn stat(&self, p: &StoragePath) -> Result<FileInfo> {
        self.inner.stat(p).await
    }
    async fn list(&self, p: &StoragePath) -> Result<Vec<StoragePath>> {
        self.inner.list(p).await
    }
    async fn rename(&self, a: &StoragePath, b: &StoragePath) -> Result<()> {
        self.inner.rename(a, b).await
    }
    async fn delete(&self, p: &StoragePath) -> Result<()> {
        self.inner.delete(p).await
    }
}

fn build_suffix(inner: Driver, p: Params) -> BuildFuture {
    Box::pin(async move {
        Ok(Box::new(Suffix {
            inner,
            suffix: p.require_string("suffix")?.to_owned(),
        }) as Box<dyn StorageDriver>)
    })
}

static SUFFIX: MiddlewareFactory = MiddlewareFactory {
    name: "suffix",
    description: "test middleware",
    params: &[ParamSpec::new("suffix", ParamKind::String, "appended").required()],
    build: build_suffix,
};

/// Registers this file's driver and middleware (every test calls it first).
fn register() {
    regstore_core::register_driver(&ECHO);
    regstore_core::register_middleware(&SUFFIX);
}

fn raw(pairs: &[&str]) -> RawParams {
    regstore_core::params::parse_pairs(pairs).unwrap_or_default()
}

#[tokio::test]
async fn builds_by_name_and_wraps_in_the_configured_order() {
    register();
    let d = create("echo", &raw(&["label=x"])).await.unwrap();
    let d = wrap(d, "suffix", &raw(&["suffix=1"])).await.unwrap();
    let d = wrap(d, "suffix", &raw(&["suffix=2"])).await.unwrap();
    assert_eq!(d.name(), "suffix");
    assert_eq!(&d.get_content("/f").await.unwrap()[..], b"x12");
    // An error from the innermost driver keeps its name through middleware.
    let e = d.get_content("/missing").await.unwrap_err();
    assert_eq!(e.to_string(), "echo: path not found: /missing");
}

#[tokio::test]
async fn unknown_names_list_what_is_known() {
    register();
    let e = create("ecko", &RawParams::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"unknown storage driver "ecko" (did you mean "echo"? known: "#),
        "{e}"
    );
    let d = create("echo", &raw(&["label=x"])).await.unwrap();
    let e = wrap(d, "sufix", &RawParams::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"unknown storage middleware "sufix" (did you mean "suffix"?"#),
        "{e}"
    );
}

#[tokio::test]
async fn missing_and_unknown_parameters_are_refused_before_building() {
    register();
    let e = create("echo", &RawParams::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(r#"echo: parameter "label" is required"#),
        "{e}"
    );
    let e = create("echo", &raw(&["label=x", "lable=y"]))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"echo: unknown parameter "lable" (did you mean "label"?)"#
    );
}

#[tokio::test]
async fn the_wrapper_validates_counts_and_names() {
    register();
    let d = create("echo", &raw(&["label=x"])).await.unwrap();
    let e = d.get_content("no-slash").await.unwrap_err();
    assert!(matches!(e, Error::InvalidPath { .. }));
    assert!(
        e.to_string().starts_with("echo: invalid path \"no-slash\""),
        "{e}"
    );
    let e = d.put_content("/", Bytes::new()).await.unwrap_err();
    assert!(e.to_string().contains("the root is a directory"), "{e}");
    d.get_content("/a").await.unwrap();
    let _ = d.get_content("/missing").await;
    let stats = d.metrics().get(Op::GetContent);
    // Invalid paths never reach the driver and are not counted.
    assert_eq!((stats.calls, stats.errors), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxthreads_bounds_concurrent_calls() {
    register();
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let d = Driver::new(Echo {
        label: "x".into(),
        limit: Some(3),
        active,
        peak: Arc::clone(&peak),
        ..Echo::default()
    });
    let calls = (0..24).map(|_| {
        let d = d.clone();
        tokio::spawn(async move { d.get_content("/a").await })
    });
    for c in futures_util::future::join_all(calls).await {
        c.unwrap().unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "at most 3 calls at once, saw {peak}");
    assert!(
        peak >= 2,
        "calls should overlap up to the limit, saw {peak}"
    );
}

/// A middleware that changes nothing.
#[derive(Debug)]
struct Pass(Driver);

impl Middleware for Pass {
    fn inner(&self) -> &Driver {
        &self.0
    }
}

/// An [`Echo`] that claims stamps or not; the count of stamps it was asked.
fn stamper(claims: bool) -> (Driver, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let d = Driver::new(Echo {
        claims_stamps: claims,
        stamps_asked: Arc::clone(&asked),
        ..Echo::default()
    });
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
