//! Model-based property test: random operation sequences run against the
//! driver under test and against `inmemory` (the reference semantics) must
//! give the same observable results.
//!
//! Paths come from a small fixed set so that sequences collide often: files
//! live at `/dN/fM` and `/dN/e/fM`, so directories (`/dN`, `/dN/e`) are never
//! files — storing a file where a directory is, is implementation defined.
//! Some names extend others (`f0`/`f01`, `d0`/`d0-x`, where `d0-x` also sorts
//! before `d0/…` as a plain string): whole-segment rules
//! such as "deleting `/a` never touches `/ab`" get exercised.
//! Modification times are not compared (only sizes, kinds and contents).

use std::fmt::Write as _;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use regstore_core::{Driver, Result, WalkControl};
use regstore_driver_inmemory::InMemoryDriver;

use crate::cases::{read_all, table};
use crate::{CaseResult, Ctx, Failure, Need};

table![model_matches_inmemory];

const FILES: &[&str] = &["/d0/f0", "/d0/f01", "/d0/e/f0", "/d0-x/f0", "/d1/f0"];
const DIRS: &[&str] = &["/", "/d0", "/d0/e", "/d0-x", "/d1"];

#[derive(Clone, Debug)]
enum End {
    Close,
    Commit,
    Cancel,
}

#[derive(Clone, Copy, Debug)]
enum Offset {
    Zero,
    Half,
    End,
    PastEnd,
}

#[derive(Clone, Debug)]
enum Op {
    Put(&'static str, usize),
    Get(&'static str),
    Read(&'static str, Offset),
    Write {
        path: &'static str,
        append: bool,
        chunks: Vec<usize>,
        end: End,
    },
    Stat(&'static str),
    List(&'static str),
    Walk(&'static str, Option<&'static str>),
    Rename(&'static str, &'static str),
    Delete(&'static str),
}

fn any_path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        proptest::sample::select(FILES),
        proptest::sample::select(DIRS)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let file = || proptest::sample::select(FILES);
    prop_oneof![
        3 => (file(), 0usize..300).prop_map(|(p, n)| Op::Put(p, n)),
        2 => file().prop_map(Op::Get),
        2 => (file(), prop_oneof![Just(Offset::Zero), Just(Offset::Half), Just(Offset::End), Just(Offset::PastEnd)])
            .prop_map(|(p, o)| Op::Read(p, o)),
        3 => (file(), any::<bool>(), proptest::collection::vec(0usize..200, 0..4),
              prop_oneof![Just(End::Close), Just(End::Commit), Just(End::Cancel)])
            .prop_map(|(path, append, chunks, end)| Op::Write { path, append, chunks, end }),
        2 => any_path().prop_map(Op::Stat),
        2 => proptest::sample::select(DIRS).prop_map(Op::List),
        1 => (proptest::sample::select(DIRS), proptest::option::of(any_path())).prop_map(|(d, h)| Op::Walk(d, h)),
        2 => (file(), file()).prop_map(|(a, b)| Op::Rename(a, b)),
        3 => any_path().prop_map(Op::Delete),
    ]
}

/// Content for a put or write: deterministic from the op's position, so both
/// drivers get the same bytes.
fn content(step: usize, part: usize, len: usize) -> Bytes {
    let mut rng = crate::Rng::new(((step as u64) << 16) ^ part as u64);
    rng.bytes(len)
}

/// What `r` shows that the model must match: the value, or only the
/// error's kind (messages differ between drivers). The error's message is
/// added to `errors`, for the report of a step that differs.
fn show<T: std::fmt::Debug>(r: &Result<T>, errors: &mut Vec<String>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => {
            errors.push(e.to_string());
            format!("Err({})", e.kind())
        }
    }
}

/// Applies `op` and describes what could be observed, with the messages
/// of the errors met (see [`show`]).
async fn apply(
    d: &Driver,
    reference_size: Option<u64>,
    step: usize,
    op: &Op,
) -> (String, Vec<String>) {
    let mut errors = Vec::new();
    let seen = match op {
        Op::Put(p, n) => show(&d.put_content(p, content(step, 0, *n)).await, &mut errors),
        Op::Get(p) => show(&d.get_content(p).await.map(|b| digest(&b)), &mut errors),
        Op::Read(p, o) => {
            let size = reference_size.unwrap_or(0);
            let offset = match o {
                Offset::Zero => 0,
                Offset::Half => size / 2,
                Offset::End => size,
                Offset::PastEnd => size + 1,
            };
            match d.reader(p, offset).await {
                Ok(s) => match read_all(s).await {
                    Ok(b) => format!("Ok({})", digest(&b)),
                    Err(f) => format!("stream failed: {f}"),
                },
                Err(e) => show(&Err::<(), _>(e), &mut errors),
            }
        }
        Op::Write {
            path,
            append,
            chunks,
            end,
        } => {
            let mut out = String::new();
            match d.writer(path, *append).await {
                Err(e) => {
                    let _ = write!(out, "open {}", show(&Err::<(), _>(e), &mut errors));
                }
                Ok(mut w) => {
                    let _ = write!(out, "open size {}", w.size());
                    for (i, n) in chunks.iter().enumerate() {
                        let r = w.write(content(step, i + 1, *n)).await;
                        let _ = write!(out, "; write {}", show(&r, &mut errors));
                    }
                    let _ = write!(out, "; size {}", w.size());
                    let r = match end {
                        End::Close => w.close().await,
                        End::Commit => w.commit().await,
                        End::Cancel => w.cancel().await,
                    };
                    let _ = write!(out, "; {end:?} {}", show(&r, &mut errors));
                }
            }
            out
        }
        Op::Stat(p) => show(
            &d.stat(p).await.map(|fi| (fi.path, fi.size, fi.is_dir)),
            &mut errors,
        ),
        Op::List(p) => show(&d.list(p).await, &mut errors),
        Op::Walk(p, hint) => {
            let mut seen = Vec::new();
            let r = d
                .walk(p, *hint, |fi| {
                    seen.push((fi.path.clone(), fi.size, fi.is_dir));
                    Ok(WalkControl::Continue)
                })
                .await;
            format!("{} {seen:?}", show(&r, &mut errors))
        }
        Op::Rename(a, b) => show(&d.rename(a, b).await, &mut errors),
        Op::Delete(p) => show(&d.delete(p).await, &mut errors),
    };
    (seen, errors)
}

fn digest(b: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(b);
    format!(
        "{} bytes sha256:{:02x}{:02x}{:02x}{:02x}",
        b.len(),
        h[0],
        h[1],
        h[2],
        h[3]
    )
}

/// Deletes everything, unfinished writers included.
async fn reset(d: &Driver) -> Result<()> {
    for child in d.list("/").await? {
        match d.delete(&child).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // Unfinished writers at paths with nothing committed: a fresh writer
    // replaces them and cancelling it removes them.
    for f in FILES {
        d.writer(f, false).await?.cancel().await?;
    }
    Ok(())
}

async fn run_sequence(subject: &Driver, ops: &[Op]) -> std::result::Result<(), String> {
    let reference = Driver::new(InMemoryDriver::new());
    reset(subject)
        .await
        .map_err(|e| format!("reset failed: {e}"))?;
    for (step, op) in ops.iter().enumerate() {
        let size = match op {
            Op::Read(p, _) => reference.stat(p).await.ok().map(|fi| fi.size),
            _ => None,
        };
        let (want, _) = apply(&reference, size, step, op).await;
        let (got, errors) = apply(subject, size, step, op).await;
        if got != want {
            return Err(format!(
                "step {step}: {op:?}\n  driver:    {got}\n  reference: {want}\n  the driver's errors: {errors:?}"
            ));
        }
    }
    reset(subject)
        .await
        .map_err(|e| format!("reset failed: {e}"))
}

async fn model_matches_inmemory(cx: &Ctx) -> CaseResult {
    for d in DIRS.iter().chain(FILES) {
        cx.track(d);
    }
    let cases = if cx.opts.short { 24 } else { 64 };
    let subject = cx.driver.clone();
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        });
        runner.run(&proptest::collection::vec(op(), 1..50), |ops| {
            handle
                .block_on(run_sequence(&subject, &ops))
                .map_err(TestCaseError::fail)
        })
    })
    .await
    .map_err(|e| Failure(format!("model test task: {e}")))?;
    outcome.map_err(|e| Failure(format!("the driver differs from the inmemory model: {e}")))
}
