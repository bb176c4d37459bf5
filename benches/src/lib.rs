//! Benchmark workloads over any [`Driver`].
//!
//! Each workload is one function, used by the criterion benches in
//! `benches/` and by `regstore bench` ([`set`]), so both front ends measure the
//! same work. Setup functions prepare state outside the timed part;
//! workload functions are what gets timed. Everything lives under the
//! `root` the caller passes, which the caller deletes afterwards.

pub mod load;
pub mod process;
pub mod registry;
pub mod relay;
pub mod report;
pub mod set;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use regstore_core::{Driver, Result, WalkControl};
use regstore_testsuite::Rng;

/// The object sizes of distribution's driver benchmarks.
pub const SIZES: &[(&str, usize)] = &[
    ("0B", 0),
    ("1KiB", 1 << 10),
    ("1MiB", 1 << 20),
    ("1GiB", 1 << 30),
];

/// `bytes` as the benchmarks name sizes: `0B`, `1KiB`, `64MiB`, `1GiB`
/// (the largest unit that divides it), else plain bytes (`1500B`).
pub fn size_label(bytes: usize) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes > 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// Pieces in which streams are written.
pub const PIECE: usize = 1 << 20;

/// Random bytes (incompressible, so no backend can cheat).
pub fn data(size: usize) -> Bytes {
    Rng::new(size as u64).bytes(size)
}

/// `put_content` then `get_content` of `data` at `path`; checks the length.
///
/// # Errors
/// Driver errors, or a length mismatch as `Backend`.
pub async fn put_get(driver: &Driver, path: &str, data: &Bytes) -> Result<()> {
    driver.put_content(path, data.clone()).await?;
    let got = driver.get_content(path).await?;
    check_len(got.len() as u64, data.len() as u64)
}

/// A writer fed `data` in 1 MiB pieces and committed, then a reader drained.
///
/// # Errors
/// Driver errors, or a length mismatch as `Backend`.
pub async fn stream_put_get(driver: &Driver, path: &str, data: &Bytes) -> Result<()> {
    stream_write(driver, path, data).await?;
    let mut stream = driver.reader(path, 0).await?;
    let mut read = 0u64;
    while let Some(chunk) = stream.next().await {
        read += chunk?.len() as u64;
    }
    check_len(read, data.len() as u64)
}

/// A writer fed `data` in 1 MiB pieces and committed (no read back).
///
/// # Errors
/// Driver errors.
pub async fn stream_write(driver: &Driver, path: &str, data: &Bytes) -> Result<()> {
    let mut w = driver.writer(path, false).await?;
    for start in (0..data.len()).step_by(PIECE) {
        w.write(data.slice(start..(start + PIECE).min(data.len())))
            .await?;
    }
    w.commit().await
}

fn check_len(got: u64, want: u64) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(regstore_core::Error::backend(format!(
            "read back {got} bytes, wrote {want}"
        )))
    }
}

/// Files the populate functions write at once: setup is not what is
/// measured, so it goes as fast as the backend allows.
const POPULATE_CONCURRENCY: usize = 16;

/// Writes a one-byte file at each of `paths`, [`POPULATE_CONCURRENCY`] at
/// a time.
async fn put_all(driver: &Driver, paths: impl Iterator<Item = String>) -> Result<()> {
    futures_util::stream::iter(paths)
        .map(|p| async move { driver.put_content(p, Bytes::from_static(b"x")).await })
        .buffer_unordered(POPULATE_CONCURRENCY)
        .try_collect()
        .await
}

/// Creates `n` small files in the directory `dir`.
///
/// # Errors
/// Driver errors.
pub async fn populate(driver: &Driver, dir: &str, n: usize) -> Result<()> {
    put_all(driver, (0..n).map(|i| format!("{dir}/f{i:06}"))).await
}

/// Lists `dir`, checking it holds `n` children.
///
/// # Errors
/// Driver errors, or a count mismatch as `Backend`.
pub async fn list(driver: &Driver, dir: &str, n: usize) -> Result<()> {
    let got = driver.list(dir).await?;
    check_len(got.len() as u64, n as u64)
}

/// Creates a tree of `n` files under `dir`: 100 files per subdirectory, so
/// a walk meets directories as well as files.
///
/// # Errors
/// Driver errors.
pub async fn populate_tree(driver: &Driver, dir: &str, n: usize) -> Result<()> {
    put_all(
        driver,
        (0..n).map(|i| format!("{dir}/d{:04}/f{:03}", i / 100, i % 100)),
    )
    .await
}

/// How many entries [`walk`] visits in a tree made by [`populate_tree`]
/// with `n` files: the files and their directories.
pub fn tree_entries(n: usize) -> u64 {
    (n + n.div_ceil(100)) as u64
}

/// Walks `dir`, returning how many entries were visited.
///
/// # Errors
/// Driver errors.
pub async fn walk(driver: &Driver, dir: &str) -> Result<u64> {
    let mut n = 0u64;
    driver
        .walk(dir, None, |_| {
            n += 1;
            Ok(WalkControl::Continue)
        })
        .await?;
    Ok(n)
}

/// The same put-then-get as [`put_get`] for the filesystem driver, done with
/// plain `tokio::fs` (temporary file, fsync, rename, fsync of the directory,
/// read back): the baseline that measures the driver's overhead.
///
/// # Errors
/// I/O errors.
pub async fn tokio_fs_put_get(
    dir: &std::path::Path,
    name: &str,
    data: &Bytes,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(data).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, &dst).await?;
    tokio::fs::File::open(dir).await?.sync_all().await?;
    let got = tokio::fs::read(&dst).await?;
    if got.len() != data.len() {
        return Err(std::io::Error::other("short read"));
    }
    Ok(())
}
