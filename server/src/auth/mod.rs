//! Access control: who is asking ([`Auth::authenticate`]), for what
//! ([`scope`]).
//!
//! `auth.htpasswd` is distribution's: Basic credentials checked against a
//! bcrypt htpasswd file; a valid user may do everything. A request without
//! valid credentials is answered 401 `UNAUTHORIZED` with
//! `WWW-Authenticate: Basic realm="…"`, so that clients ask for them.
//!
//! Verified credentials are cached for [`CACHE_TTL`] (keyed on a SHA-256
//! of the `Authorization` header, never the header itself; at most
//! [`CACHE_ENTRIES`] entries), so that a client's every request does not
//! cost a bcrypt check. A changed htpasswd file empties the cache.
//! Passwords are never logged; the access log names the user.
//!
//! With `auth.access` ([`access`]), what a verified user may do is then
//! decided by the rules ([`Auth::authorize`], 403 `DENIED`), and a request
//! without credentials whose every scope the rules grant to `anonymous`
//! is let in as [`Identity::Anonymous`]. Without it, a valid user may do
//! everything.

pub mod access;
pub mod htpasswd;
pub mod scope;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::http::ApiError;
pub use access::{AccessRules, AccessSettings};
pub use htpasswd::Htpasswd;
pub use scope::{Action, Resource, Scope};

/// How long verified credentials are trusted without checking again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Most cached credentials.
pub const CACHE_ENTRIES: usize = 4096;

/// Who made a request, as the access log and the access rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// No authentication is configured, or none was needed, or the
    /// request sent no credentials and the access rules grant `anonymous`
    /// what it needs.
    Anonymous,
    /// A user whose credentials were verified.
    User(String),
}

impl Identity {
    /// The user name, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
        }
    }
}

/// `auth` as the server applies it.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    scheme: Option<Arc<Scheme>>,
    access: Option<Arc<AccessRules>>,
}

#[derive(Debug)]
enum Scheme {
    Htpasswd {
        realm: String,
        file: Htpasswd,
        cache: CredentialCache,
    },
}

/// `auth.htpasswd` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtpasswdSettings {
    /// The realm named in the challenge.
    pub realm: String,
    /// The htpasswd file.
    pub path: PathBuf,
}

impl Auth {
    /// No access control: every request is anonymous and allowed.
    pub fn none() -> Auth {
        Auth::default()
    }

    /// Basic authentication against an htpasswd file; also returns the
    /// password of the user `docker` when the file was just created.
    ///
    /// # Errors
    /// The file cannot be read, created or parsed (named, with the line).
    pub fn htpasswd(settings: &HtpasswdSettings) -> Result<(Auth, Option<String>), String> {
        let (file, created) = Htpasswd::open(&settings.path)?;
        Ok((
            Auth {
                scheme: Some(Arc::new(Scheme::Htpasswd {
                    realm: settings.realm.clone(),
                    file,
                    cache: CredentialCache::default(),
                })),
                access: None,
            },
            created,
        ))
    }

    /// The same scheme, with what each user may do decided by `rules`.
    pub fn with_access(self, rules: AccessRules) -> Auth {
        Auth {
            access: Some(Arc::new(rules)),
            ..self
        }
    }

    /// 403 `DENIED` when access rules are configured and refuse `who`
    /// something of `needs`; without rules everything is allowed. Called
    /// once per request, after [`Auth::authenticate`].
    ///
    /// # Errors
    /// The first refused action, naming the repository.
    pub fn authorize(&self, who: &Identity, needs: &[Scope]) -> Result<(), ApiError> {
        match &self.access {
            Some(rules) => rules.authorize(who, needs),
            None => Ok(()),
        }
    }

    /// Whether `who` may pull from the repository `name` (the catalog
    /// lists only those): always without access rules.
    pub fn may_pull(&self, who: &Identity, name: &str) -> bool {
        self.access
            .as_ref()
            .is_none_or(|rules| rules.allows(who, name, Action::Pull))
    }

    /// Whether any authentication is configured.
    pub fn enabled(&self) -> bool {
        self.scheme.is_some()
    }

    /// Who sent `headers`, for a request that needs `needs`. A request
    /// without credentials is anonymous when the access rules grant
    /// `anonymous` every scope of `needs` (never for `/v2/`, which needs
    /// none: clients read a 200 there as "these credentials are good").
    ///
    /// # Errors
    /// 401 `UNAUTHORIZED` with the challenge clients answer with
    /// credentials: none were sent (and anonymous access does not cover
    /// the request), or they are wrong.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        needs: &[Scope],
    ) -> Result<Identity, ApiError> {
        let Some(scheme) = &self.scheme else {
            return Ok(Identity::Anonymous);
        };
        if let Some(rules) = &self.access
            && !headers.contains_key(header::AUTHORIZATION)
            && !needs.is_empty()
            && needs.iter().all(|s| rules.holds(&Identity::Anonymous, s))
        {
            return Ok(Identity::Anonymous);
        }
        match scheme.as_ref() {
            Scheme::Htpasswd { realm, file, cache } => {
                let challenge = || {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "authentication required",
                    )
                    .header(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_str(&format!("Basic realm={}", quoted(realm)))
                            .unwrap_or(HeaderValue::from_static("Basic")),
                    )
                };
                let Some(value) = headers.get(header::AUTHORIZATION) else {
                    return Err(challenge());
                };
                let generation = file.generation();
                let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
                if let Some(user) = cache.get(&key, generation) {
                    return Ok(Identity::User(user));
                }
                let Some((user, password)) = basic(value) else {
                    return Err(challenge());
                };
                if file.verify(&user, &password).await {
                    cache.put(key, user.clone(), generation);
                    Ok(Identity::User(user))
                } else {
                    tracing::info!(user, "wrong password or unknown user");
                    Err(challenge())
                }
            }
        }
    }
}

/// `"realm"` with quotes and backslashes escaped.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The user and password of a `Basic` authorization.
fn basic(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Verified credentials by the hash of their header.
#[derive(Debug, Default)]
struct CredentialCache {
    entries: Mutex<HashMap<[u8; 32], (String, Instant, u64)>>,
}

impl CredentialCache {
    fn get(&self, key: &[u8; 32], generation: u64) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        let (user, at, g) = entries.get(key)?;
        (*g == generation && at.elapsed() < CACHE_TTL).then(|| user.clone())
    }

    fn put(&self, key: [u8; 32], user: String, generation: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, (_, at, g)| *g == generation && at.elapsed() < CACHE_TTL);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (user, Instant::now(), generation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let v = HeaderValue::from_static("Basic YWxpY2U6czNjcjp0");
        assert_eq!(basic(&v), Some(("alice".into(), "s3cr:t".into())));
        assert_eq!(basic(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(basic(&HeaderValue::from_static("Basic !!!")), None);
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn the_cache_forgets_after_a_reload_and_stays_bounded() {
        let c = CredentialCache::default();
        c.put([1; 32], "alice".into(), 0);
        assert_eq!(c.get(&[1; 32], 0).as_deref(), Some("alice"));
        assert_eq!(c.get(&[1; 32], 1), None, "another generation of the file");
        for i in 0..CACHE_ENTRIES + 10 {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.put(k, "u".into(), 0);
        }
        assert!(c.entries.lock().unwrap().len() <= CACHE_ENTRIES);
    }
}
