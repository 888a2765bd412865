//! A key-value map with get, put and append, keys independent of each other: the model of
//! porcupine's kv histories, for the linearizability checker.
//!
//! A missing key reads as the empty string, and appending to it starts from the empty string
//! (porcupine's semantics; the map cannot tell a missing key from an empty value). Because keys
//! are independent, the model partitions a history by key, which is what makes large histories
//! tractable; partitioning can be turned off to check the map as one object.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::mem::{size_of, size_of_val};
use std::rc::Rc;

use crate::linearizability::{Model, Operation};

/// What a client asked of the map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvInput {
    pub key: String,
    pub op: KvOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOp {
    Get,
    Put(String),
    /// Concatenate to the current value.
    Append(String),
}

/// What the map answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A get's value ("" for a missing key).
    Value(String),
    /// A put or an append was done.
    Done,
}

/// The map's state: the non-empty values, sorted by key (sorted and without empty values so that
/// equal maps are equal states). Copying a state only counts a reference: the search copies
/// states often and keeps many.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KvState(Rc<[(Rc<str>, Value)]>);

/// A value with its hash computed once: appends make values long, and the search hashes every
/// state it reaches.
#[derive(Debug, Clone)]
struct Value {
    text: Rc<String>,
    hash: u64,
}

impl Value {
    /// FNV-1a's starting point, the hash of "".
    const EMPTY_HASH: u64 = 0xcbf2_9ce4_8422_2325;

    /// FNV-1a, which can be continued: the hash of `a + b` is `b` hashed on from `a`'s. Any
    /// fixed function will do, it only has to agree with `Eq`.
    fn hash_on(hash: u64, bytes: &str) -> u64 {
        bytes.bytes().fold(hash, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    fn new(text: &str) -> Self {
        Value {
            text: Rc::new(text.to_string()),
            hash: Value::hash_on(Value::EMPTY_HASH, text),
        }
    }

    /// `current` (the value, `None` for a missing key) followed by `suffix`.
    fn appended(current: Option<&Value>, suffix: &str) -> Self {
        let (text, hash) = current.map_or(("", Value::EMPTY_HASH), |v| (v.text.as_str(), v.hash));
        let mut joined = String::with_capacity(text.len() + suffix.len());
        joined.push_str(text);
        joined.push_str(suffix);
        Value {
            text: Rc::new(joined),
            hash: Value::hash_on(hash, suffix),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// What an `Rc`'s allocation takes besides what it holds: the strong and weak counts.
const RC_COUNTS: usize = 2 * size_of::<usize>();

/// `bytes` of memory held through `rc`, over the number of its holders (rounded up).
fn share<T: ?Sized>(rc: &Rc<T>, bytes: usize) -> usize {
    bytes.div_ceil(Rc::strong_count(rc))
}

impl KvState {
    /// The heap memory the state holds: its entries' allocation, each key's and each value's
    /// (the string's capacity included). Allocations it shares with other states count in
    /// shares, so that the states of a search add up to what they hold together: a new state
    /// has a fresh entries allocation and a fresh value, and shares the rest with the state it
    /// came from.
    fn heap_bytes(&self) -> usize {
        let entries: usize = self
            .0
            .iter()
            .map(|(key, value)| {
                let text = RC_COUNTS + size_of::<String>() + value.text.capacity();
                share(key, RC_COUNTS + key.len()) + share(&value.text, text)
            })
            .sum();
        share(&self.0, RC_COUNTS + size_of_val(&*self.0) + entries)
    }

    /// The value of `key` ("" if missing).
    pub fn get(&self, key: &str) -> &str {
        self.find(key).map_or("", |v| &v.text)
    }

    fn find(&self, key: &str) -> Option<&Value> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// The state with `key` set to `value` (an empty value removes the key).
    fn with(&self, key: &str, value: Value) -> KvState {
        let at = self.0.binary_search_by(|(k, _)| (**k).cmp(key));
        let (before, after) = match at {
            Ok(i) => (&self.0[..i], &self.0[i + 1..]),
            Err(i) => (&self.0[..i], &self.0[i..]),
        };
        let key = match at {
            Ok(i) => self.0[i].0.clone(),
            Err(_) => Rc::from(key),
        };
        let new = (!value.text.is_empty()).then_some((key, value));
        // One allocation: the iterator knows its length.
        KvState(
            before
                .iter()
                .cloned()
                .chain(new)
                .chain(after.iter().cloned())
                .collect(),
        )
    }
}

/// The key-value model.
#[derive(Debug, Clone)]
pub struct Kv {
    /// Check each key on its own (the default): equivalent, and far faster.
    pub partition_by_key: bool,
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            partition_by_key: true,
        }
    }
}

impl Kv {
    /// The map checked as one object, without partitioning by key.
    pub fn unpartitioned() -> Self {
        Kv {
            partition_by_key: false,
        }
    }
}

impl Model for Kv {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, state: &KvState, input: &KvInput, output: Option<&KvOutput>) -> Option<KvState> {
        match (&input.op, output) {
            (KvOp::Get, None) => Some(state.clone()),
            (KvOp::Get, Some(KvOutput::Value(value))) => {
                (state.get(&input.key) == value).then(|| state.clone())
            }
            (KvOp::Put(value), None | Some(KvOutput::Done)) => {
                Some(state.with(&input.key, Value::new(value)))
            }
            (KvOp::Append(suffix), None | Some(KvOutput::Done)) => {
                let value = Value::appended(state.find(&input.key), suffix);
                Some(state.with(&input.key, value))
            }
            (op, Some(output)) => panic!("{op:?} cannot answer {output:?}"),
        }
    }

    fn is_read_only(&self, input: &KvInput) -> bool {
        input.op == KvOp::Get
    }

    fn state_bytes(&self, state: &KvState) -> usize {
        size_of::<KvState>() + state.heap_bytes()
    }

    fn partition(&self, ops: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        if !self.partition_by_key {
            return vec![(0..ops.len()).collect()];
        }
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            by_key.entry(op.input.key.as_str()).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    fn describe(&self, op: &Operation<KvInput, KvOutput>) -> String {
        let key = &op.input.key;
        match (&op.input.op, &op.output) {
            (KvOp::Get, Some(KvOutput::Value(value))) => format!("get {key:?} -> {value:?}"),
            (KvOp::Get, _) => format!("get {key:?} -> ?"),
            (KvOp::Put(value), _) => format!("put {key:?} {value:?}"),
            (KvOp::Append(value), _) => format!("append {key:?} {value:?}"),
        }
    }

    fn describe_state(&self, state: &KvState) -> String {
        if self.partition_by_key && state.0.len() <= 1 {
            return format!("{:?}", state.0.first().map_or("", |(_, v)| v.text.as_str()));
        }
        let entries: Vec<String> = state
            .0
            .iter()
            .map(|(k, v)| format!("{:?}: {:?}", &**k, v.text.as_str()))
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    fn describe_partition(
        &self,
        ops: &[Operation<KvInput, KvOutput>],
        partition: &[usize],
    ) -> String {
        match partition.first() {
            Some(&i) if self.partition_by_key => format!("key {:?}", ops[i].input.key),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(key: &str, op: KvOp) -> KvInput {
        KvInput {
            key: key.to_string(),
            op,
        }
    }

    #[test]
    fn missing_keys_read_empty_and_append_starts_from_empty() {
        let m = Kv::default();
        let s0 = m.init();
        let get_empty = KvOutput::Value(String::new());
        assert_eq!(
            m.step(&s0, &input("a", KvOp::Get), Some(&get_empty)),
            Some(s0.clone())
        );
        let s1 = m
            .step(
                &s0,
                &input("a", KvOp::Append("x".into())),
                Some(&KvOutput::Done),
            )
            .unwrap();
        let s2 = m
            .step(&s1, &input("a", KvOp::Append("y".into())), None)
            .unwrap();
        assert_eq!(s2.get("a"), "xy");
        assert_eq!(
            m.step(
                &s2,
                &input("a", KvOp::Get),
                Some(&KvOutput::Value("x".into()))
            ),
            None
        );
        // Putting "" is the same state as never writing.
        assert_eq!(
            m.step(&s2, &input("a", KvOp::Put(String::new())), None),
            Some(s0)
        );
    }

    #[test]
    fn state_bytes_count_strings_and_entries_and_share_what_states_share() {
        let m = Kv::unpartitioned();
        let put = |state: &KvState, key: &str, value: &str| {
            m.step(state, &input(key, KvOp::Put(value.into())), None)
                .unwrap()
        };
        let empty = m.init();
        let short = put(&empty, "a", "x");
        let long = put(&empty, "a", &"x".repeat(1000));
        let two_keys = put(&short, "b", "y");
        assert!(m.state_bytes(&empty) >= size_of::<KvState>());
        assert!(m.state_bytes(&short) > m.state_bytes(&empty));
        assert!(m.state_bytes(&long) >= m.state_bytes(&short) + 999);
        // A second key: one more entry, key and value (the shared key "a" counts in halves).
        assert!(m.state_bytes(&two_keys) > m.state_bytes(&short) + 2 * RC_COUNTS);
        // A copy holds the same memory: each of the two is charged half of it.
        let alone = m.state_bytes(&long);
        let copy = long.clone();
        let halves = m.state_bytes(&long) - size_of::<KvState>();
        assert_eq!(m.state_bytes(&copy), m.state_bytes(&long));
        assert!(2 * halves >= alone - size_of::<KvState>());
        assert!(halves < alone - size_of::<KvState>());
    }

    #[test]
    fn partitions_are_keys_in_order() {
        let ops: Vec<Operation<KvInput, KvOutput>> = ["b", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, k)| Operation::unknown(0, i as u64, input(k, KvOp::Get)))
            .collect();
        assert_eq!(Kv::default().partition(&ops), vec![vec![1], vec![0, 2]]);
        assert_eq!(Kv::unpartitioned().partition(&ops), vec![vec![0, 1, 2]]);
        assert_eq!(Kv::default().describe_partition(&ops, &[1]), "key \"a\"");
    }
}
