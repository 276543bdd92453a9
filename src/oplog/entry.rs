//! One oplog entry: what it touches, whether a selection keeps it, and what replaying it
//! onto a restore target means.
//!
//! Kept as mongorestore `--oplogReplay` keeps them: no-ops, the `admin`, `config` and
//! `local` databases and the server's internal `system.*` collections are left out;
//! time-series writes (to `system.buckets.<name>`) and view definitions (documents of
//! `system.views`) count as writes to the time-series collection or view they belong to.
//! Transactions (`applyOps` entries) are filtered operation by operation.
//!
//! Replaying an entry is [`steps`] (in `entry/steps.rs`).

use std::collections::BTreeSet;

use mongodb::bson::{RawArrayBuf, RawBsonRef, RawDocument, RawDocumentBuf};

use super::optime::from_ts;
use crate::backup::Selection;
use crate::manifest::OpTime;
use crate::{Error, Result};

const SYSTEM_DBS: [&str; 3] = ["admin", "local", "config"];

/// Which namespaces of the oplog count: every selection given must want them.
#[derive(Debug, Clone, Default)]
pub struct NsFilter {
    selections: Vec<Selection>,
}

impl NsFilter {
    /// A filter passing what every one of `selections` wants.
    pub fn new(selections: Vec<Selection>) -> Self {
        Self { selections }
    }

    /// Whether anything of database `db` can count.
    pub fn wants_db(&self, db: &str) -> bool {
        !SYSTEM_DBS.contains(&db) && self.selections.iter().all(|s| s.wants_db(db))
    }

    /// Whether the collection (or view, or time-series collection) `db.name` counts.
    pub fn wants(&self, db: &str, name: &str) -> bool {
        if !self.wants_db(db) || (name.starts_with("system.") && name != "system.js") {
            return false;
        }
        let ns = format!("{db}.{name}");
        self.selections.iter().all(|s| s.wants_ns(&ns))
    }
}

/// The fields of an entry that decide what happens to it.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// Position in the oplog.
    pub ts: OpTime,
    /// Wall-clock time of the write, when recorded.
    pub wall: Option<chrono::DateTime<chrono::Utc>>,
    /// `i`, `u`, `d`, `c` or `n`.
    pub op: &'a str,
    /// `db.collection`, or `db.$cmd` for commands.
    pub ns: &'a str,
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::Format {
        what: "an oplog entry".into(),
        detail: detail.into(),
    }
}

/// Read the head of an entry.
///
/// # Errors
/// The entry lacks `ts`, `op` or `ns`.
pub fn head(e: &RawDocument) -> Result<Head<'_>> {
    let ts = e
        .get_timestamp("ts")
        .map_err(|err| malformed(err.to_string()))?;
    let op = e.get_str("op").map_err(|err| malformed(err.to_string()))?;
    let ns = e.get_str("ns").unwrap_or("");
    let wall = e.get_datetime("wall").ok().and_then(|d| {
        chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, d.timestamp_millis()).single()
    });
    Ok(Head {
        ts: from_ts(ts),
        wall,
        op,
        ns,
    })
}

/// What a collection name stands for.
enum Logical<'a> {
    /// An ordinary collection (or `system.js`).
    Plain(&'a str),
    /// `system.buckets.<name>`: the data of time-series collection `name`.
    Buckets(&'a str),
    /// `system.views`: the definitions of the database's views.
    Views,
    /// Any other `system.*` collection: server internals.
    Internal,
}

fn logical(coll: &str) -> Logical<'_> {
    if let Some(base) = coll.strip_prefix("system.buckets.") {
        Logical::Buckets(base)
    } else if coll == "system.views" {
        Logical::Views
    } else if coll.starts_with("system.") && coll != "system.js" {
        Logical::Internal
    } else {
        Logical::Plain(coll)
    }
}

/// What an entry touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nothing a restore replays (no-ops, internal collections, index-build bookkeeping).
    Nothing,
    /// A collection, view or time-series collection, by its logical name.
    Coll(String, String),
    /// A database as a whole (`dropDatabase`).
    Db(String),
    /// `renameCollection` from one namespace to another.
    Rename((String, String), (String, String)),
    /// A transaction (`applyOps`): look at each operation inside.
    Txn,
}

fn split_ns(ns: &str) -> (&str, &str) {
    ns.split_once('.').unwrap_or((ns, ""))
}

/// The view named by a `system.views` write: `_id` is `db.view`.
fn view_name<'a>(e: &'a RawDocument, op: &str) -> Option<&'a str> {
    let holder = if op == "u" {
        e.get_document("o2").ok()?
    } else {
        e.get_document("o").ok()?
    };
    let id = holder.get_str("_id").ok()?;
    id.split_once('.').map(|(_, v)| v)
}

/// The first element of a command entry's `o`: the command's name and its value.
fn command(e: &RawDocument) -> Result<(&str, RawBsonRef<'_>)> {
    let o = e
        .get_document("o")
        .map_err(|err| malformed(err.to_string()))?;
    let first = o
        .into_iter()
        .next()
        .ok_or_else(|| malformed("a command entry with an empty `o`"))?;
    first.map_err(|err| malformed(err.to_string()))
}

/// What entry `e` touches.
///
/// # Errors
/// A malformed entry.
pub fn target(e: &RawDocument) -> Result<Target> {
    // Operations inside a transaction have no `ts` of their own: read only `op` and `ns`.
    let op = e.get_str("op").map_err(|err| malformed(err.to_string()))?;
    let (db, coll) = split_ns(e.get_str("ns").unwrap_or(""));
    let named = |db: &str, name: &str| Target::Coll(db.to_string(), name.to_string());
    Ok(match op {
        "i" | "u" | "d" => match logical(coll) {
            Logical::Plain(n) | Logical::Buckets(n) => named(db, n),
            Logical::Views => view_name(e, op).map_or(Target::Nothing, |v| named(db, v)),
            Logical::Internal => Target::Nothing,
        },
        "c" => {
            let (name, value) = command(e)?;
            let arg = value.as_str().unwrap_or_default();
            match name {
                "applyOps" | "commitTransaction" | "abortTransaction" => Target::Txn,
                "dropDatabase" => Target::Db(db.to_string()),
                "renameCollection" => {
                    let to = e
                        .get_document("o")
                        .ok()
                        .and_then(|o| o.get_str("to").ok())
                        .unwrap_or_default();
                    let (fd, fc) = split_ns(arg);
                    let (td, tc) = split_ns(to);
                    Target::Rename(
                        (fd.to_string(), fc.to_string()),
                        (td.to_string(), tc.to_string()),
                    )
                }
                "startIndexBuild" | "abortIndexBuild" => Target::Nothing,
                _ => match logical(arg) {
                    Logical::Plain(n) | Logical::Buckets(n) => named(db, n),
                    // `create system.views` precedes the first view of a database; replay
                    // creates it where a view is written instead, and never drops it.
                    Logical::Views | Logical::Internal => Target::Nothing,
                },
            }
        }
        _ => Target::Nothing,
    })
}

/// Whether `f` keeps what `t` touches; adds the namespaces kept to `touched`.
fn keeps(t: &Target, f: &NsFilter, touched: &mut BTreeSet<String>) -> bool {
    match t {
        Target::Nothing | Target::Txn => false,
        Target::Coll(db, n) => {
            let wanted = f.wants(db, n);
            if wanted {
                touched.insert(format!("{db}.{n}"));
            }
            wanted
        }
        Target::Db(db) => f.wants_db(db),
        Target::Rename((fd, fc), (td, tc)) => {
            let from = f.wants(fd, fc);
            let to = f.wants(td, tc);
            if from {
                touched.insert(format!("{fd}.{fc}"));
            }
            if to {
                touched.insert(format!("{td}.{tc}"));
            }
            from || to
        }
    }
}

/// What capture does with an entry.
#[derive(Debug)]
pub enum Kept {
    /// Store it as it is.
    Whole,
    /// Store this instead: a transaction with the unselected operations removed.
    Rewritten(RawDocumentBuf),
    /// Leave it out.
    Dropped,
}

/// Decide whether capture stores `e` under filter `f`; the namespaces it touches go into
/// `touched`.
///
/// # Errors
/// A malformed entry.
pub fn filter(e: &RawDocument, f: &NsFilter, touched: &mut BTreeSet<String>) -> Result<Kept> {
    let t = target(e)?;
    if t != Target::Txn {
        return Ok(if keeps(&t, f, touched) {
            Kept::Whole
        } else {
            Kept::Dropped
        });
    }
    let (name, value) = command(e)?;
    if name != "applyOps" {
        // commitTransaction / abortTransaction of a prepared transaction: always kept, so
        // replay can refuse it clearly rather than apply half a transaction.
        return Ok(Kept::Whole);
    }
    let RawBsonRef::Array(ops) = value else {
        return Err(malformed("applyOps is not an array"));
    };
    let mut kept = RawArrayBuf::new();
    let (mut all, mut any) = (true, false);
    for op in ops {
        let op = op.map_err(|err| malformed(err.to_string()))?;
        let nested = op
            .as_document()
            .ok_or_else(|| malformed("an applyOps element that is not a document"))?;
        if keeps(&target(nested)?, f, touched) {
            kept.push(nested.to_raw_document_buf());
            any = true;
        } else {
            all = false;
        }
    }
    // The last entry of a multi-entry transaction commits the earlier ones: keep it even
    // when none of its own operations is selected.
    let chained = e
        .get_document("prevOpTime")
        .ok()
        .and_then(|p| p.get_timestamp("ts").ok())
        .is_some_and(|ts| ts.time != 0);
    let partial = is_partial(e);
    Ok(match (all, any || chained || partial) {
        (true, _) => Kept::Whole,
        (false, false) => Kept::Dropped,
        (false, true) => Kept::Rewritten(replace_ops(e, kept)),
    })
}

fn is_partial(e: &RawDocument) -> bool {
    e.get_document("o")
        .ok()
        .and_then(|o| o.get_bool("partialTxn").ok())
        .unwrap_or(false)
}

/// `e` with `o.applyOps` replaced.
fn replace_ops(e: &RawDocument, ops: RawArrayBuf) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for el in e.into_iter().flatten() {
        let (k, v) = el;
        if k == "o" {
            let mut o = RawDocumentBuf::new();
            o.append("applyOps", ops.clone());
            if let Some(d) = v.as_document() {
                for (k2, v2) in d.into_iter().flatten().skip(1) {
                    o.append(k2, v2.to_raw_bson());
                }
            }
            out.append("o", o);
        } else {
            out.append(k, v.to_raw_bson());
        }
    }
    out
}

mod steps;
pub use steps::{steps, Step, TxnKey};

#[cfg(test)]
mod tests;
