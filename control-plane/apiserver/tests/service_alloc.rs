//! Services' ClusterIPs and nodePorts: allocated from the configured ranges, unique, refused
//! with upstream's messages when taken or out of range, released on delete, and kept across a
//! restart of the API server on the same store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::{ApiServer, Config};
use capstan_store::Store;
use serde_json::{Value, json};

const SERVICES: &str = "/api/v1/namespaces/default/services";

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

async fn small_range_server(store: Arc<dyn Store>) -> Arc<ApiServer> {
    let config = Config {
        bookmark_interval: Duration::from_millis(200),
        service_cluster_ip_range: "10.0.0.0/29".parse().unwrap_or_else(|_| unreachable!()),
        service_node_port_range: 30000..=30002,
        ..Config::default()
    };
    match ApiServer::new(store, config).await {
        Ok(server) => server,
        Err(error) => panic!("server did not start: {error}"),
    }
}

async fn create(server: &ApiServer, body: &Value) -> (u16, Value) {
    common::json(server, "POST", SERVICES, body).await
}

#[tokio::test]
async fn cluster_ips_are_unique_and_come_back_on_delete() {
    let store: Arc<dyn Store> = Arc::new(capstan_store::memory::MemoryStore::new());
    let server = small_range_server(store).await;
    let mut ips = Vec::new();
    for i in 0..5 {
        let (code, svc) = create(
            &server,
            &service(&format!("s{i}"), json!({"ports": [{"port": 80}]})),
        )
        .await;
        assert_eq!(code, 201, "{svc}");
        let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert!(!ips.contains(&ip), "{ip} twice");
        ips.push(ip);
    }
    ips.sort();
    assert_eq!(
        ips,
        ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    );
    let (code, full) = create(&server, &service("s5", json!({"ports": [{"port": 80}]}))).await;
    assert_eq!(code, 500, "{full}");
    assert_eq!(
        full["message"],
        "failed to allocate a serviceIP: range is full"
    );
    // The IPAddress objects that hold them are readable, as upstream's.
    let (_, held) = common::json(
        &server,
        "GET",
        "/apis/networking.k8s.io/v1/ipaddresses",
        &Value::Null,
    )
    .await;
    assert_eq!(held["items"].as_array().map(Vec::len), Some(5), "{held}");

    let (_, s0) = common::json(&server, "GET", &format!("{SERVICES}/s0"), &Value::Null).await;
    let freed = s0["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    let taken = service(
        "taken",
        json!({"clusterIP": freed, "ports": [{"port": 80}]}),
    );
    let (code, error) = create(&server, &taken).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(error["details"]["causes"][0]["field"], "spec.clusterIPs[0]");
    assert_eq!(
        error["message"],
        format!(
            "Service \"taken\" is invalid: spec.clusterIPs[0]: Invalid value: \"{freed}\": failed to allocate IP {freed}: provided IP is already allocated"
        )
    );
    let (code, _) = common::call(
        &server,
        "DELETE",
        &format!("{SERVICES}/s0"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let (code, svc) = create(&server, &taken).await;
    assert_eq!(
        (code, &svc["spec"]["clusterIP"]),
        (201, &json!(freed)),
        "{svc}"
    );

    let outside = service(
        "outside",
        json!({"clusterIP": "192.168.0.1", "ports": [{"port": 80}]}),
    );
    let (code, error) = create(&server, &outside).await;
    assert_eq!(code, 422);
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains("the provided IP (192.168.0.1) is not in the valid range. The range of valid IPs is 10.0.0.0/29")),
        "{error}"
    );
    // Headless and ExternalName services take no address.
    let (code, headless) = create(
        &server,
        &service(
            "headless",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        ),
    )
    .await;
    assert_eq!(
        (code, &headless["spec"]["clusterIP"]),
        (201, &json!("None")),
        "{headless}"
    );
    let (code, _) = create(
        &server,
        &service(
            "ext",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
    )
    .await;
    assert_eq!(code, 201);
}

#[tokio::test]
async fn node_ports_are_allocated_in_range_and_released() {
    let store: Arc<dyn Store> = Arc::new(capstan_store::memory::MemoryStore::new());
    let server = small_range_server(store).await;
    let (code, svc) = create(&server, &service("np", json!({"type": "NodePort", "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]}))).await;
    assert_eq!(code, 201, "{svc}");
    let a = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0);
    let b = svc["spec"]["ports"][1]["nodePort"].as_u64().unwrap_or(0);
    assert!(
        (30000..=30002).contains(&a) && (30000..=30002).contains(&b) && a != b,
        "{svc}"
    );
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    let (code, error) = create(
        &server,
        &service(
            "dup",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": a}]}),
        ),
    )
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        error["details"]["causes"][0]["field"],
        "spec.ports[0].nodePort"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.ends_with(&format!(
                "Invalid value: {a}: provided port is already allocated"
            ))),
        "{error}"
    );
    let (code, error) = create(
        &server,
        &service(
            "low",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
        ),
    )
    .await;
    assert_eq!(code, 422);
    assert!(error["message"].as_str().is_some_and(|m| m.ends_with("Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30002")), "{error}");
    // An update that leaves the ClusterIP and nodePorts out keeps them; changing the IP is refused.
    let mut replaced = service(
        "np",
        json!({"type": "NodePort", "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b"}]}),
    );
    replaced["metadata"]["labels"] = json!({"x": "y"});
    let (code, updated) = common::json(&server, "PUT", &format!("{SERVICES}/np"), &replaced).await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["spec"]["clusterIP"], svc["spec"]["clusterIP"]);
    assert_eq!(updated["spec"]["ports"][0]["nodePort"], json!(a));
    replaced["spec"]["clusterIP"] = json!("10.0.0.9");
    let (code, error) = common::json(&server, "PUT", &format!("{SERVICES}/np"), &replaced).await;
    assert_eq!(code, 422, "{error}");
    // Back to ClusterIP: the nodePorts are released.
    let (code, _) = common::call(
        &server,
        "PATCH",
        &format!("{SERVICES}/np"),
        "application/merge-patch+json",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    )
    .await;
    assert_eq!(code, 200);
    let (code, reused) = create(
        &server,
        &service(
            "dup",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": a}]}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{reused}");
    let (code, _) = common::call(
        &server,
        "DELETE",
        &format!("{SERVICES}/dup"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let (code, again) = create(
        &server,
        &service(
            "again",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": a}]}),
        ),
    )
    .await;
    assert_eq!(code, 201, "deleting released the nodePort: {again}");
}

#[tokio::test]
async fn allocations_survive_a_restart() {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("tempdir")
    };
    let open = || {
        let path = dir.path().to_path_buf();
        async move {
            let store = tokio::task::spawn_blocking(move || {
                capstan_store::sqlite::SqliteStore::open_in(&path)
            })
            .await;
            match store {
                Ok(Ok(store)) => Arc::new(store) as Arc<dyn Store>,
                _ => panic!("sqlite store did not open"),
            }
        }
    };
    let server = small_range_server(open().await).await;
    let (code, svc) = create(
        &server,
        &service("web", json!({"type": "NodePort", "ports": [{"port": 80}]})),
    )
    .await;
    assert_eq!(code, 201, "{svc}");
    let ip = svc["spec"]["clusterIP"].clone();
    let port = svc["spec"]["ports"][0]["nodePort"].clone();
    drop(server);

    let server = small_range_server(open().await).await;
    let (code, error) = create(
        &server,
        &service("copy", json!({"clusterIP": ip, "ports": [{"port": 80}]})),
    )
    .await;
    assert_eq!(code, 422, "the IP is still held after a restart: {error}");
    let (code, error) = create(
        &server,
        &service(
            "copy",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}),
        ),
    )
    .await;
    assert_eq!(
        code, 422,
        "the nodePort is still held after a restart: {error}"
    );
    for i in 0..4 {
        let (code, other) = create(
            &server,
            &service(&format!("o{i}"), json!({"ports": [{"port": 80}]})),
        )
        .await;
        assert_eq!(code, 201, "{other}");
        assert_ne!(
            other["spec"]["clusterIP"], ip,
            "a new service never gets a held IP"
        );
    }
}

#[tokio::test]
async fn invalid_services_name_upstream_fields() {
    let (server, _) = common::server().await;
    let (code, error) = create(
        &server,
        &service("bad", json!({"type": "Weird", "ports": [{"port": 0}]})),
    )
    .await;
    assert_eq!(code, 422, "{error}");
    let fields: Vec<&str> = error["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        [
            "spec.type",
            "spec.ports[0].port",
            "spec.ports[0].targetPort"
        ]
    );
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains(
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        )),
        "{error}"
    );
    let (code, error) = create(&server, &service("noports", json!({}))).await;
    assert_eq!(code, 422);
    assert_eq!(
        error["message"],
        "Service \"noports\" is invalid: spec.ports: Required value"
    );
    let (_, held) = common::json(
        &server,
        "GET",
        "/apis/networking.k8s.io/v1/ipaddresses",
        &Value::Null,
    )
    .await;
    assert_eq!(
        held["items"],
        json!([]),
        "refused services allocate nothing: {held}"
    );
    let (_, cidr) = common::json(
        &server,
        "GET",
        "/apis/networking.k8s.io/v1/servicecidrs/kubernetes",
        &Value::Null,
    )
    .await;
    assert_eq!(cidr["spec"]["cidrs"], json!(["10.96.0.0/12"]), "{cidr}");
}

#[tokio::test]
async fn leaked_holders_are_reclaimed_once_old_but_not_while_young() {
    let store: Arc<dyn Store> = Arc::new(capstan_store::memory::MemoryStore::new());
    let server = small_range_server(store.clone()).await;
    let holder = |at: &str| {
        json!({"metadata": {"creationTimestamp": at}, "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": "gone"}}})
            .to_string()
            .into_bytes()
    };
    let key = "/registry/capstan/servicenodeports/30001";
    if store
        .create(key, holder("2020-01-01T00:00:00Z"))
        .await
        .is_err()
    {
        panic!("seed");
    }
    let young = "/registry/capstan/servicenodeports/30002";
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    if store.create(young, holder(&now)).await.is_err() {
        panic!("seed");
    }
    let (code, svc) = create(
        &server,
        &service(
            "a",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]}),
        ),
    )
    .await;
    assert_eq!(
        code, 201,
        "an old holder whose service is gone is reclaimed: {svc}"
    );
    let (code, error) = create(
        &server,
        &service(
            "b",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30002}]}),
        ),
    )
    .await;
    assert_eq!(
        code, 422,
        "a young holder may be a write in flight: {error}"
    );
}
