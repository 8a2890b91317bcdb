//! The hot view of one table: the log sequence numbers (LSNs) of its rows, and — when the read-state RPC is
//! on — the rows not committed yet, next to the table as of its last commit, so a reader gets both at one LSN.
//!
//! Every chunk the buffer seals is published here and stamped with the next LSNs (under one lock with
//! everything else, so LSNs grow in consumption order). A chunk belongs to the buffer until a flush takes it
//! (it is tagged with the flush), and stays here while that flush is pending or in flight: until its
//! snapshot is visible. The commit actor then swaps, in one step, the flush's chunks for the new table, so a
//! row is always either committed or hot for a reader, never both, never neither.
//!
//! The rows here share their Arrow buffers with the buffer and the flush (no copy); the memory accounting of
//! the flush in flight (`in_flight_bytes`) already counts them until its outcome. Without the RPC only the
//! LSN ranges are kept.
//!
//! A hot row's LSN is provisional: when the commit finds the table's LSN already above the flush's first
//! row (another instance committed meanwhile), the flush and every later hot row move up by the difference.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{BooleanArray, RecordBatch, UInt64Array};
use iceberg::spec::Schema;
use iceberg::table::Table;

use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Progress, TopicPartition};
use crate::schema::{COL_OFFSET, COL_PARTITION, COL_TOPIC};

use super::Chunk;

/// Whether the table can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Serving.
    Ready,
    /// The table stopped: only what is committed is served.
    Failed(String),
}

/// Rows of one chunk as a reader sees them.
#[derive(Debug, Clone)]
pub struct HotRows {
    /// The Iceberg schema they were decoded with.
    pub schema: Arc<Schema>,
    /// The rows.
    pub batch: RecordBatch,
    /// Each row's LSN.
    pub lsn: UInt64Array,
}

#[derive(Debug)]
struct HotChunk {
    /// The flush that took the chunk (`None`: still in the buffer).
    flush: Option<u64>,
    first: u64,
    last: u64,
    /// The rows, when kept for readers.
    rows: Option<HotRows>,
}

#[derive(Debug)]
struct Inner {
    next_lsn: u64,
    chunks: VecDeque<HotChunk>,
    /// The table as of the last commit (set once the engine has it).
    table: Option<Table>,
    committed_lsn: u64,
    progress: Progress,
    availability: Availability,
}

/// A consistent cut of the table: the table as of its last commit and the rows above its LSN.
#[derive(Debug, Clone)]
pub struct View {
    /// The table at `committed_lsn` (its current snapshot holds every committed row).
    pub table: Table,
    /// The LSN of the committed part.
    pub committed_lsn: u64,
    /// The LSN of the whole cut (`committed_lsn` when nothing is hot).
    pub lsn: u64,
    /// The next offset of every partition the committed part records.
    pub progress: Progress,
    /// Hot rows with LSNs in `(committed_lsn, lsn]`, oldest first.
    pub hot: Vec<HotRows>,
    /// Serving or stopped.
    pub availability: Availability,
}

/// The hot view of one table, shared by its pipeline, its commit actor and the read-state server.
#[derive(Debug)]
pub struct HotTable {
    name: String,
    keep_rows: bool,
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl HotTable {
    /// The view of a table whose LSN is `lsn`; rows are kept for readers when `keep_rows`.
    pub fn new(name: String, lsn: u64, keep_rows: bool) -> Self {
        let inner = Inner {
            next_lsn: lsn + 1,
            chunks: VecDeque::new(),
            table: None,
            committed_lsn: lsn,
            progress: Progress::new(),
            availability: Availability::Ready,
        };
        Self { name, keep_rows, inner: Mutex::new(inner), changed: tokio::sync::watch::channel(lsn).0 }
    }

    /// The table as the engine opened it, with the progress it records.
    pub fn start(&self, table: Table, progress: Progress) {
        let mut inner = self.lock();
        inner.table = Some(table);
        inner.progress = progress;
    }

    /// `namespace.table`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self, inner: &Inner) {
        self.changed.send_replace(inner.next_lsn - 1);
    }

    /// Stamps a chunk the buffer sealed with the next LSNs.
    pub fn publish(&self, chunk: &Chunk) {
        let rows = chunk.batch.num_rows() as u64;
        if rows == 0 {
            return;
        }
        let mut inner = self.lock();
        let first = inner.next_lsn;
        let last = first + rows - 1;
        inner.next_lsn = last + 1;
        let rows = self.keep_rows.then(|| HotRows {
            schema: chunk.schema.clone(),
            batch: chunk.batch.clone(),
            lsn: UInt64Array::from_iter_values(first..=last),
        });
        inner.chunks.push_back(HotChunk { flush: None, first, last, rows });
        self.notify(&inner);
    }

    /// The buffer's chunks now belong to flush `flush`.
    pub fn take(&self, flush: u64) {
        let mut inner = self.lock();
        for chunk in inner.chunks.iter_mut().filter(|c| c.flush.is_none()) {
            chunk.flush = Some(flush);
        }
    }

    /// The first and last LSN of a flush's rows (`None` when it has none).
    pub fn lsns(&self, flush: u64) -> Option<(u64, u64)> {
        let inner = self.lock();
        let first = inner.chunks.iter().find(|c| c.flush == Some(flush))?;
        let last = inner.chunks.iter().rev().find(|c| c.flush == Some(flush))?;
        Some((first.first, last.last))
    }

    /// Drops hot rows of partitions this instance no longer owns (their next owner serves them).
    pub fn drop_partitions(&self, revoked: &[TopicPartition]) -> Result<()> {
        let mut inner = self.lock();
        for chunk in &mut inner.chunks {
            if let Some(rows) = chunk.rows.take() {
                chunk.rows = Some(without(rows, revoked)?);
            }
        }
        Ok(())
    }

    /// Forgets the rows of flush `flush` (fenced, unlanded: they are read again with new LSNs).
    pub fn forget(&self, flush: u64) {
        let mut inner = self.lock();
        inner.chunks.retain(|c| c.flush != Some(flush));
        self.notify(&inner);
    }

    /// Forgets the buffer's rows and those of the pending flush `pending` (the pipeline re-reads them from
    /// the table's progress); the flushes in flight keep theirs until their outcome.
    pub fn forget_buffered(&self, pending: Option<u64>) {
        let mut inner = self.lock();
        inner.chunks.retain(|c| c.flush.is_some() && c.flush != pending);
        self.notify(&inner);
    }

    /// Flush `flush` landed: the table becomes `table` at `lsn` (recording `progress`), whose rows are those
    /// of the flush, moved up by `shift`; later hot rows move up as much.
    pub fn committed(&self, flush: u64, table: Table, lsn: u64, shift: u64, progress: Progress) {
        let mut inner = self.lock();
        inner.chunks.retain(|c| c.flush != Some(flush));
        if shift > 0 {
            for chunk in &mut inner.chunks {
                chunk.first += shift;
                chunk.last += shift;
                if let Some(rows) = &mut chunk.rows {
                    rows.lsn = rows.lsn.iter().map(|l| l.map(|l| l + shift)).collect();
                }
            }
            inner.next_lsn += shift;
        }
        inner.next_lsn = inner.next_lsn.max(lsn + 1);
        inner.committed_lsn = inner.committed_lsn.max(lsn);
        inner.table = Some(table);
        inner.progress = progress;
        self.notify(&inner);
    }

    /// The table stopped: readers get its committed part only.
    pub fn fail(&self, reason: String) {
        let mut inner = self.lock();
        inner.chunks.clear();
        inner.availability = Availability::Failed(reason);
        self.notify(&inner);
    }

    /// The highest LSN assigned (the cut a scan would take now).
    pub fn lsn(&self) -> u64 {
        self.lock().next_lsn - 1
    }

    /// A receiver told the highest LSN whenever the view changes (for readers that follow the table).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The cut at `max_lsn` (the newest when `None`). A bound below the committed part cannot be cut.
    pub fn view(&self, max_lsn: Option<u64>) -> Result<View> {
        let inner = self.lock();
        let Some(table) = inner.table.clone() else {
            return Err(Error::new(ErrorKind::Transient, "the table is not open yet").with("table", &self.name));
        };
        let newest = inner.next_lsn - 1;
        let lsn = max_lsn.map_or(newest, |bound| bound.min(newest));
        if lsn < inner.committed_lsn {
            return Err(Error::new(ErrorKind::Config, "the LSN bound is below the table's committed LSN")
                .with("table", &self.name)
                .with("max_lsn", lsn)
                .with("committed_lsn", inner.committed_lsn));
        }
        // Only `Arc` clones under the lock; a bound inside a chunk is cut after it is released.
        let chunks: Vec<HotRows> =
            inner.chunks.iter().filter(|c| c.first <= lsn).filter_map(|c| c.rows.clone()).collect();
        let (committed_lsn, progress, availability) =
            (inner.committed_lsn, inner.progress.clone(), inner.availability.clone());
        drop(inner);
        let mut hot = Vec::with_capacity(chunks.len());
        for rows in chunks {
            if rows.lsn.values().last().is_some_and(|&last| last <= lsn) {
                hot.push(rows);
            } else {
                let keep: BooleanArray = rows.lsn.iter().map(|l| Some(l.is_some_and(|l| l <= lsn))).collect();
                hot.push(filter(&rows, &keep)?);
            }
        }
        hot.retain(|rows| rows.batch.num_rows() > 0);
        Ok(View { table, committed_lsn, lsn, progress, hot, availability })
    }
}

/// Rows of `rows` for which `keep` is true.
pub fn filter(rows: &HotRows, keep: &BooleanArray) -> Result<HotRows> {
    let internal = |e| Error::new(ErrorKind::Internal, "cannot filter hot rows").source(e);
    let batch = arrow_select::filter::filter_record_batch(&rows.batch, keep).map_err(internal)?;
    let lsn = arrow_select::filter::filter(&rows.lsn, keep).map_err(internal)?;
    Ok(HotRows { schema: rows.schema.clone(), batch, lsn: lsn.as_primitive().clone() })
}

fn without(rows: HotRows, revoked: &[TopicPartition]) -> Result<HotRows> {
    let keep = super::outside(&rows.batch, revoked)?;
    if keep.false_count() == 0 { Ok(rows) } else { filter(&rows, &keep) }
}

/// The `_kafka_topic`, `_kafka_partition` and `_kafka_offset` columns of a batch.
pub fn metadata_columns(
    batch: &RecordBatch,
) -> Result<(&arrow_array::StringArray, &arrow_array::Int32Array, &arrow_array::Int64Array)> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::new(ErrorKind::Internal, "a buffered batch lacks its metadata columns"))
    };
    let topics = column(COL_TOPIC)?.as_string_opt::<i32>();
    let partitions = column(COL_PARTITION)?.as_primitive_opt::<Int32Type>();
    let offsets = column(COL_OFFSET)?.as_primitive_opt::<Int64Type>();
    match (topics, partitions, offsets) {
        (Some(t), Some(p), Some(o)) => Ok((t, p, o)),
        _ => Err(Error::new(ErrorKind::Internal, "a buffered batch's metadata columns have unexpected types")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use iceberg::io::LocalFsStorageFactory;
    use iceberg::memory::{MEMORY_CATALOG_WAREHOUSE, MemoryCatalogBuilder};
    use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation};

    use super::*;
    use crate::buffer::{RecordMeta, TableBuffer};
    use crate::decode::Format;

    async fn table(dir: &std::path::Path, schema: &Schema) -> Table {
        let catalog = MemoryCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load("memory", HashMap::from([(MEMORY_CATALOG_WAREHOUSE.to_owned(), format!("file://{}", dir.display()))]))
            .await
            .unwrap();
        let namespace = NamespaceIdent::new("db".into());
        catalog.create_namespace(&namespace, HashMap::new()).await.unwrap();
        let creation = TableCreation::builder().name("t".into()).schema(schema.clone()).build();
        catalog.create_table(&namespace, creation).await.unwrap()
    }

    fn raw_schema() -> Arc<Schema> {
        let text = "[kafka]\nbootstrap_servers = [\"k:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n[kafka.format]\ntype = \"raw\"\n[iceberg]\ntable_name = \"t\"\n";
        let config = crate::config::from_toml(text, std::path::Path::new("t.toml"), &Default::default()).unwrap();
        Arc::new(crate::schema::initial_schema(&config).unwrap())
    }

    fn push(buffer: &mut TableBuffer, partition: i32, offsets: std::ops::Range<i64>) {
        for offset in offsets {
            let meta = RecordMeta { topic: "t", partition, offset, timestamp_ms: None, key: None, headers: None };
            buffer.push(&meta, Some(b"v")).unwrap();
        }
        buffer.publish().unwrap();
    }

    /// Every hot row's (partition, offset, lsn), in order.
    fn rows(view: &View) -> Vec<(i32, i64, u64)> {
        let mut out = Vec::new();
        for rows in &view.hot {
            let (_, partitions, offsets) = metadata_columns(&rows.batch).unwrap();
            for i in 0..rows.batch.num_rows() {
                out.push((partitions.value(i), offsets.value(i), rows.lsn.value(i)));
            }
        }
        out
    }

    #[tokio::test]
    async fn rows_are_hot_until_their_flush_lands_then_committed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let schema = raw_schema();
        let table = table(dir.path(), &schema).await;
        let hot = Arc::new(HotTable::new("db.t".into(), 10, true));
        hot.start(table.clone(), Progress::new());
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 100, hot.clone()).unwrap();
        push(&mut buffer, 0, 0..3);
        push(&mut buffer, 1, 0..2);
        let view = hot.view(None).unwrap();
        assert_eq!((view.committed_lsn, view.lsn), (10, 15), "LSNs continue after the table's");
        assert_eq!(rows(&view), [(0, 0, 11), (0, 1, 12), (0, 2, 13), (1, 0, 14), (1, 1, 15)]);
        assert_eq!(rows(&hot.view(Some(12)).unwrap()).len(), 2, "a bound cuts inside a chunk");
        assert!(hot.view(Some(9)).is_err(), "below the committed part nothing can be cut");

        let flush = buffer.take().unwrap().unwrap();
        push(&mut buffer, 0, 3..5);
        assert_eq!(hot.lsns(flush.hot), Some((11, 15)));
        assert_eq!(rows(&hot.view(None).unwrap()).len(), 7, "a flush in flight stays readable");

        // Another instance committed meanwhile: the table's LSN is 20, so this flush's rows move up by 10.
        hot.committed(flush.hot, table, 25, 10, Progress::new());
        let view = hot.view(None).unwrap();
        assert_eq!(view.committed_lsn, 25);
        assert_eq!(rows(&view), [(0, 3, 26), (0, 4, 27)], "the flush's rows left; later rows moved up as much");
        push(&mut buffer, 0, 5..6);
        assert_eq!(rows(&hot.view(None).unwrap()).last(), Some(&(0, 5, 28)), "new rows continue above");
    }

    #[tokio::test]
    async fn a_resync_forgets_the_buffer_and_the_pending_flush_but_not_the_one_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let schema = raw_schema();
        let hot = Arc::new(HotTable::new("db.t".into(), 0, true));
        hot.start(table(dir.path(), &schema).await, Progress::new());
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 100, hot.clone()).unwrap();
        push(&mut buffer, 0, 0..2);
        let in_flight = buffer.take().unwrap().unwrap();
        push(&mut buffer, 0, 2..4);
        let pending = buffer.take().unwrap().unwrap();
        push(&mut buffer, 0, 4..6);
        push(&mut buffer, 1, 0..2);
        buffer.drop_partitions(&[TopicPartition { topic: "t".into(), partition: 1 }]).unwrap();
        assert_eq!(rows(&hot.view(None).unwrap()).len(), 6, "a revoked partition's rows leave at once");
        hot.forget_buffered(Some(pending.hot));
        assert_eq!(rows(&hot.view(None).unwrap()), [(0, 0, 1), (0, 1, 2)]);
        hot.forget(in_flight.hot);
        assert!(rows(&hot.view(None).unwrap()).is_empty());
        assert_eq!(hot.lsn(), 8, "LSNs are never handed out twice");
    }

    #[tokio::test]
    async fn without_readers_only_the_lsn_ranges_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let schema = raw_schema();
        let hot = Arc::new(HotTable::new("db.t".into(), 0, false));
        hot.start(table(dir.path(), &schema).await, Progress::new());
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 100, hot.clone()).unwrap();
        push(&mut buffer, 0, 0..4);
        let flush = buffer.take().unwrap().unwrap();
        assert_eq!(hot.lsns(flush.hot), Some((1, 4)));
        assert!(hot.view(None).unwrap().hot.is_empty());
    }
}
