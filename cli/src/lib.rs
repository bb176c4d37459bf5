//! regstore-cli: the `regstore` command line, over the server library
//! ([`regstore_server`]), the conformance suite and the benchmarks.
//!
//! Subcommands:
//! - `regstore serve`: the registry (OCI Distribution and Docker APIs) on
//!   the configured driver ([`regstore_server::serve`]);
//! - `regstore drivers`: every registered driver and middleware with its
//!   parameters ([`drivers`]);
//! - `regstore conformance`: the conformance suite against a backend, as a
//!   table ([`conformance`]);
//! - `regstore bench`: the driver benchmark set across backends
//!   ([`bench`](mod@bench));
//! - `regstore garbage-collect`: delete unreferenced blobs ([`gc`](mod@gc));
//! - `regstore check`: verify every blob, link and manifest in storage,
//!   optionally removing dangling links ([`check`](mod@check));
//! - `regstore catalog rebuild`: fill the catalog index from storage
//!   ([`catalog`](mod@catalog)).
//!
//! [`main`] is the whole program: the `regstore` binary is one call to it,
//! and a binary with drivers of its own (see `examples/out-of-tree-driver`)
//! registers them and then calls it too.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use regstore_core::StorageSpec;
use regstore_core::params::parse_pairs;
use regstore_server::config::Config;

pub mod bench;
pub mod catalog;
pub mod check;
pub mod conformance;
pub mod drivers;
pub mod gc;
pub mod logging;

pub use bench::BenchArgs;
pub use conformance::ConformanceArgs;

/// Runs `regstore` with the process's arguments and exits with its code:
/// the built-in drivers and middleware are registered, and so is anything
/// registered before the call (a binary's own drivers).
pub fn main() -> ! {
    let cli = Cli::parse_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("regstore: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

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
            b.order = bench::backend_options_in_order(m);
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
    /// Delete the blobs (and, with -m, the untagged manifests) that nothing
    /// references, as distribution's `registry garbage-collect`.
    ///
    /// Prints each deleted blob and manifest and a summary line (blobs
    /// marked, deleted, bytes freed, manifests deleted, requests, time).
    /// Safe on a running registry with --grace-period longer than the
    /// slowest push; `storage.maintenance.gc` runs it inside `serve`.
    GarbageCollect(gc::GcArgs),
    /// Verify the storage: every blob hashes to its name, every link names
    /// an existing blob, every manifest parses and what it references is in
    /// its repository.
    ///
    /// Prints one line per problem, the files the layout does not explain
    /// (apart; not problems) and a summary line. Exit code 1 when problems
    /// remain, 0 otherwise. --repair removes dangling links (links whose
    /// blob data is missing; a tag whose current link dangles loses its
    /// directory) and nothing else: exit code 0 then if every problem found
    /// was repaired. Exit code 2 when the check cannot run (config, storage).
    Check(check::CheckArgs),
    /// Manage the catalog index (`catalog.index: file | sql`, a regstore
    /// extension): `regstore catalog rebuild [CONFIG]` fills it from the
    /// storage, replacing its content, and prints the count and the time.
    Catalog(catalog::CatalogArgs),
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
            return Ok(regstore_server::config::storage_from_file(path)?);
        }
        let Some(driver) = &self.driver else {
            bail!("give --config FILE or --driver NAME");
        };
        Ok(StorageSpec::new(driver.clone(), parse_pairs(&self.params)?))
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

/// Runs the command line; returns the process exit code.
///
/// # Errors
/// Anything that stops the command from running at all (bad arguments,
/// unknown driver); failed conformance cases are an exit code, not an error.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    regstore_builtin::register_all();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(args.config.as_deref(), std::env::vars())?;
            logging::init(&config.log);
            regstore_server::serve::serve(config).await?;
            Ok(0)
        }
        Command::Drivers => {
            init_logging("warn");
            drivers::print_drivers(&mut std::io::stdout().lock())?;
            Ok(0)
        }
        Command::Conformance(args) => {
            init_logging("warn");
            conformance::conformance(args).await
        }
        Command::Bench(args) => {
            init_logging("warn");
            bench::bench(*args).await
        }
        Command::GarbageCollect(args) => {
            init_logging("warn");
            gc::garbage_collect(args).await
        }
        Command::Check(args) => {
            init_logging("warn");
            check::check(args).await
        }
        Command::Catalog(args) => {
            init_logging("warn");
            catalog::catalog(args).await
        }
    }
}

/// Sends `tracing` output to stderr as text: `REGSTORE_LOG` (an env-filter
/// such as `debug` or `regstore_core=trace`) if set, else `level`. `serve`
/// sets up logging from its config instead ([`logging::init`]).
pub fn init_logging(level: &str) {
    logging::init(&regstore_server::config::LogConfig {
        level: Some(level.to_owned()),
        ..Default::default()
    });
}
