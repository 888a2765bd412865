//! A single register with read, write and compare-and-set: the model of Jepsen's etcd test (one
//! etcd key), for the linearizability checker.
//!
//! The register starts empty (`None`, Jepsen's `nil`). It only describes the object; it never
//! looks at how the history was recorded.

use std::fmt::Debug;
use std::hash::Hash;
use std::mem::size_of;

use crate::linearizability::{Model, Operation};

/// What a client asked of the register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterInput<V> {
    Read,
    Write(V),
    /// Set to `new` if the value is `expected`.
    Cas {
        expected: V,
        new: V,
    },
}

/// What the register answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterOutput<V> {
    /// A read's value; `None` = empty.
    Read(Option<V>),
    Write,
    /// Whether a compare-and-set found `expected` and swapped.
    Cas {
        swapped: bool,
    },
}

/// What a register value owns on the heap beyond its own size, for the memory budget (see
/// `Model::state_bytes`): nothing for numbers, the capacity of a string's buffer.
pub trait HeapBytes {
    fn heap_bytes(&self) -> usize;
}

macro_rules! owns_nothing {
    ($($t:ty),*) => {
        $(impl HeapBytes for $t {
            fn heap_bytes(&self) -> usize {
                0
            }
        })*
    };
}

owns_nothing!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, bool, char);

impl HeapBytes for String {
    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}

impl<T: HeapBytes> HeapBytes for Vec<T> {
    fn heap_bytes(&self) -> usize {
        self.capacity() * size_of::<T>() + self.iter().map(HeapBytes::heap_bytes).sum::<usize>()
    }
}

/// The register model. `V` is the value type (Jepsen's logs hold integers).
#[derive(Debug, Clone, Default)]
pub struct Register<V> {
    /// The value before any operation; `None` = empty.
    pub initial: Option<V>,
}

impl<V> Register<V> {
    /// A register that starts empty.
    pub fn new() -> Self {
        Register { initial: None }
    }
}

impl<V: Clone + Eq + Hash + Debug + HeapBytes> Model for Register<V> {
    type State = Option<V>;
    type Input = RegisterInput<V>;
    type Output = RegisterOutput<V>;

    fn init(&self) -> Option<V> {
        self.initial.clone()
    }

    fn step(
        &self,
        state: &Option<V>,
        input: &RegisterInput<V>,
        output: Option<&RegisterOutput<V>>,
    ) -> Option<Option<V>> {
        match (input, output) {
            (RegisterInput::Read, None) => Some(state.clone()),
            (RegisterInput::Read, Some(RegisterOutput::Read(value))) => {
                (value == state).then(|| state.clone())
            }
            (RegisterInput::Write(value), None | Some(RegisterOutput::Write)) => {
                Some(Some(value.clone()))
            }
            (RegisterInput::Cas { expected, new }, output) => {
                let matches = state.as_ref() == Some(expected);
                match output {
                    None => Some(if matches {
                        Some(new.clone())
                    } else {
                        state.clone()
                    }),
                    Some(RegisterOutput::Cas { swapped: true }) => {
                        matches.then(|| Some(new.clone()))
                    }
                    Some(RegisterOutput::Cas { swapped: false }) => {
                        (!matches).then(|| state.clone())
                    }
                    Some(other) => panic!("a cas cannot answer {other:?}"),
                }
            }
            (input, Some(output)) => panic!("{input:?} cannot answer {output:?}"),
        }
    }

    fn is_read_only(&self, input: &RegisterInput<V>) -> bool {
        matches!(input, RegisterInput::Read)
    }

    fn state_bytes(&self, state: &Option<V>) -> usize {
        size_of::<Option<V>>() + state.as_ref().map_or(0, HeapBytes::heap_bytes)
    }

    fn describe(&self, op: &Operation<RegisterInput<V>, RegisterOutput<V>>) -> String {
        let value = |v: &Option<V>| {
            v.as_ref()
                .map_or_else(|| "nil".to_string(), |v| format!("{v:?}"))
        };
        match (&op.input, &op.output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(v))) => format!("read -> {}", value(v)),
            (RegisterInput::Read, _) => "read -> ?".to_string(),
            (RegisterInput::Write(v), _) => format!("write {v:?}"),
            (RegisterInput::Cas { expected, new }, output) => {
                let result = match output {
                    Some(RegisterOutput::Cas { swapped: true }) => "swapped",
                    Some(RegisterOutput::Cas { swapped: false }) => "not swapped",
                    _ => "?",
                };
                format!("cas {expected:?} -> {new:?}: {result}")
            }
        }
    }

    fn describe_state(&self, state: &Option<V>) -> String {
        state
            .as_ref()
            .map_or_else(|| "nil".to_string(), |v| format!("{v:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Op = Operation<RegisterInput<i64>, RegisterOutput<i64>>;

    #[test]
    fn steps_follow_the_register() {
        let m = Register::<i64>::new();
        assert_eq!(
            m.step(
                &None,
                &RegisterInput::Read,
                Some(&RegisterOutput::Read(None))
            ),
            Some(None)
        );
        assert_eq!(
            m.step(
                &Some(1),
                &RegisterInput::Read,
                Some(&RegisterOutput::Read(None))
            ),
            None
        );
        assert_eq!(m.step(&Some(1), &RegisterInput::Read, None), Some(Some(1)));
        assert_eq!(
            m.step(
                &None,
                &RegisterInput::Write(4),
                Some(&RegisterOutput::Write)
            ),
            Some(Some(4))
        );
        let cas = RegisterInput::Cas {
            expected: 1,
            new: 2,
        };
        assert_eq!(
            m.step(&Some(1), &cas, Some(&RegisterOutput::Cas { swapped: true })),
            Some(Some(2))
        );
        assert_eq!(
            m.step(&Some(3), &cas, Some(&RegisterOutput::Cas { swapped: true })),
            None
        );
        assert_eq!(
            m.step(
                &Some(3),
                &cas,
                Some(&RegisterOutput::Cas { swapped: false })
            ),
            Some(Some(3))
        );
        assert_eq!(
            m.step(
                &Some(1),
                &cas,
                Some(&RegisterOutput::Cas { swapped: false })
            ),
            None
        );
        assert_eq!(m.step(&Some(1), &cas, None), Some(Some(2)));
        assert_eq!(m.step(&None, &cas, None), Some(None));
    }

    #[test]
    fn state_bytes_count_a_value_s_heap_memory() {
        let numbers = Register::<i64>::new();
        assert_eq!(numbers.state_bytes(&Some(7)), size_of::<Option<i64>>());
        let strings = Register::<String>::new();
        let empty = strings.state_bytes(&None);
        assert_eq!(empty, size_of::<Option<String>>());
        let value = String::with_capacity(100);
        assert_eq!(strings.state_bytes(&Some(value)), empty + 100);
        let lists = Register::<Vec<String>>::new();
        let list = vec!["abc".to_string(); 2];
        assert_eq!(
            lists.state_bytes(&Some(list.clone())),
            size_of::<Option<Vec<String>>>()
                + list.capacity() * size_of::<String>()
                + list.iter().map(String::capacity).sum::<usize>()
        );
    }

    #[test]
    fn descriptions_name_input_and_output() {
        let m = Register::<i64>::new();
        let read: Op =
            Operation::completed(1, 0, 1, RegisterInput::Read, RegisterOutput::Read(Some(3)));
        assert_eq!(m.describe(&read), "read -> 3");
        let cas: Op = Operation::unknown(
            2,
            0,
            RegisterInput::Cas {
                expected: 1,
                new: 2,
            },
        );
        assert_eq!(m.describe(&cas), "cas 1 -> 2: ?");
        assert_eq!(m.describe_state(&None), "nil");
    }
}
