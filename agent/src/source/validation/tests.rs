use super::*;
use crate::source::apply_defaults;

/// The errors of a pod given as YAML (after the defaults, as the file source runs them).
fn errors(yaml: &str) -> Vec<String> {
    let mut pod: Pod = serde_yaml_ng::from_str(yaml).expect("test pod parses");
    apply_defaults(&mut pod);
    validate_pod(&pod).iter().map(ToString::to_string).collect()
}

/// Asserts that `spec` (YAML for the pod's spec) yields exactly `want`.
fn check(spec: &str, want: &[&str]) {
    let got = errors(&format!("metadata: {{name: p}}\nspec:\n{spec}"));
    assert_eq!(got, want, "for spec:\n{spec}");
}

const OK: &str = "  containers: [{name: a, image: busybox}]\n";

#[test]
fn a_minimal_pod_is_valid() {
    check(OK, &[]);
}

#[test]
fn metadata() {
    assert_eq!(
        errors("spec: {containers: [{name: a, image: x}]}"),
        ["metadata.name: Required value: name or generateName is required"]
    );
    let got = errors("metadata: {name: Foo_bar}\nspec: {containers: [{name: a, image: x}]}");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(
            "metadata.name: Invalid value: \"Foo_bar\": a lowercase RFC 1123 subdomain must consist of"
        ),
        "{got:?}"
    );
    let got = errors(
        "metadata: {name: p, namespace: kube.system}\nspec: {containers: [{name: a, image: x}]}",
    );
    assert!(
        got[0].starts_with(
            "metadata.namespace: Invalid value: \"kube.system\": a lowercase RFC 1123 label"
        ),
        "{got:?}"
    );
    assert_eq!(errors("metadata: {name: p}"), ["spec: Required value"]);
}

#[test]
fn containers() {
    check("  containers: []\n", &["spec.containers: Required value"]);
    check(
        "  containers: [{name: a}]\n",
        &["spec.containers[0].image: Required value"],
    );
    check(
        "  containers: [{name: a, image: ' busybox'}]\n",
        &[
            "spec.containers[0].image: Invalid value: \" busybox\": must not have leading or trailing whitespace",
        ],
    );
    check(
        "  containers: [{name: a, image: x}, {name: a, image: y}]\n",
        &["spec.containers[1].name: Duplicate value: \"a\""],
    );
    check(
        "  initContainers: [{name: a, image: x}]\n  containers: [{name: a, image: y}]\n",
        &["spec.containers[0].name: Duplicate value: \"a\""],
    );
    let got = errors("metadata: {name: p}\nspec: {containers: [{name: Web, image: x}]}");
    assert!(
        got[0].starts_with(
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
        ),
        "{got:?}"
    );
    check(
        "  containers: [{name: a, image: x, imagePullPolicy: Sometimes}]\n",
        &[
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
        ],
    );
    check(
        "  containers: [{name: a, image: x, restartPolicy: Always}]\n",
        &["spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"],
    );
}

#[test]
fn init_containers() {
    check(
        "  initContainers: [{name: i, image: x, restartPolicy: Never}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ],
    );
    check(
        "  initContainers: [{name: i, image: x, readinessProbe: {exec: {command: [true]}}}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
        ],
    );
    // A sidecar may have probes and hooks.
    check(
        "  initContainers: [{name: i, image: x, restartPolicy: Always, readinessProbe: {exec: {command: [true]}}, lifecycle: {preStop: {sleep: {seconds: 1}}}}]\n  containers: [{name: a, image: x}]\n",
        &[],
    );
}

#[test]
fn ports() {
    check(
        "  containers: [{name: a, image: x, ports: [{containerPort: 70000}]}]\n",
        &[
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ],
    );
    check(
        "  containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: -1}]}]\n",
        &[
            "spec.containers[0].ports[0].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
        ],
    );
    check(
        "  containers: [{name: a, image: x, ports: [{containerPort: 80, protocol: HTTP}]}]\n",
        &[
            "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ],
    );
    check(
        "  hostNetwork: true\n  containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 8080}]}]\n",
        &[
            "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true",
        ],
    );
    check(
        "  containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080, protocol: UDP}]}, {name: b, image: x, ports: [{containerPort: 82, hostPort: 8080}]}]\n",
        &["spec.containers[1].ports[0].hostPort: Duplicate value: \"8080/TCP\""],
    );
    check(
        "  containers: [{name: a, image: x, ports: [{containerPort: 80, name: Http}]}]\n",
        &[
            "spec.containers[0].ports[0].name: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ],
    );
}

#[test]
fn volumes_and_mounts() {
    check(
        "  containers: [{name: a, image: x, volumeMounts: [{name: data, mountPath: /data}]}]\n",
        &["spec.containers[0].volumeMounts[0].name: Not found: \"data\""],
    );
    check(
        "  volumes: [{name: d}]\n  containers: [{name: a, image: x, volumeMounts: [{name: d, mountPath: /d}, {name: d, mountPath: /d}]}]\n",
        &["spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique"],
    );
    check(
        "  volumes: [{name: d}]\n  containers: [{name: a, image: x, volumeMounts: [{name: d, mountPath: /d, subPath: ../etc}]}]\n",
        &[
            "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../etc\": must not contain '..'",
        ],
    );
    check(
        "  volumes: [{name: d}, {name: d}]\n  containers: [{name: a, image: x}]\n",
        &["spec.volumes[1].name: Duplicate value: \"d\""],
    );
    check(
        "  volumes: [{name: d, emptyDir: {}, hostPath: {path: /x}}]\n  containers: [{name: a, image: x}]\n",
        &["spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"],
    );
    check(
        "  volumes: [{name: d, persistentVolumeClaim: {claimName: c}}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.volumes[0]: Unsupported value: \"persistentVolumeClaim\": supported values: \"configMap\", \"downwardAPI\", \"emptyDir\", \"hostPath\", \"projected\", \"secret\"",
        ],
    );
    check(
        "  volumes: [{name: d, hostPath: {path: /x, type: Dir}}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.volumes[0].hostPath.type: Unsupported value: \"Dir\": supported values: \"\", \"DirectoryOrCreate\", \"Directory\", \"FileOrCreate\", \"File\", \"Socket\", \"CharDevice\", \"BlockDevice\"",
        ],
    );
    check(
        "  volumes: [{name: d, configMap: {name: c, defaultMode: 1000}}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
        ],
    );
    check(
        "  volumes: [{name: d, secret: {items: [{key: k, path: /abs}]}}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.volumes[0].secret.secretName: Required value",
            "spec.volumes[0].secret.items[0].path: Invalid value: \"/abs\": must be a relative path",
        ],
    );
    check(
        "  volumes: [{name: d, emptyDir: {medium: Disk, sizeLimit: lots}}]\n  containers: [{name: a, image: x}]\n",
        &[
            "spec.volumes[0].emptyDir.medium: Unsupported value: \"Disk\": supported values: \"\", \"Memory\", \"HugePages\"",
            "spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ],
    );
}

#[test]
fn pod_level_fields() {
    check(
        &format!("  restartPolicy: Sometimes\n{OK}"),
        &[
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ],
    );
    check(
        &format!("  terminationGracePeriodSeconds: -1\n{OK}"),
        &[
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
        ],
    );
    check(
        &format!("  dnsPolicy: Google\n{OK}"),
        &[
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
        ],
    );
    check(
        &format!("  dnsPolicy: None\n{OK}"),
        &[
            "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None",
        ],
    );
    check(
        &format!("  activeDeadlineSeconds: 0\n{OK}"),
        &[
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
        ],
    );
}

#[test]
fn probes() {
    check(
        "  containers: [{name: a, image: x, livenessProbe: {exec: {command: [true]}, tcpSocket: {port: 80}}}]\n",
        &[
            "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
        ],
    );
    check(
        "  containers: [{name: a, image: x, readinessProbe: {periodSeconds: 5}}]\n",
        &["spec.containers[0].readinessProbe: Required value: must specify a handler type"],
    );
    check(
        "  containers: [{name: a, image: x, livenessProbe: {tcpSocket: {port: 80}, successThreshold: 2}}]\n",
        &["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"],
    );
    check(
        "  containers: [{name: a, image: x, startupProbe: {tcpSocket: {port: 80}, successThreshold: 3}}]\n",
        &["spec.containers[0].startupProbe.successThreshold: Invalid value: 3: must be 1"],
    );
    // Readiness may need several successes.
    check(
        "  containers: [{name: a, image: x, readinessProbe: {tcpSocket: {port: 80}, successThreshold: 3}}]\n",
        &[],
    );
    check(
        "  containers: [{name: a, image: x, livenessProbe: {httpGet: {port: 0, scheme: FTP}, periodSeconds: -1}}]\n",
        &[
            "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].livenessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
            "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
        ],
    );
    check(
        "  containers: [{name: a, image: x, livenessProbe: {exec: {}, terminationGracePeriodSeconds: 0}}]\n",
        &[
            "spec.containers[0].livenessProbe.exec.command: Required value",
            "spec.containers[0].livenessProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0",
        ],
    );
}

#[test]
fn hooks_env_and_resources() {
    check(
        "  containers: [{name: a, image: x, lifecycle: {preStop: {sleep: {seconds: -2}}}}]\n",
        &[
            "spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: -2: must be greater than or equal to 0",
        ],
    );
    check(
        "  containers: [{name: a, image: x, lifecycle: {postStart: {}}}]\n",
        &["spec.containers[0].lifecycle.postStart: Required value: must specify a handler type"],
    );
    check(
        "  containers: [{name: a, image: x, env: [{name: A, value: v, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]}]\n",
        &[
            "spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
        ],
    );
    check(
        "  containers: [{name: a, image: x, resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}]\n",
        &[
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        ],
    );
    check(
        "  containers: [{name: a, image: x, resources: {limits: {memory: 1GB}}}]\n",
        &[
            "spec.containers[0].resources.limits[memory]: Invalid value: \"1GB\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ],
    );
}
