//! The small binary is a whole `regstore`: it lists `flatdir` beside the
//! built-in drivers, and `regstore conformance` passes on it.

use std::process::Command;

fn regstore(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regstore-flatdir"))
        .args(args)
        .output()
        .expect("run the binary");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn drivers_lists_flatdir_and_the_built_in_ones() {
    let (ok, text) = regstore(&["drivers"]);
    assert!(ok, "{text}");
    for name in ["flatdir", "filesystem", "inmemory", "s3", "swift"] {
        assert!(text.contains(&format!("\n  {name} — ")), "{name}: {text}");
    }
}

#[test]
fn conformance_passes_on_flatdir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = format!("rootdirectory={}", dir.path().display());
    let (ok, text) = regstore(&[
        "conformance",
        "--driver",
        "flatdir",
        "--param",
        &root,
        "--short",
    ]);
    assert!(ok, "{text}");
    let last = text
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.contains(" passed, 0 failed"), "{last}");
    let passed: usize = last
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 40, "{last}");
}
