//! Disk full on the filesystem driver (issue 22). The registry's root is a
//! tmpfs of [`SIZE_MIB`] MiB that the test mounts (as root; without root it
//! is skipped, and under `REGSTORE_REQUIRE_BACKENDS=1` it fails) and
//! unmounts when it ends.
//!
//! What must hold:
//! - a push larger than the free space, in one PUT or as a chunk, answers
//!   `507 Insufficient Storage` with the spec's error body naming the full
//!   storage; an upload stays at its last acknowledged size, and the space
//!   the failed request took is given back;
//! - nothing of a failed push is visible (blob HEAD 404, tag unknown);
//! - with the disk full to the last byte, manifest pushes answer 507 and
//!   pulls of what was stored before answer as before;
//! - once space is freed, the same registry (no restart) takes pushes again
//!   and the interrupted chunked upload completes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    OCI_MANIFEST, TestRegistry, begin, header, oci_manifest, sha256, start_on_root, with_digest,
};
use reqwest::StatusCode;
use serde_json::Value;

/// Size of the tmpfs.
const SIZE_MIB: u64 = 16;
const MIB: usize = 1 << 20;

/// A tmpfs mounted at a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `SIZE_MIB` MiB, or `None` (skipped) where that is not
    /// allowed.
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={SIZE_MIB}m,mode=0700"))
            .arg("regstore-disk-full")
            .arg(dir.path())
            .output();
        let mounted = match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "mount -t tmpfs failed (it needs root): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run mount: {e}")),
        };
        regstore_testenv::backend::skip_unless_required("a tmpfs for the disk-full test", mounted)?;
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes in use on the tmpfs.
    fn used(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(self.path())
            .output()
            .expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {text}"))
    }

    /// Writes a file until the tmpfs has no byte left; its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let block = vec![0u8; 64 << 10];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // What fits of a last partial block.
        let mut small = vec![0u8; 512];
        while !small.is_empty() {
            match f.write(&small) {
                Ok(0) | Err(_) => {
                    small.truncate(small.len() / 2);
                }
                Ok(_) => {}
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file still open (the registry's last writer) does not
        // keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// A body of `len` bytes that differ from those of other seeds.
fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Asserts a 507 whose error body names the full storage.
async fn expect_full(r: reqwest::Response, what: &str) {
    let status = r.status();
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        body["errors"][0]["code"] == "UNAVAILABLE" && message.contains("no space left"),
        "{what}: {body}"
    );
}

/// The upload's `Range` (its acknowledged size; `0-0` when empty), `None`
/// if it is gone.
async fn upload_range(reg: &TestRegistry, loc: &str) -> Option<String> {
    let r = reg.client.get(loc).send().await.unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "upload status");
    Some(header(&r, "range"))
}

async fn patch(reg: &TestRegistry, loc: &str, from: usize, data: &[u8]) -> reqwest::Response {
    reg.client
        .patch(loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{from}-{}", from + data.len() - 1))
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

async fn get(reg: &TestRegistry, path: &str) -> (StatusCode, Vec<u8>) {
    let r = reg
        .client
        .get(reg.url(path))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_pushes_with_507_keeps_serving_pulls_and_recovers() {
    let Some(disk) = Tmpfs::mount() else { return };
    let reg = start_on_root(&disk.path().join("root"), "  delete:\n    enabled: true\n").await;

    // Stored before the disk fills: pulled at every step.
    let (manifest, manifest_digest) = reg.push_image("keep/app", "v1", "kept").await;
    let pulls_as_before = || async {
        for path in [
            "/v2/keep/app/manifests/v1".to_owned(),
            format!("/v2/keep/app/manifests/{manifest_digest}"),
        ] {
            let (status, body) = get(&reg, &path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, manifest, "{path}");
        }
        let m: Value = serde_json::from_slice(&manifest).unwrap();
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_owned());
        }
        for d in blobs {
            let (status, body) = get(&reg, &format!("/v2/keep/app/blobs/{d}")).await;
            assert_eq!(status, StatusCode::OK, "{d}");
            assert_eq!(sha256(&body), d);
        }
    };
    let baseline = disk.used();

    // One PUT larger than the disk.
    let big = bytes(1, (SIZE_MIB as usize + 4) * MIB);
    let big_digest = sha256(&big);
    let loc = begin(&reg, "push/big").await;
    let r = reg
        .client
        .put(with_digest(&loc, &big_digest))
        .header("content-type", "application/octet-stream")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_full(r, "monolithic PUT beyond the free space").await;
    let r = reg
        .client
        .head(reg.url(&format!("/v2/push/big/blobs/{big_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "no part of it is visible"
    );
    assert!(
        matches!(
            upload_range(&reg, &loc).await.as_deref(),
            None | Some("0-0")
        ),
        "the upload is empty or discarded"
    );
    let after = disk.used();
    assert!(
        after < baseline + MIB as u64,
        "the failed PUT's bytes are given back: {baseline} used before, {after} after"
    );
    pulls_as_before().await;

    // Chunks: 6 MiB fit, the next 12 MiB do not; the upload stays at 6 MiB.
    let blob = bytes(2, 10 * MIB);
    let blob_digest = sha256(&blob);
    let loc = begin(&reg, "push/chunked").await;
    let r = patch(&reg, &loc, 0, &blob[..6 * MIB]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "first chunk fits");
    let loc = reg.url(&header(&r, "location"));
    let r = patch(&reg, &loc, 6 * MIB, &bytes(3, 12 * MIB)).await;
    expect_full(r, "a chunk beyond the free space").await;
    assert_eq!(
        upload_range(&reg, &loc).await,
        Some(format!("0-{}", 6 * MIB - 1)),
        "the upload stays at its acknowledged size"
    );
    let after = disk.used();
    assert!(
        after < baseline + 7 * MIB as u64,
        "only the acknowledged 6 MiB stay: {baseline} used before, {after} after"
    );

    // Full to the last byte: manifests and new uploads fail, pulls work.
    let config = reg.push_blob("push/m", b"{}").await;
    let filler = disk.fill();
    let r = reg
        .put_manifest(
            "push/m",
            "new",
            OCI_MANIFEST,
            &oci_manifest(&config, 2, &[], None),
        )
        .await;
    expect_full(r, "manifest PUT on a full disk").await;
    let (status, _) = get(&reg, "/v2/push/m/manifests/new").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the failed manifest is not visible"
    );
    pulls_as_before().await;
    let r = reg
        .client
        .get(reg.url("/v2/keep/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "tags list on a full disk");

    // Space freed: the same server completes the chunked upload and takes
    // a new image.
    std::fs::remove_file(&filler).expect("remove filler");
    let r = patch(&reg, &loc, 6 * MIB, &blob[6 * MIB..]).await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "the rest of the chunked blob"
    );
    let loc = reg.url(&header(&r, "location"));
    let r = reg
        .client
        .put(with_digest(&loc, &blob_digest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "chunked upload completes");
    let (status, body) = get(&reg, &format!("/v2/push/chunked/blobs/{blob_digest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256(&body), blob_digest);
    let (m, d) = reg.push_image("push/m", "new", "after").await;
    let (status, body) = get(&reg, &format!("/v2/push/m/manifests/{d}")).await;
    assert_eq!((status, body), (StatusCode::OK, m));
    pulls_as_before().await;
}
