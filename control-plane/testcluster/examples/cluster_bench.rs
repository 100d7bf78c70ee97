//! Benchmark of the scheduler and controllers (not a test): a real `capstan control-plane`
//! process, 100 hollow nodes in this process, a Deployment of 3 000 replicas. Prints the time
//! until every replica is Running, the scheduling throughput (pods bound per second between
//! the first and the last binding), the control plane's RSS (idle, peak) and CPU time, and the
//! ReplicaSet controller's reaction latency (a pod deleted → its replacement created) p50/p99.
//!
//! `hack/bench-cluster [--nodes 100] [--replicas 3000] [--deletions 50]`

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_hollow::{HollowCluster, HollowOptions, NodeSpec};
use capstan_testkit::process::{free_port, rss_mib};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    capstan: PathBuf,
    nodes: usize,
    replicas: usize,
    deletions: usize,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        capstan: PathBuf::from("target/release/capstan"),
        nodes: 100,
        replicas: 3000,
        deletions: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--capstan" => options.capstan = value.into(),
            "--nodes" => options.nodes = value.parse()?,
            "--replicas" => options.replicas = value.parse()?,
            "--deletions" => options.deletions = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(options)
}

/// The control plane process, killed when dropped.
struct Plane(Child);

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field's start.
    (ticks(11) + ticks(12)) / 100.0
}

fn start_plane(capstan: &Path, data_dir: &Path) -> Result<(Plane, u16), Error> {
    let port = free_port()?;
    let child = Command::new(capstan)
        .args([
            "--log-level",
            "warn",
            "control-plane",
            "--bind-address",
            "127.0.0.1",
        ])
        .arg("--secure-port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok((Plane(child), port))
}

async fn client(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if kubeconfig.exists() {
            let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
            let client = kube::Client::try_from(config)?;
            if client.apiserver_version().await.is_ok() {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            return Err("the control plane did not get ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deployment(replicas: usize) -> Result<Deployment, Error> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            },
        },
    }))?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What the pod watch saw: when each pod was bound and when it ran.
#[derive(Default)]
struct Seen {
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
    added: Vec<(String, Instant)>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = options()?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let (plane, _port) = start_plane(&options.capstan, &data_dir)?;
    let pid = plane.0.id();
    let client = client(&data_dir.join("admin.kubeconfig")).await?;

    let mut nodes = HollowCluster::new(client.clone(), HollowOptions::default());
    let template = NodeSpec {
        cpu: "32".into(),
        memory: "256Gi".into(),
        pods: 110,
        ..NodeSpec::default()
    };
    nodes.add_many("hollow", options.nodes, &template).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_mib(pid);
    let cpu_before = cpu_seconds(pid);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let watch = {
        let (pods, seen) = (pods.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut events = watcher::watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event else {
                    continue;
                };
                let now = Instant::now();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let Ok(mut seen) = seen.lock() else { return };
                if !seen.bound.contains_key(&name) && !seen.running.contains_key(&name) {
                    seen.added.push((name.clone(), now));
                }
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                {
                    seen.bound.entry(name.clone()).or_insert(now);
                }
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    seen.running.entry(name).or_insert(now);
                }
            }
        })
    };
    let peak = Arc::new(Mutex::new(0.0f64));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                let rss = rss_mib(pid);
                if let Ok(mut peak) = peak.lock() {
                    *peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment(options.replicas)?)
        .await?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let running = seen.lock().map(|s| s.running.len()).unwrap_or(0);
        if running >= options.replicas {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {running} of {} pods Running after 10 min",
                options.replicas
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_running = started.elapsed();
    let cpu_rollout = cpu_seconds(pid) - cpu_before;
    let (first_bind, last_bind, bound) = {
        let seen = seen.lock().map_err(|_| "lock")?;
        let first = seen.bound.values().min().copied().unwrap_or(started);
        let last = seen.bound.values().max().copied().unwrap_or(started);
        (first, last, seen.bound.len())
    };
    let bind_window = last_bind.duration_since(first_bind).as_secs_f64().max(1e-3);
    let rss_full = rss_mib(pid);

    // Reaction latency: delete one pod at a time, wait for the replacement's creation.
    let mut reactions = Vec::new();
    for _ in 0..options.deletions {
        let victim = pods
            .list(&ListParams::default().labels("app=bench").limit(1))
            .await?
            .items
            .into_iter()
            .next()
            .and_then(|p| p.metadata.name)
            .ok_or("no pod to delete")?;
        let before = seen.lock().map(|s| s.added.len()).unwrap_or(0);
        let deleted = Instant::now();
        pods.delete(&victim, &DeleteParams::default().grace_period(0))
            .await?;
        let replaced = loop {
            let found = seen
                .lock()
                .ok()
                .and_then(|s| s.added.get(before).map(|(_, at)| *at));
            if let Some(at) = found {
                break at;
            }
            if deleted.elapsed() > Duration::from_secs(30) {
                return Err("no replacement within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        reactions.push(replaced.saturating_duration_since(deleted));
        // Let the replacement settle before the next one.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reactions.sort();
    let peak_rss = peak.lock().map(|p| *p).unwrap_or(0.0);
    sampler.abort();
    watch.abort();

    println!(
        "control plane: {} hollow nodes, Deployment of {} replicas",
        options.nodes, options.replicas
    );
    println!("  idle RSS (nodes registered)     {idle_rss:.1} MiB");
    println!(
        "  all replicas Running after       {:.2} s",
        all_running.as_secs_f64()
    );
    println!(
        "  pods bound                       {bound}, {:.0} pods/s (first to last binding)",
        bound as f64 / bind_window
    );
    println!("  CPU during the rollout           {cpu_rollout:.2} s");
    println!(
        "  RSS with {} pods                 {rss_full:.1} MiB (peak {peak_rss:.1} MiB)",
        options.replicas
    );
    println!(
        "  RS reaction (delete → new pod)   p50 {:.1} ms, p99 {:.1} ms over {}",
        percentile(&reactions, 0.5).as_secs_f64() * 1e3,
        percentile(&reactions, 0.99).as_secs_f64() * 1e3,
        reactions.len()
    );
    drop(plane);
    Ok(())
}
