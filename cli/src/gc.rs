//! `regstore garbage-collect`: one collection over the storage a config
//! names, as distribution's `registry garbage-collect` (same flags, same
//! rules; see [`regstore_server::gc`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use regstore_server::config::Config;
use regstore_server::gc;

/// Arguments of `regstore garbage-collect`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print what would be deleted; delete nothing.
    #[arg(short = 'd', long)]
    pub dry_run: bool,
    /// Also delete manifests that no tag points at.
    #[arg(short = 'm', long)]
    pub delete_untagged: bool,
    /// Print only the summary line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Storage requests in flight at once while reading manifests and tags.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Keep blobs, links and untagged manifests written less than this ago
    /// (Go syntax: 30m, 1h). 0 (the default) is distribution's behaviour,
    /// right when the registry is stopped or read-only; give a period
    /// longer than your slowest push when it is running.
    #[arg(long, value_name = "DURATION", default_value = "0s",
          value_parser = |s: &str| regstore_core::params::parse_duration(s))]
    pub grace_period: Duration,
    /// The registry's config.yml (default: $REGISTRY_CONFIGURATION_PATH,
    /// else the built-in defaults: filesystem under ./data).
    #[arg(value_name = "CONFIG", env = "REGISTRY_CONFIGURATION_PATH")]
    pub config: Option<PathBuf>,
}

/// Runs one collection and prints what it deleted (or would delete) and
/// the summary line; exit code 0.
///
/// # Errors
/// An unusable config, a storage failure, a manifest that cannot be read.
pub async fn garbage_collect(args: GcArgs) -> anyhow::Result<i32> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let registry = regstore_server::serve::registry(&config).await?;
    let options = gc::Options {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged,
        concurrency: usize::from(args.concurrency),
        grace: args.grace_period,
    };
    let report = gc::collect(&registry, &options).await?;
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        let verb = if report.dry_run {
            "eligible for deletion"
        } else {
            "deleted"
        };
        for m in &report.manifests_deleted {
            writeln!(out, "manifest {verb}: {}@{}", m.repo, m.digest)?;
        }
        for (d, size) in &report.blobs_deleted {
            writeln!(out, "blob {verb}: {d} ({size} bytes)")?;
        }
        for w in &report.warnings {
            writeln!(out, "warning: {w}")?;
        }
    }
    writeln!(out, "{}", report.summary())?;
    Ok(0)
}
