//! mongokeep: streaming, checksummed, verifiable MongoDB backups into S3 or a local folder.
//!
//! The binary is a thin shell over this library: [`cli`] parses and dispatches, each
//! capability lives in its own module.

pub mod error;
pub mod redact;
pub mod storage;

pub use error::{Error, ExitCode, Result};
pub mod archive;
pub mod backup;
pub mod cli;
pub mod config;
pub mod digest;
pub mod export;
pub mod fetch;
pub mod journal;
pub mod manifest;
pub mod oplog;
pub mod report;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod sample;
pub mod source;
pub mod status;
pub mod verify;
