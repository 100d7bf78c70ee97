//! Empties a terminating namespace, as upstream's namespacedResourcesDeleter: every namespaced
//! resource discovery lists with `delete` is deleted by collection (or one by one), in the
//! background; what is left is counted, by resource and by finalizer.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};

use super::conditions::Findings;
use crate::discovery::{self, Served};

/// How long to wait for objects held by finalizers before looking again (upstream's
/// finalizerEstimateSeconds).
const FINALIZER_ESTIMATE: i64 = 15;

/// One pass: deletes what is left and reports it; the seconds to wait before the next look
/// (0 when the namespace is empty).
pub async fn delete_content(
    client: &kube::Client,
    namespace: &str,
    deleted_at: Timestamp,
) -> (i64, Findings) {
    let mut findings = Findings::default();
    let served = match discovery::served(client, &["delete"]).await {
        Ok(served) => served,
        Err(error) => {
            findings.discovery = Some(error.to_string());
            Vec::new()
        }
    };
    let mut estimate = 0;
    for served in served.iter().filter(|s| s.namespaced) {
        match delete_resource(client, served, namespace, deleted_at, &mut findings).await {
            Ok(seconds) => estimate = estimate.max(seconds),
            Err(error) => findings.content_errors.push(error),
        }
    }
    (estimate, findings)
}

async fn delete_resource(
    client: &kube::Client,
    served: &Served,
    namespace: &str,
    deleted_at: Timestamp,
    findings: &mut Findings,
) -> Result<i64, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &served.resource);
    let resource = format!("{}.{}", served.resource.plural, served.resource.group);
    let estimate = if served.resource.group.is_empty() && served.resource.plural == "pods" {
        pods_estimate(client, namespace, deleted_at).await?
    } else {
        0
    };
    let background = DeleteParams::background();
    if served.supports("deletecollection") {
        match api
            .delete_collection(&background, &ListParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if ignorable(&e) => {}
            Err(e) => return Err(e.to_string()),
        }
    } else if served.supports("list") {
        let listed = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        for item in listed.items {
            let name = item.metadata.name.unwrap_or_default();
            match api.delete(&name, &background).await {
                Ok(_) => {}
                Err(e) if ignorable(&e) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    if !served.supports("list") {
        return Ok(estimate);
    }
    let left = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    if left.items.is_empty() {
        return Ok(0);
    }
    findings
        .remaining
        .insert(resource.clone(), left.items.len());
    let mut held = false;
    for item in &left.items {
        for finalizer in item.metadata.finalizers.iter().flatten() {
            *findings.finalizers.entry(finalizer.clone()).or_default() += 1;
            held = true;
        }
    }
    if estimate > 0 {
        return Ok(estimate);
    }
    if held {
        return Ok(FINALIZER_ESTIMATE);
    }
    Err(format!(
        "unexpected items still remain in namespace: {namespace} for gvr: {}",
        gvr(served)
    ))
}

/// How long running pods may still take: their longest grace period, less the time since the
/// namespace's deletion began.
async fn pods_estimate(
    client: &kube::Client,
    namespace: &str,
    deleted_at: Timestamp,
) -> Result<i64, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let longest = listed
        .items
        .iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .max()
        .unwrap_or(0);
    let elapsed = Timestamp::now().duration_since(deleted_at).as_secs();
    Ok((longest - elapsed).max(0))
}

/// Go's printing of a GroupVersionResource.
fn gvr(served: &Served) -> String {
    format!(
        "{}/{}, Resource={}",
        served.resource.group, served.resource.version, served.resource.plural
    )
}

/// Gone already, or the verb is not served after all.
fn ignorable(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if matches!(status.code, 404 | 405))
}
