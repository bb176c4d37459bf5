//! A token server for tests, following the Docker token protocol: keys
//! and certificates made with openssl, JWTs signed with `jsonwebtoken`, and
//! `GET /token?service=…&scope=…` answered with a token granting what was
//! asked (except `push` and `delete` for the user `reader`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// What signs: a key `jsonwebtoken` signs with, or a P-521 key (ES512,
/// which it lacks).
pub enum SigningKey {
    Jwt(Algorithm, EncodingKey),
    Es512(Box<p521::ecdsa::SigningKey>),
}

/// A signing key and its certificate.
pub struct Signer {
    pub key: SigningKey,
    /// The certificate (PEM file).
    pub cert: PathBuf,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The public key, DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// The private key (PEM file).
    pub key_file: PathBuf,
}

/// How a token names its key.
pub enum KeyRef {
    Kid(String),
    X5c(Vec<Vec<u8>>),
}

impl Signer {
    /// A fresh key of `algorithm` (`rsa`, `ec`, `ed25519`) in `dir`, its
    /// certificate self-signed or signed by `issuer` (a CA signer).
    pub fn new(dir: &Path, name: &str, algorithm: &str, issuer: Option<&Signer>) -> Signer {
        let (key_file, cert, spki) = regstore_testenv::openssl::key_and_cert(
            dir,
            name,
            algorithm,
            issuer.map(|i| (i.cert.as_path(), i.key_file.as_path())),
        )
        .expect("openssl is installed");
        let pem = std::fs::read(&key_file).unwrap();
        let key = match algorithm {
            "rsa" => SigningKey::Jwt(Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
            "ec" => SigningKey::Jwt(Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
            "ec521" => {
                use p521::pkcs8::DecodePrivateKey as _;
                let text = String::from_utf8(pem).unwrap();
                let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                SigningKey::Es512(Box::new(
                    p521::ecdsa::SigningKey::from_pkcs8_der(&der).unwrap(),
                ))
            }
            _ => SigningKey::Jwt(Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
        };
        let cert_pem = std::fs::read_to_string(&cert).unwrap();
        let b64: String = cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let cert_der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Signer {
            key,
            cert,
            cert_der,
            spki,
            key_file,
        }
    }

    /// The libtrust key ID of this key (what docker_auth puts in `kid`).
    pub fn kid(&self) -> String {
        regstore_server::auth::token::libtrust_key_id(&self.spki)
    }

    /// A JWT with `claims`, naming its key by `key_ref`.
    pub fn sign(&self, key_ref: KeyRef, claims: &Value) -> String {
        let (kid, x5c) = match key_ref {
            KeyRef::Kid(kid) => (Some(kid), None),
            KeyRef::X5c(chain) => (
                None,
                Some(
                    chain
                        .iter()
                        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
                        .collect::<Vec<_>>(),
                ),
            ),
        };
        match &self.key {
            SigningKey::Jwt(alg, key) => {
                let mut header = Header::new(*alg);
                header.kid = kid;
                header.x5c = x5c;
                jsonwebtoken::encode(&header, claims, key).unwrap()
            }
            SigningKey::Es512(key) => {
                use p521::ecdsa::signature::Signer as _;
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let mut header = json!({"alg": "ES512", "typ": "JWT"});
                if let Some(kid) = kid {
                    header["kid"] = json!(kid);
                }
                if let Some(x5c) = x5c {
                    header["x5c"] = json!(x5c);
                }
                let signed = format!(
                    "{}.{}",
                    b64.encode(header.to_string()),
                    b64.encode(claims.to_string())
                );
                let signature: p521::ecdsa::Signature = key.sign(signed.as_bytes());
                format!("{signed}.{}", b64.encode(signature.to_bytes()))
            }
        }
    }

    /// This key as a JWK with `kid` (EC P-256, P-521 or Ed25519).
    pub fn jwk(&self, kid: &str) -> Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let alg = match &self.key {
            SigningKey::Jwt(alg, _) => *alg,
            SigningKey::Es512(_) => {
                let point = &self.spki[self.spki.len() - 132..];
                return json!({"kty": "EC", "crv": "P-521", "kid": kid, "alg": "ES512",
                              "x": b64.encode(&point[..66]), "y": b64.encode(&point[66..])});
            }
        };
        match alg {
            Algorithm::ES256 => {
                let point = &self.spki[self.spki.len() - 64..];
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                       "x": b64.encode(&point[..32]), "y": b64.encode(&point[32..])})
            }
            Algorithm::EdDSA => {
                let x = &self.spki[self.spki.len() - 32..];
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64.encode(x)})
            }
            other => panic!("no JWK for {other:?} in these tests"),
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims for `sub` granting `access` (`(type, name, actions)`), expiring
/// `exp_in` seconds from now.
pub fn claims(
    iss: &str,
    aud: &str,
    sub: &str,
    access: &[(&str, &str, &[&str])],
    exp_in: i64,
) -> Value {
    let access: Vec<Value> = access
        .iter()
        .map(|(t, n, a)| json!({"type": t, "name": n, "actions": a}))
        .collect();
    json!({"iss": iss, "aud": aud, "sub": sub, "access": access,
           "iat": now(), "nbf": now() - 5, "exp": now() + exp_in, "jti": uuid_like()})
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        now() as u128 * 1_000_003 + std::process::id() as u128
    )
}

/// A running token server; stops when dropped.
pub struct TokenServer {
    /// `http://127.0.0.1:<port>/token`: the realm.
    pub url: String,
    /// Tokens issued so far.
    pub issued: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a token server on loopback that signs with `signer` (naming it
/// by `kid`) as `issuer` for `service`.
pub async fn token_server(signer: Arc<Signer>, issuer: &str, service: &str) -> TokenServer {
    use axum::extract::State;
    use axum::http::{HeaderMap, Uri};
    let issued = Arc::new(AtomicUsize::new(0));
    let state = (
        signer,
        issuer.to_owned(),
        service.to_owned(),
        issued.clone(),
    );
    type St = (Arc<Signer>, String, String, Arc<AtomicUsize>);
    async fn token(
        State((signer, issuer, service, issued)): State<St>,
        headers: HeaderMap,
        uri: Uri,
    ) -> ([(axum::http::HeaderName, &'static str); 1], String) {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let user = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split(':').next().map(str::to_owned))
            .unwrap_or_default();
        let mut access = Vec::new();
        for (k, v) in &query {
            if k != "scope" {
                continue;
            }
            for scope in v.split(' ') {
                let mut parts = scope.splitn(3, ':');
                let (Some(t), Some(n), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let actions: Vec<&str> = a
                    .split(',')
                    .filter(|a| user != "reader" || *a == "pull")
                    .collect();
                access.push(json!({"type": t, "name": n, "actions": actions}));
            }
        }
        let aud = query
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone())
            .unwrap_or(service);
        let claims = json!({"iss": issuer, "aud": aud, "sub": user, "access": access,
                            "iat": now(), "nbf": now() - 5, "exp": now() + 300});
        let t = signer.sign(KeyRef::Kid(signer.kid()), &claims);
        issued.fetch_add(1, Ordering::SeqCst);
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({"token": t, "access_token": t, "expires_in": 300}).to_string(),
        )
    }
    let app = axum::Router::new()
        .route("/token", axum::routing::get(token))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    TokenServer {
        url: format!("http://{addr}/token"),
        issued,
        stop: Some(tx),
    }
}
