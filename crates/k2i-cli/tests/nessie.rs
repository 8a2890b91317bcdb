//! The Nessie catalog (`catalog_type = "nessie"`) against the stack's real Nessie server (`nessie`, Nessie's
//! own runnable jar) whose Iceberg REST catalog keeps its warehouse on the stack's S3 server (moto). The
//! configuration is written with K2I's keys only — `rest_uri` at Nessie's `/api/v1`, `[iceberg.nessie]
//! default_branch`, the AWS keys — as a K2I user's file would be. Judged by pyiceberg through Nessie's Iceberg
//! REST API on each branch and by DuckDB's `iceberg_scan` of the metadata file on S3.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::path::{Path, PathBuf};

use common::{Setup, json_records, k2i, run, text};
use k2i_testkit::{Stack, stack};
use serde_json::Value;

/// The stack's Nessie server (`http://127.0.0.1:19120`), and proof that it answers: a missing server fails
/// the test, it never skips it.
fn nessie() -> String {
    let base = std::env::var("K2I_TEST_NESSIE").unwrap_or_else(|_| {
        panic!(
            "stack not running: run scripts/stack.sh up and export its variables (eval \"$(scripts/stack.sh \
             env)\"); K2I_TEST_NESSIE is not set"
        )
    });
    let base = base.trim_end_matches('/').to_owned();
    let config = common::http_get(&format!("{base}/api/v2/config"));
    assert!(
        config.as_ref().is_some_and(|(status, _)| *status == 200),
        "Nessie at {base} does not answer (scripts/stack.sh up starts it): {config:?}"
    );
    base
}

/// A K2I configuration for the Nessie catalog on `branch`, with the S3 keys from the environment.
fn k2i_config(stack: &Stack, setup: &Setup, name: &str, group: &str, branch: &str) -> PathBuf {
    let s3 = stack.s3();
    let text = format!(
        r#"
[kafka]
bootstrap_servers = ["{kafka}"]
topic = "{topic}"
consumer_group = "{group}"

[kafka.format]
type = "json"

[iceberg]
catalog_type = "nessie"
rest_uri = "{nessie}/api/v1"
database_name = "{namespace}"
table_name = "events"
aws_region = "{region}"
s3_endpoint = "{endpoint}"
aws_access_key_id = {{ env = "K2I_TEST_S3_ACCESS_KEY" }}
aws_secret_access_key = {{ env = "K2I_TEST_S3_SECRET_KEY" }}

[iceberg.nessie]
default_branch = "{branch}"
api_version = "v2"

[buffer]
flush_batch_size = 120

[transaction_log]
log_dir = "{dir}/txlog-{name}"
"#,
        kafka = stack.kafka,
        topic = setup.topic,
        nessie = nessie(),
        namespace = setup.namespace,
        region = s3.region,
        endpoint = s3.endpoint,
        dir = setup.dir.path().display(),
    );
    let path = setup.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `k2i ingest --until-caught-up`; asserts how many rows it reports and returns its whole output.
fn ingest(config: &Path, table: &str, rows: usize) -> String {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    let out = run(cmd);
    let output = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{output}");
    let expected = format!("ingested {rows} rows (0 records skipped) into {table}");
    assert!(text(&out.stdout).starts_with(&expected), "expected `{expected}`:\n{output}");
    output
}

/// The table on `branch`, read by pyiceberg through Nessie's Iceberg REST API: rows, distinct
/// (partition, offset), its metadata file and location, and the snapshots' k2i summaries (oldest first).
fn read_branch(stack: &Stack, namespace: &str, branch: &str) -> Value {
    stack.python_json(&format!(
        r#"
import json, os
from pyiceberg.catalog import load_catalog
e = os.environ
catalog = load_catalog("nessie", type="rest", uri=e["K2I_TEST_NESSIE"].rstrip("/") + "/iceberg/{branch}", **{{
    "s3.endpoint": e["K2I_TEST_S3_ENDPOINT"], "s3.region": e["K2I_TEST_S3_REGION"],
    "s3.access-key-id": e["K2I_TEST_S3_ACCESS_KEY"], "s3.secret-access-key": e["K2I_TEST_S3_SECRET_KEY"],
}})
table = catalog.load_table("{namespace}.events")
data = table.scan().to_arrow()
keys = set(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number)
print(json.dumps({{
    "rows": data.num_rows,
    "distinct": len(keys),
    "metadata": table.metadata_location,
    "location": table.location(),
    "summaries": [dict(s.summary.additional_properties) for s in snapshots],
}}))
"#
    ))
}

/// DuckDB over S3: rows and distinct (partition, offset) of the table whose metadata file is `metadata`.
fn duck_counts(stack: &Stack, metadata: &str) -> (i64, i64) {
    let rows = stack.duckdb(&format!(
        "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d from iceberg_scan('{metadata}')"
    ));
    (rows[0]["n"].as_i64().unwrap(), rows[0]["d"].as_i64().unwrap())
}

/// Creates the Nessie branch `name` at the head of `main` through Nessie's REST API v2.
fn create_branch(stack: &Stack, name: &str) {
    let created = stack.python_json(&format!(
        r#"
import json, os, urllib.request
base = os.environ["K2I_TEST_NESSIE"].rstrip("/") + "/api/v2"
main = json.load(urllib.request.urlopen(base + "/trees/main"))["reference"]
request = urllib.request.Request(
    base + "/trees?name={name}&type=BRANCH", method="POST", headers={{"Content-Type": "application/json"}},
    data=json.dumps({{"type": "BRANCH", "name": "main", "hash": main["hash"]}}).encode())
print(json.dumps(json.load(urllib.request.urlopen(request))["reference"]))
"#
    ));
    assert_eq!((created["name"].as_str(), created["type"].as_str()), (Some(name), Some("BRANCH")), "{created}");
}

fn assert_no_secret(stack: &Stack, output: &str) {
    assert!(!output.contains(&stack.s3().secret_key), "the S3 secret key appears in the output:\n{output}");
}

/// The next offset recorded per partition by the newest snapshot mentioning it.
fn recorded(seen: &Value, topic: &str) -> std::collections::BTreeMap<String, i64> {
    common::recorded_offsets(&seen["summaries"], topic)
}

#[tokio::test]
async fn a_k2i_nessie_config_ingests_on_its_branch_resumes_and_a_second_branch_is_isolated() {
    let stack = stack();
    nessie();
    let setup = Setup::new(stack, "nessie", 2).await;
    let table = format!("{}.events", setup.namespace);
    let main = k2i_config(stack, &setup, "main", &setup.group, "main");
    let mut output = String::new();

    // First run on main: the namespace and the table are created through Nessie, the files land on S3.
    stack.produce(&setup.topic, json_records(2, 150, 0)).await;
    output += &ingest(&main, &table, 300);
    // A restart resumes from the table's progress on main.
    stack.produce(&setup.topic, json_records(2, 50, 150)).await;
    output += &ingest(&main, &table, 100);

    let seen = read_branch(stack, &setup.namespace, "main");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(400), Some(400)), "pyiceberg: {seen}");
    assert!(seen["location"].as_str().unwrap().starts_with(&format!("s3://{}/", stack.s3().bucket)), "{seen}");
    let expected_offsets = [("0".to_owned(), 200), ("1".to_owned(), 200)].into();
    assert_eq!(recorded(&seen, &setup.topic), expected_offsets, "{seen}");
    assert_eq!(duck_counts(stack, seen["metadata"].as_str().unwrap()), (400, 400), "DuckDB over S3");

    // A second branch from main's head: an ingest there sees main's progress as its own starting point and
    // commits to the branch only; main does not see it.
    let branch = format!("etl_{}", setup.namespace);
    create_branch(stack, &branch);
    stack.produce(&setup.topic, json_records(2, 25, 200)).await;
    let on_branch = k2i_config(stack, &setup, "branch", &format!("{}-branch", setup.group), &branch);
    output += &ingest(&on_branch, &table, 50);
    let branch_seen = read_branch(stack, &setup.namespace, &branch);
    assert_eq!((branch_seen["rows"].as_i64(), branch_seen["distinct"].as_i64()), (Some(450), Some(450)));
    assert_eq!(duck_counts(stack, branch_seen["metadata"].as_str().unwrap()), (450, 450), "DuckDB, branch");
    let main_after = read_branch(stack, &setup.namespace, "main");
    assert_eq!(main_after["rows"].as_i64(), Some(400), "main sees nothing of the branch: {main_after}");
    assert_eq!(main_after["metadata"], seen["metadata"], "main's table did not change");
    assert_eq!(duck_counts(stack, main_after["metadata"].as_str().unwrap()), (400, 400), "DuckDB, main");

    // Main resumes from its own progress (offset 200), not from the branch's (225): the same 50 records
    // land on main too, once.
    output += &ingest(&main, &table, 50);
    let main_last = read_branch(stack, &setup.namespace, "main");
    assert_eq!((main_last["rows"].as_i64(), main_last["distinct"].as_i64()), (Some(450), Some(450)));
    let expected_offsets = [("0".to_owned(), 225), ("1".to_owned(), 225)].into();
    assert_eq!(recorded(&main_last, &setup.topic), expected_offsets, "{main_last}");
    assert_eq!(read_branch(stack, &setup.namespace, &branch)["metadata"], branch_seen["metadata"]);

    // Validation names the catalog, prints the branch, and prints no secret.
    let validate = |config: &Path, print: bool| {
        let mut cmd = k2i();
        cmd.arg("validate").args(print.then_some("--print")).arg("--config").arg(config);
        let out = run(cmd);
        let printed = text(&out.stdout) + &text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{printed}");
        printed
    };
    let summary = validate(&main, false);
    assert!(summary.contains(&format!("table {table} in the nessie catalog")), "{summary}");
    let printed = validate(&on_branch, true);
    assert!(printed.contains("catalog_type = \"nessie\""), "{printed}");
    assert!(printed.contains(&format!("[iceberg.nessie]\ndefault_branch = \"{branch}\"")), "{printed}");
    output += &(summary + &printed);
    assert_no_secret(stack, &output);
}

/// A branch that does not exist stops k2i with a configuration error naming the catalog, without a secret.
#[tokio::test]
async fn a_missing_branch_is_a_clear_error() {
    let stack = stack();
    nessie();
    let setup = Setup::new(stack, "nessie-nobranch", 1).await;
    stack.produce(&setup.topic, json_records(1, 5, 0)).await;
    let config = k2i_config(stack, &setup, "missing", &setup.group, "no_such_branch");
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(&config);
    let out = run(cmd);
    let output = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a configuration error: {output}");
    assert!(output.contains("the Nessie branch `no_such_branch` does not exist"), "{output}");
    assert!(!output.contains("retrying"), "not retried as an outage: {output}");
    assert_no_secret(stack, &output);
}
