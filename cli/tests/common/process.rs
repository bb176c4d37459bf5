//! The `regstore` binary as a child process: run to the end, or serve.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use super::*;

/// Runs the `regstore` binary with `args` to the end, capturing its output.
///
/// # Panics
/// The binary cannot be started.
pub fn regstore<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    match std::process::Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run regstore: {e}"),
    }
}

/// A `regstore serve` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `regstore serve` in `cwd` with `env`, on a free loopback port
/// (`REGISTRY_HTTP_ADDR=127.0.0.1:0`), and waits for its "listening" line.
pub fn serve(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regstore"));
    cmd.arg("serve")
        .args(args)
        .current_dir(cwd)
        .env_remove("REGSTORE_LOG")
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start regstore serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http") {
                let url = &line[i + "listening on ".len()..];
                let base = url.split("/v2/").next().unwrap_or_default().to_owned();
                let _ = tx.send(base);
            }
            keep.lock().unwrap().push(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => Server { child, base, log },
        Err(_) => {
            let _ = child.kill();
            panic!("regstore serve did not start: {:?}", log.lock().unwrap());
        }
    }
}

/// A config.yml for `driver` on its emulator, written into `dir`, or `None`
/// when the emulator is unreachable outside CI. The driver's chunk size is
/// set to its minimum so small uploads already span several parts.
pub async fn cloud_config(driver: &str, dir: &Path) -> Option<PathBuf> {
    let mut params = regstore_testenv::backend::emulator_params_or_skip(driver).await?;
    let chunk = match driver {
        "s3" => "5MiB",
        "gcs" => "256KiB",
        "swift" => "1MiB",
        _ => "1MiB",
    };
    params.insert("chunksize".into(), chunk.into());
    // YAML is a superset of JSON: the config is written as JSON so the
    // parameters (a PEM key among them) need no YAML quoting.
    let yaml = serde_json::json!({
        "version": "0.1",
        "log": { "level": "info" },
        "storage": { driver: params, "delete": { "enabled": true } },
    });
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml.to_string()).expect("write config");
    Some(path)
}

/// A blob upload in three pieces across `regstore serve` processes sharing
/// one storage: `start()` begins process A, which takes the POST and the
/// first PATCH and is then killed; process B (started before A dies) reports
/// the upload's progress, takes the second PATCH and the final PUT; a third
/// process serves the blob, which must hash to the digest given at the PUT.
pub async fn upload_continued_by_another_process(start: impl Fn() -> Server, sizes: [usize; 3]) {
    let c = client_builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let total: usize = sizes.iter().sum();
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let d = sha256(&data);
    let (first, second) = (sizes[0], sizes[0] + sizes[1]);
    let a = start();
    let b = start();
    let r = c
        .post(format!("{}/v2/multi/blobs/uploads/", a.base))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let path = header(&r, "location");
    let r = c
        .patch(format!("{}{path}", a.base))
        .header("content-range", format!("0-{}", first - 1))
        .body(data[..first].to_vec())
        .send()
        .await
        .expect("first PATCH");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    drop(a);
    let r = c
        .get(format!("{}{path}", b.base))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), format!("0-{}", first - 1));
    let r = c
        .patch(format!("{}{path}", b.base))
        .header("content-range", format!("{first}-{}", second - 1))
        .body(data[first..second].to_vec())
        .send()
        .await
        .expect("second PATCH");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(format!("{}{path}?digest={d}", b.base))
        .body(data[second..].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    drop(b);
    let reader = start();
    let r = c
        .get(format!("{}/v2/multi/blobs/{d}", reader.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.bytes().await.expect("body");
    assert_eq!(got.len(), total);
    assert_eq!(sha256(&got), d, "the blob hashes to its digest");
}
