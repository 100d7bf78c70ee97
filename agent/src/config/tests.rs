use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn from_yaml(body: &str) -> Result<(AgentConfig, Vec<String>), ConfigError> {
    let mut c = AgentConfig::defaults("node-a");
    let warnings = c.apply_kubelet_config(&format!("{HEADER}{body}"), Path::new("/etc/k.yaml"))?;
    c.validate("/etc/k.yaml")?;
    Ok((c, warnings.iter().map(ToString::to_string).collect()))
}

fn error(body: &str) -> String {
    from_yaml(body).expect_err(body).to_string()
}

#[test]
fn defaults_are_the_kubelets() {
    let c = AgentConfig::defaults("n");
    assert_eq!(c.max_pods, 110);
    assert_eq!(c.file_check_frequency, Duration::from_secs(20));
    assert_eq!(c.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.image_gc_high_threshold_percent, 85);
    assert_eq!(c.image_gc_low_threshold_percent, 80);
    assert_eq!(c.container_log_max_size, 10 << 20);
    assert_eq!(c.container_log_max_files, 5);
    assert_eq!(
        c.eviction_hard.memory_available,
        Some(Threshold::Quantity(100 << 20))
    );
    assert_eq!(
        c.eviction_hard.imagefs_available,
        Some(Threshold::Percent(15.0))
    );
    assert_eq!(
        c.read_only_address,
        Some("127.0.0.1:10255".parse().unwrap())
    );
    assert_eq!(c.pod_dir("u1"), Path::new("/var/lib/capstan/agent/pods/u1"));
    assert!(c.cgroups_per_qos && c.serialize_image_pulls && !c.memory_qos);
    c.validate("defaults").expect("defaults are valid");
}

#[test]
fn every_applied_field() {
    let (c, warnings) = from_yaml(
        r#"
staticPodPath: /srv/manifests
fileCheckFrequency: 5s
syncFrequency: 1m30s
address: 0.0.0.0
readOnlyPort: 10266
podCIDR: 10.244.1.0/24
maxPods: 50
podPidsLimit: 4096
cgroupRoot: /capstan
cgroupsPerQOS: false
cgroupDriver: cgroupfs
systemReserved: {cpu: 100m, memory: 256Mi, pid: "1000"}
kubeReserved: {cpu: "0.5", memory: 1Gi, ephemeral-storage: 1G}
evictionHard: {memory.available: 200Mi, nodefs.available: 5%}
evictionPressureTransitionPeriod: 30s
imageGCHighThresholdPercent: 90
imageGCLowThresholdPercent: 70
imageMinimumGCAge: 5m
imageMaximumGCAge: 24h
serializeImagePulls: false
maxParallelImagePulls: 3
containerLogMaxSize: 50Mi
containerLogMaxFiles: 3
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
resolvConf: /run/systemd/resolve/resolv.conf
runtimeRequestTimeout: 10m
nodeStatusUpdateFrequency: 20s
featureGates: {MemoryQoS: true}
memoryThrottlingFactor: 0.8
shutdownGracePeriod: 30s
shutdownGracePeriodCriticalPods: 10s
"#,
    )
    .expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        c.static_pod_path.as_deref(),
        Some(Path::new("/srv/manifests"))
    );
    assert_eq!(c.file_check_frequency, Duration::from_secs(5));
    assert_eq!(c.sync_frequency, Duration::from_secs(90));
    assert_eq!(c.read_only_address, Some("0.0.0.0:10266".parse().unwrap()));
    assert_eq!(
        c.pod_cidr.map(|p| p.to_string()).as_deref(),
        Some("10.244.1.0/24")
    );
    assert_eq!(c.max_pods, 50);
    assert_eq!(c.pod_pids_limit, Some(4096));
    assert_eq!(c.cgroup_root.as_deref(), Some("/capstan"));
    assert!(!c.cgroups_per_qos);
    assert_eq!(
        c.system_reserved,
        Reserved {
            cpu_millis: 100,
            memory: 256 << 20,
            ephemeral_storage: 0,
            pids: 1000
        }
    );
    assert_eq!(c.kube_reserved.cpu_millis, 500);
    assert_eq!(c.kube_reserved.ephemeral_storage, 1_000_000_000);
    assert_eq!(
        c.eviction_hard.memory_available,
        Some(Threshold::Quantity(200 << 20))
    );
    assert_eq!(
        c.eviction_hard.nodefs_available,
        Some(Threshold::Percent(5.0))
    );
    assert_eq!(
        c.eviction_hard.imagefs_available, None,
        "a given evictionHard replaces the defaults"
    );
    assert_eq!(
        c.eviction_pressure_transition_period,
        Duration::from_secs(30)
    );
    assert_eq!(
        (
            c.image_gc_high_threshold_percent,
            c.image_gc_low_threshold_percent
        ),
        (90, 70)
    );
    assert_eq!(c.image_minimum_gc_age, Duration::from_secs(300));
    assert_eq!(c.image_maximum_gc_age, Duration::from_secs(86400));
    assert!(!c.serialize_image_pulls);
    assert_eq!(c.max_parallel_image_pulls, Some(3));
    assert_eq!(c.container_log_max_size, 50 << 20);
    assert_eq!(c.container_log_max_files, 3);
    assert_eq!(
        c.cluster_dns,
        vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.cluster_domain.as_deref(), Some("cluster.local"));
    assert_eq!(
        c.resolv_conf.as_deref(),
        Some(Path::new("/run/systemd/resolve/resolv.conf"))
    );
    assert_eq!(c.runtime_request_timeout, Duration::from_secs(600));
    assert_eq!(c.node_status_update_frequency, Duration::from_secs(20));
    assert!(c.memory_qos);
    assert_eq!(c.memory_throttling_factor, 0.8);
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
    assert_eq!(
        c.shutdown_grace_period_critical_pods,
        Duration::from_secs(10)
    );
    // capacity 4 cores / 8Gi: minus 600m; minus 256Mi + 1Gi + the 200Mi eviction threshold.
    assert_eq!(c.allocatable_cpu_millis(4000), 3400);
    assert_eq!(
        c.allocatable_memory(8 << 30),
        (8 << 30) - (256 << 20) - (1 << 30) - (200 << 20)
    );
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let mut c = AgentConfig::defaults("n");
    let text = format!("{HEADER}staticPodPath: manifests\nresolvConf: ../resolv.conf\n");
    c.apply_kubelet_config(&text, Path::new("/etc/capstan/kubelet.yaml"))
        .expect("valid");
    assert_eq!(
        c.static_pod_path.as_deref(),
        Some(Path::new("/etc/capstan/manifests"))
    );
    assert_eq!(
        c.resolv_conf.as_deref(),
        Some(Path::new("/etc/capstan/../resolv.conf"))
    );
    let text = format!("{HEADER}staticPodPath: ''\nresolvConf: ''\n");
    c.apply_kubelet_config(&text, Path::new("/etc/k.yaml"))
        .expect("valid");
    assert_eq!(
        (c.static_pod_path, c.resolv_conf),
        (None, None),
        "empty turns them off"
    );
}

#[test]
fn json_files_work_too() {
    let mut c = AgentConfig::defaults("n");
    let json = r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","maxPods":7,"readOnlyPort":0}"#;
    c.apply_kubelet_config(json, Path::new("k.json"))
        .expect("json");
    assert_eq!(c.max_pods, 7);
    assert_eq!(c.read_only_address, None, "readOnlyPort 0 turns it off");
}

#[test]
fn extra_fields_warn_by_name() {
    let (_, warnings) = from_yaml(
        "port: 10250\nenableServer: true\ntlsMinVersion: VersionTLS12\nstaticPodPth: /x\nsystemReserved: {hugepages-2Mi: 1Gi}\n",
    )
    .expect("extra fields are not errors");
    assert_eq!(
        warnings,
        vec![
            "enableServer: a KubeletConfiguration field Capstan does not apply; ignored",
            "staticPodPth: unknown field; ignored",
            "tlsMinVersion: a KubeletConfiguration field Capstan does not apply; ignored",
            "systemReserved.hugepages-2Mi: a KubeletConfiguration field Capstan does not apply; ignored",
        ]
    );
}

#[test]
fn header_is_checked() {
    let mut c = AgentConfig::defaults("n");
    let f = Path::new("k.yaml");
    let e = c
        .apply_kubelet_config("kind: KubeletConfiguration\n", f)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "k.yaml: apiVersion: Required value: must be \"kubelet.config.k8s.io/v1beta1\""
    );
    let e = c
        .apply_kubelet_config("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n", f)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "k.yaml: kind: Unsupported value: \"Pod\": supported values: \"KubeletConfiguration\""
    );
    let e = c.apply_kubelet_config("maxPods: [oops", f).unwrap_err();
    assert!(
        e.to_string().starts_with("k.yaml: not valid YAML or JSON"),
        "{e}"
    );
    let e = c.apply_kubelet_config("", f).unwrap_err();
    assert!(e.to_string().contains("kind: Required value"), "{e}");
}

#[test]
fn invalid_values_name_the_field() {
    let cases = [
        (
            "fileCheckFrequency: 20\n",
            "/etc/k.yaml: fileCheckFrequency: invalid type: integer `20`, expected a string",
        ),
        (
            "maxPods: lots\n",
            "/etc/k.yaml: maxPods: invalid type: string \"lots\", expected i64",
        ),
        (
            "evictionHard: {memory.available: 1}\n",
            "/etc/k.yaml: evictionHard.memory.available: invalid type: integer `1`, expected a string",
        ),
        (
            "imageGCLowThresholdPercent: 90\n",
            "/etc/k.yaml: imageGCLowThresholdPercent: 90 must be below imageGCHighThresholdPercent (85)",
        ),
        (
            "imageGCHighThresholdPercent: 101\n",
            "/etc/k.yaml: imageGCHighThresholdPercent: 101 must be between 0 and 100",
        ),
        (
            "cgroupDriver: systemd\n",
            "/etc/k.yaml: cgroupDriver: \"systemd\" is not supported: Capstan manages its cgroups directly; use cgroupDriver: cgroupfs",
        ),
        (
            "cgroupDriver: foo\n",
            "/etc/k.yaml: cgroupDriver: Unsupported value: \"foo\": supported values: \"cgroupfs\"",
        ),
        (
            "fileCheckFrequency: \"20\"\n",
            "/etc/k.yaml: fileCheckFrequency: \"20\" is not a duration (expected e.g. \"10s\", \"1m30s\", \"20ms\", \"1.5h\")",
        ),
        (
            "syncFrequency: 0s\n",
            "/etc/k.yaml: syncFrequency: 0s must be above 0",
        ),
        (
            "systemReserved: {memory: 1Gb}\n",
            "/etc/k.yaml: systemReserved.memory: \"1Gb\" has an unknown suffix \"Gb\" (known: n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, e<N>)",
        ),
        (
            "kubeReserved: {cpu: \"-1\"}\n",
            "/etc/k.yaml: kubeReserved.cpu: \"-1\" must not be negative",
        ),
        (
            "evictionHard: {memory.avail: 1Gi}\n",
            "/etc/k.yaml: evictionHard.memory.avail: unknown eviction signal (known: memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)",
        ),
        (
            "evictionHard: {nodefs.available: 150%}\n",
            "/etc/k.yaml: evictionHard.nodefs.available: \"150%\" must be between 0% and 100%",
        ),
        (
            "podCIDR: 10.0.0.0/40\n",
            "/etc/k.yaml: podCIDR: \"10.0.0.0/40\": prefix length 40 is above 32",
        ),
        (
            "address: localhost\n",
            "/etc/k.yaml: address: \"localhost\" is not an IP address",
        ),
        (
            "readOnlyPort: 70000\n",
            "/etc/k.yaml: readOnlyPort: 70000 must be between 0 and 65535",
        ),
        (
            "clusterDNS: [10.96.0.10, dns]\n",
            "/etc/k.yaml: clusterDNS[1]: \"dns\" is not an IP address",
        ),
        (
            "containerLogMaxFiles: 1\n",
            "/etc/k.yaml: containerLogMaxFiles: 1 must be at least 2",
        ),
        (
            "maxParallelImagePulls: 4\n",
            "/etc/k.yaml: maxParallelImagePulls: 4 must be 1 or unset while serializeImagePulls is true",
        ),
        (
            "podPidsLimit: -5\n",
            "/etc/k.yaml: podPidsLimit: -5 must be -1 (unlimited) or above",
        ),
        (
            "cgroupRoot: kubepods\n",
            "/etc/k.yaml: cgroupRoot: \"kubepods\" must be an absolute cgroup path (starting with /)",
        ),
        (
            "shutdownGracePeriodCriticalPods: 10s\n",
            "/etc/k.yaml: shutdownGracePeriodCriticalPods: 10s must not exceed shutdownGracePeriod (0s)",
        ),
        (
            "memoryThrottlingFactor: 1.5\n",
            "/etc/k.yaml: memoryThrottlingFactor: 1.5 must be above 0 and at most 1",
        ),
        (
            "imageMinimumGCAge: 10m\nimageMaximumGCAge: 5m\n",
            "/etc/k.yaml: imageMaximumGCAge: 5m0s must be above imageMinimumGCAge (10m0s)",
        ),
        (
            "clusterDomain: Cluster_Local\n",
            "/etc/k.yaml: clusterDomain: Invalid value: \"Cluster_Local\": a lowercase RFC 1123 subdomain",
        ),
    ];
    for (body, want) in cases {
        let got = error(body);
        assert!(
            got.starts_with(want),
            "for {body:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[test]
fn merge_default_eviction_settings() {
    let (c, _) = from_yaml("mergeDefaultEvictionSettings: true\nevictionHard: {memory.available: 1Gi, imagefs.available: 0%}\n")
        .expect("valid");
    assert_eq!(
        c.eviction_hard.memory_available,
        Some(Threshold::Quantity(1 << 30))
    );
    assert_eq!(
        c.eviction_hard.nodefs_available,
        Some(Threshold::Percent(10.0))
    );
    assert_eq!(
        c.eviction_hard.imagefs_available, None,
        "0% turns a signal off"
    );
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubelet.yaml");
    let mut f = std::fs::File::create(&path).expect("create");
    write!(
        f,
        "{HEADER}staticPodPath: /from/file\nmaxPods: 20\ncgroupRoot: /file\nreadOnlyPort: 10300\n"
    )
    .expect("write");
    let overrides = Overrides {
        pod_manifest_path: Some("/from/flag".into()),
        node_name: Some("Node-B".into()),
        read_only_address: Some("127.0.0.1:9999".parse::<SocketAddr>().unwrap()),
        kubelet_address: Some("127.0.0.1:0".parse::<SocketAddr>().unwrap()),
        root_dir: Some("/tmp/capstan-root".into()),
        pod_logs_dir: Some("/tmp/capstan-logs".into()),
        cgroup_root: Some("/flag".into()),
        object_manifest_path: Some("/objects".into()),
        max_pods: Some(30),
        container_runtime_endpoint: Some("unix:///run/containerd/containerd.sock".into()),
    };
    let c = AgentConfig::load(Some(&path), &overrides).expect("loads");
    assert_eq!(c.static_pod_path.as_deref(), Some(Path::new("/from/flag")));
    assert_eq!(c.node_name, "node-b", "lowercased like the kubelet");
    assert_eq!(c.pod_logs_dir, Path::new("/tmp/capstan-logs"));
    assert_eq!(c.read_only_address, Some("127.0.0.1:9999".parse().unwrap()));
    assert_eq!(c.kubelet_address, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.root_dir, Path::new("/tmp/capstan-root"));
    assert_eq!(c.cgroup_root.as_deref(), Some("/flag"));
    assert_eq!(
        c.object_manifest_path.as_deref(),
        Some(Path::new("/objects"))
    );
    assert_eq!(c.max_pods, 30);
    assert_eq!(
        c.container_runtime_endpoint.as_deref(),
        Some("unix:///run/containerd/containerd.sock")
    );

    // Without flags the file wins over the defaults.
    let c = AgentConfig::load(
        Some(&path),
        &Overrides {
            node_name: Some("n".into()),
            ..Default::default()
        },
    )
    .expect("loads");
    assert_eq!(c.static_pod_path.as_deref(), Some(Path::new("/from/file")));
    assert_eq!(c.max_pods, 20);
    assert_eq!(
        c.read_only_address,
        Some("127.0.0.1:10300".parse().unwrap())
    );

    let off = Overrides {
        node_name: Some("n".into()),
        pod_manifest_path: Some("".into()),
        read_only_address: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let c = AgentConfig::load(Some(&path), &off).expect("loads");
    assert_eq!(c.static_pod_path, None);
    assert_eq!(c.read_only_address, None);

    let e = AgentConfig::load(
        Some(&dir.path().join("missing.yaml")),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("missing.yaml: cannot read the configuration file"),
        "{e}"
    );
    let bad = Overrides {
        node_name: Some("bad_name".into()),
        ..Default::default()
    };
    let e = AgentConfig::load(None, &bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("configuration: nodeName: Invalid value: \"bad_name\""),
        "{e}"
    );
}

#[test]
fn default_node_name_is_the_host_name() {
    let name = host_node_name().expect("this host has a name");
    assert_eq!(name, name.to_lowercase());
    let c = AgentConfig::load(None, &Overrides::default()).expect("defaults load");
    assert_eq!(c.node_name, name);
}

#[test]
fn bad_flags_name_the_flag() {
    let mut c = AgentConfig::defaults("n");
    let relative = Overrides {
        cgroup_root: Some("kubepods".into()),
        ..Default::default()
    };
    assert_eq!(
        relative.apply(&mut c).unwrap_err().to_string(),
        "command line: --cgroup-root: \"kubepods\" must be an absolute cgroup path (starting with /)"
    );
    let empty = Overrides {
        node_name: Some(" ".into()),
        ..Default::default()
    };
    assert_eq!(
        empty.apply(&mut c).unwrap_err().to_string(),
        "command line: --hostname-override: must not be empty"
    );
    let relative_root = Overrides {
        root_dir: Some("var/lib".into()),
        ..Default::default()
    };
    relative_root.apply(&mut c).expect("applies");
    assert_eq!(
        c.validate("configuration").unwrap_err().to_string(),
        "configuration: --root-dir: var/lib must be an absolute path"
    );
}

#[test]
fn the_kubelet_endpoint_settings_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubelet.yaml");
    let c = AgentConfig::defaults("n");
    assert_eq!(c.kubelet_address, "0.0.0.0:10250".parse().unwrap());
    assert!(!c.anonymous_auth && c.webhook_authentication && !c.authorization_always_allow);
    std::fs::write(
        &path,
        format!(
            "{HEADER}address: 10.1.2.3\nport: 10260\ntlsCertFile: tls/k.crt\ntlsPrivateKeyFile: tls/k.key\nauthentication:\n  x509:\n    clientCAFile: /etc/ca.crt\n  anonymous:\n    enabled: true\n  webhook:\n    enabled: false\nauthorization:\n  mode: AlwaysAllow\n"
        ),
    )
    .unwrap();
    let c = AgentConfig::load(Some(&path), &Overrides::default()).expect("loads");
    assert_eq!(c.kubelet_address, "10.1.2.3:10260".parse().unwrap());
    assert_eq!(
        c.tls_files,
        Some((dir.path().join("tls/k.crt"), dir.path().join("tls/k.key")))
    );
    assert_eq!(c.client_ca_file.as_deref(), Some(Path::new("/etc/ca.crt")));
    assert!(c.anonymous_auth && !c.webhook_authentication && c.authorization_always_allow);

    std::fs::write(&path, format!("{HEADER}authorization:\n  mode: Node\n")).unwrap();
    let e = AgentConfig::load(Some(&path), &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("authorization.mode"), "{e}");
    std::fs::write(&path, format!("{HEADER}tlsCertFile: a.crt\n")).unwrap();
    let e = AgentConfig::load(Some(&path), &Overrides::default()).unwrap_err();
    assert!(e.to_string().contains("tlsPrivateKeyFile"), "{e}");
}
