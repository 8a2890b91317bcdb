//! The read-state RPC against a real ingest: every (partition, offset) at most once at every read-state and
//! exactly once when caught up (also across a kill -9), the socket's permissions, malformed frames, the scan
//! limit, `k2i read` / `k2i query` against DuckDB, and the Python reference client.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use common::{KillOnDrop, Setup, eventually, free_port, k2i, kill, text, wait};
use k2i_core::read::reader::{Fetched, Reader};
use k2i_rpc::message::ScanBegin;
use k2i_testkit::{Stack, TestRecord, stack};

/// `[rpc]` on a socket in the test's directory with `rpc` keys, after `extra` (other sections).
fn rpc_config(setup: &Setup, stack: &Stack, format: &str, extra: &str, rpc: &str) -> (PathBuf, PathBuf) {
    let socket = setup.dir.path().join("run/k2i.sock");
    let text = format!("{extra}\n[rpc]\nenabled = true\nsocket_path = \"{}\"\n{rpc}\n", socket.display());
    (setup.sql_config(stack, format, &text), socket)
}

/// A running ingest, killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ingest(config: &Path, log: &Path) -> Child {
    let port = free_port();
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"])
        .arg(config)
        .env("K2I_MONITORING__HEALTH_PORT", port.to_string())
        .env("K2I_MONITORING__METRICS_PORT", port.to_string());
    common::spawn_logged(cmd, log)
}

/// The Python reference client (`clients/python`).
fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python")
}

/// Runs `k2i <command> --config <config> <args>`.
fn cli(command: &[&str], config: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(command).arg("--config").arg(config).args(args).env_remove("K2I_CONFIG");
    common::run(cmd)
}

fn wait_for_socket(socket: &Path, log: &Path) {
    eventually("the read-state socket", Duration::from_secs(60), || {
        std::os::unix::net::UnixStream::connect(socket).ok().map(|_| ())
    });
    assert!(socket.exists(), "{}", common::read_log(log));
}

/// (partition, offset) of every row of a read-state, checking none appears twice.
fn pairs(fetched: &Fetched) -> BTreeSet<(i32, i64)> {
    let mut seen = BTreeSet::new();
    for batch in &fetched.batches {
        let partitions = batch.column_by_name("_kafka_partition").unwrap().as_primitive::<Int32Type>();
        let offsets = batch.column_by_name("_kafka_offset").unwrap().as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let pair = (partitions.value(i), offsets.value(i));
            assert!(seen.insert(pair), "{pair:?} twice in the read-state at LSN {}", fetched.state.lsn);
        }
    }
    seen
}

fn metadata_scan(table: &str) -> ScanBegin {
    ScanBegin {
        table: table.to_owned(),
        columns: Some(vec!["_kafka_partition".into(), "_kafka_offset".into()]),
        ..ScanBegin::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_every_record_at_most_once_while_flushing_and_exactly_once_when_caught_up_across_a_kill() {
    let stack = stack();
    let setup = Setup::new(stack, "rpc-consistency", 4).await;
    let extra =
        format!("[buffer]\nflush_interval = \"500ms\"\nflush_batch_size = 1000000\n{}", common::fast_group(true));
    let (config_path, socket) = rpc_config(&setup, stack, "raw", &extra, "");
    let config = k2i_core::config::load(&config_path).unwrap();
    let table = format!("{}.events", setup.namespace);
    let log = setup.dir.path().join("ingest.log");
    let mut k2i_process = Running(ingest(&config_path, &log));
    wait_for_socket(&socket, &log);

    // 200,000 records in 40 bursts while a reader scans; k2i is killed -9 halfway and started again.
    const TOTAL: usize = 200_000;
    let producer = {
        let topic = setup.topic.clone();
        tokio::spawn(async move {
            for burst in 0..40 {
                let records =
                    (0..TOTAL / 40).map(|i| TestRecord::value(format!("b{burst}-{i}")).partition((i % 4) as i32));
                stack.produce(&topic, records).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut reader = Reader::connect(&config).await.unwrap();
    let (mut scans, mut last_committed, mut last_lsn, mut hot_seen) = (0, 0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut restarted = false;
    let seen = loop {
        assert!(Instant::now() < deadline, "not caught up: {}", common::read_log(&log));
        let fetched = match reader.fetch(metadata_scan(&table)).await {
            Ok(fetched) => fetched,
            // While k2i is down (or before it serves again) the socket refuses; reconnect.
            Err(_) if restarted => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(again) = Reader::connect(&config).await {
                    reader = again;
                }
                continue;
            }
            Err(e) => panic!("scan failed: {e}\n{}", common::read_log(&log)),
        };
        scans += 1;
        let seen = pairs(&fetched);
        let state = &fetched.state;
        assert!(
            state.committed_lsn >= last_committed,
            "the committed LSN went back: {} < {last_committed}",
            state.committed_lsn
        );
        if !restarted {
            assert!(state.lsn >= last_lsn, "the LSN went back within one process: {} < {last_lsn}", state.lsn);
        }
        assert_eq!(fetched.committed_rows + fetched.hot_rows, seen.len() as u64);
        for w in &state.watermarks {
            let above = seen.iter().filter(|(p, o)| *p == w.partition && *o >= w.next_offset).count();
            assert_eq!(above, 0, "rows above partition {}'s watermark {}", w.partition, w.next_offset);
        }
        (last_committed, last_lsn) = (state.committed_lsn, state.lsn);
        hot_seen = hot_seen.max(fetched.hot_rows);
        if !restarted && seen.len() >= TOTAL / 2 {
            kill(&k2i_process.0, "KILL");
            k2i_process.0.wait().unwrap();
            k2i_process = Running(ingest(&config_path, &setup.dir.path().join("ingest-2.log")));
            restarted = true;
            continue;
        }
        if seen.len() == TOTAL {
            break seen;
        }
        assert!(seen.len() < TOTAL, "more rows than produced");
    };
    producer.await.unwrap();
    for p in 0..4 {
        let offsets: Vec<i64> = seen.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).collect();
        assert_eq!(offsets, (0..(TOTAL / 4) as i64).collect::<Vec<_>>(), "partition {p}: every offset exactly once");
    }
    assert!(scans > 5, "the reader scanned {scans} times");
    assert!(hot_seen > 0, "some read-state had rows not committed yet");
    assert!(restarted, "k2i was killed and started again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_one_group_each_serve_their_rows_once_and_both_see_the_whole_table_when_caught_up() {
    let stack = stack();
    let setup = Setup::new(stack, "rpc-two", 4).await;
    let extra = format!("[buffer]\nflush_interval = \"300ms\"\n{}", common::fast_group(false));
    let (config_path, _) = rpc_config(&setup, stack, "raw", &extra, "");
    let table = format!("{}.events", setup.namespace);
    let instance = |n: usize| {
        let socket = setup.dir.path().join(format!("run/k2i-{n}.sock"));
        let mut cmd = k2i();
        cmd.args(["ingest", "--config"])
            .arg(&config_path)
            .env("K2I_RPC__SOCKET_PATH", &socket)
            .env("K2I_TRANSACTION_LOG__LOG_DIR", setup.dir.path().join(format!("txlog-{n}")));
        for var in ["K2I_MONITORING__HEALTH_PORT", "K2I_MONITORING__METRICS_PORT"] {
            cmd.env(var, free_port().to_string());
        }
        let log = setup.dir.path().join(format!("ingest-{n}.log"));
        let child = Running(common::spawn_logged(cmd, &log));
        wait_for_socket(&socket, &log);
        let mut config = k2i_core::config::load(&config_path).unwrap();
        config.rpc.socket_path = socket;
        (child, config, log)
    };
    let (_a, config_a, log_a) = instance(1);
    let (_b, config_b, log_b) = instance(2);
    const TOTAL: usize = 40_000;
    let producer = {
        let topic = setup.topic.clone();
        tokio::spawn(async move {
            for burst in 0..20 {
                let records =
                    (0..TOTAL / 20).map(|i| TestRecord::value(format!("b{burst}-{i}")).partition((i % 4) as i32));
                stack.produce(&topic, records).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let mut readers = [Reader::connect(&config_a).await.unwrap(), Reader::connect(&config_b).await.unwrap()];
    let mut whole = [false, false];
    let deadline = Instant::now() + Duration::from_secs(180);
    while !(whole[0] && whole[1]) {
        assert!(Instant::now() < deadline, "{}\n{}", common::read_log(&log_a), common::read_log(&log_b));
        for (i, reader) in readers.iter_mut().enumerate() {
            let fetched = reader.fetch(metadata_scan(&table)).await.unwrap();
            // Each instance's read-state: every (partition, offset) at most once, none above its watermarks.
            let seen = pairs(&fetched);
            for w in &fetched.state.watermarks {
                assert!(!seen.iter().any(|(p, o)| *p == w.partition && *o >= w.next_offset));
            }
            whole[i] = seen.len() == TOTAL;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producer.await.unwrap();
}

#[tokio::test]
async fn the_socket_is_owner_only_stale_sockets_are_replaced_and_other_files_refused() {
    let stack = stack();
    let setup = Setup::new(stack, "rpc-socket", 1).await;
    let (config, socket) = rpc_config(&setup, stack, "raw", "", "");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A regular file where the socket goes: refused (exit 2), never deleted.
    std::fs::write(&socket, b"mine").unwrap();
    let out = wait(ingest(&config, &setup.dir.path().join("refused.log")), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{}", common::read_log(&setup.dir.path().join("refused.log")));
    assert_eq!(std::fs::read(&socket).unwrap(), b"mine");
    std::fs::remove_file(&socket).unwrap();

    // A stale socket (its listener is gone): replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let log = setup.dir.path().join("ingest.log");
    let _k2i = Running(ingest(&config, &log));
    wait_for_socket(&socket, &log);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is owner-only");
    // Another user cannot connect, even with the directories open to everyone.
    for dir in [setup.dir.path(), socket.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = format!(
        "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\nexcept PermissionError:\n    sys.exit(13)\nsys.exit(0)",
        socket.display().to_string()
    );
    let status = {
        use std::os::unix::process::CommandExt;
        Command::new("/usr/bin/python3").args(["-c", &script]).uid(65534).gid(65534).status().unwrap()
    };
    assert_eq!(status.code(), Some(13), "uid 65534 must not connect");

    // A second instance (its own transaction log) on the same socket refuses to take it over.
    let second = setup.dir.path().join("second.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config).env("K2I_TRANSACTION_LOG__LOG_DIR", setup.dir.path().join("txlog-2"));
    for var in ["K2I_MONITORING__HEALTH_PORT", "K2I_MONITORING__METRICS_PORT"] {
        cmd.env(var, free_port().to_string());
    }
    let out = wait(common::spawn_logged(cmd, &second), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2));
    assert!(common::read_log(&second).contains("another process serves"), "{}", common::read_log(&second));
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok(), "the first instance still serves");
}

/// One frame's header and payload from a raw socket.
fn read_raw_frame(stream: &mut std::os::unix::net::UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    let length = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).ok()?;
    Some((head[7], payload))
}

fn error_code(frame: Option<(u8, Vec<u8>)>) -> String {
    let (kind, payload) = frame.expect("an error frame");
    assert_eq!(kind, 0xff);
    let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    value["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn malformed_frames_get_typed_errors_and_the_server_survives_them() {
    let stack = stack();
    let setup = Setup::new(stack, "rpc-frames", 1).await;
    let rpc = "read_timeout_ms = 300\nmax_concurrent_scans = 2\nmax_frame_bytes = 4096";
    let (config, socket) = rpc_config(&setup, stack, "raw", "", rpc);
    let log = setup.dir.path().join("ingest.log");
    let _k2i = Running(ingest(&config, &log));
    wait_for_socket(&socket, &log);
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let frame = |version: u16, codec: u8, kind: u8, payload: &[u8]| {
        let mut bytes = b"K2IR".to_vec();
        bytes.extend(version.to_be_bytes());
        bytes.extend([codec, kind]);
        bytes.extend((payload.len() as u32).to_be_bytes());
        bytes.extend(payload);
        bytes
    };
    let cases: [(&str, Vec<u8>); 5] = [
        ("bad_magic", b"HTTP/1.1 GET /\r\n\r\n".to_vec()),
        ("unsupported_version", frame(9, 0, 1, b"{}")),
        ("unsupported_codec", frame(1, 1, 1, b"{}")),
        ("unknown_kind", frame(1, 0, 0x42, b"{}")),
        ("frame_too_large", frame(1, 0, 4, &vec![b' '; 5000])),
    ];
    for (code, bytes) in cases {
        let mut s = connect();
        s.write_all(&bytes).unwrap();
        assert_eq!(error_code(read_raw_frame(&mut s)), code);
        assert!(read_raw_frame(&mut s).is_none(), "{code}: the connection is closed after the error");
    }
    // Half a frame, then silence: `timeout` after read_timeout_ms.
    let mut s = connect();
    s.write_all(&frame(1, 0, 1, b"{}")[..6]).unwrap();
    assert_eq!(error_code(read_raw_frame(&mut s)), "timeout");
    // A truncated frame and a vanished client cost nothing.
    let mut s = connect();
    s.write_all(&frame(1, 0, 4, b"{\"table\":")[..14]).unwrap();
    drop(s);
    // Bad JSON and unknown tables keep the connection open.
    let mut s = connect();
    s.write_all(&frame(1, 0, 4, b"[1,2]")).unwrap();
    assert_eq!(error_code(read_raw_frame(&mut s)), "invalid_request");
    s.write_all(&frame(1, 0, 4, br#"{"table":"nope.nope"}"#)).unwrap();
    assert_eq!(error_code(read_raw_frame(&mut s)), "unknown_table");
    s.write_all(&frame(1, 0, 5, br#"{"scan_id":999}"#)).unwrap();
    assert_eq!(error_code(read_raw_frame(&mut s)), "unknown_scan");

    // Two scans open at once at most; ending one makes room.
    let mut client = k2i_rpc::client::Client::connect(&socket).await.unwrap();
    let table = format!("{}.events", setup.namespace);
    let begin = || ScanBegin { table: table.clone(), ..ScanBegin::default() };
    let first = client.scan(begin()).await.unwrap();
    client.scan(begin()).await.unwrap();
    match client.scan(begin()).await {
        Err(k2i_rpc::client::ClientError::Server { code, .. }) => assert_eq!(code, "too_many_scans"),
        other => panic!("a third scan: {other:?}"),
    }
    client.end_scan(first.state.scan_id).await.unwrap();
    client.scan(begin()).await.unwrap();
    // Still serving.
    let mut other = k2i_rpc::client::Client::connect(&socket).await.unwrap();
    let health = other.health().await.unwrap();
    assert_eq!((health.protocol, health.max_frame_bytes, health.tables), (1, 4096, 1));
    let tables = other.tables().await.unwrap();
    assert_eq!((tables[0].name.as_str(), tables[0].hot_rows), (table.as_str(), 0));
    let schema = other.schema(&table).await.unwrap();
    assert!(schema.schema.to_string().contains("_kafka_offset"), "{}", schema.schema);
    drop(other);
    // A closed connection ends its scans; an empty table still has its columns.
    drop(client);
    let row = eventually("a query once the scans ended", Duration::from_secs(10), || {
        let sql = "SELECT count(*) AS n, max(_kafka_offset) AS m FROM events";
        let out = cli(&["query", "--format", "json"], &config, &[sql]);
        serde_json::from_str::<serde_json::Value>(text(&out.stdout).lines().next()?).ok()
    });
    assert_eq!(row["n"], 0, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_stalls_neither_ingestion_nor_other_readers_and_is_cut_off_after_the_ttl() {
    let stack = stack();
    let setup = Setup::new(stack, "rpc-slow", 2).await;
    let extra = "[buffer]\nflush_interval = \"1h\"\nflush_batch_size = 1000000\n";
    let (config, socket) = rpc_config(&setup, stack, "raw", extra, "scan_ttl_seconds = 3\nmax_frame_bytes = 65536");
    let log = setup.dir.path().join("ingest.log");
    let _k2i = Running(ingest(&config, &log));
    wait_for_socket(&socket, &log);
    let big =
        |from: usize| (from..from + 20_000).map(|i| TestRecord::value(format!("{i:0>200}")).partition((i % 2) as i32));
    stack.produce(&setup.topic, big(0)).await;
    let table = format!("{}.events", setup.namespace);
    let config = k2i_core::config::load(&config).unwrap();
    let mut reader = Reader::connect(&config).await.unwrap();
    wait_hot(&mut reader, &table, 20_000).await;
    // A client asks for the whole read-state (4 MB) and reads nothing.
    let mut stuck = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let begin = format!("{{\"table\":\"{table}\"}}");
    let mut frame = b"K2IR\x00\x01\x00\x04".to_vec();
    frame.extend((begin.len() as u32).to_be_bytes());
    frame.extend(begin.as_bytes());
    stuck.write_all(&frame).unwrap();
    let started = Instant::now();
    // Ingestion goes on and other readers are served meanwhile.
    stack.produce(&setup.topic, big(20_000)).await;
    wait_hot(&mut reader, &table, 40_000).await;
    assert!(started.elapsed() < Duration::from_secs(3), "served while the stuck scan was still open");
    // After the TTL the server gives up on it: what it had sent ends, then the connection closes.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(started.elapsed())).await;
    stuck.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = Vec::new();
    let _ = stuck.read_to_end(&mut sink);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(20), "closed after {waited:?}");
    assert!(sink.len() < 20_000 * 200, "the stuck reader did not get the whole answer: {} bytes", sink.len());
    assert_eq!(hot_rows(&mut reader, &table).await, 40_000, "still serving");
}

async fn hot_rows(reader: &mut Reader, table: &str) -> u64 {
    reader.fetch(ScanBegin { table: table.to_owned(), ..ScanBegin::default() }).await.unwrap().hot_rows
}

/// Scans until the read-state has `rows` hot rows (30 s at most).
async fn wait_hot(reader: &mut Reader, table: &str, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = hot_rows(reader, table).await;
        if got == rows {
            return;
        }
        assert!(Instant::now() < deadline, "{got} hot rows, waiting for {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn k2i_read_and_query_show_committed_and_hot_rows_duckdb_the_committed_ones() {
    let stack = stack();
    let setup = Setup::new(stack, "rpc-cli", 2).await;
    // 200 records make a flush; the 100 after them stay hot (the interval is long).
    let extra = "[buffer]\nflush_interval = \"1h\"\nflush_batch_size = 200\n";
    let (config, socket) = rpc_config(&setup, stack, "json", extra, "");
    let log = setup.dir.path().join("ingest.log");
    let _k2i = Running(ingest(&config, &log));
    wait_for_socket(&socket, &log);
    let records = |from: i64, n: i64| {
        (from..from + n)
            .map(|i| {
                TestRecord::value(serde_json::json!({"id": i, "name": format!("n{i}")}).to_string())
                    .partition((i % 2) as i32)
            })
            .collect::<Vec<_>>()
    };
    stack.produce(&setup.topic, records(0, 300)).await;
    let read = |args: &[&str]| {
        let out = cli(&["read"], &config, args);
        assert!(out.status.success(), "k2i read {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let ids = |json_lines: &str| -> BTreeSet<i64> {
        json_lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
            .collect()
    };
    eventually("300 rows through k2i read", Duration::from_secs(60), || {
        (ids(&read(&["--format", "json"])).len() == 300).then_some(())
    });
    let seen = eventually("the first commit", Duration::from_secs(60), || {
        Some(setup.inspect_sql(stack, "\"id\"")).filter(|seen| seen["rows"] == 200)
    });
    let duck = stack.duckdb(&format!("SELECT id FROM iceberg_scan('{}')", seen["metadata"].as_str().unwrap()));
    let committed: BTreeSet<i64> = duck.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(committed.len(), 200, "DuckDB sees the committed part only");
    // LSNs start after the table's (0): the first snapshot holds the rows of LSNs 1..=200.
    assert_eq!(seen["summaries"][0]["k2i.lsn"], "200", "{}", seen["summaries"]);
    let all = ids(&read(&["--format", "json"]));
    assert_eq!(all, (0..300).collect(), "k2i read: committed ∪ hot, each once");
    assert!(committed.is_subset(&all));

    // Projection, limit and the other formats.
    let csv = read(&["--format", "csv", "--columns", "id,name", "--limit", "5"]);
    assert_eq!(csv.lines().next(), Some("id,name"));
    assert_eq!(csv.lines().count(), 6);
    assert!(read(&["--limit", "3"]).contains("| id"), "the table format has a header");

    // SQL over the same read-state.
    let query = |sql: &str| {
        let out = cli(&["query", "--format", "json"], &config, &[sql]);
        assert!(out.status.success(), "k2i query {sql}: {}", text(&out.stderr));
        serde_json::from_str::<serde_json::Value>(text(&out.stdout).lines().next().unwrap()).unwrap()
    };
    assert_eq!(query("SELECT count(*) AS n FROM events")["n"], 300);
    let ns = &setup.namespace;
    assert_eq!(query(&format!("SELECT sum(id) AS s FROM {ns}.events WHERE id >= 200"))["s"], (200..300).sum::<i64>());
    let bad = cli(&["query"], &config, &["SELECT nope FROM events"]);
    assert_eq!(bad.status.code(), Some(2), "invalid SQL is a usage error: {}", text(&bad.stderr));

    // --follow prints what arrives until the limit.
    let follow = k2i()
        .args(["read", "--follow", "--format", "json", "--limit", "350", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _follow_guard = KillOnDrop(follow.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.produce(&setup.topic, records(300, 50)).await;
    let out = wait(follow, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ids(&text(&out.stdout)), (0..350).collect(), "every row once, also those that arrived while following");

    // A field that appears mid-buffer: the hot rows come in two streams (two schemas), read as one table.
    let evolved = (350..360)
        .map(|i| TestRecord::value(serde_json::json!({"id": i, "name": "x", "plan": "pro"}).to_string()).partition(0));
    stack.produce(&setup.topic, evolved).await;
    let counts = eventually("360 rows with the new column", Duration::from_secs(60), || {
        let out = cli(&["query", "--format", "json"], &config, &["SELECT count(*) AS n, count(plan) AS p FROM events"]);
        let row: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next()?).ok()?;
        (row["n"] == 360).then_some(row)
    });
    assert_eq!(counts["p"], 10, "older rows read null in the new column");

    // The Python reference client reads the same state: every row once.
    let out = Command::new(&stack.python)
        .arg(python_client().join("tests/live_check.py"))
        .args(["--socket", socket.to_str().unwrap(), "--table", &format!("{ns}.events"), "--expect-rows", "360"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(summary["duplicates"], 0);
    assert!(summary["hot_rows"].as_u64().unwrap() > 0, "{summary}");

    // Another engine deletes committed rows (pyiceberg rewrites the files): within a second the read-state's
    // committed part is that snapshot (a full listing: it is no append).
    let deleted = stack.python_json(&format!(
        "import json\nfrom pyiceberg.catalog.sql import SqlCatalog\n\
         catalog = SqlCatalog(\"k2i\", uri=\"sqlite:///{w}/catalog.db\", warehouse=\"file://{w}\")\n\
         table = catalog.load_table(\"{ns}.events\")\ntable.delete(\"id < 10\")\n\
         print(json.dumps({{\"operation\": str(table.refresh().current_snapshot().summary.operation)}}))",
        w = setup.warehouse().display(),
    ));
    let operation = deleted["operation"].as_str().unwrap().to_lowercase();
    assert!(operation.contains("overwrite") || operation.contains("delete"), "{deleted}");
    eventually("the foreign delete in the read-state", Duration::from_secs(30), || {
        (ids(&read(&["--format", "json"])) == (10..360).collect()).then_some(())
    });
}

#[test]
fn the_python_client_unit_tests_pass() {
    let stack = stack();
    let out = Command::new(&stack.python)
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(python_client())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("OK"), "{}", text(&out.stderr));
}
