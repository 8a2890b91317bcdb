//! Runs the built `k2i` binary on good and bad configurations and checks exact output and exit codes.
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn k2i(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k2i"))
        .args(args)
        .env_remove("K2I_CONFIG")
        .env_remove("K2I_LOG")
        .env("KAFKA_SASL_PASSWORD", "from-the-environment")
        .output()
        .expect("the k2i binary runs")
}

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const K2I_README: &str = include_str!("../../../testdata/k2i-readme.toml");

fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn validate_accepts_the_k2i_readme_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "k2i.toml", K2I_README);
    let out = k2i(&["validate", "--config", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{path}: valid (topics events → table analytics.events in the rest catalog)\n"));
}

#[test]
fn validate_rejects_a_typo_with_the_key_and_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_config(&dir, "typo.toml", &K2I_README.replace("flush_interval_seconds", "flush_intervall_seconds"));
    let out = k2i(&["validate", "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "error: invalid configuration {path} (1 problem)\n  - buffer.flush_intervall_seconds: unknown key; did you mean `flush_interval_seconds`?\n"
        )
    );
}

#[test]
fn validate_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = K2I_README
        .replace("catalog_type = \"rest\"", "catalog_type = \"hiev\"")
        .replace("topic = \"events\"", "topic = \"\"")
        .replace("[rpc]", "[kafka.properties]\n\"enable.auto.commit\" = true\n\n[rpc]");
    let path = write_config(&dir, "bad.toml", &text);
    let out = k2i(&["validate", "--config", &path]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: invalid configuration {path} (3 problems)\n\
             \x20 - iceberg.catalog_type: expected one of \"sql\", \"rest\", \"glue\", \"s3tables\", \"nessie\", found string \"hiev\"\n\
             \x20 - kafka.topic: expected a Kafka topic name (1–249 characters of a-z, A-Z, 0-9, `.`, `_`, `-`), found string \"\"\n\
             \x20 - kafka.properties.\"enable.auto.commit\": would commit offsets before their records are in the table; k2i commits offsets itself, after each Iceberg commit\n"
        )
    );
}

/// Every key of K2I's configuration reference validates; the keys k2i ignores and the features it has not
/// built are warnings on standard error, and the exit code stays 0.
#[test]
fn validate_accepts_a_full_k2i_config_and_warns_about_what_it_ignores() {
    let path = repo("testdata/k2i-full.toml");
    let path = path.to_str().unwrap();
    let out = k2i(&["validate", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{path}: valid (topics orders → table sales.orders in the rest catalog)\n"));
    let txlog = "accepted and ignored: k2i's transaction log checkpoints by size: when a file passes 16 MiB, and after \
                 every recovery, a new file starts with a checkpoint of the pending flushes and the older files are \
                 deleted";
    let ignored = [
        "kafka.batch_size: accepted and ignored: k2i takes records from librdkafka's prefetch queue one at a time and batches them per flush (`buffer.flush_batch_size`, which K2I had too)".to_owned(),
        "kafka.batch_timeout_ms: accepted and ignored: k2i's poll waits at most 100 ms, only to notice flush triggers and shutdown promptly; flushes are timed by `buffer.flush_interval`".to_owned(),
        "kafka.format.cache_ttl_seconds: accepted and ignored: schemas by id never change and are cached for ever (memory and `registry.cache_dir`); the latest version of a subject is never cached: k2i asks for it fresh, only to create a table or to retry a paused schema".to_owned(),
        "kafka.format.latest_on_startup: accepted and ignored: k2i reads the subject's latest schema at start only to create a missing table; records are always decoded with their writer's schema (by id)".to_owned(),
        "iceberg.hive_metastore_uri: accepted; has no effect until the Hive Metastore catalog is built (issue 11)".to_owned(),
        "iceberg.rest.request_timeout_seconds: accepted and ignored: k2i gives every catalog call a fixed 30 s deadline (K2I's default) and retries it with backoff".to_owned(),
        "iceberg.glue.role_arn: accepted; has no effect until the Glue catalog is built (issue 11)".to_owned(),
        "iceberg.glue.external_id: accepted; has no effect until the Glue catalog is built (issue 11)".to_owned(),
        "iceberg.nessie.api_version: accepted and ignored: k2i speaks Nessie's Iceberg REST API (`<server>/iceberg/<branch>`), the same for either version of Nessie's own API".to_owned(),
        "buffer.ttl_seconds: accepted and ignored: rows leave k2i's buffer when they are flushed, at the latest `buffer.flush_interval` after they arrive; nothing else expires them".to_owned(),
        "buffer.memory_alignment_bytes: accepted and ignored: Arrow aligns its buffers (64 bytes) itself; there is nothing to choose".to_owned(),
        format!("transaction_log.checkpoint_interval_entries: {txlog}"),
        format!("transaction_log.checkpoint_interval_seconds: {txlog}"),
        format!("transaction_log.max_log_files: {txlog}"),
        "maintenance.compaction_threshold_mb: accepted; has no effect until compaction is built (the tables/maintenance issue)".to_owned(),
        "maintenance.compaction_target_mb: accepted; has no effect until compaction is built (the tables/maintenance issue)".to_owned(),
        "maintenance.statistics_interval_seconds: accepted; has no effect until the statistics update is built (the tables/maintenance issue)".to_owned(),
        "monitoring.log_level: accepted and ignored: logging starts before the file is read; use `-v` / `-q` or `K2I_LOG=<level>`".to_owned(),
        "monitoring.log_format: accepted and ignored: logging starts before the file is read; use `--log-format json` (k2i's default is `text`)".to_owned(),
        "iceberg.sql: ignored: applies only when iceberg.catalog_type = \"sql\"".to_owned(),
        "iceberg.glue: ignored: applies only when iceberg.catalog_type = \"glue\"".to_owned(),
    ];
    let refused = |key: &str, what: &str, until: &str| {
        format!("{key}: {what} is not built yet; the configuration validates, `k2i ingest` refuses it until {until}")
    };
    let later = "the tables/maintenance issue";
    let unbuilt = [
        refused("iceberg.partition_by", "writing partitioned tables", later),
        refused("iceberg.gcs_credentials_path", "reading Google Cloud Storage credentials from a file", "issue 11"),
        refused("iceberg.gcs_service_account_key", "reading a Google Cloud Storage service-account key", "issue 11"),
        refused("iceberg.azure_container", "naming the Azure container apart from warehouse_path", "issue 11"),
        refused("maintenance.compaction_enabled", "scheduled compaction", later),
        refused("maintenance.snapshot_expiration_enabled", "scheduled snapshot expiry", later),
        refused("maintenance.orphan_cleanup_enabled", "scheduled orphan-file removal", later),
        refused("maintenance.statistics_enabled", "scheduled table statistics", later),
    ];
    let expected: String = ignored.iter().chain(&unbuilt).map(|line| format!("warning: {line}\n")).collect();
    assert_eq!(stderr(&out), expected);
}

#[test]
fn validate_names_a_missing_file() {
    let out = k2i(&["validate", "--config", "/nonexistent/k2i.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: invalid configuration /nonexistent/k2i.toml (1 problem)\n  - cannot read the file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn validate_applies_environment_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "k2i.toml", K2I_README);
    let out = Command::new(env!("CARGO_BIN_EXE_k2i"))
        .args(["validate", "--print"])
        .env("K2I_CONFIG", &path)
        .env("K2I_KAFKA__TOPIC", "orders")
        .env("K2I_BUFFER__FLUSH_INTERVAL_MS", "1500")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("topic = \"orders\"\n"), "{printed}");
    assert!(printed.contains("flush_interval = \"1s 500ms\"\n"), "{printed}");
}

#[test]
fn print_shows_the_resolved_config_with_secrets_redacted() {
    let out = k2i(&["validate", "--config", repo("config/example.toml").to_str().unwrap(), "--print"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(!printed.contains("from-the-environment"), "{printed}");
    assert!(printed.contains("[kafka.properties.\"sasl.password\"]\nenv = \"KAFKA_SASL_PASSWORD\"\n"), "{printed}");
    assert!(printed.contains("\"client.id\" = \"k2i\"\n"), "{printed}");
    // Defaults are filled in.
    assert!(printed.contains("flush_batch_size = 100000\n"), "{printed}");
    assert!(printed.contains("catalog_type = \"sql\"\n"), "{printed}");
}

#[test]
fn usage_errors_exit_with_2() {
    let out = k2i(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config <FILE>"), "{}", stderr(&out));
    assert_eq!(k2i(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn version_names_the_git_revision() {
    let out = k2i(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("k2i {} (git ", env!("CARGO_PKG_VERSION"))), "{text}");
}

#[test]
fn completions_are_generated_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_k2i()"),
        ("zsh", "#compdef k2i"),
        ("fish", "complete -c k2i"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[k2i]"),
    ] {
        let out = k2i(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell} completion lacks {marker:?}");
        assert!(script.contains("validate"), "{shell} completion lacks the validate command");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "k2i.toml", K2I_README);
    let out = k2i(&["-v", "--log-format", "json", "validate", "--config", &path]);
    assert_eq!(out.status.code(), Some(0));
    let logs = stderr(&out);
    let line = logs
        .lines()
        .find(|l| l.contains("configuration validated"))
        .unwrap_or_else(|| panic!("no log line in {logs:?}"));
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(line.contains("\"level\":\"DEBUG\""), "{line}");
    // -q hides it; what remains is validate's own report: nothing (the README's s3:// warehouse is built).
    let quiet = k2i(&["-q", "validate", "--config", &path]);
    assert_eq!(stderr(&quiet), "");
}

#[test]
fn checked_in_man_pages_match_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = k2i(&["man", "--output-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let checked_in = repo("docs/man");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let generated = names(dir.path());
    assert_eq!(
        generated,
        [
            "k2i-completions.1",
            "k2i-ingest.1",
            "k2i-man.1",
            "k2i-query.1",
            "k2i-read.1",
            "k2i-resume.1",
            "k2i-status.1",
            "k2i-table.1",
            "k2i-validate.1",
            "k2i.1"
        ]
    );
    let stale = || panic!("docs/man is stale: run `cargo run -p k2i-cli -- man --output-dir docs/man`");
    if names(&checked_in) != generated {
        stale();
    }
    for name in generated {
        if std::fs::read(dir.path().join(&name)).unwrap() != std::fs::read(checked_in.join(&name)).unwrap() {
            stale();
        }
    }
}

#[test]
fn resume_help_explains_the_actions_and_exit_codes() {
    let out = k2i(&["resume", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let help = stdout(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "Usage: k2i resume [OPTIONS]",
        "--action <ACTION>",
        "- retry: Check the paused schema again, against the table as it is now and against the subject's latest \
         registered schema",
        "- skip: Skip the records of the paused schema id from now on (counted in k2i_records_skipped_total)",
        "- dead-letter: Send the records of the paused schema id to the dead-letter topic from now on (needs \
         errors.dead_letter_topic; without it the table stays paused and the log says so)",
        "[default: retry]",
        "--url <URL>",
        "--config <FILE>",
        "Exit codes: 0 the instance accepted the action, 6 no table is paused (HTTP 409), 1 the instance cannot be \
         reached",
    ] {
        assert!(help.contains(text), "k2i resume --help lacks {text:?}:\n{help}");
    }
}

/// A port on the loopback address with nothing listening on it (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Answers one HTTP request on a loopback port with `status` and the JSON `body`; the thread returns the
/// request line it received.
fn respond_once(status: &'static str, body: String) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        // The headers, up to the empty line; `k2i resume` sends no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
        }
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        stream.flush().unwrap();
        request_line.trim_end().to_owned()
    });
    (url, handle)
}

#[test]
fn resume_names_the_url_when_nothing_answers() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = k2i(&["resume", "--url", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: k2i is unreachable at {url} (POST {url}/resume?action=retry)\n")),
        "{err}"
    );
}

#[test]
fn resume_exits_6_when_no_table_is_paused() {
    let (url, server) = respond_once("409 Conflict", r#"{"accepted":false,"reason":"no table is paused"}"#.to_owned());
    let out = k2i(&["resume", "--url", &url, "--action", "skip"]);
    assert_eq!(server.join().unwrap(), "POST /resume?action=skip HTTP/1.1");
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), format!("error: nothing to resume at {url}: no table is paused\n"));
}

#[test]
fn resume_prints_the_accepted_action() {
    let paused = "table db.t paused by a breaking schema change: schema id 7";
    let body = serde_json::json!({"accepted": true, "action": "retry", "paused": paused}).to_string();
    let (url, server) = respond_once("202 Accepted", body);
    let out = k2i(&["resume", "--url", &format!("{url}/")]);
    assert_eq!(server.join().unwrap(), "POST /resume?action=retry HTTP/1.1");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "k2i at {url} accepted retry: the paused schema is checked again against the table and the subject's \
             latest registered schema\n  paused: {paused}\n"
        )
    );
    let (url, server) =
        respond_once("202 Accepted", r#"{"accepted":true,"action":"dead-letter","paused":"p"}"#.to_owned());
    let out = k2i(&["resume", "--url", &url, "--action", "dead-letter", "--json"]);
    assert_eq!(server.join().unwrap(), "POST /resume?action=dead-letter HTTP/1.1");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer, serde_json::json!({"accepted": true, "action": "dead-letter", "paused": "p"}));
    assert_eq!(stderr(&out), "");
}
