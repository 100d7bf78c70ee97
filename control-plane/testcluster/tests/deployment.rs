//! The deployment controller (with the replicaset controller) against the real API server,
//! kubectl and hollow nodes. The scheduler is off: `support/binder.rs`'s test binder binds the
//! pods (see there), so these pass with or without the real scheduler.

#[path = "support/binder.rs"]
mod binder;
mod workloads;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_testcluster::{TestCluster, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams};
use workloads::{active, available, cluster, label, watch_pods};

fn deployment(name: &str, replicas: i32, strategy: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  {extra}
  strategy:
    {strategy}
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
        image: busybox:1
"#
    )
}

async fn get(cluster: &TestCluster, name: &str) -> Deployment {
    let api: Api<Deployment> = cluster.api("default");
    match api.get(name).await {
        Ok(d) => d,
        Err(error) => panic!("get deployment {name}: {error}"),
    }
}

async fn replica_sets(cluster: &TestCluster, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = cluster.api("default");
    match api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
    {
        Ok(list) => list.items,
        Err(error) => panic!("list replica sets: {error}"),
    }
}

fn image(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    let c = d
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

async fn rollout_status(cluster: &TestCluster, name: &str) -> String {
    let target = format!("deployment/{name}");
    cluster
        .kubectl_ok(&["rollout", "status", &target, "--timeout=25s"])
        .await
}

/// A rolling update of 6 replicas with maxSurge 2 / maxUnavailable 1: at every pod event
/// there are at most 8 pods that are not terminating and at least 5 available; `kubectl
/// rollout status` ends successfully; the ReplicaSets are `<name>-<pod-template-hash>` with
/// revisions 1 and 2, the pods carry the hash label, and the status and conditions are upstream's.
#[tokio::test]
async fn rolling_update_stays_within_max_surge_and_max_unavailable() {
    let cluster = cluster(&["deployment", "replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let armed = Arc::new(AtomicBool::new(false));
    let (seen, arm) = (Arc::clone(&violations), Arc::clone(&armed));
    let _watch = watch_pods(cluster.client.clone(), "app=roll", move |pods| {
        let live = pods.values().filter(|p| active(p)).count();
        let up = pods.values().filter(|p| available(p)).count();
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        if live > 8 {
            seen.push(format!("{live} pods running (> replicas + maxSurge = 8)"));
        }
        if arm.load(Ordering::SeqCst) && up < 5 {
            seen.push(format!(
                "{up} pods available (< replicas - maxUnavailable = 5)"
            ));
        }
    });
    cluster
        .apply(&deployment(
            "roll",
            6,
            "type: RollingUpdate\n    rollingUpdate: {maxSurge: 2, maxUnavailable: 1}",
            "",
        ))
        .await;
    let out = rollout_status(&cluster, "roll").await;
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually(Duration::from_secs(10), "6 available", || async {
        let d = get(&cluster, "roll").await;
        (d.status?.available_replicas == Some(6)).then_some(())
    })
    .await;
    armed.store(true, Ordering::SeqCst);

    cluster
        .kubectl_ok(&["set", "image", "deployment/roll", "c=busybox:2"])
        .await;
    let out = rollout_status(&cluster, "roll").await;
    assert!(
        out.contains("deployment \"roll\" successfully rolled out"),
        "{out}"
    );
    let d = eventually(Duration::from_secs(10), "old pods gone", || async {
        let pods = workloads::pods_labelled(&cluster.api("default"), "app", "roll").await;
        let d = get(&cluster, "roll").await;
        (pods.len() == 6 && pods.iter().all(|p| image(p) == "busybox:2")).then_some(d)
    })
    .await;
    assert_eq!(
        violations.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        Vec::<String>::new()
    );

    let status = d.status.clone().unwrap_or_default();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.unavailable_replicas.unwrap_or(0),
        ),
        (Some(6), Some(6), Some(6), Some(6), 0)
    );
    assert_eq!(status.observed_generation, d.metadata.generation);
    let available_condition = condition(&d, "Available").unwrap_or_default();
    assert_eq!(
        available_condition,
        (
            "True".into(),
            "MinimumReplicasAvailable".into(),
            "Deployment has minimum availability.".into()
        )
    );
    let rss = replica_sets(&cluster, "roll").await;
    assert_eq!(rss.len(), 2);
    let newest = rss
        .iter()
        .find(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(6))
        .cloned()
        .unwrap_or_default();
    let name = newest.metadata.name.clone().unwrap_or_default();
    let progressing = condition(&d, "Progressing").unwrap_or_default();
    assert_eq!(
        progressing,
        (
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!("ReplicaSet \"{name}\" has successfully progressed.")
        )
    );
    let hash = newest
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(name, format!("roll-{hash}"));
    let annotations = newest.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        annotations
            .get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("6")
    );
    assert_eq!(
        annotations
            .get("deployment.kubernetes.io/max-replicas")
            .map(String::as_str),
        Some("8")
    );
    let pods = workloads::pods_labelled(&cluster.api("default"), "app", "roll").await;
    assert!(
        pods.iter()
            .all(|p| label(p, "pod-template-hash") == Some(hash.as_str()))
    );
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned();
    assert_eq!(revision.as_deref(), Some("2"));
    let described = cluster
        .kubectl_ok(&["describe", "deployment", "roll"])
        .await;
    assert!(described.contains("ScalingReplicaSet"), "{described}");
}

/// Recreate: no pod of the new template exists (not even Pending) while any pod of the old
/// one does (not even terminating), checked at every pod event.
#[tokio::test]
async fn recreate_never_overlaps_old_and_new_pods() {
    let cluster = cluster(&["deployment", "replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    let overlaps = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&overlaps);
    let _watch = watch_pods(cluster.client.clone(), "app=recreate", move |pods| {
        let old = pods.values().filter(|p| image(p) == "busybox:1").count();
        let new = pods.values().filter(|p| image(p) == "busybox:2").count();
        if old > 0 && new > 0 {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{old} old and {new} new pods at once"));
        }
    });
    cluster
        .apply(&deployment("recreate", 3, "type: Recreate", ""))
        .await;
    rollout_status(&cluster, "recreate").await;
    cluster
        .kubectl_ok(&["set", "image", "deployment/recreate", "c=busybox:2"])
        .await;
    let out = rollout_status(&cluster, "recreate").await;
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually(Duration::from_secs(10), "three new pods", || async {
        let pods = workloads::pods_labelled(&cluster.api("default"), "app", "recreate").await;
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "busybox:2" && available(p)))
            .then_some(())
    })
    .await;
    assert_eq!(
        overlaps.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        Vec::<String>::new()
    );
}

/// `kubectl rollout history` lists revisions with their change-cause, `undo` brings the
/// previous template back (revision 1 becomes 3), `pause` stops a rollout (no new ReplicaSet,
/// Progressing Unknown DeploymentPaused) and `resume` finishes it, `restart` rolls new pods.
#[tokio::test]
async fn rollout_history_undo_pause_resume_restart() {
    let cluster = cluster(&["deployment", "replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    cluster
        .apply(&deployment(
            "hist",
            2,
            "type: RollingUpdate",
            "revisionHistoryLimit: 10",
        ))
        .await;
    rollout_status(&cluster, "hist").await;
    cluster
        .kubectl_ok(&["set", "image", "deployment/hist", "c=busybox:2"])
        .await;
    cluster
        .kubectl_ok(&[
            "annotate",
            "deployment/hist",
            "kubernetes.io/change-cause=to busybox 2",
        ])
        .await;
    rollout_status(&cluster, "hist").await;
    let history = eventually(
        Duration::from_secs(10),
        "history with the change-cause",
        || async {
            let out = cluster
                .kubectl_ok(&["rollout", "history", "deployment/hist"])
                .await;
            out.contains("to busybox 2").then_some(out)
        },
    )
    .await;
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("1 ")),
        "{history}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("2 ") && l.contains("to busybox 2")),
        "{history}"
    );
    let out = cluster
        .kubectl_ok(&["rollout", "history", "deployment/hist", "--revision=1"])
        .await;
    assert!(out.contains("busybox:1"), "{out}");

    let out = cluster
        .kubectl_ok(&["rollout", "undo", "deployment/hist"])
        .await;
    assert!(out.contains("rolled back"), "{out}");
    rollout_status(&cluster, "hist").await;
    let d = get(&cluster, "hist").await;
    let template_image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    assert_eq!(template_image.as_deref(), Some("busybox:1"));
    let history = eventually(Duration::from_secs(10), "revisions 2 and 3", || async {
        let out = cluster
            .kubectl_ok(&["rollout", "history", "deployment/hist"])
            .await;
        let revisions: Vec<String> = out
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        (revisions == ["2", "3"]).then_some(out)
    })
    .await;
    assert!(history.contains("REVISION"), "{history}");
    assert_eq!(
        replica_sets(&cluster, "hist").await.len(),
        2,
        "undo reuses the first ReplicaSet"
    );
    eventually(
        Duration::from_secs(10),
        "pods back on busybox:1",
        || async {
            let pods = workloads::pods_labelled(&cluster.api("default"), "app", "hist").await;
            (pods.len() == 2 && pods.iter().all(|p| image(p) == "busybox:1")).then_some(())
        },
    )
    .await;

    // Paused: the template changes but nothing rolls.
    cluster
        .kubectl_ok(&["rollout", "pause", "deployment/hist"])
        .await;
    cluster
        .kubectl_ok(&["set", "image", "deployment/hist", "c=busybox:3"])
        .await;
    let d = eventually(Duration::from_secs(10), "paused condition", || async {
        let d = get(&cluster, "hist").await;
        let (status, reason, message) = condition(&d, "Progressing")?;
        (status == "Unknown" && reason == "DeploymentPaused" && message == "Deployment is paused")
            .then_some(d)
    })
    .await;
    assert_eq!(
        d.status.as_ref().and_then(|s| s.observed_generation),
        d.metadata.generation
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replica_sets(&cluster, "hist").await.len(),
        2,
        "no ReplicaSet while paused"
    );
    let pods = workloads::pods_labelled(&cluster.api("default"), "app", "hist").await;
    assert!(pods.iter().all(|p| image(p) == "busybox:1"));

    cluster
        .kubectl_ok(&["rollout", "resume", "deployment/hist"])
        .await;
    rollout_status(&cluster, "hist").await;
    eventually(Duration::from_secs(10), "pods on busybox:3", || async {
        let pods = workloads::pods_labelled(&cluster.api("default"), "app", "hist").await;
        (pods.len() == 2 && pods.iter().all(|p| image(p) == "busybox:3")).then_some(())
    })
    .await;

    let before: Vec<String> = workloads::pods_labelled(&cluster.api("default"), "app", "hist")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let out = cluster
        .kubectl_ok(&["rollout", "restart", "deployment/hist"])
        .await;
    assert!(out.contains("restarted"), "{out}");
    rollout_status(&cluster, "hist").await;
    eventually(Duration::from_secs(10), "all pods replaced", || async {
        let pods = workloads::pods_labelled(&cluster.api("default"), "app", "hist").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| !before.contains(p.metadata.name.as_ref().unwrap_or(&String::new()))))
        .then_some(())
    })
    .await;
    assert_eq!(replica_sets(&cluster, "hist").await.len(), 4);
}

/// Pods that never become ready and a 2 s progressDeadlineSeconds: Progressing turns False
/// with ProgressDeadlineExceeded, Available is False, and `kubectl rollout status` fails with
/// kubectl's message.
#[tokio::test]
async fn progress_deadline_exceeded_is_reported() {
    let cluster = cluster(&["deployment", "replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    let manifest = deployment("stuck", 2, "type: RollingUpdate", "progressDeadlineSeconds: 2")
        .replace(
            "      labels:\n        app: stuck\n",
            "      labels:\n        app: stuck\n      annotations:\n        hollow.capstan.dev/ready: \"false\"\n",
        );
    cluster.apply(&manifest).await;
    let d = eventually(
        Duration::from_secs(20),
        "ProgressDeadlineExceeded",
        || async {
            let d = get(&cluster, "stuck").await;
            let (status, reason, _) = condition(&d, "Progressing")?;
            (status == "False" && reason == "ProgressDeadlineExceeded").then_some(d)
        },
    )
    .await;
    let rs = replica_sets(&cluster, "stuck").await;
    let name = rs[0].metadata.name.clone().unwrap_or_default();
    let (_, _, message) = condition(&d, "Progressing").unwrap_or_default();
    assert_eq!(
        message,
        format!("ReplicaSet \"{name}\" has timed out progressing.")
    );
    let (status, reason, message) = condition(&d, "Available").unwrap_or_default();
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability."
        )
    );
    let out = cluster
        .kubectl(&["rollout", "status", "deployment/stuck", "--timeout=10s"])
        .await;
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr
            .contains("deployment \"stuck\" exceeded its progress deadline"),
        "{out:?}"
    );
}

/// Scaling a Deployment in the middle of a stalled rollout spreads the new replicas over the
/// old and new ReplicaSets in proportion (upstream's e2e numbers: 8 + 5 of 10, then 20 + 13
/// of 30).
#[tokio::test]
async fn scaling_mid_rollout_is_proportional() {
    let cluster = cluster(&["deployment", "replicaset"]).await;
    let _binder = binder::start(cluster.client.clone());
    cluster
        .apply(&deployment(
            "prop",
            10,
            "type: RollingUpdate\n    rollingUpdate: {maxSurge: 3, maxUnavailable: 2}",
            "",
        ))
        .await;
    rollout_status(&cluster, "prop").await;
    // The new template's pods never become ready: the rollout stalls.
    let patch = r#"{"spec":{"template":{"metadata":{"annotations":{"hollow.capstan.dev/ready":"false"}},"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}}"#;
    cluster
        .kubectl_ok(&["patch", "deployment", "prop", "-p", patch])
        .await;
    let sizes = || async {
        let mut sizes: Vec<(String, i32)> = replica_sets(&cluster, "prop")
            .await
            .into_iter()
            .map(|rs| {
                let image = rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                (image, rs.spec.and_then(|s| s.replicas).unwrap_or(0))
            })
            .collect();
        sizes.sort();
        sizes
    };
    eventually(Duration::from_secs(20), "old 8 and new 5", || async {
        let now = sizes().await;
        (now == [("busybox:1".to_string(), 8), ("busybox:2".to_string(), 5)]).then_some(())
    })
    .await;
    cluster
        .kubectl_ok(&["scale", "deployment", "prop", "--replicas=30"])
        .await;
    eventually(Duration::from_secs(20), "old 20 and new 13", || async {
        let now = sizes().await;
        (now == [("busybox:1".to_string(), 20), ("busybox:2".to_string(), 13)]).then_some(())
    })
    .await;
}
