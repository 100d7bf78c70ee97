//! Server-side printing: `kubectl get` and `kubectl get -o wide` of every kind kubectl users
//! look at print upstream's headers (pkg/printers/internalversion) and the cells under them.

mod common;

use serde_json::{Value, json};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

async fn kubectl(binary: &str, server: &str, args: &[&str]) -> String {
    capstan_testkit::kubectl::ok(binary, server, args, None).await
}

const TEMPLATE: &str = r#"{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"nginx:1"}]}}"#;

/// (resource, collection path, body, headers, wide headers, a cell of the row).
fn cases() -> Vec<(
    &'static str,
    &'static str,
    Value,
    &'static str,
    &'static str,
    &'static str,
)> {
    let template: Value = serde_json::from_str(TEMPLATE).unwrap_or(Value::Null);
    let selector = json!({"matchLabels": {"app": "web"}});
    let mut job_template = template.clone();
    job_template["spec"]["restartPolicy"] = json!("Never");
    let request = {
        use base64::Engine;
        let pem =
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n";
        base64::engine::general_purpose::STANDARD.encode(pem)
    };
    vec![
        (
            "csr",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            json!({"metadata": {"name": "req"}, "spec": {"request": request, "signerName": "example.com/s", "usages": ["client auth"]}}),
            "NAME AGE SIGNERNAME REQUESTOR REQUESTEDDURATION CONDITION",
            "",
            "Pending",
        ),
        (
            "pods",
            "/api/v1/namespaces/default/pods",
            json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}}),
            "NAME READY STATUS RESTARTS AGE",
            "IP NODE NOMINATED NODE READINESS GATES",
            "n1",
        ),
        (
            "services",
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080}]}}),
            "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
            "SELECTOR",
            "80:30080/TCP",
        ),
        (
            "deployments",
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": selector, "template": template}}),
            "NAME READY UP-TO-DATE AVAILABLE AGE",
            "CONTAINERS IMAGES SELECTOR",
            "0/2",
        ),
        (
            "replicasets",
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"metadata": {"name": "r"}, "spec": {"replicas": 2, "selector": selector, "template": template}}),
            "NAME DESIRED CURRENT READY AGE",
            "CONTAINERS IMAGES SELECTOR",
            "app=web",
        ),
        (
            "statefulsets",
            "/apis/apps/v1/namespaces/default/statefulsets",
            json!({"metadata": {"name": "st"}, "spec": {"selector": selector, "template": template}}),
            "NAME READY AGE",
            "CONTAINERS IMAGES",
            "nginx:1",
        ),
        (
            "daemonsets",
            "/apis/apps/v1/namespaces/default/daemonsets",
            json!({"metadata": {"name": "ds"}, "spec": {"selector": selector, "template": template}}),
            "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE",
            "CONTAINERS IMAGES SELECTOR",
            "<none>",
        ),
        (
            "jobs",
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"metadata": {"name": "j"}, "spec": {"template": job_template}}),
            "NAME STATUS COMPLETIONS DURATION AGE",
            "CONTAINERS IMAGES SELECTOR",
            "0/1",
        ),
        (
            "cronjobs",
            "/apis/batch/v1/namespaces/default/cronjobs",
            json!({"metadata": {"name": "cj"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": job_template}}}}),
            "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE",
            "CONTAINERS IMAGES SELECTOR",
            "*/5 * * * *",
        ),
        (
            "nodes",
            "/api/v1/nodes",
            json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}}, "status": {"nodeInfo": {"kubeletVersion": "v1.33.0"}, "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}]}}),
            "NAME STATUS ROLES AGE VERSION",
            "INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME",
            "control-plane",
        ),
        (
            "configmaps",
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "cm"}, "data": {"a": "1"}}),
            "NAME DATA AGE",
            "",
            "cm",
        ),
        (
            "secrets",
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": "sec"}, "stringData": {"a": "1"}}),
            "NAME TYPE DATA AGE",
            "",
            "Opaque",
        ),
        (
            "serviceaccounts",
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"metadata": {"name": "sa"}}),
            "NAME SECRETS AGE",
            "",
            "sa",
        ),
        (
            "events",
            "/api/v1/namespaces/default/events",
            json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "type": "Normal", "reason": "Started", "message": "hello", "source": {"component": "kubelet"}}),
            "LAST SEEN TYPE REASON OBJECT MESSAGE",
            "=LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME",
            "pod/p",
        ),
        (
            "endpoints",
            "/api/v1/namespaces/default/endpoints",
            json!({"metadata": {"name": "ep"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
            "NAME ENDPOINTS AGE",
            "",
            "10.0.0.1:80",
        ),
        (
            "endpointslices",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            json!({"metadata": {"name": "es"}, "addressType": "IPv4", "ports": [{"port": 80}], "endpoints": [{"addresses": ["10.0.0.2"]}]}),
            "NAME ADDRESSTYPE PORTS ENDPOINTS AGE",
            "",
            "10.0.0.2",
        ),
        (
            "pv",
            "/api/v1/persistentvolumes",
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/x"}}}),
            "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE",
            "VOLUMEMODE",
            "RWO",
        ),
        (
            "pvc",
            "/api/v1/namespaces/default/persistentvolumeclaims",
            json!({"metadata": {"name": "claim"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE",
            "VOLUMEMODE",
            "claim",
        ),
        (
            "storageclasses",
            "/apis/storage.k8s.io/v1/storageclasses",
            json!({"metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "example.com/x"}),
            "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE",
            "",
            "fast (default)",
        ),
        (
            "ingresses",
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
            json!({"metadata": {"name": "ing"}, "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example.com"}]}}),
            "NAME CLASS HOSTS ADDRESS PORTS AGE",
            "",
            "a.example.com",
        ),
        (
            "leases",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}),
            "NAME HOLDER AGE",
            "",
            "me",
        ),
        (
            "priorityclasses",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"metadata": {"name": "high"}, "value": 1000}),
            "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY",
            "",
            "PreemptLowerPriority",
        ),
        (
            "poddisruptionbudgets",
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": selector}}),
            "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE",
            "",
            "N/A",
        ),
        (
            "roles",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            json!({"metadata": {"name": "reader"}, "rules": []}),
            "NAME CREATED AT",
            "",
            "reader",
        ),
        (
            "rolebindings",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"metadata": {"name": "rb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            "NAME ROLE AGE",
            "USERS GROUPS SERVICEACCOUNTS",
            "Role/reader",
        ),
    ]
}

async fn tables_with(k: &str) {
    let (server, _) = common::server().await;
    for (resource, path, body, _, _, _) in cases() {
        let (code, created) = common::json(&server, "POST", path, &body).await;
        assert!(code == 201, "{resource}: {created}");
    }
    let url = common::listen(server).await;
    // The `all` category, each kind under its own header.
    let all = kubectl(k, &url, &["get", "all"]).await;
    for name in [
        "pod/p",
        "service/s",
        "deployment.apps/d",
        "replicaset.apps/r",
        "statefulset.apps/st",
        "daemonset.apps/ds",
        "job.batch/j",
        "cronjob.batch/cj",
    ] {
        assert!(all.contains(name), "{name} not in\n{all}");
    }
    for (resource, _, body, headers, wide, cell) in cases() {
        let name = body["metadata"]["name"].as_str().unwrap_or("");
        let out = kubectl(k, &url, &["get", resource, name]).await;
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            headers.split_whitespace().collect::<Vec<_>>(),
            "{resource}:\n{out}"
        );
        let out = kubectl(k, &url, &["get", resource, name, "-o", "wide"]).await;
        assert!(out.contains(cell), "{resource}: {cell:?} not in\n{out}");
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // Events put their wide columns between the others, as upstream.
        let expected: Vec<&str> = match wide.strip_prefix('=') {
            Some(all) => all.split_whitespace().collect(),
            None => headers
                .split_whitespace()
                .chain(wide.split_whitespace())
                .collect(),
        };
        assert_eq!(header, expected, "{resource} -o wide:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_33_prints_upstream_columns() {
    tables_with(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_27_prints_upstream_columns() {
    tables_with(KUBECTL_127).await;
}

#[tokio::test]
async fn csr_and_service_cells_read_as_upstream() {
    use base64::Engine;
    let (server, _) = common::server().await;
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n";
    let csr = json!({"metadata": {"name": "c"}, "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem), "signerName": "example.com/s", "usages": ["client auth"], "expirationSeconds": 3600}});
    let (code, _) = common::json(
        &server,
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        &csr,
    )
    .await;
    assert_eq!(code, 201);
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let request = http::Request::builder()
        .uri("/apis/certificates.k8s.io/v1/certificatesigningrequests/c")
        .header("accept", table)
        .body(http_body_util::Full::new(bytes::Bytes::new()));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server
        .handle(request, &capstan_apiserver::RequestUser::admin())
        .await;
    let collected = match http_body_util::BodyExt::collect(response.into_body()).await {
        Ok(collected) => collected,
        Err(never) => match never {},
    };
    let body: Value = serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null);
    let cells = &body["rows"][0]["cells"];
    assert_eq!(cells[2], "example.com/s");
    assert_eq!(cells[3], "system:admin");
    assert_eq!(cells[4], "60m");
    assert_eq!(cells[5], "Pending");
}
