//! Filesystem-specific promises beyond the shared suite.

use bytes::Bytes;
use regstore_core::{Driver, RawParams};
use regstore_driver_filesystem::FilesystemDriver;

fn driver(root: &std::path::Path) -> Driver {
    Driver::new(FilesystemDriver::new(root).unwrap())
}

#[tokio::test]
async fn a_closed_writer_is_resumed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let first = driver(dir.path());
        let mut w = first.writer("/up/data", false).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.close().await.unwrap();
    } // the first "process" is gone
    let second = driver(dir.path());
    let mut w = second.writer("/up/data", true).await.unwrap();
    assert_eq!(w.size(), 6);
    w.write(Bytes::from_static(b"world")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        &second.get_content("/up/data").await.unwrap()[..],
        b"hello world"
    );
    // Distribution's layout: the object is a plain file under the root.
    assert_eq!(
        std::fs::read(dir.path().join("up/data")).unwrap(),
        b"hello world"
    );
}

#[tokio::test]
async fn unfinished_writes_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path());
    d.put_content("/obj", Bytes::from_static(b"old"))
        .await
        .unwrap();
    let mut w = d.writer("/obj", false).await.unwrap();
    w.write(Bytes::from_static(b"new, longer")).await.unwrap();
    w.close().await.unwrap();
    let mut w2 = d.writer("/fresh/x", false).await.unwrap();
    w2.write(Bytes::from_static(b"pending")).await.unwrap();
    w2.close().await.unwrap();

    assert_eq!(&d.get_content("/obj").await.unwrap()[..], b"old");
    assert_eq!(d.stat("/obj").await.unwrap().size, 3);
    assert!(d.stat("/fresh/x").await.unwrap_err().is_not_found());
    let root: Vec<String> = d
        .list("/")
        .await
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        root,
        ["/obj"],
        "neither the pending writer nor ~staging shows"
    );
}

#[tokio::test]
async fn put_content_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path());
    for i in 0..20 {
        d.put_content(format!("/a/f{i}"), Bytes::from(vec![i as u8; 1000]))
            .await
            .unwrap();
    }
    let leftovers = staged(dir.path());
    assert!(leftovers.is_empty(), "left in ~staging: {leftovers:?}");
    assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 20);
}

/// The entries of the staging directory (where temporary files live).
fn staged(root: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(root.join("~staging"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// `put_contents_in_order` stops at the first item it cannot store: the
/// items before it are stored, none after it, and no temporary file is
/// left either way.
#[tokio::test]
async fn put_contents_in_order_stops_at_a_failure_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path());
    d.put_contents_in_order(vec![("/o/a", Bytes::from("a")), ("/o/b", Bytes::from("b"))])
        .await
        .unwrap();
    assert_eq!(d.get_content("/o/b").await.unwrap(), Bytes::from("b"));
    assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
    // `/o/a` is a file, so nothing can be stored below it.
    let err = d
        .put_contents_in_order(vec![
            ("/p/1", Bytes::from("1")),
            ("/o/a/x", Bytes::from("x")),
            ("/p/3", Bytes::from("3")),
        ])
        .await
        .expect_err("a path below a file");
    assert!(err.to_string().contains("filesystem"), "{err}");
    assert_eq!(d.get_content("/p/1").await.unwrap(), Bytes::from("1"));
    assert!(d.get_content("/p/3").await.unwrap_err().is_not_found());
    assert_eq!(d.get_content("/o/a").await.unwrap(), Bytes::from("a"));
    assert!(staged(dir.path()).is_empty(), "{:?}", staged(dir.path()));
}

#[tokio::test]
async fn delete_removes_unfinished_writers_below_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path());
    d.put_content("/repo/committed", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let mut w = d.writer("/repo/uploads/u1", false).await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.close().await.unwrap();
    d.delete("/repo").await.unwrap();
    assert!(
        d.writer("/repo/uploads/u1", true)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(!dir.path().join("~staging/repo").exists());
    assert!(d.list("/").await.unwrap().is_empty());
}

#[tokio::test]
async fn foreign_files_with_invalid_names_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("has space"), b"x").unwrap();
    std::fs::write(dir.path().join("ok"), b"x").unwrap();
    let d = driver(dir.path());
    let names: Vec<String> = d
        .list("/")
        .await
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(names, ["/ok"]);
}

#[tokio::test]
async fn maxthreads_below_the_minimum_is_refused() {
    regstore_builtin_linked();
    let dir = tempfile::tempdir().unwrap();
    let mut params = regstore_core::params::parse_pairs(["maxthreads=10"]).unwrap();
    params.insert(
        "rootdirectory".into(),
        dir.path().display().to_string().into(),
    );
    regstore_driver_filesystem::register();
    let e = regstore_core::create("filesystem", &params)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"filesystem: parameter "maxthreads" must be at least 25, got 10"#
    );
    let mut ok: RawParams = params.clone();
    ok.insert("maxthreads".into(), "25".into());
    regstore_driver_filesystem::register();
    let d = regstore_core::create("filesystem", &ok).await.unwrap();
    assert_eq!(d.name(), "filesystem");
}

/// This test binary links the crate, so its registration is present.
fn regstore_builtin_linked() {
    std::hint::black_box(FilesystemDriver::new::<std::path::PathBuf>);
}

/// One open writer per path, also between two drivers over one root (two
/// processes): a second writer is `Busy` — fresh or resumed — and is not
/// allowed to truncate the first one's bytes; after `close` it resumes.
#[tokio::test]
async fn a_second_writer_of_an_open_path_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (driver(dir.path()), driver(dir.path()));
    let mut w = a.writer("/up/data", false).await.unwrap();
    w.write(Bytes::from_static(b"first ")).await.unwrap();
    for append in [true, false] {
        let e = b.writer("/up/data", append).await.unwrap_err();
        assert!(e.is_busy(), "append={append}: {e}");
        assert_eq!(e.kind(), regstore_core::ErrorKind::Busy);
    }
    w.close().await.unwrap();
    let mut w = b.writer("/up/data", true).await.unwrap();
    assert_eq!(w.size(), 6, "the busy attempts truncated nothing");
    w.write(Bytes::from_static(b"second")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        &a.get_content("/up/data").await.unwrap()[..],
        b"first second"
    );
}

/// A writer that stays open cannot reach a committed object: once the
/// committing writer has published, a writer opened on the path starts a
/// new staging file, and committing an unrelated writer whose staging file
/// `delete` removed fails instead of publishing another writer's file.
#[tokio::test]
async fn a_committed_object_has_no_open_writer() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path());
    let mut w = d.writer("/blob", false).await.unwrap();
    w.write(Bytes::from_static(b"verified")).await.unwrap();
    w.commit().await.unwrap();
    // Appending to a committed non-empty object is refused.
    let e = d.writer("/blob", true).await.unwrap_err();
    assert_eq!(e.kind(), regstore_core::ErrorKind::Unsupported, "{e}");
    // A stale writer (its file deleted) does not publish a newer one's file.
    let mut stale = d.writer("/up/data", false).await.unwrap();
    stale.write(Bytes::from_static(b"stale")).await.unwrap();
    d.delete("/up").await.ok();
    let mut fresh = d.writer("/up/data", false).await.unwrap();
    fresh.write(Bytes::from_static(b"fresh")).await.unwrap();
    let e = stale.commit().await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    fresh.commit().await.unwrap();
    assert_eq!(&d.get_content("/up/data").await.unwrap()[..], b"fresh");
    assert_eq!(&d.get_content("/blob").await.unwrap()[..], b"verified");
}

/// Walks `/t` (after `start_after`) and returns what it visited,
/// skipping directories named `_skip`.
async fn walk_skipping(d: &Driver, start_after: Option<&str>) -> Vec<(String, u64, bool)> {
    let mut seen = Vec::new();
    d.walk("/t", start_after, |fi| {
        seen.push((fi.path.to_string(), fi.size, fi.is_dir));
        Ok(if fi.path.file_name() == Some("_skip") {
            regstore_core::WalkControl::SkipDir
        } else {
            regstore_core::WalkControl::Continue
        })
    })
    .await
    .unwrap();
    seen
}

/// The walk runs in one blocking section on the multi-threaded runtime and
/// per directory on the blocking pool elsewhere: both visit the same
/// entries, in the same order, and neither enters a skipped directory.
/// Directories come without a modification time, files with theirs.
#[test]
fn walk_is_the_same_on_either_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let fill = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let d = driver(&root);
    fill.block_on(async {
        for p in [
            "/t/a/x",
            "/t/a-b",
            "/t/a/_skip/deep",
            "/t/b/c/d",
            "/t/a.b/y",
        ] {
            d.put_content(p, Bytes::from_static(b"12345"))
                .await
                .unwrap();
        }
    });
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for hint in [None, Some("/t/a/_skip"), Some("/t/a-b")] {
        let one = current.block_on(walk_skipping(&d, hint));
        let other = multi.block_on(async {
            let d = d.clone();
            let hint = hint.map(str::to_owned);
            tokio::spawn(async move { walk_skipping(&d, hint.as_deref()).await })
                .await
                .unwrap()
        });
        assert_eq!(one, other, "start_after {hint:?}");
        if hint.is_none() {
            let paths: Vec<&str> = one.iter().map(|(p, _, _)| p.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "/t/a",
                    "/t/a/_skip",
                    "/t/a/x",
                    "/t/a-b",
                    "/t/a.b",
                    "/t/a.b/y",
                    "/t/b",
                    "/t/b/c",
                    "/t/b/c/d",
                ]
            );
            assert!(one.contains(&("/t/a/x".to_owned(), 5, false)));
            current.block_on(async {
                let mut times = Vec::new();
                d.walk("/t", None, |fi| {
                    times.push((fi.is_dir, fi.mod_time.is_some()));
                    Ok(regstore_core::WalkControl::Continue)
                })
                .await
                .unwrap();
                assert!(times.iter().all(|&(is_dir, has_time)| is_dir != has_time));
            });
        }
    }
}

/// A reader yields exactly the file's bytes from its offset, in chunks
/// read ahead of the consumer; a file cut short under it (by someone
/// else: blobs are never truncated in place) ends the stream with an
/// error naming the file, never with a short success.
#[tokio::test]
async fn a_reader_reads_ahead_and_reports_a_file_cut_under_it() {
    use futures_util::StreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let data: Vec<u8> = (0..(3 << 20) + 5).map(|i: u32| (i % 251) as u8).collect();
    d.put_content("/big", Bytes::from(data.clone()))
        .await
        .unwrap();
    let mut read = Vec::new();
    let mut stream = d.reader("/big", 7).await.unwrap();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert!(read == data[7..], "the bytes from offset 7, in order");

    let full = tmp.path().join("big");
    let mut stream = d.reader("/big", 0).await.unwrap();
    // The first chunk was read when the stream opened; the rest is gone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&full)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first[..], data[..first.len()]);
    let err = loop {
        match stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("a stream over a file cut short ended without an error"),
        }
    };
    assert!(err.to_string().contains("early"), "{err}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
}
