//! The archive of one collection: a tar stream, gzip-compressed or not, holding
//! `<db>/<coll>.metadata.json` (mongodump's metadata shape) and then the documents as raw
//! BSON in bounded parts `<db>/<coll>.part-NNNNNN.bson`. A tar entry needs its size up
//! front, so documents are gathered into a part buffer of at most `part_limit` bytes (one
//! larger document makes a part of its own): memory is bounded whatever the collection's
//! size and no temporary file grows with the data. Names are escaped with
//! [`crate::storage::escape_segment`].
//!
//! The writer runs on a blocking thread: it receives document chunks from the reader task,
//! computes the count, BSON bytes and content digest, compresses, hashes the compressed
//! bytes and hands them to the uploader through a bounded channel.

use std::io::{Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::digest::sha256::Sha256Stream;
use crate::digest::ContentDigest;
use crate::storage::escape_segment;
use crate::{Error, Result};

/// Compression of the tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip at a level 0..=12 (libdeflate's levels; 12 is the smallest and slowest).
    Gzip(u32),
    /// No compression.
    None,
}

/// The default gzip level. With libdeflate, level 7 writes archives about as small as
/// mongodump's (Go's level 6; libdeflate's level 6 is 0.6 % larger), for about 13 % more CPU
/// than zlib-rs's level 6; see the README's benchmark.
pub const DEFAULT_GZIP_LEVEL: u32 = 7;

impl Default for Codec {
    fn default() -> Self {
        Codec::Gzip(DEFAULT_GZIP_LEVEL)
    }
}

impl Codec {
    /// Parse `gzip`, `gzip:N` or `none`.
    ///
    /// # Errors
    /// Anything else, as a configuration error.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "gzip" => Ok(Codec::default()),
            "none" => Ok(Codec::None),
            _ => match s.strip_prefix("gzip:").and_then(|l| l.parse::<u32>().ok()) {
                Some(l) if l <= 12 => Ok(Codec::Gzip(l)),
                _ => Err(Error::Config(format!(
                    "compression {s:?}: expected gzip, gzip:0 to gzip:12, or none"
                ))),
            },
        }
    }

    /// The codec to read an archive whose manifest entry says `name` (`gzip` or `none`;
    /// the level does not matter for reading).
    pub fn for_reading(name: &str) -> Self {
        if name == "none" {
            Codec::None
        } else {
            Codec::Gzip(6)
        }
    }

    /// The name recorded in the manifest (`gzip` or `none`).
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Gzip(_) => "gzip",
            Codec::None => "none",
        }
    }

    /// The option as written on the command line.
    pub fn spec(&self) -> String {
        match self {
            Codec::Gzip(l) => format!("gzip:{l}"),
            Codec::None => "none".into(),
        }
    }

    /// File extension of the archive object.
    pub fn extension(&self) -> &'static str {
        match self {
            Codec::Gzip(_) => "tar.gz",
            Codec::None => "tar",
        }
    }
}

/// What the reader sends to the archive writer.
#[derive(Debug)]
pub enum Chunk {
    /// Whole documents, concatenated.
    Docs(Vec<u8>),
    /// The collection was read to its end.
    End,
}

/// What the writer learned about the collection and its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Documents written.
    pub count: u64,
    /// Their BSON bytes.
    pub bson_bytes: u64,
    /// Their content digest.
    pub digest: ContentDigest,
    /// Document parts written.
    pub parts: u32,
    /// Bytes of the archive object.
    pub size: u64,
    /// SHA-256 of the archive object, hex.
    pub sha256: String,
}

/// The path of an entry inside the archive.
pub fn entry_path(db: &str, coll: &str, suffix: &str) -> String {
    format!("{}/{}.{suffix}", escape_segment(db), escape_segment(coll))
}

/// Hashes, counts and forwards the archive's bytes to the uploader in chunks.
struct ChannelSink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    chunk: usize,
    hasher: Sha256Stream,
    size: u64,
}

impl ChannelSink {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.chunk),
        ));
        self.send(data)
    }

    fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        self.tx
            .blocking_send(data)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "uploader stopped"))
    }
}

impl Write for ChannelSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the tar stream goes: a writer that also takes whole documents.
trait ArchiveWrite: Write {
    /// Write `runs` (whole documents, concatenated) and add each document to `digest`.
    fn write_documents(
        &mut self,
        runs: &[Bytes],
        digest: &mut ContentDigest,
    ) -> std::io::Result<()> {
        digest.add_documents(runs.iter().flat_map(|r| Docs(r)));
        runs.iter().try_for_each(|r| self.write_all(r))
    }
}

/// Compressed: the documents are hashed several at a time, then copied into the compressor's
/// input.
impl<W: Write> ArchiveWrite for ParallelGz<W> {}

/// Uncompressed: the archive's checksum and the documents' own hashes over the same bytes, as
/// this CPU does both fastest ([`Sha256Stream::update_and_hash_each`]), and the documents go
/// to the uploader as they are, without a copy.
impl ArchiveWrite for ChannelSink {
    fn write_documents(
        &mut self,
        runs: &[Bytes],
        digest: &mut ContentDigest,
    ) -> std::io::Result<()> {
        self.hasher.update_and_hash_each(
            runs.iter().map(|r| &r[..]),
            runs.iter().flat_map(|r| Docs(r)),
            |h| digest.add_hash(h),
        );
        for r in runs {
            self.size += r.len() as u64;
            // Small runs join the buffer; large ones go as they are, after what is buffered.
            if r.len() < 64 << 10 {
                self.buf.extend_from_slice(r);
                if self.buf.len() >= self.chunk {
                    self.send_buf()?;
                }
            } else {
                self.send_buf()?;
                self.send(r.clone())?;
            }
        }
        Ok(())
    }
}

/// The documents of a run of whole, already checked documents.
struct Docs<'a>(&'a [u8]);

impl<'a> Iterator for Docs<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = i32::from_le_bytes(self.0.get(..4)?.try_into().ok()?);
        if len < 5 {
            return None;
        }
        let len = len as usize;
        let (doc, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        Some(doc)
    }
}

/// Parameters of one collection archive.
#[derive(Debug, Clone)]
pub struct ArchiveSpec {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub coll: String,
    /// The metadata entry's bytes.
    pub metadata_json: Vec<u8>,
    /// Compression.
    pub codec: Codec,
    /// Bound on the BSON bytes of one part.
    pub part_limit: usize,
    /// Modification time written in the tar headers (the snapshot's start).
    pub mtime: u64,
}

fn map_io(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::Cancelled
    } else {
        Error::io("writing archive", e)
    }
}

/// Write the archive of one collection from `docs` into `out`. Blocking: run it on a
/// blocking thread.
///
/// # Errors
/// [`Error::Cancelled`] when the reader stopped without [`Chunk::End`] or the uploader
/// hung up (the other side holds the real error); [`Error::Format`] on a malformed document.
pub fn write_archive(
    spec: &ArchiveSpec,
    mut docs: mpsc::Receiver<Chunk>,
    out: mpsc::Sender<Bytes>,
) -> Result<ArchiveStats> {
    let sink = ChannelSink {
        tx: out,
        buf: Vec::with_capacity(1 << 20),
        chunk: 1 << 20,
        hasher: Sha256Stream::new(),
        size: 0,
    };
    match spec.codec {
        Codec::Gzip(level) => {
            let gz = ParallelGz::new(sink, level, GZ_SEGMENT, gz_threads());
            let (gz, stats) = write_tar(spec, &mut docs, gz)?;
            finish_sink(gz.finish().map_err(map_io)?, stats)
        }
        Codec::None => {
            let (sink, stats) = write_tar(spec, &mut docs, sink)?;
            finish_sink(sink, stats)
        }
    }
}

/// Input bytes per gzip member: large enough that the ratio is within 0.3 % of one stream,
/// small enough that the members in flight stay a few MiB.
const GZ_SEGMENT: usize = 4 << 20;

fn gz_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// A compressed member and the input buffer it came from (for reuse).
type GzDone = std::io::Result<(Vec<u8>, Vec<u8>)>;

/// Input, a buffer for the output, where to send both back.
type GzJob = (Vec<u8>, Vec<u8>, std::sync::mpsc::SyncSender<GzDone>);

/// gzip on every core: the input is cut into segments, each compressed by libdeflate on one
/// of `threads` worker threads as an independent gzip member; members are written in order,
/// and their concatenation is one valid gzip stream (RFC 1952), which [`read_archive`] reads
/// with a multi-member decoder. At most `threads` segments are in flight, and their buffers
/// are reused, so memory stays bounded and is not faulted in again for every segment.
struct ParallelGz<W: Write> {
    inner: W,
    segment: usize,
    threads: usize,
    buf: Vec<u8>,
    spare: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    pool: GzPool,
    in_flight: std::collections::VecDeque<std::sync::mpsc::Receiver<GzDone>>,
}

fn gz_worker(level: u32, jobs: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<GzJob>>>) {
    let lvl = libdeflater::CompressionLvl::new(level as i32)
        .unwrap_or_else(|_| libdeflater::CompressionLvl::default());
    let mut compressor = libdeflater::Compressor::new(lvl);
    loop {
        let job = jobs.lock().map(|rx| rx.recv());
        let Ok(Ok((data, mut out, reply))) = job else {
            return;
        };
        out.resize(compressor.gzip_compress_bound(data.len()), 0);
        let r = compressor
            .gzip_compress(&data, &mut out)
            .map(|n| {
                out.truncate(n);
                (out, data)
            })
            .map_err(|e| std::io::Error::other(format!("gzip: {e:?}")));
        let _ = reply.send(r);
    }
}

impl<W: Write> ParallelGz<W> {
    fn new(inner: W, level: u32, segment: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<GzJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || gz_worker(level, rx))
            })
            .collect();
        let pool = GzPool {
            jobs: Some(tx),
            workers,
        };
        Self {
            inner,
            segment,
            threads,
            buf: Vec::with_capacity(segment),
            spare: Vec::new(),
            spare_out: Vec::new(),
            pool,
            in_flight: Default::default(),
        }
    }

    fn dispatch(&mut self) -> std::io::Result<()> {
        if self.in_flight.len() >= self.threads {
            self.write_oldest()?;
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.segment));
        let data = std::mem::replace(&mut self.buf, next);
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        self.pool
            .jobs
            .as_ref()
            .expect("workers run until finish")
            .send((data, self.spare_out.pop().unwrap_or_default(), reply))
            .map_err(|_| std::io::Error::other("the compression threads stopped"))?;
        self.in_flight.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> std::io::Result<()> {
        if let Some(result) = self.in_flight.pop_front() {
            let (member, mut input) = result
                .recv()
                .map_err(|_| std::io::Error::other("a compression thread panicked"))??;
            input.clear();
            self.spare.push(input);
            self.inner.write_all(&member)?;
            self.spare_out.push(member);
        }
        Ok(())
    }

    /// Compress what is left and write every member; returns the inner writer.
    fn finish(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() || self.in_flight.is_empty() {
            self.dispatch()?;
        }
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(self.segment - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.segment {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The compression threads of one [`ParallelGz`]; they stop when it is dropped (after
/// `finish`, or on an error).
struct GzPool {
    jobs: Option<std::sync::mpsc::Sender<GzJob>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for GzPool {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
fn finish_sink(mut sink: ChannelSink, mut stats: ArchiveStats) -> Result<ArchiveStats> {
    sink.send_buf().map_err(map_io)?;
    stats.size = sink.size;
    stats.sha256 = hex::encode(sink.hasher.finalize());
    Ok(stats)
}

/// The documents of the part being gathered.
#[derive(Default)]
struct Part {
    slices: Vec<Bytes>,
    len: usize,
}

impl Part {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.slices.push(b);
        }
    }

    /// Write the part as the next `part-NNNNNN.bson` entry.
    fn flush<W: ArchiveWrite>(
        &mut self,
        spec: &ArchiveSpec,
        stats: &mut ArchiveStats,
        tar: &mut tar::Builder<W>,
    ) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        stats.parts += 1;
        let name = entry_path(
            &spec.db,
            &spec.coll,
            &format!("part-{:06}.bson", stats.parts),
        );
        let mut h = file_header(self.len, spec.mtime);
        // With an empty reader the builder writes the header (and a long-name entry when
        // the path needs one) and no padding; the data and its padding follow here.
        tar.append_data(&mut h, &name, std::io::empty())
            .map_err(map_io)?;
        let w = tar.get_mut();
        w.write_documents(&self.slices, &mut stats.digest)
            .map_err(map_io)?;
        self.slices.clear();
        let pad = (512 - self.len % 512) % 512;
        w.write_all(&[0u8; 512][..pad]).map_err(map_io)?;
        self.len = 0;
        Ok(())
    }
}

/// The header of a regular file entry of `size` bytes.
fn file_header(size: usize, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8], mtime: u64) -> Result<()> {
    let mut h = file_header(data.len(), mtime);
    tar.append_data(&mut h, path, data).map_err(map_io)
}

fn write_tar<W: ArchiveWrite>(
    spec: &ArchiveSpec,
    docs: &mut mpsc::Receiver<Chunk>,
    w: W,
) -> Result<(W, ArchiveStats)> {
    let mut tar = tar::Builder::new(w);
    append(
        &mut tar,
        &entry_path(&spec.db, &spec.coll, "metadata.json"),
        &spec.metadata_json,
        spec.mtime,
    )?;
    let mut stats = ArchiveStats {
        count: 0,
        bson_bytes: 0,
        digest: ContentDigest::new(),
        parts: 0,
        size: 0,
        sha256: String::new(),
    };
    // A part is a list of slices of the reader's chunks, written after its header without
    // copying the documents into one buffer first.
    let mut part = Part::default();
    loop {
        match docs.blocking_recv() {
            Some(Chunk::Docs(data)) => {
                let data = Bytes::from(data);
                let (mut pos, mut run_start) = (0, 0);
                while pos < data.len() {
                    let len = doc_len(&data[pos..], &spec.db, &spec.coll)?;
                    // The digest is taken when the part is written (`write_documents`).
                    stats.count += 1;
                    stats.bson_bytes += len as u64;
                    if part.len + (pos - run_start) > 0
                        && part.len + (pos - run_start) + len > spec.part_limit
                    {
                        part.push(data.slice(run_start..pos));
                        part.flush(spec, &mut stats, &mut tar)?;
                        run_start = pos;
                    }
                    pos += len;
                }
                part.push(data.slice(run_start..));
            }
            Some(Chunk::End) => break,
            None => return Err(Error::Cancelled),
        }
    }
    part.flush(spec, &mut stats, &mut tar)?;
    let w = tar.into_inner().map_err(map_io)?;
    Ok((w, stats))
}

fn doc_len(data: &[u8], db: &str, coll: &str) -> Result<usize> {
    let bad = |detail: String| Error::Format {
        what: format!("a document of {db}.{coll}"),
        detail,
    };
    if data.len() < 5 {
        return Err(bad(format!(
            "{} trailing bytes are not a document",
            data.len()
        )));
    }
    let len = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if len < 5 || len as usize > data.len() {
        return Err(bad(format!(
            "document length {len} with {} bytes left",
            data.len()
        )));
    }
    Ok(len as usize)
}

/// Most bytes of documents handed over at once by [`read_archive`].
pub const PIECE_BYTES: usize = 4 << 20;

/// One entry read back from an archive.
#[derive(Debug)]
pub enum Entry {
    /// The metadata JSON.
    Metadata(Vec<u8>),
    /// Whole raw BSON documents, concatenated: a part, or a piece of at most
    /// [`PIECE_BYTES`] of a larger one.
    Part(Vec<u8>),
}

/// Read an archive (already checked or being checked by the caller), calling `visit` for
/// the metadata and each document part in order. Blocking.
///
/// # Errors
/// A truncated or corrupt stream, or an entry that does not belong.
pub fn read_archive(
    reader: impl Read,
    codec: Codec,
    mut visit: impl FnMut(Entry) -> Result<()>,
) -> Result<()> {
    let reader: Box<dyn Read> = match codec {
        Codec::Gzip(_) => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Codec::None => Box::new(reader),
    };
    let bad = |detail: String| Error::Format {
        what: "archive".into(),
        detail,
    };
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if path.ends_with(".metadata.json") {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{path}: {e}")))?;
            visit(Entry::Metadata(data))?;
        } else if path.ends_with(".bson") {
            // Whole documents, at most PIECE_BYTES at a time (one larger document alone), so a
            // reader holds a few MiB of a part, not all of it.
            let mut left = entry.size();
            let mut entry = std::io::BufReader::with_capacity(256 << 10, &mut entry);
            let mut piece = Vec::with_capacity((left as usize).min(PIECE_BYTES));
            while left > 0 {
                let mut len = [0u8; 4];
                entry
                    .read_exact(&mut len)
                    .map_err(|e| bad(format!("{path}: {e}")))?;
                let n = i32::from_le_bytes(len);
                if n < 5 || n as u64 > left {
                    return Err(bad(format!(
                        "{path}: document length {n} with {left} bytes left"
                    )));
                }
                let n = n as usize;
                if !piece.is_empty() && piece.len() + n > PIECE_BYTES {
                    let next = Vec::with_capacity((left as usize).min(PIECE_BYTES));
                    visit(Entry::Part(std::mem::replace(&mut piece, next)))?;
                }
                piece.extend_from_slice(&len);
                let start = piece.len();
                piece.resize(start + n - 4, 0);
                entry
                    .read_exact(&mut piece[start..])
                    .map_err(|e| bad(format!("{path}: {e}")))?;
                left -= n as u64;
            }
            if !piece.is_empty() {
                visit(Entry::Part(piece))?;
            }
        } else {
            return Err(bad(format!("unexpected entry {path}")));
        }
    }
    Ok(())
}

/// Split a part into its documents.
///
/// # Errors
/// A malformed length prefix.
pub fn documents(part: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = part;
    while !rest.is_empty() {
        let len = doc_len(rest, "archive", "part")?;
        let (d, t) = rest.split_at(len);
        out.push(d);
        rest = t;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, RawDocumentBuf};
    use sha2::{Digest, Sha256};

    fn raw(n: i32, pad: usize) -> Vec<u8> {
        let d = doc! { "_id": n, "pad": "x".repeat(pad) };
        RawDocumentBuf::from_document(&d).unwrap().into_bytes()
    }

    fn run(codec: Codec, part_limit: usize, docs: Vec<Vec<u8>>) -> (ArchiveStats, Vec<u8>) {
        run_named("odd name.ü", codec, part_limit, docs)
    }

    fn run_named(
        coll: &str,
        codec: Codec,
        part_limit: usize,
        docs: Vec<Vec<u8>>,
    ) -> (ArchiveStats, Vec<u8>) {
        let spec = ArchiveSpec {
            db: "shop".into(),
            coll: coll.into(),
            metadata_json: b"{\"options\":{}}".to_vec(),
            codec,
            part_limit,
            mtime: 0,
        };
        let (dtx, drx) = mpsc::channel(4);
        let (otx, mut orx) = mpsc::channel(4);
        let h = std::thread::spawn(move || write_archive(&spec, drx, otx));
        let feeder = std::thread::spawn(move || {
            for chunk in docs.chunks(3) {
                dtx.blocking_send(Chunk::Docs(chunk.concat())).unwrap();
            }
            dtx.blocking_send(Chunk::End).unwrap();
        });
        let mut out = Vec::new();
        while let Some(b) = orx.blocking_recv() {
            out.extend_from_slice(&b);
        }
        feeder.join().unwrap();
        (h.join().unwrap().unwrap(), out)
    }

    #[test]
    fn round_trip_with_bounded_parts() {
        let docs: Vec<Vec<u8>> = (0..20).map(|i| raw(i, 100 + i as usize * 10)).collect();
        let total: usize = docs.iter().map(Vec::len).sum();
        for codec in [Codec::Gzip(6), Codec::None] {
            let (stats, bytes) = run(codec, 1000, docs.clone());
            assert_eq!(stats.count, 20);
            assert_eq!(stats.bson_bytes as usize, total);
            assert_eq!(stats.size as usize, bytes.len());
            assert_eq!(stats.sha256, hex::encode(Sha256::digest(&bytes)));
            let mut expect = ContentDigest::new();
            docs.iter().for_each(|d| expect.add_document(d));
            assert_eq!(stats.digest, expect);

            let mut meta = None;
            let mut got = Vec::new();
            let mut parts = 0;
            read_archive(&bytes[..], codec, |e| {
                match e {
                    Entry::Metadata(m) => meta = Some(m),
                    Entry::Part(p) => {
                        assert!(p.len() <= 1000, "part of {} bytes over the limit", p.len());
                        parts += 1;
                        got.extend(documents(&p).unwrap().into_iter().map(<[u8]>::to_vec));
                    }
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(meta.as_deref(), Some(&b"{\"options\":{}}"[..]));
            assert_eq!(got, docs, "documents differ after the round trip");
            assert_eq!(parts, stats.parts);
            assert!(parts > 3, "parts were not bounded: {parts}");
        }
    }

    #[test]
    fn parts_of_a_collection_with_a_long_name_read_back_whole() {
        // Entry paths over 100 bytes need a GNU long-name entry before each part's header.
        let coll = "c".repeat(150);
        let docs: Vec<Vec<u8>> = (0..9).map(|i| raw(i, 700 + i as usize)).collect();
        for codec in [Codec::Gzip(1), Codec::None] {
            let (stats, bytes) = run_named(&coll, codec, 1500, docs.clone());
            assert_eq!(stats.parts, 5);
            let mut got = Vec::new();
            let plain: Box<dyn Read> = match codec {
                Codec::Gzip(_) => Box::new(flate2::read::MultiGzDecoder::new(&bytes[..])),
                Codec::None => Box::new(&bytes[..]),
            };
            let mut entries = tar::Archive::new(plain);
            for e in entries.entries().unwrap() {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                assert!(path.starts_with(&format!("shop/{coll}.")), "{path}");
            }
            read_archive(&bytes[..], codec, |e| {
                if let Entry::Part(p) = e {
                    got.extend(documents(&p).unwrap().into_iter().map(<[u8]>::to_vec));
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(got, docs);
        }
    }

    #[test]
    fn a_part_larger_than_a_piece_is_read_back_in_pieces_of_whole_documents() {
        // 12 documents of 1 MiB in one 16 MiB part: read back in pieces of at most 4 MiB.
        let docs: Vec<Vec<u8>> = (0..12).map(|i| raw(i, 1 << 20)).collect();
        let (stats, bytes) = run(Codec::Gzip(1), 16 << 20, docs.clone());
        assert_eq!(stats.parts, 1);
        let mut pieces = Vec::new();
        read_archive(&bytes[..], Codec::Gzip(1), |e| {
            if let Entry::Part(p) = e {
                pieces.push(p);
            }
            Ok(())
        })
        .unwrap();
        assert!(pieces.len() >= 3, "{} piece(s)", pieces.len());
        assert!(pieces.iter().all(|p| p.len() <= PIECE_BYTES));
        let got: Vec<Vec<u8>> = pieces
            .iter()
            .flat_map(|p| documents(p).unwrap().into_iter().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(got, docs);
    }

    #[test]
    fn large_runs_pass_uncopied_between_buffered_headers_in_order() {
        // Runs of 64 KiB and more go to the uploader as they are, smaller ones and the tar
        // headers through the sink's buffer: the stream must still be the tar stream in
        // order, with its checksum and every document's digest.
        let docs: Vec<Vec<u8>> = (0..24)
            .map(|i| raw(i, [70_000, 300, 140_000][i as usize % 3]))
            .collect();
        let (stats, bytes) = run(Codec::None, 200_000, docs.clone());
        assert_eq!(stats.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(stats.size as usize, bytes.len());
        let mut expect = ContentDigest::new();
        docs.iter().for_each(|d| expect.add_document(d));
        assert_eq!(stats.digest, expect);
        let mut got = Vec::new();
        read_archive(&bytes[..], Codec::None, |e| {
            if let Entry::Part(p) = e {
                got.extend(documents(&p).unwrap().into_iter().map(<[u8]>::to_vec));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(got, docs);
        assert!(stats.parts > 5, "{} parts", stats.parts);
    }

    #[test]
    fn a_document_larger_than_the_limit_gets_a_part_of_its_own() {
        let docs = vec![raw(1, 10), raw(2, 5000), raw(3, 10)];
        let (stats, _) = run(Codec::Gzip(1), 1000, docs);
        assert_eq!((stats.count, stats.parts), (3, 3));
    }

    #[test]
    fn reader_that_stops_without_end_cancels() {
        let spec = ArchiveSpec {
            db: "d".into(),
            coll: "c".into(),
            metadata_json: b"{}".to_vec(),
            codec: Codec::None,
            part_limit: 1000,
            mtime: 0,
        };
        let (dtx, drx) = mpsc::channel(1);
        let (otx, mut orx) = mpsc::channel(16);
        dtx.blocking_send(Chunk::Docs(raw(1, 1))).unwrap();
        drop(dtx);
        let r = write_archive(&spec, drx, otx);
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        while orx.blocking_recv().is_some() {}
    }

    #[test]
    fn truncated_gzip_archive_is_an_error() {
        let (_, bytes) = run(Codec::Gzip(6), 1000, (0..10).map(|i| raw(i, 300)).collect());
        let cut = &bytes[..bytes.len() / 2];
        assert!(read_archive(cut, Codec::Gzip(6), |_| Ok(())).is_err());
    }

    #[test]
    fn parallel_gzip_members_decode_as_one_stream() {
        let data: Vec<u8> = (0..1_000_003u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut gz = ParallelGz::new(Vec::new(), 6, 64 * 1024, 3);
        for chunk in data.chunks(10_000) {
            gz.write_all(chunk).unwrap();
        }
        let out = gz.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Several members: a single-member decoder stops after the first.
        let mut first = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut first)
            .unwrap();
        assert_eq!(first.len(), 64 * 1024);
        // No input still makes a valid (empty) gzip stream.
        let empty = ParallelGz::new(Vec::new(), 6, 1024, 2).finish().unwrap();
        let mut none = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..])
            .read_to_end(&mut none)
            .unwrap();
        assert!(none.is_empty() && !empty.is_empty());
    }

    #[test]
    fn codec_parsing() {
        assert_eq!(
            Codec::parse("gzip").unwrap(),
            Codec::Gzip(DEFAULT_GZIP_LEVEL)
        );
        assert_eq!(Codec::parse("gzip:1").unwrap(), Codec::Gzip(1));
        assert_eq!(Codec::parse("none").unwrap(), Codec::None);
        for bad in ["gzip:13", "zip", "gzip:", ""] {
            assert!(Codec::parse(bad).is_err(), "{bad}");
        }
    }
}
