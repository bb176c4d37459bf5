//! `auth`: which authentication the registry asks for (at most one
//! scheme, as in distribution).

use std::path::PathBuf;

use serde::Deserialize;

use crate::auth::HtpasswdSettings;

/// `auth`, as `regstore serve` applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `auth.htpasswd`: Basic credentials checked against a bcrypt
    /// htpasswd file.
    pub htpasswd: Option<HtpasswdSettings>,
    /// `auth.access` (regstore extension): per-repository rules over the
    /// users the scheme verifies.
    pub access: Option<crate::auth::AccessRules>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    htpasswd: Option<Htpasswd>,
    access: Option<super::access::Section>,
}

#[derive(Debug, Deserialize)]
struct Htpasswd {
    realm: String,
    path: PathBuf,
}

impl Section {
    /// The checked `auth` settings.
    ///
    /// # Errors
    /// An empty realm or path, or bad `access` rules, naming the key.
    pub(super) fn resolve(self) -> Result<AuthConfig, String> {
        let htpasswd = match self.htpasswd {
            None => None,
            Some(h) => {
                if h.realm.trim().is_empty() {
                    return Err("auth.htpasswd.realm is empty: name the realm clients are told (e.g. basic-realm)".into());
                }
                if h.path.as_os_str().is_empty() {
                    return Err("auth.htpasswd.path is empty: give the htpasswd file (created with a user `docker` if missing)".into());
                }
                Some(HtpasswdSettings {
                    realm: h.realm,
                    path: h.path,
                })
            }
        };
        let access = self.access.map(|a| a.resolve()).transpose()?;
        Ok(AuthConfig { htpasswd, access })
    }
}
