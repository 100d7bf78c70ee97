//! Discovery, from the kind table: `/api`, `/apis`, `/apis/<group>`, the APIResourceLists of
//! each group version, the aggregated form (`apidiscovery.k8s.io` v2 and v2beta1, which kubectl
//! 1.27+ asks for first), and `/version`.

use http::Response;
use serde_json::{Value, json};

use crate::body::{self, ApiBody};
use crate::kinds::{Kind, STATUS_VERBS};
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// The aggregated discovery version the client asked for first, if any.
fn aggregated(accept: Option<&str>) -> Option<&'static str> {
    for choice in accept?.split(',') {
        let params: Vec<&str> = choice.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json") {
            continue;
        }
        let wants = |p: &str| params.contains(&p);
        if !wants("g=apidiscovery.k8s.io") || !wants("as=APIGroupDiscoveryList") {
            if params.len() == 1 {
                // Plain JSON comes first: the client prefers the unaggregated documents.
                return None;
            }
            continue;
        }
        if wants("v=v2") {
            return Some("v2");
        }
        if wants("v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

fn aggregated_response(version: &str, items: Vec<Value>) -> Response<ApiBody> {
    let list = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    body::bytes_response(200, &content_type, list.to_string().into_bytes())
}

fn response_kind(kind: &Kind) -> Value {
    json!({"group": kind.group, "version": kind.version, "kind": kind.kind})
}

/// One resource in aggregated discovery.
fn aggregated_resource(kind: &Kind) -> Value {
    let mut resource = json!({
        "resource": kind.plural,
        "responseKind": response_kind(kind),
        "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": kind.singular,
        "verbs": kind.verbs(),
    });
    if !kind.short_names.is_empty() {
        resource["shortNames"] = json!(kind.short_names);
    }
    if !kind.categories.is_empty() {
        resource["categories"] = json!(kind.categories);
    }
    if kind.status_subresource {
        resource["subresources"] = json!([{
            "subresource": "status",
            "responseKind": response_kind(kind),
            "verbs": STATUS_VERBS,
        }]);
    }
    if kind.custom.as_ref().is_some_and(|c| c.scale.is_some()) {
        let scale =
            json!({"subresource": "scale", "responseKind": scale_kind(), "verbs": STATUS_VERBS});
        match resource["subresources"].as_array_mut() {
            Some(list) => list.push(scale),
            None => resource["subresources"] = json!([scale]),
        }
    }
    let extra = crate::subresources::aggregated(kind);
    if !extra.is_empty() {
        let slot = &mut resource["subresources"];
        if !slot.is_array() {
            *slot = json!([]);
        }
        if let Some(list) = slot.as_array_mut() {
            list.extend(extra);
        }
    }
    resource
}

/// What the scale subresource of custom resources answers with.
fn scale_kind() -> Value {
    json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
}

/// The aggregated entry of one group, all its versions.
fn aggregated_group(server: &ApiServer, group: &str) -> Value {
    let versions: Vec<Value> = server
        .served()
        .versions(group)
        .into_iter()
        .map(|version| {
            let resources: Vec<Value> = server
                .served()
                .of(group, version)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// `/api`.
pub fn core_versions(server: &ApiServer, accept: Option<&str>) -> Response<ApiBody> {
    if let Some(version) = aggregated(accept) {
        return aggregated_response(version, vec![aggregated_group(server, "")]);
    }
    let versions = server.served().versions("");
    body::json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": versions,
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }),
    )
}

fn group_entry(server: &ApiServer, group: &str) -> Value {
    let versions: Vec<Value> = server
        .served()
        .versions(group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or_else(|| json!({}));
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

fn named_groups(server: &ApiServer) -> Vec<&'static str> {
    server
        .served()
        .groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect()
}

/// `/apis`.
pub fn groups(server: &ApiServer, accept: Option<&str>) -> Response<ApiBody> {
    if let Some(version) = aggregated(accept) {
        let items = named_groups(server)
            .into_iter()
            .map(|g| aggregated_group(server, g))
            .collect();
        return aggregated_response(version, items);
    }
    let groups: Vec<Value> = named_groups(server)
        .into_iter()
        .map(|g| group_entry(server, g))
        .collect();
    body::json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// `/apis/<group>`.
pub fn group(server: &ApiServer, group: &str) -> ApiResult<Response<ApiBody>> {
    if group.is_empty() || server.served().versions(group).is_empty() {
        return Err(ApiError::path_not_found());
    }
    let mut entry = group_entry(server, group);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Ok(body::json_response(200, &entry))
}

/// `/api/v1` or `/apis/<group>/<version>`: the APIResourceList, subresources as `pods/status`.
pub fn resources(server: &ApiServer, group: &str, version: &str) -> ApiResult<Response<ApiBody>> {
    let table = server.served();
    let kinds = table.of(group, version);
    if kinds.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let mut resources = Vec::new();
    for kind in kinds {
        let mut resource = json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": kind.verbs(),
        });
        if !kind.short_names.is_empty() {
            resource["shortNames"] = json!(kind.short_names);
        }
        if !kind.categories.is_empty() {
            resource["categories"] = json!(kind.categories);
        }
        resources.push(resource);
        if kind.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": STATUS_VERBS,
            }));
        }
        if kind.custom.as_ref().is_some_and(|c| c.scale.is_some()) {
            resources.push(json!({
                "name": format!("{}/scale", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": STATUS_VERBS,
            }));
        }
        resources.extend(crate::subresources::legacy(kind));
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(body::json_response(
        200,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }),
    ))
}

/// `/version`.
pub fn version(server: &ApiServer) -> Response<ApiBody> {
    let git_version = &server.config.git_version;
    let minor = git_version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("33");
    body::json_response(
        200,
        &json!({
            "major": "1",
            "minor": minor,
            "emulationMajor": "1",
            "emulationMinor": minor,
            "minCompatibilityMajor": "1",
            "minCompatibilityMinor": minor,
            "gitVersion": git_version,
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
        }),
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_is_recognised() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated(Some(kubectl)), Some("v2"));
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated(Some(old)), Some("v2beta1"));
        assert_eq!(aggregated(Some("application/json")), None);
        assert_eq!(aggregated(None), None);
    }
}
