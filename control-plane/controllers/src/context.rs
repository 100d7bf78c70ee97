//! What every controller is given: the client and the controller manager's options.

use std::sync::Arc;
use std::time::Duration;

/// kube-controller-manager's flags that Capstan's controllers read.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Leader-election identity, unique per process.
    pub identity: String,
    /// `--controllers`: `*` for all, `name` to enable, `-name` to disable.
    pub controllers: Vec<String>,
    /// Leader-election timings; `None` for the upstream defaults (15 s / 10 s / 2 s).
    pub leader_election: Option<LeaderTimings>,
    /// `--cluster-cidr`: node IPAM hands out a podCIDR per node from it when set.
    pub cluster_cidr: Option<ipnet::IpNet>,
    /// `--node-cidr-mask-size` (24 for IPv4).
    pub node_cidr_mask_size: u8,
    /// `--node-monitor-grace-period` (40 s): a node whose Lease is older goes Unknown.
    pub node_monitor_grace_period: Duration,
    /// `--node-monitor-period` (5 s).
    pub node_monitor_period: Duration,
    /// `--terminated-pod-gc-threshold` (12500).
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA certificate (PEM), published in every namespace as `kube-root-ca.crt`.
    pub root_ca_pem: Option<String>,
    /// `--cluster-signing-cert-file` / `--cluster-signing-key-file` as PEM: signs approved
    /// CSRs for the kubelet signers when set.
    pub signing: Option<Arc<SigningKeyPair>>,
    /// `--max-endpoints-per-slice` (100): the endpointslice controller's slice size.
    pub max_endpoints_per_slice: usize,
    /// `--mirroring-max-endpoints-per-subset` (1000): the mirroring controller's slice size.
    pub mirroring_max_endpoints_per_subset: usize,
    /// The Job controller's first back-off before replacing a failed pod, doubled per
    /// consecutive failure (upstream's fixed `DefaultJobPodFailureBackOff`, 10 s). Not a
    /// kube-controller-manager flag: tests shorten it so that backoffLimit runs in seconds.
    pub job_pod_failure_backoff: Duration,
    /// `--legacy-service-account-token-clean-up-period`: how long an auto-generated legacy
    /// token may go unused before it is marked invalid, and then deleted.
    pub legacy_token_clean_up_period: Duration,
    /// How often the legacy token cleaner looks (upstream: a day).
    pub legacy_token_sync_interval: Duration,
}

/// Lease timings of the leader election.
#[derive(Debug, Clone)]
pub struct LeaderTimings {
    /// `--leader-elect-lease-duration`.
    pub lease_duration: Duration,
    /// `--leader-elect-renew-deadline`.
    pub renew_deadline: Duration,
    /// `--leader-elect-retry-period`.
    pub retry_period: Duration,
}

/// The cluster signing CA, PEM encoded.
#[derive(Debug, Clone)]
pub struct SigningKeyPair {
    /// The CA certificate.
    pub certificate_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl ControllerOptions {
    /// kube-controller-manager's defaults, every controller enabled.
    pub fn new(identity: &str) -> ControllerOptions {
        ControllerOptions {
            identity: identity.into(),
            controllers: vec!["*".into()],
            leader_election: None,
            cluster_cidr: None,
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            terminated_pod_gc_threshold: 12500,
            root_ca_pem: None,
            signing: None,
            max_endpoints_per_slice: 100,
            mirroring_max_endpoints_per_subset: 1000,
            job_pod_failure_backoff: crate::job::DEFAULT_POD_FAILURE_BACKOFF,
            legacy_token_clean_up_period: Duration::from_secs(365 * 24 * 60 * 60),
            legacy_token_sync_interval: Duration::from_secs(24 * 60 * 60),
        }
    }

    /// Whether `--controllers` enables `name`: an explicit `name` or `-name` wins over `*`.
    pub fn enabled(&self, name: &str) -> bool {
        let mut all = false;
        for entry in &self.controllers {
            if entry == name {
                return true;
            }
            if entry.strip_prefix('-') == Some(name) {
                return false;
            }
            all |= entry == "*";
        }
        all
    }
}

/// The client and options, cheap to clone into each controller.
#[derive(Clone)]
pub struct Context {
    /// The API client (in process or remote).
    pub client: kube::Client,
    /// The options.
    pub options: Arc<ControllerOptions>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .finish()
    }
}

impl Context {
    /// A context for the controllers.
    pub fn new(client: kube::Client, options: ControllerOptions) -> Context {
        Context {
            client,
            options: Arc::new(options),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag_enables_and_disables() {
        let mut options = ControllerOptions::new("x");
        assert!(options.enabled("deployment"));
        options.controllers = vec!["*".into(), "-deployment".into()];
        assert!(!options.enabled("deployment"));
        assert!(options.enabled("job"));
        options.controllers = vec!["job".into()];
        assert!(!options.enabled("deployment"));
        assert!(options.enabled("job"));
    }
}
