//! Explaining a violation: which operations cannot all have happened as observed.
//!
//! Minimising only ever makes the history more permissive, so whatever it ends with is still a
//! proof that the original history is not linearizable:
//! - it cuts the history at the earliest time `T` such that what happened up to `T` is already
//!   not linearizable (operations invoked after `T` are left out, those still running at `T`
//!   count as of unknown outcome: a linearization of the whole history, cut at `T`, would be one
//!   of that);
//! - it then sets aside the outcome of as many operations as it can (they become of unknown
//!   outcome: may have taken effect at any time after their call, or never) while the rest stays
//!   not linearizable, first in large chunks and then one by one (delta debugging). Setting an
//!   outcome aside only adds possibilities, so an operation that could not be set aside early
//!   cannot be later: the result is 1-minimal when every attempt was decided within budget.
//!
//! Operations are never dropped outright: dropping a write can make a read impossible that was
//! fine, which would blame the wrong operations.

use serde::{Deserialize, Serialize};

use super::search::{Outcome, Progress, Search};
use super::{search_ops, Budget, Model, Operation, SLICE_STEPS};

/// A partition whose search proved it not linearizable.
pub(crate) struct Failing<'s, 'a, M: Model> {
    pub partition: usize,
    pub partitions_total: usize,
    /// The partition's operations, as history indices.
    pub ops: &'s [usize],
    pub search: &'s Search<'a, M>,
}

/// How an operation's outcome enters an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeUse {
    /// As observed: it took effect between call and return, with its output.
    Observed,
    /// The history does not know it: the operation never returned.
    Unknown,
    /// Known, but set aside by the explanation: taken as if it had never returned.
    SetAside,
}

/// One operation in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSummary {
    /// Index into the history.
    pub index: usize,
    pub client: u64,
    pub call: u64,
    pub ret: Option<u64>,
    /// The model's words for it, output included when the history has it.
    pub description: String,
    pub outcome: OutcomeUse,
}

/// One operation of a linearizable prefix and the state after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixStep {
    pub op: OpSummary,
    pub state_after: String,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The partition that failed (index into the model's partitions) and their number.
    pub partition: usize,
    pub partitions_total: usize,
    /// The model's words for the partition, e.g. `key "9"`.
    pub partition_label: String,
    pub partition_operations: usize,
    /// Operations whose observed outcomes cannot all hold, in call order.
    pub core: Vec<OpSummary>,
    /// The other operations that stay in the proof, each of unknown outcome (they may have
    /// taken effect at any time after their call, or never), in call order.
    pub context: Vec<OpSummary>,
    /// Operations of the partition invoked after this time were left out of the proof.
    pub cutoff: Option<u64>,
    /// Operations of the partition in neither `core` nor `context`: invoked after `cutoff`, or
    /// read-only (`Model::is_read_only`) and of unknown outcome, which never matters.
    pub left_out: usize,
    /// The longest order of the proof's operations that the model accepts.
    pub prefix: Vec<PrefixStep>,
    /// The state after the prefix, and the operations that had to come next (real time allows
    /// them and nothing else) but are each illegal in it.
    pub stuck_state: String,
    pub stuck: Vec<OpSummary>,
    /// Whether minimising finished: setting aside any one core operation's outcome makes the
    /// rest linearizable. `false` when the budget ran out first, or when not minimised at all.
    pub minimal: bool,
}

impl Violation {
    /// The explanation in words for people.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let label = if self.partition_label.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.partition_label)
        };
        text.push_str(&format!(
            "not linearizable: partition {} of {}{label}, {}\n",
            self.partition + 1,
            self.partitions_total,
            operations(self.partition_operations)
        ));
        text.push_str(&format!(
            "{} cannot all have taken effect as observed{}:\n",
            operations(self.core.len()),
            if self.minimal {
                " (minimal: setting aside the outcome of any one of them makes the rest \
                 linearizable)"
            } else {
                " (not minimised)"
            }
        ));
        for op in &self.core {
            text.push_str(&format!("  {}\n", line(op)));
        }
        if !self.context.is_empty() {
            text.push_str(&format!(
                "given {} of unknown outcome (each may have taken effect at any time after its \
                 call, or never):\n",
                operations(self.context.len())
            ));
            for op in &self.context {
                text.push_str(&format!("  {}\n", line(op)));
            }
        }
        if self.left_out > 0 {
            let after = self
                .cutoff
                .map_or_else(String::new, |t| format!("invoked after {t} or "));
            text.push_str(&format!(
                "{} of the partition {} left out ({after}read-only with no outcome to explain): \
                 they cannot change the contradiction.\n",
                operations(self.left_out),
                if self.left_out == 1 { "is" } else { "are" }
            ));
        }
        const PREFIX_SHOWN: usize = 12;
        text.push_str(&format!(
            "the longest order the model accepts has {}",
            operations(self.prefix.len())
        ));
        if self.prefix.len() > PREFIX_SHOWN {
            text.push_str(&format!("; its last {PREFIX_SHOWN}:\n"));
        } else {
            text.push_str(if self.prefix.is_empty() { ".\n" } else { ":\n" });
        }
        let skip = self.prefix.len().saturating_sub(PREFIX_SHOWN);
        for (n, step) in self.prefix.iter().enumerate().skip(skip) {
            let state = if step.state_after.is_empty() {
                String::new()
            } else {
                format!("  => {}", step.state_after)
            };
            text.push_str(&format!(
                "  {:>3}. #{} {}{state}\n",
                n + 1,
                step.op.index,
                step.op.description
            ));
        }
        let state = if self.stuck_state.is_empty() {
            String::new()
        } else {
            format!(" in state {}", self.stuck_state)
        };
        text.push_str(&format!(
            "after it, no operation that real time allows next can be placed; each of these is \
             illegal{state}:\n"
        ));
        for op in &self.stuck {
            text.push_str(&format!("  {}\n", line(op)));
        }
        text
    }
}

/// "1 operation", "2 operations".
fn operations(n: usize) -> String {
    format!("{n} operation{}", if n == 1 { "" } else { "s" })
}

fn line(op: &OpSummary) -> String {
    let ret = op.ret.map_or_else(|| "?".to_string(), |r| r.to_string());
    let note = match op.outcome {
        OutcomeUse::Observed => "",
        OutcomeUse::Unknown => "  (never returned)",
        OutcomeUse::SetAside => "  (outcome set aside)",
    };
    format!(
        "#{} client {} [{}, {ret}] {}{note}",
        op.index, op.client, op.call, op.description
    )
}

fn summary<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    index: usize,
    known: bool,
) -> OpSummary {
    let op = &history[index];
    OpSummary {
        index,
        client: op.client,
        call: op.call,
        ret: op.ret,
        description: model.describe(op),
        outcome: if op.ret.is_none() {
            OutcomeUse::Unknown
        } else if known {
            OutcomeUse::Observed
        } else {
            OutcomeUse::SetAside
        },
    }
}

/// A violation straight from the failing search: the whole partition.
pub(crate) fn unminimised<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    failing: Failing<'_, '_, M>,
) -> Violation {
    let mut violation = from_search(
        model,
        history,
        failing.search,
        failing.partition,
        failing.partitions_total,
        failing.ops,
    );
    violation.minimal = false;
    violation
}

/// Builds a violation from a search that ended `NotLinearizable`: its known operations are the
/// core, the rest the context.
fn from_search<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    search: &Search<'_, M>,
    partition: usize,
    partitions_total: usize,
    partition_ops: &[usize],
) -> Violation {
    let ops = search.ops();
    let mut members: Vec<(u64, usize, bool)> = ops
        .iter()
        .map(|op| (history[op.index].call, op.index, op.known))
        .collect();
    members.sort_unstable();
    let core: Vec<OpSummary> = members
        .iter()
        .filter(|m| m.2)
        .map(|m| summary(model, history, m.1, true))
        .collect();
    // A read-only operation of unknown outcome never matters (the search never places it), so
    // it is not worth a reader's time.
    let context: Vec<OpSummary> = members
        .iter()
        .filter(|m| !m.2 && !model.is_read_only(&history[m.1].input))
        .map(|m| summary(model, history, m.1, false))
        .collect();
    let left_out = partition_ops.len() - core.len() - context.len();

    let longest = search.longest();
    let mut state = model.init();
    let mut prefix = Vec::with_capacity(longest.len());
    for &op in longest {
        let op = ops[op as usize];
        let h = &history[op.index];
        let output = if op.known { h.output.as_ref() } else { None };
        state = model
            .step(&state, &h.input, output)
            .expect("a recorded prefix replays legally");
        prefix.push(PrefixStep {
            op: summary(model, history, op.index, op.known),
            state_after: model.describe_state(&state),
        });
    }
    let (stuck_state, window) = search.frontier(longest);
    assert!(
        stuck_state == state,
        "the frontier replays the prefix to the same state"
    );
    let stuck = window
        .iter()
        .map(|&op| summary(model, history, ops[op as usize].index, true))
        .collect();
    Violation {
        partition,
        partitions_total,
        partition_label: model.describe_partition(history, partition_ops),
        partition_operations: partition_ops.len(),
        core,
        context,
        cutoff: None,
        left_out,
        prefix,
        stuck_state: model.describe_state(&stuck_state),
        stuck,
        minimal: false,
    }
}

/// The least states one minimising attempt may use, whatever the original search took. An
/// attempt may use 4 times what the original search took: setting outcomes aside makes a history
/// more permissive, and proving it wrong all the harder.
const ATTEMPT_STATES_MIN: usize = 20_000;
/// All attempts together may use this many attempts' worth of states (and never more than the
/// budget's `max_states`), so explaining costs at most a bounded multiple of deciding.
const ATTEMPTS_AT_MOST: usize = 64;

/// Minimising within the budget: attempts share a bounded number of states, each holds at most
/// what the failing search leaves of the memory limit, and they stop at the deadline.
struct Minimiser<'a, M: Model> {
    model: &'a M,
    history: &'a [Operation<M::Input, M::Output>],
    budget: &'a Budget,
    /// States any one attempt may use.
    attempt_states: usize,
    /// States all attempts may still use.
    states_left: usize,
    /// Bytes any one attempt may hold: what the failing search, kept for the fallback, leaves
    /// of the budget's.
    max_bytes: usize,
    /// Every attempt so far was decided.
    decided: bool,
    /// The deadline passed or the states ran out: stop trying.
    exhausted: bool,
}

impl<M: Model> Minimiser<'_, M> {
    /// Whether `kept` (history indices) with `relaxed` (sorted) set aside is proven not
    /// linearizable.
    fn not_linearizable(&mut self, kept: &[usize], relaxed: &[usize]) -> bool {
        if self.exhausted {
            self.decided = false;
            return false;
        }
        let limit = self.attempt_states.min(self.states_left);
        let mut search = Search::new(
            self.model,
            self.history,
            search_ops(self.history, kept, relaxed),
            limit,
        );
        let outcome = loop {
            match search.run(SLICE_STEPS, self.max_bytes) {
                Progress::Done(outcome) => break Some(outcome),
                Progress::Paused if self.budget.expired() => break None,
                Progress::Paused => {}
            }
        };
        self.states_left -= search.states().min(self.states_left);
        match outcome {
            Some(Outcome::NotLinearizable) => true,
            Some(Outcome::Linearizable) => false,
            // An attempt that ran out of memory is undecided; a later one, setting aside more,
            // may still fit.
            Some(Outcome::OutOfStates | Outcome::OutOfMemory) => {
                self.decided = false;
                if self.states_left == 0 {
                    self.exhausted = true;
                }
                false
            }
            None => {
                self.decided = false;
                self.exhausted = true;
                false
            }
        }
    }
}

/// A violation with the fewest operations minimising could find, within the budget.
pub(crate) fn minimised<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &Budget,
    failing: Failing<'_, '_, M>,
) -> Violation {
    let attempt_states = (4 * failing.search.states())
        .max(ATTEMPT_STATES_MIN)
        .min(budget.max_states);
    let mut minimiser = Minimiser {
        model,
        history,
        budget,
        attempt_states,
        states_left: attempt_states
            .saturating_mul(ATTEMPTS_AT_MOST)
            .min(budget.max_states),
        max_bytes: budget.max_bytes.saturating_sub(failing.search.bytes()),
        decided: true,
        exhausted: false,
    };
    let mut ops: Vec<usize> = failing.ops.to_vec();
    ops.sort_unstable_by_key(|&i| (history[i].call, i));

    // The cut: return times of the known operations, ascending. Cutting at the last one leaves
    // out only unknown operations invoked after everything returned, which nothing can need.
    let mut rets: Vec<u64> = ops.iter().filter_map(|&i| history[i].ret).collect();
    rets.sort_unstable();
    rets.dedup();
    assert!(
        !rets.is_empty(),
        "a partition of unknown operations alone is always linearizable"
    );
    let cut_at = |cutoff: u64| -> (Vec<usize>, Vec<usize>) {
        let kept: Vec<usize> = ops
            .iter()
            .copied()
            .filter(|&i| history[i].call <= cutoff)
            .collect();
        let mut running: Vec<usize> = kept
            .iter()
            .copied()
            .filter(|&i| history[i].ret.is_some_and(|r| r > cutoff))
            .collect();
        running.sort_unstable();
        (kept, running)
    };
    let (mut lo, mut hi) = (0, rets.len() - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (kept, running) = cut_at(rets[mid]);
        if minimiser.not_linearizable(&kept, &running) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let cutoff = rets[hi];
    let (kept, mut relaxed) = cut_at(cutoff);

    // Set aside outcomes, in halving chunks, while the rest stays not linearizable.
    let mut core: Vec<usize> = kept
        .iter()
        .copied()
        .filter(|&i| history[i].ret.is_some() && relaxed.binary_search(&i).is_err())
        .collect();
    let mut chunk = core.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < core.len() && core.len() > 1 {
            let end = (i + chunk).min(core.len());
            let mut trial = relaxed.clone();
            trial.extend_from_slice(&core[i..end]);
            trial.sort_unstable();
            if minimiser.not_linearizable(&kept, &trial) {
                relaxed = trial;
                core.drain(i..end);
            } else {
                i = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }

    // The final search, for the prefix and the stuck operations.
    let mut search = Search::new(
        model,
        history,
        search_ops(history, &kept, &relaxed),
        budget.max_states,
    );
    let outcome = loop {
        match search.run(SLICE_STEPS, minimiser.max_bytes) {
            Progress::Done(outcome) => break Some(outcome),
            Progress::Paused if budget.expired() => break None,
            Progress::Paused => {}
        }
    };
    if outcome != Some(Outcome::NotLinearizable) {
        // Only possible when the budget (time, states or memory) ran out on the very
        // configuration that was proven before; fall back to the original search, which is a
        // proof as it stands.
        return unminimised(model, history, failing);
    }
    let mut violation = from_search(
        model,
        history,
        &search,
        failing.partition,
        failing.partitions_total,
        failing.ops,
    );
    violation.cutoff = Some(cutoff);
    violation.minimal = minimiser.decided && !minimiser.exhausted;
    violation
}
