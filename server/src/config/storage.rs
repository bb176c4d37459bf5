//! `storage` (one driver key plus distribution's settings) and
//! `middleware.storage`.

use std::time::Duration;

use regstore_core::{RawParams, StorageSpec};
use serde::Deserialize;
use serde_json::Value;

use super::value::{ConfigDuration, flag};

/// Keys of `storage` that are settings, not drivers.
pub(super) const SETTINGS_KEYS: &[&str] = &["delete", "redirect", "maintenance", "cache", "tag"];

/// `storage` and `middleware.storage`, as `regstore serve` uses them.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Driver and middleware.
    pub spec: StorageSpec,
    /// `storage.delete.enabled` (default false, as distribution).
    pub delete_enabled: bool,
    /// `storage.redirect.disable`.
    pub redirect_disabled: bool,
    /// `storage.maintenance.readonly.enabled`: refuse every write.
    pub read_only: bool,
    /// `storage.maintenance.uploadpurging`; `None` when disabled.
    pub upload_purging: Option<UploadPurging>,
    /// `storage.maintenance.gc` (regstore): online garbage collection;
    /// `None` when disabled (the default).
    pub gc: Option<crate::gc::online::Schedule>,
}

/// Defaults of `storage.maintenance.gc`: every hour, grace period one hour.
pub const GC_INTERVAL: Duration = Duration::from_secs(3600);
/// See [`GC_INTERVAL`].
pub const GC_GRACE: Duration = Duration::from_secs(3600);

/// `storage.maintenance.uploadpurging`: remove abandoned uploads. On by
/// default, as in distribution: every 24 h, uploads older than 168 h.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPurging {
    /// Uploads begun longer ago than this are removed.
    pub age: Duration,
    /// How often to look.
    pub interval: Duration,
    /// Only log what would be removed.
    pub dry_run: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dry_run: false,
        }
    }
}

/// The settings keys of `storage` (the driver key is taken out first by
/// [`take_driver`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    delete: Delete,
    redirect: Redirect,
    maintenance: Maintenance,
    /// `storage.cache`, resolved with `redis` by the config's reader.
    pub(super) cache: super::cache::CacheSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delete {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Redirect {
    #[serde(deserialize_with = "flag")]
    disable: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Maintenance {
    readonly: ReadOnly,
    uploadpurging: Purging,
    gc: Gc,
}

/// `storage.maintenance.gc` (a regstore extension).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Gc {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
    interval: Option<ConfigDuration>,
    graceperiod: Option<ConfigDuration>,
    #[serde(deserialize_with = "flag")]
    deleteuntagged: Option<bool>,
    #[serde(deserialize_with = "flag")]
    dryrun: Option<bool>,
    concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReadOnly {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Purging {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
    age: Option<ConfigDuration>,
    interval: Option<ConfigDuration>,
    #[serde(deserialize_with = "flag")]
    dryrun: Option<bool>,
}

/// `middleware`: only `storage` is read (the others are in the keys table).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Middleware {
    storage: Vec<MiddlewareEntry>,
}

#[derive(Debug, Deserialize)]
struct MiddlewareEntry {
    name: String,
    #[serde(default)]
    options: Option<RawParams>,
    /// distribution's switch to keep an entry in the file but not use it.
    #[serde(default, deserialize_with = "flag")]
    disabled: Option<bool>,
}

impl Section {
    /// The storage settings with the driver `take_driver` found and the
    /// storage middleware.
    pub(super) fn resolve(
        self,
        (driver, params): (String, RawParams),
        middleware: Middleware,
    ) -> StorageConfig {
        let p = self.maintenance.uploadpurging;
        let defaults = UploadPurging::default();
        let upload_purging = p.enabled.unwrap_or(true).then(|| UploadPurging {
            age: p.age.map_or(defaults.age, |d| d.0),
            interval: p.interval.map_or(defaults.interval, |d| d.0),
            dry_run: p.dryrun.unwrap_or(false),
        });
        let g = self.maintenance.gc;
        let gc = g
            .enabled
            .unwrap_or(false)
            .then(|| crate::gc::online::Schedule {
                interval: g.interval.map_or(GC_INTERVAL, |d| d.0),
                options: crate::gc::Options {
                    dry_run: g.dryrun.unwrap_or(false),
                    delete_untagged: g.deleteuntagged.unwrap_or(false),
                    concurrency: g
                        .concurrency
                        .unwrap_or(crate::gc::Options::default().concurrency)
                        .max(1),
                    grace: g.graceperiod.map_or(GC_GRACE, |d| d.0),
                },
            });
        StorageConfig {
            gc,
            spec: StorageSpec {
                driver,
                params,
                middleware: middleware
                    .storage
                    .into_iter()
                    .filter(|m| m.disabled != Some(true))
                    .map(|m| (m.name, m.options.unwrap_or_default()))
                    .collect(),
            },
            delete_enabled: self.delete.enabled.unwrap_or(false),
            redirect_disabled: self.redirect.disable.unwrap_or(false),
            read_only: self.maintenance.readonly.enabled.unwrap_or(false),
            upload_purging,
        }
    }
}

/// Takes the one driver key out of `storage`: its name and parameters.
///
/// # Errors
/// No `storage` section, no driver or several, parameters that are not a
/// map.
pub(super) fn take_driver(doc: &mut Value) -> Result<(String, RawParams), String> {
    let storage = doc
        .get_mut("storage")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            "no `storage` section: add e.g. `storage: {filesystem: {rootdirectory: ./data}}`"
                .to_owned()
        })?;
    let drivers: Vec<String> = storage
        .keys()
        .filter(|k| !SETTINGS_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let driver = match drivers.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(
                "`storage` names no driver: add one key such as `filesystem:` or `s3:`".into(),
            );
        }
        many => {
            return Err(format!(
                "`storage` names {} drivers ({}): keep exactly one",
                many.len(),
                many.join(", ")
            ));
        }
    };
    let params = match storage.remove(&driver) {
        None | Some(Value::Null) => RawParams::new(),
        Some(Value::Object(m)) => m.into_iter().collect(),
        Some(other) => {
            return Err(format!(
                "storage.{driver}: expected a map of parameters, got {other}"
            ));
        }
    };
    Ok((driver, params))
}
