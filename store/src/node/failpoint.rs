//! Named crash points, after etcd's gofail failpoints.
//!
//! The shell calls [`Failpoints::reach`] with a point's name at the exact place etcd has the
//! failpoint of that name. A point does nothing until the harness arms it; an armed point acts on
//! its n-th hit after arming: it either crashes the member there (the harness's crash hook runs,
//! then the member's task never resumes) or stalls it there for a while (gofail's `sleep`).
//! The registry lives in the member's environment, so it survives restarts and the harness can
//! read what was reached.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One named point and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    pub name: &'static str,
    pub at: &'static str,
}

/// Every crash point the shell has, in the order a write meets them.
pub const FAILPOINTS: &[Failpoint] = &[
    Failpoint {
        name: "raftBeforeSave",
        at: "after a Ready's committed entries are applied, before its entries and hard state \
             are appended to the WAL",
    },
    Failpoint {
        name: "raftAfterSave",
        at: "after the WAL append and its fdatasync, before the messages that depend on them \
             are sent",
    },
    Failpoint {
        name: "beforeWritebackBuf",
        at: "an entry's request is about to be applied: its writes are not yet in the \
             read-visible state",
    },
    Failpoint {
        name: "afterWritebackBuf",
        at: "an entry's writes are in the read-visible state and the backend's write buffer, \
             not yet committed to the db file",
    },
    Failpoint {
        name: "commitBeforePreCommitHook",
        at: "a backend commit starts: the consistent index and term are not yet in its write set",
    },
    Failpoint {
        name: "commitAfterPreCommitHook",
        at: "the consistent index and term are in the commit's write set, nothing written yet",
    },
    Failpoint {
        name: "beforeCommit",
        at: "the commit's data pages are about to be written and fsynced, then its meta page",
    },
    Failpoint {
        name: "afterCommit",
        at: "the commit's meta page is fsynced: the db file holds the new state",
    },
    Failpoint {
        name: "beforeStartDBTxn",
        at: "after a commit, before the next batch transaction opens",
    },
    Failpoint {
        name: "afterStartDBTxn",
        at: "the next batch transaction is open (an empty write buffer)",
    },
    Failpoint {
        name: "compactBeforeCommitScheduledCompact",
        at: "a Compact is applied: the scheduled compact revision is in the write buffer, \
             before the commit that makes it durable",
    },
    Failpoint {
        name: "compactAfterCommitScheduledCompact",
        at: "the scheduled compact revision is durable; no compaction batch has run",
    },
    Failpoint {
        name: "compactBeforeCommitBatch",
        at: "a compaction batch's deletes are in the write set, before its commit",
    },
    Failpoint {
        name: "compactAfterCommitBatch",
        at: "a compaction batch (not the last) is committed",
    },
    Failpoint {
        name: "compactBeforeSetFinishedCompact",
        at: "the last compaction batch is ready, before the finished compact revision is set \
             and committed with it",
    },
    Failpoint {
        name: "compactAfterSetFinishedCompact",
        at: "the finished compact revision is durable: the compaction is over",
    },
    Failpoint {
        name: "defragBeforeCopy",
        at: "defragment committed the write buffer, before copying live data to the temporary \
             db file",
    },
    Failpoint {
        name: "defragBeforeRename",
        at: "the temporary db file is written and fsynced, before it is renamed over the db file",
    },
    Failpoint {
        name: "raftBeforeSaveSnap",
        at: "a snapshot from the leader is received (its db file written beside the db), before \
             its metadata is saved to the WAL",
    },
    Failpoint {
        name: "raftAfterSaveSnap",
        at: "the received snapshot's metadata is in the WAL, before the log is replaced",
    },
    Failpoint {
        name: "raftBeforeApplySnap",
        at: "the log is replaced by the received snapshot, before its db file replaces the db",
    },
    Failpoint {
        name: "applyBeforeOpenSnapshot",
        at: "the received db file is renamed over the db file, before it is opened",
    },
    Failpoint {
        name: "raftAfterApplySnap",
        at: "the store is restored from the received db file",
    },
    Failpoint {
        name: "raftAfterWALRelease",
        at: "after a snapshot is taken: the db is committed, the snapshot saved and the WAL \
             rewritten without the entries behind it",
    },
];

/// The point named `name`, if there is one.
pub fn failpoint(name: &str) -> Option<&'static Failpoint> {
    FAILPOINTS.iter().find(|p| p.name == name)
}

/// What an armed point does when it triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FailAction {
    /// Crash the member at the point (gofail's `panic`, with the disk losing what is unsynced).
    Crash,
    /// Stall the member at the point for `ms` (gofail's `sleep`).
    Sleep { ms: u64 },
    /// The member's process panics at the point, as a failed invariant check of etcd does: a
    /// finding of the run (see `faultline_sim::Cluster::panics`), never drawn by a fault
    /// profile, armed only by a schedule that asks for it.
    Panic,
}

impl fmt::Display for FailAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailAction::Crash => write!(f, "crash"),
            FailAction::Sleep { ms } => write!(f, "sleep {ms}ms"),
            FailAction::Panic => write!(f, "panic"),
        }
    }
}

/// A point name that is not in [`FAILPOINTS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no crash point is named {0:?} (`faultline failpoints` lists them)")]
pub struct UnknownFailpoint(pub String);

/// An armed point: it triggers on the `hit`-th time it is reached after arming (1 = the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub hit: u64,
    pub action: FailAction,
    /// Times reached since arming.
    pub reached: u64,
    /// Whether it has triggered (it then stays disarmed).
    pub triggered: bool,
}

type CrashHook = Arc<dyn Fn(&'static str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    armed: BTreeMap<&'static str, Armed>,
    /// Times each point was reached over the whole run, armed or not.
    reached: BTreeMap<&'static str, u64>,
    crash_hook: Option<CrashHook>,
}

/// One member's crash points. Cloning gives another handle to the same registry.
#[derive(Clone, Default)]
pub struct Failpoints {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Failpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Failpoints")
            .field("armed", &inner.armed)
            .field("reached", &inner.reached)
            .finish()
    }
}

impl Failpoints {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("failpoints lock")
    }

    /// What crashing the member means: the harness kills the member's node and crashes its disk.
    /// Called at most once per triggered point, from the member's own task.
    pub fn set_crash_hook(&self, hook: impl Fn(&'static str) + Send + Sync + 'static) {
        self.lock().crash_hook = Some(Arc::new(hook));
    }

    /// Arms `name` to act on its `hit`-th hit from now (a `hit` of 0 counts as 1).
    pub fn arm(&self, name: &str, hit: u64, action: FailAction) -> Result<(), UnknownFailpoint> {
        let point = failpoint(name).ok_or_else(|| UnknownFailpoint(name.to_string()))?;
        self.lock().armed.insert(
            point.name,
            Armed {
                hit: hit.max(1),
                action,
                reached: 0,
                triggered: false,
            },
        );
        Ok(())
    }

    /// Drops the crash hook (it may hold what holds these points: a cycle to break when the
    /// member is gone).
    pub fn clear_crash_hook(&self) {
        self.lock().crash_hook = None;
    }

    /// Disarms `name` and says how it went (`None` if it was not armed).
    pub fn disarm(&self, name: &str) -> Option<Armed> {
        let point = failpoint(name)?;
        self.lock().armed.remove(point.name)
    }

    /// How an armed point stands, without disarming it.
    pub fn armed(&self, name: &str) -> Option<Armed> {
        self.lock().armed.get(name).copied()
    }

    /// Times `name` was reached in the run so far.
    pub fn reached(&self, name: &str) -> u64 {
        self.lock().reached.get(name).copied().unwrap_or(0)
    }

    /// Every point reached at least once, with its count.
    pub fn reached_all(&self) -> BTreeMap<&'static str, u64> {
        self.lock().reached.clone()
    }

    /// The shell is at point `name`. Returns at once unless the point is armed and this is its
    /// hit: then it sleeps, or crashes the member and never returns.
    pub async fn reach(&self, name: &'static str) {
        debug_assert!(failpoint(name).is_some(), "unlisted crash point {name}");
        let action = {
            let mut inner = self.lock();
            *inner.reached.entry(name).or_insert(0) += 1;
            match inner.armed.get_mut(name) {
                Some(armed) if !armed.triggered => {
                    armed.reached += 1;
                    if armed.reached >= armed.hit {
                        armed.triggered = true;
                        Some((armed.action, inner.crash_hook.clone()))
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        match action {
            None => {}
            Some((FailAction::Sleep { ms }, _)) => {
                madsim::time::sleep(Duration::from_millis(ms)).await;
            }
            Some((FailAction::Panic, _)) => panic!("failpoint {name} armed to panic"),
            Some((FailAction::Crash, hook)) => {
                if let Some(hook) = hook {
                    hook(name);
                }
                // The member is dead from here on: its task must not take another step.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_named_once() {
        let mut names: Vec<&str> = FAILPOINTS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    #[test]
    fn an_unknown_point_cannot_be_armed() {
        let points = Failpoints::new();
        let err = points
            .arm("raftBeforeSav", 1, FailAction::Crash)
            .unwrap_err();
        assert!(err.to_string().contains("raftBeforeSav"));
    }

    #[madsim::test]
    async fn an_armed_point_acts_on_its_nth_hit_only() {
        let points = Failpoints::new();
        let crashed = Arc::new(Mutex::new(Vec::new()));
        let seen = crashed.clone();
        points.set_crash_hook(move |name| seen.lock().unwrap().push(name));
        points
            .arm("beforeCommit", 3, FailAction::Sleep { ms: 50 })
            .unwrap();
        let start = madsim::time::Instant::now(); // deterministic: madsim's virtual clock
        points.reach("beforeCommit").await;
        points.reach("beforeCommit").await;
        assert!(start.elapsed() < Duration::from_millis(50));
        points.reach("beforeCommit").await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        points.reach("beforeCommit").await;
        assert!(start.elapsed() < Duration::from_millis(100), "it acts once");
        assert_eq!(points.reached("beforeCommit"), 4);
        assert!(points.disarm("beforeCommit").unwrap().triggered);
        assert!(crashed.lock().unwrap().is_empty());
    }

    #[madsim::test]
    async fn a_crash_runs_the_hook_and_never_returns() {
        let points = Failpoints::new();
        let crashed = Arc::new(Mutex::new(Vec::new()));
        let seen = crashed.clone();
        points.set_crash_hook(move |name| seen.lock().unwrap().push(name));
        points.arm("afterCommit", 1, FailAction::Crash).unwrap();
        let task = points.clone();
        let reached = madsim::time::timeout(Duration::from_secs(1), async move {
            task.reach("afterCommit").await;
        })
        .await;
        assert!(reached.is_err(), "the crashed task never resumes");
        assert_eq!(*crashed.lock().unwrap(), vec!["afterCommit"]);
    }
}
