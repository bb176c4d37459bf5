//! `proxy`: run as a pull-through cache of another registry (distribution's
//! keys `remoteurl`, `username`, `password`, `ttl`).

use std::time::Duration;

use serde::Deserialize;

use super::value::ConfigDuration;

/// How long cached content lives when `ttl` is not given (distribution's
/// default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(168 * 3600);

/// `proxy`, as `regstore serve` applies it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `remoteurl`: the upstream registry, `http(s)://host[:port]`.
    pub remote_url: String,
    /// `username` (none: anonymous, or the upstream's anonymous tokens).
    pub username: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `ttl`: cached content is removed this long after it was fetched,
    /// and a tag is revalidated with upstream at most once per this
    /// window. `None` (`ttl: 0`) keeps content until garbage collection
    /// and revalidates tags on every request.
    pub ttl: Option<Duration>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("remote_url", &self.remote_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    remoteurl: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ttl: Option<ConfigDuration>,
}

impl Section {
    /// The proxy settings; `None` when the section is absent or has no
    /// `remoteurl` (distribution ignores such a section too, so a file
    /// with an empty `proxy:` is an ordinary registry).
    ///
    /// # Errors
    /// `username` without `remoteurl`, or a `remoteurl` the upstream
    /// client refuses (not http(s), a path, credentials in the URL),
    /// naming the key.
    pub(super) fn resolve(self) -> Result<Option<ProxyConfig>, String> {
        let Some(remote_url) = self.remoteurl.filter(|u| !u.trim().is_empty()) else {
            if self.username.is_some() || self.password.is_some() {
                return Err(
                    "proxy.username/password without proxy.remoteurl: name the upstream registry"
                        .into(),
                );
            }
            return Ok(None);
        };
        crate::proxy::upstream::Upstream::new(
            &remote_url,
            self.username.as_deref(),
            self.password.as_deref(),
        )
        .map_err(|e| format!("proxy.remoteurl: {e}"))?;
        Ok(Some(ProxyConfig {
            remote_url,
            username: self.username.filter(|u| !u.is_empty()),
            password: self.password,
            ttl: match self.ttl {
                None => Some(DEFAULT_TTL),
                Some(ConfigDuration(d)) if d.is_zero() => None,
                Some(ConfigDuration(d)) => Some(d),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Config;
    use super::*;

    fn load(proxy: &str, env: &[(&str, &str)]) -> Result<Option<ProxyConfig>, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\n{proxy}"),
            "t.yml",
            env,
        )
        .map(|c| c.proxy)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn distributions_keys_with_the_default_ttl() {
        let p = load(
            "proxy:\n  remoteurl: https://registry-1.docker.io\n  username: u\n  password: p\n",
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.remote_url, "https://registry-1.docker.io");
        assert_eq!(p.username.as_deref(), Some("u"));
        assert_eq!(p.password.as_deref(), Some("p"));
        assert_eq!(p.ttl, Some(DEFAULT_TTL));
        assert!(
            !format!("{p:?}").contains("\"p\""),
            "the password is not shown"
        );
    }

    #[test]
    fn ttl_zero_disables_expiry_and_go_durations_are_read() {
        let ttl = |v: &str| {
            load(
                &format!("proxy:\n  remoteurl: http://up:5000\n  ttl: {v}\n"),
                &[],
            )
            .unwrap()
            .unwrap()
            .ttl
        };
        assert_eq!(ttl("0"), None);
        assert_eq!(ttl("0s"), None);
        assert_eq!(ttl("1h30m"), Some(Duration::from_secs(5400)));
        let e = load("proxy:\n  remoteurl: http://up\n  ttl: soon\n", &[]).unwrap_err();
        assert!(e.contains("proxy.ttl"), "{e}");
    }

    #[test]
    fn the_environment_can_make_a_registry_a_proxy() {
        let p = load("", &[("REGISTRY_PROXY_REMOTEURL", "http://127.0.0.1:5000")])
            .unwrap()
            .unwrap();
        assert_eq!(p.remote_url, "http://127.0.0.1:5000");
        assert_eq!(load("proxy:\n", &[]).unwrap(), None, "an empty section");
    }

    #[test]
    fn unusable_settings_name_the_key() {
        for (yaml, says) in [
            ("proxy:\n  remoteurl: ftp://up\n", "proxy.remoteurl"),
            (
                "proxy:\n  remoteurl: http://u:p@up\n",
                "proxy.username and proxy.password",
            ),
            ("proxy:\n  remoteurl: http://up/v2/\n", "without a path"),
            ("proxy:\n  username: u\n", "without proxy.remoteurl"),
        ] {
            let e = load(yaml, &[]).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
