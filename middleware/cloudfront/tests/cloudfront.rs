//! The cloudfront middleware: signatures checked by openssl with the public
//! key, the URL-safe alphabet, expiry arithmetic, IP-filter decisions for
//! IPv4 and IPv6 inside and outside AWS ranges (a ranges document served
//! from a loopback HTTP server), and startup errors. The middleware cases
//! run on the s3 driver against moto (`scripts/backends.sh start s3`).

use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use regstore_core::{Driver, RawParams, RedirectMethod, RedirectRequest, registry};
use regstore_middleware_cloudfront::{NAME, Ranges, UrlSigner, base_url, url_safe_base64};
use regstore_testenv::openssl::{rsa_key_pair, verify_cloudfront_url};
use url::Url;

const RANGES: &str = r#"{
  "syncToken": "1", "createDate": "2026-11-01-00-00-00",
  "prefixes": [
    {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON"},
    {"ip_prefix": "52.95.0.0/16", "region": "eu-west-1", "service": "S3"}
  ],
  "ipv6_prefixes": [
    {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "AMAZON"},
    {"ipv6_prefix": "2a05:d018::/35", "region": "eu-west-1", "service": "AMAZON"}
  ]
}"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn signatures_verify_with_openssl_for_pkcs1_and_pkcs8_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    for pkcs1 in [true, false] {
        let (private, public) = rsa_key_pair(dir.path(), pkcs1).expect("openssl key");
        let pem = std::fs::read_to_string(&private).expect("key");
        assert_eq!(pem.contains("BEGIN RSA PRIVATE KEY"), pkcs1, "{pem}");
        let signer = UrlSigner::from_pem(&pem, "APKATEST", "test key").expect("key parses");
        for resource in [
            "https://d1.cloudfront.net/docker/registry/v2/blobs/sha256/ab/abcd/data",
            "https://d1.cloudfront.net/prefix/a%20b/c",
        ] {
            let expires = 2_000_000_000 + u64::from(pkcs1);
            let url = signer.sign(&Url::parse(resource).expect("url"), expires);
            assert!(url.as_str().starts_with(resource), "{url}");
            let got = verify_cloudfront_url(&url, &public, "APKATEST").expect("openssl verifies");
            assert_eq!(got, expires);
        }
    }
}

#[test]
fn signature_base64_uses_cloudfronts_url_safe_alphabet() {
    // 0xfb 0xff → "+/8=" in standard base64.
    assert_eq!(url_safe_base64(&[0xfb, 0xff]), "-~8_");
    assert_eq!(url_safe_base64(b"abc"), "YWJj");
}

#[test]
fn baseurl_gets_a_scheme_and_a_trailing_slash() {
    for (raw, want) in [
        ("d111.cloudfront.net", "https://d111.cloudfront.net/"),
        (
            "https://d111.cloudfront.net",
            "https://d111.cloudfront.net/",
        ),
        (
            "https://cdn.example.com/registry",
            "https://cdn.example.com/registry/",
        ),
        ("http://127.0.0.1:8080/r/", "http://127.0.0.1:8080/r/"),
    ] {
        assert_eq!(base_url(raw).expect(raw).as_str(), want);
    }
    for bad in ["ftp://cdn/x", "", "https://"] {
        let e = base_url(bad).expect_err(bad);
        assert!(e.to_string().contains("baseurl"), "{e}");
    }
}

#[test]
fn ranges_match_ipv4_and_ipv6_with_and_without_regions() {
    let all = Ranges::parse(RANGES.as_bytes(), None).expect("parses");
    assert!(all.contains(ip("3.5.141.7")));
    assert!(!all.contains(ip("3.5.144.1")));
    assert!(all.contains(ip("52.95.255.1")));
    assert!(all.contains(ip("::ffff:52.95.1.1")), "IPv4-mapped IPv6");
    assert!(all.contains(ip("2600:1f14:1::1")));
    assert!(!all.contains(ip("2600:1f15::1")));
    assert!(!all.contains(ip("192.0.2.1")));
    let eu = Ranges::parse(RANGES.as_bytes(), Some(&["eu-west-1".to_owned()])).expect("parses");
    assert!(eu.contains(ip("52.95.3.3")));
    assert!(!eu.contains(ip("3.5.141.7")));
    assert!(eu.contains(ip("2a05:d018::9")));
    assert!(!eu.contains(ip("2600:1f14::1")));
    let e = Ranges::parse(b"{\"prefixes\":[{\"ip_prefix\":\"1.2.3.4\"}]}", None)
        .expect_err("no length");
    assert!(e.contains("1.2.3.4"), "{e}");
}

/// The s3 driver on moto, or `None` (skipped) without it outside CI.
async fn s3() -> Option<Driver> {
    let raw = regstore_testenv::backend::emulator_params_or_skip("s3").await?;
    std::hint::black_box(regstore_driver_s3::s3_driver);
    regstore_driver_s3::register();
    Some(registry::create("s3", &raw).await.expect("s3 driver"))
}

async fn cloudfront(
    inner: Driver,
    key: &Path,
    extra: &[(&str, &str)],
) -> regstore_core::Result<Driver> {
    let mut raw = RawParams::new();
    raw.insert("baseurl".into(), "d111.cloudfront.net/cdn".into());
    raw.insert(
        "privatekey".into(),
        key.to_string_lossy().into_owned().into(),
    );
    raw.insert("keypairid".into(), "APKATEST".into());
    for (k, v) in extra {
        raw.insert((*k).into(), (*v).into());
    }
    regstore_middleware_cloudfront::register();
    registry::wrap(inner, NAME, &raw).await
}

fn from(addr: &str) -> RedirectRequest {
    let mut r = RedirectRequest::new(RedirectMethod::Get);
    r.forwarded_for = Some(format!("{addr}, 10.0.0.1"));
    r.peer = Some(ip("127.0.0.1"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_inside_aws_get_s3_everyone_else_cloudfront() {
    let Some(inner) = s3().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, public) = rsa_key_pair(dir.path(), true).expect("key");
    let ranges = regstore_testenv::backend::serve_json("ip-ranges.json", RANGES).await;
    let d = cloudfront(
        inner,
        &private,
        &[
            ("ipfilteredby", "aws"),
            ("iprangesurl", &ranges),
            ("duration", "1h30m"),
        ],
    )
    .await
    .expect("middleware builds");
    assert!(d.capabilities().redirect);
    d.put_content("/docker/blob", "data").await.expect("put");
    let key = d
        .backend()
        .object_key(&"/docker/blob".parse().expect("path"))
        .expect("key");

    for outside in ["192.0.2.7", "2001:db8::1"] {
        let url = d
            .redirect_url(&from(outside), "/docker/blob")
            .await
            .expect("url")
            .expect("a redirect");
        assert_eq!(
            url.host_str(),
            Some("d111.cloudfront.net"),
            "{outside}: {url}"
        );
        assert_eq!(url.path(), format!("/cdn/{key}"));
        let expires = verify_cloudfront_url(&url, &public, "APKATEST").expect("valid signature");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let lifetime = expires.saturating_sub(now);
        assert!(
            (5390..=5401).contains(&lifetime),
            "1h30m from now, got {lifetime} s"
        );
    }
    for inside in ["3.5.140.9", "2600:1f14::2", "::ffff:52.95.0.1"] {
        let url = d
            .redirect_url(&from(inside), "/docker/blob")
            .await
            .expect("url")
            .expect("a redirect");
        assert_ne!(
            url.host_str(),
            Some("d111.cloudfront.net"),
            "{inside}: {url}"
        );
        assert!(
            url.query().unwrap_or("").contains("X-Amz-Signature"),
            "{url}"
        );
    }
    // X-Real-Ip, then the peer, when there is no X-Forwarded-For.
    let mut r = RedirectRequest::new(RedirectMethod::Head);
    r.real_ip = Some("3.5.140.1".into());
    let url = d
        .redirect_url(&r, "/docker/blob")
        .await
        .expect("url")
        .expect("some");
    assert_ne!(url.host_str(), Some("d111.cloudfront.net"));
    d.delete("/docker").await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsregion_limits_the_ranges_and_an_unreachable_document_is_not_fatal() {
    let Some(inner) = s3().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, _) = rsa_key_pair(dir.path(), false).expect("key");
    let ranges = regstore_testenv::backend::serve_json("ip-ranges.json", RANGES).await;
    let d = cloudfront(
        inner,
        &private,
        &[
            ("ipfilteredby", "awsregion"),
            ("awsregion", "eu-west-1"),
            ("iprangesurl", &ranges),
        ],
    )
    .await
    .expect("middleware builds");
    d.put_content("/r/blob", "x").await.expect("put");
    let eu = d
        .redirect_url(&from("52.95.9.9"), "/r/blob")
        .await
        .expect("url")
        .expect("some");
    assert_ne!(
        eu.host_str(),
        Some("d111.cloudfront.net"),
        "eu-west-1 goes to S3"
    );
    let ap = d
        .redirect_url(&from("3.5.140.9"), "/r/blob")
        .await
        .expect("url")
        .expect("some");
    assert_eq!(
        ap.host_str(),
        Some("d111.cloudfront.net"),
        "another region: CloudFront"
    );
    d.delete("/r").await.expect("clean up");

    // Nothing listens on the ranges URL: the middleware starts anyway and
    // sends everyone to CloudFront until a retry succeeds.
    let Some(inner) = s3().await else { return };
    let closed = format!("http://127.0.0.1:{}/ranges.json", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    });
    let d = cloudfront(
        inner,
        &private,
        &[("ipfilteredby", "aws"), ("iprangesurl", &closed)],
    )
    .await
    .expect("an unreachable ranges URL is logged, not fatal");
    let url = d
        .redirect_url(&from("3.5.140.9"), "/x")
        .await
        .expect("url")
        .expect("some");
    assert_eq!(url.host_str(), Some("d111.cloudfront.net"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_what_to_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (private, _) = rsa_key_pair(dir.path(), true).expect("key");
    regstore_driver_inmemory::InMemoryDriver::new();
    regstore_driver_inmemory::register();
    let inmemory = registry::create("inmemory", &RawParams::new())
        .await
        .expect("inmemory");
    let e = cloudfront(inmemory, &private, &[])
        .await
        .expect_err("no object keys");
    assert!(e.to_string().contains("object keys"), "{e}");

    let Some(inner) = s3().await else { return };
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    /// Key file, extra options, what the error must name.
    type Case<'a> = (&'a Path, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (Path::new("/nonexistent/pk.pem"), &[], "/nonexistent/pk.pem"),
        (&garbage, &[], "not an RSA private key"),
        (&private, &[("ipfilteredby", "everyone")], "ipfilteredby"),
        (&private, &[("ipfilteredby", "awsregion")], "awsregion"),
        (&private, &[("duration", "soon")], "duration"),
        (&private, &[("keypairld", "typo")], "keypairld"),
    ];
    for (key, extra, want) in cases {
        let e = cloudfront(inner.clone(), key, extra).await.expect_err(want);
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
}
