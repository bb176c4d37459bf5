//! The pull-through cache (distribution's `proxy:` section) end to end:
//! regstore in proxy mode in-process (filesystem driver in a temporary
//! directory) in front of Debian's `docker-registry` (docker/distribution
//! 2.8.2) as the upstream, with a counting relay ([`common::relay`])
//! between them that sees every upstream request, cuts a body on demand and
//! can be stopped.
//!
//! What is tested: skopeo pulls through an open and an htpasswd upstream
//! (and a second pull within the ttl makes no upstream request at all);
//! wrong upstream credentials are an error naming the refusal; a blob HEAD
//! miss fetches nothing; 20 concurrent GETs of a 64 MiB blob fetch it
//! upstream once; upstream's 404s are `MANIFEST_UNKNOWN`/`BLOB_UNKNOWN`,
//! an unreachable upstream is 503 `UNAVAILABLE`; cached content is served
//! with the upstream down, uncached content is an OCI error; an upstream
//! body cut short stores nothing and the next GET fetches again; pushes
//! and deletes are 405 `UNSUPPORTED` and reach no upstream; the tag list is
//! upstream's and the catalog lists what was pulled; ttl expiry deletes
//! cached content (also after a restart, from the stored files' times); a
//! tag is revalidated with upstream once per ttl window and not within it,
//! on every request with `ttl: 0`. `relay_*` check the harness itself
//! against the upstream (no proxy), and run before the proxy exists.
//!
//! Needs `/usr/bin/docker-registry` and skopeo (`scripts/clients.sh
//! install`); without them the tests say so and pass, unless
//! `REGSTORE_REQUIRE_BACKENDS=1`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::distribution::{self, Distribution};
use common::relay::Relay;
use common::users::write_htpasswd;
use common::*;
use futures_util::StreamExt;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const REPO: &str = "lib/app";
const HINT: &str = "scripts/clients.sh install";
/// What a client pulling any image accepts.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn registry_program() -> Option<PathBuf> {
    require_program("docker-registry", HINT)
}

fn skopeo_program() -> Option<PathBuf> {
    require_program("skopeo", HINT)
}

/// An image pushed upstream: its manifest, digest, and its blobs
/// (config, then the layer) with their bytes.
#[derive(Clone)]
struct Image {
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

/// A `docker-registry` over its own root with `lib/app:v1`, `v2`, `v3`.
struct Upstream {
    dist: Distribution,
    /// v1, v2, v3.
    images: Vec<Image>,
    _root: tempfile::TempDir,
}

/// Pushes an OCI image (a config and one layer, both derived from `seed`)
/// as `REPO:tag` through `api`.
async fn push_image_of(api: &Api, tag: &str, seed: &str) -> Image {
    let config =
        format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"{seed}\"}}").into_bytes();
    let layer = format!("layer of {seed}\n").repeat(100).into_bytes();
    let (manifest, digest, blobs) = api
        .push_manifest_of(REPO, Some(tag), &config, &[&layer], false, None)
        .await;
    assert_eq!(blobs.len(), 2);
    Image {
        manifest,
        digest,
        blobs: vec![(blobs[0].clone(), config), (blobs[1].clone(), layer)],
    }
}

async fn push_scene(api: &Api) -> Vec<Image> {
    let mut images = Vec::new();
    for (tag, seed) in [("v1", "one"), ("v2", "two"), ("v3", "three")] {
        images.push(push_image_of(api, tag, seed).await);
    }
    images
}

/// An open `docker-registry` with the three images.
/// [`open_upstream`] with the relay in front; `None` without
/// `docker-registry` (see [`require_program`]).
async fn relayed_upstream() -> Option<(Upstream, Relay)> {
    let up = upstream().await?;
    let relay = Relay::start(&up.dist.api.base).await;
    Some((up, relay))
}

/// [`open_upstream`], or `None` without `docker-registry`.
async fn upstream() -> Option<Upstream> {
    Some(open_upstream(&registry_program()?).await)
}

async fn open_upstream(program: &Path) -> Upstream {
    let root = tempfile::tempdir().unwrap();
    let dist = distribution::serve(program, root.path()).await;
    let images = push_scene(&dist.api).await;
    Upstream {
        dist,
        images,
        _root: root,
    }
}

/// The proxy's config: filesystem at `root`, deletes on, `proxy:` with
/// `remoteurl` and the `extra` lines (indented by two: `  ttl: 2s\n`).
fn proxy_yaml(root: &Path, remote: &str, extra: &str) -> String {
    format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nproxy:\n  remoteurl: {remote}\n{extra}",
        root.display()
    )
}

/// An in-process proxy of `remote` on a fresh root ([`root_of`]).
async fn start_proxy(remote: &str, extra: &str) -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    start_yaml(&proxy_yaml(&root, remote, extra), dir).await
}

fn root_of(reg: &TestRegistry) -> PathBuf {
    reg.dir.path().join("root")
}

/// Where the filesystem driver keeps the bytes of blob `digest`.
fn blob_data(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    root.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Polls (every 250 ms, at most `limit`) until `cond` holds; false if it
/// never did.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    for _ in 0..(limit.as_millis() / 250 + 1) {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cond()
}

/// `GET` of a manifest by tag or digest, accepting every manifest type.
async fn get_manifest(api: &Api, repo: &str, reference: &str) -> Response {
    api.client
        .get(api.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", ACCEPT)
        .send()
        .await
        .expect("GET manifest")
}

/// `GET` of `REPO:reference`'s manifest; asserts 200 and returns the
/// `Docker-Content-Digest` and the body (checked against each other).
async fn manifest_ok(api: &Api, reference: &str) -> (String, Vec<u8>) {
    let r = get_manifest(api, REPO, reference).await;
    assert_eq!(r.status(), StatusCode::OK, "GET manifest {reference}");
    let digest = header(&r, "docker-content-digest");
    let body = r.bytes().await.expect("manifest body").to_vec();
    assert_eq!(sha256(&body), digest, "manifest {reference}");
    (digest, body)
}

/// `GET` of a blob of `repo`; asserts 200 and that the body is `data`.
async fn blob_ok(api: &Api, repo: &str, digest: &str, data: &[u8]) {
    let r = api
        .client
        .get(api.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(r.status(), StatusCode::OK, "GET blob {digest}");
    let body = r.bytes().await.expect("blob body");
    assert!(body[..] == data[..], "blob {digest}: wrong bytes");
}

/// Pulls an image the way a client does: its manifest by `reference`,
/// then its blobs, through `api`; asserts everything is right.
async fn pull(api: &Api, reference: &str, image: &Image) {
    let (digest, body) = manifest_ok(api, reference).await;
    assert_eq!(digest, image.digest);
    assert_eq!(body, image.manifest);
    for (d, data) in &image.blobs {
        blob_ok(api, REPO, d, data).await;
    }
}

/// Asserts an error answer: not 2xx, an OCI error body
/// `{"errors":[{"code","message"}]}` with a code and a non-empty message.
/// Returns the status, code and message.
async fn oci_error(r: Response) -> (StatusCode, String, String) {
    let status = r.status();
    let url = r.url().to_string();
    assert!(!status.is_success(), "{url}: {status}, expected an error");
    let body = r.bytes().await.expect("error body");
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{url}: {status}: body is not JSON ({e}): {}", text(&body)));
    let code = v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!code.is_empty(), "{url}: no error code in {v}");
    assert!(!message.is_empty(), "{url}: no error message in {v}");
    (status, code, message)
}

/// `n` pseudo-random bytes (xorshift64*; incompressible enough, and fast
/// in a debug build).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The digest and length of a response body, read as a stream; the error
/// if the transfer breaks.
async fn stream_digest(r: Response) -> Result<(String, u64), reqwest::Error> {
    let mut hash = Sha256::new();
    let mut n = 0u64;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        hash.update(&chunk);
    }
    Ok((format!("sha256:{}", hex::encode(hash.finalize())), n))
}

/// `skopeo copy --src-tls-verify=false docker://HOST/REPO:tag dir:DIR` (in
/// a blocking thread: the registry it pulls from may be in this process);
/// checks the copied blobs against their digests and returns the copied
/// manifest's digest and JSON. (`dir:` keeps the manifest byte for byte;
/// `oci:` would compress the uncompressed test layers.)
async fn skopeo_pull(skopeo: &Path, base: &str, tag: &str, dir: &Path) -> (String, Value) {
    let host = base.trim_start_matches("http://").to_owned();
    let skopeo = skopeo.to_owned();
    let dir = dir.to_owned();
    let tag = tag.to_owned();
    tokio::task::spawn_blocking(move || {
        let src = format!("docker://{host}/{REPO}:{tag}");
        let dest = format!("dir:{}", dir.display());
        common::image::run(&skopeo, &["copy", "--src-tls-verify=false", &src, &dest]);
        let bytes = std::fs::read(dir.join("manifest.json")).expect("copied manifest");
        let manifest: Value = serde_json::from_slice(&bytes).expect("manifest JSON");
        let layers = manifest["layers"].as_array().expect("layers");
        for desc in layers.iter().chain([&manifest["config"]]) {
            let d = desc["digest"].as_str().expect("a digest");
            let blob = std::fs::read(dir.join(&d[7..])).expect("copied blob");
            assert_eq!(sha256(&blob), d, "blob {d} intact");
        }
        (sha256(&bytes), manifest)
    })
    .await
    .expect("skopeo thread")
}

// --- The harness itself, against the upstream (no proxy) -----------------

/// The relay forwards pushes (streamed request bodies) and pulls, counts
/// them, passes redirects through, cuts a body on demand, and refuses
/// connections once stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_forwards_counts_cuts_and_stops() {
    let Some(program) = registry_program() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dist = distribution::serve(&program, root.path()).await;
    let relay = Relay::start(&dist.api.base).await;
    let via = Api::new(relay.url());

    // Pushes through the relay.
    let images = push_scene(&via).await;
    assert_eq!(relay.count("PUT", "/manifests/v1"), 1);
    assert_eq!(relay.count("POST", "/blobs/uploads/"), 6);
    let big = random_bytes(8 << 20, 7);
    let big_digest = via.push_blob(REPO, &big).await;
    assert_eq!(sha256(&big), big_digest);

    // Pulls through the relay, counted.
    relay.clear();
    pull(&via, "v1", &images[0]).await;
    assert_eq!(relay.count("GET", "/manifests/v1"), 1);
    for (d, _) in &images[0].blobs {
        assert_eq!(relay.count("GET", d), 1, "{d}");
    }
    assert_eq!(relay.requests().len(), 3, "{:?}", relay.requests());
    let r = via
        .client
        .head(via.url(&format!("/v2/{REPO}/blobs/{big_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), big.len().to_string());
    assert_eq!(relay.count("HEAD", &big_digest), 1);
    assert_eq!(relay.count("GET", &big_digest), 0);

    // A redirect is passed through, not followed (distribution answers
    // `/v2` with a 301 to `/v2/`).
    relay.clear();
    let r = via.client.get(via.url("/v2")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&r, "location"), "/v2/");
    let only = common::relay::Seen {
        method: "GET".into(),
        path: "/v2".into(),
    };
    assert_eq!(relay.requests(), [only], "not followed");

    // Errors pass through with their bodies.
    let r = get_manifest(&via, REPO, "nope").await;
    let (status, code, _) = oci_error(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );

    // A cut body: the client sees the transfer break, once.
    relay.cut_after(&big_digest, 1 << 20);
    let path = format!("/v2/{REPO}/blobs/{big_digest}");
    let r = via.client.get(via.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), big.len().to_string());
    match stream_digest(r).await {
        Err(e) => assert!(!e.is_timeout(), "a hang, not a cut: {e}"),
        Ok((d, n)) => panic!("the cut body arrived whole-looking: {d}, {n} bytes"),
    }
    let r = via.client.get(via.url(&path)).send().await.unwrap();
    assert_eq!(
        stream_digest(r).await.unwrap(),
        (big_digest.clone(), big.len() as u64),
        "the cut applies once"
    );
    assert_eq!(relay.count("GET", &big_digest), 2);

    // Concurrent large bodies stream through.
    let gets = (0..4).map(|_| {
        let client = via.client.clone();
        let url = via.url(&path);
        tokio::spawn(async move { stream_digest(client.get(url).send().await.unwrap()).await })
    });
    for g in futures_util::future::join_all(gets).await {
        assert_eq!(g.unwrap().unwrap().0, big_digest);
    }

    // Stopped: the pooled connection and new ones fail.
    relay.stop();
    let mut refused = false;
    for _ in 0..20 {
        if via.client.get(via.url("/v2/")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the stopped relay still answers");
    let fresh = Api::new(relay.url());
    assert!(fresh.client.get(fresh.url("/v2/")).send().await.is_err());
}

/// skopeo pulls from the upstream through the relay (the invocation the
/// proxy tests use, with a real client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_skopeo_pull() {
    let Some(program) = registry_program() else {
        return;
    };
    let Some(skopeo) = skopeo_program() else {
        return;
    };
    let up = open_upstream(&program).await;
    let relay = Relay::start(&up.dist.api.base).await;
    let out = tempfile::tempdir().unwrap();
    let (digest, _) = skopeo_pull(&skopeo, &relay.url(), "v1", &out.path().join("a")).await;
    assert_eq!(digest, up.images[0].digest);
    assert!(relay.count("GET", "/manifests/v1") >= 1);
    for (d, _) in &up.images[0].blobs {
        assert_eq!(relay.count("GET", d), 1, "{d}");
    }
}

// --- The proxy ----------------------------------------------------------

/// skopeo pulls `lib/app:v1` through the proxy; a second pull within the
/// ttl window makes no upstream request at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_open_upstream() {
    let Some(program) = registry_program() else {
        return;
    };
    let Some(skopeo) = skopeo_program() else {
        return;
    };
    let up = open_upstream(&program).await;
    let relay = Relay::start(&up.dist.api.base).await;
    let proxy = start_proxy(&relay.url(), "").await;
    let out = tempfile::tempdir().unwrap();
    let v1 = &up.images[0];

    let (digest, _) = skopeo_pull(&skopeo, &proxy.base, "v1", &out.path().join("a")).await;
    assert_eq!(digest, v1.digest);
    assert!(
        relay.count("GET", &format!("/v2/{REPO}/manifests/")) >= 1,
        "{:?}",
        relay.requests()
    );
    for (d, _) in &v1.blobs {
        assert_eq!(relay.count("GET", d), 1, "{d}: {:?}", relay.requests());
    }

    relay.clear();
    let before = proxy.proxy.as_ref().expect("a proxy").stats();
    let (digest, _) = skopeo_pull(&skopeo, &proxy.base, "v1", &out.path().join("b")).await;
    assert_eq!(digest, v1.digest);
    assert_eq!(
        relay.requests(),
        [],
        "a second pull within the ttl is served locally"
    );
    let after = proxy.proxy.as_ref().expect("a proxy").stats();
    assert_eq!(after.manifest_misses, before.manifest_misses, "{after:?}");
    assert_eq!(after.blob_misses, before.blob_misses, "{after:?}");
    assert!(after.manifest_hits > before.manifest_hits, "{after:?}");
    assert!(after.blob_hits >= before.blob_hits + 2, "{after:?}");
    assert_eq!(after.revalidations, before.revalidations, "{after:?}");
}

/// An htpasswd upstream: the configured credentials pull; wrong ones are
/// an error that says the upstream refused them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_upstream() {
    let Some(program) = registry_program() else {
        return;
    };
    let Some(skopeo) = skopeo_program() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let open = distribution::serve(&program, root.path()).await;
    let images = push_scene(&open.api).await;
    drop(open);
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, &[("puller", "s3cret")]);
    let dist = distribution::serve_with(
        &program,
        root.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: upstream-realm\n    path: {}\n",
            htpasswd.display()
        ),
    )
    .await;
    // The upstream does refuse anonymous pulls.
    let r = get_manifest(&dist.api, REPO, "v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let proxy = start_proxy(&dist.api.base, "  username: puller\n  password: s3cret\n").await;
    let out = tempfile::tempdir().unwrap();
    let (digest, _) = skopeo_pull(&skopeo, &proxy.base, "v1", &out.path().join("a")).await;
    assert_eq!(digest, images[0].digest);
    pull(&proxy, &images[1].digest, &images[1]).await;

    let wrong = start_proxy(&dist.api.base, "  username: puller\n  password: wrong\n").await;
    for reference in ["v1", images[2].digest.as_str()] {
        let r = get_manifest(&wrong, REPO, reference).await;
        let (status, _, message) = oci_error(r).await;
        let m = message.to_lowercase();
        assert!(
            m.contains("upstream")
                && (m.contains("refus") || m.contains("credential") || m.contains("unauthori")),
            "{reference}: {status}: {message}"
        );
    }
    let r = wrong
        .client
        .get(wrong.url(&format!("/v2/{REPO}/blobs/{}", images[2].blobs[1].0)))
        .send()
        .await
        .unwrap();
    oci_error(r).await;
}

/// 20 concurrent GETs of one uncached 64 MiB blob: all get it whole, and
/// upstream is asked for it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_fetch_once() {
    let Some(program) = registry_program() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dist = distribution::serve(&program, root.path()).await;
    let data = random_bytes(64 << 20, 64);
    let digest = dist.api.push_blob(REPO, &data).await;
    drop(data);
    let relay = Relay::start(&dist.api.base).await;
    let proxy = start_proxy(&relay.url(), "").await;
    let path = format!("/v2/{REPO}/blobs/{digest}");

    // A HEAD miss asks upstream with a HEAD, fetches nothing.
    let r = proxy.client.head(proxy.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), (64u64 << 20).to_string());
    assert!(relay.count("HEAD", &path) >= 1, "{:?}", relay.requests());
    assert_eq!(relay.count("GET", &path), 0, "a HEAD fetches nothing");
    assert!(!blob_data(&root_of(&proxy), &digest).exists());

    let gets = (0..20).map(|_| {
        let client = proxy.client.clone();
        let url = proxy.url(&path);
        tokio::spawn(async move {
            let r = client.get(url).send().await.expect("GET blob");
            assert_eq!(r.status(), StatusCode::OK);
            stream_digest(r).await.expect("whole body")
        })
    });
    for g in futures_util::future::join_all(gets).await {
        assert_eq!(g.unwrap(), (digest.clone(), 64 << 20));
    }
    assert_eq!(relay.count("GET", &path), 1, "{:?}", relay.requests());

    let r = proxy.client.get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(stream_digest(r).await.unwrap(), (digest.clone(), 64 << 20));
    assert_eq!(relay.count("GET", &path), 1, "served locally the 21st time");

    // The counters: one fetch of 64 MiB; once stored, a GET is a hit.
    let cache = proxy.proxy.as_ref().expect("a proxy");
    let stats = cache.stats();
    assert_eq!(stats.blobs_fetched, 1, "{stats:?}");
    assert_eq!(stats.blob_bytes_fetched, 64 << 20, "{stats:?}");
    assert_eq!(stats.blob_fetches_failed, 0, "{stats:?}");
    assert!(
        stats.blob_misses >= 2,
        "the HEAD and the first GET: {stats:?}"
    );
    assert!(eventually(Duration::from_secs(30), || cache.fetches_in_flight() == 0).await);
    assert!(blob_data(&root_of(&proxy), &digest).exists());
    let r = proxy.client.get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(stream_digest(r).await.unwrap(), (digest.clone(), 64 << 20));
    assert_eq!(cache.stats().blob_hits, stats.blob_hits + 1);
    assert_eq!(cache.stats().blob_misses, stats.blob_misses);
}

/// With the upstream gone, what was pulled is still served (tag, digest,
/// blobs); what was not is an OCI error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_cache_with_upstream_down() {
    let Some((up, relay)) = relayed_upstream().await else {
        return;
    };
    let proxy = start_proxy(&relay.url(), "").await;
    let (v1, v3) = (&up.images[0], &up.images[2]);
    pull(&proxy, "v1", v1).await;
    pull(&proxy, &v1.digest, v1).await;
    // Stored before the upstream goes away.
    let root = root_of(&proxy);
    let stored = eventually(Duration::from_secs(10), || {
        v1.blobs.iter().all(|(d, _)| blob_data(&root, d).is_file())
    })
    .await;
    assert!(stored, "v1's blobs are stored");

    relay.stop();
    drop(up.dist);
    pull(&proxy, "v1", v1).await;
    pull(&proxy, &v1.digest, v1).await;

    for reference in ["v3", v3.digest.as_str()] {
        let r = get_manifest(&proxy, REPO, reference).await;
        let (status, _, _) = oci_error(r).await;
        assert!(
            status.is_server_error() || status == StatusCode::NOT_FOUND,
            "{reference}: {status}"
        );
    }
    let r = proxy
        .client
        .get(proxy.url(&format!("/v2/{REPO}/blobs/{}", v3.blobs[1].0)))
        .send()
        .await
        .unwrap();
    let (status, _, _) = oci_error(r).await;
    assert!(
        status.is_server_error() || status == StatusCode::NOT_FOUND,
        "{status}"
    );
}

/// An upstream body cut at 1 MiB of 8: the client does not get the blob,
/// nothing is stored, and the next GET fetches it again, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_body_stores_nothing() {
    let Some(program) = registry_program() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dist = distribution::serve(&program, root.path()).await;
    let data = random_bytes(8 << 20, 8);
    let digest = dist.api.push_blob(REPO, &data).await;
    let relay = Relay::start(&dist.api.base).await;
    let proxy = start_proxy(&relay.url(), "").await;
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let data_file = blob_data(&root_of(&proxy), &digest);

    relay.cut_after(&digest, 1 << 20);
    let r = proxy.client.get(proxy.url(&path)).send().await.unwrap();
    let status = r.status();
    match stream_digest(r).await {
        Err(e) => assert!(!e.is_timeout(), "a hang, not a cut: {e}"),
        Ok((d, n)) => assert!(
            !status.is_success() || d != digest,
            "the cut blob arrived whole: {status}, {n} bytes"
        ),
    }
    assert_eq!(relay.count("GET", &path), 1);
    assert!(!data_file.exists(), "a cut blob is not stored");

    let r = proxy.client.get(proxy.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(stream_digest(r).await.unwrap(), (digest.clone(), 8 << 20));
    assert_eq!(relay.count("GET", &path), 2, "fetched again");
    let stored = eventually(Duration::from_secs(10), || data_file.is_file()).await;
    assert!(stored, "the whole blob is stored");
    assert_eq!(sha256(&std::fs::read(&data_file).unwrap()), digest);
}

/// What upstream does not have is 404 `MANIFEST_UNKNOWN` /
/// `BLOB_UNKNOWN` through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_not_found() {
    let Some(up) = upstream().await else {
        return;
    };
    let proxy = start_proxy(&up.dist.api.base, "").await;
    for reference in ["nope".to_owned(), sha256(b"no such manifest")] {
        let r = get_manifest(&proxy, REPO, &reference).await;
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let r = proxy
        .client
        .get(proxy.url(&format!("/v2/{REPO}/blobs/{}", sha256(b"no such blob"))))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    // Another repository does not see lib/app's blobs.
    let v1 = &up.images[0];
    let r = proxy
        .client
        .get(proxy.url(&format!("/v2/lib/other/blobs/{}", v1.blobs[1].0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// An upstream nothing listens for: uncached content is 503
/// `UNAVAILABLE` naming the upstream.
#[tokio::test]
async fn unreachable_upstream_is_unavailable() {
    let port = free_port();
    let proxy = start_proxy(&format!("http://127.0.0.1:{port}"), "").await;
    let blob = sha256(b"a blob");
    for path in [
        format!("/v2/{REPO}/manifests/v1"),
        format!("/v2/{REPO}/manifests/{}", sha256(b"a manifest")),
        format!("/v2/{REPO}/blobs/{blob}"),
    ] {
        let r = proxy
            .client
            .get(proxy.url(&path))
            .header("accept", ACCEPT)
            .send()
            .await
            .unwrap();
        let message = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
        assert!(
            message.contains(&format!("127.0.0.1:{port}")),
            "{path}: {message}"
        );
    }
}

/// Pushes and deletes on a proxy are 405 `UNSUPPORTED`, and none reaches
/// upstream.
#[tokio::test]
async fn writes_are_unsupported() {
    // No upstream program needed: nothing may be forwarded anyway.
    let relay = Relay::start(&format!("http://127.0.0.1:{}", free_port())).await;
    let proxy = start_proxy(&relay.url(), "").await;
    let config = b"{}";
    let manifest = oci_manifest(&sha256(config), config.len(), &[], None);
    let blob = sha256(b"some blob");
    let upload = format!("/v2/{REPO}/blobs/uploads/0f2e9c0a-1111-4222-8333-444455556666");
    let c = &proxy.client;
    let requests = [
        (
            "PUT manifest",
            c.put(proxy.url(&format!("/v2/{REPO}/manifests/v1")))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone()),
        ),
        (
            "PUT manifest by digest",
            c.put(proxy.url(&format!("/v2/{REPO}/manifests/{}", sha256(&manifest))))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone()),
        ),
        (
            "POST upload",
            c.post(proxy.url(&format!("/v2/{REPO}/blobs/uploads/"))),
        ),
        (
            "POST monolithic upload",
            c.post(proxy.url(&format!("/v2/{REPO}/blobs/uploads/?digest={blob}")))
                .body(&b"some blob"[..]),
        ),
        (
            "POST mount",
            c.post(proxy.url(&format!(
                "/v2/{REPO}/blobs/uploads/?mount={blob}&from=lib/other"
            ))),
        ),
        (
            "PATCH upload",
            c.patch(proxy.url(&upload)).body(&b"some"[..]),
        ),
        (
            "PUT upload",
            c.put(proxy.url(&format!("{upload}?digest={blob}"))),
        ),
        ("DELETE upload", c.delete(proxy.url(&upload))),
        (
            "DELETE manifest",
            c.delete(proxy.url(&format!("/v2/{REPO}/manifests/{}", sha256(&manifest)))),
        ),
        (
            "DELETE tag",
            c.delete(proxy.url(&format!("/v2/{REPO}/manifests/v1"))),
        ),
        (
            "DELETE blob",
            c.delete(proxy.url(&format!("/v2/{REPO}/blobs/{blob}"))),
        ),
    ];
    for (what, req) in requests {
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let message = expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
        assert!(!message.is_empty(), "{what}");
    }
    let forwarded: Vec<_> = relay
        .requests()
        .into_iter()
        .filter(|s| s.method != "GET" && s.method != "HEAD")
        .collect();
    assert_eq!(forwarded, [], "no write reaches upstream");
}

/// `GET /v2/REPO/tags/list{query}`; asserts 200, returns the JSON.
async fn tags_list(api: &Api, query: &str) -> Value {
    let r = api
        .client
        .get(api.url(&format!("/v2/{REPO}/tags/list{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "tags/list{query}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// The tag list is upstream's (all three tags though one was pulled),
/// paginated; the catalog lists the pulled repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_and_catalog() {
    let Some((up, relay)) = relayed_upstream().await else {
        return;
    };
    let proxy = start_proxy(&relay.url(), "").await;
    pull(&proxy, "v1", &up.images[0]).await;

    let upstream = tags_list(&up.dist.api, "").await;
    assert_eq!(upstream["tags"], serde_json::json!(["v1", "v2", "v3"]));
    let proxied = tags_list(&proxy, "").await;
    assert_eq!(proxied["name"], REPO);
    assert_eq!(proxied["tags"], upstream["tags"]);
    assert!(relay.count("GET", &format!("/v2/{REPO}/tags/list")) >= 1);

    let page = tags_list(&proxy, "?n=2").await;
    assert_eq!(page["tags"], serde_json::json!(["v1", "v2"]));
    let page = tags_list(&proxy, "?n=2&last=v2").await;
    assert_eq!(page["tags"], serde_json::json!(["v3"]));

    let r = proxy
        .client
        .get(proxy.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let catalog: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let repos = catalog["repositories"].as_array().expect("repositories");
    assert!(repos.iter().any(|r| r == REPO), "{catalog}");
}

/// With `ttl: 2s`, pulled content expires from storage; pulling again
/// fetches it again from upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_cached_content() {
    let Some((up, relay)) = relayed_upstream().await else {
        return;
    };
    let proxy = start_proxy(&relay.url(), "  ttl: 2s\n").await;
    let root = root_of(&proxy);
    let v1 = &up.images[0];
    pull(&proxy, &v1.digest, v1).await;
    assert!(
        eventually(Duration::from_secs(10), || v1
            .blobs
            .iter()
            .all(|(d, _)| blob_data(&root, d).is_file()))
        .await,
        "v1's blobs are stored"
    );

    let gone = eventually(Duration::from_secs(30), || {
        v1.blobs.iter().all(|(d, _)| !blob_data(&root, d).exists())
    })
    .await;
    assert!(gone, "v1's blobs expired within 30 s of a 2 s ttl");

    relay.clear();
    pull(&proxy, &v1.digest, v1).await;
    assert!(
        relay.count("GET", &format!("/manifests/{}", v1.digest)) >= 1,
        "{:?}",
        relay.requests()
    );
    for (d, _) in &v1.blobs {
        assert!(relay.count("GET", d) >= 1, "{d}: {:?}", relay.requests());
    }
}

/// Expiry is scheduled from the stored files' times: content pulled by a
/// proxy that then stopped expires under the next proxy on the same root,
/// with nothing pulling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_survives_restart() {
    let Some(up) = upstream().await else {
        return;
    };
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path().join("root");
    let yaml = proxy_yaml(&root, &up.dist.api.base, "  ttl: 3s\n");
    let v1 = up.images[0].clone();

    // The first proxy runs on a runtime of its own, so that dropping the
    // runtime ends its background tasks too (in this runtime they would
    // outlive the server).
    let pulled_at = {
        let (yaml, v1, root) = (yaml.clone(), v1.clone(), root.clone());
        let first = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let at = rt.block_on(async {
                let proxy = start_yaml(&yaml, tempfile::tempdir().unwrap()).await;
                pull(&proxy, &v1.digest, &v1).await;
                let stored = eventually(Duration::from_secs(10), || {
                    v1.blobs.iter().all(|(d, _)| blob_data(&root, d).is_file())
                })
                .await;
                assert!(stored, "v1's blobs are stored");
                let at = Instant::now();
                drop(proxy);
                at
            });
            drop(rt);
            at
        });
        tokio::task::spawn_blocking(move || first.join())
            .await
            .unwrap()
            .expect("first proxy")
    };

    let wake = pulled_at + Duration::from_secs(4);
    tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
    for (d, _) in &v1.blobs {
        assert!(
            blob_data(&root, d).is_file(),
            "{d}: nothing runs, nothing is deleted"
        );
    }

    let _proxy = start_yaml(&yaml, tempfile::tempdir().unwrap()).await;
    let gone = eventually(Duration::from_secs(30), || {
        v1.blobs.iter().all(|(d, _)| !blob_data(&root, d).exists())
    })
    .await;
    assert!(
        gone,
        "the restarted proxy expires what the first one stored"
    );
}

/// A tag is revalidated with upstream once per ttl window: with `ttl: 1s`
/// a re-push upstream is seen after a second; with the default (168h) it
/// is not, and the cached manifest is served without asking upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_revalidation() {
    let Some((up, relay)) = relayed_upstream().await else {
        return;
    };

    let short = start_proxy(&relay.url(), "  ttl: 1s\n").await;
    let (digest, _) = manifest_ok(&short, "v1").await;
    assert_eq!(digest, up.images[0].digest);
    let changed = push_image_of(&up.dist.api, "v1", "one, changed").await;
    assert_ne!(changed.digest, up.images[0].digest);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    relay.clear();
    let (digest, body) = manifest_ok(&short, "v1").await;
    assert_eq!(digest, changed.digest, "revalidated after the ttl");
    assert_eq!(body, changed.manifest);
    assert!(
        relay.count("HEAD", "/manifests/v1") + relay.count("GET", "/manifests/v1") >= 1,
        "{:?}",
        relay.requests()
    );

    let long = start_proxy(&relay.url(), "").await;
    let (digest, _) = manifest_ok(&long, "v1").await;
    assert_eq!(digest, changed.digest);
    let again = push_image_of(&up.dist.api, "v1", "one, changed again").await;
    assert_ne!(again.digest, changed.digest);
    relay.clear();
    let (digest, _) = manifest_ok(&long, "v1").await;
    assert_eq!(digest, changed.digest, "the cached tag within the window");
    assert_eq!(
        relay.requests(),
        [],
        "no upstream request within the window"
    );
}

/// With `ttl: 0` a tag is revalidated on every request (and nothing
/// expires); when upstream is unreachable the cached manifest is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_revalidates_every_request() {
    let Some((up, relay)) = relayed_upstream().await else {
        return;
    };
    let proxy = start_proxy(&relay.url(), "  ttl: 0\n").await;
    let v1 = &up.images[0];
    pull(&proxy, "v1", v1).await;

    for round in 0..2 {
        relay.clear();
        let (digest, _) = manifest_ok(&proxy, "v1").await;
        assert_eq!(digest, v1.digest);
        assert!(
            relay.count("HEAD", "/manifests/v1") + relay.count("GET", "/manifests/v1") >= 1,
            "round {round}: {:?}",
            relay.requests()
        );
    }
    let changed = push_image_of(&up.dist.api, "v1", "one, changed").await;
    let (digest, _) = manifest_ok(&proxy, "v1").await;
    assert_eq!(digest, changed.digest, "seen at once with ttl 0");

    relay.stop();
    drop(up.dist);
    let (digest, _) = manifest_ok(&proxy, "v1").await;
    assert_eq!(
        digest, changed.digest,
        "the cached tag while upstream is down"
    );
    pull(&proxy, &v1.digest, v1).await;
}

/// A `Range` on a blob the cache lacks is answered from the fetch (206,
/// the right bytes) and the whole blob is stored. A blob the cache holds
/// for one repository is linked into another that upstream confirms has
/// it, with a HEAD and no second download; a repository upstream says
/// lacks it gets 404, whatever the cache holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_on_a_miss_and_blobs_shared_between_repositories() {
    let Some(program) = registry_program() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dist = distribution::serve(&program, root.path()).await;
    let data = random_bytes(3 << 20, 7);
    let digest = dist.api.push_blob(REPO, &data).await;
    assert_eq!(dist.api.push_blob("lib/copy", &data).await, digest);
    let relay = Relay::start(&dist.api.base).await;
    let proxy = start_proxy(&relay.url(), "").await;
    let cache = proxy.proxy.clone().expect("a proxy");

    let path = format!("/v2/{REPO}/blobs/{digest}");
    let r = proxy
        .client
        .get(proxy.url(&path))
        .header("Range", "bytes=1000000-1999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 1000000-1999999/{}", 3 << 20)
    );
    let body = r.bytes().await.unwrap();
    assert!(body[..] == data[1_000_000..2_000_000], "the range's bytes");
    assert!(eventually(Duration::from_secs(30), || cache.fetches_in_flight() == 0).await);
    assert!(blob_data(&root_of(&proxy), &digest).is_file());

    relay.clear();
    let copy = format!("/v2/lib/copy/blobs/{digest}");
    let r = proxy.client.get(proxy.url(&copy)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(stream_digest(r).await.unwrap(), (digest.clone(), 3 << 20));
    assert_eq!(relay.count("HEAD", &copy), 1, "{:?}", relay.requests());
    assert_eq!(relay.count("GET", &copy), 0, "not downloaded again");

    let other = format!("/v2/lib/other/blobs/{digest}");
    let r = proxy.client.get(proxy.url(&other)).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}
