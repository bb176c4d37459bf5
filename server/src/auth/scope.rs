//! What a request needs, in the Docker token protocol's terms:
//! `repository:<name>:<actions>` and `registry:catalog:*`.
//!
//! One table for every authenticator: htpasswd ignores scopes (a valid user
//! may do anything, as in distribution), a bearer token's `access` claim
//! must cover them, and the access rules decide by them.

use std::fmt;

/// An action on a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs, put manifests, mount.
    Push,
    /// Delete manifests and blobs.
    Delete,
}

impl Action {
    /// The protocol's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// What a scope is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// One repository, by name.
    Repository(String),
    /// The catalog (`registry:catalog:*`).
    Catalog,
}

/// One resource and the actions a request needs on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The resource.
    pub resource: Resource,
    /// The actions, sorted (empty for the catalog, whose action is `*`).
    pub actions: Vec<Action>,
}

impl Scope {
    /// `repository:<name>:<actions>`.
    pub fn repository(name: &str, actions: &[Action]) -> Scope {
        let mut actions = actions.to_vec();
        actions.sort();
        actions.dedup();
        Scope {
            resource: Resource::Repository(name.to_owned()),
            actions,
        }
    }

    /// `registry:catalog:*`.
    pub fn catalog() -> Scope {
        Scope {
            resource: Resource::Catalog,
            actions: Vec::new(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Resource::Catalog => f.write_str("registry:catalog:*"),
            Resource::Repository(name) => {
                let actions: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
                write!(f, "repository:{name}:{}", actions.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_print_as_the_token_protocol_spells_them() {
        assert_eq!(
            Scope::repository("a/b", &[Action::Push, Action::Pull, Action::Push]).to_string(),
            "repository:a/b:pull,push"
        );
        assert_eq!(Scope::catalog().to_string(), "registry:catalog:*");
    }
}
