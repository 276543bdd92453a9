//! `mongokeep.toml`: the configuration file. Environment variables and flags override it
//! (flags win over environment, environment over the file); [`crate::cli`] does the
//! merging. Unknown keys are errors that name the key, so a typo never silently falls
//! back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[repository]`
    #[serde(default)]
    pub repository: RepositorySection,
    /// `[s3]`
    #[serde(default)]
    pub s3: S3Section,
    /// `[source]`
    #[serde(default)]
    pub source: SourceSection,
    /// `[backup]`
    #[serde(default)]
    pub backup: BackupSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
}

/// `[repository]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    /// `s3://bucket/prefix`, `file:///path` or a path.
    pub url: Option<String>,
}

/// `[s3]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint of an S3-compatible store.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Path-style addressing.
    pub path_style: Option<bool>,
    /// `when-supported` (default) or `when-required`.
    pub checksum: Option<String>,
    /// Attempts per request, first included.
    pub max_attempts: Option<u32>,
    /// Parts in flight per stream.
    pub upload_concurrency: Option<usize>,
    /// First part size in MiB (at least 5).
    pub part_size_mib: Option<usize>,
}

/// `[source]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// A file whose first line is the MongoDB URI (keeps the password out of this file).
    pub uri_file: Option<PathBuf>,
    /// The MongoDB URI itself (protect the file if it holds a password).
    pub uri: Option<String>,
}

/// `[backup]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// `gzip`, `gzip:N` or `none`.
    pub compression: Option<String>,
    /// Collections at once.
    pub parallel: Option<usize>,
    /// Bound on one archive part's BSON, MiB.
    pub archive_part_mib: Option<usize>,
    /// Only these databases.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Include globs.
    #[serde(default)]
    pub ns_include: Vec<String>,
    /// Exclude globs.
    #[serde(default)]
    pub ns_exclude: Vec<String>,
    /// Users and roles.
    pub include_users: Option<bool>,
    /// Tags on every snapshot.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: Option<String>,
}

impl FileConfig {
    /// Parse a configuration text; `origin` names it in errors.
    ///
    /// # Errors
    /// TOML syntax, an unknown key, or a wrong type: a message naming the key and line.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        // The line and column, not the parser's quote of the line: the line may hold a
        // URI with its password.
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map_or_else(String::new, |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" line {line}, column {column}:")
            });
            Error::Config(format!(
                "{origin}:{at} {}\n  fix: correct that line (see the README's Configuration)",
                e.message().trim_end()
            ))
        })
    }

    /// Load the file at `path`; when `path` is `None`, `./mongokeep.toml` if it exists, else
    /// the defaults.
    ///
    /// # Errors
    /// An explicit file that cannot be read, or any parse error.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("mongokeep.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Config(format!(
                "cannot read config file {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Read a MongoDB URI from a file: the first non-empty line, trimmed.
///
/// # Errors
/// The file cannot be read or holds no URI.
pub fn read_uri_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the source URI file {}: {e}",
            path.display()
        ))
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::Config(format!("the source URI file {} is empty", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let c = FileConfig::parse(
            r#"
            [repository]
            url = "s3://backups/prod"
            [s3]
            endpoint = "http://127.0.0.1:3900"
            region = "garage"
            path_style = true
            checksum = "when-required"
            [source]
            uri_file = "/etc/mongokeep/uri"
            [backup]
            compression = "gzip:3"
            parallel = 4
            ns_exclude = ["*.tmp_*"]
            [log]
            format = "json"
            "#,
            "test",
        )
        .unwrap();
        assert_eq!(c.repository.url.as_deref(), Some("s3://backups/prod"));
        assert_eq!(c.s3.path_style, Some(true));
        assert_eq!(c.backup.parallel, Some(4));
        assert_eq!(c.backup.ns_exclude, ["*.tmp_*"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = FileConfig::parse("[backup]\nparalel = 4\n", "mongokeep.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("paralel"), "{msg}");
        assert!(msg.contains("mongokeep.toml"), "{msg}");
        let e = FileConfig::parse("[bakup]\n", "f").unwrap_err();
        assert!(e.to_string().contains("bakup"), "{e}");
    }

    #[test]
    fn a_syntax_error_gives_the_line_not_the_line_s_text() {
        let text = "[source]\nuri = \"mongodb://bk:TomlS3cretPw@127.0.0.1:28777/\" x\n";
        let msg = FileConfig::parse(text, "t.toml").unwrap_err().to_string();
        assert!(!msg.contains("TomlS3cretPw"), "{msg}");
        assert!(
            msg.contains("t.toml: line 2, column ") && msg.contains("fix:"),
            "{msg}"
        );
    }

    #[test]
    fn missing_default_file_is_fine_missing_explicit_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileConfig::load(Some(&dir.path().join("nope.toml"))).is_err());
    }

    #[test]
    fn uri_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("uri");
        std::fs::write(&p, "\n  mongodb://u:p@h/  \n").unwrap();
        assert_eq!(read_uri_file(&p).unwrap(), "mongodb://u:p@h/");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_uri_file(&p).is_err());
    }
}
