//! The credentials, TLS config and authenticator driven by real clients: kubectl (current and
//! 1.27) with the admin kubeconfig, and curl with client certificates and bearer tokens,
//! against a tiny HTTPS server that answers /version and echoes the authenticated user.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use capstan_apiserver::authn::serviceaccount::{
    BoundKind, BoundObject, DEFAULT_ISSUER, TokenIssuer, TokenVerifier,
};
use capstan_apiserver::authn::tokenfile::TokenFile;
use capstan_apiserver::authn::{AuthError, Authenticator};
use capstan_apiserver::pki::{AltName, ClusterCredentials, PkiOptions};
use capstan_apiserver::tls;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

const KUBECTL: &str = "/usr/bin/kubectl";
const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const GIT_VERSION: &str = "v1.33.0-capstan.test";

fn options(port: u16) -> PkiOptions {
    PkiOptions {
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        secure_port: port,
        ..PkiOptions::default()
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    json_response(
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}

fn handle(
    request: &Request<hyper::body::Incoming>,
    peer: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    authenticator: &Authenticator,
) -> Response<Full<Bytes>> {
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let who = match authenticator.authenticate(peer, header) {
        Ok(who) => who,
        Err(e) => return status(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()),
    };
    match request.uri().path() {
        // Anonymous may reach these only, as with kube-apiserver's default RBAC.
        "/version" => json_response(
            StatusCode::OK,
            serde_json::json!({
                "major": "1", "minor": "33", "gitVersion": GIT_VERSION,
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
                "platform": "linux/amd64",
            }),
        ),
        _ if who.user.is_anonymous() => status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "forbidden: User \"system:anonymous\" cannot get path".to_string(),
        ),
        "/whoami" => json_response(
            StatusCode::OK,
            serde_json::json!({
                "name": who.user.name, "uid": who.user.uid,
                "groups": who.user.groups, "extra": who.user.extra,
            }),
        ),
        _ => status(StatusCode::NOT_FOUND, "NotFound", "not found".to_string()),
    }
}

/// Serves on `listener` until the returned task is aborted.
/// The ALPN protocols connections negotiated, in order.
type AlpnLog = Arc<std::sync::Mutex<Vec<String>>>;

fn serve(
    listener: TcpListener,
    credentials: &ClusterCredentials,
    authenticator: Authenticator,
    alpn: AlpnLog,
) -> tokio::task::JoinHandle<()> {
    let config = tls::server_config(credentials).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let authenticator = Arc::new(authenticator);
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let authenticator = authenticator.clone();
            let alpn = alpn.clone();
            connections.spawn(async move {
                // A client that refuses our certificate ends its handshake; nothing to serve.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let protocol = tls.get_ref().1.alpn_protocol().unwrap_or_default();
                alpn.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(protocol).into_owned());
                let peer: Option<Vec<_>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                let service = hyper::service::service_fn(move |request| {
                    let response = handle(&request, peer.as_deref(), &authenticator);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    })
}

fn authenticator(credentials: &ClusterCredentials, token_file: Option<TokenFile>) -> Authenticator {
    let verifier = TokenVerifier::new(
        vec![credentials.service_account_key().verifying_key().clone()],
        vec![DEFAULT_ISSUER.to_string()],
        vec![DEFAULT_ISSUER.to_string()],
    );
    let mut a =
        Authenticator::new(credentials.ca_certificate().clone()).with_service_accounts(verifier);
    if let Some(tokens) = token_file {
        a = a.with_token_file(tokens);
    }
    a
}

async fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    // kubectl writes its cache under HOME: one of its own, removed after the call.
    let Ok(home) = tempfile::tempdir() else {
        panic!("cannot make a temporary home")
    };
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .env("HOME", home.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
    .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// curl's body and HTTP status.
async fn curl(port: u16, ca: &Path, extra: &[&str]) -> (u16, String) {
    let url = format!("https://127.0.0.1:{port}/whoami");
    let ca = ca.display().to_string();
    let mut args = vec!["-sS", "--cacert", &ca, "-w", "\n%{http_code}", &url];
    args.splice(0..0, extra.iter().copied());
    let (code, stdout, stderr) = run("curl", &args).await;
    assert_eq!(code, 0, "curl {args:?}: {stderr}");
    let (body, status) = stdout.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

async fn kubectl_version(kubectl: &str, kubeconfig: &Path) -> serde_json::Value {
    let kubeconfig = kubeconfig.display().to_string();
    let (code, stdout, stderr) = run(
        kubectl,
        &["--kubeconfig", &kubeconfig, "version", "-o", "json"],
    )
    .await;
    assert_eq!(code, 0, "{kubectl} version: {stderr}\n{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{kubectl} output {stdout:?}: {e}"))
}

fn snapshot(data_dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for dir in [data_dir.to_path_buf(), data_dir.join("pki")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_authenticate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let started = Instant::now();
    let credentials = ClusterCredentials::load_or_create(&data, &options(port)).unwrap();
    println!("fresh bootstrap took {:?}", started.elapsed());

    let tokens_path = tmp.path().join("tokens.csv");
    std::fs::write(&tokens_path, "s3cret-token,alice,uid-alice,\"dev,ops\"\n").unwrap();
    let tokens = TokenFile::load(&tokens_path).unwrap();
    let alpn = AlpnLog::default();
    let server = serve(
        listener,
        &credentials,
        authenticator(&credentials, Some(tokens)),
        alpn.clone(),
    );

    let kubeconfig = data.join("admin.kubeconfig");
    for kubectl in [KUBECTL, KUBECTL_1_27] {
        let version = kubectl_version(kubectl, &kubeconfig).await;
        assert_eq!(
            version["serverVersion"]["gitVersion"], GIT_VERSION,
            "{kubectl}: {version}"
        );
    }
    // kubectl speaks h2 when offered.
    let seen = alpn.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|p| p == "h2"),
        "{seen:?}"
    );

    let pki = data.join("pki");
    let ca = pki.join("ca.crt");
    let (cert, key) = (pki.join("admin.crt"), pki.join("admin.key"));
    let (cert, key) = (cert.display().to_string(), key.display().to_string());

    // The admin client certificate (curl negotiates h2 here).
    let (code, body) = curl(port, &ca, &["--cert", &cert, "--key", &key]).await;
    assert_eq!(code, 200, "{body}");
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["name"], "kubernetes-admin");
    assert_eq!(
        user["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    // ... and over http/1.1.
    let (code, _) = curl(port, &ca, &["--http1.1", "--cert", &cert, "--key", &key]).await;
    assert_eq!(code, 200);
    assert_eq!(
        alpn.lock().unwrap()[seen.len()..].to_vec(),
        vec!["h2", "http/1.1"]
    );

    // A token-file user.
    let (code, body) = curl(port, &ca, &["-H", "Authorization: Bearer s3cret-token"]).await;
    assert_eq!(code, 200, "{body}");
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["name"], "alice");
    assert_eq!(user["uid"], "uid-alice");
    assert_eq!(
        user["groups"],
        serde_json::json!(["dev", "ops", "system:authenticated"])
    );

    // An issued, pod-bound ServiceAccount token.
    let issuer = TokenIssuer::new(credentials.service_account_key().clone(), DEFAULT_ISSUER);
    let pod = BoundObject {
        kind: BoundKind::Pod,
        name: "web-0".into(),
        uid: "pod-uid-1".into(),
    };
    let token = issuer
        .issue(
            "team-a",
            "builder",
            "sa-uid-1",
            &[],
            Duration::from_secs(3600),
            Some(&pod),
        )
        .unwrap();
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = curl(port, &ca, &["-H", &bearer]).await;
    assert_eq!(code, 200, "{body}");
    let user: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["name"], "system:serviceaccount:team-a:builder");
    assert_eq!(user["uid"], "sa-uid-1");
    assert_eq!(
        user["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ])
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["web-0"])
    );

    // Refused: an unknown token, an expired SA token, a token for another audience, a
    // tampered one, and a client certificate from another CA.
    let expired = issuer
        .issue_at(
            SystemTime::now() - Duration::from_secs(7200),
            "team-a",
            "builder",
            "sa-uid-1",
            &[],
            Duration::from_secs(3600),
            None,
        )
        .unwrap();
    let other_audience = issuer
        .issue(
            "team-a",
            "builder",
            "sa-uid-1",
            &["vault".to_string()],
            Duration::from_secs(600),
            None,
        )
        .unwrap();
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for (what, bad) in [
        ("unknown", "wrong-token".to_string()),
        ("expired", expired),
        ("other audience", other_audience),
        ("tampered", tampered),
    ] {
        let header = format!("Authorization: Bearer {bad}");
        let (code, body) = curl(port, &ca, &["-H", &header]).await;
        assert_eq!(code, 401, "{what} token: {body}");
    }

    let other =
        ClusterCredentials::load_or_create(&tmp.path().join("other"), &options(port)).unwrap();
    let other_pki = tmp.path().join("other/pki");
    let (ocert, okey) = (other_pki.join("admin.crt"), other_pki.join("admin.key"));
    let (ocert, okey) = (ocert.display().to_string(), okey.display().to_string());
    let (code, body) = curl(port, &ca, &["--cert", &ocert, "--key", &okey]).await;
    assert_eq!(code, 401, "foreign client certificate: {body}");
    assert!(body.contains("client certificate"), "{body}");
    // kubectl with a kubeconfig whose CA is another cluster's refuses our serving certificate.
    let other_kubeconfig = tmp
        .path()
        .join("other/admin.kubeconfig")
        .display()
        .to_string();
    let (code, _, stderr) = run(
        KUBECTL,
        &["--kubeconfig", &other_kubeconfig, "version", "-o", "json"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("certificate"), "{stderr}");
    drop(other);

    // Anonymous: /version only.
    let ca_arg = ca.display().to_string();
    let url = format!("https://127.0.0.1:{port}/version");
    let (code, stdout, stderr) = run("curl", &["-sS", "--fail", "--cacert", &ca_arg, &url]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(GIT_VERSION));
    let (code, body) = curl(port, &ca, &[]).await;
    assert_eq!(code, 403, "{body}");

    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_file_and_the_kubeconfig_works() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let first = ClusterCredentials::load_or_create(&data, &options(port)).unwrap();
    let before = snapshot(&data);
    let started = Instant::now();
    let second = ClusterCredentials::load_or_create(&data, &options(port)).unwrap();
    println!("restart load took {:?}", started.elapsed());
    assert_eq!(before, snapshot(&data), "a restart changed files");
    assert_eq!(first.ca_certificate(), second.ca_certificate());
    assert_eq!(first.serving_chain(), second.serving_chain());

    // Modes: private keys and kubeconfig 0600, directories 0700.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for key in ["ca.key", "apiserver.key", "sa.key", "admin.key"] {
        assert_eq!(mode(&data.join("pki").join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&data.join("admin.kubeconfig")), 0o600);
    assert_eq!(mode(&data.join("pki")), 0o700);
    assert_eq!(mode(&data), 0o700);

    // Tokens issued before the restart verify after it.
    let token = TokenIssuer::new(first.service_account_key().clone(), DEFAULT_ISSUER)
        .issue(
            "default",
            "default",
            "u1",
            &[],
            Duration::from_secs(600),
            None,
        )
        .unwrap();
    let claims = TokenVerifier::new(
        vec![second.service_account_key().verifying_key().clone()],
        vec![DEFAULT_ISSUER.to_string()],
        vec![DEFAULT_ISSUER.to_string()],
    )
    .verify(&token)
    .unwrap();
    assert_eq!(claims.kubernetes.serviceaccount.name, "default");

    // The serving certificate names what kube clients dial.
    let sans = second.serving_sans();
    for dns in [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        assert!(
            sans.contains(&AltName::Dns(dns.into())),
            "{dns} missing from {sans:?}"
        );
    }
    for ip in ["127.0.0.1", "::1", "10.96.0.1"] {
        assert!(
            sans.contains(&AltName::Ip(ip.parse().unwrap())),
            "{ip} missing from {sans:?}"
        );
    }

    // A new SAN re-issues only the serving certificate, from the same CA.
    let mut wider = options(port);
    wider.extra_sans = vec!["api.example.test".into(), "192.0.2.10".into()];
    let third = ClusterCredentials::load_or_create(&data, &wider).unwrap();
    let after = snapshot(&data);
    let changed: Vec<_> = before
        .keys()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(changed, vec!["apiserver.crt"]);
    assert!(
        third
            .serving_sans()
            .contains(&AltName::Dns("api.example.test".into()))
    );
    assert!(
        third
            .serving_sans()
            .contains(&AltName::Ip("192.0.2.10".parse().unwrap()))
    );

    // The kubeconfig written on the first start works against the restarted server.
    let server = serve(
        listener,
        &third,
        authenticator(&third, None),
        AlpnLog::default(),
    );
    let version = kubectl_version(KUBECTL, &data.join("admin.kubeconfig")).await;
    assert_eq!(version["serverVersion"]["gitVersion"], GIT_VERSION);
    server.abort();
}

#[test]
fn authenticator_unit_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let credentials =
        ClusterCredentials::load_or_create(tmp.path(), &PkiOptions::default()).unwrap();
    let a = authenticator(&credentials, None).with_anonymous(false);
    assert_eq!(
        a.authenticate(None, None),
        Err(AuthError::AnonymousDisabled)
    );

    // A client certificate issued for a node reads as that node.
    let issued = credentials
        .issue_client_certificate(
            "system:node:n1",
            Some("system:nodes"),
            Duration::from_secs(600),
        )
        .unwrap();
    let der = rustls::pki_types::CertificateDer::from(
        rustls::pki_types::pem::PemObject::from_pem_slice(issued.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap(),
    );
    let who = a.authenticate(Some(&[der]), None).unwrap();
    assert_eq!(who.user.name, "system:node:n1");
    assert_eq!(
        who.user.groups,
        vec!["system:nodes", "system:authenticated"]
    );
    assert!(
        who.user.extra["authentication.kubernetes.io/credential-id"][0].starts_with("X509SHA256=")
    );
}

#[test]
fn broken_files_are_named_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    ClusterCredentials::load_or_create(data, &PkiOptions::default()).unwrap();
    let pki = data.join("pki");

    // A CA certificate whose key is gone is never silently replaced.
    let ca_key = std::fs::read(pki.join("ca.key")).unwrap();
    std::fs::remove_file(pki.join("ca.key")).unwrap();
    let err = ClusterCredentials::load_or_create(data, &PkiOptions::default()).unwrap_err();
    assert!(err.to_string().contains("ca.key"), "{err}");
    std::fs::write(pki.join("ca.key"), &ca_key).unwrap();

    // A garbled serving key names its file.
    std::fs::write(pki.join("apiserver.key"), "garbage").unwrap();
    let err = ClusterCredentials::load_or_create(data, &PkiOptions::default()).unwrap_err();
    assert!(err.to_string().contains("apiserver.key"), "{err}");

    // A missing serving certificate is re-issued from the same CA; the CA stays.
    let ca = std::fs::read(pki.join("ca.crt")).unwrap();
    std::fs::remove_file(pki.join("apiserver.key")).unwrap();
    std::fs::remove_file(pki.join("apiserver.crt")).unwrap();
    ClusterCredentials::load_or_create(data, &PkiOptions::default()).unwrap();
    assert!(pki.join("apiserver.crt").exists());
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca);

    // Bad options name the option.
    let bad = PkiOptions {
        extra_sans: vec!["not a name".into()],
        ..PkiOptions::default()
    };
    let err = ClusterCredentials::load_or_create(data, &bad).unwrap_err();
    assert!(err.to_string().contains("not a name"), "{err}");
}

#[test]
fn fresh_bootstrap_time() {
    // Printed for the record; nothing is asserted about time.
    for _ in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let started = Instant::now();
        ClusterCredentials::load_or_create(tmp.path(), &PkiOptions::default()).unwrap();
        println!("fresh bootstrap: {:?}", started.elapsed());
    }
}
