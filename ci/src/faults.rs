//! Carrying out a fault schedule on a live cluster, on time: aimed faults are resolved to a member
//! when they are applied (the leader, the member furthest behind, or the member an earlier fault
//! of the episode hit), a crash-point fault that picks its point is armed at one its member has
//! passed, and a fault that waits for a new leader is applied as soon as a member its
//! episode has not hit leads. The cluster's trace records each fault as applied. Never draws a
//! fault: what happens is the schedule's alone, so the same schedule and seed give the same run.

use std::collections::{BTreeMap, BTreeSet};

use faultline_sim::{Cluster, Fault, MemberStatus};
use faultline_store::node::protocol::NodeId;
use faultline_workloads::nemesis::{Aim, PointPick, Wait};
use faultline_workloads::{Schedule, TimedFault};

/// A schedule being carried out.
#[derive(Debug)]
pub struct FaultDriver {
    schedule: Schedule,
    applied: Vec<bool>,
    /// Per episode, the members its aimed faults hit, in order.
    aimed: BTreeMap<u32, Vec<NodeId>>,
    /// Per episode, every member its faults hit so far.
    hit: BTreeMap<u32, BTreeSet<NodeId>>,
    /// Per episode, the crash point its pick chose.
    picked: BTreeMap<u32, String>,
    next: usize,
}

impl FaultDriver {
    pub fn new(schedule: Schedule) -> Self {
        let applied = vec![false; schedule.faults.len()];
        FaultDriver {
            schedule,
            applied,
            aimed: BTreeMap::new(),
            hit: BTreeMap::new(),
            picked: BTreeMap::new(),
            next: 0,
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The index of the next fault due at `elapsed_ms`, if any: in order of time, except that a
    /// waiting fault whose episode has begun goes as soon as its new leader is there.
    pub fn due(&self, cluster: &Cluster, elapsed_ms: u64) -> Option<usize> {
        let leader = cluster.leader();
        let pending = self.schedule.faults.iter().enumerate().skip(self.next);
        for (i, t) in pending.filter(|(i, _)| !self.applied[*i]) {
            if t.at_ms <= elapsed_ms {
                return Some(i);
            }
            if t.wait == Some(Wait::NewLeader) && self.new_leader(t, leader) {
                return Some(i);
            }
        }
        None
    }

    /// Whether a member its episode has not hit leads, once the episode has begun.
    fn new_leader(&self, t: &TimedFault, leader: Option<NodeId>) -> bool {
        let Some(hit) = t.episode.and_then(|e| self.hit.get(&e)) else {
            return false;
        };
        leader.is_some_and(|l| !hit.contains(&l))
    }

    /// Applies fault `i`, resolved against the cluster, and returns it as applied.
    pub fn apply(&mut self, cluster: &mut Cluster, i: usize) -> Fault {
        let t = self.schedule.faults[i].clone();
        let fault = match t.aim {
            None => t.fault.clone(),
            Some(aim) => {
                let node = self.resolve(cluster, &t, aim);
                if let Some(e) = t.episode {
                    self.aimed.entry(e).or_default().push(node);
                }
                t.fault.aimed_at(node).unwrap_or_else(|| t.fault.clone())
            }
        };
        let fault = match t.pick {
            None => fault,
            Some(pick) => self.pick_point(cluster, &t, pick, fault),
        };
        if let Some(e) = t.episode {
            self.hit.entry(e).or_default().extend(fault.nodes());
        }
        cluster.apply(&fault);
        self.applied[i] = true;
        while self.next < self.applied.len() && self.applied[self.next] {
            self.next += 1;
        }
        fault
    }

    /// `fault` at the crash point `pick` says, on the member it already names.
    fn pick_point(
        &mut self,
        cluster: &Cluster,
        t: &TimedFault,
        pick: PointPick,
        fault: Fault,
    ) -> Fault {
        let point = match pick {
            PointPick::Reached(n) => {
                let Some(&node) = fault.nodes().first() else {
                    return fault;
                };
                // In name order: the registry's map is ordered.
                let passed: Vec<&str> =
                    cluster.failpoints(node).reached_all().into_keys().collect();
                let Some(point) = passed.get(n as usize % passed.len().max(1)) else {
                    return fault;
                };
                if let Some(e) = t.episode {
                    self.picked.insert(e, point.to_string());
                }
                point.to_string()
            }
            PointPick::Picked => match t.episode.and_then(|e| self.picked.get(&e)) {
                Some(point) => point.clone(),
                None => return fault,
            },
        };
        fault.at_point(&point).unwrap_or(fault)
    }

    fn resolve(&self, cluster: &Cluster, t: &TimedFault, aim: Aim) -> NodeId {
        let own = t.fault.nodes().first().copied().unwrap_or(1);
        match aim {
            Aim::Leader => cluster.leader().unwrap_or(own),
            Aim::Lagging => cluster
                .member_ids()
                .into_iter()
                .filter(|m| cluster.status(*m) == MemberStatus::Up)
                .min_by_key(|m| (cluster.probe(*m).applied, *m))
                .unwrap_or(own),
            Aim::Same(n) => t
                .episode
                .and_then(|e| self.aimed.get(&e))
                .and_then(|members| members.get(n.saturating_sub(1) as usize))
                .copied()
                .unwrap_or(own),
        }
    }
}
