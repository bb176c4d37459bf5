//! `auth.htpasswd`: Basic credentials against a bcrypt htpasswd file, as
//! distribution — the challenge, the right and wrong credentials, a file
//! that changes, one that is missing (created with a user `docker`), one
//! with a non-bcrypt line, and a flood of wrong passwords while a valid
//! client goes on.

mod common;

use std::time::Duration;

use common::users::{as_user, write_htpasswd};
use common::{Api, expect_error, header, start_yaml};
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;

fn config(htpasswd: &std::path::Path) -> String {
    format!(
        "version: 0.1\nstorage:\n  inmemory:\nauth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
        htpasswd.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_challenges_and_accepts_only_the_right_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("alice", "s3cret"), ("bob", "hunter2")]);
    let reg = start_yaml(&config(&file), dir).await;

    for path in [
        "/v2/",
        "/v2/_catalog",
        "/v2/a/tags/list",
        "/v2/a/blobs/uploads/",
    ] {
        let r = reg.client.get(reg.url(path)).send().await.unwrap();
        assert_eq!(
            header(&r, "www-authenticate"),
            "Basic realm=\"test-realm\"",
            "{path}"
        );
        expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret"), ("alice", "")] {
        let r = as_user(&reg.base, user, password)
            .client
            .get(reg.url("/v2/"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    let r = reg
        .client
        .get(reg.url("/v2/"))
        .header(AUTHORIZATION, "Basic not-base64!")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let alice = as_user(&reg.base, "alice", "s3cret");
    let r = alice.client.get(alice.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (manifest, _) = alice.push_image("team/app", "v1", "alice's").await;
    let bob = as_user(&reg.base, "bob", "hunter2");
    let r = bob
        .client
        .get(bob.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = bob
        .client
        .get(bob.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Not behind auth: the load balancer's probes.
    for path in ["/", "/debug/health"] {
        let r = reg.client.get(reg.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_htpasswd_file_is_read_again_and_cached_credentials_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("alice", "s3cret")]);
    let reg = start_yaml(&config(&file), dir).await;
    let alice = as_user(&reg.base, "alice", "s3cret");
    let carol = as_user(&reg.base, "carol", "new");
    let get = |api: &Api| {
        let req = api.client.get(api.url("/v2/"));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(get(&alice).await, StatusCode::OK);
    assert_eq!(get(&carol).await, StatusCode::UNAUTHORIZED);
    write_htpasswd(&file, &[("carol", "new")]);
    // The file is looked at once a second at most.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&carol).await != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the new user never got in"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&alice).await,
        StatusCode::UNAUTHORIZED,
        "a removed user's cached credentials are not trusted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_htpasswd_file_is_created_and_a_non_bcrypt_line_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth/htpasswd");
    let yaml = config(&file);
    let reg = start_yaml(&yaml, dir).await;
    let text = std::fs::read_to_string(&file).expect("created");
    assert!(text.starts_with("docker:$2"), "{text}");
    let r = reg.client.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let bad = tempfile::tempdir().unwrap();
    let file = bad.path().join("htpasswd");
    std::fs::write(
        &file,
        format!(
            "alice:{}\nbob:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
            bcrypt::hash("x", 4).unwrap()
        ),
    )
    .unwrap();
    let config = regstore_server::config::Config::from_yaml(&config(&file), "t.yml", []).unwrap();
    let e = regstore_server::serve::app_state(&config)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("\"bob\"") && e.contains("only bcrypt"),
        "{e}"
    );
}

/// 1,000 wrong passwords (40 clients at once) are each answered 401 while
/// a client with valid credentials keeps being served: the bcrypt checks
/// run on the blocking pool, a few at a time, and verified credentials are
/// cached, so the flood does not hold the async workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_is_refused_while_valid_clients_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    write_htpasswd(&file, &[("alice", "s3cret")]);
    let reg = start_yaml(&config(&file), dir).await;
    let base = reg.base.clone();
    let flood = tokio::spawn(async move {
        let mut refused = 0;
        let clients: Vec<Api> = (0..40)
            .map(|i| as_user(&base, "alice", &format!("guess{i}")))
            .collect();
        for round in 0..25 {
            let answers = futures_util::future::join_all(clients.iter().map(|c| {
                let req = c.client.get(c.url("/v2/"));
                async move { req.send().await.map(|r| r.status()) }
            }))
            .await;
            for a in answers {
                assert_eq!(
                    a.expect("answered"),
                    StatusCode::UNAUTHORIZED,
                    "round {round}"
                );
                refused += 1;
            }
        }
        refused
    });
    let alice = as_user(&reg.base, "alice", "s3cret");
    let mut served = 0;
    while !flood.is_finished() {
        let r = alice.client.get(alice.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        served += 1;
        if served >= 10_000 {
            break;
        }
    }
    assert_eq!(flood.await.unwrap(), 1000);
    assert!(
        served >= 10,
        "the valid client was served {served} times during the flood"
    );
}
