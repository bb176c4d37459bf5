//! The `regstore` binary as a user types it.

mod common;

use common::{regstore, text};

#[test]
fn drivers_lists_every_driver_with_its_parameters() {
    let out = regstore(&["drivers"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\n  inmemory — "), "{stdout}");
    assert!(stdout.contains("\n  filesystem — "), "{stdout}");
    for (driver, param) in [
        ("s3", "regionendpoint"),
        ("azure", "accountname"),
        ("gcs", "keyfile"),
        ("swift", "applicationcredentialid"),
    ] {
        let section = stdout
            .split(&format!("\n  {driver} — "))
            .nth(1)
            .unwrap_or_else(|| panic!("{driver} is not listed: {stdout}"));
        let first = section.split("\n\n").next().unwrap_or_default();
        assert!(first.contains(param), "{driver} lists {param}: {first}");
    }
    let filesystem = stdout.split("\n  filesystem — ").nth(1).unwrap_or_default();
    let line = filesystem
        .lines()
        .find(|l| l.trim_start().starts_with("rootdirectory"))
        .unwrap_or_default();
    assert!(
        line.contains("string") && line.contains("default /var/lib/registry"),
        "{line}"
    );
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("maxthreads"))
        .unwrap_or_default();
    assert!(
        line.contains("integer") && line.contains("default 100"),
        "{line}"
    );
    // The middlewares, with their options.
    let middleware = stdout
        .split("Storage middleware")
        .nth(1)
        .unwrap_or_default();
    for (name, option) in [
        ("redirect", "baseurl"),
        ("rewrite", "trimpathprefix"),
        ("latency", "delay"),
        ("faults", "probability"),
        ("cloudfront", "keypairid"),
    ] {
        let section = middleware
            .split(&format!("\n  {name} — "))
            .nth(1)
            .unwrap_or_else(|| panic!("{name} is not listed: {middleware}"));
        let first = section.split("\n\n").next().unwrap_or_default();
        assert!(first.contains(option), "{name} lists {option}: {first}");
    }
}

fn one_line_error(args: &[&str]) -> String {
    let out = regstore(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} must fail with exit code 2"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn unknown_driver_lists_the_known_ones() {
    let err = one_line_error(&["conformance", "--driver", "filesystm"]);
    assert!(
        err.contains(r#"unknown storage driver "filesystm""#),
        "{err}"
    );
    assert!(err.contains(r#"did you mean "filesystem"?"#), "{err}");
    assert!(
        err.contains("known: azure, filesystem, gcs, inmemory, s3"),
        "{err}"
    );
}

#[test]
fn unknown_parameter_suggests_the_nearest() {
    let err = one_line_error(&[
        "conformance",
        "--driver",
        "filesystem",
        "--param",
        "rootdir=/tmp/x",
    ]);
    assert!(
        err.contains(r#"filesystem: unknown parameter "rootdir" (did you mean "rootdirectory"?)"#),
        "{err}"
    );
}

#[test]
fn invalid_value_says_what_was_expected() {
    let err = one_line_error(&[
        "conformance",
        "--driver",
        "filesystem",
        "--param",
        "maxthreads=lots",
    ]);
    assert!(
        err.contains(r#"parameter "maxthreads": expected a whole number, got "lots""#),
        "{err}"
    );
}

#[test]
fn conformance_against_filesystem_prints_a_table_and_a_count() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let root = dir.path().join("store");
    let param = format!("rootdirectory={}", root.display());
    let out = regstore(&[
        "conformance",
        "--driver",
        "filesystem",
        "--param",
        &param,
        "--short",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("| delete_only_deletes_subpaths"),
        "{stdout}"
    );
    assert!(stdout.contains("| walk_full_order"), "{stdout}");
    let last = stdout.trim_end().lines().last().unwrap_or_default();
    let total = regstore_testsuite::all_cases().count();
    // Skipped: redirect_url (the filesystem driver does not claim it) and
    // the request-count cases (it counts no backend requests); it does
    // claim create_if_absent, and exclusive_writers on a local filesystem.
    use regstore_testsuite::Need;
    let skipped = regstore_testsuite::all_cases()
        .filter(|c| {
            !matches!(
                c.needs,
                Need::Nothing | Need::CreateIfAbsent | Need::ExclusiveWriters
            )
        })
        .count();
    assert_eq!(skipped, 4);
    assert_eq!(
        last,
        format!("{} passed, 0 failed, {skipped} skipped", total - skipped)
    );
}

#[test]
fn conformance_refuses_a_store_that_is_not_empty() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    if let Err(e) = std::fs::write(dir.path().join("precious"), b"keep me") {
        panic!("write: {e}");
    }
    let param = format!("rootdirectory={}", dir.path().display());
    let err = one_line_error(&["conformance", "--driver", "filesystem", "--param", &param]);
    assert!(err.contains("is not empty"), "{err}");
    assert!(dir.path().join("precious").exists());
}

#[test]
fn conformance_reads_a_distribution_config() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let config = dir.path().join("config.yml");
    let yaml = "version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: true\n";
    if let Err(e) = std::fs::write(&config, yaml) {
        panic!("write: {e}");
    }
    let config = config.display().to_string();
    let out = regstore(&[
        "conformance",
        "--config",
        &config,
        "--case",
        "walk_",
        "--case",
        "list",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.starts_with("conformance of inmemory"), "{stdout}");
    let selected: Vec<_> = regstore_testsuite::all_cases()
        .filter(|c| c.name.contains("walk_") || c.name.contains("list"))
        .collect();
    assert!(
        selected.len() >= 13,
        "walk and list cases: {}",
        selected.len()
    );
    // The request-count cases skip: inmemory counts no backend requests.
    let skipped = selected
        .iter()
        .filter(|c| c.needs == regstore_testsuite::Need::CountsRequests)
        .count();
    let last = stdout.trim_end().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "{} passed, 0 failed, {skipped} skipped",
            selected.len() - skipped
        )
    );
}
