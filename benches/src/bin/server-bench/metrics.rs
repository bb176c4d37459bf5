//! `server-bench --metrics`: what recording Prometheus metrics costs.
//! Two `regstore serve` processes share one filesystem root (one image
//! pushed through the first): one without `http.debug`, one with
//! `http.debug.prometheus.enabled`. Manifest GET with 32 connections is
//! measured in rounds that alternate the two (the order swapping each
//! round), so drift on a shared machine falls on both alike. The goal
//! (issue 20): metrics on ≥ 0.98× metrics off. The `/metrics` page is
//! scraped at the end to show the requests were recorded.

use std::time::Instant;

use regstore_benches::registry::{Rate, Target};

use super::{
    Options, debug_metrics_config, free_port, hammer_small_manifest, metric_sum, push_small_image,
    quiet_config, scrape_metrics, start_regstore,
};

const REPO: &str = "bench/metrics";
const CONNECTIONS: usize = 32;

pub(super) async fn run(o: &Options) -> Result<(), String> {
    if o.rounds == 0 || o.requests == 0 {
        return Err("--rounds and --requests must be at least 1".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root");
    let debug_port = free_port();
    let off_cfg = dir.path().join("off.yml");
    let on_cfg = dir.path().join("on.yml");
    let storage = quiet_config(&root);
    std::fs::write(&off_cfg, &storage).map_err(|e| e.to_string())?;
    std::fs::write(
        &on_cfg,
        format!("{storage}{}", debug_metrics_config(debug_port)),
    )
    .map_err(|e| e.to_string())?;
    let (_off, off) = start_regstore(o, "regstore-metrics-off", &root, Some(&off_cfg)).await?;
    let (_on, on) = start_regstore(o, "regstore-metrics-on", &root, Some(&on_cfg)).await?;
    push_small_image(&off, REPO).await?;

    let targets = [
        ("metrics off", Target::new(&off)),
        ("metrics on", Target::new(&on)),
    ];
    for (_, t) in &targets {
        hammer_small_manifest(t, REPO, CONNECTIONS, 4 * CONNECTIONS).await?;
    }
    let mut rates: [Option<Rate>; 2] = [None, None];
    let started = Instant::now();
    for round in 0..o.rounds {
        for i in 0..2 {
            let k = (round + i) % 2;
            let r = hammer_small_manifest(&targets[k].1, REPO, CONNECTIONS, o.requests).await?;
            match &mut rates[k] {
                Some(total) => total.add(r),
                None => rates[k] = Some(r),
            }
        }
    }
    let per_sec = |r: &Option<Rate>| r.as_ref().map_or(0.0, Rate::per_second);
    let (off_rate, on_rate) = (per_sec(&rates[0]), per_sec(&rates[1]));

    let recorded = metric_sum(
        &scrape_metrics(debug_port).await?,
        "regstore_http_requests_total{",
        &["route=\"manifest\"", "status=\"200\""],
    );
    println!("| manifest GET, {CONNECTIONS} connections | req/s | ratio | goal |");
    println!("|---|---:|---:|---|");
    println!("| {} | {off_rate:.0} | | |", targets[0].0);
    println!(
        "| {} | {on_rate:.0} | {:.3}× | ≥ 0.98× |",
        targets[1].0,
        on_rate / off_rate.max(1e-9)
    );
    println!(
        "\n{} rounds × {} requests per configuration, {:.0} s; the metrics instance recorded {recorded} manifest GETs.",
        o.rounds,
        o.requests,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
