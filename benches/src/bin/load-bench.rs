//! The load tool: 50 concurrent clients pushing and pulling overlapping
//! images against `regstore serve` for a while, on one instance on the
//! filesystem driver (`--setup fs`) and on two instances sharing one s3
//! bucket on moto (`--setup s3-pair`, clients' requests alternating between
//! them, mid-upload included). The engine is [`regstore_benches::load`].
//!
//! ```sh
//! cargo build --release -p regstore-cli -p regstore-benches --bin load-bench
//! scripts/backends.sh start s3
//! target/release/load-bench --duration 3m                 # both setups
//! target/release/load-bench --setup s3-pair --duration 30m
//! ```
//!
//! Prints, per setup, a Markdown table: requests, errors, p50/p99/max per
//! operation, each instance's peak RSS (and RSS at half time and at the
//! end), upload sessions started and lost, pulls verified, errors by kind.
//! Exits 1 when any request failed or any session was lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regstore_benches::load::{self, LoadOptions, Setup};

struct Options {
    regstore: PathBuf,
    setups: Vec<&'static str>,
    load: LoadOptions,
}

/// The number at the start of `s` and the unit after it (`default` if
/// none).
fn number_unit<'a>(s: &'a str, default: &'a str) -> Result<(u64, &'a str), String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, default),
    };
    Ok((n.parse().map_err(|e| format!("{s:?}: {e}"))?, unit))
}

/// `90s`, `3m`, `30m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_unit(s, "s")?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: give s, m or h")),
    };
    Ok(Duration::from_secs(n * scale))
}

/// `512KiB`, `4MiB`, `1GiB`, or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = number_unit(s, "B")?;
    let shift = match unit {
        "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(format!("{s:?}: give B, KiB, MiB or GiB")),
    };
    Ok(n << shift)
}

impl Options {
    fn parse() -> Result<Options, String> {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let mut o = Options {
            regstore: Path::new(&target).join("release/regstore"),
            setups: vec!["fs", "s3-pair"],
            load: LoadOptions::default(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            let number =
                |name: &str, v: String| v.parse::<usize>().map_err(|e| format!("{name}: {e}"));
            let l = &mut o.load;
            match a.as_str() {
                "--regstore" => o.regstore = value("--regstore")?.into(),
                "--setup" => {
                    o.setups = match value("--setup")?.as_str() {
                        "fs" => vec!["fs"],
                        "s3-pair" => vec!["s3-pair"],
                        "both" => vec!["fs", "s3-pair"],
                        other => return Err(format!("--setup {other:?}: fs, s3-pair or both")),
                    }
                }
                "--clients" => l.clients = number("--clients", value("--clients")?)?,
                "--duration" => l.duration = parse_duration(&value("--duration")?)?,
                "--iterations" => {
                    l.iterations = Some(number("--iterations", value("--iterations")?)? as u64)
                }
                "--layers" => l.layers = number("--layers", value("--layers")?)?,
                "--layer-size" => l.layer_size = parse_size(&value("--layer-size")?)?,
                "--chunk-size" => l.chunk_size = parse_size(&value("--chunk-size")?)? as usize,
                "--pool" => l.pool = number("--pool", value("--pool")?)?,
                "--own-layers" => l.own_layers = number("--own-layers", value("--own-layers")?)?,
                "--repos" => l.repos = number("--repos", value("--repos")?)?,
                "--seed" => {
                    l.seed = value("--seed")?
                        .parse()
                        .map_err(|e| format!("--seed: {e}"))?
                }
                "-h" | "--help" => {
                    println!(
                        "usage: load-bench [--setup fs|s3-pair|both] [--clients 50] [--duration 60s|3m|1h] [--iterations N]\n                  [--layers 4] [--layer-size 512KiB] [--chunk-size 128KiB] [--pool 8] [--own-layers 4] [--repos 10] [--seed 1]\n                  [--regstore PATH (default $CARGO_TARGET_DIR/release/regstore)]\n\ns3-pair needs moto: scripts/backends.sh start s3 (or REGSTORE_S3_ENDPOINT).\nSERVER_BENCH_LOGS=DIR keeps each instance's log in DIR/<name>.log."
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (see --help)")),
            }
        }
        Ok(o)
    }
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
    match run(&o).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs each setup; true when none had an error or a lost session.
async fn run(o: &Options) -> Result<bool, String> {
    let l = &o.load;
    println!(
        "{} clients, {} s each; images of {} layers of {} ({} from a pool of {} shared by all clients, 1 of {} of the client's own), chunks of {}, {} repositories, seed {}.\n",
        l.clients,
        l.duration.as_secs(),
        l.layers,
        regstore_benches::size_label(l.layer_size as usize),
        l.layers - 1,
        l.pool,
        l.own_layers,
        regstore_benches::size_label(l.chunk_size),
        l.repos,
        l.seed
    );
    let mut clean = true;
    for &name in &o.setups {
        let setup = match name {
            "s3-pair" => Setup::S3Pair(
                regstore_testenv::backend::emulator_params("s3")
                    .await
                    .map_err(|e| format!("s3 (moto): {e}"))?,
            ),
            _ => Setup::Filesystem,
        };
        eprintln!(
            "{name}: {} clients for {} s…",
            l.clients,
            l.duration.as_secs()
        );
        let report = load::run_setup(&o.regstore, &setup, l)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        println!("{}", report.to_markdown());
        clean &= report.error_count() == 0 && report.sessions_lost == 0;
    }
    Ok(clean)
}
