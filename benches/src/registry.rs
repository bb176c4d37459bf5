//! Registry workloads over HTTP against any OCI Distribution registry at a
//! base URL: pushes (one request, 8 MiB chunks, many small blobs), pulls,
//! manifest GET and blob HEAD under concurrency, the catalog and tag lists.
//!
//! Used by the `server-bench` binary, which runs the same work against
//! `regstore serve`, Debian's `docker-registry` and nginx. Every function
//! checks the registry's answers, so a fast wrong answer is an error, not a
//! good figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use sha2::{Digest as _, Sha256};

/// What went wrong in a workload.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The HTTP request failed.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The registry answered, but not as the API says it must.
    #[error("{what}: expected {expected}, got {got}: {body}")]
    Status {
        /// The request.
        what: String,
        /// The status wanted.
        expected: u16,
        /// The status received.
        got: u16,
        /// The start of the response body.
        body: String,
    },
    /// The content came back different.
    #[error("{0}")]
    Content(String),
}

type Result<T> = std::result::Result<T, BenchError>;

/// Latencies of many requests, for percentiles.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// The `p`-th percentile (0–100), zero if empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }

    /// Records one more.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Records all of `other`'s too.
    pub fn append(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if none were recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A rate measured over a run: operations, wall time, latencies.
#[derive(Clone, Debug)]
pub struct Rate {
    /// Operations completed.
    pub ops: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Each operation's latency.
    pub latencies: Latencies,
}

impl Rate {
    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds the operations, time and latencies of another run of the same
    /// work (a later round), so that the rate is over all rounds.
    pub fn add(&mut self, other: Rate) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.append(other.latencies);
    }
}

/// Deterministic incompressible bytes, produced in pieces so a 512 MiB blob
/// never sits in memory whole.
#[derive(Clone, Debug)]
pub struct Generator {
    seed: u64,
    size: u64,
    piece: usize,
}

impl Generator {
    /// `size` bytes from `seed`, in pieces of `piece` bytes.
    pub fn new(seed: u64, size: u64, piece: usize) -> Self {
        Generator { seed, size, piece }
    }

    /// Piece `i` (the last may be short).
    pub fn piece(&self, i: u64) -> Bytes {
        let start = i * self.piece as u64;
        let len = (self.size.saturating_sub(start)).min(self.piece as u64) as usize;
        let mut x = self.seed ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        Bytes::from(out)
    }

    /// How many pieces.
    pub fn pieces(&self) -> u64 {
        self.size.div_ceil(self.piece as u64)
    }

    /// The bytes from piece `from` up to (not including) piece `to`, as a
    /// request body stream.
    pub fn body(&self, from: u64, to: u64) -> reqwest::Body {
        let g = self.clone();
        let stream =
            futures_util::stream::iter(from..to).map(move |i| Ok::<_, std::io::Error>(g.piece(i)));
        reqwest::Body::wrap_stream(stream)
    }

    /// All the pieces, generated now: for a measure that should time the
    /// registry and not the generation of its client's bytes (a client
    /// pushing from files has them at hand).
    pub fn in_memory(&self) -> Pieces {
        Pieces((0..self.pieces()).map(|i| self.piece(i)).collect())
    }

    /// `sha256:<hex>` of all the bytes (one pass, before timing).
    pub fn digest(&self) -> String {
        sha256_of((0..self.pieces()).map(|i| self.piece(i)))
    }
}

/// `sha256:<hex>` of `pieces` in order.
fn sha256_of<B: AsRef<[u8]>>(pieces: impl IntoIterator<Item = B>) -> String {
    let mut h = Sha256::new();
    for p in pieces {
        h.update(p);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A blob held in memory as pieces ([`Generator::in_memory`]).
#[derive(Clone, Debug)]
pub struct Pieces(Vec<Bytes>);

impl Pieces {
    /// The pieces, in order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.0
    }

    /// All the bytes as a request body stream (no copy).
    pub fn body(&self) -> reqwest::Body {
        let stream =
            futures_util::stream::iter(self.0.clone().into_iter().map(Ok::<_, std::io::Error>));
        reqwest::Body::wrap_stream(stream)
    }

    /// `sha256:<hex>` of all the bytes.
    pub fn digest(&self) -> String {
        sha256_of(&self.0)
    }

    /// Another blob of the same size: these bytes with the first one set
    /// to `first` (only the first piece is copied). Rounds that push a new
    /// variant each time measure a push, not the replacement of a stored
    /// copy of the same digest (which deletes the old file first).
    pub fn variant(&self, first: u8) -> Pieces {
        let mut pieces = self.0.clone();
        if let Some(head) = pieces.first_mut() {
            let mut copy = head.to_vec();
            if let Some(b) = copy.first_mut() {
                *b = first;
            }
            *head = Bytes::from(copy);
        }
        Pieces(pieces)
    }
}

/// A registry under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// One client with a connection pool large enough for the concurrency.
    pub client: Client,
}

fn http(what: &str) -> impl FnOnce(reqwest::Error) -> BenchError + '_ {
    move |source| BenchError::Http {
        what: what.to_owned(),
        source,
    }
}

/// The response if its status is `expected`, else an error quoting the body.
async fn expect(
    what: &str,
    r: reqwest::Response,
    expected: StatusCode,
) -> Result<reqwest::Response> {
    if r.status() == expected {
        return Ok(r);
    }
    let got = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    Err(BenchError::Status {
        what: what.to_owned(),
        expected: expected.as_u16(),
        got,
        body: body.chars().take(300).collect(),
    })
}

impl Target {
    /// A target at `base`.
    pub fn new(base: impl Into<String>) -> Self {
        Target::with_headers(base, reqwest::header::HeaderMap::new())
    }

    /// A target at `base` whose every request carries `authorization`
    /// (`Basic …`, `Bearer …`) as its `Authorization` header.
    pub fn with_authorization(
        base: impl Into<String>,
        mut authorization: reqwest::header::HeaderValue,
    ) -> Self {
        authorization.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, authorization);
        Target::with_headers(base, headers)
    }

    fn with_headers(base: impl Into<String>, headers: reqwest::header::HeaderMap) -> Self {
        Target {
            base: base.into(),
            client: regstore_testenv::backend::http_client()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(600))
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
        }
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_owned()
        }
    }

    /// Starts an upload; returns its absolute Location.
    pub async fn start_upload(&self, repo: &str) -> Result<String> {
        let what = format!("POST /v2/{repo}/blobs/uploads/");
        let r = self
            .client
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .map_err(http(&what))?;
        let r = expect(&what, r, StatusCode::ACCEPTED).await?;
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(self.absolute(loc))
    }

    async fn finish(&self, location: &str, digest: &str, body: reqwest::Body) -> Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let what = format!("PUT upload ?digest={digest}");
        let r = self
            .client
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(http(&what))?;
        expect(&what, r, StatusCode::CREATED).await.map(|_| ())
    }

    /// Pushes `blob` with POST then one PUT carrying every byte.
    pub async fn push_monolithic(&self, repo: &str, blob: &Pieces, digest: &str) -> Result<()> {
        let loc = self.start_upload(repo).await?;
        self.finish(&loc, digest, blob.body()).await
    }

    /// Pushes `blob` as one PATCH per piece (with `Content-Range`), then an
    /// empty PUT.
    pub async fn push_chunked(&self, repo: &str, blob: &Pieces, digest: &str) -> Result<()> {
        let mut loc = self.start_upload(repo).await?;
        let mut at = 0u64;
        for (i, piece) in blob.pieces().iter().enumerate() {
            let len = piece.len() as u64;
            let what = format!("PATCH chunk {i}");
            let r = self
                .client
                .patch(&loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{at}-{}", at + len - 1))
                .header("content-length", len)
                .body(piece.clone())
                .send()
                .await
                .map_err(http(&what))?;
            let r = expect(&what, r, StatusCode::ACCEPTED).await?;
            if let Some(l) = r.headers().get("location").and_then(|v| v.to_str().ok()) {
                loc = self.absolute(l);
            }
            at += len;
        }
        self.finish(&loc, digest, reqwest::Body::from(Vec::new()))
            .await
    }

    /// Pushes a small blob (POST then PUT).
    pub async fn push_small(&self, repo: &str, data: Bytes) -> Result<String> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let loc = self.start_upload(repo).await?;
        self.finish(&loc, &digest, reqwest::Body::from(data))
            .await?;
        Ok(digest)
    }

    /// GETs `url` and streams the body; returns its length and digest.
    pub async fn pull(&self, url: &str) -> Result<(u64, String)> {
        let mut h = Sha256::new();
        let n = self.read(url, |chunk| h.update(chunk)).await?;
        Ok((n, format!("sha256:{}", hex::encode(h.finalize()))))
    }

    /// GETs `url` and streams the body, doing nothing with it: what a
    /// transfer costs the server, with the client's work kept out.
    pub async fn drain(&self, url: &str) -> Result<u64> {
        self.read(url, |_| {}).await
    }

    /// GETs `url` (200 expected), giving each chunk of the body to `each`;
    /// returns the length.
    async fn read(&self, url: &str, mut each: impl FnMut(&[u8])) -> Result<u64> {
        let what = format!("GET {url}");
        let r = self.client.get(url).send().await.map_err(http(&what))?;
        let r = expect(&what, r, StatusCode::OK).await?;
        let mut n = 0u64;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(http(&what))?;
            n += chunk.len() as u64;
            each(&chunk);
        }
        Ok(n)
    }

    /// Pushes a config and manifest (OCI) to `repo:tag`, the config blob
    /// `config` already present in `repo`; returns the manifest digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        config: &str,
        size: usize,
    ) -> Result<String> {
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config}\",\"size\":{size}}},\"layers\":[]}}"
        );
        let what = format!("PUT /v2/{repo}/manifests/{tag}");
        let r = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .map_err(http(&what))?;
        expect(&what, r, StatusCode::CREATED).await?;
        Ok(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(manifest.as_bytes()))
        ))
    }

    /// `total` requests of `method` on `path` from `connections` concurrent
    /// tasks; each must answer 200.
    pub async fn hammer(
        &self,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        connections: usize,
        total: usize,
    ) -> Result<Rate> {
        let url = Arc::new(format!("{}{path}", self.base));
        let accept = accept.map(str::to_owned);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..connections {
            let n = total / connections + usize::from(t < total % connections);
            let client = self.client.clone();
            let url = url.clone();
            let method = method.clone();
            let accept = accept.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t0 = Instant::now();
                    let mut req = client.request(method.clone(), url.as_str());
                    if let Some(a) = &accept {
                        req = req.header("accept", a);
                    }
                    let r = req.send().await.map_err(http(&url))?;
                    let r = expect(&url, r, StatusCode::OK).await?;
                    r.bytes().await.map_err(http(&url))?;
                    lat.push(t0.elapsed());
                }
                Ok::<_, BenchError>(lat)
            }));
        }
        let mut all = Vec::with_capacity(total);
        for t in tasks {
            let lat = t
                .await
                .map_err(|e| BenchError::Content(format!("a request task failed: {e}")))??;
            all.extend(lat);
        }
        Ok(Rate {
            ops: all.len(),
            elapsed: started.elapsed(),
            latencies: Latencies(all),
        })
    }

    /// `count` pushes of distinct `size`-byte blobs from `threads` tasks,
    /// blob `first + i` for the `i`th push (the same `first` pushes the
    /// same blobs again: a later round passes a new one).
    pub async fn small_pushes(
        &self,
        repo: &str,
        first: u64,
        count: usize,
        size: usize,
        threads: usize,
    ) -> Result<Rate> {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..threads {
            let me = self.clone();
            let repo = repo.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = t;
                while i < count {
                    let data = Generator::new(first + i as u64 + 1, size as u64, size).piece(0);
                    let t0 = Instant::now();
                    me.push_small(&repo, data).await?;
                    lat.push(t0.elapsed());
                    i += threads;
                }
                Ok::<_, BenchError>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(
                t.await
                    .map_err(|e| BenchError::Content(format!("a push task failed: {e}")))??,
            );
        }
        Ok(Rate {
            ops: all.len(),
            elapsed: started.elapsed(),
            latencies: Latencies(all),
        })
    }

    /// Creates `count` repositories `cat/r<i>`, each with one manifest.
    pub async fn populate_catalog(&self, count: usize, threads: usize) -> Result<()> {
        let mut tasks = Vec::new();
        for t in 0..threads {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < count {
                    let repo = format!("cat/r{i:05}");
                    let config =
                        Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
                    let size = config.len();
                    let d = me.push_small(&repo, config).await?;
                    me.push_manifest(&repo, "latest", &d, size).await?;
                    i += threads;
                }
                Ok::<_, BenchError>(())
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| BenchError::Content(format!("a populate task failed: {e}")))??;
        }
        Ok(())
    }

    /// Pushes one small config blob to `repo` and `count` tags `t<i>` of
    /// one manifest referencing it, from `threads` tasks.
    pub async fn populate_tags(&self, repo: &str, count: usize, threads: usize) -> Result<()> {
        let config = Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}");
        let size = config.len();
        let digest = self.push_small(repo, config).await?;
        let mut tasks = Vec::new();
        for t in 0..threads {
            let me = self.clone();
            let (repo, digest) = (repo.to_owned(), digest.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while i < count {
                    me.push_manifest(&repo, &format!("t{i:05}"), &digest, size)
                        .await?;
                    i += threads;
                }
                Ok::<_, BenchError>(())
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| BenchError::Content(format!("a tag task failed: {e}")))??;
        }
        Ok(())
    }

    /// GETs the tags of `repo` (`?n=` when `n` is given), following `Link`
    /// pages; returns the tags.
    pub async fn tags(&self, repo: &str, n: Option<usize>) -> Result<Vec<String>> {
        let query = n.map(|n| format!("?n={n}")).unwrap_or_default();
        let first = format!("{}/v2/{repo}/tags/list{query}", self.base);
        self.pages(first, "tags").await
    }

    /// GETs the catalog with `n`, following `Link` pages; returns the names.
    pub async fn catalog(&self, n: usize) -> Result<Vec<String>> {
        self.pages(format!("{}/v2/_catalog?n={n}", self.base), "repositories")
            .await
    }

    /// GETs `first` and the pages its `Link` headers lead to; returns the
    /// strings of the array `key` of every page, in order.
    async fn pages(&self, first: String, key: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(BenchError::Content(format!("{key}: the list never ends")));
            }
            let r = self.client.get(&url).send().await.map_err(http(&url))?;
            let r = expect(&url, r, StatusCode::OK).await?;
            next = r
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.strip_prefix('<'))
                .and_then(|l| l.split('>').next())
                .map(|p| self.absolute(p));
            let body: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.map_err(http(&url))?)
                    .map_err(|e| BenchError::Content(format!("{key}: not JSON: {e}")))?;
            for v in body[key].as_array().into_iter().flatten() {
                if let Some(s) = v.as_str() {
                    names.push(s.to_owned());
                }
            }
        }
        Ok(names)
    }
}
