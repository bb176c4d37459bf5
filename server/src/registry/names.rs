//! Repository names, tags and references, with the OCI Distribution Spec's
//! rules. Every string that reaches the storage layout went through here, so
//! a malformed name can never become an invalid storage path (or a 500).

use std::fmt;

use super::digest::Digest;

/// Longest repository name distribution accepts (name plus slashes).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// A validated repository name such as `library/busybox`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A validated tag such as `v1.2.3` or `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What a manifest URL names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// By tag.
    Tag(Tag),
    /// By digest.
    Digest(Digest),
}

/// What kind of name was refused (it chooses the API error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A repository name (`NAME_INVALID`).
    Repository,
    /// A tag (`TAG_INVALID`).
    Tag,
    /// A reference that is neither a valid tag nor a digest
    /// (`DIGEST_INVALID`).
    Reference,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Repository => "repository name",
            NameKind::Tag => "tag",
            NameKind::Reference => "reference",
        })
    }
}

/// Why a name or reference was refused; the message names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {given:?} is invalid: {rule}")]
pub struct NameError {
    /// What was refused.
    pub what: NameKind,
    /// The string as given (truncated to 300 characters).
    pub given: String,
    /// The rule it breaks.
    pub rule: String,
}

impl RepoName {
    /// Validates `s` against
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
    /// and the 255-character limit.
    ///
    /// # Errors
    /// [`NameError`] naming the component and the rule.
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        let err = |rule: String| NameError {
            what: NameKind::Repository,
            given: s.chars().take(300).collect(),
            rule,
        };
        if s.is_empty() {
            return Err(err("it is empty".into()));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(err(format!("longer than {MAX_NAME_LEN} characters")));
        }
        for component in s.split('/') {
            check_component(component)
                .map_err(|rule| err(format!("component {component:?}: {rule}")))?;
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty (no leading, trailing or double slashes)");
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("uppercase letters are not allowed");
    }
    let bytes = c.as_bytes();
    if !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit() {
        return Err("must start with a lowercase letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        match b {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return Err("only lowercase letters, digits, '.', '_', '__' and '-' are allowed"),
        }
        match bytes.get(i) {
            Some(n) if n.is_ascii_lowercase() || n.is_ascii_digit() => {}
            None => return Err("must end with a lowercase letter or digit"),
            Some(_) => return Err("separators must be followed by a letter or digit"),
        }
    }
    Ok(())
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Tag {
    /// Validates `s` against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    ///
    /// # Errors
    /// [`NameError`] naming the rule.
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        let err = |rule: &str| NameError {
            what: NameKind::Tag,
            given: s.chars().take(300).collect(),
            rule: rule.to_owned(),
        };
        let first = s.bytes().next().ok_or_else(|| err("it is empty"))?;
        if s.len() > MAX_TAG_LEN {
            return Err(err("longer than 128 characters"));
        }
        if !(first.is_ascii_alphanumeric() || first == b'_') {
            return Err(err("must start with a letter, digit or '_'"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(err("only letters, digits, '_', '.' and '-' are allowed"));
        }
        Ok(Tag(s.to_owned()))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Reference {
    /// A digest if `s` contains `:`, else a tag.
    ///
    /// # Errors
    /// [`NameError`] for a malformed tag or digest.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') {
            s.parse::<Digest>()
                .map(Reference::Digest)
                .map_err(|e| NameError {
                    what: NameKind::Reference,
                    given: e.given,
                    rule: e.reason.to_owned(),
                })
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["a", "library/busybox", "a/b/c", "a.b_c__d---e/f0", "0"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a_",
            "a:b",
            "Library/x",
            "a/.b",
            "a/b.",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
        let e = RepoName::parse("Foo").unwrap_err();
        assert!(e.to_string().contains("uppercase"), "{e}");
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse(&"x".repeat(128)).is_ok());
        assert!(Tag::parse(&"x".repeat(129)).is_err());
        for ok in ["latest", "_x", "V1.2-rc_3"] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a b"] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse("sha256:zz").is_err());
    }
}
