//! `capstan node`: the built-in runtime (or a remote CRI endpoint) and the agent in one
//! process. The built-in runtime is called in-process and also served on its socket, so crictl
//! works against the node.

use std::sync::Arc;

use capstan_agent::config::{AgentConfig, Overrides};
use capstan_agent::cri::{Cri, DynRuntimeService};
use capstan_agent::node::register::Registration;
use capstan_agent::objects::{ApiObjects, NoObjects, ObjectDir, ObjectLookup};
use capstan_agent::source::{ApiSource, FileSource, PodConfig, SourceName};
use tokio::sync::mpsc;

use crate::cli::{ExecArgs, NodeArgs};

/// Runs the node until SIGTERM or SIGINT. Pods keep running when the agent stops: a restart
/// adopts them.
pub fn run(args: NodeArgs) -> Result<(), String> {
    let config = load_config(&args)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    tokio.block_on(run_async(args, config))
}

/// The agent's configuration: the file, then the flags over it. An invalid configuration
/// stops the start before anything runs, naming the field.
pub fn load_config(args: &NodeArgs) -> Result<AgentConfig, String> {
    let overrides = Overrides {
        pod_manifest_path: args.pod_manifest_path.clone(),
        node_name: args.node_name.clone(),
        read_only_address: args.read_only_address,
        kubelet_address: args.kubelet_address,
        root_dir: args.root_dir.clone(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        cgroup_root: args.cgroup_root.clone(),
        object_manifest_path: args.object_manifest_path.clone(),
        max_pods: args.max_pods,
        container_runtime_endpoint: args.container_runtime_endpoint.clone(),
    };
    AgentConfig::load(args.config.as_deref(), &overrides).map_err(|e| e.to_string())
}

/// Runs the node on the current tokio runtime until SIGTERM or SIGINT.
pub async fn run_async(args: NodeArgs, config: AgentConfig) -> Result<(), String> {
    // A kubeconfig that cannot be used stops the start before the runtime opens its state.
    let (client, kubeconfig) = match crate::join::node_kubeconfig(&args, &config).await? {
        Some(credentials) => {
            let file = credentials.kubeconfig.clone();
            (Some(node_client(credentials).await?), Some(file))
        }
        None => (None, None),
    };
    let (cri, runtime) = match &config.container_runtime_endpoint {
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
                streaming_address: args.runtime.streaming_address,
                log_rotation: Some(log_rotation(&config)?),
            };
            let runtime = capstan_runtime::server::Runtime::open(&options)
                .await
                .map_err(|e| e.to_string())?;
            let service: Arc<DynRuntimeService> = Arc::new(runtime.runtime_service.clone());
            let cri = Cri::new(service, Arc::new(runtime.image_service.clone()));
            (cri, Some(runtime))
        }
    };
    // Under an API server, ConfigMaps, Secrets and tokens come from it (an object directory
    // is for standalone nodes).
    let objects: Arc<dyn ObjectLookup> = match (&client, &config.object_manifest_path) {
        (Some(client), _) => Arc::new(ApiObjects::new(client.clone())),
        (None, Some(dir)) => Arc::new(ObjectDir::new(dir.clone())),
        (None, None) => Arc::new(NoObjects),
    };
    let (updates, receiver) = mpsc::channel(16);
    let mut sources = Vec::new();
    if let Some(file) = FileSource::from_config(&config) {
        file.spawn(updates.clone());
        sources.push(SourceName::File);
    }
    if let Some(client) = &client {
        ApiSource::new(client.clone(), &config.node_name).spawn(updates.clone());
        sources.push(SourceName::Api);
    }
    drop(updates);
    let desired = PodConfig::spawn(sources, receiver);
    let node = capstan_agent::node::start(&config, cri, objects, desired)
        .await
        .map_err(|e| e.to_string())?;
    // The service proxy, under an API server: stopped at the end so that its addresses go.
    let mut proxy = None;
    if let (Some(client), Some(kubeconfig)) = (client, kubeconfig) {
        let api_config = capstan_agent::node::join::load_config(&kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        let kubelet = capstan_agent::node::join::serve_kubelet_endpoint(
            &node,
            client.clone(),
            &config,
            &api_config,
        )
        .await?;
        let registration = Registration {
            node_name: config.node_name.clone(),
            labels: args.node_labels.clone().unwrap_or_default(),
            taints: args
                .register_with_taints
                .clone()
                .map(|t| t.0)
                .unwrap_or_default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        proxy = Some((
            stop,
            tokio::spawn(capstan_proxy::run(
                client.clone(),
                capstan_proxy::ProxyOptions::default(),
                async {
                    let _ = stopped.await;
                },
            )),
        ));
        capstan_agent::node::join::spawn(client, &config, &node, registration, kubelet.port());
    }
    // The proxy stops as soon as the signal comes, before the runtime's graceful shutdown,
    // which waits for its clients (the agent among them) to hang up.
    let shutdown = async move {
        capstan_runtime::server::shutdown_signal().await;
        if let Some((stop, task)) = proxy {
            let _ = stop.send(());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        }
    };
    match runtime {
        Some(runtime) => {
            capstan_runtime::server::serve_runtime(&runtime, &args.runtime.listen, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
        None => {
            shutdown.await;
            Ok(())
        }
    }
}

/// The node's API client; with rotation, one whose client certificate follows the cert
/// dir's current pair, renewed in the background before it expires.
async fn node_client(credentials: crate::join::NodeCredentials) -> Result<kube::Client, String> {
    use capstan_agent::node::{cert_rotation, client_cert};
    let Some(rotation) = credentials.rotation else {
        return capstan_agent::node::join::client(&credentials.kubeconfig)
            .await
            .map_err(|e| e.to_string());
    };
    let pair_file = rotation
        .cert_dir
        .join(capstan_agent::node::tls_bootstrap::CURRENT_PAIR);
    let pair = client_cert::CurrentPair::load(&pair_file)?;
    let client = client_cert::client(&credentials.kubeconfig, Arc::clone(&pair))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(cert_rotation::run(rotation, client.clone(), pair));
    Ok(client)
}

/// The container log limits of the KubeletConfiguration (containerLogMaxSize,
/// containerLogMaxFiles), which the in-process runtime's pod monitors enforce as they write:
/// the kubelet would rotate the logs itself, here the runtime does it for it.
fn log_rotation(config: &AgentConfig) -> Result<capstan_runtime::monitor::logs::Rotation, String> {
    // Validation already keeps both at or above their minimums; a negative size cannot pass.
    let max_size = u64::try_from(config.container_log_max_size).map_err(|_| {
        format!(
            "containerLogMaxSize: {} bytes must not be negative",
            config.container_log_max_size
        )
    })?;
    let max_files = usize::try_from(config.container_log_max_files).map_err(|_| {
        format!(
            "containerLogMaxFiles: {} is too large",
            config.container_log_max_files
        )
    })?;
    Ok(capstan_runtime::monitor::logs::Rotation {
        max_size,
        max_files,
    })
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
