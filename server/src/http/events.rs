//! The notification events the handlers emit, one function per kind; each
//! is called after the operation succeeded and only queues the event
//! ([`crate::notify::Notifier::publish`] never waits). Without
//! `notifications` they return at once.

use super::AppState;
use super::request::Req;
use crate::notify::{
    Action, Actor, BLOB_MEDIA_TYPE, Event, Notifier, RequestRecord, Target, manifest_references,
};
use crate::registry::{Digest, Reference, RepoName, media_type_of};

/// A manifest stored by PUT (action `push`), with the media type a GET
/// answers for it (its `mediaType`, else inferred from its shape).
pub(super) fn manifest_pushed(
    state: &AppState,
    req: &Req,
    name: &RepoName,
    reference: &Reference,
    digest: &Digest,
    body: &[u8],
) {
    manifest_event(
        state,
        req,
        Action::Push,
        name,
        reference,
        digest,
        None,
        body,
    );
}

/// A manifest served by GET (action `pull`; HEAD is no pull).
pub(super) fn manifest_pulled(
    state: &AppState,
    req: &Req,
    name: &RepoName,
    reference: &Reference,
    m: &crate::registry::StoredManifest,
) {
    manifest_event(
        state,
        req,
        Action::Pull,
        name,
        reference,
        &m.digest,
        Some(&m.media_type),
        &m.body,
    );
}

/// A manifest (by digest) or a tag deleted (action `delete`): the target
/// names the repository and the digest or the tag.
pub(super) fn manifest_deleted(
    state: &AppState,
    req: &Req,
    name: &RepoName,
    reference: &Reference,
) {
    emit(state, req, Action::Delete, |_| {
        let (digest, tag) = match reference {
            Reference::Digest(d) => (Some(d.to_string()), None),
            Reference::Tag(t) => (None, Some(t.to_string())),
        };
        Target {
            digest,
            tag,
            repository: name.to_string(),
            ..Target::default()
        }
    });
}

/// A blob stored by an upload's final PUT or a monolithic POST (action
/// `push`).
pub(super) fn blob_pushed(state: &AppState, req: &Req, name: &RepoName, d: &Digest, size: u64) {
    blob_event(state, req, Action::Push, name, d, Some(size), None);
}

/// A blob served by GET, also by redirect (action `pull`); `size` is
/// unknown for a pull-through fetch whose upstream did not announce it.
pub(super) fn blob_pulled(
    state: &AppState,
    req: &Req,
    name: &RepoName,
    d: &Digest,
    size: Option<u64>,
) {
    blob_event(state, req, Action::Pull, name, d, size, None);
}

/// A blob linked from `from` (action `mount`).
pub(super) fn blob_mounted(
    state: &AppState,
    req: &Req,
    name: &RepoName,
    from: &RepoName,
    d: &Digest,
    size: u64,
) {
    blob_event(state, req, Action::Mount, name, d, Some(size), Some(from));
}

/// A blob unlinked from a repository (action `delete`).
pub(super) fn blob_deleted(state: &AppState, req: &Req, name: &RepoName, d: &Digest) {
    emit(state, req, Action::Delete, |_| Target {
        digest: Some(d.to_string()),
        repository: name.to_string(),
        ..Target::default()
    });
}

#[allow(clippy::too_many_arguments)]
fn manifest_event(
    state: &AppState,
    req: &Req,
    action: Action,
    name: &RepoName,
    reference: &Reference,
    digest: &Digest,
    media_type: Option<&str>,
    body: &[u8],
) {
    emit(state, req, action, |n| Target {
        media_type: Some(media_type.map_or_else(|| media_type_of(body), str::to_owned)),
        digest: Some(digest.to_string()),
        size: Some(body.len() as u64),
        length: Some(body.len() as u64),
        repository: name.to_string(),
        url: Some(content_url(
            state,
            n,
            req,
            &format!("/v2/{name}/manifests/{digest}"),
        )),
        tag: match reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        },
        references: if n.include_references() {
            manifest_references(body)
        } else {
            Vec::new()
        },
        ..Target::default()
    });
}

fn blob_event(
    state: &AppState,
    req: &Req,
    action: Action,
    name: &RepoName,
    d: &Digest,
    size: Option<u64>,
    from: Option<&RepoName>,
) {
    emit(state, req, action, |n| Target {
        media_type: Some(BLOB_MEDIA_TYPE.to_owned()),
        digest: Some(d.to_string()),
        size,
        length: size,
        repository: name.to_string(),
        from_repository: from.map(ToString::to_string),
        url: Some(content_url(state, n, req, &format!("/v2/{name}/blobs/{d}"))),
        ..Target::default()
    });
}

/// Builds the event (the target only when notifications are on) with
/// the request, actor and source records, and queues it.
fn emit(state: &AppState, req: &Req, action: Action, target: impl FnOnce(&Notifier) -> Target) {
    let Some(n) = &state.notifier else {
        return;
    };
    let header = |h| req.header(&h).unwrap_or_default().to_owned();
    let request = RequestRecord {
        id: req.request_id.clone(),
        addr: req.peer.map(|p| p.to_string()).unwrap_or_default(),
        host: req.host.clone().unwrap_or_default(),
        method: req.method.to_string(),
        useragent: header(axum::http::header::USER_AGENT),
    };
    let actor = Actor {
        name: req.user.clone(),
    };
    n.publish(Event::new(
        action,
        target(n),
        request,
        actor,
        n.source().clone(),
    ));
}

/// The absolute URL of `path` on this registry: on `http.host` when set,
/// else on the host the client asked (`https` when the registry serves
/// TLS or a proxy says `X-Forwarded-Proto: https`).
fn content_url(state: &AppState, n: &Notifier, req: &Req, path: &str) -> String {
    if let Some(base) = &state.base_url {
        return format!("{}{path}", base.trim_end_matches('/'));
    }
    let forwarded = req.header(&axum::http::HeaderName::from_static("x-forwarded-proto"));
    let scheme = match forwarded {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(_) => "http",
        None if n.tls() => "https",
        None => "http",
    };
    format!(
        "{scheme}://{}{path}",
        req.host.as_deref().unwrap_or("localhost")
    )
}
