//! The lists: `/v2/<name>/tags/list`, `/v2/_catalog` (both paginated with
//! `n` and `last`, and a `Link` to the next page) and
//! `/v2/<name>/referrers/<digest>` (an image index, filtered by
//! `artifactType`). With `auth.access`, the catalog lists only the
//! repositories the caller may pull. `/v2/_catalog?q=TERM` searches the
//! catalog index (a regstore extension).

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::request::{Req, digest_param, page_size, repo};
use super::response::{hv, json_response, page_link};
use super::{ApiError, AppState, MAX_CATALOG_ENTRIES};
use crate::auth::Identity;
use crate::registry::{Digest, RepoName};

/// A request on a repository's tag list.
pub(super) async fn handle_tags(
    state: &AppState,
    name: &RepoName,
    req: &Req,
) -> Result<Response, ApiError> {
    match req.method {
        Method::GET => tags(state, name, req).await,
        ref m => Err(ApiError::method_not_allowed(m, "a tag list")),
    }
}

/// A request on the catalog, by `who`.
pub(super) async fn handle_catalog(
    state: &AppState,
    who: &Identity,
    req: &Req,
) -> Result<Response, ApiError> {
    match req.method {
        Method::GET => catalog(state, who, req).await,
        ref m => Err(ApiError::method_not_allowed(m, "the catalog")),
    }
}

/// A request on the referrers of a manifest.
pub(super) async fn handle_referrers(
    state: &AppState,
    name: &RepoName,
    subject: &Digest,
    req: &Req,
) -> Result<Response, ApiError> {
    match req.method {
        Method::GET => referrers(state, name, subject, req).await,
        ref m => Err(ApiError::method_not_allowed(m, "referrers")),
    }
}

async fn tags(state: &AppState, name: &RepoName, req: &Req) -> Result<Response, ApiError> {
    let all = match &state.proxy {
        None => state.registry.tags(name).await?,
        Some(proxy) => proxy.tags(&state.registry, name).await?,
    };
    let n = page_size(req, usize::MAX)?;
    let (page, more) = tags_page(&all, req.param("last"), n);
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let body = serde_json::to_string(&TagList {
        name: name.as_str(),
        tags: page,
    })
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("the tag list could not be written as JSON: {e}"),
        )
    })?;
    let mut resp = json_response(StatusCode::OK, body);
    if more && let Some(last) = page.last() {
        resp.headers_mut().insert(
            header::LINK,
            page_link(&format!("/v2/{name}/tags/list"), &[], n, last),
        );
    }
    Ok(resp)
}

/// The page of the sorted `tags` after `last` (all when `None`), at most
/// `n` long, and whether more follow; a slice, nothing copied.
fn tags_page<'a>(tags: &'a [String], last: Option<&str>, n: usize) -> (&'a [String], bool) {
    let start = last.map_or(0, |l| tags.partition_point(|t| t.as_str() <= l));
    let rest = &tags[start..];
    (&rest[..n.min(rest.len())], rest.len() > n)
}

/// The repositories `who` may pull (all, without access rules): a page
/// holds up to `n` of them when more exist, so the `Link` stays right.
///
/// `q=TERM` (a regstore extension) searches: only names containing TERM,
/// paginated the same way (the `Link` keeps `q`). It needs a catalog index
/// (400 naming `catalog.index` otherwise), and TERM may hold only what a
/// repository name may (400 naming the character otherwise).
async fn catalog(state: &AppState, who: &Identity, req: &Req) -> Result<Response, ApiError> {
    let n = page_size(req, MAX_CATALOG_ENTRIES)?.min(MAX_CATALOG_ENTRIES);
    let last = match req.param("last") {
        Some(l) => Some(repo(l)?),
        None => None,
    };
    let term = match req.param("q") {
        None => None,
        Some(q) => {
            let index = state.registry.catalog_index();
            if index.is_storage() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "searching repositories (q=) needs a catalog index: set catalog.index to file or sql (it is storage)",
                )
                .detail(json!({ "key": "catalog.index", "index": index.kind() })));
            }
            let term = crate::catalog::search_term(q)
                .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", m))?;
            Some(term)
        }
    };
    let visible = |name: &str| state.auth.may_pull(who, name);
    let (names, more) = state
        .registry
        .catalog(n, last.as_ref(), term, &visible)
        .await?;
    let mut resp = json_response(StatusCode::OK, json!({ "repositories": names }).to_string());
    if more && let Some(last) = names.last() {
        let keep: Vec<(&str, &str)> = term.map(|t| ("q", t)).into_iter().collect();
        resp.headers_mut()
            .insert(header::LINK, page_link("/v2/_catalog", &keep, n, last));
    }
    Ok(resp)
}

async fn referrers(
    state: &AppState,
    name: &RepoName,
    subject: &Digest,
    req: &Req,
) -> Result<Response, ApiError> {
    let artifact_type = req.param("artifactType");
    let last = req.param("last").map(digest_param).transpose()?;
    let (list, next) = state
        .registry
        .referrers(name, subject, artifact_type, last.as_ref())
        .await?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": list.iter().map(|r| r.to_descriptor()).collect::<Vec<_>>(),
    });
    let mut resp = json_response(StatusCode::OK, index.to_string());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
    );
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            HeaderName::from_static("oci-filters-applied"),
            HeaderValue::from_static("artifactType"),
        );
    }
    if let Some(next) = next {
        // Further pages, as the spec allows: the same query after `next`.
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(at) = artifact_type {
            q.append_pair("artifactType", at);
        }
        q.append_pair("last", &next.to_string());
        let link = format!(
            "</v2/{name}/referrers/{subject}?{}>; rel=\"next\"",
            q.finish()
        );
        resp.headers_mut().insert(header::LINK, hv(&link));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::tags_page;

    #[test]
    fn tags_page_resumes_after_last_and_says_whether_more_follow() {
        let tags: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(tags_page(&tags, None, 2), (&tags[..2], true));
        assert_eq!(tags_page(&tags, Some("b"), 2), (&tags[2..], false));
        assert_eq!(tags_page(&tags, Some("bb"), 1), (&tags[2..3], true));
        assert_eq!(tags_page(&tags, Some("d"), 5), (&tags[4..], false));
        assert_eq!(tags_page(&tags, None, usize::MAX), (&tags[..], false));
        assert_eq!(tags_page(&tags, None, 0), (&tags[..0], true));
        assert_eq!(tags_page(&[], None, 0), (&tags[..0], false));
    }
}
