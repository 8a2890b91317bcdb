//! The benchmark harness runs in the suite in a tiny configuration so it cannot rot. No speed is asserted:
//! speed is judged by `scripts/bench.sh` against the raw consume rate measured in the same run.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_harness_measures_raw_and_k2i_in_a_tiny_configuration() {
    let stack = k2i_testkit::stack();
    let out_dir = tempfile::tempdir().unwrap();
    for (shape, records) in [("json", "3000"), ("raw", "500"), ("avro", "2000"), ("json-schema", "2000")] {
        let out = Command::new(env!("CARGO_BIN_EXE_k2i-bench"))
            .args(["--k2i", env!("CARGO_BIN_EXE_k2i"), "--bootstrap-servers", &stack.kafka])
            .args(["--registry", &stack.registry])
            .args([
                "--shape",
                shape,
                "--records",
                records,
                "--partitions",
                "2",
                "--buffer-mb",
                "64",
                "--flush-batch-size",
                "1000",
            ])
            .arg("--out")
            .arg(out_dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            stdout.contains("| raw librdkafka consume |") && stdout.contains("| k2i ingest --until-caught-up |"),
            "{stdout}"
        );
        let report_path = stdout.lines().find_map(|l| l.strip_prefix("report: ")).unwrap();
        let report: Value = serde_json::from_str(&std::fs::read_to_string(report_path).unwrap()).unwrap();
        assert_eq!(report["records"].as_u64(), Some(records.parse().unwrap()));
        assert_eq!(report["shape"], shape);
        assert!(report["ratio_k2i_to_raw"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["k2i"]["peak_rss_mb"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["k2i"]["cpu_seconds"].as_f64().unwrap() > 0.0, "{report}");
        let snapshots = report["k2i"]["snapshots"].as_u64().unwrap();
        assert!(snapshots >= 1, "{report}");
        assert!(report["k2i_summary"].as_str().unwrap().starts_with(&format!("ingested {records} rows")), "{report}");
    }
}

#[test]
fn formats_mode_runs_each_registry_format_against_its_own_raw_consume() {
    let stack = k2i_testkit::stack();
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_k2i-bench"))
        .args(["--k2i", env!("CARGO_BIN_EXE_k2i"), "--bootstrap-servers", &stack.kafka])
        .args(["--registry", &stack.registry, "--buffer-mb", "64", "--flush-batch-size", "1000"])
        .args(["formats", "--records", "1500", "--partitions", "2"])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("| format | payload MiB | records/s | MiB/s per core | ratio to raw consume | RSS MiB |"),
        "{stdout}"
    );
    for format in ["protobuf", "avro", "json-schema"] {
        assert!(stdout.contains(&format!("\n| {format} | ")), "{format} in {stdout}");
    }
    let report_path = stdout.lines().filter_map(|l| l.strip_prefix("report: ")).next_back().unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report_path).unwrap()).unwrap();
    let rows = report["formats"].as_array().unwrap();
    assert_eq!(
        rows.iter().map(|r| r["format"].as_str().unwrap()).collect::<Vec<_>>(),
        ["protobuf", "avro", "json-schema"]
    );
    for (row, run) in rows.iter().zip(report["runs"].as_array().unwrap()) {
        assert_eq!(run["records"].as_u64(), Some(1500), "{run}");
        assert!(row["ratio_k2i_to_raw"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["payload_mib_per_cpu_second"].as_f64().unwrap() > 0.0, "{row}");
        assert!(run["k2i_summary"].as_str().unwrap().starts_with("ingested 1500 rows"), "{run}");
    }
}

#[test]
fn commit_history_mode_measures_a_small_and_a_synthesised_history() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_k2i-bench"))
        .args(["commit-history", "--snapshots", "200", "--small", "3", "--samples", "3"])
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no JSON report in {stdout}"));
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert!(report.to_string().contains("200"), "the large history is in the report: {report}");
}
