//! One change as the watch cache keeps it: the new and previous values shared with the cache's
//! state (never copied per watcher), and the JSON line a watcher without selectors sends, made
//! once for all of them.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use capstan_store::{KeyValue, Revision, WatchEvent};
use serde_json::{Value, json};

/// A change under a kind's prefix.
#[derive(Debug)]
pub struct CachedEvent {
    /// The revision of the write.
    pub revision: Revision,
    /// The key written.
    pub key: String,
    /// The value after the write; `None` for a deletion.
    pub object: Option<Arc<KeyValue>>,
    /// The value before it, when the key existed.
    pub prev: Option<Arc<KeyValue>>,
    line: OnceLock<Option<Bytes>>,
}

impl CachedEvent {
    /// An event from its parts.
    pub fn new(
        revision: Revision,
        key: String,
        object: Option<Arc<KeyValue>>,
        prev: Option<Arc<KeyValue>>,
    ) -> CachedEvent {
        CachedEvent {
            revision,
            key,
            object,
            prev,
            line: OnceLock::new(),
        }
    }

    /// An event read straight from a store watch (the path for watches the cache cannot serve).
    pub fn from_store(event: WatchEvent) -> CachedEvent {
        let revision = event.revision();
        match event {
            WatchEvent::Put { kv, prev } => CachedEvent::new(
                revision,
                kv.key.clone(),
                Some(Arc::new(kv)),
                prev.map(Arc::new),
            ),
            WatchEvent::Delete { prev, .. } => {
                CachedEvent::new(revision, prev.key.clone(), None, Some(Arc::new(prev)))
            }
        }
    }

    /// The watch event type for a watcher that selects everything.
    pub fn plain_type(&self) -> &'static str {
        match (&self.object, &self.prev) {
            (None, _) => "DELETED",
            (Some(_), None) => "ADDED",
            (Some(_), Some(_)) => "MODIFIED",
        }
    }

    /// The object this event carries for a watcher that selects everything: the new value, or
    /// the last one of a deletion; `resourceVersion` is the event's revision.
    fn plain_object(&self) -> Option<Value> {
        let kv = self.object.as_ref().or(self.prev.as_ref())?;
        crate::rest::decode_at(kv, self.revision).ok()
    }

    /// The newline-terminated JSON watch event for a watcher that selects everything, made on
    /// first use; `None` when the stored bytes do not decode (logged, and skipped by watchers).
    pub fn plain_line(&self) -> Option<&Bytes> {
        self.line
            .get_or_init(|| {
                let object = self.plain_object()?;
                Some(line(self.plain_type(), &object))
            })
            .as_ref()
    }
}

/// One watch event as the wire carries it.
pub fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}
