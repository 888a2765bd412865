//! The watch checker: judges what watchers received against what the cluster committed.
//!
//! Three parts:
//! - [`format`](mod@format): the watch history, a JSON Lines file (`faultline-watches`,
//!   version 1) with one [`WatchRecord`] a line: what a watch asked for and every response,
//!   progress notification, compaction cancel and resume it saw, with times and members. Users
//!   can write it from their own systems.
//! - [`committed`](mod@committed): the committed history ([`CommittedHistory`]: every
//!   revision's events, the compactions, the final revision), which a run with ground truth
//!   fills from the cluster, and [`reconstruct`], which rebuilds it black-box from the watch
//!   streams and the client history.
//! - [`check`](check()): the guarantees of etcd-semantics.md ("Watch") per watch (ordered,
//!   unique, atomic, reliable, resumable, bookmarkable, faithful), plus the filter, compaction
//!   cancels and liveness, in a [`WatchReport`] that names each broken property, the watch and
//!   the events and items involved.
//!
//! What this module must never do: depend on the simulator or the store (it knows etcd only
//! through the two history formats and the contract), or cost more than about linear time in
//! the number of events (histories hold tens of thousands): every check walks a watch's
//! items once, with ordered maps for lookups.

pub mod check;
pub mod committed;
pub mod format;

pub use check::{check, Property, Violation, WatchCounts, WatchReport, WatchTotals};
pub use committed::{reconstruct, CommittedEvent, CommittedHistory, ReconstructError};
pub use format::{
    EventKind, WatchEvent, WatchHistory, WatchHistoryError, WatchItem, WatchRecord, FORMAT, VERSION,
};
