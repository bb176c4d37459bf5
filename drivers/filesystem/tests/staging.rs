//! Unfinished writers, staging and directory clean-up: what the filesystem
//! driver promises on disk, checked through the public handle
//! (`regstore_core::Driver`) and by looking at the root directory.

use std::path::Path;

use bytes::Bytes;
use futures_util::TryStreamExt;
use regstore_core::{Driver, Error, StorageDriver, WalkControl};
use regstore_driver_filesystem::FilesystemDriver;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn open(root: &Path) -> Result<Driver, Error> {
    Ok(Driver::new(FilesystemDriver::new(root)?))
}

/// Every file and directory below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.display().to_string());
            }
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn names(paths: &[regstore_core::StoragePath]) -> Vec<&str> {
    paths.iter().map(|p| p.as_str()).collect()
}

#[tokio::test]
async fn resumed_writer_in_a_new_instance_gets_every_byte() -> TestResult {
    let dir = tempfile::tempdir()?;
    // More than the write buffer, in small pieces, over three "processes".
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let data = Bytes::from(data);
    let thirds = [0, 1_000_000, 2_000_000, 3_000_000];
    for session in 0..3 {
        let d = open(dir.path())?;
        let mut w = d.writer("/repo/_uploads/u1/data", session > 0).await?;
        assert_eq!(w.size(), thirds[session] as u64, "resumed size");
        for start in (thirds[session]..thirds[session + 1]).step_by(32 * 1024) {
            let end = (start + 32 * 1024).min(thirds[session + 1]);
            w.write(data.slice(start..end)).await?;
        }
        assert_eq!(w.size(), thirds[session + 1] as u64);
        if session < 2 {
            w.close().await?;
        } else {
            w.commit().await?;
        }
        drop(d);
    }
    let d = open(dir.path())?;
    assert_eq!(d.get_content("/repo/_uploads/u1/data").await?, data);
    // Committed: nothing is left in the staging area.
    assert_eq!(tree(&dir.path().join("~staging")), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn pending_data_is_invisible_to_every_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    let mut w = d.writer("/only/pending", false).await?;
    w.write(Bytes::from_static(b"not yet")).await?;
    w.close().await?;

    assert!(
        d.get_content("/only/pending")
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert!(
        d.reader("/only/pending", 0)
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert!(
        d.stat("/only/pending")
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert!(d.stat("/only").await.is_err_and(|e| e.is_not_found()));
    assert!(d.list("/only").await.is_err_and(|e| e.is_not_found()));
    assert_eq!(names(&d.list("/").await?), Vec::<&str>::new());
    let mut seen = Vec::new();
    d.walk("/", None, |fi| {
        seen.push(fi.path.to_string());
        Ok(WalkControl::Continue)
    })
    .await?;
    assert_eq!(seen, Vec::<String>::new(), "walk must not see ~staging");
    // Deleting finds nothing committed, but still drops the pending writer.
    assert!(d.delete("/only").await.is_err_and(|e| e.is_not_found()));
    assert!(
        d.writer("/only/pending", true)
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert_eq!(tree(&dir.path().join("~staging")), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn writers_at_a_path_and_below_it_do_not_collide() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    let mut upper = d.writer("/a/b", false).await?;
    upper.write(Bytes::from_static(b"upper")).await?;
    upper.close().await?;
    let mut lower = d.writer("/a/b/c", false).await?;
    lower.write(Bytes::from_static(b"lower!")).await?;
    lower.close().await?;

    assert_eq!(d.writer("/a/b", true).await?.size(), 5);
    assert_eq!(d.writer("/a/b/c", true).await?.size(), 6);
    assert_eq!(
        tree(&dir.path().join("~staging")),
        ["a", "a/b", "a/b/c~writer", "a/b~writer"]
    );
    // Cancelling one leaves the other and prunes nothing it still needs.
    d.writer("/a/b/c", true).await?.cancel().await?;
    assert_eq!(tree(&dir.path().join("~staging")), ["a", "a/b~writer"]);
    d.writer("/a/b", true).await?.commit().await?;
    assert_eq!(d.get_content("/a/b").await?, Bytes::from_static(b"upper"));
    assert_eq!(tree(&dir.path().join("~staging")), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn append_follows_the_contract() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    // Nothing at all: not found.
    assert!(d.writer("/x", true).await.is_err_and(|e| e.is_not_found()));
    // A committed non-empty object cannot be appended to.
    d.put_content("/x", Bytes::from_static(b"full")).await?;
    assert!(matches!(
        d.writer("/x", true).await,
        Err(Error::Unsupported { .. })
    ));
    // A directory is not an object to append to.
    d.put_content("/dir/f", Bytes::from_static(b"f")).await?;
    assert!(
        d.writer("/dir", true)
            .await
            .is_err_and(|e| e.is_not_found())
    );
    // A committed empty object can: the writer starts at 0 and the object
    // stays as it was until commit.
    d.put_content("/e", Bytes::new()).await?;
    let mut w = d.writer("/e", true).await?;
    assert_eq!(w.size(), 0);
    w.write(Bytes::from_static(b"grown")).await?;
    w.close().await?;
    assert_eq!(d.stat("/e").await?.size, 0);
    // append == false discards the unfinished writer.
    let w = d.writer("/e", false).await?;
    assert_eq!(w.size(), 0);
    w.close().await?;
    assert_eq!(d.writer("/e", true).await?.size(), 0);
    Ok(())
}

#[tokio::test]
async fn delete_and_rename_leave_no_empty_directories() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    d.put_content("/a/b/c/f1", Bytes::from_static(b"1")).await?;
    d.put_content("/a/b/g", Bytes::from_static(b"2")).await?;
    d.put_content("/a/h", Bytes::from_static(b"3")).await?;

    d.delete("/a/b/c/f1").await?;
    assert_eq!(names(&d.list("/a/b").await?), ["/a/b/g"]);
    assert!(d.stat("/a/b/c").await.is_err_and(|e| e.is_not_found()));

    d.rename("/a/b/g", "/z/moved").await?;
    assert_eq!(names(&d.list("/a").await?), ["/a/h"]);
    assert_eq!(d.get_content("/z/moved").await?, Bytes::from_static(b"2"));

    d.delete("/a/h").await?;
    d.delete("/z").await?;
    assert_eq!(names(&d.list("/").await?), Vec::<&str>::new());
    assert_eq!(
        tree(dir.path()),
        ["~staging"],
        "only the staging area remains"
    );
    Ok(())
}

#[tokio::test]
async fn a_batch_delete_of_blobs_leaves_no_empty_directories() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    let blob = |hex: &str| format!("/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let (gone, kept) = (["ab01", "ab02", "cd03"], ["ab04"]);
    for hex in gone.iter().chain(&kept) {
        d.put_content(blob(hex), Bytes::from_static(b"x")).await?;
    }
    let batch: Vec<String> = gone.iter().map(|h| blob(h)).collect();
    d.delete_files(&batch).await?;
    assert_eq!(
        tree(dir.path()),
        [
            "v2",
            "v2/blobs",
            "v2/blobs/sha256",
            "v2/blobs/sha256/ab",
            "v2/blobs/sha256/ab/ab04",
            "v2/blobs/sha256/ab/ab04/data",
            "~staging",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn reads_and_moves_report_missing_paths() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    d.put_content("/d/f", Bytes::from_static(b"abc")).await?;
    // A directory is not a file; below a file nothing exists.
    assert!(d.get_content("/d").await.is_err_and(|e| e.is_not_found()));
    assert!(d.reader("/d", 0).await.is_err_and(|e| e.is_not_found()));
    assert!(
        d.get_content("/d/f/x")
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert!(d.list("/d/f").await.is_err_and(|e| e.is_not_found()));
    // Offsets.
    let tail: Vec<Bytes> = d.reader("/d/f", 1).await?.try_collect().await?;
    assert_eq!(tail.concat(), b"bc");
    let none: Vec<Bytes> = d.reader("/d/f", 3).await?.try_collect().await?;
    assert!(none.concat().is_empty());
    assert!(matches!(
        d.reader("/d/f", 4).await,
        Err(Error::InvalidOffset { offset: 4, .. })
    ));
    // A failed move leaves the destination alone.
    d.put_content("/dst", Bytes::from_static(b"keep")).await?;
    assert!(
        d.rename("/nope", "/dst")
            .await
            .is_err_and(|e| e.is_not_found())
    );
    assert_eq!(d.get_content("/dst").await?, Bytes::from_static(b"keep"));
    Ok(())
}

#[tokio::test]
async fn committing_a_deleted_writer_is_not_found() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    let mut w = d.writer("/u/data", false).await?;
    w.write(Bytes::from_static(b"x")).await?;
    d.delete("/u").await.ok();
    assert!(w.commit().await.is_err_and(|e| e.is_not_found()));
    assert!(
        d.get_content("/u/data")
            .await
            .is_err_and(|e| e.is_not_found())
    );
    Ok(())
}

#[tokio::test]
async fn files_are_plain_files_in_distributions_layout() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Written by "distribution": visible to the driver.
    let blob = dir.path().join("docker/registry/v2/blobs/sha256/ab/abcd");
    std::fs::create_dir_all(&blob)?;
    std::fs::write(blob.join("data"), b"layer")?;
    let d = open(dir.path())?;
    assert_eq!(
        d.get_content("/docker/registry/v2/blobs/sha256/ab/abcd/data")
            .await?,
        Bytes::from_static(b"layer")
    );
    // Written by the driver: a plain file at the same place.
    d.put_content("/docker/registry/v2/repositories/r/link", "sha256:abcd")
        .await?;
    assert_eq!(
        std::fs::read(dir.path().join("docker/registry/v2/repositories/r/link"))?,
        b"sha256:abcd"
    );
    Ok(())
}

#[tokio::test]
async fn stat_reports_real_times_and_kinds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = open(dir.path())?;
    let root = d.stat("/").await?;
    assert!(root.is_dir);
    d.put_content("/s/f", Bytes::from_static(b"12345")).await?;
    let f = d.stat("/s/f").await?;
    assert!(!f.is_dir);
    assert_eq!(f.size, 5);
    let first = f.mod_time.ok_or("no mod time")?;
    assert_eq!(
        first,
        std::fs::metadata(dir.path().join("s/f"))?.modified()?
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    d.put_content("/s/f", Bytes::from_static(b"1")).await?;
    let second = d.stat("/s/f").await?.mod_time.ok_or("no mod time")?;
    assert!(second > first, "{second:?} not after {first:?}");
    let s = d.stat("/s").await?;
    assert!(s.is_dir && s.size == 0 && s.mod_time.is_some());
    Ok(())
}

#[tokio::test]
async fn root_is_created_and_listing_an_empty_store_works() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("not/yet/there");
    let d = open(&root)?;
    assert!(root.join("~staging").is_dir());
    assert_eq!(names(&d.list("/").await?), Vec::<&str>::new());
    // The root vanishing under a running driver is survived, too.
    std::fs::remove_dir_all(&root)?;
    assert_eq!(names(&d.list("/").await?), Vec::<&str>::new());
    d.put_content("/back", Bytes::from_static(b"1")).await?;
    assert_eq!(names(&d.list("/").await?), ["/back"]);
    Ok(())
}

#[tokio::test]
async fn max_threads_is_the_concurrency_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let fs = FilesystemDriver::new(dir.path())?;
    assert_eq!(fs.concurrency_limit(), Some(100));
    let fs = fs.with_max_threads(25)?;
    assert_eq!(fs.concurrency_limit(), Some(25));
    assert!(matches!(fs.with_max_threads(24), Err(Error::Config { .. })));

    let mut params = regstore_core::params::parse_pairs(["maxthreads=3"])?;
    params.insert(
        "rootdirectory".into(),
        dir.path().display().to_string().into(),
    );
    regstore_driver_filesystem::register();
    let err = regstore_core::create("filesystem", &params)
        .await
        .err()
        .ok_or("maxthreads=3 was accepted")?;
    assert_eq!(err.kind(), regstore_core::ErrorKind::Config);
    assert!(err.to_string().contains("at least 25"), "{err}");
    Ok(())
}

/// Many writers created, committed and removed side by side in one
/// directory: each clean-up prunes the shared parents while others are
/// creating their own directories in them. None may fail (a registry
/// running 16 uploads into one repository does exactly this).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_and_prune_in_one_directory_never_fail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let driver = open(dir.path())?;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let driver = driver.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let upload = format!("/repo/_uploads/u{t}-{i}");
                driver
                    .put_content(format!("{upload}/startedat"), "now")
                    .await?;
                // A writer in a directory of its own, created right after
                // its parents may have been pruned by another task.
                let mut w = driver.writer(format!("{upload}/x/data"), false).await?;
                w.write(Bytes::from_static(b"x")).await?;
                w.cancel().await?;
                let mut w = driver.writer(format!("{upload}/data"), false).await?;
                w.write(Bytes::from_static(b"some bytes")).await?;
                w.commit().await?;
                driver
                    .rename(format!("{upload}/data"), format!("/blobs/b{t}-{i}"))
                    .await?;
                driver.delete(&upload).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(driver.list("/blobs").await?.len(), 16 * 60);
    assert!(driver.list("/repo").await.is_err_and(|e| e.is_not_found()));
    assert_eq!(tree(&dir.path().join("~staging")), Vec::<String>::new());
    Ok(())
}
