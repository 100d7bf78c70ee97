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
    Node(Box<NodeArgs>),
    /// Serve the CRI v1 runtime alone on a unix socket (for crictl or another kubelet).
    Runtime(RuntimeArgs),
    /// Run the control plane and a node in one process: a single-host cluster.
    Server(Box<ServerArgs>),
    /// Run the control plane alone: API server, scheduler and controllers.
    ControlPlane(ControlPlaneArgs),
    /// Manage bootstrap tokens, with which nodes join (`capstan node --join`).
    #[command(subcommand)]
    Token(TokenCommand),
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
    /// List the node's pods (from the node's read-only API).
    Pods(PodsArgs),
    /// Print a container's log (from the node's read-only API).
    Logs(LogsArgs),
    /// Run a command in a container of a pod on this node, to completion.
    Exec(ExecArgs),
}

/// Flags of `capstan pods`.
#[derive(Debug, Args)]
pub struct PodsArgs {
    /// The node's read-only API.
    #[arg(long, value_name = "ADDR", default_value = capstan_agent::DEFAULT_READ_ONLY_ADDRESS)]
    pub address: String,
}

/// Flags of `capstan logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The log of the previous instance of the container.
    #[arg(short, long)]
    pub previous: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Prefix lines with their timestamps.
    #[arg(long)]
    pub timestamps: bool,
    /// The node's read-only API.
    #[arg(long, value_name = "ADDR", default_value = capstan_agent::DEFAULT_READ_ONLY_ADDRESS)]
    pub address: String,
}

/// Flags of `capstan exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// The pod's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The node's read-only API (to find the pod).
    #[arg(long, value_name = "ADDR", default_value = capstan_agent::DEFAULT_READ_ONLY_ADDRESS)]
    pub address: String,
    /// The node's CRI endpoint (to run the command).
    #[arg(long, value_name = "ENDPOINT", default_value = capstan_runtime::DEFAULT_ENDPOINT)]
    pub runtime_endpoint: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
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

/// Flags of `capstan node`. Flags given override the configuration file's fields; defaults
/// are the file's, then the kubelet's.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory of static pod manifests (YAML or JSON), watched for changes (`staticPodPath`;
    /// default /etc/kubernetes/manifests). An empty value turns the file source off.
    #[arg(long, value_name = "DIR")]
    pub pod_manifest_path: Option<PathBuf>,

    /// A KubeletConfiguration file (kubelet.config.k8s.io/v1beta1, YAML or JSON); flags override
    /// its fields.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Use this remote CRI endpoint (e.g. unix:///run/containerd/containerd.sock) instead of the
    /// built-in runtime. Default: the built-in runtime, called in-process.
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,

    /// Address of the read-only kubelet endpoints (/healthz, /pods, /stats/summary, /metrics,
    /// /containerLogs); port 0 turns them off. Default: 127.0.0.1:10255.
    #[arg(long, value_name = "ADDR")]
    pub read_only_address: Option<std::net::SocketAddr>,

    /// Address of the kubelet endpoint (HTTPS, authenticated: exec, attach, port-forward and
    /// logs for the API server), served when the node is joined; port 0 picks a free port.
    /// Default: 0.0.0.0:10250.
    #[arg(long, value_name = "ADDR")]
    pub kubelet_address: Option<std::net::SocketAddr>,

    /// The node's name (static pods get it as a name suffix). Default: the host name.
    #[arg(long, visible_alias = "hostname-override", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Directory for per-pod data: volumes and termination messages.
    /// Default: /var/lib/capstan/agent.
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,

    /// Directory of container logs (<namespace>_<pod>_<uid>/<container>/<restart>.log).
    /// Default: /var/log/pods.
    #[arg(long, value_name = "DIR")]
    pub pod_logs_dir: Option<PathBuf>,

    /// Directory of ConfigMap and Secret manifests that pods' volumes and env refer to
    /// (standalone nodes have no API server to read them from).
    #[arg(long, value_name = "DIR")]
    pub object_manifest_path: Option<PathBuf>,

    /// Cgroup (absolute path) below which kubepods/ is created. Default: the agent's own
    /// cgroup, since the hierarchy root is rarely delegated to it.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<String>,

    /// Most pods this node runs (`maxPods`; default 110).
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u32>,

    /// Join the API server this kubeconfig names: register the Node, renew its Lease, run the
    /// pods bound to it and report their status. Without it the node stays standalone.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// A kubeconfig with a bootstrap token (the kubelet's flag): when --kubeconfig is missing
    /// or its certificate has expired, the node requests a client certificate with it
    /// (CertificateSigningRequest), then writes --kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_kubeconfig: Option<PathBuf>,

    /// Directory of the node's client key and certificate (kubelet-client-current.pem).
    /// Default: <root dir>/pki.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Join the API server at HOST:PORT with a bootstrap token, as `kubeadm join` does: the
    /// cluster's CA is taken from kube-public/cluster-info once its public key matches
    /// --discovery-token-ca-cert-hash. `capstan token create --print-join-command` prints the
    /// whole command. The kubeconfig is written to --kubeconfig (default <root dir>/kubeconfig).
    #[arg(long, value_name = "HOST:PORT", requires_all = ["token", "discovery_token_ca_cert_hash"])]
    pub join: Option<String>,

    /// The bootstrap token for --join (`[a-z0-9]{6}.[a-z0-9]{16}`).
    #[arg(long, value_name = "TOKEN", requires = "join")]
    pub token: Option<String>,

    /// The pinned CA public key for --join: `sha256:<hex>`; repeatable (comma-separated).
    #[arg(long, value_name = "HASH", value_delimiter = ',', requires = "join")]
    pub discovery_token_ca_cert_hash: Vec<String>,

    /// Labels to register the Node with: `key=value` pairs, comma-separated (with --kubeconfig).
    #[arg(long, value_name = "LABELS", value_parser = parse_node_labels)]
    pub node_labels: Option<std::collections::BTreeMap<String, String>>,

    /// Taints to register the Node with: `key[=value]:Effect`, comma-separated (with
    /// --kubeconfig).
    #[arg(long, value_name = "TAINTS", value_parser = parse_taints)]
    pub register_with_taints: Option<Taints>,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The taints of `--register-with-taints`.
#[derive(Debug, Clone, Default)]
pub struct Taints(pub Vec<capstan_agent::node::register::Taint>);

fn parse_taints(text: &str) -> Result<Taints, String> {
    capstan_agent::node::register::parse_taints(text)
        .map(Taints)
        .map_err(|e| e.to_string())
}

fn parse_node_labels(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    capstan_agent::node::register::parse_labels(text).map_err(|e| e.to_string())
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

    /// Address of the streaming server that Exec, Attach and PortForward URLs point at
    /// (kubectl exec/attach/port-forward through an API server, crictl exec -i/attach). Port 0
    /// picks a free port; keep it on loopback unless the API server reaches the node over the
    /// network: the URLs carry single-use tokens but no authentication.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub streaming_address: std::net::SocketAddr,
}

/// Flags of `capstan server`: the control plane's and the node's. The node joins the server's
/// own control plane, so `--join`, `--kubeconfig` and `--bootstrap-kubeconfig` are refused.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The control plane.
    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,
    /// The node.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Flags of `capstan control-plane` and `capstan server`, named as kube-apiserver's.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Address the Kubernetes API is served on (HTTPS); 0.0.0.0 for every address.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,

    /// Port of the Kubernetes API; 0 picks a free one (written into the admin kubeconfig).
    #[arg(long, value_name = "PORT", default_value_t = 6443)]
    pub secure_port: u16,

    /// Address this server is advertised at to the cluster (the `kubernetes` Service's
    /// endpoints); by default the bind address, or the host's first non-loopback IPv4 address
    /// when that is 0.0.0.0 or loopback.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<std::net::IpAddr>,

    /// Directory of the embedded store, the cluster's certificates and keys, and
    /// admin.kubeconfig (a client certificate in system:masters). Kept across restarts.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/capstan/control-plane"
    )]
    pub data_dir: PathBuf,

    /// The Service IP range; its first address (the `kubernetes` Service's) is a SAN of the
    /// serving certificate.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: ipnet::IpNet,

    /// The cluster's DNS domain, for the kubernetes.default.svc.<domain> SAN.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// A further SAN (IP address or DNS name) of the serving certificate; repeatable.
    #[arg(long = "tls-san", value_name = "SAN")]
    pub tls_sans: Vec<String>,

    /// etcd v3 endpoints (comma-separated, e.g. http://127.0.0.1:2379) instead of the
    /// embedded store: the way to run several API servers over one cluster state.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub etcd_servers: Vec<String>,

    /// Static bearer tokens: a CSV file of `token,user,uid,"group1,group2"` lines.
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,

    /// Answer requests without credentials as system:anonymous (allowed only /healthz,
    /// /livez, /readyz and /version).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub anonymous_auth: bool,

    /// Issuer of service-account tokens (the `iss` claim); repeatable: the first issues, all
    /// are accepted. Default https://kubernetes.default.svc.<cluster domain>.
    #[arg(long = "service-account-issuer", value_name = "URL")]
    pub service_account_issuers: Vec<String>,

    /// Audiences the API accepts tokens for (comma-separated); default the first issuer.
    #[arg(long, value_name = "AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Vec<String>,

    /// Longest lifetime of a requested service-account token (a duration such as 24h; at least
    /// 1h); longer requests are shortened to it. Default no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_token_expiration)]
    pub service_account_max_token_expiration: Option<std::time::Duration>,

    /// Ordered comma list of authorizers after the system:masters bypass: Node, RBAC,
    /// AlwaysAllow, AlwaysDeny. The default is kubeadm's and k3s's (kube-apiserver's own is
    /// AlwaysAllow).
    #[arg(long, default_value = "Node,RBAC", value_name = "MODES")]
    pub authorization_mode: String,

    /// Do not run the scheduler in this process (k3s's flag).
    #[arg(long)]
    pub disable_scheduler: bool,

    /// Do not run the controller manager in this process (k3s's flag).
    #[arg(long)]
    pub disable_controller_manager: bool,

    /// Controllers to run, as kube-controller-manager's flag: `*` for all, `name` to enable,
    /// `-name` to disable (comma-separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// The pods' address range; node IPAM gives each Node a podCIDR from it when set
    /// (`capstan server`: default 10.244.0.0/16).
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Option<ipnet::IpNet>,

    /// Prefix length of each Node's podCIDR carved from --cluster-cidr.
    #[arg(long, value_name = "BITS", default_value_t = 24)]
    pub node_cidr_mask_size: u8,

    /// How long an auto-generated legacy service-account token may go unused before it is
    /// marked invalid, and then deleted (a Go duration).
    #[arg(long, value_name = "DURATION", default_value = "8760h0m0s", value_parser = parse_duration)]
    pub legacy_service_account_token_clean_up_period: std::time::Duration,
}

/// A Go duration flag.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    capstan_apiserver::tokens::parse_duration(text).map_err(|e| e.to_string())
}

/// `--service-account-max-token-expiration`: a Go duration, 0 or between 1 h and 2^32 s.
fn parse_token_expiration(text: &str) -> Result<std::time::Duration, String> {
    let duration = capstan_apiserver::tokens::parse_duration(text).map_err(|e| e.to_string())?;
    let seconds = duration.as_secs() as i64;
    if seconds != 0
        && !(3600..=capstan_apiserver::tokens::MAX_EXPIRATION_SECONDS).contains(&seconds)
    {
        return Err(capstan_apiserver::tokens::TokenOptionsError::MaxExpiration.to_string());
    }
    Ok(duration)
}

/// `capstan token ...`, as `kubeadm token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Store a new bootstrap token (in kube-system) and print it.
    Create(TokenCreateArgs),
}

/// Flags of `capstan token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The token to store (`[a-z0-9]{6}.[a-z0-9]{16}`). Default: a random one.
    pub token: Option<String>,

    /// A kubeconfig allowed to create Secrets in kube-system.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/capstan/control-plane/admin.kubeconfig"
    )]
    pub kubeconfig: PathBuf,

    /// How long the token is valid (e.g. 24h, 30m); 0 for ever.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,

    /// A human-readable description of the token's use.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,

    /// Print the whole `capstan node --join` command instead of the token alone.
    #[arg(long)]
    pub print_join_command: bool,
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    capstan_apiserver::tokens::parse_duration(text).map_err(|e| e.to_string())
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
    /// Give the pod a PID namespace its containers share (shareProcessNamespace).
    #[arg(long)]
    pub share_pid: bool,
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
    /// Give the process this command's standard input (otherwise it reads EOF).
    #[arg(long)]
    pub stdin: bool,
    /// Run the process on a new terminal whose master end is sent to this unix socket
    /// (the OCI console socket), instead of on this command's standard streams.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Write why the command could not be started to this file instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub error_file: Option<PathBuf>,
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
