//! Linearizability checking of a history against a sequential model, by Wing & Gong's search
//! with Lowe's improvements (the algorithm of porcupine): a depth-first search for an order of
//! the operations that respects real time and that the model accepts, with every configuration
//! (linearized set, state) memoised, on each independent partition of the history separately.
//!
//! What it decides: whether each operation can be given one instant between its call and its
//! return at which it took effect, such that the model, stepping through the operations in that
//! order, produces exactly the outputs that were observed. An operation whose outcome is unknown
//! (`ret` is `None`: a timeout, a lost reply) took effect at some instant after its call, or
//! never; nothing forces it to happen, and if it happens its output is not checked.
//!
//! What it must never do: hang or pass silently. Every search runs under a [`Budget`] and
//! answers [`Verdict::Unknown`] when it runs out. It knows nothing of the simulator or the
//! store: it reads operations and asks the [`Model`].

mod budget;
mod explain;
mod search;

use serde::{Deserialize, Serialize};

pub use budget::{human_bytes, Budget, Undecided, UndecidedPartition, UndecidedReason};
pub use explain::{OpSummary, OutcomeUse, PrefixStep, Violation};
use search::{Outcome, Progress, Search, SearchOp};

/// A sequential specification: the state of the object and how each operation changes it.
pub trait Model {
    /// The object's state. Equal states must behave identically: the search memoises on it.
    type State: Clone + Eq + std::hash::Hash;
    type Input;
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` is applied to `state`, or `None` if that is illegal: the output
    /// observed (`Some`) is not what the object would answer in `state`. With `output == None`
    /// the outcome is unknown: the operation takes effect with whatever output it would have.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether `input` never changes the state: in every state where it is legal, its step
    /// returns that same state (a read). The search then places such an operation as soon as it
    /// is legal and real time allows, and tries nothing else there, since any order that places
    /// it later works with it placed first. Only a speed-up, and the default is `false`; a
    /// `true` for an operation that can change the state gives wrong verdicts.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Independent sub-histories, as lists of indices into `ops`: each is checked on its own,
    /// and the history is linearizable exactly when each of them is (for example one per key
    /// of a key-value map). Every index must appear in exactly one partition.
    fn partition(&self, ops: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }

    /// One operation in words, its output included when known: `write 3`, `read -> 3`.
    fn describe(&self, op: &Operation<Self::Input, Self::Output>) -> String;

    /// An estimate of the memory `state` takes in all: its own size plus the heap memory it
    /// owns (strings' capacities, collections' buffers and nodes). The search adds it up over
    /// the states it keeps to honour the budget's `max_bytes`, so an estimate on the low side
    /// lets a check grow past its limit. Memory a state shares with other states (through an
    /// `Rc`) may be counted in shares, its size over the number of holders: the search measures
    /// a new state before it keeps a copy. The default, `size_of::<Self::State>()`, is right
    /// for states that own nothing on the heap.
    fn state_bytes(&self, _state: &Self::State) -> usize {
        std::mem::size_of::<Self::State>()
    }

    /// A state in words, for explanations (the default says nothing).
    fn describe_state(&self, _state: &Self::State) -> String {
        String::new()
    }

    /// What a partition holds in words, e.g. `key "9"` (the default says nothing).
    fn describe_partition(
        &self,
        _ops: &[Operation<Self::Input, Self::Output>],
        _partition: &[usize],
    ) -> String {
        String::new()
    }
}

/// One operation as a client saw it. Times are in any unit (nanoseconds in Faultline), on one
/// clock shared by all clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// The client (process) that issued it.
    pub client: u64,
    /// When it was invoked.
    pub call: u64,
    /// When its outcome was seen, at or after `call`; `None` = it never returned, the outcome
    /// is unknown: it took effect at some point after `call`, or never. `output` is then
    /// ignored.
    pub ret: Option<u64>,
    pub input: I,
    /// What it returned; `None` = it returned, but what it returned is not known, so any
    /// output is accepted (it still took effect before `ret`).
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output` at `ret`.
    pub fn completed(client: u64, call: u64, ret: u64, input: I, output: O) -> Self {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            output: Some(output),
        }
    }

    /// An operation that never returned: it may have taken effect at any time after `call`.
    pub fn unknown(client: u64, call: u64, input: I) -> Self {
        Operation {
            client,
            call,
            ret: None,
            input,
            output: None,
        }
    }

    /// Whether the operation never returned.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none()
    }
}

/// The answer of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Linearizable(Witness),
    NotLinearizable(Violation),
    /// The budget ran out before every partition was decided, and none was found to violate.
    Unknown(Undecided),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable(_))
    }

    pub fn is_not_linearizable(&self) -> bool {
        matches!(self, Verdict::NotLinearizable(_))
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Verdict::Unknown(_))
    }

    /// The verdict in words for people.
    pub fn render(&self) -> String {
        match self {
            Verdict::Linearizable(witness) => format!(
                "linearizable: {} partitions, {} operations placed\n",
                witness.order.len(),
                witness.order.iter().map(Vec::len).sum::<usize>()
            ),
            Verdict::NotLinearizable(violation) => violation.render(),
            Verdict::Unknown(undecided) => undecided.render(),
        }
    }
}

/// One legal order for each partition, as indices into the history. Unknown-outcome operations
/// that need not have taken effect are absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    pub order: Vec<Vec<usize>>,
    /// Configurations memoised over all partitions: how hard the search worked.
    pub states_explored: u64,
}

/// Search loop iterations per slice: between slices the deadline is checked and the next
/// partition gets its turn, so a partition that is hard never starves one that is quick to
/// prove a violation (porcupine gets the same effect from goroutines).
const SLICE_STEPS: u64 = 1 << 14;

/// Checks `history` and, if it is not linearizable, explains why with a minimised set of
/// operations (minimising spends what is left of the budget; see [`Violation`]).
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &Budget,
) -> Verdict {
    run(model, history, budget, true)
}

/// Like [`check`], without minimising a violation: it names the failing partition, the longest
/// linearizable prefix found and the operations that could not be placed after it.
pub fn decide<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &Budget,
) -> Verdict {
    run(model, history, budget, false)
}

fn run<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: &Budget,
    minimise: bool,
) -> Verdict {
    for (i, op) in history.iter().enumerate() {
        if let Some(ret) = op.ret {
            assert!(
                ret >= op.call,
                "operation {i} returns at {ret}, before its call at {}",
                op.call
            );
        }
    }
    let partitions = model.partition(history);
    let mut seen = vec![false; history.len()];
    for partition in &partitions {
        for &i in partition {
            assert!(
                i < history.len(),
                "partition index {i} is outside the history"
            );
            assert!(!seen[i], "operation {i} is in two partitions");
            seen[i] = true;
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "every operation must be in a partition"
    );

    let mut searches: Vec<Option<Search<'_, M>>> = partitions
        .iter()
        .map(|partition| {
            Some(Search::new(
                model,
                history,
                search_ops(history, partition, &[]),
                budget.max_states,
            ))
        })
        .collect();
    // The searches share the memory limit: each slice may hold what the others leave.
    let mut held: usize = searches.iter().flatten().map(Search::bytes).sum();
    let mut witness = vec![Vec::new(); partitions.len()];
    let mut undecided = Vec::new();
    let mut states_explored = 0u64;
    let mut checked = 0;
    let mut pending: Vec<usize> = (0..partitions.len()).collect();
    let mut deadline_passed = false;
    while !pending.is_empty() {
        let mut still = Vec::with_capacity(pending.len());
        for &p in &pending {
            let search = searches[p]
                .as_mut()
                .expect("a pending partition has a search");
            let others = held - search.bytes();
            let progress = search.run(SLICE_STEPS, budget.max_bytes.saturating_sub(others));
            held = others + search.bytes();
            let reason = match progress {
                Progress::Paused => {
                    still.push(p);
                    continue;
                }
                Progress::Done(Outcome::Linearizable) => {
                    witness[p] = search
                        .order()
                        .iter()
                        .map(|&op| search.ops()[op as usize].index)
                        .collect();
                    states_explored += search.states() as u64;
                    checked += 1;
                    held = others;
                    searches[p] = None;
                    continue;
                }
                Progress::Done(Outcome::NotLinearizable) => {
                    let search = searches[p].take().expect("the failing search");
                    // Free the other searches' memo tables before explaining.
                    searches.clear();
                    let failing = explain::Failing {
                        partition: p,
                        partitions_total: partitions.len(),
                        ops: &partitions[p],
                        search: &search,
                    };
                    return Verdict::NotLinearizable(if minimise {
                        explain::minimised(model, history, budget, failing)
                    } else {
                        explain::unminimised(model, history, failing)
                    });
                }
                Progress::Done(Outcome::OutOfStates) => UndecidedReason::MaxStates,
                Progress::Done(Outcome::OutOfMemory) => UndecidedReason::MaxBytes,
            };
            states_explored += search.states() as u64;
            undecided.push(UndecidedPartition {
                partition: p,
                label: model.describe_partition(history, &partitions[p]),
                operations: partitions[p].len(),
                reason,
                states: search.states(),
                bytes: search.bytes(),
            });
            // Its memory goes back to the partitions still searching.
            held = others;
            searches[p] = None;
        }
        pending = still;
        if !pending.is_empty() && budget.expired() {
            deadline_passed = true;
            break;
        }
    }
    if deadline_passed {
        for &p in &pending {
            let search = searches[p]
                .as_ref()
                .expect("a pending partition has a search");
            states_explored += search.states() as u64;
            undecided.push(UndecidedPartition {
                partition: p,
                label: model.describe_partition(history, &partitions[p]),
                operations: partitions[p].len(),
                reason: UndecidedReason::Deadline,
                states: search.states(),
                bytes: search.bytes(),
            });
        }
    }
    if undecided.is_empty() {
        return Verdict::Linearizable(Witness {
            order: witness,
            states_explored,
        });
    }
    undecided.sort_by_key(|u| u.partition);
    let out_of_memory = undecided
        .iter()
        .any(|u| u.reason == UndecidedReason::MaxBytes);
    Verdict::Unknown(Undecided {
        reason: if deadline_passed {
            UndecidedReason::Deadline
        } else if out_of_memory {
            UndecidedReason::MaxBytes
        } else {
            UndecidedReason::MaxStates
        },
        partitions_total: partitions.len(),
        partitions_checked: checked,
        undecided,
        states_explored,
        max_bytes: budget.max_bytes,
    })
}

/// The operations of a partition for a search; those in `relaxed` (sorted history indices) are
/// taken as of unknown outcome.
fn search_ops<I, O>(
    history: &[Operation<I, O>],
    partition: &[usize],
    relaxed: &[usize],
) -> Vec<SearchOp> {
    partition
        .iter()
        .map(|&index| SearchOp {
            index,
            known: history[index].ret.is_some() && relaxed.binary_search(&index).is_err(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
