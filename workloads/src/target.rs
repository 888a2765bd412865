//! What a workload runs against, and the clock it runs on.
//!
//! The traffic clients only need two things from their surroundings: something that answers a
//! history request with an outcome (a [`Target`]) and a clock to pace themselves by (a [`Clock`]).
//! In a simulation these are the store's client and madsim's clock; against a real etcd, an etcd
//! client and the machine's clock on a tokio runtime.

use std::future::Future;
use std::time::Duration;

use faultline_checkers::history;
use faultline_store::node::client::Client;
use faultline_store::node::protocol::ClientRequest;
use faultline_store::node::time::now;

use crate::record::{from_store, to_store};

/// Something that answers history requests: the simulated store's client, or a real etcd.
pub trait Target: Clone + Send + Sync + 'static {
    /// Sends `request` and classifies how it ended (ok, failed, or unknown).
    fn call(&self, request: &history::Request) -> impl Future<Output = history::Outcome> + Send;
}

impl Target for Client {
    fn call(&self, request: &history::Request) -> impl Future<Output = history::Outcome> + Send {
        let request = ClientRequest::Kv(to_store(request));
        async move { from_store(self.request(request).await) }
    }
}

/// A run's clock: time since the run started, and sleeping.
///
/// `Simulated` reads and sleeps on madsim's clock and only works inside a simulation; `Real`
/// reads `std::time::Instant` and sleeps on tokio's timer, and only works outside one.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    Simulated(madsim::time::Instant),
    Real(std::time::Instant),
}

impl Clock {
    /// A simulated clock starting now.
    pub fn simulated() -> Self {
        Clock::Simulated(now())
    }

    /// A real clock starting now, for runs against real etcd processes. The wall clock is
    /// read here only; a simulated run never constructs this variant.
    pub fn real() -> Self {
        Clock::Real(std::time::Instant::now()) // deterministic: real mode only, never simulated
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        match self {
            Clock::Simulated(start) => now().duration_since(*start),
            Clock::Real(start) => start.elapsed(),
        }
    }

    /// Sleeps for `duration` on this clock.
    pub async fn sleep(&self, duration: Duration) {
        match self {
            Clock::Simulated(_) => madsim::time::sleep(duration).await,
            Clock::Real(_) => tokio::time::sleep(duration).await,
        }
    }
}
