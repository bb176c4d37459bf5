//! distribution's driver suite (`testsuites.go`), case by case, with its
//! sizes and assertions. Where Go needs a negative offset to reach
//! `InvalidOffset`, offsets here are unsigned and the case reads past the end
//! instead.

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::{CaseResult, Ctx, Failure, Need, Rng, ensure, ensure_bytes, ensure_eq, expect_error};
use regstore_core::{ByteStream, ErrorKind, RedirectMethod, RedirectRequest, Writer};

macro_rules! table {
    ($($name:ident $(: $need:ident)?),* $(,)?) => {
        pub(crate) static CASES: &[crate::Case] = &[
            $(crate::Case {
                name: stringify!($name),
                needs: table!(@need $($need)?),
                run: |cx| Box::pin($name(cx)),
            }),*
        ];
    };
    (@need) => { Need::Nothing };
    (@need $need:ident) => { Need::$need };
}
pub(crate) use table;

table![
    root_exists,
    valid_paths,
    invalid_paths,
    write_read_1,
    write_read_2,
    write_read_3,
    write_read_4,
    write_read_non_utf8,
    truncate,
    read_nonexistent,
    write_read_streams_1,
    write_read_streams_2,
    write_read_streams_3,
    write_read_streams_4,
    write_read_streams_non_utf8,
    write_read_large_streams,
    reader_with_offset,
    continue_stream_append_large,
    continue_stream_append_small,
    rollback_small,
    rollback_large,
    read_nonexistent_stream,
    write_zero_byte_stream_then_append,
    write_zero_byte_content_then_append,
    list,
    list_large_directory,
    move_file,
    move_overwrite,
    move_nonexistent,
    move_invalid,
    delete,
    redirect_url: Redirect,
    delete_nonexistent,
    delete_folder,
    delete_only_deletes_subpaths,
    delete_files,
    stat_call,
    put_content_multiple_times,
    put_contents_in_order,
    put_content_if_absent: CreateIfAbsent,
    put_content_if_absent_volatile: CreateIfAbsent,
    put_content_if_absent_race: CreateIfAbsent,
    volatile_writes,
    children_stamps,
    exclusive_writers: ExclusiveWriters,
    put_content_if_absent_unclaimed,
    concurrent_stream_reads,
    concurrent_file_streams,
];

const MIB: usize = 1 << 20;

/// Reads a stream to the end.
pub(crate) async fn read_all(stream: ByteStream) -> Result<Bytes, Failure> {
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    Ok(out.freeze())
}

/// Writes `data` in pieces of 32 KiB, as Go's `io.Copy` does.
async fn write_in_pieces(w: &mut Writer, data: &Bytes) -> CaseResult {
    for start in (0..data.len()).step_by(32 * 1024) {
        let end = (start + 32 * 1024).min(data.len());
        w.write(data.slice(start..end)).await?;
    }
    Ok(())
}

/// Writes `size` random bytes from `rng` in 1 MiB pieces, feeding `hash`.
async fn write_random(w: &mut Writer, rng: &mut Rng, size: u64, hash: &mut Sha256) -> CaseResult {
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        let piece = rng.bytes(n);
        hash.update(&piece);
        w.write(piece).await?;
        left -= n as u64;
    }
    Ok(())
}

async fn write_read_compare(cx: &Ctx, path: &str, contents: Bytes) -> CaseResult {
    cx.track(path);
    cx.driver.put_content(path, contents.clone()).await?;
    let got = cx.driver.get_content(path).await?;
    ensure_bytes!(got, contents, "get_content({path}) after put_content");
    Ok(())
}

async fn write_read_compare_streams(cx: &Ctx, path: &str, contents: Bytes) -> CaseResult {
    cx.track(path);
    let mut w = cx.driver.writer(path, false).await?;
    write_in_pieces(&mut w, &contents).await?;
    ensure_eq!(w.size(), contents.len() as u64, "writer size after writing");
    w.commit().await?;
    let got = read_all(cx.driver.reader(path, 0).await?).await?;
    ensure_bytes!(got, contents, "reader({path}, 0) after commit");
    Ok(())
}

async fn root_exists(cx: &Ctx) -> CaseResult {
    cx.driver
        .list("/")
        .await
        .map_err(|e| Failure(format!("the root path \"/\" should always exist: {e}")))?;
    Ok(())
}

async fn valid_paths(cx: &Ctx) -> CaseResult {
    let contents = cx.contents(64);
    for path in [
        "/a",
        "/2",
        "/aa",
        "/a.a",
        "/0-9/abcdefg",
        "/abcdefg/z.75",
        "/abc/1.2.3.4.5-6_zyx/123.z/4",
        "/docker/docker-registry",
        "/123.abc",
        "/abc./abc",
        "/.abc",
        "/a--b",
        "/a-.b",
        "/_.abc",
        "/Docker/docker-registry",
        "/Abc/Cba",
    ] {
        cx.track(path);
        cx.driver.put_content(path, contents.clone()).await?;
        let got = cx.driver.get_content(path).await?;
        ensure_bytes!(got, contents, "get_content({path})");
    }
    Ok(())
}

async fn invalid_paths(cx: &Ctx) -> CaseResult {
    let contents = cx.contents(64);
    for path in ["", "/", "abc", "123.abc", "//bcd", "/abc_123/"] {
        let put = cx.driver.put_content(path, contents.clone()).await;
        if put.is_ok() {
            cx.track(path);
        }
        expect_error(
            put,
            ErrorKind::InvalidPath,
            cx.name(),
            &format!("put_content({path:?})"),
        )?;
        let get = cx.driver.get_content(path).await;
        expect_error(
            get,
            ErrorKind::InvalidPath,
            cx.name(),
            &format!("get_content({path:?})"),
        )?;
    }
    Ok(())
}

async fn write_read_1(cx: &Ctx) -> CaseResult {
    write_read_compare(cx, &cx.path(32), Bytes::from_static(b"a")).await
}

async fn write_read_2(cx: &Ctx) -> CaseResult {
    write_read_compare(cx, &cx.path(32), Bytes::from_static("ß".as_bytes())).await
}

async fn write_read_3(cx: &Ctx) -> CaseResult {
    write_read_compare(cx, &cx.path(32), cx.contents(32)).await
}

async fn write_read_4(cx: &Ctx) -> CaseResult {
    write_read_compare(cx, &cx.path(32), cx.contents(MIB)).await
}

async fn write_read_non_utf8(cx: &Ctx) -> CaseResult {
    write_read_compare(cx, &cx.path(32), Bytes::from_static(&[0x80; 4])).await
}

async fn truncate(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    write_read_compare(cx, &path, cx.contents(MIB)).await?;
    write_read_compare(cx, &path, cx.contents(1024)).await
}

async fn read_nonexistent(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let got = cx.driver.get_content(&path).await;
    expect_error(
        got,
        ErrorKind::PathNotFound,
        cx.name(),
        "get_content of a missing path",
    )
}

async fn write_read_streams_1(cx: &Ctx) -> CaseResult {
    write_read_compare_streams(cx, &cx.path(32), Bytes::from_static(b"a")).await
}

async fn write_read_streams_2(cx: &Ctx) -> CaseResult {
    write_read_compare_streams(cx, &cx.path(32), Bytes::from_static("ß".as_bytes())).await
}

async fn write_read_streams_3(cx: &Ctx) -> CaseResult {
    write_read_compare_streams(cx, &cx.path(32), cx.contents(32)).await
}

async fn write_read_streams_4(cx: &Ctx) -> CaseResult {
    write_read_compare_streams(cx, &cx.path(32), cx.contents(MIB)).await
}

async fn write_read_streams_non_utf8(cx: &Ctx) -> CaseResult {
    write_read_compare_streams(cx, &cx.path(32), Bytes::from_static(&[0x80; 4])).await
}

async fn write_read_large_streams(cx: &Ctx) -> CaseResult {
    let size: u64 = if cx.opts.short { 64 << 20 } else { 5 << 30 };
    let path = cx.path(32);
    let mut rng = cx.fork_rng();
    let mut sent = Sha256::new();
    let mut w = cx.driver.writer(&path, false).await?;
    write_random(&mut w, &mut rng, size, &mut sent).await?;
    ensure_eq!(w.size(), size, "writer size after {size} bytes");
    w.commit().await?;

    let mut stream = cx.driver.reader(&path, 0).await?;
    let mut got = Sha256::new();
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        read += chunk.len() as u64;
        got.update(&chunk);
    }
    ensure_eq!(read, size, "bytes read back");
    ensure!(
        sent.finalize() == got.finalize(),
        "sha256 of what was read differs from what was written"
    );
    Ok(())
}

async fn reader_with_offset(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let chunk = 32usize;
    let (c1, c2, c3) = (cx.contents(chunk), cx.contents(chunk), cx.contents(chunk));
    let all = [c1.as_ref(), c2.as_ref(), c3.as_ref()].concat();
    cx.driver.put_content(&path, all.clone()).await?;

    let got = read_all(cx.driver.reader(&path, 0).await?).await?;
    ensure_bytes!(got, all, "reader at 0");
    let got = read_all(cx.driver.reader(&path, chunk as u64).await?).await?;
    ensure_bytes!(got, all[chunk..], "reader at {chunk}");
    let got = read_all(cx.driver.reader(&path, 2 * chunk as u64).await?).await?;
    ensure_bytes!(got, c3, "reader at {}", 2 * chunk);

    // Past the end: InvalidOffset naming the path, the offset and the driver.
    match cx.driver.reader(&path, 3 * chunk as u64 + 1).await {
        Err(regstore_core::Error::InvalidOffset {
            driver,
            path: p,
            offset,
        }) => {
            ensure_eq!(offset, 3 * chunk as u64 + 1, "offset in the error");
            ensure_eq!(p, path, "path in the error");
            ensure_eq!(driver.0, cx.name(), "driver in the error");
        }
        Err(e) => {
            return Err(Failure(format!(
                "reader past the end: expected InvalidOffset, got {e}"
            )));
        }
        Ok(_) => {
            return Err(Failure(
                "reader past the end: expected InvalidOffset, got a stream".into(),
            ));
        }
    }

    // At the end exactly: an empty stream.
    let got = read_all(cx.driver.reader(&path, 3 * chunk as u64).await?).await?;
    ensure_eq!(got.len(), 0, "reader at offset == size");

    // One before the end: one byte, then the end.
    let got = read_all(cx.driver.reader(&path, 3 * chunk as u64 - 1).await?).await?;
    ensure_bytes!(got, all[3 * chunk - 1..], "reader at size-1");
    Ok(())
}

async fn continue_stream_append(cx: &Ctx, chunk: u64) -> CaseResult {
    let path = cx.path(32);
    let mut rng = cx.fork_rng();
    let full = rng.bytes(3 * chunk as usize);
    let part = |i: u64| full.slice((i * chunk) as usize..((i + 1) * chunk) as usize);

    let mut w = cx.driver.writer(&path, false).await?;
    write_in_pieces(&mut w, &part(0)).await?;
    ensure_eq!(w.size(), chunk, "size after the first session");
    w.close().await?;

    let mut w = cx.driver.writer(&path, true).await?;
    ensure_eq!(w.size(), chunk, "size of the resumed writer");
    write_in_pieces(&mut w, &part(1)).await?;
    ensure_eq!(w.size(), 2 * chunk, "size after the second session");
    w.close().await?;

    let mut w = cx.driver.writer(&path, true).await?;
    ensure_eq!(w.size(), 2 * chunk, "size of the writer resumed again");
    write_in_pieces(&mut w, &part(2)).await?;
    ensure_eq!(w.size(), 3 * chunk, "size after the third session");
    w.commit().await?;

    let got = cx.driver.get_content(&path).await?;
    ensure_bytes!(got, full, "content after three sessions");
    Ok(())
}

async fn continue_stream_append_large(cx: &Ctx) -> CaseResult {
    continue_stream_append(cx, 10 * MIB as u64).await
}

async fn continue_stream_append_small(cx: &Ctx) -> CaseResult {
    continue_stream_append(cx, 32).await
}

/// `rollback` (a regstore addition to the contract): a rolled-back session
/// leaves no trace. A fresh writer rolled back is gone; a resumed one
/// resumes at the size it was resumed at, and what the session wrote is
/// not in the object committed later. With `chunk` past a driver's part
/// size a rollback may be `Unsupported` (a backend that cannot take parts
/// back); the writer must then still be discardable.
async fn rollback_sessions(cx: &Ctx, chunk: u64) -> CaseResult {
    let path = cx.path(32);
    let mut rng = cx.fork_rng();
    let c = chunk as usize;
    let first = rng.bytes(c);
    let dropped = rng.bytes(c);
    let second = rng.bytes(c);

    let mut w = cx.driver.writer(&path, false).await?;
    write_in_pieces(&mut w, &first).await?;
    w.rollback().await?;
    let r = cx.driver.writer(&path, true).await;
    expect_error(
        r.map(|w| w.size()),
        ErrorKind::PathNotFound,
        cx.name(),
        "resuming a fresh writer that was rolled back",
    )?;

    let mut w = cx.driver.writer(&path, false).await?;
    write_in_pieces(&mut w, &first).await?;
    w.close().await?;

    let mut w = cx.driver.writer(&path, true).await?;
    write_in_pieces(&mut w, &dropped).await?;
    ensure_eq!(w.size(), 2 * chunk, "size before the rollback");
    match w.rollback().await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::Unsupported && chunk >= MIB as u64 => {
            // Cannot take back what a part sent: discarding must still work.
            cx.driver.writer(&path, false).await?.cancel().await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }

    let mut w = cx.driver.writer(&path, true).await?;
    ensure_eq!(w.size(), chunk, "size resumed after a rollback");
    write_in_pieces(&mut w, &second).await?;
    w.close().await?;

    // A session that wrote nothing rolls back to where it was too.
    let w = cx.driver.writer(&path, true).await?;
    ensure_eq!(w.size(), 2 * chunk, "size resumed after the second session");
    w.rollback().await?;

    let w = cx.driver.writer(&path, true).await?;
    ensure_eq!(w.size(), 2 * chunk, "size resumed after an empty rollback");
    w.commit().await?;
    let got = cx.driver.get_content(&path).await?;
    let mut want = BytesMut::with_capacity(2 * c);
    want.extend_from_slice(&first);
    want.extend_from_slice(&second);
    ensure_bytes!(got, want, "content without the rolled-back session");
    Ok(())
}

async fn rollback_small(cx: &Ctx) -> CaseResult {
    rollback_sessions(cx, 32).await
}

async fn rollback_large(cx: &Ctx) -> CaseResult {
    rollback_sessions(cx, 10 * MIB as u64).await
}

async fn read_nonexistent_stream(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let r = cx.driver.reader(&path, 0).await;
    expect_error(
        r.map(|_| ()),
        ErrorKind::PathNotFound,
        cx.name(),
        "reader at 0 of a missing path",
    )?;
    let r = cx.driver.reader(&path, 64).await;
    expect_error(
        r.map(|_| ()),
        ErrorKind::PathNotFound,
        cx.name(),
        "reader at 64 of a missing path",
    )
}

async fn append_after_empty(cx: &Ctx, path: &str) -> CaseResult {
    let got = read_all(cx.driver.reader(path, 0).await?).await?;
    ensure_eq!(got.len(), 0, "the empty object reads as empty");

    let chunk = cx.contents(32);
    let mut w = cx.driver.writer(path, true).await?;
    ensure_eq!(w.size(), 0, "appending to an empty object starts at 0");
    w.write(chunk.clone()).await?;
    ensure_eq!(w.size(), 32, "size after appending");
    w.commit().await?;

    let got = read_all(cx.driver.reader(path, 0).await?).await?;
    ensure_bytes!(got, chunk, "content after appending to an empty object");
    Ok(())
}

async fn write_zero_byte_stream_then_append(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let w = cx.driver.writer(&path, false).await?;
    ensure_eq!(w.size(), 0, "size of a fresh writer");
    w.commit().await?;
    append_after_empty(cx, &path).await
}

async fn write_zero_byte_content_then_append(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    cx.driver.put_content(&path, Bytes::new()).await?;
    append_after_empty(cx, &path).await
}

async fn list(cx: &Ctx) -> CaseResult {
    let root = format!("/{}", cx.filename(8 + (cx.fork_rng().below(8) as usize)));
    cx.track(&root);
    let missing = format!("{root}/nonexistent");
    expect_error(
        cx.driver.list(&missing).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "list of a missing directory",
    )?;

    let parent = format!(
        "{root}/{}",
        cx.filename(8 + (cx.fork_rng().below(8) as usize))
    );
    let mut children = Vec::new();
    for _ in 0..50 {
        let child = format!(
            "{parent}/{}",
            cx.filename(8 + (cx.fork_rng().below(8) as usize))
        );
        cx.driver.put_content(&child, cx.contents(32)).await?;
        children.push(child);
    }
    children.sort();
    children.dedup();

    let keys = cx.driver.list("/").await?;
    ensure_eq!(strings(&keys), vec![root.clone()], "list(\"/\")");
    let keys = cx.driver.list(&root).await?;
    ensure_eq!(strings(&keys), vec![parent.clone()], "list({root})");
    let mut keys = strings(&cx.driver.list(&parent).await?);
    keys.sort();
    ensure_eq!(keys, children, "list({parent})");
    Ok(())
}

/// Not in distribution's suite: a directory larger than one listing page of
/// any object store (1,000 keys), and not a multiple of common page sizes.
async fn list_large_directory(cx: &Ctx) -> CaseResult {
    let dir = format!("/{}", cx.filename(16));
    cx.track(&dir);
    let mut want = Vec::new();
    for i in 0..1234 {
        let child = format!("{dir}/c{i:05}");
        cx.driver.put_content(&child, Bytes::new()).await?;
        want.push(child);
    }
    let got = strings(&cx.driver.list(&dir).await?);
    ensure_eq!(got.len(), want.len(), "number of children listed");
    ensure_eq!(got, want, "children of {dir}");
    Ok(())
}

fn strings(paths: &[regstore_core::StoragePath]) -> Vec<String> {
    paths.iter().map(|p| p.as_str().to_owned()).collect()
}

async fn move_file(cx: &Ctx) -> CaseResult {
    let contents = cx.contents(32);
    let (src, dst) = (cx.path(32), cx.path(32));
    cx.driver.put_content(&src, contents.clone()).await?;
    cx.driver.rename(&src, &dst).await?;
    let got = cx.driver.get_content(&dst).await?;
    ensure_bytes!(got, contents, "content at the destination");
    expect_error(
        cx.driver.get_content(&src).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "source after the move",
    )
}

async fn move_overwrite(cx: &Ctx) -> CaseResult {
    let (src, dst) = (cx.path(32), cx.path(32));
    let (src_contents, dst_contents) = (cx.contents(32), cx.contents(64));
    cx.driver.put_content(&src, src_contents.clone()).await?;
    cx.driver.put_content(&dst, dst_contents).await?;
    cx.driver.rename(&src, &dst).await?;
    let got = cx.driver.get_content(&dst).await?;
    ensure_bytes!(got, src_contents, "destination after an overwriting move");
    expect_error(
        cx.driver.get_content(&src).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "source after the move",
    )
}

async fn move_nonexistent(cx: &Ctx) -> CaseResult {
    let contents = cx.contents(32);
    let (src, dst) = (cx.path(32), cx.path(32));
    cx.driver.put_content(&dst, contents.clone()).await?;
    expect_error(
        cx.driver.rename(&src, &dst).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "move of a missing source",
    )?;
    let got = cx.driver.get_content(&dst).await?;
    ensure_bytes!(got, contents, "destination after a failed move");
    Ok(())
}

async fn move_invalid(cx: &Ctx) -> CaseResult {
    cx.track("/notadir");
    cx.driver.put_content("/notadir", cx.contents(32)).await?;
    let r = cx.driver.rename("/notadir/foo", "/notadir/bar").await;
    ensure!(r.is_err(), "moving a missing file below a file must fail");
    Ok(())
}

async fn delete(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    cx.driver.put_content(&path, cx.contents(32)).await?;
    cx.driver.delete(&path).await?;
    expect_error(
        cx.driver.get_content(&path).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "get_content after delete",
    )
}

async fn redirect_url(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let contents = cx.contents(32);
    cx.driver.put_content(&path, contents.clone()).await?;
    // reqwest here has rustls without a bundled provider (see the cloud
    // drivers): install ring first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| Failure(format!("HTTP client: {e}")))?;

    let get = RedirectRequest::new(RedirectMethod::Get);
    let Some(url) = cx.driver.redirect_url(&get, &path).await? else {
        return Err(Failure(
            "the driver claims redirect but returned no URL for GET".into(),
        ));
    };
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| Failure(format!("GET {url}: {e}")))?;
    ensure_eq!(resp.status().as_u16(), 200, "status of GET {url}");
    let body = resp
        .bytes()
        .await
        .map_err(|e| Failure(format!("GET {url}: {e}")))?;
    ensure_bytes!(body, contents, "body of GET {url}");

    let head = RedirectRequest::new(RedirectMethod::Head);
    let Some(url) = cx.driver.redirect_url(&head, &path).await? else {
        return Err(Failure(
            "the driver claims redirect but returned no URL for HEAD".into(),
        ));
    };
    let resp = client
        .head(url.clone())
        .send()
        .await
        .map_err(|e| Failure(format!("HEAD {url}: {e}")))?;
    ensure_eq!(resp.status().as_u16(), 200, "status of HEAD {url}");
    let len = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    ensure_eq!(len, Some(32), "Content-Length of HEAD {url}");
    Ok(())
}

async fn delete_nonexistent(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    expect_error(
        cx.driver.delete(&path).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "delete of a missing path",
    )
}

async fn delete_folder(cx: &Ctx) -> CaseResult {
    let dir = cx.path(32);
    let files: Vec<String> = (0..3)
        .map(|_| format!("{dir}{}", cx.rng().path(32)))
        .collect();
    let contents = cx.contents(32);
    for f in &files {
        cx.driver.put_content(f, contents.clone()).await?;
    }
    cx.driver.delete(&files[0]).await?;
    expect_error(
        cx.driver.get_content(&files[0]).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "deleted file",
    )?;
    cx.driver.get_content(&files[1]).await?;
    cx.driver.get_content(&files[2]).await?;

    cx.driver.delete(&dir).await?;
    for f in &files {
        expect_error(
            cx.driver.get_content(f).await,
            ErrorKind::PathNotFound,
            cx.name(),
            "file in a deleted folder",
        )?;
    }
    Ok(())
}

async fn delete_only_deletes_subpaths(cx: &Ctx) -> CaseResult {
    let dir = cx.path(32);
    let file = cx.rng().path(32);
    let contents = cx.contents(32);
    let a = format!("{dir}{file}");
    let a_suffix = format!("{dir}{file}suffix");
    let nested = format!("{dir}{dir}{file}");
    let nested_suffix = format!("{dir}{dir}suffix{file}");
    for p in [&a, &a_suffix, &nested, &nested_suffix] {
        cx.driver.put_content(p, contents.clone()).await?;
    }

    cx.driver.delete(&a).await?;
    expect_error(
        cx.driver.get_content(&a).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "deleted file",
    )?;
    cx.driver
        .get_content(&a_suffix)
        .await
        .map_err(|e| Failure(format!("deleting {a} also removed {a_suffix}: {e}")))?;

    cx.driver.delete(format!("{dir}{dir}")).await?;
    expect_error(
        cx.driver.get_content(&nested).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "file in a deleted folder",
    )?;
    cx.driver.get_content(&nested_suffix).await.map_err(|e| {
        Failure(format!(
            "deleting {dir}{dir} also removed {nested_suffix}: {e}"
        ))
    })?;
    Ok(())
}

/// Not in distribution's suite: the batch delete of files that garbage
/// collection uses. Files go in several directories, some of which the
/// batch empties (they must vanish too), next to files that must survive
/// (`/a/bc` beside `/a/b`, a file in the same directory); paths with
/// nothing there are fine.
async fn delete_files(cx: &Ctx) -> CaseResult {
    let root = format!("/{}", cx.filename(12));
    cx.track(&root);
    let many: Vec<String> = (0..20).map(|i| format!("many/f{i:02}")).collect();
    let mut doomed: Vec<&str> = vec!["a/b", "a/x/1", "s/1"];
    doomed.extend(many.iter().map(String::as_str));
    doomed.extend(["a/x/2", "d/e/f/data"]);
    let survivors = ["a/bc", "a/bd/keep", "s/2"];
    let contents = cx.contents(32);
    for f in doomed.iter().chain(&survivors).chain(&["gone"]) {
        cx.driver
            .put_content(format!("{root}/{f}"), contents.clone())
            .await?;
    }
    cx.driver.delete(format!("{root}/gone")).await?;

    let missing = ["gone", "a/missing", "nowhere/deep/x"];
    let batch: Vec<String> = doomed
        .iter()
        .chain(&missing)
        .map(|f| format!("{root}/{f}"))
        .collect();
    cx.driver.delete_files(&batch).await?;

    for f in &survivors {
        let got = cx.driver.get_content(format!("{root}/{f}")).await?;
        ensure_bytes!(got, contents, "{root}/{f} after deleting its neighbours");
    }
    for f in doomed.iter().chain(["a/x", "d", "many"].iter()) {
        expect_error(
            cx.driver.stat(format!("{root}/{f}")).await,
            ErrorKind::PathNotFound,
            cx.name(),
            &format!("stat of {root}/{f} after delete_files"),
        )?;
    }
    ensure_eq!(
        strings(&cx.driver.list(&root).await?),
        [format!("{root}/a"), format!("{root}/s")],
        "list({root}): directories the batch emptied must be gone"
    );
    ensure_eq!(
        strings(&cx.driver.list(format!("{root}/a")).await?),
        [format!("{root}/a/bc"), format!("{root}/a/bd")],
        "list({root}/a)"
    );
    let walked: Vec<String> = cx
        .driver
        .walk_all(&root)
        .await?
        .iter()
        .map(|fi| fi.path.as_str().to_owned())
        .collect();
    let want: Vec<String> = ["a", "a/bc", "a/bd", "a/bd/keep", "s", "s/2"]
        .iter()
        .map(|f| format!("{root}/{f}"))
        .collect();
    ensure_eq!(walked, want, "walk({root}) after delete_files");

    // Again: everything is gone already, which is fine; so is nothing.
    cx.driver.delete_files(&batch).await?;
    cx.driver.delete_files::<String>(&[]).await?;
    // One invalid path, and nothing is deleted.
    let keep = format!("{root}/s/2");
    expect_error(
        cx.driver.delete_files(&[keep.as_str(), "/"]).await,
        ErrorKind::InvalidPath,
        cx.name(),
        "delete_files with the root among its paths",
    )?;
    cx.driver.get_content(&keep).await?;
    Ok(())
}

async fn stat_call(cx: &Ctx) -> CaseResult {
    let dir = cx.path(32);
    let file = format!("{dir}/{}", cx.filename(32));

    expect_error(
        cx.driver.stat(&dir).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "stat of a missing directory",
    )?;
    expect_error(
        cx.driver.stat(&file).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "stat of a missing file",
    )?;

    let before = std::time::SystemTime::now();
    cx.driver.put_content(&file, cx.contents(4096)).await?;
    let fi = cx.driver.stat(&file).await?;
    ensure_eq!(fi.path.as_str(), file.as_str(), "stat path");
    ensure_eq!(fi.size, 4096, "stat size");
    ensure!(!fi.is_dir, "a file is not a directory");
    let created = fi
        .mod_time
        .ok_or_else(|| Failure("a file must have a modification time".into()))?;
    let slack = std::time::Duration::from_secs(2);
    ensure!(
        created + slack >= before && created <= std::time::SystemTime::now() + slack,
        "modification time {created:?} is not around now"
    );

    // distribution sleeps 10 s; mod times here have sub-second resolution on
    // every supported backend, so a shorter pause still proves the order.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    cx.driver.put_content(&file, cx.contents(4096)).await?;
    let fi = cx.driver.stat(&file).await?;
    let modified = fi
        .mod_time
        .ok_or_else(|| Failure("a file must have a modification time".into()))?;
    ensure!(
        modified > created,
        "mod time {modified:?} is not after the first write at {created:?}"
    );

    let fi = cx.driver.stat(&dir).await?;
    ensure_eq!(fi.path.as_str(), dir.as_str(), "stat path of the directory");
    ensure_eq!(fi.size, 0, "directory size");
    ensure!(fi.is_dir, "{dir} must be a directory");

    match cx.driver.stat("/").await {
        Ok(fi) => ensure!(fi.is_dir, "/ must be a directory"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn put_content_multiple_times(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    cx.driver.put_content(&path, cx.contents(4096)).await?;
    let smaller = cx.contents(2048);
    cx.driver.put_content(&path, smaller.clone()).await?;
    let got = cx.driver.get_content(&path).await?;
    ensure_bytes!(got, smaller, "content after a smaller overwrite");
    Ok(())
}

/// `put_contents_in_order` stores each item as `put_content` does (a
/// new object, one replaced by a smaller one, an empty one); an empty list
/// stores nothing; with one invalid path among the items nothing is
/// stored. (The order itself, each item visible only once those before it
/// are durable, is not observable from one process without a crash.)
async fn put_contents_in_order(cx: &Ctx) -> CaseResult {
    let (a, b, c) = (cx.path(32), cx.path(32), cx.path(32));
    cx.driver.put_content(&b, cx.contents(4096)).await?;
    let items = vec![
        (a, cx.contents(100)),
        (b, cx.contents(2048)),
        (c, Bytes::new()),
    ];
    cx.driver.put_contents_in_order(items.clone()).await?;
    for (path, want) in &items {
        ensure_bytes!(
            cx.driver.get_content(path).await?,
            want,
            "get_content({path}) after put_contents_in_order"
        );
    }
    cx.driver
        .put_contents_in_order(Vec::<(String, Bytes)>::new())
        .await?;
    let fresh = cx.path(32);
    expect_error(
        cx.driver
            .put_contents_in_order(vec![
                (fresh.clone(), cx.contents(10)),
                ("/".to_owned(), cx.contents(10)),
            ])
            .await,
        ErrorKind::InvalidPath,
        cx.name(),
        "put_contents_in_order with the root among its paths",
    )?;
    expect_error(
        cx.driver.get_content(&fresh).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "get_content of an item of a refused put_contents_in_order",
    )?;
    Ok(())
}

async fn put_content_if_absent(cx: &Ctx) -> CaseResult {
    create_if_absent_cycle(cx, false).await
}

/// `put_content_if_absent_volatile` (see `volatile_writes`) keeps the
/// create-if-absent contract.
async fn put_content_if_absent_volatile(cx: &Ctx) -> CaseResult {
    create_if_absent_cycle(cx, true).await
}

/// `put_content_if_absent`, or its volatile form.
async fn create_if_absent(
    cx: &Ctx,
    path: &str,
    content: Bytes,
    volatile: bool,
) -> Result<bool, Failure> {
    Ok(if volatile {
        cx.driver
            .put_content_if_absent_volatile(path, content)
            .await?
    } else {
        cx.driver.put_content_if_absent(path, content).await?
    })
}

/// Stores, is refused over the object, stores again after a delete.
async fn create_if_absent_cycle(cx: &Ctx, volatile: bool) -> CaseResult {
    // A path below directories that do not exist yet.
    let path = format!("{}/{}", cx.path(16), cx.filename(16));
    let first = cx.contents(300);
    let created = create_if_absent(cx, &path, first.clone(), volatile).await?;
    ensure!(created, "put_content_if_absent on an empty path must store");
    let again = create_if_absent(cx, &path, cx.contents(200), volatile).await?;
    ensure!(
        !again,
        "put_content_if_absent over an object must not store"
    );
    let got = cx.driver.get_content(&path).await?;
    ensure_bytes!(got, first, "content after a refused put_content_if_absent");
    cx.driver.delete(&path).await?;
    let second = cx.contents(100);
    let created = create_if_absent(cx, &path, second.clone(), volatile).await?;
    ensure!(created, "put_content_if_absent after delete must store");
    ensure_bytes!(
        cx.driver.get_content(&path).await?,
        second,
        "content after delete and put_content_if_absent"
    );
    Ok(())
}

/// The volatile calls (a regstore addition to the contract, see
/// `StorageDriver::volatile_epoch`) store what the durable ones store:
/// `put_content_volatile` reads back and replaces; a writer closed with
/// `close_volatile` resumes at its size, twice, and its commit publishes
/// every byte; the epoch holds while the driver lives.
async fn volatile_writes(cx: &Ctx) -> CaseResult {
    let epoch = cx.driver.volatile_epoch().map(str::to_owned);
    let path = cx.path(32);
    let first = cx.contents(4096);
    cx.driver.put_content_volatile(&path, first.clone()).await?;
    ensure_bytes!(
        cx.driver.get_content(&path).await?,
        first,
        "get_content after put_content_volatile"
    );
    let smaller = cx.contents(100);
    cx.driver
        .put_content_volatile(&path, smaller.clone())
        .await?;
    ensure_bytes!(
        cx.driver.get_content(&path).await?,
        smaller,
        "get_content after a second, smaller put_content_volatile"
    );

    let stream = cx.path(32);
    let mut rng = cx.fork_rng();
    let (a, b) = (rng.bytes(3000), rng.bytes(5000));
    let mut w = cx.driver.writer(&stream, false).await?;
    write_in_pieces(&mut w, &a).await?;
    w.close_volatile().await?;
    let mut w = cx.driver.writer(&stream, true).await?;
    ensure_eq!(
        w.size(),
        a.len() as u64,
        "size resumed after close_volatile"
    );
    write_in_pieces(&mut w, &b).await?;
    w.close_volatile().await?;
    let w = cx.driver.writer(&stream, true).await?;
    ensure_eq!(
        w.size(),
        (a.len() + b.len()) as u64,
        "size resumed after a second close_volatile"
    );
    w.commit().await?;
    let mut all = BytesMut::from(&a[..]);
    all.extend_from_slice(&b);
    ensure_bytes!(
        read_all(cx.driver.reader(&stream, 0).await?).await?,
        all.freeze(),
        "the object committed after volatile closes"
    );
    ensure_eq!(
        cx.driver.volatile_epoch().map(str::to_owned),
        epoch,
        "volatile_epoch while the driver lives"
    );
    Ok(())
}

/// `exclusive_writers` (a regstore capability): while a writer of a path
/// is open, another writer of it, fresh or resuming, is `Busy`; once the
/// writer is closed, rolled back or cancelled, the next one opens (and a
/// resumed one holds the path the same way). The registry relies on this
/// to order an upload's requests without a lease.
async fn exclusive_writers(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let busy = |r: regstore_core::Result<Writer>, what: &str| {
        expect_error(r.map(|_| ()), ErrorKind::Busy, cx.name(), what)
    };
    let mut w = cx.driver.writer(&path, false).await?;
    w.write(cx.contents(64)).await?;
    busy(
        cx.driver.writer(&path, false).await,
        "a fresh writer beside an open one",
    )?;
    busy(
        cx.driver.writer(&path, true).await,
        "a resumed writer beside an open one",
    )?;
    w.close().await?;
    let mut resumed = cx.driver.writer(&path, true).await?;
    ensure_eq!(resumed.size(), 64, "the closed writer's size, resumed");
    busy(
        cx.driver.writer(&path, true).await,
        "a second resumed writer",
    )?;
    resumed.write(cx.contents(16)).await?;
    resumed.rollback().await?;
    let resumed = cx.driver.writer(&path, true).await?;
    ensure_eq!(resumed.size(), 64, "the size after a rollback");
    resumed.cancel().await?;
    let w = cx.driver.writer(&path, false).await?;
    busy(
        cx.driver.writer(&path, true).await,
        "a writer beside one opened after a cancel",
    )?;
    w.cancel().await?;
    Ok(())
}

/// `children_stamp` (a regstore addition to the contract): where a
/// driver gives stamps, one taken after a child was added or removed
/// differs from the one taken before, and a directory's stamp is the same
/// twice while nothing changes. A driver that gives none (the default, or
/// not yet for a directory just changed, as the filesystem driver) passes
/// without comparing.
async fn children_stamps(cx: &Ctx) -> CaseResult {
    let dir = cx.path(16);
    cx.driver
        .put_content(format!("{dir}/a/file"), cx.contents(16))
        .await?;
    let before = cx.driver.children_stamp(&dir).await?;
    if before.is_some() {
        ensure_eq!(
            cx.driver.children_stamp(&dir).await?,
            before,
            "the stamp of an unchanged directory, twice"
        );
    }
    cx.driver
        .put_content(format!("{dir}/b"), cx.contents(16))
        .await?;
    let added = cx.driver.children_stamp(&dir).await?;
    if let (Some(x), Some(y)) = (before, added) {
        ensure!(x != y, "the stamp stayed {x:?} after a child was added");
    }
    cx.driver.delete(format!("{dir}/b")).await?;
    let removed = cx.driver.children_stamp(&dir).await?;
    if let (Some(x), Some(y)) = (added, removed) {
        ensure!(x != y, "the stamp stayed {x:?} after a child was removed");
    }
    Ok(())
}

/// A driver that does not claim `create_if_absent` says so when asked,
/// rather than storing without the guarantee.
async fn put_content_if_absent_unclaimed(cx: &Ctx) -> CaseResult {
    if cx.driver.capabilities().create_if_absent {
        return Ok(());
    }
    let path = cx.path(32);
    expect_error(
        cx.driver
            .put_content_if_absent(&path, cx.contents(10))
            .await,
        ErrorKind::Unsupported,
        cx.name(),
        "put_content_if_absent without the create_if_absent capability",
    )?;
    expect_error(
        cx.driver.stat(&path).await,
        ErrorKind::PathNotFound,
        cx.name(),
        "stat after a refused put_content_if_absent",
    )
}

async fn put_content_if_absent_race(cx: &Ctx) -> CaseResult {
    let path = cx.path(32);
    let racers = (0..8u8).map(|i| {
        let (driver, path) = (cx.driver.clone(), path.clone());
        let content = Bytes::from(vec![i; 64]);
        tokio::spawn(async move {
            let won = driver.put_content_if_absent(&path, content.clone()).await?;
            Ok::<_, Failure>((won, content))
        })
    });
    let mut winners = Vec::new();
    for r in futures_util::future::join_all(racers.collect::<Vec<_>>()).await {
        let (won, content) = r.map_err(|e| Failure(format!("racer task: {e}")))??;
        if won {
            winners.push(content);
        }
    }
    ensure_eq!(winners.len(), 1, "racers told they stored");
    ensure_bytes!(
        cx.driver.get_content(&path).await?,
        winners[0],
        "the stored object is the winner's"
    );
    Ok(())
}

async fn concurrent_stream_reads(cx: &Ctx) -> CaseResult {
    let size = if cx.opts.short { 10 * MIB } else { 128 * MIB };
    let path = cx.path(32);
    let contents = cx.contents(size);
    cx.driver.put_content(&path, contents.clone()).await?;
    let mut rng = cx.fork_rng();
    let readers = (0..10).map(|_| {
        let offset = rng.below(size as u64) as usize;
        let (driver, path, contents) = (cx.driver.clone(), path.clone(), contents.clone());
        tokio::spawn(async move {
            let got = read_all(driver.reader(&path, offset as u64).await?).await?;
            ensure_bytes!(got, contents[offset..], "concurrent reader at {offset}");
            Ok::<_, Failure>(())
        })
    });
    for r in futures_util::future::join_all(readers).await {
        r.map_err(|e| Failure(format!("reader task: {e}")))??;
    }
    Ok(())
}

async fn concurrent_file_streams(cx: &Ctx) -> CaseResult {
    let streams = if cx.opts.short { 8 } else { 32 };
    let writers = (0..streams).map(|_| {
        let path = cx.path(32);
        let mut rng = cx.fork_rng();
        let driver = cx.driver.clone();
        tokio::spawn(async move {
            let contents = rng.bytes(streams * MIB);
            let mut w = driver.writer(&path, false).await?;
            write_in_pieces(&mut w, &contents).await?;
            ensure_eq!(w.size(), contents.len() as u64, "writer size");
            w.commit().await?;
            let got = read_all(driver.reader(&path, 0).await?).await?;
            ensure_bytes!(got, contents, "read back {path}");
            Ok::<_, Failure>(())
        })
    });
    let writers: Vec<_> = writers.collect();
    for r in futures_util::future::join_all(writers).await {
        r.map_err(|e| Failure(format!("writer task: {e}")))??;
    }
    Ok(())
}
