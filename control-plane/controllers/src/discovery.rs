//! The served resources, found through the API's discovery, as the garbage collector and the
//! namespace controller need them: every resource (not subresource) at its most stable version
//! that supports a set of verbs.

use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

/// A served resource and whether it is namespaced.
#[derive(Debug, Clone)]
pub struct Served {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// The verbs discovery lists for it.
    pub verbs: Vec<String>,
}

impl Served {
    /// Whether discovery lists `verb` for it.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `group/version/plural`: a resource's identity across versions-agnostic maps.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.resource.group, self.resource.version, self.resource.plural
        )
    }
}

/// Every resource the server serves that supports all of `verbs`, once per group and plural
/// (at the group's most stable version serving it).
pub async fn served(client: &kube::Client, verbs: &[&str]) -> Result<Vec<Served>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out: Vec<Served> = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.resources_by_stability() {
            if !verbs.iter().all(|v| caps.supports_operation(v)) {
                continue;
            }
            if out
                .iter()
                .any(|s| s.resource.group == resource.group && s.resource.plural == resource.plural)
            {
                continue;
            }
            out.push(from_caps(resource, &caps));
        }
    }
    Ok(out)
}

fn from_caps(resource: ApiResource, caps: &ApiCapabilities) -> Served {
    Served {
        resource,
        namespaced: matches!(caps.scope, Scope::Namespaced),
        verbs: caps.operations.clone(),
    }
}

/// Splits an `apiVersion` into group and version (`v1` is the core group's).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_split_into_group_and_version() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
    }
}
