//! The merger of pod sources (the kubelet's config mux): the latest snapshot of each source in,
//! the desired set of pods by UID and what changed since the previous set out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use super::{
    CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION, ManifestError, SourceName, SourceUpdate,
};

/// A pod the agent should run.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    /// The pod, with UID, name, namespace and spec.nodeName set and the defaults applied, and
    /// the annotations kubernetes.io/config.{hash,source,seen}.
    pub pod: Arc<Pod>,
    /// The source it came from.
    pub source: SourceName,
    /// When the agent first saw this UID (also the config.seen annotation).
    pub first_seen: DateTime<Utc>,
}

impl DesiredPod {
    /// The pod's UID (never empty: the merger drops pods without one).
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }

    /// `namespace/name`, the pod's full name.
    pub fn full_name(&self) -> String {
        full_name(&self.pod)
    }
}

/// What changed between two desired sets, by UID, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodChanges {
    /// UIDs that are new: start these pods.
    pub added: Vec<String>,
    /// UIDs whose pod object changed (labels, annotations, status from the API server); a static
    /// pod never lands here, since its UID follows its content.
    pub updated: Vec<String>,
    /// UIDs no source wants any more: stop these pods within their grace period.
    pub removed: Vec<String>,
}

impl PodChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }
}

/// What the merger hands the pod workers each time something changed.
#[derive(Debug, Clone)]
pub struct PodSetUpdate {
    /// Every desired pod, by UID.
    pub pods: Arc<BTreeMap<String, DesiredPod>>,
    /// The previous set, where the removed pods still are (their grace period and preStop
    /// hooks are needed to stop them).
    pub previous: Arc<BTreeMap<String, DesiredPod>>,
    /// The changes since the previous update.
    pub changes: PodChanges,
    /// Every manifest currently refused, from every source.
    pub errors: Vec<ManifestError>,
    /// Whether every expected source has sent a snapshot. Until then, a pod missing from the set
    /// may just not have been listed yet: do not remove running pods that are not desired.
    pub sources_ready: bool,
}

impl PodSetUpdate {
    /// The desired pods as plain `uid → Pod`, for consumers that need nothing else.
    pub fn pod_map(&self) -> BTreeMap<String, Pod> {
        self.pods
            .iter()
            .map(|(uid, desired)| (uid.clone(), Pod::clone(&desired.pod)))
            .collect()
    }
}

/// The latest snapshot per source and the desired set derived from them.
#[derive(Debug, Default)]
pub struct PodConfig {
    expected: BTreeSet<SourceName>,
    snapshots: BTreeMap<SourceName, SourceUpdate>,
    desired: Arc<BTreeMap<String, DesiredPod>>,
    errors: Vec<ManifestError>,
    ready: bool,
}

fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The pod without what the merger itself adds, to tell a real update from a re-listing.
fn comparable(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(CONFIG_SEEN_ANNOTATION);
    }
    pod
}

impl PodConfig {
    /// A merger that considers its sources ready once each of `expected` sent a snapshot.
    pub fn new(expected: impl IntoIterator<Item = SourceName>) -> Self {
        PodConfig {
            expected: expected.into_iter().collect(),
            ..Default::default()
        }
    }

    /// The current desired set.
    pub fn desired(&self) -> &Arc<BTreeMap<String, DesiredPod>> {
        &self.desired
    }

    /// Replaces `update.source`'s snapshot and recomputes the desired set; returns the new set
    /// and its changes, or None when neither pods, errors nor readiness changed.
    pub fn apply(&mut self, update: SourceUpdate) -> Option<PodSetUpdate> {
        self.snapshots.insert(update.source, update);
        let ready = self.expected.iter().all(|s| self.snapshots.contains_key(s));
        let now = Utc::now();
        let mut desired = BTreeMap::new();
        let mut names = BTreeMap::new();
        let mut errors = Vec::new();
        // Sources in priority order, so the earlier source wins a conflict.
        for (source, snapshot) in &self.snapshots {
            errors.extend(snapshot.errors.iter().cloned());
            for pod in &snapshot.pods {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let name = full_name(pod);
                let conflict = if uid.is_empty() {
                    Some("Required value: the source gave the pod no UID".to_string())
                } else if let Some(other) = names.get(&name) {
                    Some(format!(
                        "Duplicate value: {name:?}: already given by source {other}"
                    ))
                } else if desired.contains_key(&uid) {
                    Some(format!("Duplicate value: UID {uid:?} is already used"))
                } else {
                    None
                };
                if let Some(reason) = conflict {
                    let error = ManifestError {
                        file: PathBuf::from(source.as_str()),
                        field: "metadata".into(),
                        reason,
                    };
                    tracing::warn!(source = %source, pod = %name, "pod ignored: {error}");
                    errors.push(error);
                    continue;
                }
                names.insert(name, *source);
                let first_seen = self.desired.get(&uid).map_or(now, |d| d.first_seen);
                let mut pod = pod.clone();
                let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
                annotations.insert(CONFIG_SOURCE_ANNOTATION.into(), source.as_str().into());
                annotations.insert(
                    CONFIG_SEEN_ANNOTATION.into(),
                    first_seen.to_rfc3339_opts(SecondsFormat::Nanos, true),
                );
                desired.insert(
                    uid,
                    DesiredPod {
                        pod: Arc::new(pod),
                        source: *source,
                        first_seen,
                    },
                );
            }
        }
        let old = &self.desired;
        let changes = PodChanges {
            added: desired
                .keys()
                .filter(|u| !old.contains_key(*u))
                .cloned()
                .collect(),
            removed: old
                .keys()
                .filter(|u| !desired.contains_key(*u))
                .cloned()
                .collect(),
            updated: desired
                .iter()
                .filter(|(uid, new)| {
                    old.get(*uid).is_some_and(|o| {
                        o.source != new.source || comparable(&o.pod) != comparable(&new.pod)
                    })
                })
                .map(|(uid, _)| uid.clone())
                .collect(),
        };
        errors.sort();
        let unchanged = changes.is_empty() && errors == self.errors && ready == self.ready;
        let previous = std::mem::replace(&mut self.desired, Arc::new(desired));
        self.errors = errors;
        self.ready = ready;
        (!unchanged).then(|| PodSetUpdate {
            pods: Arc::clone(&self.desired),
            previous,
            changes,
            errors: self.errors.clone(),
            sources_ready: ready,
        })
    }

    /// Runs a merger over `updates` until every sender is gone or the receiver of the returned
    /// channel is dropped; each change of the desired set arrives there.
    pub fn spawn(
        expected: impl IntoIterator<Item = SourceName>,
        mut updates: mpsc::Receiver<SourceUpdate>,
    ) -> mpsc::Receiver<PodSetUpdate> {
        let mut merger = PodConfig::new(expected);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(update) = updates.recv().await {
                if let Some(set) = merger.apply(update) {
                    let c = &set.changes;
                    tracing::info!(
                        pods = set.pods.len(),
                        added = c.added.len(),
                        updated = c.updated.len(),
                        removed = c.removed.len(),
                        errors = set.errors.len(),
                        "desired pods changed"
                    );
                    if tx.send(set).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, image: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .expect("test pod")
    }

    fn update(source: SourceName, pods: Vec<Pod>) -> SourceUpdate {
        SourceUpdate {
            source,
            pods,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn add_update_remove() {
        let mut m = PodConfig::new([SourceName::File]);
        let first = m
            .apply(update(
                SourceName::File,
                vec![pod("a", "u1", "x"), pod("b", "u2", "x")],
            ))
            .expect("first snapshot is a change");
        assert_eq!(first.changes.added, ["u1", "u2"]);
        assert!(first.sources_ready);
        let seen = first.pods["u1"].pod.metadata.annotations.as_ref().unwrap()
            [CONFIG_SEEN_ANNOTATION]
            .clone();
        assert_eq!(
            first.pods["u1"].pod.metadata.annotations.as_ref().unwrap()[CONFIG_SOURCE_ANNOTATION],
            "file"
        );

        // The same snapshot again changes nothing.
        assert!(
            m.apply(update(
                SourceName::File,
                vec![pod("a", "u1", "x"), pod("b", "u2", "x")]
            ))
            .is_none()
        );

        // An edit under a new UID (a static pod's) is a removal and an addition.
        let edit = m
            .apply(update(
                SourceName::File,
                vec![pod("a", "u3", "y"), pod("b", "u2", "x")],
            ))
            .expect("changed");
        assert_eq!(
            edit.changes,
            PodChanges {
                added: vec!["u3".into()],
                updated: vec![],
                removed: vec!["u1".into()]
            }
        );

        // A change under the same UID (an API pod's labels) is an update; first_seen stays.
        let mut relabeled = pod("b", "u2", "x");
        relabeled.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        let up = m
            .apply(update(
                SourceName::File,
                vec![pod("a", "u3", "y"), relabeled],
            ))
            .expect("changed");
        assert_eq!(up.changes.updated, ["u2"]);
        assert!(up.changes.added.is_empty() && up.changes.removed.is_empty());
        assert_eq!(up.pods["u2"].first_seen, first.pods["u2"].first_seen);
        let _ = seen;

        let gone = m.apply(update(SourceName::File, vec![])).expect("changed");
        assert_eq!(gone.changes.removed, ["u2", "u3"]);
        assert!(gone.pods.is_empty());
        assert_eq!(
            gone.previous["u3"].pod.metadata.name.as_deref(),
            Some("a"),
            "removed pods stay readable"
        );
    }

    #[test]
    fn two_sources() {
        let mut m = PodConfig::new([SourceName::File, SourceName::Api]);
        let first = m
            .apply(update(SourceName::Api, vec![pod("api", "a1", "x")]))
            .expect("change");
        assert!(!first.sources_ready, "the file source has not reported yet");
        let both = m
            .apply(update(SourceName::File, vec![pod("static", "f1", "x")]))
            .expect("change");
        assert!(both.sources_ready);
        assert_eq!(both.changes.added, ["f1"]);
        assert_eq!(both.pods.len(), 2);
        assert_eq!(both.pods["a1"].source, SourceName::Api);
        // Each source replaces only its own snapshot.
        let api_empty = m.apply(update(SourceName::Api, vec![])).expect("change");
        assert_eq!(api_empty.changes.removed, ["a1"]);
        assert_eq!(api_empty.pods.keys().collect::<Vec<_>>(), ["f1"]);
        // The same name from two sources: the file source wins, the other is reported.
        let dup = m
            .apply(update(SourceName::Api, vec![pod("static", "a2", "x")]))
            .expect("change");
        assert!(dup.changes.is_empty());
        assert_eq!(dup.errors.len(), 1);
        assert_eq!(
            dup.errors[0].to_string(),
            "api: metadata: Duplicate value: \"default/static\": already given by source file"
        );
    }

    #[test]
    fn errors_alone_are_a_change() {
        let mut m = PodConfig::new([SourceName::File]);
        m.apply(update(SourceName::File, vec![]));
        let bad = SourceUpdate {
            source: SourceName::File,
            pods: vec![],
            warnings: vec![],
            errors: vec![ManifestError {
                file: "/m/x.yaml".into(),
                field: "kind".into(),
                reason: "r".into(),
            }],
        };
        let set = m.apply(bad.clone()).expect("new error");
        assert_eq!(set.errors, bad.errors);
        assert!(m.apply(bad).is_none());
    }

    #[tokio::test]
    async fn spawned_merger_forwards_changes() {
        let (tx, rx) = mpsc::channel(4);
        let mut out = PodConfig::spawn([SourceName::File], rx);
        tx.send(update(SourceName::File, vec![pod("a", "u1", "x")]))
            .await
            .unwrap();
        tx.send(update(SourceName::File, vec![pod("a", "u1", "x")]))
            .await
            .unwrap();
        tx.send(update(SourceName::File, vec![])).await.unwrap();
        drop(tx);
        let first = out.recv().await.expect("first");
        assert_eq!(first.changes.added, ["u1"]);
        let second = out.recv().await.expect("second: the repeat was swallowed");
        assert_eq!(second.changes.removed, ["u1"]);
        assert!(
            out.recv().await.is_none(),
            "closes when the sources are gone"
        );
        assert_eq!(first.pod_map()["u1"].metadata.name.as_deref(), Some("a"));
    }
}
