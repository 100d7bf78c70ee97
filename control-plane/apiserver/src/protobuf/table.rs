//! The messages decoded from protobuf: ObjectMeta and the kinds kubectl's typed `create`
//! commands send, with the nested types those set. Field numbers are upstream's; a field a
//! message has upstream but that is not decoded here is `Opaque` (refused when set) or absent
//! (skipped like any unknown field; only `managedFields`, which a create may drop).

use super::schema::Ty::{
    Bool, Bytes, I32, I64, IntOrString, Map, Msg, Opaque, Quantity, Str, Time,
};
use super::schema::{Message, f, inline, k, m, r};

/// The top-level kinds: apiVersion, kind, and the message of the object.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("v1", "ConfigMap", "ConfigMap"),
    ("v1", "Secret", "Secret"),
    ("v1", "Namespace", "Namespace"),
    ("v1", "ServiceAccount", "ServiceAccount"),
    ("v1", "Service", "Service"),
    ("v1", "ResourceQuota", "ResourceQuota"),
    ("apps/v1", "Deployment", "Deployment"),
    ("batch/v1", "Job", "Job"),
    ("scheduling.k8s.io/v1", "PriorityClass", "PriorityClass"),
    ("authentication.k8s.io/v1", "TokenRequest", "TokenRequest"),
    ("rbac.authorization.k8s.io/v1", "Role", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "RoleBinding"),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
    ),
    // The review resources kubectl auth posts.
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        "SubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "LocalSubjectAccessReview",
        "SubjectAccessReview",
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        "SelfSubjectRulesReview",
    ),
    ("authentication.k8s.io/v1", "TokenReview", "TokenReview"),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        "SelfSubjectReview",
    ),
    (
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "CertificateSigningRequest",
    ),
    ("batch/v1", "CronJob", "CronJob"),
    ("policy/v1", "PodDisruptionBudget", "PodDisruptionBudget"),
    ("policy/v1", "Eviction", "Eviction"),
    ("networking.k8s.io/v1", "Ingress", "Ingress"),
];

const META: super::schema::Field = f(1, "metadata", Msg("ObjectMeta"));

/// Every message, by name.
pub const MESSAGES: &[Message] = &[
    // k8s.io/apimachinery/pkg/apis/meta/v1
    m(
        "ObjectMeta",
        &[
            f(1, "name", Str),
            f(2, "generateName", Str),
            f(3, "namespace", Str),
            f(4, "selfLink", Str),
            f(5, "uid", Str),
            f(6, "resourceVersion", Str),
            f(7, "generation", I64),
            f(8, "creationTimestamp", Time),
            f(9, "deletionTimestamp", Time),
            k(10, "deletionGracePeriodSeconds", I64),
            f(11, "labels", Map(&Str)),
            f(12, "annotations", Map(&Str)),
            r(13, "ownerReferences", Msg("OwnerReference")),
            r(14, "finalizers", Str),
        ],
    ),
    m(
        "OwnerReference",
        &[
            f(5, "apiVersion", Str),
            f(1, "kind", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
            k(6, "controller", Bool),
            k(7, "blockOwnerDeletion", Bool),
        ],
    ),
    m(
        "LabelSelector",
        &[
            f(1, "matchLabels", Map(&Str)),
            r(2, "matchExpressions", Msg("LabelSelectorRequirement")),
        ],
    ),
    m(
        "LabelSelectorRequirement",
        &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)],
    ),
    // k8s.io/api/core/v1
    m(
        "ConfigMap",
        &[
            META,
            k(4, "immutable", Bool),
            f(2, "data", Map(&Str)),
            f(3, "binaryData", Map(&Bytes)),
        ],
    ),
    m(
        "Secret",
        &[
            META,
            k(5, "immutable", Bool),
            f(2, "data", Map(&Bytes)),
            f(4, "stringData", Map(&Str)),
            f(3, "type", Str),
        ],
    ),
    m(
        "Namespace",
        &[
            META,
            f(2, "spec", Msg("NamespaceSpec")),
            f(3, "status", Msg("NamespaceStatus")),
        ],
    ),
    m("NamespaceSpec", &[r(1, "finalizers", Str)]),
    m(
        "NamespaceStatus",
        &[f(1, "phase", Str), r(2, "conditions", Opaque)],
    ),
    m(
        "ServiceAccount",
        &[
            META,
            r(2, "secrets", Msg("ObjectReference")),
            r(3, "imagePullSecrets", Msg("LocalObjectReference")),
            k(4, "automountServiceAccountToken", Bool),
        ],
    ),
    m(
        "ObjectReference",
        &[
            f(1, "kind", Str),
            f(2, "namespace", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
            f(5, "apiVersion", Str),
            f(6, "resourceVersion", Str),
            f(7, "fieldPath", Str),
        ],
    ),
    m("LocalObjectReference", &[f(1, "name", Str)]),
    m(
        "Service",
        &[
            META,
            f(2, "spec", Msg("ServiceSpec")),
            f(3, "status", Msg("ServiceStatus")),
        ],
    ),
    m(
        "ServiceSpec",
        &[
            r(1, "ports", Msg("ServicePort")),
            f(2, "selector", Map(&Str)),
            f(3, "clusterIP", Str),
            r(18, "clusterIPs", Str),
            f(4, "type", Str),
            r(5, "externalIPs", Str),
            f(7, "sessionAffinity", Str),
            f(8, "loadBalancerIP", Str),
            r(9, "loadBalancerSourceRanges", Str),
            f(10, "externalName", Str),
            f(11, "externalTrafficPolicy", Str),
            f(12, "healthCheckNodePort", I32),
            f(13, "publishNotReadyAddresses", Bool),
            f(14, "sessionAffinityConfig", Msg("SessionAffinityConfig")),
            r(19, "ipFamilies", Str),
            k(17, "ipFamilyPolicy", Str),
            k(20, "allocateLoadBalancerNodePorts", Bool),
            k(21, "loadBalancerClass", Str),
            k(22, "internalTrafficPolicy", Str),
            k(23, "trafficDistribution", Str),
        ],
    ),
    m(
        "ServicePort",
        &[
            f(1, "name", Str),
            f(2, "protocol", Str),
            k(6, "appProtocol", Str),
            k(3, "port", I32),
            f(4, "targetPort", IntOrString),
            f(5, "nodePort", I32),
        ],
    ),
    m(
        "SessionAffinityConfig",
        &[f(1, "clientIP", Msg("ClientIPConfig"))],
    ),
    m("ClientIPConfig", &[k(1, "timeoutSeconds", I32)]),
    m(
        "ServiceStatus",
        &[
            f(1, "loadBalancer", Msg("LoadBalancerStatus")),
            r(2, "conditions", Opaque),
        ],
    ),
    m("LoadBalancerStatus", &[r(1, "ingress", Opaque)]),
    m(
        "ResourceQuota",
        &[
            META,
            f(2, "spec", Msg("ResourceQuotaSpec")),
            f(3, "status", Msg("ResourceQuotaStatus")),
        ],
    ),
    m(
        "ResourceQuotaSpec",
        &[
            f(1, "hard", Map(&Quantity)),
            r(2, "scopes", Str),
            f(3, "scopeSelector", Msg("ScopeSelector")),
        ],
    ),
    m(
        "ScopeSelector",
        &[r(
            1,
            "matchExpressions",
            Msg("ScopedResourceSelectorRequirement"),
        )],
    ),
    m(
        "ScopedResourceSelectorRequirement",
        &[
            f(1, "scopeName", Str),
            f(2, "operator", Str),
            r(3, "values", Str),
        ],
    ),
    m(
        "ResourceQuotaStatus",
        &[f(1, "hard", Map(&Quantity)), f(2, "used", Map(&Quantity))],
    ),
    m("PodTemplateSpec", &[META, f(2, "spec", Msg("PodSpec"))]),
    m(
        "PodSpec",
        &[
            r(1, "volumes", Msg("Volume")),
            r(20, "initContainers", Msg("Container")),
            r(2, "containers", Msg("Container")),
            r(34, "ephemeralContainers", Opaque),
            f(3, "restartPolicy", Str),
            k(4, "terminationGracePeriodSeconds", I64),
            k(5, "activeDeadlineSeconds", I64),
            f(6, "dnsPolicy", Str),
            f(7, "nodeSelector", Map(&Str)),
            f(8, "serviceAccountName", Str),
            f(9, "serviceAccount", Str),
            k(21, "automountServiceAccountToken", Bool),
            f(10, "nodeName", Str),
            f(11, "hostNetwork", Bool),
            f(12, "hostPID", Bool),
            f(13, "hostIPC", Bool),
            k(27, "shareProcessNamespace", Bool),
            f(14, "securityContext", Msg("PodSecurityContext")),
            r(15, "imagePullSecrets", Msg("LocalObjectReference")),
            f(16, "hostname", Str),
            f(17, "subdomain", Str),
            f(18, "affinity", Msg("Affinity")),
            f(19, "schedulerName", Str),
            r(22, "tolerations", Msg("Toleration")),
            r(23, "hostAliases", Msg("HostAlias")),
            f(24, "priorityClassName", Str),
            k(25, "priority", I32),
            f(26, "dnsConfig", Msg("PodDNSConfig")),
            r(28, "readinessGates", Msg("PodReadinessGate")),
            k(29, "runtimeClassName", Str),
            k(30, "enableServiceLinks", Bool),
            k(31, "preemptionPolicy", Str),
            f(32, "overhead", Map(&Quantity)),
            r(
                33,
                "topologySpreadConstraints",
                Msg("TopologySpreadConstraint"),
            ),
            k(35, "setHostnameAsFQDN", Bool),
            f(36, "os", Msg("PodOS")),
            k(37, "hostUsers", Bool),
            r(38, "schedulingGates", Msg("PodSchedulingGate")),
            r(39, "resourceClaims", Opaque),
            f(40, "resources", Msg("ResourceRequirements")),
            k(41, "hostnameOverride", Str),
            f(43, "schedulingGroup", Opaque),
            r(44, "evictionResponders", Opaque),
        ],
    ),
    m(
        "Container",
        &[
            f(1, "name", Str),
            f(2, "image", Str),
            r(3, "command", Str),
            r(4, "args", Str),
            f(5, "workingDir", Str),
            r(6, "ports", Msg("ContainerPort")),
            r(19, "envFrom", Msg("EnvFromSource")),
            r(7, "env", Msg("EnvVar")),
            f(8, "resources", Msg("ResourceRequirements")),
            r(23, "resizePolicy", Msg("ContainerResizePolicy")),
            k(24, "restartPolicy", Str),
            r(25, "restartPolicyRules", Opaque),
            r(9, "volumeMounts", Msg("VolumeMount")),
            r(21, "volumeDevices", Msg("VolumeDevice")),
            f(10, "livenessProbe", Msg("Probe")),
            f(11, "readinessProbe", Msg("Probe")),
            f(22, "startupProbe", Msg("Probe")),
            f(12, "lifecycle", Msg("Lifecycle")),
            f(13, "terminationMessagePath", Str),
            f(20, "terminationMessagePolicy", Str),
            f(14, "imagePullPolicy", Str),
            f(15, "securityContext", Msg("SecurityContext")),
            f(16, "stdin", Bool),
            f(17, "stdinOnce", Bool),
            f(18, "tty", Bool),
        ],
    ),
    m(
        "ContainerPort",
        &[
            f(1, "name", Str),
            f(2, "hostPort", I32),
            k(3, "containerPort", I32),
            f(4, "protocol", Str),
            f(5, "hostIP", Str),
        ],
    ),
    m(
        "ResourceRequirements",
        &[
            f(1, "limits", Map(&Quantity)),
            f(2, "requests", Map(&Quantity)),
            r(3, "claims", Msg("ResourceClaim")),
        ],
    ),
    m("ResourceClaim", &[f(1, "name", Str), f(2, "request", Str)]),
    m(
        "EnvVar",
        &[
            f(1, "name", Str),
            f(2, "value", Str),
            f(3, "valueFrom", Msg("EnvVarSource")),
        ],
    ),
    m(
        "EnvVarSource",
        &[
            f(1, "fieldRef", Msg("ObjectFieldSelector")),
            f(2, "resourceFieldRef", Msg("ResourceFieldSelector")),
            f(3, "configMapKeyRef", Msg("ConfigMapKeySelector")),
            f(4, "secretKeyRef", Msg("SecretKeySelector")),
            f(5, "fileKeyRef", Opaque),
        ],
    ),
    m(
        "ObjectFieldSelector",
        &[f(1, "apiVersion", Str), f(2, "fieldPath", Str)],
    ),
    m(
        "ResourceFieldSelector",
        &[
            f(1, "containerName", Str),
            f(2, "resource", Str),
            f(3, "divisor", Quantity),
        ],
    ),
    m(
        "ConfigMapKeySelector",
        &[
            inline(1, "LocalObjectReference"),
            f(2, "key", Str),
            k(3, "optional", Bool),
        ],
    ),
    m(
        "SecretKeySelector",
        &[
            inline(1, "LocalObjectReference"),
            f(2, "key", Str),
            k(3, "optional", Bool),
        ],
    ),
    m(
        "EnvFromSource",
        &[
            f(1, "prefix", Str),
            f(2, "configMapRef", Msg("ConfigMapEnvSource")),
            f(3, "secretRef", Msg("SecretEnvSource")),
        ],
    ),
    m(
        "ConfigMapEnvSource",
        &[inline(1, "LocalObjectReference"), k(2, "optional", Bool)],
    ),
    m(
        "SecretEnvSource",
        &[inline(1, "LocalObjectReference"), k(2, "optional", Bool)],
    ),
    m(
        "VolumeMount",
        &[
            f(1, "name", Str),
            f(2, "readOnly", Bool),
            k(7, "recursiveReadOnly", Str),
            f(3, "mountPath", Str),
            f(4, "subPath", Str),
            k(5, "mountPropagation", Str),
            f(6, "subPathExpr", Str),
            r(8, "bindMountOptions", Opaque),
        ],
    ),
    // The pod template's nested types (the server defaults `securityContext: {}` and more, so
    // anything copying a stored template, as `kubectl create job --from`, sends them).
    m(
        "PodSecurityContext",
        &[
            f(1, "seLinuxOptions", Msg("SELinuxOptions")),
            f(8, "windowsOptions", Msg("WindowsSecurityContextOptions")),
            k(2, "runAsUser", I64),
            k(6, "runAsGroup", I64),
            k(3, "runAsNonRoot", Bool),
            r(4, "supplementalGroups", I64),
            k(12, "supplementalGroupsPolicy", Str),
            k(5, "fsGroup", I64),
            r(7, "sysctls", Msg("Sysctl")),
            k(9, "fsGroupChangePolicy", Str),
            f(10, "seccompProfile", Msg("SeccompProfile")),
            f(11, "appArmorProfile", Msg("AppArmorProfile")),
            k(13, "seLinuxChangePolicy", Str),
        ],
    ),
    m(
        "SecurityContext",
        &[
            f(1, "capabilities", Msg("Capabilities")),
            k(2, "privileged", Bool),
            f(3, "seLinuxOptions", Msg("SELinuxOptions")),
            f(10, "windowsOptions", Msg("WindowsSecurityContextOptions")),
            k(4, "runAsUser", I64),
            k(8, "runAsGroup", I64),
            k(5, "runAsNonRoot", Bool),
            k(6, "readOnlyRootFilesystem", Bool),
            k(7, "allowPrivilegeEscalation", Bool),
            k(9, "procMount", Str),
            f(11, "seccompProfile", Msg("SeccompProfile")),
            f(12, "appArmorProfile", Msg("AppArmorProfile")),
        ],
    ),
    m("Capabilities", &[r(1, "add", Str), r(2, "drop", Str)]),
    m(
        "SELinuxOptions",
        &[
            f(1, "user", Str),
            f(2, "role", Str),
            f(3, "type", Str),
            f(4, "level", Str),
        ],
    ),
    m(
        "WindowsSecurityContextOptions",
        &[
            k(1, "gmsaCredentialSpecName", Str),
            k(2, "gmsaCredentialSpec", Str),
            k(3, "runAsUserName", Str),
            k(4, "hostProcess", Bool),
        ],
    ),
    m(
        "SeccompProfile",
        &[f(1, "type", Str), k(2, "localhostProfile", Str)],
    ),
    m(
        "AppArmorProfile",
        &[f(1, "type", Str), k(2, "localhostProfile", Str)],
    ),
    m("Sysctl", &[f(1, "name", Str), k(2, "value", Str)]),
    m(
        "Affinity",
        &[
            f(1, "nodeAffinity", Msg("NodeAffinity")),
            f(2, "podAffinity", Msg("PodAffinity")),
            f(3, "podAntiAffinity", Msg("PodAffinity")),
        ],
    ),
    m(
        "NodeAffinity",
        &[
            f(
                1,
                "requiredDuringSchedulingIgnoredDuringExecution",
                Msg("NodeSelector"),
            ),
            r(
                2,
                "preferredDuringSchedulingIgnoredDuringExecution",
                Msg("PreferredSchedulingTerm"),
            ),
        ],
    ),
    m(
        "NodeSelector",
        &[r(1, "nodeSelectorTerms", Msg("NodeSelectorTerm"))],
    ),
    m(
        "NodeSelectorTerm",
        &[
            r(1, "matchExpressions", Msg("NodeSelectorRequirement")),
            r(2, "matchFields", Msg("NodeSelectorRequirement")),
        ],
    ),
    m(
        "NodeSelectorRequirement",
        &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)],
    ),
    m(
        "PreferredSchedulingTerm",
        &[
            k(1, "weight", I32),
            f(2, "preference", Msg("NodeSelectorTerm")),
        ],
    ),
    // PodAntiAffinity has the same fields.
    m(
        "PodAffinity",
        &[
            r(
                1,
                "requiredDuringSchedulingIgnoredDuringExecution",
                Msg("PodAffinityTerm"),
            ),
            r(
                2,
                "preferredDuringSchedulingIgnoredDuringExecution",
                Msg("WeightedPodAffinityTerm"),
            ),
        ],
    ),
    m(
        "PodAffinityTerm",
        &[
            f(1, "labelSelector", Msg("LabelSelector")),
            r(2, "namespaces", Str),
            f(3, "topologyKey", Str),
            f(4, "namespaceSelector", Msg("LabelSelector")),
            r(5, "matchLabelKeys", Str),
            r(6, "mismatchLabelKeys", Str),
        ],
    ),
    m(
        "WeightedPodAffinityTerm",
        &[
            k(1, "weight", I32),
            f(2, "podAffinityTerm", Msg("PodAffinityTerm")),
        ],
    ),
    m("HostAlias", &[f(1, "ip", Str), r(2, "hostnames", Str)]),
    m(
        "PodDNSConfig",
        &[
            r(1, "nameservers", Str),
            r(2, "searches", Str),
            r(3, "options", Msg("PodDNSConfigOption")),
        ],
    ),
    m(
        "PodDNSConfigOption",
        &[f(1, "name", Str), k(2, "value", Str)],
    ),
    m("PodReadinessGate", &[f(1, "conditionType", Str)]),
    m(
        "TopologySpreadConstraint",
        &[
            k(1, "maxSkew", I32),
            f(2, "topologyKey", Str),
            f(3, "whenUnsatisfiable", Str),
            f(4, "labelSelector", Msg("LabelSelector")),
            k(5, "minDomains", I32),
            k(6, "nodeAffinityPolicy", Str),
            k(7, "nodeTaintsPolicy", Str),
            r(8, "matchLabelKeys", Str),
        ],
    ),
    m("PodOS", &[f(1, "name", Str)]),
    m("PodSchedulingGate", &[f(1, "name", Str)]),
    m(
        "ContainerResizePolicy",
        &[f(1, "resourceName", Str), f(2, "restartPolicy", Str)],
    ),
    m(
        "VolumeDevice",
        &[f(1, "name", Str), f(2, "devicePath", Str)],
    ),
    m(
        "Probe",
        &[
            inline(1, "ProbeHandler"),
            f(2, "initialDelaySeconds", I32),
            f(3, "timeoutSeconds", I32),
            f(4, "periodSeconds", I32),
            f(5, "successThreshold", I32),
            f(6, "failureThreshold", I32),
            k(7, "terminationGracePeriodSeconds", I64),
        ],
    ),
    m(
        "ProbeHandler",
        &[
            f(1, "exec", Msg("ExecAction")),
            f(2, "httpGet", Msg("HTTPGetAction")),
            f(3, "tcpSocket", Msg("TCPSocketAction")),
            f(4, "grpc", Msg("GRPCAction")),
        ],
    ),
    m(
        "Lifecycle",
        &[
            f(1, "postStart", Msg("LifecycleHandler")),
            f(2, "preStop", Msg("LifecycleHandler")),
            k(3, "stopSignal", Str),
        ],
    ),
    m(
        "LifecycleHandler",
        &[
            f(1, "exec", Msg("ExecAction")),
            f(2, "httpGet", Msg("HTTPGetAction")),
            f(3, "tcpSocket", Msg("TCPSocketAction")),
            f(4, "sleep", Msg("SleepAction")),
        ],
    ),
    m("ExecAction", &[r(1, "command", Str)]),
    m(
        "HTTPGetAction",
        &[
            f(1, "path", Str),
            f(2, "port", IntOrString),
            f(3, "host", Str),
            f(4, "scheme", Str),
            r(5, "httpHeaders", Msg("HTTPHeader")),
        ],
    ),
    m("HTTPHeader", &[f(1, "name", Str), k(2, "value", Str)]),
    m(
        "TCPSocketAction",
        &[f(1, "port", IntOrString), f(2, "host", Str)],
    ),
    m("GRPCAction", &[k(1, "port", I32), k(2, "service", Str)]),
    m("SleepAction", &[k(1, "seconds", I64)]),
    m("Volume", &[f(1, "name", Str), inline(2, "VolumeSource")]),
    // The in-tree cloud and network sources stay opaque.
    m(
        "VolumeSource",
        &[
            f(1, "hostPath", Msg("HostPathVolumeSource")),
            f(2, "emptyDir", Msg("EmptyDirVolumeSource")),
            f(3, "gcePersistentDisk", Opaque),
            f(4, "awsElasticBlockStore", Opaque),
            f(5, "gitRepo", Opaque),
            f(6, "secret", Msg("SecretVolumeSource")),
            f(7, "nfs", Opaque),
            f(8, "iscsi", Opaque),
            f(9, "glusterfs", Opaque),
            f(
                10,
                "persistentVolumeClaim",
                Msg("PersistentVolumeClaimVolumeSource"),
            ),
            f(11, "rbd", Opaque),
            f(12, "flexVolume", Opaque),
            f(13, "cinder", Opaque),
            f(14, "cephfs", Opaque),
            f(15, "flocker", Opaque),
            f(16, "downwardAPI", Msg("DownwardAPIVolumeSource")),
            f(17, "fc", Opaque),
            f(18, "azureFile", Opaque),
            f(19, "configMap", Msg("ConfigMapVolumeSource")),
            f(20, "vsphereVolume", Opaque),
            f(21, "quobyte", Opaque),
            f(22, "azureDisk", Opaque),
            f(23, "photonPersistentDisk", Opaque),
            f(26, "projected", Msg("ProjectedVolumeSource")),
            f(24, "portworxVolume", Opaque),
            f(25, "scaleIO", Opaque),
            f(27, "storageos", Opaque),
            f(28, "csi", Opaque),
            f(29, "ephemeral", Opaque),
            f(30, "image", Opaque),
        ],
    ),
    m(
        "HostPathVolumeSource",
        &[f(1, "path", Str), k(2, "type", Str)],
    ),
    m(
        "EmptyDirVolumeSource",
        &[f(1, "medium", Str), f(2, "sizeLimit", Quantity)],
    ),
    m(
        "SecretVolumeSource",
        &[
            f(1, "secretName", Str),
            r(2, "items", Msg("KeyToPath")),
            k(3, "defaultMode", I32),
            k(4, "optional", Bool),
        ],
    ),
    m(
        "ConfigMapVolumeSource",
        &[
            inline(1, "LocalObjectReference"),
            r(2, "items", Msg("KeyToPath")),
            k(3, "defaultMode", I32),
            k(4, "optional", Bool),
        ],
    ),
    m(
        "KeyToPath",
        &[f(1, "key", Str), f(2, "path", Str), k(3, "mode", I32)],
    ),
    m(
        "PersistentVolumeClaimVolumeSource",
        &[f(1, "claimName", Str), f(2, "readOnly", Bool)],
    ),
    m(
        "DownwardAPIVolumeSource",
        &[
            r(1, "items", Msg("DownwardAPIVolumeFile")),
            k(2, "defaultMode", I32),
        ],
    ),
    m(
        "DownwardAPIVolumeFile",
        &[
            f(1, "path", Str),
            f(2, "fieldRef", Msg("ObjectFieldSelector")),
            f(3, "resourceFieldRef", Msg("ResourceFieldSelector")),
            k(4, "mode", I32),
        ],
    ),
    m(
        "ProjectedVolumeSource",
        &[
            r(1, "sources", Msg("VolumeProjection")),
            k(2, "defaultMode", I32),
        ],
    ),
    m(
        "VolumeProjection",
        &[
            f(1, "secret", Msg("SecretProjection")),
            f(2, "downwardAPI", Msg("DownwardAPIProjection")),
            f(3, "configMap", Msg("ConfigMapProjection")),
            f(
                4,
                "serviceAccountToken",
                Msg("ServiceAccountTokenProjection"),
            ),
            f(5, "clusterTrustBundle", Opaque),
            f(6, "podCertificate", Opaque),
        ],
    ),
    m(
        "SecretProjection",
        &[
            inline(1, "LocalObjectReference"),
            r(2, "items", Msg("KeyToPath")),
            k(4, "optional", Bool),
        ],
    ),
    m(
        "ConfigMapProjection",
        &[
            inline(1, "LocalObjectReference"),
            r(2, "items", Msg("KeyToPath")),
            k(4, "optional", Bool),
        ],
    ),
    m(
        "DownwardAPIProjection",
        &[r(1, "items", Msg("DownwardAPIVolumeFile"))],
    ),
    m(
        "ServiceAccountTokenProjection",
        &[
            f(1, "audience", Str),
            k(2, "expirationSeconds", I64),
            f(3, "path", Str),
        ],
    ),
    m(
        "Toleration",
        &[
            f(1, "key", Str),
            f(2, "operator", Str),
            f(3, "value", Str),
            f(4, "effect", Str),
            k(5, "tolerationSeconds", I64),
        ],
    ),
    // k8s.io/api/apps/v1
    m(
        "Deployment",
        &[
            META,
            f(2, "spec", Msg("DeploymentSpec")),
            f(3, "status", Msg("DeploymentStatus")),
        ],
    ),
    m(
        "DeploymentSpec",
        &[
            k(1, "replicas", I32),
            f(2, "selector", Msg("LabelSelector")),
            f(3, "template", Msg("PodTemplateSpec")),
            f(4, "strategy", Msg("DeploymentStrategy")),
            f(5, "minReadySeconds", I32),
            k(6, "revisionHistoryLimit", I32),
            f(7, "paused", Bool),
            k(9, "progressDeadlineSeconds", I32),
        ],
    ),
    m(
        "DeploymentStrategy",
        &[
            f(1, "type", Str),
            f(2, "rollingUpdate", Msg("RollingUpdateDeployment")),
        ],
    ),
    m(
        "RollingUpdateDeployment",
        &[
            f(1, "maxUnavailable", IntOrString),
            f(2, "maxSurge", IntOrString),
        ],
    ),
    m(
        "DeploymentStatus",
        &[
            f(1, "observedGeneration", I64),
            f(2, "replicas", I32),
            f(3, "updatedReplicas", I32),
            f(7, "readyReplicas", I32),
            f(4, "availableReplicas", I32),
            f(5, "unavailableReplicas", I32),
            k(9, "terminatingReplicas", I32),
            r(6, "conditions", Opaque),
            k(8, "collisionCount", I32),
        ],
    ),
    // k8s.io/api/batch/v1
    m(
        "Job",
        &[
            META,
            f(2, "spec", Msg("JobSpec")),
            f(3, "status", Msg("JobStatus")),
        ],
    ),
    m(
        "JobSpec",
        &[
            k(1, "parallelism", I32),
            k(2, "completions", I32),
            k(3, "activeDeadlineSeconds", I64),
            f(11, "podFailurePolicy", Msg("PodFailurePolicy")),
            f(16, "successPolicy", Msg("SuccessPolicy")),
            k(7, "backoffLimit", I32),
            k(12, "backoffLimitPerIndex", I32),
            k(13, "maxFailedIndexes", I32),
            f(4, "selector", Msg("LabelSelector")),
            k(5, "manualSelector", Bool),
            f(6, "template", Msg("PodTemplateSpec")),
            k(8, "ttlSecondsAfterFinished", I32),
            k(9, "completionMode", Str),
            k(10, "suspend", Bool),
            k(14, "podReplacementPolicy", Str),
            k(15, "managedBy", Str),
            f(17, "scheduling", Opaque),
        ],
    ),
    m(
        "PodFailurePolicy",
        &[r(1, "rules", Msg("PodFailurePolicyRule"))],
    ),
    m(
        "PodFailurePolicyRule",
        &[
            f(1, "action", Str),
            f(
                2,
                "onExitCodes",
                Msg("PodFailurePolicyOnExitCodesRequirement"),
            ),
            r(
                3,
                "onPodConditions",
                Msg("PodFailurePolicyOnPodConditionsPattern"),
            ),
        ],
    ),
    m(
        "PodFailurePolicyOnExitCodesRequirement",
        &[
            k(1, "containerName", Str),
            f(2, "operator", Str),
            r(3, "values", I32),
        ],
    ),
    m(
        "PodFailurePolicyOnPodConditionsPattern",
        &[f(1, "type", Str), f(2, "status", Str)],
    ),
    m("SuccessPolicy", &[r(1, "rules", Msg("SuccessPolicyRule"))]),
    m(
        "SuccessPolicyRule",
        &[k(1, "succeededIndexes", Str), k(2, "succeededCount", I32)],
    ),
    m(
        "JobStatus",
        &[
            r(1, "conditions", Opaque),
            f(2, "startTime", Time),
            f(3, "completionTime", Time),
            f(4, "active", I32),
            f(5, "succeeded", I32),
            f(6, "failed", I32),
            k(11, "terminating", I32),
            f(7, "completedIndexes", Str),
            k(10, "failedIndexes", Str),
            f(8, "uncountedTerminatedPods", Opaque),
            k(9, "ready", I32),
        ],
    ),
    // k8s.io/api/scheduling/v1
    m(
        "PriorityClass",
        &[
            META,
            k(2, "value", I32),
            f(3, "globalDefault", Bool),
            f(4, "description", Str),
            k(5, "preemptionPolicy", Str),
        ],
    ),
    // k8s.io/api/rbac/v1
    m("Role", &[META, r(2, "rules", Msg("PolicyRule"))]),
    m(
        "ClusterRole",
        &[
            META,
            r(2, "rules", Msg("PolicyRule")),
            f(3, "aggregationRule", Msg("AggregationRule")),
        ],
    ),
    m(
        "AggregationRule",
        &[r(1, "clusterRoleSelectors", Msg("LabelSelector"))],
    ),
    m(
        "PolicyRule",
        &[
            r(1, "verbs", Str),
            r(2, "apiGroups", Str),
            r(3, "resources", Str),
            r(4, "resourceNames", Str),
            r(5, "nonResourceURLs", Str),
        ],
    ),
    m(
        "RoleBinding",
        &[
            META,
            r(2, "subjects", Msg("Subject")),
            f(3, "roleRef", Msg("RoleRef")),
        ],
    ),
    m(
        "ClusterRoleBinding",
        &[
            META,
            r(2, "subjects", Msg("Subject")),
            f(3, "roleRef", Msg("RoleRef")),
        ],
    ),
    m(
        "Subject",
        &[
            f(1, "kind", Str),
            f(2, "apiGroup", Str),
            f(3, "name", Str),
            f(4, "namespace", Str),
        ],
    ),
    // k8s.io/api/authentication/v1 (what `kubectl create token` sends)
    m(
        "TokenRequest",
        &[
            META,
            f(2, "spec", Msg("TokenRequestSpec")),
            f(3, "status", Msg("TokenRequestStatus")),
        ],
    ),
    m(
        "TokenRequestSpec",
        &[
            r(1, "audiences", Str),
            k(4, "expirationSeconds", I64),
            f(3, "boundObjectRef", Msg("BoundObjectReference")),
        ],
    ),
    m(
        "BoundObjectReference",
        &[
            f(1, "kind", Str),
            f(2, "apiVersion", Str),
            f(3, "name", Str),
            f(4, "uid", Str),
        ],
    ),
    m(
        "TokenRequestStatus",
        &[f(1, "token", Str), f(2, "expirationTimestamp", Time)],
    ),
    m(
        "RoleRef",
        &[f(1, "apiGroup", Str), f(2, "kind", Str), f(3, "name", Str)],
    ),
    // k8s.io/api/authorization/v1 (statuses are answers: a request's are skipped)
    m(
        "SelfSubjectAccessReview",
        &[META, f(2, "spec", Msg("SelfSubjectAccessReviewSpec"))],
    ),
    m(
        "SelfSubjectAccessReviewSpec",
        &[
            f(1, "resourceAttributes", Msg("ResourceAttributes")),
            f(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
        ],
    ),
    m(
        "SubjectAccessReview",
        &[META, f(2, "spec", Msg("SubjectAccessReviewSpec"))],
    ),
    m(
        "SubjectAccessReviewSpec",
        &[
            f(1, "resourceAttributes", Msg("ResourceAttributes")),
            f(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
            f(3, "user", Str),
            r(4, "groups", Str),
            f(5, "extra", Opaque),
            f(6, "uid", Str),
        ],
    ),
    m(
        "ResourceAttributes",
        &[
            f(1, "namespace", Str),
            f(2, "verb", Str),
            f(3, "group", Str),
            f(4, "version", Str),
            f(5, "resource", Str),
            f(6, "subresource", Str),
            f(7, "name", Str),
            f(8, "fieldSelector", Opaque),
            f(9, "labelSelector", Opaque),
        ],
    ),
    m(
        "NonResourceAttributes",
        &[f(1, "path", Str), f(2, "verb", Str)],
    ),
    m(
        "SelfSubjectRulesReview",
        &[META, f(2, "spec", Msg("SelfSubjectRulesReviewSpec"))],
    ),
    m("SelfSubjectRulesReviewSpec", &[f(1, "namespace", Str)]),
    // k8s.io/api/authentication/v1
    m("TokenReview", &[META, f(2, "spec", Msg("TokenReviewSpec"))]),
    m(
        "TokenReviewSpec",
        &[f(1, "token", Str), r(2, "audiences", Str)],
    ),
    m("SelfSubjectReview", &[META]),
    // k8s.io/api/certificates/v1 (kubectl certificate approve|deny sends the CSR back).
    m(
        "CertificateSigningRequest",
        &[
            META,
            f(2, "spec", Msg("CertificateSigningRequestSpec")),
            f(3, "status", Msg("CertificateSigningRequestStatus")),
        ],
    ),
    m(
        "CertificateSigningRequestSpec",
        &[
            f(1, "request", Bytes),
            f(7, "signerName", Str),
            k(8, "expirationSeconds", I32),
            r(5, "usages", Str),
            f(2, "username", Str),
            f(3, "uid", Str),
            r(4, "groups", Str),
            f(6, "extra", Opaque),
        ],
    ),
    m(
        "CertificateSigningRequestStatus",
        &[
            r(1, "conditions", Msg("CertificateSigningRequestCondition")),
            f(2, "certificate", Bytes),
        ],
    ),
    m(
        "CertificateSigningRequestCondition",
        &[
            f(1, "type", Str),
            f(6, "status", Str),
            f(2, "reason", Str),
            f(3, "message", Str),
            f(4, "lastUpdateTime", Time),
            f(5, "lastTransitionTime", Time),
        ],
    ),
    // k8s.io/api/batch/v1 CronJob (kubectl create cronjob).
    m(
        "CronJob",
        &[
            META,
            f(2, "spec", Msg("CronJobSpec")),
            f(3, "status", Msg("CronJobStatus")),
        ],
    ),
    m(
        "CronJobSpec",
        &[
            f(1, "schedule", Str),
            k(8, "timeZone", Str),
            k(2, "startingDeadlineSeconds", I64),
            f(3, "concurrencyPolicy", Str),
            k(4, "suspend", Bool),
            f(5, "jobTemplate", Msg("JobTemplateSpec")),
            k(6, "successfulJobsHistoryLimit", I32),
            k(7, "failedJobsHistoryLimit", I32),
        ],
    ),
    m(
        "CronJobStatus",
        &[
            r(1, "active", Msg("ObjectReference")),
            f(4, "lastScheduleTime", Time),
            f(5, "lastSuccessfulTime", Time),
        ],
    ),
    m("JobTemplateSpec", &[META, f(2, "spec", Msg("JobSpec"))]),
    // k8s.io/api/policy/v1 (kubectl create poddisruptionbudget, kubectl drain).
    m(
        "PodDisruptionBudget",
        &[
            META,
            f(2, "spec", Msg("PodDisruptionBudgetSpec")),
            f(3, "status", Msg("PodDisruptionBudgetStatus")),
        ],
    ),
    m(
        "PodDisruptionBudgetSpec",
        &[
            f(1, "minAvailable", IntOrString),
            f(2, "selector", Msg("LabelSelector")),
            f(3, "maxUnavailable", IntOrString),
            k(4, "unhealthyPodEvictionPolicy", Str),
        ],
    ),
    m(
        "PodDisruptionBudgetStatus",
        &[
            f(1, "observedGeneration", I64),
            f(2, "disruptedPods", Map(&Time)),
            f(3, "disruptionsAllowed", I32),
            f(4, "currentHealthy", I32),
            f(5, "desiredHealthy", I32),
            f(6, "expectedPods", I32),
            r(7, "conditions", Opaque),
        ],
    ),
    m(
        "Eviction",
        &[META, f(2, "deleteOptions", Msg("DeleteOptions"))],
    ),
    m(
        "DeleteOptions",
        &[
            k(1, "gracePeriodSeconds", I64),
            f(2, "preconditions", Msg("Preconditions")),
            k(3, "orphanDependents", Bool),
            k(4, "propagationPolicy", Str),
            r(5, "dryRun", Str),
            k(6, "ignoreStoreReadErrorWithClusterBreakingPotential", Bool),
        ],
    ),
    m(
        "Preconditions",
        &[k(1, "uid", Str), k(2, "resourceVersion", Str)],
    ),
    // k8s.io/api/networking/v1 Ingress (kubectl create ingress).
    m(
        "Ingress",
        &[
            META,
            f(2, "spec", Msg("IngressSpec")),
            f(3, "status", Msg("IngressStatus")),
        ],
    ),
    m(
        "IngressSpec",
        &[
            k(4, "ingressClassName", Str),
            f(1, "defaultBackend", Msg("IngressBackend")),
            r(2, "tls", Msg("IngressTLS")),
            r(3, "rules", Msg("IngressRule")),
        ],
    ),
    m(
        "IngressBackend",
        &[
            f(4, "service", Msg("IngressServiceBackend")),
            f(3, "resource", Msg("TypedLocalObjectReference")),
        ],
    ),
    m(
        "TypedLocalObjectReference",
        &[k(1, "apiGroup", Str), f(2, "kind", Str), f(3, "name", Str)],
    ),
    m(
        "IngressServiceBackend",
        &[f(1, "name", Str), f(2, "port", Msg("ServiceBackendPort"))],
    ),
    m(
        "ServiceBackendPort",
        &[f(1, "name", Str), f(2, "number", I32)],
    ),
    m("IngressTLS", &[r(1, "hosts", Str), f(2, "secretName", Str)]),
    m(
        "IngressRule",
        &[f(1, "host", Str), inline(2, "IngressRuleValue")],
    ),
    m(
        "IngressRuleValue",
        &[f(1, "http", Msg("HTTPIngressRuleValue"))],
    ),
    m(
        "HTTPIngressRuleValue",
        &[r(1, "paths", Msg("HTTPIngressPath"))],
    ),
    m(
        "HTTPIngressPath",
        &[
            f(1, "path", Str),
            k(3, "pathType", Str),
            f(2, "backend", Msg("IngressBackend")),
        ],
    ),
    m(
        "IngressStatus",
        &[f(1, "loadBalancer", Msg("IngressLoadBalancerStatus"))],
    ),
    m("IngressLoadBalancerStatus", &[r(1, "ingress", Opaque)]),
];

/// The message called `name`.
pub fn message(name: &str) -> Option<&'static Message> {
    MESSAGES.iter().find(|m| m.name == name)
}

/// The message of a top-level object of `api_version` and `kind`.
pub fn top_level(api_version: &str, kind: &str) -> Option<&'static Message> {
    KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .and_then(|(_, _, name)| message(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::schema::Ty;

    /// Every message a field names is in the table, no message or field number is there twice,
    /// and every top-level kind has its message.
    #[test]
    fn the_table_is_closed_and_unambiguous() {
        for (i, message) in MESSAGES.iter().enumerate() {
            assert!(
                MESSAGES[..i].iter().all(|o| o.name != message.name),
                "{} twice",
                message.name
            );
            for (j, field) in message.fields.iter().enumerate() {
                assert!(
                    message.fields[..j].iter().all(|o| o.number != field.number),
                    "{}.{} number twice",
                    message.name,
                    field.name
                );
                if let Ty::Msg(name) = field.ty {
                    assert!(
                        message_exists(name),
                        "{}.{}: {name}",
                        message.name,
                        field.name
                    );
                }
            }
        }
        for (version, kind, _) in KINDS {
            assert!(top_level(version, kind).is_some(), "{kind}");
        }
    }

    fn message_exists(name: &str) -> bool {
        message(name).is_some()
    }
}
