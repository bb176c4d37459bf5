//! `server-bench --pushes`: the two large-push rows alone, regstore only,
//! in interleaved rounds (issue 23: a push in 8 MiB chunks should cost no
//! more than the same push in one request). Each round pushes one
//! `--blob-mib` blob in one request and another in 8 MiB PATCHes (the
//! order alternating), each into a new repository and each a blob no
//! round pushed before (`Pieces::variant`), after syncing the
//! filesystem so that no push pays for the writeback of the one before.
//! The figures are the medians over the rounds, beside dd with
//! `conv=fdatasync` copying the same bytes on the same filesystem and the
//! loopback sink receiving them over TCP into a file
//! ([`machine::loopback_sink_rate`]), each measured once per round.

use regstore_benches::registry::{Generator, Target};

use super::small::settle;
use super::{
    Options, create_probe, dd_fdatasync, machine, median, probe_note, push_pair, quiet_config,
    start_regstore, write_blob,
};

pub(super) async fn run(o: &Options) -> Result<(), String> {
    let rounds = o.rounds.max(1);
    let size = o.blob_mib * 1024 * 1024;
    eprintln!("generating and hashing the {} MiB test blobs…", o.blob_mib);
    let one = Generator::new(1, size, 8 << 20).in_memory();
    let chunked = Generator::new(2, size, 8 << 20).in_memory();
    let (_, sha256) = machine::timed_digest(&one);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let copy = dir.path().join("blob");
    write_blob(&one, &copy)?;
    let root = dir.path().join("regstore-root");
    let config = dir.path().join("regstore.yml");
    std::fs::write(&config, quiet_config(&root)).map_err(|e| e.to_string())?;
    let (_p, base) = start_regstore(o, "regstore", &root, Some(&config)).await?;
    let t = Target::new(&base);
    let probe = create_probe(&dir.path().join("probe"))?;
    let mib = o.blob_mib as f64;
    let (mut dd, mut sinks, mut ones, mut chunks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        settle(dir.path())?;
        dd.push(dd_fdatasync(
            &copy,
            &dir.path().join("dd-copy"),
            o.blob_mib,
        )?);
        settle(dir.path())?;
        sinks.push(machine::loopback_sink_rate(&one, &dir.path().join("sink-copy")).await?);
        let pair = [one.variant(round as u8), chunked.variant(round as u8)].map(|blob| {
            let digest = blob.digest();
            (blob, digest)
        });
        let (one_r, chunked_r) = push_pair(&t, dir.path(), round, &pair, mib).await?;
        ones.push(one_r);
        chunks.push(chunked_r);
        eprintln!(
            "round {round}: dd {:.0} MiB/s, loopback sink {:.0} MiB/s, one request {:.0} MiB/s, 8 MiB chunks {:.0} MiB/s",
            dd[round], sinks[round], ones[round], chunks[round]
        );
    }
    let (dd, sink, one, chunk) = (median(&dd), median(&sinks), median(&ones), median(&chunks));
    println!(
        "push of {} MiB, regstore, medians of {rounds} rounds",
        o.blob_mib
    );
    println!();
    println!("| measure | MiB/s | / dd+fdatasync | / loopback sink | / one request |");
    println!("|---|---:|---:|---:|---:|");
    println!("| dd, conv=fdatasync | {dd:.1} | 1.00× | | |");
    println!(
        "| loopback sink (see below) | {sink:.1} | {:.2}× | 1.00× | |",
        sink / dd
    );
    println!(
        "| one request | {one:.1} | {:.2}× | {:.2}× | 1.00× |",
        one / dd,
        one / sink
    );
    println!(
        "| 8 MiB chunks | {chunk:.1} | {:.2}× | {:.2}× | {:.2}× (goal ≥ 0.95×: {}) |",
        chunk / dd,
        chunk / sink,
        chunk / one,
        if chunk >= 0.95 * one {
            "met"
        } else {
            "**missed**"
        }
    );
    println!();
    println!("{}", probe_note(&[(probe, "before the rounds")]));
    println!("{}", machine::limits_note(sha256, sink));
    machine::warn_if_reporting();
    Ok(())
}
