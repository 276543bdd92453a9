//! Where snapshots live: a minimal async object-store trait and its three implementations
//! (S3, local folder, memory), plus the streaming multipart upload built on it.
//!
//! The trait is deliberately small (object_store's lesson): whole-object put/get for small
//! objects, a streamed get, listing, delete, and multipart uploads. Everything else, such as
//! the growing part size and bounded concurrency of a streamed upload, is built on top in
//! [`upload`]. Every implementation passes the same [`conformance`] suite.

pub mod conformance;
pub mod local;
pub mod memory;
pub mod s3;
pub mod upload;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

/// A storage failure, mapped from each implementation's own errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The object does not exist.
    #[error("object {key} not found")]
    NotFound { key: String },
    /// The store could not be reached at all.
    #[error("cannot reach the store: {detail}\n  fix: check the endpoint (--s3-endpoint), the network, and that the server runs")]
    Unreachable { detail: String },
    /// The store refused the credentials or the operation.
    #[error("access denied: {detail}\n  fix: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile) and that the key may read and write the bucket")]
    AccessDenied { detail: String },
    /// The bucket (or the local root folder) does not exist.
    #[error("bucket {bucket} does not exist\n  fix: create it, or correct the repository URL")]
    NoSuchBucket { bucket: String },
    /// A local repository folder that does not exist.
    #[error("folder {path} does not exist\n  fix: correct --repo (or MONGOKEEP_REPO); `mongokeep backup` makes a new repository")]
    NoRepository { path: String },
    /// Any other failure on one key.
    #[error("{op} {key} failed: {detail}")]
    Other {
        op: &'static str,
        key: String,
        detail: String,
    },
}

/// Result alias for storage operations.
pub type StorageResult<T> = Result<T, StorageError>;

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store's root (the repository prefix is not included).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: DateTime<Utc>,
}

/// A listing of one level: objects directly under a prefix and the sub-prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListResult {
    /// Objects directly under the prefix.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes one level down, each ending in `/`.
    pub prefixes: Vec<String>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key the upload would create.
    pub key: String,
    /// The store's id for the upload.
    pub upload_id: String,
    /// When it was started.
    pub initiated: DateTime<Utc>,
}

/// A stream of byte chunks from a `get`.
pub type ByteStream = Pin<Box<dyn Stream<Item = StorageResult<Bytes>> + Send>>;

/// The object-store abstraction: keys are `/`-separated, relative to the repository root.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Write a whole object atomically: readers see the old object or the new one, never a
    /// part.
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()>;
    /// Read a whole object (for small objects: manifests, locks, reports).
    async fn get(&self, key: &str) -> StorageResult<Bytes>;
    /// Read an object as a stream of chunks.
    async fn get_stream(&self, key: &str) -> StorageResult<ByteStream>;
    /// Size and time of one object.
    async fn head(&self, key: &str) -> StorageResult<ObjectMeta>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;
    /// One level under `prefix` (which ends in `/` or is empty).
    async fn list_with_delimiter(&self, prefix: &str) -> StorageResult<ListResult>;
    /// Delete an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Start a multipart upload to `key`.
    async fn start_multipart(&self, key: &str) -> StorageResult<Box<dyn MultipartUpload>>;
    /// Multipart uploads under `prefix` that were neither completed nor aborted.
    async fn list_pending_uploads(&self, prefix: &str) -> StorageResult<Vec<PendingUpload>>;
    /// Abort a pending upload found by [`Storage::list_pending_uploads`].
    async fn abort_pending_upload(&self, upload: &PendingUpload) -> StorageResult<()>;
    /// A short description for messages: `s3://bucket/prefix`, `file:///path`, `memory://`.
    fn describe(&self) -> String;
}

/// A started multipart upload. Parts are numbered in the order `put_part` is called; their
/// futures may run concurrently and finish in any order.
#[async_trait]
pub trait MultipartUpload: Send {
    /// Upload the next part. Every part but the last must be at least 5 MiB on S3.
    fn put_part(&mut self, data: Bytes) -> futures::future::BoxFuture<'static, StorageResult<()>>;
    /// Complete the upload once every part future has finished.
    async fn complete(self: Box<Self>) -> StorageResult<()>;
    /// Abandon the upload and free what it stored.
    async fn abort(self: Box<Self>) -> StorageResult<()>;
}

/// Conveniences over [`Storage`].
#[async_trait]
pub trait StorageExt: Storage {
    /// `get`, but a missing object is `None`.
    async fn get_opt(&self, key: &str) -> StorageResult<Option<Bytes>> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete every object under `prefix`; returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> StorageResult<usize> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&o.key).await?;
        }
        Ok(objects.len())
    }
}

impl<T: Storage + ?Sized> StorageExt for T {}

/// How to reach an S3-compatible store, beyond the standard AWS environment.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Custom endpoint (`http://127.0.0.1:3900`) for S3-compatible stores.
    pub endpoint: Option<String>,
    /// Region; defaults to the AWS chain's, then `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted stores.
    pub path_style: bool,
    /// Send request checksums only when an operation requires them (for stores that reject
    /// aws-chunked trailers).
    pub checksum_when_required: bool,
    /// Attempts per request, including the first (retries back off exponentially).
    pub max_attempts: u32,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Static credentials (access key, secret) instead of the standard AWS chain; for
    /// embedding and tests. The binary always uses the chain.
    pub static_credentials: Option<(String, String)>,
}

/// Open a repository URL: `s3://bucket/prefix`, `file:///abs/path`, or a path.
///
/// # Errors
/// A malformed URL is a configuration error; S3 setup itself does not contact the server.
pub async fn open(url: &str, s3: &S3Settings) -> crate::Result<Arc<dyn Storage>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(crate::Error::Config(format!(
                "repository {url:?} names no bucket; write s3://BUCKET/PREFIX"
            )));
        }
        let store = s3::S3Store::new(bucket, prefix.trim_matches('/'), s3).await;
        return Ok(Arc::new(store));
    }
    let path = if let Some(p) = url.strip_prefix("file://") {
        p.to_string()
    } else if url.contains("://") || looks_like_a_url(url) {
        // `s3:bucket/x` or `s3:/bucket` would otherwise be a folder of that name here,
        // and a backup meant for S3 would land on the local disk without a word.
        return Err(crate::Error::Config(format!(
            "repository {url:?}: unknown scheme or a malformed URL\n  fix: write s3://BUCKET/PREFIX, file:///ABSOLUTE/PATH or a path (./{url} for a folder of that name)"
        )));
    } else {
        url.to_string()
    };
    Ok(Arc::new(local::LocalStore::new(path)))
}

/// The folder of a local repository URL (a path or `file://`); `None` for S3.
pub fn local_root(url: &str) -> Option<std::path::PathBuf> {
    if url.starts_with("s3://") {
        return None;
    }
    Some(url.strip_prefix("file://").unwrap_or(url).into())
}

/// `scheme:` at the start of `url` (letters, digits, `+`, `-`, `.`, starting with a letter):
/// a URL whose `//` is missing, not a path.
fn looks_like_a_url(url: &str) -> bool {
    match url.split_once(':') {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// Escape a MongoDB name for use as one segment of a key or archive path: everything but
/// ASCII letters, digits, `_`, `-` and `.` is percent-encoded (UTF-8 bytes), and so is a
/// leading `.`, so no segment can be `.`, `..` or hidden. Reversible with [`unescape_segment`].
pub fn escape_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverse [`escape_segment`].
pub fn unescape_segment(seg: &str) -> Option<String> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_missing_its_slashes_is_refused_not_taken_for_a_folder() {
        let s3 = S3Settings::default();
        for url in ["s3:my-bucket/prod", "s3:/bucket", "memory://", "gs://b/p"] {
            let Err(e) = open(url, &s3).await else {
                panic!("{url} was opened")
            };
            assert!(
                matches!(&e, crate::Error::Config(m) if m.contains("fix: write s3://")),
                "{e}"
            );
        }
        for path in ["./s3:folder", "backups", "/tmp/x", "file:///tmp/x"] {
            assert!(open(path, &s3).await.is_ok(), "{path}");
        }
    }

    #[test]
    fn escaping_round_trips_and_is_key_safe() {
        for name in [
            "orders",
            "with space",
            "dots.in.name",
            "ünïcødé 日本",
            "..",
            ".hidden",
            "a/b",
            "50%",
        ] {
            let e = escape_segment(name);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%_-.".contains(&b)),
                "{e}"
            );
            assert!(!e.starts_with('.'), "{e}");
            assert_eq!(unescape_segment(&e).as_deref(), Some(name));
        }
        assert_eq!(escape_segment("with space"), "with%20space");
        assert_eq!(escape_segment("dots.in.name"), "dots.in.name");
    }
}
