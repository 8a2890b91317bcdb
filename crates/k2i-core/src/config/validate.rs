//! Semantic rules: what the types alone cannot say (a REST catalog needs a URI, a dead-letter policy needs a
//! topic, …), and secret resolution. Every rule adds to the error list; none stops at the first problem.

use super::error::ConfigError;
use super::model::{CatalogType, Config, ErrorPolicy, FormatType};
use super::types::Secret;
use super::{Env, check::join, name_of};

/// librdkafka properties k2i sets itself, and the k2i key that replaces each.
const RESERVED_KAFKA_PROPERTIES: [(&str, &str); 6] = [
    ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("metadata.broker.list", "kafka.bootstrap_servers"),
    ("group.id", "kafka.consumer_group"),
    ("enable.auto.commit", "nothing: k2i commits offsets itself, after each Iceberg commit"),
    ("enable.auto.offset.store", "nothing: k2i stores offsets itself"),
    ("auto.offset.reset", "kafka.auto_offset_reset"),
];

/// URL schemes of warehouse locations k2i can write to.
const WAREHOUSE_SCHEMES: [&str; 7] = ["file", "s3", "s3a", "gs", "gcs", "abfss", "wasbs"];

pub(crate) fn validate(config: &mut Config, env: &Env, errors: &mut Vec<ConfigError>) {
    kafka(config, errors);
    iceberg(config, errors);
    rest(config, errors);
    let dlq = &config.errors;
    match (dlq.policy, &dlq.dead_letter_topic) {
        (ErrorPolicy::DeadLetter, None) => errors
            .push(ConfigError::rule("errors.dead_letter_topic", "is required when errors.policy = \"dead-letter\"")),
        (ErrorPolicy::DeadLetter, Some(topic)) => {
            check_topic_name("errors.dead_letter_topic", topic, errors);
            if config.kafka.topic_list().contains(&topic.as_str()) {
                errors.push(ConfigError::rule(
                    "errors.dead_letter_topic",
                    format!("`{topic}` is also a source topic; dead letters would be ingested again"),
                ));
            }
        }
        (_, Some(_)) => errors
            .push(ConfigError::rule("errors.dead_letter_topic", "applies only when errors.policy = \"dead-letter\"")),
        (_, None) => {}
    }
    if config.buffer.flush_interval.get().is_zero() {
        errors.push(ConfigError::rule("buffer.flush_interval", "must be greater than zero"));
    }
    if config.rpc.enabled && config.rpc.socket_path.as_os_str().is_empty() {
        errors.push(ConfigError::rule("rpc.socket_path", "must not be empty when rpc.enabled = true"));
    }
    resolve_secrets(config, env, errors);
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
    for key in kafka.properties.keys() {
        if let Some((_, instead)) = RESERVED_KAFKA_PROPERTIES.iter().find(|(name, _)| name == key) {
            errors.push(ConfigError::rule(join("kafka.properties", key), format!("is managed by k2i; set {instead}")));
        }
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
    if format.message_name.is_some() && format.kind != FormatType::Protobuf {
        errors.push(ConfigError::rule("kafka.format.message_name", "applies only to type = \"protobuf\""));
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
    }
}

fn iceberg(config: &Config, errors: &mut Vec<ConfigError>) {
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
        && !WAREHOUSE_SCHEMES.contains(&scheme)
    {
        errors.push(ConfigError::invalid(
            "iceberg.warehouse_path",
            format!("a local path or a URL with scheme {}", WAREHOUSE_SCHEMES.join(", ")),
            format!("scheme `{scheme}`"),
        ));
    }
    let object_store = ice.warehouse_path.starts_with("s3://") || ice.warehouse_path.starts_with("s3a://");
    if ice.catalog_type == CatalogType::Glue && !object_store {
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
    // Settings of a catalog that is not selected are almost always a mistake (a half-edited switch).
    let selected = ice.catalog_type;
    let unused = |kind: CatalogType, set: bool, key: &str, errors: &mut Vec<ConfigError>| {
        if set && selected != kind {
            let name = name_of(kind);
            errors.push(ConfigError::rule(key, format!("applies only when iceberg.catalog_type = \"{name}\"")));
        }
    };
    unused(CatalogType::Rest, ice.rest_uri.is_some(), "iceberg.rest_uri", errors);
    unused(CatalogType::Rest, ice.rest != Default::default(), "iceberg.rest", errors);
    unused(CatalogType::Sql, ice.sql != Default::default(), "iceberg.sql", errors);
    unused(CatalogType::Glue, ice.glue != Default::default(), "iceberg.glue", errors);
    unused(CatalogType::S3tables, ice.s3tables != Default::default(), "iceberg.s3tables", errors);
    match selected {
        CatalogType::Rest => match &ice.rest_uri {
            Some(uri) => check_http_url("iceberg.rest_uri", uri, errors),
            None => {
                errors.push(ConfigError::rule("iceberg.rest_uri", "is required when iceberg.catalog_type = \"rest\""))
            }
        },
        CatalogType::S3tables => match &ice.s3tables.table_bucket_arn {
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
        CatalogType::Sql | CatalogType::Glue => {}
    }
}

fn rest(config: &Config, errors: &mut Vec<ConfigError>) {
    let rest = &config.iceberg.rest;
    if rest.token.is_some() && rest.credential.is_some() {
        errors.push(ConfigError::rule("iceberg.rest.credential", "give either `token` or `credential`, not both"));
    }
    if let Some(uri) = &rest.oauth2_server_uri {
        check_http_url("iceberg.rest.oauth2_server_uri", uri, errors);
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
