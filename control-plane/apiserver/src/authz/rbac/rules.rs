//! RBAC policy rules: whether one allows a request (kube's `RuleAllows`), whether a set of rules
//! covers another (what escalation prevention and policy reconciliation ask), and the compact
//! text form upstream prints missing rules in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::authz::attributes::Attributes;

/// A rule of a Role or ClusterRole (`rbac/v1` `PolicyRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// The verbs, `*` for all.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub verbs: Vec<String>,
    /// The API groups, `*` for all.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub api_groups: Vec<String>,
    /// The resources (`pods`, `pods/log`, `*/scale`, `*`).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub resources: Vec<String>,
    /// The names the rule is limited to; empty for all.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/apis/*`).
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|i| i == item)
}

fn has_all(list: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(list, i))
}

impl PolicyRule {
    /// A resource rule.
    pub fn resource(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: owned(verbs),
            api_groups: owned(groups),
            resources: owned(resources),
            ..PolicyRule::default()
        }
    }

    /// A non-resource rule.
    pub fn non_resource(verbs: &[&str], urls: &[&str]) -> PolicyRule {
        let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: owned(verbs),
            non_resource_urls: owned(urls),
            ..PolicyRule::default()
        }
    }

    /// The same rule limited to `names`.
    pub fn named(mut self, names: &[&str]) -> PolicyRule {
        self.resource_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Whether the rule allows a request with `attributes`.
    pub fn allows(&self, attributes: &Attributes) -> bool {
        if !(has(&self.verbs, "*") || has(&self.verbs, &attributes.verb)) {
            return false;
        }
        if !attributes.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == attributes.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| attributes.path.starts_with(prefix))
            });
        }
        let group = has(&self.api_groups, "*") || has(&self.api_groups, &attributes.api_group);
        let combined = attributes.combined_resource();
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!attributes.subresource.is_empty()
                    && r.strip_prefix("*/") == Some(attributes.subresource.as_str()))
        });
        let name = self.resource_names.is_empty() || has(&self.resource_names, &attributes.name);
        group && resource && name
    }

    /// Whether this rule grants everything `sub` grants (kube's `ruleCovers`).
    fn covers(&self, sub: &PolicyRule) -> bool {
        let verbs = has(&self.verbs, "*") || has_all(&self.verbs, &sub.verbs);
        let groups = has(&self.api_groups, "*") || has_all(&self.api_groups, &sub.api_groups);
        let resources = has(&self.resources, "*")
            || sub.resources.iter().all(|r| {
                has(&self.resources, r)
                    || r.split_once('/')
                        .is_some_and(|(_, s)| has(&self.resources, &format!("*/{s}")))
            });
        let urls = sub.non_resource_urls.iter().all(|u| {
            self.non_resource_urls.iter().any(|o| {
                o == u
                    || o.strip_suffix('*')
                        .is_some_and(|prefix| u.starts_with(prefix))
            })
        });
        let names = self.resource_names.is_empty()
            || (!sub.resource_names.is_empty()
                && has_all(&self.resource_names, &sub.resource_names));
        verbs && groups && resources && urls && names
    }

    /// The rule split into rules of one group, resource, verb and name each (kube's
    /// `BreakdownRule`).
    fn breakdown(&self) -> Vec<PolicyRule> {
        let one = |s: &String| vec![s.clone()];
        let mut out = Vec::new();
        for group in &self.api_groups {
            for resource in &self.resources {
                for verb in &self.verbs {
                    let base = PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..PolicyRule::default()
                    };
                    if self.resource_names.is_empty() {
                        out.push(base);
                    } else {
                        for name in &self.resource_names {
                            out.push(PolicyRule {
                                resource_names: one(name),
                                ..base.clone()
                            });
                        }
                    }
                }
            }
        }
        for url in &self.non_resource_urls {
            for verb in &self.verbs {
                out.push(PolicyRule {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..PolicyRule::default()
                });
            }
        }
        out
    }

    /// The rule as upstream prints it: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let quoted = |list: &[String]| {
            let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(" "))
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", quoted(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// Whether `owner` grants everything `requested` does; the parts it does not grant when not.
pub fn covers(owner: &[PolicyRule], requested: &[PolicyRule]) -> (bool, Vec<PolicyRule>) {
    let missing: Vec<PolicyRule> = requested
        .iter()
        .flat_map(PolicyRule::breakdown)
        .filter(|sub| !owner.iter().any(|o| o.covers(sub)))
        .collect();
    (missing.is_empty(), missing)
}

/// Merges rules of one group, resource and name into one rule with all their verbs (kube's
/// `CompactRules`), so a missing grant reads as one line per resource.
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut simple: BTreeMap<(String, String, Option<String>), PolicyRule> = BTreeMap::new();
    let mut out = Vec::new();
    for rule in rules {
        let is_simple = rule.api_groups.len() == 1
            && rule.resources.len() == 1
            && rule.resource_names.len() <= 1
            && rule.non_resource_urls.is_empty()
            && !rule.verbs.is_empty();
        if !is_simple {
            out.push(rule);
            continue;
        }
        let key = (
            rule.api_groups[0].clone(),
            rule.resources[0].clone(),
            rule.resource_names.first().cloned(),
        );
        match simple.get_mut(&key) {
            Some(existing) => existing.verbs.extend(rule.verbs),
            None => {
                simple.insert(key, rule);
            }
        }
    }
    out.extend(simple.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn request(method: Method, path: &str) -> Attributes {
        Attributes::from_request(&method, path, None)
    }

    #[test]
    fn rules_match_as_upstream() {
        let pods = PolicyRule::resource(&["get", "list"], &[""], &["pods"]);
        assert!(pods.allows(&request(Method::GET, "/api/v1/namespaces/d/pods")));
        assert!(!pods.allows(&request(Method::GET, "/api/v1/namespaces/d/pods/p/log")));
        assert!(!pods.allows(&request(Method::DELETE, "/api/v1/namespaces/d/pods/p")));
        let log = PolicyRule::resource(&["get"], &[""], &["pods/log"]);
        assert!(log.allows(&request(Method::GET, "/api/v1/namespaces/d/pods/p/log")));
        let scale = PolicyRule::resource(&["*"], &["*"], &["*/scale"]);
        assert!(scale.allows(&request(
            Method::PUT,
            "/apis/apps/v1/namespaces/d/deployments/x/scale"
        )));
        assert!(!scale.allows(&request(
            Method::PUT,
            "/apis/apps/v1/namespaces/d/deployments/x"
        )));
        let named = PolicyRule::resource(&["get"], &[""], &["configmaps"]).named(&["a"]);
        assert!(named.allows(&request(Method::GET, "/api/v1/namespaces/d/configmaps/a")));
        assert!(!named.allows(&request(Method::GET, "/api/v1/namespaces/d/configmaps/b")));
        let discovery = PolicyRule::non_resource(&["get"], &["/apis/*", "/version"]);
        assert!(discovery.allows(&request(Method::GET, "/apis/apps/v1")));
        assert!(discovery.allows(&request(Method::GET, "/version")));
        assert!(!discovery.allows(&request(Method::GET, "/version/x")));
        assert!(!discovery.allows(&request(Method::POST, "/apis")));
    }

    #[test]
    fn coverage_and_the_missing_text() {
        let owner = vec![
            PolicyRule::resource(&["get", "list"], &[""], &["pods"]),
            PolicyRule::resource(&["*"], &["apps"], &["*/scale"]),
        ];
        let requested = vec![
            PolicyRule::resource(&["get"], &[""], &["pods"]),
            PolicyRule::resource(&["update"], &["apps"], &["deployments/scale"]),
        ];
        assert!(covers(&owner, &requested).0);
        let more = vec![PolicyRule::resource(
            &["get", "delete", "watch"],
            &[""],
            &["pods", "secrets"],
        )];
        let (ok, missing) = covers(&owner, &more);
        assert!(!ok);
        let texts: Vec<String> = compact(missing)
            .iter()
            .map(PolicyRule::compact_string)
            .collect();
        assert_eq!(
            texts,
            vec![
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete" "watch"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete" "watch"]}"#,
            ]
        );
    }
}
