//! Leader election over a `coordination.k8s.io/v1` Lease, with client-go's rules: a candidate
//! takes the Lease when it is free or its holder has not renewed it for `leaseDurationSeconds`,
//! the leader renews it every retry period and steps down when it could not renew within the
//! renew deadline, and a leader that stops releases it so that the next one need not wait.
//! Several control planes may run against one store; only the holder of each Lease acts.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

/// The Lease and the timings, named after kube-controller-manager's `--leader-elect-*` flags.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// The Lease's namespace (`kube-system`).
    pub namespace: String,
    /// The Lease's name (`kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// Who we are, unique per process: client-go uses `hostname_<uuid>`.
    pub identity: String,
    /// `--leader-elect-lease-duration` (15 s).
    pub lease_duration: Duration,
    /// `--leader-elect-renew-deadline` (10 s).
    pub renew_deadline: Duration,
    /// `--leader-elect-retry-period` (2 s).
    pub retry_period: Duration,
}

impl LeaderElection {
    /// The upstream defaults for the Lease `namespace/name`, held as `identity`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaderElection {
        LeaderElection {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Contends for the Lease until `shutdown` completes; while it holds it, runs the future
    /// `lead` makes. The future is dropped when leadership is lost (so it should own what it
    /// starts, e.g. in a `JoinSet`), and made again when leadership comes back.
    pub async fn run<F, Fut>(
        &self,
        client: kube::Client,
        mut lead: F,
        shutdown: impl Future<Output = ()>,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let leases: Api<Lease> = Api::namespaced(client, &self.namespace);
        tokio::pin!(shutdown);
        loop {
            // Candidate: try at every retry period until the Lease is ours.
            let acquired = tokio::select! {
                _ = &mut shutdown => return,
                acquired = self.acquire(&leases) => acquired,
            };
            if !acquired {
                continue;
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let work = lead();
            tokio::pin!(work);
            let outcome = tokio::select! {
                _ = &mut shutdown => Outcome::Shutdown,
                () = &mut work => Outcome::Finished,
                () = self.keep(&leases) => Outcome::Lost,
            };
            match outcome {
                Outcome::Lost => {
                    tracing::warn!(lease = %self.name, identity = %self.identity, "leadership lost");
                }
                Outcome::Shutdown | Outcome::Finished => {
                    self.release(&leases).await;
                    return;
                }
            }
        }
    }

    /// Tries until the Lease is ours; false is never returned except to let the caller look at
    /// its shutdown signal between attempts.
    async fn acquire(&self, leases: &Api<Lease>) -> bool {
        loop {
            match self.try_acquire_or_renew(leases).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(lease = %self.name, %error, "leader election attempt failed")
                }
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews every retry period; returns when no renewal succeeded for the renew deadline.
    async fn keep(&self, leases: &Api<Lease>) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew(leases).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "could not renew the lease");
                    if last_renewed.elapsed() >= self.renew_deadline {
                        return;
                    }
                }
            }
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`: Ok(true) when we hold the Lease after it.
    async fn try_acquire_or_renew(&self, leases: &Api<Lease>) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_seconds = self.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another candidate created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !expired(spec) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration_seconds);
        // The resourceVersion read above makes this a compare-and-swap: of two candidates
        // replacing an expired holder, one gets 409 Conflict.
        match leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up as client-go's `ReleaseOnCancel` does: no holder, a 1 s duration.
    async fn release(&self, leases: &Api<Lease>) {
        let Ok(Some(mut lease)) = leases.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(error) = leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(lease = %self.name, %error, "could not release the lease");
        } else {
            tracing::info!(lease = %self.name, identity = %self.identity, "released the lease");
        }
    }
}

enum Outcome {
    Shutdown,
    Finished,
    Lost,
}

/// The holder has not renewed within its own lease duration.
fn expired(spec: &LeaseSpec) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let duration =
        jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .saturating_add(duration)
        .map_or(true, |until| until < jiff::Timestamp::now())
}

/// A process-unique identity, like client-go's `hostname_uuid`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "capstan".into());
    let nonce: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()).rotate_left(32);
    format!("{host}_{nonce:016x}")
}
