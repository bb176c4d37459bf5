//! What the machine lets a push reach, printed under the push tables:
//! how fast one core hashes SHA-256, how fast bytes sent over loopback can
//! be written to a file and synced (the push without HTTP and hashing),
//! and whether the VM hands its free memory back to its host.
//!
//! **Free page reporting.** A VM whose virtio balloon offers free page
//! reporting (`VIRTIO_BALLOON_F_REPORTING`) tells its host which pages it
//! freed, and the host takes them back. The next write that needs those
//! pages (a page-cache write of a push, of `dd`, or a file on tmpfs) faults
//! each one in from the host again, which on the development VM
//! (Firecracker, 2026-12-05) made `dd` of 512 MiB with `conv=fdatasync` run
//! at 296–561 MiB/s in some rounds and 880–1,568 MiB/s in others, on tmpfs
//! too. What earlier runs called the disk's "slow state" was this. With
//! reporting off, `dd` ran at 1,980–2,354 MiB/s in 11 of the 12 rounds of
//! two `--pushes --rounds 6` runs, and the push rows stopped jumping.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use regstore_benches::registry::Pieces;

use super::MIB;

/// The driver parameter that says which blocks of free memory are
/// reported: blocks of `2^order` pages. An order above the largest the
/// page allocator keeps (10 on x86-64) reports nothing.
const REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

/// The largest order of a free block on x86-64 (`MAX_PAGE_ORDER`).
const MAX_PAGE_ORDER: u32 = 10;

/// `VIRTIO_BALLOON_F_REPORTING`: the balloon reports free pages.
const BALLOON_F_REPORTING: usize = 5;

/// `blob`'s digest, and how fast one core computed it, in MiB/s (the bytes
/// are in memory). Every byte a registry receives is hashed once, on one
/// core per stream: a push cannot be faster than this, whatever the disk.
pub(super) fn timed_digest(blob: &Pieces) -> (String, f64) {
    let bytes: usize = blob.pieces().iter().map(|p| p.len()).sum();
    let t0 = Instant::now();
    let digest = blob.digest();
    let elapsed = t0.elapsed().as_secs_f64();
    (digest, bytes as f64 / MIB / elapsed.max(1e-9))
}

/// A push's limit without HTTP and without hashing: `blob` sent over one
/// loopback TCP connection, received in 1 MiB reads by a thread that
/// writes them to the file `dst` and syncs it (`fdatasync`) at the end,
/// like a push that is acknowledged only once durable; in MiB/s, timed
/// from the connection to the sync. `dst` is removed afterwards.
///
/// `dd` reads its bytes from the page cache; a registry receives them
/// from a client on the same cores, and that copy in and out of the
/// socket costs CPU that `dd` does not pay. On a machine with few cores
/// this limit is the lower one.
pub(super) async fn loopback_sink_rate(blob: &Pieces, dst: &Path) -> Result<f64, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let file = dst.to_owned();
    let sink = std::thread::spawn(move || -> Result<u64, String> {
        let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut out =
            std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            got += n as u64;
        }
        out.sync_data().map_err(|e| e.to_string())?;
        Ok(got)
    });
    let t0 = Instant::now();
    let sent = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        for piece in blob.pieces() {
            conn.write_all(piece).await?;
        }
        conn.shutdown().await
    }
    .await;
    // A connection that never came leaves the thread waiting in `accept`:
    // not joined then (the bench ends with the error).
    sent.map_err(|e| format!("sending to the loopback sink: {e}"))?;
    let got = tokio::task::spawn_blocking(move || sink.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the loopback sink's thread panicked".to_owned());
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(dst);
    let got = got??;
    let bytes: usize = blob.pieces().iter().map(|p| p.len()).sum();
    if got != bytes as u64 {
        return Err(format!("the loopback sink got {got} of {bytes} bytes"));
    }
    Ok(bytes as f64 / MIB / elapsed.max(1e-9))
}

/// The line printed under a push table: how fast one core hashes, and
/// the [`loopback_sink_rate`].
pub(super) fn limits_note(sha256_mib_s: f64, sink_mib_s: f64) -> String {
    format!(
        "SHA-256 on one core: {sha256_mib_s:.0} MiB/s (a registry hashes every pushed byte once, on one core per push: no push beats it). Loopback sink: {sink_mib_s:.0} MiB/s (the blob sent over loopback TCP, written to a file and synced, without HTTP or hashing; see `loopback_sink_rate`)."
    )
}

/// Prints, under a table of pushes, a warning when free page reporting is
/// on, saying how to switch it off for the measurement.
pub(super) fn warn_if_reporting() {
    let Some(order) = page_reporting() else {
        return;
    };
    println!(
        "\n**Free page reporting is on** (virtio balloon, `page_reporting_order` {order}): memory this VM frees goes back to its host, and the writes that take it again fault it in, so pushes and `dd` move by up to 4× between runs. For steady figures, as root: `echo 11 > {REPORTING_ORDER}`, then write and delete a few GiB once (`head -c 8G /dev/zero > /dev/shm/fill; rm /dev/shm/fill`); set it back to {order} afterwards."
    );
}

/// The reporting order when a balloon reports free pages and the order
/// lets it report some; `None` otherwise (not Linux, no such balloon, or
/// reporting switched off with an order above [`MAX_PAGE_ORDER`]).
fn page_reporting() -> Option<u32> {
    let order: u32 = std::fs::read_to_string(REPORTING_ORDER)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (order <= MAX_PAGE_ORDER && reporting_balloon(Path::new("/sys/bus/virtio/devices")))
        .then_some(order)
}

/// Whether a virtio balloon under `devices` (sysfs) offers free page
/// reporting: device id 5, feature bit [`BALLOON_F_REPORTING`] set (sysfs
/// prints the features as a string of `0`/`1`, bit 0 first).
fn reporting_balloon(devices: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(devices) else {
        return false;
    };
    entries.flatten().any(|dev| {
        let read = |name: &str| std::fs::read_to_string(dev.path().join(name)).unwrap_or_default();
        read("device").trim() == "0x0005"
            && read("features").as_bytes().get(BALLOON_F_REPORTING) == Some(&b'1')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A balloon is found by its device id and feature bit 5, nothing else.
    #[test]
    fn finds_a_reporting_balloon_only() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let add = |name: &str, device: &str, features: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).expect("device directory");
            std::fs::write(d.join("device"), format!("{device}\n")).expect("device");
            std::fs::write(d.join("features"), format!("{features}\n")).expect("features");
        };
        add("virtio0", "0x0001", "0000010000");
        assert!(!reporting_balloon(dir.path()), "a network device");
        add("virtio1", "0x0005", "0110000000");
        assert!(
            !reporting_balloon(dir.path()),
            "a balloon without reporting"
        );
        add("virtio2", "0x0005", "0110010100");
        assert!(reporting_balloon(dir.path()), "a balloon that reports");
        assert!(!reporting_balloon(&dir.path().join("absent")));
    }
}
