//! Crash safety against the real stack: fault points, kill -9 at random moments, several instances in one
//! group, and a zombie instance. Every test ends by counting distinct (partition, offset) in the table with
//! pyiceberg and by checking that no data file on disk is left unreferenced.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Setup, k2i, run, text, wait};
use k2i_testkit::{Stack, TestRecord, stack};
use serde_json::Value;

/// Consumer settings for tests that restart an instance: a short session, so a dead member is noticed in
/// seconds, and (for one instance at a time) static membership, so a restarted instance takes its
/// partitions back at once instead of waiting for the dead one's session to expire.
fn fast_group(static_member: bool) -> String {
    let mut props =
        "\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n".to_owned();
    if static_member {
        props.push_str("\"group.instance.id\" = \"k2i-test-instance\"\n");
    }
    props
}

fn raw_records(partitions: i32, per_partition: usize) -> Vec<TestRecord> {
    (0..per_partition)
        .flat_map(|i| (0..partitions).map(move |p| TestRecord::value(format!("p{p}-r{i}")).partition(p)))
        .collect()
}

fn until_caught_up(setup: &Setup, config: &std::path::Path) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "catch-up run failed for {}:\n{}", setup.topic, text(&out.stderr));
    out
}

/// Asserts the table holds each of `expected` records exactly once and no orphan file is on disk.
fn assert_exactly_once(stack: &Stack, setup: &Setup, expected: i64) -> Value {
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(seen["rows"].as_i64(), Some(expected), "rows in the table");
    assert_eq!(seen["distinct"].as_i64(), Some(expected), "distinct (partition, offset) in the table");
    let orphans = setup.unreferenced_files(&seen);
    assert!(orphans.is_empty(), "data files left unreferenced after recovery: {orphans:?}");
    seen
}

#[tokio::test]
async fn every_fault_point_aborted_then_restarted_loses_and_duplicates_nothing() {
    let stack = stack();
    // (fault point, what recovery must report on the restart)
    let cases = [
        ("after-intent", "recovery: the flush never committed; rolled back"),
        ("after-data-files", "recovery: the flush never committed; rolled back"),
        ("after-commit", "recovery: the flush had committed"),
        ("after-committed-record", "recovery done"),
    ];
    for (point, recovery_line) in cases {
        let setup = Setup::new(stack, &format!("crash-{point}"), 2).await;
        stack.produce(&setup.topic, raw_records(2, 150)).await;
        let config = setup.sql_config(stack, "raw", &format!("[buffer]\nflush_batch_size = 100\n{}", fast_group(true)));

        // The second flush dies at the fault point (the first one commits normally).
        let mut cmd = k2i();
        cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config).env("K2I_FAULT", format!("{point}@2:abort"));
        let out = run(cmd);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), None, "{point}: the process must die by a signal:\n{stderr}");
        assert!(stderr.contains(&format!("fault point {point} reached: aborting")), "{point}:\n{stderr}");

        let out = until_caught_up(&setup, &config);
        let stderr = text(&out.stderr);
        assert!(stderr.contains(recovery_line), "{point}: expected `{recovery_line}` in:\n{stderr}");
        assert_exactly_once(stack, &setup, 300);
    }
}

/// A small deterministic generator, seeded from the clock and printed, so a failing run can be replayed
/// with `K2I_KILL_SEED`.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(low_ms + self.next() % (high_ms - low_ms))
    }
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// Kills a continuously ingesting instance with SIGKILL at random moments, `K2I_KILLS` times (default 10;
/// `scripts/soak.sh N` runs more), then catches up: exactly every record, once.
#[tokio::test]
async fn random_kill_9_during_ingest_never_loses_or_duplicates() {
    let stack = stack();
    let kills: usize = std::env::var("K2I_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(10);
    let records: usize = std::env::var("K2I_KILL_RECORDS").ok().and_then(|k| k.parse().ok()).unwrap_or(200_000);
    let seed = std::env::var("K2I_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("random kill test: {kills} kills, {records} records, seed {seed}");
    let mut rng = Lcg(seed);

    let setup = Setup::new(stack, "crash-kill", 8).await;
    let config = setup.sql_config(
        stack,
        "raw",
        &format!("[buffer]\nflush_batch_size = 2000\nflush_interval = \"200ms\"\n{}", fast_group(true)),
    );
    // Records arrive while the instances are killed, so every kill lands in a live ingest: each round
    // produces its share, starts an instance and kills it at a random moment.
    let per_round = records / 8 / kills;
    let mut commits_before_kill = 0;
    for round in 0..kills {
        stack.produce(&setup.topic, raw_records(8, per_round)).await;
        let child = k2i()
            .args(["ingest", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _child_guard = common::KillOnDrop(child.id());
        std::thread::sleep(rng.between(150, 900));
        kill(&child, "KILL");
        let out = wait(child, Duration::from_secs(30));
        assert_eq!(out.status.code(), None, "round {round}: killed by SIGKILL");
        commits_before_kill += text(&out.stderr).matches("committed flush").count();
    }
    let rest = records / 8 - per_round * kills;
    stack.produce(&setup.topic, raw_records(8, rest)).await;
    eprintln!("random kill test: {commits_before_kill} flushes committed by the killed instances");
    until_caught_up(&setup, &config);
    let seen = assert_exactly_once(stack, &setup, (records / 8 * 8) as i64);
    assert!(commits_before_kill > 0, "the kills never landed during a live ingest");
    eprintln!("random kill test: {} snapshots", seen["summaries"].as_array().unwrap().len());
}

fn instance(config: &std::path::Path, log_dir: &std::path::Path) -> Child {
    k2i()
        .args(["ingest", "--config"])
        .arg(config)
        .env("K2I_TRANSACTION_LOG__LOG_DIR", log_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stop(child: Child) -> String {
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(90));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "an instance did not stop cleanly:\n{stderr}");
    stderr
}

/// Two instances share the group while a third joins and leaves repeatedly; records keep arriving. After a
/// final catch-up every record is in the table exactly once.
#[tokio::test]
async fn three_instances_in_one_group_with_one_restarting_write_exactly_once() {
    let stack = stack();
    let setup = Setup::new(stack, "crash-group", 6).await;
    let config = setup.sql_config(
        stack,
        "raw",
        &format!("[buffer]\nflush_batch_size = 500\nflush_interval = \"300ms\"\n{}", fast_group(false)),
    );
    let dirs: Vec<_> = (0..3).map(|i| setup.dir.path().join(format!("txlog-{i}"))).collect();
    let a = instance(&config, &dirs[0]);
    let _a_guard = common::KillOnDrop(a.id());
    let b = instance(&config, &dirs[1]);
    let _b_guard = common::KillOnDrop(b.id());
    let mut produced = 0;
    for round in 0..4 {
        stack.produce(&setup.topic, raw_records(6, 1000)).await;
        produced += 6000;
        let c = instance(&config, &dirs[2]);
        let _c_guard = common::KillOnDrop(c.id());
        std::thread::sleep(Duration::from_millis(1500 + 300 * round));
        stop(c);
    }
    stack.produce(&setup.topic, raw_records(6, 500)).await;
    produced += 3000;
    std::thread::sleep(Duration::from_secs(2));
    stop(a);
    stop(b);
    until_caught_up(&setup, &config);
    assert_exactly_once(stack, &setup, produced);
}

/// An instance frozen after writing a flush's files, whose partition moves to another instance that commits
/// the same offsets, must have its commit rejected when it thaws, and its files removed.
#[tokio::test]
async fn a_thawed_zombie_is_fenced_and_its_files_are_removed() {
    let stack = stack();
    let setup = Setup::new(stack, "crash-zombie", 1).await;
    stack.produce(&setup.topic, raw_records(1, 100)).await;
    // Short sessions so the frozen instance loses its partition quickly.
    let config =
        setup.sql_config(stack, "raw", &format!("[buffer]\nflush_interval = \"200ms\"\n{}", fast_group(false)));

    let release = setup.dir.path().join("release");
    let mut zombie = k2i()
        .args(["ingest", "--config"])
        .arg(&config)
        .env("K2I_TRANSACTION_LOG__LOG_DIR", setup.dir.path().join("txlog-zombie"))
        .env("K2I_FAULT", "after-data-files@1:pause")
        .env("K2I_FAULT_RELEASE", &release)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _zombie_guard = common::KillOnDrop(zombie.id());
    // Wait until the zombie holds written files before its commit.
    let data = setup.warehouse().join(&setup.namespace).join("events").join("data");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&data).map_or(0, Iterator::count) == 0 {
        assert!(Instant::now() < deadline, "the zombie wrote no data file");
        assert!(zombie.try_wait().unwrap().is_none(), "the zombie exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let zombie_files: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    kill(&zombie, "STOP");

    // Another instance takes the partition once the zombie's session expires, and commits [0, 100).
    until_caught_up(&setup, &config);
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(seen["rows"], 100);

    kill(&zombie, "CONT");
    std::fs::write(&release, b"go").unwrap();
    // The zombie's commit is refused; it removes its files and restarts from the table.
    let deadline = Instant::now() + Duration::from_secs(60);
    while zombie_files.iter().any(|f| f.exists()) {
        assert!(Instant::now() < deadline, "the zombie's files are still there: {zombie_files:?}");
        assert!(zombie.try_wait().unwrap().is_none(), "the zombie exited instead of being fenced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = stop(zombie);
    assert!(stderr.contains("flush fenced"), "{stderr}");
    assert_exactly_once(stack, &setup, 100);
}

/// The table, not the log, is the truth: without the transaction log a restart still loses and duplicates
/// nothing; the interrupted flush's files can only remain as orphans.
#[tokio::test]
async fn losing_the_transaction_log_leaves_only_orphan_files() {
    let stack = stack();
    let setup = Setup::new(stack, "crash-nolog", 2).await;
    stack.produce(&setup.topic, raw_records(2, 150)).await;
    let config = setup.sql_config(stack, "raw", &format!("[buffer]\nflush_batch_size = 100\n{}", fast_group(true)));
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config).env("K2I_FAULT", "after-data-files@2:abort");
    let out = run(cmd);
    assert_eq!(out.status.code(), None, "{}", text(&out.stderr));
    std::fs::remove_dir_all(setup.dir.path().join("txlog")).unwrap();

    until_caught_up(&setup, &config);
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(300), Some(300)));
    let orphans = setup.unreferenced_files(&seen);
    assert!(!orphans.is_empty(), "the aborted flush's files remain, unreferenced");
    assert!(orphans.iter().all(|f| f.contains("/k2i-")), "{orphans:?}");
}
