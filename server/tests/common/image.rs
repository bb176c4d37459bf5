//! Real registry clients: finding skopeo, podman and umoci, building a small
//! image offline (busybox-static in one layer, a text file in another), and
//! reading an OCI layout back. `scripts/clients.sh install` installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::{require_program, sha256};

/// Runs `program` with `args` and asserts it succeeded (output in the message).
pub fn run(program: &Path, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {}: {}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The client programs, found on PATH.
pub struct Tools {
    pub skopeo: PathBuf,
    pub podman: PathBuf,
    pub umoci: PathBuf,
}

/// The clients, or `None` (skipped) when one is missing outside CI.
pub fn tools() -> Option<Tools> {
    let hint = "run scripts/clients.sh install";
    let skopeo = require_program("skopeo", hint);
    let podman = require_program("podman", hint);
    let umoci = require_program("umoci", hint);
    let busybox = Path::new("/bin/busybox").is_file();
    if !busybox {
        require_program("busybox", hint)?;
    }
    Some(Tools {
        skopeo: skopeo?,
        podman: podman?,
        umoci: umoci?,
    })
}

/// An OCI layout at `dir/oci` with image `base`: busybox in one layer, a
/// text file in a second; entrypoint busybox.
pub fn build_image(umoci: &Path, dir: &Path) -> String {
    let layout = dir.join("oci");
    let image = format!("{}:base", layout.display());
    let bundle = dir.join("bundle");
    run(umoci, &["init", "--layout", layout.to_str().unwrap()]);
    run(umoci, &["new", "--image", &image]);
    run(
        umoci,
        &[
            "unpack",
            "--rootless",
            "--image",
            &image,
            bundle.to_str().unwrap(),
        ],
    );
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static is installed");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    run(
        umoci,
        &["repack", "--image", &image, bundle.to_str().unwrap()],
    );
    run(
        umoci,
        &[
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/bin/busybox",
            "--config.cmd",
            "sh",
        ],
    );
    let hello = dir.join("hello.txt");
    std::fs::write(&hello, "hello from regstore's client test\n").unwrap();
    run(
        umoci,
        &[
            "insert",
            "--image",
            &image,
            hello.to_str().unwrap(),
            "/etc/hello.txt",
        ],
    );
    image
}

pub fn manifest_of_layout(layout: &Path) -> (String, Value) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = layout.join("blobs/sha256").join(&digest[7..]);
    let bytes = std::fs::read(blob).unwrap();
    assert_eq!(
        sha256(&bytes),
        digest,
        "the layout's manifest hashes to its digest"
    );
    (digest, serde_json::from_slice(&bytes).unwrap())
}
