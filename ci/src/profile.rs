//! Named run profiles: the scenario knobs a class of etcd bugs needs (member count, snapshot
//! interval, backend batch limits, traffic mix, maintenance, faults), so that a planted bug is
//! found from random seeds without a hand-written schedule. An option given on the command line
//! wins over the profile; the profile wins over the defaults.

use faultline_workloads::nemesis::SwarmKind;
use faultline_workloads::traffic::OpMix;
use faultline_workloads::FaultProfile;

use crate::run::RunConfig;
use serde::{Deserialize, Serialize};

/// The backend's knobs a run can turn (see the node's `NodeConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendKnobs {
    /// Revisions of writes after which the backend commits at once.
    pub batch_limit: u64,
    /// Deletes per compaction batch.
    pub compaction_batch_limit: usize,
    /// How often a maintenance client defragments a member (0: never).
    pub defrag_every_ms: u64,
}

impl Default for BackendKnobs {
    fn default() -> Self {
        BackendKnobs {
            batch_limit: 1_000,
            compaction_batch_limit: 100,
            defrag_every_ms: 0,
        }
    }
}

/// One named profile: the values it sets; `None` leaves the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    /// What it stresses and which catalogued etcd bugs live there.
    pub about: &'static str,
    pub nodes: Option<usize>,
    pub faults: Option<FaultProfile>,
    pub snapshot_entries: Option<u64>,
    pub rate: Option<u32>,
    pub compact_every_ms: Option<u64>,
    /// An etcd-kv op mix, in `--mix` syntax.
    pub mix: Option<&'static str>,
    pub batch_limit: Option<u64>,
    pub compaction_batch_limit: Option<usize>,
    pub defrag_every_ms: Option<u64>,
    pub watchers: Option<u32>,
    pub watches_per_stream: Option<u32>,
    pub pinned_clients: Option<u32>,
    /// Swarm kinds always on (see `RunConfig::swarm_focus`).
    pub swarm_focus: Option<&'static [SwarmKind]>,
}

const NONE: Profile = Profile {
    name: "",
    about: "",
    nodes: None,
    faults: None,
    snapshot_entries: None,
    rate: None,
    compact_every_ms: None,
    mix: None,
    batch_limit: None,
    compaction_batch_limit: None,
    defrag_every_ms: None,
    watchers: None,
    watches_per_stream: None,
    pinned_clients: None,
    swarm_focus: None,
};

/// Every profile.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "snapshot-churn",
        about: "3 members under heavy writes, a snapshot every 100 entries and backend commits \
                every 8 revisions, crashed at crash points (etcd 13766)",
        nodes: Some(3),
        faults: Some(FaultProfile::CrashPoints),
        snapshot_entries: Some(100),
        rate: Some(50),
        batch_limit: Some(8),
        ..NONE
    },
    Profile {
        name: "lone-member",
        about: "1 member under writes, crashed at random times and crash points (etcd 14370)",
        nodes: Some(1),
        faults: Some(FaultProfile::Crashes),
        rate: Some(40),
        ..NONE
    },
    Profile {
        name: "defrag",
        about: "1 member defragmented every 400 ms under writes, crashed at crash points \
                (etcd 14685)",
        nodes: Some(1),
        faults: Some(FaultProfile::CrashPoints),
        defrag_every_ms: Some(400),
        ..NONE
    },
    Profile {
        name: "compaction",
        about: "1 member, creates and deletes, compaction every 500 ms in batches of 2 deletes, \
                6 watchers, crashed at crash points (etcd 17780, 19179)",
        nodes: Some(1),
        faults: Some(FaultProfile::CrashPoints),
        compact_every_ms: Some(500),
        mix: Some("put=20,delete=20"),
        compaction_batch_limit: Some(2),
        watchers: Some(6),
        ..NONE
    },
    Profile {
        name: "slow-watchers",
        about: "3 members under swarm faults, 8 watchers each opening up to 6 watches on one \
                stream, creates and deletes, compaction every 500 ms: slowed watch streams fill \
                up and their watchers fall behind the compaction (etcd 17529)",
        nodes: Some(3),
        faults: Some(FaultProfile::Swarm),
        compact_every_ms: Some(500),
        mix: Some("put=20,delete=20"),
        watchers: Some(8),
        watches_per_stream: Some(6),
        swarm_focus: Some(&[SwarmKind::SlowWatchers]),
        ..NONE
    },
    Profile {
        name: "leader-pause",
        about: "3 members under swarm faults, every client talking to one member only (as API \
                servers talk to their local member), so that a paused and resumed old leader \
                still has clients (etcd 20418)",
        nodes: Some(3),
        faults: Some(FaultProfile::Swarm),
        pinned_clients: Some(8),
        swarm_focus: Some(&[SwarmKind::LeaderPause]),
        ..NONE
    },
];

impl Profile {
    /// Sets what the profile sets on `config`.
    pub fn apply(&self, config: &mut RunConfig) -> Result<(), String> {
        if let Some(nodes) = self.nodes {
            config.nodes = nodes;
        }
        if let Some(faults) = self.faults {
            config.faults = faults;
        }
        if let Some(entries) = self.snapshot_entries {
            config.snapshot_entries = entries;
        }
        if let Some(rate) = self.rate {
            config.workload.rate_per_client = rate;
        }
        if let Some(every) = self.compact_every_ms {
            config.workload.compact_every_ms = every;
        }
        if let Some(mix) = self.mix {
            config.workload.mix = OpMix::parse(mix)?;
        }
        if let Some(limit) = self.batch_limit {
            config.backend.batch_limit = limit;
        }
        if let Some(limit) = self.compaction_batch_limit {
            config.backend.compaction_batch_limit = limit;
        }
        if let Some(every) = self.defrag_every_ms {
            config.backend.defrag_every_ms = every;
        }
        if let Some(watchers) = self.watchers {
            config.workload.watchers = watchers;
        }
        if let Some(per_stream) = self.watches_per_stream {
            config.workload.watches_per_stream = per_stream;
        }
        if let Some(focus) = self.swarm_focus {
            config.swarm_focus = focus.to_vec();
        }
        if let Some(pinned) = self.pinned_clients {
            config.workload.pinned_clients = pinned;
        }
        Ok(())
    }

    /// A run of this profile: the defaults, then the profile's values.
    pub fn config(&self, seed: u64) -> RunConfig {
        let mut config = RunConfig {
            seed,
            profile: Some(self.name.to_string()),
            ..RunConfig::default()
        };
        self.apply(&mut config).expect("a profile's own mix parses");
        config
    }

    pub fn parse(name: &str) -> Result<Profile, String> {
        PROFILES
            .iter()
            .find(|p| p.name == name)
            .copied()
            .ok_or_else(|| {
                format!(
                    "unknown profile {name:?}; known: {}",
                    PROFILES
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_makes_a_valid_run() {
        for p in PROFILES {
            p.config(1)
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn profiles_parse_by_name_and_unknown_names_are_refused() {
        for p in PROFILES {
            assert_eq!(Profile::parse(p.name).unwrap(), *p);
        }
        let err = Profile::parse("nope").unwrap_err();
        assert!(err.contains("snapshot-churn"), "{err}");
    }
}
