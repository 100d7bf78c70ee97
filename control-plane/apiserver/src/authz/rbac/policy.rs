//! The bootstrap policy as data: the ClusterRoles, ClusterRoleBindings and the Roles and
//! RoleBindings of kube-system and kube-public that kube-apiserver makes at start (its
//! `bootstrappolicy` package), with their rules as upstream v1.33 has them.

use super::rules::PolicyRule;

/// A ClusterRole (or Role) of the bootstrap policy.
pub struct BootstrapRole {
    /// The name.
    pub name: &'static str,
    /// The namespace of a Role; empty for a ClusterRole.
    pub namespace: &'static str,
    /// Labels besides `kubernetes.io/bootstrapping: rbac-defaults`.
    pub labels: &'static [(&'static str, &'static str)],
    /// The `aggregate-to-*` label value whose roles this one aggregates, if it aggregates.
    pub aggregates: Option<&'static str>,
    /// The rules.
    pub rules: Vec<PolicyRule>,
}

/// A ClusterRoleBinding (or RoleBinding) of the bootstrap policy.
pub struct BootstrapBinding {
    /// The binding's name.
    pub name: &'static str,
    /// The namespace of a RoleBinding (which binds the Role `role` of that namespace); empty
    /// for a ClusterRoleBinding.
    pub namespace: &'static str,
    /// The role bound.
    pub role: &'static str,
    /// The subjects: kind, name, namespace (ServiceAccounts only).
    pub subjects: &'static [(&'static str, &'static str, &'static str)],
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const EVENTS: &[&str] = &["", "events.k8s.io"];
const EVENT_VERBS: &[&str] = &["create", "patch", "update"];
/// The label key prefix of aggregation.
pub const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule::resource(verbs, groups, resources)
}

fn n(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule::non_resource(verbs, urls)
}

fn role(name: &'static str, rules: Vec<PolicyRule>) -> BootstrapRole {
    BootstrapRole {
        name,
        namespace: "",
        labels: &[],
        aggregates: None,
        rules,
    }
}

fn approver(name: &'static str, signer: &'static str) -> BootstrapRole {
    role(
        name,
        vec![r(&["approve"], &["certificates.k8s.io"], &["signers"]).named(&[signer])],
    )
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<BootstrapRole> {
    let aggregated = |name, labels, aggregates| BootstrapRole {
        name,
        namespace: "",
        labels,
        aggregates: Some(aggregates),
        rules: Vec::new(),
    };
    let labelled = |name, labels, rules| BootstrapRole {
        name,
        namespace: "",
        labels,
        aggregates: None,
        rules,
    };
    vec![
        role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), n(&["*"], &["*"])],
        ),
        aggregated("admin", &[], "admin"),
        aggregated(
            "edit",
            &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
            "edit",
        ),
        aggregated(
            "view",
            &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
            "view",
        ),
        labelled(
            "system:aggregate-to-admin",
            &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(
                    READ_WRITE,
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
            ],
        ),
        labelled(
            "system:aggregate-to-edit",
            &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                r(&["create"], &[""], &["pods/eviction"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["cronjobs", "jobs"]),
                r(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "ingresses",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                    ],
                ),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                r(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        labelled(
            "system:aggregate-to-view",
            &[("rbac.authorization.k8s.io/aggregate-to-view", "true")],
            vec![
                r(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                r(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                    ],
                ),
                r(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        role(
            "system:auth-delegator",
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![r(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        approver(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            "kubernetes.io/kube-apiserver-client",
        ),
        approver(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        approver(
            "system:certificates.k8s.io:kubelet-serving-approver",
            "kubernetes.io/kubelet-serving",
        ),
        approver(
            "system:certificates.k8s.io:legacy-unknown-approver",
            "kubernetes.io/legacy-unknown",
        ),
        role(
            "system:discovery",
            vec![n(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:heapster",
            vec![
                r(READ, &[""], &["events", "namespaces", "nodes", "pods"]),
                r(READ, &["extensions"], &["deployments"]),
            ],
        ),
        role(
            "system:kube-aggregator",
            vec![r(READ, &[""], &["endpoints", "services"])],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                r(EVENT_VERBS, EVENTS, &["events"]),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                r(&["get", "update"], &["coordination.k8s.io"], &["leases"])
                    .named(&["kube-controller-manager"]),
                r(&["create"], &[""], &["secrets", "serviceaccounts"]),
                r(&["delete"], &[""], &["secrets"]),
                r(
                    &["get"],
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                r(&["update"], &[""], &["secrets", "serviceaccounts"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role(
            "system:kube-dns",
            vec![r(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        role(
            "system:kube-scheduler",
            vec![
                r(EVENT_VERBS, EVENTS, &["events"]),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                r(&["get", "update"], &["coordination.k8s.io"], &["leases"])
                    .named(&["kube-scheduler"]),
                r(READ, &[""], &["nodes"]),
                r(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                r(&["create"], &[""], &["bindings", "pods/binding"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(READ, &[""], &["replicationcontrollers", "services"]),
                r(READ, &["apps", "extensions"], &["replicasets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(
                    READ,
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                r(READ, &["storage.k8s.io"], &["csinodes"]),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
                r(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
            ],
        ),
        role(
            "system:kubelet-api-admin",
            vec![
                r(READ, &[""], &["nodes"]),
                r(&["proxy"], &[""], &["nodes"]),
                r(
                    &["*"],
                    &[""],
                    &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"],
                ),
            ],
        ),
        role(
            "system:monitoring",
            vec![n(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        role(
            "system:node",
            vec![
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                ),
                r(READ, &[""], &["services"]),
                r(&["create", "get", "list", "watch"], &[""], &["nodes"]),
                r(&["patch", "update"], &[""], &["nodes/status"]),
                r(&["patch", "update"], &[""], &["nodes"]),
                r(EVENT_VERBS, &[""], &["events"]),
                r(READ, &[""], &["pods"]),
                r(&["create", "delete"], &[""], &["pods"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(&["create"], &[""], &["pods/eviction"]),
                r(READ, &[""], &["configmaps", "secrets"]),
                r(
                    &["get"],
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                r(&["get"], &[""], &["endpoints"]),
                r(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                r(
                    &["create", "delete", "get", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                r(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    &["get", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims/status"],
                ),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
                r(
                    &["create", "delete", "get", "patch", "update"],
                    &["storage.k8s.io"],
                    &["csinodes"],
                ),
                r(READ, &["node.k8s.io"], &["runtimeclasses"]),
            ],
        ),
        role(
            "system:node-bootstrapper",
            vec![r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:node-problem-detector",
            vec![
                r(&["get"], &[""], &["nodes"]),
                r(&["patch"], &[""], &["nodes/status"]),
                r(EVENT_VERBS, EVENTS, &["events"]),
            ],
        ),
        role(
            "system:node-proxier",
            vec![
                r(&["list", "watch"], &[""], &["endpoints", "services"]),
                r(READ, &[""], &["nodes"]),
                r(EVENT_VERBS, EVENTS, &["events"]),
                r(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        role(
            "system:persistent-volume-provisioner",
            vec![
                r(
                    &["create", "delete", "get", "list", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(
                    &["get", "list", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(&["watch"], &[""], &["events"]),
                r(EVENT_VERBS, EVENTS, &["events"]),
            ],
        ),
        role(
            "system:public-info-viewer",
            vec![n(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![n(
                &["get"],
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
            )],
        ),
        role(
            "system:volume-scheduler",
            vec![
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                r(READ, &["storage.k8s.io"], &["storageclasses"]),
                r(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<BootstrapBinding> {
    let one = |name, role, subjects| BootstrapBinding {
        name,
        namespace: "",
        role,
        subjects,
    };
    vec![
        one(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters", "")],
        ),
        one(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated", "")],
        ),
        one(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated", "")],
        ),
        one(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager", "")],
        ),
        one(
            "system:kube-dns",
            "system:kube-dns",
            &[("ServiceAccount", "kube-dns", "kube-system")],
        ),
        one(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler", "")],
        ),
        one(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring", "")],
        ),
        one("system:node", "system:node", &[]),
        one(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy", "")],
        ),
        // Capstan's service proxy runs inside the node agent, under the node's identity
        // rather than kube-proxy's own user: every node gets kube-proxy's read access.
        one(
            "capstan:node-proxier",
            "system:node-proxier",
            &[("Group", "system:nodes", "")],
        ),
        one(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated", ""),
                ("Group", "system:unauthenticated", ""),
            ],
        ),
        one(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts", "")],
        ),
        one(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler", "")],
        ),
    ]
}

/// The bootstrap Roles of kube-system and kube-public.
pub fn namespace_roles() -> Vec<BootstrapRole> {
    let local = |namespace, name, rules| BootstrapRole {
        name,
        namespace,
        labels: &[],
        aggregates: None,
        rules,
    };
    let leader_locking = |name| {
        local(
            "kube-system",
            name,
            vec![
                r(
                    &["create", "get", "list", "update", "watch"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                r(
                    &["create", "get", "list", "update", "watch"],
                    &["coordination.k8s.io"],
                    &["leasecandidates"],
                ),
            ],
        )
    };
    vec![
        local(
            "kube-public",
            "system:controller:bootstrap-signer",
            vec![
                r(READ, &[""], &["configmaps"]),
                r(&["update"], &[""], &["configmaps"]).named(&["cluster-info"]),
                r(EVENT_VERBS, EVENTS, &["events"]),
            ],
        ),
        local(
            "kube-system",
            "extension-apiserver-authentication-reader",
            vec![r(READ, &[""], &["configmaps"]).named(&["extension-apiserver-authentication"])],
        ),
        leader_locking("system::leader-locking-kube-controller-manager"),
        leader_locking("system::leader-locking-kube-scheduler"),
        local(
            "kube-system",
            "system:controller:bootstrap-signer",
            vec![r(READ, &[""], &["secrets"])],
        ),
        local(
            "kube-system",
            "system:controller:cloud-provider",
            vec![r(
                &["create", "get", "list", "watch"],
                &[""],
                &["configmaps"],
            )],
        ),
        local(
            "kube-system",
            "system:controller:token-cleaner",
            vec![
                r(&["delete", "get", "list", "watch"], &[""], &["secrets"]),
                r(EVENT_VERBS, EVENTS, &["events"]),
            ],
        ),
    ]
}

/// The bootstrap RoleBindings of kube-system and kube-public.
pub fn namespace_role_bindings() -> Vec<BootstrapBinding> {
    let local = |namespace, name, role, subjects| BootstrapBinding {
        name,
        namespace,
        role,
        subjects,
    };
    const SYSTEM: &str = "kube-system";
    vec![
        local(
            "kube-public",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            &[("ServiceAccount", "bootstrap-signer", SYSTEM)],
        ),
        local(
            SYSTEM,
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            &[
                ("User", "system:kube-controller-manager", ""),
                ("User", "system:kube-scheduler", ""),
            ],
        ),
        local(
            SYSTEM,
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            &[
                ("User", "system:kube-controller-manager", ""),
                ("ServiceAccount", "kube-controller-manager", SYSTEM),
                ("ServiceAccount", "leader-election-controller", SYSTEM),
            ],
        ),
        local(
            SYSTEM,
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            &[
                ("User", "system:kube-scheduler", ""),
                ("ServiceAccount", "kube-scheduler", SYSTEM),
            ],
        ),
        local(
            SYSTEM,
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            &[("ServiceAccount", "bootstrap-signer", SYSTEM)],
        ),
        local(
            SYSTEM,
            "system:controller:cloud-provider",
            "system:controller:cloud-provider",
            &[("ServiceAccount", "cloud-provider", SYSTEM)],
        ),
        local(
            SYSTEM,
            "system:controller:token-cleaner",
            "system:controller:token-cleaner",
            &[("ServiceAccount", "token-cleaner", SYSTEM)],
        ),
    ]
}
