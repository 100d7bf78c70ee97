//! Certificate signing requests: `kubectl certificate approve` then the signer produce a
//! certificate from the cluster CA with the request's subject and expiry; a bootstrap-token
//! user's kubelet client request (and a node's own renewal) is approved automatically after a
//! SubjectAccessReview, others are not. The CA is made as `capstan control-plane` makes it (in
//! a tempdir) and handed to the controllers as control_plane.rs does.

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::RequestUser;
use capstan_apiserver::pki::der::{OID_COMMON_NAME, OID_ORGANIZATION, parse_certificate};
use capstan_apiserver::pki::verify::{Usage, verify_chain};
use capstan_apiserver::pki::{ClusterCredentials, PkiOptions, PkiPaths};
use capstan_controllers::ControllerOptions;
use capstan_controllers::context::SigningKeyPair;
use capstan_testcluster::{ClusterOptions, TestCluster, eventually, in_process_client};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

struct Ca {
    _dir: tempfile::TempDir,
    pem: String,
}

fn make_ca() -> (Ca, Arc<SigningKeyPair>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    if let Err(error) = ClusterCredentials::load_or_create(dir.path(), &PkiOptions::default()) {
        panic!("credentials: {error}");
    }
    let paths = PkiPaths::new(dir.path());
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let pair = SigningKeyPair {
        certificate_pem: read(&paths.ca_cert),
        key_pem: read(&paths.ca_key),
    };
    (
        Ca {
            pem: pair.certificate_pem.clone(),
            _dir: dir,
        },
        Arc::new(pair),
    )
}

async fn cluster(signing: Arc<SigningKeyPair>) -> TestCluster {
    let mut controller_options = ControllerOptions::new("test");
    controller_options.signing = Some(signing);
    TestCluster::with(ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec!["csrapproving".into(), "csrsigning".into()],
        controller_options,
        ..ClusterOptions::default()
    })
    .await
}

fn request_pem(cn: &str, orgs: &[&str]) -> String {
    request_pem_with(cn, orgs, &[])
}

fn request_pem_with(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
    let names: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap_or_else(|e| panic!("params: {e}"));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    for org in orgs {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *org);
    }
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let csr = params
        .serialize_request(&key)
        .unwrap_or_else(|e| panic!("csr: {e}"));
    csr.pem().unwrap_or_else(|e| panic!("pem: {e}"))
}

fn csr(
    name: &str,
    pem: &str,
    signer: &str,
    usages: &[&str],
    seconds: Option<i32>,
) -> CertificateSigningRequest {
    let value = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": k8s_openapi::ByteString(pem.as_bytes().to_vec()),
            "signerName": signer,
            "usages": usages,
            "expirationSeconds": seconds,
        },
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("csr: {e}"))
}

/// The signed certificate, once there.
async fn issued(api: &Api<CertificateSigningRequest>, name: &str) -> CertificateDer<'static> {
    let pem = eventually(Duration::from_secs(10), "certificate issued", || async {
        let csr = api.get(name).await.ok()?;
        let bytes = csr.status?.certificate?.0;
        (!bytes.is_empty()).then_some(bytes)
    })
    .await;
    CertificateDer::from_pem_slice(&pem).unwrap_or_else(|e| panic!("certificate PEM: {e}"))
}

fn ca_der(ca: &Ca) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap_or_else(|e| panic!("CA PEM: {e}"))
}

fn subject(leaf: &CertificateDer<'_>) -> (Vec<String>, Vec<String>) {
    let fields = parse_certificate(leaf).unwrap_or_else(|e| panic!("certificate: {e}"));
    (
        fields.subject_values(OID_COMMON_NAME),
        fields.subject_values(OID_ORGANIZATION),
    )
}

fn condition(csr: &CertificateSigningRequest, kind: &str) -> Option<(String, String)> {
    let c = csr
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)?;
    Some((c.reason.clone()?, c.message.clone().unwrap_or_default()))
}

#[tokio::test]
async fn approved_client_csr_is_signed_by_the_cluster_ca_with_its_subject_and_expiry() {
    let (ca, pair) = make_ca();
    let cluster = cluster(pair).await;
    let api: Api<CertificateSigningRequest> = Api::all(cluster.client.clone());
    let request = csr(
        "jane",
        &request_pem("jane", &["dev"]),
        "kubernetes.io/kube-apiserver-client",
        &["digital signature", "client auth"],
        Some(700),
    );
    if let Err(error) = api.create(&PostParams::default(), &request).await {
        panic!("create: {error}");
    }
    // Not a kubelet request: nothing happens until someone approves it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = api.get("jane").await.ok();
    assert!(
        pending
            .as_ref()
            .and_then(|c| c.status.as_ref()?.certificate.as_ref())
            .is_none()
    );
    assert!(
        pending
            .as_ref()
            .and_then(|c| condition(c, "Approved"))
            .is_none()
    );
    let out = cluster.kubectl_ok(&["get", "csr", "jane"]).await;
    assert!(out.contains("Pending"), "{out}");

    cluster
        .kubectl_ok(&["certificate", "approve", "jane"])
        .await;
    let leaf = issued(&api, "jane").await;
    let ca_der = ca_der(&ca);
    if let Err(error) = verify_chain(&ca_der, &leaf, &[], Usage::Client, Duration::ZERO) {
        panic!("the certificate does not verify against the CA: {error:?}");
    }
    assert!(verify_chain(&ca_der, &leaf, &[], Usage::Server, Duration::ZERO).is_err());
    // expirationSeconds 700 is honoured: valid in 650 s, expired in 750 s.
    assert!(verify_chain(&ca_der, &leaf, &[], Usage::Client, Duration::from_secs(650)).is_ok());
    assert!(verify_chain(&ca_der, &leaf, &[], Usage::Client, Duration::from_secs(750)).is_err());
    assert_eq!(subject(&leaf), (vec!["jane".into()], vec!["dev".into()]));
    let out = cluster.kubectl_ok(&["get", "csr", "jane"]).await;
    assert!(out.contains("Approved,Issued"), "{out}");
}

#[tokio::test]
async fn bootstrap_token_users_kubelet_client_csr_is_auto_approved_and_signed() {
    let (ca, pair) = make_ca();
    let cluster = cluster(pair).await;
    // What kubeadm binds: bootstrappers may request node client certificates (and have them
    // approved), nodes may renew their own.
    cluster
        .apply(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubeadm:kubelet-bootstrap}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node-bootstrapper}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:nodes}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubeadm:node-autoapprove-bootstrap}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:certificates.k8s.io:certificatesigningrequests:nodeclient}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubeadm:node-autoapprove-certificate-rotation}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:certificates.k8s.io:certificatesigningrequests:selfnodeclient}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:nodes}
"#,
        )
        .await;
    let as_user = |name: &str, groups: &[&str]| {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".into());
        let user = RequestUser {
            name: name.into(),
            uid: None,
            groups,
        };
        Api::<CertificateSigningRequest>::all(in_process_client(&cluster.server, user))
    };
    let bootstrap = as_user(
        "system:bootstrap:abcdef",
        &[
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
        ],
    );
    let kubelet = ["digital signature", "client auth"];
    let signer = "kubernetes.io/kube-apiserver-client-kubelet";
    let node_pem = request_pem("system:node:node-7", &["system:nodes"]);
    for (name, pem) in [
        ("node-csr-good", node_pem.clone()),
        (
            "node-csr-bad-org",
            request_pem("system:node:node-7", &["other"]),
        ),
    ] {
        if let Err(error) = bootstrap
            .create(
                &PostParams::default(),
                &csr(name, &pem, signer, &kubelet, None),
            )
            .await
        {
            panic!("create {name}: {error}");
        }
    }
    let admin: Api<CertificateSigningRequest> = Api::all(cluster.client.clone());
    let leaf = issued(&admin, "node-csr-good").await;
    let good = admin.get("node-csr-good").await.ok();
    assert_eq!(
        good.as_ref().and_then(|c| condition(c, "Approved")),
        Some((
            "AutoApproved".to_string(),
            "Auto approving kubelet client certificate after SubjectAccessReview.".to_string()
        ))
    );
    assert_eq!(
        good.as_ref()
            .and_then(|c| c.spec.username.clone())
            .as_deref(),
        Some("system:bootstrap:abcdef")
    );
    let ca_der = ca_der(&ca);
    if let Err(error) = verify_chain(&ca_der, &leaf, &[], Usage::Client, Duration::ZERO) {
        panic!("the certificate does not verify against the CA: {error:?}");
    }
    assert_eq!(
        subject(&leaf),
        (
            vec!["system:node:node-7".into()],
            vec!["system:nodes".into()]
        )
    );
    // A year at most (the cluster signing duration) without expirationSeconds.
    assert!(
        verify_chain(
            &ca_der,
            &leaf,
            &[],
            Usage::Client,
            Duration::from_secs(364 * 86400)
        )
        .is_ok()
    );
    assert!(
        verify_chain(
            &ca_der,
            &leaf,
            &[],
            Usage::Client,
            Duration::from_secs(366 * 86400)
        )
        .is_err()
    );

    // The node renews its own certificate: approved through selfnodeclient.
    let node = as_user("system:node:node-7", &["system:nodes"]);
    if let Err(error) = node
        .create(
            &PostParams::default(),
            &csr("node-csr-renew", &node_pem, signer, &kubelet, Some(3600)),
        )
        .await
    {
        panic!("create renew: {error}");
    }
    issued(&admin, "node-csr-renew").await;

    // Another node asking for node-7's certificate: neither its own nor a bootstrapper.
    let other_node = as_user("system:node:node-8", &["system:nodes"]);
    if let Err(error) = other_node
        .create(
            &PostParams::default(),
            &csr("node-csr-other", &node_pem, signer, &kubelet, None),
        )
        .await
    {
        panic!("create other: {error}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["node-csr-bad-org", "node-csr-other"] {
        let csr = admin.get(name).await.ok();
        assert!(
            csr.as_ref()
                .and_then(|c| condition(c, "Approved"))
                .is_none(),
            "{name} approved"
        );
    }
}

#[tokio::test]
async fn approved_serving_csr_is_signed_and_one_without_names_fails_its_checks() {
    let (ca, pair) = make_ca();
    let cluster = cluster(pair).await;
    let api: Api<CertificateSigningRequest> = Api::all(cluster.client.clone());
    let signer = "kubernetes.io/kubelet-serving";
    let usages = ["digital signature", "key encipherment", "server auth"];
    for (name, pem) in [
        (
            "serving",
            request_pem_with("system:node:node-1", &["system:nodes"], &["node-1"]),
        ),
        (
            "serving-no-names",
            request_pem("system:node:node-1", &["system:nodes"]),
        ),
    ] {
        if let Err(error) = api
            .create(
                &PostParams::default(),
                &csr(name, &pem, signer, &usages, None),
            )
            .await
        {
            panic!("create {name}: {error}");
        }
    }
    // Serving certificates are never approved automatically.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pending = api.get("serving").await.ok();
    assert!(
        pending
            .as_ref()
            .and_then(|c| condition(c, "Approved"))
            .is_none()
    );
    cluster
        .kubectl_ok(&["certificate", "approve", "serving", "serving-no-names"])
        .await;
    let leaf = issued(&api, "serving").await;
    if let Err(error) = verify_chain(&ca_der(&ca), &leaf, &[], Usage::Server, Duration::ZERO) {
        panic!("the serving certificate does not verify: {error:?}");
    }
    let failed = eventually(
        Duration::from_secs(10),
        "serving-no-names Failed",
        || async {
            let csr = api.get("serving-no-names").await.ok()?;
            condition(&csr, "Failed")
        },
    )
    .await;
    assert_eq!(
        failed,
        (
            "SignerValidationFailure".to_string(),
            "DNS or IP subjectAltName is required".to_string()
        )
    );
    let csr = api.get("serving-no-names").await.ok();
    assert!(csr.and_then(|c| c.status?.certificate).is_none());
}
