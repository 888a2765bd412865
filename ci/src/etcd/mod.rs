//! A real etcd next to the simulation: processes on loopback and the translation between the
//! store's API and etcd's gRPC. Used by the conformance test and by `faultline run --target etcd`;
//! nothing here runs inside madsim.

pub mod convert;
pub mod keyspace;
pub mod process;
pub mod target;
