//! K2I compatibility. k2i replaces K2I, and a K2I configuration file validates unchanged, with the same
//! meaning. [`K2I_KEYS`] declares every key of K2I's configuration reference once, with what k2i does with
//! it: the k2i key of the same name, the k2i key it is renamed or converted to, why it is accepted and
//! ignored, or the issue its feature waits for. The "K2I keys" table of `docs/configuration.md` is generated
//! from these declarations ([`super::reference::k2i_markdown`]), and a test checks the table is current.
//!
//! [`apply`] runs on the parsed document before environment overrides and the structural check, so the
//! rest of loading only ever sees k2i keys (and an override written with k2i's name replaces the value the
//! file wrote with K2I's):
//! - a renamed or converted key moves onto its k2i key; when both are written and disagree, that is a
//!   problem naming both (they agree: the K2I key is simply dropped);
//! - a key without meaning in k2i is type-checked and dropped, with a warning that says why;
//! - a setting of a feature k2i has not built is type-checked and dropped with a warning, and a key that
//!   switches such a feature on is recorded for [`super::Config::unbuilt`], so `k2i ingest` refuses it.
//!
//! K2I's `catalog_type = "hive"` is taken by [`take_unbuilt_catalog`] after the environment overrides (which
//! may set `catalog_type` too), for the same reason. K2I's `"nessie"` is k2i's own catalog type: Nessie's
//! Iceberg REST API, with the server in `rest_uri` and the branch in `[iceberg.nessie]` as K2I wrote them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Notes;
use super::check::{found, join, suggest};
use super::error::{ConfigError, ConfigErrorKind, ConfigWarning};
use super::unbuilt::{Issue, Unbuilt, UnbuiltCatalog};

/// One key of K2I's configuration reference.
pub(crate) struct K2iKey {
    /// The dotted path K2I wrote it at.
    pub(crate) path: &'static str,
    /// What k2i does with it.
    pub(crate) handling: Handling,
    /// Appended to the status in the docs (a value that differs, a value that is not built).
    pub(crate) note: &'static str,
}

/// What k2i does with a K2I key.
#[derive(Clone, Copy)]
pub(crate) enum Handling {
    /// It is the k2i key of the same name, with the same meaning.
    Same,
    /// The value, checked as `kind` and converted, becomes the k2i key at `to` (map keys are single
    /// segments: `["kafka", "properties", "session.timeout.ms"]`).
    Move { kind: Kind, to: &'static [&'static str], convert: Convert },
    /// Handled by dedicated code below; `to` and `status` document it.
    Special { special: Special, to: &'static str, status: &'static str },
    /// No meaning in k2i: checked as `kind`, then dropped with a warning giving the reason.
    Ignored { kind: Kind, reason: &'static str },
    /// A setting of a feature k2i has not built (whose switch `k2i ingest` refuses): checked, dropped, with a
    /// warning.
    Inert { kind: Kind, feature: &'static str, issue: Issue },
    /// Asks for a feature k2i has not built: checked and recorded for [`super::Config::unbuilt`] (a boolean
    /// only when `true`).
    Refused { kind: Kind, feature: &'static str, issue: Issue },
}

/// The keys whose handling needs more than a move.
#[derive(Clone, Copy)]
pub(crate) enum Special {
    /// `hive` has no k2i catalog type ([`take_unbuilt_catalog`]).
    CatalogType,
    /// `credential_type` decides which k2i key `credential` is.
    RestCredentialType,
    /// `type` must agree with the URL, which tells k2i the backend.
    SqlCatalogType,
    /// `[[iceberg.partition_spec]]` tables become `partition_by` transforms.
    PartitionSpec,
}

/// How a moved value changes.
#[derive(Clone, Copy)]
pub(crate) enum Convert {
    /// It does not.
    Unchanged,
    /// A whole number of days becomes a duration.
    Days,
    /// K2I's value names become k2i's; other values pass unchanged.
    Rename(&'static [(&'static str, &'static str)]),
}

/// What a K2I value must look like.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Anything: the value stays at a k2i key, whose own check applies.
    Any,
    PositiveInt,
    NonNegativeInt,
    Bool,
    Text,
    Secret,
    Table,
    OneOf(&'static [&'static str]),
}

/// Tables that only K2I has; what is left in them once their keys are handled is a typo.
const K2I_TABLES: [&str; 2] = ["kafka.security", "iceberg.sql_catalog"];

const TXLOG_REASON: &str = "k2i's transaction log checkpoints by size: when a file passes 16 MiB, and after every \
                            recovery, a new file starts with a checkpoint of the pending flushes and the older \
                            files are deleted";
const LOGGING_REASON: &str = "logging starts before the file is read; use `-v` / `-q` or `K2I_LOG=<level>`";

const fn same(path: &'static str) -> K2iKey {
    K2iKey { path, handling: Handling::Same, note: "" }
}

const fn same_but(path: &'static str, note: &'static str) -> K2iKey {
    K2iKey { path, handling: Handling::Same, note }
}

const fn to(path: &'static str, kind: Kind, to: &'static [&'static str]) -> K2iKey {
    K2iKey { path, handling: Handling::Move { kind, to, convert: Convert::Unchanged }, note: "" }
}

const fn converted(path: &'static str, kind: Kind, to: &'static [&'static str], convert: Convert) -> K2iKey {
    K2iKey { path, handling: Handling::Move { kind, to, convert }, note: "" }
}

const fn ignored(path: &'static str, kind: Kind, reason: &'static str) -> K2iKey {
    K2iKey { path, handling: Handling::Ignored { kind, reason }, note: "" }
}

const fn inert(path: &'static str, kind: Kind, feature: &'static str, issue: Issue) -> K2iKey {
    K2iKey { path, handling: Handling::Inert { kind, feature, issue }, note: "" }
}

const fn refused(path: &'static str, kind: Kind, feature: &'static str, issue: Issue) -> K2iKey {
    K2iKey { path, handling: Handling::Refused { kind, feature, issue }, note: "" }
}

const fn special(path: &'static str, special: Special, to: &'static str, status: &'static str) -> K2iKey {
    K2iKey { path, handling: Handling::Special { special, to, status }, note: "" }
}

/// Every key of K2I's configuration reference, in K2I's order.
pub(crate) const K2I_KEYS: &[K2iKey] = &[
    same("kafka.bootstrap_servers"),
    same("kafka.topic"),
    same("kafka.consumer_group"),
    same("kafka.auto_offset_reset"),
    ignored(
        "kafka.batch_size",
        Kind::PositiveInt,
        "k2i takes records from librdkafka's prefetch queue one at a time and batches them per flush \
         (`buffer.flush_batch_size`, which K2I had too)",
    ),
    ignored(
        "kafka.batch_timeout_ms",
        Kind::NonNegativeInt,
        "k2i's poll waits at most 100 ms, only to notice flush triggers and shutdown promptly; flushes are timed \
         by `buffer.flush_interval`",
    ),
    to("kafka.session_timeout_ms", Kind::PositiveInt, &["kafka", "properties", "session.timeout.ms"]),
    to("kafka.heartbeat_interval_ms", Kind::PositiveInt, &["kafka", "properties", "heartbeat.interval.ms"]),
    to("kafka.max_poll_interval_ms", Kind::PositiveInt, &["kafka", "properties", "max.poll.interval.ms"]),
    to("kafka.security.protocol", Kind::Text, &["kafka", "properties", "security.protocol"]),
    K2iKey {
        note: "`GSSAPI` (Kerberos) validates, `k2i ingest` refuses it until issue 11 (this build has no libsasl2)",
        ..to("kafka.security.sasl_mechanism", Kind::Text, &["kafka", "properties", "sasl.mechanism"])
    },
    to("kafka.security.sasl_username", Kind::Text, &["kafka", "properties", "sasl.username"]),
    to("kafka.security.sasl_password", Kind::Secret, &["kafka", "properties", "sasl.password"]),
    to("kafka.security.ssl_ca_location", Kind::Text, &["kafka", "properties", "ssl.ca.location"]),
    to("kafka.security.ssl_cert_location", Kind::Text, &["kafka", "properties", "ssl.certificate.location"]),
    to("kafka.security.ssl_certificate_location", Kind::Text, &["kafka", "properties", "ssl.certificate.location"]),
    to("kafka.security.ssl_key_location", Kind::Text, &["kafka", "properties", "ssl.key.location"]),
    to("kafka.security.ssl_key_password", Kind::Secret, &["kafka", "properties", "ssl.key.password"]),
    same_but(
        "kafka.format.type",
        "`json` is decoded into columns (K2I stored JSON values as raw bytes); `protobuf` validates, `k2i ingest` \
         refuses it until issue 10",
    ),
    to("kafka.format.schema_registry_url", Kind::Text, &["kafka", "format", "registry", "url"]),
    converted(
        "kafka.format.subject_strategy",
        Kind::OneOf(&["topic_name", "record_name", "topic_record_name"]),
        &["kafka", "format", "registry", "subject_name_strategy"],
        Convert::Rename(&[
            ("topic_name", "topic-name"),
            ("record_name", "record-name"),
            ("topic_record_name", "topic-record-name"),
        ]),
    ),
    to("kafka.format.message_type", Kind::Text, &["kafka", "format", "message_name"]),
    ignored(
        "kafka.format.cache_ttl_seconds",
        Kind::PositiveInt,
        "schemas by id never change and are cached for ever (memory and `registry.cache_dir`); the latest version \
         of a subject is never cached: k2i asks for it fresh, only to create a table or to retry a paused schema",
    ),
    ignored(
        "kafka.format.latest_on_startup",
        Kind::Bool,
        "k2i reads the subject's latest schema at start only to create a missing table; records are always decoded \
         with their writer's schema (by id)",
    ),
    K2iKey {
        note: "`permissive` validates, `k2i ingest` refuses it until issue 10",
        ..converted(
            "schema_evolution.mode",
            Kind::Any,
            &["schema_evolution", "mode"],
            Convert::Rename(&[("manual", "none")]),
        )
    },
    same("schema_evolution.on_breaking_change"),
    same_but(
        "schema_evolution.schema_update_min_interval_seconds",
        "the integer form of the duration `schema_update_min_interval`",
    ),
    special(
        "iceberg.catalog_type",
        Special::CatalogType,
        "iceberg.catalog_type",
        "same meaning for `rest`, `glue`, `sql` and `nessie` (Nessie's Iceberg REST API, see docs/catalogs.md); \
         `hive` validates, `k2i ingest` refuses it until issue 11",
    ),
    same_but(
        "iceberg.warehouse_path",
        "same meaning; object stores by scheme (`s3://`, `gs://`, `abfss://`, `wasbs://`; see docs/storage.md)",
    ),
    same("iceberg.database_name"),
    same("iceberg.table_name"),
    same("iceberg.target_file_size_mb"),
    same("iceberg.compression"),
    same_but(
        "iceberg.rest_uri",
        "with `catalog_type = \"nessie\"` the Nessie server as in K2I: `…/api/v1` and `…/api/v2` \
         become its Iceberg REST API `…/iceberg/<default_branch>`",
    ),
    inert("iceberg.hive_metastore_uri", Kind::Text, "the Hive Metastore catalog", Issue::StorageAndCatalogs),
    to("iceberg.aws_region", Kind::Text, &["iceberg", "storage", "s3.region"]),
    to("iceberg.aws_access_key_id", Kind::Secret, &["iceberg", "storage", "s3.access-key-id"]),
    to("iceberg.aws_secret_access_key", Kind::Secret, &["iceberg", "storage", "s3.secret-access-key"]),
    to("iceberg.s3_endpoint", Kind::Text, &["iceberg", "storage", "s3.endpoint"]),
    to("iceberg.gcs_project_id", Kind::Text, &["iceberg", "storage", "gcs.project-id"]),
    refused(
        "iceberg.gcs_credentials_path",
        Kind::Text,
        "reading Google Cloud Storage credentials from a file",
        Issue::StorageAndCatalogs,
    ),
    refused(
        "iceberg.gcs_service_account_key",
        Kind::Secret,
        "reading a Google Cloud Storage service-account key",
        Issue::StorageAndCatalogs,
    ),
    to("iceberg.azure_storage_account", Kind::Text, &["iceberg", "storage", "adls.account-name"]),
    to("iceberg.azure_access_key", Kind::Secret, &["iceberg", "storage", "adls.account-key"]),
    refused(
        "iceberg.azure_container",
        Kind::Text,
        "naming the Azure container apart from warehouse_path",
        Issue::StorageAndCatalogs,
    ),
    special(
        "iceberg.partition_spec",
        Special::PartitionSpec,
        "iceberg.partition_by",
        "mapped: each `[[iceberg.partition_spec]]` table becomes a transform (`source_field = \"ts\"`, `transform = \
         \"day\"` → `\"day(ts)\"`; `bucket[16]` → `\"bucket(16, col)\"`); partitioned tables validate, `k2i \
         ingest` refuses them until the tables/maintenance issue",
    ),
    special(
        "iceberg.rest.credential_type",
        Special::RestCredentialType,
        "iceberg.rest.token",
        "mapped: with `bearer`, `credential` becomes `iceberg.rest.token`; with `oauth2` it stays \
         `iceberg.rest.credential` (`client_id:client_secret`); with `none` it is ignored, with a warning",
    ),
    same("iceberg.rest.credential"),
    same("iceberg.rest.oauth2_server_uri"),
    to("iceberg.rest.oauth2_scope", Kind::Text, &["iceberg", "rest", "scope"]),
    ignored(
        "iceberg.rest.request_timeout_seconds",
        Kind::PositiveInt,
        "k2i gives every catalog call a fixed 30 s deadline (K2I's default) and retries it with backoff",
    ),
    to("iceberg.rest.custom_headers", Kind::Table, &["iceberg", "rest", "headers"]),
    inert("iceberg.glue.role_arn", Kind::Text, "the Glue catalog", Issue::StorageAndCatalogs),
    inert("iceberg.glue.external_id", Kind::Text, "the Glue catalog", Issue::StorageAndCatalogs),
    same("iceberg.glue.catalog_id"),
    same_but("iceberg.nessie.default_branch", "the branch k2i reads and commits the table on (default `main`)"),
    ignored(
        "iceberg.nessie.api_version",
        Kind::OneOf(&["v1", "v2"]),
        "k2i speaks Nessie's Iceberg REST API (`<server>/iceberg/<branch>`), the same for either version of \
         Nessie's own API",
    ),
    special(
        "iceberg.sql_catalog.type",
        Special::SqlCatalogType,
        "—",
        "checked against `url` (`sqlite` needs a `sqlite:` URL, `postgres` a `postgres://` one), then dropped: k2i \
         takes the backend from the URL",
    ),
    to("iceberg.sql_catalog.url", Kind::Secret, &["iceberg", "sql", "uri"]),
    to("iceberg.sql_catalog.catalog_name", Kind::Text, &["iceberg", "sql", "catalog_name"]),
    ignored(
        "buffer.ttl_seconds",
        Kind::PositiveInt,
        "rows leave k2i's buffer when they are flushed, at the latest `buffer.flush_interval` after they arrive; \
         nothing else expires them",
    ),
    same("buffer.max_size_mb"),
    same_but("buffer.flush_interval_seconds", "the integer form of the duration `flush_interval`"),
    same("buffer.flush_batch_size"),
    ignored(
        "buffer.memory_alignment_bytes",
        Kind::PositiveInt,
        "Arrow aligns its buffers (64 bytes) itself; there is nothing to choose",
    ),
    same("transaction_log.log_dir"),
    ignored("transaction_log.checkpoint_interval_entries", Kind::PositiveInt, TXLOG_REASON),
    ignored("transaction_log.checkpoint_interval_seconds", Kind::PositiveInt, TXLOG_REASON),
    ignored("transaction_log.max_log_files", Kind::PositiveInt, TXLOG_REASON),
    refused("maintenance.compaction_enabled", Kind::Bool, "scheduled compaction", Issue::TablesMaintenance),
    same_but("maintenance.compaction_interval_seconds", "the integer form of the duration `compaction_interval`"),
    inert("maintenance.compaction_threshold_mb", Kind::PositiveInt, "compaction", Issue::TablesMaintenance),
    inert("maintenance.compaction_target_mb", Kind::PositiveInt, "compaction", Issue::TablesMaintenance),
    refused(
        "maintenance.snapshot_expiration_enabled",
        Kind::Bool,
        "scheduled snapshot expiry",
        Issue::TablesMaintenance,
    ),
    converted(
        "maintenance.snapshot_retention_days",
        Kind::NonNegativeInt,
        &["maintenance", "snapshot_max_age"],
        Convert::Days,
    ),
    refused(
        "maintenance.orphan_cleanup_enabled",
        Kind::Bool,
        "scheduled orphan-file removal",
        Issue::TablesMaintenance,
    ),
    converted(
        "maintenance.orphan_retention_days",
        Kind::NonNegativeInt,
        &["maintenance", "orphan_min_age"],
        Convert::Days,
    ),
    refused("maintenance.statistics_enabled", Kind::Bool, "scheduled table statistics", Issue::TablesMaintenance),
    inert(
        "maintenance.statistics_interval_seconds",
        Kind::PositiveInt,
        "the statistics update",
        Issue::TablesMaintenance,
    ),
    same("monitoring.metrics_port"),
    same("monitoring.health_port"),
    ignored("monitoring.log_level", Kind::OneOf(&["trace", "debug", "info", "warn", "error"]), LOGGING_REASON),
    ignored(
        "monitoring.log_format",
        Kind::OneOf(&["json", "text"]),
        "logging starts before the file is read; use `--log-format json` (k2i's default is `text`)",
    ),
    same("rpc.enabled"),
    same("rpc.socket_path"),
    same("rpc.read_timeout_ms"),
    same("rpc.max_concurrent_scans"),
    same("rpc.scan_ttl_seconds"),
    same("rpc.max_frame_bytes"),
];

impl K2iKey {
    /// The k2i key it becomes, for the docs (`—` when there is none).
    pub(crate) fn target(&self) -> String {
        match self.handling {
            Handling::Same => self.path.to_owned(),
            Handling::Move { to, .. } => path_of(to),
            Handling::Special { to, .. } => to.to_owned(),
            Handling::Ignored { .. } | Handling::Inert { .. } | Handling::Refused { .. } => "—".to_owned(),
        }
    }

    /// What k2i does with it, for the docs.
    pub(crate) fn status(&self) -> String {
        let status = match self.handling {
            Handling::Same => "same meaning".to_owned(),
            Handling::Move { to, convert, .. } => match convert {
                Convert::Unchanged if to.starts_with(&["kafka", "properties"]) => {
                    "mapped to the librdkafka property".to_owned()
                }
                Convert::Unchanged if to.starts_with(&["iceberg", "storage"]) => {
                    "mapped to the Iceberg FileIO property".to_owned()
                }
                Convert::Unchanged => "same meaning".to_owned(),
                Convert::Days => "mapped: `N` days become the duration `\"Nd\"`".to_owned(),
                Convert::Rename(pairs) => {
                    let renamed: Vec<String> = pairs.iter().map(|(k2i, ours)| format!("`{k2i}` → `{ours}`")).collect();
                    format!("same meaning, values renamed: {}", renamed.join(", "))
                }
            },
            Handling::Special { status, .. } => status.to_owned(),
            Handling::Ignored { reason, .. } => format!("accepted, ignored because {reason}"),
            Handling::Inert { feature, issue, .. } => {
                format!("validates; no effect until {feature} is built ({issue}), which `k2i ingest` refuses")
            }
            Handling::Refused { kind, issue, .. } => {
                let when = if matches!(kind, Kind::Bool) { " when `true`" } else { "" };
                format!("validates; `k2i ingest` refuses it{when} until {issue}")
            }
        };
        if self.note.is_empty() { status } else { format!("{status}; {}", self.note) }
    }
}

impl Kind {
    /// Checks a value; `Err` carries what was expected.
    fn check(self, value: &Value) -> Result<(), String> {
        let (ok, expected) = match self {
            Self::Any => (true, String::new()),
            Self::PositiveInt => (value.as_i64().is_some_and(|n| n > 0), "a positive integer".to_owned()),
            Self::NonNegativeInt => (value.as_i64().is_some_and(|n| n >= 0), "a non-negative integer".to_owned()),
            Self::Bool => (value.is_boolean(), "a boolean".to_owned()),
            Self::Text => (value.is_string(), "a string".to_owned()),
            Self::Table => (value.is_object(), "a table".to_owned()),
            Self::Secret => {
                (super::check::is_secret(value), "a string, { env = \"VAR\" } or { file = \"path\" }".to_owned())
            }
            Self::OneOf(values) => {
                let ok = value.as_str().is_some_and(|v| values.contains(&v));
                let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
                let mut expected = format!("one of {}", list.join(", "));
                if let Some(s) = value.as_str().and_then(|v| suggest(v, values.iter().copied())) {
                    expected = format!("{expected} (did you mean \"{s}\"?)");
                }
                (ok, expected)
            }
        };
        if ok { Ok(()) } else { Err(expected) }
    }
}

impl Convert {
    fn apply(self, value: Value) -> Value {
        match (self, value) {
            (Self::Days, Value::Number(n)) => Value::String(format!("{n}d")),
            (Self::Rename(pairs), Value::String(s)) => {
                let renamed = pairs.iter().find(|(k2i, _)| *k2i == s).map_or(s, |(_, ours)| (*ours).to_owned());
                Value::String(renamed)
            }
            (_, value) => value,
        }
    }
}

/// Moves every K2I key of `doc` onto k2i's keys, recording warnings and unbuilt features in `notes`.
pub(crate) fn apply(doc: &mut Value, notes: &mut Notes, errors: &mut Vec<ConfigError>) {
    let mut moves = Moves::default();
    for key in K2I_KEYS {
        match key.handling {
            Handling::Same => {}
            Handling::Special { special, .. } => special.apply(doc, notes, &mut moves, errors),
            Handling::Move { kind, to, convert } => {
                if let Some(value) = take_checked(doc, key.path, kind, errors) {
                    moves.put(doc, key.path, to, convert.apply(value), errors);
                }
            }
            Handling::Ignored { kind, reason } => {
                if take_checked(doc, key.path, kind, errors).is_some() {
                    notes.warnings.push(ConfigWarning::new(key.path, format!("accepted and ignored: {reason}")));
                }
            }
            Handling::Inert { kind, feature, issue } => {
                if take_checked(doc, key.path, kind, errors).is_some() {
                    notes.warnings.push(ConfigWarning::new(
                        key.path,
                        format!("accepted; has no effect until {feature} is built ({issue})"),
                    ));
                }
            }
            Handling::Refused { kind, feature, issue } => {
                let value = take_checked(doc, key.path, kind, errors);
                if value.is_some_and(|v| v != Value::Bool(false)) {
                    notes.unbuilt.push(Unbuilt { key: key.path.to_owned(), what: feature, issue });
                }
            }
        }
    }
    for table in K2I_TABLES {
        report_leftovers(doc, table, errors);
    }
}

/// Takes K2I's `catalog_type = "hive"` out of the document: k2i has no catalog type for it, and
/// [`super::Config::unbuilt`] refuses it.
pub(crate) fn take_unbuilt_catalog(doc: &mut Value) -> Option<UnbuiltCatalog> {
    let catalog = match get(doc, "iceberg.catalog_type")?.as_str()? {
        "hive" => UnbuiltCatalog::Hive,
        _ => return None,
    };
    take(doc, "iceberg.catalog_type");
    Some(catalog)
}

impl Special {
    fn apply(self, doc: &mut Value, notes: &mut Notes, moves: &mut Moves, errors: &mut Vec<ConfigError>) {
        match self {
            // After the environment overrides: see take_unbuilt_catalog.
            Self::CatalogType => {}
            Self::RestCredentialType => {
                const PATH: &str = "iceberg.rest.credential_type";
                let Some(kind) = take_checked(doc, PATH, Kind::OneOf(&["none", "bearer", "oauth2"]), errors) else {
                    return;
                };
                const CREDENTIAL: &str = "iceberg.rest.credential";
                // With oauth2, `credential` is k2i's own `iceberg.rest.credential` and stays where it is.
                let oauth2 = kind.as_str() == Some("oauth2");
                let credential = if oauth2 { None } else { take(doc, CREDENTIAL) };
                match (kind.as_str(), credential) {
                    (Some("bearer"), Some(token)) => {
                        moves.put(doc, CREDENTIAL, &["iceberg", "rest", "token"], token, errors);
                    }
                    (_, Some(_)) => notes.warnings.push(ConfigWarning::new(
                        CREDENTIAL,
                        "accepted and ignored: `credential_type = \"none\"` sends no credential",
                    )),
                    (_, None) => {}
                }
            }
            Self::SqlCatalogType => {
                const PATH: &str = "iceberg.sql_catalog.type";
                let Some(kind) = take_checked(doc, PATH, Kind::OneOf(&["sqlite", "postgres"]), errors) else {
                    return;
                };
                let url = get(doc, "iceberg.sql_catalog.url").or_else(|| get(doc, "iceberg.sql.uri"));
                // A URL from { env } or { file } is not known yet; the catalog checks it when it connects.
                let Some(url) = url.and_then(Value::as_str) else { return };
                let (agrees, form) = match kind.as_str() {
                    Some("sqlite") => (url.starts_with("sqlite:"), "sqlite:"),
                    _ => (url.starts_with("postgres://") || url.starts_with("postgresql://"), "postgres://"),
                };
                if !agrees {
                    // The URL may carry a password: name the form, not the value.
                    errors.push(ConfigError::rule(
                        PATH,
                        format!(
                            "is {kind}, but the catalog URL (iceberg.sql_catalog.url) does not start with `{form}`"
                        ),
                    ));
                }
            }
            Self::PartitionSpec => {
                const PATH: &str = "iceberg.partition_spec";
                let Some(value) = take(doc, PATH) else { return };
                let Value::Array(items) = &value else {
                    errors.push(ConfigError::invalid(
                        PATH,
                        "an array of tables with `source_field` and `transform`",
                        found(&value),
                    ));
                    return;
                };
                let before = errors.len();
                let fields: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| partition_field(item, &format!("{PATH}[{i}]"), errors))
                    .map(Value::String)
                    .collect();
                if errors.len() == before {
                    moves.put(doc, PATH, &["iceberg", "partition_by"], Value::Array(fields), errors);
                }
            }
        }
    }
}

/// One K2I partition field (`{ source_field = "ts", transform = "day" }`) as a k2i transform (`day(ts)`).
/// K2I's docs write `bucket[16]` and `truncate[4]`; its parser read `{ bucket = { num_buckets = 16 } }` and
/// `{ truncate = { width = 4 } }`. Both are accepted.
fn partition_field(item: &Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    let Value::Object(map) = item else {
        errors.push(ConfigError::invalid(path, "a table with `source_field` and `transform`", found(item)));
        return None;
    };
    for key in map.keys().filter(|k| !matches!(k.as_str(), "source_field" | "transform")) {
        errors.push(ConfigError::new(
            join(path, key),
            ConfigErrorKind::UnknownKey { suggestion: suggest(key, ["source_field", "transform"]) },
        ));
    }
    let column = match map.get("source_field") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim()),
        Some(other) => {
            errors.push(ConfigError::invalid(join(path, "source_field"), "a column name", found(other)));
            None
        }
        None => {
            let expected = "a column name".to_owned();
            errors.push(ConfigError::new(join(path, "source_field"), ConfigErrorKind::Missing { expected }));
            None
        }
    };
    const EXPECTED: &str = "identity, year, month, day, hour, bucket[N] or truncate[N]";
    let transform_path = join(path, "transform");
    let transform = match map.get("transform") {
        Some(Value::String(name)) => transform_of(name),
        Some(Value::Object(table)) if table.len() == 1 => {
            let (name, args) = table.iter().next().expect("one entry");
            let arg = match name.as_str() {
                "bucket" => "num_buckets",
                "truncate" => "width",
                _ => "",
            };
            let width = args.get(arg).and_then(Value::as_u64).filter(|n| (1..=u64::from(u32::MAX)).contains(n));
            width.map(|n| (name.as_str(), Some(n)))
        }
        Some(_) => None,
        None => {
            let expected = format!("one of {EXPECTED}");
            errors.push(ConfigError::new(&transform_path, ConfigErrorKind::Missing { expected }));
            return None;
        }
    };
    let Some((name, width)) = transform else {
        let value = map.get("transform").unwrap_or(&Value::Null);
        errors.push(ConfigError::invalid(transform_path, format!("a transform: {EXPECTED}"), found(value)));
        return None;
    };
    let column = column?;
    Some(match width {
        Some(n) => format!("{name}({n}, {column})"),
        None => format!("{name}({column})"),
    })
}

/// `day` → (`day`, none); `bucket[16]` → (`bucket`, 16).
fn transform_of(text: &str) -> Option<(&str, Option<u64>)> {
    let text = text.trim();
    if let Some(plain) = ["identity", "year", "month", "day", "hour"].into_iter().find(|t| *t == text) {
        return Some((plain, None));
    }
    let (name, rest) = text.split_once('[')?;
    let n = rest.strip_suffix(']')?.trim().parse::<u32>().ok().filter(|n| *n > 0)?;
    let name = ["bucket", "truncate"].into_iter().find(|t| *t == name.trim())?;
    Some((name, Some(u64::from(n))))
}

/// Which K2I key each moved-to k2i key came from, to name both in a conflict.
#[derive(Default)]
struct Moves {
    from: BTreeMap<String, &'static str>,
}

impl Moves {
    /// Sets the k2i key `to` to `value`, which came from the K2I key `source`. A value already there that
    /// differs is a conflict, reported at `source`.
    fn put(
        &mut self,
        doc: &mut Value,
        source: &'static str,
        to: &'static [&'static str],
        value: Value,
        errors: &mut Vec<ConfigError>,
    ) {
        let target = path_of(to);
        let Some((leaf, parents)) = to.split_last() else { return };
        // A parent that is not a table is reported by the structural check; the value has nowhere to go.
        let Some(parent) = table_at(doc, parents) else { return };
        match parent.get(*leaf) {
            Some(existing) if same_value(existing, &value) => {}
            Some(_) => {
                let message = match self.from.get(&target) {
                    Some(other) => format!("conflicts with `{other}`, which also sets `{target}`; give it once"),
                    None => format!("conflicts with `{target}`; give it once"),
                };
                errors.push(ConfigError::rule(source, message));
            }
            None => {
                parent.insert((*leaf).to_owned(), value);
                self.from.insert(target, source);
            }
        }
    }
}

/// Whether two values say the same; scalars compare as text, as librdkafka and FileIO read them
/// (`30000` and `"30000"` agree).
fn same_value(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match (text(a), text(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A dotted K2I path's value.
fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |node, part| node.get(part))
}

/// Removes and returns a dotted K2I path's value.
fn take(doc: &mut Value, path: &str) -> Option<Value> {
    let (parents, leaf) = path.rsplit_once('.')?;
    let mut node = doc;
    for part in parents.split('.') {
        node = node.get_mut(part)?;
    }
    node.as_object_mut()?.remove(leaf)
}

/// Removes a K2I key and checks its value; a bad value is reported and dropped.
fn take_checked(doc: &mut Value, path: &str, kind: Kind, errors: &mut Vec<ConfigError>) -> Option<Value> {
    let value = take(doc, path)?;
    match kind.check(&value) {
        Ok(()) => Some(value),
        Err(expected) => {
            errors.push(ConfigError::invalid(path, expected, found(&value)));
            None
        }
    }
}

/// The table at `parts`, created where missing; `None` where something else is in the way.
fn table_at<'a>(doc: &'a mut Value, parts: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut node = doc.as_object_mut()?;
    for part in parts {
        node = node.entry((*part).to_owned()).or_insert_with(|| Value::Object(Map::new())).as_object_mut()?;
    }
    Some(node)
}

/// Reports what is left in a K2I-only table once its keys are handled (typos), and removes the table.
fn report_leftovers(doc: &mut Value, table: &str, errors: &mut Vec<ConfigError>) {
    let Some(value) = take(doc, table) else { return };
    let Value::Object(map) = value else {
        errors.push(ConfigError::invalid(table, "a table", found(&value)));
        return;
    };
    let known: Vec<&str> =
        K2I_KEYS.iter().filter_map(|k| k.path.strip_prefix(table).and_then(|rest| rest.strip_prefix('.'))).collect();
    for key in map.keys() {
        errors.push(ConfigError::new(
            join(table, key),
            ConfigErrorKind::UnknownKey { suggestion: suggest(key, known.iter().copied()) },
        ));
    }
}

/// A k2i key path written with the quoting of error paths (`kafka.properties."session.timeout.ms"`).
fn path_of(parts: &[&str]) -> String {
    parts.iter().fold(String::new(), |path, part| join(&path, part))
}
