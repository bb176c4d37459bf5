//! Swift's answers the driver parses itself: container listing pages
//! (JSON) with their timestamps, and Keystone v3 token responses with the
//! service catalog. Input: the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_driver_swift::auth::{parse_iso8601, v3_session};
use regstore_driver_swift::fuzzing::listing_page;

fuzz_target!(|body: &[u8]| {
    if let Ok(entries) = listing_page(body) {
        for meta in entries.into_iter().flatten() {
            // An entry's ETag is the large object's (quotes trimmed) or the
            // object's hash.
            if meta.version.is_some() {
                assert!(
                    meta.e_tag
                        .is_some_and(|e| !e.starts_with('"') && !e.ends_with('"'))
                );
            }
        }
    }
    for (region, interface) in [(None, "public"), (Some("RegionOne"), "internal")] {
        if let Ok(session) = v3_session(Some("token"), body, region, interface) {
            assert!(!session.storage_url.ends_with('/'));
        }
    }
    if let Ok(s) = std::str::from_utf8(body) {
        let _ = parse_iso8601(s);
    }
});
