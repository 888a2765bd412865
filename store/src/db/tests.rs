use std::collections::BTreeMap;

use proptest::prelude::*;

use super::page::{self, META_BYTES};
use super::*;

type Model = BTreeMap<DbKey, Vec<u8>>;

const PAGE: usize = PAGE_BYTES as usize;

fn write_at(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = offset as usize;
    if image.len() < offset + data.len() {
        image.resize(offset + data.len(), 0);
    }
    image[offset..offset + data.len()].copy_from_slice(data);
}

fn apply_plan(image: &mut Vec<u8>, plan: &CommitPlan) {
    for w in &plan.data {
        write_at(image, w.offset, &w.data);
    }
    write_at(image, plan.meta.offset, &plan.meta.data);
}

fn dump(db: &DbFile) -> Model {
    let mut out = Model::new();
    for b in Bucket::ALL {
        for (k, v) in db.iter(b) {
            assert_eq!(db.get(b, k), Some(v));
            out.insert((b, k.to_vec()), v.to_vec());
        }
        assert_eq!(db.len(b), db.iter(b).count());
    }
    out
}

fn apply_model(model: &mut Model, writes: &WriteSet) {
    for (k, v) in &writes.changes {
        match v {
            Some(v) => model.insert(k.clone(), v.clone()),
            None => model.remove(k),
        };
    }
}

fn key_of(i: u16) -> Vec<u8> {
    format!("key-{i:04}-{}", "x".repeat(i as usize % 7 * 10)).into_bytes()
}

fn value_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// The pages written by a plan, data and meta, as page ids.
fn pages_written(plan: &CommitPlan) -> Vec<u64> {
    let mut out = Vec::new();
    for w in plan.data.iter().chain([&plan.meta]) {
        assert_eq!(w.offset % PAGE_BYTES, 0, "writes are page-aligned");
        assert_eq!(w.data.len() % PAGE, 0, "writes are whole pages");
        let first = w.offset / PAGE_BYTES;
        out.extend(first..first + w.data.len() as u64 / PAGE_BYTES);
    }
    out
}

fn reachable_set(db: &DbFile) -> BTreeSet<u64> {
    db.reachable_pages()
        .into_iter()
        .flat_map(|(pgid, pages)| pgid..pgid + pages)
        .collect()
}

fn change_strategy() -> impl Strategy<Value = (Bucket, u16, Option<(usize, u8)>)> {
    let bucket = prop_oneof![
        1 => Just(Bucket::Meta),
        6 => Just(Bucket::Key),
        1 => Just(Bucket::Lease),
        1 => Just(Bucket::Alarm)
    ];
    let value = prop_oneof![
        8 => (0usize..300, any::<u8>()),
        1 => (3000usize..10_000, any::<u8>()),
    ];
    (
        bucket,
        0u16..300,
        prop_oneof![3 => value.prop_map(Some), 1 => Just(None)],
    )
}

fn write_set_strategy() -> impl Strategy<Value = WriteSet> {
    prop::collection::vec(change_strategy(), 0..40).prop_map(|changes| {
        let mut ws = WriteSet::default();
        for (b, i, v) in changes {
            match v {
                Some((len, seed)) => ws.put(b, key_of(i), value_of(len, seed)),
                None => ws.delete(b, key_of(i)),
            }
        }
        ws
    })
}

/// A db, its file image and the content after each txid, built from `sets`.
fn history(sets: &[WriteSet]) -> (DbFile, Vec<u8>, BTreeMap<u64, Model>) {
    let (mut db, mut image) = DbFile::create();
    let mut model = Model::new();
    let mut states = BTreeMap::from([(0, Model::new()), (1, Model::new())]);
    for ws in sets {
        let plan = db.commit(ws);
        apply_plan(&mut image, &plan);
        apply_model(&mut model, ws);
        states.insert(plan.txid, model.clone());
    }
    (db, image, states)
}

#[test]
fn create_then_open_is_empty() {
    let (db, file) = DbFile::create();
    assert_eq!(file.len(), 4 * PAGE);
    assert_eq!(db.size_bytes(), 4 * PAGE_BYTES);
    assert_eq!(db.size_in_use_bytes(), 4 * PAGE_BYTES);
    assert_eq!(db.txid(), 1);
    assert!(db.is_empty());
    let opened = DbFile::open(&file).unwrap();
    assert_eq!(opened, db);
    assert!(dump(&opened).is_empty());
    assert_eq!(opened.get(Bucket::Key, b"a"), None);
}

#[test]
fn write_set_merge_lets_the_later_win() {
    let mut a = WriteSet::default();
    a.put(Bucket::Key, b"x".to_vec(), b"1".to_vec());
    a.put(Bucket::Key, b"y".to_vec(), b"1".to_vec());
    let mut b = WriteSet::default();
    b.delete(Bucket::Key, b"x".to_vec());
    b.put(Bucket::Lease, b"z".to_vec(), b"2".to_vec());
    a.merge(b);
    assert_eq!(a.len(), 3);
    assert_eq!(a.changes[&(Bucket::Key, b"x".to_vec())], None);
    assert_eq!(
        a.changes[&(Bucket::Key, b"y".to_vec())],
        Some(b"1".to_vec())
    );
}

#[test]
fn empty_commit_advances_the_txid_and_leaks_nothing() {
    let (mut db, mut image) = DbFile::create();
    for expected in 2..6 {
        let plan = db.commit(&WriteSet::default());
        assert_eq!(plan.txid, expected);
        apply_plan(&mut image, &plan);
        let opened = DbFile::open(&image).unwrap();
        assert_eq!(opened.txid(), expected);
        assert!(opened.is_empty());
    }
    // Two pages of directory and freelist in use, two pending, and the file stops growing.
    assert_eq!(db.size_in_use_bytes(), 4 * PAGE_BYTES);
    assert!(db.size_bytes() <= 8 * PAGE_BYTES);
}

#[test]
fn freed_pages_are_reused_and_compaction_drops_them() {
    let (mut db, mut image) = DbFile::create();
    let mut model = Model::new();
    let mut commit = |db: &mut DbFile, image: &mut Vec<u8>, ws: &WriteSet| {
        let plan = db.commit(ws);
        apply_plan(image, &plan);
        apply_model(&mut model, ws);
        assert_eq!(dump(&DbFile::open(image).unwrap()), model);
        plan
    };
    let puts = |range: std::ops::Range<u16>, seed: u8| {
        let mut ws = WriteSet::default();
        for i in range {
            ws.put(Bucket::Key, key_of(i), value_of(200, seed));
        }
        ws
    };
    commit(&mut db, &mut image, &puts(0..2000, 1));
    let full_size = db.size_bytes();
    let full_in_use = db.size_in_use_bytes();
    assert!(full_size > 100 * PAGE_BYTES, "{full_size}");

    let mut deletes = WriteSet::default();
    for i in 0..1800 {
        deletes.delete(Bucket::Key, key_of(i));
    }
    commit(&mut db, &mut image, &deletes);
    commit(&mut db, &mut image, &WriteSet::default());
    let fragmented_size = db.size_bytes();
    assert!(fragmented_size >= full_size, "the file never shrinks");
    assert!(
        fragmented_size <= full_size + 2 * PAGE_BYTES,
        "deletes write no more than a directory and a freelist"
    );
    assert!(
        db.size_in_use_bytes() < full_in_use / 5,
        "in use {} of {full_in_use}",
        db.size_in_use_bytes()
    );

    let fragmented = image.clone();
    let compact = db.compacted();
    assert!(compact.len() * 4 < fragmented.len());
    let reopened = DbFile::open(&compact).unwrap();
    assert_eq!(dump(&reopened), dump(&db));
    assert_eq!(reopened.txid(), db.txid());
    assert_eq!(reopened.size_bytes(), compact.len() as u64);
    assert_eq!(reopened.size_bytes(), reopened.size_in_use_bytes());
    assert_eq!(reopened.free_pages(), 0);
    let mut continued = reopened;
    let mut compact_image = compact;
    let plan = continued.commit(&puts(0..10, 3));
    assert_eq!(plan.txid, db.txid() + 1);
    apply_plan(&mut compact_image, &plan);
    let opened = DbFile::open(&compact_image).unwrap();
    assert_eq!(opened.txid(), db.txid() + 1);
    assert_eq!(dump(&opened), dump(&continued));

    commit(&mut db, &mut image, &puts(0..1800, 2));
    assert_eq!(
        db.size_bytes(),
        fragmented_size,
        "rewritten keys reuse the freed pages"
    );
}

#[test]
fn deleting_everything_frees_every_leaf() {
    let (mut db, mut image) = DbFile::create();
    let mut ws = WriteSet::default();
    for i in 0..500 {
        ws.put(Bucket::Key, key_of(i), value_of(100, 7));
    }
    apply_plan(&mut image, &db.commit(&ws));
    let mut ws = WriteSet::default();
    for i in 0..500 {
        ws.delete(Bucket::Key, key_of(i));
    }
    apply_plan(&mut image, &db.commit(&ws));
    apply_plan(&mut image, &db.commit(&WriteSet::default()));
    let opened = DbFile::open(&image).unwrap();
    assert!(opened.is_empty());
    assert_eq!(opened.size_in_use_bytes(), 4 * PAGE_BYTES);
    assert_eq!(db.size_in_use_bytes(), 4 * PAGE_BYTES);
}

#[test]
fn small_leaves_merge_with_a_neighbour() {
    let (mut db, _) = DbFile::create();
    let mut ws = WriteSet::default();
    for i in 0..1000 {
        ws.put(Bucket::Key, key_of(i), value_of(100, 3));
    }
    db.commit(&ws);
    let leaves = db.tree.leaves.len();
    // Keep one key in eight: every leaf drops under a quarter full.
    let mut ws = WriteSet::default();
    for i in (0..1000).filter(|i| i % 8 != 0) {
        ws.delete(Bucket::Key, key_of(i));
    }
    db.commit(&ws);
    assert!(
        db.tree.leaves.len() * 2 <= leaves,
        "{} leaves of {leaves}",
        db.tree.leaves.len()
    );
}

#[test]
fn commit_cost_follows_the_dirty_leaves() {
    let (mut db, _) = DbFile::create();
    let mut ws = WriteSet::default();
    for i in 0..20_000u32 {
        ws.put(
            Bucket::Key,
            format!("k{i:08}").into_bytes(),
            value_of(64, 1),
        );
    }
    db.commit(&ws);
    let mut ws = WriteSet::default();
    ws.put(Bucket::Key, b"k00012345".to_vec(), value_of(64, 2));
    let plan = db.commit(&ws);
    let dir_pages = db.tree.root.pages as usize;
    // One leaf (or two, when it merges), the directory, the freelist.
    assert!(
        plan.data.len() <= 4,
        "{} writes, directory of {dir_pages} pages",
        plan.data.len()
    );
    let leaf_writes: usize = plan.data.iter().map(|w| w.data.len() / PAGE).sum();
    assert!(leaf_writes <= dir_pages + 3, "{leaf_writes} pages written");
}

#[test]
fn large_values_round_trip() {
    let (mut db, mut image) = DbFile::create();
    let mut ws = WriteSet::default();
    ws.put(Bucket::Key, b"big".to_vec(), value_of(3 * PAGE + 17, 9));
    ws.put(Bucket::Key, b"huge".to_vec(), value_of(100_000, 11));
    ws.put(Bucket::Key, b"small".to_vec(), b"v".to_vec());
    ws.put(Bucket::Lease, vec![0; 5000], value_of(10, 1));
    apply_plan(&mut image, &db.commit(&ws));
    let opened = DbFile::open(&image).unwrap();
    assert_eq!(
        opened.get(Bucket::Key, b"big"),
        Some(&value_of(3 * PAGE + 17, 9)[..])
    );
    assert_eq!(
        opened.get(Bucket::Key, b"huge"),
        Some(&value_of(100_000, 11)[..])
    );
    assert_eq!(opened.get(Bucket::Key, b"small"), Some(&b"v"[..]));
    assert_eq!(
        opened.get(Bucket::Lease, &[0; 5000]),
        Some(&value_of(10, 1)[..])
    );
    assert!(opened
        .tree
        .leaves
        .values()
        .any(|l| l.extent.unwrap().pages >= 25));

    let in_use = db.size_in_use_bytes();
    let mut ws = WriteSet::default();
    ws.put(Bucket::Key, b"huge".to_vec(), b"now small".to_vec());
    apply_plan(&mut image, &db.commit(&ws));
    assert!(db.size_in_use_bytes() + 20 * PAGE_BYTES < in_use);
    let opened = DbFile::open(&image).unwrap();
    assert_eq!(opened.get(Bucket::Key, b"huge"), Some(&b"now small"[..]));
    assert_eq!(dump(&opened), dump(&db));
}

#[test]
fn open_rejects_garbage() {
    assert!(matches!(
        DbFile::open(&[]),
        Err(DbError::TooShort { len: 0 })
    ));
    assert!(matches!(
        DbFile::open(&vec![0; 4 * PAGE]),
        Err(DbError::NoValidMeta { .. })
    ));
    let (_, file) = DbFile::create();
    assert!(matches!(
        DbFile::open(&file[..3 * PAGE]),
        Err(DbError::NoValidMeta { .. })
    ));
    let mut broken = file.clone();
    broken[2 * PAGE + page::HEADER_BYTES] ^= 1;
    let err = DbFile::open(&broken).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn torn_meta_opens_at_the_previous_txid() {
    let mut ws = WriteSet::default();
    ws.put(Bucket::Key, b"a".to_vec(), b"1".to_vec());
    let (mut db, image, states) = history(&[ws]);
    let mut ws = WriteSet::default();
    ws.put(Bucket::Key, b"a".to_vec(), b"2".to_vec());
    let plan = db.commit(&ws);
    for prefix in (0..=META_BYTES).chain([PAGE]) {
        let mut torn = image.clone();
        for w in &plan.data {
            write_at(&mut torn, w.offset, &w.data);
        }
        write_at(&mut torn, plan.meta.offset, &plan.meta.data[..prefix]);
        let opened = DbFile::open(&torn).unwrap();
        if prefix < META_BYTES {
            assert_eq!(opened.txid(), 2, "prefix {prefix}");
            assert_eq!(dump(&opened), states[&2]);
        } else {
            assert_eq!(opened.txid(), 3, "prefix {prefix}");
            assert_eq!(opened.get(Bucket::Key, b"a"), Some(&b"2"[..]));
        }
    }
}

#[test]
fn a_corrupt_newest_meta_falls_back_to_the_other() {
    let sets: Vec<WriteSet> = (0..3u8)
        .map(|i| {
            let mut ws = WriteSet::default();
            ws.put(Bucket::Key, b"a".to_vec(), vec![i]);
            ws
        })
        .collect();
    let (db, image, states) = history(&sets);
    assert_eq!(db.txid(), 4);
    let mut broken = image.clone();
    let meta_page = |txid: u64| (txid % 2) as usize * PAGE;
    broken[meta_page(4) + 20] ^= 0x10;
    let opened = DbFile::open(&broken).unwrap();
    assert_eq!(opened.txid(), 3);
    assert_eq!(dump(&opened), states[&3]);
    broken[meta_page(3) + 20] ^= 0x10;
    let err = DbFile::open(&broken).unwrap_err();
    assert!(matches!(err, DbError::NoValidMeta { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_commits_reopen_to_the_model(
        sets in prop::collection::vec((write_set_strategy(), any::<bool>()), 1..12)
    ) {
        let (mut db, mut image) = DbFile::create();
        let mut model = Model::new();
        for (ws, reopen) in &sets {
            let reachable = reachable_set(&db);
            let old_size = db.size_bytes();
            let plan = db.commit(ws);
            prop_assert_eq!(plan.txid, db.txid());
            prop_assert_eq!(plan.file_bytes, db.size_bytes());
            let written = pages_written(&plan);
            let mut seen = BTreeSet::new();
            for page in &written {
                prop_assert!(!reachable.contains(page), "page {} is reachable", page);
                prop_assert!(seen.insert(*page), "page {} written twice", page);
                prop_assert!(*page * PAGE_BYTES < plan.file_bytes);
            }
            prop_assert!(plan.file_bytes >= old_size);
            apply_plan(&mut image, &plan);
            apply_model(&mut model, ws);
            let opened = DbFile::open(&image).unwrap();
            prop_assert_eq!(opened.txid(), db.txid());
            prop_assert_eq!(&dump(&opened), &model);
            prop_assert_eq!(&dump(&db), &model);
            prop_assert_eq!(opened.size_bytes(), db.size_bytes());
            prop_assert_eq!(opened.size_in_use_bytes(), db.size_in_use_bytes());
            prop_assert_eq!(opened.size_bytes(), image.len() as u64);
            if *reopen {
                db = opened;
            }
        }
        let compact = db.compacted();
        let reopened = DbFile::open(&compact).unwrap();
        prop_assert_eq!(&dump(&reopened), &model);
        prop_assert_eq!(reopened.size_bytes(), compact.len() as u64);
        prop_assert_eq!(reopened.size_in_use_bytes(), reopened.size_bytes());
        prop_assert!(reopened.size_bytes() <= db.size_in_use_bytes());
        prop_assert_eq!(reopened.free_pages(), 0);
    }

    #[test]
    fn a_crash_before_the_meta_is_durable_keeps_the_previous_commit(
        sets in prop::collection::vec(write_set_strategy(), 0..8),
        last in write_set_strategy(),
        order in prop::collection::vec((any::<bool>(), any::<u32>()), 64),
        torn_data in prop::option::of((any::<prop::sample::Index>(), 0usize..PAGE)),
        meta_written in prop_oneof![Just(None), (0usize..META_BYTES).prop_map(Some)],
    ) {
        let (mut db, image, states) = history(&sets);
        let previous = db.txid();
        let plan = db.commit(&last);

        let mut crashed = image.clone();
        let mut writes: Vec<(u32, &PageWrite)> = plan
            .data
            .iter()
            .enumerate()
            .filter(|(i, _)| order[i % order.len()].0)
            .map(|(i, w)| (order[i % order.len()].1, w))
            .collect();
        writes.sort_by_key(|(o, _)| *o);
        for (_, w) in &writes {
            write_at(&mut crashed, w.offset, &w.data);
        }
        if let Some((index, len)) = torn_data {
            if !plan.data.is_empty() {
                let w = &plan.data[index.index(plan.data.len())];
                write_at(&mut crashed, w.offset, &w.data[..len.min(w.data.len())]);
            }
        }
        if let Some(prefix) = meta_written {
            // Everything before the meta was fsynced; only the meta write was torn.
            for w in &plan.data {
                write_at(&mut crashed, w.offset, &w.data);
            }
            write_at(&mut crashed, plan.meta.offset, &plan.meta.data[..prefix]);
        }
        let opened = DbFile::open(&crashed).unwrap();
        prop_assert_eq!(opened.txid(), previous);
        prop_assert_eq!(&dump(&opened), &states[&previous]);

        let mut durable = image;
        apply_plan(&mut durable, &plan);
        let opened = DbFile::open(&durable).unwrap();
        prop_assert_eq!(opened.txid(), plan.txid);
        let mut expected = states[&previous].clone();
        apply_model(&mut expected, &last);
        prop_assert_eq!(&dump(&opened), &expected);
    }

    #[test]
    fn open_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4 * PAGE)) {
        prop_assert!(DbFile::open(&bytes).is_err());
    }

    #[test]
    fn open_of_a_damaged_file_fails_or_finds_a_committed_state(
        sets in prop::collection::vec(write_set_strategy(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        truncate in prop::option::of(any::<prop::sample::Index>()),
        smear in prop::option::of((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..64))),
    ) {
        let (_, image, states) = history(&sets);
        let mut damaged = image;
        for (at, bit) in flips {
            let at = at.index(damaged.len());
            damaged[at] ^= 1 << bit;
        }
        if let Some((at, bytes)) = smear {
            let at = at.index(damaged.len());
            let end = (at + bytes.len()).min(damaged.len());
            damaged[at..end].copy_from_slice(&bytes[..end - at]);
        }
        if let Some(len) = truncate {
            damaged.truncate(len.index(damaged.len() + 1));
        }
        if let Ok(db) = DbFile::open(&damaged) {
            prop_assert!(states.contains_key(&db.txid()), "txid {}", db.txid());
            prop_assert_eq!(&dump(&db), &states[&db.txid()]);
        }
    }
}
