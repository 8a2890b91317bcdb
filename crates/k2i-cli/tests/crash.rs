//! Crash safety against the real stack: fault points, kill -9 at random moments, several instances in one
//! group, and a zombie instance. Every test ends by counting distinct (partition, offset) in the table with
//! pyiceberg, by checking that every data file the table references exists, and that no data file on disk
//! is left unreferenced (except, with the REST catalog, the files of flushes recovery kept because their
//! commit could still land: invariant 9).
//!
//! Every test runs once per catalog, as `sql::<name>` and `rest::<name>`: the embedded SQLite catalog commits
//! inside the k2i process, the REST catalog in a server that outlives it. Some also run on object storage,
//! as `postgres_s3::<name>` (the SQL catalog on Postgres) and `glue_s3::<name>` (Glue's compare-and-swap on
//! the table's `VersionId`), with the warehouse in the stack's S3 server, and `s3tables::<name>` (S3 Tables'
//! version token).
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Catalog, Setup, fast_group, k2i, kept_commit_ids, kill, raw_records, read_log, run, spawn_logged, text, wait,
};
use k2i_testkit::{Stack, stack};
use serde_json::Value;

/// Runs each named test (an `async fn(Catalog)`) once in the module `$module`, on `$catalog`.
macro_rules! on_catalog {
    ($module:ident, $catalog:ident: $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Catalog::$catalog).await
                }
            )*
        }
    };
}

on_catalog!(sql, Sql:
    every_fault_point_aborted_then_restarted_loses_and_duplicates_nothing,
    random_kill_9_during_ingest_never_loses_or_duplicates,
    three_instances_in_one_group_with_one_restarting_write_exactly_once,
    a_thawed_zombie_is_fenced_and_its_files_are_removed,
    losing_the_transaction_log_leaves_only_orphan_files,
);
on_catalog!(rest, Rest:
    every_fault_point_aborted_then_restarted_loses_and_duplicates_nothing,
    random_kill_9_during_ingest_never_loses_or_duplicates,
    three_instances_in_one_group_with_one_restarting_write_exactly_once,
    a_thawed_zombie_is_fenced_and_its_files_are_removed,
    losing_the_transaction_log_leaves_only_orphan_files,
);
// Object stores: the SQL catalog on Postgres and the Glue catalog, both with the warehouse in S3. The zombie
// test watches a local data directory, so it runs on the first two only.
on_catalog!(postgres_s3, Postgres:
    random_kill_9_during_ingest_never_loses_or_duplicates,
    three_instances_in_one_group_with_one_restarting_write_exactly_once,
    losing_the_transaction_log_leaves_only_orphan_files,
);
on_catalog!(glue_s3, Glue:
    every_fault_point_aborted_then_restarted_loses_and_duplicates_nothing,
    three_instances_in_one_group_with_one_restarting_write_exactly_once,
);
// S3 Tables' compare-and-swap on the table's version token.
on_catalog!(s3tables, S3Tables:
    three_instances_in_one_group_with_one_restarting_write_exactly_once,
);

fn until_caught_up(setup: &Setup, config: &std::path::Path) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "catch-up run failed for {}:\n{}", setup.topic, text(&out.stderr));
    out
}

/// Asserts the table holds each of `expected` records exactly once, every file it references exists, and no
/// orphan file is on disk but those of flushes the `logs` show recovery kept (their commit could still land).
fn assert_exactly_once(stack: &Stack, setup: &Setup, catalog: Catalog, expected: i64, logs: &str) -> Value {
    let seen = setup.inspect(stack, catalog, "");
    let missing = Setup::missing_files(&seen);
    assert!(missing.is_empty(), "data files referenced by the table but deleted: {missing:?}");
    assert_eq!(seen["rows"].as_i64(), Some(expected), "rows in the table");
    assert_eq!(seen["distinct"].as_i64(), Some(expected), "distinct (partition, offset) in the table");
    let kept = kept_commit_ids(logs);
    assert!(catalog != Catalog::Sql || kept.is_empty(), "an embedded catalog's commit cannot land later: {kept:?}");
    // An S3 Tables table bucket cannot be listed (as on AWS): its orphans are out of sight.
    if catalog == Catalog::S3Tables {
        return seen;
    }
    let orphans: Vec<String> = Setup::unreferenced_files(&seen)
        .into_iter()
        .filter(|f| {
            !kept.iter().any(|id| f.rsplit('/').next().is_some_and(|name| name.starts_with(&format!("k2i-{id}-"))))
        })
        .collect();
    assert!(orphans.is_empty(), "data files left unreferenced after recovery (kept flushes: {kept:?}): {orphans:?}");
    seen
}

async fn every_fault_point_aborted_then_restarted_loses_and_duplicates_nothing(catalog: Catalog) {
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
        let config =
            setup.config(stack, catalog, "raw", &format!("[buffer]\nflush_batch_size = 100\n{}", fast_group(true)));

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
        assert_exactly_once(stack, &setup, catalog, 300, &stderr);
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

/// Kills a continuously ingesting instance with SIGKILL at random moments, `K2I_KILLS` times (default 10;
/// `scripts/soak.sh N` runs more), then catches up: exactly every record, once.
async fn random_kill_9_during_ingest_never_loses_or_duplicates(catalog: Catalog) {
    let stack = stack();
    let kills: usize = std::env::var("K2I_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(10);
    let records: usize = std::env::var("K2I_KILL_RECORDS").ok().and_then(|k| k.parse().ok()).unwrap_or(200_000);
    let seed = std::env::var("K2I_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("random kill test ({catalog:?}): {kills} kills, {records} records, seed {seed}");
    let mut rng = Lcg(seed);

    let setup = Setup::new(stack, "crash-kill", 8).await;
    let config = setup.config(
        stack,
        catalog,
        "raw",
        &format!("[buffer]\nflush_batch_size = 2000\nflush_interval = \"200ms\"\n{}", fast_group(true)),
    );
    // Records arrive while the instances are killed, so every kill lands in a live ingest: each round
    // produces its share, starts an instance and kills it at a random moment.
    let per_round = records / 8 / kills;
    let mut commits_before_kill = 0;
    let mut logs = String::new();
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
        let stderr = text(&out.stderr);
        commits_before_kill += stderr.matches("committed flush").count();
        logs.push_str(&stderr);
    }
    let rest = records / 8 - per_round * kills;
    stack.produce(&setup.topic, raw_records(8, rest)).await;
    eprintln!("random kill test: {commits_before_kill} flushes committed by the killed instances");
    logs.push_str(&text(&until_caught_up(&setup, &config).stderr));
    let seen = assert_exactly_once(stack, &setup, catalog, (records / 8 * 8) as i64, &logs);
    assert!(commits_before_kill > 0, "the kills never landed during a live ingest");
    eprintln!("random kill test: {} snapshots", seen["summaries"].as_array().unwrap().len());
}

/// A running instance and the file its log goes to (a long-running child must not write into a pipe
/// nobody reads: it would block once the pipe is full).
struct Instance {
    child: Child,
    log: std::path::PathBuf,
}

fn instance(config: &std::path::Path, log_dir: &std::path::Path) -> Instance {
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(config).env("K2I_TRANSACTION_LOG__LOG_DIR", log_dir);
    let log = log_dir.with_extension("log");
    Instance { child: spawn_logged(cmd, &log), log }
}

fn stop(instance: Instance) -> String {
    kill(&instance.child, "TERM");
    let out = wait(instance.child, Duration::from_secs(90));
    let stderr = read_log(&instance.log);
    assert_eq!(out.status.code(), Some(0), "an instance did not stop cleanly:\n{stderr}");
    stderr
}

/// Two instances share the group while a third joins and leaves repeatedly; records keep arriving. After a
/// final catch-up every record is in the table exactly once.
async fn three_instances_in_one_group_with_one_restarting_write_exactly_once(catalog: Catalog) {
    let stack = stack();
    let setup = Setup::new(stack, "crash-group", 6).await;
    let config = setup.config(
        stack,
        catalog,
        "raw",
        &format!("[buffer]\nflush_batch_size = 500\nflush_interval = \"300ms\"\n{}", fast_group(false)),
    );
    let dirs: Vec<_> = (0..3).map(|i| setup.dir.path().join(format!("txlog-{i}"))).collect();
    let a = instance(&config, &dirs[0]);
    let _a_guard = common::KillOnDrop(a.child.id());
    let b = instance(&config, &dirs[1]);
    let _b_guard = common::KillOnDrop(b.child.id());
    let mut produced = 0;
    let mut logs = String::new();
    for round in 0..4 {
        stack.produce(&setup.topic, raw_records(6, 1000)).await;
        produced += 6000;
        let c = instance(&config, &dirs[2]);
        let _c_guard = common::KillOnDrop(c.child.id());
        std::thread::sleep(Duration::from_millis(1500 + 300 * round));
        logs.push_str(&stop(c));
    }
    stack.produce(&setup.topic, raw_records(6, 500)).await;
    produced += 3000;
    std::thread::sleep(Duration::from_secs(2));
    logs.push_str(&stop(a));
    logs.push_str(&stop(b));
    logs.push_str(&text(&until_caught_up(&setup, &config).stderr));
    assert_exactly_once(stack, &setup, catalog, produced, &logs);
}

/// An instance frozen after writing a flush's files, whose partition moves to another instance that commits
/// the same offsets, must have its commit rejected when it thaws, and its files removed.
async fn a_thawed_zombie_is_fenced_and_its_files_are_removed(catalog: Catalog) {
    let stack = stack();
    let setup = Setup::new(stack, "crash-zombie", 1).await;
    stack.produce(&setup.topic, raw_records(1, 100)).await;
    // Short sessions so the frozen instance loses its partition quickly.
    let config =
        setup.config(stack, catalog, "raw", &format!("[buffer]\nflush_interval = \"200ms\"\n{}", fast_group(false)));

    let release = setup.dir.path().join("release");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"])
        .arg(&config)
        .env("K2I_TRANSACTION_LOG__LOG_DIR", setup.dir.path().join("txlog-zombie"))
        .env("K2I_FAULT", "after-data-files@1:pause")
        .env("K2I_FAULT_RELEASE", &release);
    let log = setup.dir.path().join("zombie.log");
    let mut zombie = spawn_logged(cmd, &log);
    let _zombie_guard = common::KillOnDrop(zombie.id());
    // Wait until the zombie holds written files before its commit.
    let data = setup.data_dir(stack, catalog);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&data).map_or(0, Iterator::count) == 0 {
        assert!(Instant::now() < deadline, "the zombie wrote no data file");
        assert!(zombie.try_wait().unwrap().is_none(), "the zombie exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let zombie_files: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).collect();
    kill(&zombie, "STOP");

    // Another instance takes the partition once the zombie's session expires, and commits [0, 100).
    let mut logs = text(&until_caught_up(&setup, &config).stderr);
    let seen = setup.inspect(stack, catalog, "");
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
    let stderr = stop(Instance { child: zombie, log });
    assert!(stderr.contains("flush fenced"), "{stderr}");
    logs.push_str(&stderr);
    assert_exactly_once(stack, &setup, catalog, 100, &logs);
}

/// The table, not the log, is the truth: without the transaction log a restart still loses and duplicates
/// nothing; the interrupted flush's files can only remain as orphans.
async fn losing_the_transaction_log_leaves_only_orphan_files(catalog: Catalog) {
    let stack = stack();
    let setup = Setup::new(stack, "crash-nolog", 2).await;
    stack.produce(&setup.topic, raw_records(2, 150)).await;
    let config =
        setup.config(stack, catalog, "raw", &format!("[buffer]\nflush_batch_size = 100\n{}", fast_group(true)));
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config).env("K2I_FAULT", "after-data-files@2:abort");
    let out = run(cmd);
    assert_eq!(out.status.code(), None, "{}", text(&out.stderr));
    std::fs::remove_dir_all(setup.dir.path().join("txlog")).unwrap();

    until_caught_up(&setup, &config);
    let seen = setup.inspect(stack, catalog, "");
    assert!(Setup::missing_files(&seen).is_empty(), "{seen}");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(300), Some(300)));
    let orphans = Setup::unreferenced_files(&seen);
    assert!(!orphans.is_empty(), "the aborted flush's files remain, unreferenced");
    assert!(orphans.iter().all(|f| f.contains("/k2i-")), "{orphans:?}");
}
