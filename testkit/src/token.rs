//! A token service for registries with Bearer auth (the Docker registry token protocol): it
//! hands out ES256 JSON Web Tokens to clients that present the right Basic credentials, signed
//! by a key whose self-signed certificate the registry trusts (`rootcertbundle`) and carried in
//! the token's `x5c` header, which is how Debian's docker-registry 2.8 verifies them.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::{Error, Result};

/// The `service` the registry names in its challenges and expects as the token's audience.
pub const SERVICE: &str = "capstan-test-registry";
/// The token's issuer, as the registry is configured to expect.
pub const ISSUER: &str = "capstan-test-issuer";

/// A running token service; stops when dropped.
pub struct TokenService {
    addr: SocketAddr,
    certificate: PathBuf,
    signer: Arc<Signer>,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// What signs tokens: the key, and its certificate (DER) for the `x5c` header.
struct Signer {
    key: EcdsaKeyPair,
    certificate_der: Vec<u8>,
}

impl TokenService {
    /// Makes a P-256 key and self-signed certificate in `dir` (with Debian's `openssl`) and
    /// serves tokens to `user`:`password` on a loopback port.
    pub fn start(dir: &Path, user: &str, password: &str) -> Result<Self> {
        let key_path = dir.join("token-key.pem");
        let certificate = dir.join("token-cert.pem");
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "1", "-subj", "/CN=capstan-test-token"])
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&certificate)
            .output()
            .map_err(|e| Error::Command(format!("run openssl: {e}")))?;
        if !out.status.success() {
            return Err(Error::Command(format!(
                "openssl req failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let key_der = pem_body(&key_path, "PRIVATE KEY")?;
        let certificate_der = pem_body(&certificate, "CERTIFICATE")?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_der,
            &SystemRandom::new(),
        )
        .map_err(|e| Error::Command(format!("read the token key: {e}")))?;
        let signer = Arc::new(Signer {
            key,
            certificate_der,
        });
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind", "127.0.0.1:0"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("read the address of", "127.0.0.1:0"))?;
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        {
            let (signer, issued, stop) = (signer.clone(), issued.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        let _ = answer(stream, &signer, &basic, &issued);
                    }
                }
            });
        }
        Ok(TokenService {
            addr,
            certificate,
            signer,
            issued,
            stop,
        })
    }

    /// The realm URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate the registry is to trust.
    pub fn certificate(&self) -> &Path {
        &self.certificate
    }

    /// Tokens handed out so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// A token for `scope` (e.g. `repository:web:push,pull`), for fixtures that push.
    pub fn mint(&self, scope: &str) -> Result<String> {
        self.signer.token("fixture", scope)
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

impl Signer {
    /// A JWT for `subject` granting what `scope` asks (`repository:NAME:ACTIONS`).
    fn token(&self, subject: &str, scope: &str) -> Result<String> {
        let mut parts = scope.splitn(3, ':');
        let (kind, name, actions) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.certificate_der)],
        });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "iat": now,
            "nbf": now.saturating_sub(60),
            "exp": now + 600,
            "jti": format!("{now}-{}", crate::names::unique("t", 8)),
            "access": [{
                "type": kind,
                "name": name,
                "actions": actions.split(',').filter(|a| !a.is_empty()).collect::<Vec<_>>(),
            }],
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| Error::Command(format!("sign a token: {e}")))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// Serves one request: `GET /token?scope=...&service=...` with the right Basic credentials
/// gets a token; anything else a 401.
fn answer(
    mut stream: TcpStream,
    signer: &Signer,
    basic: &str,
    issued: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
            && value.trim() == basic
        {
            authorized = true;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let scope = target
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("scope="))
        .map(percent_decode)
        .unwrap_or_default();
    let token = if authorized {
        signer.token("puller", &scope).ok()
    } else {
        None
    };
    let (status, body) = match token {
        Some(token) => {
            issued.fetch_add(1, Ordering::SeqCst);
            (
                "200 OK",
                serde_json::json!({ "token": token, "expires_in": 600 }).to_string(),
            )
        }
        None => ("401 Unauthorized", "{}".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Decodes `%XX` escapes (scopes arrive with `:` and `,` escaped).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(value) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// The DER bytes of the first PEM block labelled `label` in `path`.
fn pem_body(path: &Path, label: &str) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body.split_whitespace().collect::<String>())
        .ok_or_else(|| Error::Command(format!("{}: no {label} block", path.display())))?;
    STANDARD
        .decode(body)
        .map_err(|e| Error::Command(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_percent_decoded() {
        assert_eq!(
            percent_decode("repository%3Aweb%3Apull%2Cpush"),
            "repository:web:pull,push"
        );
        assert_eq!(percent_decode("plain"), "plain");
    }
}
