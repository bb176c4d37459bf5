//! Manifests, tags, catalog, referrers and name rules over HTTP, on every
//! setup of `common::setups` (drivers, with and without blob-descriptor caches).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn json(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_a_manifest_by_tag_and_digest() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let (manifest, d) = reg.push_image("lib/app", "v1", "one").await;
        for reference in ["v1", d.as_str()] {
            let url = reg.url(&format!("/v2/lib/app/manifests/{reference}"));
            let r = reg
                .client
                .get(&url)
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{driver} {reference}");
            assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
            assert_eq!(header(&r, "docker-content-digest"), d);
            assert_eq!(
                header(&r, "docker-distribution-api-version"),
                "registry/2.0"
            );
            assert_eq!(r.bytes().await.unwrap().as_ref(), &manifest[..]);
            let r = reg.client.head(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "content-length"), manifest.len().to_string());
            assert_eq!(header(&r, "docker-content-digest"), d);
        }
        // The PUT answer.
        let cfg = reg.push_blob("lib/app", b"{}").await;
        let m = oci_manifest(&cfg, 2, &[], None);
        let r = reg.put_manifest("lib/app", "v2", OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            header(&r, "location"),
            format!("/v2/lib/app/manifests/{}", sha256(&m))
        );
        assert_eq!(header(&r, "docker-content-digest"), sha256(&m));

        let r = reg
            .client
            .get(reg.url("/v2/lib/app/manifests/nope"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = reg
            .client
            .get(reg.url(&format!("/v2/lib/app/manifests/{}", sha256(b"x"))))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = reg
            .client
            .get(reg.url("/v2/no/such/manifests/v1"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
        let r = reg
            .client
            .head(reg.url("/v2/lib/app/manifests/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifest_list_and_oci_index() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let cfg = reg.push_blob("d", b"{\"os\":\"linux\"}").await;
        let layer = reg.push_blob("d", b"layer bytes").await;
        let docker = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{DOCKER_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"{cfg}\",\"size\":15}},\"layers\":[{{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"{layer}\",\"size\":11}}]}}"
        );
        let r = reg
            .put_manifest("d", "docker", DOCKER_MANIFEST, docker.as_bytes())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
        let r = reg
            .client
            .get(reg.url("/v2/d/manifests/docker"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-type"), DOCKER_MANIFEST);

        let list = |mt: &str, child_mt: &str, child: &str| {
            format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{mt}\",\"manifests\":[{{\"mediaType\":\"{child_mt}\",\"digest\":\"{child}\",\"size\":{},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}}]}}",
                docker.len()
            )
        };
        let dl = list(DOCKER_LIST, DOCKER_MANIFEST, &sha256(docker.as_bytes()));
        let r = reg
            .put_manifest("d", "list", DOCKER_LIST, dl.as_bytes())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = reg
            .client
            .get(reg.url("/v2/d/manifests/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-type"), DOCKER_LIST);
        let oi = list(OCI_INDEX, DOCKER_MANIFEST, &sha256(docker.as_bytes()));
        let r = reg
            .put_manifest("d", "index", OCI_INDEX, oi.as_bytes())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = reg
            .client
            .get(reg.url("/v2/d/manifests/index"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-type"), OCI_INDEX);

        // An index whose child is not in the repository.
        let missing = list(OCI_INDEX, OCI_MANIFEST, &sha256(b"no such manifest"));
        let r = reg
            .put_manifest("d", "bad", OCI_INDEX, missing.as_bytes())
            .await;
        expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
        // The child exists only in another repository.
        let r = reg
            .put_manifest("elsewhere", "bad", OCI_INDEX, oi.as_bytes())
            .await;
        expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_are_refused_and_change_nothing() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let (good, d) = reg.push_image("b", "t", "good").await;
        let cfg = reg.push_blob("b", b"{}").await;
        let missing_layer = oci_manifest(&cfg, 2, &[(&sha256(b"absent"), 6)], None);
        let r = reg
            .put_manifest("b", "t", OCI_MANIFEST, &missing_layer)
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
        assert!(msg.contains(&sha256(b"absent")), "{msg}");
        for body in [&b"{not json"[..], b"[]", b"{\"schemaVersion\":1}", b""] {
            let r = reg.put_manifest("b", "t", OCI_MANIFEST, body).await;
            expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
        }
        // Content-Type disagrees with mediaType.
        let r = reg.put_manifest("b", "t", DOCKER_MANIFEST, &good).await;
        expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
        // A wrong field deep inside is named by its JSON path.
        let text = String::from_utf8(good.clone()).unwrap();
        for (broken, path) in [
            (text.replacen("\"size\":", "\"size\":-", 1), "config.size"),
            (
                text.replacen(
                    "\"layers\":[",
                    "\"layers\":[{\"mediaType\":\"x\",\"size\":1},",
                    1,
                ),
                "layers[0].digest is missing",
            ),
            (
                text.replacen(
                    "\"layers\":[",
                    "\"layers\":[{\"mediaType\":\"x\",\"size\":1,\"digest\":\"sha256:12\"},",
                    1,
                ),
                "layers[0].digest",
            ),
        ] {
            assert_ne!(broken, text, "the test edits the manifest");
            let r = reg
                .put_manifest("b", "t", OCI_MANIFEST, broken.as_bytes())
                .await;
            let msg = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
            assert!(msg.contains(path), "{path}: {msg}");
        }
        // Over 4 MiB.
        let big = oci_manifest(
            &cfg,
            2,
            &[],
            Some(&format!(
                "\"annotations\":{{\"pad\":\"{}\"}}",
                "x".repeat(4 << 20)
            )),
        );
        let r = reg.put_manifest("b", "t", OCI_MANIFEST, &big).await;
        let msg = expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID").await;
        assert!(msg.contains("limit is 4194304 bytes"), "{msg}");
        // By digest, with bytes that hash to something else.
        let r = reg
            .put_manifest("b", &sha256(b"other"), OCI_MANIFEST, &good)
            .await;
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        // The tag still points at the good manifest.
        let r = reg
            .client
            .get(reg.url("/v2/b/manifests/t"))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "docker-content-digest"), d, "{driver}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_by_digest_including_sha512() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let cfg = reg.push_blob("p", b"{}").await;
        let m = oci_manifest(&cfg, 2, &[], None);
        for d in [sha256(&m), sha512(&m)] {
            let r = reg.put_manifest("p", &d, OCI_MANIFEST, &m).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{driver} {d}");
            assert_eq!(header(&r, "docker-content-digest"), d);
            let r = reg
                .client
                .get(reg.url(&format!("/v2/p/manifests/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "docker-content-digest"), d);
        }
        let r = reg
            .client
            .get(reg.url("/v2/p/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["tags"], serde_json::json!([]), "untagged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_deletes_by_digest_and_by_tag() {
    for driver in setups() {
        let reg = start(driver, DELETE_ON, "").await;
        let (_, d) = reg.push_image("del", "a", "x").await;
        let cfg = reg.push_blob("del", b"{}").await;
        let m = oci_manifest(&cfg, 2, &[], None);
        assert_eq!(
            reg.put_manifest("del", "a2", OCI_MANIFEST, &m)
                .await
                .status(),
            StatusCode::CREATED
        );
        // "b" points at the same manifest as "a".
        let r = reg
            .client
            .get(reg.url("/v2/del/manifests/a"))
            .send()
            .await
            .unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(
            reg.put_manifest("del", "b", OCI_MANIFEST, &body)
                .await
                .status(),
            StatusCode::CREATED
        );

        let r = reg
            .client
            .delete(reg.url("/v2/del/manifests/a2"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{driver}: delete a tag");
        let r = reg
            .client
            .get(reg.url("/v2/del/manifests/a2"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = reg
            .client
            .get(reg.url(&format!("/v2/del/manifests/{}", sha256(&m))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the manifest outlives its tag");

        let r = reg
            .client
            .delete(reg.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        for reference in ["a", "b", d.as_str()] {
            let r = reg
                .client
                .get(reg.url(&format!("/v2/del/manifests/{reference}")))
                .send()
                .await
                .unwrap();
            expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        }
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = reg
            .client
            .get(reg.url("/v2/del/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["tags"], serde_json::json!([]));

        let reg = start(driver, "", "").await;
        let (_, d) = reg.push_image("keep", "a", "x").await;
        let r = reg
            .client
            .delete(reg.url(&format!("/v2/keep/manifests/{d}")))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_header_and_referrers_with_artifact_type_filter() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let (subject_body, subject) = reg.push_image("art", "v1", "base").await;
        let empty = reg.push_blob("art", b"{}").await;
        let subject_field = format!(
            "\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{subject}\",\"size\":{}}}",
            subject_body.len()
        );
        let mut digests = Vec::new();
        for (i, at) in [
            "application/vnd.example.sbom",
            "application/vnd.example.sig",
        ]
        .iter()
        .enumerate()
        {
            let m = oci_manifest(
                &empty,
                2,
                &[],
                Some(&format!(
                    "\"artifactType\":\"{at}\",{subject_field},\"annotations\":{{\"n\":\"{i}\"}}"
                )),
            );
            let d = sha256(&m);
            let r = reg.put_manifest("art", &d, OCI_MANIFEST, &m).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{driver}");
            assert_eq!(header(&r, "oci-subject"), subject);
            digests.push((d, m.len(), *at));
        }
        let r = reg
            .client
            .get(reg.url(&format!("/v2/art/referrers/{subject}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_INDEX);
        assert_eq!(header(&r, "oci-filters-applied"), "");
        let index = json(r).await;
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], OCI_INDEX);
        let got = index["manifests"].as_array().unwrap();
        assert_eq!(got.len(), 2, "{index}");
        digests.sort();
        for (entry, (d, size, at)) in got.iter().zip(&digests) {
            assert_eq!(entry["digest"], d.as_str());
            assert_eq!(entry["size"], *size);
            assert_eq!(entry["artifactType"], *at);
            assert_eq!(entry["mediaType"], OCI_MANIFEST);
            assert!(entry["annotations"]["n"].is_string());
        }
        let r = reg
            .client
            .get(reg.url(&format!(
                "/v2/art/referrers/{subject}?artifactType=application/vnd.example.sig"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
        let index = json(r).await;
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(
            index["manifests"][0]["artifactType"],
            "application/vnd.example.sig"
        );

        let r = reg
            .client
            .get(reg.url(&format!("/v2/art/referrers/{}", sha256(b"nothing refers"))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(json(r).await["manifests"], serde_json::json!([]));
        let r = reg
            .client
            .get(reg.url("/v2/art/referrers/sha256:bad"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_paginates_in_order() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let cfg = reg.push_blob("t/x", b"{}").await;
        let m = oci_manifest(&cfg, 2, &[], None);
        let tags = ["b", "a", "c", "A1", "_z", "latest"];
        for t in tags {
            assert_eq!(
                reg.put_manifest("t/x", t, OCI_MANIFEST, &m).await.status(),
                StatusCode::CREATED
            );
        }
        let mut sorted: Vec<&str> = tags.to_vec();
        sorted.sort();
        let r = reg
            .client
            .get(reg.url("/v2/t/x/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "link"), "");
        let body = json(r).await;
        assert_eq!(body["name"], "t/x");
        assert_eq!(body["tags"], serde_json::json!(sorted));

        let mut seen = Vec::new();
        let mut next = "/v2/t/x/tags/list?n=4".to_owned();
        for _ in 0..5 {
            let r = reg.client.get(reg.url(&next)).send().await.unwrap();
            let link = header(&r, "link");
            let body = json(r).await;
            for t in body["tags"].as_array().unwrap() {
                seen.push(t.as_str().unwrap().to_owned());
            }
            if link.is_empty() {
                break;
            }
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            next = link[1..link.find('>').unwrap()].to_owned();
        }
        assert_eq!(seen, sorted, "{driver}");
        let r = reg
            .client
            .get(reg.url("/v2/t/x/tags/list?n=2&last=b"))
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["tags"], serde_json::json!(["c", "latest"]));
        let r = reg
            .client
            .get(reg.url("/v2/t/x/tags/list?n=0"))
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["tags"], serde_json::json!([]));
        let r = reg
            .client
            .get(reg.url("/v2/t/x/tags/list?n=lots"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = reg
            .client
            .get(reg.url("/v2/unknown/tags/list"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The catalog lists a repository once it holds layers or manifests, as
/// distribution 2.x does (a blob pushed, no manifest yet is enough), each
/// once, and pages with `last` run across both kinds.
async fn catalog_lists_repositories_with_layers_or_manifests_in_pages() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        let r = reg
            .client
            .get(reg.url("/v2/_catalog"))
            .send()
            .await
            .unwrap();
        assert_eq!(json(r).await["repositories"], serde_json::json!([]));
        let names = ["a", "b/c", "b/c/d", "z", "m-n"];
        for n in names {
            reg.push_image(n, "latest", n).await;
        }
        let blob_only = ["only-blobs", "b/c/blobs", "b/c0"];
        for n in blob_only {
            reg.push_blob(n, b"x").await;
        }
        let r = reg
            .client
            .get(reg.url("/v2/_catalog"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
        let all: Vec<String> =
            serde_json::from_value(json(r).await["repositories"].clone()).unwrap();
        let mut expected: Vec<String> = names
            .iter()
            .chain(&blob_only)
            .map(|s| s.to_string())
            .collect();
        expected.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        assert_eq!(all, expected, "{driver}");

        let mut seen = Vec::new();
        let mut next = "/v2/_catalog?n=2".to_owned();
        for _ in 0..10 {
            let r = reg.client.get(reg.url(&next)).send().await.unwrap();
            let link = header(&r, "link");
            let page = json(r).await;
            let page = page["repositories"].as_array().unwrap().clone();
            assert!(page.len() <= 2);
            seen.extend(page.into_iter().map(|v| v.as_str().unwrap().to_owned()));
            if link.is_empty() {
                break;
            }
            next = link[1..link.find('>').unwrap()].to_owned();
        }
        assert_eq!(seen, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_names_and_references_are_400_never_500() {
    let reg = start("inmemory", "", "").await;
    let cases: &[(&str, &str)] = &[
        ("/v2/Upper/manifests/latest", "NAME_INVALID"),
        ("/v2/a//b/manifests/latest", "NAME_INVALID"),
        ("/v2/a/-b/tags/list", "NAME_INVALID"),
        ("/v2/a%2F..%2Fb/manifests/latest", "NAME_INVALID"),
        ("/v2/a/manifests/.bad", "TAG_INVALID"),
        ("/v2/a/manifests/sha256:short", "DIGEST_INVALID"),
        ("/v2/a/blobs/uploads/?digest=sha256:1", "DIGEST_INVALID"),
    ];
    for (path, code) in cases {
        let r = reg.client.get(reg.url(path)).send().await.unwrap();
        let r = if path.contains("uploads") {
            reg.client.post(reg.url(path)).send().await.unwrap()
        } else {
            r
        };
        expect_error(r, StatusCode::BAD_REQUEST, code).await;
    }
    let long = "a".repeat(256);
    let r = reg
        .client
        .get(reg.url(&format!("/v2/{long}/tags/list")))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    let tag128 = "t".repeat(128);
    let cfg = reg.push_blob("a", b"{}").await;
    let m = oci_manifest(&cfg, 2, &[], None);
    assert_eq!(
        reg.put_manifest("a", &tag128, OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = reg
        .put_manifest("a", &format!("{tag128}t"), OCI_MANIFEST, &m)
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "TAG_INVALID").await;
    let r = reg.put_manifest("A", "latest", OCI_MANIFEST, &m).await;
    expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    // A method an endpoint does not offer.
    let r = reg
        .client
        .post(reg.url("/v2/a/tags/list"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_and_configured_headers() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
        dir.path().display()
    );
    let reg = start_yaml(&yaml, dir).await;
    let r = reg.client.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let r = reg
        .client
        .post(reg.url(&format!("/v2/a/blobs/uploads/?digest={}", sha256(b"x"))))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let msg = expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    assert!(msg.contains("read-only"), "{msg}");
    let r = reg
        .client
        .get(reg.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_link_in_storage_is_a_named_500_not_a_crash() {
    let reg = start("filesystem", "", "").await;
    reg.push_image("broken", "v1", "x").await;
    let link = reg
        .dir
        .path()
        .join("root/docker/registry/v2/repositories/broken/_manifests/tags/v1/current/link");
    std::fs::write(&link, "not a digest").unwrap();
    let r = reg
        .client
        .get(reg.url("/v2/broken/manifests/v1"))
        .send()
        .await
        .unwrap();
    let msg = expect_error(r, StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN").await;
    assert!(msg.contains("tags/v1/current/link"), "{msg}");
    let r = reg.client.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the server goes on");
}

/// Ten referrers with 300 KiB of annotations each: no response carries
/// more than about 1 MiB of descriptors; the pages, followed by their
/// `Link` headers, give every referrer once, in digest order, also with an
/// artifactType filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_paginated_by_size() {
    let reg = start("filesystem", "", "").await;
    let (subject_body, subject) = reg.push_image("big", "v1", "base").await;
    let empty = reg.push_blob("big", b"{}").await;
    let subject_field = format!(
        "\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{subject}\",\"size\":{}}}",
        subject_body.len()
    );
    let filler = "x".repeat(300 * 1024);
    let mut all = Vec::new();
    for i in 0..10 {
        let at = if i % 2 == 0 {
            "application/vnd.even"
        } else {
            "application/vnd.odd"
        };
        let m = oci_manifest(
            &empty,
            2,
            &[],
            Some(&format!(
                "\"artifactType\":\"{at}\",{subject_field},\"annotations\":{{\"i\":\"{i}\",\"pad\":\"{filler}\"}}"
            )),
        );
        let d = sha256(&m);
        let r = reg.put_manifest("big", &d, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        all.push((d, at));
    }
    all.sort();
    for filter in [None, Some("application/vnd.odd")] {
        let want: Vec<&str> = all
            .iter()
            .filter(|(_, at)| filter.is_none_or(|f| f == *at))
            .map(|(d, _)| d.as_str())
            .collect();
        let mut url = match filter {
            None => format!("/v2/big/referrers/{subject}"),
            Some(f) => format!("/v2/big/referrers/{subject}?artifactType={f}"),
        };
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 20, "pagination ends");
            let r = reg.client.get(reg.url(&url)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let link = header(&r, "link");
            let body = r.bytes().await.unwrap();
            assert!(
                body.len() <= (1 << 20) + 320 * 1024,
                "a page of {} bytes",
                body.len()
            );
            let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for m in index["manifests"].as_array().unwrap() {
                got.push(m["digest"].as_str().unwrap().to_owned());
            }
            if link.is_empty() {
                break;
            }
            let next = link
                .strip_prefix('<')
                .and_then(|l| l.split_once('>'))
                .map(|(u, rest)| {
                    assert_eq!(rest, "; rel=\"next\"");
                    u.to_owned()
                })
                .expect("a Link header");
            url = next;
        }
        assert!(pages >= 2, "{filter:?}: more than one page ({pages})");
        assert_eq!(got, want, "{filter:?}: every referrer once, in order");
    }
    // A malformed `last` is a named client error.
    let r = reg
        .client
        .get(reg.url(&format!("/v2/big/referrers/{subject}?last=nope")))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

/// A layer with an empty `urls` list is an ordinary layer: its blob must be
/// in the repository. A layer with URLs (a foreign layer) is refused unless
/// `validation.manifests.urls` allows them; allowed, its blob is not
/// required, and `deny` still wins; `validation.disabled` accepts any
/// http(s) URL; a bad pattern stops startup naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_urls_follow_validation_manifests_urls() {
    let absent = sha256(b"foreign layer bytes");
    let layer = |urls: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{absent}","size":19{urls}}}"#
        )
    };
    let manifest = |cfg: &str, urls: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[{}]}}"#,
            layer(urls)
        )
        .into_bytes()
    };
    let ok_url = r#","urls":["https://mirror.example.com/layer.tgz"]"#;
    let denied_url = r#","urls":["https://mirror.example.com/private/layer.tgz"]"#;
    let other_url = r#","urls":["https://elsewhere.example.org/layer.tgz"]"#;

    // Default: no foreign layers; an empty list needs the blob.
    let reg = start("inmemory", "", "").await;
    let cfg = reg.push_blob("f", b"{}").await;
    let r = reg
        .put_manifest("f", "t", OCI_MANIFEST, &manifest(&cfg, r#","urls":[]"#))
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(msg.contains(&absent), "{msg}");
    let r = reg
        .put_manifest("f", "t", OCI_MANIFEST, &manifest(&cfg, ok_url))
        .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    assert!(msg.contains("validation.manifests.urls.allow"), "{msg}");

    // Allowed by pattern, with a deny rule.
    let rules = "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https://mirror\\.example\\.com/\n      deny:\n        - /private/\n";
    let reg = start("inmemory", "", rules).await;
    let cfg = reg.push_blob("f", b"{}").await;
    let r = reg
        .put_manifest("f", "t", OCI_MANIFEST, &manifest(&cfg, ok_url))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "an allowed foreign layer");
    for (urls, rule) in [
        (denied_url, "deny"),
        (other_url, "allow"),
        (r#","urls":["ftp://mirror.example.com/x"]"#, "http"),
    ] {
        let r = reg
            .put_manifest("f", "t2", OCI_MANIFEST, &manifest(&cfg, urls))
            .await;
        let msg = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
        assert!(msg.contains(rule), "{urls}: {msg}");
        assert!(msg.contains("layers[0].urls"), "{msg}");
    }

    // Validation disabled: any http(s) URL.
    let reg = start("inmemory", "", "validation:\n  disabled: true\n").await;
    let cfg = reg.push_blob("f", b"{}").await;
    let r = reg
        .put_manifest("f", "t", OCI_MANIFEST, &manifest(&cfg, other_url))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A broken pattern is a config error naming it.
    let e = regstore_server::config::Config::from_yaml(
        "version: 0.1\nstorage:\n  inmemory:\nvalidation:\n  manifests:\n    urls:\n      allow: ['(unclosed']\n",
        "test",
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("(unclosed") && e.contains("allow"), "{e}");
}

/// `validation.manifests.maxreferences` bounds the descriptors a pushed
/// manifest or index carries (counting the config), named in the error;
/// at the limit a push goes through, however often a digest repeats; 0 is
/// a config error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_references_are_limited() {
    let reg = start(
        "inmemory",
        "",
        "validation:\n  manifests:\n    maxreferences: 4\n",
    )
    .await;
    let cfg = reg.push_blob("r", b"{}").await;
    let layer = reg.push_blob("r", b"layer").await;
    let image = |n: usize| {
        let layers = vec![(layer.as_str(), 5); n];
        oci_manifest(&cfg, 2, &layers, None)
    };
    let r = reg
        .put_manifest("r", "three", OCI_MANIFEST, &image(3))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "config + 3 layers = 4");
    let r = reg.put_manifest("r", "four", OCI_MANIFEST, &image(4)).await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    assert!(
        msg.contains("5 references") && msg.contains("maxreferences") && msg.contains("(4)"),
        "{msg}"
    );
    let r = reg
        .client
        .get(reg.url("/v2/r/manifests/four"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing stored");

    let child = sha256(&image(3));
    let entry = format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":1}}"#);
    let index = |n: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            vec![entry.as_str(); n].join(",")
        )
        .into_bytes()
    };
    let r = reg.put_manifest("r", "i4", OCI_INDEX, &index(4)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.put_manifest("r", "i5", OCI_INDEX, &index(5)).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;

    let e = regstore_server::config::Config::from_yaml(
        "version: 0.1\nstorage:\n  inmemory:\nvalidation:\n  manifests:\n    maxreferences: 0\n",
        "test",
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("maxreferences"), "{e}");
}

/// The memory manifest pushes take together is bounded: with the budget
/// taken by pushes of the largest size, another push waits (its body is not
/// read) until one of them ends, and then goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_pushes_share_a_bounded_memory_budget() {
    use regstore_server::registry::{MANIFEST_BUDGET, MAX_MANIFEST_SIZE};
    let config = regstore_server::config::Config::from_yaml(
        "version: 0.1\nstorage:\n  inmemory:\n",
        "t",
        [],
    )
    .unwrap();
    let state = regstore_server::serve::app_state(&config).await.unwrap();
    let registry = state.registry;
    let mut held = Vec::new();
    for _ in 0..MANIFEST_BUDGET / MAX_MANIFEST_SIZE {
        held.push(registry.reserve_manifest_bytes(MAX_MANIFEST_SIZE).await);
    }
    let waiting = tokio::time::timeout(
        Duration::from_millis(200),
        registry.reserve_manifest_bytes(1000),
    )
    .await;
    assert!(waiting.is_err(), "a push beyond the budget waits");
    held.pop();
    let room = tokio::time::timeout(
        Duration::from_secs(5),
        registry.reserve_manifest_bytes(MAX_MANIFEST_SIZE),
    )
    .await;
    assert!(room.is_ok(), "room is given back when a push ends");
}

/// A tag that does not exist in a repository that holds blobs but no
/// manifest yet is an unknown manifest (the repository exists), as in
/// distribution and the OCI spec; in a repository with nothing at all it is
/// an unknown name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_in_a_repository_with_only_blobs_is_manifest_unknown() {
    for driver in setups() {
        let reg = start(driver, "", "").await;
        reg.push_blob("blobs/only", b"some layer").await;
        let r = reg
            .client
            .get(reg.url("/v2/blobs/only/manifests/latest"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = reg
            .client
            .get(reg.url("/v2/nothing/here/manifests/latest"))
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    }
}
