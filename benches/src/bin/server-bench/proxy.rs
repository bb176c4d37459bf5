//! `server-bench --proxy`: what the pull-through cache costs a pull of one
//! large blob (`--blob-mib`, 512 by default).
//!
//! Upstream is Debian's `docker-registry` (filesystem driver) holding the
//! blob; a plain `regstore serve` holds the same blob; a `regstore serve`
//! in proxy mode (`proxy.remoteurl` = the upstream) starts each round on
//! an empty root. Each round measures, in an order that rotates:
//! - **upstream direct**: a GET from `docker-registry`;
//! - **proxy, first pull**: a GET through the empty proxy (fetched from
//!   upstream while it streams and is stored), then **proxy, cached**: the
//!   same GET again, served from the proxy's storage;
//! - **plain regstore**: a GET from the regstore that holds the blob.
//!
//! The client reads each body and throws it away (no hashing), so the
//! figures are the servers'; each server's bytes are checked against the
//! digest once, outside the timed runs. Every file is in the page cache
//! after the first round, so the pulls compare the servers, not the disk.
//! Goals (issue 19): cached through the proxy ≥ 0.9× the plain pull; the
//! first pull ≥ 0.8× upstream direct. Medians over `--rounds`.

use std::path::Path;
use std::time::Instant;

use regstore_benches::registry::{Generator, Target};

use super::{MIB, Options, start_docker_registry, start_regstore};

const REPO: &str = "bench/proxied";

/// The measures, in table order.
const MEASURES: [&str; 4] = [
    "upstream direct (docker-registry)",
    "proxy, first pull",
    "proxy, cached",
    "plain regstore",
];

pub(super) async fn run(o: &Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let size = o.blob_mib * 1024 * 1024;
    let blob = Generator::new(3, size, 8 << 20);
    eprintln!("hashing the {} MiB test blob…", o.blob_mib);
    let digest = blob.digest();
    let path = format!("/v2/{REPO}/blobs/{digest}");

    eprintln!("docker-registry (upstream) and plain regstore…");
    let (_up, up) = start_docker_registry(o, &dir.path().join("upstream-root"), dir.path()).await?;
    let (_plain, plain) =
        start_regstore(o, "regstore", &dir.path().join("plain-root"), None).await?;
    for base in [&up, &plain] {
        Target::new(base)
            .push_monolithic(REPO, &blob, &digest)
            .await
            .map_err(|e| format!("push to {base}: {e}"))?;
    }
    let config = dir.path().join("proxy.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: unused\nproxy:\n  remoteurl: {up}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let proxy_root = dir.path().join("proxy-root");

    // Right bytes from each, once, untimed.
    for base in [&up, &plain] {
        check(&Target::new(base), &format!("{base}{path}"), &digest).await?;
    }
    {
        let (_p, proxy) = fresh_proxy(o, &proxy_root, &config).await?;
        let t = Target::new(&proxy);
        check(&t, &format!("{proxy}{path}"), &digest).await?;
        check(&t, &format!("{proxy}{path}"), &digest).await?;
    }

    let mut rates: [Vec<f64>; 4] = Default::default();
    for round in 0..o.rounds {
        let mut steps = [0usize, 1, 2];
        steps.rotate_left(round % 3);
        for step in steps {
            match step {
                0 => rates[0].push(rate(&up, &path, size).await?),
                1 => {
                    let (_p, proxy) = fresh_proxy(o, &proxy_root, &config).await?;
                    rates[1].push(rate(&proxy, &path, size).await?);
                    rates[2].push(rate(&proxy, &path, size).await?);
                }
                _ => rates[3].push(rate(&plain, &path, size).await?),
            }
        }
        eprintln!(
            "round {}/{}: {}",
            round + 1,
            o.rounds,
            rates
                .iter()
                .map(|r| format!("{:.0}", r.last().copied().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let med: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    println!(
        "Pull of one {} MiB blob, MiB/s (median of {} rounds; client discards the bytes)\n",
        o.blob_mib, o.rounds
    );
    println!("| measure | MiB/s | ratio | goal |");
    println!("|---|---|---|---|");
    println!("| {} | {:.0} | | |", MEASURES[0], med[0]);
    println!(
        "| {} | {:.0} | {:.2}× upstream direct | ≥ 0.8× |",
        MEASURES[1],
        med[1],
        med[1] / med[0]
    );
    println!(
        "| {} | {:.0} | {:.2}× plain regstore | ≥ 0.9× |",
        MEASURES[2],
        med[2],
        med[2] / med[3]
    );
    println!("| {} | {:.0} | | |", MEASURES[3], med[3]);
    Ok(())
}

/// A proxy on an empty root.
async fn fresh_proxy(
    o: &Options,
    root: &Path,
    config: &Path,
) -> Result<(super::Proc, String), String> {
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    start_regstore(o, "regstore-proxy", root, Some(config)).await
}

async fn check(t: &Target, url: &str, digest: &str) -> Result<(), String> {
    let (_, got) = t.pull(url).await.map_err(|e| e.to_string())?;
    if got != digest {
        return Err(format!("{url} served {got}, not {digest}"));
    }
    Ok(())
}

/// One GET of `path` from `base`, in MiB/s.
async fn rate(base: &str, path: &str, size: u64) -> Result<f64, String> {
    let t = Target::new(base);
    let started = Instant::now();
    let n = t
        .drain(&format!("{base}{path}"))
        .await
        .map_err(|e| e.to_string())?;
    if n != size {
        return Err(format!("{base}{path}: {n} bytes, not {size}"));
    }
    Ok(n as f64 / MIB / started.elapsed().as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}
