//! distribution's own config files load in regstore: every example block of
//! distribution's configuration reference (as Debian's `docker-registry`
//! package installs it, `/usr/share/doc/docker-registry/configuration.md.gz`)
//! and Debian's stock `/etc/docker/registry/config.yml`.
//!
//! Each key distribution documents must be read by a section, or named by
//! the table of keys regstore does not act on (ignored with a warning, or
//! refused with a message); none may be reported as unknown. The files are
//! read where the package put them: `scripts/clients.sh install` installs it,
//! and with `REGSTORE_REQUIRE_BACKENDS=1` a missing file fails the test.

use regstore_server::config::{Config, LogFormat};
use regstore_testenv::backend::skip_unless_required;
use serde_json::{Map, Value, json};

const DOCS: &str = "/usr/share/doc/docker-registry/configuration.md.gz";
const DEBIAN_CONFIG: &str = "/etc/docker/registry/config.yml";

/// distribution's top-level sections.
const SECTIONS: &[&str] = &[
    "version",
    "log",
    "loglevel",
    "storage",
    "auth",
    "middleware",
    "reporting",
    "http",
    "notifications",
    "redis",
    "health",
    "proxy",
    "compatibility",
    "validation",
    "policy",
];

/// What regstore refuses today (and the issue that lifts it): `auth.silly`,
/// `http.tls.clientcas` (17), `http.prefix`, letsencrypt; and a block that
/// asks for the Redis cache without the `redis` section it needs (the
/// reference shows them in separate blocks).
const REFUSED: &[&str] = &[
    "storage.cache.blobdescriptor: redis needs redis.addr",
    "`auth.silly`",
    "`http.tls.clientcas`",
    "`http.tls.letsencrypt`",
    "`http.prefix`",
];

fn docs() -> Result<String, String> {
    let out = std::process::Command::new("zcat")
        .arg(DOCS)
        .output()
        .map_err(|e| format!("zcat {DOCS}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{DOCS}: {} (install Debian's docker-registry: scripts/clients.sh install)",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{DOCS}: {e}"))
}

/// The fenced blocks of a markdown text that parse as YAML maps whose keys
/// are all distribution sections.
fn config_blocks(md: &str) -> Vec<Map<String, Value>> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(text) => {
                    if let Ok(Value::Object(m)) = lenient_yaml(&text)
                        && !m.is_empty()
                        && m.keys().all(|k| SECTIONS.contains(&k.as_str()))
                    {
                        blocks.push(m);
                    }
                }
                None => current = Some(String::new()),
            }
        } else if let Some(text) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    blocks
}

/// YAML as distribution's Go parser (yaml.v2) reads it: a repeated key
/// keeps its last value. The reference's full list repeats
/// `middleware.storage`; regstore's own parser refuses repeated keys (they
/// are mistakes in a real file), so the test reads the blocks this way.
fn lenient_yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    serde_saphyr::from_str_with_options(text, options)
}

/// One config per driver of a `storage` section, or the section beside an
/// in-memory driver.
fn configs_of(section: &str, value: &Value) -> Vec<Value> {
    if section == "storage" {
        let Some(storage) = value.as_object() else {
            return Vec::new();
        };
        let settings = ["delete", "redirect", "maintenance", "cache", "tag"];
        let (set, drivers): (Vec<_>, Vec<_>) = storage
            .iter()
            .partition(|(k, _)| settings.contains(&k.as_str()));
        let mut out = Vec::new();
        for (driver, params) in drivers {
            let mut s: Map<String, Value> = set
                .iter()
                .map(|(k, v)| ((*k).clone(), (*v).clone()))
                .collect();
            s.insert(driver.clone(), params.clone());
            out.push(json!({"version": 0.1, "storage": s}));
        }
        if out.is_empty() {
            let mut s = storage.clone();
            s.insert("inmemory".into(), Value::Null);
            out.push(json!({"version": 0.1, "storage": s}));
        }
        out
    } else if section == "version" {
        vec![json!({"version": value, "storage": {"inmemory": null}})]
    } else if section == "proxy" {
        vec![json!({"version": 0.1, "storage": {"inmemory": null}, section: placeholders(value)})]
    } else if section == "notifications" {
        vec![
            json!({"version": 0.1, "storage": {"inmemory": null}, section: without_type_names(value)}),
        ]
    } else {
        vec![json!({"version": 0.1, "storage": {"inmemory": null}, section: value})]
    }
}

/// The reference writes placeholders as `[username]`, which YAML reads as
/// a one-element list (distribution's parser would refuse it too): each
/// becomes the string it names.
fn placeholders(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), placeholders(v)))
                .collect(),
        ),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => a[0].clone(),
        other => other.clone(),
    }
}

/// The reference writes an endpoint's `headers` as `<http.Header>`, the
/// name of its Go type (distribution's parser would refuse that string
/// too): such keys are left out.
fn without_type_names(value: &Value) -> Value {
    let type_name = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.starts_with('<') && s.ends_with('>'))
    };
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !type_name(v))
                .map(|(k, v)| (k.clone(), without_type_names(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_type_names).collect()),
        other => other.clone(),
    }
}

#[test]
fn every_example_block_of_distributions_configuration_reference_loads() {
    let Some(md) = skip_unless_required("distribution's configuration reference", docs()) else {
        return;
    };
    let blocks = config_blocks(&md);
    let (mut loaded, mut refused) = (0, 0);
    let mut sections_seen = std::collections::BTreeSet::new();
    for block in &blocks {
        for (section, value) in block {
            sections_seen.insert(section.clone());
            for config in configs_of(section, value) {
                // JSON is YAML: the config goes through the same parser as a file.
                let text = config.to_string();
                match Config::from_yaml(&text, "docs example", []) {
                    Ok(c) => {
                        let unknown: Vec<_> = c
                            .warnings
                            .iter()
                            .filter(|w| w.starts_with("unknown config key"))
                            .collect();
                        assert!(
                            unknown.is_empty(),
                            "a documented key is unknown to regstore: {unknown:?} in {text}"
                        );
                        loaded += 1;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(
                            REFUSED
                                .iter()
                                .any(|r| e.contains(&format!("docs example: {r}"))),
                            "a documented config is refused for a reason not in the table: {e}\n{text}"
                        );
                        refused += 1;
                    }
                }
            }
        }
    }
    // The reference's full list alone has every section and five drivers.
    assert!(blocks.len() >= 10, "{} config blocks found", blocks.len());
    for s in [
        "log",
        "storage",
        "http",
        "middleware",
        "notifications",
        "redis",
        "health",
    ] {
        assert!(sections_seen.contains(s), "no example of `{s}` read");
    }
    eprintln!(
        "{} blocks: {loaded} configs loaded, {refused} refused",
        blocks.len()
    );
    assert!(loaded >= 35, "{loaded} example configs loaded");
    assert!(
        refused >= 3,
        "{refused} refused (auth.token and proxy at least)"
    );
}

#[test]
fn debians_stock_config_loads() {
    let Some(text) = skip_unless_required(
        "Debian's stock registry config",
        std::fs::read_to_string(DEBIAN_CONFIG).map_err(|e| {
            format!("{DEBIAN_CONFIG}: {e} (install Debian's docker-registry: scripts/clients.sh install)")
        }),
    ) else {
        return;
    };
    let c = Config::from_yaml(&text, DEBIAN_CONFIG, []).unwrap();
    let htpasswd = c.auth.htpasswd.as_ref().expect("auth.htpasswd is read");
    assert_eq!(htpasswd.realm, "basic-realm");
    assert_eq!(htpasswd.path, std::path::Path::new("/etc/docker/registry"));
    assert_eq!(c.storage.spec.driver, "filesystem");
    assert_eq!(
        c.storage.spec.params["rootdirectory"],
        json!("/var/lib/docker-registry")
    );
    assert!(c.storage.delete_enabled);
    assert_eq!(c.http.addr, ":5000");
    assert_eq!(
        c.http.headers,
        vec![("X-Content-Type-Options".to_owned(), "nosniff".to_owned())]
    );
    assert_eq!(c.log.fields["service"], json!("registry"));
    assert_eq!(c.log.format, LogFormat::Text);
    let storage = c.health.storage.expect("health.storagedriver is read");
    assert_eq!(storage.interval, std::time::Duration::from_secs(10));
    assert_eq!(storage.threshold, 3);
    assert_eq!(
        c.blob_cache,
        Some(regstore_server::config::BlobCacheConfig::InMemory {
            size: regstore_server::config::DEFAULT_BLOB_DESCRIPTOR_SIZE
        }),
        "storage.cache.blobdescriptor: inmemory is read"
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
