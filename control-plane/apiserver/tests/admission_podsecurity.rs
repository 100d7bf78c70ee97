//! PodSecurity through kubectl 1.33 and 1.27: a restricted namespace refuses a privileged pod
//! with upstream's message, warn mode lets it in with a warning kubectl prints, pod
//! controllers get warnings, a stricter enforce label warns about existing pods, and invalid
//! labels are refused.

mod admission_support;
mod common;

use admission_support::{KUBECTL_127, KUBECTL_133, fails, ok};

fn privileged_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext:\n      privileged: true\n"
    )
}

const RESTRICTED_VIOLATIONS: &str = "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";

const HARDENED: &str = "apiVersion: v1
kind: Pod
metadata:
  name: hardened
spec:
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: c
    image: busybox
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx
";

async fn session(k: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    let create = ["-n", "strict", "create", "-f", "-"];

    ok(k, s, &["create", "namespace", "strict"], None).await;
    ok(k, s, &create, Some(&privileged_pod("old"))).await;
    let labelled = ok(
        k,
        s,
        &[
            "label",
            "namespace",
            "strict",
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    )
    .await;
    assert!(
        labelled.stderr.contains("Warning: existing pods in namespace \"strict\" violate the new PodSecurity enforce level \"restricted:latest\"")
            && labelled.stderr.contains("Warning: old: privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"),
        "{}",
        labelled.stderr
    );

    let err = fails(k, s, &create, Some(&privileged_pod("x"))).await;
    let expected = format!(
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), {RESTRICTED_VIOLATIONS}"
    );
    assert!(err.contains(&expected), "{err}");
    let made = ok(k, s, &create, Some(HARDENED)).await;
    assert!(!made.stderr.contains("Warning"), "{}", made.stderr);

    // Templates are warned about (enforce implies warn), not refused.
    let deployed = ok(k, s, &create, Some(DEPLOYMENT)).await;
    assert!(
        deployed.stderr.contains(&format!(
            "Warning: would violate PodSecurity \"restricted:latest\": {RESTRICTED_VIOLATIONS}"
        )),
        "{}",
        deployed.stderr
    );

    ok(k, s, &["create", "namespace", "soft"], None).await;
    ok(
        k,
        s,
        &[
            "label",
            "namespace",
            "soft",
            "pod-security.kubernetes.io/warn=baseline",
            "pod-security.kubernetes.io/warn-version=v1.33",
        ],
        None,
    )
    .await;
    let warned = ok(
        k,
        s,
        &["-n", "soft", "create", "-f", "-"],
        Some(&privileged_pod("p")),
    )
    .await;
    assert!(
        warned.stderr.contains("Warning: would violate PodSecurity \"baseline:v1.33\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{}",
        warned.stderr
    );
    assert!(warned.stdout.contains("pod/p created"), "{}", warned.stdout);

    let err = fails(
        k,
        s,
        &[
            "label",
            "namespace",
            "soft",
            "pod-security.kubernetes.io/enforce=bogus",
        ],
        None,
    )
    .await;
    assert!(
        err.contains("The Namespace \"soft\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"bogus\": must be one of privileged, baseline, restricted"),
        "{err}"
    );
}

#[tokio::test]
async fn pod_security_with_kubectl_1_33() {
    session(KUBECTL_133).await;
}

#[tokio::test]
async fn pod_security_with_kubectl_1_27() {
    session(KUBECTL_127).await;
}
