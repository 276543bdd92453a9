//! `mongokeep export`: a snapshot as a mongodump-compatible folder, `<db>/<coll>.bson` and
//! `<db>/<coll>.metadata.json`, so a stock `mongorestore --dir DIR` is always a way out.
//! Every object is checked against the manifest while it streams; files are written under
//! a temporary name and renamed when complete, so a failed export leaves no `.bson` that
//! looks whole.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{self, Codec, Entry};
use crate::error::root_cause;
use crate::fetch::{fetch_verified, ChannelReader};
use crate::manifest::{CollectionEntry, Manifest};
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

/// Write every collection of `manifest` into `out` (created if missing).
///
/// # Errors
/// The output folder is not writable, the repository failed, or an object differs from
/// the manifest.
pub async fn export(repo: &Repository, manifest: &Manifest, out: &Path) -> Result<ExportSummary> {
    let mut summary = ExportSummary {
        snapshot: manifest.snapshot.clone(),
        out: out.display().to_string(),
        collections: 0,
        views: 0,
        documents: 0,
        bson_bytes: 0,
    };
    for e in &manifest.collections {
        let dir = out.join(&e.db);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let meta_path = dir.join(format!("{}.metadata.json", dump_file_name(&e.name)));
        let meta = serde_json::to_vec(&metadata(e)).expect("metadata serializes");
        write_atomic(&meta_path, |f| f.write_all(&meta))?;
        if e.kind == "view" {
            summary.views += 1;
            continue;
        }
        // Time-series data are the buckets, in the file mongodump names after them.
        let data_name = e.stored_from.clone().unwrap_or_else(|| e.name.clone());
        let bson_path = dir.join(format!("{}.bson", dump_file_name(&data_name)));
        let (docs, bytes) = write_bson(repo, e, &bson_path).await?;
        summary.collections += 1;
        summary.documents += docs;
        summary.bson_bytes += bytes;
    }
    Ok(summary)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_path(path);
    let mut f = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
    write(&mut f).map_err(io(&tmp))?;
    f.into_inner()
        .map_err(|e| io(&tmp)(e.into_error()))?
        .sync_all()
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

async fn write_bson(repo: &Repository, e: &CollectionEntry, path: &Path) -> Result<(u64, u64)> {
    let tmp = tmp_path(path);
    let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io(&tmp))?);
    let mut docs = 0u64;
    let mut bytes = 0u64;
    let codec = Codec::for_reading(&e.codec);
    let cancel = CancellationToken::new();
    for obj in &e.objects {
        let (tx, rx) = mpsc::channel(8);
        let tmp2 = tmp.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut n = (0u64, 0u64);
            let r = archive::read_archive(ChannelReader::new(rx), codec, |entry| {
                if let Entry::Part(p) = entry {
                    n.0 += archive::documents(&p)?.len() as u64;
                    n.1 += p.len() as u64;
                    file.write_all(&p).map_err(io(&tmp2))?;
                }
                Ok(())
            });
            r.map(|()| (file, n))
        });
        let fetched = fetch_verified(repo, obj, tx, &cancel).await;
        let written = writer.await.unwrap_or_else(|err| {
            Err(Error::Format {
                what: "archive reader".into(),
                detail: err.to_string(),
            })
        });
        match (fetched, written) {
            (Ok(()), Ok((f, n))) => {
                file = f;
                docs += n.0;
                bytes += n.1;
            }
            (f, w) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(
                    root_cause([f.err(), w.err()].into_iter().flatten().collect())
                        .expect("one failed"),
                );
            }
        }
    }
    let f = file
        .into_inner()
        .map_err(|err| io(&tmp)(err.into_error()))?;
    f.sync_all().map_err(io(&tmp))?;
    if docs != e.count {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Integrity {
            key: format!("{}.{} (documents in the archive)", e.db, e.name),
            expected: format!("{} documents", e.count),
            actual: format!("{docs} documents"),
        });
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok((docs, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

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
