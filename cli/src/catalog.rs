//! `regstore catalog rebuild [CONFIG]`: fills the catalog index
//! (`catalog.index: file | sql`) from the storage the config names,
//! replacing what it held (see
//! [`Registry::rebuild_catalog`](regstore_server::registry::Registry::rebuild_catalog)).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use regstore_server::config::Config;

/// Arguments of `regstore catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// What to do with the index.
    #[command(subcommand)]
    pub action: CatalogAction,
}

/// The `regstore catalog` subcommands.
#[derive(Debug, Subcommand)]
pub enum CatalogAction {
    /// Walk the storage for every repository holding manifests and replace
    /// the index's content with them (in one transaction for sql).
    ///
    /// Best run while the registry is quiet: a repository first pushed (or
    /// emptied) while the walk runs may be recorded by its push before the
    /// replacement and so be missed (or kept); its next push or delete
    /// puts it right, and so does a second rebuild.
    Rebuild {
        /// The registry's config.yml (default: $REGISTRY_CONFIGURATION_PATH,
        /// else the built-in defaults, which have no index).
        #[arg(value_name = "CONFIG", env = "REGISTRY_CONFIGURATION_PATH")]
        config: Option<PathBuf>,
    },
}

/// Runs `regstore catalog`; prints how many repositories the index holds
/// now and how long it took. Exit code 0.
///
/// # Errors
/// An unusable config, a config without an index (`catalog.index:
/// storage`), the storage or the index failing.
pub async fn catalog(args: CatalogArgs) -> anyhow::Result<i32> {
    let CatalogAction::Rebuild { config } = args.action;
    let config = Config::load(config.as_deref(), std::env::vars())?;
    let registry = regstore_server::serve::registry(&config).await?;
    let index = registry.catalog_index().kind();
    if registry.catalog_index().is_storage() {
        anyhow::bail!(
            "{}: catalog.index is storage (the default): there is no index to rebuild; set catalog.index to file or sql",
            config.origin
        );
    }
    let started = std::time::Instant::now();
    let count = registry.rebuild_catalog().await?;
    writeln!(
        std::io::stdout().lock(),
        "catalog index ({index}) rebuilt: {count} repositories in {:.2}s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(0)
}
