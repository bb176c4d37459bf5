//! Single-flight blob fetches for the pull-through cache: however many
//! clients ask for a blob the cache lacks, it is fetched from upstream
//! once, stored while it streams, and verified against its digest before
//! it becomes visible.
//!
//! One fetch per digest runs as its own task, so a client that disconnects
//! never aborts it. The bytes go into an upload through
//! [`Registry::put_blob`] (which hashes them and publishes the blob only if
//! they match the digest) and, as they pass, to the clients that were
//! waiting when the first byte came: those are served live, at upstream's
//! pace. A client that joins later, or falls more than [`LIVE_CHUNKS`]
//! chunks behind, waits for the fetch to finish and then reads the stored
//! blob from where it was. Memory per fetch is bounded by those chunks,
//! never the blob.
//!
//! A fetch that fails (upstream cut the body, digest mismatch, storage
//! error) stores nothing; its clients' streams end with the error (a live
//! client has received unverified bytes by then, and sees the transfer
//! break rather than complete), and the next request fetches again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};

use super::upstream::UpstreamError;
use crate::registry::{Digest, Registry, RepoName};

/// Chunks a live client may fall behind before it is moved to reading the
/// stored blob after the fetch.
pub const LIVE_CHUNKS: usize = 64;

/// How a fetch ended, as its clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and verified: `size` bytes.
    Stored(u64),
    /// Nothing was stored; the message says why.
    Failed(String),
}

#[derive(Clone, Debug)]
enum Event {
    Chunk(Bytes),
}

/// What opening upstream's body gave: its `Content-Length` if sent, or
/// why it could not be opened.
type Opened = Result<Option<u64>, UpstreamError>;

/// One fetch in flight.
struct Flight {
    /// Set once upstream answered (or failed to).
    opened: watch::Receiver<Option<Opened>>,
    /// Set once every byte has passed and hashed to the digest (before
    /// the storage has committed them): live clients are complete.
    verified: watch::Receiver<Option<u64>>,
    /// Bytes passed on so far, and the sender; under one lock, so a client
    /// subscribes either before the first byte (live) or not at all.
    live: Mutex<(u64, broadcast::Sender<Event>)>,
    done: watch::Receiver<Option<Outcome>>,
}

/// The fetches in flight, by digest. One per registry in proxy mode.
#[derive(Default)]
pub struct Fetches {
    flights: Mutex<HashMap<Digest, Arc<Flight>>>,
    /// Fetches that stored their blob.
    stored: AtomicU64,
    /// Fetches whose body failed (cut, wrong digest, storage error).
    failed: AtomicU64,
    /// Bytes of the blobs stored.
    bytes: AtomicU64,
}

impl std::fmt::Debug for Fetches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetches")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Upstream's body of a blob, as `start` in [`Fetches::fetch`] opens it.
pub type UpstreamBody<E> = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, E>> + Send>>;

/// Opening upstream's body: its length if announced, and the body.
type Opening<E> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<(Option<u64>, UpstreamBody<E>), UpstreamError>>
            + Send,
    >,
>;

/// A client's view of a fetch: the blob's bytes as a stream.
pub type BlobBytes = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

impl Fetches {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Flight>>> {
        // Every critical section leaves the map consistent.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches in flight now.
    pub fn in_flight(&self) -> usize {
        self.flights().len()
    }

    /// Since startup: blobs fetched and stored, fetches whose body failed
    /// after upstream answered, and the bytes stored.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.stored.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The blob `d` for a client of repository `name`: joins the fetch in
    /// flight, or starts one with `start` (called at most once per fetch;
    /// it opens upstream's body and gives its `Content-Length` if known)
    /// that stores the blob in `name`. Once upstream has answered, returns
    /// the length it announced and a stream of the blob's bytes from the
    /// start.
    ///
    /// # Errors
    /// What `start` failed with (every client of that fetch gets it); the
    /// next call starts a new fetch.
    pub async fn fetch<F, S, E>(
        self: &Arc<Self>,
        registry: &Registry,
        name: &RepoName,
        d: &Digest,
        start: F,
    ) -> Result<(Option<u64>, BlobBytes), UpstreamError>
    where
        F: FnOnce() -> S,
        S: std::future::Future<Output = Result<(Option<u64>, UpstreamBody<E>), UpstreamError>>
            + Send
            + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let flight = {
            let mut flights = self.flights();
            match flights.get(d) {
                Some(f) => Arc::clone(f),
                None => {
                    let f = self.launch(registry, name, d, Box::pin(start()));
                    flights.insert(d.clone(), Arc::clone(&f));
                    f
                }
            }
        };
        let mut opened = flight.opened.clone();
        let size = match opened.wait_for(Option::is_some).await {
            Ok(o) => o.clone().unwrap_or_else(|| Err(vanished())),
            Err(_) => Err(vanished()),
        }?;
        Ok((size, follow(registry.clone(), d.clone(), flight)))
    }

    /// Starts the fetch task of `d`.
    fn launch<E: std::fmt::Display + Send + 'static>(
        self: &Arc<Self>,
        registry: &Registry,
        name: &RepoName,
        d: &Digest,
        start: Opening<E>,
    ) -> Arc<Flight> {
        let (tx, _) = broadcast::channel(LIVE_CHUNKS);
        let (done_tx, done) = watch::channel(None);
        let (opened_tx, opened) = watch::channel(None);
        let (verified_tx, verified) = watch::channel(None);
        let flight = Arc::new(Flight {
            opened,
            verified,
            live: Mutex::new((0, tx)),
            done,
        });
        let (fetches, registry, name, d) =
            (Arc::clone(self), registry.clone(), name.clone(), d.clone());
        let passing = Arc::clone(&flight);
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let outcome = match start.await {
                Err(e) => {
                    tracing::debug!(digest = %d, repository = %name, "proxy: upstream has no blob to give: {e}");
                    let why = e.to_string();
                    let _ = opened_tx.send(Some(Err(e)));
                    Outcome::Failed(why)
                }
                Ok((size, body)) => {
                    let _ = opened_tx.send(Some(Ok(size)));
                    let tee = body.map(move |item| {
                        if let Ok(chunk) = &item {
                            let mut live = passing.live.lock().unwrap_or_else(|e| e.into_inner());
                            live.0 += chunk.len() as u64;
                            // No live client is fine.
                            let _ = live.1.send(Event::Chunk(chunk.clone()));
                        }
                        item
                    });
                    let at = (d.clone(), began);
                    let on_verified = Box::new(move |size| {
                        tracing::debug!(digest = %at.0, bytes = size, millis = at.1.elapsed().as_millis() as u64, "proxy: fetched blob verified; storing it");
                        let _ = verified_tx.send(Some(size));
                    });
                    match registry.cache_blob(&name, &d, tee, on_verified).await {
                        Ok(info) => {
                            fetches.stored.fetch_add(1, Ordering::Relaxed);
                            fetches.bytes.fetch_add(info.size, Ordering::Relaxed);
                            tracing::info!(digest = %d, repository = %name, bytes = info.size, millis = began.elapsed().as_millis() as u64, "proxy: blob fetched from upstream and stored");
                            Outcome::Stored(info.size)
                        }
                        Err(e) => {
                            fetches.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(digest = %d, repository = %name, "proxy: fetching the blob from upstream failed, nothing stored: {e}");
                            Outcome::Failed(e.to_string())
                        }
                    }
                }
            };
            // Later requests start afresh (a failure) or find it stored.
            fetches.flights().remove(&d);
            let _ = done_tx.send(Some(outcome));
        });
        flight
    }
}

fn vanished() -> UpstreamError {
    UpstreamError::Unreachable {
        url: "(upstream)".into(),
        reason: "the fetch task ended without an answer".into(),
    }
}

/// A client's stream over `flight`: live if it joined before the first
/// byte, else (or once it lags) the stored blob after the fetch, from the
/// offset it reached.
fn follow(registry: Registry, d: Digest, flight: Arc<Flight>) -> BlobBytes {
    let live = {
        let guard = flight.live.lock().unwrap_or_else(|e| e.into_inner());
        (guard.0 == 0).then(|| guard.1.subscribe())
    };
    let mut done = flight.done.clone();
    let mut verified = flight.verified.clone();
    Box::pin(async_stream(move |mut y| async move {
        let mut offset: u64 = 0;
        if let Some(mut rx) = live {
            let mut lagged = false;
            'live: loop {
                tokio::select! {
                    biased;
                    r = rx.recv() => match r {
                        Ok(Event::Chunk(c)) => {
                            offset += c.len() as u64;
                            if !y.send(Ok(c)).await {
                                return;
                            }
                        }
                        // Fell behind (chunks were lost to it): finish
                        // from storage.
                        Err(_) => {
                            lagged = true;
                            break 'live;
                        }
                    },
                    // Verified, or over: what is still queued, then the end.
                    _ = verified.changed() => break 'live,
                    _ = done.changed() => break 'live,
                }
            }
            while let Some(Ok(Event::Chunk(c))) = (!lagged).then(|| rx.try_recv()) {
                offset += c.len() as u64;
                if !y.send(Ok(c)).await {
                    return;
                }
            }
            // Every byte came live and they hash right: complete, without
            // waiting for the storage to commit them.
            if *verified.borrow() == Some(offset) {
                return;
            }
        }
        let outcome = match done.wait_for(Option::is_some).await {
            Ok(o) => o
                .clone()
                .unwrap_or(Outcome::Failed("the fetch vanished".into())),
            Err(_) => Outcome::Failed("the fetch task ended without an outcome".into()),
        };
        match outcome {
            Outcome::Failed(why) => {
                let _ = y.send(Err(why)).await;
            }
            Outcome::Stored(size) if offset >= size => {}
            Outcome::Stored(_) => match registry.read_blob(&d, offset).await {
                Ok(mut s) => {
                    while let Some(item) = s.next().await {
                        let item = item.map_err(|e| e.to_string());
                        let stop = item.is_err();
                        if !y.send(item).await || stop {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = y.send(Err(e.to_string())).await;
                }
            },
        }
    }))
}

/// The sending half of [`async_stream`].
struct Yielder(tokio::sync::mpsc::Sender<Result<Bytes, String>>);

impl Yielder {
    /// Sends an item; `false` when the client is gone.
    async fn send(&mut self, item: Result<Bytes, String>) -> bool {
        self.0.send(item).await.is_ok()
    }
}

/// A stream fed by a task running `body` (dropped with the stream's
/// reader: the task ends at its next send).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<Bytes, String>> + Send
where
    F: FnOnce(Yielder) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(Yielder(tx)));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::registry::{Algorithm, RegistryError, Settings};

    type Body = UpstreamBody<String>;

    async fn registry() -> Registry {
        let driver = crate::registry::inmemory_for_tests().await;
        Registry::new(driver, Settings::default())
    }

    /// `data` in `chunk`-byte pieces, a pause before each; with `cut`,
    /// an error instead of the bytes from there on.
    fn upstream(data: Vec<u8>, chunk: usize, cut: Option<usize>) -> Body {
        let pieces: Vec<Result<Bytes, String>> = data
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| match cut {
                Some(at) if i * chunk >= at => Err("upstream cut the body".to_owned()),
                _ => Ok(Bytes::copy_from_slice(c)),
            })
            .collect();
        Box::pin(futures_util::stream::iter(pieces).then(|item| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            item
        }))
    }

    async fn collect(mut s: BlobBytes) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            out.extend_from_slice(&item?);
        }
        Ok(out)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_clients_cause_one_fetch_and_all_get_the_blob() {
        let reg = registry().await;
        let name = RepoName::parse("cache").unwrap();
        let blob = data(300_000);
        let d = Digest::of(Algorithm::Sha256, &blob);
        let fetches = Arc::new(Fetches::default());
        let starts = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for i in 0..20 {
            let start = {
                let (starts, blob) = (Arc::clone(&starts), blob.clone());
                move || async move {
                    starts.fetch_add(1, Ordering::SeqCst);
                    Ok((Some(blob.len() as u64), upstream(blob, 4096, None)))
                }
            };
            let (size, s) = fetches.fetch(&reg, &name, &d, start).await.unwrap();
            assert_eq!(size, Some(300_000));
            // Some clients come before the first byte, some later, and
            // one reads nothing until the fetch is over (it lags).
            clients.push(tokio::spawn(async move {
                if i == 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                collect(s).await
            }));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for c in clients {
            let got = c.await.unwrap().expect("a body");
            assert_eq!(got.len(), blob.len());
            assert!(got == blob, "a client got other bytes");
        }
        assert_eq!(starts.load(Ordering::SeqCst), 1, "one upstream fetch");
        assert_eq!(reg.stat_blob(&name, &d).await.unwrap().size, 300_000);
        assert_eq!(fetches.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cut_body_or_wrong_bytes_store_nothing_and_the_next_request_fetches_again() {
        let reg = registry().await;
        let name = RepoName::parse("cache").unwrap();
        let blob = data(50_000);
        let d = Digest::of(Algorithm::Sha256, &blob);
        let fetches = Arc::new(Fetches::default());
        for (body, what) in [
            (upstream(blob.clone(), 4096, Some(20_000)), "cut"),
            (upstream(data(49_999), 4096, None), "wrong bytes"),
        ] {
            let (_, s) = fetches
                .fetch(&reg, &name, &d, move || async move { Ok((None, body)) })
                .await
                .unwrap();
            let got = collect(s).await;
            assert!(got.is_err(), "{what}: the client sees the failure");
            assert!(
                matches!(
                    reg.stat_blob(&name, &d).await,
                    Err(RegistryError::BlobUnknown(_))
                ),
                "{what}: nothing is stored"
            );
        }
        let (_, s) = fetches
            .fetch(&reg, &name, &d, {
                let blob = blob.clone();
                move || async move { Ok((None, upstream(blob, 4096, None))) }
            })
            .await
            .unwrap();
        let again = collect(s).await.expect("the next request fetches again");
        assert!(again == blob);
        assert_eq!(fetches.totals(), (1, 2, 50_000));
    }

    #[tokio::test]
    async fn an_upstream_that_cannot_open_fails_every_client_of_that_fetch() {
        let reg = registry().await;
        let name = RepoName::parse("cache").unwrap();
        let d = Digest::of(Algorithm::Sha256, b"absent");
        let fetches = Arc::new(Fetches::default());
        let opens = Arc::new(AtomicUsize::new(0));
        let open = || {
            let opens = Arc::clone(&opens);
            move || async move {
                opens.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<(Option<u64>, Body), _>(UpstreamError::NotFound {
                    url: "http://up/v2/cache/blobs/x".into(),
                    code: Some("BLOB_UNKNOWN".into()),
                })
            }
        };
        let (a, b) = tokio::join!(
            fetches.fetch(&reg, &name, &d, open()),
            fetches.fetch(&reg, &name, &d, open())
        );
        for r in [a.map(|_| ()), b.map(|_| ())] {
            assert!(matches!(r, Err(UpstreamError::NotFound { .. })), "{r:?}");
        }
        assert_eq!(opens.load(Ordering::SeqCst), 1, "the second client joined");
        assert_eq!(fetches.in_flight(), 0);
        assert_eq!(fetches.totals(), (0, 0, 0));
    }

    #[tokio::test]
    async fn cache_blob_announces_verified_bytes_and_only_those() {
        let reg = registry().await;
        let name = RepoName::parse("cache").unwrap();
        let blob = data(70_000);
        for (alg, right) in [
            (Algorithm::Sha256, true),
            (Algorithm::Sha256, false),
            (Algorithm::Sha512, true),
        ] {
            let d = Digest::of(alg, &blob);
            let body = if right { blob.clone() } else { data(69_999) };
            let told = Arc::new(Mutex::new(None));
            let tell = {
                let told = Arc::clone(&told);
                Box::new(move |n| *told.lock().unwrap() = Some(n))
            };
            let stored = reg
                .cache_blob(&name, &d, upstream(body, 8192, None), tell)
                .await;
            assert_eq!(stored.is_ok(), right, "{alg:?} {right}: {stored:?}");
            let expect = right.then_some(70_000);
            assert_eq!(*told.lock().unwrap(), expect, "{alg:?} {right}");
        }
    }

    #[tokio::test]
    async fn a_client_that_leaves_does_not_abort_the_fetch() {
        let reg = registry().await;
        let name = RepoName::parse("cache").unwrap();
        let blob = data(100_000);
        let d = Digest::of(Algorithm::Sha256, &blob);
        let fetches = Arc::new(Fetches::default());
        let (_, mut s) = fetches
            .fetch(&reg, &name, &d, {
                let blob = blob.clone();
                move || async move { Ok((None, upstream(blob, 4096, None))) }
            })
            .await
            .unwrap();
        let first = s.next().await;
        assert!(matches!(first, Some(Ok(_))));
        drop(s);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reg.stat_blob(&name, &d).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the fetch went on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
