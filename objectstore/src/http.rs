//! The HTTP requests drivers send themselves (gcs's JSON API, swift, the
//! s3 part copy), as attempts of [`regstore_core::retry::retry`]: what an
//! answer says about trying again.

use regstore_core::retry::{Verdict, retry_after};
use regstore_core::{Error, Result};

/// The delay the answer's `Retry-After` header asks for, if any.
pub fn retry_after_of(resp: &reqwest::Response) -> Option<std::time::Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after)
}

/// The verdict on a sent request: an answer whose status `retryable`
/// accepts is retried (waiting what its `Retry-After` asks; it is returned
/// when no attempt is left), any other answer is final; a request that got
/// no answer is retried, its error (described by `describe`) returned when
/// no attempt is left.
pub fn answer_verdict(
    sent: std::result::Result<reqwest::Response, reqwest::Error>,
    retryable: impl FnOnce(reqwest::StatusCode) -> bool,
    describe: impl FnOnce(&reqwest::Error) -> String,
) -> Verdict<Result<reqwest::Response>> {
    match sent {
        Ok(resp) if retryable(resp.status()) => Verdict::Retry {
            after: retry_after_of(&resp),
            why: format!("HTTP {}", resp.status()),
            last: Ok(resp),
        },
        Ok(resp) => Verdict::Done(Ok(resp)),
        Err(e) => {
            let why = describe(&e);
            Verdict::Retry {
                last: Err(Error::backend(why.clone())),
                after: None,
                why,
            }
        }
    }
}
