//! `notifications`: webhooks told of pushes, pulls, mounts and deletes
//! (distribution's keys: `events.includereferences`, and per endpoint
//! `name`, `disabled`, `url`, `headers`, `timeout`, `threshold`,
//! `backoff`, `ignoredmediatypes`, `ignore.mediatypes`, `ignore.actions`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::value::{ConfigDuration, flag};
use crate::notify::Action;

/// Default `timeout` of an endpoint's request (distribution's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `threshold`: consecutive failures before an endpoint is
/// reported failing (distribution's).
pub const DEFAULT_THRESHOLD: u32 = 10;
/// Default `backoff`: the first wait after a failed delivery
/// (distribution's).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// `notifications`, as `regstore serve` applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotificationsConfig {
    /// `events.includereferences`: manifest events list the descriptors
    /// the manifest references (`target.references`).
    pub include_references: bool,
    /// The endpoints that are not `disabled`, in file order.
    pub endpoints: Vec<EndpointConfig>,
}

/// One entry of `notifications.endpoints`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `name`: unique, names the endpoint in logs and statistics.
    pub name: String,
    /// `url`: where envelopes are POSTed (`http` or `https`).
    pub url: url::Url,
    /// `headers`: sent with every request, one pair per value.
    pub headers: Vec<(String, String)>,
    /// `timeout`: the longest one delivery may take (0 or absent: 1s).
    pub timeout: Duration,
    /// `threshold`: consecutive failed deliveries after which the
    /// endpoint is reported failing (0 or absent: 10).
    pub threshold: u32,
    /// `backoff`: the wait after a failed delivery, doubled after each
    /// further failure (0 or absent: 1s).
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes`: events whose target
    /// has one of these media types are not sent here.
    pub ignored_media_types: BTreeSet<String>,
    /// `ignore.actions`: events with these actions are not sent here.
    pub ignored_actions: BTreeSet<Action>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    events: Events,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Events {
    #[serde(deserialize_with = "flag")]
    includereferences: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Endpoint {
    name: String,
    #[serde(deserialize_with = "flag")]
    disabled: Option<bool>,
    url: String,
    headers: BTreeMap<String, Value>,
    timeout: Option<ConfigDuration>,
    threshold: Option<u32>,
    backoff: Option<ConfigDuration>,
    ignoredmediatypes: Vec<String>,
    ignore: Ignore,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Ignore {
    mediatypes: Vec<String>,
    actions: Vec<String>,
}

impl Section {
    /// The checked settings; disabled endpoints are left out (after their
    /// names are checked for uniqueness).
    ///
    /// # Errors
    /// An endpoint without `name` or `url`, a repeated name, a `url` that
    /// is not http(s), a header that is not valid HTTP, an unknown action
    /// in `ignore.actions`; each message names the key.
    pub(super) fn resolve(self) -> Result<NotificationsConfig, String> {
        let mut names = BTreeSet::new();
        let mut endpoints = Vec::new();
        for (i, e) in self.endpoints.into_iter().enumerate() {
            let at = format!("notifications.endpoints[{i}]");
            if e.name.trim().is_empty() {
                return Err(format!("{at}.name is missing: name the endpoint"));
            }
            let at = format!("notifications.endpoints[{i}] ({})", e.name);
            if !names.insert(e.name.clone()) {
                return Err(format!(
                    "{at}.name: another endpoint has this name; names must be unique"
                ));
            }
            let url = url::Url::parse(&e.url).map_err(|err| {
                format!(
                    "{at}.url {:?}: {err} (give http(s)://host[:port]/path)",
                    e.url
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "{at}.url {:?}: must be an http or https URL with a host",
                    e.url
                ));
            }
            let headers = super::http::header_pairs(&format!("{at}.headers"), e.headers)?;
            let mut ignored_actions = BTreeSet::new();
            for a in &e.ignore.actions {
                let action = a.parse::<Action>().map_err(|()| {
                    format!(
                        "{at}.ignore.actions: unknown action {a:?} (push, pull, mount or delete)"
                    )
                })?;
                ignored_actions.insert(action);
            }
            if e.disabled.unwrap_or(false) {
                continue;
            }
            let or = |d: Option<ConfigDuration>, default: Duration| match d {
                Some(ConfigDuration(d)) if !d.is_zero() => d,
                _ => default,
            };
            endpoints.push(EndpointConfig {
                name: e.name,
                url,
                headers,
                timeout: or(e.timeout, DEFAULT_TIMEOUT),
                threshold: e.threshold.filter(|t| *t > 0).unwrap_or(DEFAULT_THRESHOLD),
                backoff: or(e.backoff, DEFAULT_BACKOFF),
                ignored_media_types: e
                    .ignoredmediatypes
                    .into_iter()
                    .chain(e.ignore.mediatypes)
                    .collect(),
                ignored_actions,
            });
        }
        Ok(NotificationsConfig {
            include_references: self.events.includereferences.unwrap_or(false),
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(section: &str) -> Result<NotificationsConfig, String> {
        Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\n{section}"),
            "t.yml",
            [],
        )
        .map(|c| {
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
            c.notifications
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn distributions_keys_are_read() {
        let n = load(
            "notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:
        Authorization: [Bearer x]
        X-Two: [a, b]
      timeout: 500ms
      threshold: 5
      backoff: 2s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
          - text/plain
        actions:
          - pull
          - mount
",
        )
        .unwrap();
        assert!(n.include_references);
        assert_eq!(n.endpoints.len(), 1);
        let e = &n.endpoints[0];
        assert_eq!(e.name, "alistener");
        assert_eq!(e.url.as_str(), "https://my.listener.com/event");
        assert_eq!(
            e.headers,
            vec![
                ("Authorization".to_owned(), "Bearer x".to_owned()),
                ("X-Two".to_owned(), "a".to_owned()),
                ("X-Two".to_owned(), "b".to_owned()),
            ]
        );
        assert_eq!(e.timeout, Duration::from_millis(500));
        assert_eq!(e.threshold, 5);
        assert_eq!(e.backoff, Duration::from_secs(2));
        assert_eq!(
            e.ignored_media_types,
            BTreeSet::from(["application/octet-stream".into(), "text/plain".into()])
        );
        assert_eq!(
            e.ignored_actions,
            BTreeSet::from([Action::Pull, Action::Mount])
        );
    }

    #[test]
    fn defaults_are_distributions_and_disabled_endpoints_are_left_out() {
        let n = load(
            "notifications:\n  endpoints:\n    - name: a\n      url: http://127.0.0.1:1/e\n      threshold: 0\n      timeout: 0s\n    - name: b\n      url: http://x/\n      disabled: true\n",
        )
        .unwrap();
        assert!(!n.include_references);
        assert_eq!(n.endpoints.len(), 1, "b is disabled");
        let e = &n.endpoints[0];
        assert_eq!(
            (e.timeout, e.threshold, e.backoff),
            (DEFAULT_TIMEOUT, DEFAULT_THRESHOLD, DEFAULT_BACKOFF)
        );
        assert!(e.headers.is_empty() && e.ignored_actions.is_empty());
        assert_eq!(load("").unwrap(), NotificationsConfig::default());
    }

    #[test]
    fn unusable_endpoints_name_the_key() {
        for (endpoints, says) in [
            (
                "    - url: http://x/\n",
                "notifications.endpoints[0].name is missing",
            ),
            (
                "    - name: a\n      url: http://x/\n    - name: a\n      url: http://y/\n      disabled: true\n",
                "notifications.endpoints[1] (a).name: another endpoint has this name",
            ),
            ("    - name: a\n", "notifications.endpoints[0] (a).url \"\""),
            (
                "    - name: a\n      url: ftp://x/\n",
                "notifications.endpoints[0] (a).url \"ftp://x/\": must be an http or https URL",
            ),
            (
                "    - name: a\n      url: http://x/\n      headers:\n        \"bad name\": [v]\n",
                "notifications.endpoints[0] (a).headers: bad name",
            ),
            (
                "    - name: a\n      url: http://x/\n      ignore:\n        actions: [pul]\n",
                "notifications.endpoints[0] (a).ignore.actions: unknown action \"pul\"",
            ),
            (
                "    - name: a\n      url: http://x/\n      backoff: soon\n",
                "notifications.endpoints[0].backoff",
            ),
            (
                "    - name: a\n      url: http://x/\n      threshold: -1\n",
                "notifications.endpoints[0].threshold",
            ),
        ] {
            let e = load(&format!("notifications:\n  endpoints:\n{endpoints}")).unwrap_err();
            assert!(e.contains(says), "{endpoints}: {e}");
        }
    }

    #[test]
    fn the_environment_can_set_endpoint_keys() {
        let c = Config::from_yaml(
            "version: 0.1\nstorage:\n  inmemory:\nnotifications:\n  endpoints:\n    - name: a\n      url: http://x/\n",
            "t.yml",
            [(
                "REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES".to_owned(),
                "true".to_owned(),
            )],
        )
        .unwrap();
        assert!(c.notifications.include_references);
    }
}
