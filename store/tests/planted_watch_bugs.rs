//! The mechanisms of the planted watch bugs 17529 and 20221, on the store core alone: with the
//! switch the watchers get the wrong answer, without it the right one.

use faultline_store::watch::WatchConfig;
use faultline_store::*;

fn store(bugs: PlantedBugs, watch: WatchConfig) -> Store {
    Store::new(StoreConfig {
        watch,
        bugs,
        ..StoreConfig::default()
    })
}

fn put(store: &mut Store, index: u64, key: &str, value: &str) {
    let request = Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    });
    store
        .apply(index, &request, 0)
        .expect("a new index")
        .unwrap();
}

fn watch_from(store: &mut Store, stream: u64, key: &str, start_revision: i64) -> i64 {
    let request = WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        start_revision,
        ..WatchCreateRequest::default()
    };
    store.watch_create(stream, &request).unwrap()
}

/// The revisions of the events `watch_id` was sent, and whether it was canceled for compaction.
fn seen(responses: &[WatchResponse], watch_id: i64) -> (Vec<i64>, bool) {
    let mine = responses.iter().filter(|r| r.watch_id == watch_id);
    let revisions = mine
        .clone()
        .flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision))
        .collect();
    let compacted = mine.clone().any(|r| r.canceled && r.compact_revision > 0);
    (revisions, compacted)
}

/// Many watchers on one stream, all behind: the first ones fill the stream's outbox with their
/// catch-up, so the last one finds it full; meanwhile its start revision was compacted.
fn starved_victim(bugs: PlantedBugs) -> (Vec<i64>, bool) {
    let watch = WatchConfig {
        stream_pending_max: 4,
        ..WatchConfig::default()
    };
    let mut s = store(bugs, watch);
    for i in 0..10u64 {
        put(&mut s, i + 1, "k", &format!("v{i}"));
    }
    // Revisions 2..=11 hold the puts. Four watchers from revision 5 fill the outbox; the fifth
    // starts at revision 2, which the compaction below removes.
    let stream = 1;
    for _ in 0..4 {
        watch_from(&mut s, stream, "k", 5);
    }
    let starved = watch_from(&mut s, stream, "k", 2);
    let compact = Request::Compact(CompactionRequest {
        revision: 4,
        physical: false,
    });
    s.apply(11, &compact, 0).expect("a new index").unwrap();
    let mut responses = s.watch_take(stream, usize::MAX);
    // The created responses are gone; now the catch-up fills the outbox before the fifth
    // watcher's turn.
    s.watch_sync();
    responses.extend(s.watch_take(stream, usize::MAX));
    for i in 10..13u64 {
        // The stream drains between a revision's delivery and the next catch-up pass.
        put(&mut s, i + 2, "k", &format!("w{i}"));
        responses.extend(s.watch_take(stream, usize::MAX));
        s.watch_sync();
        responses.extend(s.watch_take(stream, usize::MAX));
    }
    s.check_invariants();
    seen(&responses, starved)
}

#[test]
fn victim_watchers_starved_etcd_17529_a_compacted_victim_skips_events_instead_of_being_canceled() {
    let (revisions, compacted) = starved_victim(PlantedBugs::default());
    assert!(compacted, "the correct store cancels the compacted watcher");
    assert!(revisions.is_empty(), "a canceled watcher gets no events");

    let mut bugs = PlantedBugs::default();
    bugs.enable("victim-watchers-starved").unwrap();
    let (revisions, compacted) = starved_victim(bugs);
    assert!(!compacted, "with the bug the cancel is never sent");
    assert_eq!(
        revisions,
        vec![12, 13, 14],
        "with the bug the watcher silently resumes past the revisions it missed"
    );
}

/// A watcher waits for revision 20 on a member at revision 3; the member then restores a
/// snapshot at revision 8 and applies revisions 9 and 10.
fn future_watch_after_restore(bugs: PlantedBugs) -> Vec<WatchResponse> {
    let mut member = store(bugs.clone(), WatchConfig::default());
    put(&mut member, 1, "k", "a");
    put(&mut member, 2, "k", "b");
    let stream = 1;
    let watch_id = watch_from(&mut member, stream, "k", 20);
    let mut leader = store(PlantedBugs::default(), WatchConfig::default());
    for i in 0..7u64 {
        put(&mut leader, i + 1, "k", &format!("v{i}"));
    }
    assert_eq!(leader.current_revision(), 8);
    member.install_image(leader.image()).unwrap();
    for i in 7..9u64 {
        put(&mut member, i + 1, "k", &format!("v{i}"));
    }
    member.watch_sync();
    member.watch_request_progress(stream);
    member.watch_sync();
    member.check_invariants();
    member
        .watch_take(stream, usize::MAX)
        .into_iter()
        .filter(|r| r.watch_id == watch_id && !r.created)
        .collect()
}

#[test]
fn future_watch_after_restore_etcd_20221_is_sent_events_from_before_its_start_revision() {
    let correct = future_watch_after_restore(PlantedBugs::default());
    assert!(
        correct.is_empty(),
        "a watcher from revision 20 gets nothing at revision 10: {correct:?}"
    );

    let mut bugs = PlantedBugs::default();
    bugs.enable("future-watch-after-restore").unwrap();
    let buggy = future_watch_after_restore(bugs);
    let revisions: Vec<i64> = buggy
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision))
        .collect();
    assert_eq!(
        revisions,
        vec![9, 10],
        "with the bug the watcher from revision 20 is sent revisions 9 and 10"
    );
}
