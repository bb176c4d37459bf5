//! The server benchmark: the same registry work against `regstore serve`
//! (filesystem driver) and Debian's `docker-registry` (distribution 2.8.2),
//! plus nginx serving the same blob as a file, all on 127.0.0.1 in one run.
//!
//! ```sh
//! cargo build --release -p regstore-cli -p regstore-benches
//! target/release/server-bench            # 512 MiB blob, 2,000 small pushes, …
//! target/release/server-bench --quick    # small sizes, a smoke run
//! target/release/server-bench --listings --repos 1000 --tags 1000   # catalog and tag lists only
//! target/release/server-bench --auth     # no auth vs htpasswd vs token, 20 rounds
//! target/release/server-bench --auth --quick
//! target/release/server-bench --proxy    # the pull-through cache, 512 MiB blob
//! target/release/server-bench --metrics  # manifest GET with and without Prometheus metrics
//! target/release/server-bench --notify   # 4 KiB pushes with and without a hung webhook
//! target/release/server-bench --blob-cache  # blob HEAD on s3 (moto): no cache, inmemory, redis
//! target/release/server-bench --catalog --repos 1000,10000   # _catalog: walk vs sqlite vs mysql on s3
//! target/release/server-bench --small-pushes --rounds 10  # 4 KiB pushes only, interleaved rounds
//! target/release/server-bench --pushes --rounds 5   # one-request vs 8 MiB-chunk push, regstore only
//! ```
//!
//! Prints a Markdown table: push of one blob in one request and in 8 MiB
//! chunks (medians of [`PUSH_ROUNDS`] rounds), pull, manifest GET and blob
//! HEAD with 32 connections (rate, p50, p99), 4 KiB pushes with 16 client
//! tasks ([`SMALL_ROUNDS`] rounds), listing a catalog of 1,000
//! repositories, listing 1,000 tags of one repository (with `n=1000`,
//! without `n`, and without `n` just after the tags changed), and each
//! server's peak RSS (VmHWM). Both servers run side by side for the whole
//! run, and every row that writes to the disk or lists it is timed in
//! rounds that take the two servers in turn, so that a change of the
//! filesystem's state during the run falls on both.
//! Under the table: what creating a file cost, and the machine's limits for
//! a push ([`machine`]). `--listings` measures only the catalog and the tag
//! lists.
//!
//! `server-bench --auth` ([`auth`]) measures instead what access control
//! costs: regstore without auth, with `auth.htpasswd` and with
//! `auth.token`, in interleaved rounds. `server-bench --proxy` ([`proxy`])
//! measures the pull-through cache: a first and a cached pull through it
//! against pulling from upstream directly and from a plain regstore.

mod auth;
mod blob_cache;
mod catalog;
mod machine;
mod metrics;
mod notify;
mod proxy;
mod pushes;
mod small;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use regstore_benches::process::{self, Proc, free_port, quiet_config, spawn, wait_ready};
use regstore_benches::registry::{Generator, Pieces, Rate, Target};

const MIB: f64 = 1024.0 * 1024.0;

struct Options {
    regstore: PathBuf,
    docker_registry: PathBuf,
    nginx: PathBuf,
    blob_mib: u64,
    small: usize,
    requests: usize,
    repos: usize,
    /// Tags of the repository whose tag list is measured.
    tags: usize,
    /// `--listings`: only the catalog and tag-list rows.
    listings: bool,
    /// `--auth`: the access-control benchmark instead.
    auth: bool,
    /// `--auth`: rounds of each configuration.
    rounds: usize,
    /// `--proxy`: the pull-through cache benchmark instead.
    proxy: bool,
    /// `--metrics`: what recording metrics costs, instead.
    metrics: bool,
    /// `--notify`: what a dead notification endpoint costs pushes, instead.
    notify: bool,
    /// `--blob-cache`: blob HEAD on s3 with and without the blob-descriptor cache, instead.
    blob_cache: bool,
    /// `--proxy`: the upstream's link speed (none: loopback).
    upstream_mibps: Option<f64>,
    /// `--catalog`: `_catalog` pages from the storage walk and the indexes.
    catalog: bool,
    /// `--small-pushes`: the 4 KiB push row alone, in interleaved rounds.
    small_pushes: bool,
    /// `--pushes`: the large-push rows alone, regstore only, in rounds.
    pushes: bool,
    /// `--catalog`: repository counts to measure (`--repos 1000,10000`);
    /// empty: `repos`.
    catalog_sizes: Vec<usize>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let mut o = Options {
            regstore: Path::new(&target).join("release/regstore"),
            docker_registry: "/usr/bin/docker-registry".into(),
            nginx: "/usr/sbin/nginx".into(),
            blob_mib: 512,
            small: 2000,
            requests: 20_000,
            repos: 1000,
            tags: 1000,
            listings: false,
            auth: false,
            rounds: 20,
            proxy: false,
            metrics: false,
            notify: false,
            blob_cache: false,
            upstream_mibps: None,
            catalog: false,
            catalog_sizes: Vec::new(),
            small_pushes: false,
            pushes: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match a.as_str() {
                "--regstore" => o.regstore = value("--regstore")?.into(),
                "--docker-registry" => o.docker_registry = value("--docker-registry")?.into(),
                "--nginx" => o.nginx = value("--nginx")?.into(),
                "--blob-mib" => {
                    o.blob_mib = value("--blob-mib")?
                        .parse()
                        .map_err(|e| format!("--blob-mib: {e}"))?
                }
                "--small" => {
                    o.small = value("--small")?
                        .parse()
                        .map_err(|e| format!("--small: {e}"))?
                }
                "--requests" => {
                    o.requests = value("--requests")?
                        .parse()
                        .map_err(|e| format!("--requests: {e}"))?
                }
                "--repos" => {
                    let sizes = value("--repos")?
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("--repos: {e}"))?;
                    if sizes.is_empty() || sizes.contains(&0) {
                        return Err("--repos: give counts above 0".into());
                    }
                    o.repos = sizes[0];
                    o.catalog_sizes = sizes;
                }
                "--tags" => {
                    o.tags = value("--tags")?
                        .parse()
                        .map_err(|e| format!("--tags: {e}"))?;
                    if o.tags == 0 {
                        return Err("--tags: give a count above 0".into());
                    }
                }
                "--listings" => o.listings = true,
                "--rounds" => {
                    o.rounds = value("--rounds")?
                        .parse()
                        .map_err(|e| format!("--rounds: {e}"))?
                }
                "--auth" => o.auth = true,
                "--proxy" => o.proxy = true,
                "--metrics" => o.metrics = true,
                "--notify" => o.notify = true,
                "--blob-cache" => o.blob_cache = true,
                "--catalog" => o.catalog = true,
                "--small-pushes" => o.small_pushes = true,
                "--pushes" => o.pushes = true,
                "--upstream-mibps" => {
                    o.upstream_mibps = Some(
                        value("--upstream-mibps")?
                            .parse()
                            .map_err(|e| format!("--upstream-mibps: {e}"))?,
                    )
                }
                "--quick" => {
                    o.blob_mib = 32;
                    o.small = 200;
                    o.requests = 2000;
                    o.repos = 100;
                    o.rounds = 3;
                }
                "-h" | "--help" => {
                    println!(
                        "usage: server-bench [--quick] [--blob-mib N] [--small N] [--requests N] [--repos N] [--tags N] [--regstore PATH] [--docker-registry PATH] [--nginx PATH]\n       server-bench --listings [--repos N] [--tags N]   (catalog and tag lists only)\n       server-bench --auth [--quick] [--rounds N] [--requests N] [--regstore PATH]\n       server-bench --metrics [--quick] [--rounds N] [--requests N] [--regstore PATH]\n       server-bench --notify [--quick] [--rounds N] [--small N] [--regstore PATH]\n       server-bench --blob-cache [--quick] [--rounds N] [--requests N] [--regstore PATH]\n       server-bench --proxy [--quick] [--rounds N] [--blob-mib N] [--upstream-mibps N] [--regstore PATH] [--docker-registry PATH]\n       server-bench --catalog [--repos N[,N…]] [--requests N]   (s3 on moto, MariaDB of scripts/backends.sh)\n       server-bench --small-pushes [--small N] [--rounds N]   (4 KiB pushes only, interleaved rounds)\n       server-bench --pushes [--blob-mib N] [--rounds N] [--regstore PATH]   (one-request vs chunked push, regstore only)\n\n--requests: requests per measure (with --auth: per measure, configuration and round)"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (see --help)")),
            }
        }
        Ok(o)
    }
}

/// Starts `regstore serve` (as `name`) with the filesystem driver at `root`
/// and, if given, a config file (whose other settings the environment
/// overrides).
async fn start_regstore(
    o: &Options,
    name: &'static str,
    root: &Path,
    config: Option<&Path>,
) -> Result<(Proc, String), String> {
    serve_regstore(o, name, Some(root), config).await
}

/// [`start_regstore`] on whatever storage `config` names when `root` is
/// `None` (the filesystem driver under `root` otherwise).
async fn serve_regstore(
    o: &Options,
    name: &'static str,
    root: Option<&Path>,
    config: Option<&Path>,
) -> Result<(Proc, String), String> {
    process::serve_regstore(&o.regstore, name, root, config)
        .await
        .map_err(|e| e.to_string())
}

async fn start_docker_registry(
    o: &Options,
    root: &Path,
    dir: &Path,
) -> Result<(Proc, String), String> {
    let port = free_port();
    let config = dir.join("docker-registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n",
            root.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let p = spawn(
        "docker-registry",
        Command::new(&o.docker_registry)
            .arg("serve")
            .arg(&config)
            .env_remove("AWS_CA_BUNDLE"),
    )
    .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/v2/"), p.name)
        .await
        .map_err(|e| e.to_string())?;
    Ok((p, base))
}

async fn start_nginx(o: &Options, dir: &Path) -> Result<(Proc, String), String> {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    // One process (`master_process off`), so that killing it at the end
    // leaves no worker behind (a killed master left its worker running).
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n  server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n",
            d = dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let p = spawn(
        "nginx",
        Command::new(&o.nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf),
    )
    .map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/ready"), p.name)
        .await
        .map_err(|e| e.to_string())?;
    Ok((p, base))
}

/// The `http` section serving Prometheus metrics on the debug port.
fn debug_metrics_config(port: u16) -> String {
    format!("http:\n  debug:\n    addr: 127.0.0.1:{port}\n    prometheus:\n      enabled: true\n")
}

/// The metrics page of the debug server on `port`.
async fn scrape_metrics(port: u16) -> Result<String, String> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    Target::new(format!("http://127.0.0.1:{port}"))
        .client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("scrape {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("scrape {url}: {e}"))
}

/// The sum of the samples of a metrics page whose line starts with
/// `prefix` and contains each of `parts`.
fn metric_sum(page: &str, prefix: &str, parts: &[&str]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Pushes a small image (a 14-byte config, no layer) as `repo:v1`
/// through `base`; returns the config's digest.
async fn push_small_image(base: &str, repo: &str) -> Result<String, String> {
    let push = Target::new(base);
    let config = push
        .push_small(repo, bytes::Bytes::from_static(b"{\"os\":\"linux\"}"))
        .await
        .map_err(|e| format!("push: {e}"))?;
    push.push_manifest(repo, "v1", &config, 14)
        .await
        .map_err(|e| format!("push: {e}"))?;
    Ok(config)
}

/// `n` GETs of `repo:v1` (the manifest [`push_small_image`] pushes) as an
/// OCI manifest, over `connections` connections at once.
async fn hammer_small_manifest(
    t: &Target,
    repo: &str,
    connections: usize,
    n: usize,
) -> Result<Rate, String> {
    t.hammer(
        reqwest::Method::GET,
        &format!("/v2/{repo}/manifests/v1"),
        Some("application/vnd.oci.image.manifest.v1+json"),
        connections,
        n,
    )
    .await
    .map_err(|e| e.to_string())
}

/// One registry's figures.
#[derive(Default)]
struct Figures {
    push_one: f64,
    push_chunked: f64,
    pull: f64,
    manifest: Option<Rate>,
    head: Option<Rate>,
    small: Option<Rate>,
}

/// How many interleaved rounds time each listing (after one warm-up
/// fetch each); the figure is the median.
const LISTING_ROUNDS: usize = 21;

/// One registry's catalog and tag-list times, medians in ms.
#[derive(Default, Clone, Copy)]
struct Listings {
    /// `GET /v2/_catalog?n=1000`, following pages.
    catalog_ms: f64,
    /// `GET /v2/<name>/tags/list?n=1000`.
    tags_n_ms: f64,
    /// `GET /v2/<name>/tags/list` (no `n`).
    tags_all_ms: f64,
    /// `GET /v2/<name>/tags/list` (no `n`) just after its directory
    /// changed: regstore reads it again rather than serving the list it
    /// kept (see `server/src/registry/tag_lists.rs`).
    tags_changed_ms: f64,
}

/// Fills the catalog (`o.repos` repositories `cat/…`) and one repository
/// `bench/tagged` with `o.tags` tags.
async fn populate_listings(o: &Options, t: &Target, name: &str) -> Result<(), String> {
    let e = |x: regstore_benches::registry::BenchError| format!("{name}: {x}");
    t.populate_catalog(o.repos, 16).await.map_err(e)?;
    t.populate_tags("bench/tagged", o.tags, 16).await.map_err(e)
}

/// Times the catalog (`n=1000`, following pages) and the tag lists
/// (`n=1000`, without `n`, and without `n` just after the tags directory
/// changed: its modification time set to now, outside the clock) of each
/// `(target, name, tags directory)`, both registries alive and populated
/// (the last change at `populated`): one warm-up fetch of each list, then
/// `LISTING_ROUNDS` rounds, each fetching every list from every target in
/// turn, so that a burst of load on the shared cores (writeback after the
/// pushes, another process) falls on both. Each answer must hold every
/// entry. Returns the medians, in the order of `targets`.
async fn measure_listings(
    o: &Options,
    targets: &[(&Target, &str, PathBuf)],
    populated: Instant,
) -> Result<Vec<Listings>, String> {
    /// A list to time: which, and how many entries it must hold.
    #[derive(Clone, Copy)]
    enum List {
        Catalog,
        TagsN,
        TagsAll,
        TagsChanged,
    }
    // Polled while unchanged: the tags were pushed at least `SETTLED` ago
    // (regstore keeps a list only once its directory has been unchanged
    // for 2 s). The lists just after a change come last, as touching a
    // directory makes the next seconds' lists "just after a change" too.
    const SETTLED: Duration = Duration::from_secs(3);
    tokio::time::sleep(SETTLED.saturating_sub(populated.elapsed())).await;
    let phases: [&[List]; 2] = [
        &[List::Catalog, List::TagsN, List::TagsAll],
        &[List::TagsChanged],
    ];
    // times[target][list]
    let mut times = vec![[const { Vec::new() }; 4]; targets.len()];
    for lists in phases {
        for round in 0..=LISTING_ROUNDS {
            for list in lists {
                for (k, (t, name, tags_dir)) in targets.iter().enumerate() {
                    if let List::TagsChanged = list {
                        std::fs::File::open(tags_dir)
                            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
                            .map_err(|e| format!("{name}: touching {}: {e}", tags_dir.display()))?;
                    }
                    let t0 = Instant::now();
                    let (got, want) = match list {
                        List::Catalog => {
                            let names = t.catalog(1000).await;
                            let n =
                                names.map(|n| n.iter().filter(|n| n.starts_with("cat/")).count());
                            (n, o.repos)
                        }
                        List::TagsN => (
                            t.tags("bench/tagged", Some(1000)).await.map(|v| v.len()),
                            o.tags,
                        ),
                        List::TagsAll | List::TagsChanged => {
                            (t.tags("bench/tagged", None).await.map(|v| v.len()), o.tags)
                        }
                    };
                    let elapsed = t0.elapsed();
                    let found = got.map_err(|e| format!("{name}: {e}"))?;
                    if found != want {
                        return Err(format!("{name}: a list holds {found} of {want} entries"));
                    }
                    if round > 0 {
                        times[k][*list as usize].push(elapsed);
                    }
                }
            }
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        ms(v[v.len() / 2])
    };
    Ok(times
        .iter_mut()
        .map(|[c, n, a, changed]| Listings {
            catalog_ms: median(c),
            tags_n_ms: median(n),
            tags_all_ms: median(a),
            tags_changed_ms: median(changed),
        })
        .collect())
}

/// Rounds of the two large pushes in a full run (see [`large_pushes`]);
/// even, so that each registry goes first in half of them.
const PUSH_ROUNDS: usize = 4;

/// Rounds of the 4 KiB pushes in a full run, each registry in turn (see
/// [`small::interleaved`]).
const SMALL_ROUNDS: usize = 4;

/// The blobs of the large pushes: per round, one for the push in one
/// request and one for the chunked push, each with its digest, none
/// pushed twice into one registry (`Pieces::variant`).
type PushBlobs = Vec<[(Pieces, String); 2]>;

/// The large pushes of a full run, both registries alive: in each round
/// each registry in turn (the order alternating) pushes the round's blob
/// in one request and the other in 8 MiB chunks (the order alternating
/// too), each push after syncing the filesystem. Returns each target's
/// medians in MiB/s, (one request, chunked), in the order of `targets`.
///
/// In turn rather than one registry after the other: the filesystem's
/// state moves during a run (on the development VM's ext4 without a
/// journal, creating a file costs 10–40 times more for about a minute
/// after a previous run's directory was deleted, see [`create_probe`]),
/// and one registry after the other gave that state to whichever came
/// first.
async fn large_pushes(
    o: &Options,
    dir: &Path,
    targets: &[(&str, Target); 2],
    blobs: &PushBlobs,
) -> Result<[(f64, f64); 2], String> {
    let mut rates = [const { (Vec::new(), Vec::new()) }; 2];
    for (round, blobs) in blobs.iter().enumerate() {
        for j in 0..2 {
            let k = (round + j) % 2;
            let (name, t) = &targets[k];
            let (one, chunked) = push_pair(t, dir, round, blobs, o.blob_mib as f64)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            rates[k].0.push(one);
            rates[k].1.push(chunked);
        }
    }
    Ok(rates.map(|(ones, chunks)| (median(&ones), median(&chunks))))
}

/// One round's two large pushes to `t`: `one` in one request into
/// `bench/big<round>` and `chunked` in 8 MiB PATCHes into
/// `bench/chunked<round>`, the order alternating with `round`, each after
/// syncing the filesystem holding `dir`. Returns their rates in MiB/s
/// (one request, chunked), each blob being `mib` MiB.
async fn push_pair(
    t: &Target,
    dir: &Path,
    round: usize,
    [(one, one_digest), (chunked, chunked_digest)]: &[(Pieces, String); 2],
    mib: f64,
) -> Result<(f64, f64), String> {
    let (mut one_rate, mut chunked_rate) = (0.0, 0.0);
    for i in 0..2 {
        small::settle(dir)?;
        let t0 = Instant::now();
        if (round + i).is_multiple_of(2) {
            t.push_monolithic(&format!("bench/big{round}"), one, one_digest)
                .await
                .map_err(|e| format!("one-request push: {e}"))?;
            one_rate = mib / t0.elapsed().as_secs_f64();
        } else {
            t.push_chunked(&format!("bench/chunked{round}"), chunked, chunked_digest)
                .await
                .map_err(|e| format!("chunked push: {e}"))?;
            chunked_rate = mib / t0.elapsed().as_secs_f64();
        }
    }
    Ok((one_rate, chunked_rate))
}

/// A registry's pull of `bench/big0` (the blob `digest`, pushed there by
/// [`large_pushes`]) and its manifest GET and blob HEAD rates, into `f`.
async fn serving(
    o: &Options,
    base: &str,
    name: &str,
    digest: &str,
    f: &mut Figures,
) -> Result<(), String> {
    let t = Target::new(base);
    let e = |x: regstore_benches::registry::BenchError| format!("{name}: {x}");
    let t0 = Instant::now();
    let (n, got) = t
        .pull(&format!("{base}/v2/bench/big0/blobs/{digest}"))
        .await
        .map_err(e)?;
    f.pull = n as f64 / MIB / t0.elapsed().as_secs_f64();
    if got != digest {
        return Err(format!("{name}: pulled {got}, pushed {digest}"));
    }

    let config = t
        .push_small(
            "bench/small-image",
            bytes::Bytes::from_static(b"{\"os\":\"linux\"}"),
        )
        .await
        .map_err(e)?;
    t.push_manifest("bench/small-image", "v1", &config, 14)
        .await
        .map_err(e)?;
    f.manifest = Some(
        t.hammer(
            reqwest::Method::GET,
            "/v2/bench/small-image/manifests/v1",
            Some("application/vnd.oci.image.manifest.v1+json"),
            32,
            o.requests,
        )
        .await
        .map_err(e)?,
    );
    f.head = Some(
        t.hammer(
            reqwest::Method::HEAD,
            &format!("/v2/bench/small-image/blobs/{config}"),
            None,
            32,
            o.requests,
        )
        .await
        .map_err(e)?,
    );
    Ok(())
}

/// The median of `v` (the upper one of an even count); 0 for none.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let result = if o.auth {
        auth::run(&o).await
    } else if o.proxy {
        proxy::run(&o).await
    } else if o.metrics {
        metrics::run(&o).await
    } else if o.notify {
        notify::run(&o).await
    } else if o.blob_cache {
        blob_cache::run(&o).await
    } else if o.catalog {
        catalog::run(&o).await
    } else if o.small_pushes {
        small::run(&o).await
    } else if o.pushes {
        pushes::run(&o).await
    } else if o.listings {
        run_listings(&o).await
    } else {
        run(o).await
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(o: Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let size = o.blob_mib * 1024 * 1024;
    // In memory before the clock starts: the pushes time the registry,
    // not the generation of the client's bytes.
    eprintln!("generating and hashing the {} MiB test blobs…", o.blob_mib);
    let blob = Generator::new(1, size, 8 << 20).in_memory();
    let chunked = Generator::new(2, size, 8 << 20).in_memory();
    let (digest, sha256) = machine::timed_digest(&blob);
    let blobs: PushBlobs = (0..PUSH_ROUNDS as u8)
        .map(|r| {
            let (one, chunked) = (blob.variant(r), chunked.variant(r));
            let (d1, d2) = (one.digest(), chunked.digest());
            [(one, d1), (chunked, d2)]
        })
        .collect();

    // nginx serves the same bytes as a file.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).map_err(|e| e.to_string())?;
    std::fs::write(www.join("ready"), "ok").map_err(|e| e.to_string())?;
    write_blob(&blob, &www.join("blob"))?;
    let disk_limit = dd_fdatasync(&www.join("blob"), &dir.path().join("dd-copy"), o.blob_mib)?;
    let sink = machine::loopback_sink_rate(&blob, &dir.path().join("sink-copy")).await?;
    let nginx_pull = {
        let (_p, base) = start_nginx(&o, dir.path()).await?;
        let t = Target::new(&base);
        let _ = t.pull(&format!("{base}/blob")).await; // warm the page cache
        let t0 = Instant::now();
        let (n, got) = t
            .pull(&format!("{base}/blob"))
            .await
            .map_err(|e| format!("nginx: {e}"))?;
        if got != digest {
            return Err("nginx served different bytes".into());
        }
        n as f64 / MIB / t0.elapsed().as_secs_f64()
    };

    eprintln!("regstore serve and docker-registry…");
    let regstore_root = dir.path().join("regstore-root");
    let distribution_root = dir.path().join("distribution-root");
    // Without access logs, as docker-registry is run.
    let config = dir.path().join("regstore.yml");
    std::fs::write(&config, quiet_config(&regstore_root)).map_err(|e| e.to_string())?;
    let (rp, rbase) = start_regstore(&o, "regstore", &regstore_root, Some(&config)).await?;
    let (dp, dbase) = start_docker_registry(&o, &distribution_root, dir.path()).await?;
    let targets = [
        ("regstore", Target::new(&rbase)),
        ("docker-registry", Target::new(&dbase)),
    ];
    let probe_pushes = create_probe(&dir.path().join("probe-pushes"))?;
    eprintln!("large pushes, both registries in turn…");
    let pushes = large_pushes(&o, dir.path(), &targets, &blobs).await?;
    let [(_, pulled), _] = blobs.first().ok_or("no blobs to push")?;
    let mut figures = [Figures::default(), Figures::default()];
    for (((name, _), base), (f, (one, chunked))) in targets
        .iter()
        .zip([&rbase, &dbase])
        .zip(figures.iter_mut().zip(pushes))
    {
        eprintln!("{name}: pull, manifest GET, blob HEAD…");
        (f.push_one, f.push_chunked) = (one, chunked);
        serving(&o, base, name, pulled, f).await?;
    }
    let probe_small = create_probe(&dir.path().join("probe-small"))?;
    eprintln!("4 KiB pushes, both registries in turn…");
    let per_round = (o.small / SMALL_ROUNDS).max(small::THREADS);
    let small = small::interleaved(
        &targets,
        "bench/many",
        dir.path(),
        SMALL_ROUNDS,
        per_round,
        |round, _| ((round + 1) * per_round) as u64,
    )
    .await?;
    for (f, rate) in figures.iter_mut().zip(small) {
        f.small = Some(rate);
    }
    for (name, t) in &targets {
        populate_listings(&o, t, name).await?;
    }
    // Both alive and populated: the lists in interleaved rounds.
    eprintln!("catalog and tag lists, both registries in turn…");
    let [(_, rt), (_, dt)] = &targets;
    let lists = measure_listings(
        &o,
        &[
            (rt, "regstore", tags_dir(&regstore_root)),
            (dt, "docker-registry", tags_dir(&distribution_root)),
        ],
        Instant::now(),
    )
    .await?;
    let rss = |p: &Proc| p.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    let (r_rss, d_rss) = (rss(&rp), rss(&dp));
    let [r, d] = &figures;
    let rate = |x: &Option<Rate>| x.as_ref().map_or(0.0, Rate::per_second);
    let p = |x: &Option<Rate>, q: f64| x.as_ref().map_or(0.0, |r| ms(r.latencies.percentile(q)));
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    println!(
        "| measure | regstore | docker-registry 2.8.2 | regstore / docker-registry | limit | regstore / limit | goal (issue 23) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    // A MiB/s row against a limit: met when regstore reaches `goal` × it.
    let limit_row = |name: String, a: f64, b: f64, limit: (&str, f64), goal: (f64, &str)| {
        println!(
            "| {name} | {a:.1} MiB/s | {b:.1} MiB/s | {:.2}× | {} {:.1} MiB/s | {:.2}× | ≥ {}× {}: {} |",
            ratio(a, b),
            limit.0,
            limit.1,
            ratio(a, limit.1),
            goal.0,
            goal.1,
            verdict(a >= goal.0 * limit.1),
        );
    };
    let mib = o.blob_mib;
    limit_row(
        format!("push {mib} MiB, one request"),
        r.push_one,
        d.push_one,
        ("dd + fdatasync", disk_limit),
        (0.85, "of dd"),
    );
    limit_row(
        format!("push {mib} MiB, 8 MiB chunks"),
        r.push_chunked,
        d.push_chunked,
        ("the one-request push", r.push_one),
        (0.95, "of one request"),
    );
    limit_row(
        format!("pull {mib} MiB"),
        r.pull,
        d.pull,
        ("nginx sendfile", nginx_pull),
        (0.85, "nginx"),
    );
    for (name, a, b) in [
        ("manifest GET", &r.manifest, &d.manifest),
        ("blob HEAD", &r.head, &d.head),
    ] {
        println!(
            "| {name}, 32 connections (p50 / p99) | {:.0} req/s ({:.2} / {:.2} ms) | {:.0} req/s ({:.2} / {:.2} ms) | {:.2}× (p99 {:.2}×) | — | — | keep |",
            rate(a),
            p(a, 50.0),
            p(a, 99.0),
            rate(b),
            p(b, 50.0),
            p(b, 99.0),
            ratio(rate(a), rate(b)),
            ratio(p(a, 99.0), p(b, 99.0)),
        );
    }
    println!(
        "| {} pushes of 4 KiB, 16 tasks, {SMALL_ROUNDS} interleaved rounds | {:.0} push/s | {:.0} push/s | {:.2}× | — | — | ≥ 5× docker-registry: {} |",
        r.small.as_ref().map_or(0, |r| r.ops),
        rate(&r.small),
        rate(&d.small),
        ratio(rate(&r.small), rate(&d.small)),
        verdict(rate(&r.small) >= 5.0 * rate(&d.small))
    );
    print_listing_rows(&o, &lists[0], &lists[1]);
    println!(
        "| peak RSS | {r_rss:.1} MiB | {d_rss:.1} MiB | {:.2}× | — | — | keep |",
        ratio(r_rss, d_rss),
    );
    println!();
    println!(
        "{}",
        probe_note(&[
            (probe_pushes, "before the large pushes"),
            (probe_small, "before the 4 KiB pushes")
        ])
    );
    println!("{}", machine::limits_note(sha256, sink));
    machine::warn_if_reporting();
    Ok(())
}

/// Files [`create_probe`] creates.
const PROBE_FILES: usize = 100;

/// The line printed under a table: each [`create_probe`] figure, in µs,
/// with when it was taken.
fn probe_note(probes: &[(f64, &str)]) -> String {
    let took: Vec<String> = probes
        .iter()
        .map(|(us, when)| format!("{us:.0} µs {when}"))
        .collect();
    format!(
        "Creating a file on the bench's filesystem took {} (median of {PROBE_FILES}; see `create_probe`).",
        took.join(" and ")
    )
}

/// The median time, in µs, to create an empty file in the new directory
/// `dir` (left in place). Every push creates files, and what that costs
/// moves with the filesystem's state: on ext4 without a journal (the
/// development VM's disk) the inode allocator steps over every inode
/// deleted in the last minute or more, reading each, so a create takes
/// about 20 µs on a filesystem left alone and 0.6 ms after thousands of
/// deletions (a previous run's temporary directory). Printed with the
/// table so that runs can be compared.
fn create_probe(dir: &Path) -> Result<f64, String> {
    std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut times = Vec::with_capacity(PROBE_FILES);
    for i in 0..PROBE_FILES {
        let path = dir.join(format!("f{i}"));
        let t0 = Instant::now();
        std::fs::File::create_new(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[PROBE_FILES / 2])
}

/// Writes `blob` to the file `path`, synced: on disk before dd measures
/// the disk, so no writeback of it competes.
fn write_blob(blob: &Pieces, path: &Path) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| e.to_string())?;
    for piece in blob.pieces() {
        f.write_all(piece).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// The disk's limit for a push: `dd` copying `src` (in the page cache) to
/// `dst` in 8 MiB blocks with `conv=fdatasync`, in MiB/s; `dst` is
/// removed afterwards.
fn dd_fdatasync(src: &Path, dst: &Path, mib: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    let out = Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=8M", "conv=fdatasync", "status=none"])
        .output()
        .map_err(|e| format!("dd: {e}"))?;
    let elapsed = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "dd: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = std::fs::remove_file(dst);
    Ok(mib as f64 / elapsed.as_secs_f64())
}

/// The catalog and tag-list rows: time, and how many times faster
/// regstore is, against the goals of issue 23.
fn print_listing_rows(o: &Options, r: &Listings, d: &Listings) {
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let row = |name: String, a: f64, b: f64, times_faster: f64| {
        println!(
            "| {name} (median of {LISTING_ROUNDS}, interleaved) | {a:.2} ms | {b:.2} ms | {:.2}× faster | — | — | ≥ {times_faster}× faster: {} |",
            b / a.max(1e-9),
            verdict(a * times_faster <= b)
        );
    };
    row(
        format!("catalog of {} repositories, n=1000", o.repos),
        r.catalog_ms,
        d.catalog_ms,
        5.0,
    );
    row(
        format!("tags list of {} tags, n=1000", o.tags),
        r.tags_n_ms,
        d.tags_n_ms,
        2.0,
    );
    row(
        format!("tags list of {} tags, no n", o.tags),
        r.tags_all_ms,
        d.tags_all_ms,
        2.0,
    );
    row(
        format!("tags list of {} tags, no n, just after a change", o.tags),
        r.tags_changed_ms,
        d.tags_changed_ms,
        2.0,
    );
}

/// The directory of `bench/tagged`'s tags under a registry's root (the
/// layout both registries share).
fn tags_dir(root: &Path) -> PathBuf {
    root.join("docker/registry/v2/repositories/bench/tagged/_manifests/tags")
}

/// `--listings`: only the catalog and the tag lists, on both registries.
async fn run_listings(o: &Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    eprintln!("regstore serve…");
    let regstore_root = dir.path().join("regstore-root");
    let config = dir.path().join("regstore.yml");
    std::fs::write(&config, quiet_config(&regstore_root)).map_err(|e| e.to_string())?;
    let (_regstore, base) = start_regstore(o, "regstore", &regstore_root, Some(&config)).await?;
    let regstore = Target::new(&base);
    populate_listings(o, &regstore, "regstore").await?;
    eprintln!("docker-registry…");
    let root = dir.path().join("distribution-root");
    let (_distribution, base) = start_docker_registry(o, &root, dir.path()).await?;
    let distribution = Target::new(&base);
    populate_listings(o, &distribution, "docker-registry").await?;
    eprintln!("catalog and tag lists, both registries in turn…");
    let lists = measure_listings(
        o,
        &[
            (&regstore, "regstore", tags_dir(&regstore_root)),
            (&distribution, "docker-registry", tags_dir(&root)),
        ],
        Instant::now(),
    )
    .await?;
    println!(
        "| measure | regstore | docker-registry 2.8.2 | regstore / docker-registry | limit | regstore / limit | goal (issue 23) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    print_listing_rows(o, &lists[0], &lists[1]);
    Ok(())
}
