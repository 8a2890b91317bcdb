//! Tables on object storage through the catalogs that keep them: S3 (the stack's moto server) with the SQL
//! catalog on Postgres and with the Glue catalog (moto's), read back by pyiceberg through the same catalog
//! and by DuckDB's `iceberg_scan` over S3 (httpfs). Secrets come from the environment and must appear in no
//! output.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::time::Duration;

use common::{Catalog, Setup, eventually, http_get, json_records, k2i, kill, read_log, run, spawn_logged, text, wait};
use k2i_testkit::proxy::{Fault, Match, Proxy};
use k2i_testkit::{Stack, TestRecord, stack};

/// Asserts no test secret appears in `output`.
fn assert_no_secret(stack: &Stack, output: &str) {
    let pg_password =
        stack.postgres().split_once("://").unwrap().1.split('@').next().unwrap().split(':').nth(1).unwrap().to_owned();
    for secret in [stack.s3().secret_key.as_str(), pg_password.as_str()] {
        assert!(!output.contains(secret), "a secret appears in the output:\n{output}");
    }
}

/// DuckDB over S3: rows and distinct (partition, offset) of the table whose metadata is at `metadata`.
fn duck_counts(stack: &Stack, metadata: &str) -> (i64, i64) {
    let rows = stack.duckdb(&format!(
        "select count(*) as n, count(distinct (_kafka_partition, _kafka_offset)) as d from iceberg_scan('{metadata}')"
    ));
    (rows[0]["n"].as_i64().unwrap(), rows[0]["d"].as_i64().unwrap())
}

fn until_caught_up(config: &std::path::Path) -> std::process::Output {
    let mut cmd = k2i();
    cmd.args(["ingest", "--until-caught-up", "--config"]).arg(config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    out
}

async fn json_lands_on_s3_and_resumes(catalog: Catalog) -> (Setup, serde_json::Value) {
    let stack = stack();
    let setup = Setup::new(stack, &format!("s3-{catalog:?}").to_lowercase(), 3).await;
    stack.produce(&setup.topic, json_records(3, 200, 0)).await;
    let config = setup.config(stack, catalog, "json", "[buffer]\nflush_batch_size = 250\n");

    let out = until_caught_up(&config);
    let table = format!("{}.events", setup.namespace);
    assert!(
        text(&out.stdout).starts_with(&format!("ingested 600 rows (0 records skipped) into {table}")),
        "{}",
        text(&out.stdout)
    );
    let mut output = text(&out.stdout) + &text(&out.stderr);

    // A restart resumes from the table's progress, on the store.
    stack.produce(&setup.topic, json_records(3, 50, 200)).await;
    let out = until_caught_up(&config);
    assert!(
        text(&out.stdout).starts_with(&format!("ingested 150 rows (0 records skipped) into {table}")),
        "{}",
        text(&out.stdout)
    );
    output += &(text(&out.stdout) + &text(&out.stderr));

    let seen = setup.inspect(stack, catalog, "\"id\", \"name\"");
    assert!(Setup::missing_files(&seen).is_empty(), "{seen}");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(750), Some(750)), "pyiceberg");
    let location = seen["location"].as_str().unwrap();
    assert!(location.starts_with("s3://"), "the table lives in S3: {location}");
    assert!(seen["referenced"].as_array().unwrap().iter().all(|f| f.as_str().unwrap().starts_with("s3://")), "{seen}");
    if catalog != Catalog::S3Tables {
        assert!(Setup::unreferenced_files(&seen).is_empty(), "no orphan: {seen}");
    }
    assert_eq!(duck_counts(stack, seen["metadata"].as_str().unwrap()), (750, 750), "DuckDB over S3");

    // Neither the runs nor validation print a secret.
    let mut cmd = k2i();
    cmd.args(["validate", "--print", "--config"]).arg(&config);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    output += &(text(&out.stdout) + &text(&out.stderr));
    assert_no_secret(stack, &output);
    (setup, seen)
}

#[tokio::test]
async fn json_on_s3_with_the_sql_catalog_on_postgres_reads_back_everywhere() {
    json_lands_on_s3_and_resumes(Catalog::Postgres).await;
}

#[tokio::test]
async fn json_on_s3_with_the_glue_catalog_reads_back_and_keeps_glues_table_parameters() {
    let stack = stack();
    let (setup, seen) = json_lands_on_s3_and_resumes(Catalog::Glue).await;
    // The Glue table carries what Iceberg readers (Athena, Spark, pyiceberg) look for.
    let glue = stack.python_json(&format!(
        r#"
import json, os, boto3
glue = boto3.client("glue", endpoint_url=os.environ["K2I_TEST_S3_ENDPOINT"], region_name=os.environ["K2I_TEST_S3_REGION"],
                    aws_access_key_id=os.environ["K2I_TEST_S3_ACCESS_KEY"], aws_secret_access_key=os.environ["K2I_TEST_S3_SECRET_KEY"])
table = glue.get_table(DatabaseName="{ns}", Name="events")["Table"]
print(json.dumps({{"parameters": table.get("Parameters", {{}}), "type": table.get("TableType"), "version": table.get("VersionId")}}))
"#,
        ns = setup.namespace
    ));
    let parameters = &glue["parameters"];
    assert_eq!(parameters["table_type"].as_str().map(str::to_uppercase).as_deref(), Some("ICEBERG"), "{glue}");
    assert_eq!(parameters["metadata_location"], seen["metadata"], "{glue}");
    assert!(parameters["previous_metadata_location"].as_str().is_some_and(|p| p != seen["metadata"]), "{glue}");
}

#[tokio::test]
async fn json_on_the_s3_tables_catalog_reads_back_from_its_table_bucket() {
    let (setup, seen) = json_lands_on_s3_and_resumes(Catalog::S3Tables).await;
    // S3 Tables placed the table in a bucket of its own, not under a warehouse k2i chose.
    let location = seen["location"].as_str().unwrap();
    assert!(!location.contains(&setup.namespace), "{location}");
}

/// A data file bigger than one upload part (here ~12 MiB of incompressible bytes in one flush) reads back
/// whole.
#[tokio::test]
async fn a_large_data_file_reads_back_whole() {
    let stack = stack();
    let setup = Setup::new(stack, "s3-large", 1).await;
    let records = common::incompressible_records(3000, 4096);
    stack.produce(&setup.topic, records).await;
    let config =
        setup.config(stack, Catalog::Postgres, "raw", "[buffer]\nflush_batch_size = 100000\nmax_size_mb = 256\n");
    let out = until_caught_up(&config);
    assert!(text(&out.stdout).contains("ingested 3000 rows (0 records skipped)"), "{}", text(&out.stdout));
    let seen = setup.inspect(stack, Catalog::Postgres, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(3000), Some(3000)));
    assert_eq!(seen["referenced"].as_array().unwrap().len(), 1, "one data file: {seen}");
    let bytes = stack.duckdb(&format!(
        "select sum(octet_length(value)) as b from iceberg_scan('{}')",
        seen["metadata"].as_str().unwrap()
    ));
    assert_eq!(bytes[0]["b"].as_i64(), Some(3000 * 4096), "{bytes:?}");
}

/// A data file of several row groups (the Parquet writer hands each to the store's writer when it is full,
/// here at 1,048,576 small rows) reaches S3 whole: the writes are gathered into parts S3 accepts (moto, like
/// S3, refuses parts under 5 MiB but the last with `EntityTooSmall`).
#[tokio::test]
async fn a_file_of_several_small_row_groups_reaches_s3_whole() {
    let stack = stack();
    let setup = Setup::new(stack, "s3-row-groups", 1).await;
    let records: Vec<TestRecord> = (0..1_200_000u32).map(|i| TestRecord::value(i.to_le_bytes().to_vec())).collect();
    stack.produce(&setup.topic, records).await;
    let config = setup.config(
        stack,
        Catalog::Postgres,
        "raw",
        "[buffer]\nflush_batch_size = 2000000\nmax_size_mb = 1024\nflush_interval = \"10m\"\n",
    );
    let out = until_caught_up(&config);
    assert!(text(&out.stdout).contains("ingested 1200000 rows (0 records skipped)"), "{}", text(&out.stdout));
    let seen = setup.inspect(stack, Catalog::Postgres, "");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(1_200_000), Some(1_200_000)));
    let groups = stack.python_json(&format!(
        r#"
import json, os, pyarrow.fs as pafs, pyarrow.parquet as pq
fs = pafs.S3FileSystem(endpoint_override=os.environ["K2I_TEST_S3_ENDPOINT"], region=os.environ["K2I_TEST_S3_REGION"],
                       access_key=os.environ["K2I_TEST_S3_ACCESS_KEY"], secret_key=os.environ["K2I_TEST_S3_SECRET_KEY"])
files = {files}
print(json.dumps([pq.ParquetFile(fs.open_input_file(f[len("s3://"):])).metadata.num_row_groups for f in files]))
"#,
        files = serde_json::to_string(&seen["referenced"]).unwrap()
    ));
    assert!(
        groups.as_array().unwrap().iter().any(|g| g.as_i64().unwrap() > 1),
        "a file of several row groups: {groups}"
    );
}

/// The store goes away for 30 s mid-ingest (every request to it cut): k2i reports not ready, keeps the
/// records, and once the store is back writes every record exactly once.
#[tokio::test]
async fn a_store_outage_mid_ingest_is_reported_and_loses_nothing() {
    let stack = stack();
    let setup = Setup::new(stack, "s3-outage", 2).await;
    let proxy = Proxy::start(stack.s3().endpoint.trim_start_matches("http://"));
    let port = common::free_port();
    let config = setup.config(
        stack,
        Catalog::Postgres,
        "json",
        "[buffer]\nflush_batch_size = 100\nflush_interval = \"300ms\"\n",
    );
    // Data files through the proxy: the catalog (Postgres) stays up, the store goes away.
    let text_config = std::fs::read_to_string(&config).unwrap().replace(&stack.s3().endpoint, &proxy.url());
    std::fs::write(&config, text_config).unwrap();
    stack.produce(&setup.topic, json_records(2, 100, 0)).await;

    let log = setup.dir.path().join("k2i.log");
    let mut cmd = k2i();
    cmd.args(["ingest", "--config"]).arg(&config).env("K2I_MONITORING__HEALTH_PORT", port.to_string());
    let child = spawn_logged(cmd, &log);
    let _guard = common::KillOnDrop(child.id());
    let ready = format!("http://127.0.0.1:{port}/readyz");
    eventually("the first records committed", Duration::from_secs(60), || {
        read_log(&log).contains("committed").then_some(())
    });

    let outage = proxy.rule(Match::any(), Fault::Cut);
    stack.produce(&setup.topic, json_records(2, 150, 100)).await;
    // Readiness names the store that failed (the proxy's address stands for it), whichever step failed.
    let store = proxy.url().replace("http://", "");
    let started = std::time::Instant::now();
    let reason = eventually("readiness to name the failing store", Duration::from_secs(30), || {
        http_get(&ready).filter(|(status, body)| *status == 503 && body.contains(&store)).map(|(_, body)| body)
    });
    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));
    outage.remove();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while http_get(&ready).is_none_or(|(status, _)| status != 200) {
        assert!(std::time::Instant::now() < deadline, "not ready again 90 s after the outage:\n{}", read_log(&log));
        std::thread::sleep(Duration::from_millis(200));
    }
    kill(&child, "TERM");
    let out = wait(child, Duration::from_secs(90));
    let logs = read_log(&log);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    assert_no_secret(stack, &(logs.clone() + &reason));
    // What was not consumed before the stop is read by the next run; nothing was lost or written twice.
    until_caught_up(&config);

    let seen = setup.inspect(stack, Catalog::Postgres, "");
    assert!(Setup::missing_files(&seen).is_empty(), "{seen}");
    assert_eq!((seen["rows"].as_i64(), seen["distinct"].as_i64()), (Some(500), Some(500)), "{reason}");
}
