//! The REST catalog misbehaving under a live ingest, injected by the test proxy (`k2i_testkit::proxy`)
//! between k2i and the stack's catalog: a commit answered 504 although the server applied it, a commit held
//! while k2i is killed and released after the restart, a hung catalog, and an instance frozen between its
//! fencing check and the catalog's compare-and-swap while another instance takes its partitions.
//!
//! Every test is judged through the real REST catalog (never the proxy), by pyiceberg and DuckDB: rows and
//! distinct (partition, offset), contiguous offset ranges per partition, every data file the table
//! references present on disk, and no orphan file but those the test expects.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{
    Catalog, KillOnDrop, Setup, eventually, fast_group, free_port, http_get, k2i, kept_commit_ids, kill, raw_records,
    read_log, run, spawn_logged, text, wait,
};
use k2i_core::catalog::CALL_TIMEOUT;
use k2i_testkit::proxy::{Fault, Match, Proxy, Seen};
use k2i_testkit::{Stack, stack};
use serde_json::Value;

/// The table every test writes (`Setup`'s configurations name it so).
const TABLE: &str = "events";

fn until_caught_up(config: &Path) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "catch-up run failed:\n{}", text(&out.stderr));
    out
}

/// `k2i ingest` (continuous) with its endpoints on `port`.
fn ingest(config: &Path, port: u16) -> Command {
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"])
        .arg(config)
        .env("K2I_MONITORING__HEALTH_PORT", port.to_string())
        .env("K2I_MONITORING__METRICS_PORT", port.to_string());
    cmd
}

/// The commit requests (`POST …/tables/events`) the proxy saw, in order.
fn commits(proxy: &Proxy) -> Vec<Seen> {
    proxy
        .requests()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with(&format!("/tables/{TABLE}")))
        .collect()
}

/// The k2i commit id a commit request carries in its new snapshot's summary.
fn commit_id_in(request: &Seen) -> String {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let updates = body["updates"].as_array().unwrap();
    let snapshot = updates.iter().find(|u| u["action"] == "add-snapshot").unwrap_or_else(|| panic!("{body}"));
    snapshot["snapshot"]["summary"]["k2i.commit-id"].as_str().unwrap().to_owned()
}

/// The data files of one flush on disk (k2i names them `k2i-<commit id>-…`).
fn files_of(dir: &Path, commit_id: &str) -> Vec<PathBuf> {
    let prefix = format!("k2i-{commit_id}-");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|entries| entries.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    files.retain(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)));
    files
}

/// The log line k2i writes for a flush whose earlier attempt landed although its answer was lost.
fn found_landed(log: &str, commit_id: &str) -> bool {
    log.lines().any(|l| l.contains("the commit had already landed") && l.contains(&format!("commit_id={commit_id}")))
}

/// Judges the table through the real REST catalog: `expected` records exactly once (pyiceberg and DuckDB
/// agree), contiguous non-overlapping ranges per partition, no referenced file missing, and no orphan file
/// but those of the flushes in `orphans_of`. Returns pyiceberg's view.
fn assert_exactly_once(stack: &Stack, setup: &Setup, expected: i64, orphans_of: &[String]) -> Value {
    let seen = setup.inspect(stack, Catalog::Rest, "");
    let missing = Setup::missing_files(&seen);
    assert!(missing.is_empty(), "data files the table references were deleted: {missing:?}\n{seen}");
    assert_eq!(seen["rows"].as_i64(), Some(expected), "rows (pyiceberg)");
    assert_eq!(seen["distinct"].as_i64(), Some(expected), "distinct (partition, offset) (pyiceberg)");
    let duck = stack.duckdb_rest(&format!(
        "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d from rest.{}.{TABLE}",
        setup.namespace
    ));
    assert_eq!((duck[0]["n"].as_i64(), duck[0]["d"].as_i64()), (Some(expected), Some(expected)), "DuckDB");
    assert_contiguous(&seen["summaries"], &setup.topic);
    let orphans: Vec<String> = Setup::unreferenced_files(&seen)
        .into_iter()
        .filter(|f| {
            !orphans_of.iter().any(|id| f.rsplit('/').next().is_some_and(|n| n.starts_with(&format!("k2i-{id}-"))))
        })
        .collect();
    assert!(orphans.is_empty(), "unexpected orphan data files (allowed: flushes {orphans_of:?}): {orphans:?}");
    seen
}

/// Per partition, the k2i snapshots' ranges follow each other from 0 without gap or overlap (invariant 2),
/// and no commit id appears twice.
fn assert_contiguous(summaries: &Value, topic: &str) {
    let mut next: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for summary in summaries.as_array().unwrap() {
        let Some(offsets) = summary["k2i.offsets"].as_str() else { continue };
        let id = summary["k2i.commit-id"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "commit {id} is in the table twice: {summaries}");
        let offsets: Value = serde_json::from_str(offsets).unwrap();
        for (partition, range) in offsets[topic].as_object().unwrap() {
            let (start, end) = (range[0].as_i64().unwrap(), range[1].as_i64().unwrap());
            let expected = next.get(partition).copied().unwrap_or(0);
            assert_eq!(
                start, expected,
                "partition {partition}: a range starts at {start}, not {expected}: {summaries}"
            );
            next.insert(partition.clone(), end);
        }
    }
}

/// Waits until `log` contains `line`, failing early if the process exits.
fn wait_for_log(child: &mut Child, log: &Path, line: &str, limit: Duration) -> String {
    eventually(&format!("`{line}` in {}", log.display()), limit, || {
        let text = read_log(log);
        if text.contains(line) {
            return Some(text);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process exited ({status}) before logging `{line}`:\n{text}");
        }
        None
    })
}

#[tokio::test]
async fn a_commit_answered_504_after_the_server_applied_it_is_found_landed_not_repeated() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-504", 2).await;
    stack.produce(&setup.topic, raw_records(2, 150)).await;
    let proxy = Proxy::start(&stack.rest);
    let commit = Match::commit(TABLE);
    // First flush: a 503 the server never saw (retried as usual), then a 504 for a commit it applied.
    proxy.once(commit.clone(), Fault::Respond(503));
    proxy.once(commit.clone(), Fault::ForwardThenRespond(504));
    // Second flush: the connection cut after the server applied the commit.
    proxy.once(commit, Fault::ForwardThenCut);
    let config = setup.rest_config(stack, "proxied.toml", &proxy.url(), "raw", "[buffer]\nflush_batch_size = 100\n");

    let out = until_caught_up(&config);
    let stderr = text(&out.stderr);
    assert_eq!(
        text(&out.stdout),
        format!(
            "ingested 300 rows (0 records skipped) into {}.{TABLE} in 3 commits and 3 data files\n",
            setup.namespace
        ),
        "{stderr}"
    );
    let sent = commits(&proxy);
    let described: Vec<String> = sent.iter().map(k2i_testkit::proxy::describe).collect();
    assert_eq!(sent.len(), 4, "503, 504, cut, then the third flush:\n{}", described.join("\n"));
    assert_eq!((sent[0].status, sent[0].answered), (None, Some(503)), "not forwarded");
    assert_eq!((sent[1].status, sent[1].answered), (Some(200), Some(504)), "applied, answered 504");
    assert_eq!((sent[2].status, sent[2].answered), (Some(200), None), "applied, connection cut");
    assert_eq!((sent[3].status, sent[3].answered), (Some(200), Some(200)));
    let ids: Vec<String> = sent.iter().map(commit_id_in).collect();
    assert_eq!(ids[0], ids[1], "the 503 was retried as the same flush");
    for id in [&ids[1], &ids[2]] {
        assert!(found_landed(&stderr, id), "k2i did not report commit {id} as landed:\n{stderr}");
    }
    // Each request pins its base: a lost answer can never make the retry append on top of itself.
    for request in &sent {
        assert!(request.body_text().contains("assert-ref-snapshot-id"), "{}", request.body_text());
    }

    let seen = assert_exactly_once(stack, &setup, 300, &[]);
    let in_table: Vec<&str> =
        seen["summaries"].as_array().unwrap().iter().filter_map(|s| s["k2i.commit-id"].as_str()).collect();
    assert_eq!(in_table, [ids[1].as_str(), ids[2].as_str(), ids[3].as_str()], "one snapshot per flush");
}

/// Starts an instance through `proxy` whose second commit the proxy holds, and kills it with SIGKILL while
/// the request is held. Returns the held rule, the held flush's commit id and its data files.
fn kill_while_a_commit_is_held(
    stack: &Stack,
    setup: &Setup,
    proxy: &Proxy,
    extra: &str,
) -> (k2i_testkit::proxy::Rule, String, Vec<PathBuf>) {
    let commit = Match::commit(TABLE);
    // The first flush lands; the second one's request is held.
    proxy.once(commit.clone(), Fault::Delay(Duration::ZERO));
    let held = proxy.once(commit, Fault::Hold);
    let config = setup.rest_config(stack, "proxied.toml", &proxy.url(), "raw", extra);
    let log = setup.dir.path().join("victim.log");
    let victim = spawn_logged(ingest(&config, free_port()), &log);
    let _victim_guard = KillOnDrop(victim.id());
    held.wait_holding(1, Duration::from_secs(60));
    let request = commits(proxy).pop().unwrap();
    assert_eq!(request.fault, Some(Fault::Hold));
    let held_id = commit_id_in(&request);
    kill(&victim, "KILL");
    let out = wait(victim, Duration::from_secs(30));
    assert_eq!(out.status.code(), None, "killed by SIGKILL:\n{}", read_log(&log));
    let files = files_of(&setup.data_dir(stack, Catalog::Rest), &held_id);
    assert!(!files.is_empty(), "the held flush {held_id} wrote no data file");
    (held, held_id, files)
}

#[tokio::test]
async fn a_commit_held_while_k2i_is_killed_keeps_its_files_and_fails_its_swap_after_the_restart_committed() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-held-late", 2).await;
    stack.produce(&setup.topic, raw_records(2, 100)).await;
    let proxy = Proxy::start(&stack.rest);
    let extra = format!("[buffer]\nflush_batch_size = 100\n{}", fast_group(true));
    let (held, held_id, held_files) = kill_while_a_commit_is_held(stack, &setup, &proxy, &extra);

    // Restarted directly against the catalog; the held request is still pending in the proxy.
    let direct = setup.rest_config(stack, "direct.toml", &stack.rest, "raw", &extra);
    let stderr = text(&until_caught_up(&direct).stderr);
    assert_eq!(
        kept_commit_ids(&stderr),
        std::slice::from_ref(&held_id),
        "recovery must keep the held flush's files:\n{stderr}"
    );
    assert!(held_files.iter().all(|f| f.exists()), "the held flush's files were deleted: {held_files:?}");

    // The restart committed on the held request's base: its compare-and-swap must fail now.
    held.release();
    let answered = proxy.wait_for("the released commit's answer", Duration::from_secs(30), |seen| {
        seen.iter().any(|s| s.fault == Some(Fault::Hold) && s.status.is_some())
    });
    let released = answered.iter().find(|s| s.fault == Some(Fault::Hold)).unwrap();
    assert_eq!(released.status, Some(409), "the stale commit must fail its compare-and-swap");
    // Its files stay as orphans for maintenance (invariant 9), nothing else does.
    assert_exactly_once(stack, &setup, 200, &[held_id]);
}

#[tokio::test]
async fn a_commit_held_while_k2i_is_killed_may_land_after_the_restart_recovered_and_the_restart_is_fenced() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-held-early", 2).await;
    stack.produce(&setup.topic, raw_records(2, 100)).await;
    let proxy = Proxy::start(&stack.rest);
    let extra = format!("[buffer]\nflush_batch_size = 100\n{}", fast_group(true));
    let (held, held_id, held_files) = kill_while_a_commit_is_held(stack, &setup, &proxy, &extra);

    // Restarted directly against the catalog, paused after writing its first flush's files.
    let direct = setup.rest_config(stack, "direct.toml", &stack.rest, "raw", &extra);
    let release = setup.dir.path().join("release");
    let log = setup.dir.path().join("restart.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"])
        .arg(&direct)
        .env("K2I_FAULT", "after-data-files@1:pause")
        .env("K2I_FAULT_RELEASE", &release);
    let mut restart = spawn_logged(cmd, &log);
    let _restart_guard = KillOnDrop(restart.id());
    let text_so_far = wait_for_log(&mut restart, &log, "fault point after-data-files reached", Duration::from_secs(60));
    assert_eq!(kept_commit_ids(&text_so_far), std::slice::from_ref(&held_id), "{text_so_far}");
    assert!(held_files.iter().all(|f| f.exists()), "the held flush's files were deleted: {held_files:?}");

    // main is still the held request's base: it lands.
    held.release();
    let answered = proxy.wait_for("the released commit's answer", Duration::from_secs(30), |seen| {
        seen.iter().any(|s| s.fault == Some(Fault::Hold) && s.status.is_some())
    });
    assert_eq!(answered.iter().find(|s| s.fault == Some(Fault::Hold)).unwrap().status, Some(200));

    // The restart's flush holds the same records: it must be fenced, its own files removed.
    std::fs::write(&release, b"go").unwrap();
    let out = wait(restart, Duration::from_secs(90));
    let stderr = read_log(&log);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("flush fenced"), "{stderr}");
    let seen = assert_exactly_once(stack, &setup, 200, &[]);
    let in_table: Vec<&str> =
        seen["summaries"].as_array().unwrap().iter().filter_map(|s| s["k2i.commit-id"].as_str()).collect();
    assert!(in_table.contains(&held_id.as_str()), "the held commit landed: {in_table:?}");
}

#[tokio::test]
async fn a_hung_catalog_turns_readyz_503_within_the_call_timeout_and_the_ingest_resumes_when_it_answers() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-hung", 1).await;
    let proxy = Proxy::start(&stack.rest);
    let config =
        setup.rest_config(stack, "proxied.toml", &proxy.url(), "raw", "[buffer]\nflush_interval = \"300ms\"\n");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let readyz = || http_get(&format!("{base}/readyz"));
    let log = setup.dir.path().join("hung.log");
    let mut child = spawn_logged(ingest(&config, port), &log);
    let _child_guard = KillOnDrop(child.id());
    eventually("/readyz 200", Duration::from_secs(30), || readyz().filter(|(c, _)| *c == 200));
    let status_url = format!("{base}/status");
    let committed = |n: i64| {
        let url = status_url.clone();
        move || {
            let (_, body) = http_get(&url)?;
            let status: Value = serde_json::from_str(&body).ok()?;
            status["partitions"].as_array()?.iter().any(|p| p["committed"] == n).then_some(())
        }
    };
    // A first commit: the partition is assigned (its progress lookup done) before the catalog hangs.
    stack.produce(&setup.topic, raw_records(1, 20)).await;
    eventually("the first commit", Duration::from_secs(60), committed(20));

    // From now on the catalog accepts connections and never answers.
    let hang = proxy.rule(Match::any(), Fault::Hold);
    stack.produce(&setup.topic, raw_records(1, 20)).await;
    let hung_at = Instant::now();
    let reason =
        |body: &str| serde_json::from_str::<Value>(body).unwrap()["reason"].as_str().unwrap_or_default().to_owned();
    let first = eventually("/readyz 503 while the catalog hangs", CALL_TIMEOUT + Duration::from_secs(5), || {
        readyz().filter(|(c, _)| *c == 503).map(|(_, body)| reason(&body))
    });
    let first_after = hung_at.elapsed();
    let catalog = eventually("/readyz naming the catalog", CALL_TIMEOUT + Duration::from_secs(15), || {
        readyz()
            .filter(|(c, _)| *c == 503)
            .map(|(_, body)| reason(&body))
            .filter(|r| r.starts_with("catalog unavailable:"))
    });
    let catalog_after = hung_at.elapsed();
    eprintln!(
        "hung catalog: /readyz 503 after {first_after:?} ({first}), catalog named after {catalog_after:?} ({catalog})"
    );
    // The REST client's own request timeout (iceberg.rest.request_timeout, 30 s) or the call deadline fires.
    assert!(catalog.contains("did not answer in time") || catalog.contains("timed out"), "{catalog}");
    assert!(hang.holding() >= 1, "the commit is waiting on the catalog");
    assert!(child.try_wait().unwrap().is_none(), "k2i gave up within one call timeout:\n{}", read_log(&log));

    // The catalog answers again (the held requests go on): the retry commits and readiness comes back.
    hang.release();
    let released_at = Instant::now();
    eventually("/readyz 200 after the hang", Duration::from_secs(60), || readyz().filter(|(c, _)| *c == 200));
    eventually("the held flush committed", Duration::from_secs(60), committed(40));
    eprintln!("hung catalog: committed {:?} after the release", released_at.elapsed());
    stack.produce(&setup.topic, raw_records(1, 20)).await;
    eventually("commits flowing again", Duration::from_secs(60), committed(60));

    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    let stderr = read_log(&log);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the catalog did not answer in time") || stderr.contains("operation timed out"),
        "{stderr}"
    );
    // Nothing lost or doubled, also after a restart directly against the catalog.
    let direct = setup.rest_config(stack, "direct.toml", &stack.rest, "raw", "");
    let logs = stderr + &text(&until_caught_up(&direct).stderr);
    assert_exactly_once(stack, &setup, 60, &kept_commit_ids(&logs));
}

#[tokio::test]
async fn a_zombie_frozen_between_its_fencing_check_and_the_swap_cannot_land_its_stale_commit() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-zombie", 1).await;
    stack.produce(&setup.topic, raw_records(1, 100)).await;
    let proxy = Proxy::start(&stack.rest);
    // The zombie's commit passed its fencing check (the request is built on the checked base) and waits in
    // the proxy, not yet at the catalog's compare-and-swap.
    let held = proxy.once(Match::commit(TABLE), Fault::Hold);
    // No static membership: the frozen instance's partitions move once its session expires.
    let extra = format!("[buffer]\nflush_interval = \"200ms\"\n{}", fast_group(false));
    let zombie_config = setup.rest_config(stack, "zombie.toml", &proxy.url(), "raw", &extra);
    let log = setup.dir.path().join("zombie.log");
    let mut cmd = ingest(&zombie_config, free_port());
    cmd.env("K2I_TRANSACTION_LOG__LOG_DIR", setup.dir.path().join("txlog-zombie"));
    let mut zombie = spawn_logged(cmd, &log);
    let _zombie_guard = KillOnDrop(zombie.id());
    held.wait_holding(1, Duration::from_secs(60));
    let zombie_id = commit_id_in(&commits(&proxy).pop().unwrap());
    let zombie_files = files_of(&setup.data_dir(stack, Catalog::Rest), &zombie_id);
    assert!(!zombie_files.is_empty());
    kill(&zombie, "STOP");

    // Another instance of the group takes the partition once the zombie's session expires and commits
    // [0, 100) on the base the zombie's request is pinned to.
    let direct = setup.rest_config(stack, "direct.toml", &stack.rest, "raw", &extra);
    let mut logs = text(&until_caught_up(&direct).stderr);
    assert_eq!(setup.inspect(stack, Catalog::Rest, "")["rows"], 100);

    kill(&zombie, "CONT");
    held.release();
    let answered = proxy.wait_for("the zombie's commit answer", Duration::from_secs(30), |seen| {
        seen.iter().any(|s| s.fault == Some(Fault::Hold) && s.status.is_some())
    });
    let stale = answered.iter().find(|s| s.fault == Some(Fault::Hold)).unwrap();
    assert_eq!(stale.status, Some(409), "the stale commit's base moved: its compare-and-swap must fail");
    // Its retry validates on the new base: fenced, files removed, the instance carries on.
    eventually("the zombie's files removed", Duration::from_secs(60), || {
        assert!(zombie.try_wait().unwrap().is_none(), "the zombie exited instead of being fenced:\n{}", read_log(&log));
        zombie_files.iter().all(|f| !f.exists()).then_some(())
    });
    kill(&zombie, "TERM");
    let out = wait(zombie, Duration::from_secs(90));
    let stderr = read_log(&log);
    assert!(stderr.contains("flush fenced"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "the zombie did not stop cleanly:\n{stderr}");
    logs.push_str(&stderr);
    assert_exactly_once(stack, &setup, 100, &kept_commit_ids(&logs));
}

/// The other side of "not a silent stall": with a healthy catalog, records arriving after an idle spell
/// longer than the stall limit (ten flush intervals) must not make the instance look stalled while their
/// first flush is simply waiting for its interval.
#[tokio::test]
async fn readyz_stays_200_when_records_arrive_after_an_idle_spell_and_the_catalog_answers() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-idle", 1).await;
    let config = setup.rest_config(stack, "direct.toml", &stack.rest, "raw", "[buffer]\nflush_interval = \"300ms\"\n");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = setup.dir.path().join("idle.log");
    let child = spawn_logged(ingest(&config, port), &log);
    let _child_guard = KillOnDrop(child.id());
    let committed = |n: i64| {
        let (_, body) = http_get(&format!("{base}/status"))?;
        let status: Value = serde_json::from_str(&body).ok()?;
        status["partitions"].as_array()?.iter().any(|p| p["committed"] == n).then_some(())
    };
    stack.produce(&setup.topic, raw_records(1, 1)).await;
    eventually("the first commit", Duration::from_secs(60), || committed(1));
    eventually("/readyz 200", Duration::from_secs(10), || {
        http_get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200)
    });

    // Idle for longer than ten flush intervals, then a few records.
    std::thread::sleep(Duration::from_secs(4));
    stack.produce(&setup.topic, raw_records(1, 5)).await;
    let mut not_ready = Vec::new();
    eventually("the second commit", Duration::from_secs(30), || {
        if let Some((503, body)) = http_get(&format!("{base}/readyz")) {
            not_ready.push(body);
        }
        committed(6)
    });
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));
    assert!(not_ready.is_empty(), "/readyz answered 503 while a healthy flush waited for its interval: {not_ready:?}");
}

#[tokio::test]
async fn a_slow_catalog_fills_the_buffer_cap_pauses_consumption_and_loses_nothing() {
    let stack = stack();
    let setup = Setup::new(stack, "faults-backpressure", 1).await;
    let proxy = Proxy::start(&stack.rest);
    // Every commit takes 3 s; 1 KiB records arrive far faster than that.
    proxy.rule(Match::commit(TABLE), Fault::Delay(Duration::from_secs(3)));
    let extra = "[buffer]\nmax_size_mb = 1\nflush_interval = \"200ms\"\n";
    let config = setup.rest_config(stack, "proxied.toml", &proxy.url(), "raw", extra);
    let records: Vec<k2i_testkit::TestRecord> =
        (0..4000).map(|i| k2i_testkit::TestRecord::value(format!("{i:0>1024}").into_bytes())).collect();
    stack.produce(&setup.topic, records).await;
    let port = free_port();
    let log = setup.dir.path().join("backpressure.log");
    let child = spawn_logged(ingest(&config, port), &log);
    let _guard = KillOnDrop(child.id());
    let status = || {
        let (_, body) = http_get(&format!("http://127.0.0.1:{port}/status"))?;
        serde_json::from_str::<Value>(&body).ok()
    };
    // The buffer, the flush waiting and the one in flight hold the 1 MiB cap: consumption pauses.
    let paused = eventually("consumption paused by the buffer cap", Duration::from_secs(60), || {
        status().filter(|s| s["buffer"]["paused"] == true)
    });
    assert!(paused["buffer"]["bytes"].as_i64().unwrap() <= 1 << 20, "the buffer stays under the cap: {paused}");
    let committed = paused["partitions"][0]["committed"].as_i64().unwrap_or(0);
    assert!(committed < 4000, "paused while records still wait in Kafka: {paused}");
    // It resumes by itself as flushes land, and every record lands once.
    eventually("4000 rows committed", Duration::from_secs(180), || {
        status()?["partitions"].as_array()?.iter().any(|p| p["committed"] == 4000).then_some(())
    });
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));
    assert_exactly_once(stack, &setup, 4000, &[]);
}
