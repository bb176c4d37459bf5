//! gc-bench: regstore's garbage collection against docker/distribution
//! 2.8.2's (Debian's `docker-registry garbage-collect`) on S3 (moto), in
//! one run. `scripts/bench-gc.sh` builds and runs it; see there for the
//! knobs.
//!
//! 1. Writes the same registry twice, under two root prefixes of one
//!    bucket, straight through regstore's s3 driver (`--populate-concurrency`
//!    puts at once): `--repos` repositories holding `--blobs` blobs in all,
//!    half of them unreferenced. Each repository has a tagged image (a
//!    manifest, its config and layers) and the blobs of an image whose
//!    manifest was deleted (its manifest's bytes, config and layers, still
//!    linked in `_layers`, as distribution leaves them).
//! 2. Starts a counting relay ([`regstore_benches::relay`]) in front of
//!    the S3 endpoint; both programs talk to S3 through it, so their
//!    requests are counted the same way.
//! 3. Dry runs, both on the first prefix: `regstore garbage-collect
//!    --dry-run`, then `docker-registry garbage-collect --dry-run`.
//! 4. Real runs: regstore on the first prefix, docker-registry on the
//!    second.
//! 5. Checks each run found exactly the unreferenced blobs, and after the
//!    real runs that each prefix holds exactly the referenced ones.
//!
//! Prints a Markdown table (requests by kind, wall time, blobs) and the
//! ratios; progress goes to stderr.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use regstore_benches::relay::{Counts, Relay, thousands};
use regstore_core::Driver;
use regstore_server::config::Config;
use regstore_server::gc::inventory;
use regstore_server::registry::{Digest, RepoName, Tag, layout};
use sha2::{Digest as _, Sha256};

struct Options {
    blobs: usize,
    repos: usize,
    endpoint: String,
    bucket: String,
    regstore: PathBuf,
    docker_registry: PathBuf,
    populate_concurrency: usize,
    gc_concurrency: u16,
    delete_untagged: bool,
    latency: Duration,
    dry: bool,
    real: bool,
    logs: Option<PathBuf>,
    keep: bool,
}

const USAGE: &str = "usage: gc-bench [--blobs N] [--repos N] [--endpoint URL] [--bucket NAME]
                [--regstore PATH] [--docker-registry PATH] [--populate-concurrency N]
                [--concurrency N] [--delete-untagged] [--latency D] [--only dry|real]
                [--logs DIR] [--keep]

--blobs, --repos      size of the registry (10000, 1000): half the blobs unreferenced;
                      blobs/repos must be even and at least 4
--endpoint, --bucket  the S3 emulator and an existing bucket (http://127.0.0.1:19000, regstore)
--concurrency         regstore garbage-collect --concurrency (16, its default)
--delete-untagged     run both collections with --delete-untagged (-m)
--latency             hold every request that long in the relay (0; e.g. 20ms: a distant S3)
--only                only the dry runs, or only the real runs
--logs                write each program's output and the relay's request log there
--keep                leave the two prefixes in the bucket";

impl Options {
    fn parse() -> Result<Options, String> {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let mut o = Options {
            blobs: 10_000,
            repos: 1_000,
            endpoint: "http://127.0.0.1:19000".into(),
            bucket: "regstore".into(),
            regstore: Path::new(&target).join("release/regstore"),
            docker_registry: "/usr/bin/docker-registry".into(),
            populate_concurrency: 32,
            gc_concurrency: 16,
            delete_untagged: false,
            latency: Duration::ZERO,
            dry: true,
            real: true,
            logs: None,
            keep: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String>
            where
                T::Err: std::fmt::Display,
            {
                v.parse().map_err(|e| format!("{name}: {e}"))
            }
            match a.as_str() {
                "--blobs" => o.blobs = number("--blobs", value("--blobs")?)?,
                "--repos" => o.repos = number("--repos", value("--repos")?)?,
                "--endpoint" => o.endpoint = value("--endpoint")?,
                "--bucket" => o.bucket = value("--bucket")?,
                "--regstore" => o.regstore = value("--regstore")?.into(),
                "--docker-registry" => o.docker_registry = value("--docker-registry")?.into(),
                "--populate-concurrency" => {
                    o.populate_concurrency = number(&a, value(&a)?)?;
                }
                "--concurrency" => o.gc_concurrency = number(&a, value(&a)?)?,
                "--delete-untagged" => o.delete_untagged = true,
                "--latency" => {
                    o.latency = regstore_core::params::parse_duration(&value("--latency")?)
                        .map_err(|e| format!("--latency: {e}"))?;
                }
                "--only" => match value("--only")?.as_str() {
                    "dry" => o.real = false,
                    "real" => o.dry = false,
                    other => return Err(format!("--only: {other:?} is not dry or real")),
                },
                "--logs" => o.logs = Some(value("--logs")?.into()),
                "--keep" => o.keep = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (see --help)")),
            }
        }
        let per = o.blobs.checked_div(o.repos).unwrap_or(0);
        if o.repos == 0 || !o.blobs.is_multiple_of(o.repos) || per < 4 || !per.is_multiple_of(2) {
            return Err(format!(
                "--blobs {} / --repos {}: each repository needs an even number of blobs, at least 4",
                o.blobs, o.repos
            ));
        }
        Ok(o)
    }
}

// ------------------------------------------------------------------ plan

/// What one prefix holds.
struct Plan {
    /// Every object: path below the root, content.
    objects: Vec<(String, Bytes)>,
    /// Blobs a tagged manifest references (the manifests included).
    referenced: BTreeSet<String>,
    /// Blobs nothing references.
    unreferenced: BTreeSet<String>,
    /// `_layers` links written.
    layer_links: usize,
}

fn digest_of(data: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
        .parse()
        .expect("a sha256 digest")
}

/// An image manifest (Docker schema 2 or OCI) naming a config and layers.
fn manifest(docker: bool, config: (&Digest, usize), layers: &[(Digest, usize)]) -> Vec<u8> {
    let (mt, config_mt, layer_mt) = if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, n)| format!("{{\"mediaType\":\"{layer_mt}\",\"digest\":\"{d}\",\"size\":{n}}}"))
        .collect();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{mt}\",\"config\":{{\"mediaType\":\"{config_mt}\",\"digest\":\"{}\",\"size\":{}}},\"layers\":[{}]}}",
        config.0,
        config.1,
        layers.join(",")
    )
    .into_bytes()
}

/// The registry both prefixes hold: in each of `repos` repositories
/// (`p<NN>/app<NNNN>`), `blobs / repos / 2` referenced blobs (a tagged
/// image: manifest, config, layers) and as many unreferenced ones (an
/// image whose manifest was deleted: its bytes stay, its config and layers
/// stay linked).
fn plan(blobs: usize, repos: usize) -> Plan {
    let k = blobs / repos / 2;
    let mut p = Plan {
        objects: Vec::new(),
        referenced: BTreeSet::new(),
        unreferenced: BTreeSet::new(),
        layer_links: 0,
    };
    for r in 0..repos {
        let name = RepoName::parse(&format!("p{:02}/app{r:04}", r / 100)).expect("repo name");
        for (image, live) in [("live", true), ("deleted", false)] {
            let config = format!(
                "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Labels\":{{\"repo\":\"{name}\",\"image\":\"{image}\"}}}}}}"
            );
            let cd = digest_of(config.as_bytes());
            let mut blobs: Vec<(Digest, Bytes)> = vec![(cd.clone(), Bytes::from(config))];
            let mut layers = Vec::new();
            for i in 0..k - 2 {
                let seed = (r as u64) << 20 | u64::from(live) << 16 | i as u64;
                let size = 512 + (seed.wrapping_mul(2_654_435_761) % 1536) as usize;
                let data = regstore_testsuite::Rng::new(seed).bytes(size);
                let d = digest_of(&data);
                layers.push((d.clone(), size));
                blobs.push((d, data));
            }
            for (d, _) in &blobs {
                p.objects.push((
                    layout::layer_link(&name, d),
                    Bytes::from(layout::link_content(d)),
                ));
                p.layer_links += 1;
            }
            let body = manifest((r % 2 == 0) == live, (&cd, blobs[0].1.len()), &layers);
            let md = digest_of(&body);
            blobs.push((md.clone(), Bytes::from(body)));
            if live {
                let tag = Tag::parse("latest").expect("tag");
                let link = Bytes::from(layout::link_content(&md));
                p.objects
                    .push((layout::revision_link(&name, &md), link.clone()));
                p.objects
                    .push((layout::tag_current_link(&name, &tag), link.clone()));
                p.objects
                    .push((layout::tag_index_link(&name, &tag, &md), link));
            }
            let set = if live {
                &mut p.referenced
            } else {
                &mut p.unreferenced
            };
            for (d, data) in blobs {
                set.insert(d.to_string());
                p.objects.push((layout::blob_data(&d), data));
            }
        }
    }
    p
}

// ------------------------------------------------------------------ storage

fn regstore_config(o: &Options, endpoint: &str, root: &str) -> String {
    format!(
        "version: 0.1\nstorage:\n  s3:\n    bucket: {}\n    region: us-east-1\n    regionendpoint: \"{endpoint}\"\n    forcepathstyle: true\n    accesskey: test\n    secretkey: test\n    rootdirectory: \"{root}\"\n  delete:\n    enabled: true\n",
        o.bucket
    )
}

/// With `regionendpoint` set, 2.8.2's s3 driver sends path-style requests
/// (the relay's log shows `/bucket/key`), so it needs no `forcepathstyle`;
/// `secure: false` because the endpoint is plain http.
fn distribution_config(o: &Options, endpoint: &str, root: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  s3:\n    bucket: {}\n    region: us-east-1\n    regionendpoint: \"{endpoint}\"\n    secure: false\n    v4auth: true\n    accesskey: test\n    secretkey: test\n    rootdirectory: \"{root}\"\n  delete:\n    enabled: true\n",
        o.bucket
    )
}

async fn driver(o: &Options, root: &str) -> Result<Driver, String> {
    let config = Config::from_yaml(
        &regstore_config(o, &o.endpoint, root),
        "gc-bench",
        std::iter::empty(),
    )
    .map_err(|e| e.to_string())?;
    let registry = regstore_server::serve::registry(&config)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(registry.driver().clone())
}

async fn populate(driver: &Driver, plan: &Plan, concurrency: usize) -> Result<(), String> {
    futures_util::stream::iter(plan.objects.iter())
        .map(|(path, data)| driver.put_content(path, data.clone()))
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
        .map_err(|e| format!("populate: {e}"))
}

/// Blob digests and `_layers` links under the driver's root.
async fn stored(driver: &Driver) -> Result<(BTreeSet<String>, usize), String> {
    let (blobs, _) = inventory::blobs(driver).await.map_err(|e| e.to_string())?;
    let repos = inventory::repositories(driver)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        blobs.into_iter().map(|b| b.digest.to_string()).collect(),
        repos.repos.values().map(|r| r.layers.len()).sum(),
    ))
}

// ------------------------------------------------------------------ runs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Regstore,
    Distribution,
}

struct Run {
    tool: Tool,
    dry: bool,
    counts: Counts,
    /// regstore's own count (its summary line).
    self_reported: Option<u64>,
    elapsed: Duration,
    eligible: BTreeSet<String>,
    summary: String,
}

/// `blob eligible for deletion: sha256:… (N bytes)` (regstore, dry),
/// `blob deleted: sha256:… (N bytes)` (regstore), `blob eligible for
/// deletion: sha256:…` (distribution, both modes).
fn parse_blobs(stdout: &str) -> BTreeSet<String> {
    stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("blob eligible for deletion: ")
                .or_else(|| l.strip_prefix("blob deleted: "))
        })
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

fn summary_line(tool: Tool, stdout: &str) -> String {
    let wanted = match tool {
        Tool::Regstore => " blobs marked, ",
        Tool::Distribution => " manifests eligible for deletion",
    };
    stdout
        .lines()
        .rev()
        .find(|l| l.contains(wanted))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// `… N backend requests in …` of regstore's summary line.
fn backend_requests(summary: &str) -> Option<u64> {
    let words: Vec<&str> = summary.split_whitespace().collect();
    words
        .windows(3)
        .find(|w| w[1] == "backend" && w[2].starts_with("requests"))
        .and_then(|w| w[0].parse().ok())
}

async fn run(
    o: &Options,
    relay: &Relay,
    tool: Tool,
    dry: bool,
    root: &str,
    dir: &Path,
) -> Result<Run, String> {
    let label = format!(
        "{}-{}",
        match tool {
            Tool::Regstore => "regstore",
            Tool::Distribution => "docker-registry",
        },
        if dry { "dry-run" } else { "real" }
    );
    let config = dir.join(format!("{label}.yml"));
    let text = match tool {
        Tool::Regstore => regstore_config(o, &relay.endpoint(), root),
        Tool::Distribution => distribution_config(o, &relay.endpoint(), root),
    };
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let mut cmd = match tool {
        Tool::Regstore => {
            let mut c = Command::new(&o.regstore);
            c.arg("garbage-collect")
                .arg("--concurrency")
                .arg(o.gc_concurrency.to_string());
            c
        }
        Tool::Distribution => {
            let mut c = Command::new(&o.docker_registry);
            c.arg("garbage-collect");
            // 2.8.2's s3 driver panics at startup while it is set.
            c.env_remove("AWS_CA_BUNDLE");
            c
        }
    };
    if dry {
        cmd.arg("--dry-run");
    }
    if o.delete_untagged {
        cmd.arg("--delete-untagged");
    }
    cmd.arg(&config);
    if let Some(logs) = &o.logs {
        relay
            .log_to(Some(&logs.join(format!("{label}.requests"))))
            .map_err(|e| e.to_string())?;
    }
    eprintln!("gc-bench: {label} …");
    relay.take();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{label}: cannot run: {e}"))?;
    let elapsed = started.elapsed();
    let counts = relay.take();
    relay.log_to(None).map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(logs) = &o.logs {
        std::fs::write(logs.join(format!("{label}.stdout")), &stdout).map_err(|e| e.to_string())?;
        std::fs::write(logs.join(format!("{label}.stderr")), &stderr).map_err(|e| e.to_string())?;
    }
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(format!(
            "{label} failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let summary = summary_line(tool, &stdout);
    let self_reported = match tool {
        Tool::Regstore => backend_requests(&summary),
        Tool::Distribution => None,
    };
    eprintln!(
        "gc-bench: {label}: {} requests in {:.1} s; {summary}",
        counts.total(),
        elapsed.as_secs_f64()
    );
    Ok(Run {
        tool,
        dry,
        counts,
        self_reported,
        elapsed,
        eligible: parse_blobs(&stdout),
        summary,
    })
}

// ------------------------------------------------------------------ report

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "–".into()
    } else {
        format!("{:.1}×", a / b)
    }
}

fn docker_version(o: &Options) -> String {
    Command::new(&o.docker_registry)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .last()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

fn table(o: &Options, runs: &[Run], expected: &BTreeSet<String>) -> String {
    let version = docker_version(o);
    let name = |t: Tool| match t {
        Tool::Regstore => "regstore".to_owned(),
        Tool::Distribution => format!("docker-registry {version}"),
    };
    let mut s = String::from(
        "| tool | mode | requests | by kind | self-reported | wall time | blobs eligible | blobs deleted | = unreferenced set |\n|---|---|---:|---|---:|---:|---:|---:|---|\n",
    );
    for r in runs {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            name(r.tool),
            if r.dry { "dry run" } else { "real" },
            thousands(r.counts.total()),
            r.counts,
            r.self_reported.map(thousands).unwrap_or_else(|| "–".into()),
            secs(r.elapsed),
            thousands(r.eligible.len() as u64),
            if r.dry {
                "0".into()
            } else {
                thousands(r.eligible.len() as u64)
            },
            if r.eligible == *expected {
                "yes".to_owned()
            } else {
                format!(
                    "**no**: {} missing, {} extra",
                    expected.difference(&r.eligible).count(),
                    r.eligible.difference(expected).count()
                )
            },
        );
    }
    s += "\n| mode | requests, docker-registry ÷ regstore | wall time, docker-registry ÷ regstore | goal: ≥ 10× fewer requests, ≥ 5× faster |\n|---|---:|---:|---|\n";
    for dry in [true, false] {
        let find = |t: Tool| runs.iter().find(|r| r.tool == t && r.dry == dry);
        if let (Some(ours), Some(theirs)) = (find(Tool::Regstore), find(Tool::Distribution)) {
            let rq = theirs.counts.total() as f64 / ours.counts.total().max(1) as f64;
            let tm = theirs.elapsed.as_secs_f64() / ours.elapsed.as_secs_f64().max(1e-9);
            s += &format!(
                "| {} | {} | {} | {} |\n",
                if dry { "dry run" } else { "real" },
                ratio(theirs.counts.total() as f64, ours.counts.total() as f64),
                ratio(theirs.elapsed.as_secs_f64(), ours.elapsed.as_secs_f64()),
                match (rq >= 10.0, tm >= 5.0) {
                    (true, true) => "met",
                    (true, false) => "requests met, time not",
                    (false, true) => "time met, requests not",
                    (false, false) => "not met",
                }
            );
        }
    }
    s
}

// ------------------------------------------------------------------ main

async fn bench(o: &Options) -> Result<(), String> {
    for (what, path) in [
        ("regstore", &o.regstore),
        ("docker-registry", &o.docker_registry),
    ] {
        if !path.is_file() {
            return Err(format!("{what}: no program at {}", path.display()));
        }
    }
    regstore_testenv::backend::reachable(&o.endpoint).await?;
    let secs_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prefix = format!("gc-bench/{secs_now}-{}", std::process::id());
    let roots = [format!("{prefix}/a"), format!("{prefix}/b")];
    let drivers = [driver(o, &roots[0]).await?, driver(o, &roots[1]).await?];

    let plan = plan(o.blobs, o.repos);
    let expected = &plan.unreferenced;
    eprintln!(
        "gc-bench: writing {} objects ({} blobs, {} unreferenced, {} layer links) in {} repositories, {}, to {} bucket {} under {prefix}/",
        thousands(plan.objects.len() as u64),
        thousands((plan.referenced.len() + plan.unreferenced.len()) as u64),
        thousands(plan.unreferenced.len() as u64),
        thousands(plan.layer_links as u64),
        thousands(o.repos as u64),
        if o.real { "twice" } else { "once" },
        o.endpoint,
        o.bucket,
    );
    let started = Instant::now();
    // The second prefix is only for docker-registry's real run.
    let used = if o.real { &drivers[..] } else { &drivers[..1] };
    for d in used {
        populate(d, &plan, o.populate_concurrency).await?;
    }
    let populate_time = started.elapsed();
    eprintln!("gc-bench: written in {}", secs(populate_time));

    let relay = Relay::start(&o.endpoint, o.latency)
        .await
        .map_err(|e| format!("relay: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if let Some(logs) = &o.logs {
        std::fs::create_dir_all(logs).map_err(|e| e.to_string())?;
    }
    let mut runs = Vec::new();
    let result = async {
        if o.dry {
            runs.push(run(o, &relay, Tool::Regstore, true, &roots[0], dir.path()).await?);
            runs.push(run(o, &relay, Tool::Distribution, true, &roots[0], dir.path()).await?);
        }
        if o.real {
            // regstore first: docker-registry's listings then run over a
            // bucket already smaller by what regstore deleted, which can
            // only favour it on moto (whose listings cost the bucket's size).
            runs.push(run(o, &relay, Tool::Regstore, false, &roots[0], dir.path()).await?);
            runs.push(run(o, &relay, Tool::Distribution, false, &roots[1], dir.path()).await?);
        }
        Ok::<_, String>(())
    }
    .await;

    let mut after = Vec::new();
    if result.is_ok() && o.real {
        for (d, tool) in drivers.iter().zip(["regstore", "docker-registry"]) {
            let (blobs, links) = stored(d).await?;
            after.push(format!(
                "{tool}'s prefix: {} blobs left ({}), {} `_layers` links left",
                thousands(blobs.len() as u64),
                if blobs == plan.referenced {
                    "exactly the referenced ones".to_owned()
                } else {
                    format!(
                        "**not** the referenced ones: {} missing, {} extra",
                        plan.referenced.difference(&blobs).count(),
                        blobs.difference(&plan.referenced).count()
                    )
                },
                thousands(links as u64),
            ));
        }
    }
    if !o.keep {
        eprintln!("gc-bench: deleting {prefix}/");
        for d in used {
            match d.delete(layout::ROOT).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => eprintln!("gc-bench: cleaning up: {e}"),
            }
        }
    }
    result?;

    println!(
        "{} blobs ({} unreferenced) in {} repositories: {} objects per prefix, {} `_layers` links; written {} in {}. regstore `--concurrency {}`{}{}.\n",
        thousands((plan.referenced.len() + plan.unreferenced.len()) as u64),
        thousands(plan.unreferenced.len() as u64),
        thousands(o.repos as u64),
        thousands(plan.objects.len() as u64),
        thousands(plan.layer_links as u64),
        if o.real { "twice" } else { "once" },
        secs(populate_time),
        o.gc_concurrency,
        if o.delete_untagged {
            "; both with `--delete-untagged`"
        } else {
            ""
        },
        if o.latency.is_zero() {
            String::new()
        } else {
            format!("; the relay adds {:?} to every request", o.latency)
        },
    );
    println!("{}", table(o, &runs, expected));
    for r in &runs {
        println!(
            "- {} {}: `{}`",
            match r.tool {
                Tool::Regstore => "regstore",
                Tool::Distribution => "docker-registry",
            },
            if r.dry { "dry run" } else { "real" },
            r.summary
        );
    }
    for line in &after {
        println!("- after the real runs, {line}");
    }
    let wrong =
        runs.iter().any(|r| &r.eligible != expected) || after.iter().any(|l| l.contains("**not**"));
    if wrong {
        return Err(
            "a collection did not find exactly the unreferenced blobs (see the table)".into(),
        );
    }
    Ok(())
}

fn main() {
    let o = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gc-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(bench(&o)) {
        eprintln!("gc-bench: {e}");
        std::process::exit(1);
    }
}
