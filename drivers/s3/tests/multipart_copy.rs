//! Moves above `multipartcopythresholdsize` on moto: a multipart upload of
//! `UploadPartCopy` ranges, signed by the driver itself. Needs moto
//! (`scripts/backends.sh start s3`); skipped without it, failed under
//! `REGSTORE_REQUIRE_BACKENDS=1`.

use regstore_core::{Driver, registry};
use sha2::{Digest, Sha256};

async fn driver() -> Option<Driver> {
    let mut raw = regstore_testenv::backend::emulator_params_or_skip("s3").await?;
    for (k, v) in [
        ("multipartcopythresholdsize", "5MiB"),
        ("multipartcopychunksize", "5MiB"),
        ("multipartcopymaxconcurrency", "2"),
    ] {
        raw.insert(k.into(), v.into());
    }
    std::hint::black_box(regstore_driver_s3::s3_driver);
    regstore_driver_s3::register();
    Some(registry::create("s3", &raw).await.expect("s3 driver"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_above_the_threshold_is_a_multipart_copy() {
    let Some(d) = driver().await else { return };
    // 12 MiB + 3 bytes: parts of 5, 5 and 2 MiB + 3 bytes.
    let data = regstore_testsuite::Rng::new(7).bytes((12 << 20) + 3);
    let mut w = d.writer("/big/source", false).await.expect("writer");
    w.write(data.clone()).await.expect("write");
    w.commit().await.expect("commit");

    let before = d.backend_requests().expect("s3 counts requests");
    d.rename("/big/source", "/big/moved").await.expect("rename");
    let used = d.backend_requests().expect("counted") - before;
    // HEAD, create, 3 × UploadPartCopy, complete, delete of the source.
    assert_eq!(used, 7, "requests of a 3-part multipart move");

    let got = d.get_content("/big/moved").await.expect("moved object");
    assert_eq!(got.len(), data.len());
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&data),
        "the copy is byte for byte"
    );
    let gone = d.stat("/big/source").await.expect_err("source removed");
    assert!(gone.is_not_found(), "{gone}");
    d.delete("/big").await.expect("clean up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_missing_source_leaves_the_destination_untouched() {
    let Some(d) = driver().await else { return };
    let old = bytes::Bytes::from_static(b"what was there before");
    d.put_content("/fail/dest", old.clone()).await.expect("put");
    let missing = d
        .rename("/fail/absent", "/fail/dest")
        .await
        .expect_err("moving nothing");
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(d.get_content("/fail/dest").await.expect("dest"), old);
    d.delete("/fail").await.expect("clean up");
}
