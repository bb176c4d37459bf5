//! The one table of keys that distribution (or a regstore extension still
//! to come) defines and regstore does not act on, and what happens to each.
//!
//! Every key here is taken out of the file before the typed sections read
//! it, so a section struct holds only what regstore uses, and a key that is
//! in neither place is reported as unknown. When a later feature starts
//! using a key, its entry leaves this table and a field joins its section.

use serde_json::Value;

/// What a key this table names does to startup.
enum Rule {
    /// Startup stops: running without what the key asks for (access
    /// control, a different meaning of URLs) would not be the registry the
    /// file describes.
    Refuse(&'static str),
    /// Startup stops unless the value is one that asks for nothing (`true`
    /// from the predicate).
    RefuseUnless(fn(&Value) -> bool, &'static str),
    /// A warning names the key; startup goes on.
    Ignore(&'static str),
    /// Accepted silently: regstore does not need it, for the reason given.
    Unneeded(&'static str),
}

/// Keys by dotted path (lower case, as distribution spells them).
const KEYS: &[(&str, Rule)] = &[
    (
        "auth.silly",
        Rule::Refuse(
            "(distribution's test-only scheme) is not supported: use auth.htpasswd or auth.token",
        ),
    ),
    (
        "http.tls.letsencrypt",
        Rule::Refuse("is not supported; give certificate and key files"),
    ),
    (
        "http.prefix",
        Rule::RefuseUnless(
            |v| matches!(v.as_str(), Some("" | "/")),
            "is not supported yet: serve the registry at / (a proxy can map a prefix)",
        ),
    ),
    (
        "http.net",
        Rule::RefuseUnless(
            |v| v.as_str() == Some("tcp"),
            "other than tcp is not supported",
        ),
    ),
    (
        "http.tls.ciphersuites",
        Rule::Ignore("regstore offers rustls's safe default suites"),
    ),
    (
        "http.secret",
        Rule::Unneeded(
            "upload state lives in storage, so no shared secret is needed to continue an upload on another instance",
        ),
    ),
    ("log.hooks", Rule::Ignore("")),
    ("storage.tag", Rule::Ignore("")),
    ("reporting", Rule::Ignore("")),
    ("compatibility", Rule::Ignore("")),
    ("policy", Rule::Ignore("")),
    (
        "catalog.maxentries",
        Rule::Ignore("(distribution 3) a catalog page holds at most 1000 names, or n"),
    ),
    (
        "middleware.registry",
        Rule::Ignore("only middleware.storage is supported"),
    ),
    (
        "middleware.repository",
        Rule::Ignore("only middleware.storage is supported"),
    ),
];

/// Takes every key of [`KEYS`] out of `doc`, adding a warning for each
/// ignored one that is set.
///
/// # Errors
/// The first refused key that is set, named with why.
pub(super) fn take(doc: &mut Value, warnings: &mut Vec<String>) -> Result<(), String> {
    for (path, rule) in KEYS {
        let Some(value) = remove(doc, path) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        match rule {
            Rule::Refuse(why) => return Err(format!("`{path}` {why}")),
            Rule::RefuseUnless(harmless, why) if !harmless(&value) => {
                return Err(format!("`{path}` {why} (found {value})"));
            }
            Rule::RefuseUnless(..) => {}
            Rule::Unneeded(why) => tracing::debug!("`{path}` is accepted and not needed: {why}"),
            Rule::Ignore("") => {
                warnings.push(format!("`{path}` is not used by regstore and is ignored"));
            }
            Rule::Ignore(why) => warnings.push(format!(
                "`{path}` is not used by regstore and is ignored: {why}"
            )),
        }
    }
    Ok(())
}

/// Removes the value at the dotted `path`; `None` when it is absent.
fn remove(doc: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = match path.rsplit_once('.') {
        Some((parent, last)) => (parent, last),
        None => ("", path),
    };
    let mut cur = doc;
    for seg in parent.split('.').filter(|s| !s.is_empty()) {
        cur = cur.as_object_mut()?.get_mut(seg)?;
    }
    cur.as_object_mut()?.remove(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_does_what_it_says() {
        let mut warnings = Vec::new();
        let mut doc = serde_json::json!({
            "http": {"secret": "s", "prefix": "/", "tls": {"ciphersuites": ["x"]}},
            "reporting": {"bugsnag": {}},
            "compatibility": null,
        });
        take(&mut doc, &mut warnings).unwrap();
        assert_eq!(doc, serde_json::json!({"http": {"tls": {}}}));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("`http.tls.ciphersuites`"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("`reporting` is not used"),
            "{warnings:?}"
        );

        let mut doc = serde_json::json!({"http": {"prefix": "/v"}});
        let e = take(&mut doc, &mut warnings).unwrap_err();
        assert!(e.starts_with("`http.prefix` is not supported yet"), "{e}");
        assert!(e.contains("\"/v\""), "{e}");
        let mut doc = serde_json::json!({"auth": {"silly": {"realm": "x"}}});
        let e = take(&mut doc, &mut warnings).unwrap_err();
        assert!(e.starts_with("`auth.silly`"), "{e}");
    }

    #[test]
    fn catalog_is_read_but_distribution_3s_maxentries_is_not() {
        let mut warnings = Vec::new();
        let mut doc = serde_json::json!({"catalog": {"index": "sql", "maxentries": 100}});
        take(&mut doc, &mut warnings).unwrap();
        assert_eq!(doc, serde_json::json!({"catalog": {"index": "sql"}}));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`catalog.maxentries`"), "{warnings:?}");
    }
}
