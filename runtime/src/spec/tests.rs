//! End-to-end checks of [`generate_with`]: one realistic request serialised to JSON, and the
//! rules that cut across the submodules.

use super::devices::tests::FakeDevices;
use super::*;
use capstan_proto::{
    Capability as CriCaps, ContainerMetadata, Device, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, Mount as CriMount, MountPropagation,
    NamespaceMode, NamespaceOption, SecurityProfile, security_profile::ProfileType,
};
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
use serde_json::Value;

fn image() -> ImageConfiguration {
    ImageConfigurationBuilder::default()
        .config(
            ConfigBuilder::default()
                .entrypoint(vec!["/docker-entrypoint.sh".to_string()])
                .cmd(vec![
                    "nginx".to_string(),
                    "-g".to_string(),
                    "daemon off;".to_string(),
                ])
                .env(vec![
                    "PATH=/usr/sbin:/usr/bin".to_string(),
                    "NGINX_VERSION=1.27".to_string(),
                ])
                .working_dir("/srv")
                .user("nginx")
                .build()
                .expect("config"),
        )
        .build()
        .expect("image")
}

fn sandbox(o: NamespaceOption, privileged: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        hostname: "web-0".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/burstable/pod1".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(o),
                privileged,
                ..Default::default()
            }),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_ns() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "web".into(),
            attempt: 0,
        }),
        args: vec!["nginx-debug".into()],
        envs: vec![KeyValue {
            key: "NGINX_VERSION".into(),
            value: "custom".into(),
        }],
        mounts: vec![CriMount {
            container_path: "/var/log/nginx".into(),
            host_path: "/var/lib/kubelet/pods/1/volumes/logs".into(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }],
        devices: vec![Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rw".into(),
        }],
        annotations: [(
            "io.kubernetes.container.hash".to_string(),
            "abc".to_string(),
        )]
        .into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 256,
                cpu_quota: 20_000,
                cpu_period: 100_000,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: 984,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(pod_ns()),
                capabilities: Some(CriCaps {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["MKNOD".into()],
                    ..Default::default()
                }),
                run_as_group: Some(Int64Value { value: 3000 }),
                run_as_username: "nginx".into(),
                supplemental_groups: vec![5000],
                no_new_privs: true,
                readonly_rootfs: true,
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn inputs() -> SpecInputs {
    SpecInputs {
        rootfs: "/var/lib/capstan/containers/c1/rootfs".into(),
        cgroups_path: "/capstan/kubepods/burstable/pod1/c1".into(),
        namespace_paths: NamespacePaths {
            network: Some("/run/capstan/pods/p1/ns/net".into()),
            ipc: Some("/run/capstan/pods/p1/ns/ipc".into()),
            uts: Some("/run/capstan/pods/p1/ns/uts".into()),
            pid: None,
        },
        etc_passwd: Some("root:x:0:0::/root:/bin/sh\nnginx:x:101:101::/:/sbin/nologin\n".into()),
        etc_group: Some("root:x:0:\nnginx:x:101:\nwww:x:33:nginx\n".into()),
        resolv_conf_path: Some("/run/capstan/pods/p1/resolv.conf".into()),
        pids_limit: Some(4096),
        ..Default::default()
    }
}

#[test]
fn full_spec_serialises_with_the_expected_fields() {
    let spec = generate_with(
        &container(),
        &sandbox(pod_ns(), false),
        &image(),
        &inputs(),
        &FakeDevices,
    )
    .expect("spec");
    let json: Value = serde_json::to_value(&spec).expect("json");

    assert_eq!(json["ociVersion"], oci_spec::runtime::VERSION);
    assert_eq!(
        json["root"]["path"],
        "/var/lib/capstan/containers/c1/rootfs"
    );
    assert_eq!(json["root"]["readonly"], true);
    assert_eq!(json["hostname"], "web-0");
    assert_eq!(json["annotations"]["io.kubernetes.container.hash"], "abc");

    let p = &json["process"];
    assert_eq!(
        p["args"],
        serde_json::json!(["/docker-entrypoint.sh", "nginx-debug"])
    );
    assert_eq!(
        p["env"],
        serde_json::json!([
            "PATH=/usr/sbin:/usr/bin",
            "NGINX_VERSION=custom",
            "HOSTNAME=web-0"
        ])
    );
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["user"]["uid"], 101);
    assert_eq!(p["user"]["gid"], 3000);
    assert_eq!(
        p["user"]["additionalGids"],
        serde_json::json!([3000, 33, 5000])
    );
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(p["oomScoreAdj"], 984);
    assert!(
        p.get("rlimits").is_none(),
        "no sample rlimits from oci-spec's defaults"
    );
    assert!(p.get("apparmorProfile").is_none() && p.get("selinuxLabel").is_none());
    assert!(json.get("domainname").is_none() && json.get("hooks").is_none());
    let eff: Vec<&str> = p["capabilities"]["effective"]
        .as_array()
        .expect("caps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        eff.contains(&"CAP_NET_ADMIN") && !eff.contains(&"CAP_MKNOD"),
        "{eff:?}"
    );

    let l = &json["linux"];
    assert_eq!(l["cgroupsPath"], "/capstan/kubepods/burstable/pod1/c1");
    assert_eq!(l["resources"]["cpu"]["shares"], 256);
    assert_eq!(l["resources"]["cpu"]["quota"], 20_000);
    assert_eq!(l["resources"]["memory"]["limit"], 128 << 20);
    assert_eq!(l["resources"]["pids"]["limit"], 4096);
    assert_eq!(l["resources"]["devices"][0]["allow"], false);
    assert_eq!(l["resources"]["devices"][1]["major"], 10);
    assert_eq!(l["devices"][0]["path"], "/dev/fuse");
    assert!(
        l["sysctl"]
            .get("net.ipv4.ip_unprivileged_port_start")
            .is_none(),
        "net.* sysctls are the pod network's, set when it is made"
    );
    assert_eq!(l["rootfsPropagation"], "slave");
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert!(
        l["maskedPaths"]
            .as_array()
            .is_some_and(|a| a.contains(&"/proc/kcore".into()))
    );
    assert!(
        l["readonlyPaths"]
            .as_array()
            .is_some_and(|a| a.contains(&"/proc/sys".into()))
    );
    let ns: Vec<(&str, Option<&str>)> = l["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| (n["type"].as_str().unwrap_or(""), n["path"].as_str()))
        .collect();
    assert_eq!(
        ns,
        [
            ("mount", None),
            ("network", Some("/run/capstan/pods/p1/ns/net")),
            ("uts", Some("/run/capstan/pods/p1/ns/uts")),
            ("ipc", Some("/run/capstan/pods/p1/ns/ipc")),
            ("pid", None),
        ]
    );

    let mounts = json["mounts"].as_array().expect("mounts");
    let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).cloned();
    assert_eq!(find("/sys").expect("sys")["options"][3], "ro");
    let logs = find("/var/log/nginx").expect("logs");
    assert_eq!(logs["type"], "bind");
    assert_eq!(
        logs["options"],
        serde_json::json!(["rbind", "rslave", "rw"])
    );
    assert_eq!(
        find("/etc/resolv.conf").expect("resolv")["options"][2],
        "ro"
    );

    // The JSON reads back as the same spec, so what the monitor writes is what libcontainer gets.
    let back: Spec = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, spec);
}

#[test]
fn libcontainer_validator_accepts_generated_specs() {
    // The validator opens the network namespace to check net.* sysctls against it, so the
    // paths must exist: this process's own namespaces stand in for the pod's, and the sysctls
    // (which it would then see as host-network ones) are left out.
    let mut i = inputs();
    i.namespace_paths = NamespacePaths {
        network: Some("/proc/self/ns/net".into()),
        ipc: Some("/proc/self/ns/ipc".into()),
        uts: Some("/proc/self/ns/uts".into()),
        pid: Some("/proc/self/ns/pid".into()),
    };
    let shared_pid = NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..pod_ns()
    };
    for (o, privileged) in [(pod_ns(), false), (shared_pid, true)] {
        let mut c = container();
        if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.namespace_options = Some(o.clone());
            sc.privileged = privileged;
        }
        let mut sb = sandbox(o, privileged);
        if let Some(l) = sb.linux.as_mut() {
            l.sysctls.clear();
        }
        let spec = generate_with(&c, &sb, &image(), &i, &FakeDevices).expect("spec");
        libcontainer::validator::Validator::validate_spec(&spec).expect("libcontainer accepts it");
    }
}

#[test]
fn privileged_container() {
    let mut c = container();
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let err = generate_with(
        &c,
        &sandbox(pod_ns(), false),
        &image(),
        &inputs(),
        &FakeDevices,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("linux.security_context.privileged: "),
        "{err}"
    );

    let spec = generate_with(
        &c,
        &sandbox(pod_ns(), true),
        &image(),
        &inputs(),
        &FakeDevices,
    )
    .expect("spec");
    let linux = spec.linux().as_ref().expect("linux");
    assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(0));
    assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(0));
    assert!(linux.seccomp().is_none());
    let rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .expect("rules");
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert_eq!(linux.devices().as_ref().map(Vec::len), Some(4));
    let caps = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().clone())
        .expect("caps");
    assert!(
        caps.effective()
            .as_ref()
            .is_some_and(|e| e.contains(&Capability::SysAdmin))
    );
}

#[test]
fn host_network_pod_has_no_hostname_or_net_namespace() {
    let host = NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        ..Default::default()
    };
    let mut c = container();
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.namespace_options = Some(host.clone());
    }
    let mut sb = sandbox(host, false);
    if let Some(l) = sb.linux.as_mut() {
        l.sysctls.clear();
    }
    let spec = generate_with(&c, &sb, &image(), &inputs(), &FakeDevices).expect("spec");
    assert!(spec.hostname().is_none());
    libcontainer::validator::Validator::validate_spec(&spec).expect("libcontainer accepts it");
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .expect("ns");
    assert_eq!(ns.len(), 1, "{ns:?}");
    assert_eq!(ns[0].typ(), LinuxNamespaceType::Mount);
}

#[test]
fn relative_cgroups_path_is_refused() {
    let mut i = inputs();
    i.cgroups_path = "kubepods/pod1/c1".into();
    let err = generate_with(
        &container(),
        &sandbox(pod_ns(), false),
        &image(),
        &i,
        &FakeDevices,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SpecError::Input {
            input: "cgroups_path",
            ..
        }
    ));
    assert!(!err.is_invalid_argument());
}

#[test]
fn unresolvable_user_is_invalid_argument() {
    let mut i = inputs();
    i.etc_passwd = None;
    let err = generate_with(
        &container(),
        &sandbox(pod_ns(), false),
        &image(),
        &i,
        &FakeDevices,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "linux.security_context.run_as_username: user \"nginx\" not found in the image's /etc/passwd"
    );
    assert!(err.is_invalid_argument());
}

use oci_spec::runtime::{Capability, LinuxNamespaceType};
