//! `legacy-serviceaccount-token-cleaner`: auto-generated legacy token Secrets (referenced from
//! their ServiceAccount's `secrets`, mounted by no pod) unused for
//! `--legacy-service-account-token-clean-up-period` get the label
//! `kubernetes.io/legacy-token-invalid-since`, and are deleted once that date too is a period
//! old. Dates are days (`YYYY-MM-DD`, UTC), as the API server writes `last-used`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use serde_json::json;

use super::{TOKEN_TYPE, account_name, is_owner, refs};
use crate::context::Context;

/// The label with the day a legacy token was last used (the API server sets it).
pub const LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";
/// The label with the day the cleaner found the token unused.
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";
/// The API server's ConfigMap saying since when legacy token use is tracked.
pub const TRACKING_CONFIG_MAP: &str = "kube-apiserver-legacy-service-account-token-tracking";
/// Its key with the day tracking began.
pub const TRACKING_SINCE_KEY: &str = "since";

/// Starts the cleaner.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    let period = context.options.legacy_token_clean_up_period;
    let interval = context.options.legacy_token_sync_interval;
    Box::pin(run(context.client, period, interval))
}

async fn run(client: kube::Client, period: Duration, interval: Duration) {
    let period = match SignedDuration::try_from(period) {
        Ok(period) if !period.is_zero() => period,
        _ => {
            tracing::error!(?period, "invalid legacy token clean-up period");
            return;
        }
    };
    loop {
        if let Err(error) = evaluate(&client, period, Timestamp::now()).await {
            tracing::warn!(%error, "legacy service account token cleaner");
        }
        tokio::time::sleep(interval).await;
    }
}

fn day(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d").to_string()
}

fn is_day(text: &str) -> bool {
    jiff::civil::Date::strptime("%Y-%m-%d", text).is_ok()
}

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
enum CleanError {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The tracking ConfigMap is missing or malformed.
    #[error("legacy token tracking: {0}")]
    Tracking(String),
}

/// The first day whose use is surely recorded: the day after tracking began.
async fn tracked_since(client: &kube::Client) -> Result<Timestamp, CleanError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let map = maps.get(TRACKING_CONFIG_MAP).await?;
    let since = map
        .data
        .as_ref()
        .and_then(|d| d.get(TRACKING_SINCE_KEY))
        .ok_or_else(|| CleanError::Tracking("configMap does not have since label".into()))?;
    let date = jiff::civil::Date::strptime("%Y-%m-%d", since)
        .map_err(|e| CleanError::Tracking(format!("error parsing trackedSince time: {e}")))?;
    date.tomorrow()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|e| CleanError::Tracking(e.to_string()))
}

/// One round (`evaluateSATokens`).
async fn evaluate(
    client: &kube::Client,
    period: SignedDuration,
    now: Timestamp,
) -> Result<(), CleanError> {
    let since = tracked_since(client).await?;
    let Ok(preserve_created) = now.checked_sub(period) else {
        return Ok(());
    };
    if preserve_created < since {
        // Not tracked long enough to know a token went unused.
        return Ok(());
    }
    let preserve_used = day(preserve_created);
    let secrets: Api<Secret> = Api::all(client.clone());
    let mut mounted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for secret in secrets.list(&ListParams::default()).await?.items {
        if secret.type_.as_deref() != Some(TOKEN_TYPE)
            || secret.metadata.deletion_timestamp.is_some()
            || secret
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| t.0 >= preserve_created)
        {
            continue;
        }
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        if let Some(last_used) = labels.get(LAST_USED_LABEL) {
            if !is_day(last_used) || *last_used >= preserve_used {
                continue;
            }
        }
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        // Only tokens their account lists were made by the tokens controller.
        let Some(account) = account_name(&secret) else {
            continue;
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        let Some(account) = accounts.get_opt(&account).await? else {
            continue;
        };
        let listed = account
            .secrets
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(&name));
        if !is_owner(&secret, &account) || !listed {
            continue;
        }
        if !mounted.contains_key(&namespace) {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let used = pods
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .flat_map(refs::secret_names)
                .collect();
            mounted.insert(namespace.clone(), used);
        }
        if mounted.get(&namespace).is_some_and(|m| m.contains(&name)) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        match labels.get(INVALID_SINCE_LABEL).filter(|d| is_day(d)) {
            None => {
                let today = day(now);
                tracing::info!(%namespace, secret = %name, invalid_since = %today, "marking the auto-generated service account token as invalid");
                let patch = json!({"metadata": {"uid": secret.metadata.uid,
                                                "labels": {INVALID_SINCE_LABEL: today}}});
                if let Err(error) = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(%error, secret = %name, "could not label the legacy token");
                }
            }
            Some(invalid_since) if *invalid_since >= preserve_used => {}
            Some(invalid_since) => {
                tracing::info!(%namespace, secret = %name, %invalid_since, "deleting the auto-generated service account token");
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: None,
                        resource_version: secret.metadata.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                    Err(error) => {
                        tracing::warn!(%error, secret = %name, "could not delete the legacy token");
                    }
                }
            }
        }
    }
    Ok(())
}
