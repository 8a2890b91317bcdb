//! Committing a flush as one Iceberg snapshot whose summary records the Kafka progress it contains, and
//! reading that progress back.
//!
//! Summary properties of every k2i snapshot:
//! - `k2i.offsets`: JSON `{"<topic>": {"<partition>": [start, end]}}`, the offset range `[start, end)` of
//!   every partition whose records the snapshot contains (`end` is the next offset to consume);
//! - `k2i.commit-id`: a unique id (UUID v7) of the flush;
//! - `k2i.consumer-group`, `k2i.version`.
//!
//! The table is the source of truth for progress (invariant 1): on assignment a partition resumes at the
//! `end` of the newest snapshot that mentions it, found by walking the snapshot chain back from the current
//! snapshot. A commit for `[a, b)` of partition p lands only if that newest `end` is `a` (invariant 2).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};

use iceberg::spec::{DataFile, Snapshot};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use serde_json::Value;

use crate::buffer::{OffsetRange, TopicPartition};
use crate::catalog::{TableRef, retry};
use crate::error::{Error, ErrorKind, Result};

/// Summary property: offset ranges per topic and partition.
pub const PROP_OFFSETS: &str = "k2i.offsets";
/// Summary property: the flush's unique id.
pub const PROP_COMMIT_ID: &str = "k2i.commit-id";
/// Summary property: the consumer group that wrote the snapshot.
pub const PROP_GROUP: &str = "k2i.consumer-group";
/// Summary property: the k2i version that wrote the snapshot.
pub const PROP_VERSION: &str = "k2i.version";

/// Encodes offset ranges as the `k2i.offsets` property.
pub fn encode_offsets(ranges: &BTreeMap<TopicPartition, OffsetRange>) -> String {
    let mut topics: BTreeMap<&str, BTreeMap<String, [i64; 2]>> = BTreeMap::new();
    for (tp, range) in ranges {
        topics.entry(&tp.topic).or_default().insert(tp.partition.to_string(), [range.start, range.end]);
    }
    serde_json::to_string(&topics).unwrap_or_default()
}

/// Decodes the `k2i.offsets` property of a snapshot; `Err` names what is malformed.
pub fn decode_offsets(text: &str) -> std::result::Result<BTreeMap<TopicPartition, OffsetRange>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("{PROP_OFFSETS} is not JSON: {e}"))?;
    let topics = value.as_object().ok_or_else(|| format!("{PROP_OFFSETS} is not an object"))?;
    let mut out = BTreeMap::new();
    for (topic, partitions) in topics {
        let partitions = partitions.as_object().ok_or_else(|| format!("{PROP_OFFSETS}.{topic} is not an object"))?;
        for (partition, range) in partitions {
            let p: i32 =
                partition.parse().map_err(|_| format!("{PROP_OFFSETS}.{topic}: `{partition}` is not a partition"))?;
            let pair = range.as_array().filter(|a| a.len() == 2).and_then(|a| Some((a[0].as_i64()?, a[1].as_i64()?)));
            let (start, end) = pair.ok_or_else(|| format!("{PROP_OFFSETS}.{topic}.{partition} is not [start, end]"))?;
            out.insert(TopicPartition { topic: topic.clone(), partition: p }, OffsetRange { start, end });
        }
    }
    Ok(out)
}

/// The next offset the table has recorded for each wanted partition (absent: never seen), found by walking
/// the snapshot chain back from the current snapshot until every partition is found.
pub fn table_offsets(table: &Table, wanted: &[TopicPartition]) -> Result<HashMap<TopicPartition, i64>> {
    let mut found: HashMap<TopicPartition, i64> = HashMap::new();
    let metadata = table.metadata();
    let mut next = metadata.current_snapshot();
    while let Some(snapshot) = next {
        if found.len() == wanted.len() {
            break;
        }
        if let Some(text) = snapshot.summary().additional_properties.get(PROP_OFFSETS) {
            let ranges = decode_offsets(text).map_err(|reason| {
                Error::new(ErrorKind::Catalog, "a snapshot has a malformed k2i.offsets property")
                    .with("table", table.identifier())
                    .with("snapshot_id", snapshot.snapshot_id())
                    .with("reason", reason)
            })?;
            for tp in wanted {
                if !found.contains_key(tp)
                    && let Some(range) = ranges.get(tp)
                {
                    found.insert(tp.clone(), range.end);
                }
            }
        }
        next = snapshot.parent_snapshot_id().and_then(|id| metadata.snapshot_by_id(id));
    }
    Ok(found)
}

/// Finds the snapshot that carries `commit_id`, walking back from the current snapshot.
pub fn find_commit<'a>(table: &'a Table, commit_id: &str) -> Option<&'a Snapshot> {
    let metadata = table.metadata();
    let mut next = metadata.current_snapshot();
    while let Some(snapshot) = next {
        if snapshot.summary().additional_properties.get(PROP_COMMIT_ID).map(String::as_str) == Some(commit_id) {
            return Some(snapshot.as_ref());
        }
        next = snapshot.parent_snapshot_id().and_then(|id| metadata.snapshot_by_id(id));
    }
    None
}

/// One flush to commit.
pub struct CommitRequest<'a> {
    /// The flush's unique id.
    pub commit_id: &'a str,
    /// Data files written for it (may be empty when every record was skipped).
    pub files: Vec<DataFile>,
    /// The offset ranges it covers.
    pub ranges: &'a BTreeMap<TopicPartition, OffsetRange>,
    /// The consumer group.
    pub group: &'a str,
}

/// What a successful commit produced.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The snapshot id.
    pub snapshot_id: i64,
    /// The table after the commit.
    pub table: Table,
}

/// Commits a flush as one snapshot, fenced by invariant 2 on the very base the catalog's compare-and-swap
/// checks.
///
/// iceberg-rust's `Transaction::commit` reloads the table and silently re-applies the append on whatever it
/// finds (also on retries after a conflict), so a check made on a table loaded beforehand would be stale.
/// The commit therefore goes through a [`FencingCatalog`]: its `load_table` is the load that commit uses as
/// its base, and the append's requirement pins that base's snapshot id. On that base it decides:
/// 1. the commit id is already in the snapshot chain → an earlier attempt landed (its answer was lost);
///    report that snapshot, commit nothing;
/// 2. a partition's newest recorded `end` differs from this flush's `start` → fenced: another writer owns
///    the progress; fail without retrying;
/// 3. otherwise the append goes ahead; if another commit lands between this load and the catalog's
///    compare-and-swap, the swap fails as a conflict and the retry validates again on the new base.
pub async fn commit(table: &TableRef, request: CommitRequest<'_>) -> Result<Committed> {
    let props = HashMap::from([
        (PROP_OFFSETS.to_owned(), encode_offsets(request.ranges)),
        (PROP_COMMIT_ID.to_owned(), request.commit_id.to_owned()),
        (PROP_GROUP.to_owned(), request.group.to_owned()),
        (PROP_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ]);
    retry("commit", &table.ops, || async {
        let fencing = FencingCatalog {
            inner: table.catalog.clone(),
            commit_id: request.commit_id.to_owned(),
            ranges: request.ranges.clone(),
            verdict: Mutex::new(None),
            ops: table.ops.clone(),
        };
        let base = match fencing.load_table(&table.ident).await {
            Ok(base) => base,
            Err(e) => return fencing.conclude(table, e),
        };
        let tx = Transaction::new(&base);
        // File names are unique per commit id, so the duplicate check (which reads every manifest on every
        // attempt) buys nothing.
        let append = tx
            .fast_append()
            .with_check_duplicate(false)
            .add_data_files(request.files.clone())
            .set_snapshot_properties(props.clone());
        let tx = append.apply(tx).map_err(|e| table.error("cannot prepare the commit", e))?;
        match tx.commit(&fencing).await {
            Ok(updated) => {
                let snapshot = find_commit(&updated, request.commit_id).ok_or_else(|| {
                    Error::new(ErrorKind::Internal, "the committed snapshot is not in the table")
                        .with("commit_id", request.commit_id)
                })?;
                Ok(Committed { snapshot_id: snapshot.snapshot_id(), table: updated.clone() })
            }
            Err(e) => fencing.conclude(table, e),
        }
    })
    .await
}

/// What the fencing check decided on the base of a commit.
#[derive(Debug)]
enum Verdict {
    /// The commit id is already in the table.
    Landed(Committed),
    /// Invariant 2 does not hold on this base.
    Fenced(Error),
}

/// A catalog wrapper made for one commit: `load_table` validates invariant 2 (see [`commit`]); everything
/// else is passed through.
#[derive(Debug)]
pub struct FencingCatalog {
    inner: std::sync::Arc<dyn Catalog>,
    commit_id: String,
    ranges: BTreeMap<TopicPartition, OffsetRange>,
    verdict: Mutex<Option<Verdict>>,
    ops: std::sync::Arc<crate::ops::Ops>,
}

/// The message of the error the wrapper returns to stop iceberg-rust's commit.
const STOP: &str = "k2i fencing check stopped the commit";

impl FencingCatalog {
    fn decide(&self, table: &Table) -> Option<Verdict> {
        if let Some(snapshot) = find_commit(table, &self.commit_id) {
            return Some(Verdict::Landed(Committed { snapshot_id: snapshot.snapshot_id(), table: table.clone() }));
        }
        let wanted: Vec<TopicPartition> = self.ranges.keys().cloned().collect();
        let recorded = match table_offsets(table, &wanted) {
            Ok(r) => r,
            Err(e) => return Some(Verdict::Fenced(e)),
        };
        for (tp, range) in &self.ranges {
            if let Some(&next) = recorded.get(tp)
                && next != range.start
            {
                return Some(Verdict::Fenced(
                    Error::new(
                        ErrorKind::Fenced,
                        "the table's progress for a partition is not where this commit starts",
                    )
                    .with("table", table.identifier())
                    .with("partition", tp)
                    .with("table_next_offset", next)
                    .with("commit_start", range.start)
                    .with("commit_id", &self.commit_id),
                ));
            }
        }
        None
    }

    /// Turns a failed load or commit into the outcome: the verdict if the check stopped it, else the error.
    fn conclude(&self, table: &TableRef, error: iceberg::Error) -> Result<Committed> {
        let verdict = self.verdict.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match verdict {
            Some(Verdict::Landed(committed)) => {
                tracing::info!(commit_id = %self.commit_id, snapshot_id = committed.snapshot_id, "the commit had already landed");
                Ok(committed)
            }
            Some(Verdict::Fenced(e)) => Err(e),
            None => Err(table.error("cannot commit the snapshot", error)),
        }
    }
}

#[async_trait]
impl Catalog for FencingCatalog {
    async fn load_table(&self, ident: &TableIdent) -> iceberg::Result<Table> {
        let table = self.inner.load_table(ident).await?;
        match self.decide(&table) {
            None => Ok(table),
            Some(verdict) => {
                *self.verdict.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(verdict);
                // Not retryable: iceberg-rust's commit loop gives up and `conclude` reads the verdict.
                Err(iceberg::Error::new(iceberg::ErrorKind::PreconditionFailed, STOP).with_retryable(false))
            }
        }
    }

    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let result = self.inner.update_table(commit).await;
        if let Err(e) = &result
            && e.kind() == iceberg::ErrorKind::CatalogCommitConflicts
        {
            // Another writer's commit landed first; iceberg-rust retries and `load_table` checks again.
            self.ops.metrics.commit_conflicts.inc();
        }
        result
    }

    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }

    async fn create_table(&self, namespace: &NamespaceIdent, creation: TableCreation) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_the_summary_property() {
        let mut ranges = BTreeMap::new();
        ranges.insert(TopicPartition { topic: "a".into(), partition: 0 }, OffsetRange { start: 0, end: 10 });
        ranges.insert(TopicPartition { topic: "a".into(), partition: 3 }, OffsetRange { start: 5, end: 6 });
        ranges.insert(TopicPartition { topic: "b.c".into(), partition: 1 }, OffsetRange { start: 100, end: 200 });
        let text = encode_offsets(&ranges);
        assert_eq!(text, r#"{"a":{"0":[0,10],"3":[5,6]},"b.c":{"1":[100,200]}}"#);
        assert_eq!(decode_offsets(&text).unwrap(), ranges);
        assert_eq!(decode_offsets(r#"{"a":{"x":[0,1]}}"#).unwrap_err(), "k2i.offsets.a: `x` is not a partition");
        assert_eq!(decode_offsets(r#"{"a":{"0":[1]}}"#).unwrap_err(), "k2i.offsets.a.0 is not [start, end]");
    }
}
