//! Entries as a 6.0 replica set writes them (shapes copied from `local.oplog.rs`).

use mongodb::bson::{doc, spec::BinarySubtype, Binary, Document, Timestamp};

use super::*;
use crate::restore::NsMap;

fn ts(i: u32) -> Timestamp {
    Timestamp {
        time: 1_795_588_818,
        increment: i,
    }
}

fn raw(d: Document) -> RawDocumentBuf {
    RawDocumentBuf::from_document(&d).unwrap()
}

fn uuid() -> Binary {
    Binary {
        subtype: BinarySubtype::Uuid,
        bytes: vec![7; 16],
    }
}

fn insert(ns: &str, id: i32) -> Document {
    doc! {
        "lsid": {"id": uuid()}, "txnNumber": 3_i64, "op": "i", "ns": ns, "ui": uuid(),
        "o": {"_id": id, "x": 1}, "o2": {"_id": id}, "stmtId": 0, "ts": ts(2), "t": 1_i64, "v": 2_i64,
    }
}

fn cmd(db: &str, o: Document) -> Document {
    doc! { "op": "c", "ns": format!("{db}.$cmd"), "ui": uuid(), "o": o, "ts": ts(5), "t": 1_i64 }
}

fn sel(inc: &[&str], exc: &[&str]) -> Selection {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
    Selection::new(vec![], v(inc), v(exc), false).unwrap()
}

fn all() -> NsFilter {
    NsFilter::new(vec![Selection::default()])
}

fn kept(d: Document, f: &NsFilter) -> (Kept, BTreeSet<String>) {
    let mut touched = BTreeSet::new();
    let k = filter(&raw(d), f, &mut touched).unwrap();
    (k, touched)
}

fn map(from: &str, to: &str) -> NsMap {
    NsMap::new(&[from.to_string()], &[to.to_string()]).unwrap()
}

fn apply_doc(s: &Step) -> Document {
    match s {
        Step::Apply(d) => d.to_document().unwrap(),
        other => panic!("expected an applyOps operation, got {other:?}"),
    }
}

#[test]
fn system_databases_noops_and_internal_collections_are_left_out() {
    let noop = doc! { "op": "n", "ns": "", "o": {"msg": "periodic noop"}, "ts": ts(1) };
    assert!(matches!(kept(noop, &all()).0, Kept::Dropped));
    for ns in [
        "admin.system.users",
        "config.system.indexBuilds",
        "local.replset.election",
        "shop.system.profile",
    ] {
        assert!(
            matches!(kept(insert(ns, 1), &all()).0, Kept::Dropped),
            "{ns}"
        );
    }
    let start = cmd("shop", doc! { "startIndexBuild": "orders", "indexes": [] });
    assert!(matches!(kept(start, &all()).0, Kept::Dropped));
    let views = cmd("shop", doc! { "create": "system.views" });
    assert!(matches!(kept(views, &all()).0, Kept::Dropped));
}

#[test]
fn selection_keeps_namespaces_by_their_logical_name() {
    let f = NsFilter::new(vec![sel(&["shop.*"], &["shop.tmp"])]);
    let (k, touched) = kept(insert("shop.orders", 1), &f);
    assert!(matches!(k, Kept::Whole));
    assert_eq!(touched.into_iter().collect::<Vec<_>>(), ["shop.orders"]);
    assert!(matches!(kept(insert("shop.tmp", 1), &f).0, Kept::Dropped));
    assert!(matches!(
        kept(insert("chat.messages", 1), &f).0,
        Kept::Dropped
    ));
    // Time-series writes go to the buckets; they count as the time-series collection.
    let (k, touched) = kept(insert("shop.system.buckets.metrics", 1), &f);
    assert!(matches!(k, Kept::Whole));
    assert!(touched.contains("shop.metrics"));
    // A view definition counts as the view.
    let view = doc! { "op": "i", "ns": "shop.system.views", "o": {"_id": "shop.v", "viewOn": "orders", "pipeline": []}, "ts": ts(3) };
    assert!(touched_of(view, &f).contains("shop.v"));
    let excluded = doc! { "op": "i", "ns": "shop.system.views", "o": {"_id": "shop.tmp", "viewOn": "orders", "pipeline": []}, "ts": ts(3) };
    assert!(matches!(kept(excluded, &f).0, Kept::Dropped));
    // Commands count by the collection they name.
    assert!(matches!(
        kept(cmd("shop", doc! {"drop": "orders"}), &f).0,
        Kept::Whole
    ));
    assert!(matches!(
        kept(cmd("chat", doc! {"drop": "messages"}), &f).0,
        Kept::Dropped
    ));
    // A rename counts when either side is selected.
    let rename = cmd(
        "shop",
        doc! {"renameCollection": "shop.tmp", "to": "shop.orders2"},
    );
    let (k, touched) = kept(rename, &f);
    assert!(matches!(k, Kept::Whole));
    assert_eq!(touched.into_iter().collect::<Vec<_>>(), ["shop.orders2"]);
}

fn touched_of(d: Document, f: &NsFilter) -> BTreeSet<String> {
    kept(d, f).1
}

fn txn(ops: Vec<Document>, extra: Document) -> Document {
    let mut o = doc! { "applyOps": ops };
    o.extend(extra);
    doc! {
        "lsid": {"id": uuid()}, "txnNumber": 8_i64, "op": "c", "ns": "admin.$cmd", "o": o,
        "ts": ts(16), "t": 1_i64, "prevOpTime": {"ts": Timestamp { time: 0, increment: 0 }, "t": -1_i64},
    }
}

fn nested(ns: &str, id: i32) -> Document {
    doc! { "op": "i", "ns": ns, "ui": uuid(), "o": {"_id": id}, "o2": {"_id": id} }
}

#[test]
fn transactions_are_filtered_operation_by_operation() {
    let f = NsFilter::new(vec![sel(&["shop.*"], &[])]);
    let both = txn(vec![nested("shop.a", 1), nested("chat.b", 2)], doc! {});
    let (k, touched) = kept(both, &f);
    let Kept::Rewritten(r) = k else {
        panic!("expected a rewritten entry")
    };
    let r = r.to_document().unwrap();
    let ops = r.get_document("o").unwrap().get_array("applyOps").unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        ops[0].as_document().unwrap().get_str("ns").unwrap(),
        "shop.a"
    );
    assert_eq!(r.get_i64("txnNumber").unwrap(), 8, "everything else stays");
    assert!(touched.contains("shop.a") && !touched.contains("chat.b"));
    assert!(matches!(
        kept(txn(vec![nested("shop.a", 1)], doc! {}), &f).0,
        Kept::Whole
    ));
    assert!(matches!(
        kept(txn(vec![nested("chat.b", 1)], doc! {}), &f).0,
        Kept::Dropped
    ));
    // A partial entry, even emptied, stays: the transaction's last entry refers to it.
    let partial = txn(vec![nested("chat.b", 1)], doc! {"partialTxn": true});
    assert!(matches!(kept(partial, &f).0, Kept::Rewritten(_)));
}

#[test]
fn replay_keeps_only_what_apply_ops_needs_and_renames() {
    let m = map("shop.*", "copy.*");
    let s = steps(&raw(insert("shop.orders", 4)), &all(), &m).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        apply_doc(&s[0]),
        doc! { "op": "i", "ns": "copy.orders", "o": {"_id": 4, "x": 1}, "o2": {"_id": 4} },
        "no ui (the target's UUIDs differ), no lsid, txnNumber, ts or t"
    );
    let drop = steps(&raw(cmd("shop", doc! {"drop": "orders"})), &all(), &m).unwrap();
    assert_eq!(
        apply_doc(&drop[0]),
        doc! { "op": "c", "ns": "copy.$cmd", "o": {"drop": "orders"} }
    );
    let buckets = steps(&raw(insert("shop.system.buckets.metrics", 1)), &all(), &m).unwrap();
    assert_eq!(
        apply_doc(&buckets[0]).get_str("ns").unwrap(),
        "copy.system.buckets.metrics"
    );
    let none = steps(
        &raw(insert("chat.x", 1)),
        &NsFilter::new(vec![sel(&["shop.*"], &[])]),
        &m,
    )
    .unwrap();
    assert!(none.is_empty());
}

#[test]
fn index_builds_become_create_indexes_commands() {
    let m = map("shop.*", "copy.*");
    let spec = doc! {"v": 2, "key": {"k": 1}, "name": "k_1", "unique": true};
    let mut o = doc! {"createIndexes": "orders"};
    o.extend(spec.clone());
    let s = steps(&raw(cmd("shop", o)), &all(), &m).unwrap();
    assert_eq!(
        s,
        vec![Step::Command {
            db: "copy".into(),
            command: doc! {"createIndexes": "orders", "indexes": [spec.clone()]}
        }]
    );
    let commit = cmd(
        "shop",
        doc! {"commitIndexBuild": "orders", "indexBuildUUID": uuid(), "indexes": [spec.clone()]},
    );
    let s = steps(&raw(commit), &all(), &m).unwrap();
    assert_eq!(
        s,
        vec![Step::Command {
            db: "copy".into(),
            command: doc! {"createIndexes": "orders", "indexes": [spec]}
        }]
    );
    let start = cmd("shop", doc! {"startIndexBuild": "orders", "indexes": []});
    assert!(steps(&raw(start), &all(), &m).unwrap().is_empty());
    assert!(
        steps(&raw(cmd("shop", doc! {"dropDatabase": 1})), &all(), &m)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn renames_in_out_and_into_the_selection() {
    let f = NsFilter::new(vec![sel(&["shop.*"], &["shop.tmp*"])]);
    let m = NsMap::default();
    let within = cmd(
        "shop",
        doc! {"renameCollection": "shop.a", "to": "shop.b", "stayTemp": false},
    );
    let s = steps(&raw(within), &f, &m).unwrap();
    assert_eq!(
        apply_doc(&s[0])
            .get_document("o")
            .unwrap()
            .get_str("to")
            .unwrap(),
        "shop.b"
    );
    let out = cmd(
        "shop",
        doc! {"renameCollection": "shop.a", "to": "shop.tmp1"},
    );
    let s = steps(&raw(out), &f, &m).unwrap();
    assert_eq!(
        apply_doc(&s[0]),
        doc! {"op": "c", "ns": "shop.$cmd", "o": {"drop": "a"}},
        "leaving the selection is a drop"
    );
    let into = cmd(
        "shop",
        doc! {"renameCollection": "shop.tmp1", "to": "shop.a"},
    );
    let e = steps(&raw(into), &f, &m).unwrap_err().to_string();
    assert!(e.contains("shop.tmp1") && e.contains("not restored"), "{e}");
}

#[test]
fn views_are_renamed_and_their_collection_created_first() {
    let m = map("shop.*", "copy.*");
    let view = doc! { "op": "i", "ns": "shop.system.views", "o": {"_id": "shop.v", "viewOn": "orders", "pipeline": []}, "o2": {"_id": "shop.v"}, "ts": ts(3) };
    let s = steps(&raw(view), &all(), &m).unwrap();
    assert_eq!(
        apply_doc(&s[0]),
        doc! {"op": "c", "ns": "copy.$cmd", "o": {"create": "system.views"}}
    );
    assert_eq!(
        apply_doc(&s[1]),
        doc! {"op": "i", "ns": "copy.system.views", "o": {"_id": "copy.v", "viewOn": "orders", "pipeline": []}, "o2": {"_id": "copy.v"}}
    );
    let ts_view = doc! { "op": "i", "ns": "shop.system.views", "o": {"_id": "shop.m", "viewOn": "system.buckets.m", "pipeline": []}, "ts": ts(3) };
    let s = steps(&raw(ts_view), &all(), &m).unwrap();
    assert_eq!(
        apply_doc(&s[1])
            .get_document("o")
            .unwrap()
            .get_str("viewOn")
            .unwrap(),
        "system.buckets.m"
    );
    let split = map("shop.v", "other.v");
    let view = doc! { "op": "i", "ns": "shop.system.views", "o": {"_id": "shop.v", "viewOn": "orders", "pipeline": []}, "ts": ts(3) };
    assert!(steps(&raw(view), &all(), &split)
        .unwrap_err()
        .to_string()
        .contains("cannot replay"));
}

#[test]
fn transactions_replay_as_one_step_and_prepared_ones_are_refused() {
    let f = NsFilter::new(vec![sel(&["shop.*"], &[])]);
    let t = txn(
        vec![
            nested("shop.a", 1),
            nested("chat.b", 2),
            nested("shop.a", 3),
        ],
        doc! {"partialTxn": true},
    );
    let s = steps(&raw(t), &f, &NsMap::default()).unwrap();
    let [Step::Txn {
        key,
        partial,
        steps: inner,
    }] = s.as_slice()
    else {
        panic!("{s:?}")
    };
    assert!(*partial);
    assert_eq!(key.1, 8);
    assert_eq!(inner.len(), 2);
    let prepared = txn(vec![nested("shop.a", 1)], doc! {"prepare": true});
    assert!(steps(&raw(prepared), &f, &NsMap::default())
        .unwrap_err()
        .to_string()
        .contains("prepared"));
    let commit = cmd(
        "admin",
        doc! {"commitTransaction": 1, "commitTimestamp": ts(1)},
    );
    assert!(steps(&raw(commit), &f, &NsMap::default()).is_err());
}
