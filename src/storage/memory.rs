//! An in-memory store for unit tests of pure logic. Behaves like the others, including
//! pending multipart uploads that are invisible until completed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::{
    ByteStream, ListResult, MultipartUpload, ObjectMeta, PendingUpload, Storage, StorageError,
    StorageResult,
};

/// A multipart upload in progress: its key, when it began, its parts by number.
type Upload = (String, DateTime<Utc>, BTreeMap<usize, Bytes>);

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, (Bytes, DateTime<Utc>)>,
    uploads: BTreeMap<String, Upload>,
    next_upload: u64,
    /// Reads of each key (`get` and `get_stream`).
    reads: BTreeMap<String, usize>,
}

/// An in-memory object store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times `key` was read (`get` or `get_stream`), found or not.
    pub fn reads(&self, key: &str) -> usize {
        self.lock().reads.get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(key: &str) -> StorageError {
    StorageError::NotFound {
        key: key.to_string(),
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.lock()
            .objects
            .insert(key.to_string(), (data, Utc::now()));
        Ok(())
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        let mut inner = self.lock();
        *inner.reads.entry(key.to_string()).or_default() += 1;
        inner
            .objects
            .get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| not_found(key))
    }

    async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        let data = self.get(key).await?;
        let chunks: Vec<StorageResult<Bytes>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(data.slice_ref(c)))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.lock()
            .objects
            .get(key)
            .map(|(b, t)| ObjectMeta {
                key: key.to_string(),
                size: b.len() as u64,
                last_modified: *t,
            })
            .ok_or_else(|| not_found(key))
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        Ok(self
            .lock()
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, t))| ObjectMeta {
                key: k.clone(),
                size: b.len() as u64,
                last_modified: *t,
            })
            .collect())
    }

    async fn list_with_delimiter(&self, prefix: &str) -> StorageResult<ListResult> {
        Ok(super::local::split_level(prefix, self.list(prefix).await?))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn start_multipart(&self, key: &str) -> StorageResult<Box<dyn MultipartUpload>> {
        let mut inner = self.lock();
        inner.next_upload += 1;
        let id = format!("mem-{}", inner.next_upload);
        inner
            .uploads
            .insert(id.clone(), (key.to_string(), Utc::now(), BTreeMap::new()));
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            id,
            next_part: 0,
        }))
    }

    async fn list_pending_uploads(&self, prefix: &str) -> StorageResult<Vec<PendingUpload>> {
        Ok(self
            .lock()
            .uploads
            .iter()
            .filter(|(_, (k, _, _))| k.starts_with(prefix))
            .map(|(id, (k, t, _))| PendingUpload {
                key: k.clone(),
                upload_id: id.clone(),
                initiated: *t,
            })
            .collect())
    }

    async fn abort_pending_upload(&self, upload: &PendingUpload) -> StorageResult<()> {
        self.lock().uploads.remove(&upload.upload_id);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".to_string()
    }
}

struct MemoryUpload {
    store: MemoryStore,
    id: String,
    next_part: usize,
}

#[async_trait]
impl MultipartUpload for MemoryUpload {
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, StorageResult<()>> {
        let n = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let id = self.id.clone();
        Box::pin(async move {
            let mut inner = store.lock();
            let up = inner
                .uploads
                .get_mut(&id)
                .ok_or_else(|| StorageError::Other {
                    op: "upload part",
                    key: id.clone(),
                    detail: "upload no longer exists".into(),
                })?;
            up.2.insert(n, data);
            Ok(())
        })
    }

    async fn complete(self: Box<Self>) -> StorageResult<()> {
        let mut inner = self.store.lock();
        let (key, _, parts) =
            inner
                .uploads
                .remove(&self.id)
                .ok_or_else(|| StorageError::Other {
                    op: "complete upload",
                    key: self.id.clone(),
                    detail: "upload no longer exists".into(),
                })?;
        let mut all = Vec::new();
        for (_, p) in parts {
            all.extend_from_slice(&p);
        }
        inner.objects.insert(key, (Bytes::from(all), Utc::now()));
        Ok(())
    }

    async fn abort(self: Box<Self>) -> StorageResult<()> {
        self.store.lock().uploads.remove(&self.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        let store = super::MemoryStore::new();
        crate::storage::conformance::run_all(&store).await;
    }
}
