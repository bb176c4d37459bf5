//! `regstore conformance`: the conformance suite against a configured
//! backend, as a table of cases.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use regstore_core::Driver;
use regstore_testsuite::{Options, Outcome};

use crate::BackendArgs;

/// Arguments of `regstore conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// The backend to check.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Shrink the largest cases (5 GiB stream → 64 MiB, 128 MiB reads → 10 MiB,
    /// 32 writers → 8) for slow or metered backends.
    #[arg(long)]
    pub short: bool,
    /// Seed of the cases' random data (a failing case prints the one it
    /// ran with, so its data can be replayed).
    #[arg(long, env = "REGSTORE_TEST_SEED")]
    pub seed: Option<u64>,
    /// Run only the cases whose names contain this text; repeat for several.
    #[arg(long = "case", value_name = "TEXT")]
    pub cases: Vec<String>,
}

pub(crate) async fn conformance(args: ConformanceArgs) -> anyhow::Result<i32> {
    let spec = args.backend.spec()?;
    let driver = spec.build().await?;
    let before = driver
        .list("/")
        .await
        .with_context(|| format!("cannot list the root of the {} backend", driver.name()))?;
    if !before.is_empty() {
        bail!(
            "the {} backend is not empty (it holds {}): point it at an empty directory, bucket or prefix, because every case checks that it leaves the store empty",
            driver.name(),
            before
                .iter()
                .take(3)
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let opts = Options {
        short: args.short,
        seed: args.seed,
    };
    let cases: Vec<_> = regstore_testsuite::all_cases()
        .filter(|c| args.cases.is_empty() || args.cases.iter().any(|t| c.name.contains(t.as_str())))
        .collect();
    if cases.is_empty() {
        bail!("no case name contains {:?}", args.cases);
    }
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(4);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "conformance of {} ({} cases)",
        driver.name(),
        cases.len()
    )?;
    writeln!(out, "| {:width$} | result | seconds | detail", "case")?;
    writeln!(out, "|{}|--------|---------|-------", "-".repeat(width + 2))?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in cases {
        let started = Instant::now();
        let outcome = run_isolated(case, &driver, opts).await;
        let secs = started.elapsed().as_secs_f64();
        let (result, detail) = match &outcome {
            Outcome::Passed => {
                passed += 1;
                ("pass", String::new())
            }
            Outcome::Failed(why) => {
                failed += 1;
                ("FAIL", why.replace('\n', " "))
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                ("skip", (*why).to_owned())
            }
        };
        writeln!(
            out,
            "| {:width$} | {result:6} | {secs:7.2} | {detail}",
            case.name
        )?;
        out.flush()?;
    }
    write!(out, "{passed} passed, {failed} failed")?;
    if skipped > 0 {
        write!(out, ", {skipped} skipped")?;
    }
    writeln!(out)?;
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Runs one case with a time limit, so one hanging case does not hang the run.
async fn run_isolated(
    case: &'static regstore_testsuite::Case,
    driver: &Driver,
    opts: Options,
) -> Outcome {
    const LIMIT: Duration = Duration::from_secs(30 * 60);
    match tokio::time::timeout(
        LIMIT,
        regstore_testsuite::run_case(case, driver.clone(), opts),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(format!(
            "did not finish within {} minutes",
            LIMIT.as_secs() / 60
        )),
    }
}
