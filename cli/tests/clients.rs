//! Real clients against `regstore serve`: skopeo and podman from Debian push,
//! inspect, list, pull and delete an image built locally (no network) with
//! umoci from the busybox-static binary. Install them with
//! `scripts/clients.sh install`.

mod common;

use std::process::Command;

use common::image::{build_image, manifest_of_layout, run, tools};
use common::{serve, sha256};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_podman_push_pull_inspect_list_delete() {
    let Some(t) = tools() else { return };
    let work = tempfile::tempdir().unwrap();
    let image = build_image(&t.umoci, work.path());
    let (src_digest, src_manifest) = manifest_of_layout(&work.path().join("oci"));
    assert_eq!(src_manifest["layers"].as_array().unwrap().len(), 2);

    let server = serve(
        work.path(),
        &[],
        &[(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            work.path().join("data").to_str().unwrap(),
        )],
    );
    let host = server.base.trim_start_matches("http://").to_owned();
    let skopeo = |args: &[&str]| run(&t.skopeo, args);

    // skopeo: push as OCI, and as Docker schema 2 under another tag.
    let dest = format!("docker://{host}/clients/busybox:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &dest,
    ]);
    let dest_v2s2 = format!("docker://{host}/clients/busybox:docker");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("oci:{image}"),
        &dest_v2s2,
    ]);

    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &dest]).stdout;
    assert_eq!(
        sha256(&raw),
        src_digest,
        "the manifest arrives byte for byte"
    );
    let info: Value =
        serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &dest]).stdout).unwrap();
    assert_eq!(info["Digest"], src_digest.as_str());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let raw: Value = serde_json::from_slice(
        &skopeo(&["inspect", "--tls-verify=false", "--raw", &dest_v2s2]).stdout,
    )
    .unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    let tags: Value = serde_json::from_slice(
        &skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{host}/clients/busybox"),
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["docker", "v1"]));

    // Copy back out and compare.
    let out = work.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:v1", out.display()),
    ]);
    let (out_digest, out_manifest) = manifest_of_layout(&out);
    assert_eq!(out_digest, src_digest);
    for layer in out_manifest["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        let bytes = std::fs::read(out.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(sha256(&bytes), d, "layer {d} intact");
    }

    // podman: pull what skopeo pushed, push it elsewhere, pull that back.
    let storage = work.path().join("podman");
    let root = storage.join("root");
    let runroot = storage.join("run");
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        run(&t.podman, &all)
    };
    let pulled = format!("{host}/clients/busybox:v1");
    podman(&["pull", "--tls-verify=false", &pulled]);
    let pushed = format!("{host}/clients/pushed-by-podman:v2");
    podman(&["tag", &pulled, &pushed]);
    podman(&["push", "--tls-verify=false", &pushed]);
    podman(&["rmi", "--force", &pulled, &pushed]);
    podman(&["pull", "--tls-verify=false", &pushed]);
    let images = String::from_utf8_lossy(
        &podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout,
    )
    .into_owned();
    assert!(images.contains(&pushed), "{images}");
    let info: Value = serde_json::from_slice(
        &skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{pushed}"),
        ])
        .stdout,
    )
    .unwrap();
    let layers = info["Layers"].as_array().unwrap();
    let src_layers: Vec<&str> = src_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert!(
            src_layers.contains(&l.as_str().unwrap()),
            "podman pushed the same layers"
        );
    }

    // skopeo delete removes the manifest.
    skopeo(&["delete", "--tls-verify=false", &dest]);
    let gone = Command::new(&t.skopeo)
        .args(["inspect", "--tls-verify=false", &dest])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "deleted image still inspectable");
    drop(server);
}
