//! The store on etcd v3, for several API servers sharing one etcd cluster. Every key lives
//! under a prefix (`/registry` by default, as kube-apiserver's); revisions are etcd's.
//!
//! Writes are transactions with a precondition: a create compares the key's create revision
//! with 0, an update or a conditional delete its mod revision with the one expected. Writes are
//! not retried here: one that timed out may have been applied, and only the caller knows
//! whether sending it again is safe. Watches reconnect by themselves, from the revision after
//! the last event they delivered.
//!
//! etcd's default request limit (1.5 MiB) is below [`DEFAULT_MAX_VALUE_BYTES`]
//! (crate::DEFAULT_MAX_VALUE_BYTES): run etcd with `--max-request-bytes` of at least 4 MiB, or
//! larger values fail with `TooLarge`.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use futures::future::BoxFuture;

use crate::{
    KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream,
    check_size, prefix_end,
};

mod errors;
mod watch;

use errors::{Failure, classify, never_sent};

/// The prefix kube-apiserver puts its keys under.
pub const DEFAULT_PREFIX: &str = "/registry";

/// How long a request waits for etcd before it fails with `Unavailable`: a leader election
/// takes about a second, a dead member's connection a few.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request is sent again when it may be: a read after any `Unavailable`, a write
/// only when it never reached etcd (the balancer routed it to a member that is down).
const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Responses (a list of many large values) can be far larger than tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// A [`Store`] on an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    prefix: String,
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`) and checks that it answers;
    /// the store's keys live under `prefix` (e.g. [`DEFAULT_PREFIX`]).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from the leader refuses requests instead of serving stale reads
            // and ends its watches, so they resume on a member that has one.
            .with_require_leader(true);
        let client =
            Client::connect(endpoints, Some(options))
                .await
                .map_err(|e| match classify("connect", e) {
                    Failure::Plain(e) => e,
                    other => StoreError::Unavailable(format!("etcd: connect: {other:?}")),
                })?;
        let store = EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            prefix: prefix.to_string(),
        };
        let revision = store.current_revision().await?;
        tracing::info!(?endpoints, prefix, revision, "connected to etcd");
        Ok(store)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let full = format!("{}{key}", self.prefix).into_bytes();
        // etcd takes no empty key; a range from the zero byte starts at the first key.
        if full.is_empty() { vec![0] } else { full }
    }

    /// The etcd range (start, end) of the keys under `prefix`.
    fn range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let raw = format!("{}{prefix}", self.prefix).into_bytes();
        // etcd's "all keys from here" is a range end of a single zero byte.
        let end = prefix_end(&raw).unwrap_or_else(|| vec![0]);
        (self.full_key(prefix), end)
    }

    /// The store's key for an etcd key under the prefix.
    fn local_key(&self, full: &[u8]) -> Result<String> {
        let local = full.strip_prefix(self.prefix.as_bytes()).ok_or_else(|| {
            StoreError::Internal(format!(
                "etcd returned a key outside {}: {}",
                self.prefix,
                String::from_utf8_lossy(full)
            ))
        })?;
        String::from_utf8(local.to_vec()).map_err(|e| {
            StoreError::Internal(format!("etcd returned a key that is not UTF-8: {e}"))
        })
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.local_key(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Runs a request with the timeout, sending it again while it may be (see
    /// [`RETRY_WINDOW`]); turns etcd's errors into the store's, asking etcd what a `Compacted`
    /// or `FutureRevision` needs to say.
    async fn call<T, F>(
        &self,
        what: &'static str,
        requested: Revision,
        idempotent: bool,
        request: impl Fn(KvClient) -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_WINDOW;
        let mut backoff = Duration::from_millis(20);
        loop {
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, request(self.kv.clone())).await;
            let error = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => self.explain(what, requested, e).await,
                Err(_) => StoreError::Unavailable(format!(
                    "etcd: {what}: no answer within {REQUEST_TIMEOUT:?}"
                )),
            };
            let again = if idempotent {
                matches!(error, StoreError::Unavailable(_))
            } else {
                never_sent(&error)
            };
            if !again || tokio::time::Instant::now() + backoff > deadline {
                return Err(error);
            }
            tracing::debug!(%error, "sending an etcd request again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn explain(
        &self,
        what: &str,
        requested: Revision,
        error: etcd_client::Error,
    ) -> StoreError {
        match classify(what, error) {
            Failure::Plain(e) => e,
            Failure::Compacted => StoreError::Compacted {
                requested,
                compacted: watch::compaction_point(self.watch.clone(), &self.prefix)
                    .await
                    .unwrap_or(requested + 1),
            },
            Failure::Future => StoreError::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(requested - 1),
            },
            Failure::TooLarge => StoreError::Internal(format!(
                "etcd: {what}: etcd refused the request's size: raise its --max-request-bytes \
                 to at least 4 MiB"
            )),
        }
    }

    /// The revision, asked once (for filling in an error: `call` cannot recurse).
    async fn current_revision(&self) -> Result<Revision> {
        let mut kv = self.kv.clone();
        let key = self.full_key("");
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(key, Some(GetOptions::new().with_count_only())),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "etcd: read the revision: no answer within {REQUEST_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| match classify("read the revision", e) {
            Failure::Plain(e) => e,
            other => StoreError::Internal(format!("etcd: read the revision: {other:?}")),
        })?;
        header_revision(response.header())
    }

    /// The key's current value as a transaction's `or_else` get found it.
    fn found(&self, response: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                return get.kvs().first().map(|kv| self.convert(kv)).transpose();
            }
        }
        Ok(None)
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Internal("etcd answered without a header".into()))
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let full = self.full_key(key);
        Box::pin(async move {
            let response = self
                .call("get", 0, true, |mut kv| {
                    let full = full.clone();
                    async move { kv.get(full, None).await }
                })
                .await?;
            response
                .kvs()
                .first()
                .map(|kv| self.convert(kv))
                .transpose()
        })
    }

    fn list(&self, prefix: &str, options: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        let (start, end) = self.range(prefix);
        Box::pin(async move {
            let from = match &options.start_after {
                // The first key after `start_after` is it with a zero byte appended.
                Some(after) => {
                    let mut after = self.full_key(after);
                    after.push(0);
                    after.max(start)
                }
                None => start,
            };
            let limit = options.limit.filter(|&l| l > 0);
            let mut get = GetOptions::new()
                .with_range(end)
                .with_revision(options.revision.unwrap_or(0));
            if let Some(limit) = limit {
                get = get.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            let requested = options.revision.unwrap_or(0);
            let response = self
                .call("list", requested, true, |mut kv| {
                    let (from, get) = (from.clone(), get.clone());
                    async move { kv.get(from, Some(get)).await }
                })
                .await?;
            let items = response
                .kvs()
                .iter()
                .map(|kv| self.convert(kv))
                .collect::<Result<Vec<_>>>()?;
            let count = usize::try_from(response.count()).unwrap_or(0);
            Ok(ListResult {
                remaining: count.saturating_sub(items.len()),
                revision: match options.revision {
                    Some(revision) => revision,
                    None => header_revision(response.header())?,
                },
                items,
            })
        })
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            check_size(&key, &value)?;
            let full = self.full_key(&key);
            let txn = Txn::new()
                .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(full, value.clone(), None)]);
            let response = self
                .call("create", 0, false, |mut kv| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })
                .await?;
            if !response.succeeded() {
                return Err(StoreError::AlreadyExists(key));
            }
            let revision = header_revision(response.header())?;
            Ok(KeyValue {
                key,
                value,
                create_revision: revision,
                mod_revision: revision,
            })
        })
    }

    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            check_size(&key, &value)?;
            let full = self.full_key(&key);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                    Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
                ])
                .and_then([TxnOp::put(
                    full.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(full, None)]);
            let response = self
                .call("update", 0, false, |mut kv| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })
                .await?;
            if !response.succeeded() {
                return Err(match self.found(&response)? {
                    None => StoreError::NotFound(key),
                    Some(current) => StoreError::Conflict {
                        key,
                        expected,
                        current: Some(Box::new(current)),
                    },
                });
            }
            let create_revision = response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                    _ => None,
                })
                .ok_or_else(|| {
                    StoreError::Internal(format!("etcd: update {key}: no previous value returned"))
                })?;
            Ok(KeyValue {
                key,
                value,
                create_revision,
                mod_revision: header_revision(response.header())?,
            })
        })
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<(KeyValue, Revision)>> {
        let key = key.to_string();
        Box::pin(async move {
            let full = self.full_key(&key);
            let mut compares = vec![Compare::create_revision(
                full.clone(),
                CompareOp::Greater,
                0,
            )];
            if let Some(expected) = expected {
                compares.push(Compare::mod_revision(
                    full.clone(),
                    CompareOp::Equal,
                    expected,
                ));
            }
            let txn = Txn::new()
                .when(compares)
                .and_then([TxnOp::delete(
                    full.clone(),
                    Some(DeleteOptions::new().with_prev_key()),
                )])
                .or_else([TxnOp::get(full, None)]);
            let response = self
                .call("delete", 0, false, |mut kv| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })
                .await?;
            if !response.succeeded() {
                return Err(match (self.found(&response)?, expected) {
                    (Some(current), Some(expected)) => StoreError::Conflict {
                        key,
                        expected,
                        current: Some(Box::new(current)),
                    },
                    _ => StoreError::NotFound(key),
                });
            }
            let prev = response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
                    _ => None,
                })
                .ok_or_else(|| {
                    StoreError::Internal(format!("etcd: delete {key}: no previous value returned"))
                })?;
            Ok((self.convert(&prev)?, header_revision(response.header())?))
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            // A read at `after` fails exactly when the history after it is gone (or not yet
            // there), so a compacted start fails here rather than later in the stream. etcd
            // counts its empty state as revision 1, the oldest one to read.
            let check = GetOptions::new()
                .with_revision(after.max(1))
                .with_count_only();
            let key = self.full_key(&prefix);
            self.call("watch", after, true, |mut kv| {
                let (key, check) = (key.clone(), check.clone());
                async move { kv.get(key, Some(check)).await }
            })
            .await?;
            let (full, end) = self.range(&prefix);
            let options = WatchOptions::new().with_range(end).with_prev_key();
            Ok(watch::spawn(self.clone(), full, options, after))
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        let key = self.full_key("");
        Box::pin(async move {
            let response = self
                .call("read the revision", 0, true, |mut kv| {
                    let key = key.clone();
                    async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
                })
                .await?;
            header_revision(response.header())
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // Compacting twice to one revision is harmless: it is idempotent.
            self.call("compact", revision, true, |mut kv| async move {
                kv.compact(revision, None).await
            })
            .await?;
            Ok(())
        })
    }
}
