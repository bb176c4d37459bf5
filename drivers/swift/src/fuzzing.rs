//! Entry points for the fuzz targets in `fuzz/` (see `docs/fuzzing.md`):
//! the parsers of Swift's answers that are not public on their own. Not a
//! stable API; nothing else should call these. (Keystone's token response
//! and its timestamps are public already: [`crate::auth::v3_session`],
//! [`crate::auth::parse_iso8601`].)

use object_store::ObjectMeta;

/// One page of a JSON container listing as the driver reads it: each
/// entry's object (`None` for a `subdir` entry).
///
/// # Errors
/// The message of the error the listing would fail with.
pub fn listing_page(body: &[u8]) -> Result<Vec<Option<ObjectMeta>>, String> {
    let entries = crate::store::parse_page(body, "fuzz").map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .map(|e| e.meta().map_err(|e| e.to_string()))
        .collect()
}
