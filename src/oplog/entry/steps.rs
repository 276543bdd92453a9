//! Replaying one entry: the [`Step`]s that bring a restore target forward by it.
//!
//! Writes become operations for the `applyOps` command, keeping only `op`, `ns`, `o` and
//! `o2` (so the target's own collection UUIDs apply, and no session fields), renamed with
//! the restore's `--ns-from`/`--ns-to`. Index builds become `createIndexes` commands
//! (`applyOps` refuses them); `startIndexBuild`, `abortIndexBuild` and `dropDatabase` (whose
//! collections' drops precede it) become nothing. A rename leaving the selection is a drop;
//! one entering it cannot be replayed. Prepared transactions (sharded clusters) are refused.

use std::collections::BTreeSet;

use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};

use super::{
    command, head, keeps, logical, malformed, split_ns, target, Head, Logical, NsFilter, Target,
};
use crate::oplog::optime::describe;
use crate::restore::NsMap;
use crate::{Error, Result};

/// A transaction's identity: session id bytes and transaction number.
pub type TxnKey = (Vec<u8>, i64);

fn txn_key(e: &RawDocument) -> TxnKey {
    let id = e
        .get_document("lsid")
        .ok()
        .and_then(|l| l.get_binary("id").ok())
        .map(|b| b.bytes.to_vec())
        .unwrap_or_default();
    (id, e.get_i64("txnNumber").unwrap_or_default())
}

/// What replaying one entry does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// One operation for the `applyOps` command.
    Apply(RawDocumentBuf),
    /// A command `applyOps` does not take, run on database `db`.
    Command { db: String, command: Document },
    /// The operations of a transaction, applied together; `partial` when later entries of
    /// the same transaction (same key) follow and commit it.
    Txn {
        key: TxnKey,
        partial: bool,
        steps: Vec<Step>,
    },
}

/// The operation document `applyOps` takes: only `op`, `ns`, `o` and `o2`.
fn apply_op(op: &str, ns: &str, o: RawDocumentBuf, o2: Option<RawDocumentBuf>) -> Step {
    let mut d = RawDocumentBuf::new();
    d.append("op", op);
    d.append("ns", ns);
    d.append("o", o);
    if let Some(o2) = o2 {
        d.append("o2", o2);
    }
    Step::Apply(d)
}

fn create_views(db: &str) -> Step {
    let o =
        RawDocumentBuf::from_document(&doc! { "create": "system.views" }).expect("small document");
    apply_op("c", &format!("{db}.$cmd"), o, None)
}

/// Map a (database, logical name) pair, refusing a target database different from `db`
/// where the entry cannot move between databases.
fn map_in(map: &NsMap, db: &str, name: &str, tdb: &str, what: &str) -> Result<String> {
    let (d, n) = map.map(db, name);
    if d != tdb {
        return Err(Error::Config(format!(
            "cannot replay {what}: --ns-from/--ns-to send {db}.{name} to database {d} but the entry belongs to {tdb}; rename whole databases, or restore without --to-time"
        )));
    }
    Ok(n)
}

/// A view definition with its `_id` and `viewOn` renamed.
fn map_view(o: &RawDocument, db: &str, map: &NsMap) -> Result<(String, RawDocumentBuf)> {
    let mut d = Document::try_from(o).map_err(|e| malformed(e.to_string()))?;
    let id = d
        .get_str("_id")
        .map_err(|_| malformed("a view definition without _id"))?
        .to_string();
    let view = id
        .split_once('.')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let (tdb, tview) = map.map(db, &view);
    d.insert("_id", format!("{tdb}.{tview}"));
    if let Ok(on) = d.get_str("viewOn").map(str::to_string) {
        let what = format!("the view {db}.{view}");
        let mapped = match on.strip_prefix("system.buckets.") {
            Some(base) => format!("system.buckets.{}", map_in(map, db, base, &tdb, &what)?),
            None => map_in(map, db, &on, &tdb, &what)?,
        };
        d.insert("viewOn", mapped);
    }
    Ok((
        tdb,
        RawDocumentBuf::from_document(&d).map_err(|e| malformed(e.to_string()))?,
    ))
}

fn raw_doc(e: &RawDocument, key: &str) -> Option<RawDocumentBuf> {
    e.get_document(key)
        .ok()
        .map(RawDocument::to_raw_document_buf)
}

/// Turn entry `e` into replay steps under filter `f` and renaming `map`; nothing when the
/// entry does not count.
///
/// # Errors
/// A malformed entry, a prepared transaction, or an entry the renaming cannot express.
pub fn steps(e: &RawDocument, f: &NsFilter, map: &NsMap) -> Result<Vec<Step>> {
    let h = head(e)?;
    let t = target(e)?;
    let mut touched = BTreeSet::new();
    if t != Target::Txn && !keeps(&t, f, &mut touched) {
        return Ok(vec![]);
    }
    let (db, coll) = split_ns(h.ns);
    match h.op {
        "i" | "u" | "d" => {
            let o = raw_doc(e, "o").ok_or_else(|| malformed("a write without `o`"))?;
            let o2 = raw_doc(e, "o2");
            Ok(match logical(coll) {
                Logical::Views => {
                    // `o` is the definition (insert, replacement) or a diff (update).
                    let (tdb, mapped) = match (h.op, o.get("_id").ok().flatten()) {
                        ("u", None) => (map_view(o2.as_deref().unwrap_or(&o), db, map)?.0, o),
                        _ => map_view(&o, db, map)?,
                    };
                    let o2 = o2
                        .map(|x| map_view(&x, db, map).map(|(_, d)| d))
                        .transpose()?;
                    let op = apply_op(h.op, &format!("{tdb}.system.views"), mapped, o2);
                    vec![create_views(&tdb), op]
                }
                Logical::Buckets(base) => {
                    let (tdb, tname) = map.map(db, base);
                    vec![apply_op(
                        h.op,
                        &format!("{tdb}.system.buckets.{tname}"),
                        o,
                        o2,
                    )]
                }
                Logical::Plain(name) => {
                    let (tdb, tname) = map.map(db, name);
                    vec![apply_op(h.op, &format!("{tdb}.{tname}"), o, o2)]
                }
                Logical::Internal => vec![],
            })
        }
        "c" => command_steps(e, &h, t, f, map),
        _ => Ok(vec![]),
    }
}

fn command_steps(
    e: &RawDocument,
    h: &Head<'_>,
    t: Target,
    f: &NsFilter,
    map: &NsMap,
) -> Result<Vec<Step>> {
    let (db, _) = split_ns(h.ns);
    let (name, value) = command(e)?;
    let o = e
        .get_document("o")
        .map_err(|err| malformed(err.to_string()))?;
    let mut o = Document::try_from(o).map_err(|err| malformed(err.to_string()))?;
    match (name, t) {
        ("applyOps", _) => {
            let ops = o
                .get_array("applyOps")
                .map_err(|_| malformed("applyOps is not an array"))?
                .clone();
            let mut inner = Vec::new();
            for op in ops {
                let Bson::Document(d) = op else {
                    return Err(malformed("an applyOps element that is not a document"));
                };
                let raw =
                    RawDocumentBuf::from_document(&d).map_err(|err| malformed(err.to_string()))?;
                // Nested operations carry no ts of their own; the transaction's applies.
                let mut with_ts = raw.clone();
                if raw.get("ts").ok().flatten().is_none() {
                    with_ts.append(
                        "ts",
                        mongodb::bson::Timestamp {
                            time: h.ts.t,
                            increment: h.ts.i,
                        },
                    );
                }
                inner.extend(steps(&with_ts, f, map)?);
            }
            let partial = o.get_bool("partialTxn").unwrap_or(false);
            if o.get_bool("prepare").unwrap_or(false) {
                return Err(prepared(h));
            }
            Ok(vec![Step::Txn {
                key: txn_key(e),
                partial,
                steps: inner,
            }])
        }
        ("commitTransaction" | "abortTransaction", _) => Err(prepared(h)),
        ("dropDatabase", _) => Ok(vec![]), // its collections' drops come first in the oplog
        ("renameCollection", Target::Rename((fd, fc), (td, tc))) => {
            let (from, to) = (f.wants(&fd, &fc), f.wants(&td, &tc));
            let (mfd, mfc) = map.map(&fd, &fc);
            if from && !to {
                let o =
                    RawDocumentBuf::from_document(&doc! { "drop": mfc }).expect("small document");
                return Ok(vec![apply_op("c", &format!("{mfd}.$cmd"), o, None)]);
            }
            if !from {
                return Err(Error::Config(format!(
                    "cannot replay the oplog: at {} it renames {fd}.{fc}, which is not restored, onto {td}.{tc}, which is; restore with a selection that includes {fd}.{fc}",
                    describe(h.ts)
                )));
            }
            let (mtd, mtc) = map.map(&td, &tc);
            o.insert("renameCollection", format!("{mfd}.{mfc}"));
            o.insert("to", format!("{mtd}.{mtc}"));
            let o = RawDocumentBuf::from_document(&o).map_err(|err| malformed(err.to_string()))?;
            Ok(vec![apply_op("c", &format!("{mfd}.$cmd"), o, None)])
        }
        (_, Target::Coll(_, _)) => {
            let arg = value.as_str().unwrap_or_default().to_string();
            let (tdb, tname) = match logical(&arg) {
                Logical::Buckets(base) => {
                    let (d, n) = map.map(db, base);
                    (d, format!("system.buckets.{n}"))
                }
                _ => map.map(db, &arg),
            };
            o.insert(name, tname.clone());
            match name {
                // applyOps refuses index creation; run it as the command.
                "createIndexes" => {
                    o.remove("createIndexes");
                    Ok(vec![Step::Command {
                        db: tdb,
                        command: doc! { "createIndexes": tname, "indexes": [o] },
                    }])
                }
                "commitIndexBuild" => {
                    let indexes = o.get_array("indexes").cloned().unwrap_or_default();
                    Ok(vec![Step::Command {
                        db: tdb,
                        command: doc! { "createIndexes": tname, "indexes": indexes },
                    }])
                }
                _ => {
                    let o = RawDocumentBuf::from_document(&o)
                        .map_err(|err| malformed(err.to_string()))?;
                    Ok(vec![apply_op("c", &format!("{tdb}.$cmd"), o, None)])
                }
            }
        }
        _ => Ok(vec![]),
    }
}

fn prepared(h: &Head<'_>) -> Error {
    Error::Config(format!(
        "cannot replay the oplog: the entry at {} belongs to a prepared (distributed) transaction, which only sharded clusters write; mongokeep replays replica-set oplogs",
        describe(h.ts)
    ))
}
