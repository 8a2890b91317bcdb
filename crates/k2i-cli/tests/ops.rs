//! Operations against a real ingest: health, readiness (during recovery and while the catalog is down),
//! `/status`, `/metrics` and `k2i status`.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Setup, eventually, free_port, http_get as get, k2i, text, wait};
use k2i_testkit::{TestRecord, stack};
use serde_json::Value;

/// The sum of a Prometheus metric's samples (all label sets), if present.
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `k2i ingest` serving every endpoint on `port`, output captured.
fn ingest_on(config: &std::path::Path, port: u16) -> Command {
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"])
        .arg(config)
        .env("K2I_MONITORING__HEALTH_PORT", port.to_string())
        .env("K2I_MONITORING__METRICS_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn k2i_status(url: &str, json: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2i"));
    cmd.args(["status", "--url", url]).env_remove("K2I_CONFIG");
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn endpoints_and_k2i_status_follow_a_real_ingest() {
    let stack = stack();
    let setup = Setup::new(stack, "ops-live", 3).await;
    let config = setup.sql_config(stack, "raw", "[buffer]\nflush_interval = \"300ms\"\n");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let release = setup.dir.path().join("release");
    let child =
        ingest_on(&config, port).env("K2I_FAULT", "recovery:pause").env("K2I_FAULT_RELEASE", &release).spawn().unwrap();
    let _child_guard = common::KillOnDrop(child.id());

    // Alive but not ready while recovery runs.
    eventually("/healthz", Duration::from_secs(30), || get(&format!("{base}/healthz")).filter(|(c, _)| *c == 200));
    // The catalog is opened ("starting") before recovery begins.
    let (code, body) = eventually("/readyz recovering", Duration::from_secs(30), || {
        get(&format!("{base}/readyz")).filter(|(_, b)| b.contains("recovering"))
    });
    assert_eq!(code, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert!(body["reason"].as_str().unwrap().starts_with("recovering"), "{body}");
    let out = k2i_status(&base, false);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("k2i at {base}: unhealthy (recovering)\n")),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(&release, b"go").unwrap();
    eventually("/readyz 200", Duration::from_secs(30), || get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200));

    let records: Vec<TestRecord> = (0..90).map(|i| TestRecord::value(format!("value-{i}")).partition(i % 3)).collect();
    let payload_bytes: usize = (0..90).map(|i| format!("value-{i}").len()).sum();
    stack.produce(&setup.topic, records).await;

    // Counters equal what was produced; lag reaches 0 once the commit's offsets are in the group.
    let metrics = eventually("metrics after the commit", Duration::from_secs(60), || {
        let (_, body) = get(&format!("{base}/metrics"))?;
        let caught_up = metric(&body, "k2i_records_consumed_total") == Some(90.0)
            && metric(&body, "k2i_flushes_total").is_some_and(|f| f >= 1.0)
            && metric(&body, "k2i_consumer_lag_records") == Some(0.0)
            && body.lines().filter(|l| l.starts_with("k2i_consumer_lag_records{")).count() == 3;
        caught_up.then_some(body)
    });
    assert_eq!(metric(&metrics, "k2i_bytes_consumed_total"), Some(payload_bytes as f64));
    assert!(metric(&metrics, "k2i_data_files_written_total").unwrap() >= 1.0);
    assert!(metric(&metrics, "k2i_commit_duration_seconds_count").unwrap() >= 1.0);
    assert_eq!(metric(&metrics, "k2i_buffer_rows"), Some(0.0), "{metrics}");
    assert_eq!(metric(&metrics, "k2i_commits_fenced_total"), Some(0.0));
    assert!(metric(&metrics, "k2i_freshness_seconds").is_some());

    let status: Value = eventually("/status with committed partitions", Duration::from_secs(30), || {
        let (_, body) = get(&format!("{base}/status"))?;
        let status: Value = serde_json::from_str(&body).ok()?;
        let parts = status["partitions"].as_array()?;
        (parts.len() == 3 && parts.iter().all(|p| p["committed"] == 30 && p["lag"] == 0 && p["high_watermark"] == 30))
            .then_some(status)
    });
    assert_eq!(status["ready"], true);
    assert!(status["last_commit"]["snapshot_id"].is_i64(), "{status}");
    assert_eq!(status["recovery"]["rolled_back"], 0);

    let out = k2i_status(&base, false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with(&format!("k2i at {base}: healthy (running)\n")), "{table}");
    assert!(
        table.contains(&format!("{:<32} {:>9} {:>12} {:>14} {:>10} {:>12}", setup.topic, 0, 30, 30, 0, 30)),
        "{table}"
    );
    let out = k2i_status(&base, true);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["health"]["status"], "healthy");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = wait(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = k2i_status(&base, false);
    assert_eq!(out.status.code(), Some(7));
    assert!(text(&out.stderr).starts_with(&format!("error: k2i is unreachable at {base}")), "{}", text(&out.stderr));
}

/// A TCP proxy the test can cut: while down, connections are refused mid-flight and new ones reset.
fn proxy(target: String) -> (u16, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if !flag.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server.try_clone().unwrap(), client.try_clone().unwrap()),
            ] {
                let flag = flag.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 16 * 1024];
                    from.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                    loop {
                        if !flag.load(Ordering::SeqCst) {
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        match from.read(&mut buf) {
                            Ok(0) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        }
    });
    (port, up)
}

#[tokio::test]
async fn not_ready_while_the_catalog_is_down_and_ready_again_after() {
    let stack = stack();
    let setup = Setup::new(stack, "ops-outage", 1).await;
    let rest = stack.rest.trim_start_matches("http://").to_owned();
    let (proxy_port, catalog_up) = proxy(rest);
    let config_text = format!(
        "[kafka]\nbootstrap_servers = [\"{}\"]\ntopic = \"{}\"\nconsumer_group = \"{}\"\n\n[buffer]\nflush_interval = \"300ms\"\n\n\
         [iceberg]\ncatalog_type = \"rest\"\nrest_uri = \"http://127.0.0.1:{proxy_port}\"\ndatabase_name = \"{}\"\ntable_name = \"events\"\n\n\
         [transaction_log]\nlog_dir = \"{}\"\n",
        stack.kafka,
        setup.topic,
        setup.group,
        setup.namespace,
        setup.dir.path().join("txlog").display()
    );
    let config = setup.dir.path().join("outage.toml");
    std::fs::write(&config, config_text).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = ingest_on(&config, port).spawn().unwrap();
    let _child_guard = common::KillOnDrop(child.id());
    eventually("/readyz 200", Duration::from_secs(30), || get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200));

    catalog_up.store(false, Ordering::SeqCst);
    stack.produce(&setup.topic, (0..20).map(|i| TestRecord::value(format!("v{i}")))).await;
    let reason: Value = eventually("/readyz 503 during the outage", Duration::from_secs(30), || {
        let (code, body) = get(&format!("{base}/readyz"))?;
        (code == 503).then(|| serde_json::from_str(&body).unwrap())
    });
    assert!(reason["reason"].as_str().unwrap().starts_with("catalog unavailable: "), "{reason}");

    catalog_up.store(true, Ordering::SeqCst);
    eventually("/readyz 200 after the outage", Duration::from_secs(30), || {
        get(&format!("{base}/readyz")).filter(|(c, _)| *c == 200)
    });
    let metrics = eventually("the commit after the outage", Duration::from_secs(30), || {
        let (_, body) = get(&format!("{base}/metrics"))?;
        (metric(&body, "k2i_flushes_total") == Some(1.0)).then_some(body)
    });
    assert!(metric(&metrics, "k2i_catalog_retries_total").unwrap() >= 1.0, "{metrics}");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = wait(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows = stack.duckdb_rest(&format!(
        "select count(*) as n, count(distinct _kafka_offset) as d from rest.{}.events",
        setup.namespace
    ));
    assert_eq!((rows[0]["n"].as_i64(), rows[0]["d"].as_i64()), (Some(20), Some(20)));
}

#[test]
fn status_url_wins_over_a_config_from_the_environment() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_k2i"))
        .args(["status", "--url", &format!("http://127.0.0.1:{port}")])
        .env("K2I_CONFIG", "/nonexistent/k2i.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with(&format!("error: k2i is unreachable at http://127.0.0.1:{port}")));
}
