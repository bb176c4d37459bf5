//! `validation`: which foreign-layer URLs a pushed manifest may name, and
//! how many references it may carry.

use serde::Deserialize;

use super::value::flag;
use crate::registry::{DEFAULT_MAX_MANIFEST_REFERENCES, ManifestUrls};

/// `validation`, checked.
#[derive(Clone, Debug)]
pub struct ValidationConfig {
    /// `manifests.urls` (all http(s) URLs when `disabled`).
    pub manifest_urls: ManifestUrls,
    /// `manifests.maxreferences`: the most config, layer and child-manifest
    /// descriptors a pushed manifest may carry (default
    /// [`DEFAULT_MAX_MANIFEST_REFERENCES`]; `disabled` does not lift it).
    pub max_manifest_references: usize,
}

/// distribution's keys; `enabled: false` is the old spelling of
/// `disabled: true`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    #[serde(deserialize_with = "flag")]
    disabled: Option<bool>,
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
    manifests: Manifests,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Manifests {
    urls: UrlRules,
    maxreferences: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UrlRules {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl Section {
    /// The URL rules and the reference limit.
    ///
    /// # Errors
    /// A pattern that is not a regular expression, named; a
    /// `maxreferences` of 0 (no manifest has fewer than one reference).
    pub(super) fn resolve(self) -> Result<ValidationConfig, String> {
        let max_manifest_references = match self.manifests.maxreferences {
            None => DEFAULT_MAX_MANIFEST_REFERENCES,
            Some(0) => {
                return Err("validation.manifests.maxreferences: must be at least 1".into());
            }
            Some(n) => n,
        };
        let manifest_urls = if self.disabled.unwrap_or(false) || self.enabled == Some(false) {
            ManifestUrls::any()
        } else {
            ManifestUrls::new(&self.manifests.urls.allow, &self.manifests.urls.deny)?
        };
        Ok(ValidationConfig {
            manifest_urls,
            max_manifest_references,
        })
    }
}
