//! `regstore bench`: the driver benchmark set ([`regstore_benches::set`])
//! against one or more backends, one after the other, with a progress bar,
//! a Markdown table, and optionally JSON and an SVG chart
//! ([`regstore_benches::report`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{ArgMatches, Args};
use regstore_benches::report::{BackendRun, Machine, Report};
use regstore_benches::set::{Bench, Outcome, Plan, Shape, Step};
use regstore_core::params::parse_pairs;
use regstore_core::{Driver, RawParams};

use regstore_core::StorageSpec;

/// Arguments of `regstore bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A distribution-style config.yml; its `storage` and
    /// `middleware.storage` sections make one backend. Repeat to compare.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// A driver to measure (see `regstore drivers`). Repeat to compare; the
    /// --param and --label options that follow a --driver belong to it.
    #[arg(long = "driver", value_name = "NAME")]
    pub drivers: Vec<String>,
    /// A parameter of the --driver before it.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The name the --driver or --config before it is shown under
    /// (default: the driver's name, numbered if it repeats).
    #[arg(long = "label", value_name = "TEXT")]
    pub labels: Vec<String>,
    /// The backend options in the order given; filled by
    /// [`crate::Cli::try_parse_args`] from clap's indices.
    #[arg(skip)]
    pub order: Vec<BackendOpt>,
    /// Timed calls per benchmark.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Timed calls of benchmarks that move 1 GiB or more per call.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub large_iterations: u32,
    /// Object sizes of the put/get and stream benchmarks.
    #[arg(long, value_delimiter = ',', default_value = "0B,1KiB,1MiB,1GiB", value_parser = parse_size_arg)]
    pub sizes: Vec<u64>,
    /// Folder sizes (files) of the list and delete benchmarks.
    #[arg(long, value_delimiter = ',', default_value = "5,50")]
    pub list: Vec<usize>,
    /// Tree sizes (files, 100 per directory) of the walk benchmarks.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub walk: Vec<usize>,
    /// Size of the renamed file.
    #[arg(long, default_value = "64MiB", value_parser = parse_size_arg)]
    pub rename_size: u64,
    /// Writer counts of the concurrent-write benchmarks.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub writers: Vec<usize>,
    /// Bytes each concurrent writer writes.
    #[arg(long, default_value = "8MiB", value_parser = parse_size_arg)]
    pub writer_size: u64,
    /// Run only the benchmarks whose names contain this text (e.g.
    /// `put_get`, `walk/1000`); repeat for several.
    #[arg(long = "only", value_name = "TEXT")]
    pub only: Vec<String>,
    /// Add this delay to every backend request (the `latency` middleware),
    /// e.g. 20ms, so a loopback emulator shows what request counts cost.
    #[arg(long, value_name = "DURATION")]
    pub latency: Option<String>,
    /// Write every sample, with the machine and the plan, as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the backends side by side per benchmark as an SVG chart here.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// The directory (in each backend) under which the run makes its
    /// unique `regstore-bench-<time>-<pid>` directory.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub prefix: String,
    /// Run even if the prefix already holds something (the run still only
    /// touches its own unique directory).
    #[arg(long)]
    pub allow_non_empty: bool,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    regstore_core::params::parse_size(s)
}

/// One of `regstore bench`'s backend options, in command-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendOpt {
    /// `--config FILE`
    Config(PathBuf),
    /// `--driver NAME`
    Driver(String),
    /// `--param NAME=VALUE`
    Param(String),
    /// `--label TEXT`
    Label(String),
}

/// The backend options of `bench`'s matches in the order they were given.
pub fn backend_options_in_order(m: &ArgMatches) -> Vec<BackendOpt> {
    let mut all: Vec<(usize, BackendOpt)> = Vec::new();
    let mut collect = |id: &str, make: &dyn Fn(String) -> BackendOpt| {
        if let (Some(idx), Some(vals)) = (m.indices_of(id), m.get_raw(id)) {
            for (i, v) in idx.zip(vals) {
                all.push((i, make(v.to_string_lossy().into_owned())));
            }
        }
    };
    collect("configs", &|v| BackendOpt::Config(PathBuf::from(v)));
    collect("drivers", &BackendOpt::Driver);
    collect("params", &BackendOpt::Param);
    collect("labels", &BackendOpt::Label);
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, o)| o).collect()
}

/// A backend to measure: what to build and what to call it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Shown in the table, the JSON and the chart.
    pub label: String,
    /// What to build.
    pub spec: StorageSpec,
}

impl BenchArgs {
    /// The backends, grouped from the options in order: each `--driver` or
    /// `--config` starts one; `--param` and `--label` belong to the one
    /// before them.
    ///
    /// # Errors
    /// No backend; a `--param` or `--label` before any backend; a `--param`
    /// after a `--config`; two labels for one backend or one label for two;
    /// an unreadable config.
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let order = if self.order.is_empty() {
            // Built without clap's indices: configs, then drivers, with
            // parameters and labels only unambiguous for one backend.
            let mut o: Vec<BackendOpt> = self
                .configs
                .iter()
                .cloned()
                .map(BackendOpt::Config)
                .collect();
            o.extend(self.drivers.iter().cloned().map(BackendOpt::Driver));
            if o.len() > 1 && !(self.params.is_empty() && self.labels.is_empty()) {
                bail!("cannot tell which backend each --param and --label belongs to");
            }
            o.extend(self.params.iter().cloned().map(BackendOpt::Param));
            o.extend(self.labels.iter().cloned().map(BackendOpt::Label));
            o
        } else {
            self.order.clone()
        };
        struct Partial {
            spec: StorageSpec,
            from_config: bool,
            pairs: Vec<String>,
            label: Option<String>,
        }
        let mut partial: Vec<Partial> = Vec::new();
        for opt in order {
            match opt {
                BackendOpt::Config(path) => partial.push(Partial {
                    spec: regstore_server::config::storage_from_file(&path)?,
                    from_config: true,
                    pairs: Vec::new(),
                    label: None,
                }),
                BackendOpt::Driver(name) => partial.push(Partial {
                    spec: StorageSpec::new(name, RawParams::new()),
                    from_config: false,
                    pairs: Vec::new(),
                    label: None,
                }),
                BackendOpt::Param(p) => match partial.last_mut() {
                    Some(b) if !b.from_config => b.pairs.push(p),
                    Some(_) => bail!(
                        "--param {p} follows a --config: a config file's backend takes its parameters from the file"
                    ),
                    None => bail!(
                        "--param {p} comes before any --driver; put it after the --driver it belongs to"
                    ),
                },
                BackendOpt::Label(l) => match partial.last_mut() {
                    Some(b) if b.label.is_none() => b.label = Some(l),
                    Some(b) => bail!(
                        "two labels ({:?} and {l:?}) for one backend",
                        b.label.as_deref().unwrap_or_default()
                    ),
                    None => bail!("--label {l} comes before any --driver or --config"),
                },
            }
        }
        if partial.is_empty() {
            bail!(
                "give --driver NAME or --config FILE (repeat either to compare several backends)"
            );
        }
        let mut out: Vec<Target> = Vec::new();
        for p in &partial {
            if let Some(l) = &p.label
                && partial
                    .iter()
                    .filter(|q| q.label.as_ref() == Some(l))
                    .count()
                    > 1
            {
                bail!("two backends are labelled {l:?}");
            }
        }
        for p in partial {
            let mut spec = p.spec;
            if !p.pairs.is_empty() {
                spec.params = parse_pairs(&p.pairs)?;
            }
            let label = match p.label {
                Some(l) => l,
                None => {
                    let mut l = spec.driver.clone();
                    let mut n = 1;
                    while out.iter().any(|t| t.label == l) {
                        n += 1;
                        l = format!("{}-{n}", spec.driver);
                    }
                    l
                }
            };
            out.push(Target { label, spec });
        }
        Ok(out)
    }

    /// The benchmarks selected by the shape options and `--only`.
    ///
    /// # Errors
    /// A size that does not fit in memory, or `--only` matching nothing.
    pub fn benches(&self) -> anyhow::Result<Vec<Bench>> {
        let size = |v: u64, what: &str| {
            usize::try_from(v).with_context(|| format!("{what} {v} does not fit in memory"))
        };
        let shape = Shape {
            sizes: self
                .sizes
                .iter()
                .map(|&s| size(s, "--sizes"))
                .collect::<anyhow::Result<_>>()?,
            lists: self.list.clone(),
            walks: self.walk.clone(),
            rename: Some(size(self.rename_size, "--rename-size")?),
            writers: self.writers.clone(),
            writer_size: size(self.writer_size, "--writer-size")?,
        };
        let all = shape.benches();
        let picked: Vec<Bench> = all
            .iter()
            .filter(|b| {
                self.only.is_empty() || self.only.iter().any(|t| b.name().contains(t.as_str()))
            })
            .cloned()
            .collect();
        if picked.is_empty() {
            let names: Vec<String> = all.iter().map(Bench::name).collect();
            bail!(
                "no benchmark name contains {:?}; the names are {}",
                self.only,
                names.join(", ")
            );
        }
        Ok(picked)
    }
}

/// Runs `regstore bench`; returns the exit code: 0, 1 when a benchmark
/// failed, 130 when interrupted.
///
/// # Errors
/// What stops it from starting: bad options, a backend that cannot be
/// built or reached, a non-empty prefix without `--allow-non-empty`, an
/// output file that cannot be written.
pub async fn bench(args: BenchArgs) -> anyhow::Result<i32> {
    let targets = args.targets()?;
    let benches = args.benches()?;
    let plan = Plan {
        iterations: args.iterations as usize,
        large_iterations: args.large_iterations as usize,
    };
    let prefix = format!("/{}", args.prefix.trim_matches('/'));
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let unique = format!("regstore-bench-{stamp}-{}", std::process::id());
    let root = if prefix == "/" {
        format!("/{unique}")
    } else {
        format!("{prefix}/{unique}")
    };

    // Build and check every backend before measuring any.
    let mut ready = Vec::new();
    for target in targets {
        let driver = build(&target, args.latency.as_deref()).await?;
        check_prefix(&target.label, &driver, &prefix, args.allow_non_empty).await?;
        ready.push((target, driver));
    }
    for path in [&args.json, &args.plot].into_iter().flatten() {
        // Fail now rather than after an hour of benchmarks.
        std::fs::write(path, b"").with_context(|| format!("cannot write {}", path.display()))?;
    }

    let total: usize = ready.len() * benches.iter().map(|b| plan.calls(b)).sum::<usize>();
    let mut bar = Bar::new(total);
    let mut report = Report {
        machine: Machine::detect(),
        plan,
        latency: args.latency.clone(),
        started_unix: stamp,
        interrupted: false,
        backends: Vec::new(),
    };
    let signal = regstore_server::serve::shutdown_signal();
    tokio::pin!(signal);
    for (target, driver) in &ready {
        let mut outcomes = Vec::new();
        let label = target.label.as_str();
        let run =
            regstore_benches::set::run(driver, &root, &benches, plan, &mut outcomes, |step| {
                bar.step(label, step)
            });
        let interrupted = tokio::select! {
            () = run => false,
            () = &mut signal => true,
        };
        if interrupted {
            bar.println(&format!(
                "bench: interrupted; deleting {root} on {label} (Ctrl-C again to leave it)"
            ));
        }
        let cleaned = tokio::select! {
            r = remove(driver, &root) => Some(r),
            () = regstore_server::serve::shutdown_signal(), if interrupted => None,
        };
        match cleaned {
            Some(Ok(())) => {}
            Some(Err(e)) => bar.println(&format!("bench: could not delete {root} on {label}: {e}")),
            None => bar.println(&format!("bench: left {root} on {label}")),
        }
        report.backends.push(BackendRun {
            label: label.to_owned(),
            driver: target.spec.driver.clone(),
            middleware: middleware_names(&target.spec, args.latency.is_some()),
            outcomes,
        });
        if interrupted {
            report.interrupted = true;
            break;
        }
    }

    bar.finish();
    print!("{}", report.markdown());
    std::io::stdout().flush()?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let failed = report
        .backends
        .iter()
        .flat_map(|b| &b.outcomes)
        .filter(|o| matches!(o, Outcome::Failed { .. }))
        .count();
    if failed > 0 {
        eprintln!("bench: {failed} benchmark(s) failed; their rows say why");
    }
    Ok(if report.interrupted {
        130
    } else if failed > 0 {
        1
    } else {
        0
    })
}

/// Deletes `root` until it is gone. After an interrupted run, writes that
/// were in flight when their futures were dropped (a blocking file write
/// already running, a PUT the server already received) can land after the
/// first delete, so it checks and deletes again, a few times at most.
async fn remove(driver: &Driver, root: &str) -> regstore_core::Result<()> {
    let mut pause = std::time::Duration::from_millis(100);
    let mut last = None;
    for _ in 0..5 {
        match driver.delete(root).await {
            // A file landing in a directory being removed: try again.
            Err(e) if !e.is_not_found() => last = Some(e),
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        match driver.list(root).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => last = Some(e),
            Ok(_) => {}
        }
    }
    Err(last.unwrap_or_else(|| {
        regstore_core::Error::backend(format!("{root} keeps reappearing after deletes"))
    }))
}

/// Builds `target`'s driver, with the latency middleware outermost when
/// `latency` is given.
async fn build(target: &Target, latency: Option<&str>) -> anyhow::Result<Driver> {
    let label = &target.label;
    let mut driver = target
        .spec
        .build()
        .await
        .with_context(|| format!("cannot build the {label} backend"))?;
    if let Some(delay) = latency {
        let mut raw = RawParams::new();
        raw.insert("delay".into(), delay.into());
        driver = regstore_core::wrap(driver, "latency", &raw)
            .await
            .context("--latency")?;
    }
    Ok(driver)
}

/// Refuses a prefix that holds something, unless allowed: a benchmark is
/// meant for a scratch bucket or directory, not a registry in use.
async fn check_prefix(
    label: &str,
    driver: &Driver,
    prefix: &str,
    allow: bool,
) -> anyhow::Result<()> {
    match driver.list(prefix).await {
        Ok(entries) if entries.is_empty() || allow => Ok(()),
        Ok(entries) => bail!(
            "{prefix} on the {label} backend is not empty (it holds {}{}): point the benchmark at an empty bucket, container or directory, or pass --allow-non-empty (the run only touches a new regstore-bench-* directory)",
            entries
                .iter()
                .take(3)
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if entries.len() > 3 { ", …" } else { "" }
        ),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot list {prefix} on the {label} backend")),
    }
}

fn middleware_names(spec: &StorageSpec, latency: bool) -> Vec<String> {
    let mut names: Vec<String> = spec.middleware.iter().map(|(n, _)| n.clone()).collect();
    if latency {
        names.push("latency".into());
    }
    names
}

/// The progress bar on stderr (indicatif: drawn only when stderr is a
/// terminal, redrawn in place at most a few times a second): how many
/// calls of the whole run are done, the time so far, and the backend and
/// benchmark at work.
struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    fn new(total: usize) -> Bar {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total.max(1) as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let style = indicatif::ProgressStyle::with_template(
            "[{bar:30}] {percent:>3}% {elapsed_precise} {msg}",
        )
        .map(|s| s.progress_chars("#-"))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Bar { bar }
    }

    fn step(&mut self, label: &str, step: Step<'_>) {
        match step {
            Step::Preparing(b) => self
                .bar
                .set_message(format!("{label} {}: preparing", b.name())),
            Step::Called { bench, done, of } => {
                self.bar
                    .set_message(format!("{label} {}: {done}/{of}", bench.name()));
                self.bar.inc(1);
            }
            Step::CleanupFailed { bench, error } => self.println(&format!(
                "bench: {label} {}: could not delete its data ({error}); trying again at the end",
                bench.name()
            )),
        }
    }

    /// A line on stderr above the bar.
    fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Draws the final state once more, then takes the bar off the screen.
    fn finish(&self) {
        self.bar.tick();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};

    fn args(line: &str) -> BenchArgs {
        let argv = std::iter::once("regstore").chain(line.split_whitespace());
        match Cli::try_parse_args(argv) {
            Ok(Cli {
                command: Command::Bench(b),
            }) => *b,
            Ok(other) => panic!("not bench: {other:?}"),
            Err(e) => panic!("{line}: {e}"),
        }
    }

    /// Label, driver and sorted parameters of a backend.
    type Summary = (String, String, Vec<(String, String)>);

    fn targets(line: &str) -> Result<Vec<Summary>, String> {
        let t = args(line).targets().map_err(|e| e.to_string())?;
        Ok(t.into_iter()
            .map(|t| {
                let mut params: Vec<(String, String)> = t
                    .spec
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                params.sort();
                (t.label, t.spec.driver, params)
            })
            .collect())
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn params_and_labels_belong_to_the_driver_before_them() {
        let t = targets(
            "bench --driver s3 --param bucket=a --param region=x --driver filesystem \
             --label disk --param rootdirectory=/tmp/r --driver s3 --param bucket=b --iterations 2",
        )
        .expect("targets");
        assert_eq!(
            t,
            [
                (
                    "s3".into(),
                    "s3".into(),
                    vec![p("bucket", "a"), p("region", "x")]
                ),
                (
                    "disk".into(),
                    "filesystem".into(),
                    vec![p("rootdirectory", "/tmp/r")]
                ),
                ("s3-2".into(), "s3".into(), vec![p("bucket", "b")]),
            ]
        );
    }

    #[test]
    fn misplaced_backend_options_are_refused_with_the_reason() {
        let err = |line: &str| targets(line).expect_err(line);
        assert!(
            err("bench --param a=b --driver s3").contains("--param a=b comes before any --driver")
        );
        assert!(err("bench --label x").contains("--label x comes before"));
        assert!(err("bench --iterations 2").contains("give --driver NAME or --config FILE"));
        assert!(
            err("bench --driver s3 --label x --driver gcs --label x")
                .contains("two backends are labelled \"x\"")
        );
        assert!(err("bench --driver s3 --label x --label y").contains("two labels"));
        let tmp = tempfile::tempdir().expect("temp dir");
        let cfg = tmp.path().join("c.yml");
        std::fs::write(&cfg, "version: 0.1\nstorage:\n  inmemory: {}\n").expect("write config");
        let line = format!("bench --config {} --param a=b", cfg.display());
        assert!(err(&line).contains("follows a --config"));
        let ok = targets(&format!(
            "bench --config {} --label mem --driver inmemory",
            cfg.display()
        ))
        .expect("config then driver");
        assert_eq!(ok.len(), 2);
        assert_eq!((ok[0].0.as_str(), ok[0].1.as_str()), ("mem", "inmemory"));
        assert_eq!(
            ok[1].0, "inmemory",
            "the label mem is taken by the config, not numbered"
        );
    }

    #[test]
    fn shape_options_and_only_pick_the_benchmarks() {
        let names = |line: &str| -> Result<Vec<String>, String> {
            args(line)
                .benches()
                .map(|b| b.iter().map(Bench::name).collect())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            names("bench --driver inmemory --sizes 1KiB,2MiB --list 7 --walk 300 --writers 3 --writer-size 1KiB --rename-size 5MiB")
                .expect("benches"),
            [
                "stat",
                "put_get/1KiB",
                "put_get/2MiB",
                "stream/1KiB",
                "stream/2MiB",
                "list/7",
                "delete/7",
                "walk/300",
                "rename/5MiB",
                "concurrent_write/3x1KiB"
            ]
        );
        assert_eq!(
            names("bench --driver inmemory --only walk --only list/5").expect("benches"),
            ["list/5", "list/50", "walk/1000", "walk/10000"]
        );
        let e = names("bench --driver inmemory --only nothing").expect_err("no match");
        assert!(
            e.contains("no benchmark name contains") && e.contains("put_get/1GiB"),
            "{e}"
        );
    }
}
