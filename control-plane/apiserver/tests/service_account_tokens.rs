//! Service-account tokens end to end against `run::run` (HTTPS, the cluster's credentials in a
//! temporary data directory): `kubectl create token` (1.33 and 1.27) issues kube-shaped JWTs
//! that authenticate as the account; a token bound to a pod dies with the pod; the limits and
//! messages of TokenRequest; `--service-account-max-token-expiration`; the OIDC discovery
//! documents, whose key verifies the tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capstan_apiserver::run::{ControlPlaneOptions, RunError, run};
use serde_json::{Value, json};
use tokio::process::Command;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn options(data_dir: &Path, max: Option<Duration>) -> ControlPlaneOptions {
    ControlPlaneOptions {
        service_account_max_token_expiration: max,
        ..ControlPlaneOptions::loopback(data_dir.to_path_buf())
    }
}

/// A control plane on a loopback port, stopped when dropped.
struct Plane {
    dir: tempfile::TempDir,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Plane {
    async fn start(max: Option<Duration>) -> Plane {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("tempdir: {e}"),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = options(&dir.path().join("cp"), max);
        tokio::spawn(async move {
            let result = run(
                options,
                move |address, _| {
                    let _ = ready_tx.send(address);
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
            if let Err(e) = result {
                eprintln!("control plane failed: {e}");
            }
        });
        let address = match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
            Ok(Ok(address)) => address,
            _ => panic!("the control plane did not become ready"),
        };
        Plane {
            dir,
            address,
            stop: Some(stop),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("cp")
    }

    async fn kubectl_with(
        &self,
        binary: &str,
        auth: &[String],
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        let mut command = Command::new(binary);
        command
            .args(auth)
            .args(args)
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", self.dir.path().join("none"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let Ok(mut child) = command.spawn() else {
            panic!("cannot run {binary}")
        };
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await;
        let Ok(Ok(output)) = output else {
            panic!("kubectl {args:?} did not finish")
        };
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn admin(&self) -> Vec<String> {
        let kubeconfig = self.data().join("admin.kubeconfig");
        vec!["--kubeconfig".into(), kubeconfig.display().to_string()]
    }

    /// Flags that authenticate with `token` alone (no client certificate).
    fn with_token(&self, token: &str) -> Vec<String> {
        vec![
            "--server".into(),
            format!("https://{}", self.address),
            "--certificate-authority".into(),
            self.data().join("pki/ca.crt").display().to_string(),
            "--token".into(),
            token.into(),
        ]
    }

    async fn admin_ok(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.kubectl_with(binary, &self.admin(), args, stdin).await;
        assert!(ok, "kubectl {args:?} failed: {out}{err}");
        out
    }

    async fn admin_fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self
            .kubectl_with(KUBECTL_133, &self.admin(), args, None)
            .await;
        assert!(!ok, "kubectl {args:?} should fail: {out}");
        err
    }

    async fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.admin_ok(KUBECTL_133, &all, None).await;
        match serde_json::from_str(&out) {
            Ok(value) => value,
            Err(e) => panic!("no JSON from {args:?} ({e}): {out}"),
        }
    }

    async fn create_token(&self, binary: &str, args: &[&str]) -> String {
        let mut all = vec!["create", "token"];
        all.extend(args);
        self.admin_ok(binary, &all, None).await.trim().to_string()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn part(token: &str, index: usize) -> Value {
    let Some(segment) = token.split('.').nth(index) else {
        panic!("not a JWT: {token}")
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(segment) else {
        panic!("not base64url: {segment}")
    };
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn claims(token: &str) -> Value {
    part(token, 1)
}

fn lifetime(claims: &Value) -> i64 {
    claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0)
}

async fn create_token_for(binary: &str) {
    let plane = Plane::start(None).await;
    let account = plane.admin_json(&["get", "sa", "default"]).await;
    let token = plane.create_token(binary, &["default"]).await;
    let c = claims(&token);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], json!([ISSUER]));
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        c["kubernetes.io"],
        json!({
            "namespace": "default",
            "serviceaccount": {"name": "default", "uid": account["metadata"]["uid"]},
        })
    );
    assert_eq!(lifetime(&c), 3600);
    assert_eq!(c["nbf"], c["iat"]);
    assert_eq!(c["jti"].as_str().map(str::len), Some(36));
    assert_eq!(part(&token, 0)["alg"], "ES256");

    // The token authenticates as the account: discovery is served, resources are refused
    // naming the account (authorization is not the subject here).
    let (ok, out, err) = plane
        .kubectl_with(
            binary,
            &plane.with_token(&token),
            &["get", "--raw", "/api"],
            None,
        )
        .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("APIVersions"), "{out}");
    let (ok, _, err) = plane
        .kubectl_with(binary, &plane.with_token(&token), &["get", "pods"], None)
        .await;
    assert!(!ok);
    assert!(
        err.contains("User \"system:serviceaccount:default:default\""),
        "{err}"
    );
    let (ok, _, err) = plane
        .kubectl_with(
            binary,
            &plane.with_token("a.b.c"),
            &["get", "--raw", "/api"],
            None,
        )
        .await;
    assert!(!ok);
    assert!(err.contains("Unauthorized"), "{err}");

    let long = plane
        .create_token(binary, &["default", "--duration=2h"])
        .await;
    assert_eq!(lifetime(&claims(&long)), 7200);
    let foreign = plane
        .create_token(binary, &["default", "--audience=vault"])
        .await;
    assert_eq!(claims(&foreign)["aud"], json!(["vault"]));
    // Not for this API server's audience: refused here.
    let (ok, _, err) = plane
        .kubectl_with(
            binary,
            &plane.with_token(&foreign),
            &["get", "--raw", "/api"],
            None,
        )
        .await;
    assert!(!ok);
    assert!(err.contains("Unauthorized"), "{err}");
}

#[tokio::test]
async fn kubectl_1_33_create_token_authenticates_as_the_service_account() {
    create_token_for(KUBECTL_133).await;
}

#[tokio::test]
async fn kubectl_1_27_create_token_authenticates_as_the_service_account() {
    create_token_for(KUBECTL_127).await;
}

#[tokio::test]
async fn token_requests_are_checked_as_kube_checks_them() {
    let plane = Plane::start(None).await;
    let err = plane
        .admin_fails(&["create", "token", "default", "--duration=1m"])
        .await;
    assert!(
        err.contains("error: failed to create token: TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = plane
        .admin_fails(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
        ])
        .await;
    assert!(
        err.contains("Error from server (MethodNotAllowed)"),
        "{err}"
    );
    let err = plane.admin_fails(&["create", "token", "nobody"]).await;
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );
    let err = plane
        .admin_fails(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=nope",
        ])
        .await;
    assert!(err.contains("pods \"nope\" not found"), "{err}");

    plane
        .admin_ok(KUBECTL_133, &["create", "sa", "other"], None)
        .await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n";
    plane
        .admin_ok(KUBECTL_133, &["create", "-f", "-"], Some(pod))
        .await;
    let err = plane
        .admin_fails(&[
            "create",
            "token",
            "other",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
        ])
        .await;
    assert!(
        err.contains("cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name."),
        "{err}"
    );
    let err = plane
        .admin_fails(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=p",
            "--bound-object-uid=00000000-0000-0000-0000-000000000000",
        ])
        .await;
    assert!(
        err.contains("the UID in the bound object reference (00000000-0000-0000-0000-000000000000) does not match the UID in record. The object might have been deleted and then recreated"),
        "{err}"
    );

    // A pod on a node: its token names the node too.
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n";
    plane
        .admin_ok(KUBECTL_133, &["create", "-f", "-"], Some(node))
        .await;
    let node_uid = plane.admin_json(&["get", "node", "n1"]).await["metadata"]["uid"].clone();
    let placed = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: placed\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox:1.36\n";
    plane
        .admin_ok(KUBECTL_133, &["create", "-f", "-"], Some(placed))
        .await;
    let token = plane
        .create_token(
            KUBECTL_133,
            &[
                "default",
                "--bound-object-kind=Pod",
                "--bound-object-name=placed",
            ],
        )
        .await;
    assert_eq!(
        claims(&token)["kubernetes.io"]["node"],
        json!({"name": "n1", "uid": node_uid})
    );

    // What the kubelet asks for a projected volume: 3607 s, bound to the pod, the API
    // server's audience; kube extends it to a year and says when to refresh.
    let pod_uid = plane.admin_json(&["get", "pod", "p"]).await["metadata"]["uid"].clone();
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3607, "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": pod_uid}},
    });
    let out = plane
        .admin_ok(
            KUBECTL_133,
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/serviceaccounts/default/token",
                "-f",
                "-",
            ],
            Some(&request.to_string()),
        )
        .await;
    let response: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    assert_eq!(response["kind"], "TokenRequest", "{out}");
    assert_eq!(response["spec"]["expirationSeconds"], 3607);
    assert_eq!(response["spec"]["audiences"], json!([ISSUER]));
    let c = claims(response["status"]["token"].as_str().unwrap_or(""));
    assert_eq!(lifetime(&c), 365 * 24 * 3600);
    assert_eq!(
        c["kubernetes.io"]["warnafter"].as_i64(),
        c["iat"].as_i64().map(|iat| iat + 3607)
    );
    assert_eq!(
        c["kubernetes.io"]["pod"],
        json!({"name": "p", "uid": pod_uid})
    );
}

#[tokio::test]
async fn a_token_bound_to_a_pod_dies_with_the_pod_and_one_of_an_account_with_the_account() {
    let plane = Plane::start(None).await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bound\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n";
    plane
        .admin_ok(KUBECTL_133, &["create", "-f", "-"], Some(pod))
        .await;
    let uid = plane.admin_json(&["get", "pod", "bound"]).await["metadata"]["uid"].clone();
    let token = plane
        .create_token(
            KUBECTL_133,
            &[
                "default",
                "--bound-object-kind=Pod",
                "--bound-object-name=bound",
            ],
        )
        .await;
    assert_eq!(
        claims(&token)["kubernetes.io"]["pod"],
        json!({"name": "bound", "uid": uid})
    );
    let raw_api = |token: String| {
        let plane = &plane;
        async move {
            plane
                .kubectl_with(
                    KUBECTL_133,
                    &plane.with_token(&token),
                    &["get", "--raw", "/api"],
                    None,
                )
                .await
        }
    };
    let (ok, out, err) = raw_api(token.clone()).await;
    assert!(ok, "{out}{err}");
    plane
        .admin_ok(
            KUBECTL_133,
            &["delete", "pod", "bound", "--wait=false"],
            None,
        )
        .await;
    let (ok, _, err) = raw_api(token.clone()).await;
    assert!(!ok, "a token of a deleted pod still works");
    assert!(
        err.contains("error: You must be logged in to the server (Unauthorized)"),
        "{err}"
    );

    plane
        .admin_ok(KUBECTL_133, &["create", "sa", "temp"], None)
        .await;
    let token = plane.create_token(KUBECTL_133, &["temp"]).await;
    assert!(raw_api(token.clone()).await.0);
    plane
        .admin_ok(KUBECTL_133, &["delete", "sa", "temp"], None)
        .await;
    assert!(
        !raw_api(token.clone()).await.0,
        "a deleted account's token works"
    );
    // Recreated under the same name, with another uid: the old token stays dead.
    plane
        .admin_ok(KUBECTL_133, &["create", "sa", "temp"], None)
        .await;
    assert!(
        !raw_api(token).await.0,
        "a recreated account revived a token"
    );

    // Secrets and nodes bind the same way.
    plane
        .admin_ok(
            KUBECTL_133,
            &["create", "secret", "generic", "s", "--from-literal=a=b"],
            None,
        )
        .await;
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n";
    plane
        .admin_ok(KUBECTL_133, &["create", "-f", "-"], Some(node))
        .await;
    for (kind, name, plural) in [("Secret", "s", "secret"), ("Node", "n1", "node")] {
        let uid = plane.admin_json(&["get", plural, name]).await["metadata"]["uid"].clone();
        let token = plane
            .create_token(
                KUBECTL_133,
                &[
                    "default",
                    &format!("--bound-object-kind={kind}"),
                    &format!("--bound-object-name={name}"),
                ],
            )
            .await;
        assert_eq!(
            claims(&token)["kubernetes.io"][plural],
            json!({"name": name, "uid": uid})
        );
        assert!(raw_api(token.clone()).await.0, "{kind}-bound token refused");
        plane
            .admin_ok(KUBECTL_133, &["delete", plural, name], None)
            .await;
        assert!(!raw_api(token).await.0, "a token of a deleted {kind} works");
    }
}

#[tokio::test]
async fn max_token_expiration_shortens_requests_and_is_bounded() {
    let plane = Plane::start(Some(Duration::from_secs(7200))).await;
    let (ok, out, err) = plane
        .kubectl_with(
            KUBECTL_133,
            &plane.admin(),
            &["create", "token", "default", "--duration=10h"],
            None,
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(lifetime(&claims(out.trim())), 7200);
    assert!(
        err.contains("Warning: requested expiration of 36000 seconds shortened to 7200 seconds"),
        "{err}"
    );
    drop(plane);

    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let result = run(
        options(&dir.path().join("cp"), Some(Duration::from_secs(60))),
        |_, _| {},
        async {},
    )
    .await;
    match result {
        Err(error @ RunError::Tokens(_)) => assert_eq!(
            error.to_string(),
            "the service-account-max-token-expiration must be between 1 hour and 2^32 seconds"
        ),
        other => panic!("a 60 s maximum was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn oidc_discovery_documents_publish_the_key_that_verifies_tokens() {
    let plane = Plane::start(None).await;
    let raw = |path: &'static str| {
        let plane = &plane;
        async move {
            let out = plane
                .admin_ok(KUBECTL_133, &["get", "--raw", path], None)
                .await;
            serde_json::from_str::<Value>(&out).unwrap_or(Value::Null)
        }
    };
    let config = raw("/.well-known/openid-configuration").await;
    assert_eq!(
        config,
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("https://{}/openid/v1/jwks", plane.address),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    );
    let jwks = raw("/openid/v1/jwks").await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        )
    );

    // A token verifies with the published key alone.
    let token = plane.create_token(KUBECTL_133, &["default"]).await;
    assert_eq!(part(&token, 0)["kid"], key["kid"]);
    let coordinate = |c: &str| {
        URL_SAFE_NO_PAD
            .decode(key[c].as_str().unwrap_or(""))
            .unwrap_or_default()
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let Some((signed, signature)) = token.rsplit_once('.') else {
        panic!("not a JWT")
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
    let verified =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(signed.as_bytes(), &signature);
    assert!(verified.is_ok(), "the JWKS key does not verify the token");

    // Service accounts may read them (kube's service-account-issuer-discovery role).
    let (ok, out, err) = plane
        .kubectl_with(
            KUBECTL_133,
            &plane.with_token(&token),
            &["get", "--raw", "/openid/v1/jwks"],
            None,
        )
        .await;
    assert!(ok, "{out}{err}");
}
