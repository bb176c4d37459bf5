//! Access control: who is asking ([`Auth::authenticate`]), for what
//! ([`scope`]).
//!
//! `auth.htpasswd` is distribution's: Basic credentials checked against a
//! bcrypt htpasswd file; a valid user may do everything. A request without
//! valid credentials is answered 401 `UNAUTHORIZED` with
//! `WWW-Authenticate: Basic realm="…"`, so that clients ask for them.
//!
//! `auth.token` is distribution's too ([`token`]): bearer JWTs from a
//! token server, whose `access` claim must cover the scopes the request
//! needs ([`Route::needs`](crate::http::routes::Route::needs)); the 401
//! challenge names the realm, service and scopes.
//!
//! Verified credentials are cached for [`CACHE_TTL`] (keyed on a SHA-256
//! of the `Authorization` header, never the header itself; at most
//! [`CACHE_ENTRIES`] entries; a token no longer than it is valid), so that
//! a client's every request does not cost a bcrypt check or a signature
//! verification. Requests that miss the cache with the same header at
//! once (every connection of a client when its entry expires) wait for one
//! check. A changed htpasswd file empties the cache.
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
pub mod token;

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
pub use token::{Grant, TokenSettings, TokenVerifier};

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
        cache: CredentialCache<String>,
    },
    Token {
        verifier: TokenVerifier,
        cache: CredentialCache<Grant>,
        /// Whether clients reach this registry over TLS (for the
        /// `autoredirect` realm).
        tls: bool,
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

    /// Bearer tokens from a token server; `tls` says whether clients
    /// reach this registry over TLS (for an `autoredirect` realm).
    ///
    /// # Errors
    /// Settings that cannot work (see [`TokenVerifier::new`]).
    pub fn token(settings: &TokenSettings, tls: bool) -> Result<Auth, String> {
        Ok(Auth {
            scheme: Some(Arc::new(Scheme::Token {
                verifier: TokenVerifier::new(settings)?,
                cache: CredentialCache::default(),
                tls,
            })),
            access: None,
        })
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

    /// Who sent `headers`, for a request that needs `needs`; `host` is
    /// the host the client addressed (for an `autoredirect` realm). A
    /// request without credentials is anonymous when the access rules grant
    /// `anonymous` every scope of `needs` (never for `/v2/`, which needs
    /// none: clients read a 200 there as "these credentials are good").
    ///
    /// # Errors
    /// 401 `UNAUTHORIZED` with the challenge clients answer with
    /// credentials or a token: none were sent (and anonymous access does
    /// not cover the request), they are wrong, the token is invalid
    /// (`error="invalid_token"`) or covers too little
    /// (`error="insufficient_scope"`).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        host: Option<&str>,
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
        let authorization = headers.get(header::AUTHORIZATION);
        match scheme.as_ref() {
            Scheme::Htpasswd { realm, file, cache } => {
                let challenge = || {
                    unauthorized(
                        "authentication required",
                        format!("Basic realm={}", quoted(realm)),
                    )
                };
                let Some(value) = authorization else {
                    return Err(challenge());
                };
                let generation = file.generation();
                let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
                if let Some(user) = cache.get(&key, generation) {
                    return Ok(Identity::User(user));
                }
                // Requests that miss with the same header at once (every
                // connection of a client when its entry expires) wait for
                // one bcrypt check instead of each paying for their own.
                let _turn = cache.one_at_a_time(key).await;
                if let Some(user) = cache.get(&key, generation) {
                    return Ok(Identity::User(user));
                }
                let Some((user, password)) = basic(value) else {
                    return Err(challenge());
                };
                if file.verify(&user, &password).await {
                    cache.put(key, user.clone(), generation, Instant::now() + CACHE_TTL);
                    Ok(Identity::User(user))
                } else {
                    tracing::info!(user, "wrong password or unknown user");
                    Err(challenge())
                }
            }
            Scheme::Token {
                verifier,
                cache,
                tls,
            } => {
                let challenge = |message: String, error: Option<&str>| {
                    let mut value = format!(
                        "Bearer realm={},service={}",
                        quoted(&verifier.realm(host, *tls)),
                        quoted(&verifier.settings().service)
                    );
                    if !needs.is_empty() {
                        let scopes: Vec<String> = needs.iter().map(ToString::to_string).collect();
                        value.push_str(&format!(",scope={}", quoted(&scopes.join(" "))));
                    }
                    if let Some(error) = error {
                        value.push_str(&format!(",error={}", quoted(error)));
                    }
                    unauthorized(message, value)
                };
                let Some(token) = authorization.and_then(bearer) else {
                    return Err(challenge("authentication required".into(), None));
                };
                let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                let grant = match cache.get(&key, 0) {
                    Some(grant) => grant,
                    None => match verifier.verify(token) {
                        Ok(grant) => {
                            let expires = std::time::UNIX_EPOCH
                                + Duration::from_secs(grant.expires + token::LEEWAY_SECS);
                            let left = expires
                                .duration_since(std::time::SystemTime::now())
                                .unwrap_or_default();
                            cache.put(key, grant.clone(), 0, Instant::now() + left.min(CACHE_TTL));
                            grant
                        }
                        Err(why) => {
                            tracing::info!("bearer token refused: {why}");
                            return Err(challenge(
                                format!("the token is not valid: {why}"),
                                Some("invalid_token"),
                            ));
                        }
                    },
                };
                if let Some(missing) = token::uncovered(&grant, needs) {
                    return Err(challenge(
                        format!("the token does not grant {missing}"),
                        Some("insufficient_scope"),
                    ));
                }
                Ok(if grant.subject.is_empty() {
                    Identity::Anonymous
                } else {
                    Identity::User(grant.subject)
                })
            }
        }
    }
}

/// 401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge.
fn unauthorized(message: impl Into<String>, challenge: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message.into()).header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Basic")),
    )
}

/// The token of a `Bearer` authorization.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
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

/// The headers being verified right now, each with the lock its
/// concurrent requests take turns on.
type Verifying = Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>;

/// Verified credentials (a user, a token's grant) by the hash of their
/// header, each until its own expiry.
#[derive(Debug)]
struct CredentialCache<V> {
    entries: Mutex<HashMap<[u8; 32], (V, Instant, u64)>>,
    /// A lock per header being verified right now.
    verifying: Arc<Verifying>,
}

impl<V> Default for CredentialCache<V> {
    fn default() -> Self {
        CredentialCache {
            entries: Mutex::new(HashMap::new()),
            verifying: Arc::default(),
        }
    }
}

/// The turn to verify one header; the next waiter's turn when dropped.
struct Turn {
    key: [u8; 32],
    verifying: Arc<Verifying>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Ok(mut verifying) = self.verifying.lock() else {
            return;
        };
        drop(self.guard.take());
        // Forget the lock once nobody holds or waits for it (the map's own
        // reference is the last).
        if verifying
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            verifying.remove(&self.key);
        }
    }
}

impl<V: Clone> CredentialCache<V> {
    /// Waits until no other request verifies the header `key` stands for.
    async fn one_at_a_time(&self, key: [u8; 32]) -> Turn {
        let lock = match self.verifying.lock() {
            Ok(mut verifying) => verifying.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let guard = lock.lock_owned().await;
        Turn {
            key,
            verifying: self.verifying.clone(),
            guard: Some(guard),
        }
    }

    fn get(&self, key: &[u8; 32], generation: u64) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (value, until, g) = entries.get(key)?;
        (*g == generation && Instant::now() < *until).then(|| value.clone())
    }

    fn put(&self, key: [u8; 32], value: V, generation: u64, until: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, until, g)| *g == generation && now < *until);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, until, generation));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        assert_eq!(
            bearer(&HeaderValue::from_static("Bearer a.b.c")),
            Some("a.b.c")
        );
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
        let v = HeaderValue::from_static("Basic YWxpY2U6czNjcjp0");
        assert_eq!(basic(&v), Some(("alice".into(), "s3cr:t".into())));
        assert_eq!(basic(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(basic(&HeaderValue::from_static("Basic !!!")), None);
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_header_take_turns_and_leave_nothing_behind() {
        let c = Arc::new(CredentialCache::<String>::default());
        let first = c.one_at_a_time([7; 32]).await;
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                let _turn = c.one_at_a_time([7; 32]).await;
                c.get(&[7; 32], 0)
            })
        };
        let other = c.one_at_a_time([8; 32]).await;
        drop(other);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the second request waits for the first"
        );
        c.put([7; 32], "alice".into(), 0, Instant::now() + CACHE_TTL);
        drop(first);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("alice"));
        assert!(c.verifying.lock().unwrap().is_empty());
    }

    #[test]
    fn the_cache_forgets_after_a_reload_and_stays_bounded() {
        let c = CredentialCache::<String>::default();
        let until = Instant::now() + CACHE_TTL;
        c.put([1; 32], "alice".into(), 0, until);
        assert_eq!(c.get(&[1; 32], 0).as_deref(), Some("alice"));
        assert_eq!(c.get(&[1; 32], 1), None, "another generation of the file");
        for i in 0..CACHE_ENTRIES + 10 {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.put(k, "u".into(), 0, until);
        }
        assert!(c.entries.lock().unwrap().len() <= CACHE_ENTRIES);
    }
}
