//! What a request asks to do, as authorizers see it (kube's `authorizer.Attributes`, derived
//! from the path the way kube-apiserver's `RequestInfoFactory` does): the verb, and either the
//! resource (group, version, resource, subresource, namespace, name) or the non-resource path.
//! It is worked out from the path alone, not the kind table, so an unknown resource is judged
//! like a known one, as upstream.

use http::Method;

/// The attributes of one request, or of a SubjectAccessReview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `proxy`...; the lowercase HTTP method for non-resource requests.
    pub verb: String,
    /// Whether this is a request on a resource (else on a non-resource path).
    pub resource_request: bool,
    /// The request path.
    pub path: String,
    /// The API group, empty for core.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The resource, e.g. `pods`.
    pub resource: String,
    /// The subresource, e.g. `log`.
    pub subresource: String,
    /// The object's name, when the request names one.
    pub name: String,
    /// The namespace, empty for cluster-scoped requests.
    pub namespace: String,
}

/// Namespace subresources: `/namespaces/<name>/<this>` is the namespace's subresource, not a
/// namespaced resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// The attributes of a request with `method` on `path` with the query string `query`.
    pub fn from_request(method: &Method, path: &str, query: Option<&str>) -> Attributes {
        let mut attributes = Attributes {
            verb: method.as_str().to_lowercase(),
            path: path.to_string(),
            ..Attributes::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                attributes.api_version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                attributes.api_group = group.to_string();
                attributes.api_version = version.to_string();
                rest
            }
            _ => return attributes,
        };
        attributes.resource_request = true;
        let mut parts: Vec<&str> = rest.to_vec();
        let by_method = !matches!(parts.first(), Some(&("watch" | "proxy")));
        if by_method {
            attributes.verb = match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            }
            .to_string();
        } else {
            attributes.verb = parts.remove(0).to_string();
        }
        if parts.first() == Some(&"namespaces") {
            if let Some(namespace) = parts.get(1) {
                attributes.namespace = namespace.to_string();
                if parts
                    .get(2)
                    .is_some_and(|p| !NAMESPACE_SUBRESOURCES.contains(p))
                {
                    parts.drain(..2);
                }
            }
        }
        if let Some(resource) = parts.first() {
            attributes.resource = resource.to_string();
        }
        if let Some(name) = parts.get(1) {
            attributes.name = name.to_string();
        }
        if attributes.verb != "proxy" {
            if let Some(subresource) = parts.get(2) {
                attributes.subresource = subresource.to_string();
            }
        }
        if attributes.name.is_empty() && attributes.verb == "get" {
            let watch = query_param(query, "watch").is_some_and(|w| w == "true" || w == "1");
            attributes.verb = if watch { "watch" } else { "list" }.to_string();
            if let Some(name) = query_param(query, "fieldSelector").and_then(|s| name_field(&s)) {
                attributes.name = name;
            }
        }
        if attributes.name.is_empty() && attributes.verb == "delete" {
            attributes.verb = "deletecollection".to_string();
        }
        attributes
    }

    /// The resource with its subresource: `pods/log`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .last()
}

/// The name a field selector pins with `metadata.name=<name>`, as upstream narrows a list or
/// watch of one object to that name.
fn name_field(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (field, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(f, _)| !f.ends_with('!'))?;
        let value = value.trim();
        (field.trim() == "metadata.name"
            && !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains('/')
            && !value.contains('%'))
        .then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, query: Option<&str>) -> Attributes {
        Attributes::from_request(&method, path, query)
    }

    #[test]
    fn verbs_and_resources_as_kube_derives_them() {
        let list = of(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            (
                list.verb.as_str(),
                list.resource.as_str(),
                list.namespace.as_str()
            ),
            ("list", "pods", "default")
        );
        assert!(list.resource_request);
        let watch = of(
            Method::GET,
            "/apis/apps/v1/deployments",
            Some("watch=true&fieldSelector=metadata.name%3Dweb"),
        );
        assert_eq!(
            (
                watch.verb.as_str(),
                watch.name.as_str(),
                watch.api_group.as_str()
            ),
            ("watch", "web", "apps")
        );
        let legacy_watch = of(Method::GET, "/api/v1/watch/namespaces/x/pods", None);
        assert_eq!(
            (legacy_watch.verb.as_str(), legacy_watch.namespace.as_str()),
            ("watch", "x")
        );
        let log = of(Method::GET, "/api/v1/namespaces/d/pods/web/log", None);
        assert_eq!(
            (log.verb.as_str(), log.combined_resource()),
            ("get", "pods/log".to_string())
        );
        let collection = of(Method::DELETE, "/api/v1/namespaces/d/configmaps", None);
        assert_eq!(collection.verb, "deletecollection");
        let namespace = of(Method::PUT, "/api/v1/namespaces/d/status", None);
        assert_eq!(
            (
                namespace.resource.as_str(),
                namespace.name.as_str(),
                namespace.subresource.as_str(),
                namespace.namespace.as_str()
            ),
            ("namespaces", "d", "status", "d")
        );
        let nodes = of(Method::GET, "/api/v1/nodes/n1", None);
        assert_eq!((nodes.verb.as_str(), nodes.namespace.as_str()), ("get", ""));
    }

    #[test]
    fn discovery_and_health_are_non_resource_paths() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
        ] {
            let attributes = of(Method::GET, path, None);
            assert!(!attributes.resource_request, "{path}");
            assert_eq!(attributes.verb, "get");
        }
        assert_eq!(of(Method::POST, "/logs", None).verb, "post");
    }
}
