//! Node IPAM: every node gets its own podCIDR from the cluster CIDR, a new node too; a used-up
//! range gives a `CIDRNotAvailable` event and the node waits until a deleted node frees one;
//! a restarted controller manager reads the ranges in use back before handing any out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use capstan_controllers::ControllerOptions;
use capstan_controllers::context::LeaderTimings;
use capstan_hollow::NodeSpec;
use capstan_testcluster::{ClusterOptions, TestCluster, controller_manager_client, eventually};
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams};

fn options() -> ControllerOptions {
    let mut options = ControllerOptions::new("test");
    options.cluster_cidr = "10.244.0.0/22".parse().ok();
    options.node_cidr_mask_size = 24;
    options
}

/// Every node's podCIDR, once `count` nodes have one.
async fn cidrs(nodes: &Api<Node>, count: usize) -> BTreeMap<String, String> {
    eventually(Duration::from_secs(10), "podCIDRs", || async {
        let list = nodes.list(&ListParams::default()).await.ok()?;
        let mut found = BTreeMap::new();
        for node in list.items {
            let spec = node.spec.unwrap_or_default();
            if let Some(cidr) = spec.pod_cidr {
                assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
                found.insert(node.metadata.name.unwrap_or_default(), cidr);
            }
        }
        (found.len() >= count).then_some(found)
    })
    .await
}

fn assert_distinct_in_range(found: &BTreeMap<String, String>) {
    let distinct: BTreeSet<_> = found.values().collect();
    assert_eq!(distinct.len(), found.len(), "{found:?}");
    // Inside 10.244.0.0/22, each a /24.
    for cidr in found.values() {
        let third = cidr
            .strip_prefix("10.244.")
            .and_then(|rest| rest.strip_suffix(".0/24"))
            .and_then(|octet| octet.parse::<u8>().ok());
        assert!(third.is_some_and(|o| o < 4), "{cidr}");
    }
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs_until_the_range_is_used_up() {
    let mut cluster = TestCluster::with(ClusterOptions {
        nodes: 3,
        scheduler: false,
        controllers: vec!["nodeipam".into()],
        controller_options: options(),
        ..ClusterOptions::default()
    })
    .await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let found = cidrs(&nodes, 3).await;
    assert_distinct_in_range(&found);

    // A new node gets the fourth and last /24.
    for name in ["node-3", "node-4"] {
        let spec = NodeSpec {
            name: name.into(),
            ..NodeSpec::default()
        };
        if let Err(error) = cluster.nodes.add(spec).await {
            panic!("{name}: {error}");
        }
    }
    let found = cidrs(&nodes, 4).await;
    assert_distinct_in_range(&found);
    assert_eq!(found.len(), 4, "{found:?}");
    let missing = if found.contains_key("node-3") {
        "node-4"
    } else {
        "node-3"
    };
    let events: Api<Event> = cluster.api("default");
    let message = format!("Node {missing} status is now: CIDRNotAvailable");
    eventually(
        Duration::from_secs(10),
        "CIDRNotAvailable event",
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("CIDRNotAvailable")
                        && e.message.as_deref() == Some(message.as_str())
                        && e.involved_object.name.as_deref() == Some(missing)
                })
                .then_some(())
        },
    )
    .await;
    let out = cluster
        .kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=CIDRNotAvailable",
        ])
        .await;
    assert!(out.contains(missing), "{out}");

    // Deleting a node frees its range for the one waiting.
    let freed = found.get("node-1").cloned().unwrap_or_default();
    if let Err(error) = nodes.delete("node-1", &DeleteParams::default()).await {
        panic!("delete node-1: {error}");
    }
    let cidr = eventually(
        Duration::from_secs(10),
        "the freed range reused",
        || async {
            let node = nodes.get(missing).await.ok()?;
            node.spec?.pod_cidr
        },
    )
    .await;
    assert_eq!(cidr, freed);
    let found = cidrs(&nodes, 4).await;
    assert_distinct_in_range(&found);
}

#[tokio::test]
async fn a_restarted_allocator_keeps_the_ranges_in_use() {
    let mut cluster = TestCluster::with(ClusterOptions {
        nodes: 3,
        scheduler: false,
        controllers: vec![],
        ..ClusterOptions::default()
    })
    .await;
    let start = |identity: &str| {
        let mut options = options();
        options.identity = identity.into();
        options.controllers = vec!["nodeipam".into()];
        options.leader_election = Some(LeaderTimings {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(300),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = controller_manager_client(&cluster.server);
        let task = tokio::spawn(capstan_controllers::run(client, options, async {
            let _ = stopped.await;
        }));
        (stop, task)
    };
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let (stop, task) = start("first");
    let before = cidrs(&nodes, 3).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;

    let spec = NodeSpec {
        name: "late".into(),
        ..NodeSpec::default()
    };
    if let Err(error) = cluster.nodes.add(spec).await {
        panic!("late: {error}");
    }
    let (_stop, _task) = start("second");
    let after = cidrs(&nodes, 4).await;
    assert_distinct_in_range(&after);
    for (name, cidr) in &before {
        assert_eq!(after.get(name), Some(cidr), "{name} kept its range");
    }
}
