//! `auth.token`: bearer JWTs from a token server, as distribution checks
//! them (the Docker token protocol).
//!
//! A client without a token is answered 401 with
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` naming the
//! exact scopes the request needs; it fetches a token from the realm and
//! tries again. A token is accepted when:
//! - its algorithm is one of `signingalgorithms` (default: RS256, RS384,
//!   RS512, ES256, ES384, ES512, EdDSA; signatures are checked by
//!   `jsonwebtoken`'s crypto, ES512 — which it lacks — by the `p521` crate);
//! - its signing key is trusted: an `x5c` chain that verifies to a
//!   certificate of `rootcertbundle`, or a `kid` naming a key of the bundle
//!   (libtrust's key ID of the certificate's public key, as distribution and
//!   docker_auth compute it) or of the `jwks` file;
//! - `iss` is `issuer`, `aud` holds `service`, and `exp`/`nbf` hold with
//!   60 s of leeway;
//! - its `access` claim covers every scope the request needs (`*` covers
//!   every action).
//!
//! An invalid token is answered 401 with `error="invalid_token"`, one that
//! covers too little with `error="insufficient_scope"` and the scopes
//! needed, so that clients fetch a better token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::scope::{Action, Resource, Scope};

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// The algorithms accepted when `signingalgorithms` is not given.
pub const DEFAULT_ALGORITHMS: [&str; 7] = [
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA",
];

/// A token's `alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    /// One `jsonwebtoken` verifies.
    Jwt(Algorithm),
    /// ECDSA on P-521 with SHA-512, checked with the `p521` crate.
    Es512,
}

impl Alg {
    /// An asymmetric algorithm by its JOSE name; HMAC is refused (a
    /// registry holds no shared secret of the token server's).
    fn parse(name: &str) -> Option<Alg> {
        if name == "ES512" {
            return Some(Alg::Es512);
        }
        name.parse::<Algorithm>()
            .ok()
            .filter(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac)
            .map(Alg::Jwt)
    }
}

/// `auth.token` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSettings {
    /// The token server's URL, named in challenges.
    pub realm: String,
    /// This registry's name: the audience tokens must be for.
    pub service: String,
    /// The token server's name: the issuer tokens must come from.
    pub issuer: String,
    /// PEM certificates whose keys (or chains to which) sign tokens.
    pub rootcertbundle: Option<PathBuf>,
    /// A JSON Web Key Set of signing keys, by `kid`.
    pub jwks: Option<PathBuf>,
    /// `autoredirect`: the realm is this registry's own host with
    /// `autoredirectpath`, as the client reached it.
    pub autoredirect: bool,
    /// `autoredirectpath` (default `/auth/token`).
    pub autoredirectpath: String,
    /// `signingalgorithms`: accepted `alg` values.
    pub signingalgorithms: Vec<String>,
}

/// What a verified token grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// `sub`: who the token is for (empty when the token server sends none).
    pub subject: String,
    /// `access`: resources and actions.
    pub access: Vec<AccessEntry>,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
}

/// One entry of the `access` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The repository name, or `catalog`.
    #[serde(default)]
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The claims a registry checks.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    aud: Audience,
    exp: u64,
    nbf: Option<u64>,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    access: Vec<AccessEntry>,
}

/// `aud`: one name or several.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn holds(&self, name: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == name,
            Audience::Many(all) => all.iter().any(|a| a == name),
        }
    }
}

/// The header fields that choose the key.
#[derive(Debug, Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    x5c: Option<Vec<String>>,
}

/// A signing key the configuration trusts.
#[derive(Debug)]
enum Key {
    /// A public key from a certificate (DER SubjectPublicKeyInfo).
    Spki(Vec<u8>),
    /// A key from the JWKS file.
    Jwk(Box<DecodingKey>),
    /// A P-521 key from the JWKS file.
    P521(Box<p521::ecdsa::VerifyingKey>),
}

/// A key ready to check one signature.
enum Checker {
    Jwt(DecodingKey, Algorithm),
    P521(p521::ecdsa::VerifyingKey),
}

impl Checker {
    /// `key` for `alg`.
    ///
    /// # Errors
    /// The key does not fit the algorithm.
    fn new(key: &Key, alg: Alg) -> Result<Checker, String> {
        let misfit = || format!("the signing key does not fit {alg:?}");
        match (key, alg) {
            (Key::Spki(der), Alg::Jwt(a)) => Ok(Checker::Jwt(spki_key(der, a)?, a)),
            (Key::Spki(der), Alg::Es512) => {
                use p521::pkcs8::DecodePublicKey as _;
                p521::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(Checker::P521)
                    .map_err(|e| format!("{}: {e}", misfit()))
            }
            (Key::Jwk(k), Alg::Jwt(a)) => Ok(Checker::Jwt((**k).clone(), a)),
            (Key::P521(k), Alg::Es512) => Ok(Checker::P521(**k)),
            _ => Err(misfit()),
        }
    }

    /// Whether `signature` (base64url) signs `message`.
    fn verifies(&self, signature: &str, message: &[u8]) -> bool {
        match self {
            Checker::Jwt(key, alg) => {
                jsonwebtoken::crypto::verify(signature, message, key, *alg).unwrap_or(false)
            }
            Checker::P521(key) => {
                use p521::ecdsa::signature::Verifier as _;
                let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature)
                else {
                    return false;
                };
                p521::ecdsa::Signature::from_slice(&bytes)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        }
    }
}

/// Checks bearer tokens against one `auth.token` configuration.
pub struct TokenVerifier {
    settings: TokenSettings,
    algorithms: Vec<Alg>,
    roots: Vec<CertificateDer<'static>>,
    keys: HashMap<String, Key>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("settings", &self.settings)
            .field("algorithms", &self.algorithms)
            .field("roots", &self.roots.len())
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TokenVerifier {
    /// Reads the bundle and the JWKS the settings name.
    ///
    /// # Errors
    /// A missing realm, service or issuer; neither `rootcertbundle` nor
    /// `jwks`; a file that cannot be read or holds no key; an algorithm
    /// that is unknown or not offered — each named, with what to change.
    pub fn new(settings: &TokenSettings) -> Result<TokenVerifier, String> {
        for (key, value) in [
            ("realm", &settings.realm),
            ("service", &settings.service),
            ("issuer", &settings.issuer),
        ] {
            if value.trim().is_empty() && !(key == "realm" && settings.autoredirect) {
                return Err(format!(
                    "auth.token.{key} is missing: tokens are checked against it"
                ));
            }
        }
        if settings.rootcertbundle.is_none() && settings.jwks.is_none() {
            return Err("auth.token needs rootcertbundle (PEM certificates of the token signers) or jwks (a JSON Web Key Set file)".into());
        }
        let names: Vec<&str> = if settings.signingalgorithms.is_empty() {
            DEFAULT_ALGORITHMS.to_vec()
        } else {
            settings
                .signingalgorithms
                .iter()
                .map(String::as_str)
                .collect()
        };
        let mut algorithms = Vec::new();
        for name in names {
            let alg = Alg::parse(name).ok_or_else(|| {
                format!(
                    "auth.token.signingalgorithms: {name:?} is not supported; use some of {}",
                    DEFAULT_ALGORITHMS.join(", ")
                )
            })?;
            algorithms.push(alg);
        }
        let mut roots = Vec::new();
        let mut keys = HashMap::new();
        if let Some(path) = &settings.rootcertbundle {
            roots = read_bundle(path)?;
            for cert in &roots {
                let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| {
                    format!(
                        "auth.token.rootcertbundle {}: a certificate cannot be read: {e}",
                        path.display()
                    )
                })?;
                let spki = ee.subject_public_key_info();
                keys.insert(
                    libtrust_key_id(spki.as_ref()),
                    Key::Spki(spki.as_ref().to_vec()),
                );
            }
        }
        if let Some(path) = &settings.jwks {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.token.jwks: cannot read {}: {e}", path.display()))?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "auth.token.jwks: {} is not a JSON Web Key Set: {e}",
                    path.display()
                )
            })?;
            if set.keys.is_empty() {
                return Err(format!("auth.token.jwks: {} holds no key", path.display()));
            }
            for jwk in &set.keys {
                let Some(kid) = jwk.common.key_id.clone() else {
                    return Err(format!(
                        "auth.token.jwks: {}: a key has no kid",
                        path.display()
                    ));
                };
                let bad =
                    |e: String| format!("auth.token.jwks: {}: key {kid:?}: {e}", path.display());
                let key = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                        if ec.curve == jsonwebtoken::jwk::EllipticCurve::P521 =>
                    {
                        Key::P521(Box::new(p521_from_jwk(&ec.x, &ec.y).map_err(bad)?))
                    }
                    _ => Key::Jwk(Box::new(
                        DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?,
                    )),
                };
                keys.insert(kid, key);
            }
        }
        Ok(TokenVerifier {
            settings: settings.clone(),
            algorithms,
            roots,
            keys,
        })
    }

    /// The settings this verifier checks against.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// What `token` grants, if it is valid.
    ///
    /// # Errors
    /// Why the token is not accepted (for the log; clients get
    /// `invalid_token`).
    pub fn verify(&self, token: &str) -> Result<Grant, String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signed, signature) = token
            .rsplit_once('.')
            .ok_or("not a JWT (header.claims.signature)")?;
        let (header, claims) = signed
            .split_once('.')
            .ok_or("not a JWT (header.claims.signature)")?;
        let part = |name: &str, text: &str| {
            b64.decode(text)
                .map_err(|e| format!("the JWT's {name} is not base64url: {e}"))
        };
        let header: JoseHeader = serde_json::from_slice(&part("header", header)?)
            .map_err(|e| format!("the JWT's header: {e}"))?;
        let alg = Alg::parse(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| format!("algorithm {:?} is not accepted", header.alg))?;
        let checker = match (&header.x5c, &header.kid) {
            (Some(chain), _) if !chain.is_empty() => {
                Checker::new(&Key::Spki(self.chain_spki(chain)?), alg)?
            }
            (_, Some(kid)) => match self.keys.get(kid) {
                Some(key) => Checker::new(key, alg)?,
                None => return Err(format!("signed by an untrusted key (kid {kid:?})")),
            },
            _ => return Err("the token names no signing key (no x5c, no kid)".into()),
        };
        if !checker.verifies(signature, signed.as_bytes()) {
            return Err("the signature does not verify".into());
        }
        let claims: Claims = serde_json::from_slice(&part("claims", claims)?)
            .map_err(|e| format!("the JWT's claims: {e}"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims.iss != self.settings.issuer {
            return Err(format!(
                "issued by {:?}, not {:?}",
                claims.iss, self.settings.issuer
            ));
        }
        if !claims.aud.holds(&self.settings.service) {
            return Err(format!(
                "not for this service ({:?})",
                self.settings.service
            ));
        }
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err("expired".into());
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err("not valid yet (nbf)".into());
        }
        Ok(Grant {
            subject: claims.sub,
            access: claims.access,
            expires: claims.exp,
        })
    }

    /// The leaf's public key (DER SubjectPublicKeyInfo) of an `x5c` chain
    /// that verifies to the bundle.
    fn chain_spki(&self, chain: &[String]) -> Result<Vec<u8>, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let ders: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|c| b64.decode(c).map(CertificateDer::from))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("x5c is not base64: {e}"))?;
        let anchors: Vec<_> = self
            .roots
            .iter()
            .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
            .collect();
        if anchors.is_empty() {
            return Err("x5c given but no rootcertbundle is configured".into());
        }
        let leaf =
            webpki::EndEntityCert::try_from(&ders[0]).map_err(|e| format!("x5c leaf: {e}"))?;
        let algs = rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .all;
        leaf.verify_for_usage(
            algs,
            &anchors,
            &ders[1..],
            UnixTime::now(),
            AnyUsage,
            None,
            None,
        )
        .map_err(|e| format!("x5c does not chain to rootcertbundle: {e}"))?;
        Ok(leaf.subject_public_key_info().as_ref().to_vec())
    }

    /// The realm to name in a challenge: the configured one, or with
    /// `autoredirect` this registry's own URL as the client reached it.
    pub fn realm(&self, host: Option<&str>, tls: bool) -> String {
        match host {
            Some(host) if self.settings.autoredirect => format!(
                "{}://{host}{}",
                if tls { "https" } else { "http" },
                self.settings.autoredirectpath
            ),
            _ => self.settings.realm.clone(),
        }
    }
}

/// Accepts any extended key usage, as distribution's `ExtKeyUsageAny`:
/// token-signing certificates often carry none, or a TLS one.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Whether `grant` covers every scope in `needs`; the first one it does
/// not cover otherwise.
pub fn uncovered<'a>(grant: &Grant, needs: &'a [Scope]) -> Option<&'a Scope> {
    needs.iter().find(|need| {
        let (kind, name) = match &need.resource {
            Resource::Catalog => ("registry", "catalog"),
            Resource::Repository(name) => ("repository", name.as_str()),
        };
        let granted: Vec<&str> = grant
            .access
            .iter()
            .filter(|a| a.kind == kind && a.name == name)
            .flat_map(|a| a.actions.iter().map(String::as_str))
            .collect();
        let all = granted.contains(&"*");
        match &need.resource {
            Resource::Catalog => !all,
            Resource::Repository(_) => !need
                .actions
                .iter()
                .all(|a: &Action| all || granted.contains(&a.as_str())),
        }
    })
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            format!(
                "auth.token.rootcertbundle: cannot read {}: {e}",
                path.display()
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "auth.token.rootcertbundle: {} is not PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "auth.token.rootcertbundle: {} holds no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

/// A `jsonwebtoken` key for `alg` from a DER SubjectPublicKeyInfo (which
/// it reads as a `PUBLIC KEY` PEM).
fn spki_key(spki_der: &[u8], alg: Algorithm) -> Result<DecodingKey, String> {
    use jsonwebtoken::AlgorithmFamily as F;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    let pem = pem.as_bytes();
    match alg.family() {
        F::Rsa => DecodingKey::from_rsa_pem(pem),
        F::Ec => DecodingKey::from_ec_pem(pem),
        F::Ed => DecodingKey::from_ed_pem(pem),
        F::Hmac => return Err("HMAC tokens are not accepted".into()),
    }
    .map_err(|e| format!("the signing key does not fit {alg:?}: {e}"))
}

/// A P-521 key from a JWK's `x` and `y` (base64url).
fn p521_from_jwk(x: &str, y: &str) -> Result<p521::ecdsa::VerifyingKey, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut point = vec![4u8];
    for c in [x, y] {
        point.extend(b64.decode(c).map_err(|e| format!("not base64url: {e}"))?);
    }
    p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .map_err(|e| format!("not a P-521 point: {e}"))
}

/// libtrust's key ID of a public key (what docker_auth and distribution put
/// in `kid`): the first 240 bits of the SHA-256 of its DER
/// SubjectPublicKeyInfo, base32, in groups of four joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32.encode(&digest[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(entries: &[(&str, &str, &[&str])]) -> Grant {
        Grant {
            access: entries
                .iter()
                .map(|(kind, name, actions)| AccessEntry {
                    kind: (*kind).into(),
                    name: (*name).into(),
                    actions: actions.iter().map(|a| (*a).to_string()).collect(),
                })
                .collect(),
            ..Grant::default()
        }
    }

    #[test]
    fn the_access_claim_must_cover_every_needed_scope() {
        let pull = [Scope::repository("a", &[Action::Pull])];
        let push = [Scope::repository("a", &[Action::Pull, Action::Push])];
        let mount = [
            Scope::repository("a", &[Action::Pull, Action::Push]),
            Scope::repository("b", &[Action::Pull]),
        ];
        let g = grant(&[("repository", "a", &["pull"])]);
        assert_eq!(uncovered(&g, &pull), None);
        assert_eq!(uncovered(&g, &push), Some(&push[0]));
        let g = grant(&[("repository", "a", &["pull", "push"])]);
        assert_eq!(uncovered(&g, &push), None);
        assert_eq!(uncovered(&g, &mount), Some(&mount[1]));
        let g = grant(&[("repository", "a", &["*"])]);
        assert_eq!(
            uncovered(&g, &[Scope::repository("a", &[Action::Delete])]),
            None
        );
        assert!(uncovered(&g, &[Scope::catalog()]).is_some());
        let g = grant(&[("registry", "catalog", &["*"])]);
        assert_eq!(uncovered(&g, &[Scope::catalog()]), None);
        assert_eq!(
            uncovered(&Grant::default(), &[]),
            None,
            "/v2/ needs no scope"
        );
    }

    #[test]
    fn libtrust_key_ids_are_twelve_groups_of_four() {
        let id = libtrust_key_id(b"any bytes");
        assert_eq!(id.len(), 12 * 4 + 11);
        assert!(id.split(':').all(|g| g.len() == 4), "{id}");
    }

    #[test]
    fn bad_settings_are_named() {
        let base = TokenSettings {
            realm: "https://auth/token".into(),
            service: "registry".into(),
            issuer: "auth".into(),
            jwks: Some("/nonexistent/jwks.json".into()),
            autoredirectpath: "/auth/token".into(),
            ..TokenSettings::default()
        };
        let e = TokenVerifier::new(&TokenSettings {
            realm: String::new(),
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.contains("auth.token.realm is missing"), "{e}");
        let e = TokenVerifier::new(&TokenSettings {
            jwks: None,
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.contains("rootcertbundle") && e.contains("jwks"), "{e}");
        let e = TokenVerifier::new(&base).unwrap_err();
        assert!(
            e.contains("auth.token.jwks: cannot read /nonexistent/jwks.json"),
            "{e}"
        );
        let e = TokenVerifier::new(&TokenSettings {
            signingalgorithms: vec!["RS256".into(), "XS999".into()],
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.contains("\"XS999\" is not supported"), "{e}");
        let e = TokenVerifier::new(&TokenSettings {
            rootcertbundle: Some("/nonexistent/bundle.pem".into()),
            jwks: None,
            ..base
        })
        .unwrap_err();
        assert!(
            e.contains("auth.token.rootcertbundle: cannot read /nonexistent/bundle.pem"),
            "{e}"
        );
    }
}
