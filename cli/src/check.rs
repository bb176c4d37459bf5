//! `regstore check`: the storage check over the storage a config names
//! (see [`regstore_server::check`]): every blob re-hashed, every link and
//! manifest verified; with `--repair`, dangling links removed.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use regstore_server::check;
use regstore_server::config::Config;

/// Arguments of `regstore check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove dangling links (links whose blob data is missing; a tag whose
    /// current link dangles loses its directory). Never deletes blob or
    /// manifest data.
    #[arg(long)]
    pub repair: bool,
    /// Blobs hashed at once (and link reads in flight at once).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// The registry's config.yml (default: $REGISTRY_CONFIGURATION_PATH,
    /// else the built-in defaults: filesystem under ./data).
    #[arg(value_name = "CONFIG", env = "REGISTRY_CONFIGURATION_PATH")]
    pub config: Option<PathBuf>,
}

/// Runs one check and prints a line per problem (repaired ones marked),
/// the unexpected files apart, and the summary line. Exit code 1 when a
/// problem remains (with `--repair`: one that repair does not fix), else 0;
/// unexpected files do not count.
///
/// # Errors
/// An unusable config, a storage failure (exit code 2 from [`crate::main`]).
pub async fn check(args: CheckArgs) -> anyhow::Result<i32> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let registry = regstore_server::serve::registry(&config).await?;
    let options = check::Options {
        repair: args.repair,
        concurrency: usize::from(args.concurrency),
    };
    let report = check::check(&registry, &options).await?;
    let mut out = std::io::stdout().lock();
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    for r in &report.repaired {
        writeln!(out, "{r}")?;
    }
    if !report.unexpected.is_empty() {
        writeln!(
            out,
            "unexpected files (outside the layout; not counted as problems):"
        )?;
        for s in &report.unexpected {
            writeln!(out, "  {s}")?;
        }
    }
    writeln!(out, "{}", report.summary())?;
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}
