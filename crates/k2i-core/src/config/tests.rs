//! Unit tests of configuration loading: defaults, every validation rule, the env overlay and secrets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The configuration from K2I's own README; it must validate unchanged.
const K2I_README: &str = include_str!("../../../../testdata/k2i-readme.toml");

const MINIMAL: &str = r#"
[kafka]
bootstrap_servers = ["localhost:9092"]
topic = "events"
consumer_group = "k2i"

[iceberg]
table_name = "events"
"#;

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env: Env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    from_toml(text, Path::new("k2i.toml"), &env)
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_env(text, &[])
}

/// The error lines of an invalid configuration.
fn problems(text: &str) -> Vec<String> {
    problems_env(text, &[])
}

fn problems_env(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    match parse_env(text, env) {
        Ok(config) => panic!("expected errors, the configuration is valid: {config:?}"),
        Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
    }
}

/// MINIMAL with `extra` lines appended at the end of the `[section]` table (created at the end if absent).
/// `extra` may end with sub-tables of `section`.
fn with(section: &str, extra: &str) -> String {
    let header = format!("[{section}]\n");
    match MINIMAL.find(&header) {
        Some(at) => {
            let body = at + header.len();
            let end = MINIMAL[body..].find("\n[").map_or(MINIMAL.len(), |i| body + i + 1);
            format!("{}{extra}\n{}", &MINIMAL[..end], &MINIMAL[end..])
        }
        None => format!("{MINIMAL}\n{header}{extra}\n"),
    }
}

#[test]
fn k2i_readme_config_validates_unchanged() {
    let config = parse(K2I_README).unwrap();
    assert_eq!(config.kafka.bootstrap_servers, ["localhost:9092"]);
    assert_eq!(config.kafka.topic_list(), ["events"]);
    assert_eq!(config.kafka.format.kind, FormatType::Raw);
    assert_eq!(config.schema_evolution.mode, EvolutionMode::AutoAdditive);
    assert_eq!(config.schema_evolution.on_breaking_change, BreakingChangeAction::Pause);
    assert_eq!(config.schema_evolution.schema_update_min_interval.get(), Duration::from_secs(60));
    assert_eq!(config.buffer.max_size_mb.get(), 500);
    assert_eq!(config.buffer.flush_interval.get(), Duration::from_secs(30));
    assert_eq!(config.buffer.flush_batch_size.get(), 10_000);
    assert_eq!(config.iceberg.catalog_type, CatalogType::Rest);
    assert_eq!(config.iceberg.rest_uri.as_deref(), Some("http://localhost:8181"));
    assert_eq!(config.iceberg.database_name, "analytics");
    assert_eq!(config.transaction_log.log_dir, PathBuf::from("./transaction_logs"));
    assert_eq!((config.monitoring.metrics_port, config.monitoring.health_port), (9090, 8080));
    assert!(!config.rpc.enabled);
}

#[test]
fn defaults_need_nothing_but_kafka() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.iceberg.catalog_type, CatalogType::Sql);
    assert_eq!(config.iceberg.warehouse_path, "./warehouse");
    assert_eq!(config.iceberg.database_name, "default");
    assert_eq!(config.iceberg.compression, Compression::Zstd);
    assert_eq!(config.iceberg.target_file_size_mb.get(), 128);
    assert_eq!(config.kafka.auto_offset_reset, OffsetReset::Earliest);
    assert_eq!(config.kafka.format.kind, FormatType::Raw);
    assert_eq!(config.buffer, BufferConfig::default());
    assert_eq!(config.buffer.max_size_mb.get(), 256);
    assert_eq!(config.buffer.flush_interval.get(), Duration::from_secs(30));
    assert_eq!(config.errors.policy, ErrorPolicy::Fail);
    assert_eq!(config.monitoring.listen_address.to_string(), "127.0.0.1");
    assert_eq!(config.schema_evolution, SchemaEvolutionConfig::default());
    assert_eq!(config.maintenance, MaintenanceConfig::default());
    assert!(!config.maintenance.enabled);
    assert_eq!(config.rpc.socket_path, PathBuf::from("./k2i.sock"));
}

#[test]
fn typo_names_the_key_and_the_suggestion() {
    let text = K2I_README.replace("flush_interval_seconds", "flush_intervall_seconds");
    assert_eq!(
        problems(&text),
        ["buffer.flush_intervall_seconds: unknown key; did you mean `flush_interval_seconds`?"]
    );
}

#[test]
fn unknown_keys_without_a_close_match_have_no_suggestion() {
    assert_eq!(problems(&with("buffer", "colour = 1")), ["buffer.colour: unknown key"]);
    assert_eq!(problems(&format!("{MINIMAL}\n[bufer]\n")), ["bufer: unknown key; did you mean `buffer`?"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = K2I_README
        .replace("flush_interval_seconds", "flush_intervall_seconds")
        .replace("max_size_mb = 500", "max_size_mb = \"500\"")
        .replace("type = \"raw\"", "type = \"jsn\"")
        .replace("rest_uri = \"http://localhost:8181\"", "")
        .replace("metrics_port = 9090", "metrics_port = 90900");
    assert_eq!(
        problems(&text),
        [
            "kafka.format.type: expected one of \"raw\", \"json\", \"protobuf\", \"avro\", \"json_schema\" (did you mean \"json\"?), found string \"jsn\"",
            "buffer.max_size_mb: expected a positive integer, found string \"500\"",
            "buffer.flush_intervall_seconds: unknown key; did you mean `flush_interval_seconds`?",
            "monitoring.metrics_port: expected an integer from 1 to 65535, found integer 90900",
            "iceberg.rest_uri: is required when iceberg.catalog_type = \"rest\"",
        ]
    );
}

#[test]
fn missing_required_keys_are_named() {
    let text = "[kafka]\ntopic = \"t\"\n[iceberg]\n";
    assert_eq!(
        problems(text),
        [
            "kafka.bootstrap_servers: missing required key (expected an array of strings)",
            "kafka.consumer_group: missing required key (expected a string)",
            "iceberg.table_name: missing required key (expected a string)",
        ]
    );
    assert_eq!(
        problems(""),
        ["kafka: missing required key (expected a table)", "iceberg: missing required key (expected a table)"]
    );
}

#[test]
fn types_and_ranges_are_checked() {
    assert_eq!(
        problems(&with("buffer", "flush_batch_size = 0")),
        ["buffer.flush_batch_size: expected a positive integer, found integer 0"]
    );
    assert_eq!(problems(&with("rpc", "enabled = \"yes\"")), ["rpc.enabled: expected a boolean, found string \"yes\""]);
    assert_eq!(
        problems(&with("monitoring", "listen_address = \"localhost\"")),
        ["monitoring.listen_address: `localhost` is not an IP address"]
    );
    assert_eq!(problems(&with("kafka", "properties = 3")), ["kafka.properties: expected a table, found integer 3"]);
    assert_eq!(
        problems(&MINIMAL.replace("[\"localhost:9092\"]", "\"localhost:9092\"")),
        ["kafka.bootstrap_servers: expected an array of strings, found string \"localhost:9092\""]
    );
    assert_eq!(
        problems(&with("buffer", "max_size_mb = 1.5")),
        ["buffer.max_size_mb: expected a positive integer, found float 1.5"]
    );
    assert_eq!(
        problems(&with("monitoring", "health_port = 0")),
        ["monitoring.health_port: expected an integer from 1 to 65535, found integer 0"]
    );
}

#[test]
fn durations_accept_humane_and_integer_forms() {
    assert_eq!(
        parse(&with("buffer", "flush_interval = \"5m\"")).unwrap().buffer.flush_interval.get(),
        Duration::from_secs(300)
    );
    assert_eq!(
        parse(&with("buffer", "flush_interval_ms = 250")).unwrap().buffer.flush_interval.get(),
        Duration::from_millis(250)
    );
    assert_eq!(
        parse(&with("buffer", "flush_interval_seconds = 2")).unwrap().buffer.flush_interval.get(),
        Duration::from_secs(2)
    );
    assert_eq!(
        problems(&with("buffer", "flush_interval = \"5m\"\nflush_interval_seconds = 3")),
        ["buffer.flush_interval_seconds: conflicts with `buffer.flush_interval`; give the duration once"]
    );
    assert_eq!(
        problems(&with("buffer", "flush_interval_seconds = 3\nflush_interval_ms = 3000")),
        ["buffer.flush_interval_ms: conflicts with `buffer.flush_interval_seconds`; give the duration once"]
    );
    assert_eq!(
        problems(&with("buffer", "flush_interval = \"soon\"")),
        [
            "buffer.flush_interval: `soon` is not a duration (expected number at 0); write e.g. \"30s\", \"5m\" or \"250ms\""
        ]
    );
    assert_eq!(
        problems(&with("buffer", "flush_interval_seconds = -1")),
        ["buffer.flush_interval_seconds: expected a non-negative integer of seconds, found integer -1"]
    );
    assert_eq!(
        problems(&with("buffer", "flush_interval_ms = 0")),
        ["buffer.flush_interval: must be greater than zero"]
    );
}

#[test]
fn partition_transforms_are_checked_one_by_one() {
    let config = parse(&with("iceberg", "partition_by = [\"day(ts)\", \"bucket(16, user_id)\"]")).unwrap();
    assert_eq!(config.iceberg.partition_by.len(), 2);
    assert_eq!(config.iceberg.partition_by[1].transform, Transform::Bucket(16));
    assert_eq!(
        problems(&with("iceberg", "partition_by = [\"day(ts)\", \"weekly(ts)\", \"day(ts)\"]")),
        [
            "iceberg.partition_by[1]: `weekly(ts)` is not a partition transform; write identity(col), year(col), month(col), day(col), hour(col), bucket(N, col) or truncate(W, col)"
        ]
    );
    assert_eq!(
        problems(&with("iceberg", "partition_by = [\"day(ts)\", \"day(ts)\"]")),
        ["iceberg.partition_by[1]: `day(ts)` is listed twice"]
    );
}

#[test]
fn topics_follow_kafka_rules() {
    let several = MINIMAL.replace("topic = \"events\"", "topics = [\"a\", \"b.c\"]");
    assert_eq!(parse(&several).unwrap().kafka.topic_list(), ["a", "b.c"]);
    assert_eq!(
        problems(&MINIMAL.replace("topic = \"events\"", "")),
        ["kafka.topic: is required (or give `kafka.topics`)"]
    );
    assert_eq!(
        problems(&with("kafka", "topics = [\"x\"]")),
        ["kafka.topics: give either `kafka.topic` or `kafka.topics`, not both"]
    );
    assert_eq!(
        problems(&MINIMAL.replace("topic = \"events\"", "topics = [\"a\", \"a\", \"bad topic\"]")),
        [
            "kafka.topics[1]: `a` is listed twice",
            "kafka.topics[2]: expected a Kafka topic name (1–249 characters of a-z, A-Z, 0-9, `.`, `_`, `-`), found string \"bad topic\"",
        ]
    );
}

#[test]
fn kafka_rules() {
    assert_eq!(
        problems(&MINIMAL.replace("[\"localhost:9092\"]", "[\"localhost\", \"b:9092\", \"kafka://c:1\"]")),
        [
            "kafka.bootstrap_servers[0]: expected `host:port`, found string \"localhost\"",
            "kafka.bootstrap_servers[2]: expected `host:port`, found string \"kafka://c:1\"",
        ]
    );
    assert_eq!(
        problems(&MINIMAL.replace("[\"localhost:9092\"]", "[]")),
        ["kafka.bootstrap_servers: must list at least one `host:port`"]
    );
    assert_eq!(
        problems(&MINIMAL.replace("consumer_group = \"k2i\"", "consumer_group = \" \"")),
        ["kafka.consumer_group: must not be empty"]
    );
    assert_eq!(
        problems(&format!("{MINIMAL}\n[kafka.properties]\n\"group.id\" = \"x\"\n\"enable.auto.commit\" = true\n")),
        [
            "kafka.properties.\"enable.auto.commit\": is managed by k2i; set nothing: k2i commits offsets itself, after each Iceberg commit",
            "kafka.properties.\"group.id\": is managed by k2i; set kafka.consumer_group",
        ]
    );
    let props = parse(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"fetch.min.bytes\" = 1024\n\"security.protocol\" = \"SASL_SSL\"\n"
    ))
    .unwrap();
    assert_eq!(props.kafka.properties["fetch.min.bytes"].expose(), "1024");
}

#[test]
fn format_rules() {
    assert_eq!(
        problems(&format!("{MINIMAL}\n[kafka.format]\ntype = \"protobuf\"\n")),
        ["kafka.format.registry: is required for type = \"protobuf\" (add [kafka.format.registry] with `url`)"]
    );
    let avro = format!(
        "{MINIMAL}\n[kafka.format]\ntype = \"avro\"\n[kafka.format.registry]\nurl = \"http://localhost:8081\"\n"
    );
    let config = parse(&avro).unwrap();
    assert_eq!(config.kafka.format.registry.as_ref().unwrap().subject_name_strategy, SubjectNameStrategy::TopicName);
    assert_eq!(config.kafka.format.registry.as_ref().unwrap().request_timeout.get(), Duration::from_secs(10));
    let json_schema =
        format!("{MINIMAL}\n[kafka.format]\ntype = \"json_schema\"\n[kafka.format.registry]\nurl = \"https://r\"\n");
    assert_eq!(parse(&json_schema).unwrap().kafka.format.kind, FormatType::JsonSchema);
    assert_eq!(
        problems(&format!(
            "{MINIMAL}\n[kafka.format]\ntype = \"json\"\nmessage_name = \"a.B\"\n[kafka.format.registry]\nurl = \"localhost:8081\"\nusername = \"u\"\n"
        )),
        [
            "kafka.format.message_name: applies only to type = \"protobuf\"",
            "kafka.format.registry.url: expected an http:// or https:// URL, found string \"localhost:8081\"",
            "kafka.format.registry: `username` and `password` go together",
        ]
    );
    assert_eq!(
        problems(&format!(
            "{MINIMAL}\n[kafka.format.registry]\nurl = \"http://r\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"\n"
        )),
        [
            "kafka.format.registry.bearer_token: give either basic auth (`username`/`password`) or `bearer_token`, not both"
        ]
    );
}

#[test]
fn declared_json_columns_are_parsed_in_order() {
    let config = parse(&format!(
        "{MINIMAL}\n[kafka.format]\ntype = \"json\"\ncolumns = {{ id = \"long\", at = \"timestamptz\", geo = \"struct<lat: double>\" }}\n"
    ))
    .unwrap();
    let names: Vec<&str> = config.kafka.format.columns.keys().map(String::as_str).collect();
    assert_eq!(names, ["id", "at", "geo"]);
    assert_eq!(config.kafka.format.columns["at"].to_string(), "timestamptz");
    let lines = problems(&format!(
        "{MINIMAL}\n[kafka.format]\ntype = \"raw\"\ncolumns = {{ id = \"lng\", _kafka_offset = \"long\", x = 1 }}\n"
    ));
    assert_eq!(
        lines,
        [
            "kafka.format.columns.id: `lng` is not an Iceberg type (unknown type `lng`); write e.g. \"long\", \"timestamptz\", \"decimal(10, 2)\", \"list<string>\", \"map<string, long>\" or \"struct<lat: double, lon: double>\"",
            "kafka.format.columns.x: expected an Iceberg type such as \"long\" or \"list<string>\", found integer 1",
            "kafka.format.columns: applies only to type = \"json\"",
            "kafka.format.columns._kafka_offset: is the name of a k2i metadata column",
        ]
    );
}

#[test]
fn catalog_rules() {
    assert_eq!(
        problems(&with("iceberg", "rest_uri = \"http://localhost:8181\"\n[iceberg.rest]\ntoken = \"t\"")),
        [
            "iceberg.rest_uri: applies only when iceberg.catalog_type = \"rest\"",
            "iceberg.rest: applies only when iceberg.catalog_type = \"rest\"",
        ]
    );
    assert_eq!(
        problems(&with("iceberg", "catalog_type = \"rest\"\nrest_uri = \"localhost:8181\"")),
        ["iceberg.rest_uri: expected an http:// or https:// URL, found string \"localhost:8181\""]
    );
    assert_eq!(
        problems(&with(
            "iceberg",
            "catalog_type = \"rest\"\nrest_uri = \"http://c\"\n[iceberg.rest]\ntoken = \"t\"\ncredential = \"nocolon\""
        )),
        [
            "iceberg.rest.credential: give either `token` or `credential`, not both",
            "iceberg.rest.credential: must be `client_id:client_secret`",
        ]
    );
    assert_eq!(
        problems(&with("iceberg", "catalog_type = \"s3tables\"")),
        ["iceberg.s3tables.table_bucket_arn: is required when iceberg.catalog_type = \"s3tables\""]
    );
    assert_eq!(
        problems(&with("iceberg", "catalog_type = \"s3tables\"\n[iceberg.s3tables]\ntable_bucket_arn = \"bucket\"")),
        [
            "iceberg.s3tables.table_bucket_arn: expected an ARN starting with `arn:aws:s3tables:`, found string \"bucket\""
        ]
    );
    assert_eq!(
        problems(&with("iceberg", "catalog_type = \"glue\"")),
        ["iceberg.warehouse_path: must be an `s3://` location for catalog_type = \"glue\", found `./warehouse`"]
    );
    assert_eq!(
        problems(&with("iceberg", "catalog_type = \"hive\"")),
        ["iceberg.catalog_type: expected one of \"sql\", \"rest\", \"glue\", \"s3tables\", found string \"hive\""]
    );
    assert_eq!(
        problems(&with("iceberg", "warehouse_path = \"hdfs://nn/w\"\n[iceberg.glue]\nregion = \"eu-west-1\"")),
        [
            "iceberg.warehouse_path: expected a local path or a URL with scheme file, s3, s3a, gs, gcs, abfss, wasbs, found scheme `hdfs`",
            "iceberg.glue: applies only when iceberg.catalog_type = \"glue\"",
        ]
    );
    assert_eq!(
        problems(
            &MINIMAL.replace("table_name = \"events\"", "table_name = \"analytics.events\"\ndatabase_name = \"a..b\"")
        ),
        [
            "iceberg.table_name: `analytics.events` contains `.`; put the namespace in iceberg.database_name",
            "iceberg.database_name: `a..b` has an empty namespace level",
        ]
    );
    let sql = parse(&with("iceberg", "[iceberg.sql]\nuri = \"sqlite:/tmp/c.db\"")).unwrap();
    assert_eq!(sql.iceberg.sql.uri.unwrap().expose(), "sqlite:/tmp/c.db");
}

#[test]
fn error_policy_rules() {
    let dlq =
        parse(&format!("{MINIMAL}\n[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"events.dlq\"\n")).unwrap();
    assert_eq!(dlq.errors.policy, ErrorPolicy::DeadLetter);
    assert_eq!(
        problems(&format!("{MINIMAL}\n[errors]\npolicy = \"dead-letter\"\n")),
        ["errors.dead_letter_topic: is required when errors.policy = \"dead-letter\""]
    );
    assert_eq!(
        problems(&format!("{MINIMAL}\n[errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"events\"\n")),
        ["errors.dead_letter_topic: `events` is also a source topic; dead letters would be ingested again"]
    );
    assert_eq!(
        problems(&format!("{MINIMAL}\n[errors]\npolicy = \"skip\"\ndead_letter_topic = \"d\"\n")),
        ["errors.dead_letter_topic: applies only when errors.policy = \"dead-letter\""]
    );
}

#[test]
fn syntax_errors_carry_the_position() {
    let errors = parse("[kafka\n").unwrap_err();
    let message = errors.to_string();
    assert!(message.starts_with("invalid configuration k2i.toml (1 problem)\n  - invalid TOML: "), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn env_overrides_any_key_typed_by_the_schema() {
    let config = parse_env(
        MINIMAL,
        &[
            ("K2I_KAFKA__TOPIC", "orders"),
            ("K2I_KAFKA__BOOTSTRAP_SERVERS", "a:1, b:2"),
            ("K2I_BUFFER__FLUSH_INTERVAL_SECONDS", "7"),
            ("K2I_BUFFER__MAX_SIZE_MB", "64"),
            ("K2I_RPC__ENABLED", "true"),
            ("K2I_ICEBERG__CATALOG_TYPE", "rest"),
            ("K2I_ICEBERG__REST_URI", "http://catalog:8181"),
            ("K2I_KAFKA__PROPERTIES", "{ \"security.protocol\" = \"SSL\" }"),
            ("K2I_LOG", "debug"),
            ("K2I_TEST_KAFKA", "ignored: no double underscore"),
        ],
    )
    .unwrap();
    assert_eq!(config.kafka.topic_list(), ["orders"]);
    assert_eq!(config.kafka.bootstrap_servers, ["a:1", "b:2"]);
    assert_eq!(config.buffer.flush_interval.get(), Duration::from_secs(7));
    assert_eq!(config.buffer.max_size_mb.get(), 64);
    assert!(config.rpc.enabled);
    assert_eq!(config.iceberg.catalog_type, CatalogType::Rest);
    assert_eq!(config.kafka.properties["security.protocol"].expose(), "SSL");
}

#[test]
fn env_tables_merge_into_the_file() {
    let text = format!("{MINIMAL}\n[kafka.properties]\n\"client.id\" = \"file\"\n");
    let config = parse_env(&text, &[("K2I_KAFKA__PROPERTIES", "{ \"fetch.max.bytes\" = 1 }")]).unwrap();
    assert_eq!(config.kafka.properties["client.id"].expose(), "file");
    assert_eq!(config.kafka.properties["fetch.max.bytes"].expose(), "1");
}

#[test]
fn env_errors_name_the_variable() {
    assert_eq!(
        problems_env(MINIMAL, &[("K2I_KAFKA__TOPICC", "x")]),
        ["kafka.topicc: unknown key; did you mean `topic`? (from environment variable K2I_KAFKA__TOPICC)"]
    );
    assert_eq!(
        problems_env(MINIMAL, &[("K2I_BUFFER__FLUSH_BATCH_SIZE", "many")]),
        ["buffer.flush_batch_size: expected a positive integer, found string \"many\""]
    );
    assert_eq!(
        problems_env(MINIMAL, &[("K2I_BUFFER__FLUSH_INTERVAL_MS", "soon")]),
        [
            "buffer.flush_interval_ms: expected an integer of milliseconds, found string \"soon\" (from environment variable K2I_BUFFER__FLUSH_INTERVAL_MS)"
        ]
    );
    assert_eq!(
        problems_env(MINIMAL, &[("K2I_KAFKA__PROPERTIES__SASL_PASSWORD", "x")]),
        [
            "kafka.properties: is a table of free-form keys: set it as a whole, e.g. K2I_…='{ \"key\" = \"value\" }' (from environment variable K2I_KAFKA__PROPERTIES__SASL_PASSWORD)"
        ]
    );
}

#[test]
fn secrets_come_from_env_or_file_and_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-from-file\n").unwrap();
    let text = format!(
        "{}\n[iceberg.rest]\ntoken = {{ file = {:?} }}\nheaders = {{ \"X-Tenant\" = \"acme\", \"X-Api-Key\" = \"k-inline\" }}\n\n[kafka.properties]\n\"sasl.password\" = {{ env = \"KAFKA_PW\" }}\n\"sasl.username\" = \"svc\"\n\"ssl.key.password\" = \"inline-secret\"\n",
        MINIMAL.replace(
            "table_name = \"events\"",
            "table_name = \"events\"\ncatalog_type = \"rest\"\nrest_uri = \"http://c\""
        ),
        token_file.display().to_string()
    );
    let config = parse_env(&text, &[("KAFKA_PW", "pw-from-env")]).unwrap();
    assert_eq!(config.kafka.properties["sasl.password"].expose(), "pw-from-env");
    assert_eq!(config.iceberg.rest.token.as_ref().unwrap().expose(), "tok-from-file");

    let debug = format!("{config:?}");
    let printed = config.to_redacted_toml();
    for secret in ["pw-from-env", "tok-from-file", "inline-secret", "k-inline"] {
        assert!(!debug.contains(secret), "{secret} in Debug output");
        assert!(!printed.contains(secret), "{secret} in printed config:\n{printed}");
    }
    assert!(printed.contains("[kafka.properties.\"sasl.password\"]\nenv = \"KAFKA_PW\""), "{printed}");
    assert!(printed.contains("\"ssl.key.password\" = \"<redacted>\""), "{printed}");
    assert!(printed.contains("\"sasl.username\" = \"svc\""), "non-secret properties stay readable:\n{printed}");
    assert!(printed.contains("X-Tenant = \"acme\""), "{printed}");

    assert_eq!(problems(&text), ["kafka.properties.\"sasl.password\": environment variable `KAFKA_PW` is not set"]);
    let missing_file = text.replace(&token_file.display().to_string(), "/nonexistent/k2i-token");
    let lines = problems_env(&missing_file, &[("KAFKA_PW", "x")]);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("iceberg.rest.token: cannot read secret file `/nonexistent/k2i-token`: "),
        "{lines:?}"
    );
    assert_eq!(
        problems(&text.replace("{ env = \"KAFKA_PW\" }", "{ vault = \"x\" }")),
        [
            "kafka.properties.\"sasl.password\": expected a string, { env = \"VAR\" } or { file = \"path\" }, found a table"
        ]
    );
}

#[test]
fn printed_config_validates_to_the_same_config() {
    let config = parse(K2I_README).unwrap();
    let printed = config.to_redacted_toml();
    assert_eq!(parse(&printed).unwrap(), config, "{printed}");
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

#[test]
fn example_config_lists_every_key_and_validates() {
    let path = repo_file("config/example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    parse_env(&text, &[("KAFKA_SASL_PASSWORD", "x")]).unwrap_or_else(|e| panic!("{e}"));
    let mut missing = Vec::new();
    let mut current_table = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('#').trim();
        let code = line.split(" #").next().unwrap_or_default().trim();
        if let Some(table) = code.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current_table = table.to_owned();
            // A table header mentions the key it is (`[kafka.properties]`).
            seen.insert(table.to_owned());
        } else if let Some((key, _)) = line.split_once(" = ") {
            seen.insert(format!("{current_table}.{}", key.trim()));
        }
    }
    for key in reference::keys() {
        let full = format!("{}.{}", key.table, key.key);
        if !seen.contains(&full) {
            missing.push(full);
        }
    }
    assert!(missing.is_empty(), "config/example.toml does not mention: {missing:?}");
}

#[test]
fn configuration_reference_is_up_to_date() {
    const BEGIN: &str =
        "<!-- BEGIN GENERATED KEY REFERENCE: edit the doc comments in crates/k2i-core/src/config/model.rs -->\n";
    const END: &str = "<!-- END GENERATED KEY REFERENCE -->";
    let path = repo_file("docs/configuration.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text.split_once(BEGIN).expect("docs/configuration.md has the BEGIN marker");
    let (current, tail) = rest.split_once(END).expect("docs/configuration.md has the END marker");
    let generated = reference::markdown();
    if current != generated {
        if std::env::var_os("K2I_BLESS").is_some() {
            std::fs::write(&path, format!("{head}{BEGIN}{generated}{END}{tail}")).unwrap();
        } else {
            panic!("docs/configuration.md is stale: run `K2I_BLESS=1 cargo test -p k2i-core configuration_reference`");
        }
    }
}
