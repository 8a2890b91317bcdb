//! The benchmark harness runs in the suite in a tiny configuration so it cannot rot. No speed is asserted:
//! speed is judged by `scripts/bench.sh` against the raw consume rate measured in the same run.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_harness_measures_raw_and_k2i_in_a_tiny_configuration() {
    let stack = k2i_testkit::stack();
    let out_dir = tempfile::tempdir().unwrap();
    for (shape, records) in [("json", "3000"), ("raw", "500")] {
        let out = Command::new(env!("CARGO_BIN_EXE_k2i-bench"))
            .args(["--k2i", env!("CARGO_BIN_EXE_k2i"), "--bootstrap-servers", &stack.kafka])
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
