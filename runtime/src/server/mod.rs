//! The CRI server: both services on a unix socket whose directory only root can enter.

mod authority;

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use capstan_proto::image_service_server::ImageServiceServer;
use capstan_proto::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::{ConfigError, RuntimeConfig};
use crate::images::{ImageError, ImageManager};
use crate::monitor::logs::Rotation;
use crate::network::PodNetwork;
use crate::pods::{PodError, PodManager, PodSettings};
use crate::service::{CriImageService, CriRuntimeService};
use crate::streaming::StreamingServer;

/// How the runtime is started.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// `unix:///path/to.sock`.
    pub endpoint: String,
    /// State that survives restarts.
    pub state_dir: PathBuf,
    /// The configuration file, if any.
    pub config_file: Option<PathBuf>,
    /// Where the streaming server (Exec/Attach/PortForward URLs) listens; port 0 picks one.
    pub streaming_address: std::net::SocketAddr,
    /// Container log limits that take precedence over the file's `[logs]`: `capstan node`
    /// passes the KubeletConfiguration's containerLogMaxSize/containerLogMaxFiles, since there
    /// the runtime's monitors rotate what the kubelet would.
    pub log_rotation: Option<Rotation>,
}

/// Why the runtime could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The endpoint is not a unix socket URL.
    #[error("--listen {0:?}: only unix:///absolute/path endpoints are supported")]
    BadEndpoint(String),
    /// Another process already serves the socket.
    #[error("{0} is already served by another process")]
    InUse(PathBuf),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image store could not be opened.
    #[error(transparent)]
    Images(#[from] ImageError),
    /// The pod state could not be opened.
    #[error(transparent)]
    Pods(#[from] PodError),
    /// A socket or file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The streaming server could not listen.
    #[error("streaming server on {address}: {source}")]
    Streaming {
        /// The address asked for.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// gRPC serving failed.
    #[error("serving CRI failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The runtime's parts, for serving over gRPC or calling in-process.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Images.
    pub images: Arc<ImageManager>,
    /// CRI ImageService.
    pub image_service: CriImageService,
    /// CRI RuntimeService.
    pub runtime_service: CriRuntimeService,
    /// Sandboxes and containers.
    pub pods: Arc<PodManager>,
    /// The server behind Exec, Attach and PortForward URLs.
    pub streaming: StreamingServer,
}

/// Pods whose request names no cgroup parent go below the runtime's own cgroup: nothing is
/// created at a hierarchy root unless configured.
fn default_cgroup_parent(state_dir: &Path) -> String {
    let own = crate::cgroups::own_path(crate::cgroups::Driver::detect());
    format!(
        "{}/{}",
        own.trim_end_matches('/'),
        pods_cgroup_name(state_dir)
    )
}

/// The name of the cgroup (below the runtime's own) that holds the pods whose request names no
/// cgroup parent: `capstan-pods` for the default state directory, `capstan-pods-<hash>` for any
/// other. Each state directory gets its own because the start-up sweep removes every pod cgroup
/// there that has no sandbox record in *this* state: two runtimes sharing one parent (tests, or
/// two agents in one cgroup) would otherwise remove each other's new pods.
pub fn pods_cgroup_name(state_dir: &Path) -> String {
    if state_dir == Path::new(crate::DEFAULT_STATE_DIR) {
        return "capstan-pods".to_string();
    }
    use sha2::Digest;
    // The same directory named two ways (relative, through a symlink) is one state.
    let state_dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    format!("capstan-pods-{}", &hex::encode(digest)[..10])
}

impl Runtime {
    /// Opens the runtime's state (CNI CHECK of adopted pods and CNI GC included, so that no
    /// request races them) and starts the streaming server.
    pub async fn open(options: &RuntimeOptions) -> Result<Self, ServerError> {
        let config = match &options.config_file {
            Some(path) => RuntimeConfig::load(path)?,
            None => RuntimeConfig::default(),
        };
        let rotation = match options.log_rotation {
            Some(rotation) => {
                if config.logs.is_set() && config.logs.rotation() != rotation {
                    tracing::warn!(
                        file = ?config.logs.rotation(),
                        used = ?rotation,
                        "the runtime config's [logs] is overridden by the node's \
                         containerLogMaxSize/containerLogMaxFiles"
                    );
                }
                rotation
            }
            None => config.logs.rotation(),
        };
        tracing::info!(
            max_size = rotation.max_size,
            max_files = rotation.max_files,
            "container log rotation"
        );
        let images = Arc::new(ImageManager::open(
            &options.state_dir.join("images"),
            config.registry,
        )?);
        let socket = socket_path(&options.endpoint)?;
        let run_dir = socket.parent().unwrap_or(Path::new("/run/capstan"));
        // Before anything else lands in it: the run directory holds the socket and pod state
        // only root may reach.
        private_dir(run_dir)?;
        let run_root = run_dir.join("pods");
        let monitor_binary = std::env::current_exe().map_err(|source| ServerError::Io {
            what: "find the capstan binary for pod monitors",
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        let settings = PodSettings {
            run_root,
            state_root: options.state_dir.join("pods"),
            monitor_binary,
            rotation,
            default_cgroup_parent: default_cgroup_parent(&options.state_dir),
        };
        let network = PodNetwork::new(config.cni.clone(), &options.state_dir.join("cni"));
        let pods = Arc::new(PodManager::open(settings, network, Arc::clone(&images)).await?);
        let streaming = StreamingServer::start(options.streaming_address).map_err(|source| {
            ServerError::Streaming {
                address: options.streaming_address,
                source,
            }
        })?;
        Ok(Runtime {
            image_service: CriImageService::new(Arc::clone(&images), Arc::clone(&pods)),
            runtime_service: CriRuntimeService::new(Arc::clone(&pods), streaming.clone()),
            images,
            pods,
            streaming,
        })
    }
}

/// The socket path of a `unix://` endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServerError> {
    endpoint
        .strip_prefix("unix://")
        .filter(|path| path.starts_with('/') && path.len() > 1)
        .map(PathBuf::from)
        .ok_or_else(|| ServerError::BadEndpoint(endpoint.to_string()))
}

/// Serves CRI on `options.endpoint` until `shutdown` completes, then removes the socket.
pub async fn serve(
    options: RuntimeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let runtime = Runtime::open(&options).await?;
    serve_runtime(&runtime, &options.endpoint, shutdown).await
}

/// Serves an opened runtime's CRI services on `endpoint` until `shutdown` completes, then
/// removes the socket.
pub async fn serve_runtime(
    runtime: &Runtime,
    endpoint: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let socket = socket_path(endpoint)?;
    let listener = bind(&socket).await?;
    tracing::info!(socket = %socket.display(), streaming = %runtime.streaming.address(), "serving CRI v1");
    let outcome = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(runtime.runtime_service.clone()))
        .add_service(ImageServiceServer::new(runtime.image_service.clone()))
        .serve_with_incoming_shutdown(lenient_connections(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("CRI server stopped");
    Ok(outcome?)
}

/// The socket's connections, each behind the layer that lets any `:authority` through.
fn lenient_connections(
    listener: UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<authority::LenientAuthority<tokio::net::UnixStream>>>
{
    use tokio_stream::StreamExt;
    UnixListenerStream::new(listener).map(|accepted| accepted.map(authority::LenientAuthority::new))
}

/// Runs the runtime in the foreground until SIGINT or SIGTERM.
pub fn run(options: RuntimeOptions) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Io {
            what: "start the async runtime",
            path: PathBuf::new(),
            source,
        })?;
    runtime.block_on(serve(options, shutdown_signal()))
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

/// Makes `dir` (created if missing) mode 0700, whatever mode an existing one had: the socket
/// and pod state in it are for root alone. A shared system directory (`/`, `/run`, `/tmp`, ...)
/// is never narrowed, since other services live in it; a socket placed directly in one only
/// gets a warning.
fn private_dir(dir: &Path) -> Result<(), ServerError> {
    let io = |what: &'static str| {
        let path = dir.to_path_buf();
        move |source| ServerError::Io { what, path, source }
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create socket directory"))?;
    }
    // Judged on the resolved path: `/var/run` is `/run` under another name.
    let resolved = std::fs::canonicalize(dir).map_err(io("resolve socket directory"))?;
    if is_shared_system_dir(&resolved) {
        tracing::warn!(
            dir = %dir.display(),
            "the CRI socket sits directly in a shared system directory, which is left as it is;              choose a directory of its own (e.g. /run/capstan) so only root can reach the socket"
        );
        return Ok(());
    }
    // Always, not only on creation: an existing directory may have been made wider (by a
    // packaging step, or a umask) and the socket's only protection is this directory.
    std::fs::set_permissions(&resolved, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restrict socket directory"))
}

/// Directories other services share, whose mode the runtime must not change: the root, any
/// top-level directory (`/run`, `/tmp`, `/var`, ...) and the well-known shared ones below `/var`
/// and `/dev`.
fn is_shared_system_dir(dir: &Path) -> bool {
    const SHARED: &[&str] = &["/var/run", "/var/tmp", "/var/lib", "/var/log", "/dev/shm"];
    let depth = dir
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    depth <= 1 || SHARED.iter().any(|shared| dir == Path::new(shared))
}

async fn bind(socket: &Path) -> Result<UnixListener, ServerError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ServerError::Io { what, path, source }
    };
    if let Some(dir) = socket.parent() {
        private_dir(dir)?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(ServerError::InUse(socket.to_path_buf()));
        }
        tracing::info!(socket = %socket.display(), "removing a stale socket");
        std::fs::remove_file(socket).map_err(io("remove stale socket", socket))?;
    }
    UnixListener::bind(socket).map_err(io("listen on", socket))
}

#[cfg(test)]
mod tests {
    use super::{is_shared_system_dir, pods_cgroup_name};
    use std::path::Path;

    #[test]
    fn shared_system_directories_are_recognised() {
        for shared in ["/", "/run", "/tmp", "/var", "/var/run", "/dev/shm"] {
            assert!(is_shared_system_dir(Path::new(shared)), "{shared}");
        }
        for own in ["/run/capstan", "/var/run/capstan", "/tmp/x/run"] {
            assert!(!is_shared_system_dir(Path::new(own)), "{own}");
        }
    }

    #[test]
    fn each_state_directory_gets_its_own_pods_cgroup() {
        assert_eq!(
            pods_cgroup_name(Path::new(crate::DEFAULT_STATE_DIR)),
            "capstan-pods"
        );
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let name = pods_cgroup_name(one.path());
        assert!(name.starts_with("capstan-pods-"), "{name}");
        assert_ne!(name, pods_cgroup_name(two.path()));
        let link = two.path().join("link");
        std::os::unix::fs::symlink(one.path(), &link).unwrap();
        assert_eq!(
            pods_cgroup_name(&link),
            name,
            "one directory named two ways is one state"
        );
    }
}
