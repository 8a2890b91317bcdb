//! Semantic rules: what the types alone cannot say (a REST catalog needs a URI, a dead-letter policy needs a
//! topic, a librdkafka property must not weaken exactly-once, …), and secret resolution. Every rule adds to
//! the error list; none stops at the first problem. Findings that do not make the configuration invalid
//! (settings of a catalog that is not selected) are warnings.

use super::error::{ConfigError, ConfigWarning};
use super::model::{BreakingChangeAction, Config, ErrorPolicy, FormatType, KafkaConfig};
use super::types::Secret;
use super::{Env, check::join, name_of};

/// librdkafka's `security.protocol` values.
const SECURITY_PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];

/// librdkafka's SASL mechanisms (`GSSAPI` needs libsasl2, which this build lacks: see `Config::unbuilt`).
const SASL_MECHANISMS: [&str; 5] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"];

pub(crate) fn validate(config: &mut Config, env: &Env, errors: &mut Vec<ConfigError>) {
    kafka(config, errors);
    let mut warnings = Vec::new();
    iceberg(config, errors, &mut warnings);
    config.notes.warnings.extend(warnings);
    rest(config, errors);
    let dlq = &config.errors;
    let breaking = config.schema_evolution.on_breaking_change == BreakingChangeAction::DeadLetter;
    let needed = dlq.policy == ErrorPolicy::DeadLetter || breaking;
    match (needed, &dlq.dead_letter_topic) {
        (true, None) if breaking && dlq.policy != ErrorPolicy::DeadLetter => errors.push(ConfigError::rule(
            "errors.dead_letter_topic",
            "is required when schema_evolution.on_breaking_change = \"dead-letter\"",
        )),
        (true, None) => errors
            .push(ConfigError::rule("errors.dead_letter_topic", "is required when errors.policy = \"dead-letter\"")),
        (true, Some(topic)) => {
            check_topic_name("errors.dead_letter_topic", topic, errors);
            if config.kafka.topic_list().contains(&topic.as_str()) {
                errors.push(ConfigError::rule(
                    "errors.dead_letter_topic",
                    format!("`{topic}` is also a source topic; dead letters would be ingested again"),
                ));
            }
        }
        (false, Some(_)) => errors.push(ConfigError::rule(
            "errors.dead_letter_topic",
            "applies only when errors.policy = \"dead-letter\" (or schema_evolution.on_breaking_change = \"dead-letter\")",
        )),
        (false, None) => {}
    }
    if config.buffer.flush_interval.get().is_zero() {
        errors.push(ConfigError::rule("buffer.flush_interval", "must be greater than zero"));
    }
    if config.rpc.enabled && config.rpc.socket_path.as_os_str().is_empty() {
        errors.push(ConfigError::rule("rpc.socket_path", "must not be empty when rpc.enabled = true"));
    }
    resolve_secrets(config, env, errors);
    // After resolution, so a value from { env } or { file } is checked like an inline one.
    kafka_properties(&config.kafka, errors);
}

fn kafka(config: &Config, errors: &mut Vec<ConfigError>) {
    let kafka = &config.kafka;
    if kafka.bootstrap_servers.is_empty() {
        errors.push(ConfigError::rule("kafka.bootstrap_servers", "must list at least one `host:port`"));
    }
    for (i, server) in kafka.bootstrap_servers.iter().enumerate() {
        let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            errors.push(ConfigError::invalid(
                format!("kafka.bootstrap_servers[{i}]"),
                "`host:port`",
                format!("string {server:?}"),
            ));
        }
    }
    match (&kafka.topic, kafka.topics.is_empty()) {
        (None, true) => errors.push(ConfigError::rule("kafka.topic", "is required (or give `kafka.topics`)")),
        (Some(_), false) => {
            errors.push(ConfigError::rule("kafka.topics", "give either `kafka.topic` or `kafka.topics`, not both"))
        }
        (Some(topic), true) => check_topic_name("kafka.topic", topic, errors),
        (None, false) => {
            for (i, topic) in kafka.topics.iter().enumerate() {
                let path = format!("kafka.topics[{i}]");
                check_topic_name(&path, topic, errors);
                if kafka.topics[..i].contains(topic) {
                    errors.push(ConfigError::rule(path, format!("`{topic}` is listed twice")));
                }
            }
        }
    }
    if kafka.consumer_group.trim().is_empty() {
        errors.push(ConfigError::rule("kafka.consumer_group", "must not be empty"));
    }
    let format = &kafka.format;
    if format.kind.needs_registry() && format.registry.is_none() {
        errors.push(ConfigError::rule(
            "kafka.format.registry",
            format!("is required for type = \"{}\" (add [kafka.format.registry] with `url`)", name_of(format.kind)),
        ));
    }
    if !format.columns.is_empty() && format.kind != FormatType::Json {
        errors.push(ConfigError::rule("kafka.format.columns", "applies only to type = \"json\""));
    }
    for name in format.columns.keys() {
        if name.trim().is_empty() || name.contains('.') {
            errors.push(ConfigError::rule(
                join("kafka.format.columns", name),
                "a column name must be non-empty, without `.`",
            ));
        } else if name.starts_with("_kafka_") || (format.kind == FormatType::Raw && name == "value") {
            errors.push(ConfigError::rule(join("kafka.format.columns", name), "is the name of a k2i metadata column"));
        }
    }
    if format.message_name.is_some() && !format.kind.needs_registry() {
        errors.push(ConfigError::rule(
            "kafka.format.message_name",
            "applies only to the registry formats (protobuf, avro, json_schema)",
        ));
    }
    if let Some(registry) = &format.registry {
        check_http_url("kafka.format.registry.url", &registry.url, errors);
        if registry.username.is_some() != registry.password.is_some() {
            errors.push(ConfigError::rule("kafka.format.registry", "`username` and `password` go together"));
        }
        if registry.password.is_some() && registry.bearer_token.is_some() {
            errors.push(ConfigError::rule(
                "kafka.format.registry.bearer_token",
                "give either basic auth (`username`/`password`) or `bearer_token`, not both",
            ));
        }
        // The files themselves are read (and reported, naming key and file) when the client is built.
        if registry.client_cert.is_some() != registry.client_key.is_some() {
            errors
                .push(ConfigError::rule("kafka.format.registry", "`client_cert` and `client_key` go together (mTLS)"));
        }
        if registry.url.starts_with("http://") {
            let tls = [
                ("ca_cert", registry.ca_cert.is_some()),
                ("client_cert", registry.client_cert.is_some()),
                ("client_key", registry.client_key.is_some()),
            ];
            for (key, _) in tls.iter().filter(|(_, set)| *set) {
                errors.push(ConfigError::rule(
                    format!("kafka.format.registry.{key}"),
                    "applies only to an https:// url (kafka.format.registry.url is http://)",
                ));
            }
        }
    }
}

fn iceberg(config: &Config, errors: &mut Vec<ConfigError>, warnings: &mut Vec<ConfigWarning>) {
    let ice = &config.iceberg;
    if ice.table_name.trim().is_empty() {
        errors.push(ConfigError::rule("iceberg.table_name", "must not be empty"));
    } else if ice.table_name.contains('.') {
        errors.push(ConfigError::rule(
            "iceberg.table_name",
            format!("`{}` contains `.`; put the namespace in iceberg.database_name", ice.table_name),
        ));
    }
    if ice.database_name.split('.').any(|part| part.trim().is_empty()) {
        errors.push(ConfigError::rule(
            "iceberg.database_name",
            format!("`{}` has an empty namespace level", ice.database_name),
        ));
    }
    if ice.warehouse_path.trim().is_empty() {
        errors.push(ConfigError::rule("iceberg.warehouse_path", "must not be empty"));
    } else if let Some((scheme, _)) = ice.warehouse_path.split_once("://")
        // `az://` is how K2I configurations name Azure: it validates, and `Config::unbuilt` refuses it.
        && !crate::storage::SCHEMES.contains(&scheme)
        && scheme != "az"
    {
        errors.push(ConfigError::invalid(
            "iceberg.warehouse_path",
            format!("a local path or a URL with scheme {}", crate::storage::SCHEMES.join(", ")),
            format!("scheme `{scheme}`"),
        ));
    }
    let object_store = ice.warehouse_path.starts_with("s3://") || ice.warehouse_path.starts_with("s3a://");
    let selected = config.catalog_name();
    if selected == "glue" && !object_store {
        errors.push(ConfigError::rule(
            "iceberg.warehouse_path",
            format!("must be an `s3://` location for catalog_type = \"glue\", found `{}`", ice.warehouse_path),
        ));
    }
    for (i, field) in ice.partition_by.iter().enumerate() {
        if ice.partition_by[..i].contains(field) {
            errors.push(ConfigError::rule(format!("iceberg.partition_by[{i}]"), format!("`{field}` is listed twice")));
        }
    }
    // Settings of a catalog that is not selected are ignored. Often a half-edited switch, so worth a warning;
    // not an error, because K2I configurations carry settings for several catalogs.
    let unused = |catalogs: &[&str], set: bool, key: &str, warnings: &mut Vec<ConfigWarning>| {
        if set && !catalogs.contains(&selected.as_str()) {
            let names: Vec<String> = catalogs.iter().map(|c| format!("\"{c}\"")).collect();
            warnings.push(ConfigWarning::new(
                key,
                format!("ignored: applies only when iceberg.catalog_type = {}", names.join(" or ")),
            ));
        }
    };
    // The Nessie catalog is Nessie's Iceberg REST API: its server is rest_uri, and [iceberg.rest] applies.
    unused(&["rest", "nessie"], ice.rest_uri.is_some(), "iceberg.rest_uri", warnings);
    unused(&["rest", "nessie"], ice.rest != Default::default(), "iceberg.rest", warnings);
    unused(&["nessie"], ice.nessie != Default::default(), "iceberg.nessie", warnings);
    unused(&["sql"], ice.sql != Default::default(), "iceberg.sql", warnings);
    unused(&["glue"], ice.glue != Default::default(), "iceberg.glue", warnings);
    unused(&["s3tables"], ice.s3tables != Default::default(), "iceberg.s3tables", warnings);
    match selected.as_str() {
        "rest" => match &ice.rest_uri {
            Some(uri) => check_http_url("iceberg.rest_uri", uri, errors),
            None => {
                errors.push(ConfigError::rule("iceberg.rest_uri", "is required when iceberg.catalog_type = \"rest\""))
            }
        },
        "nessie" => {
            let branch = &ice.nessie.default_branch;
            let branch_ok = match crate::catalog::nessie::branch_problem(branch) {
                Some(expected) => {
                    errors.push(ConfigError::invalid(
                        "iceberg.nessie.default_branch",
                        expected,
                        format!("string {branch:?}"),
                    ));
                    false
                }
                None => true,
            };
            match &ice.rest_uri {
                Some(uri) => {
                    check_http_url("iceberg.rest_uri", uri, errors);
                    if let (true, Err(e)) = (branch_ok, crate::catalog::nessie::iceberg_uri(uri, branch)) {
                        errors.push(ConfigError::rule("iceberg.rest_uri", e.to_string()));
                    }
                }
                None => errors.push(ConfigError::rule(
                    "iceberg.rest_uri",
                    "is required when iceberg.catalog_type = \"nessie\" (the Nessie server, e.g. \
                     `http://nessie:19120/api/v2`)",
                )),
            }
        }
        "s3tables" => match &ice.s3tables.table_bucket_arn {
            Some(arn) if arn.starts_with("arn:aws:s3tables:") => {}
            Some(arn) => errors.push(ConfigError::invalid(
                "iceberg.s3tables.table_bucket_arn",
                "an ARN starting with `arn:aws:s3tables:`",
                format!("string {arn:?}"),
            )),
            None => errors.push(ConfigError::rule(
                "iceberg.s3tables.table_bucket_arn",
                "is required when iceberg.catalog_type = \"s3tables\"",
            )),
        },
        _ => {}
    }
}

/// librdkafka properties: the ones that would weaken k2i's exactly-once invariants are refused with the
/// reason, and the security settings must name values librdkafka knows.
fn kafka_properties(kafka: &KafkaConfig, errors: &mut Vec<ConfigError>) {
    for (key, secret) in &kafka.properties {
        // A secret that could not be read is reported by resolve_secrets already.
        let Some(value) = secret.value_if_resolved() else { continue };
        let path = join("kafka.properties", key);
        let value = value.trim();
        let problem = match key.as_str() {
            "bootstrap.servers" | "metadata.broker.list" => {
                Some("conflicts with kafka.bootstrap_servers, from which k2i sets it; give the servers there only")
            }
            "group.id" => {
                Some("conflicts with kafka.consumer_group, from which k2i sets it; give the group there only")
            }
            "auto.offset.reset" => Some(
                "k2i decides where each partition starts (where the table's progress says); for partitions the \
                 table has never recorded, set kafka.auto_offset_reset",
            ),
            "enable.auto.commit" | "auto.commit.enable" => flag(&path, value, errors).then_some(
                "would commit offsets before their records are in the table; k2i commits offsets itself, after \
                 each Iceberg commit",
            ),
            "enable.auto.offset.store" => flag(&path, value, errors).then_some(
                "would store offsets of records not yet in the table; k2i stores offsets itself, after each \
                 Iceberg commit",
            ),
            "enable.partition.eof" => flag(&path, value, errors).then_some(
                "would deliver the end of every partition as a fetch error; k2i follows the high watermarks itself",
            ),
            "isolation.level" => match value {
                "read_committed" => None,
                "read_uncommitted" => {
                    Some("would ingest records of aborted transactions; k2i reads committed records only")
                }
                other => {
                    errors.push(ConfigError::invalid(&path, "\"read_committed\"", format!("string {other:?}")));
                    None
                }
            },
            "partition.assignment.strategy" => (value != "cooperative-sticky").then_some(
                "k2i relies on cooperative incremental rebalancing (a partition is revoked only after its flush \
                 lands); only \"cooperative-sticky\" is allowed",
            ),
            "security.protocol" => {
                if !SECURITY_PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(value)) {
                    let expected = format!("one of {}", quoted(&SECURITY_PROTOCOLS.map(str::to_ascii_uppercase)));
                    errors.push(ConfigError::invalid(&path, expected, format!("string {value:?}")));
                }
                None
            }
            "sasl.mechanism" | "sasl.mechanisms" => {
                if !SASL_MECHANISMS.iter().any(|m| m.eq_ignore_ascii_case(value)) {
                    let expected = format!("one of {}", quoted(&SASL_MECHANISMS));
                    errors.push(ConfigError::invalid(&path, expected, format!("string {value:?}")));
                }
                None
            }
            _ => None,
        };
        if let Some(reason) = problem {
            errors.push(ConfigError::rule(path, reason));
        }
    }
}

/// A librdkafka boolean: `true` / `t` / `1` or `false` / `f` / `0`, any case. Anything else is reported (and
/// counts as false: the value is refused either way).
fn flag(path: &str, value: &str, errors: &mut Vec<ConfigError>) -> bool {
    match value.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => true,
        "false" | "f" | "0" => false,
        _ => {
            errors.push(ConfigError::invalid(path, "true or false", format!("string {value:?}")));
            false
        }
    }
}

fn quoted<S: AsRef<str>>(values: &[S]) -> String {
    values.iter().map(|v| format!("\"{}\"", v.as_ref())).collect::<Vec<_>>().join(", ")
}

fn rest(config: &Config, errors: &mut Vec<ConfigError>) {
    let rest = &config.iceberg.rest;
    if rest.token.is_some() && rest.credential.is_some() {
        errors.push(ConfigError::rule("iceberg.rest.credential", "give either `token` or `credential`, not both"));
    }
    if let Some(uri) = &rest.oauth2_server_uri {
        check_http_url("iceberg.rest.oauth2_server_uri", uri, errors);
    }
    // The files themselves are read (and reported, naming key and file) when the catalog's client is built.
    if rest.client_cert.is_some() != rest.client_key.is_some() {
        errors.push(ConfigError::rule("iceberg.rest", "`client_cert` and `client_key` go together (mTLS)"));
    }
    let timeout = rest.request_timeout.get();
    if timeout.is_zero() || timeout > crate::catalog::CALL_TIMEOUT {
        errors.push(ConfigError::rule(
            "iceberg.rest.request_timeout",
            format!(
                "must be more than 0s and at most {}s (the deadline of one catalog operation)",
                crate::catalog::CALL_TIMEOUT.as_secs()
            ),
        ));
    }
}

fn check_http_url(path: &str, url: &str, errors: &mut Vec<ConfigError>) {
    let ok = ["http://", "https://"]
        .iter()
        .any(|scheme| url.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')));
    if !ok {
        errors.push(ConfigError::invalid(path, "an http:// or https:// URL", format!("string {url:?}")));
    }
}

/// Kafka's topic-name rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(path: &str, topic: &str, errors: &mut Vec<ConfigError>) {
    let legal = topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
        errors.push(ConfigError::invalid(
            path,
            "a Kafka topic name (1–249 characters of a-z, A-Z, 0-9, `.`, `_`, `-`)",
            format!("string {topic:?}"),
        ));
    }
}

fn resolve_secrets(config: &mut Config, env: &Env, errors: &mut Vec<ConfigError>) {
    let mut secrets: Vec<(String, &mut Secret)> = Vec::new();
    for (key, secret) in config.kafka.properties.iter_mut() {
        secrets.push((join("kafka.properties", key), secret));
    }
    if let Some(registry) = config.kafka.format.registry.as_mut() {
        if let Some(s) = registry.password.as_mut() {
            secrets.push(("kafka.format.registry.password".to_owned(), s));
        }
        if let Some(s) = registry.bearer_token.as_mut() {
            secrets.push(("kafka.format.registry.bearer_token".to_owned(), s));
        }
    }
    let ice = &mut config.iceberg;
    if let Some(s) = ice.sql.uri.as_mut() {
        secrets.push(("iceberg.sql.uri".to_owned(), s));
    }
    if let Some(s) = ice.rest.token.as_mut() {
        secrets.push(("iceberg.rest.token".to_owned(), s));
    }
    if let Some(s) = ice.rest.credential.as_mut() {
        secrets.push(("iceberg.rest.credential".to_owned(), s));
    }
    for (key, secret) in ice.rest.headers.iter_mut() {
        secrets.push((join("iceberg.rest.headers", key), secret));
    }
    for (key, secret) in ice.storage.iter_mut() {
        secrets.push((join("iceberg.storage", key), secret));
    }
    for (path, secret) in secrets {
        if let Err(reason) = secret.resolve(env) {
            errors.push(ConfigError::rule(path, reason));
        }
    }
    let credential = config.iceberg.rest.credential.as_ref().and_then(Secret::value_if_resolved);
    if credential.is_some_and(|v| !v.contains(':')) {
        errors.push(ConfigError::rule("iceberg.rest.credential", "must be `client_id:client_secret`"));
    }
}
