//! ResourceQuota admission: a create is refused when it would take a quota of its namespace
//! past `status.hard`, and otherwise charged to `status.used` before it is stored, as
//! kube-apiserver's plugin does. Charging updates the quota with its resourceVersion as a
//! precondition, under a per-namespace lock, so two creates racing for the last slot cannot
//! both pass. Deletes are not charged: [`recalc`] recounts (kube's quota controller's job).

pub mod recalc;
pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;

use super::resources::{self, ResourceList};
use super::{Attributes, Operation, Plugin};
use crate::kinds::Kind;
use crate::quantity::Quantity;
use crate::rest;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};
use capstan_store::StoreError;

/// How often charging re-reads the quotas after another writer changed one meanwhile.
const ATTEMPTS: usize = 8;

/// The ResourceQuota plugin.
pub struct ResourceQuota;

impl Plugin for ResourceQuota {
    fn name(&self) -> &'static str {
        "ResourceQuota"
    }

    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let (Some(object), Some(namespace)) = (object, attributes.namespace) else {
                return Ok(());
            };
            if attributes.subresource.is_some() || !attributes.kind.namespaced {
                return Ok(());
            }
            let kind = attributes.kind;
            let delta = match (attributes.operation, attributes.old) {
                (Operation::Create, _) => usage::usage(kind, object),
                // Updates can grow services (type, ports) and claims (expansion) only, as
                // kube's evaluators; what shrinks is given back by the recount.
                (Operation::Update, Some(old)) if usage::charges_updates(kind) => {
                    growth(&usage::usage(kind, object), &usage::usage(kind, old))
                }
                _ => return Ok(()),
            };
            // Most namespaces have no quota: their creates need not wait for the lock.
            if resources::list_in(attributes.server, "", "resourcequotas", namespace)
                .await?
                .is_empty()
            {
                return Ok(());
            }
            let lock = namespace_lock(attributes.server, namespace);
            let _serialised = lock.lock().await;
            let mut last = None;
            let mut done = Vec::new();
            for _ in 0..ATTEMPTS {
                match charge(attributes, namespace, object, &delta, &mut done).await {
                    Err(e) if e.reason == "Conflict" => last = Some(e),
                    outcome => return outcome,
                }
            }
            Err(last.unwrap_or_else(|| ApiError::internal("quota charging did not settle")))
        })
    }
}

/// The lock that serialises quota charging and recounting in one namespace of one store.
pub(crate) fn namespace_lock(server: &ApiServer, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = HashMap<(usize, String), Arc<tokio::sync::Mutex<()>>>;
    static LOCKS: LazyLock<Mutex<Locks>> = LazyLock::new(Default::default);
    let store = Arc::as_ptr(&server.store) as *const () as usize;
    let mut locks = match LOCKS.lock() {
        Ok(locks) => locks,
        Err(poisoned) => poisoned.into_inner(),
    };
    Arc::clone(locks.entry((store, namespace.to_string())).or_default())
}

/// The quota kind, when served.
pub(crate) fn quota_kind(server: &ApiServer) -> Option<&Kind> {
    server.kinds().find("", "v1", "resourcequotas")
}

/// Quantities as a quota's status holds them, canonical.
pub(crate) fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

/// `a=1,b=2`, by name, as kube prints resource lists in quota errors.
fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What `new` uses beyond `old`, resource by resource (kube's
/// `SubtractWithNonNegativeResult`).
fn growth(new: &ResourceList, old: &ResourceList) -> ResourceList {
    new.iter()
        .map(|(name, quantity)| {
            let grown = match old.get(name) {
                Some(before) if before >= quantity => Quantity::ZERO,
                Some(before) => quantity.sub(before),
                None => *quantity,
            };
            (name.clone(), grown)
        })
        .collect()
}

fn mask(list: &ResourceList, names: &[String]) -> ResourceList {
    list.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// One pass of kube's `checkRequest`: every quota selecting the object must have room for its
/// usage; then each is charged, with its revision as precondition (a `Conflict` retries).
/// `done` names the quotas an earlier pass charged already.
async fn charge(
    attributes: &Attributes<'_>,
    namespace: &str,
    object: &Value,
    delta: &ResourceList,
    done: &mut Vec<String>,
) -> ApiResult<()> {
    let server = attributes.server;
    let kind = attributes.kind;
    let Some(quotas_kind) = quota_kind(server) else {
        return Ok(());
    };
    let quotas = resources::list_in(server, "", "resourcequotas", namespace).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let forbidden =
        |why: String| ApiError::forbidden(kind.group, kind.plural, attributes.name, &why);
    let mut charged = Vec::new();
    for mut quota in quotas {
        if !usage::in_scope(&quota, kind, object) {
            continue;
        }
        let quota_name = crate::strategy::meta_str(&quota, "name")
            .unwrap_or("")
            .to_string();
        if done.contains(&quota_name) {
            continue;
        }
        let spec_hard = resources::resource_list(quota.pointer("/spec/hard"));
        let status_hard = resources::resource_list(quota.pointer("/status/hard"));
        if spec_hard != status_hard || quota.pointer("/status/used").is_none() {
            // Not counted yet (just made or changed): count it now rather than answer
            // kube's "status unknown for quota".
            quota = recalc::recount(server, quotas_kind, namespace, &quota).await?;
        }
        let hard = resources::resource_list(quota.pointer("/status/hard"));
        let tracked: Vec<String> = hard
            .keys()
            .filter(|r| usage::tracks(kind, r))
            .cloned()
            .collect();
        if tracked.is_empty() {
            continue;
        }
        usage::constraints(kind, object, &tracked)
            .map_err(|why| forbidden(format!("failed quota: {quota_name}: {why}")))?;
        let requested = mask(delta, &tracked);
        if requested.values().all(Quantity::is_zero) {
            continue;
        }
        let used = resources::resource_list(quota.pointer("/status/used"));
        let mut new_used = used.clone();
        resources::add_into(&mut new_used, &requested);
        let exceeded: Vec<String> = requested
            .keys()
            .filter(|r| match (new_used.get(*r), hard.get(*r)) {
                (Some(u), Some(h)) => u > h,
                _ => false,
            })
            .cloned()
            .collect();
        if !exceeded.is_empty() {
            return Err(forbidden(format!(
                "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                pretty(&mask(&requested, &exceeded)),
                pretty(&mask(&used, &exceeded)),
                pretty(&mask(&hard, &exceeded)),
            )));
        }
        quota["status"]["used"] = to_json(&new_used);
        charged.push((quota_name, quota));
    }
    if attributes.dry_run {
        return Ok(());
    }
    if !charged.is_empty() && attributes.operation == Operation::Create {
        let key = kind.key(Some(namespace), attributes.name);
        recalc::add_pending(server, namespace, kind, key, object);
    }
    for (name, quota) in charged {
        let revision = quota
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(rest::parse_revision)
            .transpose()?
            .unwrap_or(0);
        let key = quotas_kind.key(Some(namespace), &name);
        match server
            .store
            .update(&key, rest::encode(&quota), revision)
            .await
        {
            Ok(_) => {
                tracing::debug!(quota = %key, object = attributes.name, "charged");
                done.push(name);
            }
            Err(StoreError::Conflict { .. }) => {
                return Err(ApiError::modified("", "resourcequotas", &name));
            }
            Err(e) => return Err(rest::store_error(e, quotas_kind, &name)),
        }
    }
    Ok(())
}
