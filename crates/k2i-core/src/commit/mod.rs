//! Committing a flush as one Iceberg snapshot whose summary records the Kafka progress it contains.
//!
//! What the summary and the table property hold, and how progress is read back, is [`crate::progress`]'s
//! business. This module makes the commit itself safe (invariant 2) on the very base snapshot the catalog's
//! compare-and-swap checks:
//!
//! iceberg-rust's `Transaction::commit` reloads the table and silently re-applies the actions on whatever it
//! finds (also on retries after a conflict), so a check made on a table loaded beforehand would be stale, and
//! so would the merged progress the commit writes. Each attempt therefore loads its base once, decides on it,
//! records the base in the transaction log, builds the snapshot (and the `k2i.progress` table property) on
//! it, and commits through a [`FencingCatalog`] whose `load_table` hands iceberg exactly that base; asked
//! again (iceberg's own retry after a conflict) it refuses, and the next attempt starts over on a fresh base.
//! On the base it decides:
//! 1. the table is not the one pinned at start (dropped and recreated), or its partition spec is no longer
//!    unpartitioned → stop: the operator must look (not retried);
//! 2. the commit id is already in the chain → an earlier attempt landed (its answer was lost); report it;
//! 3. a partition's recorded next offset differs from this flush's start → fenced: another writer owns the
//!    progress; fail without retrying;
//! 4. otherwise append; a concurrent commit between the load and the compare-and-swap fails the swap as a
//!    conflict and the next attempt validates again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};

use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use crate::catalog::{TableRef, retry};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{
    self, CommitId, Landed, OffsetRange, PROP_COMMIT_ID, PROP_GROUP, PROP_LSN, PROP_OFFSETS, PROP_PROGRESS,
    PROP_VERSION, TopicPartition,
};

/// One flush to commit.
pub struct CommitRequest<'a> {
    /// The flush's unique id.
    pub commit_id: &'a CommitId,
    /// Data files written for it (may be empty when every record was skipped).
    pub files: Vec<DataFile>,
    /// The offset ranges it covers.
    pub ranges: &'a BTreeMap<TopicPartition, OffsetRange>,
    /// Offsets skipped because Kafka no longer had them (retention passed the table's progress), recorded
    /// in the summary as `k2i.gaps`.
    pub gaps: &'a BTreeMap<TopicPartition, OffsetRange>,
    /// The consumer group.
    pub group: &'a str,
    /// The table's identity, pinned when the ingest started.
    pub table_uuid: uuid::Uuid,
    /// The first and last (provisional) LSN of its rows; `None` when it has none.
    pub lsns: Option<(u64, u64)>,
}

/// Summary property: offset ranges skipped because Kafka had deleted them (`kafka.on_data_loss = "skip"`).
pub const PROP_GAPS: &str = "k2i.gaps";

/// What a successful commit produced.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The snapshot id; `-1` when the commit was found landed but its snapshot has since been expired.
    pub snapshot_id: i64,
    /// The table after the commit.
    pub table: Table,
    /// The table's LSN with the commit (its `k2i.lsn`).
    pub lsn: u64,
    /// The progress the table records with the commit (every partition).
    pub progress: progress::Progress,
}

/// Called with each attempt's base snapshot before the attempt is sent (to record it durably).
pub type OnAttempt<'a> = dyn Fn(Option<i64>) -> Result<()> + Send + Sync + 'a;

/// Commits a flush as one snapshot, fenced by invariant 2 on the very base the catalog's compare-and-swap
/// checks (see the module docs). `bases` holds the base of every earlier attempt of this flush and gains one
/// per attempt; `on_attempt` sees each before its request is sent.
pub async fn commit(
    table: &TableRef,
    request: CommitRequest<'_>,
    bases: &Mutex<Vec<Option<i64>>>,
    on_attempt: &OnAttempt<'_>,
) -> Result<Committed> {
    retry("commit", &table.ops, || async {
        let base = table.catalog.load_table(&table.ident).await.map_err(|e| table.error("cannot load table", e))?;
        let known: Vec<Option<i64>> = lock(bases).clone();
        let progress = match decide(&base, &request, &known)? {
            Decision::Landed(committed) => return Ok(*committed),
            Decision::Append(progress) => progress,
        };
        let lsn = lsn_on(base.metadata(), request.lsns);
        let base_id = base.metadata().current_snapshot_id();
        on_attempt(base_id)?;
        lock(bases).push(base_id);
        let mut props = HashMap::from([
            (PROP_OFFSETS.to_owned(), progress::encode_ranges(request.ranges)),
            (PROP_PROGRESS.to_owned(), progress::encode_progress(&progress)),
            (PROP_COMMIT_ID.to_owned(), request.commit_id.to_string()),
            (PROP_GROUP.to_owned(), request.group.to_owned()),
            (PROP_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            (PROP_LSN.to_owned(), lsn.to_string()),
        ]);
        if !request.gaps.is_empty() {
            props.insert(PROP_GAPS.to_owned(), progress::encode_ranges(request.gaps));
        }
        let tx = Transaction::new(&base);
        // File names are unique per commit id, so the duplicate check (which reads every manifest on every
        // attempt) buys nothing.
        let append = tx
            .fast_append()
            .with_check_duplicate(false)
            .add_data_files(request.files.clone())
            .set_snapshot_properties(props);
        let tx = append.apply(tx).map_err(|e| table.error("cannot prepare the commit", e))?;
        // The same commit keeps the whole progress as a table property: it survives snapshot expiry.
        let property = progress::encode_table_property(request.commit_id, &progress, lsn);
        let tx = tx
            .update_table_properties()
            .set(PROP_PROGRESS.to_owned(), property)
            .apply(tx)
            .map_err(|e| table.error("cannot prepare the commit", e))?;
        let fencing = FencingCatalog {
            inner: table.catalog.clone(),
            base: Mutex::new(Some(base.clone())),
            moved: Mutex::new(false),
            ops: table.ops.clone(),
        };
        match tx.commit(&fencing).await {
            Ok(updated) => {
                let snapshot_id = match progress::find_commit(updated.metadata(), request.commit_id, &[base_id]) {
                    Landed::Snapshot(id) => id,
                    Landed::Expired | Landed::No => {
                        return Err(Error::new(ErrorKind::Internal, "the committed snapshot is not in the table")
                            .with("commit_id", request.commit_id));
                    }
                };
                Ok(Committed { snapshot_id, table: updated, lsn, progress })
            }
            Err(_) if *lock(&fencing.moved) => {
                // A concurrent commit landed first (iceberg's retry asked for a new base): start over.
                Err(Error::new(ErrorKind::Conflict, "another commit landed first").with("table", table.table_name()))
            }
            Err(e) => Err(table.error("cannot commit the snapshot", e)),
        }
    })
    .await
}

/// The LSN a commit of rows with provisional LSNs `lsns` gets on `base`: its rows move up above the base's
/// LSN if they are not already, so the table's LSN only grows (docs/rpc.md).
fn lsn_on(base: &iceberg::spec::TableMetadata, lsns: Option<(u64, u64)>) -> u64 {
    let base_lsn = progress::table_lsn(base);
    match lsns {
        Some((first, last)) => last + (base_lsn + 1).saturating_sub(first),
        None => base_lsn,
    }
}

/// What the check on a commit's base decided.
#[derive(Debug)]
enum Decision {
    /// The commit id is already in the table.
    Landed(Box<Committed>),
    /// Append, writing this merged progress.
    Append(progress::Progress),
}

/// A commit found landed (its answer was lost) on `base`: the table is `base`, with whatever other writers
/// committed since, so its LSN and progress are the base's.
fn found_landed(base: &Table, snapshot_id: i64) -> Committed {
    let metadata = base.metadata();
    // The commit is in: a progress that cannot be read now must not turn it into an error.
    let progress = progress::recorded(metadata).map(|r| r.progress).unwrap_or_default();
    Committed { snapshot_id, table: base.clone(), lsn: progress::table_lsn(metadata), progress }
}

fn decide(base: &Table, request: &CommitRequest<'_>, bases: &[Option<i64>]) -> Result<Decision> {
    let metadata = base.metadata();
    if metadata.uuid() != request.table_uuid {
        return Err(Error::new(
            ErrorKind::Config,
            "the table was dropped and recreated while k2i was writing it; restart to write the new table",
        )
        .with("table", base.identifier())
        .with("pinned_uuid", request.table_uuid)
        .with("table_uuid", metadata.uuid()));
    }
    check_spec(base)?;
    // Before its first attempt is sent a commit cannot be in the table: no walk at all (with no base known,
    // `find_commit` would walk the whole chain — the cost that grows with table history).
    let landed = if bases.is_empty() { Landed::No } else { progress::find_commit(metadata, request.commit_id, bases) };
    match landed {
        Landed::Snapshot(snapshot_id) => {
            tracing::info!(commit_id = %request.commit_id, snapshot_id, "the commit had already landed");
            return Ok(Decision::Landed(Box::new(found_landed(base, snapshot_id))));
        }
        Landed::Expired => {
            tracing::info!(commit_id = %request.commit_id, "the commit had already landed (its snapshot is expired)");
            return Ok(Decision::Landed(Box::new(found_landed(base, -1))));
        }
        Landed::No => {}
    }
    let mut recorded = progress::recorded(metadata)?.progress;
    for (tp, range) in request.ranges {
        if let Some(&next) = recorded.get(tp)
            && next != range.start
        {
            return Err(Error::new(
                ErrorKind::Fenced,
                "the table's progress for a partition is not where this commit starts",
            )
            .with("table", base.identifier())
            .with("partition", tp)
            .with("table_next_offset", next)
            .with("commit_start", range.start)
            .with("commit_id", request.commit_id));
        }
    }
    for (tp, range) in request.ranges {
        recorded.insert(tp.clone(), range.end);
    }
    Ok(Decision::Append(recorded))
}

/// Refuses a table k2i cannot write correctly: only unpartitioned specs are written until partitioned
/// writes are built (iceberg would reject the files with "Data file partition spec id does not match").
pub fn check_spec(table: &Table) -> Result<()> {
    let spec = table.metadata().default_partition_spec();
    if spec.is_unpartitioned() {
        return Ok(());
    }
    let fields: Vec<String> =
        spec.fields().iter().map(|f| format!("{}={}({})", f.name, f.transform, f.source_id)).collect();
    Err(Error::new(
        ErrorKind::Config,
        "the table's partition spec is not unpartitioned; k2i writes only unpartitioned tables yet",
    )
    .with("table", table.identifier())
    .with("spec_id", spec.spec_id())
    .with("fields", fields.join(",")))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data behind these locks: a panic elsewhere cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A catalog wrapper made for one commit attempt: the first `load_table` returns the attempt's base (the
/// table the snapshot and the merged progress were built on); any later one means iceberg wants to re-apply
/// the actions on a newer table, which would make the check and the progress stale, so it is refused.
/// Everything else is passed through.
#[derive(Debug)]
pub struct FencingCatalog {
    inner: std::sync::Arc<dyn Catalog>,
    base: Mutex<Option<Table>>,
    moved: Mutex<bool>,
    ops: std::sync::Arc<crate::ops::Ops>,
}

impl FencingCatalog {
    /// A wrapper whose first `load_table` returns `base`.
    pub fn new(inner: std::sync::Arc<dyn Catalog>, base: Table, ops: std::sync::Arc<crate::ops::Ops>) -> Self {
        Self { inner, base: Mutex::new(Some(base)), moved: Mutex::new(false), ops }
    }

    /// Whether iceberg-rust's commit stopped because the wrapper refused a second load.
    pub fn is_stop(e: &iceberg::Error) -> bool {
        e.message().contains(STOP)
    }
}

/// The message of the error the wrapper returns to stop iceberg-rust's commit.
const STOP: &str = "k2i fencing: the commit's base moved";

#[async_trait]
impl Catalog for FencingCatalog {
    async fn load_table(&self, _ident: &TableIdent) -> iceberg::Result<Table> {
        match lock(&self.base).take() {
            Some(base) => Ok(base),
            None => {
                *lock(&self.moved) = true;
                // Not retryable: iceberg-rust's commit loop gives up and `commit` starts a new attempt.
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
    //! The fencing decision on iceberg's in-memory catalog (a real `Catalog`, local files in a temp dir).
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use iceberg::io::LocalFsStorageFactory;
    use iceberg::memory::{MEMORY_CATALOG_WAREHOUSE, MemoryCatalogBuilder};
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
    use iceberg::{CatalogBuilder, NamespaceIdent, TableCreation};

    use super::*;
    use crate::ops::Ops;
    use crate::progress::{Source, recorded};

    struct Fixture {
        _dir: tempfile::TempDir,
        table: TableRef,
        uuid: uuid::Uuid,
    }

    async fn fixture(catalog: Option<Arc<dyn Catalog>>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let memory: Arc<dyn Catalog> = Arc::new(
            MemoryCatalogBuilder::default()
                .with_storage_factory(Arc::new(LocalFsStorageFactory))
                .load(
                    "memory",
                    HashMap::from([(MEMORY_CATALOG_WAREHOUSE.to_owned(), format!("file://{}", dir.path().display()))]),
                )
                .await
                .unwrap(),
        );
        let namespace = NamespaceIdent::new("db".into());
        memory.create_namespace(&namespace, HashMap::new()).await.unwrap();
        let schema = Schema::builder()
            .with_fields(vec![NestedField::optional(1, "v", Type::Primitive(PrimitiveType::Long)).into()])
            .build()
            .unwrap();
        let created = memory
            .create_table(&namespace, TableCreation::builder().name("t".into()).schema(schema).build())
            .await
            .unwrap();
        let catalog = catalog.map_or(memory.clone(), |wrap| wrap);
        let table = TableRef {
            catalog,
            ident: TableIdent::new(namespace, "t".into()),
            location: "memory".into(),
            ops: Arc::new(Ops::new()),
        };
        Fixture { _dir: dir, table, uuid: created.metadata().uuid() }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition { topic: "orders".into(), partition }
    }

    fn ranges(list: &[(i32, i64, i64)]) -> BTreeMap<TopicPartition, OffsetRange> {
        list.iter().map(|&(p, start, end)| (tp(p), OffsetRange { start, end })).collect()
    }

    async fn commit_ranges(f: &Fixture, id: &CommitId, list: &[(i32, i64, i64)]) -> Result<Committed> {
        let ranges = ranges(list);
        let gaps = BTreeMap::new();
        let request = CommitRequest {
            commit_id: id,
            files: Vec::new(),
            ranges: &ranges,
            gaps: &gaps,
            group: "g",
            table_uuid: f.uuid,
            lsns: None,
        };
        commit(&f.table, request, &Mutex::new(Vec::new()), &|_| Ok(())).await
    }

    #[tokio::test]
    async fn an_already_landed_commit_is_reported_not_committed_twice() {
        let f = fixture(None).await;
        let id = CommitId::generate();
        let first = commit_ranges(&f, &id, &[(0, 0, 10)]).await.unwrap();
        // The answer was lost; the retry knows the first attempt's base (the table had no snapshot).
        let ranges = ranges(&[(0, 0, 10)]);
        let gaps = BTreeMap::new();
        let request = CommitRequest {
            commit_id: &id,
            files: Vec::new(),
            ranges: &ranges,
            gaps: &gaps,
            group: "g",
            table_uuid: f.uuid,
            lsns: None,
        };
        let again = commit(&f.table, request, &Mutex::new(vec![None]), &|_| Ok(())).await.unwrap();
        assert_eq!(again.snapshot_id, first.snapshot_id);
        assert_eq!(again.table.metadata().snapshots().count(), 1, "no second snapshot");
    }

    #[tokio::test]
    async fn a_commit_whose_start_the_table_has_moved_past_is_fenced_not_retried() {
        let f = fixture(None).await;
        commit_ranges(&f, &CommitId::generate(), &[(0, 0, 10)]).await.unwrap();
        let error = commit_ranges(&f, &CommitId::generate(), &[(0, 5, 15)]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Fenced);
        assert!(!error.is_retryable());
        assert_eq!(error.context("table_next_offset"), Some("10"));
        assert_eq!(f.table.ops.metrics.catalog_retries.with_label_values(&["commit"]).get(), 0, "never retried");
    }

    #[tokio::test]
    async fn a_recreated_table_stops_the_commit() {
        let mut f = fixture(None).await;
        f.uuid = uuid::Uuid::now_v7();
        let error = commit_ranges(&f, &CommitId::generate(), &[(0, 0, 10)]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("dropped and recreated"), "{error}");
    }

    /// A catalog that lets another writer commit right before k2i's first compare-and-swap.
    #[derive(Debug)]
    struct Racing {
        inner: Arc<dyn Catalog>,
        raced: AtomicBool,
    }

    #[async_trait]
    impl Catalog for Racing {
        async fn load_table(&self, ident: &TableIdent) -> iceberg::Result<Table> {
            self.inner.load_table(ident).await
        }
        async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
            if !self.raced.swap(true, Ordering::SeqCst) {
                // The other instance owns partition 1 and commits [0, 7) of it first.
                let table = self.inner.load_table(commit.identifier()).await?;
                let other = progress::encode_progress(&BTreeMap::from([(tp(1), 7)]));
                let tx = Transaction::new(&table);
                let tx = tx
                    .fast_append()
                    .set_snapshot_properties(HashMap::from([
                        (PROP_COMMIT_ID.to_owned(), "other".to_owned()),
                        (PROP_PROGRESS.to_owned(), other),
                    ]))
                    .apply(tx)?;
                tx.commit(self.inner.as_ref()).await?;
            }
            self.inner.update_table(commit).await
        }
        async fn list_namespaces(&self, p: Option<&NamespaceIdent>) -> iceberg::Result<Vec<NamespaceIdent>> {
            self.inner.list_namespaces(p).await
        }
        async fn create_namespace(&self, n: &NamespaceIdent, p: HashMap<String, String>) -> iceberg::Result<Namespace> {
            self.inner.create_namespace(n, p).await
        }
        async fn get_namespace(&self, n: &NamespaceIdent) -> iceberg::Result<Namespace> {
            self.inner.get_namespace(n).await
        }
        async fn namespace_exists(&self, n: &NamespaceIdent) -> iceberg::Result<bool> {
            self.inner.namespace_exists(n).await
        }
        async fn update_namespace(&self, n: &NamespaceIdent, p: HashMap<String, String>) -> iceberg::Result<()> {
            self.inner.update_namespace(n, p).await
        }
        async fn drop_namespace(&self, n: &NamespaceIdent) -> iceberg::Result<()> {
            self.inner.drop_namespace(n).await
        }
        async fn list_tables(&self, n: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
            self.inner.list_tables(n).await
        }
        async fn create_table(&self, n: &NamespaceIdent, c: TableCreation) -> iceberg::Result<Table> {
            self.inner.create_table(n, c).await
        }
        async fn drop_table(&self, t: &TableIdent) -> iceberg::Result<()> {
            self.inner.drop_table(t).await
        }
        async fn purge_table(&self, t: &TableIdent) -> iceberg::Result<()> {
            self.inner.purge_table(t).await
        }
        async fn table_exists(&self, t: &TableIdent) -> iceberg::Result<bool> {
            self.inner.table_exists(t).await
        }
        async fn rename_table(&self, s: &TableIdent, d: &TableIdent) -> iceberg::Result<()> {
            self.inner.rename_table(s, d).await
        }
        async fn register_table(&self, t: &TableIdent, m: String) -> iceberg::Result<Table> {
            self.inner.register_table(t, m).await
        }
    }

    #[tokio::test]
    async fn a_concurrent_append_is_a_conflict_revalidated_on_the_new_base_then_lands_with_merged_progress() {
        let plain = fixture(None).await;
        let racing: Arc<dyn Catalog> =
            Arc::new(Racing { inner: plain.table.catalog.clone(), raced: AtomicBool::new(false) });
        let f = Fixture { table: TableRef { catalog: racing, ..plain.table.clone() }, ..plain };
        let committed = commit_ranges(&f, &CommitId::generate(), &[(0, 0, 10)]).await.unwrap();
        let metadata = committed.table.metadata();
        assert_eq!(metadata.snapshots().count(), 2, "the other writer's snapshot and ours");
        let progress = recorded(metadata).unwrap();
        assert_eq!(progress.progress, BTreeMap::from([(tp(0), 10), (tp(1), 7)]), "merged on the new base");
        assert!(f.table.ops.metrics.catalog_retries.with_label_values(&["commit"]).get() >= 1);
    }

    #[tokio::test]
    async fn progress_survives_a_foreign_append_and_the_expiry_of_every_k2i_snapshot() {
        let f = fixture(None).await;
        let id = CommitId::generate();
        commit_ranges(&f, &id, &[(0, 0, 10), (1, 0, 4)]).await.unwrap();
        // Another engine appends, then expires everything but its own snapshot.
        let table = f.table.load().await.unwrap();
        let tx = Transaction::new(&table);
        let foreign = HashMap::from([("engine".to_owned(), "another".to_owned())]);
        let tx = tx.fast_append().set_snapshot_properties(foreign).apply(tx).unwrap();
        let table = tx.commit(f.table.catalog.as_ref()).await.unwrap();
        let ours: Vec<i64> = table
            .metadata()
            .snapshots()
            .filter(|s| progress::commit_id_of(s).is_some())
            .map(|s| s.snapshot_id())
            .collect();
        let tx = Transaction::new(&table);
        let tx = tx.expire_snapshots().expire_snapshot_ids(ours).apply(tx).unwrap();
        let table = tx.commit(f.table.catalog.as_ref()).await.unwrap();
        assert_eq!(table.metadata().snapshots().count(), 1);
        let found = recorded(table.metadata()).unwrap();
        assert_eq!(found.source, Source::TableProperty);
        assert_eq!(found.progress, BTreeMap::from([(tp(0), 10), (tp(1), 4)]));
        assert_eq!(progress::find_commit(table.metadata(), &id, &[]), Landed::Expired);
        // And the next flush continues from there instead of being fenced or starting over.
        commit_ranges(&f, &CommitId::generate(), &[(0, 10, 12)]).await.unwrap();
    }
}
