//! A streamed upload of one object of unknown length.
//!
//! Bytes are buffered into parts; a stream that ends within the first part is written with a
//! single atomic `put` (most collections are small), a longer one becomes a multipart upload.
//! Part size grows by doubling every [`UploadConfig::parts_per_step`] parts, so a stream
//! never needs more than S3's 10,000 parts: with the 8 MiB default, 1,000 parts of each
//! size reach about 8 TiB, beyond S3's 5 TiB object limit. At most
//! [`UploadConfig::concurrency`] parts are in flight; memory is bounded by
//! `(concurrency + 1) * part size`. Any failure, or dropping the writer unfinished through
//! [`StreamUpload::abort`], aborts the multipart upload.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::{MultipartUpload, Storage, StorageError, StorageResult};

/// S3's limit on parts per upload.
pub const MAX_PARTS: u32 = 10_000;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// Tuning for streamed uploads.
#[derive(Debug, Clone, Copy)]
pub struct UploadConfig {
    /// Size of the first parts (at least 5 MiB).
    pub initial_part_size: usize,
    /// Parts in flight at once, per stream.
    pub concurrency: usize,
    /// Parts of one size before the size doubles.
    pub parts_per_step: u32,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            initial_part_size: 8 * 1024 * 1024,
            concurrency: 2,
            parts_per_step: 1_000,
        }
    }
}

impl UploadConfig {
    /// Size of part number `n` (1-based).
    pub fn part_size(&self, n: u32) -> usize {
        let step = (n.saturating_sub(1) / self.parts_per_step.max(1)).min(20);
        (self.initial_part_size.max(MIN_PART_SIZE) << step).min(MAX_PART_SIZE)
    }

    /// The largest stream this configuration can upload within [`MAX_PARTS`].
    pub fn max_stream_size(&self) -> u128 {
        (1..=MAX_PARTS).map(|n| self.part_size(n) as u128).sum()
    }
}

/// The result of a finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Total bytes stored.
    pub size: u64,
    /// Parts used (1 for a plain put).
    pub parts: u32,
}

/// A writer that streams bytes into one object.
pub struct StreamUpload {
    store: Arc<dyn Storage>,
    key: String,
    config: UploadConfig,
    buf: BytesMut,
    multipart: Option<Box<dyn MultipartUpload>>,
    in_flight: FuturesUnordered<futures::future::BoxFuture<'static, StorageResult<()>>>,
    parts: u32,
    size: u64,
}

impl StreamUpload {
    /// Prepare an upload to `key`; nothing is sent until enough bytes arrive.
    pub fn new(store: Arc<dyn Storage>, key: impl Into<String>, config: UploadConfig) -> Self {
        let buf = aligned_part(config.part_size(1));
        Self {
            store,
            key: key.into(),
            config,
            buf,
            multipart: None,
            in_flight: FuturesUnordered::new(),
            parts: 0,
            size: 0,
        }
    }

    /// The key being written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Append bytes; uploads full parts, waiting while `concurrency` parts are in flight.
    ///
    /// # Errors
    /// A failed part; the caller must then call [`StreamUpload::abort`].
    pub async fn write(&mut self, mut data: &[u8]) -> StorageResult<()> {
        self.size += data.len() as u64;
        while !data.is_empty() {
            let target = self.config.part_size(self.parts + 1);
            let take = (target - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() >= target {
                self.flush_part().await?;
            }
        }
        Ok(())
    }

    async fn flush_part(&mut self) -> StorageResult<()> {
        if self.parts + 1 > MAX_PARTS {
            return Err(StorageError::Other {
                op: "upload",
                key: self.key.clone(),
                detail: format!("stream exceeds {MAX_PARTS} parts"),
            });
        }
        if self.multipart.is_none() {
            self.multipart = Some(self.store.start_multipart(&self.key).await?);
        }
        while self.in_flight.len() >= self.config.concurrency.max(1) {
            if let Some(r) = self.in_flight.next().await {
                r?;
            }
        }
        self.parts += 1;
        let next_cap = self.config.part_size(self.parts + 1);
        let part = std::mem::replace(&mut self.buf, aligned_part(next_cap)).freeze();
        let fut = self.multipart.as_mut().expect("started").put_part(part);
        self.in_flight.push(fut);
        Ok(())
    }

    /// Upload what remains and make the object visible.
    ///
    /// # Errors
    /// A failed part or completion; the multipart upload is aborted before returning.
    pub async fn finish(mut self) -> StorageResult<Uploaded> {
        match self.finish_inner().await {
            Ok(u) => Ok(u),
            Err(e) => {
                self.abort_quietly().await;
                Err(e)
            }
        }
    }

    async fn finish_inner(&mut self) -> StorageResult<Uploaded> {
        if self.multipart.is_none() {
            let data = std::mem::take(&mut self.buf).freeze();
            self.store.put(&self.key, data).await?;
            return Ok(Uploaded {
                size: self.size,
                parts: 1,
            });
        }
        if !self.buf.is_empty() {
            self.parts += 1;
            let part = std::mem::take(&mut self.buf).freeze();
            let fut = self.multipart.as_mut().expect("started").put_part(part);
            self.in_flight.push(fut);
        }
        while let Some(r) = self.in_flight.next().await {
            r?;
        }
        let mp = self.multipart.take().expect("started");
        mp.complete().await?;
        Ok(Uploaded {
            size: self.size,
            parts: self.parts,
        })
    }

    /// Abandon the upload: wait for parts in flight, then abort the multipart upload.
    ///
    /// # Errors
    /// The abort itself failed (the store is gone): the upload stays pending until `prune`
    /// removes it as garbage.
    pub async fn abort(mut self) -> StorageResult<()> {
        while self.in_flight.next().await.is_some() {}
        match self.multipart.take() {
            Some(mp) => mp.abort().await,
            None => Ok(()),
        }
    }

    async fn abort_quietly(&mut self) {
        while self.in_flight.next().await.is_some() {}
        if let Some(mp) = self.multipart.take() {
            if let Err(e) = mp.abort().await {
                tracing::warn!(key = %self.key, error = %e, "could not abort multipart upload; prune removes it later");
            }
        }
    }
}

/// Block size for `O_DIRECT` writes (offsets, lengths and memory aligned to it). Parts
/// start on such a boundary, so that a store writing with `O_DIRECT` (the local one) can
/// write them where they are instead of copying each into an aligned buffer.
pub(crate) const PART_ALIGN: usize = 4096;

/// An empty part buffer of `capacity` bytes whose first byte is 4 KiB-aligned.
fn aligned_part(capacity: usize) -> BytesMut {
    use bytes::Buf;
    let mut buf = BytesMut::with_capacity(capacity + PART_ALIGN);
    let skip = buf.as_ptr().align_offset(PART_ALIGN);
    buf.resize(skip, 0);
    buf.advance(skip);
    buf
}

/// Convenience: stream a whole `Bytes` through a [`StreamUpload`].
///
/// # Errors
/// As [`StreamUpload::finish`].
pub async fn upload_all(
    store: Arc<dyn Storage>,
    key: &str,
    data: Bytes,
    config: UploadConfig,
) -> StorageResult<Uploaded> {
    let mut up = StreamUpload::new(store, key, config);
    if let Err(e) = up.write(&data).await {
        let _ = up.abort().await;
        return Err(e);
    }
    up.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_so_ten_thousand_parts_cover_s3s_largest_object() {
        let c = UploadConfig::default();
        assert_eq!(c.part_size(1), 8 << 20);
        assert_eq!(c.part_size(1000), 8 << 20);
        assert_eq!(c.part_size(1001), 16 << 20);
        assert_eq!(c.part_size(2001), 32 << 20);
        assert!(
            c.max_stream_size() >= 5u128 << 40,
            "{}",
            c.max_stream_size()
        );
        assert!(c.part_size(MAX_PARTS) <= MAX_PART_SIZE);
    }

    #[test]
    fn part_buffers_start_block_aligned_and_hold_a_whole_part() {
        for cap in [MIN_PART_SIZE, 8 << 20, 8 << 20 | 1] {
            let b = aligned_part(cap);
            assert!(b.is_empty());
            assert_eq!(b.as_ptr() as usize % PART_ALIGN, 0);
            assert!(b.capacity() >= cap, "{} < {cap}", b.capacity());
        }
    }

    #[test]
    fn part_size_never_below_s3_minimum() {
        let c = UploadConfig {
            initial_part_size: 1024,
            ..Default::default()
        };
        assert_eq!(c.part_size(1), MIN_PART_SIZE);
    }
}
