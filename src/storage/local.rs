//! A repository in a local folder. Writes are atomic: data goes to a temporary file under
//! `.tmp/` in the same folder tree, is synced, then renamed into place. A multipart upload is
//! one temporary file written at known offsets (part N starts where the parts before it end,
//! which is known when `put_part` is called), renamed on completion.
//!
//! On Linux the whole blocks of each part are written with `O_DIRECT`: archives are written
//! once and not read again soon, so they bypass the page cache (on the benchmark machine a
//! buffered write of 2 GiB cost 5 s of kernel time, a direct one 0.8 s) and do not push the
//! database's own files out of it. Where the file system refuses `O_DIRECT` the part is
//! written through the page cache as before.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::StreamExt;

use super::{
    ByteStream, ListResult, MultipartUpload, ObjectMeta, PendingUpload, Storage, StorageError,
    StorageResult,
};

const TMP_DIR: &str = ".tmp";

/// A store rooted at a local folder (created on first write).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> StorageResult<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(StorageError::Other {
                op: "resolve",
                key: key.to_string(),
                detail: "not a valid relative key".into(),
            });
        }
        Ok(self.root.join(key))
    }

    fn tmp_path(&self) -> PathBuf {
        let name = format!(
            "{}-{}-{:016x}",
            Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id(),
            rand::random::<u64>()
        );
        self.root.join(TMP_DIR).join(name)
    }
}

fn io_err(op: &'static str, key: &str, e: std::io::Error) -> StorageError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NotFound {
            key: key.to_string(),
        },
        std::io::ErrorKind::PermissionDenied => StorageError::AccessDenied {
            detail: format!("{op} {key}: {e}"),
        },
        _ => StorageError::Other {
            op,
            key: key.to_string(),
            detail: e.to_string(),
        },
    }
}

fn meta(key: String, m: &std::fs::Metadata) -> ObjectMeta {
    let last_modified: DateTime<Utc> = m
        .modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    ObjectMeta {
        key,
        size: m.len(),
        last_modified,
    }
}

/// Split a full listing into one level under `prefix` (shared with the memory store).
pub(crate) fn split_level(prefix: &str, all: Vec<ObjectMeta>) -> ListResult {
    let mut out = ListResult::default();
    for o in all {
        let rest = &o.key[prefix.len()..];
        match rest.find('/') {
            Some(i) => {
                let p = format!("{prefix}{}", &rest[..=i]);
                if out.prefixes.last() != Some(&p) && !out.prefixes.contains(&p) {
                    out.prefixes.push(p);
                }
            }
            None => out.objects.push(o),
        }
    }
    out
}

fn write_atomically(tmp: &Path, dest: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(tmp.parent().expect("tmp has a parent"))?;
    let f = std::fs::File::create(tmp)?;
    let res = (|| {
        f.write_all_at(data, 0)?;
        f.sync_all()?;
        std::fs::create_dir_all(dest.parent().expect("key has a parent"))?;
        std::fs::rename(tmp, dest)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    res
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if dir == root && entry.file_name() == TMP_DIR {
                continue;
            }
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path.strip_prefix(root).expect("under root");
            let key = rel
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            out.push(meta(key, &entry.metadata()?));
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Other {
            op: "local I/O",
            key: String::new(),
            detail: e.to_string(),
        })
    })
}

#[async_trait]
impl Storage for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let dest = self.path(key)?;
        let tmp = self.tmp_path();
        let key = key.to_string();
        blocking(move || write_atomically(&tmp, &dest, &data).map_err(|e| io_err("put", &key, e)))
            .await
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_err("get", &key, e))
        })
        .await
    }

    async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err("get", key, e))?;
        let key = key.to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map(move |r| r.map_err(|e| io_err("read", &key, e)));
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || {
            let m = std::fs::metadata(&path).map_err(|e| io_err("head", &key, e))?;
            if !m.is_file() {
                return Err(StorageError::NotFound { key });
            }
            Ok(meta(key, &m))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the folder the prefix names, not the whole repository.
            let dir = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            let mut all = Vec::new();
            walk(&root, &dir, &mut all).map_err(|e| io_err("list", &prefix, e))?;
            all.retain(|o| o.key.starts_with(&prefix));
            all.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(all)
        })
        .await
    }

    async fn list_with_delimiter(&self, prefix: &str) -> StorageResult<ListResult> {
        Ok(split_level(prefix, self.list(prefix).await?))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path(key)?;
        let root = self.root.clone();
        let key = key.to_string();
        blocking(move || {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err("delete", &key, e)),
            }
            // Remove folders left empty, up to the root, so listings stay clean.
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == root || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
    }

    async fn start_multipart(&self, key: &str) -> StorageResult<Box<dyn MultipartUpload>> {
        let dest = self.path(key)?;
        let tmp = self.tmp_path();
        let key_s = key.to_string();
        let tmp2 = tmp.clone();
        let (file, direct) = blocking(move || {
            let file = std::fs::create_dir_all(tmp2.parent().expect("tmp has a parent"))
                .and_then(|_| std::fs::File::create(&tmp2))
                .map_err(|e| io_err("start upload", &key_s, e))?;
            Ok((file, open_direct(&tmp2)))
        })
        .await?;
        Ok(Box::new(LocalUpload {
            file: Arc::new(file),
            direct: direct.map(Arc::new),
            tmp,
            dest,
            key: key.to_string(),
            offset: 0,
        }))
    }

    async fn list_pending_uploads(&self, prefix: &str) -> StorageResult<Vec<PendingUpload>> {
        // A local upload does not know its key until completion; every temporary file is
        // pending whatever the prefix (a local repository has one writer tree).
        let _ = prefix;
        let dir = self.root.join(TMP_DIR);
        blocking(move || {
            let mut out = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(io_err("list uploads", TMP_DIR, e)),
            };
            for e in entries.flatten() {
                let m = e
                    .metadata()
                    .map_err(|e| io_err("list uploads", TMP_DIR, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                out.push(PendingUpload {
                    key: format!("{TMP_DIR}/{name}"),
                    upload_id: name,
                    initiated: meta(String::new(), &m).last_modified,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn abort_pending_upload(&self, upload: &PendingUpload) -> StorageResult<()> {
        let path = self.root.join(TMP_DIR).join(&upload.upload_id);
        let id = upload.upload_id.clone();
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("abort", &id, e)),
            _ => Ok(()),
        })
        .await
    }

    fn describe(&self) -> String {
        let abs = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", abs.display())
    }
}

/// Block size for `O_DIRECT` writes: the alignment streamed upload parts are given, so
/// that they are written where they are.
const DIRECT_ALIGN: usize = super::upload::PART_ALIGN;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> Option<std::fs::File> {
    None
}

/// Write `data` at `offset`: its whole blocks through `direct` when there is one and the
/// offset is block-aligned (every part but the last is a whole number of blocks), the rest
/// through the page cache.
fn write_part(
    file: &std::fs::File,
    direct: Option<&std::fs::File>,
    data: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    let whole = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    if let Some(direct) = direct.filter(|_| whole > 0 && offset.is_multiple_of(DIRECT_ALIGN as u64))
    {
        // Streamed uploads hand over parts whose memory is block-aligned already
        // (`upload::aligned_part`); anything else is copied into an aligned buffer first.
        let copy;
        let aligned = if data.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
            &data[..whole]
        } else {
            copy = aligned_copy(&data[..whole]);
            &copy.0[copy.1..copy.1 + whole]
        };
        match direct.write_all_at(aligned, offset) {
            Ok(()) => return file.write_all_at(&data[whole..], offset + whole as u64),
            // The file system does not take direct writes after all: use the page cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    file.write_all_at(data, offset)
}

/// `data` in a buffer with a block-aligned start: the buffer and the start's offset.
fn aligned_copy(data: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; data.len() + DIRECT_ALIGN];
    let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
    buf[start..start + data.len()].copy_from_slice(data);
    (buf, start)
}

struct LocalUpload {
    file: Arc<std::fs::File>,
    direct: Option<Arc<std::fs::File>>,
    tmp: PathBuf,
    dest: PathBuf,
    key: String,
    offset: u64,
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, StorageResult<()>> {
        let offset = self.offset;
        self.offset += data.len() as u64;
        let file = self.file.clone();
        let direct = self.direct.clone();
        let key = self.key.clone();
        Box::pin(blocking(move || {
            write_part(&file, direct.as_deref(), &data, offset)
                .map_err(|e| io_err("upload part", &key, e))
        }))
    }

    async fn complete(self: Box<Self>) -> StorageResult<()> {
        let LocalUpload {
            file,
            tmp,
            dest,
            key,
            ..
        } = *self;
        blocking(move || {
            let r = file
                .sync_all()
                .and_then(|_| std::fs::create_dir_all(dest.parent().expect("key has a parent")))
                .and_then(|_| std::fs::rename(&tmp, &dest));
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r.map_err(|e| io_err("complete upload", &key, e))
        })
        .await
    }

    async fn abort(self: Box<Self>) -> StorageResult<()> {
        let tmp = self.tmp.clone();
        let key = self.key.clone();
        blocking(move || match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("abort", &key, e)),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::LocalStore::new(dir.path().join("repo"));
        crate::storage::conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        use crate::storage::Storage;
        let dir = tempfile::tempdir().unwrap();
        let store = super::LocalStore::new(dir.path());
        for key in ["../x", "a/../../x", "/etc/passwd", "a//b", ""] {
            assert!(store.put(key, "x".into()).await.is_err(), "{key} accepted");
        }
    }
}
