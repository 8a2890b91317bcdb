//! The dead-letter topic: records that cannot be stored go there unchanged, with headers saying why and where
//! they came from; their offsets are committed only once the topic acknowledged them; an outage of the
//! dead-letter topic pauses the table instead of dropping anything.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::time::{Duration, Instant};

use common::{
    KillOnDrop, Setup, free_port, http_get, k2i, kill, read_log, read_topic, recorded_offsets, run, spawn_logged, text,
    wait,
};
use k2i_testkit::{TestRecord, stack};
use serde_json::json;

#[tokio::test]
async fn bad_records_land_in_the_dead_letter_topic_unchanged_with_their_reason_and_source() {
    let stack = stack();
    let setup = Setup::new(stack, "dlq-json", 1).await;
    let dlq = stack.unique("dlq-json-letters");
    stack.create_topic(&dlq, 1).await;
    let mut records: Vec<TestRecord> = (0..10).map(|i| TestRecord::value(json!({"n": i}).to_string())).collect();
    records[3] = TestRecord::value("not json").key("k3").header("trace", "abc");
    records[7] = TestRecord::value(json!({"n": "seven"}).to_string()).key("k7");
    stack.produce(&setup.topic, records).await;

    let extra = format!("[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"{dlq}\"\n");
    let config = setup.sql_config(stack, "json", &extra);
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ingested 8 rows (2 records skipped)"), "{}", text(&out.stdout));
    let seen = setup.inspect_sql(stack, "\"n\"");
    assert_eq!(seen["rows"], 8);
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic)["0"], 10);

    let letters = read_topic(stack, &dlq, 2, Duration::ZERO).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let first = &letters[0];
    assert_eq!((first.key.as_deref(), first.value.as_deref()), (Some(&b"k3"[..]), Some(&b"not json"[..])));
    assert_eq!(first.headers["trace"], "abc", "the original headers are kept");
    assert_eq!(first.headers["k2i.error.kind"], "not_json");
    assert!(first.headers["k2i.error.reason"].starts_with("the value is not JSON"), "{:?}", first.headers);
    assert_eq!(first.headers["k2i.source.topic"], setup.topic);
    assert_eq!(
        (first.headers["k2i.source.partition"].as_str(), first.headers["k2i.source.offset"].as_str()),
        ("0", "3")
    );
    assert_eq!(first.headers["k2i.version"], env!("CARGO_PKG_VERSION"));
    assert!(!first.headers.contains_key("k2i.schema.id"));
    let second = &letters[1];
    assert_eq!(second.headers["k2i.error.kind"], "schema_conflict");
    assert_eq!(second.headers["k2i.source.offset"], "7");
}

#[tokio::test]
async fn a_dead_letter_topic_outage_pauses_the_table_and_loses_nothing() {
    let stack = stack();
    let setup = Setup::new(stack, "dlq-outage", 1).await;
    // The dead-letter topic does not exist yet (the broker does not create topics on its own).
    let dlq = stack.unique("dlq-outage-letters");
    let mut records: Vec<TestRecord> = (0..20).map(|i| TestRecord::value(json!({"n": i}).to_string())).collect();
    records[4] = TestRecord::value("broken");
    stack.produce(&setup.topic, records).await;

    let health = free_port();
    let extra = format!(
        "[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"{dlq}\"\n[buffer]\nflush_interval = \"300ms\"\n"
    );
    let config = setup.sql_config(stack, "json", &extra);
    let log = setup.dir.path().join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config);
    cmd.env("K2I_MONITORING__HEALTH_PORT", health.to_string()).env("K2I_MONITORING__METRICS_PORT", health.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = KillOnDrop(child.id());
    let base = format!("http://127.0.0.1:{health}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        if let Some((503, body)) = http_get(&format!("{base}/readyz"))
            && body.contains("dead-letter topic unavailable")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "not paused: {:?}\n{}", http_get(&format!("{base}/readyz")), read_log(&log));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(reason.contains(&dlq), "{reason}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        setup.inspect_sql(stack, "")["rows"].as_i64().unwrap_or(0),
        0,
        "nothing committed past an unacknowledged dead letter"
    );

    // The topic appears: the dead letter is produced again, acknowledged, and the flush goes through.
    stack.create_topic(&dlq, 1).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while setup.inspect_sql(stack, "")["rows"].as_i64().unwrap_or(0) < 19 {
        assert!(Instant::now() < deadline, "not resumed:\n{}", read_log(&log));
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&format!("{base}/readyz")).map(|(c, _)| c) != Some(200) {
        assert!(Instant::now() < deadline, "not ready again: {:?}", http_get(&format!("{base}/readyz")));
        std::thread::sleep(Duration::from_millis(200));
    }
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", read_log(&log));
    let seen = setup.inspect_sql(stack, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(19), Some(19)));
    assert_eq!(recorded_offsets(&seen["summaries"], &setup.topic)["0"], 20);
    let letters = read_topic(stack, &dlq, 1, Duration::ZERO).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value.as_deref(), Some(&b"broken"[..]));
    assert_eq!(letters[0].headers["k2i.source.offset"], "4");
}
