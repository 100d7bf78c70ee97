//! The command line: every subcommand, its flags and their defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Capstan: a Kubernetes node in one binary.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log line format written to standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CAPSTAN_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `capstan_runtime=debug,warn`.
    #[arg(long, global = true, default_value = "info", env = "CAPSTAN_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent with the CRI runtime in the same process (the usual way to run Capstan).
    Node(NodeArgs),
    /// Serve the CRI v1 runtime alone on a unix socket (for crictl or another kubelet).
    Runtime(RuntimeArgs),
    /// Run the control plane and a node in one process: a single-host cluster.
    Server(ControlPlaneArgs),
    /// Run the control plane alone: API server, scheduler and controllers.
    ControlPlane(ControlPlaneArgs),
    /// Run a bundled CNI plugin; reads CNI_* variables and the network config on stdin.
    Cni(CniArgs),
    /// The per-pod monitor the runtime starts (internal: not for people to run).
    #[command(hide = true)]
    Monitor(MonitorArgs),
    /// Runs a command inside a container of a pod (internal: ExecSync's helper).
    #[command(hide = true)]
    ExecIn(ExecInArgs),
    /// Times create + start + wait + delete of an OCI bundle through the monitor's libcontainer
    /// path (internal: the benchmark harness's OCI rows).
    #[command(hide = true)]
    OciBench(OciBenchArgs),
    /// Manage this host's pod network by hand (e.g. overlay peers).
    Network(NetworkArgs),
    /// Manage the runtime's local images without a registry.
    #[command(subcommand)]
    Images(ImagesCommand),
}

/// `capstan images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Load the tagged images of an OCI archive (an OCI image layout in a tar, as `skopeo copy
    /// ... oci-archive:FILE` writes) into the runtime's store.
    Import {
        /// The OCI archive.
        file: PathBuf,
        /// The runtime's state directory.
        #[arg(long, value_name = "DIR", default_value = capstan_runtime::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// List the local images.
    Ls {
        /// The runtime's state directory.
        #[arg(long, value_name = "DIR", default_value = capstan_runtime::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

/// Flags of `capstan node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory of static pod manifests (YAML or JSON), watched for changes.
    #[arg(long, value_name = "DIR", default_value = capstan_agent::DEFAULT_POD_MANIFEST_PATH)]
    pub pod_manifest_path: PathBuf,

    /// A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1); flags override its fields.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Use this remote CRI endpoint (e.g. unix:///run/containerd/containerd.sock) instead of the
    /// built-in runtime. Default: the built-in runtime, called in-process.
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,

    /// Address of the read-only kubelet endpoints (/healthz, /pods, /stats/summary, /metrics).
    #[arg(long, value_name = "ADDR", default_value = capstan_agent::DEFAULT_READ_ONLY_ADDRESS)]
    pub read_only_address: String,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Flags of `capstan runtime` (also accepted by `capstan node` for its built-in runtime).
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// CRI endpoint to serve; the socket's directory is created with mode 0700.
    #[arg(long, value_name = "ENDPOINT", default_value = capstan_runtime::DEFAULT_ENDPOINT)]
    pub listen: String,

    /// Directory for state that survives restarts: images, snapshots, pod and container records.
    #[arg(long, value_name = "DIR", default_value = capstan_runtime::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Runtime configuration file (registry mirrors, insecure registries, CNI paths).
    #[arg(long = "runtime-config", value_name = "FILE")]
    pub runtime_config: Option<PathBuf>,
}

/// Flags of `capstan control-plane` and `capstan server`.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Address the Kubernetes API is served on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    pub bind_address: String,

    /// Directory of the embedded store and the cluster's certificates.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/capstan/control-plane"
    )]
    pub data_dir: PathBuf,
}

/// Flags of `capstan cni`.
#[derive(Debug, Args)]
pub struct CniArgs {
    /// The plugin to run.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(capstan_cni::PLUGINS))]
    pub plugin: String,
}

/// Flags of the internal `capstan monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The pod's run directory (socket, namespace pins, libcontainer state).
    #[arg(long, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// Hostname of the pod.
    #[arg(long, default_value = "")]
    pub hostname: String,
    /// Share the host's network namespace (hostNetwork).
    #[arg(long)]
    pub host_network: bool,
    /// Share the host's IPC namespace (hostIPC).
    #[arg(long)]
    pub host_ipc: bool,
    /// Join the network namespace the runtime pinned at `<run dir>/ns/net` instead of creating
    /// one.
    #[arg(long, conflicts_with = "host_network")]
    pub join_pinned_network: bool,
    /// Largest container log file, in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub log_max_size: u64,
    /// Container log files kept, the live one included.
    #[arg(long, default_value_t = 5)]
    pub log_max_files: usize,
}

/// Flags of `capstan network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub command: NetworkCommand,
}

/// What `capstan network` manages.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Remote hosts of the vxlan overlay: one FDB, neighbour and route entry each.
    #[command(subcommand)]
    Peer(PeerCommand),
}

/// `capstan network peer add|del`.
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Program a remote host on the local VXLAN device (repeating it replaces the entries).
    Add(PeerArgs),
    /// Remove a remote host's entries (succeeds when they are already gone).
    Del(PeerArgs),
}

/// One remote host of the overlay.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The local VXLAN device (the vxlan plugin names it `vxlan.VNI` unless configured).
    #[arg(long, value_name = "NAME")]
    pub device: String,

    /// The remote host's underlay IPv4 address.
    #[arg(long, value_name = "IPV4")]
    pub remote: std::net::Ipv4Addr,

    /// The remote host's pod subnet, e.g. 10.244.2.0/24.
    #[arg(long, value_name = "CIDR")]
    pub subnet: String,

    /// The remote VXLAN device's MAC; default: derived from --remote as Capstan's vxlan plugin
    /// does (0e:ca followed by the address).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
}

/// Flags of the internal `capstan exec-in`.
#[derive(Debug, Args)]
pub struct ExecInArgs {
    /// The pod monitor's libcontainer root.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The container ID.
    #[arg(long)]
    pub id: String,
    /// Where to write the host pid of the started process.
    #[arg(long, value_name = "FILE")]
    pub pid_file: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Flags of the internal `capstan oci-bench`.
#[derive(Debug, Args)]
pub struct OciBenchArgs {
    /// libcontainer's state directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The OCI bundle; its process should exit by itself (e.g. `true`).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Create + start + wait + delete cycles.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
}
