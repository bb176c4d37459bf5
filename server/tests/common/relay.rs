//! A counting HTTP relay on 127.0.0.1 in front of one upstream base URL:
//! what a test puts between the pull-through cache and its upstream to see
//! every request the cache makes, to cut a response short, and to make the
//! upstream unreachable.
//!
//! Every request is forwarded (method, path and query, headers but the
//! hop-by-hop ones and `Host`, the body streamed) and its answer streamed
//! back (status, headers, body) as it arrives: nothing is buffered whole,
//! so large blobs pass through in bounded memory. Redirects are passed
//! through, never followed. An upstream that cannot be reached is answered
//! with `502` and a text body starting with `relay:`.
//!
//! [`Relay::stop`] closes the open connections too (it keeps a duplicate
//! of each open socket and shuts it down): after it, a client's pooled
//! keep-alive connection is dead as well as new ones refused. Only axum,
//! reqwest and tokio are used: this module is also compiled into the
//! binary's tests, which share `server/tests/common` by path.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One request the relay received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The path, without the query.
    pub path: String,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    requests: Mutex<Vec<Seen>>,
    /// Pending cuts: `(path substring, bytes to send)`, each used once.
    cuts: Mutex<Vec<(String, u64)>>,
}

/// A running relay; [`Relay::stop`] (or drop) closes its listener and
/// every open connection.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    open: Open,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

impl Relay {
    /// Starts a relay to `upstream` (`http://host:port`, no trailing path)
    /// on a free loopback port.
    pub async fn start(upstream: &str) -> Relay {
        let client = super::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("relay client");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            requests: Mutex::default(),
            cuts: Mutex::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, mut stopped) = watch::channel(false);
        let open = Open::default();
        let listener = Killable {
            inner: listener,
            open: open.clone(),
            stopped: stopped.clone(),
            next: 0,
        };
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        Relay {
            addr,
            shared,
            stop,
            open,
        }
    }

    /// The relay's URL: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (since the last [`Relay::clear`]),
    /// in order of arrival.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests with `method` on a path containing
    /// `path_contains` were received.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method.eq_ignore_ascii_case(method) && s.path.contains(path_contains))
            .count()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// The next `GET` whose path contains `path_substring` is answered
    /// with the upstream's status and headers (its `Content-Length`
    /// included) and at most `n_bytes` of its body; then the body stream
    /// fails, so the connection is aborted and the client sees a truncated
    /// transfer rather than a clean end.
    pub fn cut_after(&self, path_substring: &str, n_bytes: u64) {
        self.shared
            .cuts
            .lock()
            .unwrap()
            .push((path_substring.to_owned(), n_bytes));
    }

    /// Stops accepting and closes every open connection (in-flight
    /// responses break): from now on the relay's port refuses connections.
    /// Idempotent.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        for (_, socket) in self.open.lock().unwrap().drain() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A duplicate of every open connection's socket by connection number, to
/// shut them down on stop. A connection removes (and shuts down) its own
/// when it is dropped: the duplicate would otherwise keep the socket open
/// after the server closed it.
type Open = Arc<Mutex<std::collections::HashMap<u64, std::net::TcpStream>>>;

/// A loopback listener that registers each socket it accepts in [`Open`];
/// once stopped it shuts down what it accepts.
struct Killable {
    inner: TcpListener,
    open: Open,
    stopped: watch::Receiver<bool>,
    next: u64,
}

impl axum::serve::Listener for Killable {
    type Io = Tracked;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Tracked, SocketAddr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let Ok(std_stream) = stream.into_std() else {
                continue;
            };
            let Ok(duplicate) = std_stream.try_clone() else {
                continue;
            };
            let Ok(stream) = TcpStream::from_std(std_stream) else {
                continue;
            };
            self.next += 1;
            if *self.stopped.borrow() {
                let _ = duplicate.shutdown(std::net::Shutdown::Both);
            } else {
                self.open.lock().unwrap().insert(self.next, duplicate);
            }
            let tracked = Tracked {
                inner: stream,
                id: self.next,
                open: self.open.clone(),
            };
            return (tracked, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; dropping it closes the socket for good (its
/// duplicate in [`Open`] too).
struct Tracked {
    inner: TcpStream,
    id: u64,
    open: Open,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(d) = self.open.lock().unwrap().remove(&self.id) {
            let _ = d.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let path = parts.uri.path().to_owned();
    shared.requests.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
    });
    let cut = if parts.method == Method::GET {
        let mut cuts = shared.cuts.lock().unwrap();
        cuts.iter()
            .position(|(p, _)| path.contains(p.as_str()))
            .map(|i| cuts.remove(i).1)
    } else {
        None
    };

    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != header::HOST {
            headers.append(name.clone(), value.clone());
        }
    }
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut request = shared
        .client
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", shared.upstream),
        )
        .headers(headers);
    if has_body {
        request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(Body::from(format!("relay: {e}")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return r;
        }
    };

    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let stream = upstream.bytes_stream();
    let body = match cut {
        None => Body::from_stream(stream),
        Some(limit) => Body::from_stream(truncated(stream, limit)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `stream`'s first `limit` bytes, then an error.
fn truncated(
    stream: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    limit: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let cut = || std::io::Error::other("relay: body cut on purpose");
    futures_util::stream::unfold(
        (Box::pin(stream), 0u64, false),
        move |(mut stream, sent, done)| async move {
            if done {
                return None;
            }
            if sent >= limit {
                return Some((Err(cut()), (stream, sent, true)));
            }
            match stream.next().await {
                Some(Ok(mut chunk)) => {
                    let left = limit - sent;
                    if chunk.len() as u64 > left {
                        chunk.truncate(left as usize);
                    }
                    let n = chunk.len() as u64;
                    Some((Ok(chunk), (stream, sent + n, false)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (stream, sent, true))),
                // Upstream ended before the limit: end with the error
                // anyway, the cut was asked for.
                None => Some((Err(cut()), (stream, sent, true))),
            }
        },
    )
}
