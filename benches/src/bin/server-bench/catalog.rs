//! `server-bench --catalog`: `/v2/_catalog?n=100`, its first page and a
//! middle page, on s3 (moto) with `--repos N` repositories (several sizes:
//! `--repos 1000,10000`), served from the storage walk, from SQLite and
//! from MySQL/MariaDB (the one `scripts/backends.sh start mysql` runs, or
//! `REGSTORE_MYSQL_URL`; left out when it does not answer).
//!
//! Each registry runs in this process (the server library on a loopback
//! port), so no release build of the `regstore` binary is needed. The
//! bucket gets one revision link per repository, written through the
//! driver (what the walk looks for); each index is filled directly with
//! the same names (`CatalogIndex::replace_all`). Each page is asked
//! `--requests` times (default 200) one at a time; the table gives p50 and
//! p99 per index and size. The goal (issue 21): index ≤ 10 ms p50, the
//! same at every size.

use std::time::{Duration, Instant};

use regstore_server::catalog::CatalogIndex;
use regstore_server::config::Config;
use regstore_server::registry::{Digest, RepoName, layout};

use super::{Options, ms};

const PAGE: usize = 100;

pub(super) async fn run(o: &Options) -> Result<(), String> {
    let sizes = if o.catalog_sizes.is_empty() {
        vec![o.repos]
    } else {
        o.catalog_sizes.clone()
    };
    let requests = o.requests.clamp(1, 200);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mysql = {
        let url = regstore_testenv::backend::mysql_url();
        match regstore_testenv::backend::reachable(&url).await {
            Ok(()) => Some(url),
            Err(e) => {
                eprintln!("mysql: {e}; mysql is left out");
                None
            }
        }
    };
    println!(
        "| repositories | index | populate s | first page p50 ms | p99 ms | middle page p50 ms | p99 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for &count in &sizes {
        let params = regstore_testenv::backend::emulator_params("s3")
            .await
            .map_err(|e| format!("s3 (moto): {e}"))?;
        let mut storage =
            String::from("version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  s3:\n");
        for (k, v) in &params {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            storage.push_str(&format!("    {k}: {v:?}\n"));
        }
        let names: Vec<String> = (0..count).map(|i| format!("cat/r{i:06}")).collect();
        let started = Instant::now();
        let plain = serve(&storage).await?;
        populate_bucket(&plain.registry, &names).await?;
        let populated = started.elapsed();
        let middle = names[count / 2].clone();
        let mut indexes = vec![("storage walk".to_owned(), plain)];
        let sqlite = format!(
            "catalog:\n  index: sql\n  url: sqlite://{}\n",
            dir.path().join(format!("c{count}.db")).display()
        );
        let mut sql = vec![("sqlite", sqlite)];
        let mysql_db = match &mysql {
            Some(server) => Some(mysql_database(server).await?),
            None => None,
        };
        if let Some((url, _)) = &mysql_db {
            sql.push(("mysql", format!("catalog:\n  index: sql\n  url: {url}\n")));
        }
        for (label, catalog) in sql {
            // Filled before the server starts, so it does not rebuild.
            let config = Config::from_yaml(&format!("{storage}{catalog}"), label, [])
                .map_err(|e| e.to_string())?;
            let index = CatalogIndex::open(&config.catalog)
                .await
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            index
                .replace_all(names.clone())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "{label}: {count} names in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            indexes.push((
                label.to_owned(),
                serve(&format!("{storage}{catalog}")).await?,
            ));
        }
        for (label, server) in &indexes {
            let first =
                measure(&server.base, "/v2/_catalog?n=100", &names[..PAGE], requests).await?;
            let mid_path = format!("/v2/_catalog?n=100&last={middle}");
            let from = count / 2 + 1;
            let expect = &names[from..(from + PAGE).min(count)];
            let mid = measure(&server.base, &mid_path, expect, requests).await?;
            println!(
                "| {count} | {label} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                populated.as_secs_f64(),
                ms(first.0),
                ms(first.1),
                ms(mid.0),
                ms(mid.1)
            );
        }
        drop(indexes);
        if let Some((_, drop)) = mysql_db {
            drop.await?;
        }
    }
    println!(
        "\n{requests} requests per page, one at a time; s3 on moto at {}; populate = the bucket's revision links.",
        std::env::var("REGSTORE_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
    );
    Ok(())
}

/// A registry served in this process.
struct Served {
    base: String,
    registry: regstore_server::registry::Registry,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(yaml: &str) -> Result<Served, String> {
    let config =
        Config::from_yaml(yaml, "server-bench --catalog", []).map_err(|e| e.to_string())?;
    let state = regstore_server::serve::app_state(&config)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let registry = state.registry.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(regstore_server::serve::run(
        listener,
        state,
        Duration::from_secs(1),
        false,
        async move {
            let _ = rx.await;
        },
    ));
    Ok(Served {
        base: format!("http://{addr}"),
        registry,
        _stop: tx,
    })
}

/// One revision link per repository, 64 writes in flight.
async fn populate_bucket(
    registry: &regstore_server::registry::Registry,
    names: &[String],
) -> Result<(), String> {
    let d: Digest = format!("sha256:{}", "0".repeat(64))
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    for name in names {
        let name = RepoName::parse(name).map_err(|e| e.to_string())?;
        let driver = registry.driver().clone();
        let path = layout::revision_link(&name, &d);
        let content = layout::link_content(&d).into_bytes();
        tasks.spawn(async move { driver.put_content(&path, content).await });
        while tasks.len() >= 64 {
            if let Some(done) = tasks.join_next().await {
                done.map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A fresh database on the MySQL server `server`; its URL and a future
/// that drops it.
async fn mysql_database(
    server: &str,
) -> Result<
    (
        String,
        impl std::future::Future<Output = Result<(), String>>,
    ),
    String,
> {
    let name = format!("regstore_bench_{}", std::process::id());
    let server = server.trim_end_matches('/').to_owned();
    admin(&server, &format!("DROP DATABASE IF EXISTS {name}")).await?;
    admin(&server, &format!("CREATE DATABASE {name}")).await?;
    let url = format!("{server}/{name}");
    let drop = async move { admin(&server, &format!("DROP DATABASE {name}")).await };
    Ok((url, drop))
}

/// Runs one statement on the database server `server`.
async fn admin(server: &str, sql: &str) -> Result<(), String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(server)
        .await
        .map_err(|e| format!("{}: {e}", regstore_server::config::redact_url(server)))?;
    sqlx::query(sql)
        .execute(&pool)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    pool.close().await;
    Ok(())
}

/// GETs `path` `requests` times (after 5 unmeasured), checking the names
/// of the first answer; p50 and p99.
async fn measure(
    base: &str,
    path: &str,
    expect: &[String],
    requests: usize,
) -> Result<(Duration, Duration), String> {
    let client = regstore_testenv::backend::http_client()
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{base}{path}");
    let mut times = Vec::with_capacity(requests);
    for i in 0..requests + 5 {
        let t = Instant::now();
        let r = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url}: {}", r.status()));
        }
        let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        let elapsed = t.elapsed();
        if i == 0 {
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
            let got: Vec<String> =
                serde_json::from_value(v["repositories"].clone()).map_err(|e| e.to_string())?;
            if got != expect {
                return Err(format!(
                    "{url}: {} names from {:?}, expected {} from {:?}",
                    got.len(),
                    got.first(),
                    expect.len(),
                    expect.first()
                ));
            }
        }
        if i >= 5 {
            times.push(elapsed);
        }
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok((at(0.5), at(0.99)))
}
