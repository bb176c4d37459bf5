//! `auth.token`: bearer JWTs as distribution checks them — the challenge
//! naming realm, service and the exact scopes; tokens by `kid` (libtrust
//! key ID of a bundle certificate), by `x5c` chain to the bundle, by JWKS
//! (ES256, EdDSA); refusals for too little scope, expiry, another signer,
//! another audience, another issuer; and the token protocol end to end
//! through a token server.

mod common;

use std::sync::Arc;

use common::token::{KeyRef, Signer, claims, token_server};
use common::{Api, expect_error, header, start_yaml};
use reqwest::StatusCode;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "token-issuer";

fn config(realm: &str, bundle: &std::path::Path, jwks: Option<&std::path::Path>) -> String {
    let mut yaml = format!(
        "version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: true\nauth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        bundle.display()
    );
    if let Some(j) = jwks {
        yaml.push_str(&format!("    jwks: {}\n", j.display()));
    }
    yaml
}

/// A client that sends `token` as a bearer token.
fn bearer(base: &str, token: &str) -> Api {
    common::users::with_authorization(base, &format!("Bearer {token}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_checked_like_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let signer = Signer::new(&d, "signer", "rsa", None);
    let stranger = Signer::new(&d, "stranger", "rsa", None);
    let reg = start_yaml(&config("https://auth.test/token", &signer.cert, None), dir).await;
    let kid = || KeyRef::Kid(signer.kid());
    let all = &["pull", "push", "delete"][..];

    // No token: the challenge names realm, service and the scope needed.
    let r = reg
        .client
        .get(reg.url("/v2/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(
            "Bearer realm=\"https://auth.test/token\",service=\"{SERVICE}\",scope=\"repository:app:pull\""
        )
    );
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = reg.client.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(
        header(&r, "www-authenticate"),
        format!("Bearer realm=\"https://auth.test/token\",service=\"{SERVICE}\"")
    );

    // A token with every action pushes; a pull-only one reads.
    let writer = bearer(
        &reg.base,
        &signer.sign(
            kid(),
            &claims(ISSUER, SERVICE, "alice", &[("repository", "app", all)], 300),
        ),
    );
    let (manifest, _) = writer.push_image("app", "v1", "token").await;
    let reader = bearer(
        &reg.base,
        &signer.sign(
            kid(),
            &claims(
                ISSUER,
                SERVICE,
                "bob",
                &[("repository", "app", &["pull"])],
                300,
            ),
        ),
    );
    let r = reader
        .client
        .get(reader.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), manifest);

    // Too little scope: 401 insufficient_scope naming what is needed.
    let r = reader
        .client
        .post(reader.url("/v2/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(
            "Bearer realm=\"https://auth.test/token\",service=\"{SERVICE}\",scope=\"repository:app:pull,push\",error=\"insufficient_scope\""
        )
    );
    let m = expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert!(m.contains("repository:app:pull,push"), "{m}");
    let r = reader
        .client
        .get(reader.url("/v2/other/tags/list"))
        .send()
        .await
        .unwrap();
    assert!(header(&r, "www-authenticate").contains("insufficient_scope"));
    let r = reader
        .client
        .get(reader.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert!(
        header(&r, "www-authenticate")
            .contains("scope=\"registry:catalog:*\",error=\"insufficient_scope\"")
    );
    // A mount asks for both repositories.
    let r = writer
        .client
        .post(writer.url("/v2/app/blobs/uploads/?mount=sha256:00&from=base"))
        .send()
        .await
        .unwrap();
    assert!(
        header(&r, "www-authenticate")
            .contains("scope=\"repository:app:pull,push repository:base:pull\""),
        "{}",
        header(&r, "www-authenticate")
    );
    let catalog = bearer(
        &reg.base,
        &signer.sign(
            kid(),
            &claims(
                ISSUER,
                SERVICE,
                "c",
                &[("registry", "catalog", &["*"])],
                300,
            ),
        ),
    );
    let r = catalog
        .client
        .get(catalog.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Invalid tokens: 401 invalid_token.
    let invalid = [
        (
            "expired",
            signer.sign(
                kid(),
                &claims(ISSUER, SERVICE, "a", &[("repository", "app", all)], -600),
            ),
        ),
        (
            "another signer under the trusted kid",
            stranger.sign(
                kid(),
                &claims(ISSUER, SERVICE, "a", &[("repository", "app", all)], 300),
            ),
        ),
        (
            "an untrusted kid",
            stranger.sign(
                KeyRef::Kid(stranger.kid()),
                &claims(ISSUER, SERVICE, "a", &[("repository", "app", all)], 300),
            ),
        ),
        (
            "another audience",
            signer.sign(
                kid(),
                &claims(ISSUER, "elsewhere", "a", &[("repository", "app", all)], 300),
            ),
        ),
        (
            "another issuer",
            signer.sign(
                kid(),
                &claims("someone", SERVICE, "a", &[("repository", "app", all)], 300),
            ),
        ),
        ("not a JWT", "garbage".to_owned()),
    ];
    for (why, token) in invalid {
        let r = bearer(&reg.base, &token)
            .client
            .get(reg.url("/v2/app/manifests/v1"))
            .send()
            .await
            .unwrap();
        assert!(
            header(&r, "www-authenticate").ends_with(",error=\"invalid_token\""),
            "{why}: {}",
            header(&r, "www-authenticate")
        );
        expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    // A token within the leeway of its expiry still works (60 s).
    let late = bearer(
        &reg.base,
        &signer.sign(
            kid(),
            &claims(
                ISSUER,
                SERVICE,
                "a",
                &[("repository", "app", &["pull"])],
                -30,
            ),
        ),
    );
    let r = late
        .client
        .get(late.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A token whose `x5c` chain leads to a CA in the bundle is accepted (the
/// bundle holds only the CA); one whose chain leads elsewhere is not. Keys
/// of a JWKS file sign ES256, ES512 and EdDSA tokens; ES512 by x5c too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x5c_chains_and_jwks_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let ca = Signer::new(&d, "ca", "rsa", None);
    let leaf = Signer::new(&d, "leaf", "rsa", Some(&ca));
    let other_ca = Signer::new(&d, "other-ca", "rsa", None);
    let other_leaf = Signer::new(&d, "other-leaf", "rsa", Some(&other_ca));
    let ec = Signer::new(&d, "ec", "ec", None);
    let ed = Signer::new(&d, "ed", "ed25519", None);
    let p521 = Signer::new(&d, "p521", "ec521", None);
    let p521_leaf = Signer::new(&d, "p521-leaf", "ec521", Some(&ca));
    let jwks = d.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [ec.jwk("ec-key"), ed.jwk("ed-key"), p521.jwk("p521-key")]})
            .to_string(),
    )
    .unwrap();
    let reg = start_yaml(
        &config("https://auth.test/token", &ca.cert, Some(&jwks)),
        dir,
    )
    .await;
    let pull = claims(
        ISSUER,
        SERVICE,
        "a",
        &[("repository", "app", &["pull"])],
        300,
    );
    let get = |token: String| {
        let api = bearer(&reg.base, &token);
        async move {
            api.client
                .get(api.url("/v2/app/tags/list"))
                .send()
                .await
                .unwrap()
        }
    };
    // Authorized: the repository is unknown (404), not 401.
    for (why, token) in [
        (
            "x5c leaf+CA",
            leaf.sign(
                KeyRef::X5c(vec![leaf.cert_der.clone(), ca.cert_der.clone()]),
                &pull,
            ),
        ),
        (
            "x5c leaf",
            leaf.sign(KeyRef::X5c(vec![leaf.cert_der.clone()]), &pull),
        ),
        (
            "ES256 by JWKS",
            ec.sign(KeyRef::Kid("ec-key".into()), &pull),
        ),
        (
            "EdDSA by JWKS",
            ed.sign(KeyRef::Kid("ed-key".into()), &pull),
        ),
        (
            "ES512 by JWKS",
            p521.sign(KeyRef::Kid("p521-key".into()), &pull),
        ),
        (
            "ES512 by x5c",
            p521_leaf.sign(KeyRef::X5c(vec![p521_leaf.cert_der.clone()]), &pull),
        ),
    ] {
        let r = get(token).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{why}: {body}");
    }
    for (why, token) in [
        (
            "x5c to another CA",
            other_leaf.sign(
                KeyRef::X5c(vec![other_leaf.cert_der.clone(), other_ca.cert_der.clone()]),
                &pull,
            ),
        ),
        (
            "JWKS kid, other key",
            ed.sign(KeyRef::Kid("ec-key".into()), &pull),
        ),
        (
            "ES512, another P-521 key",
            p521_leaf.sign(KeyRef::Kid("p521-key".into()), &pull),
        ),
    ] {
        let r = get(token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{why}");
        assert!(
            header(&r, "www-authenticate").contains("invalid_token"),
            "{why}"
        );
    }
}

/// The token protocol end to end with reqwest as the client would do it:
/// the challenge's realm, service and scope go to the token server, whose
/// token opens the request; the user `reader` gets pull only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_protocol_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(Signer::new(dir.path(), "signer", "rsa", None));
    let server = token_server(signer.clone(), ISSUER, SERVICE).await;
    let reg = start_yaml(&config(&server.url, &signer.cert, None), dir).await;
    let fetch = |user: &'static str, challenge: String| {
        let client = reg.client.clone();
        async move {
            let param = |name: &str| {
                let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                challenge[start..].split('"').next().unwrap().to_owned()
            };
            let r = client
                .get(format!(
                    "{}?{}",
                    param("realm"),
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("service", &param("service"))
                        .append_pair("scope", &param("scope"))
                        .finish()
                ))
                .basic_auth(user, Some("any"))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            body["token"].as_str().unwrap().to_owned()
        }
    };
    let url = reg.url("/v2/e2e/blobs/uploads/");
    let r = reg.client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let token = fetch("alice", header(&r, "www-authenticate")).await;
    let r = reg
        .client
        .post(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let challenge = format!(
        "Bearer realm=\"{}\",service=\"{SERVICE}\",scope=\"repository:e2e:pull,push\"",
        server.url
    );
    let token = fetch("reader", challenge).await;
    let r = reg
        .client
        .post(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").contains("insufficient_scope"));
    assert_eq!(server.issued.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The README's `auth.token` and `auth.htpasswd` examples load as they are
/// written and mean what the README says.
#[test]
fn the_readme_auth_examples_load() {
    let readme = include_str!("../../README.md");
    let block = |marker: &str| {
        readme
            .split("```yaml\n")
            .filter_map(|b| b.split("```").next())
            .find(|b| b.starts_with("auth:\n") && b.contains(marker) && !b.contains("  access:"))
            .unwrap_or_else(|| panic!("a README auth example with {marker}"))
    };
    let load = |yaml: &str| {
        regstore_server::config::Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\n{yaml}"),
            "README.md",
            [],
        )
        .unwrap()
    };
    let c = load(block("  token:"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let t = c.auth.token.expect("token settings");
    assert_eq!(t.realm, "https://auth.example.com/token");
    assert_eq!(t.service, "registry.example.com");
    assert_eq!(t.issuer, "auth.example.com");
    assert_eq!(
        t.rootcertbundle.as_deref(),
        Some(std::path::Path::new("/etc/registry/token-signers.pem"))
    );
    assert!(!t.autoredirect && t.autoredirectpath == "/auth/token");
    let c = load(block("  htpasswd:"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let h = c.auth.htpasswd.expect("htpasswd settings");
    assert_eq!(h.realm, "basic-realm");
    assert_eq!(
        h.path,
        std::path::Path::new("/etc/docker/registry/htpasswd")
    );
}

/// `autoredirect: true`: the challenge's realm is this registry's own URL
/// as the client reached it, with `autoredirectpath`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoredirect_names_the_registry_itself_as_realm() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new(dir.path(), "signer", "rsa", None);
    let yaml = format!(
        "version: 0.1\nstorage:\n  inmemory:\nauth:\n  token:\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n    autoredirect: true\n    autoredirectpath: /token/here\n",
        signer.cert.display()
    );
    let reg = start_yaml(&yaml, dir).await;
    let r = reg
        .client
        .get(reg.url("/v2/x/tags/list"))
        .send()
        .await
        .unwrap();
    let host = reg.base.trim_start_matches("http://");
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(
            "Bearer realm=\"http://{host}/token/here\",service=\"{SERVICE}\",scope=\"repository:x:pull\""
        )
    );
}
