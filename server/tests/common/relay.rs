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
//! Connections are served by hyper directly (not `axum::serve`) so that
//! [`Relay::stop`] can close the open ones too: after it, a client's pooled
//! keep-alive connection is dead as well as new ones refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, header};
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(listener, shared.clone(), stopped));
        Relay { addr, shared, stop }
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
    }
}

/// Accepts connections until stopped; each one is served until it ends
/// or the relay is stopped, whichever comes first.
async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(forward(shared, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection closes its socket.
                _ = stopped.wait_for(|s| *s) => {}
            }
        });
    }
}

async fn forward(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
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
        request = request.body(reqwest::Body::wrap_stream(
            Body::new(body).into_data_stream(),
        ));
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
