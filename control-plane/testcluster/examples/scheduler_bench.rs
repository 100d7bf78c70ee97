//! Scheduler throughput: 100 hollow nodes, 3000 bare pods created with the scheduler off,
//! then the scheduler started; prints how long until every pod is bound and the pods bound
//! per second (the API server's create rate is printed apart, so that it does not cap the
//! figure).
//!
//! `cargo run --release -p capstan-testcluster --example scheduler_bench`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use capstan_hollow::NodeSpec;
use capstan_scheduler::SchedulerOptions;
use capstan_testcluster::{ClusterOptions, TestCluster, scheduler_client};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};

const NODES: usize = 100;
const PODS: usize = 3000;
const CREATORS: usize = 32;

fn bare_pod(i: usize) -> Pod {
    let value = serde_json::json!({
        "metadata": {"name": format!("bench-{i}")},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    });
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("pod: {error}"),
    }
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let cluster = TestCluster::with(ClusterOptions {
        nodes: NODES,
        node: NodeSpec {
            cpu: "32".into(),
            memory: "128Gi".into(),
            pods: 110,
            ..NodeSpec::default()
        },
        controllers: vec![],
        scheduler: false,
        ..ClusterOptions::default()
    })
    .await;
    println!("{NODES} hollow nodes up in {:.2?}", started.elapsed());
    let pods: Api<Pod> = cluster.api("default");

    let watch_pods = pods.clone();
    let watch = tokio::spawn(async move {
        let mut bound: HashSet<String> = HashSet::new();
        let mut events = watcher::watcher(watch_pods, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event
                && pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                && let Some(name) = pod.metadata.name
            {
                bound.insert(name);
                if bound.len() == PODS {
                    return Instant::now();
                }
            }
        }
        Instant::now()
    });

    let create_start = Instant::now();
    let mut creators = Vec::new();
    for c in 0..CREATORS {
        let pods = pods.clone();
        creators.push(tokio::spawn(async move {
            for i in (c..PODS).step_by(CREATORS) {
                if let Err(error) = pods.create(&PostParams::default(), &bare_pod(i)).await {
                    eprintln!("create bench-{i}: {error}");
                }
            }
        }));
    }
    for creator in creators {
        let _ = creator.await;
    }
    let created = create_start.elapsed();
    println!(
        "{PODS} pods created in {created:.2?} ({:.0} pods/s), scheduler off",
        PODS as f64 / created.as_secs_f64()
    );
    let start = Instant::now();
    let scheduler = tokio::spawn(capstan_scheduler::run(
        scheduler_client(&cluster.server),
        SchedulerOptions::new("bench-scheduler"),
        futures::future::pending(),
    ));
    let done = match tokio::time::timeout(Duration::from_secs(300), watch).await {
        Ok(Ok(done)) => done,
        _ => panic!("not every pod was bound within 300 s"),
    };
    let wall = done.duration_since(start);
    scheduler.abort();
    println!(
        "all {PODS} bound {wall:.2?} after the scheduler started (Lease, initial list included)"
    );
    println!(
        "throughput: {:.0} pods/s bound",
        PODS as f64 / wall.as_secs_f64()
    );
}
