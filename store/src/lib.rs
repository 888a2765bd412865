//! Faultline's reference store: an etcd v3 state machine.
//!
//! The crate is a pure core in the style of raft-rs's `RawNode`: requests, committed entries and
//! the current time (a number) go in, responses and watch notifications come out. It performs no
//! IO, reads no clock, draws no random numbers and knows nothing of the simulator; the node shell
//! around it replicates requests through Raft and persists its images.
//!
//! - [`api`]: etcd's request and response shapes.
//! - [`store::Store`]: apply, admit, local reads, leases, maintenance, watch, images.
//! - [`mvcc`]: the multi-version keyspace; [`backend`]: bbolt-like space accounting.
//! - [`lease`]: the lease table; [`watch`]: the watch hub.

pub mod api;
pub mod backend;
pub mod bugs;
pub mod db;
pub mod error;
pub mod lease;
pub mod mvcc;
pub mod persist;
pub mod store;
pub mod watch;

pub use api::*;
pub use bugs::PlantedBugs;
pub use error::EtcdError;
pub use store::{ImageError, Store, StoreConfig, StoreImage};
pub mod node;
