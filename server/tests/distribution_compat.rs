//! Storage compatibility with docker/distribution 2.8.2 (Debian's
//! `docker-registry`): what one writes, the other serves, on the same root.
//! Needs `/usr/bin/docker-registry` (`scripts/clients.sh install`).

mod common;

use common::distribution::serve as distribution;
use common::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Pushes what a real client pushes: a chunked layer, a config, an OCI
/// manifest by tag, a Docker manifest by digest, and an index over both.
/// Returns (tag manifest digest, index digest, layer bytes).
async fn push_set(api: &Api, repo: &str) -> (String, String, Vec<u8>) {
    let layer: Vec<u8> = (0..2_500_000u32).map(|i| (i % 249) as u8).collect();
    let ld = sha256(&layer);
    let r = api
        .client
        .post(api.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = header(&r, "location");
    if loc.starts_with('/') {
        loc = api.url(&loc);
    }
    for (i, chunk) in layer.chunks(1_000_000).enumerate() {
        let start = i * 1_000_000;
        let r = api
            .client
            .patch(&loc)
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {i}");
        loc = header(&r, "location");
        if loc.starts_with('/') {
            loc = api.url(&loc);
        }
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = api
        .client
        .put(format!("{loc}{sep}digest={ld}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"repo\":\"{repo}\"}}");
    let cd = api.push_blob(repo, config.as_bytes()).await;
    let oci = oci_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
    let r = api.put_manifest(repo, "v1", OCI_MANIFEST, &oci).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let docker = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{DOCKER_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"{cd}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"{ld}\",\"size\":{}}}]}}",
        config.len(),
        layer.len()
    );
    let dd = sha256(docker.as_bytes());
    let r = api
        .put_manifest(repo, &dd, DOCKER_MANIFEST, docker.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{}\",\"size\":{},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}},{{\"mediaType\":\"{DOCKER_MANIFEST}\",\"digest\":\"{dd}\",\"size\":{},\"platform\":{{\"architecture\":\"arm64\",\"os\":\"linux\"}}}}]}}",
        sha256(&oci),
        oci.len(),
        docker.len()
    );
    let r = api
        .put_manifest(repo, "multi", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (sha256(&oci), sha256(index.as_bytes()), layer)
}

/// Reads back everything [`push_set`] stored, through another registry.
async fn read_set(api: &Api, repo: &str, manifest: &str, index: &str, layer: &[u8]) {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}");
    for (reference, digest, media_type) in [
        ("v1", manifest, OCI_MANIFEST),
        (manifest, manifest, OCI_MANIFEST),
        ("multi", index, OCI_INDEX),
    ] {
        let r = api
            .client
            .get(api.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", &accept)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{} {repo}:{reference}",
            api.base
        );
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(header(&r, "content-type"), media_type);
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256(&body), digest);
        if reference == "multi" {
            let index: Value = serde_json::from_slice(&body).unwrap();
            for child in index["manifests"].as_array().unwrap() {
                let d = child["digest"].as_str().unwrap();
                let r = api
                    .client
                    .get(api.url(&format!("/v2/{repo}/manifests/{d}")))
                    .header("accept", &accept)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "child {d}");
                assert_eq!(sha256(&r.bytes().await.unwrap()), d);
            }
        }
    }
    let ld = sha256(layer);
    let r = api
        .client
        .get(api.url(&format!("/v2/{repo}/blobs/{ld}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), ld);
    let r = api
        .client
        .get(api.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    let tags: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    // distribution 2.8 lists tags in directory order; regstore sorts.
    let mut tags: Vec<String> = serde_json::from_value(tags["tags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, ["multi", "v1"], "{}", api.base);
    let r = api
        .client
        .get(api.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    let catalog: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(
        catalog["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == repo),
        "{catalog}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_writes_regstore_serves() {
    let Some(program) = require_program("docker-registry", "run scripts/clients.sh install") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dist = distribution(&program, root.path()).await;
    let (manifest, index, layer) = push_set(&dist.api, "from/distribution").await;
    drop(dist);
    let reg = start_on_root(root.path(), "").await;
    read_set(&reg, "from/distribution", &manifest, &index, &layer).await;
    // regstore can go on writing in that tree, and delete there.
    let (m2, i2, l2) = push_set(&reg, "from/distribution").await;
    read_set(&reg, "from/distribution", &m2, &i2, &l2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regstore_writes_distribution_serves() {
    let Some(program) = require_program("docker-registry", "run scripts/clients.sh install") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    {
        let reg = start_on_root(root.path(), "").await;
        let (manifest, index, layer) = push_set(&reg, "from/regstore").await;
        // A manifest with a subject adds regstore's referrers index, which
        // distribution must not trip over.
        let empty = reg.push_blob("from/regstore", b"{}").await;
        let sbom = oci_manifest(
            &empty,
            2,
            &[],
            Some(&format!(
                "\"artifactType\":\"application/vnd.example.sbom\",\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{manifest}\",\"size\":1}}"
            )),
        );
        let r = reg
            .put_manifest("from/regstore", &sha256(&sbom), OCI_MANIFEST, &sbom)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let dist = distribution(&program, root.path()).await;
        read_set(&dist.api, "from/regstore", &manifest, &index, &layer).await;
        // Both at once on the same root: a push through distribution is
        // served by regstore at once.
        let (m2, i2, l2) = push_set(&dist.api, "both").await;
        read_set(&reg, "both", &m2, &i2, &l2).await;
    }
}
