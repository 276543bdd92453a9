//! `mongokeep export`: a snapshot as a mongodump-compatible folder, `<db>/<coll>.bson` and
//! `<db>/<coll>.metadata.json`, so a stock `mongorestore --dir DIR` is always a way out. A
//! point-in-time snapshot's own oplog goes in `oplog.bson`, as `mongodump --oplog` writes
//! it, for `mongorestore --oplogReplay`.
//! Every object is checked against the manifest while it streams. The folder is built
//! under a hidden name and moved into place only once every collection is written and
//! checked ([`export`]): a failed or interrupted export leaves no folder that a
//! `mongorestore --dir` would take for a whole snapshot (it used to leave the collections
//! finished before the failure, which would restore a subset without a word).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{self, Codec, Entry};
use crate::error::root_cause;
use crate::fetch::{fetch_verified, ChannelReader};
use crate::fslock::lock;
use crate::interrupt::stopped;
use crate::manifest::{CollectionEntry, Manifest, OplogRecord, StoredObject};
use crate::oplog::replay::for_each_entry;
use crate::repository::Repository;
use crate::{Error, Result};

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// Snapshot id.
    pub snapshot: String,
    /// The folder.
    pub out: String,
    /// Collections written (time-series included).
    pub collections: u64,
    /// Views written (metadata only).
    pub views: u64,
    /// Documents written.
    pub documents: u64,
    /// Entries of the snapshot's own oplog written to `oplog.bson`, for
    /// `mongorestore --oplogReplay` (absent when the snapshot has no oplog: a standalone
    /// source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oplog_entries: Option<u64>,
    /// Bytes of BSON written.
    pub bson_bytes: u64,
}

/// mongodump's file-name escaping of a collection name (Go's `url.QueryEscape`, which
/// mongorestore reverses): ASCII letters, digits and `-_.~` stay, a space becomes `+`, every
/// other byte is `%XX`.
pub fn dump_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `<coll>.metadata.json` mongodump writes: options, indexes, uuid, collection name and
/// type, as extended JSON.
pub fn metadata(entry: &CollectionEntry) -> serde_json::Value {
    serde_json::json!({
        "indexes": entry.indexes,
        "uuid": entry.uuid.clone().unwrap_or_default(),
        "collectionName": entry.name,
        "type": entry.kind,
        "options": entry.options,
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("writing {}", path.display()), e)
}

/// Write every collection of `manifest` into `out`, which must not exist or be an empty
/// folder. The files are written into a hidden folder and moved into place only once all
/// are written and checked; on any failure, or once `stop` is cancelled, that folder is
/// removed and `out` is left as it was.
///
/// - The hidden folder is built beside `out`, `.<name>.mongokeep-partial`, and renamed to
///   `out` in one step; an existing empty `out` is replaced by it the same way (its mode
///   is kept).
/// - Where that cannot be done (`out` is a mount point, is owned by another user, or its
///   parent is not writable) it is built inside `out`, in `.mongokeep-partial`, whose
///   entries are then renamed into `out`: only a `kill -9` between those renames could
///   leave part of them, with the hidden folder still there to show it.
///
/// While an export builds its hidden folder it holds a lock on it: a second export into
/// the same `out` is refused at once, and a hidden folder left by a killed export (no
/// longer locked) is removed by the next one.
///
/// # Errors
/// `out` is a file or holds files, or another export into it is running
/// ([`Error::Config`]), the output folder is not writable, the repository failed, an
/// object differs from the manifest, or the export was stopped ([`Error::Cancelled`]).
pub async fn export(
    repo: &Repository,
    manifest: &Manifest,
    out: &Path,
    stop: &CancellationToken,
) -> Result<ExportSummary> {
    let existing = check_out(out)?;
    let (staging, how) = match existing {
        Out::New => {
            // As before the staging: a missing parent folder is made.
            let parent = parent_of(out);
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            (sibling_staging(out), Publish::Rename)
        }
        // A hidden folder left inside `out` (by a killed export that built there) is
        // cleared by building there again, never left to stop the rename over `out`.
        Out::Empty if replaceable(out) && !out.join(STAGING).exists() => {
            (sibling_staging(out), Publish::Replace)
        }
        Out::Empty => (out.join(STAGING), Publish::MoveEntries),
    };
    let _lock = claim(&staging, out)?;
    let published = match write_all(repo, manifest, &staging, stop).await {
        Ok(summary) => publish(&staging, out, how).map(|()| summary),
        Err(e) => Err(e),
    };
    match published {
        Ok(mut summary) => {
            summary.out = out.display().to_string();
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The hidden folder an export is built in (inside `out`, or after `.<name>` beside it).
const STAGING: &str = ".mongokeep-partial";

/// What `--out` names.
enum Out {
    New,
    Empty,
}

/// How the finished hidden folder becomes `out`.
#[derive(Clone, Copy)]
enum Publish {
    /// `out` did not exist: one rename.
    Rename,
    /// `out` is an empty folder: one rename over it.
    Replace,
    /// Built inside `out`: each entry renamed into it.
    MoveEntries,
}

/// `out` may be missing or an empty folder (one holding only a killed export's hidden
/// folder counts as empty); anything else is refused before a byte is fetched, so that an
/// export never mixes with files already there.
fn check_out(out: &Path) -> Result<Out> {
    match std::fs::read_dir(out) {
        Ok(entries) => {
            for entry in entries {
                let entry =
                    entry.map_err(|e| Error::io(format!("reading {}", out.display()), e))?;
                if entry.file_name() != STAGING {
                    return Err(Error::Config(format!(
                        "--out {} is not empty\n  fix: name a new or empty folder (an export \
                         never writes over or beside files already there)",
                        out.display()
                    )));
                }
            }
            Ok(Out::Empty)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Out::New),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::Config(format!(
            "--out {} is a file\n  fix: name a new or empty folder",
            out.display()
        ))),
        Err(e) => Err(Error::io(format!("reading {}", out.display()), e)),
    }
}

/// The folder `path` is in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether the empty folder `out` can be replaced by a folder built beside it: named by
/// a last component (not `.` or `/`), not a symbolic link (the rename would replace the
/// link, not the folder it points to), on the same file system as its parent (not a mount
/// point), owned by this user (a replacement would be this user's), its parent writable.
fn replaceable(out: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if out.file_name().is_none() {
        return false;
    }
    let (Ok(o), Ok(p)) = (
        std::fs::symlink_metadata(out),
        std::fs::metadata(parent_of(out)),
    ) else {
        return false;
    };
    if !o.is_dir() {
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    o.dev() == p.dev() && o.uid() == me && writable(parent_of(out))
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The hidden folder beside `out` that the export is built in.
fn sibling_staging(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}{STAGING}"))
}

/// Take `staging` for this export: create it and hold an exclusive lock on it for as long
/// as the returned handle lives. One left by a killed export (unlocked) is removed first;
/// one still locked belongs to a running export into `out`, and is refused. The folder
/// `staging` is made in is locked meanwhile, so two exports cannot both find it missing
/// or both remove it.
fn claim(staging: &Path, out: &Path) -> Result<File> {
    let home = parent_of(staging);
    let dir = File::open(home).map_err(io(home))?;
    // Bounded: another program may hold a lock on the folder for as long as it likes
    // (`flock DIR mongokeep export ...`); after 10 s this goes on without it. A file
    // system without flock (some NFS mounts) goes on without it too.
    let mut tries = 0;
    while let Err(e) = lock(&dir, false) {
        tries += 1;
        if e.kind() != std::io::ErrorKind::WouldBlock || tries >= 200 {
            tracing::warn!(folder = %home.display(), error = %e, "could not lock the folder the export is built in; going on without");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let claimed = (|| {
        if staging.exists() {
            let old = File::open(staging).map_err(io(staging))?;
            if let Err(e) = lock(&old, false).map_err(|e| e.kind()) {
                if e != std::io::ErrorKind::WouldBlock {
                    // No flock here: the folder cannot be told live from left over.
                    return Err(Error::Config(format!(
                        "{} exists and this file system cannot lock it, so it cannot be told from a running export's\n  fix: remove it if no export into {} runs, then run the export again",
                        staging.display(),
                        out.display()
                    )));
                }
                return Err(Error::Config(format!(
                    "another mongokeep export into {} is running (it is building {})\n  fix: wait for it to end, or name another folder",
                    out.display(),
                    staging.display()
                )));
            }
            // Left by an export that was killed: a half-made folder of ours.
            std::fs::remove_dir_all(staging).map_err(io(staging))?;
        }
        std::fs::create_dir(staging).map_err(io(staging))?;
        let f = File::open(staging).map_err(io(staging))?;
        if let Err(e) = lock(&f, false) {
            tracing::warn!(folder = %staging.display(), error = %e, "could not lock the export's hidden folder; a second export into the same folder is not refused");
        }
        Ok(f)
    })();
    drop(dir); // closing the descriptor releases the folder's lock
    claimed
}

/// Move the complete, synced `staging` folder into place as `out`.
fn publish(staging: &Path, out: &Path, how: Publish) -> Result<()> {
    sync_dir(staging)?;
    match how {
        Publish::MoveEntries => {
            for entry in std::fs::read_dir(staging).map_err(io(staging))? {
                let name = entry.map_err(io(staging))?.file_name();
                std::fs::rename(staging.join(&name), out.join(&name)).map_err(io(out))?;
            }
            std::fs::remove_dir(staging).map_err(io(staging))?;
            sync_dir(out)
        }
        Publish::Rename | Publish::Replace => {
            if let Publish::Replace = how {
                if let Ok(m) = std::fs::metadata(out) {
                    std::fs::set_permissions(staging, m.permissions()).map_err(io(staging))?;
                }
            }
            // A rename replaces only a missing or empty `out`: should files have appeared in
            // it meanwhile, it fails and they stay as they are.
            match std::fs::rename(staging, out) {
                Ok(()) => sync_dir(parent_of(out)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => Err(Error::Config(format!(
                        "--out {} is no longer empty: something wrote into it during the export; nothing of the export was put there\n  fix: name a new or empty folder",
                        out.display()
                    ))),
                    // A mount point `replaceable` could not see (a bind mount of the same
                    // file system): fill it from the finished folder instead.
                    Some(libc::EBUSY) | Some(libc::EXDEV) if matches!(how, Publish::Replace) => {
                        publish(staging, out, Publish::MoveEntries)
                    }
                    _ => Err(io(out)(e)),
                },
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

async fn write_all(
    repo: &Repository,
    manifest: &Manifest,
    out: &Path,
    stop: &CancellationToken,
) -> Result<ExportSummary> {
    let mut summary = ExportSummary {
        snapshot: manifest.snapshot.clone(),
        out: out.display().to_string(),
        collections: 0,
        views: 0,
        documents: 0,
        bson_bytes: 0,
        oplog_entries: None,
    };
    for e in &manifest.collections {
        stopped(stop)?;
        let dir = out.join(&e.db);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let meta_path = dir.join(format!("{}.metadata.json", dump_file_name(&e.name)));
        let meta = serde_json::to_vec(&metadata(e)).expect("metadata serializes");
        write_file(&meta_path, |f| f.write_all(&meta))?;
        if e.kind == "view" {
            summary.views += 1;
            continue;
        }
        // Time-series data are the buckets, in the file mongodump names after them.
        let data_name = e.stored_from.clone().unwrap_or_else(|| e.name.clone());
        let bson_path = dir.join(format!("{}.bson", dump_file_name(&data_name)));
        let (docs, bytes) = write_bson(repo, e, &bson_path, stop).await?;
        summary.collections += 1;
        summary.documents += docs;
        summary.bson_bytes += bytes;
    }
    if let Some(rec) = &manifest.oplog {
        stopped(stop)?;
        summary.oplog_entries = Some(write_oplog(repo, rec, &out.join("oplog.bson"), stop).await?);
    }
    let dbs: std::collections::BTreeSet<&str> =
        manifest.collections.iter().map(|e| e.db.as_str()).collect();
    for db in dbs {
        sync_dir(&out.join(db))?;
    }
    Ok(summary)
}

fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut f = BufWriter::new(File::create(path).map_err(io(path))?);
    write(&mut f).map_err(io(path))?;
    close(f, path)
}

async fn write_bson(
    repo: &Repository,
    e: &CollectionEntry,
    path: &Path,
    stop: &CancellationToken,
) -> Result<(u64, u64)> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io(path))?);
    let mut docs = 0u64;
    let mut bytes = 0u64;
    let codec = Codec::for_reading(&e.codec);
    for obj in &e.objects {
        let path2 = path.to_path_buf();
        // Checked per part too: a well-compressed object is fetched whole long before it
        // is unpacked.
        let stop2 = stop.clone();
        let (f, n) = unpack(repo, obj, stop, move |reader| {
            let mut n = (0u64, 0u64);
            let r = archive::read_archive(reader, codec, |entry| {
                if let Entry::Part(p) = entry {
                    stopped(&stop2)?;
                    n.0 += archive::documents(&p)?.len() as u64;
                    n.1 += p.len() as u64;
                    file.write_all(&p).map_err(io(&path2))?;
                }
                Ok(())
            });
            r.map(|()| (file, n))
        })
        .await?;
        file = f;
        docs += n.0;
        bytes += n.1;
    }
    close(file, path)?;
    if docs != e.count {
        return Err(Error::Integrity {
            key: format!("{}.{} (documents in the archive)", e.db, e.name),
            expected: format!("{} documents", e.count),
            actual: format!("{docs} documents"),
        });
    }
    Ok((docs, bytes))
}

/// The snapshot's own oplog (the entries written while it was dumped) as `mongodump
/// --oplog` leaves it: raw entries one after the other in `oplog.bson`, which
/// `mongorestore --oplogReplay` replays to bring every collection to the snapshot's
/// consistency point. Returns the entries written.
async fn write_oplog(
    repo: &Repository,
    rec: &OplogRecord,
    path: &Path,
    stop: &CancellationToken,
) -> Result<u64> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io(path))?);
    let (path2, stop2, key) = (path.to_path_buf(), stop.clone(), rec.object.key.clone());
    let (file, entries, bytes) = unpack(repo, &rec.object, stop, move |reader| {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for_each_entry(reader, &key, |e| {
            if entries % 1024 == 0 {
                stopped(&stop2)?;
            }
            file.write_all(&e).map_err(io(&path2))?;
            entries += 1;
            bytes += e.len() as u64;
            Ok(())
        })?;
        Ok((file, entries, bytes))
    })
    .await?;
    close(file, path)?;
    if (entries, bytes) != (rec.entries, rec.bson_bytes) {
        return Err(Error::Integrity {
            key: format!("{} (oplog entries)", rec.object.key),
            expected: format!("{} entries, {} bytes", rec.entries, rec.bson_bytes),
            actual: format!("{entries} entries, {bytes} bytes"),
        });
    }
    Ok(entries)
}

/// Flush `file` and sync it to disk.
fn close(file: BufWriter<File>, path: &Path) -> Result<()> {
    file.into_inner()
        .map_err(|err| io(path)(err.into_error()))?
        .sync_all()
        .map_err(io(path))
}

/// Fetch `obj` (checked against the manifest) into `consume`, which reads it on a blocking
/// thread; its result, or the first cause when either side failed.
async fn unpack<T: Send + 'static>(
    repo: &Repository,
    obj: &StoredObject,
    stop: &CancellationToken,
    consume: impl FnOnce(ChannelReader) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel(8);
    let worker = tokio::task::spawn_blocking(move || consume(ChannelReader::new(rx)));
    let fetched = fetch_verified(repo, obj, tx, &stop.child_token()).await;
    let done = worker.await.unwrap_or_else(|err| {
        Err(Error::Format {
            what: format!("reader of {}", obj.key),
            detail: err.to_string(),
        })
    });
    match (fetched, done) {
        (Ok(()), Ok(t)) => Ok(t),
        (f, w) => {
            Err(root_cause([f.err(), w.err()].into_iter().flatten().collect()).expect("one failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_folder_is_claimed_by_one_export_and_a_killed_ones_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dump");
        let staging = sibling_staging(&out);
        let first = claim(&staging, &out).unwrap();
        std::fs::write(staging.join("half.bson"), b"x").unwrap();
        // Held: a second export into the same folder is refused and touches nothing.
        let e = claim(&staging, &out).unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("another mongokeep export into")),
            "{e}"
        );
        assert!(staging.join("half.bson").exists());
        // Its holder gone (as when killed): the next export clears it and takes it.
        drop(first);
        let _second = claim(&staging, &out).unwrap();
        assert!(staging.is_dir() && !staging.join("half.bson").exists());
    }

    #[test]
    fn an_empty_folder_is_replaced_in_one_step_unless_it_is_a_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("empty");
        std::fs::create_dir(&out).unwrap();
        assert!(replaceable(&out));
        assert!(!replaceable(Path::new("/proc")), "a mount point");
        assert!(!replaceable(Path::new(".")), "no name of its own");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        assert!(!replaceable(&link), "a symbolic link");
        let staging = sibling_staging(&out);
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("a.bson"), b"x").unwrap();
        publish(&staging, &out, Publish::Replace).unwrap();
        assert!(out.join("a.bson").exists() && !staging.exists());
        // Files that appear in `out` meanwhile stop it, and stay.
        let staging = sibling_staging(&out);
        std::fs::create_dir(&staging).unwrap();
        let e = publish(&staging, &out, Publish::Replace).unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("no longer empty")),
            "{e}"
        );
        assert!(out.join("a.bson").exists());
        // Built inside: its entries are moved out of the hidden folder.
        let inside = dir.path().join("mnt");
        std::fs::create_dir_all(inside.join(STAGING).join("db")).unwrap();
        publish(&inside.join(STAGING), &inside, Publish::MoveEntries).unwrap();
        assert!(inside.join("db").is_dir() && !inside.join(STAGING).exists());
    }

    #[test]
    fn file_names_escape_as_mongodump_100_7_does() {
        // File names read off a real `mongodump --out` of the rich sample database.
        assert_eq!(dump_file_name("with space"), "with+space");
        assert_eq!(dump_file_name("dots.in.name"), "dots.in.name");
        assert_eq!(
            dump_file_name("ünïcødé 日本"),
            "%C3%BCn%C3%AFc%C3%B8d%C3%A9+%E6%97%A5%E6%9C%AC"
        );
        assert_eq!(dump_file_name("a/b%c"), "a%2Fb%25c");
    }
}
