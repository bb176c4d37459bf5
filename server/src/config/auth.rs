//! `auth`: which authentication the registry asks for (at most one
//! scheme, as in distribution): `htpasswd` or `token`. The token settings
//! are checked (files read, algorithms known) when the server builds them,
//! so that a bad bundle stops startup with its name.

use std::path::PathBuf;

use serde::Deserialize;

use super::value::flag;
use crate::auth::{HtpasswdSettings, TokenSettings};

/// `auth`, as `regstore serve` applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// `auth.htpasswd`: Basic credentials checked against a bcrypt
    /// htpasswd file.
    pub htpasswd: Option<HtpasswdSettings>,
    /// `auth.token`: bearer JWTs from a token server.
    pub token: Option<TokenSettings>,
    /// `auth.access` (regstore extension): per-repository rules over the
    /// users the scheme verifies.
    pub access: Option<crate::auth::AccessRules>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    htpasswd: Option<Htpasswd>,
    token: Option<Token>,
    access: Option<super::access::Section>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Token {
    realm: String,
    service: String,
    issuer: String,
    rootcertbundle: Option<PathBuf>,
    jwks: Option<PathBuf>,
    #[serde(deserialize_with = "flag")]
    autoredirect: Option<bool>,
    autoredirectpath: Option<String>,
    signingalgorithms: Vec<String>,
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
        let token = self.token.map(|t| TokenSettings {
            realm: t.realm,
            service: t.service,
            issuer: t.issuer,
            rootcertbundle: t.rootcertbundle,
            jwks: t.jwks,
            autoredirect: t.autoredirect.unwrap_or(false),
            autoredirectpath: t.autoredirectpath.unwrap_or_else(|| "/auth/token".into()),
            signingalgorithms: t.signingalgorithms,
        });
        if htpasswd.is_some() && token.is_some() {
            return Err(
                "auth names two schemes (htpasswd and token): keep exactly one, as in distribution"
                    .into(),
            );
        }
        let access = self.access.map(|a| a.resolve()).transpose()?;
        Ok(AuthConfig {
            htpasswd,
            token,
            access,
        })
    }
}
