//! ConfigMaps, Secrets and tokens from the API server, for the pods of this node. Each object
//! a pod refers to is watched while some pod on the node refers to it (the kubelet's
//! watch-based managers); lookups read the cache the watches fill. A change wakes the pods
//! that refer to the object, so their volumes are rewritten at once instead of at the next
//! resync. Tokens come from the TokenRequest API and are renewed when due.

mod refs;
mod tokens;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccountTokenProjection};
use tokio::sync::{Notify, mpsc};

use super::ObjectLookup;
use refs::{Key, Kind};
use tokens::{Token, TokenKey};

/// How long a pod's sync waits for the first listing of the objects it refers to; after that
/// a lookup finds nothing, and the watch wakes the pod when it has listed.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// A watched object's value.
#[derive(Debug, Clone, PartialEq)]
enum Object {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

impl Object {
    fn immutable(&self) -> bool {
        match self {
            Object::ConfigMap(c) => c.immutable == Some(true),
            Object::Secret(s) => s.immutable == Some(true),
        }
    }
}

/// One referenced object.
#[derive(Debug, Default)]
struct Entry {
    /// The UIDs of the pods that refer to it.
    pods: BTreeSet<String>,
    /// What the watch saw last (None: it does not exist).
    value: Option<Object>,
    /// Whether the watch has listed it once.
    synced: bool,
    watch: Option<tokio::task::AbortHandle>,
}

#[derive(Debug, Default)]
struct State {
    objects: HashMap<Key, Entry>,
    /// What each pod refers to, by UID.
    pods: HashMap<String, BTreeSet<Key>>,
    tokens: HashMap<TokenKey, Token>,
}

struct Inner {
    client: kube::Client,
    state: Mutex<State>,
    /// Notified whenever a watch saw something.
    seen: Notify,
    changes: mpsc::UnboundedSender<String>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a cache the watches keep refilling: a panic while holding it breaks
        // nothing a later update does not repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what the watch of `key` saw; false once nobody follows `key` any more.
    fn observe(&self, key: &Key, value: Option<Object>) -> bool {
        let wake: Vec<String> = {
            let mut state = self.state();
            let Some(entry) = state.objects.get_mut(key) else {
                return false;
            };
            let changed = !entry.synced || entry.value != value;
            entry.synced = true;
            entry.value = value;
            if !changed {
                return true;
            }
            entry.pods.iter().cloned().collect()
        };
        self.seen.notify_waiters();
        for uid in wake {
            let _ = self.changes.send(uid);
        }
        true
    }
}

/// ConfigMaps, Secrets and tokens read from the API server.
#[derive(Clone)]
pub struct ApiObjects {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiObjects").finish_non_exhaustive()
    }
}

impl ApiObjects {
    /// Objects read through `client`; nothing is watched until a pod is tracked.
    pub fn new(client: kube::Client) -> Self {
        let (changes, receiver) = mpsc::unbounded_channel();
        ApiObjects {
            inner: Arc::new(Inner {
                client,
                state: Mutex::default(),
                seen: Notify::new(),
                changes,
                receiver: Mutex::new(Some(receiver)),
            }),
        }
    }

    /// Makes what `uid` refers to `wanted`: new objects get a watch, objects no pod refers to
    /// any more lose theirs.
    fn register(&self, uid: &str, wanted: BTreeSet<Key>) {
        let mut state = self.inner.state();
        if state.pods.get(uid) == Some(&wanted) {
            return;
        }
        let old = state.pods.insert(uid.to_string(), wanted.clone());
        for key in old.unwrap_or_default().difference(&wanted) {
            release(&mut state, key, uid);
        }
        for key in wanted {
            let entry = state.objects.entry(key.clone()).or_default();
            entry.pods.insert(uid.to_string());
            if entry.watch.is_none() && !entry.synced {
                tracing::debug!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, "watching an object a pod refers to");
                entry.watch = Some(watch::spawn(Arc::clone(&self.inner), key));
            }
        }
    }

    /// Waits until every object of `keys` was listed once, or `SYNC_WAIT` passed.
    async fn wait_synced(&self, keys: &BTreeSet<Key>) {
        let deadline = Instant::now() + SYNC_WAIT;
        loop {
            let seen = self.inner.seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            let all = {
                let state = self.inner.state();
                keys.iter()
                    .all(|k| state.objects.get(k).is_none_or(|e| e.synced))
            };
            if all {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, seen).await.is_err() {
                tracing::warn!(
                    "objects pods refer to not listed in time; lookups find them when their watch has listed them"
                );
                return;
            }
        }
    }

    /// Fetches the tokens of `pod`'s projections that are missing or due for renewal.
    async fn refresh_tokens(&self, pod: &Pod) {
        let now = SystemTime::now();
        let due: Vec<TokenKey> = {
            let state = self.inner.state();
            projections(pod)
                .map(|p| TokenKey::of(pod, p))
                .filter(|key| state.tokens.get(key).is_none_or(|t| t.needs_refresh(now)))
                .collect()
        };
        for key in due {
            match tokens::request(&self.inner.client, &key).await {
                Ok(token) => {
                    tracing::debug!(namespace = %key.namespace, account = %key.account, pod = %key.pod_name, "service account token fetched");
                    self.inner.state().tokens.insert(key, token);
                }
                // A token still valid stays in use; the next sync tries again.
                Err(error) => {
                    tracing::warn!(namespace = %key.namespace, account = %key.account, pod = %key.pod_name, %error, "service account token not renewed")
                }
            }
        }
    }
}

/// Drops `uid`'s reference to `key`, and the watch when it was the last.
fn release(state: &mut State, key: &Key, uid: &str) {
    let Some(entry) = state.objects.get_mut(key) else {
        return;
    };
    entry.pods.remove(uid);
    if entry.pods.is_empty() {
        if let Some(watch) = entry.watch.take() {
            watch.abort();
        }
        state.objects.remove(key);
        tracing::debug!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, "no pod refers to the object any more; not watched");
    }
}

/// The serviceAccountToken sources of `pod`'s projected volumes.
fn projections(pod: &Pod) -> impl Iterator<Item = &ServiceAccountTokenProjection> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .flat_map(|v| v.projected.iter())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
}

fn lookup(objects: &ApiObjects, kind: Kind, namespace: &str, name: &str) -> Option<Object> {
    let key = Key {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    objects.inner.state().objects.get(&key)?.value.clone()
}

impl ObjectLookup for ApiObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        match lookup(self, Kind::ConfigMap, namespace, name)? {
            Object::ConfigMap(c) => Some(c),
            Object::Secret(_) => None,
        }
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        match lookup(self, Kind::Secret, namespace, name)? {
            Object::Secret(s) => Some(s),
            Object::ConfigMap(_) => None,
        }
    }

    fn service_account_token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        let key = TokenKey::of(pod, projection);
        match self.inner.state().tokens.get(&key) {
            Some(token) if token.valid(SystemTime::now()) => Ok(token.value.clone()),
            Some(_) => Err(format!(
                "failed to fetch token: the token of service account {:?} expired and was not renewed",
                key.account
            )),
            None => Err(format!(
                "failed to fetch token: no token for service account {:?} yet",
                key.account
            )),
        }
    }

    fn track<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(uid) = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
                return;
            };
            let wanted = refs::references(pod);
            self.register(uid, wanted.clone());
            self.wait_synced(&wanted).await;
            self.refresh_tokens(pod).await;
        })
    }

    fn forget(&self, uid: &str) {
        let mut state = self.inner.state();
        for key in state.pods.remove(uid).unwrap_or_default() {
            release(&mut state, &key, uid);
        }
        state.tokens.retain(|key, _| key.pod_uid != uid);
    }

    fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.inner
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose every request fails: the watches retry, the cache stays empty.
    fn offline() -> kube::Client {
        let service = tower::service_fn(|_: hyper::Request<kube::client::Body>| async {
            Err::<hyper::Response<kube::client::Body>, std::io::Error>(std::io::Error::other(
                "offline",
            ))
        });
        kube::Client::new(service, "default")
    }

    fn pod(uid: &str, config_maps: &[&str]) -> Pod {
        let volumes: Vec<serde_json::Value> = config_maps
            .iter()
            .map(|n| serde_json::json!({"name": n, "configMap": {"name": n}}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"containers": [], "volumes": volumes}
        }))
        .unwrap()
    }

    fn watched(objects: &ApiObjects) -> Vec<String> {
        let state = objects.inner.state();
        let mut names: Vec<String> = state.objects.keys().map(|k| k.name.clone()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn only_objects_of_tracked_pods_are_watched() {
        let objects = ApiObjects::new(offline());
        let a = pod("a", &["shared", "only-a"]);
        objects.register("a", refs::references(&a));
        objects.register("b", refs::references(&pod("b", &["shared"])));
        assert_eq!(watched(&objects), ["only-a", "shared"]);
        assert!(
            objects.config_map("ns", "shared").is_none(),
            "not listed yet"
        );
        objects.forget("a");
        assert_eq!(watched(&objects), ["shared"], "b still refers to it");
        objects.forget("b");
        assert!(watched(&objects).is_empty());
    }

    #[tokio::test]
    async fn what_a_watch_sees_is_looked_up_and_wakes_the_pods() {
        let objects = ApiObjects::new(offline());
        let mut changes = objects.take_changes().expect("the receiver");
        assert!(objects.take_changes().is_none(), "only once");
        objects.register("a", refs::references(&pod("a", &["cm"])));
        let key = Key {
            kind: Kind::ConfigMap,
            namespace: "ns".into(),
            name: "cm".into(),
        };
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("cm".into());
        assert!(
            objects
                .inner
                .observe(&key, Some(Object::ConfigMap(cm.clone())))
        );
        assert_eq!(objects.config_map("ns", "cm"), Some(cm.clone()));
        assert!(objects.secret("ns", "cm").is_none(), "kinds matter");
        assert_eq!(changes.try_recv().ok().as_deref(), Some("a"));
        // The same object again wakes nobody.
        assert!(objects.inner.observe(&key, Some(Object::ConfigMap(cm))));
        assert!(changes.try_recv().is_err());
        assert!(objects.inner.observe(&key, None));
        assert!(objects.config_map("ns", "cm").is_none(), "deleted");
        assert_eq!(changes.try_recv().ok().as_deref(), Some("a"));
        objects.forget("a");
        assert!(
            !objects.inner.observe(&key, None),
            "the watch is told to stop"
        );
    }

    #[tokio::test]
    async fn a_missing_token_says_why() {
        let objects = ApiObjects::new(offline());
        let error = objects
            .service_account_token(&pod("a", &[]), &ServiceAccountTokenProjection::default())
            .unwrap_err();
        assert_eq!(
            error,
            "failed to fetch token: no token for service account \"default\" yet"
        );
    }
}
