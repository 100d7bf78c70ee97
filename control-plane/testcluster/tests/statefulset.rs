//! The StatefulSet controller against the real API server and hollow nodes. The scheduler is
//! off; `support/binder.rs`'s test binder binds the pods round-robin. Pods become Ready
//! `hollow.capstan.dev/ready-after` seconds after they start, so ordering is observable.

#[path = "support/binder.rs"]
mod binder;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

async fn cluster() -> (TestCluster, binder::TestBinder) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 2,
        scheduler: false,
        controllers: vec!["statefulset".into()],
        ..ClusterOptions::default()
    })
    .await;
    let binder = binder::start(cluster.client.clone());
    (cluster, binder)
}

fn manifest(name: &str, replicas: i32, extra_spec: &str, annotations: &str, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  serviceName: {name}
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
{extra_spec}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{annotations}}}
    spec:
      containers:
      - name: c
        image: {image}
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data, labels: {{tier: storage}}}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What the pod watch saw, in order: ("created" | "ready" | "deleting" | "gone", name).
type Log = Arc<Mutex<Vec<(String, String)>>>;

/// Records, in watch order, each pod of `app` appearing, first going Ready, starting to
/// terminate and disappearing.
fn record(pods: Api<Pod>, app: &str) -> (Log, tokio::task::JoinHandle<()>) {
    let log: Log = Arc::default();
    let writer = Arc::clone(&log);
    let config = watcher::Config::default().labels(&format!("app={app}"));
    let task = tokio::spawn(async move {
        let mut events = watcher::watcher(pods, config).boxed();
        let mut seen: std::collections::HashMap<String, (bool, bool)> = Default::default();
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            let push = |what: &str, name: &str| {
                if let Ok(mut log) = writer.lock() {
                    log.push((what.into(), name.into()));
                }
            };
            match event {
                Event::Apply(pod) | Event::InitApply(pod) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    let key = format!("{name}/{uid}");
                    let entry = seen.entry(key.clone()).or_insert_with(|| {
                        push("created", &name);
                        (false, false)
                    });
                    if !entry.0 && is_ready(&pod) {
                        entry.0 = true;
                        push("ready", &name);
                    }
                    if !entry.1 && pod.metadata.deletion_timestamp.is_some() {
                        entry.1 = true;
                        push("deleting", &name);
                    }
                }
                Event::Delete(pod) => push("gone", pod.metadata.name.as_deref().unwrap_or("")),
                _ => {}
            }
        }
    });
    (log, task)
}

/// Where `what` last happened to `name` in the log.
fn position(log: &[(String, String)], what: &str, name: &str) -> usize {
    match log.iter().rposition(|(w, n)| w == what && n == name) {
        Some(i) => i,
        None => panic!("{what} {name} not seen in {log:?}"),
    }
}

async fn wait_ready(sets: &Api<StatefulSet>, name: &str, replicas: i32) -> StatefulSet {
    eventually(Duration::from_secs(25), "StatefulSet ready", || async {
        let set = sets.get(name).await.ok()?;
        let status = set.status.clone()?;
        (status.ready_replicas == Some(replicas)
            && status.replicas == replicas
            && status.current_revision == status.update_revision)
            .then_some(set)
    })
    .await
}

#[tokio::test]
async fn statefulset_orders_pods_keeps_names_and_claims() {
    let (cluster, _binder) = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    let sets: Api<StatefulSet> = cluster.api("default");
    let (log, recorder) = record(pods.clone(), "web");
    cluster
        .apply(&manifest(
            "web",
            3,
            "",
            "hollow.capstan.dev/ready-after: \"0.5\"",
            "busybox:1",
        ))
        .await;
    wait_ready(&sets, "web", 3).await;
    let out = cluster
        .kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=20s"])
        .await;
    // The API server defaults rollingUpdate.partition to 0, so kubectl speaks of a partition.
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );

    // Strictly in order, each created only after the previous one was Ready.
    let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        position(&seen, "ready", "web-0") < position(&seen, "created", "web-1"),
        "{seen:?}"
    );
    assert!(
        position(&seen, "ready", "web-1") < position(&seen, "created", "web-2"),
        "{seen:?}"
    );

    // Stable identity and claims.
    let pod = match pods.get("web-1").await {
        Ok(pod) => pod,
        Err(error) => panic!("web-1: {error}"),
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("statefulset.kubernetes.io/pod-name")
            .map(String::as_str),
        Some("web-1")
    );
    assert_eq!(
        labels
            .get("apps.kubernetes.io/pod-index")
            .map(String::as_str),
        Some("1")
    );
    let revision = labels
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default();
    assert!(revision.starts_with("web-"), "{revision}");
    let spec = pod.spec.clone().unwrap_or_default();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let claim_name = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "data")
        .and_then(|v| v.persistent_volume_claim)
        .map(|c| c.claim_name);
    assert_eq!(claim_name.as_deref(), Some("data-web-1"));
    let claims: Api<PersistentVolumeClaim> = cluster.api("default");
    for ordinal in 0..3 {
        let claim = match claims.get(&format!("data-web-{ordinal}")).await {
            Ok(claim) => claim,
            Err(error) => panic!("data-web-{ordinal}: {error}"),
        };
        let labels = claim.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("storage"));
        // The default policy (Retain, Retain) sets no owner.
        assert!(
            claim
                .metadata
                .owner_references
                .unwrap_or_default()
                .is_empty()
        );
    }

    // A deleted pod comes back under the same name.
    let old_uid = pod.metadata.uid.clone();
    if let Err(error) = pods.delete("web-1", &DeleteParams::default()).await {
        panic!("delete web-1: {error}");
    }
    eventually(Duration::from_secs(15), "web-1 back", || async {
        let pod = pods.get_opt("web-1").await.ok()??;
        (pod.metadata.uid != old_uid && is_ready(&pod)).then_some(())
    })
    .await;

    // Scale down: the highest ordinal goes first, the next only once it is gone.
    cluster
        .kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"])
        .await;
    eventually(Duration::from_secs(20), "scaled to 1", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        (list.items.len() == 1).then_some(())
    })
    .await;
    let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        position(&seen, "gone", "web-2") < position(&seen, "deleting", "web-1"),
        "{seen:?}"
    );
    // Claims stay.
    for ordinal in 0..3 {
        assert!(matches!(
            claims.get_opt(&format!("data-web-{ordinal}")).await,
            Ok(Some(_))
        ));
    }
    recorder.abort();
}

#[tokio::test]
async fn statefulset_rolling_update_honours_the_partition() {
    let (cluster, _binder) = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    let sets: Api<StatefulSet> = cluster.api("default");
    let strategy = "  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}";
    cluster
        .apply(&manifest(
            "db",
            3,
            strategy,
            "hollow.capstan.dev/ready-after: \"0.2\"",
            "busybox:1",
        ))
        .await;
    let before = wait_ready(&sets, "db", 3).await;
    let old_revision = before
        .status
        .and_then(|s| s.current_revision)
        .unwrap_or_default();
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}});
    if let Err(error) = sets
        .patch("db", &PatchParams::default(), &Patch::Strategic(image))
        .await
    {
        panic!("patch: {error}");
    }
    let images = || async {
        let mut out = Vec::new();
        for ordinal in 0..3 {
            let pod = pods.get_opt(&format!("db-{ordinal}")).await.ok().flatten();
            let image = pod
                .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
                .and_then(|p| p.spec?.containers.first()?.image.clone())
                .unwrap_or_default();
            out.push(image);
        }
        out
    };
    eventually(Duration::from_secs(20), "db-2 updated", || async {
        (images().await == ["busybox:1", "busybox:1", "busybox:2"]).then_some(())
    })
    .await;
    let status = eventually(Duration::from_secs(10), "partitioned status", || async {
        let status = sets.get("db").await.ok()?.status?;
        (status.updated_replicas == Some(1) && status.ready_replicas == Some(3)).then_some(status)
    })
    .await;
    assert_eq!(
        status.current_revision.as_deref(),
        Some(old_revision.as_str())
    );
    assert_ne!(status.update_revision, status.current_revision);
    // Only ordinals ≥ partition move, however long we wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(images().await, ["busybox:1", "busybox:1", "busybox:2"]);
    let out = cluster
        .kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=10s"])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{out}"
    );

    // Partition 0: the rest follow, from the highest ordinal down.
    let (log, recorder) = record(pods.clone(), "db");
    let partition = json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}});
    if let Err(error) = sets
        .patch("db", &PatchParams::default(), &Patch::Merge(partition))
        .await
    {
        panic!("patch: {error}");
    }
    eventually(Duration::from_secs(20), "all updated", || async {
        (images().await == ["busybox:2", "busybox:2", "busybox:2"]).then_some(())
    })
    .await;
    let after = wait_ready(&sets, "db", 3).await;
    let status = after.status.unwrap_or_default();
    assert_eq!(status.updated_replicas, Some(3));
    assert_eq!(status.current_replicas, Some(3));
    let seen = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        position(&seen, "deleting", "db-1") < position(&seen, "deleting", "db-0"),
        "{seen:?}"
    );
    let out = cluster
        .kubectl_ok(&["rollout", "status", "statefulset/db", "--timeout=20s"])
        .await;
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    recorder.abort();
}

#[tokio::test]
async fn statefulset_parallel_with_retention_policy() {
    let (cluster, _binder) = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    let claims: Api<PersistentVolumeClaim> = cluster.api("default");
    let extra = "  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}";
    // Never Ready: OrderedReady would stop at par-0; Parallel creates all.
    cluster
        .apply(&manifest(
            "par",
            3,
            extra,
            "hollow.capstan.dev/ready: \"false\"",
            "busybox:1",
        ))
        .await;
    eventually(Duration::from_secs(15), "3 pods in parallel", || async {
        let list = pods
            .list(&ListParams::default().labels("app=par"))
            .await
            .ok()?;
        (list.items.len() == 3).then_some(())
    })
    .await;
    let sets: Api<StatefulSet> = cluster.api("default");
    let set = match sets.get("par").await {
        Ok(set) => set,
        Err(error) => panic!("par: {error}"),
    };
    let owner = |claim: &PersistentVolumeClaim| {
        claim
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.kind, r.name, r.controller))
            .collect::<Vec<_>>()
    };
    for ordinal in 0..3 {
        let claim = eventually(Duration::from_secs(10), "claim", || async {
            claims
                .get_opt(&format!("data-par-{ordinal}"))
                .await
                .ok()
                .flatten()
        })
        .await;
        assert_eq!(
            owner(&claim),
            vec![("StatefulSet".to_string(), "par".to_string(), Some(true))]
        );
        let uid = claim.metadata.owner_references.unwrap_or_default()[0]
            .uid
            .clone();
        assert_eq!(Some(uid), set.metadata.uid.clone());
    }
    // Scaled away, a claim is handed to its pod (the garbage collector deletes it with it).
    if let Err(error) = sets
        .patch(
            "par",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
    {
        panic!("scale: {error}");
    }
    let claim = eventually(
        Duration::from_secs(15),
        "data-par-2 owned by its pod",
        || async {
            let claim = claims.get_opt("data-par-2").await.ok().flatten()?;
            owner(&claim)
                .iter()
                .any(|(kind, name, _)| kind == "Pod" && name == "par-2")
                .then_some(claim)
        },
    )
    .await;
    assert_eq!(
        owner(&claim),
        vec![("Pod".to_string(), "par-2".to_string(), Some(true))]
    );
    eventually(Duration::from_secs(15), "par-2 gone", || async {
        matches!(pods.get_opt("par-2").await, Ok(None)).then_some(())
    })
    .await;
}
