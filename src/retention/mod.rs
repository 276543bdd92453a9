//! Retention: which snapshots to keep (grandfather-father-son), and `prune`, which removes
//! the rest and the garbage of interrupted runs.
//!
//! - [`policy`]: the TOML policy files of `retention-policies/`, validated.
//! - [`duration`]: restic's durations (`1y2m3d4h`) with calendar arithmetic.
//! - [`period`]: hour, day, ISO week, month and year keys in the policy's time zone.
//! - [`forget`]: restic's `forget` rules, exactly (checked against restic's test vectors).
//! - [`plan`]: the pure plan of a prune, restic's rules plus mongokeep's safety floor.
//! - [`prune`]: reading a repository into an inventory and carrying a plan out.
//! - [`oplog`]: which oplog slices the kept point-in-time snapshots still need.
//! - [`simulate`]: previews over a schedule or a list of times, without a repository.
//!
//! Planning is a pure function of (snapshots, policy, now), so `--dry-run` is "plan, print,
//! stop", and every decision can be tested without a store.

pub mod duration;
pub mod forget;
pub mod oplog;
pub mod period;
pub mod plan;
pub mod policy;
pub mod prune;
pub mod simulate;

pub use duration::Span;
pub use forget::Reason;
pub use period::PeriodKind;
pub use plan::{plan, Decision, Inventory, Plan, SnapshotInfo};
pub use policy::Policy;
