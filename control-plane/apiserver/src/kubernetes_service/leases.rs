//! The addresses of the live API servers: each keeps a key of its own under [`PREFIX`],
//! rewritten every reconcile, that lapses when not renewed within its TTL (upstream's
//! `/registry/masterleases/` keys, which etcd expires; the store has no TTLs, so the expiry is
//! in the value and readers drop what has lapsed).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use capstan_store::{ListOptions, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where the leases live: not a served kind, so no client lists them.
pub const PREFIX: &str = "/registry/masterleases/";

/// One server's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    ip: String,
    /// RFC 3339.
    renew_time: String,
    ttl_seconds: u64,
}

impl Lease {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        let ttl = chrono::Duration::seconds(i64::try_from(self.ttl_seconds).unwrap_or(i64::MAX));
        DateTime::parse_from_rfc3339(&self.renew_time)
            .ok()
            .and_then(|renewed| renewed.with_timezone(&Utc).checked_add_signed(ttl))
            .is_none_or(|until| until <= now)
    }
}

/// The leases of one API server's address over a store.
pub struct Leases {
    store: Arc<dyn Store>,
    ttl: Duration,
}

impl Leases {
    /// Leases in `store` lasting `ttl` after each renewal.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Leases {
        Leases { store, ttl }
    }

    fn key(ip: IpAddr) -> String {
        format!("{PREFIX}{ip}")
    }

    /// Writes (or renews) the lease of `ip`.
    pub async fn renew(&self, ip: IpAddr) -> Result<(), StoreError> {
        let key = Leases::key(ip);
        let lease = Lease {
            ip: ip.to_string(),
            renew_time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ttl_seconds: self.ttl.as_secs().max(1),
        };
        let value = serde_json::to_vec(&lease).map_err(|e| StoreError::Internal(e.to_string()))?;
        // Two tries: a server on the same address may write between our read and write.
        for _ in 0..2 {
            let result = match self.store.get(&key).await? {
                Some(current) => {
                    self.store
                        .update(&key, value.clone(), current.mod_revision)
                        .await
                }
                None => self.store.create(&key, value.clone()).await,
            };
            match result {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => continue,
                Err(StoreError::NotFound(_)) => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Removes the lease of `ip` (a server stopping, so the others drop it at once).
    pub async fn remove(&self, ip: IpAddr) -> Result<(), StoreError> {
        match self.store.delete(&Leases::key(ip), None).await {
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The addresses whose leases are live, sorted; lapsed ones are deleted on the way (only
    /// if unchanged since read, so a renewal racing with us wins).
    pub async fn live(&self) -> Result<Vec<IpAddr>, StoreError> {
        let listed = self.store.list(PREFIX, ListOptions::default()).await?;
        let now = Utc::now();
        let mut live = Vec::new();
        for kv in &listed.items {
            let lease = serde_json::from_slice::<Lease>(&kv.value).ok();
            let ip = lease.as_ref().and_then(|l| l.ip.parse::<IpAddr>().ok());
            match (lease, ip) {
                (Some(lease), Some(ip)) if !lease.expired(now) => live.push(ip),
                _ => match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) => tracing::info!(key = %kv.key, "removed a lapsed API server lease"),
                    Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                    Err(error) => return Err(error),
                },
            }
        }
        live.sort();
        live.dedup();
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_lapses_after_its_ttl_and_is_removed() {
        let store: Arc<dyn Store> = Arc::new(capstan_store::memory::MemoryStore::new());
        let short = Leases::new(Arc::clone(&store), Duration::from_secs(1));
        let long = Leases::new(Arc::clone(&store), Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.2".parse().unwrap_or_else(|_| unreachable!()),
            "10.0.0.1".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(short.renew(a).await.is_ok());
        assert!(long.renew(b).await.is_ok());
        assert_eq!(long.live().await.ok(), Some(vec![b, a]));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(long.live().await.ok(), Some(vec![b]));
        let left = store.list(PREFIX, ListOptions::default()).await;
        assert_eq!(left.map(|l| l.items.len()).ok(), Some(1));
    }
}
