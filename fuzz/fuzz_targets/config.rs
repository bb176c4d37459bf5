//! The config file (`regstore serve --config`): YAML, then the
//! `REGISTRY_*` environment overrides. Input: the YAML; its comment lines
//! `#REGISTRY_…=value` are also given as environment variables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_server::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let _ = Config::from_yaml(text, "fuzz", env);
});
