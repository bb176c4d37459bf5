//! `server-bench --notify`: what a dead notification endpoint costs a
//! push. Two `regstore serve` processes share one filesystem root: one
//! without `notifications`, one whose endpoint is a TCP listener in this
//! process that accepts connections and never answers (the worst case:
//! every delivery waits for its timeout). Both take the same 4 KiB pushes
//! (16 client tasks) in rounds that alternate them. The goal (issue 20):
//! push latency with the hung endpoint within 10 % of none (p50 and mean).
//! At the end the hung instance must still answer, its endpoint must be
//! marked failing in `/metrics`, and its events must have queued.

use std::time::Duration;

use regstore_benches::registry::{Rate, Target};

use super::{
    Options, debug_metrics_config, free_port, metric_sum, ms, quiet_config, scrape_metrics,
    start_regstore,
};

const REPO: &str = "bench/notify";
use super::small::THREADS;

pub(super) async fn run(o: &Options) -> Result<(), String> {
    let rounds = o.rounds.clamp(1, 10);
    let per_round = (o.small / 5).max(THREADS);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root");
    // An endpoint that accepts and never answers, kept open to the end.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("hung endpoint: {e}"))?;
    let hung_addr = hung.local_addr().map_err(|e| e.to_string())?;
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = hung.accept().await {
            open.push(conn);
        }
    });
    let debug_port = free_port();
    let base = quiet_config(&root);
    let none_cfg = dir.path().join("none.yml");
    let hung_cfg = dir.path().join("hung.yml");
    std::fs::write(&none_cfg, &base).map_err(|e| e.to_string())?;
    std::fs::write(
        &hung_cfg,
        format!(
            "{base}{}notifications:\n  endpoints:\n    - name: hung\n      url: http://{hung_addr}/events\n      timeout: 5s\n      threshold: 3\n      backoff: 1s\n",
            debug_metrics_config(debug_port)
        ),
    )
    .map_err(|e| e.to_string())?;
    let (_a, none) = start_regstore(o, "regstore-notify-none", &root, Some(&none_cfg)).await?;
    let (_b, with_hung) = start_regstore(o, "regstore-notify-hung", &root, Some(&hung_cfg)).await?;
    let targets = [
        ("no notifications", Target::new(&none)),
        ("endpoint that never answers", Target::new(&with_hung)),
    ];
    let rates =
        super::small::interleaved(&targets, REPO, dir.path(), rounds, per_round, |round, k| {
            ((2 * round + k + 1) * per_round) as u64
        })
        .await?;
    // The hung endpoint's deliveries time out (5 s) three times in a row,
    // with backoff between, before it counts as failing: poll for that
    // (a quick run's pushes end long before it).
    let started = std::time::Instant::now();
    let (failing, waiting) = loop {
        let metrics = scrape_metrics(debug_port).await?;
        let sample = |prefix: &str| metric_sum(&metrics, prefix, &[]);
        let failing = sample("regstore_notification_endpoint_failing{");
        let waiting = sample("regstore_notification_queue_length{")
            + sample("regstore_notification_events_total{endpoint=\"hung\",result=\"dropped\"}");
        if failing == 1.0 || started.elapsed() > Duration::from_secs(60) {
            break (failing, waiting);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if failing != 1.0 || waiting < 1.0 {
        return Err(format!(
            "the hung endpoint should be failing with events waiting: failing={failing}, waiting or dropped={waiting}"
        ));
    }
    held.abort();

    // Each task pushes one at a time: wall time × tasks / pushes.
    let mean = |r: &Rate| r.elapsed.as_secs_f64() * THREADS as f64 / r.ops.max(1) as f64 * 1000.0;
    let [a, b] = &rates;
    println!("| 4 KiB pushes, {THREADS} tasks | push/s | p50 | p99 | mean per push | goal |");
    println!("|---|---:|---:|---:|---:|---|");
    for (k, r) in [a, b].into_iter().enumerate() {
        let goal = if k == 0 {
            String::new()
        } else {
            format!(
                "≤ 1.10×: p50 {:.2}×, mean {:.2}×",
                ms(r.latencies.percentile(50.0)) / ms(a.latencies.percentile(50.0)).max(1e-9),
                mean(r) / mean(a).max(1e-9)
            )
        };
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {goal} |",
            targets[k].0,
            r.per_second(),
            ms(r.latencies.percentile(50.0)),
            ms(r.latencies.percentile(99.0)),
            mean(r),
        );
    }
    println!(
        "\n{rounds} rounds × {per_round} pushes per configuration; the hung endpoint was failing with {waiting} events queued or dropped."
    );
    Ok(())
}
