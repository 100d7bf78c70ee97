//! The table of kinds: everything the generic REST handler, discovery and storage know about a
//! resource. Adding a built-in kind is adding a row here (and, when it needs one, a strategy).

/// How names of a kind are checked (kube's `ValidateObjectMeta` name functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253.
    Subdomain,
    /// RFC 1123 label: lowercase alphanumerics and `-`, at most 63 (namespaces, services).
    Label,
    /// Anything without `/` or `%` and not `.` or `..` (events and leases use path segments).
    PathSegment,
}

/// One API resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// The API group, empty for core.
    pub group: &'static str,
    /// The version, e.g. `v1`.
    pub version: &'static str,
    /// The kind, e.g. `Pod`.
    pub kind: &'static str,
    /// The plural resource, e.g. `pods`.
    pub plural: &'static str,
    /// The singular resource, e.g. `pod`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, e.g. `po`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Whether it has a `status` subresource: then the main resource ignores status changes.
    pub status_subresource: bool,
    /// Whether `metadata.generation` counts spec changes.
    pub generation: bool,
    /// Whether DELETE answers with the deleted object rather than a success Status.
    pub delete_returns_object: bool,
    /// How names are checked.
    pub name_rule: NameRule,
    /// A create-only review resource: POST answers in the object's status, nothing is stored
    /// (SubjectAccessReview, TokenReview...).
    pub create_only: bool,
    /// What a CustomResourceDefinition says of this version (schema, columns, scale); `None`
    /// for built-in kinds.
    pub custom: Option<std::sync::Arc<crate::crd::CustomVersion>>,
}

/// The verbs every resource in the table serves.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs of a create-only resource.
pub const CREATE_VERBS: &[&str] = &["create"];

/// The verbs of a `status` subresource.
pub const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

impl Kind {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage prefix of the kind, `/registry/pods/` or `/registry/deployments.apps/`...
    /// with kube's etcd layout: core and the legacy groups without a suffix.
    pub fn prefix(&self) -> String {
        if self.custom.is_some() {
            // Custom resources are stored as kube-apiserver stores them: group, then plural.
            return format!("/registry/{}/{}/", self.group, self.plural);
        }
        // events.k8s.io/v1 is another view of the core events, as upstream stores them.
        if self.group.is_empty() || self.group == "events.k8s.io" {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}.{}/", self.plural, self.group)
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/{name}", self.prefix()),
            None => format!("{}{name}", self.prefix()),
        }
    }

    /// The prefix of one namespace's objects (all of them for cluster-scoped kinds or `None`).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}{ns}/", self.prefix()),
            None => self.prefix(),
        }
    }

    /// The verbs the resource serves.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only {
            CREATE_VERBS
        } else {
            VERBS
        }
    }

    /// The list kind, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        if let Some(custom) = &self.custom {
            return custom.list_kind.clone();
        }
        format!("{}List", self.kind)
    }
}

#[allow(clippy::too_many_arguments)]
const fn row(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status_subresource: bool,
) -> Kind {
    Kind {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories,
        status_subresource,
        generation: false,
        delete_returns_object: false,
        name_rule: NameRule::Subdomain,
        create_only: false,
        custom: None,
    }
}

const ALL: &[&str] = &["all"];

/// The built-in kinds, in the order discovery lists them.
pub fn builtin() -> Vec<Kind> {
    let with = |mut k: Kind, f: &dyn Fn(&mut Kind)| {
        f(&mut k);
        k
    };
    let workload = |k: &mut Kind| k.generation = true;
    let path_names = |k: &mut Kind| k.name_rule = NameRule::PathSegment;
    let rbac = |kind, plural, singular, namespaced| {
        row(RBAC, kind, plural, singular, namespaced, &[], &[], false)
    };
    vec![
        with(
            row(
                "",
                "Namespace",
                "namespaces",
                "namespace",
                false,
                &["ns"],
                &[],
                true,
            ),
            &|k| {
                k.name_rule = NameRule::Label;
                k.delete_returns_object = true;
            },
        ),
        with(
            row("", "Pod", "pods", "pod", true, &["po"], ALL, true),
            &|k| k.delete_returns_object = true,
        ),
        with(
            row(
                "",
                "Service",
                "services",
                "service",
                true,
                &["svc"],
                ALL,
                true,
            ),
            &|k| {
                k.name_rule = NameRule::Label;
                k.delete_returns_object = true;
            },
        ),
        row(
            "",
            "Endpoints",
            "endpoints",
            "endpoints",
            true,
            &["ep"],
            &[],
            false,
        ),
        row(
            "",
            "ConfigMap",
            "configmaps",
            "configmap",
            true,
            &["cm"],
            &[],
            false,
        ),
        row("", "Secret", "secrets", "secret", true, &[], &[], false),
        row(
            "",
            "ServiceAccount",
            "serviceaccounts",
            "serviceaccount",
            true,
            &["sa"],
            &[],
            false,
        ),
        with(
            row("", "Event", "events", "event", true, &["ev"], &[], false),
            &|k| k.name_rule = NameRule::PathSegment,
        ),
        row("", "Node", "nodes", "node", false, &["no"], &[], true),
        with(
            row(
                "apps",
                "Deployment",
                "deployments",
                "deployment",
                true,
                &["deploy"],
                ALL,
                true,
            ),
            &workload,
        ),
        with(
            row(
                "apps",
                "ReplicaSet",
                "replicasets",
                "replicaset",
                true,
                &["rs"],
                ALL,
                true,
            ),
            &workload,
        ),
        with(
            row(
                "apps",
                "DaemonSet",
                "daemonsets",
                "daemonset",
                true,
                &["ds"],
                ALL,
                true,
            ),
            &workload,
        ),
        with(
            row(
                "apps",
                "StatefulSet",
                "statefulsets",
                "statefulset",
                true,
                &["sts"],
                ALL,
                true,
            ),
            &workload,
        ),
        with(
            row("batch", "Job", "jobs", "job", true, &[], ALL, true),
            &workload,
        ),
        row(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslices",
            "endpointslice",
            true,
            &[],
            &[],
            false,
        ),
        with(
            row(
                "coordination.k8s.io",
                "Lease",
                "leases",
                "lease",
                true,
                &[],
                &[],
                false,
            ),
            &|k| k.name_rule = NameRule::PathSegment,
        ),
        row(
            "",
            "ResourceQuota",
            "resourcequotas",
            "resourcequota",
            true,
            &["quota"],
            &[],
            true,
        ),
        row(
            "scheduling.k8s.io",
            "PriorityClass",
            "priorityclasses",
            "priorityclass",
            false,
            &["pc"],
            &[],
            false,
        ),
        with(
            row(
                "",
                "PersistentVolume",
                "persistentvolumes",
                "persistentvolume",
                false,
                &["pv"],
                &[],
                true,
            ),
            &|k| k.delete_returns_object = true,
        ),
        with(
            row(
                "",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                "persistentvolumeclaim",
                true,
                &["pvc"],
                &[],
                true,
            ),
            &|k| k.delete_returns_object = true,
        ),
        row(
            "",
            "PodTemplate",
            "podtemplates",
            "podtemplate",
            true,
            &[],
            &[],
            false,
        ),
        with(
            row(
                "",
                "ReplicationController",
                "replicationcontrollers",
                "replicationcontroller",
                true,
                &["rc"],
                ALL,
                true,
            ),
            &workload,
        ),
        row(
            "",
            "LimitRange",
            "limitranges",
            "limitrange",
            true,
            &["limits"],
            &[],
            false,
        ),
        row(
            "apps",
            "ControllerRevision",
            "controllerrevisions",
            "controllerrevision",
            true,
            &[],
            &[],
            false,
        ),
        with(
            row(
                "batch",
                "CronJob",
                "cronjobs",
                "cronjob",
                true,
                &["cj"],
                ALL,
                true,
            ),
            &workload,
        ),
        with(
            row(
                "autoscaling",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                "horizontalpodautoscaler",
                true,
                &["hpa"],
                ALL,
                true,
            ),
            &|k| k.version = "v2",
        ),
        with(
            row(
                "policy",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                "poddisruptionbudget",
                true,
                &["pdb"],
                &[],
                true,
            ),
            &workload,
        ),
        row(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            "certificatesigningrequest",
            false,
            &["csr"],
            &[],
            true,
        ),
        row(
            "storage.k8s.io",
            "StorageClass",
            "storageclasses",
            "storageclass",
            false,
            &["sc"],
            &[],
            false,
        ),
        row(
            "storage.k8s.io",
            "CSIDriver",
            "csidrivers",
            "csidriver",
            false,
            &[],
            &[],
            false,
        ),
        row(
            "storage.k8s.io",
            "CSINode",
            "csinodes",
            "csinode",
            false,
            &[],
            &[],
            false,
        ),
        row(
            "storage.k8s.io",
            "VolumeAttachment",
            "volumeattachments",
            "volumeattachment",
            false,
            &[],
            &[],
            true,
        ),
        row(
            "storage.k8s.io",
            "CSIStorageCapacity",
            "csistoragecapacities",
            "csistoragecapacity",
            true,
            &[],
            &[],
            false,
        ),
        with(
            row(
                "networking.k8s.io",
                "Ingress",
                "ingresses",
                "ingress",
                true,
                &["ing"],
                &[],
                true,
            ),
            &workload,
        ),
        row(
            "networking.k8s.io",
            "IngressClass",
            "ingressclasses",
            "ingressclass",
            false,
            &[],
            &[],
            false,
        ),
        with(
            row(
                "networking.k8s.io",
                "NetworkPolicy",
                "networkpolicies",
                "networkpolicy",
                true,
                &["netpol"],
                &[],
                false,
            ),
            &workload,
        ),
        // Named by the address itself, IPv6 colons included.
        with(
            row(
                "networking.k8s.io",
                "IPAddress",
                "ipaddresses",
                "ipaddress",
                false,
                &["ip"],
                &[],
                false,
            ),
            &path_names,
        ),
        row(
            "networking.k8s.io",
            "ServiceCIDR",
            "servicecidrs",
            "servicecidr",
            false,
            &[],
            &[],
            true,
        ),
        row(
            "node.k8s.io",
            "RuntimeClass",
            "runtimeclasses",
            "runtimeclass",
            false,
            &[],
            &[],
            false,
        ),
        // Served from the same objects as core events, converted (see `events`).
        with(
            row(
                "events.k8s.io",
                "Event",
                "events",
                "event",
                true,
                &["ev"],
                &[],
                false,
            ),
            &path_names,
        ),
        // Stored only: webhooks are not called nor policies evaluated (a Warning says so).
        with(
            row(
                ADMISSION,
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                "mutatingwebhookconfiguration",
                false,
                &[],
                EXTENSIONS,
                false,
            ),
            &workload,
        ),
        with(
            row(
                ADMISSION,
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                "validatingwebhookconfiguration",
                false,
                &[],
                EXTENSIONS,
                false,
            ),
            &workload,
        ),
        with(
            row(
                ADMISSION,
                "ValidatingAdmissionPolicy",
                "validatingadmissionpolicies",
                "validatingadmissionpolicy",
                false,
                &[],
                EXTENSIONS,
                true,
            ),
            &workload,
        ),
        with(
            row(
                ADMISSION,
                "ValidatingAdmissionPolicyBinding",
                "validatingadmissionpolicybindings",
                "validatingadmissionpolicybinding",
                false,
                &[],
                EXTENSIONS,
                false,
            ),
            &workload,
        ),
        // Stored and served; not yet enforced. Their names are path segments (`system:...`).
        with(rbac("Role", "roles", "role", true), &path_names),
        with(
            rbac("RoleBinding", "rolebindings", "rolebinding", true),
            &path_names,
        ),
        with(
            rbac("ClusterRole", "clusterroles", "clusterrole", false),
            &path_names,
        ),
        with(
            rbac(
                "ClusterRoleBinding",
                "clusterrolebindings",
                "clusterrolebinding",
                false,
            ),
            &path_names,
        ),
    ]
}

const RBAC: &str = "rbac.authorization.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";
const EXTENSIONS: &[&str] = &["api-extensions"];

/// The review resources: create-only, cluster-scoped but for LocalSubjectAccessReview.
fn reviews() -> Vec<Kind> {
    let review = |group, kind, plural, singular, namespaced| Kind {
        create_only: true,
        ..row(group, kind, plural, singular, namespaced, &[], &[], false)
    };
    const AUTHZ: &str = "authorization.k8s.io";
    const AUTHN: &str = "authentication.k8s.io";
    vec![
        review(
            AUTHN,
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
        ),
        review(AUTHN, "TokenReview", "tokenreviews", "tokenreview", false),
        review(
            AUTHZ,
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            "localsubjectaccessreview",
            true,
        ),
        review(
            AUTHZ,
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            false,
        ),
        review(
            AUTHZ,
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            "selfsubjectrulesreview",
            false,
        ),
        review(
            AUTHZ,
            "SubjectAccessReview",
            "subjectaccessreviews",
            "subjectaccessreview",
            false,
        ),
    ]
}

/// The kinds a server serves, found by group, version and plural.
#[derive(Debug, Clone)]
pub struct KindTable {
    kinds: Vec<Kind>,
}

impl KindTable {
    /// A table of these kinds.
    pub fn new(kinds: Vec<Kind>) -> KindTable {
        KindTable { kinds }
    }

    /// Every kind, in table order.
    pub fn all(&self) -> &[Kind] {
        &self.kinds
    }

    /// The kind served at `group`/`version` as `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// The groups in table order (core first when present), each once.
    pub fn groups(&self) -> Vec<&'static str> {
        let mut groups: Vec<&'static str> = Vec::new();
        for kind in &self.kinds {
            if !groups.contains(&kind.group) {
                groups.push(kind.group);
            }
        }
        groups
    }

    /// The versions of a group in table order.
    pub fn versions(&self, group: &str) -> Vec<&'static str> {
        let mut versions: Vec<&'static str> = Vec::new();
        for kind in self.kinds.iter().filter(|k| k.group == group) {
            if !versions.contains(&kind.version) {
                versions.push(kind.version);
            }
        }
        versions
    }

    /// The kinds of one group version.
    pub fn of(&self, group: &str, version: &str) -> Vec<&Kind> {
        self.kinds
            .iter()
            .filter(|k| k.group == group && k.version == version)
            .collect()
    }
}

impl Default for KindTable {
    fn default() -> Self {
        KindTable::new(builtin().into_iter().chain(reviews()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_served_once() {
        let mut seen = std::collections::HashSet::new();
        for kind in builtin() {
            assert!(
                seen.insert((kind.group, kind.version, kind.plural)),
                "{}/{} {} is in the table twice",
                kind.group,
                kind.version,
                kind.plural
            );
        }
    }

    #[test]
    fn keys_follow_kube_etcd_layout() {
        let table = KindTable::default();
        let pods = table
            .find("", "v1", "pods")
            .map(|k| k.key(Some("default"), "web"));
        assert_eq!(pods.as_deref(), Some("/registry/pods/default/web"));
        let deploy = table
            .find("apps", "v1", "deployments")
            .map(|k| k.key(Some("a"), "b"));
        assert_eq!(deploy.as_deref(), Some("/registry/deployments.apps/a/b"));
        let ns = table
            .find("", "v1", "namespaces")
            .map(|k| k.key(Some("x"), "y"));
        assert_eq!(ns.as_deref(), Some("/registry/namespaces/y"));
    }
}
