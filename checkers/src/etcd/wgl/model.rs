//! etcd v3 as a sequential specification for the linearizability engine.

use std::collections::{BTreeMap, BTreeSet};

use super::super::model::EtcdState;
use super::super::render::{ok_text, request_text, state_text};
use super::super::{as_latest_read, bumped, read_revision};
use crate::history::{Request, Response};
use crate::linearizability::{Model, Operation};

/// etcd v3 as a sequential specification for the linearizability engine.
///
/// Inputs are history requests with their operation's id ([`EtcdInput`]), outputs `(header
/// revision, response)`. Every operation lands in
/// one partition: the global revision couples every key. How [`Model::step`] treats each request
/// with a known output (`Some`); with `None` (unknown outcome) the request takes effect with
/// whatever it would answer, or, if etcd would refuse it, takes no effect:
/// - put, delete, txn, lease grant and revoke, compact, and a linearizable get at the latest
///   revision: the observed header revision and response must equal etcd's;
/// - a linearizable get at a past revision: the header must be the current revision and the
///   read revision must be readable (not compacted, not in the future); its data is not checked
///   here (the state holds only the latest keyspace) but against the revisions reconstructed
///   after the search, unless the revision read is the current one;
/// - a serializable get is not a linearizable operation, and means something else here: "this
///   data is the keyspace at revision `r`" (`r` = the read's revision, or its header revision for
///   a latest read). It steps only in a state at exactly that revision, so the search places it
///   there; [`check`] gives such reads no earlier bound than time 0.
///
/// **Claimed revisions.** A model built with [`EtcdModel::for_operations`] knows the revisions
/// that acknowledged writes report as their own (a put, a delete that deleted something, a txn
/// that wrote): each is made by its claimer in every linearization, and every other revision by
/// a write of unknown outcome (or a lease revoke, whose response does not tell). So a step of
/// unknown output that would make a revision it cannot have made is refused. In the history's
/// own search this prunes nothing a linearization needs (every step of unknown output there is
/// a write of unknown outcome), and it keeps such writes from being tried in every order at
/// every point (without it, a few of them cost seconds on 2,000 operations). When the engine
/// minimises an explanation it sets outcomes aside, and the pruning still takes their
/// responses' revisions as facts: the explanation then holds given those revisions, and
/// [`EtcdReport::render`] says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdModel {
    /// Per claimed revision, the operations that claim it (a claimer may make its own revision
    /// even when its outcome is set aside).
    claimed_revisions: BTreeMap<i64, Vec<u64>>,
    /// The operations that may make a revision no response claims: those of unknown outcome.
    /// `None` = any operation may (the plain semantics).
    unclaimed_makers: Option<BTreeSet<u64>>,
}

/// What the engine steps the model with: a history request and the id of its operation (which
/// tells a claimer from another operation with the same request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdInput {
    pub id: u64,
    pub request: Request,
}

impl EtcdModel {
    /// The plain semantics: no claimed revisions.
    pub fn new() -> Self {
        EtcdModel::default()
    }

    /// The semantics with the revisions claimed by the acknowledged writes of `ops`.
    pub fn for_operations(ops: &[EtcdOperation]) -> Self {
        let mut claimed_revisions: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
        let mut unclaimed_makers = BTreeSet::new();
        for op in ops {
            match (&op.ret, &op.output) {
                (Some(_), Some((header, response))) => {
                    if bumped(&op.input.request, response) {
                        claimed_revisions
                            .entry(*header)
                            .or_default()
                            .push(op.input.id);
                    }
                }
                _ => {
                    unclaimed_makers.insert(op.input.id);
                }
            }
        }
        EtcdModel {
            claimed_revisions,
            unclaimed_makers: Some(unclaimed_makers),
        }
    }

    /// Whether an operation of unknown output may make `revision`: a claimed revision only its
    /// claimer; another only an operation of unknown outcome, or a lease revoke (whose response
    /// does not say whether it deleted anything).
    fn may_make(&self, input: &EtcdInput, revision: i64) -> bool {
        match (
            self.claimed_revisions.get(&revision),
            &self.unclaimed_makers,
        ) {
            (Some(claimers), _) => claimers.contains(&input.id),
            (None, None) => true,
            (None, Some(makers)) => {
                matches!(input.request, Request::LeaseRevoke { .. }) || makers.contains(&input.id)
            }
        }
    }
}

/// A history operation as the engine sees it.
pub type EtcdOperation = Operation<EtcdInput, (i64, Response)>;

impl Model for EtcdModel {
    type State = EtcdState;
    type Input = EtcdInput;
    type Output = (i64, Response);

    fn init(&self) -> EtcdState {
        EtcdState::new()
    }

    fn step(
        &self,
        state: &EtcdState,
        input: &EtcdInput,
        output: Option<&(i64, Response)>,
    ) -> Option<EtcdState> {
        let request = &input.request;
        match (request, output) {
            (
                Request::Get {
                    serializable: true, ..
                },
                Some((header, response)),
            ) => {
                let at = read_revision(request, *header);
                if state.revision != at || *header < at {
                    return None;
                }
                let latest = as_latest_read(request);
                let applied = state.apply(&latest, None).ok()?;
                (applied.response == *response).then(|| state.clone())
            }
            // A read of unknown output has no effect (the engine never places it).
            (Request::Get { .. }, None) => Some(state.clone()),
            (Request::Put { .. }, None) if !self.may_make(input, state.revision + 1) => None,
            (_, None) => match state.apply(request, None) {
                Ok(applied)
                    if applied.state.revision != state.revision
                        && !self.may_make(input, applied.state.revision) =>
                {
                    None
                }
                Ok(applied) => Some(applied.state),
                Err(_) => Some(state.clone()),
            },
            (_, Some((header, response))) => {
                // Most candidates the search tries fail on the header revision: check it before
                // applying anything.
                let header_possible = match request {
                    // Its response does not say whether it deleted anything.
                    Request::LeaseRevoke { .. } => *header - state.revision <= 1,
                    _ => *header == state.revision + i64::from(bumped(request, response)),
                };
                if !header_possible || *header < state.revision {
                    return None;
                }
                if let Request::Get { revision: 0, .. } = request {
                    return state.read_matches(request, response).then(|| state.clone());
                }
                let applied = state.apply(request, Some(response)).ok()?;
                (applied.header_revision == *header && applied.response == *response)
                    .then_some(applied.state)
            }
        }
    }

    /// Gets (a serializable one included: it only steps where the state is its revision) and
    /// txns whose branches only read.
    fn is_read_only(&self, input: &EtcdInput) -> bool {
        match &input.request {
            Request::Get { .. } => true,
            Request::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .all(|op| matches!(op, Request::Get { .. })),
            _ => false,
        }
    }

    fn state_bytes(&self, state: &EtcdState) -> usize {
        std::mem::size_of::<EtcdState>() + state.heap_bytes()
    }

    fn describe(&self, op: &EtcdOperation) -> String {
        let outcome = match (&op.ret, &op.output) {
            (None, _) => "unknown".to_string(),
            (Some(_), None) => "ok (response unknown)".to_string(),
            (Some(_), Some((header, response))) => ok_text(*header, response),
        };
        format!("{} -> {outcome}", request_text(&op.input.request))
    }

    fn describe_state(&self, state: &EtcdState) -> String {
        state_text(state)
    }

    fn describe_partition(&self, _ops: &[EtcdOperation], _partition: &[usize]) -> String {
        "every key: one revision orders them all".to_string()
    }
}
