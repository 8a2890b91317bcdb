//! The hot buffer of one table: decoded rows as Arrow chunks, the offset range of every partition they
//! came from, and the flush triggers.
//!
//! Rows arrive one record at a time: Kafka metadata goes to column builders here, the payload to the
//! format's [`Decoder`]. Every `chunk_rows` rows the builders are sealed into a `RecordBatch` chunk. A
//! schema change seals the current chunk too, so each chunk carries the Iceberg schema it was decoded with.
//! [`TableBuffer::take`] hands everything over as a [`FlushBatch`] and restarts the flush clock.
//!
//! Offsets travel with the data: each partition's range `[start, end)` covers every record consumed since
//! the last flush, including records skipped by the error policy, so a commit always advances the
//! partition's progress contiguously (invariant 2).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{
    Int32Builder, Int64Builder, LargeBinaryBuilder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Schema as ArrowSchema, SchemaRef};
use iceberg::spec::Schema;

use crate::decode::{Decoder, Format, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::METADATA_COLUMNS;

pub mod hot;
pub mod policy;

pub use crate::progress::{OffsetRange, TopicPartition};

/// One record header: name and value (a header may have no value).
pub type Header<'a> = (&'a str, Option<&'a [u8]>);

/// The Kafka metadata of one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch, if the record has one.
    pub timestamp_ms: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The headers, when the table stores them (`kafka.include_headers`).
    pub headers: Option<&'a [Header<'a>]>,
}

/// Rows decoded with one table schema.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The Iceberg schema the rows were decoded with (it carries the field ids).
    pub schema: Arc<Schema>,
    /// The rows.
    pub batch: RecordBatch,
}

/// Everything a flush writes and commits.
#[derive(Debug, Clone)]
pub struct FlushBatch {
    /// The rows, in consumption order.
    pub chunks: Vec<Chunk>,
    /// The offset range of every partition consumed since the previous flush.
    pub ranges: BTreeMap<TopicPartition, OffsetRange>,
    /// Rows in `chunks`.
    pub rows: usize,
    /// Records consumed but not stored (skipped by the error policy).
    pub skipped: usize,
    /// Estimated bytes of the rows.
    pub bytes: usize,
    /// The newest Kafka timestamp among the rows (ms since the epoch).
    pub max_timestamp_ms: Option<i64>,
    /// Offsets Kafka no longer had when a partition resumed (retention passed the table's progress) and
    /// that `kafka.on_data_loss = "skip"` jumped over; each range ends where the partition's range starts.
    pub gaps: BTreeMap<TopicPartition, OffsetRange>,
    /// The flush's tag in the table's hot view (its rows' LSNs live there).
    pub hot: u64,
}

impl FlushBatch {
    /// The batch without the rows and ranges of `revoked` partitions; `None` if nothing is left.
    pub fn without(mut self, revoked: &[TopicPartition]) -> Result<Option<FlushBatch>> {
        if !self.ranges.keys().any(|tp| revoked.contains(tp)) {
            return Ok(Some(self));
        }
        for chunk in &mut self.chunks {
            let (keep, removed) = filter_out(&chunk.batch, revoked)?;
            self.rows -= removed;
            chunk.batch = keep;
        }
        self.chunks.retain(|c| c.batch.num_rows() > 0);
        self.ranges.retain(|tp, _| !revoked.contains(tp));
        Ok((!self.ranges.is_empty()).then_some(self))
    }
}

/// Per-row overhead added to payload and key length when estimating memory.
const ROW_OVERHEAD_BYTES: usize = 48;

/// The hot buffer of one table.
pub struct TableBuffer {
    format: Format,
    evolve: bool,
    chunk_rows: usize,
    schema: Arc<Schema>,
    arrow: SchemaRef,
    payload_arrow: SchemaRef,
    decoder: Decoder,
    topics: StringBuilder,
    partitions: Int32Builder,
    offsets: Int64Builder,
    timestamps: TimestampMicrosecondBuilder,
    keys: LargeBinaryBuilder,
    headers: Option<MapBuilder<StringBuilder, LargeBinaryBuilder>>,
    open_rows: usize,
    chunks: Vec<Chunk>,
    ranges: BTreeMap<TopicPartition, OffsetRange>,
    /// Where each partition's next range starts: the offset it was assigned at, then one past the last
    /// consumed record. Ranges start here rather than at the first record, so gaps (compaction, transaction
    /// markers) never break contiguity.
    positions: std::collections::HashMap<TopicPartition, i64>,
    rows: usize,
    skipped: usize,
    bytes: usize,
    /// The estimated part of `bytes`: the rows not sealed into a chunk yet.
    open_bytes: usize,
    first_record_at: Option<Instant>,
    max_timestamp_ms: Option<i64>,
    /// The partition of the last record, for the allocation-free path of `advance`.
    last_partition: Option<TopicPartition>,
    /// Where sealed chunks are published (and stamped with LSNs).
    hot: Arc<hot::HotTable>,
}

impl TableBuffer {
    /// An empty buffer for a table with `schema`, publishing its rows to `hot`.
    pub fn new(
        format: Format,
        schema: Arc<Schema>,
        evolve: bool,
        chunk_rows: usize,
        hot: Arc<hot::HotTable>,
    ) -> Result<Self> {
        let (arrow, payload_arrow, decoder) = Self::codec(&format, &schema, evolve, chunk_rows)?;
        let headers = headers_builder(&arrow);
        Ok(Self {
            format,
            evolve,
            chunk_rows,
            schema,
            arrow,
            payload_arrow,
            decoder,
            topics: StringBuilder::new(),
            partitions: Int32Builder::new(),
            offsets: Int64Builder::new(),
            timestamps: TimestampMicrosecondBuilder::new().with_timezone("+00:00"),
            keys: LargeBinaryBuilder::new(),
            headers,
            open_rows: 0,
            chunks: Vec::new(),
            ranges: BTreeMap::new(),
            positions: std::collections::HashMap::new(),
            rows: 0,
            skipped: 0,
            bytes: 0,
            open_bytes: 0,
            first_record_at: None,
            max_timestamp_ms: None,
            last_partition: None,
            hot,
        })
    }

    fn codec(
        format: &Format,
        schema: &Schema,
        evolve: bool,
        chunk_rows: usize,
    ) -> Result<(SchemaRef, SchemaRef, Decoder)> {
        let arrow = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(schema)
                .map_err(|e| Error::new(ErrorKind::Internal, "cannot convert the table schema to Arrow").source(e))?,
        );
        let payload_fields: Vec<_> =
            arrow.fields().iter().filter(|f| !METADATA_COLUMNS.contains(&f.name().as_str())).cloned().collect();
        let payload_arrow = Arc::new(ArrowSchema::new(payload_fields));
        let decoder = Decoder::new(format, schema, payload_arrow.clone(), evolve, chunk_rows)?;
        Ok((arrow, payload_arrow, decoder))
    }

    /// The schema rows are decoded with now.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Switches to a new table schema (after evolution); rows decoded so far keep theirs.
    pub fn set_schema(&mut self, schema: Arc<Schema>) -> Result<()> {
        self.seal()?;
        let (arrow, payload_arrow, decoder) = Self::codec(&self.format, &schema, self.evolve, self.chunk_rows)?;
        self.headers = headers_builder(&arrow);
        self.schema = schema;
        self.arrow = arrow;
        self.payload_arrow = payload_arrow;
        self.decoder = decoder;
        Ok(())
    }

    /// Forgets the Protobuf decoder's plans (an operator's retry of a paused schema).
    pub fn forget_plans(&mut self) {
        if let Decoder::Registry(decoder) = &mut self.decoder {
            decoder.forget_plans();
        }
    }

    /// Decodes and buffers one record. Anything but [`Outcome::Appended`] leaves the buffer unchanged.
    pub fn push(&mut self, meta: &RecordMeta<'_>, value: Option<&[u8]>) -> Result<Outcome> {
        let outcome = self.decoder.append(value)?;
        if !matches!(outcome, Outcome::Appended) {
            return Ok(outcome);
        }
        self.topics.append_value(meta.topic);
        self.partitions.append_value(meta.partition);
        self.offsets.append_value(meta.offset);
        self.timestamps.append_option(meta.timestamp_ms.map(|ms| ms.saturating_mul(1000)));
        if let Some(ts) = meta.timestamp_ms {
            self.max_timestamp_ms = Some(self.max_timestamp_ms.map_or(ts, |m| m.max(ts)));
        }
        self.keys.append_option(meta.key);
        if let Some(builder) = &mut self.headers {
            append_headers(builder, meta.headers.unwrap_or_default())?;
        }
        self.open_rows += 1;
        self.rows += 1;
        let estimate = value.map_or(0, <[u8]>::len) + meta.key.map_or(0, <[u8]>::len) + ROW_OVERHEAD_BYTES;
        self.bytes += estimate;
        self.open_bytes += estimate;
        self.advance(meta.topic, meta.partition, meta.offset);
        if self.open_rows >= self.chunk_rows {
            self.seal()?;
        }
        Ok(Outcome::Appended)
    }

    /// Counts a record the error policy skipped: its offset is consumed, no row is stored.
    pub fn skip(&mut self, topic: &str, partition: i32, offset: i64) {
        self.skipped += 1;
        self.advance(topic, partition, offset);
    }

    fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        self.first_record_at.get_or_insert_with(Instant::now);
        // Records come in runs from one partition: update the last partition's range without allocating.
        if let Some(last) = &self.last_partition
            && last.partition == partition
            && last.topic == topic
            && let (Some(range), Some(position)) = (self.ranges.get_mut(last), self.positions.get_mut(last))
            && *position <= offset
        {
            range.end = range.end.max(offset + 1);
            *position = offset + 1;
            return;
        }
        let tp = TopicPartition { topic: topic.to_owned(), partition };
        self.last_partition = Some(tp.clone());
        let start = self.positions.get(&tp).copied().filter(|p| *p <= offset).unwrap_or(offset);
        self.positions.insert(tp.clone(), offset + 1);
        self.ranges
            .entry(tp)
            .and_modify(|r| r.end = r.end.max(offset + 1))
            .or_insert(OffsetRange { start, end: offset + 1 });
    }

    /// Sets where a partition's next range starts (on assignment, to the table's recorded progress).
    pub fn set_position(&mut self, tp: TopicPartition, next: i64) {
        self.positions.insert(tp, next);
    }

    /// The offset after the last consumed record of a partition (or where it was assigned).
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied()
    }

    /// Marks offsets up to `end` of a partition as consumed although no record was delivered for them
    /// (transaction markers or compacted records at the end of a partition), so the next commit records
    /// the partition's real position.
    pub fn cover(&mut self, tp: &TopicPartition, end: i64) {
        let Some(position) = self.position(tp) else { return };
        if end <= position {
            return;
        }
        self.first_record_at.get_or_insert_with(Instant::now);
        self.positions.insert(tp.clone(), end);
        self.ranges.entry(tp.clone()).and_modify(|r| r.end = end).or_insert(OffsetRange { start: position, end });
    }

    /// Records consumed since the last flush (stored or skipped).
    pub fn records(&self) -> usize {
        self.rows + self.skipped
    }

    /// Estimated bytes of the buffered rows.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rows buffered (records stored, skipped ones not counted).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// When the oldest record not yet flushed was consumed.
    pub fn first_record_at(&self) -> Option<Instant> {
        self.first_record_at
    }

    /// The partitions with buffered records and their ranges.
    pub fn ranges(&self) -> &BTreeMap<TopicPartition, OffsetRange> {
        &self.ranges
    }

    fn seal(&mut self) -> Result<()> {
        if self.open_rows == 0 {
            return Ok(());
        }
        let mut payload = self.decoder.finish(&self.payload_arrow)?.into_iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.arrow.fields().len());
        for field in self.arrow.fields() {
            let column: ArrayRef = match field.name().as_str() {
                crate::schema::COL_TOPIC => Arc::new(self.topics.finish()),
                crate::schema::COL_PARTITION => Arc::new(self.partitions.finish()),
                crate::schema::COL_OFFSET => Arc::new(self.offsets.finish()),
                crate::schema::COL_TIMESTAMP => Arc::new(self.timestamps.finish()),
                crate::schema::COL_KEY => Arc::new(self.keys.finish()),
                crate::schema::COL_HEADERS => match &mut self.headers {
                    Some(builder) => Arc::new(builder.finish()),
                    None => return Err(Error::new(ErrorKind::Internal, "the headers column has no builder")),
                },
                _ => payload
                    .next()
                    .ok_or_else(|| Error::new(ErrorKind::Internal, "the decoder returned too few columns"))?,
            };
            columns.push(column);
        }
        let batch = RecordBatch::try_new(self.arrow.clone(), columns)
            .map_err(|e| Error::new(ErrorKind::Internal, "cannot assemble a buffered batch").source(e))?;
        // A sealed chunk's real size replaces the estimate of its rows: decoded columns can take several
        // times the wire size (a wide Protobuf message), and `max_size_mb` caps memory, not payload.
        let real = batch.get_array_memory_size();
        self.bytes = self.bytes.saturating_sub(self.open_bytes).saturating_add(real.max(self.open_bytes));
        self.open_bytes = 0;
        let chunk = Chunk { schema: self.schema.clone(), batch };
        self.hot.publish(&chunk);
        self.chunks.push(chunk);
        self.open_rows = 0;
        Ok(())
    }

    /// Seals the rows decoded so far into a chunk, so readers of the hot view see them now.
    pub fn publish(&mut self) -> Result<()> {
        self.seal()
    }

    /// Rows decoded but not sealed into a chunk yet (not visible to readers).
    pub fn unpublished(&self) -> usize {
        self.open_rows
    }

    /// Takes everything buffered; `None` when nothing was consumed since the last flush.
    pub fn take(&mut self) -> Result<Option<FlushBatch>> {
        if self.ranges.is_empty() {
            return Ok(None);
        }
        self.seal()?;
        // Every owned partition's progress goes into every snapshot's ranges, as an empty range when it had
        // no records (`k2i.progress` carries every partition anyway; the ranges show what this flush saw).
        for (tp, &position) in &self.positions {
            self.ranges.entry(tp.clone()).or_insert(OffsetRange { start: position, end: position });
        }
        let flush = FlushBatch {
            hot: self.hot.take(),
            chunks: std::mem::take(&mut self.chunks),
            ranges: std::mem::take(&mut self.ranges),
            rows: self.rows,
            skipped: self.skipped,
            bytes: self.bytes,
            max_timestamp_ms: self.max_timestamp_ms.take(),
            gaps: BTreeMap::new(),
        };
        self.rows = 0;
        self.skipped = 0;
        self.bytes = 0;
        self.open_bytes = 0;
        self.first_record_at = None;
        Ok(Some(flush))
    }

    /// Drops the buffered rows and ranges of partitions this instance no longer owns.
    pub fn drop_partitions(&mut self, revoked: &[TopicPartition]) -> Result<usize> {
        // Sealed first: rows decoded but not published yet must not reach the hot view after it was cleaned.
        self.seal()?;
        self.hot.drop_partitions(revoked)?;
        self.positions.retain(|tp, _| !revoked.contains(tp));
        if !self.ranges.keys().any(|tp| revoked.contains(tp)) {
            return Ok(0);
        }
        let mut dropped = 0;
        for chunk in &mut self.chunks {
            let (keep, removed) = filter_out(&chunk.batch, revoked)?;
            dropped += removed;
            chunk.batch = keep;
        }
        self.chunks.retain(|c| c.batch.num_rows() > 0);
        self.ranges.retain(|tp, _| !revoked.contains(tp));
        self.positions.retain(|tp, _| !revoked.contains(tp));
        self.rows -= dropped;
        if self.ranges.is_empty() {
            self.rows = 0;
            self.skipped = 0;
            self.bytes = 0;
            self.open_bytes = 0;
            self.first_record_at = None;
        }
        Ok(dropped)
    }
}

/// A builder for the `_kafka_headers` column, if the schema has one, with its exact Arrow fields (ids).
fn headers_builder(arrow: &ArrowSchema) -> Option<MapBuilder<StringBuilder, LargeBinaryBuilder>> {
    let field = arrow.field_with_name(crate::schema::COL_HEADERS).ok()?;
    let arrow_schema::DataType::Map(entries, _) = field.data_type() else { return None };
    let arrow_schema::DataType::Struct(kv) = entries.data_type() else { return None };
    let (key, value) = (kv.first()?.clone(), kv.get(1)?.clone());
    let names = MapFieldNames { entry: entries.name().clone(), key: key.name().clone(), value: value.name().clone() };
    Some(
        MapBuilder::new(Some(names), StringBuilder::new(), LargeBinaryBuilder::new())
            .with_keys_field(key)
            .with_values_field(value),
    )
}

/// Appends one record's headers as a map; a name repeated in the record keeps its last value.
fn append_headers(builder: &mut MapBuilder<StringBuilder, LargeBinaryBuilder>, headers: &[Header<'_>]) -> Result<()> {
    for (i, (name, value)) in headers.iter().enumerate() {
        if headers[i + 1..].iter().any(|(later, _)| later == name) {
            continue;
        }
        builder.keys().append_value(name);
        builder.values().append_option(*value);
    }
    builder.append(true).map_err(|e| Error::new(ErrorKind::Internal, "cannot append record headers").source(e))
}

fn filter_out(batch: &RecordBatch, revoked: &[TopicPartition]) -> Result<(RecordBatch, usize)> {
    let keep = outside(batch, revoked)?;
    let removed = keep.false_count();
    let kept = arrow_select::filter::filter_record_batch(batch, &keep)
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot filter a buffered batch").source(e))?;
    Ok((kept, removed))
}

/// Which rows of `batch` are of partitions other than `revoked`.
fn outside(batch: &RecordBatch, revoked: &[TopicPartition]) -> Result<arrow_array::BooleanArray> {
    let (topics, partitions, _) = hot::metadata_columns(batch)?;
    Ok((0..batch.num_rows())
        .map(|i| Some(!revoked.iter().any(|tp| tp.partition == partitions.value(i) && tp.topic == topics.value(i))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(partition: i32, offset: i64) -> RecordMeta<'static> {
        RecordMeta {
            topic: "t",
            partition,
            offset,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"k"),
            headers: None,
        }
    }

    fn json_buffer(chunk_rows: usize) -> TableBuffer {
        TableBuffer::new(Format::Json, schema_for("json", ""), true, chunk_rows, hot()).unwrap()
    }

    fn hot() -> Arc<hot::HotTable> {
        Arc::new(hot::HotTable::new("ns.t".into(), 0, true))
    }

    fn schema_for(format: &str, extra: &str) -> Arc<Schema> {
        let text = format!(
            "[kafka]\nbootstrap_servers = [\"k:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n{extra}\n[kafka.format]\ntype = \"{format}\"\n[iceberg]\ntable_name = \"t\"\n"
        );
        let config = crate::config::from_toml(&text, std::path::Path::new("t.toml"), &Default::default()).unwrap();
        Arc::new(crate::schema::initial_schema(&config).unwrap())
    }

    #[test]
    fn raw_rows_keep_metadata_and_ranges() {
        let schema = schema_for("raw", "");
        let mut buffer = TableBuffer::new(Format::Raw, schema, true, 2, hot()).unwrap();
        for offset in 10..15 {
            assert!(matches!(buffer.push(&meta(0, offset), Some(b"v")).unwrap(), Outcome::Appended));
        }
        buffer.push(&meta(1, 7), None).unwrap();
        buffer.skip("t", 1, 8);
        let flush = buffer.take().unwrap().unwrap();
        assert_eq!((flush.rows, flush.skipped), (6, 1));
        assert_eq!(flush.chunks.iter().map(|c| c.batch.num_rows()).sum::<usize>(), 6);
        assert_eq!(
            flush.ranges[&TopicPartition { topic: "t".into(), partition: 0 }],
            OffsetRange { start: 10, end: 15 }
        );
        assert_eq!(flush.ranges[&TopicPartition { topic: "t".into(), partition: 1 }], OffsetRange { start: 7, end: 9 });
        assert!(buffer.take().unwrap().is_none());
        assert!(buffer.first_record_at().is_none());
    }

    #[test]
    fn json_records_need_columns_before_they_are_stored() {
        let mut buffer = json_buffer(100);
        let Outcome::NeedsColumns(adds) = buffer.push(&meta(0, 0), Some(br#"{"id": 1}"#)).unwrap() else {
            panic!("a new field needs a column")
        };
        assert_eq!(adds[0].name, "id");
        assert_eq!(buffer.records(), 0, "nothing was stored");
        let Outcome::Invalid { reason, .. } = buffer.push(&meta(0, 0), Some(b"[1]")).unwrap() else { panic!() };
        assert_eq!(reason, "the value is JSON but not an object (found an array)");
        let Outcome::Invalid { kind, reason } = buffer.push(&meta(0, 0), None).unwrap() else { panic!() };
        assert_eq!(kind, "tombstone");
        assert_eq!(reason, "the value is null (a tombstone), not a JSON object");
    }

    #[test]
    fn ranges_start_at_the_assigned_position_across_gaps() {
        let mut buffer = TableBuffer::new(Format::Raw, schema_for("raw", ""), true, 10, hot()).unwrap();
        let tp = TopicPartition { topic: "t".into(), partition: 0 };
        buffer.set_position(tp.clone(), 100);
        buffer.push(&meta(0, 103), Some(b"a")).unwrap();
        buffer.cover(&tp, 110);
        let flush = buffer.take().unwrap().unwrap();
        assert_eq!(flush.ranges[&tp], OffsetRange { start: 100, end: 110 });
        buffer.push(&meta(0, 112), Some(b"b")).unwrap();
        assert_eq!(buffer.take().unwrap().unwrap().ranges[&tp], OffsetRange { start: 110, end: 113 });
        buffer.cover(&tp, 120);
        let progress_only = buffer.take().unwrap().unwrap();
        assert_eq!((progress_only.rows, progress_only.ranges[&tp]), (0, OffsetRange { start: 113, end: 120 }));
    }

    #[test]
    fn headers_become_a_map_with_the_last_value_per_name() {
        use arrow_array::Array;
        let mut buffer =
            TableBuffer::new(Format::Raw, schema_for("raw", "include_headers = true"), true, 10, hot()).unwrap();
        let headers: [(&str, Option<&[u8]>); 3] = [("a", Some(b"1")), ("b", None), ("a", Some(b"2"))];
        let mut m = meta(0, 0);
        m.headers = Some(&headers);
        buffer.push(&m, Some(b"v")).unwrap();
        buffer.push(&meta(0, 1), Some(b"w")).unwrap();
        let flush = buffer.take().unwrap().unwrap();
        let column = flush.chunks[0].batch.column_by_name("_kafka_headers").unwrap();
        let map = column.as_any().downcast_ref::<arrow_array::MapArray>().unwrap();
        assert_eq!(map.value_length(0), 2, "`a` once, with its last value, and `b`");
        assert_eq!(map.value_length(1), 0);
    }

    #[test]
    fn idle_owned_partitions_are_recorded_with_an_empty_range() {
        let mut buffer = TableBuffer::new(Format::Raw, schema_for("raw", ""), true, 10, hot()).unwrap();
        buffer.set_position(TopicPartition { topic: "t".into(), partition: 1 }, 42);
        buffer.push(&meta(0, 5), Some(b"a")).unwrap();
        let flush = buffer.take().unwrap().unwrap();
        assert_eq!(
            flush.ranges[&TopicPartition { topic: "t".into(), partition: 1 }],
            OffsetRange { start: 42, end: 42 }
        );
        assert!(buffer.take().unwrap().is_none(), "no records, no flush");
    }

    #[test]
    fn revoked_partitions_are_dropped() {
        let mut buffer = TableBuffer::new(Format::Raw, schema_for("raw", ""), true, 3, hot()).unwrap();
        for offset in 0..4 {
            buffer.push(&meta(0, offset), Some(b"a")).unwrap();
            buffer.push(&meta(1, offset), Some(b"b")).unwrap();
        }
        let dropped = buffer.drop_partitions(&[TopicPartition { topic: "t".into(), partition: 1 }]).unwrap();
        assert_eq!(dropped, 4);
        let flush = buffer.take().unwrap().unwrap();
        assert_eq!(flush.rows, 4);
        assert_eq!(flush.ranges.len(), 1, "the revoked partition is gone, its position too");
        assert_eq!(flush.chunks.iter().map(|c| c.batch.num_rows()).sum::<usize>(), 4);
    }
}
