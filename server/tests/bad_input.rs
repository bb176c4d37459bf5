//! Bad input, class by class (issue 22, part 2): every malformed request
//! is answered with the spec's 4xx and its error code — never a 500, a
//! panic or a hang — and afterwards the registry serves what was pushed
//! before, byte for byte. Then: 100 slow uploads at once hold bounded
//! memory.
//!
//! Requests go out over raw sockets, exactly as written: reqwest (like any
//! URL library) would normalise `..` and `%2e%2e`, refuse NUL, and always
//! send a `Content-Length` that matches the body. A request hyper itself
//! refuses (a broken request line, length or header block) never reaches
//! the API, so its answer is hyper's bare status without an API body.
//!
//! Slow and hostile clients at the connection level — a dribbled request
//! head, an idle keep-alive connection, a body that stalls — are
//! `http_limits.rs`'s (`a_dribbled_request_head_is_cut_off`,
//! `an_idle_keep_alive_connection_is_closed`,
//! `a_stalled_body_is_cut_off_and_the_upload_keeps_what_arrived`).

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request, sent as written.
#[derive(Clone)]
struct Raw {
    method: String,
    head: String,
    body: Vec<u8>,
    /// Add `Content-Length` for the body (off when a row declares its own,
    /// or sends chunks).
    auto_length: bool,
    /// Close the sending half after the body: a client that went away.
    then_close: bool,
}

/// A request with `Host` and `Connection: close` (the server answers and
/// closes, so the answer is everything read until then).
fn req(method: &str, path: &str) -> Raw {
    Raw {
        method: method.to_owned(),
        head: format!("{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close"),
        body: Vec::new(),
        auto_length: true,
        then_close: false,
    }
}

impl Raw {
    fn header(mut self, name: &str, value: &str) -> Raw {
        let _ = write!(self.head, "\r\n{name}: {value}");
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Raw {
        self.body = body.into();
        self
    }

    /// Declares `Content-Length: value` whatever the body is.
    fn length(mut self, value: &str) -> Raw {
        self.auto_length = false;
        self.header("Content-Length", value)
    }

    /// Sends `wire` as a chunked body (written as given, valid or not).
    fn chunked(mut self, wire: &str) -> Raw {
        self.auto_length = false;
        self.header("Transfer-Encoding", "chunked").body(wire)
    }

    fn then_close(mut self) -> Raw {
        self.then_close = true;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.clone().into_bytes();
        let has_body =
            !self.body.is_empty() || matches!(self.method.as_str(), "PUT" | "PATCH" | "POST");
        if self.auto_length && has_body {
            out.extend_from_slice(format!("\r\nContent-Length: {}", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// What came back.
#[derive(Debug)]
enum Outcome {
    Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Closed without a (parsable) answer.
    Closed,
    /// Nothing for 20 s.
    Hung,
}

impl Outcome {
    fn header(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Answered { headers, .. } => headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// `errors[0].code` of an API error body.
    fn code(&self) -> Option<String> {
        let Outcome::Answered { body, .. } = self else {
            return None;
        };
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v["errors"][0]["code"].as_str().map(str::to_owned)
    }

    fn summary(&self) -> String {
        match self {
            Outcome::Answered { status, .. } => match self.code() {
                Some(code) => format!("{status} {code}"),
                None => format!("{status}"),
            },
            Outcome::Closed => "closed".into(),
            Outcome::Hung => "hung".into(),
        }
    }
}

fn parse_answer(got: &[u8]) -> Outcome {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Outcome::Closed;
    };
    let head = String::from_utf8_lossy(&got[..end]);
    let mut lines = head.split("\r\n");
    let Some(status) = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
    else {
        return Outcome::Closed;
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Outcome::Answered {
        status,
        headers,
        body: got[end + 4..].to_vec(),
    }
}

/// Sends `raw` on a new connection and reads until the server closes it.
async fn send(addr: &str, raw: &Raw) -> Outcome {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(20);
    // The server may answer (431) and close before it has read it all: a
    // failed write is not the row's failure, what comes back is.
    let wrote = tokio::time::timeout_at(deadline.into(), sock.write_all(&raw.bytes())).await;
    if wrote.is_err() {
        return Outcome::Hung;
    }
    if raw.then_close {
        let _ = sock.shutdown().await;
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline.into(), sock.read(&mut buf)).await {
            Err(_) => return Outcome::Hung,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    parse_answer(&got)
}

/// What a row must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The spec's error: this status and `errors[0].code`.
    Error(u16, &'static str),
    /// Success with this status.
    Ok(u16),
    /// Refused by hyper before the API: this status, no API body.
    Refused(u16),
    /// As `Refused`, or the connection closed under a client still
    /// writing (a 1 MiB header is cut off mid-write).
    RefusedOrClosed(u16),
}

struct Row {
    label: String,
    request: Raw,
    want: Want,
    /// The `Range` a successful upload request must report.
    range: Option<String>,
}

fn row(label: impl Into<String>, request: Raw, want: Want) -> Row {
    Row {
        label: label.into(),
        request,
        want,
        range: None,
    }
}

impl Row {
    fn range(mut self, range: &str) -> Row {
        self.range = Some(range.to_owned());
        self
    }

    /// `None` if `got` is what the row wants, else what is wrong.
    fn verdict(&self, got: &Outcome) -> Option<String> {
        let status = match got {
            Outcome::Answered { status, .. } => *status,
            Outcome::Closed if matches!(self.want, Want::RefusedOrClosed(_)) => return None,
            _ => return Some("no answer".into()),
        };
        match self.want {
            Want::Error(want, code) => {
                if status != want || got.code().as_deref() != Some(code) {
                    return Some("wrong status or code".into());
                }
                if got.header("docker-distribution-api-version") != Some("registry/2.0") {
                    return Some("no Docker-Distribution-API-Version".into());
                }
            }
            Want::Ok(want) | Want::Refused(want) | Want::RefusedOrClosed(want) => {
                if status != want {
                    return Some("wrong status".into());
                }
            }
        }
        if let Some(range) = &self.range
            && got.header("range") != Some(range.as_str())
        {
            return Some(format!("Range {:?}, not {range}", got.header("range")));
        }
        None
    }
}

/// What the rows refer to, pushed before them.
struct Ctx {
    /// An image in `keep/app` (tag `latest`) that must survive the table.
    manifest: Vec<u8>,
    manifest_digest: String,
    /// A 100-byte blob in `bad/in`.
    blob: String,
    /// A config and a layer in `bad/m`.
    config: String,
    layer: String,
    layer_len: usize,
}

const TEN: &[u8] = b"0123456789";
const BLOB: [u8; 100] = [42; 100];

impl Ctx {
    async fn new(reg: &TestRegistry) -> Ctx {
        let (manifest, manifest_digest) = reg.push_image("keep/app", "latest", "kept").await;
        let blob = reg.push_blob("bad/in", &BLOB).await;
        let layer = b"a layer of bad/m".repeat(10);
        Ctx {
            manifest,
            manifest_digest,
            blob,
            config: reg.push_blob("bad/m", b"{}").await,
            layer: reg.push_blob("bad/m", &layer).await,
            layer_len: layer.len(),
        }
    }

    /// An OCI manifest in `bad/m` with `layers` (digests of the layer's
    /// size) and `extra` fields.
    fn manifest(&self, layers: &[&str], extra: Option<&str>) -> Vec<u8> {
        let layers: Vec<(&str, usize)> = layers.iter().map(|d| (*d, self.layer_len)).collect();
        oci_manifest(&self.config, 2, &layers, extra)
    }

    /// The image in `keep/app` is whole: the manifest by tag and by digest,
    /// and every blob it names, each hashing to its digest.
    async fn still_intact(&self, reg: &TestRegistry) {
        for reference in ["latest", self.manifest_digest.as_str()] {
            let r = reg
                .client
                .get(reg.url(&format!("/v2/keep/app/manifests/{reference}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "manifest {reference}");
            let body = r.bytes().await.unwrap();
            assert_eq!(body.as_ref(), self.manifest.as_slice());
            assert_eq!(sha256(&body), self.manifest_digest);
        }
        let m: serde_json::Value = serde_json::from_slice(&self.manifest).unwrap();
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_owned());
        }
        for d in blobs {
            let r = reg
                .client
                .get(reg.url(&format!("/v2/keep/app/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "blob {d}");
            assert_eq!(
                sha256(&r.bytes().await.unwrap()),
                d,
                "blob {d} hashes right"
            );
        }
        let r = reg
            .client
            .get(reg.url(&format!("/v2/bad/in/blobs/{}", self.blob)))
            .send()
            .await
            .unwrap();
        assert_eq!(sha256(&r.bytes().await.unwrap()), self.blob);
    }
}

const NAME_INVALID: &str = "NAME_INVALID";
const NAME_UNKNOWN: &str = "NAME_UNKNOWN";
const DIGEST_INVALID: &str = "DIGEST_INVALID";
const TAG_INVALID: &str = "TAG_INVALID";
const RANGE_INVALID: &str = "RANGE_INVALID";
const UPLOAD_INVALID: &str = "BLOB_UPLOAD_INVALID";
const UPLOAD_UNKNOWN: &str = "BLOB_UPLOAD_UNKNOWN";
const SIZE_INVALID: &str = "SIZE_INVALID";
const PAGE_INVALID: &str = "PAGINATION_NUMBER_INVALID";
const MANIFEST_INVALID: &str = "MANIFEST_INVALID";
const BLOB_UNKNOWN_IN_MANIFEST: &str = "MANIFEST_BLOB_UNKNOWN";

/// `{upload}` in a row's request line becomes a fresh upload session in
/// `bad/in`.
const UPLOAD: &str = "/v2/bad/in/blobs/uploads/{upload}";

fn rows(c: &Ctx) -> Vec<Row> {
    use Want::*;
    let blob = |d: &str| format!("/v2/bad/in/blobs/{d}");
    let tags = |name: &str| format!("/v2/{name}/tags/list");
    let put_m = |tag: &str| format!("/v2/bad/m/manifests/{tag}");
    let hex64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let d10 = sha256(TEN);
    let twenty = [TEN, TEN].concat();
    let d20 = sha256(&twenty);
    let with = |path: &str, q: &str| format!("{path}?{q}");
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let oci = |extra: &str| c.manifest(&[c.layer.as_str()], Some(extra));
    let missing = sha256(b"never pushed");
    // A layer list of `n` entries, the last one never pushed.
    let layers = |n: usize| {
        let mut l = vec![c.layer.as_str(); n - 1];
        l.push(missing.as_str());
        c.manifest(&l, None)
    };
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{missing}\",\"size\":10}}]}}"
    );
    let schema1 = format!(
        "{{\"schemaVersion\":1,\"name\":\"bad/m\",\"tag\":\"t\",\"fsLayers\":[{{\"blobSum\":\"{}\"}}]}}",
        c.layer
    );
    let base = c.manifest(&[c.layer.as_str()], None);
    let retyped = |from: &str, to: &str| String::from_utf8_lossy(&base).replacen(from, to, 1);
    let mut many_headers = req("GET", "/v2/");
    for i in 0..200 {
        many_headers = many_headers.header(&format!("X-H{i}"), "v");
    }

    vec![
        // Repository names.
        row(
            "name of 256 characters",
            req("GET", &tags(&"a".repeat(256))),
            Error(400, NAME_INVALID),
        ),
        row(
            "name of one 255-character component (the file name limit): upload starts",
            req("POST", &format!("/v2/{}/blobs/uploads/", "a".repeat(255))),
            Ok(202),
        ),
        row(
            "name of 128 components, 255 characters",
            req("GET", &tags(&["a"; 128].join("/"))),
            Error(404, NAME_UNKNOWN),
        ),
        row(
            "name with ..",
            req("GET", "/v2/keep/../app/tags/list"),
            Error(400, NAME_INVALID),
        ),
        row(
            "name with %2e%2e",
            req("GET", "/v2/keep/%2e%2e/app/tags/list"),
            Error(400, NAME_INVALID),
        ),
        row(
            "name %2e%2e alone, upload start",
            req("POST", "/v2/%2e%2e/blobs/uploads/"),
            Error(400, NAME_INVALID),
        ),
        row(
            "name with %00",
            req("GET", "/v2/keep%00/app/tags/list"),
            Error(400, NAME_INVALID),
        ),
        row(
            "NUL byte in the request line",
            req("GET", "/v2/keep\0/app/tags/list"),
            Refused(400),
        ),
        row(
            "non-ASCII byte in the request line",
            req("GET", "/v2/k\u{e9}ep/tags/list"),
            Error(400, NAME_INVALID),
        ),
        row(
            "uppercase name",
            req("GET", &tags("Keep/app")),
            Error(400, NAME_INVALID),
        ),
        row(
            "name with //",
            req("GET", &tags("keep//app")),
            Error(400, NAME_INVALID),
        ),
        row(
            "name with a trailing /",
            req("GET", "/v2/keep/app//manifests/latest"),
            Error(400, NAME_INVALID),
        ),
        row(
            "name with a leading /",
            req("GET", &tags("/keep/app")),
            Error(400, NAME_INVALID),
        ),
        row(
            "name with %20",
            req("GET", &tags("keep%20app")),
            Error(400, NAME_INVALID),
        ),
        row(
            "name component _uploads",
            req("GET", &tags("keep/_uploads")),
            Error(400, NAME_INVALID),
        ),
        row(
            "endpoint with a trailing /",
            req("GET", "/v2/keep/app/tags/list/"),
            Error(404, "NOT_FOUND"),
        ),
        row(
            "path of 10,000 characters",
            req("GET", &tags(&"a".repeat(10_000))),
            Error(400, NAME_INVALID),
        ),
        row(
            "request target over 64 KiB",
            req("GET", &tags(&"a".repeat(70_000))),
            Refused(414),
        ),
        // Digests.
        row(
            "digest of unknown algorithm md5",
            req("GET", &blob("md5:d41d8cd98f00b204e9800998ecf8427e")),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "digest of unknown algorithm sha384 on the final PUT",
            req("PUT", &with(UPLOAD, &format!("digest=sha384:{hex64}"))),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "sha256 digest of 63 hex digits",
            req("GET", &blob(&format!("sha256:{}", &hex64[1..]))),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "sha256 digest of 65 hex digits",
            req("GET", &blob(&format!("sha256:{hex64}0"))),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "sha256 digest with no hex",
            req("GET", &blob("sha256:")),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "digest in uppercase hex",
            req("GET", &blob(&format!("sha256:{}", hex64.to_uppercase()))),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "digest without :",
            req("GET", &blob(&format!("sha256{hex64}"))),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "digest in uppercase hex on the final PUT",
            req(
                "PUT",
                &with(UPLOAD, &format!("digest=sha256:{}", hex64.to_uppercase())),
            ),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "final PUT without a digest",
            req("PUT", UPLOAD),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "monolithic POST with digest md5",
            req("POST", "/v2/bad/in/blobs/uploads/?digest=md5:x").body(TEN),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "mount of an invalid digest",
            req(
                "POST",
                "/v2/bad/in/blobs/uploads/?mount=sha256:x&from=keep/app",
            ),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "manifest by uppercase digest",
            req(
                "GET",
                &format!("/v2/keep/app/manifests/sha256:{}", hex64.to_uppercase()),
            ),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "manifest by digest of unknown algorithm",
            req(
                "GET",
                &format!("/v2/keep/app/manifests/md5:{}", &hex64[..32]),
            ),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "manifest PUT by a digest its body does not hash to",
            req("PUT", &put_m(&format!("sha256:{hex64}")))
                .header("Content-Type", OCI_MANIFEST)
                .body(base.clone()),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "referrers of an invalid digest",
            req("GET", "/v2/keep/app/referrers/sha256:x"),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "referrers with last= not a digest",
            req(
                "GET",
                &format!("/v2/keep/app/referrers/sha256:{hex64}?last=x"),
            ),
            Error(400, DIGEST_INVALID),
        ),
        // References.
        row(
            "tag of 129 characters",
            req(
                "GET",
                &format!("/v2/keep/app/manifests/{}", "t".repeat(129)),
            ),
            Error(400, TAG_INVALID),
        ),
        row(
            "tag of 128 characters (allowed, unknown)",
            req(
                "GET",
                &format!("/v2/keep/app/manifests/{}", "t".repeat(128)),
            ),
            Error(404, "MANIFEST_UNKNOWN"),
        ),
        row(
            "tag of 129 characters on PUT",
            req("PUT", &put_m(&"t".repeat(129)))
                .header("Content-Type", OCI_MANIFEST)
                .body(base.clone()),
            Error(400, TAG_INVALID),
        ),
        row(
            "tag starting with .",
            req("GET", "/v2/keep/app/manifests/.x"),
            Error(400, TAG_INVALID),
        ),
        row(
            "tag starting with -",
            req("GET", "/v2/keep/app/manifests/-x"),
            Error(400, TAG_INVALID),
        ),
        row(
            "tag with %20",
            req("GET", "/v2/keep/app/manifests/a%20b"),
            Error(400, TAG_INVALID),
        ),
        row(
            "tag with %00",
            req("GET", "/v2/keep/app/manifests/a%00"),
            Error(400, TAG_INVALID),
        ),
        // Range on a blob of 100 bytes.
        row(
            "Range to u64::MAX (clipped to the blob)",
            req("GET", &blob(&c.blob)).header("Range", "bytes=0-18446744073709551615"),
            Ok(206),
        ),
        row(
            "Range past u64::MAX",
            req("GET", &blob(&c.blob)).header("Range", "bytes=0-18446744073709551616"),
            Error(416, RANGE_INVALID),
        ),
        row(
            "Range starting at u64::MAX",
            req("GET", &blob(&c.blob)).header("Range", "bytes=18446744073709551615-"),
            Error(416, RANGE_INVALID),
        ),
        row(
            "Range reversed",
            req("GET", &blob(&c.blob)).header("Range", "bytes=10-5"),
            Error(416, RANGE_INVALID),
        ),
        row(
            "Range past the end",
            req("GET", &blob(&c.blob)).header("Range", "bytes=100-"),
            Error(416, RANGE_INVALID),
        ),
        row(
            "Range suffix of 0 bytes",
            req("GET", &blob(&c.blob)).header("Range", "bytes=-0"),
            Error(416, RANGE_INVALID),
        ),
        row(
            "Range garbage",
            req("GET", &blob(&c.blob)).header("Range", "bytes=abc"),
            Error(416, RANGE_INVALID),
        ),
        row(
            "Range with several ranges (ignored: whole blob)",
            req("GET", &blob(&c.blob)).header("Range", "bytes=0-1,5-6"),
            Ok(200),
        ),
        row(
            "Range of another unit (ignored)",
            req("GET", &blob(&c.blob)).header("Range", "items=0-1"),
            Ok(200),
        ),
        // Content-Range on a fresh upload, 10 bytes.
        row(
            "Content-Range 0-9 (control)",
            req("PATCH", UPLOAD)
                .header("Content-Range", "0-9")
                .body(TEN),
            Ok(202),
        )
        .range("0-9"),
        row(
            "Content-Range to u64::MAX",
            req("PATCH", UPLOAD)
                .header("Content-Range", "0-18446744073709551615")
                .body(TEN),
            Error(400, SIZE_INVALID),
        ),
        row(
            "Content-Range to u64::MAX on the final PUT",
            req("PUT", &with(UPLOAD, &format!("digest={d10}")))
                .header("Content-Range", "0-18446744073709551615")
                .body(TEN),
            Error(400, SIZE_INVALID),
        ),
        row(
            "Content-Range past u64::MAX",
            req("PATCH", UPLOAD)
                .header("Content-Range", "0-18446744073709551616")
                .body(TEN),
            Error(416, UPLOAD_INVALID),
        ),
        row(
            "Content-Range reversed",
            req("PATCH", UPLOAD)
                .header("Content-Range", "9-0")
                .body(TEN),
            Error(400, SIZE_INVALID),
        ),
        row(
            "Content-Range longer than Content-Length",
            req("PATCH", UPLOAD)
                .header("Content-Range", "0-99")
                .body(TEN),
            Error(400, SIZE_INVALID),
        ),
        row(
            "Content-Range with several ranges",
            req("PATCH", UPLOAD)
                .header("Content-Range", "0-4,5-9")
                .body(TEN),
            Error(416, UPLOAD_INVALID),
        ),
        row(
            "Content-Range garbage",
            req("PATCH", UPLOAD)
                .header("Content-Range", "bytes=x")
                .body(TEN),
            Error(416, UPLOAD_INVALID),
        ),
        row(
            "Content-Range not where the upload stands",
            req("PATCH", UPLOAD)
                .header("Content-Range", "5-14")
                .body(TEN),
            Error(416, UPLOAD_INVALID),
        ),
        // Content-Length and chunked bodies.
        row(
            "PATCH body shorter than Content-Length, then gone",
            req("PATCH", UPLOAD).length("100").body(TEN).then_close(),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "PATCH body longer than Content-Length (the rest is not the upload's)",
            req("PATCH", UPLOAD).length("10").body(twenty.clone()),
            Ok(202),
        )
        .range("0-9"),
        row(
            "PATCH Content-Length of a petabyte, then gone",
            req("PATCH", UPLOAD)
                .length("1000000000000000")
                .body(TEN)
                .then_close(),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "final PUT body shorter than Content-Length, then gone",
            req("PUT", &with(UPLOAD, &format!("digest={d10}")))
                .length("100")
                .body(TEN)
                .then_close(),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "final PUT body longer than Content-Length: the declared bytes are hashed",
            req("PUT", &with(UPLOAD, &format!("digest={d20}")))
                .length("10")
                .body(twenty.clone()),
            Error(400, DIGEST_INVALID),
        ),
        row(
            "monolithic POST body shorter than Content-Length, then gone",
            req("POST", &format!("/v2/bad/in/blobs/uploads/?digest={d10}"))
                .length("100")
                .body(TEN)
                .then_close(),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "manifest body shorter than Content-Length, then gone",
            req("PUT", &put_m("short"))
                .header("Content-Type", OCI_MANIFEST)
                .length("100000")
                .body(base.clone())
                .then_close(),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "Content-Length not a number",
            req("PATCH", UPLOAD).length("abc").body(TEN),
            Refused(400),
        ),
        row(
            "Content-Length negative",
            req("PATCH", UPLOAD).length("-1").body(TEN),
            Refused(400),
        ),
        row(
            "two different Content-Lengths",
            req("PATCH", UPLOAD)
                .length("10")
                .header("Content-Length", "11")
                .body(TEN),
            Refused(400),
        ),
        row(
            "Content-Length past u64::MAX",
            req("PATCH", UPLOAD)
                .length("18446744073709551616")
                .body(TEN),
            Refused(400),
        ),
        row(
            "chunked PATCH (control)",
            req("PATCH", UPLOAD).chunked("5\r\nhello\r\n0\r\n\r\n"),
            Ok(202),
        )
        .range("0-4"),
        row(
            "chunked and Content-Length (chunked wins)",
            req("PATCH", UPLOAD)
                .header("Content-Length", "3")
                .chunked("5\r\nhello\r\n0\r\n\r\n"),
            Ok(202),
        )
        .range("0-4"),
        row(
            "chunk size not hex",
            req("PATCH", UPLOAD).chunked("zz\r\nhello\r\n0\r\n\r\n"),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "chunk size past u64",
            req("PATCH", UPLOAD).chunked("fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "chunked body without its last chunk, then gone",
            req("PATCH", UPLOAD).chunked("5\r\nhello\r\n").then_close(),
            Error(400, UPLOAD_INVALID),
        ),
        row(
            "Transfer-Encoding other than chunked",
            req("PATCH", UPLOAD)
                .header("Transfer-Encoding", "gzip")
                .body(TEN),
            Refused(400),
        ),
        // Pagination.
        row(
            "tags n=-1",
            req("GET", "/v2/keep/app/tags/list?n=-1"),
            Error(400, PAGE_INVALID),
        ),
        row(
            "tags n=abc",
            req("GET", "/v2/keep/app/tags/list?n=abc"),
            Error(400, PAGE_INVALID),
        ),
        row(
            "tags n=1.5",
            req("GET", "/v2/keep/app/tags/list?n=1.5"),
            Error(400, PAGE_INVALID),
        ),
        row(
            "tags n past u64::MAX",
            req("GET", "/v2/keep/app/tags/list?n=99999999999999999999"),
            Error(400, PAGE_INVALID),
        ),
        row(
            "tags n=u64::MAX (all tags)",
            req("GET", "/v2/keep/app/tags/list?n=18446744073709551615"),
            Ok(200),
        ),
        row(
            "tags last= garbage",
            req("GET", "/v2/keep/app/tags/list?last=%00%ff"),
            Ok(200),
        ),
        row(
            "catalog n=-1",
            req("GET", "/v2/_catalog?n=-1"),
            Error(400, PAGE_INVALID),
        ),
        row(
            "catalog n=abc",
            req("GET", "/v2/_catalog?n=abc"),
            Error(400, PAGE_INVALID),
        ),
        row(
            "catalog n=u64::MAX (clamped to 1000)",
            req("GET", "/v2/_catalog?n=18446744073709551615"),
            Ok(200),
        ),
        row(
            "catalog last= not a name",
            req("GET", "/v2/_catalog?last=..%2F.."),
            Error(400, NAME_INVALID),
        ),
        row(
            "catalog search without a catalog index",
            req("GET", "/v2/_catalog?q=app"),
            Error(400, "UNSUPPORTED"),
        ),
        // Manifests.
        row(
            "manifest not JSON",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body("{"),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "manifest empty",
            req("PUT", &put_m("t")).header("Content-Type", OCI_MANIFEST),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "manifest of 10,000 unclosed [",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body("[".repeat(10_000)),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "manifest of 10,000 nested arrays",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(nested(10_000)),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "annotation nested 10,000 deep",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(oci(&format!(
                    "\"annotations\":{{\"a\":{}}}",
                    nested(10_000)
                ))),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "unknown field nested 10,000 deep (skipped unread)",
            req("PUT", &put_m("deep"))
                .header("Content-Type", OCI_MANIFEST)
                .body(oci(&format!("\"x-deep\":{}", nested(10_000)))),
            Ok(201),
        ),
        row(
            "999 layers (with the config, the default limit of 1,000 references), the last one missing",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(layers(999)),
            Error(400, BLOB_UNKNOWN_IN_MANIFEST),
        ),
        row(
            "10,000 layers: beyond validation.manifests.maxreferences",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(layers(10_000)),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "manifest of unknown media type",
            req("PUT", &put_m("t"))
                .header("Content-Type", "application/vnd.example.thing.v1+json")
                .body(retyped(
                    OCI_MANIFEST,
                    "application/vnd.example.thing.v1+json",
                )),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "schema 1 manifest",
            req("PUT", &put_m("t"))
                .header(
                    "Content-Type",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws",
                )
                .body(schema1),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "Content-Type not the body's mediaType",
            req("PUT", &put_m("t"))
                .header("Content-Type", DOCKER_MANIFEST)
                .body(base.clone()),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "schemaVersion 3",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(retyped("\"schemaVersion\":2", "\"schemaVersion\":3")),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "mediaType a number",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(retyped(
                    &format!("\"mediaType\":\"{OCI_MANIFEST}\""),
                    "\"mediaType\":7",
                )),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "negative layer size",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(
                    String::from_utf8_lossy(&base)
                        .replace(&format!("\"size\":{}", c.layer_len), "\"size\":-1"),
                ),
            Error(400, MANIFEST_INVALID),
        ),
        row(
            "layer blob missing",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(c.manifest(&[missing.as_str()], None)),
            Error(400, BLOB_UNKNOWN_IN_MANIFEST),
        ),
        row(
            "index naming a manifest not in the repository",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_INDEX)
                .body(index),
            Error(400, BLOB_UNKNOWN_IN_MANIFEST),
        ),
        row(
            "manifest of 4 MiB + 1",
            req("PUT", &put_m("t"))
                .header("Content-Type", OCI_MANIFEST)
                .body(vec![b' '; (4 << 20) + 1]),
            Error(413, MANIFEST_INVALID),
        ),
        // Headers and junk.
        row(
            "header value of 1 MiB",
            req("GET", "/v2/").header("X-Big", &"a".repeat(1 << 20)),
            RefusedOrClosed(431),
        ),
        row("200 headers", many_headers, RefusedOrClosed(431)),
        row(
            "Content-Length u64::MAX",
            req("PATCH", UPLOAD)
                .length("18446744073709551615")
                .body(TEN),
            RefusedOrClosed(431),
        ),
        row(
            "header line without a colon",
            req("GET", "/v2/").header("X-A b", "c"),
            Refused(400),
        ),
        row(
            "folded header line",
            req("GET", "/v2/").header("X-A", "b\r\n c"),
            Refused(400),
        ),
        row(
            "junk lines",
            Raw {
                method: "X".into(),
                head: "HELLO\r\nWORLD\r\n\u{1}\u{2}".into(),
                body: Vec::new(),
                auto_length: false,
                then_close: false,
            },
            Refused(400),
        ),
        row(
            "unknown method on a blob",
            req("BREW", &blob(&c.blob)),
            Error(405, "UNSUPPORTED"),
        ),
        // Upload sessions.
        row(
            "upload id not a UUID",
            req("PATCH", "/v2/bad/in/blobs/uploads/not-a-uuid").body(TEN),
            Error(404, UPLOAD_UNKNOWN),
        ),
        row(
            "upload id ..%2F..%2Fx",
            req("PATCH", "/v2/bad/in/blobs/uploads/..%2F..%2Fx").body(TEN),
            Error(404, UPLOAD_UNKNOWN),
        ),
        row(
            "upload id in uppercase",
            req(
                "GET",
                "/v2/bad/in/blobs/uploads/0E6F2E5A-3B4C-4D5E-8F90-A1B2C3D4E5F6",
            ),
            Error(404, UPLOAD_UNKNOWN),
        ),
    ]
}

/// Every row of [`rows`] on `inmemory` and `filesystem`: the answer is
/// the one the row wants, and the image pushed before is intact after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_input_answers_its_4xx_and_loses_nothing() {
    for driver in DRIVERS {
        let reg = start(driver, DELETE_ON, "").await;
        let addr = reg.base.trim_start_matches("http://").to_owned();
        let ctx = Ctx::new(&reg).await;
        let mut table = String::new();
        let mut wrong = Vec::new();
        for mut row in rows(&ctx) {
            if row.request.head.contains("{upload}") {
                let loc = begin(&reg, "bad/in").await;
                let uuid = loc.rsplit('/').next().unwrap_or_default().to_owned();
                row.request.head = row.request.head.replacen("{upload}", &uuid, 1);
            }
            let started = Instant::now();
            let got = send(&addr, &row.request).await;
            let verdict = row.verdict(&got);
            let _ = writeln!(
                table,
                "{driver:10} | {:70} | {:32} | {:28} | {:>5} ms{}",
                row.label,
                format!("{:?}", row.want),
                got.summary(),
                started.elapsed().as_millis(),
                verdict
                    .as_ref()
                    .map(|v| format!(" | WRONG: {v}"))
                    .unwrap_or_default(),
            );
            if verdict.is_some() {
                wrong.push(row.label.clone());
            }
        }
        eprintln!("{table}");
        ctx.still_intact(&reg).await;
        assert!(
            wrong.is_empty(),
            "{driver}: wrong answers to {wrong:?}\n{table}"
        );
    }
}

/// The resident memory of this process (where the registry runs), in KiB:
/// `VmRSS` (now) or `VmHWM` (the peak so far) of `/proc/self/status`.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// 100 clients each send 8 MiB of a PATCH body at once and then the last
/// 120 bytes a few at a time, every 100 ms, for 3 s, all at the same time:
/// the process's memory grows by far less than the 800 MiB they are in the
/// middle of sending, and every upload ends whole.
///
/// The bound, 5 MiB a client: bodies stream through the hash into the
/// driver's writer, so a slow client holds what one connection and one
/// writer hold, whatever it sends: hyper's read buffer (at most about 400
/// KiB) and the filesystem writer's two buffers (one filling, one being
/// written; 1 MiB each) — about 2.6 MiB measured (3.5 MiB while the
/// writer's buffers could grow past 1 MiB). A server that gathered bodies before storing
/// them would hold the 8 MiB each client has sent on top of that (over
/// 1 GiB for 100), far above the bound, so the test fails then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_slow_uploads_hold_bounded_memory() {
    const CLIENTS: usize = 100;
    const FAST: usize = 8 << 20;
    const DRIBBLES: usize = 30;
    const DRIBBLE: usize = 4;
    const PER_CLIENT_KIB: u64 = 5 << 10;
    let started = Instant::now();
    let reg = start("filesystem", "", "").await;
    let addr = reg.base.trim_start_matches("http://").to_owned();
    let mut paths = Vec::new();
    for _ in 0..CLIENTS {
        let loc = begin(&reg, "slow/mem").await;
        paths.push(loc.trim_start_matches(&reg.base).to_owned());
    }
    // One buffer every client sends from: the clients hold no bodies.
    let block: Arc<[u8]> = vec![7u8; 64 << 10].into();
    let total = FAST + DRIBBLES * DRIBBLE;
    let sent_fast = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let baseline = memory_kib("VmRSS");
    let mut clients = Vec::new();
    for path in paths {
        let (addr, block, sent_fast) = (addr.clone(), Arc::clone(&block), Arc::clone(&sent_fast));
        clients.push(tokio::spawn(async move {
            let mut sock = TcpStream::connect(&addr).await.expect("connect");
            let head = format!(
                "PATCH {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await.expect("head");
            for _ in 0..FAST / block.len() {
                sock.write_all(&block).await.expect("body");
            }
            sent_fast.wait().await;
            for _ in 0..DRIBBLES {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sock.write_all(&block[..DRIBBLE]).await.expect("dribble");
            }
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut got))
                .await
                .expect("answered")
                .expect("read");
            parse_answer(&got)
        }));
    }
    sent_fast.wait().await;
    let mut sampled_peak = 0;
    for _ in 0..DRIBBLES {
        sampled_peak = sampled_peak.max(memory_kib("VmRSS"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in clients {
        let got = c.await.expect("client");
        assert!(
            matches!(got, Outcome::Answered { status: 202, .. }),
            "{got:?}"
        );
        assert_eq!(
            got.header("range"),
            Some(format!("0-{}", total - 1).as_str())
        );
    }
    let peak = memory_kib("VmHWM").max(sampled_peak);
    let growth = peak.saturating_sub(baseline);
    let bound = PER_CLIENT_KIB * CLIENTS as u64;
    eprintln!(
        "{CLIENTS} slow uploads of {total} bytes: RSS {baseline} KiB before, peak {peak} KiB \
         (growth {growth} KiB, bound {bound} KiB), {} KiB after; {:?} in all",
        memory_kib("VmRSS"),
        started.elapsed()
    );
    assert!(
        growth < bound,
        "memory grew by {growth} KiB under {CLIENTS} slow clients (bound {bound} KiB)"
    );
}
