//! Authentication: TempAuth (v1) and Keystone identity v3 (password or
//! application credential), a cached token refreshed before it expires and
//! after a 401.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use regstore_core::{Error, RequestCounter, Result};

use crate::client::chain;
use serde_json::{Value, json};

/// A token is renewed this long before Keystone says it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// A user, project or domain named by id or by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ref {
    /// The id, which wins over the name.
    pub id: Option<String>,
    /// The name (needs a domain for users and projects).
    pub name: Option<String>,
}

impl Ref {
    /// A reference from an id and a name parameter, `None` when both are
    /// absent or empty.
    pub fn from_parts(id: Option<&str>, name: Option<&str>) -> Option<Ref> {
        let id = id.filter(|s| !s.is_empty()).map(str::to_owned);
        let name = name.filter(|s| !s.is_empty()).map(str::to_owned);
        (id.is_some() || name.is_some()).then_some(Ref { id, name })
    }

    fn json(&self) -> Value {
        match (&self.id, &self.name) {
            (Some(id), _) => json!({ "id": id }),
            (None, Some(name)) => json!({ "name": name }),
            (None, None) => json!({}),
        }
    }

    /// `{"id":…}`, or `{"name":…, "domain": …}` when named.
    fn json_in(&self, domain: Option<&Ref>) -> Value {
        let mut v = self.json();
        if self.id.is_none()
            && let (Some(d), Some(obj)) = (domain, v.as_object_mut())
        {
            obj.insert("domain".into(), d.json());
        }
        v
    }
}

/// Who the driver authenticates as with Keystone v3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `password` method: a user (by id, or by name in a domain).
    Password {
        /// The user.
        user: Ref,
        /// The user's domain, when the user is named.
        domain: Option<Ref>,
        /// The password.
        password: String,
    },
    /// `application_credential` method: by id, or by name with its user.
    ApplicationCredential {
        /// The credential.
        credential: Ref,
        /// Its owner, when the credential is named.
        user: Option<Ref>,
        /// The owner's domain, when the owner is named.
        domain: Option<Ref>,
        /// The secret.
        secret: String,
    },
}

/// Where and how the driver logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per driver, built once
pub enum Credentials {
    /// Swift's TempAuth (and other v1.0 auth): `X-Auth-User`/`X-Auth-Key`
    /// in, `X-Auth-Token`/`X-Storage-Url` out.
    V1 {
        /// The auth URL (`…/auth/v1.0`).
        url: String,
        /// `account:user`.
        user: String,
        /// The key (password).
        key: String,
    },
    /// Keystone identity v3.
    V3 {
        /// Keystone's base URL (`…/v3`; `/auth/tokens` is appended).
        url: String,
        /// Who.
        identity: Identity,
        /// The project to scope the token to (password auth; application
        /// credentials carry their own scope).
        project: Option<Ref>,
        /// The project's domain, when the project is named.
        project_domain: Option<Ref>,
        /// A trust to scope to instead of a project.
        trust_id: Option<String>,
        /// Region of the object-store endpoint (any when `None`).
        region: Option<String>,
        /// Endpoint interface: `public`, `internal` or `admin`.
        interface: String,
    },
}

/// A logged-in session: the token and the account's storage URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Goes in `X-Auth-Token`.
    pub token: String,
    /// The account URL (`…/v1/AUTH_<project>`), no trailing slash.
    pub storage_url: String,
    /// When the token stops working, if the auth service said.
    pub expires: Option<SystemTime>,
}

impl Session {
    fn fresh(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| {
            e.duration_since(now)
                .is_ok_and(|left| left > REFRESH_MARGIN)
        })
    }
}

/// The Keystone v3 `POST /auth/tokens` body: `identity`, scoped to a
/// trust, else (password auth) to `project` in `project_domain`.
pub fn v3_request(
    identity: &Identity,
    project: Option<&Ref>,
    project_domain: Option<&Ref>,
    trust_id: Option<&str>,
) -> Value {
    let identity_kind = identity;
    let (methods, body) = match identity {
        Identity::Password {
            user,
            domain,
            password,
        } => {
            let mut u = user.json_in(domain.as_ref());
            if let Some(obj) = u.as_object_mut() {
                obj.insert("password".into(), json!(password));
            }
            (json!(["password"]), json!({ "password": { "user": u } }))
        }
        Identity::ApplicationCredential {
            credential,
            user,
            domain,
            secret,
        } => {
            let mut c = credential.json();
            if let Some(obj) = c.as_object_mut() {
                obj.insert("secret".into(), json!(secret));
                if credential.id.is_none()
                    && let Some(u) = user
                {
                    obj.insert("user".into(), u.json_in(domain.as_ref()));
                }
            }
            (
                json!(["application_credential"]),
                json!({ "application_credential": c }),
            )
        }
    };
    let mut identity = body;
    if let Some(obj) = identity.as_object_mut() {
        obj.insert("methods".into(), methods);
    }
    let mut auth = json!({ "identity": identity });
    // Application credentials carry their own scope; asking for another
    // is an error in Keystone.
    let scope = if let Some(trust) = trust_id {
        Some(json!({ "OS-TRUST:trust": { "id": trust } }))
    } else if matches!(identity_kind, Identity::Password { .. }) {
        project.map(|p| json!({ "project": p.json_in(project_domain) }))
    } else {
        None
    };
    if let (Some(scope), Some(obj)) = (scope, auth.as_object_mut()) {
        obj.insert("scope".into(), scope);
    }
    json!({ "auth": auth })
}

/// The session in a Keystone v3 token response: the token from the
/// `X-Subject-Token` header, its expiry, and the URL of the catalog's
/// `object-store` endpoint with `interface` (in `region` when given).
///
/// # Errors
/// `Config` when the response has no token, or the catalog no matching
/// object-store endpoint (naming what is there).
pub fn v3_session(
    token: Option<&str>,
    body: &[u8],
    region: Option<&str>,
    interface: &str,
) -> Result<Session> {
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::config("Keystone answered without an X-Subject-Token header"))?;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::config(format!("Keystone's token response is not JSON: {e}")))?;
    let expires = v["token"]["expires_at"].as_str().and_then(parse_iso8601);
    let mut seen = Vec::new();
    let catalog = v["token"]["catalog"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for service in catalog.iter().filter(|s| s["type"] == "object-store") {
        for ep in service["endpoints"].as_array().into_iter().flatten() {
            let ep_region = ep["region_id"].as_str().or(ep["region"].as_str());
            let ep_interface = ep["interface"].as_str().unwrap_or("");
            seen.push(format!(
                "{}/{}",
                ep_region.unwrap_or("-"),
                if ep_interface.is_empty() {
                    "-"
                } else {
                    ep_interface
                }
            ));
            let region_ok = region.is_none_or(|r| ep_region == Some(r));
            if region_ok
                && ep_interface == interface
                && let Some(url) = ep["url"].as_str()
            {
                return Ok(Session {
                    token: token.to_owned(),
                    storage_url: url.trim_end_matches('/').to_owned(),
                    expires,
                });
            }
        }
    }
    Err(Error::config(format!(
        "Keystone's catalog has no object-store endpoint with interface {interface:?}{} (it has: {})",
        region
            .map(|r| format!(" in region {r:?}"))
            .unwrap_or_default(),
        if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        }
    )))
}

/// An ISO 8601 time as Keystone (`2026-12-02T04:12:09.913440Z`, or with a
/// `+hh:mm` offset) and Swift listings (no zone: UTC) write it; `None` when
/// it is not of that form.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let utc = match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(_) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc(),
    };
    Some(SystemTime::from(utc))
}

/// Logs in with [`Credentials`] and keeps the session until it is about to
/// expire or a request comes back 401.
#[derive(Debug)]
pub struct Auth {
    creds: Credentials,
    http: reqwest::Client,
    requests: RequestCounter,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl Auth {
    /// An authenticator that logs in lazily.
    pub fn new(creds: Credentials, http: reqwest::Client, requests: RequestCounter) -> Auth {
        Auth {
            creds,
            http,
            requests,
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// The current session, logging in when there is none or it expires
    /// within two minutes.
    ///
    /// # Errors
    /// The auth service refused (`Config`, with its answer) or could not be
    /// reached (`Backend`).
    pub async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref()
            && s.fresh(SystemTime::now())
        {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(self.login().await?);
        *slot = Some(Arc::clone(&s));
        Ok(s)
    }

    /// Forgets `token` (answered 401), so the next [`Auth::session`] logs
    /// in again; a newer token another request already got is kept.
    pub async fn invalidate(&self, token: &str) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| s.token == token) {
            *slot = None;
        }
    }

    async fn login(&self) -> Result<Session> {
        self.requests.request().await;
        match &self.creds {
            Credentials::V1 { url, user, key } => {
                let resp = self
                    .http
                    .get(url)
                    .header("X-Auth-User", user)
                    .header("X-Auth-Key", key)
                    .send()
                    .await
                    .map_err(|e| Error::backend(format!("Swift auth at {url}: {}", chain(&e))))?;
                let status = resp.status();
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (token, storage) = (header("x-auth-token"), header("x-storage-url"));
                let expires = header("x-auth-token-expires")
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|secs| SystemTime::now() + Duration::from_secs(secs));
                match (status.is_success(), token, storage) {
                    (true, Some(token), Some(storage)) => Ok(Session {
                        token,
                        storage_url: storage.trim_end_matches('/').to_owned(),
                        expires,
                    }),
                    (true, _, _) => Err(Error::config(format!(
                        "Swift auth at {url} answered without X-Auth-Token or X-Storage-Url"
                    ))),
                    (false, _, _) => Err(refused(
                        status,
                        format!("Swift auth at {url} refused user {user:?}: HTTP {status}"),
                    )),
                }
            }
            Credentials::V3 {
                url,
                identity,
                project,
                project_domain,
                trust_id,
                region,
                interface,
            } => {
                let body = v3_request(
                    identity,
                    project.as_ref(),
                    project_domain.as_ref(),
                    trust_id.as_deref(),
                );
                let endpoint = format!("{}/auth/tokens", url.trim_end_matches('/'));
                let resp = self
                    .http
                    .post(&endpoint)
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        Error::backend(format!("Keystone at {endpoint}: {}", chain(&e)))
                    })?;
                let status = resp.status();
                let token = resp
                    .headers()
                    .get("x-subject-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = resp.bytes().await.map_err(|e| {
                    Error::backend(format!("Keystone at {endpoint}: {}", chain(&e)))
                })?;
                if !status.is_success() {
                    let text: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                    return Err(refused(
                        status,
                        format!(
                            "Keystone at {endpoint} refused the credentials: HTTP {status}: {text}"
                        ),
                    ));
                }
                v3_session(token.as_deref(), &bytes, region.as_deref(), interface)
            }
        }
    }
}

/// The error for a login the auth service did not accept: 401 and 403 are
/// credentials refused; a server error or 429 is the service failing (worth
/// retrying); anything else is a configuration that cannot work (a wrong
/// URL, a malformed request).
fn refused(status: reqwest::StatusCode, message: String) -> Error {
    let code = status.as_u16();
    if code == 401 || code == 403 {
        Error::credentials(message)
    } else if regstore_core::retry::is_retryable_status(code) {
        Error::backend(message)
    } else {
        Error::config(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_renewed_two_minutes_before_they_expire() {
        let now = SystemTime::now();
        let at = |secs: u64| Session {
            token: "t".into(),
            storage_url: "u".into(),
            expires: Some(now + Duration::from_secs(secs)),
        };
        assert!(at(600).fresh(now));
        assert!(!at(60).fresh(now), "within the margin: log in again");
        let endless = Session {
            expires: None,
            ..at(0)
        };
        assert!(endless.fresh(now), "no expiry given: until a 401");
    }

    #[test]
    fn iso8601_times_parse_with_and_without_fraction_and_zone() {
        let t = parse_iso8601("1970-01-02T00:00:01Z").expect("parses");
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(86_401));
        let t = parse_iso8601("2026-12-02T04:12:09.913440").expect("parses");
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).expect("after");
        assert_eq!(secs.as_secs(), 1_796_184_729);
        assert_eq!(secs.subsec_micros(), 913_440);
        // An offset is applied, not dropped.
        let t = parse_iso8601("1970-01-02T02:00:01+02:00").expect("parses");
        assert_eq!(t, SystemTime::UNIX_EPOCH + Duration::from_secs(86_401));
        assert_eq!(parse_iso8601("2026-13-02T00:00:00Z"), None);
        assert_eq!(parse_iso8601("yesterday"), None);
    }
}
