//! The snapshot manifest: `snapshots/<id>/manifest.json`, written last. A snapshot exists
//! if and only if its manifest does. Versioned JSON; BSON values (options, indexes) are
//! stored as canonical extended JSON so no type is lost (an index key of `1` stays an int32).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Everything a snapshot holds and how to check it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Always `"mongokeep-manifest"`.
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The snapshot id, e.g. `20261122T020000Z-7f3a`.
    pub snapshot: String,
    /// When the run started (UTC).
    pub started_at: DateTime<Utc>,
    /// When the last object was stored (UTC).
    pub finished_at: DateTime<Utc>,
    /// The tool that wrote it.
    pub tool: Tool,
    /// The MongoDB deployment backed up.
    pub source: SourceInfo,
    /// What instant the data represents.
    pub consistency: Consistency,
    /// Options the run used.
    pub options: BackupOptionsRecord,
    /// User tags (`backup --tag`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The algorithm of every `content_digest` (see [`crate::digest`]).
    pub digest_algorithm: String,
    /// One entry per collection, view and time-series collection.
    pub collections: Vec<CollectionEntry>,
    /// Sums over `collections` (and the oplog object, in `stored_bytes`).
    pub totals: Totals,
    /// The oplog written during the dump (replica sets only), replayed on restore to make
    /// the snapshot equal the source at `consistency.end_operation_time`. Absent in
    /// manifests written before point-in-time snapshots existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog: Option<OplogRecord>,
}

/// The oplog entries of one stored oplog object (a snapshot's own, or a slice's): raw BSON
/// entries, one after the other, gzip-compressed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OplogRecord {
    /// The object.
    #[serde(flatten)]
    pub object: StoredObject,
    /// Oplog position the capture started from (inclusive): the object holds every entry
    /// of the selected namespaces after it, up to `to`.
    pub from: OpTime,
    /// Last oplog position captured (inclusive).
    pub to: OpTime,
    /// Wall-clock time of the entry at `to`, when the server reported one.
    #[serde(default)]
    pub to_wall: Option<DateTime<Utc>>,
    /// Timestamp of the first entry stored (none when nothing was stored).
    pub first: Option<OpTime>,
    /// Timestamp of the last entry stored.
    pub last: Option<OpTime>,
    /// Entries stored.
    pub entries: u64,
    /// Sum of the entries' BSON sizes.
    pub bson_bytes: u64,
    /// The namespaces (`db.collection`) the entries touch, sorted.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// Name and version of the writer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    /// `mongokeep`.
    pub name: String,
    /// Crate version.
    pub version: String,
}

/// The source deployment, without secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// Connection string with the password removed.
    pub uri: String,
    /// `replica_set`, `standalone` or `sharded`.
    pub topology: String,
    /// `buildInfo.version`.
    pub server_version: String,
    /// Replica set name, when there is one.
    pub replica_set: Option<String>,
}

/// Consistency data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Consistency {
    /// True only when the snapshot equals the source at one instant.
    pub point_in_time: bool,
    /// Plain words on what the data represents.
    pub note: String,
    /// Cluster operation time when the dump started (`{t, i}`), where the server has one.
    pub start_operation_time: Option<OpTime>,
    /// Cluster operation time when the dump ended.
    pub end_operation_time: Option<OpTime>,
}

/// A BSON timestamp. Ordered as the oplog is: by seconds, then increment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpTime {
    /// Seconds since the epoch.
    pub t: u32,
    /// Increment.
    pub i: u32,
}

/// The options that shaped the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupOptionsRecord {
    /// `gzip:N` or `none`.
    pub compression: String,
    /// Bound on the BSON bytes of one archive part.
    pub archive_part_bytes: u64,
    /// `--db` filters.
    pub databases: Vec<String>,
    /// `--ns-include` globs.
    pub ns_include: Vec<String>,
    /// `--ns-exclude` globs.
    pub ns_exclude: Vec<String>,
    /// Whether users and roles were included.
    pub include_users: bool,
}

/// One collection (or view, or time-series collection).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CollectionEntry {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub name: String,
    /// `collection`, `view` or `timeseries`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `listCollections` options, canonical extended JSON.
    pub options: serde_json::Value,
    /// `listIndexes` specs, canonical extended JSON (empty for views).
    pub indexes: Vec<serde_json::Value>,
    /// Collection UUID (hex), when the server reports one.
    pub uuid: Option<String>,
    /// For a time-series collection, the collection whose documents were stored
    /// (`system.buckets.<name>`); otherwise the collection itself.
    pub stored_from: Option<String>,
    /// Documents stored (buckets, for time-series).
    pub count: u64,
    /// Sum of the documents' BSON sizes.
    pub bson_bytes: u64,
    /// Order-independent digest of the stored documents, hex.
    pub content_digest: String,
    /// `gzip` or `none`.
    pub codec: String,
    /// Archive parts (tar entries of documents).
    pub parts: u32,
    /// The objects holding this collection.
    pub objects: Vec<StoredObject>,
}

/// One object in the repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredObject {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the object's bytes, hex.
    pub sha256: String,
}

/// Sums over the collections.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Collections with data (views excluded).
    pub collections: u64,
    /// Views recorded.
    pub views: u64,
    /// Documents stored.
    pub documents: u64,
    /// BSON bytes stored.
    pub bson_bytes: u64,
    /// Bytes of every stored object.
    pub stored_bytes: u64,
}

impl Totals {
    /// Compute the totals of a list of entries.
    pub fn of(collections: &[CollectionEntry]) -> Self {
        let mut t = Totals::default();
        for c in collections {
            if c.kind == "view" {
                t.views += 1;
            } else {
                t.collections += 1;
            }
            t.documents += c.count;
            t.bson_bytes += c.bson_bytes;
            t.stored_bytes += c.objects.iter().map(|o| o.size).sum::<u64>();
        }
        t
    }
}

impl Manifest {
    /// Every stored object of the snapshot: the collections' archives, then the oplog.
    pub fn objects(&self) -> Vec<&StoredObject> {
        let mut out: Vec<&StoredObject> =
            self.collections.iter().flat_map(|c| &c.objects).collect();
        out.extend(self.oplog.as_ref().map(|o| &o.object));
        out
    }

    /// Serialize (pretty, stable field order).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    /// Parse and check the format version.
    ///
    /// # Errors
    /// Not JSON, not a manifest, or a newer format than this build reads.
    pub fn from_json(data: &[u8], what: &str) -> crate::Result<Self> {
        let m: Manifest = serde_json::from_slice(data).map_err(|e| crate::Error::Format {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        if m.format != "mongokeep-manifest" || m.format_version > FORMAT_VERSION {
            return Err(crate::Error::Format {
                what: what.to_string(),
                detail: format!(
                    "format {} version {} (this build reads mongokeep-manifest up to version {FORMAT_VERSION})",
                    m.format, m.format_version
                ),
            });
        }
        Ok(m)
    }
}
