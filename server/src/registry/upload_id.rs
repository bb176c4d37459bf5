//! Upload session ids that carry the time they were made, so starting an
//! upload stores nothing.
//!
//! An id is a UUID (RFC 9562 version 8, "custom"): 40 bits of start time
//! (seconds since the Unix epoch), 66 random bits, the version and variant
//! bits, and a 16-bit check (the first bytes of a SHA-256 of the rest).
//! The time is what distribution keeps in `_uploads/<uuid>/startedat`; with
//! it in the id, a POST writes nothing, and a small blob pushed with POST
//! then PUT creates no file for its upload at all.
//!
//! The check is not a secret: anyone who may push to a repository may
//! also start uploads in it, and an id made up with a valid check is just
//! an upload that has received nothing, whose time bounds nothing but its
//! own life. What the check gives is that a mistyped or foreign id answers
//! `BLOB_UPLOAD_UNKNOWN` instead of starting an upload nobody asked for;
//! 66 random bits keep one client from guessing another's upload.
//!
//! Ids that are not version 8 (regstore before this scheme wrote version
//! 4, with a `startedat` file) are still accepted; for them the storage
//! says whether the upload exists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::{RegistryError, Result};

/// How far in the future an id's time may be (clocks of instances that
/// share the storage differ a little) before it is refused.
pub const CLOCK_SKEW: Duration = Duration::from_secs(600);

/// A fresh upload session id, carrying the current time.
pub fn new_upload_id() -> String {
    id_at(SystemTime::now(), uuid::Uuid::new_v4().into_bytes())
}

/// The id for an upload started at `started`, its random bits from
/// `random` (the bytes of the time, version, variant and check are
/// overwritten).
fn id_at(started: SystemTime, random: [u8; 16]) -> String {
    let secs = started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut b = random;
    b[..5].copy_from_slice(&secs.to_be_bytes()[3..]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let check = check(&b);
    b[14..].copy_from_slice(&check);
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

fn check(b: &[u8; 16]) -> [u8; 2] {
    let h = Sha256::new()
        .chain_update(b"regstore upload id\0")
        .chain_update(&b[..14])
        .finalize();
    [h[0], h[1]]
}

/// The session id in its canonical form, or `BlobUploadUnknown` for anything
/// that is not a UUID (so it can never form a strange storage path) and for
/// a version 8 UUID whose check fails (not an id this registry made).
///
/// # Errors
/// `BlobUploadUnknown`.
pub fn parse_upload_id(s: &str) -> Result<String> {
    let unknown = || RegistryError::BlobUploadUnknown(s.chars().take(100).collect());
    match uuid::Uuid::parse_str(s) {
        Ok(u) if u.hyphenated().to_string() == s => {
            if u.get_version_num() == 8 && upload_started(s).is_none() {
                return Err(unknown());
            }
            Ok(s.to_owned())
        }
        _ => Err(unknown()),
    }
}

/// When the upload with this id started, if the id carries its time (a
/// version 8 id whose check holds); `None` for ids of the older kind,
/// whose time is in `startedat`.
pub fn upload_started(id: &str) -> Option<SystemTime> {
    let b = uuid::Uuid::parse_str(id).ok()?.into_bytes();
    if b[6] >> 4 != 8 || b[8] >> 6 != 2 || b[14..] != check(&b) {
        return None;
    }
    let mut secs = [0u8; 8];
    secs[3..].copy_from_slice(&b[..5]);
    Some(UNIX_EPOCH + Duration::from_secs(u64::from_be_bytes(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_carries_its_start_and_parses() {
        let now = SystemTime::now();
        let id = new_upload_id();
        assert_eq!(parse_upload_id(&id).unwrap(), id);
        let started = upload_started(&id).expect("a new id carries its time");
        let off = now.duration_since(started).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(2), "{off:?}");
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let id = id_at(at, [0xff; 16]);
        assert_eq!(upload_started(&id), Some(at));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 8);
    }

    #[test]
    fn ids_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_upload_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn a_changed_id_fails_its_check_and_older_ids_still_parse() {
        let id = new_upload_id();
        // Change one hex digit of the random part.
        let mut changed: Vec<char> = id.chars().collect();
        changed[20] = if changed[20] == '0' { '1' } else { '0' };
        let changed: String = changed.into_iter().collect();
        assert_eq!(upload_started(&changed), None);
        assert!(matches!(
            parse_upload_id(&changed),
            Err(RegistryError::BlobUploadUnknown(_))
        ));
        // A version 4 id (what regstore made before) parses, with no time.
        let v4 = uuid::Uuid::new_v4().to_string();
        assert_eq!(parse_upload_id(&v4).unwrap(), v4);
        assert_eq!(upload_started(&v4), None);
        for bad in ["", "not-a-uuid", &id.to_uppercase(), &format!("{id}/..")] {
            assert!(parse_upload_id(bad).is_err(), "{bad}");
        }
    }
}
