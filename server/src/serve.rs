//! `regstore serve`: builds the configured driver and runs the HTTP API
//! until SIGINT or SIGTERM.
//!
//! On a signal the listener stops accepting, requests in flight run to their
//! end for up to `http.draintimeout`, then the process exits. No registry
//! state is half-written by an interrupted request: a blob appears only
//! after its upload is verified and moved into place, and an interrupted
//! upload stays resumable.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::{HeaderName, HeaderValue};
use tokio::net::TcpListener;

use crate::config::{Config, UploadPurging};
use crate::http::{AppState, router};
use crate::registry::{Registry, Settings};

/// The socket address `http.addr` names: `:5000` means every interface.
///
/// # Errors
/// An address that is neither `:port` nor `host:port`.
pub async fn resolve_addr(addr: &str) -> anyhow::Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    tokio::net::lookup_host(&full)
        .await
        .with_context(|| format!("http.addr {addr:?} is not host:port or :port"))?
        .next()
        .with_context(|| format!("http.addr {addr:?} resolves to no address"))
}

/// The app state a config describes, with its driver built.
///
/// # Errors
/// The driver cannot be built (unknown driver, bad parameters, backend
/// unreachable at startup).
pub async fn app_state(config: &Config) -> anyhow::Result<AppState> {
    let driver = config.storage.build().await.with_context(|| {
        format!(
            "cannot build storage driver {:?} from {}",
            config.storage.driver, config.origin
        )
    })?;
    let registry = Registry::new(
        driver,
        Settings {
            delete_enabled: config.delete_enabled,
            redirect: !config.redirect_disabled,
            read_only: config.read_only,
        },
    );
    let mut headers = Vec::new();
    for (k, v) in &config.headers {
        headers.push((
            HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("http.headers: {k}"))?,
            HeaderValue::from_str(v).with_context(|| format!("http.headers: {k}"))?,
        ));
    }
    Ok(AppState {
        registry,
        base_url: if config.relative_urls {
            None
        } else {
            config.host.clone()
        },
        headers: Arc::new(headers),
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains
/// requests in flight for up to `drain`.
///
/// # Errors
/// The listener fails.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    drain: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let signalled = async move {
        shutdown.await;
        let _ = tx.send(());
    };
    let server = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signalled);
    let deadline = async move {
        if rx.await.is_ok() {
            tracing::info!(?drain, "shutting down: waiting for requests in flight");
            tokio::time::sleep(drain).await;
            tracing::warn!("drain timeout reached; exiting with requests still running");
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r.context("the HTTP server failed"),
        () = deadline => Ok(()),
    }
}

/// Removes abandoned uploads now and then: the first time a minute after
/// startup (or after `interval`, if shorter), then every `interval`.
pub async fn purge_uploads(registry: Registry, purging: UploadPurging) {
    let first = purging.interval.min(std::time::Duration::from_secs(60));
    tokio::time::sleep(first).await;
    loop {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(purging.age)
            .unwrap_or(std::time::UNIX_EPOCH);
        match registry.purge_uploads(cutoff, purging.dry_run).await {
            Ok(report) if purging.dry_run => tracing::info!(
                would_purge = ?report.purged,
                kept = report.kept,
                "upload purging (dry run)"
            ),
            Ok(report) => tracing::info!(
                purged = report.purged.len(),
                kept = report.kept,
                "upload purging"
            ),
            Err(e) => tracing::warn!(error = %e, "upload purging failed; retrying next interval"),
        }
        tokio::time::sleep(purging.interval).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs `regstore serve` with a loaded config: binds, logs where it
/// listens, serves until a signal.
///
/// # Errors
/// The driver cannot be built, the address cannot be bound.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    for w in &config.warnings {
        tracing::warn!("{}: {w}", config.origin);
    }
    let state = app_state(&config).await?;
    if let Some(purging) = config.upload_purging.clone() {
        tokio::spawn(purge_uploads(state.registry.clone(), purging));
    }
    let addr = resolve_addr(&config.addr).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.addr {:?})", config.addr))?;
    let local = listener.local_addr().context("listener address")?;
    tracing::info!(
        driver = state.registry.driver().name(),
        "listening on http://{local}/v2/"
    );
    run(listener, state, config.drain_timeout, shutdown_signal()).await
}
