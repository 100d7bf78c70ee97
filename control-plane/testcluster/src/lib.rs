//! A whole cluster inside a test process: the real API server over a MemoryStore, served on
//! loopback for kubectl and reached in process by the scheduler and the controllers (as in
//! `capstan control-plane`), plus hollow nodes that run the pods. Tests drive it as users do,
//! with kubectl and kube-rs, and look at every step through the API.

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::kubernetes_service::{self, KubernetesServiceOptions};
use capstan_apiserver::{AllowAllAsAdmin, ApiServer, Config, InProcess, RequestUser};
use capstan_controllers::ControllerOptions;
use capstan_hollow::{HollowCluster, HollowOptions, NodeSpec};
use capstan_scheduler::SchedulerOptions;
use capstan_store::Store;
use capstan_store::memory::MemoryStore;
use capstan_testkit::kubectl::{self, KubectlOutput};
use tokio::task::JoinSet;

pub use capstan_testkit::kubectl::{KUBECTL, KUBECTL_127, KUBECTL_133};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Hollow nodes `node-0` … with [`ClusterOptions::node`]'s capacity.
    pub nodes: usize,
    /// The hollow nodes' capacity, labels, taints.
    pub node: NodeSpec,
    /// Run the scheduler.
    pub scheduler: bool,
    /// `--controllers` of the controller manager; empty runs none.
    pub controllers: Vec<String>,
    /// Options of the controller manager (its `controllers` is replaced by the field above).
    pub controller_options: ControllerOptions,
    /// The hollow nodes' lease timings.
    pub hollow: HollowOptions,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            nodes: 3,
            node: NodeSpec::default(),
            scheduler: true,
            controllers: vec!["*".into()],
            controller_options: ControllerOptions::new("test-controller-manager"),
            hollow: HollowOptions::default(),
        }
    }
}

/// The running cluster; everything stops when it is dropped.
pub struct TestCluster {
    /// The API server.
    pub server: Arc<ApiServer>,
    /// Its store.
    pub store: Arc<MemoryStore>,
    /// `http://127.0.0.1:PORT`, every request served as the admin.
    pub url: String,
    /// An admin client over the loopback listener.
    pub client: kube::Client,
    /// The hollow nodes.
    pub nodes: HollowCluster,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("url", &self.url)
            .finish()
    }
}

/// A kube client reaching `server` in process as `user`.
pub fn in_process_client(server: &Arc<ApiServer>, user: RequestUser) -> kube::Client {
    kube::Client::new(InProcess::new(Arc::clone(server), user), "default")
}

/// A kube client reaching `server` in process as the scheduler.
pub fn scheduler_client(server: &Arc<ApiServer>) -> kube::Client {
    kube::Client::new(InProcess::scheduler(Arc::clone(server)), "default")
}

/// A kube client reaching `server` in process as the controller manager.
pub fn controller_manager_client(server: &Arc<ApiServer>) -> kube::Client {
    kube::Client::new(InProcess::controller_manager(Arc::clone(server)), "default")
}

impl TestCluster {
    /// Three hollow nodes, the scheduler and every controller.
    pub async fn start() -> TestCluster {
        TestCluster::with(ClusterOptions::default()).await
    }

    /// The cluster `options` describe; waits until the nodes are registered.
    pub async fn with(options: ClusterOptions) -> TestCluster {
        let store = Arc::new(MemoryStore::new());
        let config = Config {
            bookmark_interval: Duration::from_millis(500),
            ..Config::default()
        };
        let shared: Arc<dyn Store> = store.clone();
        let server = match ApiServer::new(shared, config).await {
            Ok(server) => server,
            Err(error) => panic!("the API server did not start: {error}"),
        };
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(error) => panic!("bind: {error}"),
        };
        let url = match listener.local_addr() {
            Ok(address) => format!("http://{address}"),
            Err(error) => panic!("local_addr: {error}"),
        };
        let port = listener.local_addr().map_or(0, |a| a.port());
        // The `kubernetes` Service, as kube-apiserver keeps it, on a faster cycle.
        let mut service = KubernetesServiceOptions::new(std::net::SocketAddr::new(
            kubernetes_service::default_advertise_address(std::net::Ipv4Addr::LOCALHOST.into()),
            port,
        ));
        (service.interval, service.lease_ttl) = (Duration::from_secs(1), Duration::from_secs(3));
        drop(kubernetes_service::start(&server, service));
        let mut tasks = JoinSet::new();
        tasks.spawn(capstan_apiserver::serve(
            listener,
            Arc::clone(&server),
            Arc::new(AllowAllAsAdmin),
        ));
        let client = match url.parse() {
            Ok(uri) => match kube::Client::try_from(kube::Config::new(uri)) {
                Ok(client) => client,
                Err(error) => panic!("client: {error}"),
            },
            Err(error) => panic!("url {url}: {error}"),
        };
        if options.scheduler {
            let mut scheduler = SchedulerOptions::new("test-scheduler");
            scheduler.leader_election = Some(fast_election());
            tasks.spawn(capstan_scheduler::run(
                scheduler_client(&server),
                scheduler,
                futures::future::pending(),
            ));
        }
        if !options.controllers.is_empty() {
            let mut controller_options = options.controller_options.clone();
            controller_options.controllers = options.controllers.clone();
            let (lease, renew, retry) = fast_election();
            controller_options.leader_election =
                Some(capstan_controllers::context::LeaderTimings {
                    lease_duration: lease,
                    renew_deadline: renew,
                    retry_period: retry,
                });
            tasks.spawn(capstan_controllers::run(
                controller_manager_client(&server),
                controller_options,
                futures::future::pending(),
            ));
        }
        let mut nodes = HollowCluster::new(
            in_process_client(&server, RequestUser::admin()),
            options.hollow.clone(),
        );
        if let Err(error) = nodes.add_many("node", options.nodes, &options.node).await {
            panic!("hollow nodes did not register: {error}");
        }
        TestCluster {
            server,
            store,
            url,
            client,
            nodes,
            tasks,
        }
    }

    /// Runs `kubectl` (Debian's, 1.32) against the cluster.
    pub async fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        kubectl::run(KUBECTL, &self.url, args, None).await
    }

    /// Runs a given kubectl binary against the cluster, with `stdin`.
    pub async fn kubectl_with(
        &self,
        binary: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> KubectlOutput {
        kubectl::run(binary, &self.url, args, stdin).await
    }

    /// Runs kubectl, asserting success; its standard output.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        kubectl::ok(KUBECTL, &self.url, args, None).await
    }

    /// `kubectl apply -f -` of `manifest`, asserting success.
    pub async fn apply(&self, manifest: &str) -> String {
        kubectl::ok(KUBECTL, &self.url, &["apply", "-f", "-"], Some(manifest)).await
    }

    /// A typed API of kind `K` in `namespace` (admin, over loopback).
    pub fn api<K>(&self, namespace: &str) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    /// Stops the background tasks (API server listener, scheduler, controllers).
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Leader election that takes over within a second or two: tests start one candidate.
fn fast_election() -> (Duration, Duration, Duration) {
    (
        Duration::from_secs(4),
        Duration::from_secs(3),
        Duration::from_millis(500),
    )
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
