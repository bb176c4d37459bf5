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
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderName, HeaderValue};
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::config::{Config, TlsSettings, UploadPurging};
use crate::http::{AppState, router};
use crate::registry::{Registry, RegistryError, Settings};
use regstore_core::ErrorKind;

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

/// The registry storage service a config describes (its driver built, its
/// storage settings applied): what `serve` runs on, and what the
/// maintenance commands (`garbage-collect`, `check`) work on. Registers the
/// built-in drivers and middleware.
///
/// # Errors
/// The driver cannot be built (unknown driver, bad parameters, refused
/// credentials, backend unreachable at startup).
pub async fn registry(config: &Config) -> anyhow::Result<Registry> {
    regstore_builtin::register_all();
    let driver = match config.storage.spec.build().await {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::Credentials => {
            return Err(credentials_refused(
                &e,
                &config.storage.spec.driver,
                &config.origin,
            ));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot build storage driver {:?} from {}",
                config.storage.spec.driver, config.origin
            )));
        }
    };
    let catalog = crate::catalog::CatalogIndex::open(&config.catalog)
        .await
        .with_context(|| format!("cannot open the catalog index of {}", config.origin))?;
    let registry = Registry::new(
        driver,
        Settings {
            delete_enabled: config.storage.delete_enabled,
            redirect: !config.storage.redirect_disabled,
            read_only: config.storage.read_only,
            manifest_urls: config.validation.manifest_urls.clone(),
            max_manifest_references: config.validation.max_manifest_references,
            upload_max_age: config.storage.upload_purging.as_ref().map(|p| p.age),
        },
    )
    .with_catalog(catalog);
    Ok(match &config.blob_cache {
        None => registry,
        Some(c) => registry.with_blob_cache(
            crate::cache::BlobDescriptorCache::from_config(c)
                .map_err(|e| anyhow::anyhow!("storage.cache in {}: {e}", config.origin))?,
        ),
    })
}

/// Fills the catalog index from the storage when it is empty (first start
/// on a new file or database); a no-op without an index or when it holds
/// names. Logs how many and how long.
///
/// # Errors
/// The storage walk or the index fails.
pub async fn rebuild_catalog_if_empty(registry: &Registry) -> anyhow::Result<()> {
    let index = registry.catalog_index();
    if index.is_storage() || !index.is_empty().await? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let count = registry
        .rebuild_catalog()
        .await
        .context("cannot fill the empty catalog index from storage")?;
    tracing::info!(
        index = index.kind(),
        repositories = count,
        seconds = started.elapsed().as_secs_f64(),
        "catalog index was empty: filled from storage"
    );
    Ok(())
}

/// The app state a config describes, with its driver built and its
/// catalog index filled if empty. The built-in drivers and middleware are
/// registered here; a binary with drivers of its own registers them before.
///
/// # Errors
/// The driver cannot be built (unknown driver, bad parameters, backend
/// unreachable at startup).
pub async fn app_state(config: &Config) -> anyhow::Result<AppState> {
    let registry = registry(config).await?;
    rebuild_catalog_if_empty(&registry).await?;
    let mut headers = Vec::new();
    for (k, v) in &config.http.headers {
        headers.push((
            HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("http.headers: {k}"))?,
            HeaderValue::from_str(v).with_context(|| format!("http.headers: {k}"))?,
        ));
    }
    let auth = match (&config.auth.htpasswd, &config.auth.token) {
        (_, Some(t)) => crate::auth::Auth::token(t, config.http.tls.is_some())
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.origin))?,
        (None, None) => crate::auth::Auth::none(),
        (Some(h), None) => {
            let (auth, created) = crate::auth::Auth::htpasswd(h)
                .map_err(|e| anyhow::anyhow!("auth.htpasswd in {}: {e}", config.origin))?;
            if let Some(password) = created {
                // Printed once, to stderr, not into the log.
                eprintln!(
                    "htpasswd file {} was missing: created with user \"docker\", password {password}",
                    h.path.display()
                );
            }
            auth
        }
    };
    let auth = match &config.auth.access {
        None => auth,
        Some(_) if !auth.enabled() => anyhow::bail!(
            "auth.access in {}: access rules need an authentication scheme to tell users apart: configure auth.htpasswd or auth.token",
            config.origin
        ),
        Some(rules) => auth.with_access(rules.clone()),
    };
    let health = crate::health::HealthChecks::new(&config.health, registry.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.origin))?;
    let cors = config.http.cors.clone().map(Arc::new);
    let proxy = match &config.proxy {
        None => None,
        Some(p) => {
            Some(Arc::new(crate::proxy::Proxy::new(p).map_err(|e| {
                anyhow::anyhow!("proxy in {}: {e}", config.origin)
            })?))
        }
    };
    let notifier = crate::notify::Notifier::start(
        &config.notifications,
        crate::notify::source_addr(&config.http.addr),
        config.http.tls.is_some(),
        crate::notify::DEFAULT_QUEUE_CAPACITY,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", config.origin))?
    .map(Arc::new);
    let metrics = config
        .http
        .debug
        .as_ref()
        .is_some_and(|d| d.prometheus.is_some())
        .then(|| {
            let mut extra: Vec<Box<dyn prometheus_client::collector::Collector>> = Vec::new();
            if let Some(p) = &proxy {
                extra.push(Box::new(crate::metrics::ProxyCollector(Arc::clone(p))));
            }
            if let Some(n) = &notifier {
                extra.push(Box::new(crate::metrics::NotifyCollector(Arc::clone(n))));
            }
            extra.push(Box::new(crate::metrics::HealthCollector(health.clone())));
            if let Some(c) = registry.blob_cache() {
                extra.push(Box::new(crate::metrics::BlobCacheCollector(c.clone())));
            }
            crate::metrics::Metrics::new(&registry, extra)
        });
    Ok(AppState {
        health,
        cors,
        registry,
        base_url: if config.http.relative_urls {
            None
        } else {
            config.http.host.clone()
        },
        headers: Arc::new(headers),
        limits: config.http.limits,
        access_log: config.log.access_log,
        auth,
        proxy,
        metrics,
        notifier,
    })
}

/// How often an unreachable backend is checked again after startup.
const STARTUP_RECHECK: Duration = Duration::from_secs(15);

/// Asks the backend one cheap question (the listing `/debug/health` also
/// makes, [`Registry::check_health`]) before serving, so that a configuration the backend refuses is
/// found at startup rather than by the first client.
///
/// - Credentials refused or missing ([`ErrorKind::Credentials`]): an error,
///   one line naming the driver, what the backend said and where the
///   credentials are configured. Retrying cannot help.
/// - Anything else (unreachable, 5xx, no answer within
///   [`crate::registry::HEALTH_TIMEOUT`]): logged as a
///   warning and serving starts. `/debug/health` answers 503 while it
///   lasts, and a background task checks again every 15 s, logging when the
///   backend answers (or if it later refuses the credentials).
///
/// # Errors
/// The backend refuses or lacks the credentials.
pub async fn check_backend(registry: &Registry, origin: &str) -> anyhow::Result<()> {
    let driver = registry.driver().name().to_owned();
    match probe(registry).await {
        Ok(()) => Ok(()),
        Err(Probe::Credentials(e)) => Err(credentials_refused(&e, &driver, origin)),
        Err(Probe::Unavailable(why)) => {
            tracing::warn!(
                driver,
                "storage backend not answering at startup ({why}); serving anyway, /debug/health reports it, checking again every {}s",
                STARTUP_RECHECK.as_secs()
            );
            let registry = registry.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(STARTUP_RECHECK).await;
                    match probe(&registry).await {
                        Ok(()) => {
                            tracing::info!(driver, "storage backend answers now");
                            return;
                        }
                        Err(Probe::Credentials(e)) => {
                            tracing::error!(driver, "storage backend refuses the credentials: {e}");
                            return;
                        }
                        Err(Probe::Unavailable(why)) => {
                            tracing::debug!(driver, "storage backend still not answering: {why}");
                        }
                    }
                }
            });
            Ok(())
        }
    }
}

/// The one-line startup error for credentials the backend refused (at
/// build or at the first request), with where to change them.
fn credentials_refused(e: &regstore_core::Error, driver: &str, origin: &str) -> anyhow::Error {
    // One line: a backend's answer may carry a multi-line (XML) body.
    let e = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    anyhow::anyhow!(
        "{e} (check the credentials under storage.{driver} in {origin}, or the environment they come from)"
    )
}

/// Why the startup probe failed.
enum Probe {
    Credentials(regstore_core::Error),
    Unavailable(String),
}

async fn probe(registry: &Registry) -> Result<(), Probe> {
    match registry.check_health().await {
        Ok(()) => Ok(()),
        Err(RegistryError::Storage(e)) if e.kind() == ErrorKind::Credentials => {
            Err(Probe::Credentials(e))
        }
        Err(e) => Err(Probe::Unavailable(e.to_string())),
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains
/// requests in flight for up to `drain`. Works for plain TCP and for
/// [`TlsListener`].
///
/// Each connection is served by hyper with `state.limits`: the request head
/// must arrive within `header_timeout` (also the longest a keep-alive
/// connection may wait for its next request), and at most
/// `max_connections` are served at once — further clients wait in the
/// listen backlog, not in the process. With `http2` a connection may also
/// speak HTTP/2 (h2 after ALPN on TLS, h2c with prior knowledge on plain
/// TCP): at most [`HTTP2_STREAMS`] requests at once per connection, and a
/// connection whose client stops answering pings for `header_timeout` is
/// closed.
///
/// # Errors
/// The listener fails.
pub async fn run<L>(
    mut listener: L,
    state: AppState,
    drain: std::time::Duration,
    http2: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: NoDelay,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tokio::sync::{Semaphore, watch};

    let limits = state.limits;
    let app = router(state);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection holds a receiver: all are gone when `closed` resolves.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.context("connection limit")?,
            () = &mut shutdown => break,
        };
        let (mut io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => break,
        };
        // Small requests (manifest GETs, blob HEADs) must not wait for Nagle.
        io.set_nodelay();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let mut app = app.clone();
                    tower_service::Service::call(&mut app, req.map(axum::body::Body::new))
                },
            );
            // HTTP/1.1, and HTTP/2 where allowed: the first bytes tell
            // (h2's preface, after ALPN chose h2 or with h2c).
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.header_timeout))
                .keep_alive_timeout(limits.header_timeout)
                .max_concurrent_streams(HTTP2_STREAMS);
            let builder = if http2 { builder } else { builder.http1_only() };
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(?drain, "shutting down: waiting for requests in flight");
    let _ = stop_tx.send(true);
    drop(stop_rx);
    tokio::select! {
        () = stop_tx.closed() => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!("drain timeout reached; exiting with requests still running");
        }
    }
    Ok(())
}

/// Requests one HTTP/2 connection may have in flight.
pub const HTTP2_STREAMS: u32 = 256;

/// A connection whose TCP socket can be told not to delay small writes.
pub trait NoDelay {
    /// Sets `TCP_NODELAY`, ignoring failure (it is an optimisation).
    fn set_nodelay(&mut self);
}

impl NoDelay for TcpStream {
    fn set_nodelay(&mut self) {
        let _ = TcpStream::set_nodelay(self, true);
    }
}

impl NoDelay for TlsStream<TcpStream> {
    fn set_nodelay(&mut self) {
        let _ = self.get_ref().0.set_nodelay(true);
    }
}

/// Reads `http.tls`'s PEM files into a rustls server config.
///
/// # Errors
/// A file that cannot be read, holds no certificate or key, or a key that
/// does not match the certificate.
pub fn tls_config(tls: &TlsSettings) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.certificate)
        .with_context(|| {
            format!(
                "http.tls.certificate: cannot read {}",
                tls.certificate.display()
            )
        })?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "http.tls.certificate: {} is not PEM",
                tls.certificate.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "http.tls.certificate: {} holds no CERTIFICATE block",
            tls.certificate.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).with_context(|| {
        format!(
            "http.tls.key: {} holds no readable private key (PKCS#8, PKCS#1 or SEC1 PEM)",
            tls.key.display()
        )
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = if tls.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?;
    let builder = if tls.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for path in &tls.client_cas {
            let shown = path.display();
            let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("http.tls.clientcas: cannot read {shown}"))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("http.tls.clientcas: {shown} is not PEM"))?;
            if cas.is_empty() {
                anyhow::bail!("http.tls.clientcas: {shown} holds no CERTIFICATE block");
            }
            for ca in cas {
                roots.add(ca).with_context(|| {
                    format!(
                        "http.tls.clientcas: {shown} holds a certificate that is not a usable CA"
                    )
                })?;
            }
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("http.tls.clientcas: cannot build the client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("http.tls: the key does not fit the certificate")?;
    config.alpn_protocols = if tls.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// A TLS listener: accepts TCP connections and completes each handshake in
/// its own task, so a slow or broken client never holds up the others.
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Wraps `tcp`; handshakes use `config` and must finish within 10 s.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let ready = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended: no more connections will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
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

/// Starts the configured background work of `state`: upload purging
/// ([`purge_uploads`]), online garbage collection
/// ([`crate::gc::online::run`]), the pull-through cache's expiry
/// ([`crate::proxy::expiry::run`]) and the `health` checks
/// ([`crate::health::HealthChecks::spawn`]). The tasks run until the
/// runtime stops (the health checks' also when `state` is dropped).
pub fn spawn_maintenance(config: &Config, state: &AppState) {
    let registry = &state.registry;
    state.health.spawn();
    if let Some(purging) = config.storage.upload_purging.clone() {
        tokio::spawn(purge_uploads(registry.clone(), purging));
    }
    if let Some(schedule) = config.storage.gc.clone() {
        if !registry.driver().capabilities().create_if_absent {
            tracing::warn!(
                driver = registry.driver().name(),
                "storage.maintenance.gc: the driver cannot hold the GC lease (no create-if-absent), so every instance with gc enabled collects on its own; enable it on one instance only"
            );
        }
        tokio::spawn(crate::gc::online::run(registry.clone(), schedule));
    }
    if let Some(ttl) = config.proxy.as_ref().and_then(|p| p.ttl) {
        tokio::spawn(crate::proxy::expiry::run(registry.clone(), ttl));
    }
}

/// Starts the debug server (`http.debug.addr`) if configured: binds, logs
/// where, serves [`crate::http::debug_router`] until the runtime stops.
/// Returns the bound address.
///
/// # Errors
/// The address cannot be resolved or bound.
pub async fn spawn_debug(config: &Config, state: &AppState) -> anyhow::Result<Option<SocketAddr>> {
    let Some(server) = &config.http.debug else {
        return Ok(None);
    };
    let addr = resolve_addr(&server.addr).await?;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} (http.debug.addr {:?})",
            server.addr
        )
    })?;
    let local = listener.local_addr().context("debug listener address")?;
    let app = crate::http::debug_router(state.clone(), server.prometheus.as_deref());
    tracing::info!(
        metrics = server.prometheus.as_deref().unwrap_or("off"),
        "debug server on http://{local}/debug/health"
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the debug server stopped");
        }
    });
    Ok(Some(local))
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
    // Certificate problems are config errors: report them before building
    // the driver.
    if let Some(tls) = &config.http.tls {
        tls_config(tls)?;
    }
    if config.auth.htpasswd.is_some() && config.http.tls.is_none() {
        tracing::warn!(
            "auth.htpasswd over plain HTTP: passwords cross the network readable; configure http.tls, or serve behind a TLS proxy"
        );
    }
    let state = app_state(&config).await?;
    check_backend(&state.registry, &config.origin).await?;
    spawn_maintenance(&config, &state);
    spawn_debug(&config, &state).await?;
    let addr = resolve_addr(&config.http.addr).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.addr {:?})", config.http.addr))?;
    let local = listener.local_addr().context("listener address")?;
    let driver = state.registry.driver().name();
    match &config.http.tls {
        None => {
            tracing::info!(
                driver,
                h2c = config.http.h2c,
                "listening on http://{local}/v2/"
            );
            run(
                listener,
                state,
                config.http.drain_timeout,
                config.http.h2c,
                shutdown_signal(),
            )
            .await
        }
        Some(tls) => {
            let listener = TlsListener::new(listener, tls_config(tls)?)?;
            tracing::info!(
                driver,
                http2 = tls.http2,
                "listening on https://{local}/v2/"
            );
            run(
                listener,
                state,
                config.http.drain_timeout,
                tls.http2,
                shutdown_signal(),
            )
            .await
        }
    }
}
