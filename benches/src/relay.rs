//! A counting HTTP relay on 127.0.0.1: every request it receives is
//! forwarded to one upstream (an S3 emulator), answered with what the
//! upstream answered, and counted by kind. Put between a program and its
//! object store, it counts the program's requests whatever the program is
//! (`gc-bench` puts it in front of both `regstore garbage-collect` and
//! `docker-registry garbage-collect`).
//!
//! Bodies are buffered whole in both directions: fine for the small
//! objects and listings of a metadata workload, not for large blobs.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;

/// Requests counted by kind. On S3's path-style URLs a request on the
/// bucket (`/bucket?…`) is a listing (`GET`, [`Counts::list`]) or a batch
/// delete (`POST ?delete`, counted in [`Counts::post`]); requests on a key
/// (`/bucket/key`) count by method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `GET` on the bucket: ListObjects(V2).
    pub list: u64,
    /// `GET` of an object.
    pub get: u64,
    /// `HEAD` of an object (or the bucket).
    pub head: u64,
    /// `PUT`: objects, copies, parts.
    pub put: u64,
    /// `POST`: DeleteObjects (`?delete`), multipart uploads.
    pub post: u64,
    /// `DELETE` of one object (or an upload).
    pub delete: u64,
    /// Anything else.
    pub other: u64,
}

impl Counts {
    /// Every request.
    pub fn total(&self) -> u64 {
        self.list + self.get + self.head + self.put + self.post + self.delete + self.other
    }

    fn kinds(&self) -> [(&'static str, u64); 7] {
        [
            ("LIST", self.list),
            ("GET", self.get),
            ("HEAD", self.head),
            ("PUT", self.put),
            ("POST", self.post),
            ("DELETE", self.delete),
            ("OTHER", self.other),
        ]
    }
}

/// The kinds with a count, as `LIST 12 · GET 1,000`.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .kinds()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {}", thousands(n)))
            .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" · "))
        }
    }
}

/// `n` with thousands separators: `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Shared {
    upstream: String,
    latency: std::time::Duration,
    client: reqwest::Client,
    counts: Mutex<Counts>,
    log: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

/// A running relay; it stops with the runtime.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// and those the client library sets itself.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
    )
}

/// The kind of a request (see [`Counts`]): `LIST`, `GET`, `HEAD`, `PUT`,
/// `POST`, `DELETE` or `OTHER`.
pub fn kind(method: &Method, path: &str) -> &'static str {
    let on_bucket = !path.trim_matches('/').contains('/');
    match *method {
        Method::GET if on_bucket => "LIST",
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

impl Counts {
    /// Counts one request of `kind` (see [`kind`]).
    pub fn add(&mut self, kind: &str) {
        let n = match kind {
            "LIST" => &mut self.list,
            "GET" => &mut self.get,
            "HEAD" => &mut self.head,
            "PUT" => &mut self.put,
            "POST" => &mut self.post,
            "DELETE" => &mut self.delete,
            _ => &mut self.other,
        };
        *n += 1;
    }
}

impl Relay {
    /// Starts a relay to `upstream` (`http://host:port`) on a free
    /// loopback port, holding each request `latency` before forwarding it
    /// (what a distant store adds to a loopback emulator).
    ///
    /// # Errors
    /// No loopback port can be bound, or the HTTP client cannot be built.
    pub async fn start(upstream: &str, latency: std::time::Duration) -> std::io::Result<Relay> {
        let client = regstore_testenv::backend::http_client()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(256)
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            latency,
            client,
            counts: Mutex::new(Counts::default()),
            log: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Relay { addr, shared })
    }

    /// The relay's URL: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts so far, which start again from zero.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.shared.counts.lock().expect("counts"))
    }

    /// Logs every request from now on as a line `KIND METHOD PATH?QUERY
    /// STATUS MILLISECONDS` to `path` (created or truncated; the time is
    /// the upstream's answer, whole body, without the added latency);
    /// `None` stops logging.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn log_to(&self, path: Option<&Path>) -> std::io::Result<()> {
        let file = match path {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => None,
        };
        let mut log = self.shared.log.lock().expect("log");
        if let Some(old) = log.as_mut() {
            old.flush()?;
        }
        *log = file;
        Ok(())
    }
}

async fn forward(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let kind = kind(&parts.method, parts.uri.path());
    s.counts.lock().expect("counts").add(kind);
    if !s.latency.is_zero() {
        tokio::time::sleep(s.latency).await;
    }
    let started = std::time::Instant::now();
    let result = async {
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) && name != header::HOST && name != header::CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
        let upstream = s
            .client
            .request(
                parts.method.clone(),
                format!("{}{path_and_query}", s.upstream),
            )
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = upstream.status();
        let mut headers = HeaderMap::new();
        for (name, value) in upstream.headers() {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let bytes: Bytes = upstream.bytes().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, headers, bytes))
    }
    .await;
    let (status, headers, bytes) = match result {
        Ok(r) => r,
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Bytes::from(format!("relay: {e}")),
        ),
    };
    if let Some(log) = s.log.lock().expect("log").as_mut() {
        let _ = writeln!(
            log,
            "{kind} {} {path_and_query} {} {:.1}",
            parts.method,
            status.as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn kinds_by_method_and_path() {
        let mut c = Counts::default();
        for (m, p) in [
            (Method::GET, "/bucket"),
            (Method::GET, "/bucket/"),
            (Method::GET, "/bucket/a/b"),
            (Method::POST, "/bucket"),
            (Method::HEAD, "/bucket/k"),
        ] {
            c.add(kind(&m, p));
        }
        assert_eq!(
            c,
            Counts {
                list: 2,
                get: 1,
                post: 1,
                head: 1,
                ..Counts::default()
            }
        );
        assert_eq!(c.to_string(), "LIST 2 · GET 1 · HEAD 1 · POST 1");
        assert_eq!(c.total(), 5);
    }
}
