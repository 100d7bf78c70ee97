//! The network side of adopting pods after a restart: CNI CHECK of each running sandbox (a
//! failure is reported, not repaired: the kubelet decides what to do with the pod), then CNI
//! GC with every sandbox the runtime knows, which releases what a crash left attached, and a
//! first readiness check.

use std::time::Duration;

use super::PodManager;
use super::sandbox::attachment_of;
use crate::network::CheckOutcome;

/// How long the start may wait for the plugins: a hung plugin must not keep CRI from serving.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

impl PodManager {
    /// Runs CHECK for every adopted sandbox that is running with its network attached, and
    /// logs each failure with the sandbox and the plugin's error.
    pub(super) async fn check_adopted_networks(&self) {
        let sandboxes: Vec<_> = {
            let state = self.state.lock().await;
            state
                .sandboxes
                .values()
                .filter(|s| s.ready && s.own_network && s.network_attached)
                .cloned()
                .collect()
        };
        let checks = sandboxes.iter().map(|sandbox| async move {
            let attachment = attachment_of(sandbox);
            (sandbox, self.network.check(&attachment).await)
        });
        let Ok(outcomes) =
            tokio::time::timeout(RECONCILE_TIMEOUT, futures::future::join_all(checks)).await
        else {
            tracing::warn!("CNI CHECK of adopted sandboxes timed out");
            return;
        };
        for (sandbox, outcome) in outcomes {
            match outcome {
                Ok(CheckOutcome::Passed) => {
                    tracing::debug!(id = %sandbox.id, "CNI CHECK passed for an adopted sandbox")
                }
                Ok(CheckOutcome::Skipped(reason)) => {
                    tracing::debug!(id = %sandbox.id, %reason, "CNI CHECK skipped for an adopted sandbox")
                }
                Err(e) => tracing::warn!(
                    id = %sandbox.id,
                    error = %e,
                    "CNI CHECK failed for an adopted sandbox; its network is not what ADD made"
                ),
            }
        }
    }

    /// Runs CNI GC with the attachments of every sandbox the runtime knows, and logs what it
    /// released.
    pub(super) async fn collect_network_garbage(&self) {
        let valid: Vec<_> = {
            let state = self.state.lock().await;
            state.sandboxes.values().map(attachment_of).collect()
        };
        let Ok(report) = tokio::time::timeout(RECONCILE_TIMEOUT, self.network.gc(&valid)).await
        else {
            tracing::warn!("CNI GC timed out");
            return;
        };
        for error in &report.errors {
            tracing::warn!(%error, "CNI GC");
        }
        tracing::info!(
            valid_attachments = valid.len(),
            stale_deleted = ?report.stale_deleted,
            plugins_gc = report.plugins_skipped.as_deref().unwrap_or("ran"),
            "CNI GC done"
        );
    }

    /// Logs whether the network is ready. Asking also fills the plugins' VERSION cache, so the
    /// first pod does not pay for it.
    pub(super) async fn log_network_readiness(&self) {
        match self.network.ready().await {
            Ok(()) => tracing::info!("pod network ready"),
            Err(e) => tracing::warn!(error = %e, "pod network not ready"),
        }
    }
}
