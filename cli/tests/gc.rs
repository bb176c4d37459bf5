//! `regstore garbage-collect` as an operator runs it: on a config file,
//! after the registry wrote to its root.

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn garbage_collect_prints_what_it_deletes_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (manifest, orphan) = {
        let reg = start_on_root(&root, DELETE_ON).await;
        let (_, manifest) = reg.push_image("app", "latest", "kept").await;
        (
            manifest,
            reg.push_blob("app", b"nobody references me").await,
        )
    };
    let hex = orphan.trim_start_matches("sha256:");
    let orphan_file = root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    assert!(orphan_file.is_file());
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let out = regstore(&["garbage-collect", "--dry-run", config]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("blob eligible for deletion: {orphan} (20 bytes)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 blobs marked, 1 blobs eligible for deletion (20 bytes), 0 manifests"),
        "{stdout}"
    );
    assert!(orphan_file.is_file(), "a dry run deletes nothing");

    let out = regstore(&["garbage-collect", config]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("blob deleted: {orphan}")),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains("1 blobs deleted (20 bytes)")
            && summary.contains("1 links to them deleted")
            && summary.contains("storage operations in"),
        "{summary}"
    );
    assert!(!orphan_file.exists());

    // -q: the summary only; nothing left to delete.
    let out = regstore(&["garbage-collect", "-q", config]);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("0 blobs deleted"), "{stdout}");

    // The kept image is served as before.
    let reg = start_on_root(&root, "").await;
    let r = reg
        .client
        .get(reg.url(&format!("/v2/app/manifests/{manifest}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn garbage_collect_names_a_config_it_cannot_read() {
    let out = regstore(&["garbage-collect", "/nonexistent/config.yml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/nonexistent/config.yml"), "{stderr}");
}
