//! The pod's managed `/etc/hosts`, as the kubelet writes it to `<pod_dir>/etc-hosts` and
//! mounts it into every container: localhost entries, the pod's own name on its IPs, and
//! `hostAliases`. A hostNetwork pod gets the host's file instead, plus its aliases.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use capstan_proto::Mount;
use k8s_openapi::api::core::v1::{Container, Pod};

/// Where in the container the file goes.
pub const ETC_HOSTS: &str = "/etc/hosts";

/// The hosts file of the pod.
pub fn etc_hosts_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("etc-hosts")
}

/// The pod's hostname: spec.hostname, else its name (at most 63 characters, as a DNS label).
pub fn pod_hostname(pod: &Pod) -> String {
    let spec_name = pod.spec.as_ref().and_then(|s| s.hostname.clone());
    let name = spec_name
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

fn managed_content(pod: &Pod, pod_ips: &[IpAddr], cluster_domain: &str) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    let hostname = pod_hostname(pod);
    let subdomain = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty());
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for ip in pod_ips {
        match &subdomain {
            Some(sub) => out.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{namespace}.svc.{cluster_domain}\t{hostname}\n"
            )),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref());
    let mut out = String::new();
    for alias in aliases.into_iter().flatten() {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        if out.is_empty() {
            out.push_str("\n# Entries added by HostAliases.\n");
        }
        out.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    out
}

/// Writes the pod's hosts file and returns the mount for `container`, or None where the
/// kubelet mounts none: before the pod has an IP, or when the container mounts something at
/// /etc/hosts itself. `host_hosts` is the host's own file, used for hostNetwork pods.
pub fn etc_hosts_mount(
    pod_dir: &Path,
    pod: &Pod,
    container: &Container,
    pod_ips: &[IpAddr],
    cluster_domain: &str,
    host_hosts: &Path,
) -> io::Result<Option<Mount>> {
    let own = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == ETC_HOSTS);
    if own || pod_ips.is_empty() {
        return Ok(None);
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let mut content = if host_network {
        let mut text = String::from("# Kubernetes-managed hosts file (host network).\n");
        text.push_str(&fs::read_to_string(host_hosts)?);
        text
    } else {
        managed_content(pod, pod_ips, cluster_domain)
    };
    content.push_str(&host_aliases(pod));
    let path = etc_hosts_path(pod_dir);
    fs::create_dir_all(pod_dir)?;
    // Written beside and renamed, so a container starting now never reads half a file.
    let tmp = pod_dir.join(".etc-hosts.tmp");
    fs::write(&tmp, content)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, &path)?;
    Ok(Some(Mount {
        container_path: ETC_HOSTS.to_string(),
        host_path: path.to_string_lossy().into_owned(),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("test pod parses")
    }

    #[test]
    fn managed_and_host_network_files() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  hostname: box
  subdomain: sub
  hostAliases: [{ip: 10.9.9.9, hostnames: [db, db.local]}]
  containers: [{name: a, image: x}, {name: b, image: x, volumeMounts: [{name: v, mountPath: /etc/hosts}]}]
"#);
        let ips: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap()];
        let host_file = tmp.path().join("hosts");
        fs::write(&host_file, "1.2.3.4\thostbox\n").unwrap();
        let a = &p.spec.as_ref().unwrap().containers[0];
        let b = &p.spec.as_ref().unwrap().containers[1];
        let m = etc_hosts_mount(tmp.path(), &p, a, &ips, "cluster.local", &host_file)
            .unwrap()
            .unwrap();
        assert_eq!(m.container_path, "/etc/hosts");
        let text = fs::read_to_string(&m.host_path).unwrap();
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.1.0.5\tbox.sub.ns.svc.cluster.local\tbox\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n10.9.9.9\tdb\tdb.local\n"));
        assert!(
            etc_hosts_mount(tmp.path(), &p, b, &ips, "cluster.local", &host_file)
                .unwrap()
                .is_none()
        );
        assert!(
            etc_hosts_mount(tmp.path(), &p, a, &[], "cluster.local", &host_file)
                .unwrap()
                .is_none()
        );

        let hn = pod(r#"
metadata: {name: web, namespace: ns}
spec: {hostNetwork: true, containers: [{name: a, image: x}]}
"#);
        let a = &hn.spec.as_ref().unwrap().containers[0];
        let m = etc_hosts_mount(tmp.path(), &hn, a, &ips, "cluster.local", &host_file)
            .unwrap()
            .unwrap();
        let text = fs::read_to_string(&m.host_path).unwrap();
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file (host network).\n1.2.3.4\thostbox\n"
        );
    }
}
