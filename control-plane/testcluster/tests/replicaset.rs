//! The replicaset and replicationcontroller controllers against the real API server and hollow
//! nodes. The scheduler is off: `support/binder.rs`'s test binder binds the pods (see there).

#[path = "support/binder.rs"]
mod binder;
mod workloads;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use capstan_testcluster::eventually;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use workloads::{active, available, cluster, pods_labelled};

fn replicaset(name: &str, replicas: i32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: busybox
"#
    )
}

async fn ready_replicas(api: &Api<ReplicaSet>, name: &str, replicas: i32) -> ReplicaSet {
    eventually(
        Duration::from_secs(20),
        &format!("{name} with {replicas} available replicas"),
        || async {
            let rs = api.get(name).await.ok()?;
            let status = rs.status.clone()?;
            (status.replicas == replicas
                && status.ready_replicas == Some(replicas)
                && status.available_replicas == Some(replicas)
                && status.fully_labeled_replicas == Some(replicas)
                && status.observed_generation == rs.metadata.generation)
                .then_some(rs)
        },
    )
    .await
}

async fn active_pods(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods_labelled(api, "app", app)
        .await
        .into_iter()
        .filter(active)
        .collect()
}

/// Tracks, from a pod watch, the most pods of `app` ever active at once.
fn track_peak(
    client: kube::Client,
    app: &str,
) -> (Arc<std::sync::Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(std::sync::Mutex::new(0usize));
    let seen = Arc::clone(&peak);
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let task = tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut events = watcher::watcher(api, config).boxed();
        let mut live: HashMap<String, bool> = HashMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    live.insert(pod.metadata.name.clone().unwrap_or_default(), active(&pod));
                }
                Ok(Event::Delete(pod)) => {
                    live.remove(&pod.metadata.name.clone().unwrap_or_default());
                }
                _ => {}
            }
            let now = live.values().filter(|a| **a).count();
            let mut peak = seen.lock().unwrap_or_else(|p| p.into_inner());
            *peak = (*peak).max(now);
        }
    });
    (peak, task)
}

/// Pods get `<rs>-<5 chars>` names and a controller reference; a deleted pod is replaced;
/// scaling up and down never overshoots (every pod event is checked); an orphan matching the
/// selector is adopted (and the excess deleted); a relabelled pod is released and replaced.
#[tokio::test]
async fn replicaset_keeps_its_replicas_adopts_and_releases() {
    let cluster = cluster(&["replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    let rss: Api<ReplicaSet> = cluster.api("default");
    let pods: Api<Pod> = cluster.api("default");
    let (peak, watch) = track_peak(cluster.client.clone(), "web");
    cluster.apply(&replicaset("web", 3)).await;
    let rs = ready_replicas(&rss, "web", 3).await;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let before = active_pods(&pods, "web").await;
    assert_eq!(before.len(), 3);
    for pod in &before {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let suffix = name.strip_prefix("web-").unwrap_or_default();
        assert_eq!(suffix.len(), 5, "{name}");
        let owner = &pod.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "web", uid.as_str())
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    // A deleted pod is replaced.
    let victim = before[0].metadata.name.clone().unwrap_or_default();
    cluster
        .kubectl_ok(&["delete", "pod", &victim, "--wait=false"])
        .await;
    ready_replicas(&rss, "web", 3).await;
    let after: HashSet<String> = active_pods(&pods, "web")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(after.len(), 3);
    assert!(!after.contains(&victim));

    cluster
        .kubectl_ok(&["scale", "rs", "web", "--replicas=6"])
        .await;
    ready_replicas(&rss, "web", 6).await;
    cluster
        .kubectl_ok(&["scale", "rs", "web", "--replicas=1"])
        .await;
    ready_replicas(&rss, "web", 1).await;
    eventually(Duration::from_secs(10), "one web pod", || async {
        (active_pods(&pods, "web").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        *peak.lock().unwrap_or_else(|p| p.into_inner()),
        6,
        "never more than 6 pods"
    );
    watch.abort();

    // An orphan that matches is adopted; one pod too many is deleted.
    let orphan: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap_or_default();
    if let Err(error) = pods.create(&PostParams::default(), &orphan).await {
        panic!("create stray: {error}");
    }
    eventually(
        Duration::from_secs(10),
        "stray adopted or deleted, one pod left",
        || async {
            let left = active_pods(&pods, "web").await;
            let owned = left.iter().all(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == uid && o.controller == Some(true))
            });
            (left.len() == 1 && owned).then_some(())
        },
    )
    .await;
    let stray = pods.get_opt("stray").await.ok().flatten();
    if let Some(stray) = stray.filter(active) {
        assert!(
            stray.metadata.owner_references.is_some(),
            "stray kept but not adopted"
        );
    }

    // A pod relabelled out of the selector is released and replaced.
    let kept = active_pods(&pods, "web").await;
    let name = kept[0].metadata.name.clone().unwrap_or_default();
    cluster
        .kubectl_ok(&["label", "pod", &name, "app=elsewhere", "--overwrite"])
        .await;
    let released = eventually(
        Duration::from_secs(10),
        "relabelled pod released",
        || async {
            let pod = pods.get(&name).await.ok()?;
            let owners = pod.metadata.owner_references.clone().unwrap_or_default();
            owners.iter().all(|o| o.uid != uid).then_some(pod)
        },
    )
    .await;
    assert!(active(&released));
    ready_replicas(&rss, "web", 1).await;
    let replacement = active_pods(&pods, "web").await;
    assert_eq!(replacement.len(), 1);
    assert_ne!(replacement[0].metadata.name.as_deref(), Some(name.as_str()));
}

/// Scaling down deletes unscheduled pods before running ones (upstream's ranking).
#[tokio::test]
async fn replicaset_scales_down_unscheduled_pods_first() {
    let cluster = cluster(&["replicaset"]).await;
    let binder = binder::start(cluster.client.clone());
    let rss: Api<ReplicaSet> = cluster.api("default");
    let pods: Api<Pod> = cluster.api("default");
    cluster.apply(&replicaset("rank", 2)).await;
    ready_replicas(&rss, "rank", 2).await;
    let running: HashSet<String> = active_pods(&pods, "rank")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    binder.paused.store(true, Ordering::SeqCst);
    cluster
        .kubectl_ok(&["scale", "rs", "rank", "--replicas=4"])
        .await;
    eventually(Duration::from_secs(10), "four rank pods", || async {
        (active_pods(&pods, "rank").await.len() == 4).then_some(())
    })
    .await;
    cluster
        .kubectl_ok(&["scale", "rs", "rank", "--replicas=2"])
        .await;
    let left = eventually(Duration::from_secs(10), "two rank pods", || async {
        let left = active_pods(&pods, "rank").await;
        (left.len() == 2).then_some(left)
    })
    .await;
    let left: HashSet<String> = left.into_iter().filter_map(|p| p.metadata.name).collect();
    assert_eq!(left, running, "the unscheduled pods went first");
    assert!(
        pods_labelled(&pods, "app", "rank")
            .await
            .iter()
            .all(available)
    );
}

/// A create refused by a ResourceQuota shows as ReplicaFailure (FailedCreate, with the
/// API server's message) and clears once the quota allows the pods.
#[tokio::test]
async fn replicaset_reports_replica_failure_on_quota() {
    let cluster = cluster(&["replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    cluster
        .apply(
            "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: pods\nspec:\n  hard:\n    pods: \"2\"\n",
        )
        .await;
    let rss: Api<ReplicaSet> = cluster.api("default");
    cluster.apply(&replicaset("capped", 3)).await;
    let condition = eventually(Duration::from_secs(20), "ReplicaFailure", || async {
        let rs = rss.get("capped").await.ok()?;
        rs.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "ReplicaFailure")
    })
    .await;
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason.as_deref(), Some("FailedCreate"));
    let message = condition.message.unwrap_or_default();
    assert!(message.contains("exceeded quota"), "{message}");
    let described = cluster.kubectl_ok(&["describe", "rs", "capped"]).await;
    assert!(
        described.contains("ReplicaFailure") && described.contains("FailedCreate"),
        "{described}"
    );

    cluster
        .kubectl_ok(&[
            "patch",
            "resourcequota",
            "pods",
            "-p",
            r#"{"spec":{"hard":{"pods":"5"}}}"#,
        ])
        .await;
    let rs = ready_replicas(&rss, "capped", 3).await;
    let conditions = rs.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions.iter().all(|c| c.type_ != "ReplicaFailure"),
        "{conditions:?}"
    );
}

/// A ReplicationController runs the same logic over v1: named pods, a controller reference of
/// kind ReplicationController, a deleted pod replaced, status counted.
#[tokio::test]
async fn replicationcontroller_keeps_its_replicas() {
    let cluster = cluster(&["replicationcontroller"]).await;
    let _binder = binder::start(cluster.client.clone());
    cluster
        .apply(
            r#"
apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  selector:
    app: legacy
  template:
    metadata:
      labels:
        app: legacy
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: c
        image: busybox
"#,
        )
        .await;
    let rcs: Api<ReplicationController> = cluster.api("default");
    let pods: Api<Pod> = cluster.api("default");
    let ready = || async {
        let rc = rcs.get("legacy").await.ok()?;
        let status = rc.status?;
        (status.replicas == 2
            && status.ready_replicas == Some(2)
            && status.available_replicas == Some(2))
        .then_some(())
    };
    eventually(Duration::from_secs(20), "legacy ready", ready).await;
    let before = active_pods(&pods, "legacy").await;
    let owner = &before[0]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()[0];
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str()),
        ("v1", "ReplicationController")
    );
    let victim = before[0].metadata.name.clone().unwrap_or_default();
    assert!(victim.starts_with("legacy-"));
    cluster
        .kubectl_ok(&["delete", "pod", &victim, "--wait=false"])
        .await;
    eventually(Duration::from_secs(20), "legacy replaced", || async {
        let now = active_pods(&pods, "legacy").await;
        (now.len() == 2
            && now
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
        .then_some(())
    })
    .await;
    let out = cluster.kubectl_ok(&["get", "rc", "legacy"]).await;
    assert!(out.contains("legacy"), "{out}");
}
