//! Notifications end to end: a registry with a `notifications:` section
//! POSTs events to a receiver in this test (axum on 127.0.0.1), and
//! request ids on every response.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{DELETE_ON, OCI_MANIFEST, TestRegistry, header, start};
use reqwest::StatusCode;
use serde_json::Value;

/// The longest a test waits for deliveries.
const WAIT: Duration = Duration::from_secs(30);

/// One POST the receiver accepted.
#[derive(Clone, Debug)]
struct Delivery {
    content_type: String,
    /// The endpoint's configured header.
    x_test: String,
    events: Vec<Value>,
}

/// An endpoint in this process: answers 500 to its first `fail_first`
/// POSTs, then 200, keeping what it accepted.
struct Receiver {
    url: String,
    accepted: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let accepted: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let refused = Arc::new(Mutex::new(0usize));
        let keep = accepted.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                let refused = refused.clone();
                async move {
                    {
                        let mut r = refused.lock().unwrap();
                        if *r < fail_first {
                            *r += 1;
                            return AxumStatus::INTERNAL_SERVER_ERROR;
                        }
                    }
                    let envelope: Value = serde_json::from_slice(&body).unwrap();
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    keep.lock().unwrap().push(Delivery {
                        content_type: header("content-type"),
                        x_test: header("x-test"),
                        events: envelope["events"].as_array().unwrap().clone(),
                    });
                    AxumStatus::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/events"),
            accepted,
        }
    }

    /// Every event accepted, in order.
    fn events(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|d| d.events.clone())
            .collect()
    }

    /// The events once `n` have arrived (at most [`WAIT`]).
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let events = self.events();
            if events.len() >= n || started.elapsed() > WAIT {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `notifications:` section with one endpoint at `url`; `extra` is
/// further endpoint keys (indented by six spaces).
fn section(url: &str, extra: &str) -> String {
    format!(
        "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: test\n      url: {url}\n      timeout: 2s\n      threshold: 2\n      backoff: 10ms\n      headers:\n        X-Test: [hello]\n{extra}"
    )
}

async fn registry(url: &str, extra: &str) -> TestRegistry {
    start("inmemory", DELETE_ON, &section(url, extra)).await
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["target"]["mediaType"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test]
async fn push_pull_mount_and_delete_are_sent_in_order() {
    let rx = Receiver::start(0).await;
    let reg = registry(&rx.url, "").await;
    let host = reg.base.trim_start_matches("http://").to_owned();
    let (manifest, md) = reg.push_image("a/b", "v1", "s").await;
    let doc: Value = serde_json::from_slice(&manifest).unwrap();
    let cd = doc["config"]["digest"].as_str().unwrap().to_owned();
    let ld = doc["layers"][0]["digest"].as_str().unwrap().to_owned();
    let layer_size = doc["layers"][0]["size"].as_u64().unwrap();

    // HEAD is no pull.
    for path in [
        "/v2/a/b/manifests/v1".to_owned(),
        format!("/v2/a/b/blobs/{ld}"),
    ] {
        let r = reg.client.head(reg.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = reg
        .client
        .get(reg.url("/v2/a/b/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .header("x-request-id", "pull-manifest-1")
        .header("user-agent", "notify-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-request-id"), "pull-manifest-1");
    let r = reg
        .client
        .get(reg.url(&format!("/v2/a/b/blobs/{ld}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let blob_request_id = header(&r, "x-request-id");
    assert_eq!(r.bytes().await.unwrap().len() as u64, layer_size);
    let r = reg
        .client
        .post(reg.url(&format!("/v2/c/d/blobs/uploads/?mount={ld}&from=a/b")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .client
        .delete(reg.url(&format!("/v2/a/b/manifests/{md}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let events = rx.wait_for(7).await;
    let blob = "application/octet-stream";
    assert_eq!(
        actions(&events),
        [
            format!("push {blob}"),
            format!("push {blob}"),
            format!("push {OCI_MANIFEST}"),
            format!("pull {OCI_MANIFEST}"),
            format!("pull {blob}"),
            format!("mount {blob}"),
            "delete -".to_owned(),
        ],
        "{events:#?}"
    );
    for d in rx.accepted.lock().unwrap().iter() {
        assert_eq!(
            d.content_type,
            "application/vnd.docker.distribution.events.v1+json"
        );
        assert_eq!(d.x_test, "hello", "the endpoint's headers are sent");
    }
    let (config_push, layer_push, manifest_push) = (&events[0], &events[1], &events[2]);
    assert_eq!(config_push["target"]["digest"], cd);
    assert_eq!(layer_push["target"]["digest"], ld);
    assert_eq!(layer_push["target"]["size"], layer_size);
    assert_eq!(layer_push["target"]["length"], layer_size);
    assert_eq!(layer_push["target"]["repository"], "a/b");
    assert_eq!(
        layer_push["target"]["url"],
        format!("http://{host}/v2/a/b/blobs/{ld}")
    );
    assert_eq!(layer_push["request"]["method"], "PUT");
    assert!(layer_push["target"].get("tag").is_none());

    let t = &manifest_push["target"];
    assert_eq!(t["digest"], md);
    assert_eq!(t["size"], manifest.len());
    assert_eq!(t["length"], manifest.len());
    assert_eq!(t["repository"], "a/b");
    assert_eq!(t["tag"], "v1");
    assert_eq!(t["url"], format!("http://{host}/v2/a/b/manifests/{md}"));
    let refs: Vec<&str> = t["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(refs, [cd.as_str(), ld.as_str()], "includereferences");
    assert_eq!(manifest_push["request"]["method"], "PUT");
    assert_eq!(manifest_push["request"]["host"], host);

    let pull = &events[3];
    assert_eq!(pull["request"]["id"], "pull-manifest-1");
    assert_eq!(pull["request"]["method"], "GET");
    assert_eq!(pull["request"]["useragent"], "notify-test/1");
    assert!(
        pull["request"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(pull["target"]["tag"], "v1");
    assert_eq!(pull["target"]["digest"], md);
    assert_eq!(events[4]["request"]["id"], blob_request_id.as_str());
    assert_eq!(events[4]["target"]["size"], layer_size);

    let mount = &events[5];
    assert_eq!(mount["target"]["repository"], "c/d");
    assert_eq!(mount["target"]["fromRepository"], "a/b");
    assert_eq!(mount["target"]["digest"], ld);
    assert_eq!(mount["request"]["method"], "POST");

    let delete = &events[6];
    assert_eq!(
        delete["target"],
        serde_json::json!({"digest": md, "repository": "a/b"})
    );
    assert_eq!(delete["request"]["method"], "DELETE");

    let instance = events[0]["source"]["instanceID"].as_str().unwrap();
    assert!(!instance.is_empty());
    let mut ids = std::collections::BTreeSet::new();
    for e in &events {
        assert_eq!(e["source"]["instanceID"], instance);
        assert!(e["source"]["addr"].as_str().is_some_and(|a| !a.is_empty()));
        assert!(!e["request"]["id"].as_str().unwrap().is_empty());
        assert_eq!(e["actor"], serde_json::json!({}), "anonymous");
        assert!(humantime::parse_rfc3339(e["timestamp"].as_str().unwrap()).is_ok());
        assert!(
            ids.insert(e["id"].as_str().unwrap().to_owned()),
            "ids are unique"
        );
    }
    assert_eq!(rx.events().len(), 7, "nothing more");
}

#[tokio::test]
async fn the_actor_is_the_authenticated_user() {
    let rx = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    common::users::write_htpasswd(&htpasswd, &[("alice", "secret")]);
    let reg = start(
        "inmemory",
        DELETE_ON,
        &format!(
            "auth:\n  htpasswd:\n    realm: r\n    path: {}\n{}",
            htpasswd.display(),
            section(&rx.url, "")
        ),
    )
    .await;
    let alice = common::users::as_user(&reg.base, "alice", "secret");
    let d = alice.push_blob("a/b", b"hello").await;
    let events = rx.wait_for(1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["actor"]["name"], "alice");
    assert_eq!(events[0]["target"]["digest"], d);
}

#[tokio::test]
async fn ignored_actions_and_media_types_are_not_sent() {
    let rx = Receiver::start(0).await;
    let reg = registry(
        &rx.url,
        "      ignoredmediatypes: [application/octet-stream]\n      ignore:\n        actions: [pull]\n",
    )
    .await;
    let (_, md) = reg.push_image("a/b", "v1", "s").await;
    let r = reg
        .client
        .get(reg.url("/v2/a/b/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .client
        .delete(reg.url("/v2/a/b/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let config_digest = common::sha256(br#"{"architecture":"amd64","os":"linux","seed":"s"}"#);
    let r = reg
        .client
        .delete(reg.url(&format!("/v2/a/b/blobs/{config_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let events = rx.wait_for(3).await;
    assert_eq!(
        actions(&events),
        [
            format!("push {OCI_MANIFEST}"),
            "delete -".to_owned(),
            "delete -".to_owned()
        ],
        "blob pushes and pulls are filtered: {events:#?}"
    );
    assert_eq!(
        events[2]["target"],
        serde_json::json!({"repository": "a/b", "digest": config_digest}),
        "a blob delete names the digest"
    );
    assert_eq!(events[0]["target"]["digest"], md);
    assert_eq!(
        events[1]["target"],
        serde_json::json!({"repository": "a/b", "tag": "v1"}),
        "a tag delete names the tag"
    );
}

#[tokio::test]
async fn a_failing_endpoint_gets_every_event_in_order_once_it_answers() {
    let rx = Receiver::start(3).await;
    let reg = registry(&rx.url, "").await;
    let mut digests = Vec::new();
    for i in 0..5 {
        digests.push(reg.push_blob("a/b", format!("blob {i}").as_bytes()).await);
    }
    let events = rx.wait_for(5).await;
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["target"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(got, digests, "every event, once, in order");
    let notifier = reg.notifier.as_ref().unwrap();
    let started = Instant::now();
    let stats = loop {
        let s = notifier.stats().remove(0);
        if s.queued == 0 || started.elapsed() > WAIT {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.name, "test");
    assert_eq!((stats.sent, stats.queued, stats.dropped), (5, 0, 0));
    assert_eq!(stats.failures, 3);
    assert!(!stats.failing, "recovered");
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_requests() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let reg = start(
        "inmemory",
        DELETE_ON,
        &format!(
            "notifications:\n  endpoints:\n    - name: dead\n      url: {url}\n      timeout: 100ms\n      threshold: 1\n      backoff: 10ms\n"
        ),
    )
    .await;
    for i in 0..3 {
        let (_, md) = reg
            .push_image(&format!("r{i}"), "v1", &format!("s{i}"))
            .await;
        let r = reg
            .client
            .get(reg.url(&format!("/v2/r{i}/manifests/{md}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let notifier = reg.notifier.as_ref().unwrap();
    let started = Instant::now();
    let stats = loop {
        let s = notifier.stats().remove(0);
        if s.failing || started.elapsed() > WAIT {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.failing, "{stats:?}");
    assert_eq!(stats.queued, 12, "3 × (2 blobs, manifest push, pull) wait");
    assert_eq!((stats.sent, stats.dropped), (0, 0));
    assert!(stats.failures >= 1);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let reg = start("inmemory", "", "").await;
    let mut generated = Vec::new();
    for path in ["/v2/", "/v2/no/such/manifests/x", "/"] {
        let r = reg.client.get(reg.url(path)).send().await.unwrap();
        let id = header(&r, "x-request-id");
        assert!(!id.is_empty(), "{path}");
        generated.push(id);
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 3, "fresh ids: {generated:?}");

    let r = reg
        .client
        .get(reg.url("/v2/"))
        .header("x-request-id", "client-id 42")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "client-id 42", "echoed");
    let long = "x".repeat(129);
    let r = reg
        .client
        .get(reg.url("/v2/"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let id = header(&r, "x-request-id");
    assert!(!id.is_empty() && id != long, "too long: replaced by {id}");
    assert!(reg.notifier.is_none(), "no notifications configured");
}
