//! Admission: whether a pod fits the node (allocatable cpu and memory, pod count, host ports),
//! with the kubelet's rejection reasons.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use crate::pods::resources;

/// What the node can give to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    /// Millicores.
    pub cpu_millis: i64,
    /// Bytes.
    pub memory: i64,
    /// Pod count.
    pub pods: i64,
}

/// A rejection: reason (OutOfcpu, OutOfmemory, OutOfpods, HostPortConflict...) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kubelet's reason word.
    pub reason: String,
    /// A sentence naming what did not fit.
    pub message: String,
}

fn host_ports(pod: &Pod) -> BTreeSet<(String, i32)> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
        })
        .collect()
}

/// Whether `pod` may run beside the already admitted `running` pods.
pub fn admit(pod: &Pod, running: &[&Pod], allocatable: Allocatable) -> Result<(), Rejection> {
    if running.len() as i64 + 1 > allocatable.pods {
        return Err(Rejection {
            reason: "OutOfpods".into(),
            message: format!(
                "Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
                running.len(),
                allocatable.pods
            ),
        });
    }
    let wanted = resources::pod_requests(pod);
    let used = running.iter().fold((0, 0), |(cpu, mem), p| {
        let r = resources::pod_requests(p);
        (cpu + r.cpu_millis.unwrap_or(0), mem + r.memory.unwrap_or(0))
    });
    let cpu = wanted.cpu_millis.unwrap_or(0);
    if cpu > 0 && used.0 + cpu > allocatable.cpu_millis {
        return Err(Rejection {
            reason: "OutOfcpu".into(),
            message: format!(
                "Node didn't have enough resource: cpu, requested: {cpu}, used: {}, capacity: {}",
                used.0, allocatable.cpu_millis
            ),
        });
    }
    let memory = wanted.memory.unwrap_or(0);
    if memory > 0 && used.1 + memory > allocatable.memory {
        return Err(Rejection {
            reason: "OutOfmemory".into(),
            message: format!(
                "Node didn't have enough resource: memory, requested: {memory}, used: {}, capacity: {}",
                used.1, allocatable.memory
            ),
        });
    }
    let mine = host_ports(pod);
    for other in running {
        if let Some((protocol, port)) = host_ports(other).intersection(&mine).next() {
            return Err(Rejection {
                reason: "HostPortConflict".into(),
                message: format!(
                    "Pod was rejected: host port {port}/{protocol} is already used by pod {}",
                    other.metadata.name.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("test pod parses")
    }

    const NODE: Allocatable = Allocatable {
        cpu_millis: 2000,
        memory: 1 << 30,
        pods: 3,
    };

    #[test]
    fn rejections_name_the_resource() {
        let big = pod(
            "metadata: {name: a}\nspec: {containers: [{name: a, image: x, resources: {requests: {cpu: '1500m'}}}]}",
        );
        assert_eq!(admit(&big, &[], NODE), Ok(()));
        let again = admit(&big, &[&big], NODE).unwrap_err();
        assert_eq!(again.reason, "OutOfcpu");
        assert!(
            again
                .message
                .contains("requested: 1500, used: 1500, capacity: 2000"),
            "{}",
            again.message
        );
        let mem =
            pod("spec: {containers: [{name: a, image: x, resources: {requests: {memory: 2Gi}}}]}");
        assert_eq!(admit(&mem, &[], NODE).unwrap_err().reason, "OutOfmemory");
        let small = pod("spec: {containers: [{name: a, image: x}]}");
        assert_eq!(
            admit(&small, &[&small, &small, &small], NODE)
                .unwrap_err()
                .reason,
            "OutOfpods"
        );
    }

    #[test]
    fn host_port_conflicts() {
        let a = pod(
            "metadata: {name: a}\nspec: {containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 8080}]}]}",
        );
        let b = pod(
            "metadata: {name: b}\nspec: {containers: [{name: b, image: x, ports: [{containerPort: 81, hostPort: 8080}]}]}",
        );
        let udp = pod(
            "metadata: {name: c}\nspec: {containers: [{name: c, image: x, ports: [{containerPort: 81, hostPort: 8080, protocol: UDP}]}]}",
        );
        assert_eq!(
            admit(&b, &[&a], NODE).unwrap_err().reason,
            "HostPortConflict"
        );
        assert_eq!(admit(&udp, &[&a], NODE), Ok(()));
    }
}
