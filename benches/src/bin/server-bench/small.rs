//! `server-bench --small-pushes`: the small-push row alone, in interleaved
//! rounds (issue 23, group commit). `regstore serve` and `docker-registry`
//! each on their own filesystem root under the same temporary directory,
//! both without access logs; each round pushes `--small / --rounds` new
//! 4 KiB blobs (`POST`, then `PUT ?digest=`) from 16 client tasks to one
//! and then the other (the order alternates), every blob distinct. The
//! figure is the rate over all rounds, with p50 and p99 latency.
//!
//! To count fsyncs per push, run the regstore side under strace:
//! `scripts/fsyncs.sh` does.

use regstore_benches::registry::{Rate, Target};

use super::{
    Options, create_probe, ms, probe_note, quiet_config, start_docker_registry, start_regstore,
};

const REPO: &str = "bench/many";
/// Client tasks pushing at once.
pub(super) const THREADS: usize = 16;
/// Bytes per blob.
pub(super) const SIZE: usize = 4096;

pub(super) async fn run(o: &Options) -> Result<(), String> {
    let rounds = o.rounds.max(1);
    let per_round = (o.small / rounds).max(THREADS);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("regstore-root");
    let config = dir.path().join("regstore.yml");
    std::fs::write(&config, quiet_config(&root)).map_err(|e| e.to_string())?;
    let (rp, regstore) = start_regstore(o, "regstore", &root, Some(&config)).await?;
    let (dp, distribution) =
        start_docker_registry(o, &dir.path().join("distribution-root"), dir.path()).await?;
    let targets = [
        ("regstore", Target::new(&regstore)),
        ("docker-registry 2.8.2", Target::new(&distribution)),
    ];
    let probe = create_probe(&dir.path().join("probe"))?;
    let [r, d] = interleaved(&targets, REPO, dir.path(), rounds, per_round, |round, _| {
        ((round + 1) * per_round) as u64
    })
    .await?;
    println!(
        "{} pushes of 4 KiB per server, 16 tasks, {rounds} interleaved rounds",
        r.ops
    );
    println!();
    println!("| server | push/s | p50 ms | p99 ms | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, _), (rate, p)) in targets.iter().zip([(&r, &rp), (&d, &dp)]) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.1} |",
            rate.per_second(),
            ms(rate.latencies.percentile(50.0)),
            ms(rate.latencies.percentile(99.0)),
            p.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
        );
    }
    let ratio = r.per_second() / d.per_second().max(1e-9);
    println!();
    println!(
        "regstore / docker-registry: {ratio:.2}× (goal ≥ 5×: {})",
        if ratio >= 5.0 { "met" } else { "**missed**" }
    );
    println!("{}", probe_note(&[(probe, "before the rounds")]));
    super::machine::warn_if_reporting();
    Ok(())
}

/// Blob numbers of the warm-up pushes start after this: far above any a
/// round uses, so that no round pushes a blob the warm-up stored.
const WARM_UP_FIRST: u64 = 1 << 40;

/// Warms each target up (`THREADS * 4` pushes into `repo`: connections,
/// the repository's directories), then runs `rounds` rounds in which each
/// target takes `per_round` pushes of new `SIZE`-byte blobs from `THREADS`
/// tasks, the order alternating from round to round. Target `k`'s blobs of
/// round `round` are numbered from `first(round, k)`. Returns each target's
/// rate over all its rounds.
///
/// Before each round the filesystem holding `data` (both servers' roots)
/// is synced, so that no round pays for writes of the one before it:
/// distribution syncs nothing, and its unsynced files were otherwise
/// written back by regstore's `syncfs` in the next round, or by the
/// kernel's writeback in the middle of any round.
pub(super) async fn interleaved(
    targets: &[(&str, Target); 2],
    repo: &str,
    data: &std::path::Path,
    rounds: usize,
    per_round: usize,
    first: impl Fn(usize, usize) -> u64,
) -> Result<[Rate; 2], String> {
    for (name, t) in targets {
        t.small_pushes(repo, WARM_UP_FIRST, THREADS * 4, SIZE, THREADS)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
    }
    let mut rates: [Option<Rate>; 2] = [None, None];
    for round in 0..rounds {
        for i in 0..2 {
            let k = (round + i) % 2;
            let (name, t) = &targets[k];
            settle(data)?;
            let r = t
                .small_pushes(repo, first(round, k), per_round, SIZE, THREADS)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            match &mut rates[k] {
                Some(total) => total.add(r),
                None => rates[k] = Some(r),
            }
        }
    }
    match rates {
        [Some(a), Some(b)] => Ok([a, b]),
        _ => Err("no round ran".into()),
    }
}

/// `sync -f`: writes back every dirty page and inode of the filesystem
/// holding `dir` (`syncfs`).
pub(super) fn settle(dir: &std::path::Path) -> Result<(), String> {
    let status = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()
        .map_err(|e| format!("sync -f {}: {e}", dir.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sync -f {}: {status}", dir.display()))
    }
}
