//! A node joining `capstan control-plane` with a bootstrap token, both the real binary:
//! `capstan token create --print-join-command` prints the command, a wrong CA pin or a
//! malformed token stops the node with the upstream message before anything is written, and
//! the printed command discovers the CA, bootstraps a client certificate through a
//! CertificateSigningRequest the controllers approve and sign, and registers the Node as
//! `system:node:<name>`. A restart reuses the certificate instead of asking again.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use capstan_testkit::kubectl::{KUBECTL, Kubectl};
use common::control_plane::ControlPlane;
use common::{RuntimeProcess, free_port};
use serde_json::Value;

fn capstan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl get ARGS -o json` as admin, polled until `check` accepts it.
fn wait_for(
    plane: &ControlPlane,
    node: &RuntimeProcess,
    args: &[&str],
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    loop {
        let out = plane.kubectl().output_blocking(&all);
        if out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| check(&v))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {}\nnode log:\n{}\ncontrol plane log:\n{}",
            text(&out.stdout),
            node.log(),
            plane.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn csrs(plane: &ControlPlane) -> Vec<Value> {
    let out = plane
        .kubectl()
        .output_blocking(&["get", "csr", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_node_joins_with_a_bootstrap_token_and_a_pinned_ca() {
    capstan_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(
        dir.path(),
        &[
            "--disable-scheduler",
            "--controllers",
            "csrapproving,csrsigning",
        ],
    );
    let admin = plane.kubeconfig();
    let out = capstan(&[
        "token",
        "create",
        "--kubeconfig",
        admin.to_str().unwrap(),
        "--ttl",
        "1h",
        "--print-join-command",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let command = text(&out.stdout);
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(&words[..3], ["capstan", "node", "--join"], "{command}");
    assert_eq!(words[3], format!("127.0.0.1:{}", plane.port), "{command}");
    assert_eq!(words[4], "--token");
    let token = words[5];
    let id = &token[..6];
    assert_eq!(words[6], "--discovery-token-ca-cert-hash");
    let pin = words[7];
    // The pin is the hash of the CA's public key, as openssl computes it.
    let ca = plane.data_dir.join("pki/ca.crt");
    let openssl = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum",
            ca.display()
        ))
        .output()
        .unwrap();
    let expected = text(&openssl.stdout);
    assert_eq!(
        pin,
        format!("sha256:{}", expected.split_whitespace().next().unwrap())
    );
    // The token is stored as kubeadm stores it.
    let secret = plane.kubectl().output_blocking(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
        "-o",
        "jsonpath={.type} {.data.auth-extra-groups}",
    ]);
    let secret = text(&secret.stdout);
    assert!(
        secret.starts_with("bootstrap.kubernetes.io/token "),
        "{secret}"
    );

    // A CA that is not the pinned one: refused, and nothing is written.
    let refused_root = dir.path().join("refused");
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let out = capstan(&[
        "node",
        "--join",
        words[3],
        "--token",
        token,
        "--discovery-token-ca-cert-hash",
        &wrong_pin,
        "--root-dir",
        refused_root.to_str().unwrap(),
        "--state-dir",
        dir.path().join("refused-state").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{pin}\" are pinned"
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(!refused_root.join("kubeconfig").exists());
    assert!(!dir.path().join("refused-state").exists());
    // A malformed token names the flag.
    let out = capstan(&[
        "node",
        "--join",
        words[3],
        "--token",
        "not-a-token",
        "--discovery-token-ca-cert-hash",
        pin,
        "--root-dir",
        refused_root.to_str().unwrap(),
        "--state-dir",
        dir.path().join("refused-state").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("--token: the bootstrap token \"not-a-token\" was not of the form"),
        "{}",
        text(&out.stderr)
    );
    assert!(csrs(&plane).is_empty(), "a refused join made a request");

    // The printed command joins.
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let mut node = RuntimeProcess::start_node(&node_dir, "", free_port(), &words[2..]);
    wait_for(
        &plane,
        &node,
        &["get", "node", "node1"],
        "the Node registered",
        |n| n["metadata"]["name"] == "node1",
    );
    let requests = csrs(&plane);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let csr = &requests[0];
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(
        csr["spec"]["username"],
        format!("system:bootstrap:{id}"),
        "{csr}"
    );
    assert!(
        csr["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Approved" && c["reason"] == "AutoApproved"),
        "{csr}"
    );
    // The node's own kubeconfig authenticates it as the node.
    let kubeconfig = node_dir.join("agent/kubeconfig");
    let pair = node_dir.join("agent/pki/kubelet-client-current.pem");
    assert!(pair.exists(), "no client certificate stored");
    assert_private(&kubeconfig);
    assert_private(&pair);
    let whoami = Kubectl::kubeconfig(KUBECTL, &kubeconfig)
        .output_blocking(&["auth", "whoami", "-o", "json"]);
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    let review: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:node:node1"
    );
    assert!(
        review["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "system:nodes"),
        "{review}"
    );

    // A restart finds a valid certificate and asks for none.
    node.stop_with("TERM");
    node.respawn();
    let lease_before = lease_renew_time(&plane);
    wait_for(
        &plane,
        &node,
        &["get", "lease", "-n", "kube-node-lease", "node1"],
        "the Lease renewed after the restart",
        |l| l["spec"]["renewTime"].as_str() != lease_before.as_deref(),
    );
    assert_eq!(
        csrs(&plane).len(),
        1,
        "a restart asked for a new certificate"
    );
    drop(node);
}

fn lease_renew_time(plane: &ControlPlane) -> Option<String> {
    let out = plane.kubectl().output_blocking(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "node1",
        "-o",
        "jsonpath={.spec.renewTime}",
    ]);
    out.status.success().then(|| text(&out.stdout))
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
}

/// A pair for `system:node:node1` signed by the cluster CA, valid from ten minutes ago until
/// `remaining` from now: most of its lifetime is gone, so a rotating node renews it at once.
fn short_lived_pair(plane: &ControlPlane, remaining: time::Duration) -> String {
    let pki = plane.data_dir.join("pki");
    let ca_pem = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, "system:nodes");
    name.push(rcgen::DnType::CommonName, "system:node:node1");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(10);
    params.not_after = now + remaining;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    format!("{}{}", certificate.pem(), key.serialize_pem())
}

fn first_certificate(pem: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    pem[..pem.find(end).unwrap() + end.len()].to_string()
}

#[test]
fn a_node_renews_its_client_certificate_before_it_expires() {
    capstan_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut plane = ControlPlane::start(
        dir.path(),
        &[
            "--disable-scheduler",
            "--controllers",
            "csrapproving,csrsigning",
        ],
    );
    // A node whose certificate has 40 s left, with rotation on, as kubeadm configures it.
    let node_dir = dir.path().join("node");
    let pki = node_dir.join("agent/pki");
    std::fs::create_dir_all(&pki).unwrap();
    let pair_file = pki.join("kubelet-client-current.pem");
    let original = short_lived_pair(&plane, time::Duration::seconds(40));
    let expires = Instant::now() + Duration::from_secs(40);
    std::fs::write(&pair_file, &original).unwrap();
    let ca = std::fs::read(plane.data_dir.join("pki/ca.crt")).unwrap();
    let kubeconfig = node_dir.join("agent/kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {}\nusers:\n- name: node\n  user:\n    client-certificate: {p}\n    client-key: {p}\ncontexts:\n- name: node\n  context: {{cluster: c, user: node}}\ncurrent-context: node\n",
            plane.port,
            base64::engine::general_purpose::STANDARD.encode(&ca),
            p = pair_file.display()
        ),
    )
    .unwrap();
    let kubelet_config = node_dir.join("kubelet.yaml");
    std::fs::write(
        &kubelet_config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: true\n",
    )
    .unwrap();
    let node = RuntimeProcess::start_node(
        &node_dir,
        "",
        free_port(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--config",
            kubelet_config.to_str().unwrap(),
        ],
    );

    // The node asks as itself; the approver takes it as selfnodeclient, the signer signs it.
    wait_for(
        &plane,
        &node,
        &["get", "csr"],
        "a renewal request approved and signed",
        |list| {
            list["items"].as_array().is_some_and(|items| {
                items.iter().any(|csr| {
                    csr["spec"]["username"] == "system:node:node1"
                        && csr["status"]["certificate"].is_string()
                        && csr["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| c["type"] == "Approved"))
                })
            })
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let renewed = loop {
        let current = std::fs::read_to_string(&pair_file).unwrap_or_default();
        if current.contains("-----END CERTIFICATE-----")
            && first_certificate(&current) != first_certificate(&original)
        {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "the pair was not replaced:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        std::fs::symlink_metadata(&pair_file)
            .unwrap()
            .file_type()
            .is_symlink(),
        "kubelet-client-current.pem is not a link to the new pair"
    );
    // Signed for the signer's full duration, not the old certificate's remainder.
    assert!(
        valid_for(&renewed, 300 * 24 * 3600),
        "the renewed certificate is short"
    );
    assert!(
        !valid_for(&original, 60),
        "the test's own certificate is not short"
    );
    assert_private(&pair_file);

    // Once the old certificate has expired, the API server restarts: every connection is new,
    // and the node's Lease keeps being renewed only if it presents the new certificate.
    if let Some(left) = expires.checked_duration_since(Instant::now()) {
        std::thread::sleep(left + Duration::from_secs(2));
    }
    plane.restart();
    let before = lease_renew_time(&plane);
    wait_for(
        &plane,
        &node,
        &["get", "lease", "-n", "kube-node-lease", "node1"],
        "the Lease renewed with the new certificate after the old one expired",
        |l| l["spec"]["renewTime"].as_str() != before.as_deref(),
    );
    let whoami = Kubectl::kubeconfig(KUBECTL, &kubeconfig).output_blocking(&["auth", "whoami"]);
    assert!(whoami.status.success(), "{}", text(&whoami.stderr));
    assert!(text(&whoami.stdout).contains("system:node:node1"));
    drop(node);
}

/// Whether the first certificate in `pem` is still valid `seconds` from now (openssl's
/// `-checkend`).
fn valid_for(pem: &str, seconds: u64) -> bool {
    Command::new("openssl")
        .args(["x509", "-noout", "-checkend", &seconds.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(first_certificate(pem).as_bytes())?;
            child.wait()
        })
        .unwrap()
        .success()
}
