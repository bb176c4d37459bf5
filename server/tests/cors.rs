//! `http.cors` (a regstore extension): preflights answered before auth,
//! CORS headers on answers to allowed origins only.

mod common;

use common::users::{as_user, write_htpasswd};
use common::{TestRegistry, header, start, start_yaml};
use reqwest::{Method, StatusCode};

const UI: &str = "https://ui.example.com";
const EVIL: &str = "https://evil.example.com";

async fn preflight(reg: &TestRegistry, path: &str, origin: &str) -> reqwest::Response {
    reg.client
        .request(Method::OPTIONS, reg.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

async fn get_from(reg: &TestRegistry, path: &str, origin: &str) -> reqwest::Response {
    reg.client
        .get(reg.url(path))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

fn cors_headers(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_get_cors_headers_and_others_none() {
    let reg = start(
        "inmemory",
        "",
        &format!("http:\n  cors:\n    allowedorigins: ['{UI}']\n    maxage: 10m\n"),
    )
    .await;
    let (_, manifest_digest) = reg.push_image("team/app", "v1", "cors").await;

    let r = preflight(&reg, "/v2/team/app/manifests/v1", UI).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "access-control-allow-origin"), UI);
    assert_eq!(header(&r, "vary"), "Origin");
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        "GET, HEAD, OPTIONS"
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        "Authorization, Content-Type, Accept, Range, Docker-Content-Digest"
    );
    assert_eq!(header(&r, "access-control-max-age"), "600");
    assert_eq!(header(&r, "access-control-allow-credentials"), "");

    let r = preflight(&reg, "/v2/team/app/manifests/v1", EVIL).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(cors_headers(&r).is_empty(), "{:?}", cors_headers(&r));

    for path in [
        "/v2/_catalog",
        "/v2/team/app/tags/list",
        "/v2/team/app/manifests/v1",
    ] {
        let r = get_from(&reg, path, UI).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&r, "access-control-allow-origin"), UI, "{path}");
        let exposed = header(&r, "access-control-expose-headers");
        for h in ["Docker-Content-Digest", "Link", "WWW-Authenticate"] {
            assert!(exposed.contains(h), "{path}: {exposed}");
        }
        let r = get_from(&reg, path, EVIL).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            cors_headers(&r).is_empty(),
            "{path}: {:?}",
            cors_headers(&r)
        );
    }
    let r = get_from(&reg, "/v2/team/app/manifests/v1", UI).await;
    assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
    // Without Origin nothing changes.
    let r = reg.client.get(reg.url("/v2/")).send().await.unwrap();
    assert!(cors_headers(&r).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_is_sent_only_without_credentials() {
    let reg = start(
        "inmemory",
        "",
        "http:\n  cors:\n    allowedorigins: ['*']\n",
    )
    .await;
    let r = get_from(&reg, "/v2/", EVIL).await;
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert_eq!(header(&r, "vary"), "");
    let reg = start(
        "inmemory",
        "",
        "http:\n  cors:\n    allowedorigins: ['*']\n    allowcredentials: true\n",
    )
    .await;
    let r = preflight(&reg, "/v2/", EVIL).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "access-control-allow-origin"), EVIL);
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");
    assert_eq!(header(&r, "access-control-max-age"), "", "no maxage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cors_no_cors_headers_are_sent() {
    let reg = start("inmemory", "", "").await;
    let r = preflight(&reg, "/v2/", UI).await;
    assert_ne!(r.status(), StatusCode::NO_CONTENT);
    assert!(cors_headers(&r).is_empty(), "{:?}", cors_headers(&r));
    let r = get_from(&reg, "/v2/", UI).await;
    assert!(cors_headers(&r).is_empty(), "{:?}", cors_headers(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_need_no_credentials_and_requests_still_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("alice", "s3cret")]);
    let yaml = format!(
        "version: 0.1\nstorage:\n  inmemory:\nauth:\n  htpasswd:\n    realm: test-realm\n    path: {}\nhttp:\n  cors:\n    allowedorigins: ['{UI}']\n    allowcredentials: true\n",
        file.display()
    );
    let reg = start_yaml(&yaml, dir).await;
    let r = preflight(&reg, "/v2/_catalog", UI).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "access-control-allow-origin"), UI);
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");

    let r = get_from(&reg, "/v2/_catalog", UI).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        UI,
        "the browser may read the challenge"
    );
    assert!(!header(&r, "www-authenticate").is_empty());

    let alice = as_user(&reg.base, "alice", "s3cret");
    let r = alice
        .client
        .get(alice.url("/v2/_catalog"))
        .header("origin", UI)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "access-control-allow-origin"), UI);
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");
}
