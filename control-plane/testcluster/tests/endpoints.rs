//! The endpointslice and endpoints controllers against the real API server, with hollow nodes
//! and pods bound directly with `spec.nodeName` (no scheduler).

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn cluster_options(max_per_slice: usize) -> ClusterOptions {
    let mut options = ClusterOptions {
        nodes: 2,
        scheduler: false,
        controllers: vec!["endpointslice".into(), "endpoints".into()],
        ..ClusterOptions::default()
    };
    options.controller_options.max_endpoints_per_slice = max_per_slice;
    options
}

fn decode(value: Value) -> Pod {
    match serde_json::from_value(value) {
        Ok(object) => object,
        Err(error) => panic!("decode: {error}"),
    }
}

/// A pod of app `web` on `node` with container port `http` = `port`.
fn web_pod(name: &str, node: &str, port: i32, ready: bool, extra: Value) -> Pod {
    let mut value = json!({
        "metadata": {"name": name, "labels": {"app": "web"},
                     "annotations": {"hollow.capstan.dev/ready": if ready { "true" } else { "false" }}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx",
                 "ports": [{"name": "http", "containerPort": port}]}]},
    });
    if let (Some(spec), Some(more)) = (value["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            spec.insert(k.clone(), v.clone());
        }
    }
    decode(value)
}

async fn create_pod(pods: &Api<Pod>, pod: &Pod) {
    if let Err(error) = pods.create(&PostParams::default(), pod).await {
        panic!("create pod: {error}");
    }
}

async fn slices_of(cluster: &TestCluster, service: &str) -> Vec<EndpointSlice> {
    let slices: Api<EndpointSlice> = cluster.api("default");
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    match slices.list(&params).await {
        Ok(list) => list.items,
        Err(error) => panic!("list slices: {error}"),
    }
}

/// Endpoint conditions by pod name: (ready, serving, terminating), with the slice's port.
fn endpoints_by_pod(slices: &[EndpointSlice]) -> BTreeMap<String, (bool, bool, bool, i32, Value)> {
    let mut found = BTreeMap::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .next()
            .and_then(|p| p.port)
            .unwrap_or(0);
        for endpoint in &slice.endpoints {
            let name = endpoint
                .target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .unwrap_or_default();
            let c = endpoint.conditions.clone().unwrap_or_default();
            let whole = serde_json::to_value(endpoint).unwrap_or_default();
            found.insert(
                name,
                (
                    c.ready.unwrap_or(false),
                    c.serving.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                    port,
                    whole,
                ),
            );
        }
    }
    found
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

async fn running_ip(pods: &Api<Pod>, name: &str) -> String {
    eventually(WAIT, &format!("{name} has an IP"), || async {
        let pod = pods.get(name).await.ok()?;
        let ip = pod_ip(&pod);
        (!ip.is_empty()).then_some(ip)
    })
    .await
}

/// Slices and Endpoints follow readiness, resolve named ports per pod, carry node, zone and
/// hostname, show a terminating pod as terminating (serving as its readiness, not ready),
/// and go with their Service.
#[tokio::test]
async fn endpointslices_and_endpoints_follow_pods() {
    let cluster = TestCluster::with(cluster_options(100)).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let zone = json!({"metadata": {"labels": {"topology.kubernetes.io/zone": "zone-a"}}});
    if let Err(error) = nodes
        .patch("node-0", &PatchParams::default(), &Patch::Merge(&zone))
        .await
    {
        panic!("label node-0: {error}");
    }
    cluster
        .apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {tier: front}}\n\
             spec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n",
        )
        .await;
    let pods: Api<Pod> = cluster.api("default");
    create_pod(&pods, &web_pod("web-a", "node-0", 8080, true, json!({}))).await;
    create_pod(&pods, &web_pod("web-b", "node-1", 8080, false, json!({}))).await;
    create_pod(
        &pods,
        &web_pod(
            "web-c",
            "node-1",
            9090,
            true,
            json!({"hostname": "c", "subdomain": "web"}),
        ),
    )
    .await;
    let ip_a = running_ip(&pods, "web-a").await;
    let ip_b = running_ip(&pods, "web-b").await;
    let ip_c = running_ip(&pods, "web-c").await;

    let slices = eventually(WAIT, "three endpoints in web's slices", || async {
        let slices = slices_of(&cluster, "web").await;
        let found = endpoints_by_pod(&slices);
        let ready_c = found.get("web-c").is_some_and(|e| e.0);
        let ready_a = found.get("web-a").is_some_and(|e| e.0);
        (found.len() == 3 && ready_a && ready_c).then_some(slices)
    })
    .await;
    // Pods whose `http` differs are in different slices.
    assert_eq!(slices.len(), 2, "{slices:#?}");
    let found = endpoints_by_pod(&slices);
    assert_eq!(
        (
            found["web-a"].0,
            found["web-a"].1,
            found["web-a"].2,
            found["web-a"].3
        ),
        (true, true, false, 8080)
    );
    assert_eq!(
        (
            found["web-b"].0,
            found["web-b"].1,
            found["web-b"].2,
            found["web-b"].3
        ),
        (false, false, false, 8080)
    );
    assert_eq!((found["web-c"].0, found["web-c"].3), (true, 9090));
    let a = &found["web-a"].4;
    assert_eq!(a["addresses"], json!([ip_a]));
    assert_eq!(a["nodeName"], "node-0");
    assert_eq!(a["zone"], "zone-a");
    assert!(a.get("hostname").is_none(), "{a}");
    assert_eq!(found["web-c"].4["hostname"], "c");
    assert_eq!(found["web-c"].4["nodeName"], "node-1");
    assert!(found["web-c"].4.get("zone").is_none());
    for slice in &slices {
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(slice.address_type, "IPv4");
        assert!(
            slice
                .metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-"))
        );
        let owner = slice.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owner
                .iter()
                .any(|o| o.kind == "Service" && o.name == "web" && o.controller == Some(true))
        );
        assert_eq!(
            slice.ports.as_ref().map(|p| p[0].name.clone()),
            Some(Some("http".into()))
        );
    }
    let out = cluster
        .kubectl_ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ])
        .await;
    assert!(
        out.contains(&ip_a) && out.contains(&ip_c) && out.contains("IPv4"),
        "{out}"
    );

    // The legacy Endpoints: ready pods in addresses, the unready one in notReadyAddresses.
    let endpoints: Api<Endpoints> = cluster.api("default");
    let legacy = eventually(WAIT, "web's Endpoints", || async {
        let e = endpoints.get_opt("web").await.ok().flatten()?;
        let text = serde_json::to_string(&e.subsets).ok()?;
        (text.contains(&ip_a) && text.contains(&ip_b) && text.contains(&ip_c)).then_some(e)
    })
    .await;
    let subsets = serde_json::to_value(&legacy.subsets).unwrap_or_default();
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in subsets.as_array().into_iter().flatten() {
        let port = subset["ports"][0]["port"].as_i64().unwrap_or(0);
        for a in subset["addresses"].as_array().into_iter().flatten() {
            ready.push((
                a["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                port,
            ));
        }
        for a in subset["notReadyAddresses"].as_array().into_iter().flatten() {
            not_ready.push((
                a["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                port,
            ));
        }
    }
    ready.sort();
    assert_eq!(
        ready,
        vec![("web-a".to_string(), 8080), ("web-c".to_string(), 9090)]
    );
    assert_eq!(not_ready, vec![("web-b".to_string(), 8080)]);
    let annotations = legacy.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("endpoints.kubernetes.io/last-change-trigger-time"));
    assert_eq!(
        legacy
            .metadata
            .labels
            .unwrap_or_default()
            .get("tier")
            .map(String::as_str),
        Some("front")
    );
    let out = cluster.kubectl_ok(&["get", "endpoints", "web"]).await;
    assert!(
        out.contains(&format!("{ip_a}:8080")) && out.contains(&format!("{ip_c}:9090")),
        "{out}"
    );
    assert!(!out.contains(&ip_b), "an unready pod is not listed: {out}");

    // A terminating pod (held by a finalizer) stays in the slice as terminating.
    let hold = json!({"metadata": {"finalizers": ["test.capstan.dev/hold"]}});
    if let Err(error) = pods
        .patch("web-a", &PatchParams::default(), &Patch::Merge(&hold))
        .await
    {
        panic!("finalizer: {error}");
    }
    if let Err(error) = pods.delete("web-a", &DeleteParams::default()).await {
        panic!("delete web-a: {error}");
    }
    eventually(WAIT, "web-a terminating in the slice", || async {
        let found = endpoints_by_pod(&slices_of(&cluster, "web").await);
        let a = found.get("web-a")?;
        (!a.0 && a.1 && a.2).then_some(())
    })
    .await;
    eventually(WAIT, "web-a out of the Endpoints", || async {
        let e = endpoints.get("web").await.ok()?;
        let text = serde_json::to_string(&e.subsets).ok()?;
        (!text.contains(&ip_a)).then_some(())
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    if let Err(error) = pods
        .patch("web-a", &PatchParams::default(), &Patch::Merge(&release))
        .await
    {
        panic!("release: {error}");
    }
    eventually(WAIT, "web-a gone from the slices", || async {
        let found = endpoints_by_pod(&slices_of(&cluster, "web").await);
        (!found.contains_key("web-a") && found.len() == 2).then_some(())
    })
    .await;

    // The Service goes: its slices and Endpoints go.
    cluster.kubectl_ok(&["delete", "service", "web"]).await;
    eventually(WAIT, "web's slices and Endpoints gone", || async {
        let gone = slices_of(&cluster, "web").await.is_empty()
            && matches!(endpoints.get_opt("web").await, Ok(None));
        gone.then_some(())
    })
    .await;
}

/// publishNotReadyAddresses makes unready pods ready endpoints; slices hold at most
/// `--max-endpoints-per-slice`; a pod relabelled out of the selector leaves, and only the
/// slice that held it is written; a Service without pods gets one empty placeholder slice.
#[tokio::test]
async fn publish_not_ready_slice_size_and_minimal_updates() {
    let cluster = TestCluster::with(cluster_options(2)).await;
    cluster
        .apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
             spec:\n  selector: {app: web}\n  publishNotReadyAddresses: true\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        )
        .await;
    let placeholder = eventually(WAIT, "a placeholder slice", || async {
        let slices = slices_of(&cluster, "web").await;
        (slices.len() == 1).then_some(slices)
    })
    .await;
    assert!(placeholder[0].endpoints.is_empty());
    let pods: Api<Pod> = cluster.api("default");
    for (name, ready) in [("p1", true), ("p2", false), ("p3", true)] {
        create_pod(&pods, &web_pod(name, "node-0", 8080, ready, json!({}))).await;
    }
    for name in ["p1", "p2", "p3"] {
        running_ip(&pods, name).await;
    }
    let slices = eventually(WAIT, "three ready endpoints in two slices", || async {
        let slices = slices_of(&cluster, "web").await;
        let found = endpoints_by_pod(&slices);
        (found.len() == 3 && found.values().all(|e| e.0)).then_some(slices)
    })
    .await;
    assert_eq!(slices.len(), 2, "{slices:#?}");
    assert!(slices.iter().all(|s| s.endpoints.len() <= 2));
    let found = endpoints_by_pod(&slices);
    assert_eq!(
        (found["p2"].0, found["p2"].1),
        (true, false),
        "published, not serving"
    );
    let endpoints: Api<Endpoints> = cluster.api("default");
    eventually(WAIT, "all three in addresses", || async {
        let e = endpoints.get_opt("web").await.ok().flatten()?;
        let subsets = e.subsets?;
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        (ready == 3 && not_ready == 0).then_some(())
    })
    .await;

    // Settle, then move the pod of the single-endpoint slice out: the full slice is untouched.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: BTreeMap<String, (String, Vec<String>)> = slices_of(&cluster, "web")
        .await
        .into_iter()
        .map(|s| {
            let pods = s
                .endpoints
                .iter()
                .filter_map(|e| e.target_ref.as_ref()?.name.clone())
                .collect();
            (
                s.metadata.name.clone().unwrap_or_default(),
                (
                    s.metadata.resource_version.clone().unwrap_or_default(),
                    pods,
                ),
            )
        })
        .collect();
    let Some(leaving) = before
        .values()
        .find(|(_, pods)| pods.len() == 1)
        .map(|(_, p)| p[0].clone())
    else {
        panic!("no slice with one endpoint: {before:?}");
    };
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    if let Err(error) = pods
        .patch(&leaving, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
    {
        panic!("relabel: {error}");
    }
    let after = eventually(WAIT, "the relabelled pod gone", || async {
        let slices = slices_of(&cluster, "web").await;
        let found = endpoints_by_pod(&slices);
        (found.len() == 2 && !found.contains_key(&leaving)).then_some(slices)
    })
    .await;
    let full = before
        .iter()
        .find(|(_, (_, pods))| pods.len() == 2)
        .map(|(name, (rv, _))| (name.clone(), rv.clone()));
    let Some((full_name, full_rv)) = full else {
        panic!("no full slice: {before:?}");
    };
    let still = after
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(full_name.as_str()));
    assert_eq!(
        still.and_then(|s| s.metadata.resource_version.clone()),
        Some(full_rv),
        "the untouched slice was not rewritten: {after:#?}"
    );
    assert_eq!(after.len(), 1, "the emptied slice is deleted: {after:#?}");
}

/// `(address, ready)` of every endpoint of the mirrored slices of `service`, sorted.
async fn mirrored(cluster: &TestCluster, service: &str) -> Vec<(String, bool)> {
    let mut found: Vec<(String, bool)> = slices_of(cluster, service)
        .await
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"))
                .is_some_and(|m| m == "endpointslicemirroring-controller.k8s.io")
        })
        .flat_map(|s| s.endpoints.clone())
        .map(|e| {
            let ready = e.conditions.and_then(|c| c.ready).unwrap_or(false);
            (e.addresses.join(","), ready)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn endpoints_of_a_selectorless_service_are_mirrored_into_slices() {
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec![
            "endpointslice".into(),
            "endpoints".into(),
            "endpointslice-mirroring-controller".into(),
        ],
        ..ClusterOptions::default()
    })
    .await;
    cluster
        .apply(
            r#"
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext, labels: {team: a}}
subsets:
- addresses: [{ip: 10.1.0.1}]
  notReadyAddresses: [{ip: 10.1.0.2}]
  ports: [{name: http, port: 8080, protocol: TCP}]
"#,
        )
        .await;
    let want = vec![
        ("10.1.0.1".to_string(), true),
        ("10.1.0.2".to_string(), false),
    ];
    eventually(WAIT, "the mirrored slice", || async {
        (mirrored(&cluster, "ext").await == want).then_some(())
    })
    .await;
    let slices = slices_of(&cluster, "ext").await;
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    let name = slice.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("ext-"), "generated name: {name}");
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(slice.address_type, "IPv4");
    let owner = slice.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].name.as_str()),
        ("Endpoints", "ext")
    );
    assert_eq!(owner[0].controller, Some(true));
    let port = slice.ports.clone().unwrap_or_default();
    assert_eq!(port.first().and_then(|p| p.port), Some(8080));

    // An update is followed, in the same slice.
    cluster
        .kubectl_ok(&[
            "patch",
            "endpoints",
            "ext",
            "--type=merge",
            "-p",
            r#"{"subsets":[{"addresses":[{"ip":"10.1.0.1"},{"ip":"10.1.0.3"}],"ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]}"#,
        ])
        .await;
    let want = vec![
        ("10.1.0.1".to_string(), true),
        ("10.1.0.3".to_string(), true),
    ];
    eventually(WAIT, "the mirrored slice to follow the update", || async {
        (mirrored(&cluster, "ext").await == want).then_some(())
    })
    .await;
    let after = slices_of(&cluster, "ext").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].metadata.name.as_deref(), Some(name.as_str()));

    // Gone with the Endpoints.
    cluster.kubectl_ok(&["delete", "endpoints", "ext"]).await;
    eventually(WAIT, "the mirrored slice to go", || async {
        slices_of(&cluster, "ext").await.is_empty().then_some(())
    })
    .await;
}
