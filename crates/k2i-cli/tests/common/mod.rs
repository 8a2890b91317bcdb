//! Helpers shared by the integration tests that run the built `k2i` binary against the real stack.
#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a part; tests fail loudly by design.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k2i_testkit::{Stack, TestRecord};
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub fn k2i() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2i"));
    // Every instance gets its own HTTP port: tests run in parallel and several instances share a config.
    let port = free_port().to_string();
    cmd.env_remove("K2I_CONFIG")
        .env("K2I_LOG", "info,k2i_core=debug")
        .env("K2I_MONITORING__HEALTH_PORT", &port)
        .env("K2I_MONITORING__METRICS_PORT", &port);
    cmd
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a command to completion, failing the test if it takes longer than `TIMEOUT`.
pub fn run(mut cmd: Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait(child, TIMEOUT)
}

pub fn wait(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("k2i did not finish within {timeout:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A test's own topic, group, warehouse and configuration file.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub group: String,
    pub namespace: String,
}

impl Setup {
    pub async fn new(stack: &Stack, name: &str, partitions: i32) -> Self {
        let topic = stack.unique(name);
        stack.create_topic(&topic, partitions).await;
        Self {
            dir: tempfile::tempdir().unwrap(),
            group: stack.unique(&format!("{name}-group")),
            namespace: stack.unique(name).replace('-', "_"),
            topic,
        }
    }

    pub fn warehouse(&self) -> PathBuf {
        self.dir.path().join("warehouse")
    }

    /// Writes `k2i.toml` for the SQL catalog; `extra` is appended (more tables or keys of them).
    pub fn sql_config(&self, stack: &Stack, format: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[kafka]
bootstrap_servers = ["{kafka}"]
topic = "{topic}"
consumer_group = "{group}"

[kafka.format]
type = "{format}"

[schema_evolution]
schema_update_min_interval = "0s"

[iceberg]
warehouse_path = "{warehouse}"
database_name = "{namespace}"
table_name = "events"

[transaction_log]
log_dir = "{dir}/txlog"
{extra}
"#,
            kafka = stack.kafka,
            topic = self.topic,
            group = self.group,
            warehouse = self.warehouse().display(),
            namespace = self.namespace,
            dir = self.dir.path().display(),
        );
        let path = self.dir.path().join("k2i.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Reads the SQL catalog's table with pyiceberg: rows, distinct (partition, offset), snapshot summaries.
    pub fn inspect_sql(&self, stack: &Stack, columns: &str) -> Value {
        let script = format!(
            r#"
import json
from pyiceberg.catalog.sql import SqlCatalog
catalog = SqlCatalog("k2i", uri="sqlite:///{db}", warehouse="file://{wh}")
table = catalog.load_table("{ns}.events")
data = table.scan().to_arrow().sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")])
keys = list(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
print(json.dumps({{
    "metadata": table.metadata_location,
    "rows": data.num_rows,
    "distinct": len(set(keys)),
    "columns": [f.name for f in table.schema().fields],
    "sample": data.select([{columns}]).slice(0, 3).to_pylist() if {has_columns} else [],
    "summaries": [dict(s.summary.additional_properties) for s in sorted(table.snapshots(), key=lambda s: s.sequence_number)],
    "referenced": sorted(task.file.file_path for task in table.scan().plan_files()),
}}, default=str))
"#,
            db = self.warehouse().join("catalog.db").display(),
            wh = self.warehouse().display(),
            ns = self.namespace,
            has_columns = if columns.is_empty() { "False" } else { "True" },
        );
        stack.python_json(&script)
    }
}

pub fn json_records(partitions: i32, per_partition: i64, first: i64) -> Vec<TestRecord> {
    let mut out = Vec::new();
    for p in 0..partitions {
        for i in first..first + per_partition {
            let mut value = json!({"id": i, "partition": p, "name": format!("user-{i}"), "score": i as f64 / 2.0,
                                   "geo": {"lat": 52.5, "lon": 13.4}, "tags": ["a", "b"]});
            // A field that appears only in later records: the table gains a column mid-stream.
            if i >= 40 {
                value["plan"] = json!("pro");
            }
            out.push(TestRecord::value(value.to_string()).key(format!("key-{i}")).partition(p));
        }
    }
    out
}

/// The `end` offsets of the newest snapshot mentioning each partition, from the summaries (oldest first, by
/// sequence number: iceberg-rust does not keep the metadata's snapshot list in commit order).
pub fn recorded_offsets(summaries: &Value, topic: &str) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for summary in summaries.as_array().unwrap() {
        let offsets: Value = serde_json::from_str(summary["k2i.offsets"].as_str().unwrap()).unwrap();
        for (partition, range) in offsets[topic].as_object().unwrap() {
            out.insert(partition.clone(), range[1].as_i64().unwrap());
        }
    }
    out
}

impl Setup {
    /// Data files on disk that the table's current snapshot does not reference (orphans).
    pub fn unreferenced_files(&self, seen: &Value) -> Vec<String> {
        let referenced: Vec<String> = seen["referenced"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().trim_start_matches("file://").trim_start_matches("file:").to_owned())
            .collect();
        let data = self.warehouse().join(&self.namespace).join("events").join("data");
        let mut on_disk: Vec<String> = match std::fs::read_dir(&data) {
            Ok(entries) => entries.map(|e| e.unwrap().path().display().to_string()).collect(),
            Err(_) => Vec::new(),
        };
        on_disk.sort();
        on_disk.into_iter().filter(|f| !referenced.iter().any(|r| r == f)).collect()
    }
}

/// Kills a spawned process when dropped, so a failing test leaves no instance running.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Harmless when the process already exited (kill reports that and nothing happens).
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).stderr(Stdio::null()).status();
    }
}
