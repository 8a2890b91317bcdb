//! Confluent-framed Protobuf under faults: a crash right after a writer schema's change reached the catalog,
//! a crash after dead letters were acknowledged but before the flush with their offsets committed, and the
//! Schema Registry being down at start (a warm disk cache goes on, a cold one waits and resumes by itself).
//! Every test counts rows and distinct (partition, offset) with pyiceberg and checks the recorded offsets.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, Setup, eventually, fast_group, free_port, http_get, k2i, kill, read_log, read_topic, recorded_offsets,
    run, spawn_logged, text, wait,
};
use k2i_testkit::proxy::{Fault, Match, Proxy};
use k2i_testkit::{Stack, TestRecord, stack};
use serde_json::{Value, json};

const MESSAGE: &str = "k2i.evo.Event";

/// `[kafka.format]` type plus the message the table is created from.
fn protobuf_format(message: &str) -> String {
    format!("protobuf\"\nmessage_name = \"{message}")
}

/// The registry section: `url` and the test's schema cache.
fn registry_section(url: &str, dir: &Path) -> String {
    format!("\n[kafka.format.registry]\nurl = \"{url}\"\ncache_dir = \"{}\"\n", cache_dir(dir).display())
}

fn cache_dir(dir: &Path) -> PathBuf {
    dir.join("schemas")
}

fn write_proto(dir: &Path, version: &str, body: &str) -> PathBuf {
    let root = dir.join(version);
    std::fs::create_dir_all(root.join("evo")).unwrap();
    std::fs::write(root.join("evo/event.proto"), format!("syntax = \"proto3\";\npackage k2i.evo;\n{body}")).unwrap();
    root
}

/// v1: the schema tables are created from.
fn v1(dir: &Path) -> PathBuf {
    write_proto(
        dir,
        "v1",
        "message Inner { string a = 1; }\nmessage Event { string id = 1; int32 count = 2; Inner inner = 3; }\n",
    )
}

/// v2: `count` widened to int64, a new top-level field and a new nested one (all compatible).
fn v2(dir: &Path) -> PathBuf {
    write_proto(
        dir,
        "v2",
        "message Inner { string a = 1; int32 b = 2; }\nmessage Event { string id = 1; int64 count = 2; Inner inner = 3; string label = 4; }\n",
    )
}

/// v1 records `e<from>`… with `count = i`.
fn v1_events(from: i64, n: i64) -> Vec<Value> {
    (from..from + n)
        .map(|i| json!({"value": {"id": format!("e{i}"), "count": i, "inner": {"a": format!("a{i}")}}, "partition": 0}))
        .collect()
}

/// v2 records: `count` beyond int32 (`V2_COUNT + i`), a label and the nested `b`.
const V2_COUNT: i64 = 5_000_000_000;

fn v2_events(from: i64, n: i64) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            json!({
                "value": {"id": format!("e{i}"), "count": V2_COUNT + i, "inner": {"a": format!("a{i}"), "b": i},
                          "label": format!("l{i}")},
                "partition": 0
            })
        })
        .collect()
}

fn ingest_until_caught_up(config: &Path, fault: Option<&str>) -> Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    if let Some(fault) = fault {
        cmd.env("K2I_FAULT", fault);
    }
    run(cmd)
}

fn assert_ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Asserts the run died at `point` (abort: killed by a signal, no exit code).
fn assert_aborted_at(out: &Output, point: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{point}: the run must fail:\n{stderr}");
    assert_eq!(out.status.code(), None, "{point}: the process must die by a signal:\n{stderr}");
    assert!(stderr.contains(&format!("fault point {point} reached")), "{point}:\n{stderr}");
}

/// Asserts exactly `expected` rows, each (partition, offset) once, and partition 0's recorded end.
fn assert_exact(stack: &Stack, setup: &Setup, expected: i64, end: i64) -> Value {
    let seen = setup.inspect_sql(stack, "");
    assert_eq!(seen["missing"], json!([]), "data files referenced but gone: {seen}");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(expected), Some(expected)), "{seen}");
    let offsets = recorded_offsets(&seen["summaries"], &setup.topic);
    assert_eq!(offsets, BTreeMap::from([("0".to_owned(), end)]), "recorded offsets");
    seen
}

#[tokio::test]
async fn a_crash_right_after_a_schema_change_loses_and_duplicates_nothing() {
    let stack = stack();
    let setup = Setup::new(stack, "pbf-schema-crash", 1).await;
    let dir = setup.dir.path();
    let (v1, v2) = (v1(dir), v2(dir));
    stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", MESSAGE, &v1_events(0, 10));
    // A short session and static membership: the restarted run takes the partition back from the aborted one at once.
    let extra = format!("{}{}", registry_section(&stack.registry, dir), fast_group(true));
    let config = setup.sql_config(stack, &protobuf_format(MESSAGE), &extra);
    let stdout = assert_ok(&ingest_until_caught_up(&config, None));
    assert!(stdout.starts_with("ingested 10 rows (0 records skipped)"), "{stdout}");
    let v1_fields = setup.fields_sql(stack);
    assert_eq!(v1_fields["count"][1], "int", "the table is created from v1: {v1_fields}");
    assert!(v1_fields.get("label").is_none(), "{v1_fields}");

    stack.produce_protobuf(&setup.topic, &v2, "evo/event.proto", MESSAGE, &v2_events(10, 10));
    // The change reaches the catalog, then the process dies before the log or the polling thread learn of it.
    let out = ingest_until_caught_up(&config, Some("after-schema-change:abort"));
    assert_aborted_at(&out, "after-schema-change");
    let crashed = setup.fields_sql(stack);
    assert_eq!(crashed["label"][1], "string", "the change was committed before the crash: {crashed}");
    assert_eq!(crashed["count"], json!([v1_fields["count"][0], "long"]), "{crashed}");
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(10), "no v2 row before the crash");

    let out = ingest_until_caught_up(&config, None);
    let stdout = assert_ok(&out);
    assert!(stdout.starts_with("ingested 10 rows (0 records skipped)"), "{stdout}\n{}", text(&out.stderr));

    let seen = assert_exact(stack, &setup, 20, 20);
    let last = setup.fields_sql(stack);
    assert_eq!(last["count"], json!([v1_fields["count"][0], "long"]), "widened in place, same field id: {last}");
    assert_eq!(last["label"], crashed["label"], "the column the crashed run added, not a second one: {last}");
    let columns: Vec<&str> = seen["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(columns.iter().filter(|c| **c == "label").count(), 1, "{columns:?}");
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(*) as n, count(label) as labels, count(\"inner\".b) as bs, \
         sum(count) filter (where _kafka_offset < 10) as v1_total, \
         sum(count) filter (where _kafka_offset >= 10) as v2_total, \
         min(count) filter (where _kafka_offset >= 10) as v2_min, \
         bool_and(label = 'l' || cast(_kafka_offset as varchar)) filter (where _kafka_offset >= 10) as labels_right, \
         bool_and(\"inner\".b = _kafka_offset) filter (where _kafka_offset >= 10) as bs_right, \
         bool_and(id = 'e' || cast(_kafka_offset as varchar)) as ids_right, \
         typeof(any_value(count)) as t from iceberg_scan('{metadata}')"
    ));
    assert_eq!(
        serde_json::to_value(&duck[0]).unwrap(),
        json!({
            "n": 20, "labels": 10, "bs": 10, "v1_total": 45, "v2_total": 10 * V2_COUNT + 145, "v2_min": V2_COUNT + 10,
            "labels_right": true, "bs_right": true, "ids_right": true, "t": "BIGINT"
        })
    );
}

/// The dead letters of `topic`, read until `at_least` arrived and then 3 s passed without another (a
/// repeated letter must be seen too): each letter's (source offset, error kind), sorted.
async fn dead_letters(stack: &Stack, topic: &str, at_least: usize) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = read_topic(stack, topic, at_least, Duration::from_secs(3))
        .await
        .into_iter()
        .map(|r| (r.headers["k2i.source.offset"].parse().unwrap(), r.headers["k2i.error.kind"].clone()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_crash_after_dead_letters_are_acknowledged_repeats_a_dead_letter_but_never_loses_a_row() {
    let stack = stack();
    let setup = Setup::new(stack, "pbf-dlq-crash", 1).await;
    let dlq = stack.unique("pbf-dlq-crash-letters");
    stack.create_topic(&dlq, 1).await;
    let dir = setup.dir.path();
    let v1 = v1(dir);
    // Offsets 0-4 good, 5 a bad frame, 6-10 good, 11 a bad frame, 12-14 good.
    stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", MESSAGE, &v1_events(0, 5));
    stack.produce(&setup.topic, [TestRecord::value(b"\x01bad".to_vec()).partition(0)]).await;
    stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", MESSAGE, &v1_events(6, 5));
    stack.produce(&setup.topic, [TestRecord::value(b"\x01bad".to_vec()).key("k11").partition(0)]).await;
    stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", MESSAGE, &v1_events(12, 3));

    let extra = format!(
        "{}\n[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"{dlq}\"\n{}",
        registry_section(&stack.registry, dir),
        fast_group(true)
    );
    let config = setup.sql_config(stack, &protobuf_format(MESSAGE), &extra);
    let out = ingest_until_caught_up(&config, Some("after-dead-letters:abort"));
    assert_aborted_at(&out, "after-dead-letters");
    let before = setup.inspect_sql(stack, "");
    // Whatever the crashed run committed (it may have flushed before reaching a bad record) is a prefix.
    let committed_before = before["rows"].as_i64().unwrap_or(0);
    assert!(committed_before < 13, "the flush with the dead letters' offsets must not have committed: {before}");

    let out = ingest_until_caught_up(&config, None);
    let stdout = assert_ok(&out);
    assert!(
        stdout.starts_with(&format!("ingested {} rows (2 records skipped)", 13 - committed_before)),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let seen = assert_exact(stack, &setup, 13, 15);
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select list(_kafka_offset order by _kafka_offset) as offsets, bool_and(id = 'e' || cast(_kafka_offset as varchar)) as ids_right \
         from iceberg_scan('{metadata}')"
    ));
    assert_eq!(
        serde_json::to_value(&duck[0]).unwrap(),
        json!({"offsets": [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14], "ids_right": true})
    );

    let letters = dead_letters(stack, &dlq, 2).await;
    for offset in [5, 11] {
        let copies = letters.iter().filter(|(o, _)| *o == offset).count();
        assert!((1..=2).contains(&copies), "offset {offset}: {copies} dead letters: {letters:?}");
    }
    assert!(letters.iter().all(|(o, kind)| [5, 11].contains(o) && kind == "bad_frame"), "{letters:?}");
    // The crashed run had acknowledged at least one letter before dying: the rerun repeats it.
    assert!(letters.len() >= 3, "a crash after the acknowledgement repeats a dead letter: {letters:?}");
}

#[tokio::test]
async fn registry_down_at_start_with_a_warm_cache_proceeds_and_with_a_cold_cache_waits_until_it_is_back() {
    let stack = stack();
    let setup = Setup::new(stack, "pbf-registry-down", 1).await;
    let dir = setup.dir.path();
    let (v1, v2) = (v1(dir), v2(dir));
    let produced = stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", MESSAGE, &v1_events(0, 10));
    let v1_id = produced.schema_ids[0].unwrap();
    let format = protobuf_format(MESSAGE);
    // Each config under its own name (`sql_config` always writes k2i.toml).
    let config_for = |name: &str, url: &str| {
        let written = setup.sql_config(
            stack,
            &format,
            &format!("{}\n[buffer]\nflush_interval = \"500ms\"\n", registry_section(url, dir)),
        );
        let path = dir.join(name);
        std::fs::copy(&written, &path).unwrap();
        path
    };
    // The real registry: the table is created, v1's schema lands in the disk cache.
    let real = config_for("real.toml", &stack.registry);
    let stdout = assert_ok(&ingest_until_caught_up(&real, None));
    assert!(stdout.starts_with("ingested 10 rows (0 records skipped)"), "{stdout}");
    // The schema the table was created from is one the records carry: a restart needs it from the cache.
    let cached: Vec<String> = std::fs::read_dir(cache_dir(dir))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(
        cached.contains(&format!("schema-{v1_id}.json")),
        "schema id {v1_id} (the one the table was created from and every record carries) is not in the disk \
         cache after a run that decoded its records: {cached:?}"
    );

    // (a) Warm: nothing listens at the registry's address, the cache has every id the records carry.
    stack.produce_protobuf(&setup.topic, &v1, "evo/event.proto", MESSAGE, &v1_events(10, 10));
    let dead = config_for("dead.toml", "http://127.0.0.1:9");
    let out = ingest_until_caught_up(&dead, None);
    let stdout = assert_ok(&out);
    assert!(stdout.starts_with("ingested 10 rows (0 records skipped)"), "{stdout}\n{}", text(&out.stderr));
    assert_exact(stack, &setup, 20, 20);

    // (b) Cold: a new schema version whose id was never fetched; the registry (behind a proxy) refuses every
    // request at first.
    let produced = stack.produce_protobuf(&setup.topic, &v2, "evo/event.proto", MESSAGE, &v2_events(20, 10));
    let v2_id = produced.schema_ids[0].unwrap();
    assert_ne!(v2_id, v1_id);
    assert!(!cache_dir(dir).join(format!("schema-{v2_id}.json")).exists());
    let proxy = Proxy::start(&stack.registry);
    // The registry's base path (Apicurio's ccompat API) behind the proxy's address.
    let base_path = stack.registry.trim_start_matches("http://").split_once('/').map(|(_, p)| format!("/{p}"));
    let proxied = config_for("proxied.toml", &format!("{}{}", proxy.url(), base_path.unwrap_or_default()));
    let down = proxy.rule(Match::any(), Fault::Cut);

    let health = free_port();
    let log = dir.join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&proxied);
    cmd.env("K2I_MONITORING__HEALTH_PORT", health.to_string()).env("K2I_MONITORING__METRICS_PORT", health.to_string());
    let started = Instant::now();
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let readyz = format!("http://127.0.0.1:{health}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        if let Some((503, body)) = http_get(&readyz)
            && body.contains("waits for schema id")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "not waiting after 60 s: {:?}\n{}", http_get(&readyz), read_log(&log));
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("waiting for the registry after {:?}: {reason}", started.elapsed());
    assert!(reason.contains(&format!("waits for schema id {v2_id}")), "{reason}");
    assert!(down.matched() >= 1, "the registry was asked (and refused)");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(setup.inspect_sql(stack, "")["rows"].as_i64(), Some(20), "nothing past the record waiting");
    assert_eq!(http_get(&readyz).map(|(c, _)| c), Some(503), "still waiting");

    // The registry comes back: the table goes on by itself.
    down.remove();
    let back = Instant::now();
    eventually("30 rows", Duration::from_secs(90), || {
        (setup.inspect_sql(stack, "")["rows"].as_i64() == Some(30)).then_some(())
    });
    eventually("/readyz 200", Duration::from_secs(30), || http_get(&readyz).filter(|(c, _)| *c == 200));
    eprintln!("resumed {:?} after the registry came back", back.elapsed());
    assert!(cache_dir(dir).join(format!("schema-{v2_id}.json")).exists(), "v2 is cached on disk now");
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));

    let seen = assert_exact(stack, &setup, 30, 30);
    let metadata = seen["metadata"].as_str().unwrap();
    let duck = stack.duckdb(&format!(
        "select count(*) as n, count(label) as labels, sum(count) filter (where _kafka_offset >= 20) as v2_total, \
         bool_and(id = 'e' || cast(_kafka_offset as varchar)) as ids_right from iceberg_scan('{metadata}')"
    ));
    assert_eq!(
        serde_json::to_value(&duck[0]).unwrap(),
        json!({"n": 30, "labels": 10, "v2_total": 10 * V2_COUNT + 245, "ids_right": true})
    );
}
