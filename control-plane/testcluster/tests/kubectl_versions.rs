//! What users do with the controllers, run with kubectl 1.27 and 1.33 (the other tests use
//! 1.32): rollouts of a Deployment, scale, `get pods -o wide`, `describe` of an unschedulable
//! pod, `create job --from=cronjob/…` (protobuf bodies with a whole pod template, all three
//! versions) and `drain` of a node a PodDisruptionBudget guards.

use std::time::Duration;

use capstan_testcluster::{
    ClusterOptions, KUBECTL, KUBECTL_127, KUBECTL_133, TestCluster, eventually,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(20);
const VERSIONS: [(&str, &str); 2] = [("127", KUBECTL_127), ("133", KUBECTL_133)];

async fn cluster(nodes: usize, scheduler: bool, controllers: &[&str]) -> TestCluster {
    TestCluster::with(ClusterOptions {
        nodes,
        scheduler,
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        ..ClusterOptions::default()
    })
    .await
}

/// Runs `binary` and asserts success; stdout and stderr together.
async fn run_ok(cluster: &TestCluster, binary: &str, args: &[&str]) -> String {
    let out = cluster.kubectl_with(binary, args, None).await;
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(out.success, "{binary} {args:?}: {text}");
    text
}

fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n\
         spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  \
         template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: c, image: {image}}}]}}\n"
    )
}

async fn ready_replicas(cluster: &TestCluster, name: &str, wanted: i32) {
    let deployments: Api<Deployment> = cluster.api("default");
    eventually(WAIT, &format!("{name} with {wanted} ready"), || async {
        let d = deployments.get(name).await.ok()?;
        let status = d.status?;
        (status.ready_replicas == Some(wanted)
            && status.updated_replicas == Some(wanted)
            && status.replicas == Some(wanted))
        .then_some(())
    })
    .await;
}

/// `rollout status / history / undo / restart`, `scale` and `get pods -o wide` give the texts
/// users read, with each kubectl version.
#[tokio::test]
async fn deployment_rollouts_scale_and_wide_pods() {
    let cluster = cluster(2, true, &["deployment", "replicaset"]).await;
    for (version, kubectl) in VERSIONS {
        let name = format!("web{version}");
        let deploy = format!("deployment/{name}");
        cluster.apply(&deployment(&name, "nginx:1")).await;
        let status = run_ok(
            &cluster,
            kubectl,
            &["rollout", "status", &deploy, "--timeout=20s"],
        )
        .await;
        assert!(
            status.contains(&format!("deployment \"{name}\" successfully rolled out")),
            "{version}: {status}"
        );
        run_ok(&cluster, kubectl, &["set", "image", &deploy, "c=nginx:2"]).await;
        run_ok(
            &cluster,
            kubectl,
            &["rollout", "status", &deploy, "--timeout=20s"],
        )
        .await;
        let history = run_ok(&cluster, kubectl, &["rollout", "history", &deploy]).await;
        let revisions: Vec<&str> = history
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert!(history.contains("REVISION"), "{version}: {history}");
        assert_eq!(revisions, ["1", "2"], "{version}: {history}");

        let undo = run_ok(&cluster, kubectl, &["rollout", "undo", &deploy]).await;
        assert!(
            undo.contains(&format!("deployment.apps/{name} rolled back")),
            "{version}: {undo}"
        );
        let deployments: Api<Deployment> = cluster.api("default");
        eventually(WAIT, "the undo back to nginx:1", || async {
            let d = deployments.get(&name).await.ok()?;
            let image = d.spec?.template.spec?.containers.first()?.image.clone()?;
            (image == "nginx:1").then_some(())
        })
        .await;
        run_ok(
            &cluster,
            kubectl,
            &["rollout", "status", &deploy, "--timeout=20s"],
        )
        .await;

        let restart = run_ok(&cluster, kubectl, &["rollout", "restart", &deploy]).await;
        assert!(
            restart.contains(&format!("deployment.apps/{name} restarted")),
            "{version}: {restart}"
        );
        let restarted = deployments.get(&name).await.ok();
        let annotated = restarted
            .and_then(|d| d.spec?.template.metadata?.annotations)
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt"));
        assert!(annotated, "{version}: no restartedAt annotation");
        run_ok(
            &cluster,
            kubectl,
            &["rollout", "status", &deploy, "--timeout=20s"],
        )
        .await;

        let scaled = run_ok(&cluster, kubectl, &["scale", &deploy, "--replicas=3"]).await;
        assert!(
            scaled.contains(&format!("deployment.apps/{name} scaled")),
            "{version}: {scaled}"
        );
        ready_replicas(&cluster, &name, 3).await;

        let wide = run_ok(
            &cluster,
            kubectl,
            &["get", "pods", "-o", "wide", "-l", &format!("app={name}")],
        )
        .await;
        let mut lines = wide.lines();
        let header = lines.next().unwrap_or_default();
        assert!(
            header.contains("NODE") && header.contains("IP"),
            "{version}: {wide}"
        );
        let running: Vec<&str> = lines
            .filter(|l| !l.contains("Terminating"))
            .filter(|l| l.contains("Running"))
            .collect();
        assert_eq!(running.len(), 3, "{version}: {wide}");
        assert!(
            running
                .iter()
                .all(|l| l.contains("node-0") || l.contains("node-1")),
            "{version}: {wide}"
        );
    }
}

/// `describe pod` of a pod no node fits shows the scheduler's FailedScheduling event text.
#[tokio::test]
async fn describe_unschedulable_pod_shows_failed_scheduling() {
    let cluster = cluster(2, true, &[]).await;
    cluster
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: picky}\n\
             spec: {nodeSelector: {disk: ssd}, containers: [{name: c, image: nginx}]}\n",
        )
        .await;
    let expected = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. \
                    preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";
    for (version, kubectl) in VERSIONS {
        let described = eventually(WAIT, "the FailedScheduling event", || async {
            let text = run_ok(&cluster, kubectl, &["describe", "pod", "picky"]).await;
            text.contains("FailedScheduling").then_some(text)
        })
        .await;
        assert!(described.contains(expected), "{version}: {described}");
        assert!(described.contains("Warning"), "{version}: {described}");
    }
}

/// `create job --from=cronjob/…` sends the stored (defaulted) pod template as protobuf; every
/// version's Job is created with the template's security contexts, probe, volume and affinity.
#[tokio::test]
async fn create_job_from_cronjob_with_every_version() {
    let cluster = cluster(1, false, &[]).await;
    cluster
        .apply(
            r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          securityContext: {runAsUser: 1000, fsGroup: 2000}
          affinity:
            nodeAffinity:
              requiredDuringSchedulingIgnoredDuringExecution:
                nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/os, operator: In, values: [linux]}]}]
          volumes: [{name: scratch, emptyDir: {}}]
          containers:
          - name: c
            image: busybox
            command: [sh, -c, "echo hi"]
            securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
            readinessProbe: {exec: {command: ["true"]}, periodSeconds: 5}
            volumeMounts: [{name: scratch, mountPath: /scratch}]
"#,
        )
        .await;
    let jobs: Api<Job> = cluster.api("default");
    for (version, kubectl) in [("132", KUBECTL), VERSIONS[0], VERSIONS[1]] {
        let name = format!("manual{version}");
        let out = run_ok(
            &cluster,
            kubectl,
            &["create", "job", &name, "--from=cronjob/nightly"],
        )
        .await;
        assert!(
            out.contains(&format!("job.batch/{name} created")),
            "{version}: {out}"
        );
        let job = match jobs.get(&name).await {
            Ok(job) => job,
            Err(error) => panic!("{version}: get {name}: {error}"),
        };
        let Some(pod) = job.spec.and_then(|s| s.template.spec) else {
            panic!("{version}: no pod spec");
        };
        let security = pod.security_context.unwrap_or_default();
        assert_eq!(
            (security.run_as_user, security.fs_group),
            (Some(1000), Some(2000)),
            "{version}"
        );
        let container = &pod.containers[0];
        let container_security = container.security_context.clone().unwrap_or_default();
        assert_eq!(
            container_security.allow_privilege_escalation,
            Some(false),
            "{version}"
        );
        assert_eq!(
            container_security.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()]),
            "{version}"
        );
        let probe = container.readiness_probe.clone().unwrap_or_default();
        assert_eq!(probe.period_seconds, Some(5), "{version}");
        assert_eq!(
            probe.exec.and_then(|e| e.command),
            Some(vec!["true".to_string()]),
            "{version}"
        );
        let volumes = pod.volumes.unwrap_or_default();
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "scratch" && v.empty_dir.is_some()),
            "{version}: {volumes:?}"
        );
        let terms = pod
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .map(|s| s.node_selector_terms)
            .unwrap_or_default();
        assert_eq!(terms.len(), 1, "{version}");
        let owner = job
            .metadata
            .annotations
            .unwrap_or_default()
            .get("cronjob.kubernetes.io/instantiate")
            .cloned();
        assert_eq!(owner.as_deref(), Some("manual"), "{version}");
    }
}

/// `drain` of a node whose two pods a budget (minAvailable 1) guards evicts one and is
/// refused the other with upstream's message, with each kubectl version.
#[tokio::test]
async fn drain_respects_a_disruption_budget() {
    let cluster = cluster(2, false, &["disruption"]).await;
    let pods: Api<Pod> = cluster.api("default");
    for (index, (version, kubectl)) in VERSIONS.into_iter().enumerate() {
        let node = format!("node-{index}");
        let app = format!("db{version}");
        for n in 0..2 {
            cluster
                .apply(&format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-{n}, labels: {{app: {app}}}}}\n\
                     spec: {{nodeName: {node}, containers: [{{name: c, image: postgres}}]}}\n"
                ))
                .await;
        }
        cluster
            .apply(&format!(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: {app}}}\n\
                 spec: {{minAvailable: 1, selector: {{matchLabels: {{app: {app}}}}}}}\n"
            ))
            .await;
        let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            cluster.api("default");
        eventually(WAIT, "one disruption allowed", || async {
            let pdb = budgets.get(&app).await.ok()?;
            (pdb.status?.disruptions_allowed == 1).then_some(())
        })
        .await;
        let out = cluster
            .kubectl_with(
                kubectl,
                &[
                    "drain",
                    &node,
                    "--ignore-daemonsets",
                    "--force",
                    "--timeout=8s",
                ],
                None,
            )
            .await;
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(!out.success, "{version}: {text}");
        assert!(
            text.contains(&format!("node/{node} cordoned")),
            "{version}: {text}"
        );
        assert!(
            text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
            "{version}: {text}"
        );
        assert_eq!(text.matches(" evicted").count(), 1, "{version}: {text}");
        let left = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        assert_eq!(left, 1, "{version}: {text}");
    }
}
