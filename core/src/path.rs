//! Validated storage paths.
//!
//! A storage path is `/` (the root, valid only where a directory is meant) or
//! one or more segments `/<seg>` where each segment is non-empty and made of
//! `A-Z a-z 0-9 . _ -` (distribution's `^(/[A-Za-z0-9._-]+)+$`). The segments
//! `.` and `..` are refused as well: distribution's regular expression lets
//! them through and relies on upper layers never producing them, which a
//! filesystem backend cannot afford.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};

/// An absolute, validated path in a driver's namespace.
///
/// Ordering (`Ord`) is the walk order of the contract: segment by segment,
/// each segment compared by bytes, a parent before its children. So `/a`,
/// `/a/x`, `/a-b` is sorted, although plain string order puts `/a-b` before
/// `/a/x`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoragePath(String);

impl StoragePath {
    /// The root directory `/`.
    pub fn root() -> Self {
        StoragePath("/".to_owned())
    }

    /// Validates `s`. `/` is accepted (it is the root directory); callers that
    /// need a file path check [`StoragePath::is_root`].
    ///
    /// # Errors
    /// [`Error::InvalidPath`] naming the rule `s` breaks.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "/" {
            return Ok(Self::root());
        }
        if s.is_empty() {
            return Err(Error::invalid_path(s, "empty path"));
        }
        if !s.starts_with('/') {
            return Err(Error::invalid_path(s, "path must start with '/'"));
        }
        for seg in s[1..].split('/') {
            check_segment(seg).map_err(|reason| Error::invalid_path(s, reason))?;
        }
        Ok(StoragePath(s.to_owned()))
    }

    /// The path as a string, e.g. `/docker/registry/v2`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The segments, none for the root.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
        self.0[1..].split('/').filter(|s| !s.is_empty())
    }

    /// Number of segments (0 for the root).
    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    /// The last segment, `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// The parent directory, `None` for the root.
    pub fn parent(&self) -> Option<StoragePath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) => Some(Self::root()),
            Some(i) => Some(StoragePath(self.0[..i].to_owned())),
            None => None,
        }
    }

    /// This path with one more segment.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] when `name` is not a valid segment.
    pub fn join(&self, name: &str) -> Result<StoragePath> {
        // Built without `format!`: a listing joins every entry it reads.
        let base = if self.is_root() { "" } else { self.0.as_str() };
        let mut joined = String::with_capacity(base.len() + 1 + name.len());
        joined.push_str(base);
        joined.push('/');
        joined.push_str(name);
        check_segment(name).map_err(|reason| Error::invalid_path(joined.clone(), reason))?;
        Ok(StoragePath(joined))
    }

    /// This path extended by a relative `rest` of one or more segments
    /// (`"a/b"`); validates every segment.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] when a segment of `rest` is invalid.
    pub fn join_relative(&self, rest: &str) -> Result<StoragePath> {
        let mut p = self.clone();
        for seg in rest.split('/') {
            p = p.join(seg)?;
        }
        Ok(p)
    }

    /// True when `other` lies strictly below `self` (whole segments: `/a` is
    /// an ancestor of `/a/b` but not of `/ab`).
    pub fn is_ancestor_of(&self, other: &StoragePath) -> bool {
        if self.is_root() {
            return !other.is_root();
        }
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0.as_bytes()[self.0.len()] == b'/'
    }

    /// Where the name of a child of `self` starts in the child's path (the
    /// length of `self` and a `/`).
    pub(crate) fn child_name_offset(&self) -> usize {
        if self.is_root() { 1 } else { self.0.len() + 1 }
    }

    /// The part of `self` below `base` without a leading `/` (`""` when equal);
    /// `None` when `self` is not `base` or below it.
    pub fn relative_to(&self, base: &StoragePath) -> Option<&str> {
        if self == base {
            Some("")
        } else if base.is_ancestor_of(self) {
            Some(&self.0[base.child_name_offset()..])
        } else {
            None
        }
    }
}

/// Checks one path segment; the error is the rule it breaks.
pub fn check_segment(seg: &str) -> std::result::Result<(), &'static str> {
    if seg.is_empty() {
        return Err("empty path segment (double or trailing '/')");
    }
    if seg == "." || seg == ".." {
        return Err("'.' and '..' segments are not allowed");
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("segments may only contain A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

impl Ord for StoragePath {
    /// Segment by segment, each by bytes; computed as one byte-wise pass
    /// in which `/` ranks below every other byte. The two agree: at the
    /// first byte where two paths differ, a `/` (or the end) on one side
    /// means its segment there is a prefix of the other's, which sorts
    /// first; two other bytes differ inside the same segment. Sorting the
    /// children of a large directory (a tag list, `repositories/`) compares
    /// paths that share a long prefix, so this is on the listing paths.
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let rank = |c: u8| if c == b'/' { 0 } else { c };
        match (a.get(same), b.get(same)) {
            (Some(&x), Some(&y)) => rank(x).cmp(&rank(y)),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}

impl PartialOrd for StoragePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for StoragePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StoragePath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl PartialEq<str> for StoragePath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StoragePath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StoragePath {
        StoragePath::parse(s).unwrap()
    }

    #[test]
    fn rejects_malformed_paths_with_the_rule() {
        for (bad, why) in [
            ("", "empty"),
            ("abc", "start with"),
            ("//bcd", "empty path segment"),
            ("/abc_123/", "empty path segment"),
            ("/a/../b", "'..'"),
            ("/a b", "may only contain"),
            ("/ä", "may only contain"),
        ] {
            let err = StoragePath::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn walk_order_puts_children_before_later_siblings() {
        let mut v = [p("/a-b"), p("/a/x"), p("/a"), p("/"), p("/a/x/y"), p("/b")];
        v.sort();
        let s: Vec<_> = v.iter().map(|x| x.as_str()).collect();
        assert_eq!(s, ["/", "/a", "/a/x", "/a/x/y", "/a-b", "/b"]);
    }

    #[test]
    fn byte_wise_order_agrees_with_segment_order() {
        let all = [
            "/", "/a", "/a-b", "/a.b", "/a/x", "/a/x-y", "/a/x/y", "/ab", "/a_", "/A", "/a/-",
            "/a-/b", "/a.", "/a/.b", "/0", "/z/z/z", "/a/b/c/d", "/a/b-c",
        ];
        for x in all {
            for y in all {
                let want = p(x).segments().cmp(p(y).segments());
                assert_eq!(p(x).cmp(&p(y)), want, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn ancestry_is_segment_bounded() {
        assert!(p("/a").is_ancestor_of(&p("/a/b")));
        assert!(!p("/a").is_ancestor_of(&p("/ab")));
        assert!(!p("/a").is_ancestor_of(&p("/a")));
        assert!(StoragePath::root().is_ancestor_of(&p("/a")));
        assert_eq!(p("/a/b/c").relative_to(&p("/a")), Some("b/c"));
        assert_eq!(p("/a/b").relative_to(&StoragePath::root()), Some("a/b"));
        assert_eq!(p("/ab").relative_to(&p("/a")), None);
    }

    #[test]
    fn parent_and_join_round_trip() {
        assert_eq!(p("/a/b").parent(), Some(p("/a")));
        assert_eq!(p("/a").parent(), Some(StoragePath::root()));
        assert_eq!(StoragePath::root().parent(), None);
        assert_eq!(StoragePath::root().join("a").unwrap(), p("/a"));
        assert_eq!(p("/a").join_relative("b/c").unwrap(), p("/a/b/c"));
        assert!(p("/a").join("b/c").is_err());
    }
}
