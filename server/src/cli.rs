//! The command-line interface: `regstore serve`, `drivers`, `conformance`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use regstore_core::params::parse_pairs;
use regstore_core::{Driver, ParamSpec};
use regstore_testsuite::{Options, Outcome};

pub use crate::bench::BenchArgs;
use crate::config::{Config, StorageSpec};

/// regstore: container-image registry storage on pluggable drivers.
#[derive(Debug, Parser)]
#[command(name = "regstore", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments like [`Parser::parse`] (printing help
    /// or the error and exiting when asked to), and also keeps the order of
    /// `regstore bench`'s backend options, which says which `--param`
    /// belongs to which `--driver`.
    pub fn parse_args() -> Cli {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_args`] over `args` (the first is the program name).
    ///
    /// # Errors
    /// clap's error for arguments that do not parse (or `--help`).
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Command::Bench(b), Some(m)) =
            (&mut cli.command, matches.subcommand_matches("bench"))
        {
            b.order = crate::bench::backend_options_in_order(m);
        }
        Ok(cli)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every registered storage driver and middleware with its parameters.
    Drivers,
    /// Run the registry: the OCI Distribution API on the configured driver.
    ///
    /// With no config: filesystem storage under ./data, port 5000, deletes
    /// enabled. REGISTRY_* environment variables override config keys as in
    /// distribution (e.g. REGISTRY_HTTP_ADDR=:5001, REGISTRY_STORAGE=inmemory).
    Serve(ServeArgs),
    /// Run the conformance suite against a backend and print a table of cases.
    ///
    /// Point it at an empty bucket, container or directory: every case
    /// cleans up after itself and checks that the store is empty again.
    Conformance(ConformanceArgs),
    /// Time the driver benchmark set against one or more backends: per
    /// benchmark and backend throughput, p50, p99 and backend requests per
    /// call, as a Markdown table (and JSON, and an SVG chart).
    ///
    /// Compare backends by repeating --driver (each followed by its
    /// --param options) or --config. Everything lives under a fresh
    /// `regstore-bench-<time>-<pid>` directory, deleted at the end (also
    /// after an error or Ctrl-C).
    Bench(Box<BenchArgs>),
}

/// Which backend to use: a config file or a driver and its parameters.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// A distribution-style config.yml; its `storage` and
    /// `middleware.storage` sections are used.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["driver", "params"])]
    pub config: Option<PathBuf>,
    /// Driver name (see `regstore drivers`).
    #[arg(long, value_name = "NAME", required_unless_present = "config")]
    pub driver: Option<String>,
    /// A driver parameter; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

impl BackendArgs {
    /// The storage spec these arguments describe.
    ///
    /// # Errors
    /// An unreadable or unusable config, a parameter not written `name=value`.
    pub fn spec(&self) -> anyhow::Result<StorageSpec> {
        if let Some(path) = &self.config {
            return Ok(crate::config::storage_from_file(path)?);
        }
        let Some(driver) = &self.driver else {
            bail!("give --config FILE or --driver NAME");
        };
        Ok(StorageSpec {
            driver: driver.clone(),
            params: parse_pairs(&self.params)?,
            middleware: Vec::new(),
        })
    }
}

/// Arguments of `regstore serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A distribution-style config.yml (default: $REGISTRY_CONFIGURATION_PATH,
    /// else built-in defaults).
    #[arg(long, value_name = "FILE", env = "REGISTRY_CONFIGURATION_PATH")]
    pub config: Option<PathBuf>,
}

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
    /// Run only the cases whose names contain this text; repeat for several.
    #[arg(long = "case", value_name = "TEXT")]
    pub cases: Vec<String>,
}

/// Runs the command line; returns the process exit code.
///
/// # Errors
/// Anything that stops the command from running at all (bad arguments,
/// unknown driver); failed conformance cases are an exit code, not an error.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    regstore_drivers::register_all();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(args.config.as_deref(), std::env::vars())?;
            init_logging(config.log_level.as_deref().unwrap_or("info"));
            crate::serve::serve(config).await?;
            Ok(0)
        }
        Command::Drivers => {
            init_logging("warn");
            print_drivers(&mut std::io::stdout().lock())?;
            Ok(0)
        }
        Command::Conformance(args) => {
            init_logging("warn");
            conformance(args).await
        }
        Command::Bench(args) => {
            init_logging("warn");
            crate::bench::bench(*args).await
        }
    }
}

/// Sends `tracing` output to stderr: `REGSTORE_LOG` (an env-filter such as
/// `debug` or `regstore_core=trace`) if set, else `level`.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGSTORE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn print_params(out: &mut impl Write, params: &[ParamSpec]) -> std::io::Result<()> {
    if params.is_empty() {
        return writeln!(out, "    (no parameters)");
    }
    let defaults: Vec<String> = params
        .iter()
        .map(|p| match (p.default, p.required) {
            (Some(""), _) => "default \"\"".to_owned(),
            (Some(d), _) => format!("default {d}"),
            (None, true) => "required".to_owned(),
            (None, false) => "optional".to_owned(),
        })
        .collect();
    let width = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let dwidth = defaults.iter().map(String::len).max().unwrap_or(0);
    for (p, default) in params.iter().zip(&defaults) {
        writeln!(
            out,
            "    {:width$}  {:8}  {default:dwidth$}  {}",
            p.name,
            p.kind.to_string(),
            p.doc
        )?;
    }
    Ok(())
}

/// Writes the table `regstore drivers` prints.
///
/// # Errors
/// Write errors.
pub fn print_drivers(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Storage drivers (storage: <name>: in config, --driver <name>):"
    )?;
    for f in regstore_core::registry::drivers() {
        writeln!(out, "\n  {} — {}", f.name, f.description)?;
        print_params(out, f.params)?;
    }
    writeln!(
        out,
        "\nStorage middleware (middleware: storage: - name: <name>):"
    )?;
    let middlewares = regstore_core::registry::middlewares();
    if middlewares.is_empty() {
        writeln!(out, "\n  (none in this build)")?;
    }
    for f in middlewares {
        writeln!(out, "\n  {} — {}", f.name, f.description)?;
        print_params(out, f.params)?;
    }
    Ok(())
}

async fn conformance(args: ConformanceArgs) -> anyhow::Result<i32> {
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
    let opts = Options { short: args.short };
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
