//! Distribution's environment overrides, applied to the parsed file before
//! any section reads it.
//!
//! `REGISTRY_<SECTION>_<KEY>…=value` sets the key at that path (matched
//! case-insensitively against keys already in the file), the value read as
//! a YAML scalar (`true`, `5000`, `[a, b]`): `REGISTRY_HTTP_ADDR=:5001`,
//! `REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/x`,
//! `REGISTRY_STORAGE_DELETE_ENABLED=false`. `REGISTRY_STORAGE=inmemory`
//! switches the driver (the `delete`/`redirect`/… settings stay), and its
//! parameters come from `REGISTRY_STORAGE_INMEMORY_*`.

use serde_json::{Map, Value};

use super::storage::SETTINGS_KEYS;

/// Environment variables that name the config file, not a key in it.
const NOT_OVERRIDES: &[&str] = &["REGISTRY_CONFIGURATION_PATH"];

/// Applies every `REGISTRY_*` variable of `env` to `doc`.
///
/// # Errors
/// The variable that cannot be applied, and why.
pub(super) fn apply(
    doc: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGISTRY_") && !NOT_OVERRIDES.contains(&k.as_str()))
        .collect();
    // Shorter paths first, so REGISTRY_STORAGE picks the driver before
    // REGISTRY_STORAGE_<DRIVER>_* fill in its parameters.
    env.sort_by_key(|(k, _)| (k.matches('_').count(), k.clone()));
    for (key, value) in &env {
        apply_one(doc, key, value).map_err(|m| format!("{key}: {m}"))?;
    }
    Ok(())
}

/// Sets the key `REGISTRY_A_B_C` names to `value` parsed as a YAML scalar.
fn apply_one(doc: &mut Value, key: &str, value: &str) -> Result<(), String> {
    let path: Vec<String> = key
        .trim_start_matches("REGISTRY_")
        .split('_')
        .map(str::to_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let parsed: Value = if value.is_empty() {
        Value::String(String::new())
    } else {
        serde_saphyr::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))
    };
    if path == ["storage"] {
        let Value::String(driver) = parsed else {
            return Err("REGISTRY_STORAGE names a driver, e.g. REGISTRY_STORAGE=s3".into());
        };
        let storage = map_at(doc, "storage");
        storage.retain(|k, _| SETTINGS_KEYS.contains(&k.as_str()));
        storage.insert(driver, Value::Object(Map::new()));
        return Ok(());
    }
    let mut cur = doc;
    for (i, seg) in path.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(obj) = cur else {
            return Err("cannot set a key inside a non-map value".into());
        };
        let existing = obj
            .keys()
            .find(|k| k.eq_ignore_ascii_case(seg))
            .cloned()
            .unwrap_or_else(|| seg.clone());
        if i + 1 == path.len() {
            obj.insert(existing, parsed);
            return Ok(());
        }
        cur = obj.entry(existing).or_insert(Value::Object(Map::new()));
    }
    Ok(())
}

/// The map at top-level `key` of `doc`, created (or replacing a non-map).
fn map_at<'a>(doc: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let top = doc.as_object_mut().expect("made a map above");
    let slot = top
        .entry(key.to_owned())
        .or_insert(Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("made a map above")
}
