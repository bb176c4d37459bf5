//! What one client may hold of the server: `http.headertimeout`,
//! `http.bodytimeout` and `http.maxconnections`, driven over raw sockets
//! as a slow or hostile client would.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn registry(http: &str) -> TestRegistry {
    start("filesystem", DELETE_ON, &format!("http:\n{http}")).await
}

async fn connect(reg: &TestRegistry) -> TcpStream {
    TcpStream::connect(reg.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (or 10 s pass); what it
/// sent, and when it closed.
async fn until_closed(sock: &mut TcpStream) -> (String, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&got).into(), Some(Instant::now()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), None),
        }
    }
}

/// A client dribbling its request head a byte at a time is cut off after
/// `headertimeout`, however steadily it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_request_head_is_cut_off() {
    let reg = registry("  headertimeout: 1s\n").await;
    let mut sock = connect(&reg).await;
    let started = Instant::now();
    let head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in head.iter().take(30) {
        if sock.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !cut {
        let (_, closed) = until_closed(&mut sock).await;
        assert!(
            closed.is_some(),
            "the server closed the dribbling connection"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut off after about 1 s, not {:?}",
        started.elapsed()
    );
}

/// A keep-alive connection that sends no next request is closed after
/// `headertimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let reg = registry("  headertimeout: 1s\n").await;
    let mut sock = connect(&reg).await;
    sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = until_closed(&mut sock).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = closed.expect("the idle connection is closed");
    assert!(
        closed - started < Duration::from_secs(5),
        "closed after {:?}",
        closed - started
    );
}

/// A PATCH whose body stops arriving is cut off after `bodytimeout`; the
/// upload keeps nothing of it, and the same PATCH sent again goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_off_and_the_same_request_can_be_sent_again() {
    let reg = registry("  bodytimeout: 1s\n").await;
    let loc = begin(&reg, "slow").await;
    let path = loc.trim_start_matches(&reg.base).to_owned();
    let mut sock = connect(&reg).await;
    sock.write_all(
        format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let data: Vec<u8> = (0..100u8).collect();
    sock.write_all(&data[..10]).await.unwrap();
    let started = Instant::now();
    let (answer, _) = until_closed(&mut sock).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("BLOB_UPLOAD_INVALID"),
        "{answer}"
    );
    assert!(
        answer.contains("bodytimeout"),
        "the answer names the limit: {answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    let r = reg.client.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&r, "range"),
        "0-0",
        "nothing of the broken-off body is kept"
    );
    let r = reg
        .client
        .patch(&loc)
        .header("content-range", "0-99")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = sha256(&data);
    let r = reg.client.put(with_digest(&loc, &d)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// With `maxconnections: 2`, two open connections leave a third client
/// waiting; when one closes, the third is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_one() {
    let reg = registry("  maxconnections: 2\n  headertimeout: 20s\n").await;
    let mut held = vec![connect(&reg).await, connect(&reg).await];
    // Both are being served: each answers a request.
    for sock in &mut held {
        sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        sock.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
    }
    let client = client_builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let r = client.get(reg.url("/v2/")).send().await;
    assert!(r.is_err(), "a third connection waits: {r:?}");
    drop(held.pop());
    let client = client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = client.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "served once a connection closed"
    );
}
