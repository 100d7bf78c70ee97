//! TokenRequest through typed clients, which parse the answer into their TokenRequest types:
//! kube-rs (`Api::<ServiceAccount>::create_token_request`) and the python kubernetes client
//! (`create_namespaced_service_account_token`), against an in-process server whose issuer has
//! a key made here.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::pki::ServiceAccountKey;
use capstan_apiserver::tokens::TokenSettings;
use capstan_apiserver::{ApiServer, Config};
use capstan_store::Store;
use capstan_store::memory::MemoryStore;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

const PYTHON_CLIENT: &str = "/var/cache/capstan-py/bin/python";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

async fn server_with_tokens() -> (Arc<TokenSettings>, String) {
    let key = match rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256) {
        Ok(key) => key,
        Err(e) => panic!("key: {e}"),
    };
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let key = match ServiceAccountKey::from_pkcs8(&key.serialize_der(), &spki) {
        Ok(key) => Arc::new(key),
        Err(e) => panic!("sa key: {e}"),
    };
    let settings = match TokenSettings::new(
        key,
        vec![ISSUER.into()],
        Vec::new(),
        None,
        "https://127.0.0.1",
    ) {
        Ok(settings) => Arc::new(settings),
        Err(e) => panic!("settings: {e}"),
    };
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = Config {
        service_account_tokens: Some(Arc::clone(&settings)),
        ..Config::default()
    };
    let server = match ApiServer::new(store, config).await {
        Ok(server) => server,
        Err(e) => panic!("server: {e}"),
    };
    (settings, common::listen(server).await)
}

#[tokio::test]
async fn kube_rs_creates_a_token_request() {
    let (settings, url) = server_with_tokens().await;
    let Ok(uri) = url.parse() else { panic!("url") };
    let client = match kube::Client::try_from(kube::Config::new(uri)) {
        Ok(client) => client,
        Err(e) => panic!("client: {e}"),
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(1200),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request("default", &PostParams::default(), &request)
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => panic!("create_token_request: {e}"),
    };
    assert_eq!(answer.metadata.name.as_deref(), Some("default"));
    assert_eq!(answer.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(answer.spec.expiration_seconds, Some(1200));
    assert_eq!(answer.spec.audiences, vec!["vault".to_string()]);
    let Some(status) = answer.status else {
        panic!("no status")
    };
    let claims = match settings.verifier().verify(&status.token) {
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    };
    // For another audience than the API server's: a valid token the API server refuses.
    assert!(claims.contains("audiences"), "{claims}");
    let expires = status.expiration_timestamp.0;
    let left = expires.as_second() - now_seconds();
    assert!((1190..=1201).contains(&left), "{left}");

    // Bound to a pod that is not there: kube's 404 for the pod.
    let bound = TokenRequest {
        spec: TokenRequestSpec {
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some("ghost".into()),
                uid: None,
            }),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    match accounts
        .create_token_request("default", &PostParams::default(), &bound)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.message, "pods \"ghost\" not found");
        }
        other => panic!("a token bound to a missing pod: {other:?}"),
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

const SCRIPT: &str = r#"
import json, sys
from kubernetes import client
configuration = client.Configuration()
configuration.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(configuration))
answer = api.create_namespaced_service_account_token(
    "default", "default",
    client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=None)))
print(json.dumps({
    "kind": answer.kind,
    "audiences": answer.spec.audiences,
    "seconds": answer.spec.expiration_seconds,
    "token": answer.status.token,
    "expires": answer.status.expiration_timestamp.isoformat(),
}))
"#;

#[tokio::test]
async fn the_python_client_creates_a_token_request() {
    let (settings, url) = server_with_tokens().await;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(PYTHON_CLIENT)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&url)
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let Ok(Ok(out)) = out else {
        panic!("{PYTHON_CLIENT} did not run (hack/deps.sh test installs it)")
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(seen["kind"], "TokenRequest");
    assert_eq!(seen["audiences"], serde_json::json!([ISSUER]));
    assert_eq!(seen["seconds"], 3600);
    let token = seen["token"].as_str().unwrap_or("");
    let claims = settings.verifier().verify(token);
    let Ok(claims) = claims else {
        panic!("the token does not verify: {claims:?}")
    };
    assert_eq!(claims.kubernetes.serviceaccount.name, "default");
}
