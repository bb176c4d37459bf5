//! The `health` section: periodic checks (tcp, file, http, storage) turn
//! the `/v2/` API into 503 `UNAVAILABLE` while one fails and back when it
//! passes; `/debug/health` lists the failing ones in distribution's format
//! (every check with `?verbose`); `/` stays served. And the storage check
//! makes a real backend request: an s3 backend (moto) behind a relay that
//! is then stopped turns `/debug/health` into 503.
//!
//! Waits are bounded polls (a check runs every 100 ms here); nothing
//! asserts how long a transition took.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::relay::Relay;
use common::{TestRegistry, expect_error, start, start_yaml};
use reqwest::StatusCode;
use serde_json::Value;

/// The longest a poll waits for a transition.
const PATIENCE: Duration = Duration::from_secs(60);

async fn status(reg: &TestRegistry, path: &str) -> StatusCode {
    reg.client.get(reg.url(path)).send().await.unwrap().status()
}

/// Polls `path` until it answers `want`.
async fn wait_for(reg: &TestRegistry, path: &str, want: StatusCode) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = status(reg, path).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} still answers {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health_body(reg: &TestRegistry, query: &str) -> (StatusCode, Value) {
    let r = reg
        .client
        .get(reg.url(&format!("/debug/health{query}")))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

/// While unhealthy: every `/v2/` route answers 503 UNAVAILABLE naming
/// `check`, `/` answers 200, `/debug/health` 503 with `check` → an error
/// containing `says`.
async fn assert_out_of_service(reg: &TestRegistry, check: &str, says: &str) {
    for path in [
        "/v2/",
        "/v2/_catalog",
        "/v2/a/tags/list",
        "/v2/a/manifests/x",
    ] {
        let r = reg.client.get(reg.url(path)).send().await.unwrap();
        let body = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
        assert!(body.contains(check), "{path}: {body}");
    }
    let r = reg.client.head(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
    assert_eq!(status(reg, "/").await, StatusCode::OK);
    let (code, body) = health_body(reg, "").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let error = body[check].as_str().unwrap_or_default();
    assert!(error.contains(says), "{body}");
    let failing = reg.health.statuses();
    let s = failing.iter().find(|s| s.name == check).expect("listed");
    assert!(s.failing && s.consecutive_failures >= 1, "{s:?}");
}

async fn start_with_health(health: &str) -> TestRegistry {
    start("inmemory", "", &format!("health:\n{health}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_takes_the_api_out_of_service_after_threshold_failures_and_back() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let reg = start_with_health(&format!(
        "  tcp:\n    - addr: {addr}\n      interval: 100ms\n      timeout: 1s\n      threshold: 3\n"
    ))
    .await;
    wait_for(&reg, "/v2/", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_out_of_service(&reg, &addr, "connect to").await;
    let s = &reg.health.statuses()[0];
    assert!(
        s.consecutive_failures >= 3,
        "failing only after the threshold: {s:?}"
    );
    // Every check with ?verbose.
    let (code, body) = health_body(&reg, "?verbose").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["storagedriver_inmemory", addr.as_str()], "{body}");

    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    wait_for(&reg, "/v2/", StatusCode::OK).await;
    let (code, body) = health_body(&reg, "").await;
    assert_eq!((code, body), (StatusCode::OK, serde_json::json!({})));
    let (_, body) = health_body(&reg, "?verbose=true").await;
    assert_eq!(body["checks"][1]["failing"], false, "{body}");
    assert_eq!(body["checks"][1]["last_error"], Value::Null, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_check_fails_while_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out-of-rotation");
    let name = file.display().to_string();
    let reg = start_with_health(&format!(
        "  file:\n    - file: {name}\n      interval: 100ms\n"
    ))
    .await;
    assert_eq!(status(&reg, "/v2/").await, StatusCode::OK);
    std::fs::write(&file, "").unwrap();
    wait_for(&reg, "/v2/", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_out_of_service(&reg, &name, "exists").await;
    std::fs::remove_file(&file).unwrap();
    wait_for(&reg, "/v2/", StatusCode::OK).await;
    assert_eq!(status(&reg, "/debug/health").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_fails_on_an_unexpected_status_and_passes_again() {
    let answer = Arc::new(AtomicU16::new(500));
    let app = axum::Router::new().route(
        "/ping",
        axum::routing::get({
            let answer = Arc::clone(&answer);
            move |headers: axum::http::HeaderMap| {
                let answer = Arc::clone(&answer);
                async move {
                    // The configured header arrives.
                    if headers.get("x-probe").and_then(|v| v.to_str().ok()) != Some("regstore") {
                        return axum::http::StatusCode::BAD_REQUEST;
                    }
                    axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst))
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/ping", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let reg = start_with_health(&format!(
        "  http:\n    - uri: {uri}\n      headers:\n        X-Probe: [regstore]\n      interval: 100ms\n      threshold: 2\n"
    ))
    .await;
    wait_for(&reg, "/v2/", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_out_of_service(&reg, &uri, "answered 500, expected 200").await;
    answer.store(200, Ordering::SeqCst);
    wait_for(&reg, "/v2/", StatusCode::OK).await;
    assert_eq!(status(&reg, "/debug/health").await, StatusCode::OK);
}

/// Without `health.storagedriver`, `/debug/health` asks the backend on
/// demand and the API is not held; with it, the periodic check holds the
/// API. Both against moto behind a relay that is then stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_check_asks_the_backend() {
    let Some(mut params) = regstore_testenv::backend::emulator_params_or_skip("s3").await else {
        return;
    };
    let moto = params["regionendpoint"].as_str().unwrap().to_owned();
    let relay = Relay::start(&moto).await;
    params.insert("regionendpoint".into(), relay.url().into());
    let config = |health: Value| {
        serde_json::json!({
            "version": "0.1",
            "storage": { "s3": params.clone() },
            "health": health,
        })
        .to_string()
    };
    let on_demand = start_yaml(&config(Value::Null), tempfile::tempdir().unwrap()).await;
    let periodic = start_yaml(
        &config(serde_json::json!({"storagedriver": {
            "enabled": true, "interval": "100ms", "threshold": 1,
        }})),
        tempfile::tempdir().unwrap(),
    )
    .await;
    for reg in [&on_demand, &periodic] {
        assert_eq!(status(reg, "/debug/health").await, StatusCode::OK);
        assert_eq!(status(reg, "/v2/").await, StatusCode::OK);
    }
    assert!(
        relay.count("GET", "") > 0,
        "the checks asked the backend: {:?}",
        relay.requests()
    );

    relay.stop();
    let (code, body) = health_body(&on_demand, "").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error = body["storagedriver_s3"].as_str().unwrap_or_default();
    assert!(error.contains("storage driver s3 is unhealthy"), "{body}");
    assert_eq!(
        status(&on_demand, "/v2/").await,
        StatusCode::OK,
        "the on-demand check does not hold the API"
    );
    wait_for(&periodic, "/v2/", StatusCode::SERVICE_UNAVAILABLE).await;
    assert_out_of_service(
        &periodic,
        "storagedriver_s3",
        "storage driver s3 is unhealthy",
    )
    .await;
}
