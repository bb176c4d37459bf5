//! `auth.access`: per-repository rules over htpasswd users — each user,
//! repository and action allowed or refused (403 `DENIED` for a known
//! user, 401 with the challenge for a caller without credentials), pulls
//! without credentials where `anonymous` may pull, and a catalog that lists
//! only what the caller may pull, in full pages; and the README's example.

mod common;

use common::users::{as_user, write_htpasswd};
use common::{Api, expect_error, header, start_yaml};
use reqwest::{Method, StatusCode};

/// alice is an admin, bob a dev, carol in no group.
const ACCESS: &str = r#"
  access:
    admins: [alice]
    groups: {devs: [bob]}
    repositories:
      "team/**": {devs: [pull, push], "*": [pull]}
      "team/tools": {devs: [pull, push, delete]}
      "public/*": {anonymous: [pull]}
      "mix/*-v": {"*": [pull]}
"#;

async fn start_with_rules() -> (common::TestRegistry, [Api; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("alice", "a"), ("bob", "b"), ("carol", "c")]);
    let yaml = format!(
        "version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n{ACCESS}",
        file.display()
    );
    let reg = start_yaml(&yaml, dir).await;
    let users = [
        as_user(&reg.base, "alice", "a"),
        as_user(&reg.base, "bob", "b"),
        as_user(&reg.base, "carol", "c"),
    ];
    (reg, users)
}

async fn send(api: &Api, method: Method, path: &str) -> reqwest::Response {
    api.client
        .request(method, api.url(path))
        .send()
        .await
        .unwrap()
}

/// The repository names of one catalog page and its `Link`, if any.
async fn catalog_page(api: &Api, path: &str) -> (Vec<String>, Option<String>) {
    let r = api.client.get(api.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let link = header(&r, "link");
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let names = serde_json::from_value(body["repositories"].clone()).unwrap();
    let next = (!link.is_empty()).then(|| link[1..link.find('>').unwrap()].to_owned());
    (names, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_is_allowed_or_denied_each_action_on_each_repository() {
    let (reg, [alice, bob, carol]) = start_with_rules().await;
    let mut digests = Vec::new();
    for repo in ["team/app", "team/tools", "public/lib", "private/x"] {
        digests.push(alice.push_image(repo, "v1", repo).await.1);
    }
    let anonymous = &reg.api;
    let manifest = |repo: &str, i: usize| format!("/v2/{repo}/manifests/{}", digests[i]);
    let upload = |repo: &str| format!("/v2/{repo}/blobs/uploads/");
    let mount = |repo: &str, from: &str| {
        format!(
            "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
            common::sha256(b"nothing")
        )
    };
    let denied = StatusCode::FORBIDDEN;
    let challenged = StatusCode::UNAUTHORIZED;
    #[rustfmt::skip]
    let table: Vec<(&str, &Api, Method, String, StatusCode)> = vec![
        ("bob", &bob, Method::GET, manifest("team/app", 0), StatusCode::OK),
        ("bob", &bob, Method::POST, upload("team/app"), StatusCode::ACCEPTED),
        ("bob", &bob, Method::DELETE, manifest("team/app", 0), denied),
        ("bob", &bob, Method::DELETE, manifest("team/tools", 1), StatusCode::ACCEPTED),
        ("bob", &bob, Method::GET, manifest("private/x", 3), denied),
        ("bob", &bob, Method::POST, mount("team/app", "private/x"), denied),
        ("bob", &bob, Method::POST, upload("public/lib"), denied),
        ("carol", &carol, Method::GET, manifest("team/app", 0), StatusCode::OK),
        ("carol", &carol, Method::POST, upload("team/app"), denied),
        ("carol", &carol, Method::GET, manifest("public/lib", 2), StatusCode::OK),
        ("carol", &carol, Method::GET, manifest("private/x", 3), denied),
        ("anonymous", anonymous, Method::GET, manifest("public/lib", 2), StatusCode::OK),
        ("anonymous", anonymous, Method::HEAD, manifest("public/lib", 2), StatusCode::OK),
        ("anonymous", anonymous, Method::GET, "/v2/public/lib/tags/list".into(), StatusCode::OK),
        ("anonymous", anonymous, Method::POST, upload("public/lib"), challenged),
        ("anonymous", anonymous, Method::GET, manifest("team/app", 0), challenged),
        ("anonymous", anonymous, Method::GET, "/v2/".into(), challenged),
        ("alice", &alice, Method::DELETE, manifest("private/x", 3), StatusCode::ACCEPTED),
        ("alice", &alice, Method::DELETE, manifest("team/app", 0), StatusCode::ACCEPTED),
    ];
    for (who, api, method, path, expected) in table {
        let r = send(api, method.clone(), &path).await;
        let case = format!("{who} {method} {path}");
        assert_eq!(r.status(), expected, "{case}");
        if expected == challenged {
            assert_eq!(
                header(&r, "www-authenticate"),
                "Basic realm=\"test-realm\"",
                "{case}"
            );
            expect_error(r, expected, "UNAUTHORIZED").await;
        } else if expected == denied {
            let message = expect_error(r, expected, "DENIED").await;
            assert!(
                message.starts_with(&format!("user \"{who}\" may not ")),
                "{case}: {message}"
            );
        }
    }
    // The message names the action and repository refused; for a mount,
    // the source.
    let r = send(&bob, Method::POST, &mount("team/app", "private/x")).await;
    let message = expect_error(r, denied, "DENIED").await;
    assert_eq!(
        message,
        "user \"bob\" may not pull repository private/x (auth.access)"
    );
    // Refused before the repository is looked at: alice deleted the
    // manifest, bob still hears 403, not whether it exists.
    let r = send(&bob, Method::DELETE, &manifest("team/app", 0)).await;
    let message = expect_error(r, denied, "DENIED").await;
    assert_eq!(
        message,
        "user \"bob\" may not delete repository team/app (auth.access)"
    );
    // Wrong credentials are wrong even where anonymous callers may pull.
    let mallory = as_user(&reg.base, "bob", "wrong");
    let r = send(&mallory, Method::GET, &manifest("public/lib", 2)).await;
    expect_error(r, challenged, "UNAUTHORIZED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_only_what_the_caller_may_pull_in_full_pages() {
    let (reg, [alice, bob, carol]) = start_with_rules().await;
    let repos = [
        "mix/a1-v",
        "mix/a2",
        "mix/a3-v",
        "mix/a4",
        "mix/a5",
        "mix/a6-v",
        "mix/a7-v",
        "public/lib",
        "zz/hidden",
    ];
    for repo in repos {
        alice.push_blob(repo, repo.as_bytes()).await;
    }
    let (all, _) = catalog_page(&alice, "/v2/_catalog").await;
    assert_eq!(all, repos, "admins see everything");
    let (names, _) = catalog_page(&bob, "/v2/_catalog").await;
    assert_eq!(
        names,
        ["mix/a1-v", "mix/a3-v", "mix/a6-v", "mix/a7-v", "public/lib"]
    );
    let (names, _) = catalog_page(&reg.api, "/v2/_catalog").await;
    assert_eq!(
        names,
        ["public/lib"],
        "anonymous callers see what anonymous may pull"
    );

    // Pages of two visible names each, the hidden ones walked past; the
    // last page has no Link although hidden names follow it.
    let mut pages = Vec::new();
    let mut next = Some("/v2/_catalog?n=2".to_owned());
    while let Some(path) = next {
        let (names, link) = catalog_page(&carol, &path).await;
        pages.push(names);
        next = link;
        assert!(pages.len() <= 5, "{pages:?}");
    }
    assert_eq!(
        pages,
        [
            vec!["mix/a1-v", "mix/a3-v"],
            vec!["mix/a6-v", "mix/a7-v"],
            vec!["public/lib"],
        ]
    );
    let (names, link) = catalog_page(&carol, "/v2/_catalog?n=2&last=mix/a2").await;
    assert_eq!(
        names,
        ["mix/a3-v", "mix/a6-v"],
        "`last` may be a hidden name"
    );
    assert!(link.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_needs_credentials_when_anonymous_may_pull_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("carol", "c")]);
    let yaml = format!(
        "version: 0.1\nstorage:\n  inmemory:\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n  access:\n    repositories:\n      \"**\": {{\"*\": [pull]}}\n",
        file.display()
    );
    let reg = start_yaml(&yaml, dir).await;
    let r = send(&reg.api, Method::GET, "/v2/_catalog").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let carol = as_user(&reg.base, "carol", "c");
    let (names, _) = catalog_page(&carol, "/v2/_catalog").await;
    assert!(names.is_empty());
}

#[tokio::test]
async fn access_rules_without_an_authentication_scheme_stop_startup() {
    let yaml = "version: 0.1\nstorage:\n  inmemory:\nauth:\n  access:\n    admins: [alice]\n";
    let config = regstore_server::config::Config::from_yaml(yaml, "t.yml", []).unwrap();
    let e = regstore_server::serve::app_state(&config)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("auth.access in t.yml: access rules need an authentication scheme"),
        "{e}"
    );
}

/// The README's `auth.access` example is a valid config and means what the
/// README says of it.
#[test]
fn the_readme_example_means_what_the_readme_says() {
    use regstore_server::auth::{Action, Identity};
    let readme = include_str!("../../README.md");
    let yaml = readme
        .split("```yaml\n")
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("  access:"))
        .expect("an auth.access example in README.md");
    let config = regstore_server::config::Config::from_yaml(
        &format!("version: 0.1\nstorage:\n  inmemory:\n{yaml}"),
        "README.md",
        [],
    )
    .unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let rules = config.auth.access.expect("rules");
    let user = |u: &str| Identity::User(u.into());
    let allows = |who: &Identity, repo: &str, action| rules.allows(who, repo, action);
    assert!(allows(&user("bob"), "team/app", Action::Push));
    assert!(!allows(&user("bob"), "team/secret", Action::Pull));
    assert!(allows(&user("carol"), "team/secret", Action::Pull));
    assert!(!allows(&user("carol"), "team/secret", Action::Push));
    assert!(allows(&user("alice"), "team/secret", Action::Delete));
    assert!(allows(&user("zed"), "team/a/b", Action::Pull));
    assert!(allows(&Identity::Anonymous, "public/lib", Action::Pull));
    assert!(!allows(&Identity::Anonymous, "public/a/b", Action::Pull));
    assert!(!allows(&user("bob"), "elsewhere", Action::Pull));
}
