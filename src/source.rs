//! MongoDB access: connecting (with errors that say whether the server is unreachable or
//! refused), describing the deployment, enumerating databases, collections and indexes,
//! and streaming a collection's documents as raw BSON from the server's own batches.

use std::time::Duration;

use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document, RawBsonRef};
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
pub use mongodb::raw_batch_cursor::RawBatch;
use mongodb::raw_batch_cursor::RawBatchCursor;
use mongodb::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::Chunk;
use crate::manifest::{OpTime, SourceInfo};
use crate::redact::{redact_uri, register_secret, uri_password};
use crate::{Error, Result};

/// Documents are forwarded to the archive writer in chunks of about this many bytes.
const CHUNK_BYTES: usize = 1 << 20;

/// A connected MongoDB deployment.
#[derive(Debug, Clone)]
pub struct Source {
    client: Client,
    /// What the manifest records about it.
    pub info: SourceInfo,
}

/// A collection larger than twice this is read back by verification in `_id` ranges of
/// about this size; `MONGOKEEP_RANGE_MIB` overrides it.
pub const RANGE_BYTES: u64 = 64 << 20;

/// [`RANGE_BYTES`], or `MONGOKEEP_RANGE_MIB` MiB (at least 1) when set.
pub fn range_bytes() -> u64 {
    std::env::var("MONGOKEEP_RANGE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(RANGE_BYTES, |m| m.max(1) << 20)
}

/// A range of a collection's `_id` index: `min` inclusive, `max` exclusive, `None` open.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdRange {
    /// First `_id` of the range (`{_id: value}`).
    pub min: Option<Document>,
    /// First `_id` after the range.
    pub max: Option<Document>,
}

impl IdRange {
    /// The ranges between consecutive split keys, covering the whole index.
    pub fn between(splits: Vec<Document>) -> Vec<IdRange> {
        let mut out = Vec::with_capacity(splits.len() + 1);
        let mut min = None;
        for s in splits {
            out.push(IdRange {
                min: min.take(),
                max: Some(s.clone()),
            });
            min = Some(s);
        }
        out.push(IdRange { min, max: None });
        out
    }
}

/// Part of a collection in natural order (the order of the server's record ids): the
/// records after record id `after` (`0`: from the first record), at most `limit` of them
/// (`None`: to the end). Read with the server's resumable collection scan
/// (`$_resumeAfter`, MongoDB 4.4 and later), which starts at a record id without reading
/// the records before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRange {
    /// Record id the range starts after; `0` for the first record.
    pub after: i64,
    /// Records at most; `None` to the end.
    pub limit: Option<i64>,
}

impl RecordRange {
    /// `parts` ranges of about equal record counts for a collection whose record ids are
    /// expected to run from 1 to `count`: each range starts after the last record id of
    /// the one before it; the last one runs to the end.
    pub fn split(count: u64, parts: usize) -> Vec<RecordRange> {
        let parts = parts.max(1) as u64;
        let step = count.div_ceil(parts).max(1) as i64;
        let mut out = Vec::new();
        let mut after = 0i64;
        while (after as u64) + (step as u64) < count {
            out.push(RecordRange {
                after,
                limit: Some(step),
            });
            after += step;
        }
        out.push(RecordRange { after, limit: None });
        out
    }

    /// The `find` command that reads this range of `coll`, asking for the record id the
    /// server stopped at.
    fn find(&self, coll: &str) -> Document {
        let mut cmd = doc! {
            "find": coll,
            "filter": {},
            "hint": {"$natural": 1},
            "$_requestResumeToken": true,
        };
        if self.after > 0 {
            cmd.insert("$_resumeAfter", doc! {"$recordId": self.after});
        }
        if let Some(limit) = self.limit {
            cmd.insert("limit", limit);
        }
        cmd
    }

    /// Whether ranges that were read tile the collection, each given with the last record
    /// id it read: the first starts at the first record, the last runs to the end, and
    /// each one ended on the record id the next one starts after (a range reads every
    /// record between its start and its last one). Ids missing from the expected run (a
    /// record deleted, an insert retried) break the chain; the ranges' documents then
    /// cannot be trusted to be each read once.
    pub fn tile(read: &[(RecordRange, Option<i64>)]) -> bool {
        let mut sorted: Vec<_> = read.to_vec();
        sorted.sort_by_key(|(r, _)| r.after);
        let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
            return false;
        };
        first.0.after == 0
            && last.0.limit.is_none()
            && sorted
                .windows(2)
                .all(|w| w[0].0.limit.is_some() && w[0].1 == Some(w[1].0.after))
    }
}

/// The record id of a batch's `postBatchResumeToken` (`{$recordId: n}`), if it has one.
pub fn resume_record_id(reply: &mongodb::bson::RawDocument) -> Option<i64> {
    let token = reply
        .get_document("cursor")
        .ok()?
        .get_document("postBatchResumeToken")
        .ok()?;
    match token.get("$recordId").ok()?? {
        RawBsonRef::Int64(n) => Some(n),
        RawBsonRef::Int32(n) => Some(i64::from(n)),
        _ => None,
    }
}

/// One entry of `listCollections`.
#[derive(Debug, Clone)]
pub struct CollectionSpec {
    /// Database.
    pub db: String,
    /// Name.
    pub name: String,
    /// `collection`, `view` or `timeseries`.
    pub kind: String,
    /// The options document.
    pub options: Document,
    /// UUID as hex, when reported.
    pub uuid: Option<String>,
}

/// The order in which to start work on items of these sizes (`None`: not known): largest
/// first, so that with several at once the largest does not start last and run on alone
/// (the others, listed order, after those of known size).
pub fn largest_first(sizes: &[Option<u64>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    order
}

/// Whether [`Source::connect`] keeps a handle on each client for [`shutdown_clients`] (the
/// binary asks for it; tests and library users drop their clients as they go).
static TRACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CLIENTS: std::sync::Mutex<Vec<Client>> = std::sync::Mutex::new(Vec::new());

/// Keep every client this process opens from now on, for [`shutdown_clients`].
pub fn track_clients() {
    TRACK.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Shut down every tracked client while the runtime still runs: sessions end and pools
/// close cleanly (a client dropped while the runtime stopped made the driver panic now and
/// then, after the work was done). Waits at most 5 s for cursors still open, then lets go.
pub async fn shutdown_clients() {
    let clients = std::mem::take(&mut *CLIENTS.lock().unwrap_or_else(|e| e.into_inner()));
    for c in clients {
        let graceful = c.clone().shutdown();
        if tokio::time::timeout(Duration::from_secs(5), graceful)
            .await
            .is_err()
        {
            c.shutdown().immediate(true).await;
        }
    }
}

impl Source {
    /// Connect and check that the server answers and accepts the credentials.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URI, [`Error::SourceUnreachable`] when no server
    /// answers within the selection timeout, [`Error::SourceRefused`] for bad credentials.
    pub async fn connect(uri: &str) -> Result<Self> {
        if let Some(pw) = uri_password(uri) {
            register_secret(&pw);
        }
        let target = redact_uri(uri);
        let mut opts = ClientOptions::parse(uri).await.map_err(|e| {
            // Not even the redacted URI: one the driver cannot parse may hold its password
            // where no parser of ours would look for it.
            // The driver's reason quotes pieces of the URI: with credentials in it, a piece
            // of the password.
            let why = if uri.contains('@') {
                "its reason is not shown, as it may quote the password".to_string()
            } else {
                crate::redact::scrub(&first_line(&e.to_string()))
            };
            Error::Config(format!(
                "the MongoDB URI is not valid: {why}\n  fix: correct the URI (a password must percent-encode @ / : ? # [ ] and %)"
            ))
        })?;
        if opts.server_selection_timeout.is_none() {
            opts.server_selection_timeout = Some(Duration::from_secs(10));
        }
        if opts.connect_timeout.is_none() {
            opts.connect_timeout = Some(Duration::from_secs(5));
        }
        opts.app_name.get_or_insert_with(|| "mongokeep".to_string());
        let client = Client::with_options(opts).map_err(|e| classify(&target, "connecting", e))?;
        if TRACK.load(std::sync::atomic::Ordering::Relaxed) {
            CLIENTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(client.clone());
        }
        let admin = client.database("admin");
        let hello = admin
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| classify(&target, "connecting", e))?;
        // hello needs no authentication; listDatabases does, so credentials are checked now
        // rather than in the middle of a run.
        admin
            .run_command(doc! { "listDatabases": 1, "nameOnly": true })
            .await
            .map_err(|e| classify(&target, "listing databases", e))?;
        let build = admin
            .run_command(doc! { "buildInfo": 1 })
            .await
            .map_err(|e| classify(&target, "reading buildInfo", e))?;
        let replica_set = hello.get_str("setName").ok().map(str::to_string);
        let topology = if hello.get_str("msg") == Ok("isdbgrid") {
            "sharded"
        } else if replica_set.is_some() {
            "replica_set"
        } else {
            "standalone"
        };
        Ok(Self {
            client,
            info: SourceInfo {
                uri: target,
                topology: topology.to_string(),
                server_version: build.get_str("version").unwrap_or("unknown").to_string(),
                replica_set,
            },
        })
    }

    /// The driver's client (restore and tests use it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn err(&self, context: impl Into<String>, e: mongodb::error::Error) -> Error {
        let context = context.into();
        classify(&self.info.uri, &context, e)
    }

    /// The cluster's latest operation time, where the topology has one (replica sets).
    pub async fn operation_time(&self) -> Result<Option<OpTime>> {
        let r = self
            .client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| self.err("reading the operation time", e))?;
        let ts = r
            .get_document("lastWrite")
            .ok()
            .and_then(|lw| lw.get_document("opTime").ok())
            .and_then(|ot| ot.get_timestamp("ts").ok())
            .or_else(|| r.get_timestamp("operationTime").ok());
        Ok(ts.map(|t| OpTime {
            t: t.time,
            i: t.increment,
        }))
    }

    /// Names of every database, sorted.
    pub async fn list_databases(&self) -> Result<Vec<String>> {
        let mut names = self
            .client
            .list_database_names()
            .await
            .map_err(|e| self.err("listing databases", e))?;
        names.sort();
        Ok(names)
    }

    /// Every collection, view and time-series collection of `db`, sorted by name.
    pub async fn list_collections(&self, db: &str) -> Result<Vec<CollectionSpec>> {
        self.list_collections_where(db, doc! {}).await
    }

    /// [`Source::list_collections`] restricted by a `listCollections` filter (for example
    /// `{name: "orders"}`).
    ///
    /// # Errors
    /// As [`Source::list_collections`].
    pub async fn list_collections_where(
        &self,
        db: &str,
        filter: Document,
    ) -> Result<Vec<CollectionSpec>> {
        let mut cursor = self
            .client
            .database(db)
            .run_cursor_command(doc! { "listCollections": 1, "filter": filter })
            .await
            .map_err(|e| self.err(format!("listing collections of {db}"), e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.next().await {
            let d = d.map_err(|e| self.err(format!("listing collections of {db}"), e))?;
            let uuid = match d.get_document("info").ok().and_then(|i| i.get("uuid")) {
                Some(Bson::Binary(b)) => Some(hex::encode(&b.bytes)),
                _ => None,
            };
            out.push(CollectionSpec {
                db: db.to_string(),
                name: d.get_str("name").unwrap_or_default().to_string(),
                kind: d.get_str("type").unwrap_or("collection").to_string(),
                options: d.get_document("options").cloned().unwrap_or_default(),
                uuid,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every index of a collection, as the server describes it.
    pub async fn list_indexes(&self, db: &str, coll: &str) -> Result<Vec<Document>> {
        let mut cursor = self
            .client
            .database(db)
            .run_cursor_command(doc! { "listIndexes": coll })
            .await
            .map_err(|e| self.err(format!("listing indexes of {db}.{coll}"), e))?;
        let mut out = Vec::new();
        while let Some(d) = cursor.next().await {
            out.push(d.map_err(|e| self.err(format!("listing indexes of {db}.{coll}"), e))?);
        }
        Ok(out)
    }

    /// Split keys that cut `db.coll`'s `_id` index into pieces of about `chunk_bytes`
    /// (the server's `splitVector`). Empty when the server cannot say (no privilege, no
    /// `_id` index, a view): the caller then reads the collection with one cursor.
    pub async fn split_points(&self, db: &str, coll: &str, chunk_bytes: u64) -> Vec<Document> {
        let cmd = doc! {
            "splitVector": format!("{db}.{coll}"),
            "keyPattern": {"_id": 1},
            // The server takes 1 MiB to 1 GiB.
            "maxChunkSizeBytes": chunk_bytes.clamp(1 << 20, 1 << 30) as i64,
        };
        match self.client.database(db).run_command(cmd).await {
            Ok(reply) => reply
                .get_array("splitKeys")
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_document().cloned())
                        .collect()
                })
                .unwrap_or_default(),
            Err(e) => {
                tracing::debug!(ns = %format!("{db}.{coll}"), error = %e, "splitVector refused; one cursor");
                Vec::new()
            }
        }
    }

    /// Stream every document of `db.coll` as raw BSON into `tx`, in chunks of whole
    /// documents, then [`Chunk::End`]. With `ahead`, the server's next batch is asked for
    /// while this one is copied out ([`Batches`]). Stops with [`Error::Cancelled`] when
    /// `cancel` fires.
    ///
    /// # Errors
    /// The server failed or went away; the receiver hung up ([`Error::Cancelled`]).
    pub async fn stream_documents(
        &self,
        db: &str,
        coll: &str,
        tx: mpsc::Sender<Chunk>,
        cancel: CancellationToken,
        ahead: bool,
    ) -> Result<()> {
        // The driver's batches are up to 16 MiB; the archive writer wants chunks of about
        // CHUNK_BYTES, so the documents are copied into those as they come.
        let mut batches = Batches::open(self, db, coll, &cancel, ahead).await?;
        let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
        while let Some(batch) = batches.next(self, db, coll, &cancel).await? {
            for bytes in batch_documents(&batch, db, coll)? {
                let bytes = bytes?;
                if !chunk.is_empty() && chunk.len() + bytes.len() > CHUNK_BYTES {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
                    tx.send(Chunk::Docs(full))
                        .await
                        .map_err(|_| Error::Cancelled)?;
                }
                chunk.extend_from_slice(bytes);
            }
        }
        if !chunk.is_empty() {
            tx.send(Chunk::Docs(chunk))
                .await
                .map_err(|_| Error::Cancelled)?;
        }
        tx.send(Chunk::End).await.map_err(|_| Error::Cancelled)
    }

    /// The server's own raw batches of one `_id` range (the whole collection, in natural
    /// order, when the range is unbounded), each sent on `tx` as it arrives; the next
    /// batch is asked for while the receiver works on this one.
    ///
    /// # Errors
    /// The server failed ([`classify`]), or the receiver went away or `cancel` fired
    /// ([`Error::Cancelled`]).
    pub async fn range_batches(
        &self,
        db: &str,
        coll: &str,
        range: &IdRange,
        tx: mpsc::Sender<RawBatch>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut cursor = self.range_cursor(db, coll, range, cancel).await?;
        self.send_batches(&mut cursor, db, coll, &tx, cancel)
            .await
            .map(drop)
    }

    /// Send every batch of `cursor` on `tx`; returns the record id of the last batch's
    /// `postBatchResumeToken`, when the cursor was asked for one.
    async fn send_batches(
        &self,
        cursor: &mut RawBatchCursor,
        db: &str,
        coll: &str,
        tx: &mpsc::Sender<RawBatch>,
        cancel: &CancellationToken,
    ) -> Result<Option<i64>> {
        let mut last = None;
        while let Some(batch) = self.next_batch(cursor, db, coll, cancel).await? {
            last = resume_record_id(batch.as_raw_document()).or(last);
            tx.send(batch).await.map_err(|_| Error::Cancelled)?;
        }
        Ok(last)
    }

    /// Stream the raw batches of one [`RecordRange`] of `db.coll` into `tx`; returns the
    /// last record id the server reported (`None` if it reported none).
    ///
    /// # Errors
    /// The server refused the range (a record id that does not exist, a collection whose
    /// record ids are not integers, a server older than 4.4), failed or went away; the
    /// receiver hung up ([`Error::Cancelled`]).
    pub async fn record_batches(
        &self,
        db: &str,
        coll: &str,
        range: RecordRange,
        tx: mpsc::Sender<RawBatch>,
        cancel: &CancellationToken,
    ) -> Result<Option<i64>> {
        let database = self.client.database(db);
        let mut cursor = tokio::select! {
            r = database.run_cursor_command(range.find(coll)).batch() => r.map_err(|e| self.err(format!("reading {db}.{coll}"), e))?,
            _ = cancel.cancelled() => return Err(Error::Cancelled),
        };
        self.send_batches(&mut cursor, db, coll, &tx, cancel).await
    }

    /// The BSON bytes of `db.coll`'s documents as the server counts them (`$collStats`
    /// storage size before compression); `None` when the server refuses (a user without
    /// the `collStats` action) or gives none.
    pub async fn data_size(&self, db: &str, coll: &str) -> Option<u64> {
        use futures::TryStreamExt;
        let pipeline = [doc! { "$collStats": { "storageStats": { "scale": 1 } } }];
        let run = async {
            let mut cursor = self
                .client
                .database(db)
                .collection::<Document>(coll)
                .aggregate(pipeline)
                .await?;
            cursor.try_next().await
        };
        match run.await {
            Ok(Some(stats)) => {
                let size = stats.get_document("storageStats").ok()?.get("size")?;
                match size {
                    Bson::Int32(n) => u64::try_from(*n).ok(),
                    Bson::Int64(n) => u64::try_from(*n).ok(),
                    Bson::Double(n) if *n >= 0.0 => Some(*n as u64),
                    _ => None,
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(ns = %format!("{db}.{coll}"), error = %e, "no collection size");
                None
            }
        }
    }

    /// Whether `db.coll`'s record ids look like those of a copy just loaded: `count`
    /// records (the server's own count) and record id `count` the last. Two cheap
    /// commands; `false` when the server refuses either.
    pub async fn records_dense(&self, db: &str, coll: &str, count: u64) -> bool {
        let Ok(last @ 1..) = i64::try_from(count) else {
            return false;
        };
        let database = self.client.database(db);
        let estimated = database
            .collection::<Document>(coll)
            .estimated_document_count()
            .await;
        if !matches!(estimated, Ok(n) if n == count) {
            return false;
        }
        // Nothing after record id `count` (and the server refuses a record id that
        // does not exist).
        let mut probe = RecordRange {
            after: last,
            limit: Some(1),
        }
        .find(coll);
        probe.insert("singleBatch", true);
        match database.run_command(probe).await {
            Ok(reply) => reply
                .get_document("cursor")
                .and_then(|c| c.get_array("firstBatch"))
                .is_ok_and(|b| b.is_empty()),
            Err(e) => {
                tracing::debug!(ns = %format!("{db}.{coll}"), error = %e, "no resumable scan");
                false
            }
        }
    }

    /// A raw-batch cursor over one `_id` range: bounds on the `_id` index, so documents
    /// whose `_id`s have different types are not lost to type bracketing; natural order
    /// when the range is unbounded.
    async fn range_cursor(
        &self,
        db: &str,
        coll: &str,
        range: &IdRange,
        cancel: &CancellationToken,
    ) -> Result<RawBatchCursor> {
        let collection = self.client.database(db).collection::<Document>(coll);
        let mut find = collection.find(doc! {});
        if range.min.is_some() || range.max.is_some() {
            find = find.hint(mongodb::options::Hint::Keys(doc! {"_id": 1}));
            if let Some(min) = &range.min {
                find = find.min(min.clone());
            }
            if let Some(max) = &range.max {
                find = find.max(max.clone());
            }
        }
        tokio::select! {
            r = find.batch() => r.map_err(|e| self.err(format!("reading {db}.{coll}"), e)),
            _ = cancel.cancelled() => Err(Error::Cancelled),
        }
    }

    async fn next_batch(
        &self,
        cursor: &mut RawBatchCursor,
        db: &str,
        coll: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<RawBatch>> {
        tokio::select! {
            b = cursor.next() => b.transpose().map_err(|e| self.err(format!("reading {db}.{coll}"), e)),
            _ = cancel.cancelled() => Err(Error::Cancelled),
        }
    }
}

/// The raw batches of one natural-order cursor over a whole collection, for the backup.
///
/// The driver asks the server for the next batch only when this one has been taken, and
/// takes each reply in by zeroing a buffer and copying it once more; the server's one
/// scanning thread waits meanwhile. Read inline, a reader that also copies each batch out
/// keeps the server waiting for that too: the 2 GiB collection alone was backed up without
/// compression in 4.0-4.4 s against 3.1-3.4 s for its bare scan. `Ahead`, a task of its own
/// asks for the next batch as soon as this one is taken, one batch ahead, no more: 4.0-4.1 s,
/// for about 70 MiB more peak memory (193-205 MiB against 130-137), so it is kept for the
/// uncompressed backup, where the reader is the bound (with gzip, compression is, and
/// reading ahead only held 90 MiB more). Smaller batches (2,000 or 5,000 documents) held
/// less memory but were slower (4.8-5.5 s).
enum Batches {
    Inline(Box<RawBatchCursor>),
    /// Batches from the reader task (stopped when this is dropped: a backup that stops
    /// early stops its reader too).
    Ahead(
        mpsc::Receiver<RawBatch>,
        tokio_util::task::AbortOnDropHandle<Result<()>>,
    ),
    /// The reader task has ended and was waited for.
    Ended,
}

impl Batches {
    async fn open(
        source: &Source,
        db: &str,
        coll: &str,
        cancel: &CancellationToken,
        ahead: bool,
    ) -> Result<Self> {
        let whole = IdRange::default();
        if !ahead {
            return Ok(Self::Inline(Box::new(
                source.range_cursor(db, coll, &whole, cancel).await?,
            )));
        }
        let (tx, rx) = mpsc::channel::<RawBatch>(1);
        let (source, db, coll, cancel) = (
            source.clone(),
            db.to_string(),
            coll.to_string(),
            cancel.clone(),
        );
        let fetch = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut cursor = source.range_cursor(&db, &coll, &whole, &cancel).await?;
            loop {
                // The slot is free once the last batch is taken: only then the next.
                let slot = tx.reserve().await.map_err(|_| Error::Cancelled)?;
                match source.next_batch(&mut cursor, &db, &coll, &cancel).await? {
                    Some(batch) => slot.send(batch),
                    None => return Ok(()),
                }
            }
        }));
        Ok(Self::Ahead(rx, fetch))
    }

    /// The next batch; `None` at the end.
    async fn next(
        &mut self,
        source: &Source,
        db: &str,
        coll: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<RawBatch>> {
        match self {
            Self::Inline(cursor) => source.next_batch(cursor, db, coll, cancel).await,
            Self::Ahead(rx, _) => {
                if let Some(batch) = rx.recv().await {
                    return Ok(Some(batch));
                }
                // The reader ended: at the end of the cursor, or on an error.
                let Self::Ahead(_, fetch) = std::mem::replace(self, Self::Ended) else {
                    unreachable!("matched above")
                };
                let ended = fetch.await.unwrap_or_else(|e| {
                    Err(Error::Format {
                        what: format!("the reader of {db}.{coll}"),
                        detail: e.to_string(),
                    })
                });
                ended.map(|()| None)
            }
            Self::Ended => Ok(None),
        }
    }
}

/// Run `read` on each range in a task of its own (so that the ranges are decoded and hashed
/// on more than one core), `readers` at once. Returns the results in the order the ranges
/// ended; if any failed, the error that explains the others ([`crate::error::root_cause`]).
///
/// # Errors
/// A range's reader failed, or its task panicked ([`Error::Format`]).
pub async fn for_each_range<R, T, F, Fut>(ranges: Vec<R>, readers: usize, read: F) -> Result<Vec<T>>
where
    F: Fn(R) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let results: Vec<Result<T>> = futures::stream::iter(ranges)
        .map(|range| {
            let task = tokio::spawn(read(range));
            async move {
                task.await.unwrap_or_else(|e| {
                    Err(Error::Format {
                        what: "a range reader task".into(),
                        detail: e.to_string(),
                    })
                })
            }
        })
        .buffer_unordered(readers.max(1))
        .collect()
        .await;
    crate::error::all_or_root_cause(results)
}

/// The documents of a raw batch of `db.coll`, as raw BSON.
///
/// # Errors
/// The batch is not an array of documents ([`Error::Format`]).
pub fn batch_documents<'a>(
    batch: &'a RawBatch,
    db: &str,
    coll: &str,
) -> Result<impl Iterator<Item = Result<&'a [u8]>> + 'a> {
    let what = format!("a batch of {db}.{coll}");
    let docs = batch.doc_slices().map_err(|e| Error::Format {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    Ok(ArrayDocuments::new(docs.as_bytes()).map(move |item| {
        item.map_err(|detail| Error::Format {
            what: what.clone(),
            detail: detail.into(),
        })
    }))
}

/// The documents of a BSON array, walked by hand: type byte, key, length. bson's own
/// iterator also decodes each key and builds an element for each document, which measured
/// 3-4 % of a read-back's CPU for nothing the caller uses.
struct ArrayDocuments<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ArrayDocuments<'a> {
    /// `array`: a whole BSON array (length, elements, the final 0), as bson has checked it.
    fn new(array: &'a [u8]) -> Self {
        let end = array.len().saturating_sub(1).max(4).min(array.len());
        Self {
            bytes: &array[..end],
            pos: 4.min(end),
        }
    }
}

impl<'a> Iterator for ArrayDocuments<'a> {
    type Item = std::result::Result<&'a [u8], &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.pos..).filter(|r| !r.is_empty())?;
        // On an error the walk ends: nothing after it can be found.
        self.pos = self.bytes.len();
        if rest[0] != 0x03 {
            return Some(Err("an element that is not a document"));
        }
        let Some(key) = rest[1..].iter().position(|&b| b == 0) else {
            return Some(Err("an element key without its end"));
        };
        let doc = &rest[key + 2..];
        let len = match doc.get(..4) {
            Some(l) => i32::from_le_bytes([l[0], l[1], l[2], l[3]]),
            None => return Some(Err("a document cut short")),
        };
        let Some(d) = usize::try_from(len)
            .ok()
            .filter(|&n| n >= 5)
            .and_then(|n| doc.get(..n))
            .filter(|d| d[d.len() - 1] == 0)
        else {
            return Some(Err("a document whose length does not fit the batch"));
        };
        self.pos = self.bytes.len() - doc.len() + d.len();
        Some(Ok(d))
    }
}

/// Map a driver error to the error a person can act on.
pub fn classify(target: &str, context: &str, e: mongodb::error::Error) -> Error {
    let detail = crate::redact::scrub(&first_line(&e.to_string()));
    match *e.kind {
        // Mid-run, say what was being done (which collection) when the server went away.
        ErrorKind::ServerSelection { .. } => Error::SourceUnreachable {
            target: target.to_string(),
            detail: if context == "connecting" {
                detail
            } else {
                format!("while {context}: {detail}")
            },
        },
        ErrorKind::Authentication { .. } => Error::SourceRefused {
            target: target.to_string(),
            detail,
        },
        ErrorKind::Command(ref c) if matches!(c.code, 13 | 18 | 8000) => Error::SourceRefused {
            target: target.to_string(),
            detail,
        },
        ErrorKind::InvalidArgument { .. } => Error::Config(format!("MongoDB {target}: {detail}")),
        _ => Error::Source {
            context: format!("{context} ({target})"),
            detail,
        },
    }
}

/// The useful part of a driver error's text: without its `Kind: ` label, the topology a
/// server-selection error prints whole, and the trailing `labels`, `source` and `server
/// response` fields.
fn first_line(s: &str) -> String {
    let full = s;
    let s = s.strip_prefix("Kind: ").unwrap_or(s);
    let head = [". Topology: ", ", Topology: ", ", labels: "]
        .iter()
        .fold(s, |s, cut| s.split(cut).next().unwrap_or(s));
    // The topology holds each server's own error (connection refused, a certificate, a
    // name that does not resolve): keep the first, without its labels.
    let cause = full
        .split_once("Error: Kind: ")
        .map(|(_, e)| e.split(", labels: ").next().unwrap_or(e));
    let out = match cause {
        Some(c) if !head.contains(c) => format!("{head} ({c})"),
        _ => head.to_string(),
    };
    out.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::{largest_first, ArrayDocuments, RecordRange};
    use mongodb::bson::doc;

    #[test]
    fn driver_errors_lose_their_topology_and_labels() {
        let e = "Kind: Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:28799, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {} } ] }, labels: {}, source: None, server response: None";
        assert_eq!(
            super::first_line(e),
            "Server selection timeout: No available servers (I/O error: Connection refused (os error 111))"
        );
        assert_eq!(
            super::first_line("Kind: An invalid argument was provided: password must be URL encoded, labels: {}, source: None, server response: None"),
            "An invalid argument was provided: password must be URL encoded"
        );
    }

    #[test]
    fn work_starts_largest_first_and_unknown_sizes_last_in_listed_order() {
        let sizes = [
            Some(10),
            None,
            Some(2_000),
            Some(10),
            None,
            Some(0),
            Some(700),
        ];
        assert_eq!(largest_first(&sizes), [2, 6, 0, 3, 5, 1, 4]);
        assert!(largest_first(&[]).is_empty());
    }

    fn r(after: i64, limit: Option<i64>) -> RecordRange {
        RecordRange { after, limit }
    }

    #[test]
    fn array_documents_are_the_documents_bson_finds_and_a_damaged_array_is_refused() {
        use mongodb::bson::{rawdoc, RawArrayBuf, RawDocumentBuf};
        let mut arr = RawArrayBuf::new();
        for i in 0..300i32 {
            let pad = "x".repeat((i as usize * 37) % 5000);
            arr.push(rawdoc! {"_id": i, "pad": pad, "sub": {"a": [1, 2, {"b": "c"}]}});
        }
        let bytes = arr.as_bytes().to_vec();
        let ours: Vec<&[u8]> = ArrayDocuments::new(&bytes).map(|d| d.unwrap()).collect();
        let theirs: Vec<&[u8]> = arr
            .into_iter()
            .map(|e| e.unwrap().as_document().unwrap().as_bytes())
            .collect();
        assert_eq!(ours.len(), 300);
        assert_eq!(ours, theirs);
        assert_eq!(
            ArrayDocuments::new(RawArrayBuf::new().as_bytes()).count(),
            0
        );

        // An element that is not a document: refused, and the walk ends there.
        let mut mixed = RawArrayBuf::new();
        mixed.push(rawdoc! {"a": 1});
        mixed.push(5i32);
        mixed.push(rawdoc! {"b": 2});
        let got: Vec<_> = ArrayDocuments::new(mixed.as_bytes()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err("an element that is not a document"));

        // A document length that runs past the array, or cut in its header.
        let one = RawDocumentBuf::from_document(&doc! {"a": "bcd"}).unwrap();
        let mut a = RawArrayBuf::new();
        a.push(one.clone());
        let mut long = a.as_bytes().to_vec();
        long[7] = 0x7f; // the document's length, after the array's (4), type (1) and key "0\0" (2)
        assert_eq!(
            ArrayDocuments::new(&long).collect::<Vec<_>>(),
            [Err("a document whose length does not fit the batch")]
        );
        let short = &a.as_bytes()[..9];
        assert_eq!(ArrayDocuments::new(short).count(), 1);
        assert!(ArrayDocuments::new(short).next().unwrap().is_err());
    }

    #[test]
    fn record_ranges_split_a_run_of_ids_into_parts_that_end_where_the_next_starts() {
        assert_eq!(
            RecordRange::split(10, 3),
            vec![r(0, Some(4)), r(4, Some(4)), r(8, None)]
        );
        assert_eq!(
            RecordRange::split(9, 3),
            vec![r(0, Some(3)), r(3, Some(3)), r(6, None)]
        );
        assert_eq!(RecordRange::split(2, 8), vec![r(0, Some(1)), r(1, None)]);
        assert_eq!(RecordRange::split(0, 4), vec![r(0, None)]);
        assert_eq!(RecordRange::split(5, 1), vec![r(0, None)]);
    }

    #[test]
    fn record_ranges_tile_only_when_each_ends_on_the_next_start() {
        let parts = RecordRange::split(10, 3);
        let ends = |lasts: [Option<i64>; 3]| -> Vec<_> {
            // in the order the readers ended, not the ranges' order
            vec![
                (parts[2], lasts[2]),
                (parts[0], lasts[0]),
                (parts[1], lasts[1]),
            ]
        };
        assert!(RecordRange::tile(&ends([Some(4), Some(8), Some(10)])));
        // the last part runs to the end, wherever that is
        assert!(RecordRange::tile(&ends([Some(4), Some(8), Some(12)])));
        // a gap in the ids: the first part read past the second's start (read twice)
        assert!(!RecordRange::tile(&ends([Some(5), Some(8), Some(10)])));
        // the first part ended early (a shorter collection): records 4..=8 would be missed
        // only if the ids were sparse; it does not tile either way
        assert!(!RecordRange::tile(&ends([Some(3), Some(8), Some(10)])));
        assert!(!RecordRange::tile(&ends([None, Some(8), Some(10)])));
        // a part missing altogether
        assert!(!RecordRange::tile(&[
            (parts[0], Some(4)),
            (parts[2], Some(10))
        ]));
        assert!(!RecordRange::tile(&[]));
        // the first part must start at the first record, the last run to the end
        assert!(!RecordRange::tile(&[
            (r(1, Some(3)), Some(4)),
            (r(4, None), Some(9))
        ]));
        assert!(!RecordRange::tile(&[
            (r(0, Some(4)), Some(4)),
            (r(4, Some(4)), Some(8))
        ]));
    }
}
