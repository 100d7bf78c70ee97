//! Reading resources the way LimitRanger and ResourceQuota need them: resource lists
//! (`{"cpu": "500m"}`) as quantities, the objects of one kind in a namespace, and a pod's
//! effective requests and limits (kube's `resourcehelper.PodRequests` / `PodLimits`).

use std::collections::BTreeMap;

use capstan_store::ListOptions;
use serde_json::Value;

use crate::quantity::Quantity;
use crate::rest;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// A resource list, by resource name; sorted, as kube prints them.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The quantities of a JSON resource list; entries that are no quantity are left out
/// (validation refuses them before they are stored).
pub fn resource_list(value: Option<&Value>) -> ResourceList {
    let Some(map) = value.and_then(Value::as_object) else {
        return ResourceList::new();
    };
    map.iter()
        .filter_map(|(name, v)| {
            let quantity = match v {
                Value::String(s) => Quantity::parse(s).ok()?,
                Value::Number(n) => Quantity::parse(&n.to_string()).ok()?,
                _ => return None,
            };
            Some((name.clone(), quantity))
        })
        .collect()
}

/// Adds `b` into `a`, resource by resource.
pub fn add_into(a: &mut ResourceList, b: &ResourceList) {
    for (name, quantity) in b {
        let sum = a.get(name).map_or(*quantity, |q| q.add(quantity));
        a.insert(name.clone(), sum);
    }
}

/// `a` raised to `b` where `b` is larger, resource by resource.
fn max_into(a: &mut ResourceList, b: &ResourceList) {
    for (name, quantity) in b {
        if a.get(name).is_none_or(|q| quantity > q) {
            a.insert(name.clone(), *quantity);
        }
    }
}

/// The objects of `group`/`plural` in `namespace`, as stored; none when the kind is not served.
pub async fn list_in(
    server: &ApiServer,
    group: &str,
    plural: &str,
    namespace: &str,
) -> ApiResult<Vec<Value>> {
    let Some(kind) = server
        .kinds()
        .all()
        .iter()
        .find(|k| k.group == group && k.plural == plural)
    else {
        return Ok(Vec::new());
    };
    let listed = server
        .store
        .list(
            &kind.namespace_prefix(Some(namespace)),
            ListOptions::default(),
        )
        .await
        .map_err(|e| rest::store_error(e, kind, ""))?;
    listed.items.iter().map(rest::decode).collect()
}

/// The containers of a pod spec (`containers` or `initContainers`) as JSON objects.
pub fn containers<'a>(spec: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.is_object())
}

/// Which of a container's resource lists: `requests` or `limits`.
pub fn container_resources(container: &Value, which: &str) -> ResourceList {
    resource_list(container.pointer(&format!("/resources/{which}")))
}

/// A pod's effective `requests` or `limits`: the larger of the app containers' sum (with the
/// sidecars, init containers that restart always) and each init container's own amount (with
/// the sidecars started before it), plus the pod overhead.
pub fn pod_resources(spec: &Value, which: &str) -> ResourceList {
    let mut sum = ResourceList::new();
    for container in containers(spec, "containers") {
        add_into(&mut sum, &container_resources(container, which));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for container in containers(spec, "initContainers") {
        let own = container_resources(container, which);
        if container.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            add_into(&mut sidecars, &own);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut with_sidecars = sidecars.clone();
            add_into(&mut with_sidecars, &own);
            max_into(&mut init_peak, &with_sidecars);
        }
    }
    add_into(&mut sum, &sidecars);
    max_into(&mut sum, &init_peak);
    add_into(&mut sum, &resource_list(spec.get("overhead")));
    sum
}

/// A namespace's labels, or none when it is not found.
pub async fn namespace_labels(
    server: &ApiServer,
    namespace: &str,
) -> ApiResult<BTreeMap<String, String>> {
    let Some(kind) = server.kinds().find("", "v1", "namespaces") else {
        return Ok(BTreeMap::new());
    };
    let object = match rest::get_object(server, kind, None, namespace).await {
        Ok((object, _)) => object,
        Err(ApiError { code: 404, .. }) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let labels = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cpu(list: &ResourceList) -> String {
        list.get("cpu").map(|q| q.to_string()).unwrap_or_default()
    }

    #[test]
    fn pod_requests_take_the_larger_of_containers_and_init_containers() {
        let spec = json!({
            "containers": [
                {"resources": {"requests": {"cpu": "100m"}}},
                {"resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}],
        });
        let requests = pod_resources(&spec, "requests");
        assert_eq!(cpu(&requests), "1");
        assert_eq!(
            requests.get("memory").map(|q| q.to_string()).as_deref(),
            Some("1Gi")
        );
        let sidecar = json!({
            "containers": [{"resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [{"restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}}],
            "overhead": {"cpu": "10m"},
        });
        assert_eq!(cpu(&pod_resources(&sidecar, "requests")), "160m");
    }
}
