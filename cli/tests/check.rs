//! `regstore check CONFIG` as a user runs it, on a filesystem root an
//! in-process registry pushed to: exit 0 when clean, 1 with a line per
//! problem, `--repair` exit 0 once only dangling links were wrong.

mod common;

use common::*;
use regstore_server::registry::{Digest, RepoName, layout};

fn run_check(config: &std::path::Path, repair: bool) -> (Option<i32>, String) {
    let config = config.display().to_string();
    let mut args = vec!["check", "--concurrency", "2"];
    if repair {
        args.push("--repair");
    }
    args.push(&config);
    let out = regstore(&args);
    let stdout = text(&out.stdout);
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr: {}",
        text(&out.stderr)
    );
    (out.status.code(), stdout)
}

fn summary(stdout: &str) -> &str {
    stdout.trim_end().lines().last().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_problems_and_repairs_dangling_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let reg = start_on_root(&root, "").await;
    let (manifest, m) = reg.push_image("app", "v1", "one").await;
    reg.push_image("app", "v2", "two").await;
    let orphan: Digest = reg.push_blob("app", b"orphan").await.parse().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            root.display()
        ),
    )
    .unwrap();

    let (code, out) = run_check(&config, false);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().count(), 1, "only the summary: {out}");
    assert!(
        summary(&out).starts_with("7 blobs checked (")
            && summary(&out).contains(" 2 manifests checked: 0 problems found"),
        "{out}"
    );

    // A dangling link and a file outside the layout: repair fixes the
    // first; the second is not a problem.
    let driver = reg.registry.driver();
    let app = RepoName::parse("app").unwrap();
    driver.delete(layout::blob_data(&orphan)).await.unwrap();
    std::fs::write(
        root.join("docker/registry/v2/repositories/app/notes.txt"),
        "hi",
    )
    .unwrap();
    let (code, out) = run_check(&config, false);
    assert_eq!(code, Some(1), "{out}");
    let link = layout::layer_link(&app, &orphan);
    assert!(
        out.starts_with(&format!(
            "dangling layer link {link}: blob {orphan} does not exist\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "unexpected files (outside the layout; not counted as problems):\n  /docker/registry/v2/repositories/app/notes.txt: "
        ),
        "{out}"
    );
    let (code, out) = run_check(&config, true);
    assert_eq!(code, Some(0), "every problem was repaired: {out}");
    assert!(
        out.contains(&format!("(repaired: removed {link})")),
        "{out}"
    );
    assert!(
        summary(&out).contains("1 problems found, 1 repaired, 0 remaining; 1 unexpected files"),
        "{out}"
    );

    // A corrupt blob and a layer gone: repair removes the layer's link,
    // the corruption and the manifest's missing layer remain.
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config_d: Digest = v["config"]["digest"].as_str().unwrap().parse().unwrap();
    let layer: Digest = v["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    let data = driver
        .get_content(layout::blob_data(&config_d))
        .await
        .unwrap();
    let flipped: Vec<u8> = data.iter().map(|b| !b).collect();
    driver
        .put_content(layout::blob_data(&config_d), flipped)
        .await
        .unwrap();
    driver.delete(layout::blob_data(&layer)).await.unwrap();
    let (code, out) = run_check(&config, false);
    assert_eq!(code, Some(1), "{out}");
    for line in [
        format!("blob {config_d}: content hashes to "),
        format!(
            "dangling layer link {}: blob {layer} does not exist\n",
            layout::layer_link(&app, &layer)
        ),
        format!("manifest app@{m} references blob {layer} whose data does not exist\n"),
    ] {
        assert!(out.contains(&line), "{out}\nmissing: {line}");
    }
    assert!(summary(&out).contains("3 problems found"), "{out}");
    let (code, out) = run_check(&config, true);
    assert_eq!(code, Some(1), "the corruption remains: {out}");
    assert!(
        summary(&out).contains("3 problems found, 1 repaired, 2 remaining"),
        "{out}"
    );
    assert!(
        std::fs::metadata(root.join(layout::blob_data(&config_d).trim_start_matches('/'))).is_ok(),
        "no blob is deleted"
    );
}
