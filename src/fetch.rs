//! Reading stored objects back, checked: every byte of an archive is hashed as it streams
//! and its size and sha256 are compared with what the manifest recorded. Restore, export and
//! verification all read through here, so a flipped or missing byte is always reported as
//! the object, the expected value and the actual one.
//!
//! The reader is split in two halves joined by a bounded channel: [`fetch_verified`] (async:
//! download and hash) and [`ChannelReader`] (blocking `Read` for the decompressor and tar
//! parser on a blocking thread).

use std::io::Read;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::manifest::StoredObject;
use crate::repository::Repository;
use crate::{Error, Result};

/// Download `obj` into `tx`, hashing every byte, then compare size and sha256 with the
/// manifest. When the consumer hangs up early (it found the archive corrupt) the rest is
/// still read and hashed, so that corruption is reported as a checksum mismatch naming the
/// object rather than as a decompression error; when `cancel` fired (another stage failed)
/// it stops at once.
///
/// # Errors
/// [`Error::Storage`] when the store fails, [`Error::Integrity`] when the size or sha256
/// differ from the manifest, [`Error::Cancelled`] when cancelled.
pub async fn fetch_verified(
    repo: &Repository,
    obj: &StoredObject,
    tx: mpsc::Sender<Bytes>,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut stream = repo
        .store()
        .get_stream(&obj.key)
        .await
        .map_err(|e| repo.err(e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut consumer_alive = true;
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            _ = cancel.cancelled(), if consumer_alive => return Err(Error::Cancelled),
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| repo.err(e))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        if size > obj.size {
            return Err(size_mismatch(obj, format!("more than {size} bytes")));
        }
        if consumer_alive && tx.send(chunk).await.is_err() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            consumer_alive = false;
        }
    }
    drop(tx);
    if size != obj.size {
        return Err(size_mismatch(obj, format!("{size} bytes")));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != obj.sha256 {
        return Err(Error::Integrity {
            key: obj.key.clone(),
            expected: format!("sha256 {}", obj.sha256),
            actual: format!("sha256 {actual}"),
        });
    }
    Ok(())
}

fn size_mismatch(obj: &StoredObject, actual: String) -> Error {
    Error::Integrity {
        key: obj.key.clone(),
        expected: format!("{} bytes", obj.size),
        actual,
    }
}

/// A blocking [`Read`] over the chunks [`fetch_verified`] sends. The end of the channel is
/// the end of the data; whether that end was complete is the fetcher's verdict, not ours.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    /// Read from `rx`.
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Check every object of a snapshot (size and sha256) without decoding anything; returns
/// the objects checked and their bytes.
///
/// # Errors
/// The first [`Error::Integrity`] or storage failure.
pub async fn check_objects(
    repo: &Repository,
    objects: &[StoredObject],
    parallel: usize,
) -> Result<(u64, u64)> {
    let results: Vec<Result<u64>> = futures::stream::iter(objects)
        .map(|obj| async move {
            let (tx, mut rx) = mpsc::channel(8);
            let cancel = CancellationToken::new();
            let drain = async { while rx.recv().await.is_some() {} };
            let (r, ()) = tokio::join!(fetch_verified(repo, obj, tx, &cancel), drain);
            r.map(|()| obj.size)
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut bytes = 0;
    for r in results {
        bytes += r?;
    }
    Ok((objects.len() as u64, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::storage::memory::MemoryStore;
    use crate::storage::Storage;

    async fn setup(data: &'static [u8]) -> (Repository, StoredObject) {
        let store = Arc::new(MemoryStore::new());
        store.put("k", Bytes::from_static(data)).await.unwrap();
        let obj = StoredObject {
            key: "k".into(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        };
        (Repository::new(store), obj)
    }

    async fn read_all(repo: &Repository, obj: &StoredObject) -> (Result<()>, Vec<u8>) {
        let (tx, rx) = mpsc::channel(2);
        let reader = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            ChannelReader::new(rx).read_to_end(&mut out).unwrap();
            out
        });
        let r = fetch_verified(repo, obj, tx, &CancellationToken::new()).await;
        (r, reader.await.unwrap())
    }

    #[tokio::test]
    async fn good_object_streams_through() {
        let (repo, obj) = setup(b"hello world").await;
        let (r, data) = read_all(&repo, &obj).await;
        r.unwrap();
        assert_eq!(data, b"hello world");
    }

    #[tokio::test]
    async fn wrong_sha256_names_object_and_both_values() {
        let (repo, mut obj) = setup(b"hello world").await;
        obj.sha256 = "00".repeat(32);
        let (r, _) = read_all(&repo, &obj).await;
        match r {
            Err(Error::Integrity {
                key,
                expected,
                actual,
            }) => {
                assert_eq!(key, "k");
                assert_eq!(expected, format!("sha256 {}", "00".repeat(32)));
                assert_eq!(
                    actual,
                    format!("sha256 {}", hex::encode(Sha256::digest(b"hello world")))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn short_and_long_objects_are_size_mismatches() {
        let (repo, mut obj) = setup(b"hello world").await;
        obj.size = 20;
        let (r, _) = read_all(&repo, &obj).await;
        assert!(
            matches!(&r, Err(Error::Integrity { actual, .. }) if actual == "11 bytes"),
            "{r:?}"
        );
        obj.size = 5;
        let (r, _) = read_all(&repo, &obj).await;
        assert!(
            matches!(&r, Err(Error::Integrity { expected, .. }) if expected == "5 bytes"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_consumer_that_gives_up_still_gets_the_checksum_verdict() {
        let (repo, mut obj) = setup(b"0123456789abcdef").await;
        obj.sha256 = "ff".repeat(32);
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let r = fetch_verified(&repo, &obj, tx, &CancellationToken::new()).await;
        assert!(matches!(r, Err(Error::Integrity { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn check_objects_counts_and_fails_on_a_bad_one() {
        let (repo, obj) = setup(b"abc").await;
        assert_eq!(
            check_objects(&repo, &[obj.clone(), obj.clone()], 2)
                .await
                .unwrap(),
            (2, 6)
        );
        let mut bad = obj.clone();
        bad.sha256 = "11".repeat(32);
        assert!(matches!(
            check_objects(&repo, &[obj, bad], 2).await,
            Err(Error::Integrity { .. })
        ));
    }
}
