//! `Range` (blob GETs) and `Content-Range` (upload chunks). Input: the blob
//! size in decimal, a newline, the header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_server::fuzzing::{parse_content_range, parse_range};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((size, value)) = text.split_once('\n') else {
        return;
    };
    let Ok(size) = size.parse::<u64>() else {
        return;
    };
    // The given size and a small one, so that both ends of a range get hit.
    for size in [size, size % 1000] {
        if let Ok(Some((start, len))) = parse_range(value, size) {
            assert!(len >= 1, "{value:?} of {size}: empty range");
            assert!(
                start.checked_add(len).is_some_and(|end| end <= size),
                "{value:?} of {size}: ({start}, {len}) is outside the blob"
            );
        }
    }
    if let Some((start, end)) = parse_content_range(value) {
        // What was read is what a client writes.
        assert_eq!(
            parse_content_range(&format!("{start}-{end}")),
            Some((start, end))
        );
    }
});
