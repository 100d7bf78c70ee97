//! The conditions a terminating namespace shows, with upstream's types, reasons and messages
//! (pkg/controller/namespace/deletion/status_condition_utils.go).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The condition types the namespace controller maintains, in upstream's order, with the
/// reason and message each has when all is well.
const TYPES: [(&str, &str, &str); 5] = [
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// What one pass over the namespace's content found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Discovery's error, if it failed.
    pub discovery: Option<String>,
    /// Errors deleting or listing content.
    pub content_errors: Vec<String>,
    /// Objects left, by `resource.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Objects left, by finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

impl Findings {
    fn failing(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        if let Some(error) = &self.discovery {
            out.push((
                "NamespaceDeletionDiscoveryFailure",
                "DiscoveryFailed",
                error.clone(),
            ));
        }
        if !self.content_errors.is_empty() {
            let mut errors = self.content_errors.clone();
            errors.sort();
            out.push((
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    errors.len(),
                    errors.join(", ")
                ),
            ));
        }
        let remaining: Vec<String> = self
            .remaining
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(resource, n)| format!("{resource} has {n} resource instances"))
            .collect();
        if !remaining.is_empty() {
            out.push((
                "NamespaceContentRemaining",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", remaining.join(", ")),
            ));
        }
        let finalizers: Vec<String> = self
            .finalizers
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
            .collect();
        if !finalizers.is_empty() {
            out.push((
                "NamespaceFinalizersRemaining",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    finalizers.join(", ")
                ),
            ));
        }
        out
    }

    /// Writes the five conditions into `status`; whether anything changed. A condition's
    /// lastTransitionTime moves only when its status does.
    pub fn apply(&self, status: &mut NamespaceStatus) -> bool {
        let failing = self.failing();
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let mut changed = false;
        for (type_, ok_reason, ok_message) in TYPES {
            let (state, reason, message) = match failing.iter().find(|f| f.0 == type_) {
                Some((_, reason, message)) => ("True", *reason, message.clone()),
                None => ("False", ok_reason, ok_message.to_string()),
            };
            let now = Some(Time(jiff::Timestamp::now()));
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                None => {
                    conditions.push(NamespaceCondition {
                        type_: type_.into(),
                        status: state.into(),
                        reason: Some(reason.into()),
                        message: Some(message),
                        last_transition_time: now,
                    });
                    changed = true;
                }
                Some(old) => {
                    if old.status != state {
                        old.status = state.into();
                        old.last_transition_time = now;
                        changed = true;
                    }
                    if old.reason.as_deref() != Some(reason)
                        || old.message.as_ref() != Some(&message)
                    {
                        old.reason = Some(reason.into());
                        old.message = Some(message);
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_content_and_finalizers_read_as_upstream() {
        let mut findings = Findings::default();
        findings.remaining.insert("configmaps.".into(), 1);
        findings.finalizers.insert("example.com/hold".into(), 1);
        let mut status = NamespaceStatus::default();
        assert!(findings.apply(&mut status));
        let conditions = status.conditions.unwrap_or_default();
        assert_eq!(conditions.len(), 5);
        let get = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
        let remaining = get("NamespaceContentRemaining");
        assert_eq!(
            remaining.and_then(|c| c.message),
            Some("Some resources are remaining: configmaps. has 1 resource instances".into())
        );
        let held = get("NamespaceFinalizersRemaining");
        assert_eq!(
            held.and_then(|c| c.message),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                    .into()
            )
        );
        let discovery = get("NamespaceDeletionDiscoveryFailure");
        assert_eq!(
            discovery.map(|c| (c.status, c.reason)),
            Some(("False".into(), Some("ResourcesDiscovered".into())))
        );
    }
}
