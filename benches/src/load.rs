//! The load tool's engine: many concurrent clients pushing and pulling
//! overlapping images against one or more registry instances that share
//! storage, counting every request, every error and every upload session
//! that another instance lost.
//!
//! Each client repeats, until the duration is over (or its iteration cap
//! is reached): push a fresh config blob and an image whose layers are
//! drawn from a small pool shared by all clients (so uploads of one digest
//! run at once, and the blob-exists and mount paths are taken) and, for the
//! last, from a few layers of the client's own,
//! with single-POST, POST+PUT and chunked (POST, PATCH…, PUT) uploads and
//! upload-status GETs; push the manifest under a tag of its own; pull it
//! back and check every byte by SHA-256; every other iteration pull an
//! image another client pushed; every fourth, list tags. With several
//! instances, each request of a client goes to the next instance in turn,
//! so an upload begun on one is continued and finished on another.
//!
//! An upload session counts as *lost* when an instance answers
//! `BLOB_UPLOAD_UNKNOWN` for it, reports fewer or more bytes than were
//! sent (`Range`, 416), or refuses its final digest (`DIGEST_INVALID`).
//!
//! [`run`] drives registries that are already running; [`run_setup`]
//! starts `regstore serve` processes for a [`Setup`] first and samples
//! their memory while the load runs.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use regstore_core::RawParams;
use regstore_testsuite::Rng;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};

use crate::process::{self, Proc, ProcessError};
use crate::registry::{Generator, Latencies, Target};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// How many pushed images clients remember for each other to pull.
const PUBLISHED: usize = 256;

/// Why a load run could not run (failed requests are not errors of the
/// run: they are counted in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The options cannot describe a run.
    #[error("invalid options: {0}")]
    Options(String),
    /// A server could not be started.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A temporary directory or config file could not be written.
    #[error("setup: {0}")]
    Io(#[from] std::io::Error),
    /// A client task panicked or was cancelled.
    #[error("a client task failed: {0}")]
    Task(String),
}

/// The shape and length of a run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// No client starts an iteration after this much time (the iteration
    /// under way finishes).
    pub duration: Duration,
    /// If set, no client runs more iterations than this.
    pub iterations: Option<u64>,
    /// Layers per image; all but the last come from the shared pool.
    pub layers: usize,
    /// Bytes per layer.
    pub layer_size: u64,
    /// Bytes per PATCH of a chunked upload (and per piece of a streamed body).
    pub chunk_size: usize,
    /// Layers in the pool shared by all clients (at least `layers - 1`).
    pub pool: usize,
    /// Layers each client cycles through as the last layer of its images
    /// (its own, shared with no other client): new content for the first
    /// `own_layers` iterations, pushes of content the registry already
    /// holds after that, so the storage a long run fills stays bounded
    /// (`clients × own_layers` layers, plus configs and manifests).
    pub own_layers: usize,
    /// Repositories `load/r<i>` the clients push into (a client changes
    /// repository every iteration).
    pub repos: usize,
    /// Seed of all content and all choices.
    pub seed: u64,
    /// Limit on each request.
    pub request_timeout: Duration,
}

impl Default for LoadOptions {
    /// 50 clients for 60 s, images of 4 layers of 512 KiB (3 shared, from
    /// a pool of 8; the last one of 4 of the client's own) pushed in
    /// 128 KiB chunks into 10 repositories.
    fn default() -> Self {
        LoadOptions {
            clients: 50,
            duration: Duration::from_secs(60),
            iterations: None,
            layers: 4,
            layer_size: 512 << 10,
            chunk_size: 128 << 10,
            pool: 8,
            own_layers: 4,
            repos: 10,
            seed: 1,
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl LoadOptions {
    fn check(&self) -> Result<(), LoadError> {
        let bad = |why: &str| Err(LoadError::Options(why.to_owned()));
        if self.clients == 0 || self.layers == 0 || self.repos == 0 || self.own_layers == 0 {
            return bad("clients, layers, own layers and repos must be at least 1");
        }
        if self.layer_size == 0 || self.chunk_size == 0 {
            return bad("layer and chunk sizes must be at least 1 byte");
        }
        if self.pool < self.layers - 1 {
            return bad("the shared pool must hold at least layers - 1 layers");
        }
        Ok(())
    }

    fn shared_layers(&self) -> usize {
        self.layers - 1
    }
}

/// One kind of request the clients make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `HEAD /v2/<name>/blobs/<digest>`: does the repository have it?
    BlobHead,
    /// `POST …/blobs/uploads/?digest=` with the whole blob.
    UploadSinglePost,
    /// `POST …/blobs/uploads/`: a session.
    UploadPost,
    /// `POST …/blobs/uploads/?mount=&from=`.
    MountPost,
    /// `PATCH` of a chunk to a session.
    UploadPatch,
    /// `GET` of a session: how many bytes it holds.
    UploadStatus,
    /// The final `PUT …?digest=` of a session.
    UploadPut,
    /// `PUT /v2/<name>/manifests/<tag>`.
    ManifestPut,
    /// `GET /v2/<name>/manifests/<tag or digest>`.
    ManifestGet,
    /// `GET /v2/<name>/blobs/<digest>`, the body read and hashed.
    BlobGet,
    /// `GET /v2/<name>/tags/list?n=1&last=…`.
    TagsList,
}

impl Op {
    /// Every kind, in the order of the table.
    pub const ALL: [Op; 11] = [
        Op::BlobHead,
        Op::UploadSinglePost,
        Op::UploadPost,
        Op::MountPost,
        Op::UploadPatch,
        Op::UploadStatus,
        Op::UploadPut,
        Op::ManifestPut,
        Op::ManifestGet,
        Op::BlobGet,
        Op::TagsList,
    ];

    /// How the table names it.
    pub fn name(self) -> &'static str {
        match self {
            Op::BlobHead => "blob HEAD",
            Op::UploadSinglePost => "upload POST ?digest (single request)",
            Op::UploadPost => "upload POST (session)",
            Op::MountPost => "mount POST",
            Op::UploadPatch => "upload PATCH",
            Op::UploadStatus => "upload GET (status)",
            Op::UploadPut => "upload PUT",
            Op::ManifestPut => "manifest PUT",
            Op::ManifestGet => "manifest GET",
            Op::BlobGet => "blob GET",
            Op::TagsList => "tags list",
        }
    }
}

/// Requests, failures and latencies of one [`Op`].
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    /// Requests sent (answered or not).
    pub requests: u64,
    /// Requests that failed: no answer, an unexpected status, or content
    /// that did not check out.
    pub errors: u64,
    /// Latency of each answered request, to the end of its body.
    pub latencies: Latencies,
}

/// One instance's memory over a run, from `/proc/<pid>/status`.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// The instance's name.
    pub name: String,
    /// Peak resident set (`VmHWM`) at the end of the run, KiB.
    pub peak_kib: Option<u64>,
    /// Resident set (`VmRSS`) at half time, KiB.
    pub half_kib: Option<u64>,
    /// Resident set at the end, KiB.
    pub end_kib: Option<u64>,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What was run against: the [`Setup`]'s name (`fs`, `s3-pair`), or
    /// the instances' names joined by ` + ` (from [`run`]).
    pub setup: String,
    /// How many instances served it.
    pub instances: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Per kind of request.
    pub ops: BTreeMap<Op, OpStats>,
    /// Failures by kind: `<op>: <status> <code>`, `<op>: transport …`,
    /// `<op>: <what did not check out>`.
    pub errors: BTreeMap<String, u64>,
    /// Upload sessions started (POST answered 202, mounts that fell back
    /// included).
    pub sessions: u64,
    /// Sessions an instance lost (see the module documentation).
    pub sessions_lost: u64,
    /// Images (config, layers, manifest) pushed completely.
    pub images_pushed: u64,
    /// Images pulls begun (manifest GET).
    pub pulls: u64,
    /// Image pulls whose manifest and every blob hashed to their digests.
    pub pulls_verified: u64,
    /// Blobs pulled and checked by SHA-256.
    pub blobs_verified: u64,
    /// Bytes sent in blob uploads.
    pub bytes_pushed: u64,
    /// Bytes of blob bodies pulled.
    pub bytes_pulled: u64,
    /// The memory of each instance started by [`run_setup`] (empty for
    /// [`run`] without process ids).
    pub memory: Vec<Memory>,
}

impl Report {
    /// All requests sent.
    pub fn requests(&self) -> u64 {
        self.ops.values().map(|s| s.requests).sum()
    }

    /// All failures counted.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The largest peak RSS of the instances, KiB (0 when unknown).
    pub fn max_peak_kib(&self) -> u64 {
        self.memory
            .iter()
            .filter_map(|m| m.peak_kib)
            .max()
            .unwrap_or(0)
    }

    /// Adds the counts of `s` (one client's) to this report's.
    fn merge(&mut self, s: Report) {
        for (op, o) in s.ops {
            let mine = self.ops.entry(op).or_default();
            mine.requests += o.requests;
            mine.errors += o.errors;
            mine.latencies.append(o.latencies);
        }
        for (k, n) in s.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.sessions += s.sessions;
        self.sessions_lost += s.sessions_lost;
        self.images_pushed += s.images_pushed;
        self.pulls += s.pulls;
        self.pulls_verified += s.pulls_verified;
        self.blobs_verified += s.blobs_verified;
        self.bytes_pushed += s.bytes_pushed;
        self.bytes_pulled += s.bytes_pulled;
    }

    /// The report as Markdown: a heading, the per-operation table, the
    /// instances' memory, the totals and the errors by kind.
    pub fn to_markdown(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mib =
            |kib: Option<u64>| kib.map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut out = format!(
            "### {}: {} instance{}, {} clients, {:.0} s\n\n| operation | requests | errors | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n",
            self.setup,
            self.instances,
            if self.instances == 1 { "" } else { "s" },
            self.clients,
            secs
        );
        for op in Op::ALL {
            let Some(s) = self.ops.get(&op) else { continue };
            let l = &s.latencies;
            out.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
                op.name(),
                s.requests,
                s.errors,
                ms(l.percentile(50.0)),
                ms(l.percentile(99.0)),
                ms(l.percentile(100.0))
            ));
        }
        out.push_str(&format!(
            "| **all** | **{}** ({:.0}/s) | **{}** | | | |\n",
            self.requests(),
            self.requests() as f64 / secs,
            self.error_count()
        ));
        if !self.memory.is_empty() {
            out.push_str(
                "\n| instance | peak RSS (VmHWM) MiB | RSS at half time MiB | RSS at end MiB |\n|---|---:|---:|---:|\n",
            );
            for m in &self.memory {
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    m.name,
                    mib(m.peak_kib),
                    mib(m.half_kib),
                    mib(m.end_kib)
                ));
            }
        }
        out.push_str(&format!(
            "\nUpload sessions: {} started, **{} lost**. Images: {} pushed; {} of {} pulls verified ({} blobs by SHA-256). {:.1} MiB pushed, {:.1} MiB pulled.\n",
            self.sessions,
            self.sessions_lost,
            self.images_pushed,
            self.pulls_verified,
            self.pulls,
            self.blobs_verified,
            self.bytes_pushed as f64 / 1048576.0,
            self.bytes_pulled as f64 / 1048576.0
        ));
        if self.errors.is_empty() {
            out.push_str("Errors: none.\n");
        } else {
            out.push_str("\n| error | count |\n|---|---:|\n");
            for (k, n) in &self.errors {
                out.push_str(&format!("| {k} | {n} |\n"));
            }
        }
        out
    }
}

/// A registry instance the clients send requests to.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its name in the report.
    pub name: String,
    /// Where it listens.
    pub target: Target,
    /// Its process, if its memory is to be sampled.
    pub pid: Option<u32>,
}

/// What to start for [`run_setup`].
#[derive(Clone, Debug)]
pub enum Setup {
    /// One `regstore serve` on the filesystem driver in a temporary
    /// directory.
    Filesystem,
    /// Two `regstore serve` processes on one s3 bucket (these driver
    /// parameters; redirects off, so blob bytes go through the instances).
    S3Pair(RawParams),
}

impl Setup {
    /// `fs` or `s3-pair`.
    pub fn name(&self) -> &'static str {
        match self {
            Setup::Filesystem => "fs",
            Setup::S3Pair(_) => "s3-pair",
        }
    }
}

/// Starts the `regstore` binary at `regstore` as `setup` says, runs the
/// load against it ([`run`]) with the instances' memory sampled, stops
/// the processes and removes the filesystem setup's storage (a temporary
/// directory) before returning.
///
/// # Errors
/// Invalid options, a server that does not start, or a client task that
/// panicked; failed requests are counted in the report instead.
pub async fn run_setup(
    regstore: &Path,
    setup: &Setup,
    o: &LoadOptions,
) -> Result<Report, LoadError> {
    o.check()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.yml");
    let names: &[&'static str] = match setup {
        Setup::Filesystem => {
            std::fs::write(&config, process::quiet_config(&dir.path().join("root")))?;
            &["fs"]
        }
        Setup::S3Pair(params) => {
            // YAML is a superset of JSON: the parameters need no quoting.
            let params = serde_json::to_string(params)
                .map_err(|e| LoadError::Options(format!("s3 parameters: {e}")))?;
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  s3: {params}\n  redirect:\n    disable: true\n"
                ),
            )?;
            &["s3-a", "s3-b"]
        }
    };
    let mut procs: Vec<Proc> = Vec::new();
    let mut instances = Vec::new();
    for &name in names {
        let (p, base) = process::serve_regstore(regstore, name, None, Some(&config)).await?;
        instances.push(Instance {
            name: name.to_owned(),
            target: Target::new(base),
            pid: Some(p.pid()),
        });
        procs.push(p);
    }
    let mut report = run(&instances, o).await?;
    report.setup = setup.name().to_owned();
    drop(procs);
    // Removing a filesystem root after minutes of load can take minutes
    // (one discard per file on this VM): off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(dir))
        .await
        .map_err(|e| LoadError::Task(format!("removing the storage: {e}")))?;
    Ok(report)
}

/// Runs `o.clients` clients against `instances` for `o.duration` (see the
/// module documentation), sampling the memory of each instance that has a
/// process id.
///
/// # Errors
/// Invalid options or no instance, or a client task that panicked.
pub async fn run(instances: &[Instance], o: &LoadOptions) -> Result<Report, LoadError> {
    o.check()?;
    if instances.is_empty() {
        return Err(LoadError::Options("no instance to load".into()));
    }
    let pool = (0..o.pool)
        .map(|j| {
            Blob::generated(
                Generator::new(mix(o.seed, u64::MAX, j as u64), o.layer_size, o.chunk_size),
                OCI_LAYER,
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        instances: instances.to_vec(),
        o: o.clone(),
        pool,
        published: Mutex::new(VecDeque::new()),
    });
    let started = Instant::now();
    let deadline = started + o.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_memory(
        instances
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.pid?)))
            .collect(),
        started + o.duration / 2,
        stop.clone(),
    ));
    let mut tasks = Vec::new();
    for c in 0..o.clients {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(c, shared);
            client.run(deadline).await;
            client.stats
        }));
    }
    let mut report = Report {
        setup: instances
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        instances: instances.len(),
        clients: o.clients,
        ..Report::default()
    };
    let mut failed = None;
    for t in tasks {
        match t.await {
            Ok(stats) => report.merge(stats),
            Err(e) => failed = Some(e.to_string()),
        }
    }
    report.elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    report.memory = sampler
        .await
        .map_err(|e| LoadError::Task(format!("memory sampler: {e}")))?;
    match failed {
        Some(e) => Err(LoadError::Task(e)),
        None => Ok(report),
    }
}

/// Samples `VmRSS` of each `(name, pid)` every 200 ms until `stop`; the
/// last sample before `half` is the half-time figure; `VmHWM` is read at
/// the end.
async fn sample_memory(
    procs: Vec<(String, u32)>,
    half: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Memory> {
    let mut memory: Vec<Memory> = procs
        .iter()
        .map(|(name, _)| Memory {
            name: name.clone(),
            ..Memory::default()
        })
        .collect();
    loop {
        let done = stop.load(Ordering::Relaxed);
        for (m, (_, pid)) in memory.iter_mut().zip(&procs) {
            let rss = process::status_kib(*pid, "VmRSS");
            if Instant::now() <= half || m.half_kib.is_none() {
                m.half_kib = rss;
            }
            m.end_kib = rss.or(m.end_kib);
            if let Some(hwm) = process::status_kib(*pid, "VmHWM") {
                m.peak_kib = Some(hwm.max(m.peak_kib.unwrap_or(0)));
            }
        }
        if done || procs.is_empty() {
            return memory;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// splitmix64 of three words: seeds for content and choices.
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut x = a
        ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(31);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A blob's content: small bytes in memory, or generated piece by piece.
#[derive(Clone, Debug)]
enum Content {
    Small(Bytes),
    Generated(Generator),
}

/// A blob to push, with its digest.
#[derive(Clone, Debug)]
struct Blob {
    content: Content,
    digest: String,
    size: u64,
    media_type: &'static str,
}

impl Blob {
    fn small(data: Bytes, media_type: &'static str) -> Blob {
        Blob {
            digest: sha256(&data),
            size: data.len() as u64,
            content: Content::Small(data),
            media_type,
        }
    }

    fn generated(g: Generator, media_type: &'static str) -> Blob {
        let size = (0..g.pieces()).map(|i| g.piece(i).len() as u64).sum();
        Blob {
            digest: g.digest(),
            size,
            content: Content::Generated(g),
            media_type,
        }
    }

    fn pieces(&self) -> u64 {
        match &self.content {
            Content::Small(_) => 1,
            Content::Generated(g) => g.pieces(),
        }
    }

    fn piece(&self, i: u64) -> Bytes {
        match &self.content {
            Content::Small(b) => b.clone(),
            Content::Generated(g) => g.piece(i),
        }
    }

    /// Every byte, as a request body.
    fn body(&self) -> reqwest::Body {
        match &self.content {
            Content::Small(b) => reqwest::Body::from(b.clone()),
            Content::Generated(g) => g.body(0, g.pieces()),
        }
    }

    fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        })
    }
}

/// An image a client pushed, for any client to pull.
#[derive(Clone, Debug)]
struct Published {
    repo: String,
    digest: String,
    blobs: Vec<(String, u64)>,
}

/// What all clients share.
struct Shared {
    instances: Vec<Instance>,
    o: LoadOptions,
    pool: Vec<Blob>,
    published: Mutex<VecDeque<Published>>,
}

/// A request that failed, already counted.
#[derive(Debug)]
struct Failed {
    status: Option<StatusCode>,
    code: String,
}

impl Failed {
    /// The instance does not know the session, or holds other bytes than
    /// were sent to it.
    fn loses_session(&self) -> bool {
        match self.status {
            Some(StatusCode::NOT_FOUND) => self.code == "BLOB_UPLOAD_UNKNOWN",
            Some(StatusCode::RANGE_NOT_SATISFIABLE) => true,
            Some(StatusCode::BAD_REQUEST) => self.code == "DIGEST_INVALID",
            _ => false,
        }
    }
}

type Step<T> = Result<T, Failed>;

/// An answer, its body read.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// How a blob is uploaded.
#[derive(Clone, Copy, Debug)]
enum Method {
    /// `POST ?digest=` with every byte.
    Single,
    /// `POST`, then `PUT ?digest=` with every byte.
    Monolithic,
    /// `POST`, a `PATCH` per chunk, then an empty `PUT ?digest=`.
    Chunked,
}

struct Client {
    id: usize,
    shared: Arc<Shared>,
    rng: Rng,
    /// Requests sent: the next goes to instance `turn % instances`.
    turn: usize,
    /// Its counts (the report's fields that are not about the run).
    stats: Report,
}

impl Client {
    fn new(id: usize, shared: Arc<Shared>) -> Client {
        Client {
            rng: Rng::new(mix(shared.o.seed, id as u64, 0)),
            id,
            turn: id,
            shared,
            stats: Report::default(),
        }
    }

    async fn run(&mut self, deadline: Instant) {
        let mut i = 0u64;
        while Instant::now() < deadline && self.shared.o.iterations.is_none_or(|n| i < n) {
            // A failure is counted where it happens; the next iteration
            // starts afresh.
            let _ = self.iteration(i).await;
            i += 1;
        }
    }

    fn error(&mut self, op: Op, kind: String) {
        self.stats.ops.entry(op).or_default().errors += 1;
        *self
            .stats
            .errors
            .entry(format!("{}: {kind}", op.name()))
            .or_default() += 1;
    }

    /// Counts content that did not check out as a failure of `op`.
    fn wrong(&mut self, op: Op, what: &str) -> Failed {
        self.error(op, what.to_owned());
        Failed {
            status: None,
            code: what.to_owned(),
        }
    }

    /// Sends the request `build` makes for the next instance's base URL
    /// (the path `path` appended), reads the body and checks the status
    /// against `want`.
    async fn send(
        &mut self,
        op: Op,
        path: &str,
        want: &[StatusCode],
        build: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
    ) -> Step<Answer> {
        let shared = self.shared.clone();
        let instance = &shared.instances[self.turn % shared.instances.len()];
        self.turn = self.turn.wrapping_add(1);
        let url = format!("{}{path}", instance.target.base);
        let request = build(&instance.target.client, url).timeout(shared.o.request_timeout);
        self.stats.ops.entry(op).or_default().requests += 1;
        let t0 = Instant::now();
        let answer = async {
            let r = request.send().await?;
            let status = r.status();
            let headers = r.headers().clone();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers,
                body,
            })
        }
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else if e.is_body() || e.is_decode() {
                    "body"
                } else {
                    "request"
                };
                self.error(op, format!("transport ({kind})"));
                return Err(Failed {
                    status: None,
                    code: kind.to_owned(),
                });
            }
        };
        self.stats
            .ops
            .entry(op)
            .or_default()
            .latencies
            .push(t0.elapsed());
        if want.contains(&answer.status) {
            return Ok(answer);
        }
        let code = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        self.error(
            op,
            format!("{} {code}", answer.status.as_u16())
                .trim_end()
                .to_owned(),
        );
        Err(Failed {
            status: Some(answer.status),
            code,
        })
    }

    fn repo(&self, i: u64) -> String {
        format!(
            "load/r{}",
            (self.id as u64 + i) % self.shared.o.repos as u64
        )
    }

    fn method(&mut self) -> Method {
        match self.rng.below(3) {
            0 => Method::Single,
            1 => Method::Monolithic,
            _ => Method::Chunked,
        }
    }

    async fn iteration(&mut self, i: u64) -> Step<()> {
        let o = self.shared.o.clone();
        let repo = self.repo(i);
        let tag = format!("c{:04}-{i:06}", self.id);
        let config = Blob::small(
            Bytes::from(
                serde_json::json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Labels": {"regstore.load": tag}},
                })
                .to_string(),
            ),
            OCI_CONFIG,
        );
        let mut layers = Vec::with_capacity(o.layers);
        let first = self.rng.below(o.pool.max(1) as u64) as usize;
        for k in 0..o.shared_layers() {
            layers.push(self.shared.pool[(first + k) % o.pool].clone());
        }
        layers.push(Blob::generated(
            Generator::new(
                mix(o.seed, self.id as u64, i % o.own_layers as u64 + 1),
                o.layer_size,
                o.chunk_size,
            ),
            OCI_LAYER,
        ));

        let method = if self.rng.below(2) == 0 {
            Method::Single
        } else {
            Method::Monolithic
        };
        self.push_blob(&repo, &config, method, None).await?;
        for (k, layer) in layers.iter().enumerate() {
            let shared = k < o.shared_layers();
            if shared {
                match self.rng.below(3) {
                    // Already there: nothing to push.
                    0 if self.blob_exists(&repo, layer).await? => continue,
                    1 if o.repos > 1 => {
                        let skip = self.rng.below(o.repos as u64 - 1);
                        let from = self.repo(i + 1 + skip);
                        if let Some(location) = self.mount(&repo, &from, layer).await? {
                            let method = match self.method() {
                                Method::Chunked => Method::Chunked,
                                _ => Method::Monolithic,
                            };
                            self.push_blob(&repo, layer, method, Some(location)).await?;
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let method = self.method();
            self.push_blob(&repo, layer, method, None).await?;
        }

        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }))
        .unwrap_or_default();
        let digest = sha256(&manifest);
        let path = format!("/v2/{repo}/manifests/{tag}");
        let put = self
            .send(Op::ManifestPut, &path, &[StatusCode::CREATED], |c, url| {
                c.put(url)
                    .header("content-type", OCI_MANIFEST)
                    .body(manifest)
            })
            .await?;
        if put.header("docker-content-digest") != digest {
            return Err(self.wrong(
                Op::ManifestPut,
                "Docker-Content-Digest is not the manifest's",
            ));
        }
        self.stats.images_pushed += 1;
        let image = Published {
            repo: repo.clone(),
            digest,
            blobs: std::iter::once(&config)
                .chain(&layers)
                .map(|b| (b.digest.clone(), b.size))
                .collect(),
        };
        {
            let mut published = self
                .shared
                .published
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if published.len() >= PUBLISHED {
                published.pop_front();
            }
            published.push_back(image.clone());
        }

        // Read back what was just pushed, by tag (from the other instance,
        // when there are two).
        self.pull(&image, &tag).await?;
        if self.rng.below(2) == 0 {
            let other = {
                let published = self
                    .shared
                    .published
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let n = published.len() as u64;
                published.get(self.rng.below(n.max(1)) as usize).cloned()
            };
            if let Some(other) = other {
                let reference = other.digest.clone();
                self.pull(&other, &reference).await?;
            }
        }
        if i.is_multiple_of(4) {
            self.check_tag(&repo, &tag, i).await?;
        }
        Ok(())
    }

    /// HEAD of `blob` in `repo`: whether it is there (with its size).
    async fn blob_exists(&mut self, repo: &str, blob: &Blob) -> Step<bool> {
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        let a = self
            .send(
                Op::BlobHead,
                &path,
                &[StatusCode::OK, StatusCode::NOT_FOUND],
                |c, url| c.head(url),
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        if a.header("content-length") != blob.size.to_string() {
            return Err(self.wrong(Op::BlobHead, "Content-Length is not the blob's size"));
        }
        Ok(true)
    }

    /// Mounts `blob` into `repo` from `from`: `None` when mounted, else the
    /// session the registry opened instead.
    async fn mount(&mut self, repo: &str, from: &str, blob: &Blob) -> Step<Option<String>> {
        let path = format!(
            "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
            blob.digest
        );
        let a = self
            .send(
                Op::MountPost,
                &path,
                &[StatusCode::CREATED, StatusCode::ACCEPTED],
                |c, url| c.post(url),
            )
            .await?;
        if a.status == StatusCode::CREATED {
            return Ok(None);
        }
        self.stats.sessions += 1;
        Ok(Some(self.location(Op::MountPost, &a)?))
    }

    /// The path of the session an answer's `Location` names.
    fn location(&mut self, op: Op, a: &Answer) -> Step<String> {
        let l = a.header("location");
        // An absolute URL (`http.host`) names the instance: keep the path,
        // so that any instance can be asked.
        let path = match l.find("://") {
            Some(i) => l[i + 3..].find('/').map_or("", |j| &l[i + 3 + j..]),
            None => l,
        };
        if path.starts_with("/v2/") {
            Ok(path.to_owned())
        } else {
            Err(self.wrong(op, "no upload Location"))
        }
    }

    /// Pushes `blob` to `repo` by `method`, in the session `location` if
    /// given (else one this POSTs).
    async fn push_blob(
        &mut self,
        repo: &str,
        blob: &Blob,
        method: Method,
        location: Option<String>,
    ) -> Step<()> {
        let created = [StatusCode::CREATED];
        if let (Method::Single, None) = (method, &location) {
            let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
            let body = blob.body();
            self.send(Op::UploadSinglePost, &path, &created, |c, url| {
                c.post(url)
                    .header("content-type", "application/octet-stream")
                    .body(body)
            })
            .await?;
            self.stats.bytes_pushed += blob.size;
            return Ok(());
        }
        let mut path = match location {
            Some(l) => l,
            None => {
                let path = format!("/v2/{repo}/blobs/uploads/");
                let a = self
                    .send(Op::UploadPost, &path, &[StatusCode::ACCEPTED], |c, url| {
                        c.post(url)
                    })
                    .await?;
                self.stats.sessions += 1;
                self.location(Op::UploadPost, &a)?
            }
        };
        let result = self.fill_session(blob, method, &mut path).await;
        if let Err(f) = &result
            && f.loses_session()
        {
            self.stats.sessions_lost += 1;
        }
        result
    }

    /// Sends `blob` into the session at `path` and finishes it.
    async fn fill_session(&mut self, blob: &Blob, method: Method, path: &mut String) -> Step<()> {
        let mut final_body = reqwest::Body::from(Vec::new());
        if let Method::Chunked = method {
            let status_after = self.rng.below(blob.pieces() * 3);
            let mut at = 0u64;
            for i in 0..blob.pieces() {
                let piece = blob.piece(i);
                let len = piece.len() as u64;
                let range = format!("{at}-{}", at + len - 1);
                let a = self
                    .send(Op::UploadPatch, path, &[StatusCode::ACCEPTED], |c, url| {
                        c.patch(url)
                            .header("content-type", "application/octet-stream")
                            .header("content-range", &range)
                            .body(piece)
                    })
                    .await?;
                at += len;
                self.stats.bytes_pushed += len;
                self.check_range(Op::UploadPatch, &a, at)?;
                *path = self.location(Op::UploadPatch, &a)?;
                if i == status_after {
                    let a = self
                        .send(
                            Op::UploadStatus,
                            path,
                            &[StatusCode::NO_CONTENT],
                            |c, url| c.get(url),
                        )
                        .await?;
                    self.check_range(Op::UploadStatus, &a, at)?;
                }
            }
        } else {
            final_body = blob.body();
            self.stats.bytes_pushed += blob.size;
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = format!("{path}{sep}digest={}", blob.digest);
        let a = self
            .send(Op::UploadPut, &put, &[StatusCode::CREATED], |c, url| {
                c.put(url)
                    .header("content-type", "application/octet-stream")
                    .body(final_body)
            })
            .await?;
        if a.header("docker-content-digest") != blob.digest {
            return Err(self.wrong(Op::UploadPut, "Docker-Content-Digest is not the blob's"));
        }
        Ok(())
    }

    /// The `Range` of an upload answer must cover the `sent` bytes exactly.
    fn check_range(&mut self, op: Op, a: &Answer, sent: u64) -> Step<()> {
        if a.header("range") == format!("0-{}", sent - 1) {
            Ok(())
        } else {
            // Counted as lost here; the failure has no status, so the
            // caller does not count it again.
            self.stats.sessions_lost += 1;
            Err(self.wrong(op, "Range is not the bytes sent"))
        }
    }

    /// GETs the manifest `reference` of `image` and each of its blobs,
    /// checking every byte against its digest.
    async fn pull(&mut self, image: &Published, reference: &str) -> Step<()> {
        self.stats.pulls += 1;
        let path = format!("/v2/{}/manifests/{reference}", image.repo);
        let a = self
            .send(Op::ManifestGet, &path, &[StatusCode::OK], |c, url| {
                c.get(url).header("accept", OCI_MANIFEST)
            })
            .await?;
        if sha256(&a.body) != image.digest {
            return Err(self.wrong(Op::ManifestGet, "manifest does not hash to its digest"));
        }
        for (digest, size) in &image.blobs {
            let path = format!("/v2/{}/blobs/{digest}", image.repo);
            let a = self
                .send(Op::BlobGet, &path, &[StatusCode::OK], |c, url| c.get(url))
                .await?;
            self.stats.bytes_pulled += a.body.len() as u64;
            if a.body.len() as u64 != *size || &sha256(&a.body) != digest {
                return Err(self.wrong(Op::BlobGet, "blob does not hash to its digest"));
            }
            self.stats.blobs_verified += 1;
        }
        self.stats.pulls_verified += 1;
        Ok(())
    }

    /// The tag list of `repo` after this client's previous tag (`n=1`) must
    /// be `tag`, the one it just pushed.
    async fn check_tag(&mut self, repo: &str, tag: &str, i: u64) -> Step<()> {
        // Tags sort as strings: `c0007` comes before `c0007-000000`, and
        // this client's previous tag before its current one.
        let last = match i {
            0 => format!("c{:04}", self.id),
            _ => format!("c{:04}-{:06}", self.id, i - 1),
        };
        let path = format!("/v2/{repo}/tags/list?n=1&last={last}");
        let a = self
            .send(Op::TagsList, &path, &[StatusCode::OK], |c, url| c.get(url))
            .await?;
        let tags = serde_json::from_slice::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v["tags"].as_array().cloned())
            .unwrap_or_default();
        if tags.len() == 1 && tags[0].as_str() == Some(tag) {
            Ok(())
        } else {
            Err(self.wrong(Op::TagsList, "tags list does not show the tag just pushed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_options_are_refused() {
        let o = LoadOptions {
            pool: 2,
            layers: 4,
            ..LoadOptions::default()
        };
        assert!(matches!(o.check(), Err(LoadError::Options(_))));
        let o = LoadOptions {
            clients: 0,
            ..LoadOptions::default()
        };
        assert!(matches!(o.check(), Err(LoadError::Options(_))));
        assert!(LoadOptions::default().check().is_ok());
    }

    #[test]
    fn lost_sessions_are_told_from_other_failures() {
        let f = |status: u16, code: &str| Failed {
            status: StatusCode::from_u16(status).ok(),
            code: code.to_owned(),
        };
        assert!(f(404, "BLOB_UPLOAD_UNKNOWN").loses_session());
        assert!(f(416, "").loses_session());
        assert!(f(400, "DIGEST_INVALID").loses_session());
        assert!(!f(404, "BLOB_UNKNOWN").loses_session());
        assert!(!f(500, "UNKNOWN").loses_session());
        assert!(
            !Failed {
                status: None,
                code: "timeout".into()
            }
            .loses_session()
        );
    }

    #[test]
    fn generated_blobs_know_their_size_and_digest() {
        let g = Generator::new(7, 1000, 300);
        let b = Blob::generated(g.clone(), OCI_LAYER);
        assert_eq!(b.size, 1000);
        assert_eq!(b.pieces(), 4);
        let all: Vec<u8> = (0..4).flat_map(|i| b.piece(i).to_vec()).collect();
        assert_eq!(all.len(), 1000);
        assert_eq!(sha256(&all), b.digest);
    }

    #[tokio::test]
    async fn run_without_instances_is_refused() {
        let r = run(&[], &LoadOptions::default()).await;
        assert!(matches!(r, Err(LoadError::Options(_))));
    }
}
