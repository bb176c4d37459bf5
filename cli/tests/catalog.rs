//! `regstore catalog rebuild` as an operator runs it: on a config file
//! whose storage a registry wrote, replacing what the index held.

mod common;

use common::*;

#[tokio::test]
async fn catalog_rebuild_fills_the_index_from_storage_and_prints_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    {
        let reg = start_on_root(&root, "").await;
        reg.push_image("app", "v1", "app").await;
        reg.push_image("team/tool", "v1", "tool").await;
        reg.push_blob("layers-only", b"no manifest").await;
    }
    let index = dir.path().join("repositories");
    std::fs::write(&index, "stale\n").unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\ncatalog:\n  index: file\n  path: {}\n",
            root.display(),
            index.display()
        ),
    )
    .unwrap();
    let out = regstore(&["catalog", "rebuild", config.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with("catalog index (file) rebuilt: 2 repositories in "),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&index).unwrap(), "app\nteam/tool\n");

    // Without an index there is nothing to rebuild: a message, exit 1.
    let plain = dir.path().join("plain.yml");
    std::fs::write(
        &plain,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .unwrap();
    let out = regstore(&["catalog", "rebuild", plain.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("set catalog.index to file or sql"),
        "{stderr}"
    );
}
