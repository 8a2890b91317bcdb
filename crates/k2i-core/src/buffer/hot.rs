//! The hot view of one table: the log sequence numbers (LSNs) of its rows, and — when the read-state RPC is
//! on — the rows not committed yet, next to the table as of its last commit, so a reader gets both at one LSN.
//!
//! Every chunk the buffer seals is published here and stamped with the next LSNs (under one lock with
//! everything else, so LSNs grow in consumption order). A chunk belongs to the buffer until a flush takes it
//! (it is tagged with the flush), and stays here while that flush is pending or in flight: until its
//! snapshot is visible. The commit actor then swaps, in one step, the flush's chunks for the new table, so a
//! row is always either committed or hot for a reader, never both. Only the polling thread removes rows that
//! did not land (a fenced or unlanded flush and everything after it, at the resync that reads them again), so
//! the hot rows of a partition always continue where its committed rows end.
//!
//! Per partition, the view also knows where this instance started reading it (assignment, resync). Until the
//! committed table records the partition at least that far (the table the view holds can be older than the one
//! the assignment read: another instance committed in between), the partition's hot rows are held back: a
//! read-state never shows rows above a gap.
//!
//! The rows here share their Arrow buffers with the buffer and the flush (no copy); the memory accounting of
//! the flush in flight (`in_flight_bytes`) already counts them until its outcome. Without the RPC only the
//! LSN ranges are kept.
//!
//! A hot row's LSN is provisional: when the table's LSN passes the first hot row's (another instance
//! committed meanwhile), every hot row moves up by the difference (recorded per chunk, applied when a view is
//! cut, outside the lock).

use std::collections::{HashMap, VecDeque};
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
    /// The lowest offset of each partition among the rows (so a cut checks a chunk, not its rows).
    pub lowest: Arc<HashMap<TopicPartition, i64>>,
}

#[derive(Debug)]
struct HotChunk {
    /// The flush that took the chunk (`None`: still in the buffer).
    flush: Option<u64>,
    first: u64,
    last: u64,
    /// How far the rows' LSNs moved up since they were stamped (added to `rows.lsn` when a view is cut).
    moved: u64,
    /// The rows, when kept for readers.
    rows: Option<HotRows>,
}

#[derive(Debug)]
struct Inner {
    next_lsn: u64,
    chunks: VecDeque<HotChunk>,
    /// Flushes tagged so far (the next tag is one more).
    tags: u64,
    /// The table as of the last commit or refresh (set once the engine has it).
    table: Option<Table>,
    committed_lsn: u64,
    progress: Progress,
    /// Where this instance started reading each owned partition the table had recorded.
    starts: HashMap<TopicPartition, i64>,
    availability: Availability,
}

impl Inner {
    /// The table's LSN is now `lsn`: hot rows at or below it move up above it.
    fn raise(&mut self, lsn: u64) {
        let lowest = self.chunks.iter().map(|c| c.first).min();
        let shift = lowest.map_or(0, |first| (lsn + 1).saturating_sub(first));
        if shift > 0 {
            for chunk in &mut self.chunks {
                chunk.first += shift;
                chunk.last += shift;
                chunk.moved += shift;
            }
        }
        self.next_lsn = (self.next_lsn + shift).max(lsn + 1);
        self.committed_lsn = self.committed_lsn.max(lsn);
    }
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
}

impl HotTable {
    /// The view of a table whose LSN is `lsn`; rows are kept for readers when `keep_rows`.
    pub fn new(name: String, lsn: u64, keep_rows: bool) -> Self {
        let inner = Inner {
            next_lsn: lsn + 1,
            chunks: VecDeque::new(),
            tags: 0,
            table: None,
            committed_lsn: lsn,
            progress: Progress::new(),
            starts: HashMap::new(),
            availability: Availability::Ready,
        };
        Self { name, keep_rows, inner: Mutex::new(inner) }
    }

    /// `namespace.table`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a table at least as new as the one held, with the progress it records (at start, after a
    /// progress lookup, after a schema change): no row of it may be hot here, which holds whenever no flush
    /// of this table is in flight (the commit actor runs one job at a time).
    pub fn refresh(&self, table: Table, progress: Progress) {
        let lsn = crate::progress::table_lsn(table.metadata());
        let mut inner = self.lock();
        // Not a table recreated under the same name (the commits stop on that), nor an older state of it.
        if let Some(held) = &inner.table {
            let (old, new) = (held.metadata(), table.metadata());
            if old.uuid() != new.uuid() || new.last_sequence_number() < old.last_sequence_number() {
                return;
            }
        }
        inner.raise(lsn);
        inner.table = Some(table);
        inner.progress = progress;
    }

    /// Stamps a chunk the buffer sealed with the next LSNs (nothing, once the table stopped).
    pub fn publish(&self, chunk: &Chunk) {
        let rows = chunk.batch.num_rows() as u64;
        if rows == 0 {
            return;
        }
        let lowest = self.keep_rows.then(|| Arc::new(lowest_offsets(&chunk.batch)));
        let mut inner = self.lock();
        if inner.availability != Availability::Ready {
            return;
        }
        let first = inner.next_lsn;
        let last = first + rows - 1;
        inner.next_lsn = last + 1;
        let rows = lowest.map(|lowest| HotRows {
            schema: chunk.schema.clone(),
            batch: chunk.batch.clone(),
            lsn: UInt64Array::from_iter_values(first..=last),
            lowest,
        });
        inner.chunks.push_back(HotChunk { flush: None, first, last, moved: 0, rows });
    }

    /// The buffer's chunks now belong to a new flush; returns its tag.
    pub fn take(&self) -> u64 {
        let mut inner = self.lock();
        inner.tags += 1;
        let tag = inner.tags;
        for chunk in inner.chunks.iter_mut().filter(|c| c.flush.is_none()) {
            chunk.flush = Some(tag);
        }
        tag
    }

    /// The first and last LSN of a flush's rows (`None` when it has none).
    pub fn lsns(&self, flush: u64) -> Option<(u64, u64)> {
        let inner = self.lock();
        let first = inner.chunks.iter().find(|c| c.flush == Some(flush))?;
        let last = inner.chunks.iter().rev().find(|c| c.flush == Some(flush))?;
        Some((first.first, last.last))
    }

    /// This instance reads `tp` from `next` on (assignment, resync).
    pub fn start_partition(&self, tp: TopicPartition, next: i64) {
        self.lock().starts.insert(tp, next);
    }

    /// Drops hot rows of partitions this instance no longer owns (their next owner serves them).
    pub fn drop_partitions(&self, revoked: &[TopicPartition]) -> Result<()> {
        let mut inner = self.lock();
        inner.starts.retain(|tp, _| !revoked.contains(tp));
        for chunk in &mut inner.chunks {
            if let Some(rows) = chunk.rows.take() {
                chunk.rows = Some(without(rows, revoked)?);
            }
        }
        Ok(())
    }

    /// Forgets the rows of flush `flush` (a pending flush whose partitions were all revoked).
    pub fn forget(&self, flush: u64) {
        self.lock().chunks.retain(|c| c.flush != Some(flush));
    }

    /// Forgets flush `flush` and everything after it (later flushes, the buffer); with `None`, the buffer's
    /// rows only. The pipeline reads them again from the table's progress, with new LSNs.
    pub fn forget_from(&self, flush: Option<u64>) {
        self.lock().chunks.retain(|c| match (c.flush, flush) {
            (Some(tag), Some(from)) => tag < from,
            (Some(_), None) => true,
            (None, _) => false,
        });
    }

    /// Flush `flush` landed: the table becomes `table` at `lsn` (recording `progress`), whose rows are those
    /// of the flush; hot rows left at or below `lsn` move up above it.
    pub fn committed(&self, flush: u64, table: Table, lsn: u64, progress: Progress) {
        let mut inner = self.lock();
        inner.chunks.retain(|c| c.flush != Some(flush));
        inner.raise(lsn);
        // This instance's hot rows of a partition now continue from its committed end: a later table whose
        // progress is below it (rolled back by another engine) holds them back instead of showing a gap.
        let Inner { starts, .. } = &mut *inner;
        for (tp, start) in starts.iter_mut() {
            if let Some(next) = progress.get(tp) {
                *start = (*start).max(*next);
            }
        }
        inner.table = Some(table);
        inner.progress = progress;
    }

    /// The table stopped: readers get its committed part only.
    pub fn fail(&self, reason: String) {
        let mut inner = self.lock();
        inner.chunks.clear();
        inner.availability = Availability::Failed(reason);
    }

    /// What a table listing shows, without cutting a view: the LSN, the committed LSN, the table (for its
    /// snapshot and schema) and the rows kept (before any hold-back).
    pub fn summary(&self) -> (u64, u64, Option<Table>, u64) {
        let inner = self.lock();
        let rows = inner.chunks.iter().filter_map(|c| c.rows.as_ref()).map(|r| r.batch.num_rows() as u64).sum();
        (inner.next_lsn - 1, inner.committed_lsn, inner.table.clone(), rows)
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
        // Only `Arc` clones under the lock; LSNs are moved and a bound inside a chunk is cut after it is released.
        let chunks: Vec<(HotRows, u64)> = inner
            .chunks
            .iter()
            .filter(|c| c.first <= lsn)
            .filter_map(|c| c.rows.clone().map(|rows| (rows, c.moved)))
            .collect();
        // Partitions whose committed rows end below where this instance started reading them: held back.
        let behind: Vec<TopicPartition> = inner
            .starts
            .iter()
            .filter(|(tp, start)| inner.progress.get(*tp).is_none_or(|next| next < *start))
            .map(|(tp, _)| tp.clone())
            .collect();
        let (committed_lsn, progress, availability) =
            (inner.committed_lsn, inner.progress.clone(), inner.availability.clone());
        drop(inner);
        let mut hot = Vec::with_capacity(chunks.len());
        for (mut rows, moved) in chunks {
            if moved > 0 {
                rows.lsn = rows.lsn.values().iter().map(|l| l + moved).collect();
            }
            if rows.lsn.values().last().is_some_and(|&last| last > lsn) {
                let keep: BooleanArray = rows.lsn.values().iter().map(|&l| Some(l <= lsn)).collect();
                rows = filter(&rows, &keep)?;
            }
            if !behind.is_empty() {
                rows = without(rows, &behind)?;
            }
            // Rows the committed part already holds (a flush that landed although its answer said otherwise,
            // read again before the table showed it): never both.
            if rows.lowest.iter().any(|(tp, low)| progress.get(tp).is_some_and(|next| low < next)) {
                rows = above(rows, &progress)?;
            }
            if rows.batch.num_rows() > 0 {
                hot.push(rows);
            }
        }
        Ok(View { table, committed_lsn, lsn, progress, hot, availability })
    }
}

/// Rows of `rows` for which `keep` is true.
pub fn filter(rows: &HotRows, keep: &BooleanArray) -> Result<HotRows> {
    let internal = |e| Error::new(ErrorKind::Internal, "cannot filter hot rows").source(e);
    let batch = arrow_select::filter::filter_record_batch(&rows.batch, keep).map_err(internal)?;
    let lsn = arrow_select::filter::filter(&rows.lsn, keep).map_err(internal)?;
    let lowest = Arc::new(lowest_offsets(&batch));
    Ok(HotRows { schema: rows.schema.clone(), batch, lsn: lsn.as_primitive().clone(), lowest })
}

/// The rows at or above their partition's committed next offset.
fn above(rows: HotRows, progress: &Progress) -> Result<HotRows> {
    let (topics, partitions, offsets) = metadata_columns(&rows.batch)?;
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for (tp, offset) in progress {
        next.insert((tp.topic.as_str(), tp.partition), *offset);
    }
    let keep: BooleanArray = (0..rows.batch.num_rows())
        .map(|i| Some(next.get(&(topics.value(i), partitions.value(i))).is_none_or(|n| offsets.value(i) >= *n)))
        .collect();
    filter(&rows, &keep)
}

/// The lowest offset of each partition among a batch's rows.
fn lowest_offsets(batch: &RecordBatch) -> HashMap<TopicPartition, i64> {
    let mut lowest: HashMap<TopicPartition, i64> = HashMap::new();
    let Ok((topics, partitions, offsets)) = metadata_columns(batch) else { return lowest };
    let mut last: Option<(&str, i32)> = None;
    for i in 0..batch.num_rows() {
        let key = (topics.value(i), partitions.value(i));
        let offset = offsets.value(i);
        // Rows come in runs of one partition: look the map up once per run.
        if last == Some(key) {
            continue;
        }
        last = Some(key);
        let tp = TopicPartition { topic: key.0.to_owned(), partition: key.1 };
        let entry = lowest.entry(tp).or_insert(offset);
        *entry = (*entry).min(offset);
    }
    lowest
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
        hot.refresh(table.clone(), Progress::new());
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
        hot.committed(flush.hot, table.clone(), 25, Progress::new());
        let view = hot.view(None).unwrap();
        assert_eq!(view.committed_lsn, 25);
        assert_eq!(rows(&view), [(0, 3, 26), (0, 4, 27)], "the flush's rows left; later rows moved up as much");
        push(&mut buffer, 0, 5..6);
        assert_eq!(rows(&hot.view(None).unwrap()).last(), Some(&(0, 5, 28)), "new rows continue above");

        // A commit without rows on a table another instance moved to LSN 40: the hot rows (a pending flush now)
        // move above it too.
        let _pending = buffer.take().unwrap().unwrap();
        let empty = hot.take();
        hot.committed(empty, table.clone(), 40, Progress::new());
        assert_eq!(rows(&hot.view(None).unwrap()), [(0, 3, 41), (0, 4, 42), (0, 5, 43)]);
        assert!(hot.view(Some(41)).is_ok());

        // A stopped table serves its committed part only, and nothing is published any more.
        hot.fail("boom".into());
        push(&mut buffer, 0, 6..7);
        let view = hot.view(None).unwrap();
        assert!(view.hot.is_empty());
        assert_eq!(view.availability, Availability::Failed("boom".into()));
    }

    #[tokio::test]
    async fn a_partition_started_beyond_the_committed_part_is_held_back_until_the_table_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let schema = raw_schema();
        let table = table(dir.path(), &schema).await;
        let hot = Arc::new(HotTable::new("db.t".into(), 0, true));
        let tp = |partition| TopicPartition { topic: "t".into(), partition };
        hot.refresh(table.clone(), Progress::from([(tp(0), 900)]));
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 100, hot.clone()).unwrap();
        // Assigned at 1000: another instance committed 900..1000 after this view's table was read.
        hot.start_partition(tp(0), 1000);
        push(&mut buffer, 0, 1000..1002);
        push(&mut buffer, 1, 0..1);
        assert_eq!(rows(&hot.view(None).unwrap()), [(1, 0, 3)], "partition 1 was never recorded: no gap");
        hot.refresh(table.clone(), Progress::from([(tp(0), 1000)]));
        assert_eq!(rows(&hot.view(None).unwrap()).len(), 3, "the table caught up: the rows show");

        // The table shows rows that are hot here too (a flush that landed although its answer said otherwise,
        // read again): the committed part wins.
        hot.refresh(table.clone(), Progress::from([(tp(0), 1001)]));
        assert_eq!(rows(&hot.view(None).unwrap()), [(0, 1001, 2), (1, 0, 3)]);

        // This instance commits partition 0 up to 1002; another engine then rolls the table back to 1001:
        // the rows after 1002 would sit above a gap, so they are held back.
        let flush = buffer.take().unwrap().unwrap();
        push(&mut buffer, 0, 1002..1003);
        hot.committed(flush.hot, table.clone(), 3, Progress::from([(tp(0), 1002), (tp(1), 1)]));
        assert_eq!(rows(&hot.view(None).unwrap()), [(0, 1002, 4)]);
        hot.refresh(table, Progress::from([(tp(0), 1001), (tp(1), 1)]));
        assert!(rows(&hot.view(None).unwrap()).is_empty(), "held back until the table records 1002 again");
    }

    #[tokio::test]
    async fn a_resync_forgets_the_buffer_and_the_pending_flush_but_not_the_one_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let schema = raw_schema();
        let hot = Arc::new(HotTable::new("db.t".into(), 0, true));
        hot.refresh(table(dir.path(), &schema).await, Progress::new());
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 100, hot.clone()).unwrap();
        push(&mut buffer, 0, 0..2);
        let in_flight = buffer.take().unwrap().unwrap();
        push(&mut buffer, 0, 2..4);
        let pending = buffer.take().unwrap().unwrap();
        push(&mut buffer, 0, 4..6);
        push(&mut buffer, 1, 0..2);
        buffer.drop_partitions(&[TopicPartition { topic: "t".into(), partition: 1 }]).unwrap();
        assert_eq!(rows(&hot.view(None).unwrap()).len(), 6, "a revoked partition's rows leave at once");
        hot.forget_from(Some(pending.hot));
        assert_eq!(rows(&hot.view(None).unwrap()), [(0, 0, 1), (0, 1, 2)]);
        hot.forget(in_flight.hot);
        assert!(rows(&hot.view(None).unwrap()).is_empty());
        assert_eq!(hot.summary().0, 8, "LSNs are never handed out twice");
    }

    #[tokio::test]
    async fn without_readers_only_the_lsn_ranges_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let schema = raw_schema();
        let hot = Arc::new(HotTable::new("db.t".into(), 0, false));
        hot.refresh(table(dir.path(), &schema).await, Progress::new());
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 100, hot.clone()).unwrap();
        push(&mut buffer, 0, 0..4);
        let flush = buffer.take().unwrap().unwrap();
        assert_eq!(hot.lsns(flush.hot), Some((1, 4)));
        assert!(hot.view(None).unwrap().hot.is_empty());
    }
}
