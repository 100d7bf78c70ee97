//! RBAC as kubectl users meet it, with kubectl 1.33 and 1.27 against the real HTTPS control
//! plane (in process, fresh data directory, a token file): `auth can-i` (answers and exit
//! codes, `--list`, `--as`, subresources, non-resource URLs), `auth whoami`, and roles and
//! bindings made with `kubectl create` granting a token user exactly that until deleted, with
//! escalation refused.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use capstan_apiserver::authz::Mode;
use common::plane::{Plane, stderr, stdout};

/// The plane with alice (groups devs, qa) and bob as token users, RBAC alone.
fn start_plane() -> Plane {
    Plane::start_with(
        "s3cret,alice,uid-alice,\"devs,qa\"\nb0b,bob,uid-bob\n",
        vec![Mode::Rbac],
    )
}

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// Retries `check` for up to ten seconds: RBAC follows the store through a watch.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within 10s");
}

/// `kubectl auth can-i` as alice: the answer line and the exit code.
fn can_i(plane: &Plane, kubectl: &str, args: &[&str]) -> (String, i32) {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = plane.as_token(kubectl, "s3cret", &all);
    (
        stdout(&out).trim().to_string(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn kubectl_auth_can_i_and_whoami_answer_as_rbac_decides() {
    let plane = start_plane();
    plane.admin_ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    plane.admin_ok(&[
        "create",
        "role",
        "log-reader",
        "--verb=get",
        "--resource=pods/log",
    ]);
    plane.admin_ok(&[
        "create",
        "rolebinding",
        "alice-pods",
        "--role=pod-reader",
        "--user=alice",
    ]);
    plane.admin_ok(&[
        "create",
        "rolebinding",
        "devs-logs",
        "--role=log-reader",
        "--group=devs",
    ]);
    eventually("alice may list pods", || {
        can_i(&plane, KUBECTL, &["list", "pods"]).1 == 0
    });
    for kubectl in [KUBECTL, KUBECTL_1_27] {
        assert_eq!(
            can_i(&plane, kubectl, &["list", "pods"]),
            ("yes".into(), 0),
            "{kubectl}"
        );
        assert_eq!(
            can_i(&plane, kubectl, &["delete", "pods"]),
            ("no".into(), 1),
            "{kubectl}"
        );
        assert_eq!(
            can_i(&plane, kubectl, &["list", "pods", "-n", "kube-system"]),
            ("no".into(), 1),
            "{kubectl}"
        );
        // Through the group binding, the log subresource only.
        assert_eq!(
            can_i(&plane, kubectl, &["get", "pods", "--subresource=log"]),
            ("yes".into(), 0),
            "{kubectl}"
        );
        assert_eq!(
            can_i(&plane, kubectl, &["get", "pods", "--subresource=exec"]),
            ("no".into(), 1),
            "{kubectl}"
        );
        assert_eq!(
            can_i(&plane, kubectl, &["get", "/healthz"]),
            ("yes".into(), 0)
        );
        assert_eq!(
            can_i(&plane, kubectl, &["get", "/metrics"]),
            ("no".into(), 1)
        );
        // The admin asking as alice and as bob (impersonation), and as itself.
        let as_alice = plane.admin(kubectl, &["auth", "can-i", "list", "pods", "--as=alice"]);
        assert_eq!(
            (stdout(&as_alice).trim(), as_alice.status.code()),
            ("yes", Some(0))
        );
        let as_bob = plane.admin(kubectl, &["auth", "can-i", "list", "pods", "--as=bob"]);
        assert_eq!(
            (stdout(&as_bob).trim(), as_bob.status.code()),
            ("no", Some(1))
        );
        let admin = plane.admin(kubectl, &["auth", "can-i", "*", "*"]);
        assert_eq!(
            (stdout(&admin).trim(), admin.status.code()),
            ("yes", Some(0))
        );

        let list = plane.as_token(kubectl, "s3cret", &["auth", "can-i", "--list"]);
        assert!(list.status.success(), "{}", stderr(&list));
        let table = stdout(&list);
        let row = |resource: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(resource))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        assert_eq!(
            row("pods").as_deref(),
            Some("pods [] [] [get list]"),
            "{table}"
        );
        assert_eq!(
            row("pods/log").as_deref(),
            Some("pods/log [] [] [get]"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["[/healthz]", "[]", "[get]"]),
            "{table}"
        );
        assert!(!table.contains("secrets"), "{table}");
        let bob = plane.as_token(kubectl, "b0b", &["auth", "can-i", "--list"]);
        assert!(!stdout(&bob).contains("pods"), "{}", stdout(&bob));
    }

    // whoami: kubectl 1.33 asks authentication.k8s.io/v1 (1.27 asks v1beta1, not served).
    let whoami = plane.as_token(KUBECTL, "s3cret", &["auth", "whoami", "-o", "json"]);
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let review: serde_json::Value = match serde_json::from_slice(&whoami.stdout) {
        Ok(review) => review,
        Err(error) => panic!("whoami: {error}: {}", stdout(&whoami)),
    };
    assert_eq!(review["kind"], "SelfSubjectReview");
    assert_eq!(review["status"]["userInfo"]["username"], "alice");
    assert_eq!(review["status"]["userInfo"]["uid"], "uid-alice");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!(["devs", "qa", "system:authenticated"])
    );
    let as_bob = plane.admin(
        KUBECTL,
        &["auth", "whoami", "--as=bob", "--as-group=testers"],
    );
    let text = stdout(&as_bob);
    assert!(
        text.contains("Username    bob"),
        "{text}{}",
        stderr(&as_bob)
    );
    assert!(text.contains("[testers system:authenticated]"), "{text}");
    // Impersonating needs the impersonate verb.
    let refused = plane.as_token(KUBECTL, "s3cret", &["get", "pods", "--as=bob"]);
    assert!(
        stderr(&refused).contains(
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn roles_and_bindings_made_with_kubectl_grant_exactly_that_until_deleted() {
    let plane = start_plane();
    let alice = |kubectl: &str, args: &[&str]| plane.as_token(kubectl, "s3cret", args);
    let forbidden = |out: &Output, text: &str| {
        assert!(!out.status.success());
        assert!(
            stderr(out).contains(&format!("Error from server (Forbidden): {text}")),
            "{}",
            stderr(out)
        );
    };
    forbidden(
        &alice(KUBECTL, &["get", "configmaps"]),
        "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\"",
    );
    plane.admin_ok(&[
        "create",
        "role",
        "cm-editor",
        "--verb=get,list,create",
        "--resource=configmaps",
    ]);
    plane.admin_ok(&[
        "create",
        "rolebinding",
        "alice-cm",
        "--role=cm-editor",
        "--user=alice",
    ]);
    eventually("alice may list configmaps", || {
        alice(KUBECTL_1_27, &["get", "configmaps"]).status.success()
    });
    let created = alice(
        KUBECTL_1_27,
        &["create", "configmap", "mine", "--from-literal=a=b"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    forbidden(
        &alice(KUBECTL, &["delete", "configmap", "mine"]),
        "configmaps \"mine\" is forbidden: User \"alice\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"default\"",
    );
    forbidden(
        &alice(KUBECTL, &["get", "secrets"]),
        "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"",
    );
    forbidden(
        &alice(KUBECTL, &["get", "configmaps", "-n", "kube-system"]),
        "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"kube-system\"",
    );

    // A ClusterRole and ClusterRoleBinding: cluster-scoped reads.
    forbidden(
        &alice(KUBECTL, &["get", "namespaces"]),
        "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
    );
    plane.admin_ok(&[
        "create",
        "clusterrole",
        "ns-reader",
        "--verb=get,list",
        "--resource=namespaces",
    ]);
    plane.admin_ok(&[
        "create",
        "clusterrolebinding",
        "alice-ns",
        "--clusterrole=ns-reader",
        "--user=alice",
    ]);
    eventually("alice may list namespaces", || {
        alice(KUBECTL, &["get", "namespaces"]).status.success()
    });

    // Escalation: with admin in default alice may make roles, only with what she holds.
    plane.admin_ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
    ]);
    eventually("alice may make roles", || {
        alice(
            KUBECTL,
            &["create", "role", "pods", "--verb=get", "--resource=pods"],
        )
        .status
        .success()
    });
    forbidden(
        &alice(
            KUBECTL,
            &[
                "create",
                "role",
                "nodes",
                "--verb=get,list",
                "--resource=nodes",
            ],
        ),
        "roles.rbac.authorization.k8s.io \"nodes\" is forbidden: user \"alice\" (groups=[\"devs\" \"qa\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}",
    );
    let bind = alice(
        KUBECTL_1_27,
        &[
            "create",
            "rolebinding",
            "all",
            "--clusterrole=cluster-admin",
            "--user=alice",
        ],
    );
    assert!(!bind.status.success());
    assert!(
        stderr(&bind).contains(
            "rolebindings.rbac.authorization.k8s.io \"all\" is forbidden: user \"alice\" (groups=[\"devs\" \"qa\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"
        ),
        "{}",
        stderr(&bind)
    );

    // Deleting the bindings takes the access away.
    plane.admin_ok(&["delete", "rolebinding", "alice-cm", "alice-admin"]);
    plane.admin_ok(&["delete", "clusterrolebinding", "alice-ns"]);
    eventually("alice loses configmaps", || {
        !alice(KUBECTL, &["get", "configmaps"]).status.success()
    });
    eventually("alice loses namespaces", || {
        !alice(KUBECTL, &["get", "namespaces"]).status.success()
    });
    forbidden(
        &alice(KUBECTL, &["get", "namespaces"]),
        "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
    );
}
