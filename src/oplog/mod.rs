//! The oplog: point-in-time consistent snapshots, oplog slices between them, and restores
//! to any time they cover (see `docs/pitr.md`).
//!
//! - [`optime`]: oplog positions and the target times people give (`t:i`, RFC 3339).
//! - [`entry`]: what one entry touches, whether a selection keeps it, and the replay steps
//!   it becomes.
//! - [`capture`]: reading `local.oplog.rs` from a position to a stop position into one
//!   stored object (gzip, sha256).
//! - [`snapshot`]: a backup's dump with the oplog written meanwhile: point-in-time.
//! - [`slices`]: `oplog push`, the slices it stores, and gap detection.
//! - [`coverage`]: which times each snapshot can be restored to (pure).
//! - [`replay`]: applying stored entries with `applyOps`.
//! - [`restore`]: restoring a snapshot to a time: plan, verify, restore, replay.

pub mod capture;
pub mod coverage;
pub mod entry;
pub mod optime;
pub mod replay;
pub mod restore;
pub mod slices;
pub mod snapshot;
