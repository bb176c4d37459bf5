//! The registry on an eventually consistent storage: the `faults`
//! middleware with `lag` (and no fault), on inmemory and filesystem, so
//! that `list`, `walk` and the `stat` of a directory miss changes younger
//! than [`LAG`] (new files missing, deleted ones still listed), while reads
//! and a file's `stat` are current — what a store with lagging listings
//! (Swift's container listings) does.
//!
//! Each test states one row of the table in docs/reliability.md
//! ("Eventual consistency"): what stays correct (pushes, pulls, deletes as
//! reads see them), and what is weakened and how (tag list and catalog
//! trail by at most the lag; garbage collection needs a grace period that
//! covers the lag).
//!
//! An assertion that something is *still missing* is made only when its
//! answer came within the lag of the write (else it cannot tell); every
//! assertion that something is there after the lag waits for it, bounded.

mod common;

use std::time::Duration;

use common::*;
use regstore_server::gc::{self, Options};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

/// How far listings trail the writes.
const LAG: Duration = Duration::from_secs(2);

/// A registry on `driver` wrapped in `faults` with only `lag`; deletes
/// enabled. `extra` is further top-level config.
async fn lagging(driver: &str, extra: &str) -> TestRegistry {
    let middleware = format!(
        "middleware:\n  storage:\n    - name: faults\n      options:\n        probability: \"0\"\n        lag: {}ms\n{extra}",
        LAG.as_millis()
    );
    start(driver, DELETE_ON, &middleware).await
}

/// Sleeps until `lag` after `since`: whatever was written before `since`
/// is listed from then on. (`since` is taken *after* the writes; a check
/// that something is still missing uses an instant taken *before* them.)
async fn past_lag(since: Instant) {
    tokio::time::sleep_until(since + LAG + Duration::from_millis(50)).await;
}

/// `GET url`: the status and the JSON body (`Null` when not JSON).
async fn get_json(reg: &TestRegistry, path: &str) -> (StatusCode, Value) {
    let r = reg.client.get(reg.url(path)).send().await.expect("GET");
    let status = r.status();
    let body = r.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The tags of `repo`, or the error code its tag list answered.
async fn tags(reg: &TestRegistry, repo: &str) -> Result<Vec<String>, String> {
    let (status, body) = get_json(reg, &format!("/v2/{repo}/tags/list")).await;
    if status != StatusCode::OK {
        return Err(body["errors"][0]["code"]
            .as_str()
            .unwrap_or("no error code")
            .to_owned());
    }
    Ok(body["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The repositories of the catalog.
async fn catalog(reg: &TestRegistry) -> Vec<String> {
    let (status, body) = get_json(reg, "/v2/_catalog").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `repo` holds blob `d` with exactly `data`: HEAD and GET.
async fn assert_blob(reg: &TestRegistry, repo: &str, d: &str, data: &[u8]) {
    let url = reg.url(&format!("/v2/{repo}/blobs/{d}"));
    let r = reg.client.head(&url).send().await.expect("HEAD");
    assert_eq!(r.status(), StatusCode::OK, "HEAD {d} in {repo}");
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    let r = reg.client.get(&url).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::OK, "GET {d} in {repo}");
    assert_eq!(r.bytes().await.expect("body").as_ref(), data);
}

/// `GET /v2/<repo>/manifests/<reference>`: the status and the body.
async fn get_manifest(reg: &TestRegistry, repo: &str, reference: &str) -> (StatusCode, Vec<u8>) {
    let r = reg
        .client
        .get(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest");
    let status = r.status();
    (status, r.bytes().await.expect("body").to_vec())
}

/// The status of `GET /v2/<repo>/manifests/<reference>`.
async fn manifest_status(reg: &TestRegistry, repo: &str, reference: &str) -> StatusCode {
    get_manifest(reg, repo, reference).await.0
}

/// The status of `DELETE /v2/<repo>/manifests/<reference>`.
async fn delete_manifest(reg: &TestRegistry, repo: &str, reference: &str) -> StatusCode {
    reg.client
        .delete(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .expect("DELETE manifest")
        .status()
}

/// The status of `HEAD /v2/<repo>/blobs/<d>`.
async fn blob_status(reg: &TestRegistry, repo: &str, d: &str) -> StatusCode {
    reg.client
        .head(reg.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .expect("HEAD blob")
        .status()
}

/// A chunked upload: POST, two PATCHes, a status GET, an empty PUT.
async fn push_chunked(reg: &TestRegistry, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let mut loc = begin(reg, repo).await;
    let half = data.len() / 2;
    for (start, part) in [(0, &data[..half]), (half, &data[half..])] {
        let r = reg
            .client
            .patch(&loc)
            .header(
                "content-range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH at {start}");
        loc = reg.url(&header(&r, "location"));
        let r = reg.client.get(&loc).send().await.expect("status");
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "upload status");
        assert_eq!(header(&r, "range"), format!("0-{}", start + part.len() - 1));
    }
    let r = reg
        .client
        .put(with_digest(&loc, &d))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED, "chunked upload completes");
    d
}

#[tokio::test]
async fn a_push_reads_its_own_writes_at_once() {
    for driver in DRIVERS {
        let reg = lagging(driver, "").await;
        let repo = "lag/push";
        // Monolithic (POST + PUT), single POST, chunked: each pulled at once.
        let mono = b"monolithic layer".repeat(100);
        let d_mono = reg.push_blob(repo, &mono).await;
        assert_blob(&reg, repo, &d_mono, &mono).await;

        let single = b"single-post layer".repeat(90);
        let d_single = sha256(&single);
        let r = reg
            .client
            .post(reg.url(&format!("/v2/{repo}/blobs/uploads/?digest={d_single}")))
            .body(single.clone())
            .send()
            .await
            .expect("POST ?digest");
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}: single POST");
        assert_blob(&reg, repo, &d_single, &single).await;

        let chunked = b"chunked layer".repeat(300);
        let d_chunked = push_chunked(&reg, repo, &chunked).await;
        assert_blob(&reg, repo, &d_chunked, &chunked).await;

        // A mount from the repository pushed a moment ago.
        let r = reg
            .client
            .post(reg.url(&format!(
                "/v2/lag/other/blobs/uploads/?mount={d_chunked}&from={repo}"
            )))
            .send()
            .await
            .expect("mount");
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}: mount");
        assert_blob(&reg, "lag/other", &d_chunked, &chunked).await;

        // A manifest over them, at once; pulled by tag and digest at once.
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let d_config = reg.push_blob(repo, config).await;
        let body = oci_manifest(
            &d_config,
            config.len(),
            &[
                (&d_mono, mono.len()),
                (&d_single, single.len()),
                (&d_chunked, chunked.len()),
            ],
            None,
        );
        let r = reg.put_manifest(repo, "v1", OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}: manifest PUT");
        let d_manifest = sha256(&body);
        for reference in ["v1", d_manifest.as_str()] {
            assert_eq!(
                get_manifest(&reg, repo, reference).await,
                (StatusCode::OK, body.clone()),
                "{driver}: GET {reference}"
            );
        }
    }
}

#[tokio::test]
async fn the_tag_list_trails_a_push_by_at_most_the_lag() {
    for driver in DRIVERS {
        let reg = lagging(driver, "").await;
        let repo = "lag/tags";
        let first = Instant::now();
        reg.push_image(repo, "v1", "one").await;
        let first_done = Instant::now();
        let seen = tags(&reg, repo).await;
        if first.elapsed() < LAG {
            // A repository whose every file is younger than the lag is not
            // listed yet: the tag list does not know it.
            assert_eq!(seen, Err("NAME_UNKNOWN".into()), "{driver}: first tag");
        }
        past_lag(first_done).await;
        assert_eq!(tags(&reg, repo).await, Ok(vec!["v1".into()]), "{driver}");

        let second = Instant::now();
        reg.push_image(repo, "v2", "two").await;
        let second_done = Instant::now();
        let seen = tags(&reg, repo).await;
        if second.elapsed() < LAG {
            assert_eq!(seen, Ok(vec!["v1".into()]), "{driver}: second tag");
        }
        // The tag itself resolves at once.
        assert_eq!(manifest_status(&reg, repo, "v2").await, StatusCode::OK);
        past_lag(second_done).await;
        assert_eq!(
            tags(&reg, repo).await,
            Ok(vec!["v1".into(), "v2".into()]),
            "{driver}"
        );
    }
}

#[tokio::test]
async fn the_catalog_trails_a_first_push_by_at_most_the_lag_unless_indexed() {
    for driver in DRIVERS {
        let reg = lagging(driver, "").await;
        let pushed = Instant::now();
        reg.push_image("lag/new", "v1", "catalog").await;
        let pushed_done = Instant::now();
        let seen = catalog(&reg).await;
        if pushed.elapsed() < LAG {
            assert!(seen.is_empty(), "{driver}: {seen:?}");
        }
        past_lag(pushed_done).await;
        assert_eq!(catalog(&reg).await, ["lag/new"], "{driver}");

        // With an index, the push adds the name itself: listed at once.
        let dir = tempfile::tempdir().expect("temp dir");
        let index = format!(
            "catalog:\n  index: file\n  path: {}\n",
            dir.path().join("names").display()
        );
        let reg = lagging(driver, &index).await;
        let (_, d) = reg.push_image("lag/indexed", "v1", "catalog").await;
        assert_eq!(catalog(&reg).await, ["lag/indexed"], "{driver}: indexed");

        // Deleting its last manifest does not take it out of the index:
        // the look at the storage that follows the delete still lists the
        // deleted revision. `regstore catalog rebuild` after the lag does.
        past_lag(Instant::now()).await;
        assert_eq!(
            delete_manifest(&reg, "lag/indexed", &d).await,
            StatusCode::ACCEPTED,
            "{driver}"
        );
        past_lag(Instant::now()).await;
        assert_eq!(catalog(&reg).await, ["lag/indexed"], "{driver}: stays");
        assert_eq!(reg.registry.rebuild_catalog().await.expect("rebuild"), 0);
        assert!(catalog(&reg).await.is_empty(), "{driver}: rebuilt");
    }
}

#[tokio::test]
async fn deletes_are_seen_at_once_by_pulls_and_trail_in_the_tag_list() {
    for driver in DRIVERS {
        let reg = lagging(driver, "").await;
        let repo = "lag/delete";
        let (_, d_keep) = reg.push_image(repo, "keep", "keep").await;
        let (_, d_gone) = reg.push_image(repo, "gone", "gone").await;
        let (_, d_untag) = reg.push_image(repo, "untag", "untag").await;
        past_lag(Instant::now()).await;

        let deleted = Instant::now();
        assert_eq!(
            delete_manifest(&reg, repo, &d_gone).await,
            StatusCode::ACCEPTED,
            "{driver}: delete manifest"
        );
        assert_eq!(
            delete_manifest(&reg, repo, "untag").await,
            StatusCode::ACCEPTED,
            "{driver}: delete tag"
        );
        let deleted_done = Instant::now();

        // Reads are current: gone at once.
        for reference in [d_gone.as_str(), "gone", "untag"] {
            assert_eq!(
                manifest_status(&reg, repo, reference).await,
                StatusCode::NOT_FOUND,
                "{driver}: {reference} after its delete"
            );
        }
        for reference in [d_keep.as_str(), "keep", d_untag.as_str()] {
            assert_eq!(
                manifest_status(&reg, repo, reference).await,
                StatusCode::OK,
                "{driver}: {reference}"
            );
        }
        // The listing still has the deleted tags for the lag.
        let seen = tags(&reg, repo).await;
        if deleted.elapsed() < LAG {
            assert_eq!(
                seen,
                Ok(vec!["gone".into(), "keep".into(), "untag".into()]),
                "{driver}: tags right after the deletes"
            );
        }
        past_lag(deleted_done).await;
        assert_eq!(tags(&reg, repo).await, Ok(vec!["keep".into()]), "{driver}");

        // A manifest deleted by digest takes along the tags that point at
        // it as the tag listing shows them: one tagged less than the lag
        // before is not listed yet, so it stays, dangling, after the lag.
        // It resolves to nothing (it used to serve the deleted manifest),
        // and can be deleted.
        let tagged = Instant::now();
        let (_, d_fresh) = reg.push_image(repo, "fresh", "fresh").await;
        assert_eq!(
            delete_manifest(&reg, repo, &d_fresh).await,
            StatusCode::ACCEPTED,
            "{driver}: delete fresh"
        );
        let within = tagged.elapsed() < LAG;
        assert_eq!(
            manifest_status(&reg, repo, "fresh").await,
            StatusCode::NOT_FOUND,
            "{driver}: a tag of a deleted manifest"
        );
        past_lag(Instant::now()).await;
        if within {
            assert_eq!(
                tags(&reg, repo).await,
                Ok(vec!["fresh".into(), "keep".into()]),
                "{driver}: the dangling tag"
            );
            assert_eq!(
                manifest_status(&reg, repo, "fresh").await,
                StatusCode::NOT_FOUND,
                "{driver}: the dangling tag resolves to nothing"
            );
        }
        assert_eq!(
            delete_manifest(&reg, repo, "fresh").await,
            StatusCode::ACCEPTED,
            "{driver}: delete the dangling tag"
        );
        past_lag(Instant::now()).await;
        assert_eq!(tags(&reg, repo).await, Ok(vec!["keep".into()]), "{driver}");
    }
}

/// Garbage collection through the library, `grace` as given.
async fn collect(reg: &TestRegistry, grace: Duration) -> gc::Report {
    let opts = Options {
        grace,
        ..Options::default()
    };
    gc::collect(&reg.registry, &opts).await.expect("gc runs")
}

#[tokio::test]
async fn gc_right_after_a_push_keeps_it_given_a_grace_period_that_covers_the_lag() {
    for driver in DRIVERS {
        let reg = lagging(driver, "").await;
        let repo = "lag/gc";
        let old_layer = b"a layer pushed before the manifest".repeat(20);
        let config = br#"{"os":"linux"}"#;

        // Everything written within the lag: nothing of it is listed, so
        // nothing of it is collected, even with no grace period at all.
        let (_, _, blobs) = reg
            .push_manifest_of(repo, Some("fresh"), config, &[b"fresh layer"], false, None)
            .await;
        let report = collect(&reg, Duration::ZERO).await;
        assert!(
            report.blobs_deleted.is_empty(),
            "{driver}: {}",
            report.summary()
        );
        for d in &blobs {
            assert_eq!(
                blob_status(&reg, repo, d).await,
                StatusCode::OK,
                "{driver}: fresh blob {d}"
            );
        }

        // A layer older than the lag under a manifest younger than it: the
        // mark does not see the manifest yet. With a grace period longer
        // than the layer's age the layer is kept by its time.
        let d_old = reg.push_blob(repo, &old_layer).await;
        let d_config = reg.push_blob(repo, config).await;
        past_lag(Instant::now()).await;
        let pushed = Instant::now();
        let body = oci_manifest(&d_config, config.len(), &[(&d_old, old_layer.len())], None);
        let r = reg.put_manifest(repo, "late", OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        let report = collect(&reg, 2 * LAG + Duration::from_secs(1)).await;
        assert!(
            report.blobs_deleted.is_empty(),
            "{driver}: {}",
            report.summary()
        );
        assert_blob(&reg, repo, &d_old, &old_layer).await;

        // With no grace period (distribution's, for a stopped registry),
        // the same collection within the lag deletes the layer of a
        // manifest it cannot see: the weakened guarantee docs/reliability.md
        // states (wait the lag after the last push, or give a grace period).
        if pushed.elapsed() < LAG {
            let report = collect(&reg, Duration::ZERO).await;
            if pushed.elapsed() < LAG {
                assert!(
                    report
                        .blobs_deleted
                        .iter()
                        .any(|(d, _)| d.to_string() == d_old),
                    "{driver}: {}",
                    report.summary()
                );
                assert_eq!(
                    blob_status(&reg, repo, &d_old).await,
                    StatusCode::NOT_FOUND,
                    "{driver}: lost layer"
                );
            }
        }
    }
}
