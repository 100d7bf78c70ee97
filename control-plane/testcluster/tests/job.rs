//! The Job controller against the real API server, with hollow nodes running the pods (their
//! exit steered by the template's `hollow.capstan.dev/exit-after` / `exit-code`). The scheduler
//! is off: a test-only binder (`support/binder.rs`) binds pods round-robin through
//! pods/binding, so these tests do not depend on the scheduler.

#[path = "support/binder.rs"]
mod binder;

use std::time::Duration;

use capstan_controllers::ControllerOptions;
use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

async fn cluster() -> (TestCluster, binder::TestBinder) {
    let mut controller_options = ControllerOptions::new("test-controller-manager");
    // Replacements of failed pods wait 10 s, 20 s, ... upstream; 100 ms keeps tests short.
    controller_options.job_pod_failure_backoff = Duration::from_millis(100);
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 2,
        scheduler: false,
        controllers: vec![
            "job".into(),
            "ttl-after-finished".into(),
            "garbagecollector".into(),
        ],
        controller_options,
        ..ClusterOptions::default()
    })
    .await;
    let binder = binder::start(cluster.client.clone());
    (cluster, binder)
}

fn job(value: serde_json::Value) -> Job {
    match serde_json::from_value(value) {
        Ok(job) => job,
        Err(error) => panic!("job: {error}"),
    }
}

/// A Job whose pods exit after `after` seconds with `code`.
fn exiting_job(name: &str, after: &str, code: &str, spec: serde_json::Value) -> Job {
    let mut value = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": {
                    "hollow.capstan.dev/exit-after": after,
                    "hollow.capstan.dev/exit-code": code,
                }},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    });
    if let (Some(target), Some(extra)) = (value["spec"].as_object_mut(), spec.as_object()) {
        for (key, field) in extra {
            target.insert(key.clone(), field.clone());
        }
    }
    job(value)
}

async fn create(cluster: &TestCluster, job: &Job) -> Api<Job> {
    let jobs: Api<Job> = cluster.api("default");
    if let Err(error) = jobs.create(&PostParams::default(), job).await {
        panic!("create job: {error}");
    }
    jobs
}

async fn job_pods(cluster: &TestCluster, name: &str) -> Vec<Pod> {
    let pods: Api<Pod> = cluster.api("default");
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"));
    match pods.list(&params).await {
        Ok(list) => list.items,
        Err(error) => panic!("list pods: {error}"),
    }
}

fn condition(job: &Job, kind: &str) -> Option<(String, String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn finished(jobs: &Api<Job>, name: &str, kind: &str, timeout: u64) -> Job {
    eventually(
        Duration::from_secs(timeout),
        &format!("job {name} {kind}"),
        || async {
            let job = jobs.get(name).await.ok()?;
            (condition(&job, kind)?.0 == "True").then_some(job)
        },
    )
    .await
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// completions 5, parallelism 2: never more than two pods running (observed every 100 ms, in
/// the pods and in status.active), five succeeded pods, SuccessCriteriaMet then Complete with
/// upstream's reason and message, finalizers gone, `kubectl get jobs` shows 5/5 and
/// `kubectl wait --for=condition=complete` returns.
#[tokio::test]
async fn job_runs_completions_with_parallelism_respected() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({"completions": 5, "parallelism": 2});
    let jobs = create(&cluster, &exiting_job("five", "0.5", "0", spec)).await;
    let max_running = std::sync::atomic::AtomicUsize::new(0);
    let done = eventually(Duration::from_secs(25), "job five Complete", || async {
        let pods = job_pods(&cluster, "five").await;
        let running = pods
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .count();
        max_running.fetch_max(running, std::sync::atomic::Ordering::Relaxed);
        assert!(running <= 2, "{running} pods running at once");
        let job = jobs.get("five").await.ok()?;
        let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
        assert!(active <= 2, "status.active {active}");
        (condition(&job, "Complete")?.0 == "True").then_some(job)
    })
    .await;
    assert_eq!(max_running.into_inner(), 2, "parallelism used");
    let status = done.status.clone().unwrap_or_default();
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.failed.unwrap_or(0), 0);
    assert_eq!(status.active.unwrap_or(0), 0);
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    let reached = Some((
        "True".to_string(),
        "CompletionsReached".to_string(),
        "Reached expected number of succeeded pods".to_string(),
    ));
    assert_eq!(condition(&done, "SuccessCriteriaMet"), reached);
    assert_eq!(condition(&done, "Complete"), reached);
    let pods = job_pods(&cluster, "five").await;
    assert_eq!(pods.iter().filter(|p| phase(p) == "Succeeded").count(), 5);
    for pod in &pods {
        let finalizers = pod.metadata.finalizers.clone().unwrap_or_default();
        assert!(finalizers.is_empty(), "{finalizers:?}");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str),
            Some("five")
        );
        assert_eq!(labels.get("job-name").map(String::as_str), Some("five"));
        assert_eq!(
            labels.get("batch.kubernetes.io/controller-uid"),
            done.metadata.uid.as_ref()
        );
    }
    let out = cluster.kubectl_ok(&["get", "jobs"]).await;
    assert!(out.contains("five") && out.contains("5/5"), "{out}");
    let out = cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=complete",
            "job/five",
            "--timeout=10s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
}

/// backoffLimit 2 with pods that exit 1: three failures, then FailureTarget and Failed with
/// upstream's BackoffLimitExceeded reason and message; no pod is left running.
#[tokio::test]
async fn job_fails_at_backoff_limit() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({"backoffLimit": 2});
    let jobs = create(&cluster, &exiting_job("failing", "0.2", "1", spec)).await;
    let failed = finished(&jobs, "failing", "Failed", 25).await;
    let expected = Some((
        "True".to_string(),
        "BackoffLimitExceeded".to_string(),
        "Job has reached the specified backoff limit".to_string(),
    ));
    assert_eq!(condition(&failed, "FailureTarget"), expected);
    assert_eq!(condition(&failed, "Failed"), expected);
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(status.failed, Some(3));
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    assert!(condition(&failed, "Complete").is_none());
    let pods = job_pods(&cluster, "failing").await;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| phase(p) == "Failed"));
    let out = cluster.kubectl_ok(&["get", "jobs"]).await;
    assert!(out.contains("failing") && out.contains("0/1"), "{out}");
}

/// podFailurePolicy FailJob on exit code 42 ends the Job on its first failure, although
/// backoffLimit would allow six; the message names the container, pod and rule.
#[tokio::test]
async fn job_pod_failure_policy_fail_job_ends_at_once() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({
        "backoffLimit": 6,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        ]},
    });
    let jobs = create(&cluster, &exiting_job("fatal", "0.2", "42", spec)).await;
    let failed = finished(&jobs, "fatal", "Failed", 20).await;
    let pods = job_pods(&cluster, "fatal").await;
    assert_eq!(pods.len(), 1);
    let pod = pods[0].metadata.name.clone().unwrap_or_default();
    let (status, reason, message) = condition(&failed, "Failed").unwrap_or_default();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "PodFailurePolicy")
    );
    assert_eq!(
        message,
        format!(
            "Container main for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    assert_eq!(failed.status.and_then(|s| s.failed), Some(1));
}

/// An Ignore rule: failures with exit code 3 are not counted, so a backoffLimit of 0 is never
/// reached while pods keep failing and being replaced.
#[tokio::test]
async fn job_pod_failure_policy_ignore_does_not_count() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({
        "backoffLimit": 0,
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
        ]},
    });
    let jobs = create(&cluster, &exiting_job("ignored", "0.2", "3", spec)).await;
    eventually(
        Duration::from_secs(20),
        "three ignored failures",
        || async {
            let pods = job_pods(&cluster, "ignored").await;
            (pods.iter().filter(|p| phase(p) == "Failed").count() >= 3).then_some(())
        },
    )
    .await;
    let job = match jobs.get("ignored").await {
        Ok(job) => job,
        Err(error) => panic!("get: {error}"),
    };
    assert_eq!(job.status.as_ref().and_then(|s| s.failed).unwrap_or(0), 0);
    assert!(condition(&job, "Failed").is_none());
    assert!(condition(&job, "FailureTarget").is_none());
}

/// Indexed, completions 3: one pod per index 0..2 (annotation, label, hostname), then
/// completedIndexes "0-2" and Complete.
#[tokio::test]
async fn job_indexed_runs_each_index_once() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"});
    let jobs = create(&cluster, &exiting_job("indexed", "0.5", "0", spec)).await;
    let done = finished(&jobs, "indexed", "Complete", 20).await;
    let status = done.status.clone().unwrap_or_default();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    let pods = job_pods(&cluster, "indexed").await;
    let mut seen: Vec<String> = pods
        .iter()
        .map(|p| {
            let index = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
                .cloned()
                .unwrap_or_default();
            let label = p
                .metadata
                .labels
                .as_ref()
                .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
                .cloned()
                .unwrap_or_default();
            assert_eq!(index, label);
            let hostname = p.spec.as_ref().and_then(|s| s.hostname.clone());
            assert_eq!(hostname, Some(format!("indexed-{index}")));
            index
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);
}

/// activeDeadlineSeconds 2 with pods that never exit: the pods are deleted and the Job fails
/// with DeadlineExceeded and upstream's message.
#[tokio::test]
async fn job_active_deadline_fails_the_job() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 2});
    let mut job = exiting_job("slow", "1000", "0", spec);
    if let Some(template) = job.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        template.annotations = None;
    }
    let jobs = create(&cluster, &job).await;
    let failed = finished(&jobs, "slow", "Failed", 20).await;
    let (_, reason, message) = condition(&failed, "Failed").unwrap_or_default();
    assert_eq!(reason, "DeadlineExceeded");
    assert_eq!(message, "Job was active longer than specified deadline");
    let status = failed.status.unwrap_or_default();
    assert_eq!(status.active.unwrap_or(0), 0);
    eventually(Duration::from_secs(10), "slow's pods gone", || async {
        job_pods(&cluster, "slow").await.is_empty().then_some(())
    })
    .await;
}

/// A suspended Job runs no pod and says Suspended; resumed, it runs and completes, and the
/// condition turns False with JobResumed.
#[tokio::test]
async fn job_suspend_and_resume() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({"suspend": true});
    let jobs = create(&cluster, &exiting_job("later", "0.3", "0", spec)).await;
    let suspended = finished(&jobs, "later", "Suspended", 10).await;
    let (_, reason, message) = condition(&suspended, "Suspended").unwrap_or_default();
    assert_eq!(
        (reason.as_str(), message.as_str()),
        ("JobSuspended", "Job suspended")
    );
    assert!(
        suspended
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(job_pods(&cluster, "later").await.is_empty());
    let patch = serde_json::json!({"spec": {"suspend": false}});
    if let Err(error) = jobs
        .patch("later", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        panic!("resume: {error}");
    }
    let done = finished(&jobs, "later", "Complete", 15).await;
    let (status, reason, message) = condition(&done, "Suspended").unwrap_or_default();
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        ("False", "JobResumed", "Job resumed")
    );
}

/// ttlSecondsAfterFinished 1: a second after it finished, the Job is deleted in the
/// Foreground (upstream's propagation). The garbage collector, not started here, would then
/// remove its pods and the Job: the test sees the Job being deleted, with the
/// foregroundDeletion finalizer, or gone. A Job without a TTL is left alone.
#[tokio::test]
async fn ttl_after_finished_deletes_the_job() {
    let (cluster, _binder) = cluster().await;
    let spec = serde_json::json!({"ttlSecondsAfterFinished": 1});
    let jobs = create(&cluster, &exiting_job("brief", "0.2", "0", spec)).await;
    let kept = create(
        &cluster,
        &exiting_job("kept", "0.2", "0", serde_json::json!({})),
    )
    .await;
    let done = finished(&jobs, "brief", "Complete", 15).await;
    let finished_at = done
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Complete"))
        .and_then(|c| c.last_transition_time.clone())
        .map(|t| t.0);
    let deleting = eventually(Duration::from_secs(10), "job brief deleted", || async {
        match jobs.get_opt("brief").await {
            Ok(None) => Some(None),
            Ok(Some(job)) => job.metadata.deletion_timestamp.clone().map(|_| Some(job)),
            Err(_) => None,
        }
    })
    .await;
    let now = jiff::Timestamp::now();
    if let Some(finished_at) = finished_at {
        assert!(now.duration_since(finished_at) >= jiff::SignedDuration::from_millis(900));
    }
    if let Some(job) = deleting {
        let finalizers = job.metadata.finalizers.unwrap_or_default();
        assert!(
            finalizers.iter().any(|f| f == "foregroundDeletion"),
            "{finalizers:?}"
        );
    }
    finished(&kept, "kept", "Complete", 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept = kept.get("kept").await.ok();
    assert!(kept.is_some_and(|j| j.metadata.deletion_timestamp.is_none()));
}

/// A Job deleted with its pods left behind (`--cascade=orphan` here; Background deletion
/// leaves them for the garbage collector the same way): the pods lose the tracking
/// finalizer, so deleting one really removes it.
#[tokio::test]
async fn job_orphaned_pods_lose_the_tracking_finalizer() {
    let (cluster, _binder) = cluster().await;
    let mut job = exiting_job("gone", "1000", "0", serde_json::json!({}));
    if let Some(template) = job.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        template.annotations = None;
    }
    create(&cluster, &job).await;
    let pod = eventually(Duration::from_secs(10), "gone's pod running", || async {
        let pods = job_pods(&cluster, "gone").await;
        pods.into_iter().find(|p| phase(p) == "Running")
    })
    .await;
    let name = pod.metadata.name.clone().unwrap_or_default();
    cluster
        .kubectl_ok(&["delete", "job", "gone", "--cascade=orphan"])
        .await;
    let pods: Api<Pod> = cluster.api("default");
    eventually(Duration::from_secs(10), "finalizer released", || async {
        let pod = pods.get(&name).await.ok()?;
        pod.metadata
            .finalizers
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
    let out = cluster
        .kubectl_ok(&["delete", "pod", &name, "--wait=true", "--timeout=10s"])
        .await;
    assert!(out.contains("deleted"), "{out}");
    assert!(matches!(pods.get_opt(&name).await, Ok(None)));
}
