//! The S3 XML the driver reads itself: UploadPartCopy answers
//! (`<CopyPartResult>` or `<Error>`). Bucket listings are parsed by
//! `object_store`, not by regstore. Input: the HTTP status in decimal
//! (100 to 999), a newline, the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regstore_driver_s3::fuzzing::part_copy_answer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((status, body)) = text.split_once('\n') else {
        return;
    };
    let Ok(status @ 100..=999) = status.parse::<u16>() else {
        return;
    };
    let (transient, outcome) = part_copy_answer(status, body).expect("a valid status");
    if transient {
        assert!(outcome.is_err(), "a transient error is an error");
    }
    if let Ok(etag) = outcome {
        assert!(
            (200..300).contains(&status),
            "HTTP {status} gave part {etag:?}"
        );
    }
});
