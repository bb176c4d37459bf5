//! AWS Signature Version 4 for the few requests the S3 driver sends itself
//! (`UploadPartCopy`, which `object_store` does not offer). Header-based
//! signing of a request without a body, as in the S3 API reference's
//! "Signature Calculations for the Authorization Header".

use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::{digest, hmac};

/// SHA-256 of the empty payload, hex.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What SigV4 leaves unescaped: the unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` escaped as SigV4 wants a query value or key segment.
pub(crate) fn escape(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// An object key escaped for a URL path: each segment escaped, `/` kept.
pub(crate) fn escape_key(key: &str) -> String {
    key.split('/').map(escape).collect::<Vec<_>>().join("/")
}

/// The keys that sign a request.
pub(crate) struct Credentials<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
    pub token: Option<&'a str>,
}

/// The request to sign: `path` and `query` already escaped (`query` as
/// `k=v` pairs), `headers` lower-case names with their values (`host` is
/// added from `host`).
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(&'a str, String)],
}

/// The headers to send with `req` besides its own: `x-amz-date`,
/// `x-amz-content-sha256` (the empty payload), `x-amz-security-token` for
/// temporary credentials, and `authorization`.
pub(crate) fn sign(
    req: &Request<'_>,
    creds: &Credentials<'_>,
    region: &str,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    // 2013-05-24T00:00:00Z → 20130524T000000Z
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let date = &stamp[..8];
    let mut added: Vec<(&'static str, String)> = vec![
        ("x-amz-content-sha256", EMPTY_SHA256.to_owned()),
        ("x-amz-date", stamp.clone()),
    ];
    if let Some(token) = creds.token {
        added.push(("x-amz-security-token", token.to_owned()));
    }
    let mut headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(k, v)| (*k, v.trim()))
        .chain(added.iter().map(|(k, v)| (*k, v.as_str())))
        .chain(std::iter::once(("host", req.host)))
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
    let signed = signed.join(";");
    let mut query: Vec<&(String, String)> = req.query.iter().collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{EMPTY_SHA256}",
        req.method,
        req.path,
        query.join("&"),
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", creds.secret).into_bytes();
    for part in [date, region, "s3", "aws4_request"] {
        key = mac(&key, part.as_bytes());
    }
    let signature = hex::encode(mac(&key, to_sign.as_bytes()));
    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.key_id
        ),
    ));
    added
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The S3 API reference's "Example: GET Object" (header-based SigV4),
    /// with its published signature.
    #[test]
    fn signs_the_documented_get_object_example() {
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let headers = [("range", "bytes=0-9".to_owned())];
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: &headers,
        };
        let creds = Credentials {
            key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            token: None,
        };
        let added = sign(&req, &creds, "us-east-1", now);
        let get = |name: &str| {
            added
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("x-amz-date"), "20130524T000000Z");
        assert_eq!(
            get("authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let req = Request {
            method: "PUT",
            host: "b.s3.amazonaws.com",
            path: "/k",
            query: &[
                ("uploadId".into(), escape("a/b+c")),
                ("partNumber".into(), "1".into()),
            ],
            headers: &[],
        };
        let creds = Credentials {
            key_id: "id",
            secret: "secret",
            token: Some("tok"),
        };
        let added = sign(&req, &creds, "eu-west-1", UNIX_EPOCH);
        assert!(added.contains(&("x-amz-security-token", "tok".to_owned())));
        let auth = &added.last().expect("authorization").1;
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
            ),
            "{auth}"
        );
        assert_eq!(escape("a/b+c"), "a%2Fb%2Bc");
        assert_eq!(escape_key("dir/a b"), "dir/a%20b");
    }
}
