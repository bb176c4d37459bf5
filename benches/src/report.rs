//! What `regstore bench` writes: a Markdown table, a JSON document with
//! every sample, and an SVG chart with the backends side by side per
//! benchmark. All three are made from one [`Report`].

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::set::{Figure, Outcome, Plan};

/// The machine a run was made on, as far as the OS tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// CPU model (`model name` of /proc/cpuinfo), if known.
    pub cpu: Option<String>,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Total memory in bytes, if known.
    pub memory: Option<u64>,
    /// Operating system (`PRETTY_NAME` of /etc/os-release), if known.
    pub os: Option<String>,
    /// Kernel release, if known.
    pub kernel: Option<String>,
}

impl Machine {
    /// Reads what /proc and /etc/os-release say; what cannot be read is
    /// left out.
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let field = |text: &str, key: &str, sep: char| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(sep)?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        Machine {
            cpu: read("/proc/cpuinfo").and_then(|t| field(&t, "model name", ':')),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: read("/proc/meminfo")
                .and_then(|t| field(&t, "MemTotal", ':'))
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024),
            os: read("/etc/os-release").and_then(|t| field(&t, "PRETTY_NAME", '=')),
            kernel: read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned()),
        }
    }

    /// One line: `2 cores (Intel Xeon …), 24 GiB, Debian GNU/Linux 13, Linux 6.12`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match &self.cpu {
            Some(cpu) => format!("{} cores ({cpu})", self.cores),
            None => format!("{} cores", self.cores),
        }];
        if let Some(m) = self.memory {
            parts.push(format!("{:.0} GiB", m as f64 / f64::from(1 << 30)));
        }
        parts.extend(self.os.clone());
        parts.extend(self.kernel.as_ref().map(|k| format!("Linux {k}")));
        parts.join(", ")
    }
}

/// One backend's results.
#[derive(Clone, Debug)]
pub struct BackendRun {
    /// The name it is shown under (unique within a report).
    pub label: String,
    /// The driver's registered name.
    pub driver: String,
    /// Storage middleware around it, innermost first.
    pub middleware: Vec<String>,
    /// One outcome per benchmark, in the order they ran.
    pub outcomes: Vec<Outcome>,
}

/// A whole run: every backend, and what it ran on.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Calls per benchmark.
    pub plan: Plan,
    /// The `--latency` delay added to every backend request, as given.
    pub latency: Option<String>,
    /// When it started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Whether it was interrupted (the backends hold what finished).
    pub interrupted: bool,
    /// The backends, in the order they ran.
    pub backends: Vec<BackendRun>,
}

impl Report {
    /// Benchmark names in the order they first appear, each with the
    /// backends' outcomes for it (a backend that did not get to it is
    /// left out).
    fn by_benchmark(&self) -> Vec<(String, Vec<(usize, &Outcome)>)> {
        let mut out: Vec<(String, Vec<(usize, &Outcome)>)> = Vec::new();
        for (b, run) in self.backends.iter().enumerate() {
            for o in &run.outcomes {
                let name = o.bench().name();
                match out.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.push((b, o)),
                    None => out.push((name, vec![(b, o)])),
                }
            }
        }
        out
    }

    /// The Markdown table: one row per benchmark and backend, grouped by
    /// benchmark so backends compare line by line. Columns: calls,
    /// throughput (MiB/s for benchmarks that move bytes, else ops/s), p50
    /// and p99 call time, backend requests per call (`-` when the driver
    /// does not count them). A failed benchmark's row says why.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| benchmark | backend | calls | throughput | p50 | p99 | requests/op |\n\
             |---|---|---:|---:|---:|---:|---:|\n",
        );
        for (name, outcomes) in self.by_benchmark() {
            for (b, o) in outcomes {
                let label = self.backends[b].label.replace('|', "\\|");
                let _ = match o {
                    Outcome::Done(f) => writeln!(
                        s,
                        "| {name} | {label} | {} | {} | {} | {} | {} |",
                        f.samples.len(),
                        throughput(f),
                        duration(f.quantile(0.5)),
                        duration(f.quantile(0.99)),
                        f.requests_per_op()
                            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
                    ),
                    Outcome::Failed { error, .. } => writeln!(
                        s,
                        "| {name} | {label} | 0 | failed: {} | - | - | - |",
                        error.replace('|', "\\|").replace('\n', " ")
                    ),
                };
            }
        }
        s
    }

    /// The JSON document: machine, plan, latency, and per backend every
    /// benchmark with every call's time (`samples_ns`) and request count
    /// (`requests`, `null` when not counted) plus the summary figures.
    pub fn json(&self) -> Value {
        let backends: Vec<Value> = self
            .backends
            .iter()
            .map(|run| {
                let results: Vec<Value> = run.outcomes.iter().map(outcome_json).collect();
                json!({
                    "label": run.label,
                    "driver": run.driver,
                    "middleware": run.middleware,
                    "results": results,
                })
            })
            .collect();
        json!({
            "regstore": env!("CARGO_PKG_VERSION"),
            "started_unix": self.started_unix,
            "interrupted": self.interrupted,
            "machine": {
                "description": self.machine.describe(),
                "cpu": self.machine.cpu,
                "cores": self.machine.cores,
                "memory_bytes": self.machine.memory,
                "os": self.machine.os,
                "kernel": self.machine.kernel,
            },
            "plan": {
                "iterations": self.plan.iterations,
                "large_iterations": self.plan.large_iterations,
            },
            "latency": self.latency,
            "backends": backends,
        })
    }

    /// The SVG chart: one panel per benchmark, one bar per backend (the
    /// same colour in every panel) whose length is the throughput on a log
    /// scale, labelled with throughput, p50 and requests per call.
    pub fn svg(&self) -> String {
        Chart::new(self).render()
    }
}

fn outcome_json(o: &Outcome) -> Value {
    let bench = o.bench();
    let mut v = json!({
        "benchmark": bench.name(),
        "group": bench.group(),
        "parameter": bench.parameter(),
        "bytes_per_call": bench.bytes_per_call(),
    });
    match o {
        Outcome::Done(f) => {
            let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            v["samples_ns"] = f.samples.iter().map(|s| ns(s.time)).collect();
            v["requests"] = f.samples.iter().map(|s| s.requests).collect();
            v["calls"] = f.samples.len().into();
            v["p50_ns"] = ns(f.quantile(0.5)).into();
            v["p99_ns"] = ns(f.quantile(0.99)).into();
            v["ops_per_sec"] = f.ops_per_sec().into();
            v["mib_per_sec"] = f.mib_per_sec().into();
            v["requests_per_op"] = f.requests_per_op().into();
        }
        Outcome::Failed { error, .. } => v["error"] = error.as_str().into(),
    }
    v
}

/// `123 MiB/s` or `4.56k ops/s`.
fn throughput(f: &Figure) -> String {
    match f.mib_per_sec() {
        Some(m) => format!("{} MiB/s", number(m)),
        None => format!("{} ops/s", number(f.ops_per_sec())),
    }
}

/// Three significant digits, with `k`/`M` from 10,000 up.
fn number(v: f64) -> String {
    let (v, suffix) = if v >= 1e7 {
        (v / 1e6, "M")
    } else if v >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

/// Requests per call: whole numbers as such (`2`), else [`number`].
fn requests(r: f64) -> String {
    if (r - r.round()).abs() < 0.005 {
        format!("{r:.0}")
    } else {
        number(r)
    }
}

/// `10^exp` as an axis label: `0.01`, `1`, `100`, `10k`, `1M`, `10G`.
fn power_of_ten(exp: i32) -> String {
    match exp {
        ..0 => format!("{:.*}", exp.unsigned_abs() as usize, 10f64.powi(exp)),
        0..3 => 10u64.pow(exp.unsigned_abs()).to_string(),
        3..6 => format!("{}k", 10u64.pow(exp.unsigned_abs() - 3)),
        6..9 => format!("{}M", 10u64.pow(exp.unsigned_abs() - 6)),
        _ => format!("{}G", 10f64.powi(exp - 9)),
    }
}

/// A duration in µs, ms or s, three significant digits.
fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{} s", number(s))
    } else if s >= 1e-3 {
        format!("{} ms", number(s * 1e3))
    } else {
        format!("{} µs", number(s * 1e6))
    }
}

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Okabe–Ito colours (readable with colour-blindness), one per backend.
const COLOURS: &[&str] = &[
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#999999", "#000000",
];

const MARGIN: f64 = 20.0;
const GAP: f64 = 24.0;
const COLUMNS: usize = 2;
const PANEL_W: f64 = 520.0;
const LABEL_W: f64 = 100.0;
const BAR_W: f64 = 210.0;
const ROW_H: f64 = 20.0;
const TITLE_H: f64 = 24.0;
const AXIS_H: f64 = 18.0;

struct Chart<'a> {
    report: &'a Report,
    panels: Vec<(String, Vec<(usize, &'a Outcome)>)>,
}

impl<'a> Chart<'a> {
    fn new(report: &'a Report) -> Self {
        Chart {
            report,
            panels: report.by_benchmark(),
        }
    }

    fn panel_h(&self) -> f64 {
        TITLE_H + self.report.backends.len() as f64 * ROW_H + AXIS_H
    }

    fn render(&self) -> String {
        let rows = self.panels.len().div_ceil(COLUMNS).max(1);
        let head = 96.0;
        let width = 2.0 * MARGIN + COLUMNS as f64 * PANEL_W + (COLUMNS - 1) as f64 * GAP;
        let height = head + rows as f64 * (self.panel_h() + GAP) + MARGIN;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n\
             <title>regstore bench</title>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        self.header(&mut s);
        for (i, (name, outcomes)) in self.panels.iter().enumerate() {
            let x = MARGIN + (i % COLUMNS) as f64 * (PANEL_W + GAP);
            let y = head + (i / COLUMNS) as f64 * (self.panel_h() + GAP);
            self.panel(&mut s, x, y, name, outcomes);
        }
        s.push_str("</svg>\n");
        s
    }

    fn header(&self, s: &mut String) {
        let r = self.report;
        let labels: Vec<&str> = r.backends.iter().map(|b| b.label.as_str()).collect();
        // The legend names the driver and middleware behind each label.
        let legend: Vec<String> = r
            .backends
            .iter()
            .map(|b| {
                let mut inner = Vec::new();
                if b.driver != b.label {
                    inner.push(b.driver.clone());
                }
                inner.extend(b.middleware.iter().map(|m| format!("+{m}")));
                if inner.is_empty() {
                    b.label.clone()
                } else {
                    format!("{} ({})", b.label, inner.join(" "))
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "<text x=\"{MARGIN}\" y=\"28\" font-size=\"18\" font-weight=\"bold\">regstore bench: {}</text>",
            esc(&labels.join(" vs "))
        );
        let mut sub = r.machine.describe();
        if let Some(l) = &r.latency {
            let _ = write!(sub, "; +{l} per backend request");
        }
        if r.interrupted {
            sub.push_str("; interrupted");
        }
        let _ = writeln!(
            s,
            "<text x=\"{MARGIN}\" y=\"48\" fill=\"#444\">{}</text>",
            esc(&sub)
        );
        let _ = writeln!(
            s,
            "<text x=\"{MARGIN}\" y=\"64\" fill=\"#444\">Bars: throughput, log scale, longer is better. \
             Text: throughput · p50 call time · backend requests per call. {} calls per benchmark ({} at 1 GiB or more).</text>",
            r.plan.iterations, r.plan.large_iterations
        );
        let mut x = MARGIN;
        for (i, label) in legend.iter().enumerate() {
            let _ = writeln!(
                s,
                "<rect x=\"{x}\" y=\"74\" width=\"12\" height=\"12\" fill=\"{}\"/>\
                 <text x=\"{:.0}\" y=\"84\">{}</text>",
                COLOURS[i % COLOURS.len()],
                x + 16.0,
                esc(label)
            );
            x += 28.0 + 7.0 * label.chars().count() as f64;
        }
    }

    fn panel(&self, s: &mut String, x: f64, y: f64, name: &str, outcomes: &[(usize, &Outcome)]) {
        let values: Vec<f64> = outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Done(f) => Some(f.mib_per_sec().unwrap_or_else(|| f.ops_per_sec())),
                Outcome::Failed { .. } => None,
            })
            .filter(|v| *v > 0.0)
            .collect();
        let moves_bytes = outcomes
            .first()
            .is_some_and(|(_, o)| o.bench().bytes_per_call() > 0);
        let unit = if moves_bytes { "MiB/s" } else { "ops/s" };
        let lo = values
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .log10()
            .floor();
        let hi = values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .log10()
            .ceil();
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            (lo, if hi > lo { hi } else { lo + 1.0 })
        } else {
            (0.0, 1.0)
        };
        let bar_x = x + LABEL_W;
        let scale = |v: f64| bar_x + BAR_W * ((v.log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
        let _ = writeln!(
            s,
            "<g><rect x=\"{x}\" y=\"{y}\" width=\"{PANEL_W}\" height=\"{:.0}\" fill=\"#fafafa\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"13\" font-weight=\"bold\">{}</text>\n\
             <text x=\"{:.0}\" y=\"{:.0}\" fill=\"#666\" text-anchor=\"end\">{unit}</text>",
            self.panel_h(),
            x + 8.0,
            y + 17.0,
            esc(name),
            x + PANEL_W - 8.0,
            y + 17.0,
        );
        let rows_top = y + TITLE_H;
        let rows_bottom = rows_top + self.report.backends.len() as f64 * ROW_H;
        for decade in (lo as i32)..=(hi as i32) {
            let gx = scale(10f64.powi(decade));
            let _ = writeln!(
                s,
                "<line x1=\"{gx:.1}\" y1=\"{rows_top:.0}\" x2=\"{gx:.1}\" y2=\"{rows_bottom:.0}\" stroke=\"#ddd\"/>\
                 <text x=\"{gx:.1}\" y=\"{:.0}\" fill=\"#666\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                rows_bottom + 12.0,
                power_of_ten(decade)
            );
        }
        for &(b, o) in outcomes {
            let ry = rows_top + b as f64 * ROW_H;
            let _ = writeln!(
                s,
                "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
                bar_x - 6.0,
                ry + 14.0,
                esc(&self.report.backends[b].label)
            );
            match o {
                Outcome::Done(f) => {
                    let v = f.mib_per_sec().unwrap_or_else(|| f.ops_per_sec());
                    let end = if v > 0.0 { scale(v) } else { bar_x };
                    let mut text = format!("{} · p50 {}", throughput(f), duration(f.quantile(0.5)));
                    if let Some(r) = f.requests_per_op() {
                        let _ = write!(text, " · {} req", requests(r));
                    }
                    let _ = writeln!(
                        s,
                        "<rect x=\"{bar_x:.0}\" y=\"{:.0}\" width=\"{:.1}\" height=\"{:.0}\" fill=\"{}\"/>\
                         <text x=\"{:.1}\" y=\"{:.0}\">{}</text>",
                        ry + 3.0,
                        (end - bar_x).max(1.0),
                        ROW_H - 6.0,
                        COLOURS[b % COLOURS.len()],
                        bar_x + BAR_W + 6.0,
                        ry + 14.0,
                        esc(&text)
                    );
                }
                Outcome::Failed { error, .. } => {
                    let short: String = error.chars().take(60).collect();
                    let _ = writeln!(
                        s,
                        "<text x=\"{bar_x:.0}\" y=\"{:.0}\" fill=\"#c00\">failed: {}</text>",
                        ry + 14.0,
                        esc(&short)
                    );
                }
            }
        }
        s.push_str("</g>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::{Bench, Sample};

    fn figure(bench: Bench, ms: u64, requests: Option<u64>) -> Outcome {
        Outcome::Done(Figure {
            bench,
            samples: vec![
                Sample {
                    time: Duration::from_millis(ms),
                    requests
                };
                2
            ],
        })
    }

    fn report() -> Report {
        Report {
            machine: Machine {
                cpu: Some("Test <CPU> & co".into()),
                cores: 2,
                memory: Some(24 << 30),
                os: None,
                kernel: None,
            },
            plan: Plan::default(),
            latency: Some("20ms".into()),
            started_unix: 1,
            interrupted: false,
            backends: vec![
                BackendRun {
                    label: "fast".into(),
                    driver: "inmemory".into(),
                    middleware: vec![],
                    outcomes: vec![
                        figure(Bench::Stat, 1, None),
                        figure(Bench::PutGet(1 << 20), 10, None),
                    ],
                },
                BackendRun {
                    label: "s3 | moto".into(),
                    driver: "s3".into(),
                    middleware: vec!["latency".into()],
                    outcomes: vec![
                        figure(Bench::Stat, 4, Some(1)),
                        Outcome::Failed {
                            bench: Bench::PutGet(1 << 20),
                            error: "timed out <after 1s>".into(),
                        },
                    ],
                },
            ],
        }
    }

    #[test]
    fn markdown_groups_rows_by_benchmark() {
        let md = report().markdown();
        let rows: Vec<&str> = md.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| stat | fast | 2 | 1000 ops/s | 1.00 ms | 1.00 ms | - |",
                "| stat | s3 \\| moto | 2 | 250 ops/s | 4.00 ms | 4.00 ms | 1.0 |",
                "| put_get/1MiB | fast | 2 | 100 MiB/s | 10.0 ms | 10.0 ms | - |",
                "| put_get/1MiB | s3 \\| moto | 0 | failed: timed out <after 1s> | - | - | - |",
            ]
        );
    }

    #[test]
    fn json_has_every_sample() {
        let v = report().json();
        let stat = &v["backends"][1]["results"][0];
        assert_eq!(stat["benchmark"], "stat");
        assert_eq!(stat["samples_ns"], json!([4_000_000, 4_000_000]));
        assert_eq!(stat["requests"], json!([1, 1]));
        assert_eq!(stat["requests_per_op"], 1.0);
        assert_eq!(v["backends"][0]["results"][1]["mib_per_sec"], 100.0);
        assert_eq!(
            v["backends"][1]["results"][1]["error"],
            "timed out <after 1s>"
        );
        assert_eq!(v["latency"], "20ms");
        assert_eq!(v["machine"]["cores"], 2);
    }

    #[test]
    fn svg_escapes_text_and_draws_a_bar_per_result() {
        let svg = report().svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("Test &lt;CPU&gt; &amp; co"), "{svg}");
        assert!(svg.contains("failed: timed out &lt;after 1s&gt;"));
        assert!(!svg.contains("<after"), "raw text escaped");
        assert!(
            svg.contains(">fast (inmemory)</text>"),
            "legend names the driver"
        );
        assert!(
            svg.contains(">s3 | moto (s3 +latency)</text>"),
            "and the middleware"
        );
        // Two panels; three finished results → three bars (plus the
        // background, two legend squares and two panel frames).
        assert_eq!(svg.matches("<rect ").count(), 1 + 2 + 2 + 3);
        assert_eq!(svg.matches("<g>").count(), 2);
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(number(152_034.0), "152k");
        assert_eq!(number(12_345_678.0), "12.3M");
        assert_eq!(number(4.56789), "4.57");
        assert_eq!(duration(Duration::from_micros(12)), "12.0 µs");
        assert_eq!(duration(Duration::from_millis(1500)), "1.50 s");
        assert_eq!(requests(2.0), "2");
        assert_eq!(requests(57.33), "57.3");
        let ticks: Vec<String> = (-2..=10).map(power_of_ten).collect();
        assert_eq!(
            ticks,
            [
                "0.01", "0.1", "1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M", "1G",
                "10G"
            ]
        );
        let m = Machine {
            cpu: None,
            cores: 2,
            memory: Some(24 << 30),
            os: Some("Debian".into()),
            kernel: Some("6.1".into()),
        };
        assert_eq!(m.describe(), "2 cores, 24 GiB, Debian, Linux 6.1");
    }
}
