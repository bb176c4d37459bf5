//! `faults`: injects failures into the operations of the inner driver — for
//! tests, and for operators rehearsing what an outage does to a registry.
//!
//! ```yaml
//! middleware:
//!   storage:
//!     - name: faults
//!       options:
//!         probability: "0.05"        # chance per matching call (0 to 1) ...
//!         # nth: 10                  # ... or every 10th matching call
//!         seed: 42                   # same seed, same calls fail
//!         operations: write,commit,reader   # default: all
//!         kinds: error,shortread,writerfail # default: error (also timeout, latency, lostanswer)
//!         timeout: 2s                # how long a `timeout` hangs
//!         latency: 200ms             # how long a `latency` fault waits
//!         # lag: 2s                  # listings miss changes younger than 2 s
//! ```
//!
//! Operations are named as in the driver contract: `get_content`,
//! `put_content`, `reader`, `writer`, `write`, `close`, `commit`, `cancel`,
//! `rollback`, `stat`, `list`, `rename`, `delete`, `delete_files` (one draw per call,
//! however many paths), `walk`. Kinds:
//!
//! - `error`: the call fails at once with a backend error; the inner driver
//!   is not called, so nothing changes — except that a failed `close` or
//!   `commit` rolls the inner writer back, as the contract asks of a real
//!   one (a failed `rollback` leaves it as it was: unspecified).
//! - `timeout`: the call hangs for `timeout`, then fails the same way.
//! - `latency`: the call waits `latency`, then runs normally.
//! - `shortread` (`reader`, `get_content`): the read stream delivers part of
//!   its first chunk and then fails, as a cut connection does;
//!   `get_content` fails.
//! - `writerfail` (`write`): half of the data reaches the inner writer,
//!   then the write fails — a writer broken mid-stream.
//! - `lostanswer` (`put_content`, `put_content_if_absent`, `rename`,
//!   `delete`, `delete_files`): the inner driver does the call, then it
//!   fails anyway — a backend that did the work but died (or lost the
//!   connection) before it answered, so the caller cannot tell whether it
//!   happened.
//!
//! A fault picks at random (from the seed) among the configured kinds that
//! apply to the operation, and is `error` when none does. Every injected
//! failure's message starts with `injected`.
//!
//! `lag` (default `0`: off) is eventual consistency, independent of the
//! faults above (`lag` alone, with `probability` 0, is a valid config): for
//! `lag` after a change, `list`, `walk` and `stat` of a directory show the
//! storage as it was before it — a new file is missing, a deleted one still
//! listed — while `get_content`, `reader` and `stat` of a file answer the
//! current object, as on every object store regstore supports (details and
//! reasons in the `lag` module).

mod lag;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use regstore_core::{
    BuildFuture, ByteStream, Driver, Error, FileInfo, FileWriter, Middleware, MiddlewareFactory,
    Op, ParamKind, ParamSpec, Params, Result, StorageDriver, StoragePath, WalkVisitor, async_trait,
};

/// Registry name of the middleware.
pub const NAME: &str = "faults";

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "probability",
        ParamKind::String,
        "chance that a matching call fails, 0 to 1",
    )
    .default("0"),
    ParamSpec::new(
        "nth",
        ParamKind::Integer,
        "fail every nth matching call instead (0: use probability)",
    )
    .default("0"),
    ParamSpec::new("seed", ParamKind::Integer, "seed of the random choices").default("1"),
    ParamSpec::new(
        "operations",
        ParamKind::String,
        "comma-separated operations that may fail, or all",
    )
    .default("all"),
    ParamSpec::new(
        "kinds",
        ParamKind::String,
        "comma-separated: error, timeout, latency, shortread, writerfail, lostanswer",
    )
    .default("error"),
    ParamSpec::new(
        "timeout",
        ParamKind::Duration,
        "how long a timeout fault hangs",
    )
    .default("30s"),
    ParamSpec::new(
        "latency",
        ParamKind::Duration,
        "how long a latency fault waits",
    )
    .default("100ms"),
    ParamSpec::new(
        "lag",
        ParamKind::Duration,
        "list, walk and stat of a directory miss changes younger than this (eventual consistency; 0: off)",
    )
    .default("0"),
];

/// The middleware's factory, as [`register`] adds it.
pub static FACTORY: MiddlewareFactory = MiddlewareFactory {
    name: NAME,
    description: "Injects backend errors, timeouts, latency, short reads, writer failures and lagging listings (tests, outage rehearsals).",
    params: PARAMS,
    build,
};

/// Makes this middleware known by name to `regstore_core::wrap` (and so
/// to configs and `--driver`). Idempotent.
pub fn register() {
    regstore_core::register_middleware(&FACTORY);
}

fn build(inner: Driver, params: Params) -> BuildFuture {
    Box::pin(async move {
        let plan = Plan::from_params(&params)?;
        Ok(Box::new(Faults::new(inner, plan)) as Box<dyn StorageDriver>)
    })
}

/// What can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Fail at once.
    Error,
    /// Hang, then fail.
    Timeout,
    /// Wait, then run normally.
    Latency,
    /// A read stream cut after part of its data.
    ShortRead,
    /// A write that half reaches the inner writer, then fails.
    WriterFail,
    /// A change the inner driver makes, reported as a failure.
    LostAnswer,
}

impl Kind {
    const ALL: [(&'static str, Kind); 6] = [
        ("error", Kind::Error),
        ("timeout", Kind::Timeout),
        ("latency", Kind::Latency),
        ("shortread", Kind::ShortRead),
        ("writerfail", Kind::WriterFail),
        ("lostanswer", Kind::LostAnswer),
    ];

    fn applies_to(self, op: Op) -> bool {
        match self {
            Kind::Error | Kind::Timeout | Kind::Latency => true,
            Kind::ShortRead => matches!(op, Op::Reader | Op::GetContent),
            Kind::WriterFail => op == Op::Write,
            Kind::LostAnswer => matches!(
                op,
                Op::PutContent | Op::PutContentIfAbsent | Op::Rename | Op::Delete | Op::DeleteFiles
            ),
        }
    }
}

/// The checked options.
#[derive(Clone, Debug)]
pub struct Plan {
    probability: f64,
    nth: u64,
    seed: u64,
    operations: Vec<Op>,
    kinds: Vec<Kind>,
    timeout: Duration,
    latency: Duration,
    lag: Duration,
}

impl Plan {
    /// The plan the options describe.
    ///
    /// # Errors
    /// `Config` naming the option: a probability outside 0..=1, a negative
    /// `nth`, an unknown operation or kind.
    pub fn from_params(params: &Params) -> Result<Self> {
        let raw = params.require_string("probability")?;
        let probability: f64 = raw
            .trim()
            .parse()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| {
                Error::config(format!("probability {raw:?} must be a number from 0 to 1"))
            })?;
        let nth = params.require_integer("nth")?;
        let nth = u64::try_from(nth)
            .map_err(|_| Error::config(format!("nth {nth} must be 0 or more")))?;
        let seed = params.require_integer("seed")? as u64;
        let list = |name: &str| -> Vec<String> {
            params
                .string(name)
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let ops = list("operations");
        let operations = if ops.is_empty() || ops.iter().any(|o| o == "all") {
            Op::ALL.to_vec()
        } else {
            ops.iter()
                .map(|name| {
                    Op::ALL
                        .into_iter()
                        .filter(|op| *op != Op::RedirectUrl)
                        .find(|op| op.as_str() == name)
                        .ok_or_else(|| {
                            Error::config(format!(
                                "operations: unknown operation {name:?}; known: {}",
                                Op::ALL
                                    .iter()
                                    .filter(|op| **op != Op::RedirectUrl)
                                    .map(|op| op.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })
                })
                .collect::<Result<_>>()?
        };
        let mut kinds = Vec::new();
        for name in list("kinds") {
            let kind = Kind::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    Error::config(format!(
                        "kinds: unknown kind {name:?}; known: error, timeout, latency, shortread, writerfail, lostanswer"
                    ))
                })?;
            kinds.push(kind);
        }
        if kinds.is_empty() {
            kinds.push(Kind::Error);
        }
        Ok(Plan {
            probability,
            nth,
            seed,
            operations,
            kinds,
            timeout: params.require_duration("timeout")?,
            latency: params.require_duration("latency")?,
            lag: params.require_duration("lag")?,
        })
    }
}

/// Decides which calls fail; shared by the middleware and its writers.
#[derive(Debug)]
struct Decider {
    plan: Plan,
    calls: AtomicU64,
}

/// splitmix64: a well-mixed 64-bit value from a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Decider {
    /// The fault for this call of `op`, if one fires.
    fn draw(&self, op: Op) -> Option<Kind> {
        if !self.plan.operations.contains(&op) {
            return None;
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let fire = if self.plan.nth > 0 {
            n % self.plan.nth == self.plan.nth - 1
        } else {
            let r = mix(self.plan.seed ^ mix(2 * n)) >> 11;
            (r as f64 / (1u64 << 53) as f64) < self.plan.probability
        };
        if !fire {
            return None;
        }
        let usable: Vec<Kind> = self
            .plan
            .kinds
            .iter()
            .copied()
            .filter(|k| k.applies_to(op))
            .collect();
        if usable.is_empty() {
            return Some(Kind::Error);
        }
        let pick = mix(self.plan.seed ^ mix(2 * n + 1)) % usable.len() as u64;
        Some(usable[pick as usize])
    }

    /// Injects what `draw` chose for a call that has no special kind:
    /// `Err` to return, or `Ok` to go on (after any latency).
    async fn before(&self, op: Op, path: &(dyn fmt::Display + Sync)) -> Result<Option<Kind>> {
        match self.draw(op) {
            None => Ok(None),
            Some(Kind::Latency) => {
                tokio::time::sleep(self.plan.latency).await;
                Ok(None)
            }
            Some(Kind::Timeout) => {
                tokio::time::sleep(self.plan.timeout).await;
                Err(Error::backend(format!(
                    "injected timeout after {:?} in {} of {path}",
                    self.plan.timeout,
                    op.as_str()
                )))
            }
            Some(Kind::Error) => Err(injected("error", op, path)),
            Some(special) => Ok(Some(special)),
        }
    }
}

fn injected(what: &str, op: Op, path: &dyn fmt::Display) -> Error {
    Error::backend(format!("injected {what} in {} of {path}", op.as_str()))
}

/// The paths of a `delete_files` call, as fault messages name them.
struct Batch<'a>(&'a [StoragePath]);

impl fmt::Display for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("no paths"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} and {} more", rest.len()),
        }
    }
}

/// The middleware.
#[derive(Debug)]
pub struct Faults {
    inner: Driver,
    decider: Arc<Decider>,
    /// `None` without `lag`.
    lag: Option<Arc<lag::Lag>>,
}

impl Faults {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: Driver, plan: Plan) -> Self {
        let lag = (!plan.lag.is_zero()).then(|| Arc::new(lag::Lag::new(plan.lag)));
        Faults {
            inner,
            lag,
            decider: Arc::new(Decider {
                plan,
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// Runs `write`, a change of `path`, and tells the lag about it.
    async fn publish<T>(
        &self,
        path: &StoragePath,
        write: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let Some(lag) = &self.lag else {
            return write.await;
        };
        let prior = lag.prior(self.inner.backend(), path).await?;
        let done = write.await?;
        lag.changed(path, prior);
        Ok(done)
    }

    /// Runs `create` (a create-if-absent of `path`) and tells the lag
    /// about an object it stored.
    async fn created(
        &self,
        path: &StoragePath,
        create: impl Future<Output = Result<bool>> + Send,
    ) -> Result<bool> {
        let stored = create.await?;
        if let (true, Some(lag)) = (stored, &self.lag) {
            lag.changed(path, lag::Prior::ABSENT);
        }
        Ok(stored)
    }

    /// Runs the plain injection for `op`; any special kind is an error.
    async fn check(&self, op: Op, path: &(dyn fmt::Display + Sync)) -> Result<()> {
        match self.decider.before(op, path).await? {
            None => Ok(()),
            Some(_) => Err(injected("error", op, path)),
        }
    }

    /// Runs `call` (a change to the inner driver) under the injection for
    /// `op`; a `lostanswer` fault lets it run and then fails.
    async fn change<T>(
        &self,
        op: Op,
        path: &(dyn fmt::Display + Sync),
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.decider.before(op, path).await? {
            None => call.await,
            Some(Kind::LostAnswer) => {
                call.await?;
                Err(injected("lost answer", op, path))
            }
            Some(_) => Err(injected("error", op, path)),
        }
    }
}

#[async_trait]
impl Middleware for Faults {
    fn inner(&self) -> &Driver {
        &self.inner
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        match self.decider.before(Op::GetContent, path).await? {
            None => self.inner.backend().get_content(path).await,
            Some(_) => Err(injected("short read", Op::GetContent, path)),
        }
    }

    async fn put_content(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let call = self.publish(path, self.inner.backend().put_content(path, content));
        self.change(Op::PutContent, path, call).await
    }

    /// Faults as for `put_content` (the operation is named the same).
    async fn put_content_volatile(&self, path: &StoragePath, content: Bytes) -> Result<()> {
        let call = self.publish(
            path,
            self.inner.backend().put_content_volatile(path, content),
        );
        self.change(Op::PutContent, path, call).await
    }

    async fn put_content_if_absent(&self, path: &StoragePath, content: Bytes) -> Result<bool> {
        let call = self.created(
            path,
            self.inner.backend().put_content_if_absent(path, content),
        );
        self.change(Op::PutContentIfAbsent, path, call).await
    }

    /// Faults as for `put_content_if_absent` (the operation is named the
    /// same).
    async fn put_content_if_absent_volatile(
        &self,
        path: &StoragePath,
        content: Bytes,
    ) -> Result<bool> {
        let call = self.created(
            path,
            self.inner
                .backend()
                .put_content_if_absent_volatile(path, content),
        );
        self.change(Op::PutContentIfAbsent, path, call).await
    }

    async fn reader(&self, path: &StoragePath, offset: u64) -> Result<ByteStream> {
        let special = self.decider.before(Op::Reader, path).await?;
        let stream = self.inner.backend().reader(path, offset).await?;
        if special.is_none() {
            return Ok(stream);
        }
        let failure = injected("short read", Op::Reader, path);
        let cut = stream
            .take(1)
            .map(|chunk| chunk.map(|b| b.slice(..b.len() / 2)));
        Ok(Box::pin(
            cut.chain(futures_util::stream::iter([Err(failure)])),
        ))
    }

    async fn writer(&self, path: &StoragePath, append: bool) -> Result<Box<dyn FileWriter>> {
        self.check(Op::Writer, path).await?;
        // The committed object stays as it is until `commit`.
        let published = match &self.lag {
            Some(lag) => Some((
                Arc::clone(lag),
                lag.prior(self.inner.backend(), path).await?,
            )),
            None => None,
        };
        let inner = self.inner.backend().writer(path, append).await?;
        Ok(Box::new(FaultyWriter {
            inner,
            path: path.clone(),
            decider: Arc::clone(&self.decider),
            published,
        }))
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        self.check(Op::Stat, path).await?;
        match &self.lag {
            Some(lag) => lag.stat(self.inner.backend(), path).await,
            None => self.inner.backend().stat(path).await,
        }
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<StoragePath>> {
        self.check(Op::List, path).await?;
        match &self.lag {
            Some(lag) => lag.list(self.inner.backend(), path).await,
            None => self.inner.backend().list(path).await,
        }
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let call = async {
            let backend = self.inner.backend();
            let Some(lag) = &self.lag else {
                return backend.rename(from, to).await;
            };
            let priors = [
                (from.clone(), lag.prior(backend, from).await?),
                (to.clone(), lag.prior(backend, to).await?),
            ];
            backend.rename(from, to).await?;
            lag.changed_all(priors);
            Ok(())
        };
        self.change(Op::Rename, from, call).await
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let call = async {
            let backend = self.inner.backend();
            let Some(lag) = &self.lag else {
                return backend.delete(path).await;
            };
            let priors = lag.prior_tree(backend, path).await?;
            backend.delete(path).await?;
            lag.changed_all(priors);
            Ok(())
        };
        self.change(Op::Delete, path, call).await
    }

    /// One draw for the whole batch: an injected `error` deletes nothing,
    /// a `lostanswer` all of it.
    async fn delete_files(&self, paths: &[StoragePath]) -> Result<()> {
        let call = async {
            let backend = self.inner.backend();
            let Some(lag) = &self.lag else {
                return backend.delete_files(paths).await;
            };
            let mut priors = Vec::with_capacity(paths.len());
            for path in paths {
                priors.push((path.clone(), lag.prior(backend, path).await?));
            }
            backend.delete_files(paths).await?;
            lag.changed_all(priors);
            Ok(())
        };
        self.change(Op::DeleteFiles, &Batch(paths), call).await
    }

    async fn walk(
        &self,
        path: &StoragePath,
        start_after: Option<&StoragePath>,
        visitor: &mut WalkVisitor<'_>,
    ) -> Result<()> {
        self.check(Op::Walk, path).await?;
        match &self.lag {
            Some(lag) => {
                lag.walk(self.inner.backend(), path, start_after, visitor)
                    .await
            }
            None => self.inner.backend().walk(path, start_after, visitor).await,
        }
    }
}

/// A writer whose calls may fail; `writerfail` lets half of a write through.
#[derive(Debug)]
struct FaultyWriter {
    inner: Box<dyn FileWriter>,
    path: StoragePath,
    decider: Arc<Decider>,
    /// With `lag`: it, and what `path` held when the writer opened.
    published: Option<(Arc<lag::Lag>, lag::Prior)>,
}

impl FaultyWriter {
    /// `close`, or with `volatile` `close_volatile`, of the inner writer
    /// unless a fault comes first; then the inner writer is rolled back.
    async fn close_with(self: Box<Self>, volatile: bool) -> Result<()> {
        let failed = match self.decider.before(Op::Close, &self.path).await {
            Ok(None) if volatile => return self.inner.close_volatile().await,
            Ok(None) => return self.inner.close().await,
            Ok(Some(_)) => injected("error", Op::Close, &self.path),
            Err(e) => e,
        };
        let _ = self.inner.rollback().await;
        Err(failed)
    }
}

#[async_trait]
impl FileWriter for FaultyWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        match self.decider.before(Op::Write, &self.path).await? {
            None => self.inner.write(data).await,
            Some(_) => {
                self.inner.write(data.slice(..data.len() / 2)).await?;
                Err(injected("writer failure", Op::Write, &self.path))
            }
        }
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    /// A failed close takes itself back (the contract), whichever fault
    /// made it fail: the inner writer is rolled back before the error.
    async fn close(self: Box<Self>) -> Result<()> {
        self.close_with(false).await
    }

    /// Faults as for `close` (the operation is named the same).
    async fn close_volatile(self: Box<Self>) -> Result<()> {
        self.close_with(true).await
    }

    /// As `close`: a failed commit takes itself back.
    async fn commit(self: Box<Self>) -> Result<()> {
        let failed = match self.decider.before(Op::Commit, &self.path).await {
            Ok(None) => {
                self.inner.commit().await?;
                if let Some((lag, prior)) = self.published {
                    lag.changed(&self.path, prior);
                }
                return Ok(());
            }
            Ok(Some(_)) => injected("error", Op::Commit, &self.path),
            Err(e) => e,
        };
        let _ = self.inner.rollback().await;
        Err(failed)
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        match self.decider.before(Op::Cancel, &self.path).await? {
            None => self.inner.cancel().await,
            Some(_) => Err(injected("error", Op::Cancel, &self.path)),
        }
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        match self.decider.before(Op::Rollback, &self.path).await? {
            None => self.inner.rollback().await,
            Some(_) => Err(injected("error", Op::Rollback, &self.path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regstore_core::{RawParams, WalkControl};

    async fn faulty(options: &[(&str, &str)]) -> Result<Driver> {
        regstore_driver_inmemory::InMemoryDriver::new();
        regstore_driver_inmemory::register();
        let inner = regstore_core::create("inmemory", &Default::default()).await?;
        wrap(inner, options).await
    }

    /// The faults layer over a filesystem driver rooted in `root`: its
    /// writers put bytes in their file as they come, so a writer dropped
    /// without `close` or `rollback` leaves them there.
    async fn faulty_files(root: &std::path::Path, options: &[(&str, &str)]) -> Result<Driver> {
        regstore_driver_filesystem::register();
        let params: RawParams = [(
            "rootdirectory".to_owned(),
            root.to_string_lossy().into_owned().into(),
        )]
        .into_iter()
        .collect();
        let inner = regstore_core::create("filesystem", &params).await?;
        wrap(inner, options).await
    }

    async fn wrap(inner: Driver, options: &[(&str, &str)]) -> Result<Driver> {
        let raw: RawParams = options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        super::register();
        regstore_core::wrap(inner, NAME, &raw).await
    }

    #[tokio::test]
    async fn every_nth_matching_call_fails_and_changes_nothing() -> Result<()> {
        let d = faulty(&[("nth", "3"), ("operations", "put_content")]).await?;
        let mut outcomes = Vec::new();
        for i in 0..6 {
            let r = d.put_content(format!("/f{i}"), "x").await;
            if let Err(e) = &r {
                assert!(
                    e.to_string().contains("injected error in put_content"),
                    "{e}"
                );
            }
            outcomes.push(r.is_ok());
        }
        assert_eq!(outcomes, [true, true, false, true, true, false]);
        assert!(d.stat("/f2").await.is_err_and(|e| e.is_not_found()));
        // Other operations are untouched.
        for _ in 0..10 {
            d.stat("/f0").await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_batch_delete_fails_whole_and_deletes_nothing() -> Result<()> {
        let d = faulty(&[("nth", "2"), ("operations", "delete_files")]).await?;
        let paths = ["/a/1", "/a/2", "/b/3"];
        for p in paths {
            d.put_content(p, "x").await?;
        }
        d.delete_files(&paths[..1]).await?;
        let e = d.delete_files(&paths[1..]).await.expect_err("second call");
        assert!(
            e.to_string()
                .contains("injected error in delete_files of /a/2 and 1 more"),
            "{e}"
        );
        d.stat("/a/2").await?;
        d.stat("/b/3").await?;
        // `delete` is another operation: not drawn for.
        for p in &paths[1..] {
            d.delete(p).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_same_seed_fails_the_same_calls() -> Result<()> {
        let mut runs = Vec::new();
        for seed in ["7", "7", "8"] {
            let d = faulty(&[("probability", "0.3"), ("seed", seed)]).await?;
            d.put_content("/x", "x").await.ok();
            let mut pattern = Vec::new();
            for _ in 0..64 {
                pattern.push(d.stat("/x").await.is_ok());
            }
            runs.push(pattern);
        }
        assert_eq!(runs[0], runs[1]);
        assert_ne!(runs[0], runs[2]);
        let failed = runs[0].iter().filter(|ok| !**ok).count();
        assert!((5..=35).contains(&failed), "{failed} of 64 at p=0.3");
        Ok(())
    }

    #[tokio::test]
    async fn a_short_read_delivers_part_then_fails() -> Result<()> {
        let d = faulty(&[
            ("nth", "1"),
            ("operations", "reader"),
            ("kinds", "shortread"),
        ])
        .await?;
        d.put_content("/blob", vec![7u8; 1000]).await?;
        let mut stream = d.reader("/blob", 0).await?;
        let mut got = 0;
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => got += b.len(),
                Err(e) => failed = Some(e),
            }
        }
        assert!(got < 1000, "a short read delivered {got} bytes");
        let e = failed.expect("the stream ends in an error");
        assert!(e.to_string().contains("injected short read"), "{e}");
        Ok(())
    }

    #[tokio::test]
    async fn a_lost_answer_fails_a_change_that_was_made() -> Result<()> {
        let d = faulty(&[
            ("nth", "2"),
            ("operations", "put_content_if_absent,delete"),
            ("kinds", "lostanswer"),
        ])
        .await?;
        assert!(d.put_content_if_absent("/l", "a").await?);
        let e = d
            .put_content_if_absent("/m", "b")
            .await
            .expect_err("the second create loses its answer");
        assert!(e.to_string().contains("injected lost answer"), "{e}");
        assert_eq!(d.get_content("/m").await?, "b", "yet it was stored");
        d.delete("/l").await?;
        d.delete("/m").await.expect_err("the second delete too");
        assert!(d.get_content("/m").await.is_err_and(|e| e.is_not_found()));
        Ok(())
    }

    #[tokio::test]
    async fn a_writer_failure_lets_half_through() -> Result<()> {
        let d = faulty(&[
            ("nth", "2"),
            ("operations", "write"),
            ("kinds", "writerfail"),
        ])
        .await?;
        let mut w = d.writer("/w", false).await?;
        w.write(Bytes::from(vec![1u8; 100])).await?;
        let e = w
            .write(Bytes::from(vec![2u8; 100]))
            .await
            .expect_err("second write fails");
        assert!(e.to_string().contains("injected writer failure"), "{e}");
        assert_eq!(w.size(), 150, "half of the failed write went through");
        w.cancel().await?;
        Ok(())
    }

    /// The fault matrix found a close failed by a timeout that left the
    /// inner writer's bytes in place, so the upload went on from bytes its
    /// client was told had failed.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_close_or_commit_takes_itself_back_whatever_the_fault() -> Result<()> {
        for kind in ["error", "timeout"] {
            let root = tempfile::tempdir().map_err(Error::backend)?;
            let d = faulty_files(
                root.path(),
                &[
                    ("nth", "2"),
                    ("operations", "close,commit"),
                    ("kinds", kind),
                    ("timeout", "10ms"),
                ],
            )
            .await?;
            let mut w = d.writer("/w", false).await?;
            w.write(Bytes::from(vec![1u8; 100])).await?;
            w.close().await?;
            let mut w = d.writer("/w", true).await?;
            // More than a writer buffers: most of it is in the file.
            w.write(Bytes::from(vec![2u8; 3 << 20])).await?;
            let e = w.close().await.expect_err("the second close fails");
            assert!(e.to_string().contains("injected"), "{kind}: {e}");
            let mut w = d.writer("/w", true).await?;
            assert_eq!(w.size(), 100, "{kind}: the failed close kept its bytes");
            w.write(Bytes::from(vec![3u8; 10])).await?;
            w.commit().await?;
            let mut w = d.writer("/v", false).await?;
            w.write(Bytes::from(vec![4u8; 10])).await?;
            w.commit()
                .await
                .expect_err("the fourth call, a commit, fails");
            assert!(
                d.stat("/v").await.is_err_and(|e| e.is_not_found()),
                "{kind}"
            );
            assert_eq!(d.get_content("/w").await?.len(), 110, "{kind}");
        }
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_hangs_then_fails() -> Result<()> {
        let d = faulty(&[("nth", "1"), ("kinds", "timeout"), ("timeout", "5s")]).await?;
        let started = tokio::time::Instant::now();
        let e = d.stat("/x").await.expect_err("times out");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(e.to_string().contains("injected timeout"), "{e}");
        Ok(())
    }

    /// `lag` alone (probability 0), 300 ms, on a paused clock.
    async fn lagging() -> Result<Driver> {
        faulty(&[("lag", "300ms")]).await
    }

    const LAG: Duration = Duration::from_millis(300);

    async fn listed(d: &Driver, path: &str) -> Result<Vec<String>> {
        Ok(d.list(path)
            .await?
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect())
    }

    async fn walked(d: &Driver, path: &str) -> Result<Vec<(String, u64)>> {
        Ok(d.walk_all(path)
            .await?
            .into_iter()
            .map(|fi| (fi.path.as_str().to_owned(), fi.size))
            .collect())
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_file_is_missing_from_listings_for_the_lag_then_listed() -> Result<()> {
        let d = lagging().await?;
        d.put_content("/a/old", "old").await?;
        tokio::time::sleep(LAG).await;
        d.put_content("/a/new", "new").await?;
        d.put_content("/b/only", "b").await?;

        assert_eq!(listed(&d, "/a").await?, ["/a/old"]);
        assert_eq!(listed(&d, "/").await?, ["/a"]);
        assert!(d.list("/b").await.is_err_and(|e| e.is_not_found()));
        assert!(d.stat("/b").await.is_err_and(|e| e.is_not_found()));
        assert_eq!(
            walked(&d, "/").await?,
            [("/a".into(), 0), ("/a/old".into(), 3)]
        );
        assert!(d.walk_all("/b").await.is_err_and(|e| e.is_not_found()));
        // Reads, and a file's stat, are current.
        assert_eq!(d.get_content("/a/new").await?.as_ref(), b"new");
        assert_eq!(d.stat("/b/only").await?.size, 1);

        tokio::time::sleep(LAG).await;
        assert_eq!(listed(&d, "/a").await?, ["/a/new", "/a/old"]);
        assert_eq!(listed(&d, "/").await?, ["/a", "/b"]);
        assert!(d.stat("/b").await?.is_dir);
        assert_eq!(walked(&d, "/b").await?, [("/b/only".into(), 1)]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_file_stays_listed_for_the_lag_but_cannot_be_read() -> Result<()> {
        let d = lagging().await?;
        d.put_content("/d/x", "xx").await?;
        d.put_content("/d/y", "y").await?;
        d.put_content("/e", "e").await?;
        tokio::time::sleep(LAG).await;
        d.delete("/d").await?;
        d.delete_files(&["/e"]).await?;

        assert_eq!(listed(&d, "/").await?, ["/d", "/e"]);
        assert_eq!(listed(&d, "/d").await?, ["/d/x", "/d/y"]);
        assert!(d.stat("/d").await?.is_dir);
        assert_eq!(
            walked(&d, "/").await?,
            [
                ("/d".into(), 0),
                ("/d/x".into(), 2),
                ("/d/y".into(), 1),
                ("/e".into(), 1)
            ]
        );
        assert!(d.stat("/d/x").await.is_err_and(|e| e.is_not_found()));
        assert!(d.get_content("/d/x").await.is_err_and(|e| e.is_not_found()));

        tokio::time::sleep(LAG).await;
        assert!(d.list("/d").await.is_err_and(|e| e.is_not_found()));
        assert!(d.stat("/d").await.is_err_and(|e| e.is_not_found()));
        assert!(listed(&d, "/").await?.is_empty());
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_and_a_rename_lag_like_writes_and_deletes() -> Result<()> {
        let d = lagging().await?;
        let mut w = d.writer("/up/data", false).await?;
        w.write(Bytes::from_static(b"blob")).await?;
        w.commit().await?;
        assert!(d.list("/up").await.is_err_and(|e| e.is_not_found()));
        tokio::time::sleep(LAG).await;
        assert_eq!(listed(&d, "/up").await?, ["/up/data"]);

        d.rename("/up/data", "/blobs/b").await?;
        // The source is still listed, the destination not yet; both read
        // as they are.
        assert_eq!(listed(&d, "/").await?, ["/up"]);
        assert_eq!(d.get_content("/blobs/b").await?.as_ref(), b"blob");
        assert!(
            d.get_content("/up/data")
                .await
                .is_err_and(|e| e.is_not_found())
        );
        tokio::time::sleep(LAG).await;
        assert_eq!(listed(&d, "/").await?, ["/blobs"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_overwritten_file_stays_listed_and_reads_new() -> Result<()> {
        let d = lagging().await?;
        d.put_content("/o/f", "old").await?;
        tokio::time::sleep(LAG).await;
        d.put_content("/o/f", "newer").await?;
        assert_eq!(listed(&d, "/o").await?, ["/o/f"]);
        assert_eq!(d.stat("/o/f").await?.size, 5);
        assert_eq!(d.get_content("/o/f").await?.as_ref(), b"newer");
        // Written, deleted and written again within the lag: never listed
        // yet, as it was not there before the first write.
        d.put_content("/n", "1").await?;
        d.delete("/n").await?;
        d.put_content("/n", "2").await?;
        assert_eq!(listed(&d, "/").await?, ["/o"]);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_walk_resumes_after_start_after_and_skips_what_is_hidden() -> Result<()> {
        let d = lagging().await?;
        for p in ["/r/a/x", "/r/b/x", "/r/d/x"] {
            d.put_content(p, "x").await?;
        }
        tokio::time::sleep(LAG).await;
        d.put_content("/r/c/x", "new").await?;
        d.delete("/r/d").await?;
        let mut seen = Vec::new();
        d.walk("/r", Some("/r/a"), |fi| {
            seen.push(fi.path.as_str().to_owned());
            // Skipping a directory skips it, lingering or not.
            Ok(if fi.path.as_str() == "/r/b" {
                WalkControl::SkipDir
            } else {
                WalkControl::Continue
            })
        })
        .await?;
        // `/r/a/x` comes after `/r/a`; `/r/c` is new, `/r/d` deleted.
        assert_eq!(seen, ["/r/a/x", "/r/b", "/r/d", "/r/d/x"]);
        Ok(())
    }

    #[tokio::test]
    async fn lag_alone_injects_no_fault() -> Result<()> {
        let d = faulty(&[("lag", "1s"), ("probability", "0")]).await?;
        for i in 0..50 {
            d.put_content(format!("/f{i}"), "x").await?;
            d.stat(format!("/f{i}")).await?;
            d.get_content(format!("/f{i}")).await?;
        }
        assert!(
            listed(&d, "/").await?.is_empty(),
            "all 50 are younger than 1 s"
        );
        Ok(())
    }

    #[tokio::test]
    async fn bad_options_are_named() {
        for (k, v) in [
            ("probability", "1.5"),
            ("probability", "often"),
            ("nth", "-1"),
            ("operations", "stat,flush"),
            ("kinds", "error,explode"),
            ("lag", "soon"),
        ] {
            let e = faulty(&[(k, v)]).await.expect_err(v);
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }
}
