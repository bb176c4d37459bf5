//! The pull-through cache's upstream client against real registries on
//! loopback: Debian's `docker-registry` (docker/distribution 2.8.2) open,
//! behind htpasswd and behind token auth (with the test token server), a
//! port nothing listens on, and small axum servers for what distribution
//! does not do on demand (redirects to another origin, oversized
//! manifests). Needs `/usr/bin/docker-registry` (`scripts/clients.sh
//! install`) for the distribution tests.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::token::{Signer, token_server};
use common::users::write_htpasswd;
use common::*;
use futures_util::StreamExt;
use regstore_server::proxy::upstream::{Upstream, UpstreamError};
use regstore_server::registry::{Digest, Reference, RepoName};

const REPO: &str = "lib/app";
const SERVICE: &str = "upstream.test";
const ISSUER: &str = "upstream-issuer";

fn program() -> Option<PathBuf> {
    require_program("docker-registry", "scripts/clients.sh install")
}

/// Images pushed into a distribution root: `(tag, manifest, digest)`, and
/// the first image's layer.
struct Scene {
    root: tempfile::TempDir,
    images: Vec<(&'static str, Vec<u8>, String)>,
    layer: Vec<u8>,
}

/// Three tagged images in `lib/app`, pushed through an open
/// `docker-registry` that is stopped afterwards (the root is then served
/// with whatever auth a test wants).
async fn scene(program: &Path) -> Scene {
    let root = tempfile::tempdir().unwrap();
    let d = distribution::serve(program, root.path()).await;
    let mut images = Vec::new();
    for (tag, seed) in [("v2", "two"), ("v1", "one"), ("v3", "three")] {
        let (m, dg) = d.api.push_image(REPO, tag, seed).await;
        images.push((tag, m, dg));
    }
    drop(d);
    Scene {
        root,
        images,
        layer: "layer of two".repeat(100).into_bytes(),
    }
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// Every operation against the scene's registry through `up`.
async fn exercise(up: &Upstream, scene: &Scene) {
    let r = repo(REPO);
    for (tag, manifest, digest) in &scene.images {
        let head = up
            .head_manifest(&r, &reference(tag), &[OCI_MANIFEST])
            .await
            .unwrap();
        assert_eq!(
            head.digest.as_ref().map(Digest::to_string).as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(head.media_type, OCI_MANIFEST);
        assert_eq!(head.size, manifest.len() as u64);
        for rf in [*tag, digest.as_str()] {
            let m = up.get_manifest(&r, &reference(rf), &[]).await.unwrap();
            assert_eq!(&m.body[..], &manifest[..], "{rf}");
            assert_eq!(m.media_type, OCI_MANIFEST);
            assert_eq!(
                m.digest.map(|d| d.to_string()).as_deref(),
                Some(digest.as_str())
            );
        }
    }
    let layer: Digest = sha256(&scene.layer).parse().unwrap();
    let blob = up.get_blob(&r, &layer).await.unwrap();
    assert_eq!(blob.size, Some(scene.layer.len() as u64));
    let mut data = Vec::new();
    let mut stream = blob.stream;
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(sha256(&data), layer.to_string());
    assert_eq!(up.tags(&r).await.unwrap(), ["v1", "v2", "v3"]);
    match up.head_manifest(&r, &reference("nope"), &[]).await {
        Err(UpstreamError::NotFound { .. }) => {}
        other => panic!("missing tag: {other:?}"),
    }
    let absent: Digest = sha256(b"absent").parse().unwrap();
    match up.get_blob(&r, &absent).await {
        Err(UpstreamError::NotFound { .. }) => {}
        other => panic!("missing blob: {:?}", other.map(|b| b.size)),
    }
}

#[tokio::test]
async fn open_distribution() {
    let Some(program) = program() else { return };
    let scene = scene(&program).await;
    let d = distribution::serve(&program, scene.root.path()).await;
    let up = Upstream::new(&d.api.base, None, None).unwrap();
    exercise(&up, &scene).await;
    // A clone shares the client.
    exercise(&up.clone(), &scene).await;
    match up
        .get_manifest(&repo("lib/none"), &reference("v1"), &[])
        .await
    {
        Err(UpstreamError::NotFound { code, .. }) => {
            assert!(code.is_some(), "distribution sends an OCI error body")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn htpasswd_distribution() {
    let Some(program) = program() else { return };
    let scene = scene(&program).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, &[("puller", "s3cret")]);
    let d = distribution::serve_with(
        &program,
        scene.root.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: upstream-realm\n    path: {}\n",
            htpasswd.display()
        ),
    )
    .await;
    let up = Upstream::new(&d.api.base, Some("puller"), Some("s3cret")).unwrap();
    exercise(&up, &scene).await;

    let r = repo(REPO);
    let wrong = Upstream::new(&d.api.base, Some("puller"), Some("wrong")).unwrap();
    match wrong.get_manifest(&r, &reference("v1"), &[]).await {
        Err(e @ UpstreamError::Unauthorized { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("puller") && text.contains("upstream-realm"),
                "{text}"
            );
        }
        other => panic!("wrong password: {other:?}"),
    }
    let anonymous = Upstream::new(&d.api.base, None, None).unwrap();
    match anonymous.tags(&r).await {
        Err(UpstreamError::Unauthorized {
            user: None, realm, ..
        }) => {
            assert_eq!(realm.as_deref(), Some("upstream-realm"))
        }
        other => panic!("anonymous: {other:?}"),
    }
}

#[tokio::test]
async fn token_distribution() {
    let Some(program) = program() else { return };
    let scene = scene(&program).await;
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::new(dir.path(), "signer", "rsa", None));
    let tokens = token_server(signer.clone(), ISSUER, SERVICE).await;
    let d = distribution::serve_with(
        &program,
        scene.root.path(),
        &format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tokens.url,
            signer.cert.display()
        ),
    )
    .await;

    // Anonymous: the realm grants pull to anyone. Every request on one
    // repository uses one token.
    let up = Upstream::new(&d.api.base, None, None).unwrap();
    exercise(&up, &scene).await;
    assert_eq!(
        tokens.issued.load(Ordering::SeqCst),
        1,
        "one token for {REPO}"
    );

    // Another repository: one more token, fetched up front.
    match up.tags(&repo("lib/other")).await {
        Err(UpstreamError::NotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 2);

    // Concurrent first requests of a fresh client share one token fetch.
    let fresh = Upstream::new(&d.api.base, Some("someone"), Some("pw")).unwrap();
    let r = repo(REPO);
    let heads = futures_util::future::join_all((0..8).map(|_| {
        let fresh = fresh.clone();
        let r = r.clone();
        async move { fresh.head_manifest(&r, &reference("v1"), &[]).await }
    }))
    .await;
    for h in heads {
        assert_eq!(
            h.unwrap().digest.map(|d| d.to_string()),
            Some(scene.images[1].2.clone())
        );
    }
    assert_eq!(
        tokens.issued.load(Ordering::SeqCst),
        3,
        "one fetch for 8 requests"
    );
}

#[tokio::test]
async fn unreachable_upstream() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let up = Upstream::new(&base, None, None).unwrap();
    let start = Instant::now();
    match up.head_manifest(&repo(REPO), &reference("v1"), &[]).await {
        Err(e @ UpstreamError::Unreachable { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// Starts `app` on a loopback port; returns its base URL.
async fn spawn(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A blob redirect to another origin does not carry the upstream's
/// credentials; an endless manifest is cut at 4 MiB.
#[tokio::test]
async fn redirect_and_limits() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    // "Storage": records the Authorization it got.
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let storage = {
        let seen = seen.clone();
        spawn(axum::Router::new().route(
            "/bucket/blob",
            axum::routing::get(move |h: HeaderMap| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(
                        h.get(header::AUTHORIZATION)
                            .map(|v| v.to_str().unwrap().to_owned()),
                    );
                    "blob bytes"
                }
            }),
        ))
        .await
    };
    let authorized = Arc::new(AtomicUsize::new(0));
    let registry = {
        let authorized = authorized.clone();
        spawn(axum::Router::new().route(
            "/v2/{*rest}",
            axum::routing::get(move |h: HeaderMap, uri: axum::http::Uri| {
                let authorized = authorized.clone();
                let storage = storage.clone();
                async move {
                    if h.get(header::AUTHORIZATION).is_none() {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, "Basic realm=\"fake\"")],
                        )
                            .into_response();
                    }
                    authorized.fetch_add(1, Ordering::SeqCst);
                    if uri.path().contains("/blobs/") {
                        return (
                            StatusCode::TEMPORARY_REDIRECT,
                            [(header::LOCATION, format!("{storage}/bucket/blob?sig=1"))],
                        )
                            .into_response();
                    }
                    // A manifest without Content-Length, 5 MiB long.
                    let chunks = futures_util::stream::iter((0..80).map(|_| {
                        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 << 10]))
                    }));
                    (
                        [(header::CONTENT_TYPE, OCI_MANIFEST)],
                        axum::body::Body::from_stream(chunks),
                    )
                        .into_response()
                }
            }),
        ))
        .await
    };
    let up = Upstream::new(&registry, Some("u"), Some("p")).unwrap();
    let r = repo(REPO);
    let blob = up
        .get_blob(&r, &sha256(b"blob bytes").parse().unwrap())
        .await
        .unwrap();
    let data: Vec<bytes::Bytes> = blob.stream.map(|c| c.unwrap()).collect().await;
    assert_eq!(data.concat(), b"blob bytes");
    assert_eq!(*seen.lock().unwrap(), [None], "no credentials to storage");
    assert_eq!(authorized.load(Ordering::SeqCst), 1);

    match up.get_manifest(&r, &reference("v1"), &[]).await {
        Err(UpstreamError::TooLarge { limit, .. }) => assert_eq!(limit, 4 << 20),
        other => panic!("{other:?}"),
    }
}

/// `tags` follows `Link` pages, and refuses endless pagination, a `Link`
/// to another origin and a body that is not a tag list.
#[tokio::test]
async fn tag_pages() {
    use axum::extract::{Path as UrlPath, RawQuery};
    use axum::http::header;
    use axum::response::IntoResponse;

    let base = spawn(axum::Router::new().route(
        "/v2/lib/{name}/tags/list",
        axum::routing::get(
            |UrlPath(name): UrlPath<String>, RawQuery(q): RawQuery| async move {
                let q = q.unwrap_or_default();
                let (tags, link) = match (name.as_str(), q.as_str()) {
                    ("app", "") => (
                        r#"{"name":"lib/app","tags":["b","a"]}"#,
                        Some("</v2/lib/app/tags/list?n=2&last=b>; rel=\"next\""),
                    ),
                    ("app", _) => (r#"{"name":"lib/app","tags":["c","b"]}"#, None),
                    ("empty", _) => (r#"{"name":"lib/empty","tags":null}"#, None),
                    ("loop", _) => (
                        r#"{"tags":["x"]}"#,
                        Some("</v2/lib/loop/tags/list?last=x>; rel=\"next\""),
                    ),
                    ("away", _) => (
                        r#"{"tags":["x"]}"#,
                        Some("<http://elsewhere.test/v2/lib/away/tags/list?last=x>; rel=\"next\""),
                    ),
                    _ => ("not json", None),
                };
                let mut r = ([(header::CONTENT_TYPE, "application/json")], tags).into_response();
                if let Some(l) = link {
                    r.headers_mut()
                        .insert(header::LINK, header::HeaderValue::from_static(l));
                }
                r
            },
        ),
    ))
    .await;
    let up = Upstream::new(&base, None, None).unwrap();
    assert_eq!(up.tags(&repo("lib/app")).await.unwrap(), ["a", "b", "c"]);
    assert!(up.tags(&repo("lib/empty")).await.unwrap().is_empty());
    for (name, word) in [
        ("lib/loop", "more than 100 pages"),
        ("lib/away", "another origin"),
        ("lib/bad", "not a tag list"),
    ] {
        match up.tags(&repo(name)).await {
            Err(e @ UpstreamError::Invalid { .. }) => {
                assert!(e.to_string().contains(word), "{name}: {e}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A token the upstream refuses is fetched again once; a fresh token
/// refused too is `Unauthorized`.
#[tokio::test]
async fn refused_token_is_renewed() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fetched = Arc::new(AtomicUsize::new(0));
    let challenge = format!("Bearer realm=\"{base}/token\",service=\"fake\"");
    let app = axum::Router::new()
        .route(
            "/token",
            axum::routing::get({
                let fetched = fetched.clone();
                move || {
                    let n = fetched.fetch_add(1, Ordering::SeqCst) + 1;
                    // No expires_in: 60 s, so "t1" stays cached.
                    async move { format!("{{\"access_token\":\"t{n}\"}}") }
                }
            }),
        )
        .route(
            "/v2/{*rest}",
            axum::routing::get(move |h: HeaderMap| {
                let challenge = challenge.clone();
                async move {
                    let auth = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    if auth == Some("Bearer t2") {
                        return (
                            [(header::CONTENT_TYPE, "application/json")],
                            "{\"tags\":[\"v1\"]}",
                        )
                            .into_response();
                    }
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, challenge)],
                    )
                        .into_response()
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let up = Upstream::new(&base, None, None).unwrap();
    let r = repo(REPO);
    // 401, fetch t1, retry with t1, 401: refused.
    match up.tags(&r).await {
        Err(UpstreamError::Unauthorized {
            realm, user: None, ..
        }) => {
            assert_eq!(realm, Some(format!("{base}/token")))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    // t1 (cached) refused, t2 fetched, accepted; then t2 is reused.
    assert_eq!(up.tags(&r).await.unwrap(), ["v1"]);
    assert_eq!(up.tags(&r).await.unwrap(), ["v1"]);
    assert_eq!(fetched.load(Ordering::SeqCst), 2);
}
