//! `regstore bench` end to end: the smoke run comparing inmemory,
//! filesystem and every emulator-backed driver with tiny sizes (table,
//! JSON and SVG checked), the refusal of a non-empty prefix, cleanup after
//! Ctrl-C, and the progress bar on a terminal only.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{regstore, text};
use regstore_core::{Driver, RawParams};
use regstore_testenv::backend::{EMULATED, emulator_params_or_skip, skip_unless_required};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Tiny sizes, so a run over six backends takes seconds.
const TINY: &[&str] = &[
    "--iterations",
    "2",
    "--large-iterations",
    "1",
    "--sizes",
    "0B,1KiB",
    "--list",
    "3",
    "--walk",
    "150",
    "--rename-size",
    "1KiB",
    "--writers",
    "1,2",
    "--writer-size",
    "1KiB",
];

/// The benchmarks [`TINY`] selects, in order.
const TINY_NAMES: &[&str] = &[
    "stat",
    "put_get/0B",
    "put_get/1KiB",
    "stream/0B",
    "stream/1KiB",
    "list/3",
    "delete/3",
    "walk/150",
    "rename/1KiB",
    "concurrent_write/1x1KiB",
    "concurrent_write/2x1KiB",
];

/// The table's rows (header and separator left out), split into cells.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("| benchmark | backend | calls | throughput | p50 | p99 | requests/op |"),
        "{stdout}"
    );
    assert_eq!(lines.next(), Some("|---|---|---:|---:|---:|---:|---:|"));
    lines
        .map(|l| {
            assert!(l.starts_with("| ") && l.ends_with(" |"), "not a row: {l:?}");
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// Checks `xml` is well-formed (every element closed, in order, one root)
/// and returns the names of its elements in document order.
fn xml_elements(xml: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut open: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = text(e.name().as_ref());
                roots += usize::from(open.is_empty());
                open.push(name.clone());
                seen.push(name);
            }
            Ok(Event::End(e)) => {
                let name = text(e.name().as_ref());
                assert_eq!(open.pop().as_deref(), Some(name.as_str()), "closing tag");
            }
            Ok(Event::Empty(e)) => {
                roots += usize::from(open.is_empty());
                seen.push(text(e.name().as_ref()));
            }
            Ok(Event::Text(t)) => {
                if let Err(e) = t.decode() {
                    panic!("text at {}: {e}", reader.buffer_position());
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed at {}: {e}", reader.buffer_position()),
        }
    }
    assert!(open.is_empty(), "unclosed elements {open:?}");
    assert_eq!(roots, 1, "one root element");
    seen
}

/// `--param name=value` for each of `params`.
fn param_args(params: &RawParams) -> Vec<String> {
    params
        .iter()
        .flat_map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            ["--param".to_owned(), format!("{k}={v}")]
        })
        .collect()
}

async fn driver(name: &str, params: &RawParams) -> Driver {
    regstore_builtin::register_all();
    match regstore_core::create(name, params).await {
        Ok(d) => d,
        Err(e) => panic!("cannot build {name}: {e}"),
    }
}

/// What the root of `d` holds (nothing when it does not exist).
async fn root_entries(d: &Driver) -> Vec<String> {
    match d.list("/").await {
        Ok(v) => v.iter().map(|p| p.as_str().to_owned()).collect(),
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => panic!("cannot list the root of {}: {e}", d.name()),
    }
}

fn filesystem_params(root: &Path) -> RawParams {
    let mut p = RawParams::new();
    p.insert("rootdirectory".into(), root.display().to_string().into());
    p
}

/// The CI smoke run: inmemory, filesystem and every emulator-backed driver
/// in one `regstore bench`, with tiny sizes. The table has a row per
/// benchmark and backend (grouped by benchmark), the JSON every sample,
/// the SVG a panel per benchmark; request counts are what the APIs need
/// where that is one or two requests; every backend is empty afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_compares_every_backend_with_table_json_and_plot() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let fs_root = tmp.path().join("fs");
    let mut args = strings(&["bench", "--driver", "inmemory", "--driver", "filesystem"]);
    args.extend(param_args(&filesystem_params(&fs_root)));
    let mut clouds = Vec::new();
    for name in EMULATED {
        let Some(params) = emulator_params_or_skip(name).await else {
            continue;
        };
        args.extend(strings(&["--driver", name]));
        args.extend(param_args(&params));
        clouds.push((name, params));
    }
    args.extend(strings(TINY));
    let json_path = tmp.path().join("out.json");
    let svg_path = tmp.path().join("out.svg");
    args.extend([
        "--json".to_owned(),
        json_path.display().to_string(),
        "--plot".to_owned(),
        svg_path.display().to_string(),
    ]);
    let out = tokio::task::spawn_blocking(move || regstore(&args))
        .await
        .expect("join");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("[#"),
        "no progress bar when stderr is not a terminal: {stderr:?}"
    );

    let mut labels = vec!["inmemory", "filesystem"];
    labels.extend(clouds.iter().map(|(n, _)| *n));
    let rows = rows(&stdout);
    let expected: Vec<(String, String)> = TINY_NAMES
        .iter()
        .flat_map(|b| {
            labels
                .iter()
                .map(move |l| ((*b).to_owned(), (*l).to_owned()))
        })
        .collect();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(got, expected, "a row per benchmark and backend:\n{stdout}");
    let requests = |bench: &str, label: &str| -> String {
        rows.iter()
            .find(|r| r[0] == bench && r[1] == label)
            .map(|r| r[6].clone())
            .unwrap_or_default()
    };
    for r in &rows {
        assert_eq!(r.len(), 7, "{r:?}");
        assert_eq!(r[2], "2", "calls: {r:?}");
        let unit = if r[0].starts_with("stat")
            || r[0].starts_with("list")
            || r[0].starts_with("delete")
            || r[0].starts_with("walk")
            || r[0].ends_with("/0B")
        {
            " ops/s"
        } else {
            " MiB/s"
        };
        assert!(r[3].ends_with(unit), "throughput unit {unit}: {r:?}");
        for time in &r[4..6] {
            assert!(
                [" µs", " ms", " s"].iter().any(|u| time.ends_with(u)),
                "{r:?}"
            );
        }
        if r[1] == "inmemory" || r[1] == "filesystem" {
            assert_eq!(r[6], "-", "no requests counted: {r:?}");
        } else {
            let n: f64 = r[6]
                .parse()
                .unwrap_or_else(|e| panic!("requests {r:?}: {e}"));
            assert!(n >= 1.0, "every cloud operation sends a request: {r:?}");
        }
    }
    for (name, _) in &clouds {
        assert_eq!(requests("stat", name), "1.0", "{name}: stat is one HEAD");
        assert_eq!(requests("list/3", name), "1.0", "{name}: one listing");
        assert_eq!(
            requests("walk/150", name),
            "1.0",
            "{name}: a walk is one flat listing"
        );
        assert_eq!(
            requests("put_get/1KiB", name),
            "2.0",
            "{name}: one PUT, one GET"
        );
        // Beyond the API's minimum: a new writer reads its state object
        // once (an unfinished writer at the path must be discarded).
        assert_eq!(
            requests("stream/1KiB", name),
            "3.0",
            "{name}: state, PUT, GET"
        );
        assert_eq!(
            requests("concurrent_write/2x1KiB", name),
            "4.0",
            "{name}: state and PUT each"
        );
        // A delete lists the folder, deletes in one batch (GCS: one request
        // per object, and one for the folder's own key) and lists the
        // folder's unfinished writers.
        let delete = if *name == "gcs" { "6.0" } else { "3.0" };
        assert_eq!(requests("delete/3", name), delete, "{name}: delete");
        // A copy and a delete; S3 first HEADs the source (CopyObject or a
        // multipart copy, by size), Swift the destination (a large object
        // replaced there leaves segments to delete).
        let rename = if ["s3", "swift"].contains(name) {
            "3.0"
        } else {
            "2.0"
        };
        assert_eq!(requests("rename/1KiB", name), rename, "{name}: rename");
    }

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("read json"))
            .expect("json parses");
    let backends = json["backends"].as_array().expect("backends");
    let json_labels: Vec<&str> = backends
        .iter()
        .map(|b| b["label"].as_str().expect("label"))
        .collect();
    assert_eq!(json_labels, labels);
    assert!(json["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    for b in backends {
        let results = b["results"].as_array().expect("results");
        let names: Vec<&str> = results
            .iter()
            .map(|r| r["benchmark"].as_str().expect("name"))
            .collect();
        assert_eq!(names, TINY_NAMES);
        let counted = b["driver"] != "inmemory" && b["driver"] != "filesystem";
        for r in results {
            let samples = r["samples_ns"].as_array().expect("samples");
            assert_eq!(samples.len(), 2, "{r}");
            assert!(
                samples.iter().all(|s| s.as_u64().is_some_and(|n| n > 0)),
                "{r}"
            );
            let requests = r["requests"].as_array().expect("requests");
            assert_eq!(requests.len(), 2);
            assert!(
                requests
                    .iter()
                    .all(|q| q.is_u64() == counted && q.is_null() != counted),
                "{r}"
            );
        }
        assert_eq!(results[2]["bytes_per_call"], 1024, "put_get/1KiB");
        assert_eq!(results[10]["bytes_per_call"], 2048, "2 writers of 1 KiB");
    }

    let svg = std::fs::read_to_string(&svg_path).expect("read svg");
    let elements = xml_elements(&svg);
    assert_eq!(elements.first().map(String::as_str), Some("svg"));
    assert_eq!(
        elements.iter().filter(|e| *e == "g").count(),
        TINY_NAMES.len(),
        "a panel per benchmark"
    );
    for name in TINY_NAMES {
        assert!(svg.contains(&format!(">{name}</text>")), "panel {name}");
    }
    for l in &labels {
        assert!(
            svg.contains(&format!(">{l}</text>")),
            "legend and rows name {l}"
        );
    }

    let fs = driver("filesystem", &filesystem_params(&fs_root)).await;
    assert_eq!(
        root_entries(&fs).await,
        Vec::<String>::new(),
        "filesystem left"
    );
    for (name, params) in &clouds {
        let d = driver(name, params).await;
        assert_eq!(root_entries(&d).await, Vec::<String>::new(), "{name} left");
    }
}

/// A prefix that holds something is refused (what it holds is named, and
/// nothing is touched) unless `--allow-non-empty`; an empty `--prefix`
/// below it is fine.
#[test]
fn bench_refuses_a_non_empty_prefix_unless_told() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let keep = tmp.path().join("keep");
    std::fs::create_dir_all(&keep).expect("mkdir");
    std::fs::write(keep.join("data"), b"precious").expect("write");
    let base = |extra: &[&str]| {
        let mut a = strings(&["bench", "--driver", "filesystem"]);
        a.extend(param_args(&filesystem_params(tmp.path())));
        a.extend(strings(&["--only", "stat", "--iterations", "1"]));
        a.extend(strings(extra));
        a
    };
    let bench_dirs = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("regstore-bench-"))
                    .collect()
            })
            .unwrap_or_default()
    };

    let out = regstore(&base(&[]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/ on the filesystem backend is not empty (it holds /keep)")
            && stderr.contains("--allow-non-empty"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing measured");

    let out = regstore(&base(&["--prefix", "/scratch"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("| stat | filesystem | 1 |"));
    assert_eq!(
        bench_dirs(&tmp.path().join("scratch")),
        Vec::<String>::new()
    );

    let out = regstore(&base(&["--allow-non-empty"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        bench_dirs(tmp.path()),
        Vec::<String>::new(),
        "its own directory deleted"
    );
    assert_eq!(std::fs::read(keep.join("data")).expect("kept"), b"precious");
}

/// Ctrl-C while a benchmark fills its directory: the run stops, deletes
/// its directory, prints the table of what finished and exits 130.
async fn interrupted_run_cleans_up(name: &str, params: RawParams) {
    let mut args = strings(&["bench", "--driver", name]);
    args.extend(param_args(&params));
    // Filling a 100,000-file tree takes far longer than the test waits.
    args.extend(strings(&[
        "--only",
        "walk",
        "--walk",
        "100000",
        "--iterations",
        "1",
    ]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_regstore"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn regstore bench");
    let d = driver(name, &params).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entries = root_entries(&d).await;
        if let Some(dir) = entries.first() {
            assert!(dir.starts_with("/regstore-bench-"), "{entries:?}");
            // Something is inside it, not just the directory.
            if d.walk_all(dir).await.is_ok_and(|v| v.len() > 20) {
                break;
            }
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("{name}: the bench never started filling its directory");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{name}: {stderr}");
    assert!(
        stderr.contains("interrupted; deleting /regstore-bench-"),
        "{stderr}"
    );
    assert_eq!(
        root_entries(&d).await,
        Vec::<String>::new(),
        "{name}: left behind"
    );
    assert!(
        text(&out.stdout).starts_with("| benchmark | backend |"),
        "the table of what finished (nothing): {}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_bench_interrupted_deletes_its_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    interrupted_run_cleans_up("filesystem", filesystem_params(tmp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bench_interrupted_deletes_its_directory() {
    let Some(params) = emulator_params_or_skip("s3").await else {
        return;
    };
    interrupted_run_cleans_up("s3", params).await;
}

/// `scripts/bench-emulators.sh`, which made the README's plot, runs
/// `regstore bench` on all six backends and passes its arguments on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_bench_script_covers_all_six_backends() {
    for name in EMULATED {
        if emulator_params_or_skip(name).await.is_none() {
            return;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench-emulators.sh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(script)
            .args(["--only", "stat", "--iterations", "2"])
            .env("REGSTORE", env!("CARGO_BIN_EXE_regstore"))
            .output()
    })
    .await
    .expect("join")
    .expect("run scripts/bench-emulators.sh");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let backends: Vec<String> = rows(&stdout).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(
        backends,
        ["inmemory", "filesystem", "s3", "azure", "gcs", "swift"],
        "{stdout}"
    );
}

/// On a terminal (a pseudo-terminal from `script`), stderr shows the bar:
/// percentage, backend and benchmark, redrawn in place.
#[test]
fn bench_draws_a_progress_bar_on_a_terminal() {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .map_err(|e| format!("util-linux script is needed for a pseudo-terminal: {e}"));
    if skip_unless_required("script", has_script).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut cmd = vec![quote(env!("CARGO_BIN_EXE_regstore"))];
    cmd.extend(
        ["bench", "--driver", "filesystem", "--param"]
            .iter()
            .map(|s| quote(s)),
    );
    cmd.push(quote(&format!("rootdirectory={}", tmp.path().display())));
    cmd.extend(
        ["--only", "list", "--iterations", "2"]
            .iter()
            .map(|s| quote(s)),
    );
    let out = Command::new("script")
        .args(["-qec", &cmd.join(" "), "/dev/null"])
        .output()
        .expect("run script");
    let all = text(&out.stdout);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("\r\x1b[2K["), "redrawn in place: {all:?}");
    assert!(all.contains("100% "), "{all:?}");
    assert!(all.contains("filesystem list/50: 2/2"), "{all:?}");
    assert!(
        all.contains("| list/50 | filesystem | 2 |"),
        "the table too: {all:?}"
    );
}
