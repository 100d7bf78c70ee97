//! Bootstrap tokens authenticate as `system:bootstrap:<id>` in `system:bootstrappers` while
//! their Secret in kube-system says so (right secret, usage-bootstrap-authentication, not
//! expired), seen through TokenReview, which runs the same lookup as the HTTPS listener.

mod common;

use std::sync::Arc;

use capstan_apiserver::authn::Authenticator;
use capstan_apiserver::{ApiServer, Config};
use capstan_store::Store;
use capstan_store::memory::MemoryStore;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

fn secret(id: &str, token_secret: &str, expiration: Option<&str>) -> Secret {
    let mut data = serde_json::json!({
        "token-id": id,
        "token-secret": token_secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
    });
    if let Some(at) = expiration {
        data["expiration"] = serde_json::json!(at);
    }
    let value = serde_json::json!({
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("secret: {e}"))
}

#[tokio::test]
async fn bootstrap_tokens_authenticate_through_their_secret() {
    let ca = rustls::pki_types::CertificateDer::from(Vec::new());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config = Config {
        token_authenticator: Some(Arc::new(Authenticator::new(ca))),
        ..Config::default()
    };
    let server = match ApiServer::new(store, config).await {
        Ok(server) => server,
        Err(error) => panic!("server: {error}"),
    };
    let url = common::listen(server).await;
    let client = match url.parse() {
        Ok(uri) => {
            kube::Client::try_from(kube::Config::new(uri)).unwrap_or_else(|e| panic!("client: {e}"))
        }
        Err(_) => panic!("url"),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    for s in [
        secret("abcdef", "0123456789abcdef", None),
        secret("expird", "0123456789abcdef", Some("2020-01-01T00:00:00Z")),
    ] {
        if let Err(error) = secrets.create(&PostParams::default(), &s).await {
            panic!("create secret: {error}");
        }
    }
    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: &'static str| {
        let reviews = reviews.clone();
        async move {
            let ask = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.into()),
                    audiences: None,
                },
                ..TokenReview::default()
            };
            match reviews.create(&PostParams::default(), &ask).await {
                Ok(answer) => answer.status.unwrap_or_default(),
                Err(error) => panic!("TokenReview: {error}"),
            }
        }
    };
    let good: TokenReviewStatus = review("abcdef.0123456789abcdef").await;
    assert_eq!(good.authenticated, Some(true), "{:?}", good.error);
    let user = good.user.unwrap_or_default();
    assert_eq!(user.username.as_deref(), Some("system:bootstrap:abcdef"));
    assert_eq!(
        user.groups,
        Some(vec![
            "system:bootstrappers".to_string(),
            "system:bootstrappers:kubeadm:default-node-token".to_string(),
            "system:authenticated".to_string(),
        ])
    );
    for bad in [
        "abcdef.0000000000000000",
        "expird.0123456789abcdef",
        "zzzzzz.0123456789abcdef",
    ] {
        let answer = review(bad).await;
        assert_eq!(answer.authenticated, Some(false), "{bad}");
    }
}
