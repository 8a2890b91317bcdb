//! Features whose keys validate but which are not built yet, in one list: [`Config::unbuilt`].
//!
//! The schema describes the whole engine, and K2I configurations ask for features k2i has not built. Such a
//! configuration still validates — `k2i validate` prints each unbuilt feature as a warning — and `k2i ingest`
//! refuses to start on it (exit 2) instead of pretending: one list decides both, so they cannot disagree.

use std::fmt;

use super::check::join;
use super::model::{CatalogType, Config, EvolutionMode};

/// A configured feature that is not built yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbuilt {
    /// The key that asks for it, as written (`iceberg.partition_by`, `maintenance.compaction_enabled`).
    pub key: String,
    /// What is not built, worded to be followed by "is not built yet" (`writing partitioned tables`).
    pub what: &'static str,
    /// The issue that builds it.
    pub issue: Issue,
}

impl fmt::Display for Unbuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is not built yet; the configuration validates, `k2i ingest` refuses it until {}",
            self.key, self.what, self.issue
        )
    }
}

/// The issues that build what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issue {
    /// Issue 10: Protobuf, the Schema Registry, dead letters, reactions to breaking schema changes.
    Protobuf,
    /// Issue 11: object stores; the Postgres, Glue, S3 Tables, Nessie and Hive catalogs; REST auth; secured
    /// Kafka.
    StorageAndCatalogs,
    /// Issue 12: the read-state RPC.
    ReadState,
    /// The later tables/maintenance issue (not numbered yet): partitioned tables and table maintenance.
    TablesMaintenance,
}

impl Issue {
    /// The GitHub issue number, once the issue exists.
    pub fn number(self) -> Option<u32> {
        match self {
            Self::Protobuf => Some(10),
            Self::StorageAndCatalogs => Some(11),
            Self::ReadState => Some(12),
            Self::TablesMaintenance => None,
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            Some(n) => write!(f, "issue {n}"),
            None => f.write_str("the tables/maintenance issue"),
        }
    }
}

/// Catalogs of K2I configurations that k2i has no [`CatalogType`] for yet (`CatalogType` lists what the
/// catalog module opens or refuses; these come from K2I's `catalog_type` and only ever reach the refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnbuiltCatalog {
    /// `catalog_type = "hive"`.
    Hive,
}

impl UnbuiltCatalog {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Hive => "hive",
        }
    }
}

impl Config {
    /// Every configured feature that is not built yet, in document order. `k2i validate` prints them as
    /// warnings; `k2i ingest` must refuse to start when the list is not empty.
    pub fn unbuilt(&self) -> Vec<Unbuilt> {
        let mut out = Vec::new();
        let mut add = |key: String, what: &'static str, issue: Issue| out.push(Unbuilt { key, what, issue });

        for (key, value) in &self.kafka.properties {
            // This build's librdkafka has no libsasl2, which Kerberos needs (the other mechanisms are built in).
            let kerberos = matches!(key.as_str(), "sasl.mechanism" | "sasl.mechanisms")
                && value.value_if_resolved().is_some_and(|v| v.trim().eq_ignore_ascii_case("GSSAPI"));
            if kerberos {
                add(join("kafka.properties", key), "Kerberos (GSSAPI) authentication", Issue::StorageAndCatalogs);
            }
        }

        let evolution = &self.schema_evolution;
        if evolution.mode == EvolutionMode::Permissive {
            add("schema_evolution.mode".to_owned(), "the permissive schema-evolution mode", Issue::Protobuf);
        }

        let ice = &self.iceberg;
        let catalog = match (self.notes.catalog, ice.catalog_type) {
            (Some(UnbuiltCatalog::Hive), _) => Some("the Hive Metastore catalog"),
            (
                None,
                CatalogType::Sql | CatalogType::Rest | CatalogType::Glue | CatalogType::S3tables | CatalogType::Nessie,
            ) => None,
        };
        if let Some(what) = catalog {
            add("iceberg.catalog_type".to_owned(), what, Issue::StorageAndCatalogs);
        }
        // Nessie's commits go through k2i's own request (catalog::nessie), which sends a token and headers only.
        if ice.catalog_type == CatalogType::Nessie {
            if ice.rest.credential.is_some() {
                add(
                    "iceberg.rest.credential".to_owned(),
                    "OAuth2 client credentials with the Nessie catalog",
                    Issue::StorageAndCatalogs,
                );
            }
            if ice.rest.client_cert.is_some() {
                add(
                    "iceberg.rest.client_cert".to_owned(),
                    "client certificates (mTLS) with the Nessie catalog",
                    Issue::StorageAndCatalogs,
                );
            }
        }
        if ice.warehouse_path.starts_with("az://") {
            add(
                "iceberg.warehouse_path".to_owned(),
                "K2I's `az://` warehouse URLs (write `wasbs://<container>@<account>.blob.core.windows.net/<path>`, or \
                 `abfss://<container>@<account>.dfs.core.windows.net/<path>` for ADLS Gen2)",
                Issue::StorageAndCatalogs,
            );
        }
        if !ice.partition_by.is_empty() {
            add("iceberg.partition_by".to_owned(), "writing partitioned tables", Issue::TablesMaintenance);
        }
        if self.maintenance.enabled {
            add("maintenance.enabled".to_owned(), "scheduled maintenance", Issue::TablesMaintenance);
        }

        out.extend(self.notes.unbuilt.iter().cloned());
        // K2I keys come last from the notes; put every entry back in the order of the file's sections.
        out.sort_by_key(|u| section_rank(&u.key));
        out
    }
}

/// The position of a key's section in [`Config`], for document order.
fn section_rank(key: &str) -> usize {
    const SECTIONS: [&str; 9] = [
        "kafka",
        "schema_evolution",
        "buffer",
        "iceberg",
        "errors",
        "transaction_log",
        "monitoring",
        "rpc",
        "maintenance",
    ];
    let section = key.split('.').next().unwrap_or_default();
    SECTIONS.iter().position(|s| *s == section).unwrap_or(SECTIONS.len())
}
