//! `auth.access` (a regstore extension): per-repository access rules, read
//! into [`AccessRules`]. The semantics live in [`crate::auth::access`].
//!
//! ```yaml
//! auth:
//!   access:
//!     admins: [alice]
//!     groups: {devs: [bob, carol]}
//!     repositories:
//!       "team/**": {devs: [pull, push], "*": [pull]}
//!       "public/*": {anonymous: [pull]}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::auth::{AccessRules, AccessSettings, Action};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    admins: Vec<String>,
    groups: BTreeMap<String, Vec<String>>,
    repositories: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Section {
    /// The checked rules.
    ///
    /// # Errors
    /// An action other than `pull`, `push`, `delete`, a bad glob or a
    /// reserved group name; the message names the key.
    pub(super) fn resolve(self) -> Result<AccessRules, String> {
        let mut repositories = Vec::new();
        for (glob, grants) in self.repositories {
            let mut checked = Vec::new();
            for (who, actions) in grants {
                let actions = actions
                    .iter()
                    .map(|a| match a.as_str() {
                        "pull" => Ok(Action::Pull),
                        "push" => Ok(Action::Push),
                        "delete" => Ok(Action::Delete),
                        other => Err(format!(
                            "auth.access.repositories.{glob:?}.{who:?}: unknown action {other:?}: use pull, push or delete"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                checked.push((who, actions));
            }
            repositories.push((glob, checked));
        }
        AccessRules::new(AccessSettings {
            admins: self.admins,
            groups: self.groups.into_iter().collect(),
            repositories,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::{Action, Identity};
    use crate::config::Config;

    fn load(access: &str) -> Result<Config, String> {
        Config::from_yaml(
            &format!(
                "version: 0.1\nstorage:\n  inmemory:\nauth:\n  htpasswd:\n    realm: r\n    path: /p\n  access:\n{access}"
            ),
            "t.yml",
            [],
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn rules_are_read_and_applied() {
        let c = load(
            "    admins: [alice]\n    groups: {devs: [bob]}\n    repositories:\n      \"team/**\": {devs: [pull, push], \"*\": [pull]}\n      \"public/*\": {anonymous: [pull]}\n",
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let rules = c.auth.access.expect("access rules");
        let bob = Identity::User("bob".into());
        assert!(rules.allows(&bob, "team/app", Action::Push));
        assert!(!rules.allows(&bob, "team/app", Action::Delete));
        assert!(rules.allows(&Identity::Anonymous, "public/x", Action::Pull));
        assert!(rules.allows(&Identity::User("alice".into()), "any", Action::Delete));
        let c = load("    {}\n").unwrap();
        assert!(c.auth.access.is_some(), "an empty section still applies");
        let c = Config::from_yaml("storage:\n  inmemory:\n", "t.yml", []).unwrap();
        assert!(c.auth.access.is_none(), "no section: no rules");
    }

    #[test]
    fn an_unknown_action_or_bad_glob_stops_startup_naming_the_key() {
        let e = load("    repositories:\n      \"team/**\": {devs: [pull, pussh]}\n").unwrap_err();
        assert!(
            e.contains(
                "auth.access.repositories.\"team/**\".\"devs\": unknown action \"pussh\": use pull, push or delete"
            ),
            "{e}"
        );
        let e = load("    repositories:\n      \"team**\": {devs: [pull]}\n").unwrap_err();
        assert!(
            e.contains("auth.access.repositories: \"team**\": `**` must be a whole path segment"),
            "{e}"
        );
        let e = load("    groups: {\"*\": [bob]}\n").unwrap_err();
        assert!(
            e.contains("auth.access.groups: a group may not be called \"*\""),
            "{e}"
        );
        let e = load("    admins: alice\n").unwrap_err();
        assert!(e.contains("auth.access.admins: invalid type"), "{e}");
    }
}
