//! Real clients against `regstore serve`: skopeo and podman from Debian push,
//! inspect, list, pull and delete an image built locally (no network) with
//! umoci from the busybox-static binary. Install them with
//! `scripts/clients.sh install`.

mod common;

use std::process::Command;

use common::image::{build_image, manifest_of_layout, run, tools};
use common::{serve, sha256};
use serde_json::Value;

/// Runs podman with its storage under `storage` (vfs, no cgroups, no
/// events: what works unprivileged in a container).
fn podman_in(
    t: &common::image::Tools,
    storage: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let (root, runroot) = (storage.join("root"), storage.join("run"));
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
}

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
    let podman = |args: &[&str]| podman_in(&t, &storage, args);
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

/// Debian's stock `/etc/docker/registry/config.yml`, copied with its two
/// paths rewritten (storage root, htpasswd file) and TLS added through
/// `REGISTRY_HTTP_TLS_*`, starts regstore unchanged: the missing htpasswd
/// file is created with user `docker` and its password printed once;
/// `skopeo login` and `podman login` with it, then push and pull over TLS
/// with the test certificate as CA. Without credentials the registry
/// answers 401; the access log names the user and never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_stock_config_with_htpasswd_over_tls_serves_skopeo_and_podman() {
    let Some(t) = tools() else { return };
    let Some(stock) = regstore_testenv::backend::skip_unless_required(
        "Debian's stock registry config",
        std::fs::read_to_string("/etc/docker/registry/config.yml").map_err(|e| {
            format!("/etc/docker/registry/config.yml: {e} (scripts/clients.sh install)")
        }),
    ) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let htpasswd = w.join("auth/htpasswd");
    let config = stock
        .replace("/var/lib/docker-registry", w.join("data").to_str().unwrap())
        .replace(
            "path: /etc/docker/registry",
            &format!("path: {}", htpasswd.display()),
        );
    assert_eq!(config.matches(w.to_str().unwrap()).count(), 2, "{config}");
    let cfg = w.join("config.yml");
    std::fs::write(&cfg, &config).unwrap();
    let (cert, key) = regstore_testenv::openssl::self_signed(w).expect("openssl");
    let certs = w.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&cert, certs.join("ca.crt")).unwrap();

    let image = build_image(&t.umoci, w);
    let (src_digest, _) = manifest_of_layout(&w.join("oci"));
    let server = serve(
        w,
        &["--config", cfg.to_str().unwrap()],
        &[
            ("REGISTRY_HTTP_TLS_CERTIFICATE", cert.to_str().unwrap()),
            ("REGISTRY_HTTP_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let host = server.base.trim_start_matches("https://").to_owned();
    let password = {
        let log = server.log.lock().unwrap().join("\n");
        let line = log
            .lines()
            .find(|l| l.contains("created with user \"docker\", password "))
            .unwrap_or_else(|| panic!("no provisioning line:\n{log}"))
            .to_owned();
        line.rsplit(' ').next().unwrap().to_owned()
    };
    let authfile = w.join("auth.json");
    let (certs, authfile) = (certs.to_str().unwrap(), authfile.to_str().unwrap());

    // Without credentials: refused.
    let out = Command::new(&t.skopeo)
        .args(["inspect", "--cert-dir", certs, "--authfile", authfile])
        .arg(format!("docker://{host}/debian/busybox:v1"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401")
            || err.to_lowercase().contains("unauthorized")
            || err.contains("authentication required"),
        "{err}"
    );
    let out = Command::new(&t.skopeo)
        .args([
            "login",
            "--cert-dir",
            certs,
            "--authfile",
            authfile,
            "-u",
            "docker",
            "-p",
            "wrong",
            &host,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password logs in");

    run(
        &t.skopeo,
        &[
            "login",
            "--cert-dir",
            certs,
            "--authfile",
            authfile,
            "-u",
            "docker",
            "-p",
            &password,
            &host,
        ],
    );
    let dest = format!("docker://{host}/debian/busybox:v1");
    run(
        &t.skopeo,
        &[
            "copy",
            "--dest-cert-dir",
            certs,
            "--dest-authfile",
            authfile,
            &format!("oci:{image}"),
            &dest,
        ],
    );
    let raw = run(
        &t.skopeo,
        &[
            "inspect",
            "--cert-dir",
            certs,
            "--authfile",
            authfile,
            "--raw",
            &dest,
        ],
    )
    .stdout;
    assert_eq!(sha256(&raw), src_digest);

    // podman: log in, pull what skopeo pushed, push it under another name.
    let storage = w.join("podman");
    let podman = |args: &[&str]| podman_in(&t, &storage, args);
    podman(&[
        "login",
        "--cert-dir",
        certs,
        "--authfile",
        authfile,
        "-u",
        "docker",
        "-p",
        &password,
        &host,
    ]);
    let pulled = format!("{host}/debian/busybox:v1");
    podman(&["pull", "--cert-dir", certs, "--authfile", authfile, &pulled]);
    let pushed = format!("{host}/debian/by-podman:v2");
    podman(&["tag", &pulled, &pushed]);
    podman(&["push", "--cert-dir", certs, "--authfile", authfile, &pushed]);
    let raw = run(
        &t.skopeo,
        &[
            "inspect",
            "--cert-dir",
            certs,
            "--authfile",
            authfile,
            "--raw",
            &format!("docker://{pushed}"),
        ],
    )
    .stdout;
    assert!(!raw.is_empty());

    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("user=\"docker\"") || log.contains("user=docker"),
        "{log}"
    );
    assert_eq!(
        log.matches(password.as_str()).count(),
        1,
        "the password appears once, in the provisioning line:\n{log}"
    );
    assert!(
        !log.contains("auth.htpasswd over plain HTTP"),
        "TLS is on: no warning"
    );
}

/// `auth.token` with skopeo, which follows the Docker token protocol: it
/// meets the Bearer challenge, asks the token server (inside the test) for
/// the scope named, and retries with the token. `alice` pushes and pulls;
/// `reader`, whose tokens grant pull only, pulls and cannot push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_through_a_token_server() {
    use common::token::{Signer, token_server};
    let Some(t) = tools() else { return };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let signer = std::sync::Arc::new(Signer::new(w, "signer", "rsa", None));
    let tokens = token_server(signer.clone(), "test-issuer", "test-registry").await;
    let cfg = w.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nauth:\n  token:\n    realm: {}\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            w.join("data").display(),
            tokens.url,
            signer.cert.display()
        ),
    )
    .unwrap();
    let image = build_image(&t.umoci, w);
    let (src_digest, _) = manifest_of_layout(&w.join("oci"));
    let server = serve(w, &["--config", cfg.to_str().unwrap()], &[]);
    let host = server.base.trim_start_matches("http://").to_owned();
    let dest = format!("docker://{host}/tok/busybox:v1");
    let skopeo = t.skopeo.clone();
    let src = format!("oci:{image}");
    let d = dest.clone();
    tokio::task::spawn_blocking(move || {
        run(
            &skopeo,
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "alice:pw",
                &src,
                &d,
            ],
        )
    })
    .await
    .unwrap();
    let skopeo = t.skopeo.clone();
    let d = dest.clone();
    let raw = tokio::task::spawn_blocking(move || {
        run(
            &skopeo,
            &[
                "inspect",
                "--tls-verify=false",
                "--creds",
                "reader:pw",
                "--raw",
                &d,
            ],
        )
        .stdout
    })
    .await
    .unwrap();
    assert_eq!(sha256(&raw), src_digest);
    let skopeo = t.skopeo.clone();
    let src = format!("oci:{image}");
    let denied = format!("docker://{host}/tok/busybox:by-reader");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&skopeo)
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "reader:pw",
                &src,
                &denied,
            ])
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "reader pushed");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("401")
            || err.contains("unauthorized")
            || err.contains("insufficient_scope")
            || err.contains("authentication required"),
        "{err}"
    );
    assert!(
        tokens.issued.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "skopeo fetched its tokens from the token server"
    );
}
