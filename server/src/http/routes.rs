//! Parsing `/v2/...` paths. Repository names contain slashes, so routes are
//! recognised from the end of the path, where the endpoint's fixed words
//! are; whatever precedes them is the name.

use axum::http::Method;
use percent_encoding::percent_decode_str;

use crate::auth::{Action, Scope};

/// An API endpoint with its still-unvalidated parts.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/` itself.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(String, String),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(String, String),
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart(String),
    /// `/v2/<name>/blobs/uploads/<uuid>`.
    Upload(String, String),
    /// `/v2/<name>/tags/list`.
    Tags(String),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(String, String),
}

impl Route {
    /// The route's template name, for metrics and logs (never the raw
    /// path: names and digests would make every request a new series).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) => "blob_upload_start",
            Route::Upload(..) => "blob_upload",
            Route::Tags(_) => "tags_list",
            Route::Referrers(..) => "referrers",
        }
    }
}

/// The route of a request path, `None` if it is no API endpoint.
/// Segments are percent-decoded (clients may send `sha256%3A…`).
pub fn parse(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let segs: Vec<String> = rest
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let n = segs.len();
    let name = |k: usize| segs[..n - k].join("/");
    let tail = |k: usize| -> Vec<&str> {
        segs[n.saturating_sub(k)..]
            .iter()
            .map(String::as_str)
            .collect()
    };
    if n >= 3 && tail(2) == ["tags", "list"] {
        return Some(Route::Tags(name(2)));
    }
    if n >= 3 && tail(2) == ["blobs", "uploads"] {
        return Some(Route::UploadStart(name(2)));
    }
    if n >= 4 && tail(3)[..2] == ["blobs", "uploads"] {
        let last = segs[n - 1].clone();
        return Some(if last.is_empty() {
            Route::UploadStart(name(3))
        } else {
            Route::Upload(name(3), last)
        });
    }
    if n >= 3 {
        let last = segs[n - 1].clone();
        match segs[n - 2].as_str() {
            "manifests" => return Some(Route::Manifest(name(2), last)),
            "blobs" => return Some(Route::Blob(name(2), last)),
            "referrers" => return Some(Route::Referrers(name(2), last)),
            _ => {}
        }
    }
    None
}

impl Route {
    /// What a request with `method` on this route needs: `/v2/` only
    /// credentials; reads `pull`; uploads, manifest PUTs and mounts
    /// `pull,push` on the target (and `pull` on the mount's source,
    /// `mount_from`); deletes `delete`; the catalog `registry:catalog:*`.
    /// A method the route does not serve counts as a write (it is refused
    /// with 405 after authentication).
    pub fn needs(&self, method: &Method, mount_from: Option<&str>) -> Vec<Scope> {
        let read = matches!(*method, Method::GET | Method::HEAD);
        let write = [Action::Pull, Action::Push];
        match self {
            Route::Base => Vec::new(),
            Route::Catalog => vec![Scope::catalog()],
            Route::Tags(name) | Route::Referrers(name, _) if read => {
                vec![Scope::repository(name, &[Action::Pull])]
            }
            Route::Manifest(name, _) | Route::Blob(name, _) if read => {
                vec![Scope::repository(name, &[Action::Pull])]
            }
            Route::Manifest(name, _) | Route::Blob(name, _) if *method == Method::DELETE => {
                vec![Scope::repository(name, &[Action::Delete])]
            }
            Route::UploadStart(name) => {
                let mut needs = vec![Scope::repository(name, &write)];
                if let Some(from) = mount_from.filter(|f| *f != name) {
                    needs.push(Scope::repository(from, &[Action::Pull]));
                }
                needs
            }
            Route::Tags(name)
            | Route::Referrers(name, _)
            | Route::Manifest(name, _)
            | Route::Blob(name, _)
            | Route::Upload(name, _) => vec![Scope::repository(name, &write)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_needs_its_scope() {
        let needs = |path: &str, method: Method, from: Option<&str>| -> Vec<String> {
            parse(path)
                .unwrap()
                .needs(&method, from)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(needs("/v2/", Method::GET, None).is_empty());
        assert_eq!(
            needs("/v2/_catalog", Method::GET, None),
            ["registry:catalog:*"]
        );
        for path in [
            "/v2/a/b/manifests/t",
            "/v2/a/b/blobs/sha256:x",
            "/v2/a/b/tags/list",
            "/v2/a/b/referrers/sha256:x",
        ] {
            assert_eq!(
                needs(path, Method::GET, None),
                ["repository:a/b:pull"],
                "{path}"
            );
            assert_eq!(
                needs(path, Method::HEAD, None),
                ["repository:a/b:pull"],
                "{path}"
            );
        }
        assert_eq!(
            needs("/v2/a/manifests/t", Method::PUT, None),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            needs("/v2/a/manifests/t", Method::DELETE, None),
            ["repository:a:delete"]
        );
        assert_eq!(
            needs("/v2/a/blobs/sha256:x", Method::DELETE, None),
            ["repository:a:delete"]
        );
        assert_eq!(
            needs("/v2/a/blobs/uploads/u", Method::PATCH, None),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            needs("/v2/a/blobs/uploads/u", Method::GET, None),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            needs("/v2/a/blobs/uploads/", Method::POST, Some("b")),
            ["repository:a:pull,push", "repository:b:pull"]
        );
        assert_eq!(
            needs("/v2/a/blobs/uploads/", Method::POST, Some("a")),
            ["repository:a:pull,push"]
        );
    }

    #[test]
    fn routes_are_read_from_the_end() {
        let r = parse;
        assert_eq!(r("/v2/"), Some(Route::Base));
        assert_eq!(r("/v2"), Some(Route::Base));
        assert_eq!(r("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            r("/v2/a/b/manifests/latest"),
            Some(Route::Manifest("a/b".into(), "latest".into()))
        );
        assert_eq!(
            r("/v2/a/manifests/blobs/uploads/"),
            Some(Route::UploadStart("a/manifests".into()))
        );
        assert_eq!(
            r("/v2/x/blobs/uploads"),
            Some(Route::UploadStart("x".into()))
        );
        assert_eq!(
            r("/v2/x/blobs/uploads/abc"),
            Some(Route::Upload("x".into(), "abc".into()))
        );
        assert_eq!(
            r("/v2/x/blobs/sha256%3Aab"),
            Some(Route::Blob("x".into(), "sha256:ab".into()))
        );
        assert_eq!(r("/v2/x/y/tags/list"), Some(Route::Tags("x/y".into())));
        assert_eq!(
            r("/v2/x/referrers/sha256:ab"),
            Some(Route::Referrers("x".into(), "sha256:ab".into()))
        );
        assert_eq!(r("/v2/x"), None);
        assert_eq!(r("/v3/x/tags/list"), None);
        assert_eq!(r("/v2/manifests/x"), None);
    }
}
