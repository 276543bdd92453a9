//! The oplog: point-in-time consistent snapshots and recovery to any time between them.
//!
//! - [`optime`]: oplog positions and the target times people give (`t:i`, RFC 3339).
//! - [`entry`]: what one entry touches, selection, and what replaying it means.

pub mod entry;
pub mod optime;
pub mod capture;
pub mod snapshot;
pub mod replay;
pub mod slices;
pub mod coverage;
pub mod restore;
