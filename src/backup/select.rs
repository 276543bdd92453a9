//! Which namespaces a backup includes: every database but `admin`, `local` and `config`
//! (users and roles on request), narrowed by `--db`, `--ns-include` and `--ns-exclude` globs
//! matched against `db.collection`.

use globset::{GlobSet, GlobSetBuilder};

use crate::source::CollectionSpec;
use crate::{Error, Result};

pub(crate) const SYSTEM_DBS: [&str; 3] = ["admin", "local", "config"];

/// The namespaces to back up.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these databases (all but the system ones when empty).
    pub databases: Vec<String>,
    /// Globs over `db.collection`; when any is given, only matching namespaces.
    pub ns_include: Vec<String>,
    /// Globs over `db.collection` to leave out.
    pub ns_exclude: Vec<String>,
    /// Also back up `admin.system.users` and `admin.system.roles`.
    pub include_users: bool,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn build(globs: &[String], flag: &str) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        // A namespace is not a path: `*` also matches `/` and `.`.
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(false)
            .build()
            .map_err(|e| Error::Config(format!("{flag} {g:?}: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Config(format!("{flag}: {e}")))
}

impl Selection {
    /// Build a selection, compiling the globs.
    ///
    /// # Errors
    /// A malformed glob, as a configuration error naming it.
    pub fn new(
        databases: Vec<String>,
        ns_include: Vec<String>,
        ns_exclude: Vec<String>,
        include_users: bool,
    ) -> Result<Self> {
        Ok(Self {
            include: build(&ns_include, "--ns-include")?,
            exclude: build(&ns_exclude, "--ns-exclude")?,
            databases,
            ns_include,
            ns_exclude,
            include_users,
        })
    }

    /// Whether to look into database `db` at all.
    pub fn wants_db(&self, db: &str) -> bool {
        if db == "admin" && self.include_users {
            return true;
        }
        if !self.databases.is_empty() {
            return self.databases.iter().any(|d| d == db);
        }
        !SYSTEM_DBS.contains(&db)
    }

    /// Whether a collection is backed up.
    pub fn wants_collection(&self, spec: &CollectionSpec) -> bool {
        let ns = format!("{}.{}", spec.db, spec.name);
        if SYSTEM_DBS.contains(&spec.db.as_str()) && !self.databases.iter().any(|d| d == &spec.db) {
            // Only users and roles come from the system databases, and only on request.
            return self.include_users
                && (ns == "admin.system.users" || ns == "admin.system.roles");
        }
        // system.* holds server internals (views' definitions, time-series buckets, profile);
        // views and time-series collections are backed up through their own entries.
        if spec.name.starts_with("system.") && spec.name != "system.js" {
            return false;
        }
        self.wants_ns(&ns)
    }

    /// The `--db` names not among `databases`, and the `--ns-include` globs that match none
    /// of `namespaces`, as the flags they came from: a typo there must not pass as a
    /// selection of nothing.
    pub fn unmatched(&self, databases: &[String], namespaces: &[String]) -> Vec<String> {
        let mut out: Vec<String> = self
            .databases
            .iter()
            .filter(|d| !databases.contains(d))
            .map(|d| format!("--db {d:?}"))
            .collect();
        if let Some(inc) = &self.include {
            let mut hit = vec![false; self.ns_include.len()];
            for ns in namespaces {
                for i in inc.matches(ns) {
                    hit[i] = true;
                }
            }
            out.extend(
                self.ns_include
                    .iter()
                    .zip(hit)
                    .filter(|(_, h)| !h)
                    .map(|(g, _)| format!("--ns-include {g:?}")),
            );
        }
        out
    }

    /// Whether namespace `db.collection` passes the include and exclude globs (restore
    /// selects from a snapshot with this alone).
    pub fn wants_ns(&self, ns: &str) -> bool {
        if let Some(inc) = &self.include {
            if !inc.is_match(ns) {
                return false;
            }
        }
        if let Some(exc) = &self.exclude {
            if exc.is_match(ns) {
                return false;
            }
        }
        true
    }
}

/// `names`, at most ten of them, for a message.
pub fn some_of(names: &[String]) -> String {
    match names.len() {
        0 => "none".into(),
        n if n <= 10 => names.join(", "),
        n => format!("{}, and {} more", names[..10].join(", "), n - 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_globs_that_match_nothing_are_named() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let sel = Selection::new(
            s(&["shop", "shpo"]),
            s(&["shop.orders", "shop.ordres*"]),
            vec![],
            false,
        )
        .unwrap();
        let dbs = s(&["admin", "shop"]);
        let nss = s(&["shop.orders", "shop.users"]);
        assert_eq!(
            sel.unmatched(&dbs, &nss),
            ["--db \"shpo\"", "--ns-include \"shop.ordres*\""]
        );
        let all = Selection::new(vec![], s(&["shop.*"]), vec![], false).unwrap();
        assert!(all.unmatched(&dbs, &nss).is_empty());
        assert_eq!(some_of(&s(&["a", "b"])), "a, b");
        assert_eq!(
            some_of(&(0..12).map(|i| i.to_string()).collect::<Vec<_>>()),
            "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, and 2 more"
        );
    }

    fn spec(db: &str, name: &str) -> CollectionSpec {
        CollectionSpec {
            db: db.into(),
            name: name.into(),
            kind: "collection".into(),
            options: Default::default(),
            uuid: None,
        }
    }

    #[test]
    fn system_databases_skipped_unless_asked() {
        let s = Selection::new(vec![], vec![], vec![], false).unwrap();
        assert!(s.wants_db("shop"));
        for db in ["admin", "local", "config"] {
            assert!(!s.wants_db(db), "{db}");
        }
        let u = Selection::new(vec![], vec![], vec![], true).unwrap();
        assert!(u.wants_db("admin"));
        assert!(u.wants_collection(&spec("admin", "system.users")));
        assert!(u.wants_collection(&spec("admin", "system.roles")));
        assert!(!u.wants_collection(&spec("admin", "system.version")));
        assert!(!s.wants_collection(&spec("admin", "system.users")));
    }

    #[test]
    fn db_filter() {
        let s = Selection::new(vec!["shop".into()], vec![], vec![], false).unwrap();
        assert!(s.wants_db("shop"));
        assert!(!s.wants_db("chat"));
    }

    #[test]
    fn include_and_exclude_globs_over_namespaces() {
        let s = Selection::new(
            vec![],
            vec!["shop.*".into(), "chat.messages".into()],
            vec!["shop.tmp_*".into()],
            false,
        )
        .unwrap();
        assert!(s.wants_collection(&spec("shop", "orders")));
        assert!(s.wants_collection(&spec("shop", "a.dotted.name")));
        assert!(!s.wants_collection(&spec("shop", "tmp_import")));
        assert!(s.wants_collection(&spec("chat", "messages")));
        assert!(!s.wants_collection(&spec("chat", "users")));
    }

    #[test]
    fn internal_system_collections_are_skipped() {
        let s = Selection::new(vec![], vec![], vec![], false).unwrap();
        assert!(!s.wants_collection(&spec("shop", "system.views")));
        assert!(!s.wants_collection(&spec("shop", "system.buckets.metrics")));
        assert!(s.wants_collection(&spec("shop", "system.js")));
    }

    #[test]
    fn bad_glob_is_a_config_error() {
        let e = Selection::new(vec![], vec!["shop.[".into()], vec![], false).unwrap_err();
        assert!(e.to_string().contains("--ns-include"), "{e}");
    }
}
