//! Debian's `docker-registry` (docker/distribution 2.8.2) on a filesystem
//! root: `serve` on 127.0.0.1, and `garbage-collect` with its output parsed.
//! Tests find the program with [`super::require_program`].

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{Api, free_port};

/// distribution's config for a filesystem root (deletes enabled, upload
/// purging off so nothing but the test changes the root), listening on
/// `127.0.0.1:port`.
pub fn config(root: &Path, port: u16) -> String {
    config_with(root, port, "")
}

/// [`config`] with `extra` (top-level YAML sections such as `auth:`)
/// appended.
pub fn config_with(root: &Path, port: u16, extra: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: compat-test\n{extra}",
        root.display()
    )
}

/// `docker-registry serve` on 127.0.0.1 over `root`; killed when dropped.
pub struct Distribution {
    child: Child,
    pub api: Api,
    _config: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program serve` over `root` and waits (30 s at most) until
/// `/v2/` answers.
pub async fn serve(program: &Path, root: &Path) -> Distribution {
    serve_with(program, root, "").await
}

/// [`serve`] with `extra` appended to the config ([`config_with`]); with
/// an `auth:` section, `/v2/` answering 401 counts as ready.
pub async fn serve_with(program: &Path, root: &Path, extra: &str) -> Distribution {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config_with(root, port, extra)).unwrap();
    let child = Command::new(program)
        .arg("serve")
        .arg(&config_path)
        // 2.8.2 panics at startup while AWS_CA_BUNDLE is set.
        .env_remove("AWS_CA_BUNDLE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let d = Distribution {
        child,
        api: Api::new(format!("http://127.0.0.1:{port}")),
        _config: dir,
    };
    let start = Instant::now();
    loop {
        if let Ok(r) = d.api.client.get(d.api.url("/v2/")).send().await
            && (r.status() == StatusCode::OK
                || (!extra.is_empty() && r.status() == StatusCode::UNAUTHORIZED))
        {
            return d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "docker-registry did not answer on {} within 30 s",
            d.api.base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `docker-registry garbage-collect` printed.
#[derive(Debug, Default)]
pub struct GcOutput {
    /// `N blobs marked, …`.
    pub marked: usize,
    /// `…, M blobs and …`.
    pub blobs_count: usize,
    /// `… and K manifests eligible for deletion`.
    pub manifests_count: usize,
    /// Every `blob eligible for deletion: <digest>` line's digest.
    pub blobs: BTreeSet<String>,
    /// Every `manifest eligible for deletion: <digest>` line's digest
    /// (2.8.2 names no repository there).
    pub manifests: BTreeSet<String>,
    /// All of stdout, for messages.
    pub stdout: String,
}

/// Runs `program garbage-collect [--dry-run] [--delete-untagged]` over the
/// filesystem `root`; asserts it succeeded and parses its output.
pub fn garbage_collect(
    program: &Path,
    root: &Path,
    dry_run: bool,
    delete_untagged: bool,
) -> GcOutput {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config(root, free_port())).unwrap();
    let mut cmd = Command::new(program);
    cmd.arg("garbage-collect");
    if dry_run {
        cmd.arg("--dry-run");
    }
    if delete_untagged {
        cmd.arg("--delete-untagged");
    }
    let out = cmd
        .arg(&config_path)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("run docker-registry garbage-collect");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker-registry garbage-collect failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_gc_output(stdout)
}

/// Parses `docker-registry garbage-collect`'s stdout (see [`GcOutput`]).
pub fn parse_gc_output(stdout: String) -> GcOutput {
    let mut g = GcOutput::default();
    let mut summary = false;
    for line in stdout.lines() {
        if let Some(d) = line.strip_prefix("blob eligible for deletion: ") {
            g.blobs.insert(d.trim().to_owned());
        } else if let Some(d) = line.strip_prefix("manifest eligible for deletion: ") {
            g.manifests.insert(d.trim().to_owned());
        } else if let Some(rest) = line.strip_suffix(" manifests eligible for deletion") {
            // N blobs marked, M blobs and K manifests eligible for deletion
            let n: Vec<usize> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(n.len(), 3, "summary line {line:?}");
            (g.marked, g.blobs_count, g.manifests_count) = (n[0], n[1], n[2]);
            summary = true;
        }
    }
    assert!(summary, "no summary line in: {stdout}");
    assert_eq!(g.blobs.len(), g.blobs_count, "{stdout}");
    g.stdout = stdout;
    g
}
