//! Checkers: they read histories (what clients asked and saw) and return verdicts. They know
//! nothing of the simulator or of the store's internals, so they judge any system's histories.
//!
//! - [`linearizability`]: the generic engine (Wing & Gong's search with Lowe's improvements, as
//!   in porcupine), with budgets and explained violations.
//! - [`register`] and [`kv`]: sequential models for it.
//! - [`corpus`]: readers for the shared corpus of histories with known verdicts.

pub mod corpus;
pub mod etcd;
pub mod history;
mod jsonl;
pub mod kv;
pub mod linearizability;
pub mod register;
pub mod resolve;
pub mod watch;
