//! The revision-guided etcd checker against the WGL search, on thousands of small random
//! histories: correct ones, and ones broken in one named way (a stale read, a lost acknowledged
//! write, a swapped revision, a write of unknown outcome seen by one read and not by a later
//! one). The two must reach the same verdict on every one.
//!
//! The histories come from a sequential run of the etcd model itself: each operation takes
//! effect at an instant inside its window, windows overlap, some writes end with an unknown
//! outcome (half of those took effect), serializable reads answer from a lagging revision.

use faultline_checkers::etcd::{self, EtcdState, Judgement};
use faultline_checkers::history::{
    Compare, CompareResult, CompareTarget, History, Operation, Outcome, Request, Response,
};
use faultline_checkers::linearizability::Budget;

/// splitmix64: a pinned, seeded generator for the test's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn key(&mut self) -> String {
        format!("k{}", self.below(3))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// One latest read answers from an older revision, with the current header.
    StaleRead,
    /// One put is acknowledged with a new revision, but what the store applied there is a
    /// write to a key no client wrote: the put's value is lost.
    LostWrite,
    /// Two acknowledged writes report each other's revision.
    SwappedRevision,
    /// A read after a write of unknown outcome that took effect answers from before it.
    UnknownSeenThenUnseen,
}

fn get(key: &str, revision: i64, serializable: bool) -> Request {
    Request::Get {
        key: key.to_string(),
        range_end: None,
        revision,
        limit: 0,
        keys_only: false,
        serializable,
    }
}

fn latest(request: &Request) -> Request {
    match request {
        Request::Get {
            key,
            range_end,
            limit,
            keys_only,
            ..
        } => Request::Get {
            key: key.clone(),
            range_end: range_end.clone(),
            revision: 0,
            limit: *limit,
            keys_only: *keys_only,
            serializable: false,
        },
        other => other.clone(),
    }
}

/// A random request against `state`.
fn request(rng: &mut Rng, id: u64, state: &EtcdState) -> Request {
    let key = rng.key();
    let current = state.revision();
    match rng.below(100) {
        0..=24 => Request::Put {
            key,
            value: format!("v{id}"),
            lease: if rng.chance(15) {
                state.leases().keys().next().copied().unwrap_or(0)
            } else {
                0
            },
        },
        25..=31 => Request::Delete {
            key,
            range_end: rng.chance(30).then(|| "k2".to_string()),
        },
        32..=49 => get(&key, 0, false),
        50..=55 => Request::Get {
            key: "k0".into(),
            range_end: Some("k9".into()),
            revision: 0,
            limit: rng.below(3) as i64,
            keys_only: rng.chance(30),
            serializable: false,
        },
        56..=62 => get(&key, (current - rng.below(4) as i64).max(1), false),
        63..=69 => get(&key, 0, true),
        70..=81 => {
            let seen = state.keyspace().get(&key).map_or(0, |kv| kv.mod_revision);
            Request::Txn {
                compare: vec![Compare {
                    key: key.clone(),
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(if rng.chance(70) { seen } else { seen + 1 }),
                }],
                success: vec![
                    Request::Put {
                        key: key.clone(),
                        value: format!("t{id}"),
                        lease: 0,
                    },
                    get(&rng.key(), 0, false),
                ],
                failure: vec![get(&key, 0, false)],
            }
        }
        82..=87 => Request::LeaseGrant {
            ttl: 600,
            id: 1 + rng.below(3) as i64,
        },
        88..=93 => Request::LeaseRevoke {
            id: 1 + rng.below(3) as i64,
        },
        _ => Request::Compact {
            revision: (current - rng.below(3) as i64).max(1),
        },
    }
}

/// A history of `n` operations; `bug` breaks it once, where it can.
fn generated(seed: u64, n: usize, bug: Option<Bug>) -> (History, bool) {
    let mut rng = Rng(seed);
    let mut states = vec![EtcdState::new()];
    let mut history = History::default();
    let mut broken = false;
    // The last write of unknown outcome that took effect, not yet seen: (its revision, key).
    let mut unseen_unknown: Option<(i64, String)> = None;
    let mut seen_unknown: Option<(i64, String)> = None;
    // Requests to issue next, before any random one.
    let mut forced: Vec<Request> = Vec::new();
    for id in 0..n as u64 {
        let point = 100 * (id + 1);
        // Most windows overlap their neighbours; one seed in four, many operations at once.
        let window = if seed % 4 == 0 { 600 } else { 150 };
        let invoke_ns = point - rng.below(window).min(point);
        let complete_ns = point + rng.below(window);
        let state = states.last().expect("a state").clone();
        let request = if forced.is_empty() {
            request(&mut rng, id, &state)
        } else {
            forced.remove(0)
        };
        let write = !matches!(request, Request::Get { .. });
        let unknown_percent = if bug == Some(Bug::UnknownSeenThenUnseen) {
            35
        } else {
            12
        };
        let unknown = write && rng.chance(unknown_percent);
        let mut push = |outcome: Outcome, complete_ns: Option<u64>| {
            history.operations.push(Operation {
                id,
                client: id,
                invoke_ns,
                complete_ns,
                request: request.clone(),
                outcome,
            });
        };
        if unknown {
            if rng.chance(50) {
                if let Ok(applied) = state.apply(&request, None) {
                    if applied.header_revision > state.revision() {
                        if let Request::Put { key, .. } = &request {
                            unseen_unknown = Some((applied.header_revision, key.clone()));
                            if bug == Some(Bug::UnknownSeenThenUnseen) {
                                forced = vec![get(key, 0, false), get(key, 0, false)];
                            }
                        }
                    }
                    states.push(applied.state);
                }
            }
            push(Outcome::Unknown, None);
            continue;
        }
        let (header, response) = match &request {
            Request::Get {
                revision,
                serializable,
                ..
            } => {
                let current = state.revision();
                let (header, at) = if *serializable {
                    let lag = (current - rng.below(3) as i64).max(1);
                    (lag, lag)
                } else if *revision > 0 {
                    (current, *revision)
                } else {
                    (current, current)
                };
                if *revision > 0 && *revision < state.compact_revision() {
                    push(
                        Outcome::Failed {
                            error: "compacted".into(),
                        },
                        Some(complete_ns),
                    );
                    continue;
                }
                let mut at = at;
                if !broken
                    && bug == Some(Bug::StaleRead)
                    && *revision == 0
                    && !serializable
                    && current > 2
                    && rng.chance(30)
                {
                    at = current - 1 - rng.below(current as u64 - 2) as i64;
                    broken = true;
                }
                if !broken && bug == Some(Bug::UnknownSeenThenUnseen) && !serializable {
                    if let (Some((r, key)), Request::Get { key: k, .. }) = (&seen_unknown, &request)
                    {
                        if k == key && *revision == 0 {
                            at = r - 1;
                            broken = true;
                        }
                    }
                }
                let read = states
                    .iter()
                    .rev()
                    .find(|s| s.revision() == at)
                    .expect("every revision has a state")
                    .apply(&latest(&request), None)
                    .expect("a latest read of a key");
                if let (Some((r, key)), Request::Get { key: k, .. }) = (&unseen_unknown, &request) {
                    if k == key && at >= *r {
                        seen_unknown = Some((*r, key.clone()));
                        unseen_unknown = None;
                    }
                }
                (header, read.response)
            }
            _ => match state.apply(&request, None) {
                Err(refusal) => {
                    push(
                        Outcome::Failed {
                            error: refusal.message().into(),
                        },
                        Some(complete_ns),
                    );
                    continue;
                }
                Ok(applied) => {
                    let mut next = applied.state;
                    if !broken
                        && bug == Some(Bug::LostWrite)
                        && matches!(request, Request::Put { .. })
                        && rng.chance(30)
                    {
                        // The store applies something else at the put's revision.
                        next = state
                            .apply(
                                &Request::Put {
                                    key: "k-lost".into(),
                                    value: format!("x{id}"),
                                    lease: 0,
                                },
                                None,
                            )
                            .expect("a plain put")
                            .state;
                        broken = true;
                    }
                    states.push(next);
                    (applied.header_revision, applied.response)
                }
            },
        };
        push(
            Outcome::Ok {
                revision: header,
                response,
            },
            Some(complete_ns),
        );
    }
    if bug == Some(Bug::SwappedRevision) {
        let writes: Vec<usize> = (0..history.operations.len())
            .filter(|&i| {
                matches!(
                    (
                        &history.operations[i].request,
                        &history.operations[i].outcome
                    ),
                    (Request::Put { .. }, Outcome::Ok { .. })
                )
            })
            .collect();
        if writes.len() >= 2 {
            let a = writes[rng.below(writes.len() as u64 - 1) as usize];
            let b = *writes.iter().find(|&&w| w > a).expect("a later write");
            let revision = |op: &Operation| match op.outcome {
                Outcome::Ok { revision, .. } => revision,
                _ => unreachable!("acknowledged"),
            };
            let (ra, rb) = (
                revision(&history.operations[a]),
                revision(&history.operations[b]),
            );
            for (i, r) in [(a, rb), (b, ra)] {
                history.operations[i].outcome = Outcome::Ok {
                    revision: r,
                    response: Response::Put {},
                };
            }
            broken = ra != rb;
        }
    }
    (history, broken)
}

/// How many times more histories to check than CI does (`FAULTLINE_AGREEMENT_SCALE`, for
/// longer local runs).
fn scale() -> u64 {
    std::env::var("FAULTLINE_AGREEMENT_SCALE")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Runs both checkers on `count` histories; returns how many were checked and how many the
/// checkers found broken.
fn agree(bug: Option<Bug>, count: u64, seed_base: u64) -> (usize, usize) {
    let count = count * scale();
    let seed_base = seed_base * scale();
    let (mut checked, mut failed) = (0, 0);
    for seed in seed_base..seed_base + count {
        let n = 6 + (seed % 15) as usize;
        let (history, broken) = generated(seed, n, bug);
        if bug.is_some() && !broken {
            continue;
        }
        checked += 1;
        let wgl = etcd::wgl::check(&history, Budget::default());
        let guided = etcd::check(&history, Budget::default());
        assert_ne!(
            wgl.judgement(),
            Judgement::Unknown,
            "seed {seed}: the search did not decide a small history"
        );
        if guided.judgement() != wgl.judgement() {
            let mut text = Vec::new();
            history.write_to(&mut text).expect("in memory");
            panic!(
                "seed {seed} ({bug:?}): the checkers disagree\nguided:\n{}\nWGL:\n{}\nhistory:\n{}",
                guided.render(),
                wgl.render(),
                String::from_utf8_lossy(&text)
            );
        }
        failed += usize::from(guided.judgement() == Judgement::Fail);
    }
    eprintln!("{bug:?}: {checked} histories, {failed} found broken by both checkers");
    (checked, failed)
}

#[test]
fn correct_histories_pass_both_checkers() {
    let (checked, failed) = agree(None, 3_000, 0);
    assert_eq!(checked as u64, 3_000 * scale());
    assert_eq!(failed, 0, "a correct history failed both checkers");
}

/// Each broken kind: the checkers agree on every history, and find most of them broken (a
/// break can be invisible: a stale read of a key nothing changed since).
fn broken_histories_fail_both_checkers(bug: Bug, base: u64) {
    let (checked, failed) = agree(Some(bug), 1_000, base);
    assert!(
        checked >= 200,
        "{bug:?}: only {checked} histories were broken"
    );
    assert!(
        failed * 2 >= checked,
        "{bug:?}: only {failed} of {checked} broken histories were found"
    );
}

#[test]
fn stale_reads_fail_both_checkers() {
    broken_histories_fail_both_checkers(Bug::StaleRead, 10_000);
}

#[test]
fn lost_acknowledged_writes_fail_both_checkers() {
    broken_histories_fail_both_checkers(Bug::LostWrite, 20_000);
}

#[test]
fn swapped_revisions_fail_both_checkers() {
    broken_histories_fail_both_checkers(Bug::SwappedRevision, 30_000);
}

#[test]
fn an_unknown_write_seen_then_unseen_fails_both_checkers() {
    broken_histories_fail_both_checkers(Bug::UnknownSeenThenUnseen, 40_000);
}
