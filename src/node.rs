//! `capstan node`: the built-in runtime (or a remote CRI endpoint) and the agent in one
//! process. The built-in runtime is called in-process and also served on its socket, so crictl
//! works against the node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use capstan_agent::cri::{Cri, DynRuntimeService};
use capstan_agent::node::NodeOptions;
use capstan_agent::objects::NoObjects;
use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::cli::{ExecArgs, NodeArgs};

/// Runs the node until SIGTERM or SIGINT. Pods keep running when the agent stops: a restart
/// adopts them.
pub fn run(args: NodeArgs) -> Result<(), String> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    tokio.block_on(run_async(args))
}

async fn run_async(args: NodeArgs) -> Result<(), String> {
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    let (cri, runtime) = match &args.container_runtime_endpoint {
        Some(endpoint) => (
            capstan_agent::cri::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?,
            None,
        ),
        None => {
            let options = capstan_runtime::server::RuntimeOptions {
                endpoint: args.runtime.listen.clone(),
                state_dir: args.runtime.state_dir.clone(),
                config_file: args.runtime.runtime_config.clone(),
            };
            let runtime =
                capstan_runtime::server::Runtime::open(&options).map_err(|e| e.to_string())?;
            let service: Arc<DynRuntimeService> = Arc::new(runtime.runtime_service.clone());
            let cri = Cri::new(service, Arc::new(runtime.image_service.clone()));
            (cri, Some(runtime))
        }
    };
    let options = NodeOptions {
        node_name: node_name.clone(),
        root_dir: args.root_dir.clone(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        read_only_address: args.read_only_address.clone(),
        cgroup_root: args.cgroup_root.clone(),
        max_pods: args.max_pods,
        reserved_cpu_millis: 0,
        reserved_memory: 0,
        memory_qos: false,
        resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
        sync_frequency: Duration::from_secs(60),
    };
    let (sender, receiver) = mpsc::channel(4);
    let _node = capstan_agent::node::start(options, cri, Arc::new(NoObjects), receiver)
        .await
        .map_err(|e| e.to_string())?;
    let manifests = args.pod_manifest_path.clone();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let set = scan(&manifests, &node_name);
            let keys: Vec<String> = set.keys().cloned().collect();
            if last.as_ref() != Some(&keys) {
                if sender.send(set).await.is_err() {
                    return;
                }
                last = Some(keys);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    match runtime {
        Some(runtime) => capstan_runtime::server::serve_runtime(
            &runtime,
            &args.runtime.listen,
            capstan_runtime::server::shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string()),
        None => {
            capstan_runtime::server::shutdown_signal().await;
            Ok(())
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Reads the manifest directory (one pod per file).
fn scan(dir: &Path, node_name: &str) -> BTreeMap<String, Pod> {
    let mut pods = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pods;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(mut pod) = serde_yaml_ng::from_str::<Pod>(&text) else {
            continue;
        };
        let uid = hex::encode(&Sha256::digest(format!("{node_name}\n{text}"))[..16]);
        pod.metadata.uid = Some(uid.clone());
        pod.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        pod.metadata.name = pod.metadata.name.map(|n| format!("{n}-{node_name}"));
        pods.insert(uid, pod);
    }
    pods
}

/// `capstan exec`: runs the command through the node's CRI endpoint; returns its exit code.
pub fn exec(args: ExecArgs) -> Result<i32, String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    tokio.block_on(capstan_agent::commands::exec(
        &args.runtime_endpoint,
        &args.address,
        &args.namespace,
        &args.pod,
        args.container.as_deref(),
        args.command,
    ))
}
