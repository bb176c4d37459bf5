//! regstore-testsuite: the one conformance suite every driver passes.
//!
//! It holds every case of distribution's driver suite (same sizes, same
//! assertions), walk cases distribution never ran across drivers, a
//! model-based property test against the `inmemory` reference, and the
//! harness that turns the cases into named tests.
//!
//! A driver crate gets the whole suite with a test target
//! (`[[test]] name = "conformance" harness = false`) whose file is one line:
//!
//! ```ignore
//! regstore_testsuite::conformance_main!(|| async { Ok(Subject::new(make_driver().await?)) });
//! ```
//!
//! Every case is its own test (`cargo nextest run` lists them by name). A
//! case that needs a capability the driver does not claim is listed as
//! ignored. Each case gets a fresh driver from the factory, and after each
//! case — pass or fail — the paths it created are deleted and `list("/")`
//! must be empty, as distribution enforces.
//!
//! Environment:
//! - `REGSTORE_TEST_SHORT=1` shrinks the largest sizes (5 GiB stream,
//!   128 MiB concurrent reads, 32 × 32 MiB writers) for slow emulators;
//!   CI never sets it for local drivers.
//! - `REGSTORE_REQUIRE_BACKENDS=1` (CI) makes a factory that cannot reach its
//!   backend fail every case instead of ignoring them.
//! - `REGSTORE_TEST_SEED=<n>` seeds the cases' random data; a failing case
//!   prints the seed it ran with, so the same data can be replayed.

#![warn(missing_docs)]

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use regstore_core::{Driver, Error, ErrorKind};

mod cases;
pub mod data;
mod model;
mod walk_cases;

pub use data::Rng;

/// How big the big cases are.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Shrink the largest sizes (see the crate docs).
    pub short: bool,
    /// Seed of the cases' random data (paths, contents, offsets); `None`:
    /// a fresh one per case. A failure names the seed it ran with.
    pub seed: Option<u64>,
}

impl Options {
    /// Options from `REGSTORE_TEST_SHORT` and `REGSTORE_TEST_SEED` (a
    /// number; anything else is ignored with a warning).
    pub fn from_env() -> Self {
        let seed = std::env::var("REGSTORE_TEST_SEED").ok().and_then(|s| {
            let parsed = s.trim().parse::<u64>().ok();
            if parsed.is_none() {
                eprintln!("REGSTORE_TEST_SEED={s:?} is not a number; ignored");
            }
            parsed
        });
        Options {
            short: env_flag("REGSTORE_TEST_SHORT"),
            seed,
        }
    }
}

/// True when the environment variable is set to `1`, `true` or `yes`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// A driver under test, and whatever must live as long as it (a temporary
/// directory, a server handle).
pub struct Subject {
    /// The driver, in its wrapper.
    pub driver: Driver,
    /// Why this backend runs the shrunken sizes, if it must.
    pub reduced_sizes: Option<&'static str>,
    _keep: Option<Box<dyn Any + Send + Sync>>,
}

impl Subject {
    /// A subject that needs nothing kept alive.
    pub fn new(driver: Driver) -> Self {
        Subject {
            driver,
            reduced_sizes: None,
            _keep: None,
        }
    }

    /// Runs the shrunken sizes (as `REGSTORE_TEST_SHORT=1` does) because
    /// the backend cannot hold the full ones; `why` says which limit, and is
    /// printed with the results.
    pub fn reduced_sizes(mut self, why: &'static str) -> Self {
        self.reduced_sizes = Some(why);
        self
    }

    /// Keeps `guard` alive until the case has finished and cleaned up.
    pub fn keep(mut self, guard: impl Any + Send + Sync) -> Self {
        self._keep = Some(Box::new(guard));
        self
    }
}

/// Why a case failed: a message with the location of the failed check.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(format!("unexpected error: {e}"))
    }
}

/// What every case returns.
pub type CaseResult = Result<(), Failure>;

/// Fails the case unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+))));
        }
    };
}

/// Fails the case unless `left == right` (values shown with `Debug`).
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::ensure_eq!($left, $right, "{} == {}", stringify!($left), stringify!($right))
    };
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::Failure(format!(
                        "{}:{}: {}\n  left: {:?}\n right: {:?}",
                        file!(), line!(), format!($($fmt)+), l, r
                    )));
                }
            }
        }
    };
}

/// Fails the case unless `got` equals `want`, describing a mismatch by
/// lengths and first differing offset rather than dumping megabytes.
#[macro_export]
macro_rules! ensure_bytes {
    ($got:expr, $want:expr, $($fmt:tt)+) => {
        if let Err(why) = $crate::compare_bytes(&$got, &$want) {
            return Err($crate::Failure(format!("{}:{}: {}: {}", file!(), line!(), format!($($fmt)+), why)));
        }
    };
}

/// `Ok` when equal, else where and how the two differ.
pub fn compare_bytes(got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(format!(
        "got {} bytes, want {} bytes, first difference at offset {at}",
        got.len(),
        want.len()
    ))
}

/// Fails unless `result` is an error of `kind` (see [`Error::kind`]) whose
/// message names the driver.
pub fn expect_error<T: fmt::Debug>(
    result: regstore_core::Result<T>,
    kind: ErrorKind,
    driver: &str,
    what: &str,
) -> CaseResult {
    match result {
        Ok(v) => Err(Failure(format!(
            "{what}: expected a {kind} error, got Ok({v:?})"
        ))),
        Err(e) if e.kind() != kind => Err(Failure(format!(
            "{what}: expected a {kind} error, got {} error: {e}",
            e.kind()
        ))),
        Err(e) if !e.to_string().contains(driver) => Err(Failure(format!(
            "{what}: error does not name the driver {driver:?}: {e}"
        ))),
        Err(_) => Ok(()),
    }
}

/// The context a case runs in: the driver, sizes, random data, and the
/// paths to clean up afterwards.
pub struct Ctx {
    /// The driver under test.
    pub driver: Driver,
    /// Sizes.
    pub opts: Options,
    /// The seed `rng` started from.
    seed: u64,
    rng: Mutex<Rng>,
    created: Mutex<BTreeSet<String>>,
}

impl Ctx {
    fn new(driver: Driver, opts: Options) -> Self {
        let seed = opts.seed.unwrap_or_else(|| Rng::from_entropy().next_u64());
        Ctx {
            driver,
            opts,
            seed,
            rng: Mutex::new(Rng::new(seed)),
            created: Mutex::new(BTreeSet::new()),
        }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Name of the driver, as errors must carry it.
    pub fn name(&self) -> &'static str {
        self.driver.name()
    }

    /// A random absolute path of `len` characters, deleted after the case.
    pub fn path(&self, len: usize) -> String {
        let p = self.rng().path(len);
        self.track(&p);
        p
    }

    /// A random file name of `len` characters.
    pub fn filename(&self, len: usize) -> String {
        self.rng().filename(len)
    }

    /// `len` random bytes.
    pub fn contents(&self, len: usize) -> bytes::Bytes {
        self.rng().bytes(len)
    }

    /// A fresh random generator (for streams produced in another task).
    pub fn fork_rng(&self) -> Rng {
        Rng::new(self.rng().next_u64())
    }

    /// Deletes the first segment of `path` after the case.
    pub fn track(&self, path: &str) {
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(data::first_part(path));
    }

    async fn clean_up(&self) -> CaseResult {
        let created: Vec<String> =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        for p in created {
            if p == "/" {
                continue;
            }
            match self.driver.delete(&p).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() || e.kind() == ErrorKind::InvalidPath => {}
                Err(e) => return Err(Failure(format!("cleaning up {p}: {e}"))),
            }
        }
        let left = self.driver.list("/").await?;
        if !left.is_empty() {
            return Err(Failure(format!(
                "the driver did not clean up: list(\"/\") still shows {left:?}"
            )));
        }
        Ok(())
    }
}

/// A capability a case needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Runs on every driver.
    Nothing,
    /// Runs when the driver claims `redirect`.
    Redirect,
    /// Runs when the driver claims `create_if_absent`.
    CreateIfAbsent,
    /// Runs when the driver claims `exclusive_writers`.
    ExclusiveWriters,
    /// Runs when the driver counts its backend requests
    /// ([`Driver::backend_requests`] is `Some`).
    CountsRequests,
}

impl Need {
    /// Whether `driver` can run the case.
    pub fn met_by(self, driver: &Driver) -> bool {
        match self {
            Need::Nothing => true,
            Need::Redirect => driver.capabilities().redirect,
            Need::CreateIfAbsent => driver.capabilities().create_if_absent,
            Need::ExclusiveWriters => driver.capabilities().exclusive_writers,
            Need::CountsRequests => driver.backend_requests().is_some(),
        }
    }

    /// Why a driver that does not meet the need skips the case.
    pub fn unmet(self) -> &'static str {
        match self {
            Need::Nothing => "",
            Need::Redirect => "the driver does not claim redirect",
            Need::CreateIfAbsent => "the driver does not claim create_if_absent",
            Need::ExclusiveWriters => "the driver does not claim exclusive_writers",
            Need::CountsRequests => "the driver does not count backend requests",
        }
    }
}

/// One named case of the suite.
pub struct Case {
    /// Test name, e.g. `delete_only_deletes_subpaths`.
    pub name: &'static str,
    /// Capability it needs.
    pub needs: Need,
    /// The case.
    pub run: for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Every case, in the order distribution lists them, walk and model cases
/// last.
pub fn all_cases() -> impl Iterator<Item = &'static Case> {
    cases::CASES
        .iter()
        .chain(walk_cases::CASES)
        .chain(model::CASES)
}

/// The case called `name`.
pub fn case(name: &str) -> Option<&'static Case> {
    all_cases().find(|c| c.name == name)
}

/// Result of running one case.
#[derive(Debug)]
pub enum Outcome {
    /// Every check held and the store is empty again.
    Passed,
    /// A check failed (or cleaning up did).
    Failed(String),
    /// The driver does not claim what the case needs.
    Skipped(&'static str),
}

/// Runs `case` against `driver`, then deletes what it created and checks that
/// `list("/")` is empty.
pub async fn run_case(case: &Case, driver: Driver, opts: Options) -> Outcome {
    if !case.needs.met_by(&driver) {
        return Outcome::Skipped(case.needs.unmet());
    }
    let cx = Ctx::new(driver, opts);
    let result = (case.run)(&cx).await;
    let cleaned = cx.clean_up().await;
    let seed = cx.seed;
    let replay = |f: Failure| {
        Outcome::Failed(format!(
            "{} [case data seed {seed}: REGSTORE_TEST_SEED={seed} replays it]",
            f.0
        ))
    };
    match (result, cleaned) {
        (Ok(()), Ok(())) => Outcome::Passed,
        (Err(f), _) => replay(f),
        (Ok(()), Err(f)) => replay(f),
    }
}

/// Runs the whole suite as a libtest-compatible test binary (works with
/// `cargo test` and `cargo nextest`); see [`conformance_main!`].
pub fn run_main<F, Fut>(factory: F) -> !
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Subject, String>> + Send + 'static,
{
    let args = libtest_mimic::Arguments::from_args();
    let mut opts = Options::from_env();
    let require = env_flag("REGSTORE_REQUIRE_BACKENDS");
    let factory = Arc::new(factory);

    // One probe to learn what the driver claims (and whether the backend
    // is there).
    let probe = runtime().and_then(|rt| rt.block_on(async { factory().await }));
    let (probe_driver, unreachable) = match &probe {
        Ok(s) => (Some(s.driver.clone()), None),
        Err(e) => (None, Some(e.clone())),
    };
    if let Ok(Subject {
        reduced_sizes: Some(why),
        ..
    }) = &probe
    {
        eprintln!("conformance: reduced sizes for this backend: {why}");
        opts.short = true;
    }
    drop(probe);

    let trials = all_cases()
        .map(|case| {
            let factory = Arc::clone(&factory);
            let unreachable = unreachable.clone();
            let unmet = probe_driver
                .as_ref()
                .is_some_and(|d| !case.needs.met_by(d));
            let ignored = unmet || (unreachable.is_some() && !require);
            libtest_mimic::Trial::test(case.name, move || {
                if let Some(why) = unreachable {
                    return Err(format!(
                        "backend not reachable ({why}); REGSTORE_REQUIRE_BACKENDS=1 makes this a failure"
                    )
                    .into());
                }
                let rt = runtime()?;
                rt.block_on(async {
                    let subject = factory().await?;
                    match run_case(case, subject.driver.clone(), opts).await {
                        Outcome::Passed => Ok(()),
                        Outcome::Skipped(why) => Err(format!("skipped: {why}")),
                        Outcome::Failed(why) => Err(why),
                    }
                })
                .map_err(Into::into)
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    drop(probe_driver);
    libtest_mimic::run(&args, trials).exit()
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))
}

/// Defines `main` of a `harness = false` test target that runs the whole
/// suite against the drivers the factory makes (one per case).
///
/// The factory is `Fn() -> impl Future<Output = Result<Subject, String>>`.
#[macro_export]
macro_rules! conformance_main {
    ($factory:expr) => {
        fn main() {
            $crate::run_main($factory)
        }
    };
}
