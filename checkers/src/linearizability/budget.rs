//! What a check may spend (a deadline, memoised configurations, bytes held) and what an
//! `Unknown` verdict says when that runs out: which limit, which partitions, how far each got.
//!
//! It must never decide anything: it only holds the limits the search obeys and the record of
//! where it stopped.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Limits on a check. Checkers run outside the simulation, so wall-clock time is fine here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Give up (answer `Unknown`) when this instant passes.
    pub deadline: Option<Instant>,
    /// At most this many memoised configurations per partition search (this bounds memory: a
    /// configuration costs a bitset of the partition's operations plus one state).
    pub max_states: usize,
    /// At most this many bytes held by a check at once, by the checker's own accounting of what
    /// it allocates; past it the check answers `Unknown` rather than grow.
    pub max_bytes: usize,
}

impl Budget {
    /// The default limit on memoised configurations per partition: about a million, which is
    /// about a second of search and, with the corpus's models, 50-250 bytes a configuration
    /// (a kv state holds its strings). Every history of the shared corpus that porcupine decides
    /// needs at most a few tens of thousands per partition.
    pub const DEFAULT_MAX_STATES: usize = 1 << 20;

    /// The default memory limit of a check: 4 GiB, well under what a developer's machine or a
    /// CI runner has, and far above what a decided check needs.
    pub const DEFAULT_MAX_BYTES: usize = 4 << 30;

    /// No deadline, at most `max_states` configurations per partition.
    pub fn states(max_states: usize) -> Self {
        Budget {
            deadline: None,
            max_states,
            max_bytes: Budget::DEFAULT_MAX_BYTES,
        }
    }

    /// The same budget, holding at most `max_bytes` at once.
    pub fn with_max_bytes(self, max_bytes: usize) -> Self {
        Budget { max_bytes, ..self }
    }

    /// The same budget, ending at `deadline`.
    pub fn with_deadline(self, deadline: Instant) -> Self {
        Budget {
            deadline: Some(deadline),
            ..self
        }
    }

    /// The same budget, ending `timeout` from now.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.with_deadline(Instant::now() + timeout)
    }

    pub(crate) fn expired(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

impl Default for Budget {
    /// No deadline, [`Budget::DEFAULT_MAX_STATES`] configurations per partition,
    /// [`Budget::DEFAULT_MAX_BYTES`] in all.
    fn default() -> Self {
        Budget::states(Budget::DEFAULT_MAX_STATES)
    }
}

/// Why a check could not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UndecidedReason {
    /// The budget's deadline passed.
    Deadline,
    /// The search of a partition reached `max_states` memoised configurations.
    MaxStates,
    /// Keeping one more configuration would have made the check hold more than `max_bytes`.
    MaxBytes,
}

/// One partition the budget did not suffice for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndecidedPartition {
    pub partition: usize,
    pub label: String,
    pub operations: usize,
    pub reason: UndecidedReason,
    /// Configurations memoised before giving up.
    pub states: usize,
    /// The bytes its search held when it gave up, by the checker's accounting.
    pub bytes: usize,
}

/// What an `Unknown` verdict knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecided {
    /// `Deadline` if the deadline passed, else `MaxBytes` if a partition ran out of memory, else
    /// `MaxStates`.
    pub reason: UndecidedReason,
    pub partitions_total: usize,
    /// Partitions found linearizable.
    pub partitions_checked: usize,
    pub undecided: Vec<UndecidedPartition>,
    /// Configurations memoised over all partitions.
    pub states_explored: u64,
    /// The budget's memory limit, for the explanation.
    pub max_bytes: usize,
}

impl Undecided {
    pub fn render(&self) -> String {
        let mut text = format!(
            "unknown: the budget ran out ({}); {} of {} partitions are linearizable, none was \
             found to violate, {} undecided\n",
            match self.reason {
                UndecidedReason::Deadline => "deadline passed".to_string(),
                UndecidedReason::MaxStates => "too many states".to_string(),
                UndecidedReason::MaxBytes =>
                    format!("memory limit of {} reached", human_bytes(self.max_bytes)),
            },
            self.partitions_checked,
            self.partitions_total,
            self.undecided.len()
        );
        for p in &self.undecided {
            let label = if p.label.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.label)
            };
            let end = match p.reason {
                UndecidedReason::Deadline => "deadline passed".to_string(),
                UndecidedReason::MaxStates => "reached max_states".to_string(),
                UndecidedReason::MaxBytes => format!(
                    "holding {}, reached max_bytes ({})",
                    human_bytes(p.bytes),
                    human_bytes(self.max_bytes)
                ),
            };
            text.push_str(&format!(
                "  partition {}{label}: {} operations, {} states explored, {end}\n",
                p.partition + 1,
                p.operations,
                p.states,
            ));
        }
        text
    }
}

/// A size for people, in binary units with one decimal: `512 B`, `1.5 KiB`, `4.0 GiB`.
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_render_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
    }
}
