//! An in-process registry on 127.0.0.1 for HTTP tests, and small clients.

#![allow(dead_code)] // each test crate uses a different part

pub mod distribution;
pub mod image;
pub mod relay;
pub mod token;
pub mod users;

use std::time::Duration;

use regstore_server::config::Config;
use regstore_server::serve;
use reqwest::{Client, Response, StatusCode};
use sha2::{Digest as _, Sha256};

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A reqwest client builder usable in this process: reqwest is built with
/// rustls but no bundled provider (the cloud drivers' choice, unified by
/// cargo), so ring is installed first.
pub fn client_builder() -> reqwest::ClientBuilder {
    regstore_testenv::backend::http_client()
}

/// A client of any registry at `base`.
pub struct Api {
    pub base: String,
    pub client: Client,
}

impl Api {
    /// A client that does not follow redirects (tests look at them).
    pub fn new(base: String) -> Api {
        Api {
            base,
            client: client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }
}

/// A running in-process registry; stops when dropped.
pub struct TestRegistry {
    pub api: Api,
    pub dir: tempfile::TempDir,
    /// The registry the server runs on (for tests that call the library).
    pub registry: regstore_server::registry::Registry,
    /// The pull-through cache, when the config has `proxy`.
    pub proxy: Option<std::sync::Arc<regstore_server::proxy::Proxy>>,
    /// `http://addr` of the debug server, when `http.debug.addr` is set.
    pub debug: Option<String>,
    /// The notifier, when the config has enabled `notifications` endpoints.
    pub notifier: Option<std::sync::Arc<regstore_server::notify::Notifier>>,
    /// The `health` checks the server runs.
    pub health: regstore_server::health::HealthChecks,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::ops::Deref for TestRegistry {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A registry on `setup`: a driver (`inmemory`, or `filesystem` in a
/// temporary directory), optionally with a blob-descriptor cache:
/// `filesystem+inmemory-cache`, `inmemory+redis-cache` (a database of its
/// own on the test Redis, [`redis_test_db`]; the caller checked that
/// Redis is there, as [`setups`] does). `extra` is YAML appended to the
/// config (top-level sections, or `storage` settings written as
/// `  delete: …` lines after the driver).
pub async fn start(setup: &str, storage_extra: &str, extra: &str) -> TestRegistry {
    let dir = tempfile::tempdir().expect("temp dir");
    let (driver, cache) = setup.split_once('+').unwrap_or((setup, ""));
    let (cache_yaml, redis_yaml) = match cache {
        "" => (String::new(), String::new()),
        "inmemory-cache" => (cache_section("inmemory"), String::new()),
        "redis-cache" => {
            let addr = regstore_testenv::backend::redis_addr();
            let db = redis_test_db(&addr).await;
            (cache_section("redis"), redis_section(&addr, db))
        }
        other => panic!("unknown cache {other:?} in test setup {setup:?}"),
    };
    let driver_yaml = match driver {
        "filesystem" => format!(
            "  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("root").display()
        ),
        other => format!("  {other}:\n"),
    };
    let yaml = format!(
        "version: 0.1\nstorage:\n{driver_yaml}{cache_yaml}{storage_extra}{extra}{redis_yaml}"
    );
    start_yaml(&yaml, dir).await
}

/// `storage.cache` lines (after the driver) for `blobdescriptor: kind`.
pub fn cache_section(kind: &str) -> String {
    format!("  cache:\n    blobdescriptor: {kind}\n")
}

/// A top-level `redis` section for `addr`, database `db`, with short
/// timeouts (a test Redis on loopback answers in well under a second).
pub fn redis_section(addr: &str, db: u32) -> String {
    format!(
        "redis:\n  addr: {addr}\n  db: {db}\n  dialtimeout: 2s\n  readtimeout: 2s\n  writetimeout: 2s\n"
    )
}

/// The test Redis ([`regstore_testenv::backend::redis_addr`]), if it
/// answers; else `None` after saying so, or a failure under
/// `REGSTORE_REQUIRE_BACKENDS=1`.
pub fn redis_addr() -> Option<String> {
    let addr = regstore_testenv::backend::redis_addr();
    let found = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| format!("REGSTORE_REDIS_ADDR={addr}: {e}"))
        .and_then(|sock| {
            std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
                .map_err(|e| format!("redis at {addr}: {e} (scripts/backends.sh start redis)"))
        })
        .map(|_| addr.clone());
    regstore_testenv::backend::skip_unless_required("redis", found)
}

/// A Redis database of its own for one test registry (nextest runs tests
/// in parallel processes): `INCR regstore-test:next-db` on database 0 picks
/// one of 1..=4095 (the test Redis has 4096), which is emptied first.
///
/// # Panics
/// Redis at `addr` does not answer.
pub async fn redis_test_db(addr: &str) -> u32 {
    let mut c = redis_connection(addr, 0).await;
    let n: u64 = redis::cmd("INCR")
        .arg("regstore-test:next-db")
        .query_async(&mut c)
        .await
        .expect("INCR on the test redis");
    let db = u32::try_from(n % 4095 + 1).expect("below 4096");
    let mut c = redis_connection(addr, db).await;
    let () = redis::cmd("FLUSHDB")
        .query_async(&mut c)
        .await
        .expect("FLUSHDB on the test redis");
    db
}

/// A connection to database `db` of the Redis at `addr`.
///
/// # Panics
/// Redis does not answer.
pub async fn redis_connection(addr: &str, db: u32) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/{db}"))
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis at {addr}: {e}"))
}

/// What the API suites (`api_blobs`, `api_manifests`) run on: each driver,
/// the filesystem with the in-memory blob-descriptor cache, and inmemory
/// with the Redis cache when the test Redis is there ([`redis_addr`]).
pub fn setups() -> Vec<&'static str> {
    let mut setups = vec!["inmemory", "filesystem", "filesystem+inmemory-cache"];
    if redis_addr().is_some() {
        setups.push("inmemory+redis-cache");
    }
    setups
}

/// A registry from a whole config text; `dir` is kept alive with it.
pub async fn start_yaml(yaml: &str, dir: tempfile::TempDir) -> TestRegistry {
    start_yaml_on(yaml, dir, 0).await
}

/// [`start_yaml`] on a given loopback port (0: any free one), for tests
/// whose config must name the registry's own address.
pub async fn start_yaml_on(yaml: &str, dir: tempfile::TempDir, port: u16) -> TestRegistry {
    let config = Config::from_yaml(yaml, "test config", []).expect("test config is valid");
    let state = serve::app_state(&config).await.expect("driver builds");
    let registry = state.registry.clone();
    let proxy = state.proxy.clone();
    let notifier = state.notifier.clone();
    let health = state.health.clone();
    serve::spawn_maintenance(&config, &state);
    let debug = serve::spawn_debug(&config, &state)
        .await
        .expect("debug server binds")
        .map(|a| format!("http://{a}"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve::run(
        listener,
        state,
        Duration::from_secs(5),
        false,
        async move {
            let _ = rx.await;
        },
    ));
    TestRegistry {
        api: Api::new(format!("http://{addr}")),
        dir,
        registry,
        proxy,
        debug,
        notifier,
        health,
        stop: Some(tx),
    }
}

pub const DRIVERS: [&str; 2] = ["inmemory", "filesystem"];
pub const DELETE_ON: &str = "  delete:\n    enabled: true\n";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    use sha2::Sha512;
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts an OCI error response: status, the `errors[0].code`, and the
/// API version header.
pub async fn expect_error(r: Response, status: StatusCode, code: &str) -> String {
    assert_eq!(r.status(), status, "{}", r.url());
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let bytes = r.bytes().await.expect("error body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("error body is JSON");
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Pushes a blob by POST and a monolithic PUT (what every registry
    /// supports; distribution 2.8 ignores `POST ?digest=`); returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("start upload");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "start upload in {repo}");
        let loc = header(&r, "location");
        let loc = if loc.starts_with('/') {
            self.url(&loc)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .client
            .put(format!("{loc}{sep}digest={d}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("push blob");
        assert_eq!(r.status(), StatusCode::CREATED, "push blob to {repo}");
        d
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest")
    }

    /// Pushes a config and one layer and an OCI image manifest naming them
    /// under `tag`; returns the manifest bytes and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Vec<u8>, String) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}");
        let layer = format!("layer of {seed}").repeat(100);
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = oci_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED, "push image manifest");
        let d = sha256(&manifest);
        (manifest, d)
    }
}

impl Api {
    /// Pushes `config` and `layers` into `repo` and a manifest naming them
    /// (Docker schema 2 if `docker`, else OCI with `extra` top-level
    /// fields) by `reference`, else by its digest. Returns the manifest's
    /// bytes, its digest and the digests of its blobs (config first).
    pub async fn push_manifest_of(
        &self,
        repo: &str,
        reference: Option<&str>,
        config: &[u8],
        layers: &[&[u8]],
        docker: bool,
        extra: Option<&str>,
    ) -> (Vec<u8>, String, Vec<String>) {
        let cd = self.push_blob(repo, config).await;
        let mut ls = Vec::new();
        for l in layers {
            ls.push((self.push_blob(repo, l).await, l.len()));
        }
        let refs: Vec<(&str, usize)> = ls.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let (body, media_type) = if docker {
            (docker_manifest(&cd, config.len(), &refs), DOCKER_MANIFEST)
        } else {
            (oci_manifest(&cd, config.len(), &refs, extra), OCI_MANIFEST)
        };
        let digest = sha256(&body);
        let r = self
            .put_manifest(repo, reference.unwrap_or(&digest), media_type, &body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "push a manifest to {repo}");
        let mut blobs = vec![cd];
        blobs.extend(ls.into_iter().map(|(d, _)| d));
        (body, digest, blobs)
    }
}

/// A Docker schema 2 image manifest.
pub fn docker_manifest(config: &str, config_size: usize, layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, n)| {
            format!(
                "{{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"{d}\",\"size\":{n}}}"
            )
        })
        .collect();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{DOCKER_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"{config}\",\"size\":{config_size}}},\"layers\":[{}]}}",
        layers.join(",")
    )
    .into_bytes()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OCI image manifest; `extra` is inserted as further top-level fields.
pub fn oci_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    extra: Option<&str>,
) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, n)| {
            format!(
                "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":{n}}}"
            )
        })
        .collect();
    let extra = extra.map(|e| format!(",{e}")).unwrap_or_default();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config}\",\"size\":{config_size}}},\"layers\":[{}]{extra}}}",
        layers.join(",")
    )
    .into_bytes()
}

/// The path of an external program the test needs, or `None` (after saying
/// so) when it is absent and `REGSTORE_REQUIRE_BACKENDS` is not set. In CI
/// (`REGSTORE_REQUIRE_BACKENDS=1`) an absent program fails the test.
pub fn require_program(name: &str, install_hint: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    regstore_testenv::backend::skip_unless_required(
        name,
        found.ok_or_else(|| format!("not installed ({install_hint})")),
    )
}

/// Fails, naming `label` and `what`, unless `found` (answers a test
/// collected that must not occur: wrong answers, hung requests) is empty.
pub fn assert_none(label: &str, what: &str, found: &[String]) {
    assert!(found.is_empty(), "{label}: {what}: {found:#?}");
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// An in-process regstore on the filesystem driver at `root`.
pub async fn start_on_root(root: &std::path::Path, storage_extra: &str) -> TestRegistry {
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n{storage_extra}",
        root.display()
    );
    start_yaml(&yaml, tempfile::tempdir().expect("temp dir")).await
}

/// POSTs an upload session; returns its Location.
pub async fn begin(reg: &TestRegistry, repo: &str) -> String {
    let r = reg
        .client
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-0");
    let uuid = header(&r, "docker-upload-uuid");
    let loc = header(&r, "location");
    assert!(loc.ends_with(&uuid) && !uuid.is_empty(), "{loc} {uuid}");
    reg.url(&loc)
}

/// The upload URL `loc` with `digest=d` added to its query.
pub fn with_digest(loc: &str, d: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={d}")
}
