//! Where everything lives on the storage driver: docker/distribution's
//! layout, so a tree written by distribution is served by regstore and the
//! other way round. No other module builds a storage path.
//!
//! ```text
//! /docker/registry/v2/
//!   blobs/<alg>/<hex[0..2]>/<hex>/data                      blob and manifest bytes
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                              "<alg>:<hex>": blob is in the repo
//!     _manifests/revisions/<alg>/<hex>/link                 manifest is in the repo
//!     _manifests/tags/<tag>/current/link                    digest the tag points at
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link          every digest the tag has had
//!     _manifests/referrers/<alg>/<hex>/<alg>/<hex>/link     (regstore) subject → referrer
//!     _uploads/<uuid>/data                                  the upload's writer
//!     _uploads/<uuid>/startedat                             RFC 3339 time the upload began (ids that
//!                                                           do not carry it: distribution's, older regstore's)
//!     _uploads/<uuid>.ended                                 (regstore) the upload ended: completed,
//!                                                           cancelled or discarded
//!     _uploads/<uuid>/hashstates/regstore-<alg>/<offset>    (regstore) saved hash state
//! ```
//!
//! The regstore additions live where distribution never looks: its
//! catalog stops at `_manifests`, its garbage collector lists only
//! `revisions` and `tags`, and it reads hash states only under
//! `hashstates/<alg>` (regstore's are `regstore-<alg>`, since they are not
//! Go's encoding). A referrer link whose revision is gone is ignored.
//! Uploads regstore starts have no `startedat` (their ids carry the time)
//! and end with a `<uuid>.ended` file: distribution's upload purge dates
//! an upload by its `startedat` only and skips one without, and it takes
//! no file named `<uuid>.ended` for an upload, so it leaves both to
//! regstore's purge.

use super::digest::{Algorithm, Digest, DigestError};
use super::names::{RepoName, Tag};

/// The root of the registry tree.
pub const ROOT: &str = "/docker/registry/v2";
/// The lease object that one garbage collection at a time holds
/// (regstore; where distribution never looks).
pub const GC_LEASE: &str = "/docker/registry/v2/regstore/gc/lease";
/// The directory that holds every repository.
pub const REPOSITORIES: &str = "/docker/registry/v2/repositories";

/// The bytes of a blob (layers, configs and manifests alike).
pub fn blob_data(d: &Digest) -> String {
    format!(
        "{ROOT}/blobs/{}/{}/{}/data",
        d.algorithm().as_str(),
        &d.hex()[..2],
        d.hex()
    )
}

/// The directory of a blob (deleted whole by garbage collection).
pub fn blob_dir(d: &Digest) -> String {
    format!(
        "{ROOT}/blobs/{}/{}/{}",
        d.algorithm().as_str(),
        &d.hex()[..2],
        d.hex()
    )
}

/// A repository's directory.
pub fn repository(name: &RepoName) -> String {
    format!("{REPOSITORIES}/{name}")
}

/// The link that puts a blob in a repository.
pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_layers/{}/{}/link",
        d.algorithm().as_str(),
        d.hex()
    )
}

/// The link that puts a manifest in a repository.
pub fn revision_link(name: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_manifests/revisions/{}/{}/link",
        d.algorithm().as_str(),
        d.hex()
    )
}

/// The directory of a repository's `_manifests` (it, or `_layers`, makes
/// a repository).
pub fn manifests_dir(name: &RepoName) -> String {
    format!("{REPOSITORIES}/{name}/_manifests")
}

/// The directory of a repository's `_layers` links.
pub fn layers_dir(name: &RepoName) -> String {
    format!("{REPOSITORIES}/{name}/_layers")
}

/// The directory holding one directory per tag.
pub fn tags_dir(name: &RepoName) -> String {
    format!("{REPOSITORIES}/{name}/_manifests/tags")
}

/// The directory of one tag.
pub fn tag_dir(name: &RepoName, tag: &Tag) -> String {
    format!("{REPOSITORIES}/{name}/_manifests/tags/{tag}")
}

/// The link holding the digest a tag points at.
pub fn tag_current_link(name: &RepoName, tag: &Tag) -> String {
    format!("{REPOSITORIES}/{name}/_manifests/tags/{tag}/current/link")
}

/// The tag's history entry for one digest.
pub fn tag_index_link(name: &RepoName, tag: &Tag, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_manifests/tags/{tag}/index/{}/{}/link",
        d.algorithm().as_str(),
        d.hex()
    )
}

/// The directory listing every referrer of `subject`, one subdirectory per algorithm.
pub fn referrers_dir(name: &RepoName, subject: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{name}/_manifests/referrers/{}/{}",
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// The link recording that manifest `referrer` has `subject` as its subject.
pub fn referrer_link(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}/{}/link",
        referrers_dir(name, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    )
}

/// The directory of one upload session.
pub fn upload_dir(name: &RepoName, uuid: &str) -> String {
    format!("{REPOSITORIES}/{name}/_uploads/{uuid}")
}

/// The upload's data (written through a resumable driver writer).
pub fn upload_data(name: &RepoName, uuid: &str) -> String {
    format!("{REPOSITORIES}/{name}/_uploads/{uuid}/data")
}

/// The upload's lease: which request of which instance may use it now
/// (see [`super::lease`]).
pub fn upload_lease(name: &RepoName, uuid: &str) -> String {
    format!("{REPOSITORIES}/{name}/_uploads/{uuid}/lease")
}

/// When the upload began (RFC 3339), as distribution writes it.
pub fn upload_started_at(name: &RepoName, uuid: &str) -> String {
    format!("{REPOSITORIES}/{name}/_uploads/{uuid}/startedat")
}

/// The marker of an upload that ended (completed, cancelled or
/// discarded): an id that carries its start time
/// ([`super::upload_started`]) would otherwise look like an upload that
/// has received nothing yet. Beside the upload's directory, not in it, so
/// it can be written after that is removed.
pub fn upload_ended(name: &RepoName, uuid: &str) -> String {
    format!("{REPOSITORIES}/{name}/_uploads/{uuid}.ended")
}

/// The directory of the upload's saved hash states for `alg`.
pub fn upload_hash_states(name: &RepoName, uuid: &str, alg: Algorithm) -> String {
    format!(
        "{REPOSITORIES}/{name}/_uploads/{uuid}/hashstates/regstore-{}",
        alg.as_str()
    )
}

/// The saved hash state after `offset` bytes.
pub fn upload_hash_state(name: &RepoName, uuid: &str, alg: Algorithm, offset: u64) -> String {
    format!("{}/{offset}", upload_hash_states(name, uuid, alg))
}

/// A link file's content: the digest followed by nothing (distribution
/// writes no newline and tolerates surrounding whitespace when reading).
pub fn link_content(d: &Digest) -> String {
    d.to_string()
}

/// The digest a link file's bytes hold, surrounding whitespace allowed (the
/// reading side of [`link_content`]).
///
/// # Errors
/// The bytes are not a digest.
pub fn parse_link(bytes: &[u8]) -> Result<Digest, DigestError> {
    String::from_utf8_lossy(bytes).trim().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_distribution() {
        let d = Digest::of(Algorithm::Sha256, b"");
        let name = RepoName::parse("library/busybox").unwrap();
        let tag = Tag::parse("latest").unwrap();
        assert_eq!(
            blob_data(&d),
            "/docker/registry/v2/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/data"
        );
        assert_eq!(
            layer_link(&name, &d),
            "/docker/registry/v2/repositories/library/busybox/_layers/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/link"
        );
        assert_eq!(
            tag_current_link(&name, &tag),
            "/docker/registry/v2/repositories/library/busybox/_manifests/tags/latest/current/link"
        );
        assert_eq!(
            upload_data(&name, "u"),
            "/docker/registry/v2/repositories/library/busybox/_uploads/u/data"
        );
    }
}
