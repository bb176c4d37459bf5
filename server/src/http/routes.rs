//! Parsing `/v2/...` paths. Repository names contain slashes, so routes are
//! recognised from the end of the path, where the endpoint's fixed words
//! are; whatever precedes them is the name.

use percent_encoding::percent_decode_str;

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

#[cfg(test)]
mod tests {
    use super::*;

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
