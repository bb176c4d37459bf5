//! `server-bench --blob-cache`: blob HEAD on s3 (moto, from
//! `scripts/backends.sh start s3`) without a blob-descriptor cache, with
//! `blobdescriptor: inmemory` and with `blobdescriptor: redis` (the Redis
//! `scripts/backends.sh start redis` runs, or `REGSTORE_REDIS_ADDR`; when it
//! does not answer, that row is left out, saying so).
//!
//! Three `regstore serve` processes share one bucket prefix (redirects
//! off, so a HEAD is answered by the registry); one small image is pushed
//! through the first. Each measure is `--requests` HEADs of its config
//! blob from 32 connections (a tenth of them without a cache: each costs
//! moto requests, and moto is slow), in rounds that rotate the order; the
//! backend requests per HEAD come from each instance's
//! `regstore_storage_backend_requests_total` scraped around its measures.
//! Goal (issue 21): each cache ≥ 5× no cache, 0 backend requests per HEAD.

use std::time::Instant;

use regstore_benches::registry::{Rate, Target};

use super::{
    Options, debug_metrics_config, free_port, metric_sum, ms, push_small_image, scrape_metrics,
    serve_regstore,
};

const REPO: &str = "bench/cache";
const CONNECTIONS: usize = 32;
/// The Redis database the benchmark uses (tests allocate from 1 up).
const REDIS_DB: u32 = 4095;

struct Instance {
    name: &'static str,
    target: Target,
    debug_port: u16,
    requests: usize,
    rate: Option<Rate>,
    backend_requests: f64,
    _proc: super::Proc,
}

async fn backend_requests(port: u16) -> Result<f64, String> {
    Ok(metric_sum(
        &scrape_metrics(port).await?,
        "regstore_storage_backend_requests_total{",
        &[],
    ))
}

pub(super) async fn run(o: &Options) -> Result<(), String> {
    if o.rounds == 0 || o.requests == 0 {
        return Err("--rounds and --requests must be at least 1".into());
    }
    let params = regstore_testenv::backend::emulator_params("s3")
        .await
        .map_err(|e| format!("s3 (moto): {e} (scripts/backends.sh start s3)"))?;
    let params = serde_json::to_string(&params).map_err(|e| e.to_string())?;
    let redis = {
        let addr = regstore_testenv::backend::redis_addr();
        match regstore_testenv::backend::reachable(&format!("redis://{addr}")).await {
            Ok(()) => Some(addr),
            Err(e) => {
                eprintln!("redis: {e}; no redis row");
                None
            }
        }
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut configs = vec![("no cache", String::new(), String::new())];
    configs.push((
        "inmemory",
        "  cache:\n    blobdescriptor: inmemory\n".to_owned(),
        String::new(),
    ));
    if let Some(addr) = &redis {
        configs.push((
            "redis",
            "  cache:\n    blobdescriptor: redis\n".to_owned(),
            format!("redis:\n  addr: {addr}\n  db: {REDIS_DB}\n"),
        ));
    }
    let mut instances = Vec::new();
    for (name, cache, redis) in configs {
        let debug_port = free_port();
        let path = dir.path().join(format!("{}.yml", name.replace(' ', "-")));
        std::fs::write(
            &path,
            format!(
                "version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  s3: {params}\n  redirect:\n    disable: true\n{cache}{redis}{}",
                debug_metrics_config(debug_port)
            ),
        )
        .map_err(|e| e.to_string())?;
        let (proc, base) = serve_regstore(o, name, None, Some(&path)).await?;
        instances.push(Instance {
            name,
            target: Target::new(&base),
            debug_port,
            requests: if cache.is_empty() {
                (o.requests / 10).max(CONNECTIONS)
            } else {
                o.requests
            },
            rate: None,
            backend_requests: 0.0,
            _proc: proc,
        });
    }
    let base = instances[0].target.base.clone();
    // A config blob of its own each run, so the first HEADs are misses.
    let repo = format!("{REPO}{}", std::process::id());
    let digest = push_small_image(&base, &repo).await?;
    let path = format!("/v2/{repo}/blobs/{digest}");
    for i in &instances {
        // Warm-up: connections, and the caches' first miss.
        i.target
            .hammer(
                reqwest::Method::HEAD,
                &path,
                None,
                CONNECTIONS,
                2 * CONNECTIONS,
            )
            .await
            .map_err(|e| format!("{}: {e}", i.name))?;
    }
    let started = Instant::now();
    let count = instances.len();
    for round in 0..o.rounds {
        for k in 0..count {
            let i = &mut instances[(round + k) % count];
            let before = backend_requests(i.debug_port).await?;
            let r = i
                .target
                .hammer(reqwest::Method::HEAD, &path, None, CONNECTIONS, i.requests)
                .await
                .map_err(|e| format!("{}: {e}", i.name))?;
            i.backend_requests += backend_requests(i.debug_port).await? - before;
            match &mut i.rate {
                Some(total) => total.add(r),
                None => i.rate = Some(r),
            }
        }
    }
    let per_sec = |i: &Instance| i.rate.as_ref().map_or(0.0, Rate::per_second);
    let base_rate = per_sec(&instances[0]);
    println!(
        "| blob HEAD on s3 (moto), {CONNECTIONS} connections | req/s | p50 ms | p99 ms | backend requests per HEAD | vs no cache | goal |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (n, i) in instances.iter().enumerate() {
        let (p50, p99, ops) = i.rate.as_ref().map_or((0.0, 0.0, 0), |r| {
            (
                ms(r.latencies.percentile(50.0)),
                ms(r.latencies.percentile(99.0)),
                r.ops,
            )
        });
        println!(
            "| {} | {:.0} | {p50:.2} | {p99:.2} | {:.2} | {:.1}× | {} |",
            i.name,
            per_sec(i),
            i.backend_requests / ops.max(1) as f64,
            per_sec(i) / base_rate.max(1e-9),
            if n == 0 { "" } else { "≥ 5×, 0 requests" }
        );
    }
    println!(
        "\n{} rounds; {} HEADs per round without a cache, {} with; {:.0} s.",
        o.rounds,
        instances[0].requests,
        o.requests,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
