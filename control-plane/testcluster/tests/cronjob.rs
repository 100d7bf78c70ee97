//! The CronJob controller with the Job controller and hollow nodes (pods bound by the
//! test-only binder in `support/binder.rs`; the scheduler is off). Schedule arithmetic,
//! concurrency policies and starting deadlines are unit-tested in capstan-controllers
//! (`cronjob::schedule`, `cronjob::plan`); here a CronJob whose last run was minutes ago runs
//! the due one at once (no waiting for a minute boundary, no test clock), and
//! `kubectl create job --from=cronjob/…` Jobs run and count towards the history limit.

#[path = "support/binder.rs"]
mod binder;

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

async fn cluster() -> (TestCluster, binder::TestBinder) {
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 2,
        scheduler: false,
        controllers: vec!["job".into(), "cronjob".into()],
        ..ClusterOptions::default()
    })
    .await;
    let binder = binder::start(cluster.client.clone());
    (cluster, binder)
}

fn cronjob(name: &str, suspend: bool, history: i32) -> CronJob {
    let value = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "* * * * *",
            "suspend": suspend,
            "successfulJobsHistoryLimit": history,
            "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"template": {
                    "metadata": {"annotations": {"hollow.capstan.dev/exit-after": "0.3"}},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "main", "image": "busybox"}]},
                }},
            },
        },
    });
    match serde_json::from_value(value) {
        Ok(cronjob) => cronjob,
        Err(error) => panic!("cronjob: {error}"),
    }
}

fn complete(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

/// A `* * * * *` CronJob last scheduled three minutes ago runs the current minute's Job right
/// away when resumed: named `<cronjob>-<minutes since the epoch>`, annotated with the schedule
/// time, owned by the CronJob, listed in status.active while it runs; once it completes,
/// active is empty and lastSuccessfulTime is set.
#[tokio::test]
async fn cronjob_runs_the_due_schedule_time() {
    let (cluster, _binder) = cluster().await;
    let cronjobs: Api<CronJob> = cluster.api("default");
    let created = match cronjobs
        .create(&PostParams::default(), &cronjob("tick", true, 3))
        .await
    {
        Ok(created) => created,
        Err(error) => panic!("create: {error}"),
    };
    let minute = jiff::Timestamp::now().as_second().div_euclid(60) * 60;
    let long_ago =
        jiff::Timestamp::from_second(minute - 180).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let status = serde_json::json!({"status": {"lastScheduleTime": long_ago.to_string()}});
    if let Err(error) = cronjobs
        .patch_status("tick", &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        panic!("status: {error}");
    }
    let resume = serde_json::json!({"spec": {"suspend": false}});
    if let Err(error) = cronjobs
        .patch("tick", &PatchParams::default(), &Patch::Merge(&resume))
        .await
    {
        panic!("resume: {error}");
    }
    let jobs: Api<Job> = cluster.api("default");
    let job = eventually(Duration::from_secs(10), "the CronJob's Job", || async {
        let list = jobs
            .list(&ListParams::default().labels("app=tick"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    let name = job.metadata.name.clone().unwrap_or_default();
    // The minute may have turned between reading the clock and the controller's sync.
    let due = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse::<i64>().ok())
        .unwrap_or(0);
    assert!(
        due == minute / 60 || due == minute / 60 + 1,
        "{name} for minute {}",
        minute / 60
    );
    let stamp = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch.kubernetes.io/cronjob-scheduled-timestamp"))
        .cloned()
        .unwrap_or_default();
    let expected = jiff::Timestamp::from_second(due * 60)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    assert_eq!(Some(stamp), expected.ok());
    let owner = job.metadata.owner_references.clone().unwrap_or_default();
    assert!(owner.iter().any(|o| o.kind == "CronJob"
        && o.uid == created.metadata.uid.clone().unwrap_or_default()
        && o.controller == Some(true)));
    eventually(
        Duration::from_secs(15),
        "tick's Job complete and seen",
        || async {
            let cj = cronjobs.get("tick").await.ok()?;
            let status = cj.status?;
            let active = status.active.unwrap_or_default();
            (active.is_empty() && status.last_successful_time.is_some()).then_some(())?;
            let last = status.last_schedule_time?.0.as_second();
            (last == due * 60).then_some(())
        },
    )
    .await;
    let out = cluster.kubectl_ok(&["get", "cronjobs"]).await;
    assert!(out.contains("tick") && out.contains("* * * * *"), "{out}");
}

/// `kubectl create job NAME --from=cronjob/nightly`, built by kubectl (`--dry-run=client`) and
/// sent with `kubectl create -f -`: kubectl's own POST of it is protobuf, which the API server
/// does not decode for pod templates with a securityContext yet.
async fn create_from_cronjob(cluster: &TestCluster, name: &str) {
    let manifest = cluster
        .kubectl_ok(&[
            "create",
            "job",
            name,
            "--from=cronjob/nightly",
            "--dry-run=client",
            "-o",
            "json",
        ])
        .await;
    assert!(
        manifest.contains("cronjob.kubernetes.io/instantiate"),
        "{manifest}"
    );
    let out = cluster
        .kubectl_with(
            capstan_testcluster::KUBECTL,
            &["create", "-f", "-"],
            Some(&manifest),
        )
        .await;
    assert!(
        out.stdout.contains(&format!("job.batch/{name} created")),
        "{out:?}"
    );
}

/// `kubectl create job --from=cronjob/…` makes a Job from the template that the Job
/// controller runs; with successfulJobsHistoryLimit 1, the older of two finished Jobs is
/// deleted.
#[tokio::test]
async fn cronjob_manual_jobs_run_and_history_is_trimmed() {
    let (cluster, _binder) = cluster().await;
    let cronjobs: Api<CronJob> = cluster.api("default");
    if let Err(error) = cronjobs
        .create(&PostParams::default(), &cronjob("nightly", true, 1))
        .await
    {
        panic!("create: {error}");
    }
    let jobs: Api<Job> = cluster.api("default");
    create_from_cronjob(&cluster, "first").await;
    eventually(Duration::from_secs(15), "first complete", || async {
        jobs.get("first").await.ok().filter(complete).map(|_| ())
    })
    .await;
    let out = cluster
        .kubectl_ok(&[
            "wait",
            "--for=condition=complete",
            "job/first",
            "--timeout=10s",
        ])
        .await;
    assert!(out.contains("condition met"), "{out}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_from_cronjob(&cluster, "second").await;
    eventually(
        Duration::from_secs(15),
        "second complete, first trimmed",
        || async {
            jobs.get("second").await.ok().filter(complete)?;
            match jobs.get_opt("first").await {
                Ok(None) => Some(()),
                Ok(Some(job)) => job.metadata.deletion_timestamp.map(|_| ()),
                Err(_) => None,
            }
        },
    )
    .await;
    let cj = match cronjobs.get("nightly").await {
        Ok(cj) => cj,
        Err(error) => panic!("get: {error}"),
    };
    let status = cj.status.unwrap_or_default();
    assert!(status.last_successful_time.is_some());
    assert!(
        status.last_schedule_time.is_none(),
        "suspended: never scheduled"
    );
}
