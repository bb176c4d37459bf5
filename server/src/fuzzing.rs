//! Entry points for the fuzz targets in `fuzz/` (see `docs/fuzzing.md`):
//! the parsers of network input that are not public on their own. Not a
//! stable API; nothing else should call these.

use crate::registry::{Digest, ManifestKind, ManifestUrls, RegistryError};

/// The `Range` header of a blob GET for a blob of `size` bytes:
/// `Ok(Some((start, length)))` for one satisfiable range (then
/// `length >= 1` and `start + length <= size`), `Ok(None)` for no range (or
/// an ignored multi-range), `Err(())` for an unsatisfiable or malformed one.
// The HTTP layer's own signature, unchanged: it answers 416 for `Err`.
#[allow(clippy::result_unit_err)]
pub fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    crate::http::parse_range(value, size)
}

/// The `Content-Range` header of an upload chunk: `Some((start, end))`
/// (inclusive, as written; not checked against each other), `None` when it
/// is not `<start>-<end>`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    crate::http::parse_content_range(value)
}

/// What a manifest push would make of a body: the fields the registry acts
/// on after validation.
#[derive(Debug)]
pub struct ManifestSummary {
    /// The manifest's kind.
    pub kind: ManifestKind,
    /// Blobs (config, non-foreign layers) the repository must hold.
    pub blobs: Vec<Digest>,
    /// Child manifests (index entries) the repository must hold.
    pub manifests: Vec<Digest>,
    /// `subject`, if any.
    pub subject: Option<Digest>,
    /// `artifactType`, else the config's media type (image manifests).
    pub artifact_type: Option<String>,
    /// Foreign layers: where (e.g. `layers[2]`) and their URLs.
    pub foreign: Vec<(String, Vec<String>)>,
}

/// Parses and validates `body` as a manifest push with `content_type`
/// would, without storing anything; the foreign layers' URLs are checked
/// against `urls` as `validation.manifests.urls` would.
///
/// # Errors
/// [`RegistryError::ManifestInvalid`] (or another [`RegistryError`]) as the
/// push would answer.
pub fn parse_manifest(
    body: &[u8],
    content_type: Option<&str>,
    urls: &ManifestUrls,
) -> Result<ManifestSummary, RegistryError> {
    let parsed = crate::registry::parse_manifest(body, content_type)?;
    for (at, list) in &parsed.foreign {
        urls.check(at, list)?;
    }
    let crate::registry::Parsed {
        kind,
        blobs,
        manifests,
        subject,
        artifact_type,
        annotations: _,
        foreign,
    } = parsed;
    Ok(ManifestSummary {
        kind,
        blobs,
        manifests,
        subject,
        artifact_type,
        foreign,
    })
}
