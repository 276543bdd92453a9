//! Renaming on restore: `--ns-from 'shop.*' --ns-to 'shop_restored.*'`, as mongorestore's
//! `--nsFrom` / `--nsTo`. Each `*` in a `from` pattern matches any run of characters (dots
//! included); the `to` pattern has as many `*`, filled in the same order. Pairs are tried in
//! the order given; the first that matches renames. A namespace no pair matches keeps its
//! name.

use crate::{Error, Result};

/// One `from` → `to` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pattern: String,
    from: Vec<String>,
    to: Vec<String>,
}

/// Every renaming pair of a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsMap {
    pairs: Vec<Rename>,
}

impl NsMap {
    /// Build from the `--ns-from` and `--ns-to` lists (paired by position).
    ///
    /// # Errors
    /// Lists of different lengths, a pair whose `*` counts differ, or a target without a
    /// database and collection.
    pub fn new(from: &[String], to: &[String]) -> Result<Self> {
        if from.len() != to.len() {
            return Err(Error::Config(format!(
                "--ns-from was given {} times and --ns-to {} times; give them in pairs",
                from.len(),
                to.len()
            )));
        }
        let mut pairs = Vec::new();
        for (f, t) in from.iter().zip(to) {
            let fp: Vec<String> = f.split('*').map(str::to_string).collect();
            let tp: Vec<String> = t.split('*').map(str::to_string).collect();
            if fp.len() != tp.len() {
                return Err(Error::Config(format!(
                    "--ns-from {f:?} has {} '*' but --ns-to {t:?} has {}; each '*' of the target is filled by the source's '*' in order",
                    fp.len() - 1,
                    tp.len() - 1
                )));
            }
            if !t.contains('.') || t.starts_with('.') {
                return Err(Error::Config(format!(
                    "--ns-to {t:?} must name DATABASE.COLLECTION"
                )));
            }
            pairs.push(Rename {
                pattern: f.clone(),
                from: fp,
                to: tp,
            });
        }
        Ok(Self { pairs })
    }

    /// The `--ns-from` patterns that match none of `namespaces`.
    pub fn unmatched(&self, namespaces: &[String]) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|p| !namespaces.iter().any(|ns| captures(&p.from, ns).is_some()))
            .map(|p| format!("--ns-from {:?}", p.pattern))
            .collect()
    }

    /// True when no pair was given.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The target of namespace `db.coll`, split back into database and collection at the
    /// first dot (database names cannot contain dots).
    pub fn map(&self, db: &str, coll: &str) -> (String, String) {
        let ns = format!("{db}.{coll}");
        for p in &self.pairs {
            if let Some(caps) = captures(&p.from, &ns) {
                let mut out = p.to[0].clone();
                for (cap, lit) in caps.iter().zip(&p.to[1..]) {
                    out.push_str(cap);
                    out.push_str(lit);
                }
                if let Some((d, c)) = out.split_once('.') {
                    return (d.to_string(), c.to_string());
                }
            }
        }
        (db.to_string(), coll.to_string())
    }
}

/// Match `s` against literal pieces separated by wildcards; return what each wildcard took.
/// Wildcards take as little as possible, except the last, which takes the rest.
fn captures(pieces: &[String], s: &str) -> Option<Vec<String>> {
    let (first, rest) = pieces.split_first()?;
    let mut tail = s.strip_prefix(first.as_str())?;
    if rest.is_empty() {
        return tail.is_empty().then(Vec::new);
    }
    let mut caps = Vec::new();
    for (i, lit) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            let cap = tail.strip_suffix(lit.as_str())?;
            caps.push(cap.to_string());
            return Some(caps);
        }
        let at = tail.find(lit.as_str())?;
        caps.push(tail[..at].to_string());
        tail = &tail[at + lit.len()..];
    }
    Some(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(from: &[&str], to: &[&str]) -> NsMap {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        NsMap::new(&s(from), &s(to)).unwrap()
    }

    fn pair(d: &str, c: &str) -> (String, String) {
        (d.to_string(), c.to_string())
    }

    #[test]
    fn database_rename_keeps_dotted_collection_names() {
        let m = map(&["shop.*"], &["shop_restored.*"]);
        assert_eq!(m.map("shop", "orders"), pair("shop_restored", "orders"));
        assert_eq!(m.map("shop", "a.b.c"), pair("shop_restored", "a.b.c"));
        assert_eq!(m.map("chat", "orders"), pair("chat", "orders"));
        assert_eq!(m.map("shopping", "x"), pair("shopping", "x"));
    }

    #[test]
    fn several_wildcards_fill_in_order() {
        let m = map(&["*.orders_*"], &["archive_*.o_*"]);
        assert_eq!(m.map("shop", "orders_2024"), pair("archive_shop", "o_2024"));
        let m = map(&["*.*"], &["x_*.*"]);
        assert_eq!(m.map("shop", "a.b"), pair("x_shop", "a.b"));
    }

    #[test]
    fn exact_names_and_first_pair_wins() {
        let m = map(&["shop.orders", "shop.*"], &["other.o", "copy.*"]);
        assert_eq!(m.map("shop", "orders"), pair("other", "o"));
        assert_eq!(m.map("shop", "items"), pair("copy", "items"));
    }

    #[test]
    fn bad_pairs_are_config_errors() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(NsMap::new(&s(&["a.*"]), &[]).is_err());
        assert!(NsMap::new(&s(&["a.*"]), &s(&["b.c"])).is_err());
        assert!(NsMap::new(&s(&["a.b"]), &s(&["nodot"])).is_err());
        assert!(NsMap::new(&[], &[]).unwrap().is_empty());
    }
}
