//! Keys and signature checks made with the `openssl` command (installed by
//! `scripts/clients.sh`), so tests verify what the code under test signed
//! with an implementation that is not its own.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `openssl args`, feeding `input`; its stdout, or a message.
fn openssl(args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl: {e} (scripts/clients.sh installs it)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("openssl {args:?}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("openssl {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// A fresh 2048-bit RSA private key, PKCS#8 PEM.
///
/// # Errors
/// openssl is missing or fails.
pub fn rsa_private_pem() -> Result<String, String> {
    let pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    )?;
    String::from_utf8(pem).map_err(|e| format!("openssl genpkey: {e}"))
}

/// A fresh 2048-bit RSA key pair in `dir`: the private key as PKCS#1
/// (`BEGIN RSA PRIVATE KEY`) when `pkcs1`, else PKCS#8, and the public key.
///
/// # Errors
/// openssl is missing or fails.
pub fn rsa_key_pair(dir: &Path, pkcs1: bool) -> Result<(PathBuf, PathBuf), String> {
    let private = dir.join(if pkcs1 {
        "rsa-pkcs1.pem"
    } else {
        "rsa-pkcs8.pem"
    });
    let public = dir.join(if pkcs1 {
        "rsa-pkcs1.pub"
    } else {
        "rsa-pkcs8.pub"
    });
    let pkcs8 = rsa_private_pem()?.into_bytes();
    let pem = if pkcs1 {
        openssl(&["rsa", "-traditional"], &pkcs8)?
    } else {
        pkcs8.clone()
    };
    std::fs::write(&private, &pem).map_err(|e| format!("{}: {e}", private.display()))?;
    let pubkey = openssl(&["pkey", "-pubout"], &pkcs8)?;
    std::fs::write(&public, pubkey).map_err(|e| format!("{}: {e}", public.display()))?;
    Ok((private, public))
}

/// A self-signed certificate for `127.0.0.1` (2 days), written as
/// `cert.pem` and `key.pem` (unencrypted) into `dir`; their paths.
///
/// # Errors
/// openssl is missing or fails.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            &k,
            "-out",
            &c,
        ],
        b"",
    )?;
    Ok((cert, key))
}

/// A test CA (`ca.pem`, `ca.key`) and a client certificate it signed for
/// TLS client authentication (`client.pem`, `client.key`), written into
/// `dir`: the paths of the CA certificate, the client certificate and its
/// key.
///
/// # Errors
/// openssl is missing or fails.
pub fn client_ca(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let (ca_key, ca, _) = key_and_cert(dir, "ca", "rsa", None)?;
    let (key, cert, _) = issue(
        dir,
        "client",
        "rsa",
        Some((&ca, &ca_key)),
        "extendedKeyUsage=clientAuth\n",
    )?;
    Ok((ca, cert, key))
}

/// A fresh key (`algorithm`: `rsa`, `ec` for P-256, `ec521` for P-521,
/// `ed25519`) and a
/// certificate for it, written into `dir` as `<name>.key` (PKCS#8) and
/// `<name>.pem`: self-signed, or signed by `issuer` (certificate and key
/// files). Returns the key, the certificate and the public key as DER
/// SubjectPublicKeyInfo.
///
/// # Errors
/// An unknown algorithm; openssl is missing or fails.
pub fn key_and_cert(
    dir: &Path,
    name: &str,
    algorithm: &str,
    issuer: Option<(&Path, &Path)>,
) -> Result<(PathBuf, PathBuf, Vec<u8>), String> {
    issue(
        dir,
        name,
        algorithm,
        issuer,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n",
    )
}

/// [`key_and_cert`], with the `extensions` (openssl extfile lines) of a
/// certificate signed by `issuer`; they also make it a version 3
/// certificate, as real ones are.
fn issue(
    dir: &Path,
    name: &str,
    algorithm: &str,
    issuer: Option<(&Path, &Path)>,
    extensions: &str,
) -> Result<(PathBuf, PathBuf, Vec<u8>), String> {
    let opts: &[&str] = match algorithm {
        "rsa" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ec" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec521" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        "ed25519" => &["-algorithm", "ED25519"],
        other => return Err(format!("unknown key algorithm {other:?}")),
    };
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let (k, c) = (
        key.to_string_lossy().into_owned(),
        cert.to_string_lossy().into_owned(),
    );
    let mut args = vec!["genpkey", "-out", &k];
    args.extend_from_slice(opts);
    openssl(&args, b"")?;
    let subject = format!("/CN={name}");
    match issuer {
        None => {
            openssl(
                &[
                    "req", "-x509", "-key", &k, "-subj", &subject, "-days", "2", "-out", &c,
                ],
                b"",
            )?;
        }
        Some((ca, ca_key)) => {
            let csr = dir
                .join(format!("{name}.csr"))
                .to_string_lossy()
                .into_owned();
            openssl(
                &["req", "-new", "-key", &k, "-subj", &subject, "-out", &csr],
                b"",
            )?;
            let (ca, ca_key) = (ca.to_string_lossy(), ca_key.to_string_lossy());
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(&ext, extensions).map_err(|e| format!("{}: {e}", ext.display()))?;
            let ext = ext.to_string_lossy().into_owned();
            openssl(
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &c,
                ],
                b"",
            )?;
        }
    }
    let spki = openssl(&["pkey", "-in", &k, "-pubout", "-outform", "DER"], b"")?;
    Ok((key, cert, spki))
}

/// Checks a CloudFront URL signed with a canned policy against
/// `public_pem`: rebuilds the policy from the URL without its query and
/// its `Expires`, turns the URL-safe `Signature` back into base64, and has
/// `openssl dgst -sha1 -verify` check it. Returns `Expires`.
///
/// # Errors
/// What is missing from the URL, or the verification's output.
pub fn verify_cloudfront_url(
    url: &url::Url,
    public_pem: &Path,
    key_pair_id: &str,
) -> Result<u64, String> {
    let get = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("{url} has no {name}"))
    };
    let expires: u64 = get("Expires")?
        .parse()
        .map_err(|e| format!("Expires of {url}: {e}"))?;
    let id = get("Key-Pair-Id")?;
    if id != key_pair_id {
        return Err(format!("Key-Pair-Id {id}, expected {key_pair_id}"));
    }
    let signature = get("Signature")?;
    if signature.contains(['+', '=', '/']) {
        return Err(format!(
            "Signature {signature} is not in CloudFront's URL-safe alphabet"
        ));
    }
    let b64: String = signature
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            c => c,
        })
        .collect();
    let raw = openssl(&["base64", "-d", "-A"], b64.as_bytes())?;
    let mut resource = url.clone();
    resource.set_query(None);
    let policy = format!(
        "{{\"Statement\":[{{\"Resource\":\"{resource}\",\"Condition\":{{\"DateLessThan\":{{\"AWS:EpochTime\":{expires}}}}}}}]}}"
    );
    let dir = std::env::temp_dir().join(format!(
        "regstore-cf-{}-{}",
        std::process::id(),
        crate::backend::unique_root("sig").replace('/', "_")
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sig_file = dir.join("sig.bin");
    std::fs::write(&sig_file, raw).map_err(|e| format!("{}: {e}", sig_file.display()))?;
    let key = public_pem.to_str().ok_or("public key path is not UTF-8")?;
    let sig = sig_file.to_str().ok_or("temp path is not UTF-8")?;
    let verified = openssl(
        &["dgst", "-sha1", "-verify", key, "-signature", sig],
        policy.as_bytes(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = verified?;
    if String::from_utf8_lossy(&out).contains("Verified OK") {
        Ok(expires)
    } else {
        Err(format!(
            "openssl did not verify the signature of {url}: {}",
            String::from_utf8_lossy(&out)
        ))
    }
}
