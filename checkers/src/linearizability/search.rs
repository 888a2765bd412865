//! One resumable Wing & Gong search over one partition, with Lowe's improvements (as in
//! porcupine): the history is a doubly linked list of call and return entries, linearizing an
//! operation lifts its two entries out of the list and backtracking puts them back (dancing
//! links, so both are O(1)), and every configuration reached (the set of linearized operations
//! as a bitset, plus the model's state) is memoised so that no configuration is explored twice.
//!
//! Unknown-outcome operations have a call entry and no return entry: nothing ever forces them to
//! be linearized, so the search succeeds as soon as only such call entries are left, and an
//! unknown operation whose step would leave the state unchanged is never linearized (doing so
//! could only remove options). The memo table goes one step further for them: a configuration is
//! skipped when one with the same state, the same known operations linearized and a subset of
//! its unknown operations linearized was seen, because every continuation of the new one is also
//! a continuation of the old (which has the same operations left, and more unknown ones). The
//! search stays complete: take, among configurations visited by a failed search that can still
//! succeed, one with the most known operations and then the fewest unknown steps before its next
//! known step; its next step on a winning path was either visited or skipped for a configuration
//! that is at least as good by that order, a contradiction either way.
//!
//! A read-only operation (`Model::is_read_only`) that is legal where the scan meets it is placed
//! there and nothing else is tried in that configuration: any order placing it later can place it
//! there instead. This turns the usual pile of concurrent reads into a straight line.
//!
//! The search never reads a clock: the caller runs it in slices of a bounded number of steps and
//! decides between slices whether time is up. It must never allocate without bound: the memo
//! table stops at `max_states` configurations and the search then answers `OutOfStates`; and
//! before it keeps a configuration it adds up what that would make it hold (`bytes`: its
//! arrays, the memo table's bitsets, states and hash tables, the stack, with the model's estimate
//! of each state's heap memory, `Model::state_bytes`, and any allocation a push would grow), and
//! answers `OutOfMemory` instead when that would pass the slice's byte limit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::mem::size_of;

use super::{Model, Operation};

/// The end of the entry list, and "no return entry" for an unknown operation's call entry.
const NONE: u32 = u32::MAX;
/// The list's head sentinel; real entries are numbered from 1.
const HEAD: usize = 0;
/// A cursor value: undo the latest choice too (its configuration has no other branch to try).
const BACKTRACK: u32 = u32::MAX - 2;

/// One operation as this search sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchOp {
    /// Index into the whole history.
    pub index: usize,
    /// When `false` the operation's output is withheld from the model and it has no return
    /// entry: it may take effect at any point after its call, or never.
    pub known: bool,
}

/// How a finished search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    NotLinearizable,
    /// The memo table reached its limit before the search could decide.
    OutOfStates,
    /// Keeping one more configuration would have passed the byte limit.
    OutOfMemory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    Done(Outcome),
    /// The step limit of this slice was reached; call `run` again to continue.
    Paused,
}

/// Marks a return entry in `entry_match`.
const RETURN: u32 = u32::MAX - 1;

pub(crate) struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [Operation<M::Input, M::Output>],
    ops: Vec<SearchOp>,
    /// Per entry (index 0 is the head sentinel): the operation it belongs to.
    entry_op: Vec<u32>,
    /// Per entry: for a call entry the index of its return entry (`NONE` for an unknown
    /// operation); for a return entry `RETURN`.
    entry_match: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The entry the scan looks at next; `NONE` = the end of the list.
    cursor: u32,
    state: M::State,
    /// Bit `i` set = operation `i` of `ops` is linearized.
    linearized: Vec<u64>,
    /// Bit `i` set = operation `i` has a known outcome.
    known: Vec<u64>,
    /// XOR of `zobrist[i]` over the linearized operations with a known outcome, and over those
    /// with an unknown outcome: the bitset's hash in two parts, kept incrementally.
    known_hash: u64,
    unknown_hash: u64,
    zobrist: Vec<u64>,
    /// Known operations linearized, and in all.
    known_depth: usize,
    known_total: usize,
    /// Per operation: known and read-only (see `Model::is_read_only`).
    read_only: Vec<bool>,
    /// The most known operations ever linearized at once.
    known_depth_max: usize,
    /// The call entries linearized so far, in order.
    stack: Vec<Step<M::State>>,
    /// The heap bytes counted for the states on the stack.
    stack_heap: usize,
    /// The heap bytes counted for `state`.
    state_heap: usize,
    cache: Cache<M::State>,
    max_states: usize,
    /// What the arrays allocated once, in `new`, take.
    fixed_bytes: usize,
    /// The first sequence of linearized operations seen with `known_depth_max` known ones.
    longest: Vec<u32>,
    finished: Option<Outcome>,
}

/// One linearized call entry on the stack.
struct Step<S> {
    entry: u32,
    /// Whether it was forced (see `run`): the configuration before it has no other branch.
    forced: bool,
    /// The state before it.
    before: S,
    /// The heap bytes counted for `before` when it was pushed.
    heap: usize,
}

impl<M: Model> std::fmt::Debug for Search<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("ops", &self.ops.len())
            .field("states", &self.cache.len())
            .field("bytes", &self.bytes())
            .field("depth", &self.stack.len())
            .field("finished", &self.finished)
            .finish()
    }
}

impl<'a, M: Model> Search<'a, M> {
    /// Prepares a search over `ops` (any order), allowed at most `max_states` memoised
    /// configurations.
    pub fn new(
        model: &'a M,
        history: &'a [Operation<M::Input, M::Output>],
        ops: Vec<SearchOp>,
        max_states: usize,
    ) -> Self {
        assert!(
            ops.len() < (BACKTRACK / 2) as usize,
            "too many operations in one partition"
        );
        // Events sorted by time; at equal times calls come first, so operations that touch at
        // an instant count as concurrent. Ties between equal events keep the operations' order.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let h = &history[op.index];
            events.push((h.call, false, i as u32));
            if op.known {
                let ret = h.ret.expect("a known operation has a return time");
                assert!(
                    ret >= h.call,
                    "operation {} returns before its call",
                    op.index
                );
                events.push((ret, true, i as u32));
            }
        }
        events.sort_unstable();

        let entries = events.len() + 1;
        let mut entry_op = vec![NONE; entries];
        let mut entry_match = vec![NONE; entries];
        let mut call_entry = vec![NONE; ops.len()];
        for (k, &(_, is_return, op)) in events.iter().enumerate() {
            let e = k + 1;
            entry_op[e] = op;
            if is_return {
                let call = call_entry[op as usize];
                assert_ne!(call, NONE, "a return entry precedes its call entry");
                entry_match[call as usize] = e as u32;
                entry_match[e] = RETURN;
            } else {
                call_entry[op as usize] = e as u32;
            }
        }
        let next: Vec<u32> = (0..entries)
            .map(|e| if e + 1 < entries { e as u32 + 1 } else { NONE })
            .collect();
        let prev: Vec<u32> = (0..entries)
            .map(|e| if e == 0 { NONE } else { e as u32 - 1 })
            .collect();
        let words = ops.len().div_ceil(64).max(1);
        let zobrist = (0..ops.len())
            .map(|i| splitmix64(i as u64 + 0x5157_a11e))
            .collect();
        let mut known = vec![0u64; words];
        for (i, op) in ops.iter().enumerate() {
            if op.known {
                known[i / 64] |= 1 << (i % 64);
            }
        }
        let cursor = next[HEAD];
        let mut search = Search {
            model,
            history,
            entry_op,
            entry_match,
            next,
            prev,
            cursor,
            state: model.init(),
            linearized: vec![0; words],
            cache: Cache::new(words, ops.iter().any(|op| !op.known)),
            known,
            known_hash: 0,
            unknown_hash: 0,
            zobrist,
            known_depth: 0,
            known_total: ops.iter().filter(|op| op.known).count(),
            read_only: ops
                .iter()
                .map(|op| op.known && model.is_read_only(&history[op.index].input))
                .collect(),
            known_depth_max: 0,
            stack: Vec::new(),
            stack_heap: 0,
            state_heap: 0,
            max_states,
            fixed_bytes: 0,
            // Every operation is on the stack at most once, so this never grows.
            longest: Vec::with_capacity(ops.len()),
            finished: None,
            ops,
        };
        search.fixed_bytes = vec_bytes(&search.ops)
            + vec_bytes(&search.entry_op)
            + vec_bytes(&search.entry_match)
            + vec_bytes(&search.next)
            + vec_bytes(&search.prev)
            + vec_bytes(&search.linearized)
            + vec_bytes(&search.known)
            + vec_bytes(&search.zobrist)
            + vec_bytes(&search.read_only)
            + vec_bytes(&search.longest);
        search.state_heap = heap_bytes(model, &search.state);
        search
    }

    pub fn ops(&self) -> &[SearchOp] {
        &self.ops
    }

    /// Memoised configurations so far.
    pub fn states(&self) -> usize {
        self.cache.len()
    }

    /// The memory the search holds, as estimated: everything it allocated, the memo table and
    /// the stack with their states (see `Model::state_bytes`).
    pub fn bytes(&self) -> usize {
        size_of::<Self>()
            + self.fixed_bytes
            + self.cache.bytes()
            + vec_bytes(&self.stack)
            + self.stack_heap
            + self.state_heap
    }

    /// After `Linearizable`: the order found, as indices into `ops`.
    pub fn order(&self) -> Vec<u32> {
        assert_eq!(self.finished, Some(Outcome::Linearizable));
        self.stack
            .iter()
            .map(|step| self.entry_op[step.entry as usize])
            .collect()
    }

    /// The sequence of linearized operations seen with the most known operations (the first
    /// such), as indices into `ops`. After a failed search, every known operation that real time
    /// allows next is illegal in the state it leads to: one that was legal would have led to a
    /// configuration with more known operations (or been skipped for one).
    pub fn longest(&self) -> &[u32] {
        &self.longest
    }

    fn output_of(&self, op: usize) -> Option<&'a M::Output> {
        let search_op = self.ops[op];
        if search_op.known {
            self.history[search_op.index].output.as_ref()
        } else {
            None
        }
    }

    /// Runs at most `step_limit` iterations of the search loop, holding at most `max_bytes` (see
    /// `bytes`): keeping a configuration that would pass it ends the search with `OutOfMemory`.
    pub fn run(&mut self, step_limit: u64, max_bytes: usize) -> Progress {
        if let Some(outcome) = self.finished {
            return Progress::Done(outcome);
        }
        let history = self.history;
        let mut steps = 0u64;
        let outcome = loop {
            if steps == step_limit {
                return Progress::Paused;
            }
            steps += 1;
            if self.known_depth == self.known_total {
                // Only unknown operations are left: none of them has to happen.
                break Outcome::Linearizable;
            }
            assert_ne!(
                self.cursor, NONE,
                "a known operation's return entry ends the scan"
            );
            let backtrack = self.cursor == BACKTRACK;
            if backtrack || self.entry_match[self.cursor as usize] == RETURN {
                // An operation that must be linearized before anything else can happen was not
                // (or the latest choice was forced and failed): undo the latest choice and try
                // the entry after it.
                let Some(Step {
                    entry: call,
                    forced,
                    before,
                    heap,
                }) = self.stack.pop()
                else {
                    break Outcome::NotLinearizable;
                };
                self.stack_heap -= heap;
                self.state = before;
                self.state_heap = heap;
                let op = self.entry_op[call as usize] as usize;
                self.clear(op);
                if self.ops[op].known {
                    self.known_depth -= 1;
                }
                self.unlift(call as usize);
                self.cursor = if forced {
                    BACKTRACK
                } else {
                    self.next[call as usize]
                };
                continue;
            }
            let entry = self.cursor as usize;
            let matching = self.entry_match[entry];
            let op = self.entry_op[entry] as usize;
            let input = &history[self.ops[op].index].input;
            let Some(next_state) = self.model.step(&self.state, input, self.output_of(op)) else {
                self.cursor = self.next[entry];
                continue;
            };
            let unchanged = next_state == self.state;
            if matching == NONE && unchanged {
                // An unknown operation that changes nothing here: never needed.
                self.cursor = self.next[entry];
                continue;
            }
            // A read-only operation that is legal here can go first in any order that places it
            // later (it changes nothing wherever it goes, and nothing it must follow in real
            // time is pending, or it would not be in the window), so it is the only branch worth
            // trying. If that fails, this configuration fails.
            let forced = self.read_only[op];
            debug_assert!(
                !forced || unchanged,
                "a read-only operation changed the state"
            );
            let (known_hash, unknown_hash) = if matching == NONE {
                (self.known_hash, self.unknown_hash ^ self.zobrist[op])
            } else {
                (self.known_hash ^ self.zobrist[op], self.unknown_hash)
            };
            let dominance_key = splitmix64(known_hash ^ splitmix64(stable_hash(&next_state)));
            let exact_key = splitmix64(dominance_key ^ unknown_hash);
            self.set(op);
            if self.cache.covers(
                exact_key,
                dominance_key,
                &self.linearized,
                &self.known,
                &next_state,
            ) {
                self.clear_bit(op);
                self.cursor = if forced { BACKTRACK } else { self.next[entry] };
                continue;
            }
            if self.cache.len() >= self.max_states {
                self.clear_bit(op);
                break Outcome::OutOfStates;
            }
            // Keeping the configuration puts one copy of the new state in the memo table and
            // makes the other the current state, while the current one moves to the stack
            // (counted as it was). The state is measured before it is copied: a model whose
            // copies share memory (through an `Rc`) then charges what is new to the table's copy
            // in full, where it stays when the search backtracks past the current one.
            let next_heap = heap_bytes(self.model, &next_state);
            let needed =
                self.bytes() + self.cache.growth() + vec_growth(&self.stack, 1) + 2 * next_heap;
            if needed > max_bytes {
                self.clear_bit(op);
                break Outcome::OutOfMemory;
            }
            self.cache.insert(
                exact_key,
                dominance_key,
                &self.linearized,
                next_state.clone(),
                next_heap,
            );
            self.known_hash = known_hash;
            self.unknown_hash = unknown_hash;
            let before = std::mem::replace(&mut self.state, next_state);
            let before_heap = std::mem::replace(&mut self.state_heap, next_heap);
            self.stack.push(Step {
                entry: entry as u32,
                forced,
                before,
                heap: before_heap,
            });
            self.stack_heap += before_heap;
            assert!(
                self.bytes() <= needed,
                "keeping a configuration grew the search past its estimate"
            );
            self.lift(entry);
            if matching != NONE {
                self.known_depth += 1;
            }
            if self.known_depth > self.known_depth_max {
                self.known_depth_max = self.known_depth;
                self.longest.clear();
                self.longest.extend(
                    self.stack
                        .iter()
                        .map(|step| self.entry_op[step.entry as usize]),
                );
            }
            self.cursor = self.next[HEAD];
        };
        self.finished = Some(outcome);
        Progress::Done(outcome)
    }

    fn set(&mut self, op: usize) {
        debug_assert_eq!(self.linearized[op / 64] & (1 << (op % 64)), 0);
        self.linearized[op / 64] |= 1 << (op % 64);
    }

    fn clear_bit(&mut self, op: usize) {
        debug_assert_ne!(self.linearized[op / 64] & (1 << (op % 64)), 0);
        self.linearized[op / 64] &= !(1 << (op % 64));
    }

    /// Clears a linearized operation's bit and its share of the bitset's hash.
    fn clear(&mut self, op: usize) {
        self.clear_bit(op);
        if self.ops[op].known {
            self.known_hash ^= self.zobrist[op];
        } else {
            self.unknown_hash ^= self.zobrist[op];
        }
    }

    /// Takes a call entry and its return entry (if any) out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entry_match[call];
        if ret != NONE {
            self.unlink(ret as usize);
        }
    }

    /// Puts back what `lift` took out; lifts are undone in reverse order.
    fn unlift(&mut self, call: usize) {
        let ret = self.entry_match[call];
        if ret != NONE {
            self.relink(ret as usize);
        }
        self.relink(call);
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p as usize] = n;
        if n != NONE {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p as usize] = e as u32;
        if n != NONE {
            self.prev[n as usize] = e as u32;
        }
    }

    /// Replays `prefix` (indices into `ops`, a legal order found by `run`) on a fresh list and
    /// returns the state it leads to and the operations with a known outcome that real time
    /// allows next (every call entry before the first return entry). After a failed search, for
    /// `longest()`, each of them is illegal in that state.
    pub fn frontier(&self, prefix: &[u32]) -> (M::State, Vec<u32>) {
        let mut fresh = Search::new(self.model, self.history, self.ops.clone(), 0);
        let mut call_entry = vec![NONE; self.ops.len()];
        for e in 1..fresh.entry_op.len() {
            if fresh.entry_match[e] != RETURN {
                call_entry[fresh.entry_op[e] as usize] = e as u32;
            }
        }
        let mut state = self.model.init();
        for &op in prefix {
            let input = &self.history[self.ops[op as usize].index].input;
            state = self
                .model
                .step(&state, input, fresh.output_of(op as usize))
                .expect("a recorded prefix replays legally");
            fresh.lift(call_entry[op as usize] as usize);
        }
        let mut window = Vec::new();
        let mut e = fresh.next[HEAD];
        while e != NONE {
            let entry = e as usize;
            if fresh.entry_match[entry] == RETURN {
                break;
            }
            if fresh.entry_match[entry] != NONE {
                window.push(fresh.entry_op[entry]);
            }
            e = fresh.next[entry];
        }
        (state, window)
    }
}

/// Configurations on the dominance chain of a key that a lookup compares, newest first. Not
/// finding a dominating configuration is always safe (the search only explores more), and the
/// exact table still finds every repeat; a long scan on every miss costs more than it saves.
const DOMINANCE_SCAN: usize = 4;

/// The memo table: configurations (linearized bitset, state) seen so far, with bitsets in one
/// flat array. Two indexes chain entries by 64-bit keys: `exact` by the whole bitset and the
/// state, `dominance` by the known operations and the state only (kept only when the partition
/// has unknown operations). Only membership is ever asked, so the hash maps' iteration order
/// never matters.
struct Cache<S> {
    exact: Chains,
    dominance: Option<Chains>,
    bits: Vec<u64>,
    states: Vec<S>,
    /// The heap bytes counted for `states`.
    heap: usize,
    words: usize,
}

/// Entries chained by key: `heads` gives the newest entry of a key, `older` the next older one.
#[derive(Default)]
struct Chains {
    heads: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    older: Vec<u32>,
}

impl Chains {
    fn push(&mut self, key: u64, entry: u32) {
        assert_eq!(
            self.older.len(),
            entry as usize,
            "entries are pushed in order"
        );
        let older = self.heads.insert(key, entry).unwrap_or(NONE);
        self.older.push(older);
    }

    /// What the chains take: the links and the hash table's buckets.
    fn bytes(&self) -> usize {
        vec_bytes(&self.older) + table_bytes::<(u64, u32)>(buckets(self.heads.capacity()))
    }

    /// What one more push may allocate.
    fn growth(&self) -> usize {
        let table = if self.heads.len() < self.heads.capacity() {
            0
        } else {
            table_bytes::<(u64, u32)>((2 * buckets(self.heads.capacity())).max(4))
        };
        vec_growth(&self.older, 1) + table
    }

    /// The entries of `key`, newest first.
    fn entries(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let mut at = self.heads.get(&key).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            (at != NONE).then(|| {
                let entry = at as usize;
                at = self.older[entry];
                entry
            })
        })
    }
}

impl<S: Eq> Cache<S> {
    fn new(words: usize, with_dominance: bool) -> Self {
        Cache {
            exact: Chains::default(),
            dominance: with_dominance.then(Chains::default),
            bits: Vec::new(),
            states: Vec::new(),
            heap: 0,
            words,
        }
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    /// What the table takes: bitsets, states (with their heap bytes) and both indexes.
    fn bytes(&self) -> usize {
        vec_bytes(&self.bits)
            + vec_bytes(&self.states)
            + self.heap
            + self.exact.bytes()
            + self.dominance.as_ref().map_or(0, Chains::bytes)
    }

    /// What one more `insert` may allocate, besides its state's heap bytes.
    fn growth(&self) -> usize {
        vec_growth(&self.bits, self.words)
            + vec_growth(&self.states, 1)
            + self.exact.growth()
            + self.dominance.as_ref().map_or(0, Chains::growth)
    }

    fn entry_bits(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words..(i + 1) * self.words]
    }

    /// Whether (`bits`, `state`) or a configuration at least as good was seen: the same state,
    /// the same known operations (`known` masks them) and a subset of the unknown ones.
    fn covers(
        &self,
        exact_key: u64,
        dominance_key: u64,
        bits: &[u64],
        known: &[u64],
        state: &S,
    ) -> bool {
        if self
            .exact
            .entries(exact_key)
            .any(|i| self.entry_bits(i) == bits && self.states[i] == *state)
        {
            return true;
        }
        let Some(dominance) = &self.dominance else {
            return false;
        };
        dominance
            .entries(dominance_key)
            .take(DOMINANCE_SCAN)
            .any(|i| {
                let subsumed = self.entry_bits(i).iter().zip(bits).zip(known).all(
                    |((&seen, &bits), &known)| seen & !bits == 0 && (bits & !seen) & known == 0,
                );
                subsumed && self.states[i] == *state
            })
    }

    /// Keeps a configuration; `heap` is its state's heap bytes.
    fn insert(&mut self, exact_key: u64, dominance_key: u64, bits: &[u64], state: S, heap: usize) {
        assert_eq!(bits.len(), self.words);
        let entry = self.states.len() as u32;
        self.exact.push(exact_key, entry);
        if let Some(dominance) = &mut self.dominance {
            dominance.push(dominance_key, entry);
        }
        self.bits.extend_from_slice(bits);
        self.states.push(state);
        self.heap += heap;
    }
}

/// The heap bytes of `state` by the model's estimate: what it takes beyond its own size.
fn heap_bytes<M: Model>(model: &M, state: &M::State) -> usize {
    model
        .state_bytes(state)
        .saturating_sub(size_of::<M::State>())
}

/// What a vector's buffer takes.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// What pushing `additional` elements onto `v` allocates: nothing while its capacity suffices,
/// else a whole new buffer (the old one is freed only after the copy), at least twice the size
/// (the standard library's amortised growth).
fn vec_growth<T>(v: &Vec<T>, additional: usize) -> usize {
    let needed = v.len() + additional;
    if needed <= v.capacity() {
        return 0;
    }
    needed.max(2 * v.capacity()).max(4) * size_of::<T>()
}

/// The buckets of a standard hash map that can hold `capacity` entries (a power of two, 7/8 of
/// which are usable once there are 8 or more).
fn buckets(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        1..=7 => (capacity + 1).next_power_of_two(),
        _ => (capacity / 7 * 8).next_power_of_two(),
    }
}

/// What a standard hash map's table of `buckets` entries of `T` takes: the entries and a
/// control byte each, plus a group of control bytes.
fn table_bytes<T>(buckets: usize) -> usize {
    if buckets == 0 {
        0
    } else {
        buckets * (size_of::<T>() + 1) + 16
    }
}

/// For keys that are already well-mixed 64-bit hashes.
#[derive(Debug, Default, Clone, Copy)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The FxHash function (rustc's): fast and the same on every run and machine.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn stable_hash<T: Hash>(value: &T) -> u64 {
    let mut hasher = FxHasher::default();
    value.hash(&mut hasher);
    hasher.finish()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
