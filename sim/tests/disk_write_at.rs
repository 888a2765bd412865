//! Positional writes on the simulated disk: what the node reads back, what a crash leaves, what
//! `durable_read` reports, and what syncs cost.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::time::Duration;

use faultline_sim::disk::{Latency, SimDisk, SimDiskConfig};
use faultline_store::node::disk::Disk;
use madsim::time;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PAGE: usize = 4096;

fn run<T>(seed: u64, test: impl Future<Output = T>) -> T {
    madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(test)
}

fn instant_disk() -> SimDisk {
    SimDisk::new(SimDiskConfig {
        sync_latency: Latency::ZERO,
        ..SimDiskConfig::default()
    })
}

async fn durable_file(disk: &SimDisk, name: &str, data: &[u8]) {
    disk.write(name, data).await.unwrap();
    disk.sync_file(name).await.unwrap();
    disk.sync_dir().await.unwrap();
}

fn kind<T: std::fmt::Debug>(result: io::Result<T>) -> io::ErrorKind {
    result.expect_err("expected an error").kind()
}

fn page(fill: u8) -> Vec<u8> {
    vec![fill; PAGE]
}

#[test]
fn write_at_overwrites_in_place_and_extends() {
    run(1, async {
        let disk = instant_disk();
        disk.write_at("db", 0, b"0123456789").await.unwrap();
        assert_eq!(disk.read("db").await.unwrap(), b"0123456789");
        disk.write_at("db", 3, b"abc").await.unwrap();
        assert_eq!(disk.read("db").await.unwrap(), b"012abc6789");
        // Straddling the end overwrites the tail and grows the file.
        disk.write_at("db", 8, b"XYZ").await.unwrap();
        assert_eq!(disk.read("db").await.unwrap(), b"012abc67XYZ");
        assert_eq!(disk.len("db").await.unwrap(), 11);
        assert_eq!(disk.cached_read("db").unwrap(), b"012abc67XYZ");
        // An empty write changes nothing but creates a missing file.
        disk.write_at("db", 100, b"").await.unwrap();
        assert_eq!(disk.len("db").await.unwrap(), 11);
        disk.write_at("empty", 7, b"").await.unwrap();
        assert_eq!(disk.read("empty").await.unwrap(), b"");
        assert_eq!(disk.list().await.unwrap(), ["db", "empty"]);
        assert_eq!(disk.stats().bytes_written, 16);
        assert_eq!(kind(disk.len("none").await), io::ErrorKind::NotFound);
        assert_eq!(disk.cached_read("none"), None);
        disk.check_invariants();
    });
}

#[test]
fn a_gap_past_the_end_reads_as_zeros_and_stays_zeros_after_a_crash() {
    run(2, async {
        let disk = instant_disk();
        disk.write_at("db", 4, b"ab").await.unwrap();
        assert_eq!(disk.read("db").await.unwrap(), b"\0\0\0\0ab");
        disk.write_at("db", 10, b"cd").await.unwrap();
        assert_eq!(disk.read("db").await.unwrap(), b"\0\0\0\0ab\0\0\0\0cd");
        disk.sync_file("db").await.unwrap();
        disk.sync_dir().await.unwrap();
        disk.crash(false);
        assert_eq!(disk.read("db").await.unwrap(), b"\0\0\0\0ab\0\0\0\0cd");

        // A gap over bytes that were durable before the file shrank reads as zeros too, and a
        // crash brings the old bytes back.
        durable_file(&disk, "shrunk", b"0123456789").await;
        disk.write("shrunk", b"01").await.unwrap();
        disk.write_at("shrunk", 6, b"!").await.unwrap();
        assert_eq!(disk.read("shrunk").await.unwrap(), b"01\0\0\0\0!");
        assert_eq!(disk.durable_read("shrunk").unwrap(), b"0123456789");
        disk.check_invariants();
        disk.sync_file("shrunk").await.unwrap();
        assert_eq!(disk.durable_read("shrunk").unwrap(), b"01\0\0\0\0!");
        disk.crash(false);
        assert_eq!(disk.read("shrunk").await.unwrap(), b"01\0\0\0\0!");
        disk.check_invariants();
    });
}

#[test]
fn an_unsynced_write_at_is_lost_on_crash_and_a_synced_one_survives() {
    run(3, async {
        let disk = instant_disk();
        let old = [page(b'a'), page(b'b'), page(b'c')].concat();
        durable_file(&disk, "db", &old).await;
        disk.write_at("db", 0, &page(b'A')).await.unwrap();
        disk.sync_data("db").await.unwrap();
        disk.write_at("db", PAGE as u64, &page(b'B')).await.unwrap();
        // Growth beyond the end is lost too.
        disk.write_at("db", 3 * PAGE as u64, &page(b'D'))
            .await
            .unwrap();

        let report = disk.crash(true);
        let expected = [page(b'A'), page(b'b'), page(b'c')].concat();
        assert_eq!(disk.read("db").await.unwrap(), expected);
        // Everything from the first differing byte of the second page on counts as lost.
        assert_eq!(report.bytes_lost, 3 * PAGE as u64);
        assert_eq!(report.torn, None);
        assert_eq!(disk.stats().bytes_synced, (3 * PAGE + PAGE) as u64);
        disk.check_invariants();
    });
}

#[test]
fn a_sync_that_started_before_a_write_at_does_not_make_it_durable() {
    run(4, async {
        let disk = SimDisk::new(SimDiskConfig {
            sync_latency: Latency::fixed(Duration::from_millis(10)),
            ..SimDiskConfig::default()
        });
        durable_file(&disk, "db", b"0000000000").await;
        disk.write_at("db", 2, b"11").await.unwrap();
        disk.append("db", b"2222").await.unwrap();
        let syncer = disk.clone();
        let sync = madsim::task::spawn(async move { syncer.sync_file("db").await });
        time::sleep(Duration::from_millis(2)).await;
        // Over the range the sync is persisting, over its appended tail, and past it.
        disk.write_at("db", 2, b"33").await.unwrap();
        disk.write_at("db", 11, b"44").await.unwrap();
        disk.write_at("db", 20, b"55").await.unwrap();
        sync.await.unwrap().unwrap();
        assert_eq!(disk.durable_read("db").unwrap(), b"00110000002222");
        disk.check_invariants();
        disk.crash(false);
        assert_eq!(disk.read("db").await.unwrap(), b"00110000002222");
        disk.check_invariants();
    });
}

#[test]
fn a_sync_that_started_earlier_and_finished_later_does_not_roll_back() {
    run(5, async {
        let disk = SimDisk::new(SimDiskConfig {
            sync_latency: Latency::fixed(Duration::from_millis(20)),
            ..SimDiskConfig::default()
        });
        durable_file(&disk, "db", b"aaaa").await;
        disk.write_at("db", 0, b"b").await.unwrap();
        let slow = disk.clone();
        let slow = madsim::task::spawn(async move { slow.sync_file("db").await });
        time::sleep(Duration::from_millis(1)).await;
        disk.write_at("db", 1, b"c").await.unwrap();
        disk.set_latency(Latency::ZERO, Latency::fixed(Duration::from_millis(2)));
        disk.sync_file("db").await.unwrap();
        assert_eq!(disk.durable_read("db").unwrap(), b"bcaa");
        slow.await.unwrap().unwrap();
        assert_eq!(disk.durable_read("db").unwrap(), b"bcaa");
        disk.crash(false);
        assert_eq!(disk.read("db").await.unwrap(), b"bcaa");
        disk.check_invariants();
    });
}

#[test]
fn write_at_over_a_synced_appended_file_then_crash_keeps_the_old_bytes() {
    for seed in 0..10 {
        run(seed, async {
            let disk = instant_disk();
            disk.append("wal", b"record-1;").await.unwrap();
            disk.append("wal", b"record-2;").await.unwrap();
            disk.sync_file("wal").await.unwrap();
            disk.sync_dir().await.unwrap();
            disk.write_at("wal", 7, b"X;corrupt").await.unwrap();
            // Appends after a positional write are no tail a crash can tear.
            disk.append("wal", b"record-3;").await.unwrap();
            assert_eq!(
                disk.read("wal").await.unwrap(),
                b"record-X;corrupt2;record-3;"
            );
            let report = disk.crash(true);
            assert_eq!(report.torn, None);
            assert_eq!(disk.read("wal").await.unwrap(), b"record-1;record-2;");
            assert_eq!(report.bytes_lost, (27 - 7) as u64);

            // Once the positional write is synced, appends tear again.
            disk.write_at("wal", 0, b"R").await.unwrap();
            disk.sync_file("wal").await.unwrap();
            disk.append("wal", b"record-3;").await.unwrap();
            let torn = disk.crash(true).torn.expect("the appended tail tears");
            assert_eq!(torn.tail_bytes, 9);
            let kept = torn.kept_bytes as usize;
            let mut expected = b"Record-1;record-2;".to_vec();
            expected.extend_from_slice(&b"record-3;"[..kept]);
            assert_eq!(disk.read("wal").await.unwrap(), expected);
            disk.check_invariants();
        });
    }
}

#[test]
fn write_at_cancels_its_files_appends_as_tear_candidates() {
    run(6, async {
        let disk = instant_disk();
        durable_file(&disk, "wal", b"").await;
        durable_file(&disk, "db", b"").await;
        disk.append("wal", b"wal-tail").await.unwrap();
        disk.append("db", b"db-tail").await.unwrap();
        disk.write_at("db", 0, b"D").await.unwrap();
        // `db` held the latest append, but the positional write cancelled it: `wal` tears.
        let torn = disk.crash(true).torn.expect("wal tears");
        assert_eq!(torn.name, "wal");
        assert_eq!(disk.read("db").await.unwrap(), b"");
        disk.check_invariants();
    });
}

#[test]
fn durable_read_matches_what_a_crash_leaves() {
    run(7, async {
        let disk = instant_disk();
        durable_file(&disk, "db", b"durable").await;
        disk.write_at("db", 0, b"D").await.unwrap();
        durable_file(&disk, "gone", b"removed").await;
        disk.remove("gone").await.unwrap();
        // Fsynced, but its directory entry never was.
        disk.write("new", b"never synced").await.unwrap();
        disk.sync_file("new").await.unwrap();

        assert_eq!(disk.cached_read("db").unwrap(), b"Durable");
        assert_eq!(disk.durable_read("db").unwrap(), b"durable");
        assert_eq!(disk.cached_read("new").unwrap(), b"never synced");
        assert_eq!(disk.durable_read("new"), None);
        assert_eq!(disk.cached_read("gone"), None);
        assert_eq!(disk.durable_read("gone").unwrap(), b"removed");
        assert_eq!(disk.durable_list(), ["db", "gone"]);

        disk.crash(false);
        assert_eq!(disk.list().await.unwrap(), ["db", "gone"]);
        assert_eq!(disk.read("db").await.unwrap(), b"durable");
        assert_eq!(disk.read("gone").await.unwrap(), b"removed");
        disk.check_invariants();
    });
}

#[test]
fn enospc_counts_the_growth_of_a_write_at() {
    run(8, async {
        let disk = SimDisk::new(SimDiskConfig {
            capacity_bytes: Some(10),
            ..SimDiskConfig::default()
        });
        disk.write_at("db", 0, b"123456").await.unwrap();
        // Growing to 11 bytes is refused, and the gap counts as growth.
        assert_eq!(
            kind(disk.write_at("db", 4, b"abcdefg").await),
            io::ErrorKind::StorageFull
        );
        assert_eq!(
            kind(disk.write_at("other", 5, b"x").await),
            io::ErrorKind::StorageFull
        );
        assert_eq!(disk.read("db").await.unwrap(), b"123456");
        assert_eq!(disk.list().await.unwrap(), ["db"]);
        // Exactly full is allowed.
        disk.write_at("db", 6, b"7890").await.unwrap();
        // Over capacity after a lowered limit: overwriting in place still works.
        disk.set_capacity(Some(4));
        disk.write_at("db", 0, b"abcdefghij").await.unwrap();
        assert_eq!(
            kind(disk.write_at("db", 9, b"JK").await),
            io::ErrorKind::StorageFull
        );
        assert_eq!(disk.read("db").await.unwrap(), b"abcdefghij");
        let stats = disk.stats();
        assert_eq!(stats.writes_refused, 3);
        assert_eq!(stats.bytes_written, 6 + 4 + 10);
        disk.check_invariants();
    });
}

#[test]
fn write_at_past_the_addressable_range_is_refused() {
    run(9, async {
        let disk = instant_disk();
        assert_eq!(
            kind(disk.write_at("db", u64::MAX, b"x").await),
            io::ErrorKind::FileTooLarge
        );
        assert_eq!(
            kind(disk.write_at("a/b", 0, b"x").await),
            io::ErrorKind::InvalidInput
        );
        assert!(disk.list().await.unwrap().is_empty());
    });
}

#[test]
fn write_at_takes_the_write_latency_and_an_injected_sync_failure_persists_nothing() {
    run(10, async {
        let disk = SimDisk::new(SimDiskConfig {
            write_latency: Latency::fixed(Duration::from_millis(5)),
            sync_latency: Latency::ZERO,
            ..SimDiskConfig::default()
        });
        let start = time::Instant::now(); // deterministic: madsim's virtual clock
        disk.write_at("db", 0, b"abc").await.unwrap();
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(5) && took < Duration::from_millis(6),
            "{took:?}"
        );
        disk.sync_file("db").await.unwrap();
        disk.sync_dir().await.unwrap();
        disk.write_at("db", 1, b"B").await.unwrap();
        disk.fail_next_sync(io::ErrorKind::Other);
        assert_eq!(kind(disk.sync_file("db").await), io::ErrorKind::Other);
        assert_eq!(disk.durable_read("db").unwrap(), b"abc");
        // The failed sync forgot nothing: the next one still persists the write.
        disk.sync_file("db").await.unwrap();
        disk.crash(false);
        assert_eq!(disk.read("db").await.unwrap(), b"aBc");
    });
}

#[test]
fn a_stalled_sync_waits_while_write_at_proceeds() {
    run(11, async {
        let disk = instant_disk();
        durable_file(&disk, "db", b"old!").await;
        disk.write_at("db", 0, b"new").await.unwrap();
        disk.stall(Duration::from_secs(1));
        let syncer = disk.clone();
        let sync = madsim::task::spawn(async move { syncer.sync_file("db").await });
        time::sleep(Duration::from_millis(10)).await;
        let before = time::Instant::now(); // deterministic: madsim's virtual clock
        disk.write_at("db", 3, b"?").await.unwrap();
        assert_eq!(before.elapsed(), Duration::ZERO);
        assert_eq!(disk.durable_read("db").unwrap(), b"old!");
        sync.await.unwrap().unwrap();
        assert_eq!(disk.durable_read("db").unwrap(), b"new!");
        assert_eq!(disk.stats().syncs_stalled, 1);
    });
}

/// A multi-megabyte file with a few page writes and an fsync per round: every sync copies only
/// the pages written, and a crash leaves the last synced round.
#[test]
fn syncing_page_writes_copies_only_the_pages() {
    run(12, async {
        let disk = instant_disk();
        let pages = 2048;
        durable_file(&disk, "db", &vec![0u8; pages * PAGE]).await;
        let base = disk.stats().bytes_synced;
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut model = vec![0u8; pages * PAGE];
        let rounds = 500;
        for round in 0..rounds {
            let fill = (round % 251) as u8 + 1;
            let mut written = std::collections::BTreeSet::new();
            while written.len() < 4 {
                written.insert(rng.gen_range(0..pages));
            }
            for &p in &written {
                disk.write_at("db", (p * PAGE) as u64, &page(fill))
                    .await
                    .unwrap();
                model[p * PAGE..(p + 1) * PAGE].fill(fill);
            }
            disk.sync_data("db").await.unwrap();
        }
        assert_eq!(disk.stats().bytes_synced - base, (rounds * 4 * PAGE) as u64);
        // An unsynced round is lost by the crash.
        disk.write_at("db", 0, &page(0xff)).await.unwrap();
        disk.write_at("db", (pages * PAGE) as u64, &page(0xff))
            .await
            .unwrap();
        // Fills are never 0xff, so the first page already differs.
        assert_eq!(disk.crash(false).bytes_lost, ((pages + 1) * PAGE) as u64);
        assert!(disk.cached_read("db").unwrap() == model);
        assert!(disk.durable_read("db").unwrap() == model);
        disk.check_invariants();
    });
}

/// A reference model: each file's cached content and the full content each sync saw when it
/// started; durable is the content of the latest-started successful sync.
#[derive(Default)]
struct Model {
    cached: Vec<u8>,
    durable: Vec<u8>,
    durable_order: u64,
    pending: Vec<(u64, Vec<u8>)>,
}

#[test]
fn random_operations_agree_with_a_full_copy_model() {
    const NAMES: [&str; 2] = ["a", "b"];
    for seed in 0..40u64 {
        run(seed, async move {
            let disk = instant_disk();
            for name in NAMES {
                durable_file(&disk, name, b"").await;
            }
            let mut models: BTreeMap<&str, Model> =
                NAMES.iter().map(|&n| (n, Model::default())).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut order = 0u64;
            let mut tasks = Vec::new();
            for _ in 0..300 {
                let name = NAMES[rng.gen_range(0..NAMES.len())];
                let m = models.get_mut(name).unwrap();
                let fill: u8 = rng.gen_range(1..=255);
                match rng.gen_range(0..100) {
                    0..=24 => {
                        let data = vec![fill; rng.gen_range(0..20)];
                        let offset = rng.gen_range(0..80);
                        disk.write_at(name, offset as u64, &data).await.unwrap();
                        if !data.is_empty() {
                            if m.cached.len() < offset + data.len() {
                                m.cached.resize(offset + data.len(), 0);
                            }
                            m.cached[offset..offset + data.len()].copy_from_slice(&data);
                        }
                    }
                    25..=44 => {
                        let data = vec![fill; rng.gen_range(0..20)];
                        disk.append(name, &data).await.unwrap();
                        m.cached.extend_from_slice(&data);
                    }
                    45..=52 => {
                        let data = vec![fill; rng.gen_range(0..60)];
                        disk.write(name, &data).await.unwrap();
                        m.cached = data;
                    }
                    53..=64 => {
                        order += 1;
                        disk.sync_data(name).await.unwrap();
                        m.durable = m.cached.clone();
                        m.durable_order = order;
                    }
                    65..=79 => {
                        // A sync in the background that takes 2..=10 ms; it has started once
                        // this task sleeps.
                        let latency = Duration::from_millis(rng.gen_range(2..=10));
                        disk.set_latency(Latency::ZERO, Latency::fixed(latency));
                        order += 1;
                        m.pending.push((order, m.cached.clone()));
                        let syncer = disk.clone();
                        tasks.push(madsim::task::spawn(
                            async move { syncer.sync_file(name).await },
                        ));
                        time::sleep(Duration::from_millis(1)).await;
                        disk.set_latency(Latency::ZERO, Latency::ZERO);
                    }
                    80..=89 => {
                        time::sleep(Duration::from_millis(rng.gen_range(1..=4))).await;
                    }
                    _ => {
                        // Let every sync finish, then compare the durable layer and crash.
                        time::sleep(Duration::from_millis(11)).await;
                        for task in tasks.drain(..) {
                            task.await.unwrap().unwrap();
                        }
                        for (&n, m) in models.iter_mut() {
                            for (o, content) in m.pending.drain(..) {
                                if o > m.durable_order {
                                    m.durable_order = o;
                                    m.durable = content;
                                }
                            }
                            assert_eq!(disk.durable_read(n).unwrap(), m.durable, "{n}");
                        }
                        if rng.gen_bool(0.5) {
                            disk.crash(false);
                            for m in models.values_mut() {
                                m.cached = m.durable.clone();
                            }
                        }
                    }
                }
                for (&n, m) in &models {
                    assert_eq!(disk.read(n).await.unwrap(), m.cached, "{n}");
                    assert_eq!(disk.len(n).await.unwrap(), m.cached.len() as u64);
                }
                disk.check_invariants();
            }
        });
    }
}
