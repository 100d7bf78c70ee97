//! RBAC and the review APIs against an in-process server: SubjectAccessReviews through the
//! kube-rs client as bindings come and go, TokenReview of a good and a bad token, ClusterRole
//! aggregation into `view`, escalation prevention, the Forbidden text, and the
//! `--authorization-mode` chains.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_apiserver::authn::Authenticator;
use capstan_apiserver::authn::tokenfile::TokenFile;
use capstan_apiserver::authz::Mode;
use capstan_apiserver::{ApiServer, Config, RequestUser};
use capstan_store::Store;
use capstan_store::memory::MemoryStore;
use http::Request;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

async fn server_with(config: Config) -> Arc<ApiServer> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    match ApiServer::new(store, config).await {
        Ok(server) => server,
        Err(error) => panic!("server did not start: {error}"),
    }
}

fn alice() -> RequestUser {
    RequestUser {
        name: "alice".into(),
        uid: None,
        groups: vec!["devs".into(), "system:authenticated".into()],
    }
}

/// One request as `user`; the code and the body as JSON.
async fn call_as(
    server: &ApiServer,
    user: &RequestUser,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, user).await;
    let code = response.status().as_u16();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn client(url: &str) -> kube::Client {
    let Ok(uri) = url.parse() else { panic!("url") };
    match kube::Client::try_from(kube::Config::new(uri)) {
        Ok(client) => client,
        Err(error) => panic!("client: {error}"),
    }
}

/// Polls `check` for up to five seconds: RBAC follows the store through a watch.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 5s");
}

fn resource_review(
    user: &str,
    verb: &str,
    resource: &str,
    sub: Option<&str>,
) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec!["system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("default".into()),
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                subresource: sub.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

async fn review(
    api: &Api<SubjectAccessReview>,
    sar: &SubjectAccessReview,
) -> SubjectAccessReviewStatus {
    match api.create(&PostParams::default(), sar).await {
        Ok(answer) => answer.status.unwrap_or_default(),
        Err(error) => panic!("SubjectAccessReview: {error}"),
    }
}

#[tokio::test]
async fn subject_access_reviews_follow_roles_and_bindings_through_kube_rs() {
    let server = server_with(Config::default()).await;
    let url = common::listen(Arc::clone(&server)).await;
    let api: Api<SubjectAccessReview> = Api::all(client(&url).await);
    let list_pods = resource_review("alice", "list", "pods", None);
    let status = review(&api, &list_pods).await;
    assert!(!status.allowed);
    assert_eq!(status.denied, None);

    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]});
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default";
    let (code, _) = common::json(&server, "POST", &format!("{rbac}/roles"), &role).await;
    assert_eq!(code, 201);
    let (code, _) = common::json(&server, "POST", &format!("{rbac}/rolebindings"), &binding).await;
    assert_eq!(code, 201);

    eventually("alice may list pods", || async {
        review(&api, &list_pods).await.allowed
    })
    .await;
    let status = review(&api, &list_pods).await;
    assert_eq!(
        status.reason.as_deref(),
        Some(
            "RBAC: allowed by RoleBinding \"alice-reads/default\" of Role \"pod-reader\" to User \"alice\""
        )
    );
    // Exactly what the role grants: not delete, not the log subresource, not another user.
    assert!(
        !review(&api, &resource_review("alice", "delete", "pods", None))
            .await
            .allowed
    );
    assert!(
        !review(&api, &resource_review("alice", "get", "pods", Some("log")))
            .await
            .allowed
    );
    assert!(
        !review(&api, &resource_review("bob", "list", "pods", None))
            .await
            .allowed
    );
    // Non-resource URLs: the bootstrap policy lets every authenticated user read /healthz.
    let healthz = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("bob".into()),
            groups: Some(vec!["system:authenticated".into()]),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/healthz".into()),
                verb: Some("get".into()),
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    assert!(review(&api, &healthz).await.allowed);

    let (code, _) = common::json(
        &server,
        "DELETE",
        &format!("{rbac}/rolebindings/alice-reads"),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200);
    eventually("alice loses the access", || async {
        !review(&api, &list_pods).await.allowed
    })
    .await;

    // A binding to a role that does not exist says so in the reason.
    let dangling = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "dangling"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gone"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    let (code, _) = common::json(&server, "POST", &format!("{rbac}/rolebindings"), &dangling).await;
    assert_eq!(code, 201);
    eventually("the missing role is reported", || async {
        review(&api, &list_pods).await.reason.as_deref()
            == Some("RBAC: role.rbac.authorization.k8s.io \"gone\" not found")
    })
    .await;

    // Validation, as upstream words it.
    let (code, body) = common::json(
        &server,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        &json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(
            "spec.user: Invalid value: \"\": at least one of user or group must be specified"
        )),
        "{body}"
    );
    let (code, body) = common::json(
        &server,
        "POST",
        "/apis/authorization.k8s.io/v1/namespaces/kube-system/localsubjectaccessreviews",
        &json!({"spec": {"user": "alice",
            "resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}}}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "spec.resourceAttributes.namespace must match namespace: kube-system"
    );
    // Create-only: nothing to list, and discovery says so.
    let (code, _) = common::json(
        &server,
        "GET",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        &json!({}),
    )
    .await;
    assert_eq!(code, 405);
    let (_, discovery) =
        common::json(&server, "GET", "/apis/authorization.k8s.io/v1", &json!({})).await;
    let verbs: Vec<&Value> = discovery["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["verbs"])
        .collect();
    assert_eq!(verbs.len(), 4);
    assert!(
        verbs.iter().all(|v| **v == json!(["create"])),
        "{discovery}"
    );
}

#[tokio::test]
async fn token_reviews_answer_for_good_and_bad_tokens() {
    let tokens = match TokenFile::parse(
        "s3cret,alice,uid-alice,\"devs,qa\"\n",
        Path::new("tokens.csv"),
    ) {
        Ok(tokens) => tokens,
        Err(error) => panic!("tokens: {error}"),
    };
    // Only bearer tokens are reviewed: the CA is never consulted.
    let ca = rustls::pki_types::CertificateDer::from(Vec::new());
    let authenticator = Authenticator::new(ca).with_token_file(tokens);
    let server = server_with(Config {
        token_authenticator: Some(Arc::new(authenticator)),
        ..Config::default()
    })
    .await;
    let url = common::listen(server).await;
    let api: Api<TokenReview> = Api::all(client(&url).await);
    let ask = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let good = match api.create(&PostParams::default(), &ask("s3cret")).await {
        Ok(review) => review.status.unwrap_or_default(),
        Err(error) => panic!("TokenReview: {error}"),
    };
    assert_eq!(good.authenticated, Some(true));
    let user = good.user.unwrap_or_default();
    assert_eq!(user.username.as_deref(), Some("alice"));
    assert_eq!(user.uid.as_deref(), Some("uid-alice"));
    assert_eq!(
        user.groups,
        Some(vec![
            "devs".to_string(),
            "qa".to_string(),
            "system:authenticated".to_string()
        ])
    );
    assert_eq!(
        good.audiences,
        Some(vec![
            "https://kubernetes.default.svc.cluster.local".to_string()
        ])
    );
    let bad = match api.create(&PostParams::default(), &ask("wrong")).await {
        Ok(review) => review.status.unwrap_or_default(),
        Err(error) => panic!("TokenReview: {error}"),
    };
    assert_eq!(bad.authenticated, Some(false));
    assert!(bad.error.is_some_and(|e| e.contains("unknown token")));
}

#[tokio::test]
async fn a_cluster_role_labelled_aggregate_to_view_joins_view_edit_and_admin() {
    let (server, _) = common::server().await;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widgets-view",
            "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]});
    let roles = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    let (code, _) = common::json(&server, "POST", roles, &role).await;
    assert_eq!(code, 201);
    let widgets = json!({"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]});
    for aggregate in ["view", "edit", "admin"] {
        let uri = format!("{roles}/{aggregate}");
        eventually(&format!("{aggregate} holds the widgets rule"), || async {
            let (_, role) = common::json(&server, "GET", &uri, &json!({})).await;
            role["rules"]
                .as_array()
                .is_some_and(|rules| rules.contains(&widgets))
        })
        .await;
    }
    // view keeps what system:aggregate-to-view gives it.
    let (_, view) = common::json(&server, "GET", &format!("{roles}/view"), &json!({})).await;
    assert!(
        view["rules"].as_array().is_some_and(|r| r.len() > 5),
        "{view}"
    );
    let (code, _) = common::json(
        &server,
        "DELETE",
        &format!("{roles}/widgets-view"),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200);
    eventually("view drops the widgets rule", || async {
        let (_, role) = common::json(&server, "GET", &format!("{roles}/view"), &json!({})).await;
        role["rules"]
            .as_array()
            .is_some_and(|rules| !rules.contains(&widgets))
    })
    .await;
}

#[tokio::test]
async fn roles_and_bindings_granting_more_than_the_author_holds_are_refused() {
    let (server, _) = common::server().await;
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default";
    let admin_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    let (code, _) = common::json(
        &server,
        "POST",
        &format!("{rbac}/rolebindings"),
        &admin_binding,
    )
    .await;
    assert_eq!(code, 201);
    let user = alice();
    let reader = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
    let server = &server;
    let user = &user;
    eventually("alice may create roles she holds", || async {
        call_as(
            server,
            user,
            "POST",
            &format!("{rbac}/roles"),
            Some(reader.clone()),
        )
        .await
        .0 == 201
    })
    .await;

    let nodes = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "delete"]}]});
    let (code, body) = call_as(
        server,
        user,
        "POST",
        &format!("{rbac}/roles"),
        Some(nodes.clone()),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(
        body["message"],
        "roles.rbac.authorization.k8s.io \"nodes\" is forbidden: user \"alice\" (groups=[\"devs\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"delete\"]}"
    );
    let to_admin = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "everything"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    let (code, body) = call_as(
        server,
        user,
        "POST",
        &format!("{rbac}/rolebindings"),
        Some(to_admin.clone()),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.starts_with(
            "rolebindings.rbac.authorization.k8s.io \"everything\" is forbidden: user \"alice\""
        )),
        "{body}"
    );
    // Updating a held role into one with more is refused too.
    let (code, mut held) =
        call_as(server, user, "GET", &format!("{rbac}/roles/reader"), None).await;
    assert_eq!(code, 200);
    held["rules"] = nodes["rules"].clone();
    let (code, _) = call_as(
        server,
        user,
        "PUT",
        &format!("{rbac}/roles/reader"),
        Some(held),
    )
    .await;
    assert_eq!(code, 403);

    // escalate and bind lift the checks.
    let lift = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "lift"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"],
            "verbs": ["escalate", "bind"]}]});
    let lift_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "alice-lift"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lift"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    let cluster = "/apis/rbac.authorization.k8s.io/v1";
    assert_eq!(
        common::json(server, "POST", &format!("{cluster}/clusterroles"), &lift)
            .await
            .0,
        201
    );
    assert_eq!(
        common::json(
            server,
            "POST",
            &format!("{cluster}/clusterrolebindings"),
            &lift_binding
        )
        .await
        .0,
        201
    );
    eventually("escalate lets alice write the role", || async {
        call_as(
            server,
            user,
            "POST",
            &format!("{rbac}/roles"),
            Some(nodes.clone()),
        )
        .await
        .0 == 201
    })
    .await;
    let (code, body) = call_as(
        server,
        user,
        "POST",
        &format!("{rbac}/rolebindings"),
        Some(to_admin),
    )
    .await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn forbidden_texts_and_authorization_modes() {
    let (server, _) = common::server().await;
    let (code, body) = call_as(
        &server,
        &alice(),
        "GET",
        "/api/v1/namespaces/default/pods",
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(body["details"]["kind"], "pods");
    let (code, body) = call_as(
        &server,
        &alice(),
        "GET",
        "/apis/apps/v1/namespaces/x/deployments/web",
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "deployments.apps \"web\" is forbidden: User \"alice\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"x\""
    );
    let (code, body) = call_as(&server, &alice(), "GET", "/metrics", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "forbidden: User \"alice\" cannot get path \"/metrics\""
    );
    // Discovery is every authenticated user's; health everyone's.
    assert_eq!(
        call_as(&server, &alice(), "GET", "/apis", None).await.0,
        200
    );
    let anonymous = RequestUser {
        name: "system:anonymous".into(),
        uid: None,
        groups: vec!["system:unauthenticated".into()],
    };
    assert_eq!(
        call_as(&server, &anonymous, "GET", "/readyz", None).await.0,
        200
    );
    assert_eq!(
        call_as(&server, &anonymous, "GET", "/apis", None).await.0,
        403
    );

    let allow = server_with(Config {
        authorization_modes: vec![Mode::AlwaysDeny, Mode::AlwaysAllow],
        ..Config::default()
    })
    .await;
    assert_eq!(
        call_as(
            &allow,
            &alice(),
            "GET",
            "/api/v1/namespaces/default/pods",
            None
        )
        .await
        .0,
        200
    );
    let deny = server_with(Config {
        authorization_modes: vec![Mode::AlwaysDeny],
        ..Config::default()
    })
    .await;
    let (code, body) = call_as(
        &deny,
        &alice(),
        "GET",
        "/api/v1/namespaces/default/pods",
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.ends_with(": Everything is forbidden.")),
        "{body}"
    );
    // system:masters passes even AlwaysDeny.
    assert_eq!(
        call_as(
            &deny,
            &RequestUser::admin(),
            "GET",
            "/api/v1/namespaces/default/pods",
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn the_bootstrap_policy_is_reconciled_at_every_start() {
    let store = Arc::new(MemoryStore::new());
    let shared: Arc<dyn Store> = store.clone();
    let start = || async {
        match ApiServer::new(Arc::clone(&shared), Config::default()).await {
            Ok(server) => server,
            Err(error) => panic!("server did not start: {error}"),
        }
    };
    let server = start().await;
    let cluster = "/apis/rbac.authorization.k8s.io/v1";
    for path in [
        "clusterroles/cluster-admin",
        "clusterroles/system:node",
        "clusterroles/system:certificates.k8s.io:kubelet-serving-approver",
        "clusterrolebindings/system:public-info-viewer",
        "namespaces/kube-system/roles/extension-apiserver-authentication-reader",
        "namespaces/kube-public/rolebindings/system:controller:bootstrap-signer",
    ] {
        let (code, object) =
            common::json(&server, "GET", &format!("{cluster}/{path}"), &json!({})).await;
        assert_eq!(code, 200, "{path}");
        assert_eq!(
            object["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        assert_eq!(
            object["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
            "true"
        );
    }
    // The scheduler reads the authentication config map in kube-system, through a RoleBinding.
    let scheduler = RequestUser {
        name: "system:kube-scheduler".into(),
        uid: None,
        groups: vec!["system:authenticated".into()],
    };
    let cm = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
    assert_eq!(call_as(&server, &scheduler, "GET", cm, None).await.0, 404);

    // A rule taken out of an autoupdated role comes back at the next start; an object its
    // owner opted out of is left alone.
    let basic = format!("{cluster}/clusterroles/system:basic-user");
    let (_, mut role) = common::json(&server, "GET", &basic, &json!({})).await;
    role["rules"] = json!([]);
    assert_eq!(common::json(&server, "PUT", &basic, &role).await.0, 200);
    let discovery = format!("{cluster}/clusterroles/system:discovery");
    let (_, mut mine) = common::json(&server, "GET", &discovery, &json!({})).await;
    mine["rules"] = json!([]);
    mine["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("false");
    assert_eq!(common::json(&server, "PUT", &discovery, &mine).await.0, 200);
    let public = format!("{cluster}/clusterrolebindings/system:public-info-viewer");
    let (_, mut binding) = common::json(&server, "GET", &public, &json!({})).await;
    binding["subjects"] = json!([]);
    assert_eq!(common::json(&server, "PUT", &public, &binding).await.0, 200);
    drop(server);

    let server = start().await;
    let (_, role) = common::json(&server, "GET", &basic, &json!({})).await;
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(2), "{role}");
    let (_, mine) = common::json(&server, "GET", &discovery, &json!({})).await;
    assert_eq!(mine["rules"], json!([]));
    let (_, binding) = common::json(&server, "GET", &public, &json!({})).await;
    assert_eq!(
        binding["subjects"].as_array().map(Vec::len),
        Some(2),
        "{binding}"
    );
    // And what that means for users: whoami works again, discovery stays taken away.
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let (code, answer) = call_as(
        &server,
        &alice(),
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(review),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        call_as(&server, &alice(), "GET", "/apis", None).await.0,
        403
    );
}

#[tokio::test]
async fn an_unreadable_stored_role_does_not_stop_the_server_nor_grant_anything() {
    let store = Arc::new(MemoryStore::new());
    let key = "/registry/clusterroles.rbac.authorization.k8s.io/system:basic-user";
    if let Err(error) = store.create(key, b"not json".to_vec()).await {
        panic!("seed: {error}");
    }
    let shared: Arc<dyn Store> = store.clone();
    let server = match ApiServer::new(shared, Config::default()).await {
        Ok(server) => server,
        Err(error) => panic!("server did not start: {error}"),
    };
    // The rest of the policy is there: discovery works; what the broken role gave does not.
    assert_eq!(
        call_as(&server, &alice(), "GET", "/apis", None).await.0,
        200
    );
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let (code, body) = call_as(
        &server,
        &alice(),
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(review),
    )
    .await;
    assert_eq!(code, 403, "{body}");
}
