//! The repository lock: one exclusive writer (backup, prune) at a time.
//!
//! S3-compatible stores differ on conditional writes (Garage ignores `If-None-Match`), so the
//! lock uses only put, list and delete, as restic does: list the locks, write our own, list
//! again; if any other live lock is there, remove ours and report the holder. Two runs that
//! start in the same instant may both back off; neither proceeds unlocked. A lock is
//! refreshed every [`REFRESH_EVERY`] while held and is stale (ignored) once
//! [`STALE_AFTER`] passes without a refresh, so a killed run blocks others for at most that.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::storage::{Storage, StorageError};
use crate::{Error, Result};

/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::minutes(30);
/// How often a held lock is refreshed.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The content of a lock object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    /// `backup`, `prune`...
    pub operation: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// When it was last refreshed.
    pub refreshed_at: DateTime<Utc>,
}

impl LockInfo {
    /// Whether the lock is stale at `now`.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now - self.refreshed_at > STALE_AFTER
    }

    fn describe(&self) -> String {
        format!(
            "{} on {} (pid {}) since {}",
            self.operation,
            self.host,
            self.pid,
            self.created_at.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// A held lock; [`LockGuard::release`] removes it. Dropped without release (a crash), it
/// goes stale after [`STALE_AFTER`].
#[derive(Debug)]
pub struct LockGuard {
    store: Arc<dyn Storage>,
    key: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    /// The lock object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Remove the lock.
    pub async fn release(self) {
        self.refresher.abort();
        if let Err(e) = self.store.delete(&self.key).await {
            tracing::warn!(key = %self.key, error = %e, "could not remove the lock; it goes stale by itself");
        }
    }
}

async fn live_locks(
    repo: &Repository,
    now: DateTime<Utc>,
    except: &str,
) -> Result<Vec<(String, LockInfo)>> {
    let store = repo.store();
    let mut out = Vec::new();
    for o in store.list("locks/").await.map_err(|e| repo.err(e))? {
        if o.key == except {
            continue;
        }
        let data = match store.get(&o.key).await {
            Ok(d) => d,
            Err(StorageError::NotFound { .. }) => continue, // released meanwhile
            Err(e) => return Err(repo.err(e)),
        };
        match serde_json::from_slice::<LockInfo>(&data) {
            Ok(info) if !info.is_stale(now) => out.push((o.key, info)),
            Ok(_) => {}
            // An unreadable lock is treated as live until it is old by its store time.
            Err(_) if now - o.last_modified <= STALE_AFTER => out.push((
                o.key.clone(),
                LockInfo {
                    operation: "unknown".into(),
                    host: "unknown".into(),
                    pid: 0,
                    created_at: o.last_modified,
                    refreshed_at: o.last_modified,
                },
            )),
            Err(_) => {}
        }
    }
    Ok(out)
}

fn held(key: String, info: &LockInfo) -> Error {
    Error::LockHeld {
        holder: info.describe(),
        key,
        stale_after_minutes: STALE_AFTER.num_minutes(),
    }
}

/// Take the exclusive lock for `operation`. `now` and `nonce` are parameters so that tests
/// are exact; the refresher uses the real clock.
///
/// # Errors
/// [`Error::LockHeld`] naming the holder; a store failure.
pub async fn acquire(
    repo: &Repository,
    operation: &str,
    now: DateTime<Utc>,
    nonce: u64,
) -> Result<LockGuard> {
    if let Some((key, info)) = live_locks(repo, now, "").await?.into_iter().next() {
        return Err(held(key, &info));
    }
    let info = LockInfo {
        operation: operation.to_string(),
        host: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pid: std::process::id(),
        created_at: now,
        refreshed_at: now,
    };
    let key = format!(
        "locks/{}-{}-{nonce:016x}.json",
        operation,
        now.format("%Y%m%dT%H%M%SZ")
    );
    let store = repo.store().clone();
    let body = Bytes::from(serde_json::to_vec(&info).expect("lock serializes"));
    store.put(&key, body).await.map_err(|e| repo.err(e))?;
    if let Some((other, oinfo)) = live_locks(repo, now, &key).await?.into_iter().next() {
        let _ = store.delete(&key).await;
        return Err(held(other, &oinfo));
    }
    let refresher = {
        let store = store.clone();
        let key = key.clone();
        let mut info = info.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                info.refreshed_at = Utc::now();
                let body = Bytes::from(serde_json::to_vec(&info).expect("lock serializes"));
                if let Err(e) = store.put(&key, body).await {
                    tracing::warn!(error = %e, "could not refresh the repository lock");
                }
            }
        })
    };
    Ok(LockGuard {
        store,
        key,
        refresher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use chrono::TimeZone;

    fn repo() -> Repository {
        Repository::new(Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn second_lock_is_refused_until_released() {
        let r = repo();
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 2, 0, 0).unwrap();
        let g = acquire(&r, "backup", t, 1).await.unwrap();
        let e = acquire(&r, "prune", t, 2).await.unwrap_err();
        assert!(matches!(e, Error::LockHeld { .. }), "{e}");
        assert!(e.to_string().contains("backup on"), "{e}");
        assert_eq!(
            r.store().list("locks/").await.unwrap().len(),
            1,
            "refused run left its lock"
        );
        g.release().await;
        acquire(&r, "prune", t, 3).await.unwrap().release().await;
        assert!(r.store().list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stale_lock_is_ignored_and_fresh_one_is_not() {
        let r = repo();
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 2, 0, 0).unwrap();
        let _crashed = acquire(&r, "backup", t, 1).await.unwrap();
        let just_before = t + STALE_AFTER;
        assert!(acquire(&r, "backup", just_before, 2).await.is_err());
        let after = t + STALE_AFTER + Duration::seconds(1);
        acquire(&r, "backup", after, 3)
            .await
            .unwrap()
            .release()
            .await;
    }
}
