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

/// The warning lines of a valid configuration.
fn warnings(text: &str) -> Vec<String> {
    parse(text).unwrap_or_else(|e| panic!("{e}")).warnings().iter().map(ToString::to_string).collect()
}

/// The keys of the features a valid configuration asks for that are not built yet.
fn unbuilt(text: &str) -> Vec<String> {
    parse(text).unwrap_or_else(|e| panic!("{e}")).unbuilt().into_iter().map(|u| u.key).collect()
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
            "kafka.properties.\"enable.auto.commit\": would commit offsets before their records are in the table; k2i commits offsets itself, after each Iceberg commit",
            "kafka.properties.\"group.id\": conflicts with kafka.consumer_group, from which k2i sets it; give the group there only",
        ]
    );
    let props = parse(&format!(
        "{MINIMAL}\n[kafka.properties]\n\"fetch.min.bytes\" = 1024\n\"security.protocol\" = \"SASL_SSL\"\n"
    ))
    .unwrap();
    assert_eq!(props.kafka.properties["fetch.min.bytes"].expose().unwrap(), "1024");
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
            "kafka.format.message_name: applies only to the registry formats (protobuf, avro, json_schema)",
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
    // TLS files: read when the client is built, so they need not exist to validate.
    let tls = |url: &str, keys: &str| format!("{MINIMAL}\n[kafka.format.registry]\nurl = \"{url}\"\n{keys}");
    let all = "ca_cert = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client-key.pem\"\n";
    let registry = parse(&tls("https://r:8081", all)).unwrap().kafka.format.registry.unwrap();
    assert_eq!(registry.ca_cert.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(registry.client_cert.as_deref(), Some(Path::new("client.pem")));
    assert_eq!(registry.client_key.as_deref(), Some(Path::new("client-key.pem")));
    let defaults = parse(&tls("https://r", "")).unwrap().kafka.format.registry.unwrap();
    assert_eq!((defaults.ca_cert, defaults.client_cert, defaults.client_key), (None, None, None));
    assert_eq!(
        parse(&tls("https://r", "ca_cert = \"ca.pem\"\n")).unwrap().kafka.format.registry.unwrap().client_cert,
        None
    );
    assert_eq!(
        problems(&tls("https://r", "client_cert = \"client.pem\"\n")),
        ["kafka.format.registry: `client_cert` and `client_key` go together (mTLS)"]
    );
    assert_eq!(
        problems(&tls("https://r", "ca_cert = \"ca.pem\"\nclient_key = \"client-key.pem\"\n")),
        ["kafka.format.registry: `client_cert` and `client_key` go together (mTLS)"]
    );
    assert_eq!(
        problems(&tls("http://r", all)),
        [
            "kafka.format.registry.ca_cert: applies only to an https:// url (kafka.format.registry.url is http://)",
            "kafka.format.registry.client_cert: applies only to an https:// url (kafka.format.registry.url is http://)",
            "kafka.format.registry.client_key: applies only to an https:// url (kafka.format.registry.url is http://)",
        ]
    );
    assert_eq!(
        problems(&tls("http://r", "client_key = \"k.pem\"\n")),
        [
            "kafka.format.registry: `client_cert` and `client_key` go together (mTLS)",
            "kafka.format.registry.client_key: applies only to an https:// url (kafka.format.registry.url is http://)",
        ]
    );
}

#[test]
fn protobuf_options_default_and_parse() {
    let protobuf = "[kafka.format]\ntype = \"protobuf\"\n[kafka.format.registry]\nurl = \"http://r\"";
    let options = |extra: &str| parse(&with("kafka", &format!("{protobuf}{extra}"))).unwrap().kafka.format.protobuf;
    assert_eq!(ProtobufOptions::default(), ProtobufOptions { enums: EnumMode::Name, oneof_case: true });
    assert_eq!(options(""), ProtobufOptions::default());
    assert_eq!(
        options("\n[kafka.format.protobuf]\nenums = \"number\"\noneof_case = false"),
        ProtobufOptions { enums: EnumMode::Number, oneof_case: false }
    );
    assert_eq!(
        options("\n[kafka.format.protobuf]\nenums = \"name\""),
        ProtobufOptions { enums: EnumMode::Name, oneof_case: true }
    );
    let bad = |extra: &str| problems(&with("kafka", &format!("{protobuf}\n[kafka.format.protobuf]\n{extra}")));
    assert_eq!(
        bad("enums = \"label\""),
        ["kafka.format.protobuf.enums: expected one of \"name\", \"number\", found string \"label\""]
    );
    assert_eq!(bad("oneof = true"), ["kafka.format.protobuf.oneof: unknown key"]);
    assert_eq!(
        bad("oneof_case = \"yes\""),
        ["kafka.format.protobuf.oneof_case: expected a boolean, found string \"yes\""]
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
        warnings(&with("iceberg", "rest_uri = \"http://localhost:8181\"\n[iceberg.rest]\ntoken = \"t\"")),
        [
            "iceberg.rest_uri: ignored: applies only when iceberg.catalog_type = \"rest\" or \"nessie\"",
            "iceberg.rest: ignored: applies only when iceberg.catalog_type = \"rest\" or \"nessie\"",
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
        problems(&with("iceberg", "catalog_type = \"hiev\"")),
        [
            "iceberg.catalog_type: expected one of \"sql\", \"rest\", \"glue\", \"s3tables\", \"nessie\", found string \"hiev\""
        ]
    );
    let text = with("iceberg", "warehouse_path = \"hdfs://nn/w\"\n[iceberg.glue]\nregion = \"eu-west-1\"");
    assert_eq!(
        problems(&text),
        [
            "iceberg.warehouse_path: expected a local path or a URL with scheme file, s3, s3a, s3n, gs, abfss, abfs, wasbs, wasb, found scheme `hdfs`"
        ]
    );
    assert_eq!(
        warnings(&text.replace("hdfs://nn/w", "./w")),
        ["iceberg.glue: ignored: applies only when iceberg.catalog_type = \"glue\""]
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
    assert_eq!(sql.iceberg.sql.uri.unwrap().expose().unwrap(), "sqlite:/tmp/c.db");
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
        [
            "errors.dead_letter_topic: applies only when errors.policy = \"dead-letter\" (or schema_evolution.on_breaking_change = \"dead-letter\")"
        ]
    );
    // A breaking schema's records can go to the dead-letter topic while bad records follow another policy.
    let breaking = "[schema_evolution]\non_breaking_change = \"dead-letter\"\n";
    assert_eq!(
        problems(&format!("{MINIMAL}\n{breaking}")),
        ["errors.dead_letter_topic: is required when schema_evolution.on_breaking_change = \"dead-letter\""]
    );
    let config =
        parse(&format!("{MINIMAL}\n{breaking}[errors]\npolicy = \"skip\"\ndead_letter_topic = \"d\"\n")).unwrap();
    assert_eq!(config.errors.dead_letter_topic.as_deref(), Some("d"));
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
    assert_eq!(config.kafka.properties["security.protocol"].expose().unwrap(), "SSL");
}

#[test]
fn env_tables_merge_into_the_file() {
    let text = format!("{MINIMAL}\n[kafka.properties]\n\"client.id\" = \"file\"\n");
    let config = parse_env(&text, &[("K2I_KAFKA__PROPERTIES", "{ \"fetch.max.bytes\" = 1 }")]).unwrap();
    assert_eq!(config.kafka.properties["client.id"].expose().unwrap(), "file");
    assert_eq!(config.kafka.properties["fetch.max.bytes"].expose().unwrap(), "1");
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
    assert_eq!(config.kafka.properties["sasl.password"].expose().unwrap(), "pw-from-env");
    assert_eq!(config.iceberg.rest.token.as_ref().unwrap().expose().unwrap(), "tok-from-file");

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

/// A full K2I configuration: every key of K2I's configuration reference.
const K2I_FULL: &str = include_str!("../../../../testdata/k2i-full.toml");

#[test]
fn k2i_full_config_validates_with_the_same_meaning() {
    let config = parse(K2I_FULL).unwrap_or_else(|e| panic!("{e}"));
    let property = |key: &str| config.kafka.properties.get(key).map(|s| s.expose().unwrap().to_owned());
    assert_eq!(property("session.timeout.ms").as_deref(), Some("45000"));
    assert_eq!(property("heartbeat.interval.ms").as_deref(), Some("3000"));
    assert_eq!(property("max.poll.interval.ms").as_deref(), Some("600000"));
    assert_eq!(property("security.protocol").as_deref(), Some("SASL_SSL"));
    assert_eq!(property("sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
    assert_eq!(property("sasl.username").as_deref(), Some("k2i-orders"));
    assert_eq!(property("sasl.password").as_deref(), Some("5f0c1e7a-orders-ingest"));
    assert_eq!(property("ssl.ca.location").as_deref(), Some("/etc/kafka/certs/ca.pem"));
    assert_eq!(property("ssl.certificate.location").as_deref(), Some("/etc/kafka/certs/client.pem"));
    assert_eq!(property("ssl.key.location").as_deref(), Some("/etc/kafka/certs/client.key"));
    assert_eq!(property("ssl.key.password").as_deref(), Some("client-key-passphrase"));
    assert_eq!(config.kafka.properties.len(), 11, "{:?}", config.kafka.properties.keys());

    let format = &config.kafka.format;
    assert_eq!(format.kind, FormatType::Protobuf);
    assert_eq!(format.message_name.as_deref(), Some("shop.orders.v1.OrderPlaced"));
    let registry = format.registry.as_ref().unwrap();
    assert_eq!(registry.url, "https://schema-registry.prod.internal:8081");
    assert_eq!(registry.subject_name_strategy, SubjectNameStrategy::TopicRecordName);

    assert_eq!(config.schema_evolution.mode, EvolutionMode::None);
    assert_eq!(config.schema_evolution.on_breaking_change, BreakingChangeAction::SkipMessage);
    assert_eq!(config.schema_evolution.schema_update_min_interval.get(), Duration::from_secs(120));
    assert_eq!(format.protobuf, ProtobufOptions { enums: EnumMode::Name, oneof_case: true });

    let ice = &config.iceberg;
    assert_eq!(ice.catalog_type, CatalogType::Rest);
    assert_eq!(ice.compression, Compression::Snappy);
    assert_eq!(ice.target_file_size_mb.get(), 512);
    let partitions: Vec<String> = ice.partition_by.iter().map(ToString::to_string).collect();
    assert_eq!(partitions, ["day(placed_at)", "bucket(16, customer_id)"]);
    let storage: Vec<(&str, &str)> = ice.storage.iter().map(|(k, v)| (k.as_str(), v.expose().unwrap())).collect();
    assert_eq!(
        storage,
        [
            ("adls.account-key", "bXktYXp1cmUtc3RvcmFnZS1rZXk="),
            ("adls.account-name", "acmelakehouse"),
            ("gcs.project-id", "acme-lakehouse"),
            ("s3.access-key-id", "AKIAIOSFODNN7EXAMPLE"),
            ("s3.endpoint", "https://s3.eu-west-1.amazonaws.com"),
            ("s3.region", "eu-west-1"),
            ("s3.secret-access-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ]
    );
    assert_eq!(ice.rest.credential.as_ref().unwrap().expose().unwrap(), "k2i-orders:9a4c2f0e-client-secret");
    assert_eq!(ice.rest.token, None);
    assert_eq!(ice.rest.scope.as_deref(), Some("catalog"));
    assert_eq!(ice.rest.headers["X-Tenant"].expose().unwrap(), "sales");
    assert_eq!(ice.glue.catalog_id.as_deref(), Some("123456789012"));
    assert_eq!(ice.sql.uri.as_ref().unwrap().expose().unwrap(), "postgres://k2i@catalog-db.prod.internal:5432/iceberg");
    assert_eq!(ice.sql.catalog_name.as_deref(), Some("k2i"));

    assert_eq!(config.buffer.max_size_mb.get(), 2000);
    assert_eq!(config.buffer.flush_batch_size.get(), 50_000);
    assert_eq!(config.transaction_log.log_dir, PathBuf::from("/var/lib/k2i/txlog"));
    assert_eq!(config.maintenance.compaction_interval.get(), Duration::from_secs(7200));
    assert_eq!(config.maintenance.snapshot_max_age.get(), Duration::from_secs(30 * 24 * 3600));
    assert_eq!(config.maintenance.orphan_min_age.get(), Duration::from_secs(7 * 24 * 3600));
    assert!(!config.maintenance.enabled);
    assert!(!config.rpc.enabled);
    assert_eq!(config.rpc.socket_path, PathBuf::from("./run/k2i.sock"));

    let unbuilt: Vec<(String, Issue)> = config.unbuilt().into_iter().map(|u| (u.key, u.issue)).collect();
    let expected = [
        ("iceberg.partition_by", Issue::TablesMaintenance),
        ("iceberg.gcs_credentials_path", Issue::StorageAndCatalogs),
        ("iceberg.gcs_service_account_key", Issue::StorageAndCatalogs),
        ("iceberg.azure_container", Issue::StorageAndCatalogs),
        ("maintenance.compaction_enabled", Issue::TablesMaintenance),
        ("maintenance.snapshot_expiration_enabled", Issue::TablesMaintenance),
        ("maintenance.orphan_cleanup_enabled", Issue::TablesMaintenance),
        ("maintenance.statistics_enabled", Issue::TablesMaintenance),
    ];
    assert_eq!(unbuilt, expected.map(|(k, i)| (k.to_owned(), i)));
    let warned: Vec<&str> = config.warnings().iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        warned,
        [
            "kafka.batch_size",
            "kafka.batch_timeout_ms",
            "kafka.format.cache_ttl_seconds",
            "kafka.format.latest_on_startup",
            "iceberg.hive_metastore_uri",
            "iceberg.rest.request_timeout_seconds",
            "iceberg.glue.role_arn",
            "iceberg.glue.external_id",
            "iceberg.nessie.api_version",
            "buffer.ttl_seconds",
            "buffer.memory_alignment_bytes",
            "transaction_log.checkpoint_interval_entries",
            "transaction_log.checkpoint_interval_seconds",
            "transaction_log.max_log_files",
            "maintenance.compaction_threshold_mb",
            "maintenance.compaction_target_mb",
            "maintenance.statistics_interval_seconds",
            "monitoring.log_level",
            "monitoring.log_format",
            "iceberg.sql",
            "iceberg.glue",
        ]
    );
}

#[test]
fn the_full_k2i_fixture_uses_every_k2i_key() {
    let doc: toml::Table = toml::from_str(K2I_FULL).unwrap();
    let doc = toml::Value::Table(doc);
    let missing: Vec<&str> = compat::K2I_KEYS
        .iter()
        .map(|k| k.path)
        .filter(|path| path.split('.').try_fold(&doc, |node, part| node.get(part)).is_none())
        .collect();
    assert!(missing.is_empty(), "testdata/k2i-full.toml does not use {missing:?}");
}

#[test]
fn every_k2i_key_maps_onto_a_k2i_key() {
    let keys: Vec<String> = reference::keys().iter().map(|k| format!("{}.{}", k.table, k.key)).collect();
    // Free-form tables: their entries are the k2i keys.
    let maps = ["kafka.properties.", "iceberg.storage.", "iceberg.rest.headers"];
    for key in compat::K2I_KEYS {
        let target = key.target();
        let known = target == "—"
            || keys.contains(&target)
            || maps.iter().any(|m| target.starts_with(m))
            // The `_seconds` / `_ms` form of a duration key.
            || keys.iter().any(|k| target.strip_prefix(k.as_str()).is_some_and(|s| s == "_seconds" || s == "_ms"));
        assert!(known, "{} maps onto {target}, which is not a k2i key", key.path);
    }
}

#[test]
fn k2i_keys_set_the_same_values_as_their_k2i_keys() {
    let pairs = [
        ("kafka", "session_timeout_ms = 45000", "[kafka.properties]\n\"session.timeout.ms\" = 45000"),
        ("kafka", "max_poll_interval_ms = 600000", "[kafka.properties]\n\"max.poll.interval.ms\" = \"600000\""),
        (
            "kafka",
            "[kafka.security]\nprotocol = \"SASL_SSL\"\nsasl_password = { env = \"PW\" }\nssl_cert_location = \"/c.pem\"",
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = { env = \"PW\" }\n\"ssl.certificate.location\" = \"/c.pem\"",
        ),
        (
            "kafka",
            "[kafka.format]\ntype = \"protobuf\"\nschema_registry_url = \"http://r:8081\"\nsubject_strategy = \"record_name\"\nmessage_type = \"a.B\"",
            "[kafka.format]\ntype = \"protobuf\"\nmessage_name = \"a.B\"\n[kafka.format.registry]\nurl = \"http://r:8081\"\nsubject_name_strategy = \"record-name\"",
        ),
        ("schema_evolution", "mode = \"manual\"", "mode = \"none\""),
        (
            "iceberg",
            "aws_region = \"eu-west-1\"\naws_secret_access_key = \"s\"\ns3_endpoint = \"http://minio:9000\"",
            "[iceberg.storage]\n\"s3.region\" = \"eu-west-1\"\n\"s3.secret-access-key\" = \"s\"\n\"s3.endpoint\" = \"http://minio:9000\"",
        ),
        (
            "iceberg",
            "[[iceberg.partition_spec]]\nsource_field = \"ts\"\ntransform = \"hour\"\n[[iceberg.partition_spec]]\nsource_field = \"id\"\ntransform = { truncate = { width = 4 } }",
            "partition_by = [\"hour(ts)\", \"truncate(4, id)\"]",
        ),
        (
            "iceberg",
            "catalog_type = \"rest\"\nrest_uri = \"http://c\"\n[iceberg.rest]\ncredential_type = \"bearer\"\ncredential = \"tok\"\noauth2_scope = \"s\"\ncustom_headers = { \"X-T\" = \"a\" }",
            "catalog_type = \"rest\"\nrest_uri = \"http://c\"\n[iceberg.rest]\ntoken = \"tok\"\nscope = \"s\"\nheaders = { \"X-T\" = \"a\" }",
        ),
        (
            "iceberg",
            "[iceberg.sql_catalog]\ntype = \"sqlite\"\nurl = \"sqlite:///var/lib/k2i/catalog.db\"\ncatalog_name = \"c\"",
            "[iceberg.sql]\nuri = \"sqlite:///var/lib/k2i/catalog.db\"\ncatalog_name = \"c\"",
        ),
        (
            "maintenance",
            "snapshot_retention_days = 30\norphan_retention_days = 3",
            "snapshot_max_age = \"30days\"\norphan_min_age = \"3d\"",
        ),
        ("maintenance", "compaction_enabled = false\nstatistics_enabled = false", ""),
    ];
    let env = [("PW", "pw")];
    for (section, k2i_form, k2i_native) in pairs {
        let from_k2i = parse_env(&with(section, k2i_form), &env).unwrap_or_else(|e| panic!("{k2i_form}: {e}"));
        let native = parse_env(&with(section, k2i_native), &env).unwrap_or_else(|e| panic!("{k2i_native}: {e}"));
        assert_eq!(from_k2i, native, "{k2i_form}\n  vs\n{k2i_native}");
    }
}

#[test]
fn a_k2i_key_and_its_k2i_key_that_disagree_are_a_problem_naming_both() {
    assert_eq!(
        problems(&with(
            "kafka",
            "[kafka.security]\nprotocol = \"SSL\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\""
        )),
        ["kafka.security.protocol: conflicts with `kafka.properties.\"security.protocol\"`; give it once"]
    );
    assert_eq!(
        problems(&with(
            "kafka",
            "[kafka.security]\nssl_cert_location = \"/a.pem\"\nssl_certificate_location = \"/b.pem\""
        )),
        [
            "kafka.security.ssl_certificate_location: conflicts with `kafka.security.ssl_cert_location`, which also sets `kafka.properties.\"ssl.certificate.location\"`; give it once"
        ]
    );
    assert_eq!(
        problems(&with("maintenance", "snapshot_retention_days = 7\nsnapshot_max_age = \"30d\"")),
        ["maintenance.snapshot_retention_days: conflicts with `maintenance.snapshot_max_age`; give it once"]
    );
    assert_eq!(
        problems(&with(
            "kafka",
            "[kafka.format]\ntype = \"protobuf\"\nmessage_type = \"a.B\"\nmessage_name = \"a.C\"\n[kafka.format.registry]\nurl = \"http://r\""
        )),
        ["kafka.format.message_type: conflicts with `kafka.format.message_name`; give it once"]
    );
    assert_eq!(
        problems(&with(
            "iceberg",
            "partition_by = [\"day(ts)\"]\n[[iceberg.partition_spec]]\nsource_field = \"ts\"\ntransform = \"hour\""
        )),
        ["iceberg.partition_spec: conflicts with `iceberg.partition_by`; give it once"]
    );
    // Both given and agreeing is not a conflict (librdkafka reads 45000 and "45000" alike).
    let agreeing = with("kafka", "session_timeout_ms = 45000\n[kafka.properties]\n\"session.timeout.ms\" = \"45000\"");
    assert_eq!(parse(&agreeing).unwrap().kafka.properties["session.timeout.ms"].expose().unwrap(), "45000");
}

#[test]
fn k2i_keys_are_type_checked_and_k2i_only_tables_report_typos() {
    assert_eq!(
        problems(&with(
            "kafka",
            "session_timeout_ms = \"long\"\n[kafka.security]\nsasl_usrname = \"u\"\n[kafka.format]\nsubject_strategy = \"topic-name\""
        )),
        [
            "kafka.session_timeout_ms: expected a positive integer, found string \"long\"",
            "kafka.format.subject_strategy: expected one of \"topic_name\", \"record_name\", \"topic_record_name\" (did you mean \"topic_name\"?), found string \"topic-name\"",
            "kafka.security.sasl_usrname: unknown key; did you mean `sasl_username`?",
        ]
    );
    assert_eq!(
        problems(&with("buffer", "memory_alignment_bytes = \"64\"\nttl_seconds = 0")),
        [
            "buffer.ttl_seconds: expected a positive integer, found integer 0",
            "buffer.memory_alignment_bytes: expected a positive integer, found string \"64\"",
        ]
    );
    assert_eq!(
        problems(&with(
            "iceberg",
            "[[iceberg.partition_spec]]\nsource_field = \"ts\"\ntransform = \"weekly\"\nsource_feild = 1"
        )),
        [
            "iceberg.partition_spec[0].source_feild: unknown key; did you mean `source_field`?",
            "iceberg.partition_spec[0].transform: expected a transform: identity, year, month, day, hour, bucket[N] or truncate[N], found string \"weekly\"",
        ]
    );
    assert_eq!(
        problems(&format!("{MINIMAL}\n[iceberg.nessie]\ndefault_brnch = \"main\"\n")),
        ["iceberg.nessie.default_brnch: unknown key; did you mean `default_branch`?"]
    );
}

#[test]
fn k2i_keys_without_meaning_are_accepted_with_the_reason() {
    assert_eq!(
        warnings(&with("buffer", "memory_alignment_bytes = 64")),
        [
            "buffer.memory_alignment_bytes: accepted and ignored: Arrow aligns its buffers (64 bytes) itself; there is nothing to choose"
        ]
    );
    assert_eq!(
        warnings(&with("monitoring", "log_level = \"debug\"")),
        [
            "monitoring.log_level: accepted and ignored: logging starts before the file is read; use `-v` / `-q` or `K2I_LOG=<level>`"
        ]
    );
    assert!(warnings(&with("rpc", "max_frame_bytes = 1024")).is_empty(), "the RPC's keys are built");
    let none = with(
        "iceberg",
        "catalog_type = \"rest\"\nrest_uri = \"http://c\"\n[iceberg.rest]\ncredential_type = \"none\"\ncredential = \"x\"",
    );
    assert_eq!(
        warnings(&none),
        ["iceberg.rest.credential: accepted and ignored: `credential_type = \"none\"` sends no credential"]
    );
    assert_eq!(parse(&none).unwrap().iceberg.rest, RestCatalogConfig::default());
}

#[test]
fn k2i_sql_catalog_type_must_agree_with_the_url() {
    assert_eq!(
        problems(&with("iceberg", "[iceberg.sql_catalog]\ntype = \"postgres\"\nurl = \"sqlite:/tmp/c.db\"")),
        [
            "iceberg.sql_catalog.type: is \"postgres\", but the catalog URL (iceberg.sql_catalog.url) does not start with `postgres://`"
        ]
    );
    assert!(
        parse(&with("iceberg", "[iceberg.sql_catalog]\ntype = \"postgres\"\nurl = \"postgresql://u@h/db\"")).is_ok()
    );
}

#[test]
fn k2i_hive_catalog_validates_and_is_unbuilt() {
    let text = with("iceberg", "catalog_type = \"hive\"\nhive_metastore_uri = \"thrift://hms:9083\"");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.catalog_name(), "hive");
    let unbuilt = config.unbuilt();
    assert_eq!(unbuilt.len(), 1);
    assert_eq!((unbuilt[0].key.as_str(), unbuilt[0].issue), ("iceberg.catalog_type", Issue::StorageAndCatalogs));
    let printed = config.to_redacted_toml();
    assert!(printed.contains("catalog_type = \"hive\"\n"), "{printed}");
    let reparsed = parse(&printed).unwrap();
    assert_eq!((reparsed.catalog_name(), reparsed.iceberg), (config.catalog_name(), config.iceberg.clone()));
    assert_eq!(
        warnings(&with("iceberg", "catalog_type = \"hive\"\nrest_uri = \"http://n\"")),
        ["iceberg.rest_uri: ignored: applies only when iceberg.catalog_type = \"rest\" or \"nessie\""]
    );
    // An override written with k2i's name replaces K2I's catalog type.
    let config =
        parse_env(&with("iceberg", "catalog_type = \"hive\""), &[("K2I_ICEBERG__CATALOG_TYPE", "sql")]).unwrap();
    assert_eq!((config.catalog_name().as_str(), config.unbuilt()), ("sql", Vec::new()));
}

#[test]
fn k2i_nessie_catalog_is_built_with_the_branch_and_the_server_from_k2i_keys() {
    let text = with(
        "iceberg",
        "catalog_type = \"nessie\"\nrest_uri = \"http://nessie:19120/api/v1\"\n\
         [iceberg.nessie]\ndefault_branch = \"etl\"\napi_version = \"v1\"",
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((config.iceberg.catalog_type, config.catalog_name().as_str()), (CatalogType::Nessie, "nessie"));
    assert_eq!(config.iceberg.nessie.default_branch, "etl");
    assert_eq!(config.unbuilt(), Vec::new());
    assert_eq!(
        warnings(&text),
        ["iceberg.nessie.api_version: accepted and ignored: k2i speaks Nessie's Iceberg REST API \
             (`<server>/iceberg/<branch>`), the same for either version of Nessie's own API"]
    );
    let printed = config.to_redacted_toml();
    assert!(printed.contains("catalog_type = \"nessie\"\n"), "{printed}");
    assert!(printed.contains("[iceberg.nessie]\ndefault_branch = \"etl\"\n"), "{printed}");
    assert_eq!(parse(&printed).unwrap().iceberg, config.iceberg);

    // The branch defaults to Nessie's `main`; rest_uri and [iceberg.rest] are Nessie's settings, not leftovers.
    let plain = with("iceberg", "catalog_type = \"nessie\"\nrest_uri = \"http://n\"\n[iceberg.rest]\ntoken = \"t\"");
    assert_eq!(parse(&plain).unwrap().iceberg.nessie.default_branch, "main");
    assert_eq!(warnings(&plain), Vec::<String>::new());
    assert_eq!(
        warnings(&with("iceberg", "[iceberg.nessie]\ndefault_branch = \"dev\"")),
        ["iceberg.nessie: ignored: applies only when iceberg.catalog_type = \"nessie\""]
    );
}

#[test]
fn nessie_rules() {
    assert_eq!(
        problems(&with("iceberg", "catalog_type = \"nessie\"")),
        ["iceberg.rest_uri: is required when iceberg.catalog_type = \"nessie\" (the Nessie server, e.g. \
             `http://nessie:19120/api/v2`)"]
    );
    assert_eq!(
        problems(&with(
            "iceberg",
            "catalog_type = \"nessie\"\nrest_uri = \"http://n/iceberg/main\"\n[iceberg.nessie]\ndefault_branch = \"dev\""
        )),
        ["iceberg.rest_uri: names the Nessie ref `main`, but iceberg.nessie.default_branch is `dev`; give the \
             server (`…/api/v2` or `…/iceberg`) and the branch in iceberg.nessie.default_branch only"]
    );
    assert_eq!(
        problems(&with(
            "iceberg",
            "catalog_type = \"nessie\"\nrest_uri = \"http://n\"\n[iceberg.nessie]\ndefault_branch = \"feature/x\""
        )),
        ["iceberg.nessie.default_branch: expected a Nessie branch name (a letter, then letters, digits, `_`, `-`, \
             `.`; no `..`, not ending in `.`), found string \"feature/x\""]
    );
}

#[test]
fn unbuilt_lists_every_feature_that_is_not_built() {
    assert_eq!(unbuilt(MINIMAL), Vec::<String>::new());
    // K2I's README example writes to S3: built now.
    assert_eq!(unbuilt(K2I_README), Vec::<String>::new());
    let text = format!(
        "{}\n[kafka.format]\ntype = \"avro\"\n[kafka.format.registry]\nurl = \"http://r\"\n\
         [kafka.properties]\n\"sasl.mechanism\" = \"GSSAPI\"\n\
         [schema_evolution]\nmode = \"permissive\"\non_breaking_change = \"dead-letter\"\n\
         [errors]\npolicy = \"dead-letter\"\ndead_letter_topic = \"dlq\"\n\
         [rpc]\nenabled = true\n[maintenance]\nenabled = true\n",
        MINIMAL.replace(
            "table_name = \"events\"",
            "table_name = \"events\"\ncatalog_type = \"glue\"\nwarehouse_path = \"s3://b/w\"\npartition_by = [\"day(ts)\"]\nstorage = { \"s3.region\" = \"eu-west-1\" }"
        )
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<String> = config.unbuilt().iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "kafka.properties.\"sasl.mechanism\": Kerberos (GSSAPI) authentication is not built yet; the configuration validates, `k2i ingest` refuses it until issue 11",
            "schema_evolution.mode: the permissive schema-evolution mode is not built yet; the configuration validates, `k2i ingest` refuses it until issue 10",
            "iceberg.partition_by: writing partitioned tables is not built yet; the configuration validates, `k2i ingest` refuses it until the tables/maintenance issue",
            "maintenance.enabled: scheduled maintenance is not built yet; the configuration validates, `k2i ingest` refuses it until the tables/maintenance issue",
        ]
    );
    let protobuf = "[kafka.format]\ntype = \"protobuf\"\n[kafka.format.registry]\nurl = \"http://r\"";
    // Every registry format is built.
    for format in ["protobuf", "avro", "json_schema"] {
        assert_eq!(unbuilt(&with("kafka", &protobuf.replace("protobuf", format))), Vec::<String>::new(), "{format}");
    }
    // Every reaction to a breaking change is built.
    let breaking = |action: &str| with("schema_evolution", &format!("on_breaking_change = \"{action}\""));
    for action in ["pause", "fail", "skip-message"] {
        assert_eq!(unbuilt(&breaking(action)), Vec::<String>::new(), "{action}");
    }
    let skip = parse(&breaking("skip-message")).unwrap();
    assert_eq!(skip.schema_evolution.on_breaking_change, BreakingChangeAction::SkipMessage);
    // Serde aliases pass the schema check too.
    assert_eq!(
        parse(&breaking("skip")).unwrap().schema_evolution.on_breaking_change,
        BreakingChangeAction::SkipMessage
    );
    let json_schema = "[kafka.format]\ntype = \"json-schema\"\n[kafka.format.registry]\nurl = \"http://r\"";
    assert_eq!(parse(&with("kafka", json_schema)).unwrap().kafka.format.kind, FormatType::JsonSchema);
    let dead_letter = format!("{}\n[errors]\ndead_letter_topic = \"dlq\"\n", breaking("dead-letter"));
    assert_eq!(unbuilt(&dead_letter), Vec::<String>::new());
    assert_eq!(
        unbuilt(&with(
            "iceberg",
            "catalog_type = \"s3tables\"\n[iceberg.s3tables]\ntable_bucket_arn = \"arn:aws:s3tables:eu-west-1:1:bucket/b\""
        )),
        Vec::<String>::new(),
        "S3 Tables is built"
    );
    assert_eq!(unbuilt(&with("maintenance", "orphan_cleanup_enabled = true")), ["maintenance.orphan_cleanup_enabled"]);
    assert_eq!(unbuilt(&with("iceberg", "warehouse_path = \"file:///tmp/w\"")), Vec::<String>::new());
}

#[test]
fn kafka_properties_that_weaken_exactly_once_are_refused_with_the_reason() {
    let property = |key: &str, value: &str| problems(&format!("{MINIMAL}\n[kafka.properties]\n\"{key}\" = {value}\n"));
    let accepted = |key: &str, value: &str| {
        let text = format!("{MINIMAL}\n[kafka.properties]\n\"{key}\" = {value}\n");
        parse(&text).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
    };
    assert_eq!(
        property("enable.auto.commit", "true"),
        [
            "kafka.properties.\"enable.auto.commit\": would commit offsets before their records are in the table; k2i commits offsets itself, after each Iceberg commit"
        ]
    );
    assert_eq!(property("enable.auto.commit", "\"1\"").len(), 1);
    accepted("enable.auto.commit", "false");
    assert_eq!(
        property("enable.auto.offset.store", "\"TRUE\""),
        [
            "kafka.properties.\"enable.auto.offset.store\": would store offsets of records not yet in the table; k2i stores offsets itself, after each Iceberg commit"
        ]
    );
    accepted("enable.auto.offset.store", "\"false\"");
    assert_eq!(
        property("enable.auto.offset.store", "\"maybe\""),
        ["kafka.properties.\"enable.auto.offset.store\": expected true or false, found string \"maybe\""]
    );
    for value in ["\"earliest\"", "\"latest\"", "\"error\""] {
        assert_eq!(
            property("auto.offset.reset", value),
            [
                "kafka.properties.\"auto.offset.reset\": k2i decides where each partition starts (where the table's progress says); for partitions the table has never recorded, set kafka.auto_offset_reset"
            ]
        );
    }
    assert_eq!(
        property("isolation.level", "\"read_uncommitted\""),
        [
            "kafka.properties.\"isolation.level\": would ingest records of aborted transactions; k2i reads committed records only"
        ]
    );
    accepted("isolation.level", "\"read_committed\"");
    assert_eq!(
        property("enable.partition.eof", "true"),
        [
            "kafka.properties.\"enable.partition.eof\": would deliver the end of every partition as a fetch error; k2i follows the high watermarks itself"
        ]
    );
    accepted("enable.partition.eof", "false");
    for value in ["\"range\"", "\"roundrobin,cooperative-sticky\"", "\"cooperative-sticky,range\""] {
        assert_eq!(
            property("partition.assignment.strategy", value),
            [
                "kafka.properties.\"partition.assignment.strategy\": k2i relies on cooperative incremental rebalancing (a partition is revoked only after its flush lands); only \"cooperative-sticky\" is allowed"
            ]
        );
    }
    accepted("partition.assignment.strategy", "\"cooperative-sticky\"");
    assert_eq!(
        property("group.id", "\"k2i\""),
        [
            "kafka.properties.\"group.id\": conflicts with kafka.consumer_group, from which k2i sets it; give the group there only"
        ]
    );
    for key in ["bootstrap.servers", "metadata.broker.list"] {
        assert_eq!(
            property(key, "\"localhost:9092\""),
            [format!(
                "kafka.properties.\"{key}\": conflicts with kafka.bootstrap_servers, from which k2i sets it; give the servers there only"
            )]
        );
    }
    // Values from the environment are checked like inline ones.
    assert_eq!(
        problems_env(
            &format!("{MINIMAL}\n[kafka.properties]\n\"isolation.level\" = {{ env = \"ISO\" }}\n"),
            &[("ISO", "read_uncommitted")]
        )
        .len(),
        1
    );
}

#[test]
fn kafka_security_properties_must_name_known_values() {
    let property =
        |key: &str, value: &str| problems(&format!("{MINIMAL}\n[kafka.properties]\n\"{key}\" = \"{value}\"\n"));
    assert_eq!(
        property("security.protocol", "TLS"),
        [
            "kafka.properties.\"security.protocol\": expected one of \"PLAINTEXT\", \"SSL\", \"SASL_PLAINTEXT\", \"SASL_SSL\", found string \"TLS\""
        ]
    );
    assert_eq!(
        property("sasl.mechanism", "SCRAM-SHA-1"),
        [
            "kafka.properties.\"sasl.mechanism\": expected one of \"PLAIN\", \"SCRAM-SHA-256\", \"SCRAM-SHA-512\", \"OAUTHBEARER\", \"GSSAPI\", found string \"SCRAM-SHA-1\""
        ]
    );
    assert!(parse(&with("kafka", "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"")).is_ok());
}

#[test]
fn k2i_key_table_is_up_to_date() {
    const BEGIN: &str = "<!-- BEGIN GENERATED K2I KEYS: edit K2I_KEYS in crates/k2i-core/src/config/compat.rs -->\n";
    const END: &str = "<!-- END GENERATED K2I KEYS -->";
    let path = repo_file("docs/configuration.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text.split_once(BEGIN).expect("docs/configuration.md has the K2I keys BEGIN marker");
    let (current, tail) = rest.split_once(END).expect("docs/configuration.md has the K2I keys END marker");
    let generated = reference::k2i_markdown();
    if current != generated {
        if std::env::var_os("K2I_BLESS").is_some() {
            std::fs::write(&path, format!("{head}{BEGIN}{generated}{END}{tail}")).unwrap();
        } else {
            panic!("docs/configuration.md is stale: run `K2I_BLESS=1 cargo test -p k2i-core k2i_key_table`");
        }
    }
}
