//! The `kubernetes` Service in `default` as kube-apiserver keeps it, seen through kubectl:
//! the Service, its Endpoints and EndpointSlice naming this API server, and the Service made
//! again when deleted. The endpoints and endpointslice controllers run and leave it alone.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};

const WAIT: Duration = Duration::from_secs(15);

fn options() -> ClusterOptions {
    ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec![
            "endpoints".into(),
            "endpointslice".into(),
            "endpointslice-mirroring-controller".into(),
        ],
        ..ClusterOptions::default()
    }
}

/// `ip:port` this server is advertised at.
fn advertised(cluster: &TestCluster) -> (String, String) {
    let port = cluster.url.rsplit(':').next().unwrap_or("").to_string();
    let ip = capstan_apiserver::kubernetes_service::default_advertise_address(
        std::net::Ipv4Addr::LOCALHOST.into(),
    );
    (ip.to_string(), port)
}

/// The data rows of kubectl's table output, split on whitespace, without the AGE column.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            let mut cells: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            cells.pop();
            cells
        })
        .collect()
}

async fn get(cluster: &TestCluster, args: &[&str]) -> Option<String> {
    let out = cluster.kubectl(args).await;
    out.success.then(|| out.stdout.clone())
}

#[tokio::test]
async fn kubectl_shows_the_kubernetes_service_endpoints_and_slice() {
    let cluster = TestCluster::with(options()).await;
    let (ip, port) = advertised(&cluster);
    let service = eventually(WAIT, "the kubernetes service", || {
        get(&cluster, &["get", "svc", "kubernetes"])
    })
    .await;
    assert_eq!(
        rows(&service),
        vec![
            vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"],
            vec!["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"],
        ]
    );
    let labels = cluster
        .kubectl_ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.metadata.labels}",
        ])
        .await;
    assert_eq!(
        labels,
        r#"{"component":"apiserver","provider":"kubernetes"}"#
    );
    let target = cluster
        .kubectl_ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.ports[0].name} {.spec.ports[0].targetPort}",
        ])
        .await;
    assert_eq!(target, format!("https {port}"));

    let endpoints = eventually(WAIT, "the kubernetes endpoints", || {
        get(&cluster, &["get", "endpoints", "kubernetes"])
    })
    .await;
    assert_eq!(
        rows(&endpoints),
        vec![
            vec!["NAME".to_string(), "ENDPOINTS".into()],
            vec!["kubernetes".into(), format!("{ip}:{port}")],
        ]
    );
    let skip = cluster
        .kubectl_ok(&[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={.metadata.labels}",
        ])
        .await;
    assert_eq!(
        skip,
        r#"{"endpointslice.kubernetes.io/skip-mirror":"true"}"#
    );

    let slices = eventually(WAIT, "the kubernetes endpointslice", || {
        get(&cluster, &["get", "endpointslices"])
    })
    .await;
    assert_eq!(
        rows(&slices),
        vec![
            vec![
                "NAME".to_string(),
                "ADDRESSTYPE".into(),
                "PORTS".into(),
                "ENDPOINTS".into()
            ],
            vec!["kubernetes".into(), "IPv4".into(), port.clone(), ip.clone()],
        ]
    );
    // Written by the API server: no managed-by, only the service name; the mirroring
    // controller made no copy.
    let slice_labels = cluster
        .kubectl_ok(&[
            "get",
            "endpointslice",
            "kubernetes",
            "-o",
            "jsonpath={.metadata.labels}",
        ])
        .await;
    assert_eq!(
        slice_labels,
        r#"{"kubernetes.io/service-name":"kubernetes"}"#
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = cluster
        .kubectl_ok(&["get", "endpointslices", "-o", "name"])
        .await;
    assert_eq!(again.trim(), "endpointslice.discovery.k8s.io/kubernetes");
}

async fn uid(cluster: &TestCluster) -> Option<String> {
    get(
        cluster,
        &["get", "svc", "kubernetes", "-o", "jsonpath={.metadata.uid}"],
    )
    .await
    .filter(|uid| !uid.is_empty())
}

#[tokio::test]
async fn a_deleted_kubernetes_service_is_made_again() {
    let cluster = TestCluster::with(options()).await;
    let (ip, port) = advertised(&cluster);
    let first = eventually(WAIT, "the kubernetes service", || uid(&cluster)).await;
    cluster.kubectl_ok(&["delete", "svc", "kubernetes"]).await;
    let second = eventually(WAIT, "the kubernetes service made again", || async {
        uid(&cluster).await.filter(|uid| *uid != first)
    })
    .await;
    assert_ne!(first, second);
    let cluster_ip = cluster
        .kubectl_ok(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await;
    assert_eq!(cluster_ip, "10.96.0.1");
    // The endpoints controller deletes the Endpoints with the Service; they come back too.
    let wanted = format!("{ip}:{port}");
    eventually(
        WAIT,
        "the kubernetes endpoints after the delete",
        || async {
            get(
                &cluster,
                &["get", "endpoints", "kubernetes", "--no-headers"],
            )
            .await
            .filter(|out| out.split_whitespace().nth(1) == Some(wanted.as_str()))
        },
    )
    .await;
}
