//! Prometheus metrics on the debug server (`http.debug.addr`,
//! `http.debug.prometheus`): a scripted push, pull, mount and delete move
//! the counters by exactly what they did, read through a Prometheus text
//! parser; the storage driver's operations and latency histograms and the
//! build info are there; `/debug/health` and `/debug/vars` answer on the
//! debug address; without `prometheus.enabled` there is no metrics path.

mod common;

use common::*;
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::StatusCode;

const DEBUG: &str =
    "http:\n  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n";

async fn scrape(reg: &TestRegistry, path: &str) -> Scrape {
    let base = reg.debug.as_ref().expect("a debug server");
    let r = reg
        .client
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        header(&r, "content-type").starts_with("text/plain; version=0.0.4"),
        "{}",
        header(&r, "content-type")
    );
    let text = r.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition")
}

/// The value of the sample `name` whose labels include `labels`; 0 when
/// there is none (a series not yet created).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    found
        .iter()
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Differences between two scrapes of `name` with `labels`.
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(after, name, labels) - value(before, name, labels)
}

#[tokio::test]
async fn a_scripted_push_pull_mount_and_delete_move_the_counters_exactly() {
    let reg = start("inmemory", DELETE_ON, DEBUG).await;
    let before = scrape(&reg, "/metrics").await;

    // Push: two blobs (session + PUT each), one manifest.
    let (manifest, digest) = reg.push_image("m/app", "v1", "seed").await;
    let layer = format!("layer of {}", "seed").repeat(100);
    // Pull: the manifest by tag, the layer, and a HEAD (not a pull).
    let r = reg
        .client
        .get(reg.url("/v2/m/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), manifest.len());
    let layer_digest = sha256(layer.as_bytes());
    let r = reg
        .client
        .get(reg.url(&format!("/v2/m/app/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), layer.len());
    let r = reg
        .client
        .head(reg.url(&format!("/v2/m/app/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Mount into another repository; a monolithic POST; an upload that fails.
    let r = reg
        .client
        .post(reg.url(&format!(
            "/v2/m/other/blobs/uploads/?mount={layer_digest}&from=m/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mono = b"monolithic blob";
    let r = reg
        .client
        .post(reg.url(&format!("/v2/m/app/blobs/uploads/?digest={}", sha256(mono))))
        .body(mono.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .client
        .post(reg.url(&format!("/v2/m/app/blobs/uploads/?digest={}", sha256(b"x"))))
        .body(b"not x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Delete the manifest.
    let r = reg
        .client
        .delete(reg.url(&format!("/v2/m/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    let after = scrape(&reg, "/metrics").await;
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let req = "regstore_http_requests_total";
    assert_eq!(
        d(
            req,
            &[
                ("route", "blob_upload_start"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        2.0
    );
    assert_eq!(
        d(
            req,
            &[
                ("route", "blob_upload"),
                ("method", "PUT"),
                ("status", "201")
            ]
        ),
        2.0
    );
    assert_eq!(
        d(
            req,
            &[("route", "manifest"), ("method", "PUT"), ("status", "201")]
        ),
        1.0
    );
    assert_eq!(
        d(
            req,
            &[("route", "manifest"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        d(
            req,
            &[("route", "blob"), ("method", "HEAD"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        d(
            req,
            &[
                ("route", "manifest"),
                ("method", "DELETE"),
                ("status", "202")
            ]
        ),
        1.0
    );
    assert_eq!(
        d(req, &[("route", "blob_upload_start"), ("status", "400")]),
        1.0
    );
    assert_eq!(d("regstore_uploads_started_total", &[]), 2.0);
    assert_eq!(d("regstore_uploads_completed_total", &[]), 3.0);
    assert_eq!(d("regstore_uploads_failed_total", &[]), 1.0);
    let config_len = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":\"seed\"}".len();
    assert_eq!(
        d("regstore_upload_bytes_total", &[]),
        (config_len + layer.len() + mono.len()) as f64
    );
    assert_eq!(d("regstore_pushes_total", &[("kind", "blob")]), 3.0);
    assert_eq!(
        d(
            "regstore_pushes_total",
            &[("kind", "manifest"), ("media_type", OCI_MANIFEST)]
        ),
        1.0
    );
    assert_eq!(
        d(
            "regstore_pulls_total",
            &[("kind", "manifest"), ("media_type", OCI_MANIFEST)]
        ),
        1.0
    );
    assert_eq!(d("regstore_pulls_total", &[("kind", "blob")]), 1.0);
    assert_eq!(d("regstore_blob_mounts_total", &[]), 1.0);
    assert_eq!(
        d(
            "regstore_http_response_body_bytes_total",
            &[("route", "blob")]
        ),
        layer.len() as f64,
        "the HEAD sent no body"
    );
    assert_eq!(
        d(
            "regstore_http_request_body_bytes_total",
            &[("route", "manifest")]
        ),
        manifest.len() as f64
    );
    // Every request observed once in the latency histogram (its count).
    assert_eq!(
        d(
            "regstore_http_request_duration_seconds",
            &[("route", "manifest"), ("method", "GET")]
        ),
        1.0
    );
    assert_eq!(value(&after, "regstore_http_requests_in_flight", &[]), 0.0);

    // The driver's operations: calls, a latency histogram per operation.
    let ops = value(
        &after,
        "regstore_storage_operations_total",
        &[("driver", "inmemory"), ("operation", "put_content")],
    );
    assert!(ops >= 1.0, "links and manifests are put_content: {ops}");
    let hist = value(
        &after,
        "regstore_storage_operation_duration_seconds",
        &[("driver", "inmemory"), ("operation", "put_content")],
    );
    assert_eq!(hist, ops, "every call is in the histogram");
    assert!(
        value(
            &after,
            "regstore_storage_operation_errors_total",
            &[("kind", "path_not_found")]
        ) >= 1.0,
        "the first push stats blobs that are not there yet"
    );
    assert_eq!(
        value(
            &after,
            "regstore_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn the_debug_server_answers_health_and_vars_and_metrics_only_when_enabled() {
    let reg = start("inmemory", "", DEBUG).await;
    let base = reg.debug.clone().expect("a debug server");
    let r = reg
        .client
        .get(format!("{base}/debug/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .client
        .get(format!("{base}/debug/vars"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let vars: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(vars["driver"], "inmemory");
    assert_eq!(vars["version"], env!("CARGO_PKG_VERSION"));

    let custom = start(
        "inmemory",
        "",
        "http:\n  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n      path: /prom\n",
    )
    .await;
    let s = scrape(&custom, "/prom").await;
    assert!(value(&s, "regstore_start_time_seconds", &[]) > 0.0);

    let off = start("inmemory", "", "http:\n  debug:\n    addr: 127.0.0.1:0\n").await;
    let base = off.debug.clone().expect("a debug server");
    let r = off
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "metrics are off");
    let r = off
        .client
        .get(format!("{base}/debug/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(start("inmemory", "", "").await.debug.is_none());
}

/// Tag lists on the filesystem driver: a list read once is served from
/// memory while `_manifests/tags/` is unchanged (counted as hits), and a
/// tag added through the API, or added and removed on disk by another
/// process, shows in the next list. The directory's modification time is
/// set back after each change, as if it had settled long ago: a
/// directory changed within the last seconds is listed every time
/// (`unstamped`).
#[tokio::test]
async fn tag_lists_are_kept_while_their_directory_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let reg = start_on_root(&root, DEBUG).await;
    let (manifest, _) = reg.push_image("poll/app", "v1", "seed").await;
    let tags_dir = root.join("docker/registry/v2/repositories/poll/app/_manifests/tags");
    let set_back = || {
        std::fs::File::open(&tags_dir)
            .and_then(|f| {
                f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            })
            .unwrap();
    };
    let list = || async {
        let r = reg
            .client
            .get(reg.url("/v2/poll/app/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        body["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let counts = |before: &Scrape, after: &Scrape| {
        ["hit", "miss", "unstamped"]
            .map(|r| delta(before, after, "regstore_tag_lists_total", &[("result", r)]))
    };

    // Just changed: listed every time.
    let s0 = scrape(&reg, "/metrics").await;
    assert_eq!(list().await, ["v1"]);
    let s1 = scrape(&reg, "/metrics").await;
    assert_eq!(counts(&s0, &s1), [0.0, 0.0, 1.0]);

    // Settled: read once, then served from memory.
    set_back();
    for _ in 0..3 {
        assert_eq!(list().await, ["v1"]);
    }
    let s2 = scrape(&reg, "/metrics").await;
    assert_eq!(counts(&s1, &s2), [2.0, 1.0, 0.0]);

    // A tag pushed through the API.
    let r = reg
        .put_manifest("poll/app", "v2", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    set_back();
    assert_eq!(list().await, ["v1", "v2"]);
    assert_eq!(list().await, ["v1", "v2"]);
    let s3 = scrape(&reg, "/metrics").await;
    assert_eq!(counts(&s2, &s3), [1.0, 1.0, 0.0]);

    // Another process adds a tag on disk, then removes it.
    let copy = tags_dir.join("v9/current");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(tags_dir.join("v1/current/link"), copy.join("link")).unwrap();
    set_back();
    assert_eq!(list().await, ["v1", "v2", "v9"]);
    std::fs::remove_dir_all(tags_dir.join("v9")).unwrap();
    set_back();
    assert_eq!(list().await, ["v1", "v2"]);
    let s4 = scrape(&reg, "/metrics").await;
    assert_eq!(counts(&s3, &s4), [0.0, 2.0, 0.0]);
}
