//! `validation`: which foreign-layer URLs a pushed manifest may name.

use serde::Deserialize;

use super::value::flag;
use crate::registry::ManifestUrls;

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UrlRules {
    allow: Vec<String>,
    deny: Vec<String>,
}

impl Section {
    /// The URL rules.
    ///
    /// # Errors
    /// A pattern that is not a regular expression, named.
    pub(super) fn resolve(self) -> Result<ManifestUrls, String> {
        if self.disabled.unwrap_or(false) || self.enabled == Some(false) {
            return Ok(ManifestUrls::any());
        }
        ManifestUrls::new(&self.manifests.urls.allow, &self.manifests.urls.deny)
    }
}
