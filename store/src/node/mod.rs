//! The node shell around the core: Raft replication (raft-rs), persistence (WAL and snapshot
//! files on a [`disk::Disk`]), the network protocol and the client.
//!
//! Unlike the core, this layer does IO: it runs inside madsim, whose network, clock and
//! scheduler it uses. The core modules never import anything from here.

pub mod backend;
pub mod client;
pub mod disk;
pub mod failpoint;
pub mod log_store;
pub mod protocol;
pub mod server;
pub mod time;
pub mod wal;
