//! `auth.access`: who may do what on which repositories (a regstore
//! extension, as zot's `accessControl`; distribution has none).
//!
//! Pure logic: [`AccessRules`] answers whether an [`Identity`] holds a
//! [`Scope`]. It never looks at credentials (the scheme verified them
//! before) and never builds HTTP answers beyond the one 403 of
//! [`AccessRules::authorize`].
//!
//! The model, as the README states it:
//! - **admins** may do everything everywhere, and see the whole catalog;
//! - **repositories** maps a glob to grants, `principal: [actions]`, where
//!   a principal is a group (a key of `groups`), `"*"` (any authenticated
//!   user), `anonymous` (anyone, even without credentials; authenticated
//!   users get these grants too) or else a user name (from htpasswd, or a
//!   token's subject);
//! - globs match whole names: `*` matches within one path segment (never a
//!   `/`), a segment `**` matches zero or more whole segments (`team/**`
//!   matches `team`, `team/app` and `team/a/b`);
//! - of the rules matching a repository, the **most specific** alone
//!   applies: the one with most characters that are not `*`, then the one
//!   with fewest `*`; equally specific rules all apply (their grants add
//!   up). File order never matters;
//! - a repository no rule matches is refused to all but admins;
//! - the catalog (`registry:catalog:*`) is open to every authenticated
//!   user and, when some rule grants `anonymous` pull, to anonymous
//!   callers; it lists only what the caller may pull.

use std::collections::{HashMap, HashSet};

use axum::http::StatusCode;
use serde_json::json;

use super::{Action, Identity, Resource, Scope};
use crate::http::ApiError;

/// The principal that stands for any authenticated user.
pub const ANY_USER: &str = "*";

/// The principal that stands for anyone, with or without credentials.
pub const ANONYMOUS: &str = "anonymous";

/// Checked `auth.access` rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    admins: HashSet<String>,
    /// Group names by member.
    groups_of: HashMap<String, HashSet<String>>,
    rules: Vec<Rule>,
}

/// One `repositories` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    pattern: String,
    segments: Vec<String>,
    grants: Vec<(Principal, Vec<Action>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Principal {
    Anonymous,
    AnyUser,
    Group(String),
    User(String),
}

/// What one glob grants: principal → actions, as written.
pub type Grants = Vec<(String, Vec<Action>)>;

/// `auth.access` as written, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct AccessSettings {
    /// Users who may do everything.
    pub admins: Vec<String>,
    /// Group name → members.
    pub groups: Vec<(String, Vec<String>)>,
    /// Glob → (principal → actions).
    pub repositories: Vec<(String, Grants)>,
}

impl AccessRules {
    /// Checks `settings` into rules.
    ///
    /// # Errors
    /// A group named `*` or `anonymous` (those names are principals of
    /// their own), an empty glob or one with `**` inside a segment (it
    /// must be a whole segment); the message names the key.
    pub fn new(settings: AccessSettings) -> Result<AccessRules, String> {
        let mut groups_of: HashMap<String, HashSet<String>> = HashMap::new();
        let mut group_names = HashSet::new();
        for (group, members) in settings.groups {
            if group == ANY_USER || group == ANONYMOUS {
                return Err(format!(
                    "auth.access.groups: a group may not be called {group:?}, which names {} in rules: rename it",
                    if group == ANONYMOUS {
                        "anyone"
                    } else {
                        "any authenticated user"
                    }
                ));
            }
            for m in members {
                groups_of.entry(m).or_default().insert(group.clone());
            }
            group_names.insert(group);
        }
        let mut rules = Vec::new();
        for (pattern, grants) in settings.repositories {
            let segments = glob_segments(&pattern)
                .map_err(|e| format!("auth.access.repositories: {pattern:?}: {e}"))?;
            let grants = grants
                .into_iter()
                .map(|(who, actions)| {
                    let principal = match who.as_str() {
                        ANONYMOUS => Principal::Anonymous,
                        ANY_USER => Principal::AnyUser,
                        _ if group_names.contains(&who) => Principal::Group(who),
                        _ => Principal::User(who),
                    };
                    (principal, actions)
                })
                .collect();
            rules.push(Rule {
                pattern,
                segments,
                grants,
            });
        }
        Ok(AccessRules {
            admins: settings.admins.into_iter().collect(),
            groups_of,
            rules,
        })
    }

    /// Whether `who` may do `action` on the repository `name`.
    pub fn allows(&self, who: &Identity, name: &str, action: Action) -> bool {
        if who.user().is_some_and(|u| self.admins.contains(u)) {
            return true;
        }
        let mut best: Option<(usize, usize)> = None;
        let mut allowed = false;
        for rule in self.rules.iter().filter(|r| r.matches(name)) {
            let rank = rule.specificity();
            if best.is_some_and(|b| rank < b) {
                continue;
            }
            let grants = rule
                .grants
                .iter()
                .any(|(p, actions)| actions.contains(&action) && self.is(who, p));
            if best != Some(rank) {
                best = Some(rank);
                allowed = grants;
            } else {
                allowed |= grants;
            }
        }
        allowed
    }

    /// Whether `who` holds every action of `scope`. The catalog is
    /// granted to every user, and to anonymous callers when some rule
    /// grants `anonymous` pull.
    pub fn holds(&self, who: &Identity, scope: &Scope) -> bool {
        self.refused(who, scope).is_none()
    }

    /// 403 `DENIED` unless `who` holds every scope of `needs`.
    ///
    /// # Errors
    /// The first action refused, naming the user, action and repository
    /// (detail: `{"name", "action"}`).
    pub fn authorize(&self, who: &Identity, needs: &[Scope]) -> Result<(), ApiError> {
        for scope in needs {
            let Some(action) = self.refused(who, scope) else {
                continue;
            };
            let caller = match who.user() {
                Some(u) => format!("user {u:?}"),
                None => "an anonymous caller".to_owned(),
            };
            let (message, detail) = match (&scope.resource, action) {
                (Resource::Repository(name), Some(action)) => (
                    format!(
                        "{caller} may not {} repository {name} (auth.access)",
                        action.as_str()
                    ),
                    json!({ "name": name, "action": action.as_str() }),
                ),
                _ => (
                    format!("{caller} may not list the catalog (auth.access)"),
                    json!({ "name": "catalog", "action": "*" }),
                ),
            };
            return Err(ApiError::new(StatusCode::FORBIDDEN, "DENIED", message).detail(detail));
        }
        Ok(())
    }

    /// What of `scope` is refused to `who`: `None` if nothing,
    /// `Some(None)` for the catalog, `Some(Some(action))` for the first
    /// action refused on a repository.
    fn refused(&self, who: &Identity, scope: &Scope) -> Option<Option<Action>> {
        match &scope.resource {
            Resource::Catalog => {
                let open = who.user().is_some() || self.anonymous_may_pull_somewhere();
                (!open).then_some(None)
            }
            Resource::Repository(name) => scope
                .actions
                .iter()
                .find(|a| !self.allows(who, name, **a))
                .map(|a| Some(*a)),
        }
    }

    fn anonymous_may_pull_somewhere(&self) -> bool {
        self.rules.iter().any(|r| {
            r.grants
                .iter()
                .any(|(p, a)| *p == Principal::Anonymous && a.contains(&Action::Pull))
        })
    }

    /// Whether the grant to `principal` reaches `who`.
    fn is(&self, who: &Identity, principal: &Principal) -> bool {
        match (principal, who.user()) {
            (Principal::Anonymous, _) => true,
            (_, None) => false,
            (Principal::AnyUser, Some(_)) => true,
            (Principal::User(u), Some(user)) => u == user,
            (Principal::Group(g), Some(user)) => {
                self.groups_of.get(user).is_some_and(|gs| gs.contains(g))
            }
        }
    }
}

impl Rule {
    fn matches(&self, name: &str) -> bool {
        let name: Vec<&str> = name.split('/').collect();
        segments_match(&self.segments, &name)
    }

    /// Higher is more specific: characters that are not `*`, then fewer
    /// `*`.
    fn specificity(&self) -> (usize, usize) {
        let stars = self.pattern.chars().filter(|c| *c == '*').count();
        (self.pattern.chars().count() - stars, usize::MAX - stars)
    }
}

/// The segments of a glob.
///
/// # Errors
/// An empty glob or segment, or `**` that is not a whole segment.
fn glob_segments(pattern: &str) -> Result<Vec<String>, String> {
    if pattern.is_empty() {
        return Err("an empty glob matches nothing: write `**` for every repository".into());
    }
    pattern
        .split('/')
        .map(|s| {
            if s.is_empty() {
                Err("empty path segment (a doubled or trailing `/`)".to_owned())
            } else if s.contains("**") && s != "**" {
                Err(format!(
                    "`**` must be a whole path segment (found {s:?}); use `*` within a segment"
                ))
            } else {
                Ok(s.to_owned())
            }
        })
        .collect()
}

/// Whether the glob `segments` match the name `name`, segment by segment.
fn segments_match(pattern: &[String], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=name.len()).any(|skip| segments_match(rest, &name[skip..]))
        }
        Some((first, rest)) => match name.split_first() {
            Some((seg, tail)) => segment_matches(first, seg) && segments_match(rest, tail),
            None => false,
        },
    }
}

/// Whether one glob segment (with `*` for any run of characters) matches
/// one name segment.
fn segment_matches(glob: &str, seg: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = seg.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole segment is literal
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AccessRules {
        use Action::{Delete, Pull, Push};
        let grants = |g: &[(&str, &[Action])]| -> Grants {
            g.iter()
                .map(|(p, a)| ((*p).to_owned(), a.to_vec()))
                .collect()
        };
        AccessRules::new(AccessSettings {
            admins: vec!["alice".into()],
            groups: vec![("devs".into(), vec!["bob".into(), "carol".into()])],
            repositories: vec![
                (
                    "team/**".into(),
                    grants(&[("devs", &[Pull, Push]), ("*", &[Pull])]),
                ),
                ("team/secret".into(), grants(&[("carol", &[Pull])])),
                ("team/*".into(), grants(&[("devs", &[Pull, Push, Delete])])),
                ("public/*".into(), grants(&[("anonymous", &[Pull])])),
                ("public/app".into(), grants(&[("dave", &[Push])])),
                ("*/ops".into(), grants(&[("erin", &[Push])])),
                ("ops/*".into(), grants(&[("erin", &[Pull])])),
                ("lib-*-x".into(), grants(&[("*", &[Pull])])),
            ],
        })
        .unwrap()
    }

    #[test]
    fn each_user_repository_and_action_is_allowed_or_denied_by_the_most_specific_rule() {
        let user = |u: &str| Identity::User(u.into());
        let anon = Identity::Anonymous;
        let (alice, bob, carol, dave, erin, zed) = (
            user("alice"),
            user("bob"),
            user("carol"),
            user("dave"),
            user("erin"),
            user("zed"),
        );
        use Action::{Delete, Pull, Push};
        #[rustfmt::skip]
        let table: &[(&Identity, &str, Action, bool, &str)] = &[
            (&alice, "anything/at/all", Delete, true, "admins may do everything"),
            (&alice, "team/secret", Push, true, "admins even where a rule names others"),
            (&bob, "team/app", Push, true, "team/* (devs) beats team/**"),
            (&bob, "team/app", Delete, true, "team/*: fewer stars than team/**"),
            (&bob, "team/a/b", Push, true, "team/** reaches nested names"),
            (&bob, "team/a/b", Delete, false, "team/* does not reach a/b"),
            (&bob, "team", Pull, true, "** matches zero segments"),
            (&zed, "team/a/b", Pull, true, "* is any authenticated user"),
            (&zed, "team/a/b", Push, false, "only devs push"),
            (&anon, "team/a/b", Pull, false, "* is not anonymous"),
            (&carol, "team/secret", Pull, true, "the literal rule applies alone"),
            (&carol, "team/secret", Push, false, "team/* and team/** give way to it"),
            (&bob, "team/secret", Pull, false, "bob's group grants do not reach it"),
            (&anon, "public/lib", Pull, true, "anonymous pull"),
            (&zed, "public/lib", Pull, true, "anonymous grants reach users too"),
            (&anon, "public/lib", Push, false, "anonymous may only pull"),
            (&anon, "public/a/b", Pull, false, "* stays within one segment"),
            (&dave, "public/app", Push, true, "public/app beats public/*"),
            (&anon, "public/app", Pull, false, "public/* gives way to public/app"),
            (&erin, "ops/ops", Push, true, "*/ops and ops/* are equally specific: both apply"),
            (&erin, "ops/ops", Pull, true, "both apply"),
            (&erin, "x/ops", Pull, false, "only */ops matches"),
            (&erin, "ops/other", Push, false, "only ops/* matches"),
            (&zed, "lib-a-x", Pull, true, "* inside a segment"),
            (&zed, "lib-a-y", Pull, false, "the suffix must match"),
            (&zed, "lib-x", Pull, false, "prefix and suffix may not overlap"),
            (&bob, "elsewhere", Pull, false, "no rule: only admins"),
        ];
        let r = rules();
        for (who, repo, action, expected, why) in table {
            assert_eq!(
                r.allows(who, repo, *action),
                *expected,
                "{who:?} {} {repo}: {why}",
                action.as_str()
            );
        }
    }

    #[test]
    fn authorize_refuses_with_403_denied_naming_the_action_and_repository() {
        let r = rules();
        let bob = Identity::User("bob".into());
        assert!(
            r.authorize(
                &bob,
                &[Scope::repository("team/a/b", &[Action::Pull, Action::Push])],
            )
            .is_ok()
        );
        let e = r
            .authorize(
                &bob,
                &[
                    Scope::repository("team/app", &[Action::Pull, Action::Push]),
                    Scope::repository("elsewhere", &[Action::Pull]),
                ],
            )
            .unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "DENIED"));
        assert_eq!(
            e.message,
            "user \"bob\" may not pull repository elsewhere (auth.access)"
        );
        assert!(r.authorize(&bob, &[Scope::catalog()]).is_ok());
        assert!(r.holds(&Identity::Anonymous, &Scope::catalog()));
        let closed = AccessRules::new(AccessSettings::default()).unwrap();
        assert!(!closed.holds(&Identity::Anonymous, &Scope::catalog()));
    }

    #[test]
    fn bad_globs_and_reserved_group_names_are_refused_naming_them() {
        let with_glob = |g: &str| {
            AccessRules::new(AccessSettings {
                repositories: vec![(g.into(), Vec::new())],
                ..AccessSettings::default()
            })
        };
        let e = with_glob("team/**x").unwrap_err();
        assert!(e.contains("\"team/**x\": `**` must be a whole"), "{e}");
        assert!(with_glob("").unwrap_err().contains("empty glob"));
        assert!(
            with_glob("a//b")
                .unwrap_err()
                .contains("empty path segment")
        );
        let e = AccessRules::new(AccessSettings {
            groups: vec![("anonymous".into(), vec!["x".into()])],
            ..AccessSettings::default()
        })
        .unwrap_err();
        assert!(e.contains("may not be called \"anonymous\""), "{e}");
    }
}
