//! One scan: a table's cut ([`View`]) turned into a read-state — the committed files, the effective row
//! filter, the cut's watermarks, and the hot rows grouped by the schema they were decoded with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{Schema as ArrowSchema, SchemaRef};
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use k2i_rpc::message::{DataFileRef, ErrorCode, Filter, OffsetFrom, OffsetRangeRef, ScanBegin, Watermark};

use super::Refusal;

use crate::buffer::hot::{self, HotRows, View};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{self, Progress, TopicPartition};

/// Cuts remembered per table for `since_lsn` (each holds one watermark map).
const CUTS: usize = 1024;

/// What a scan sends.
pub struct ReadState {
    /// The cut.
    pub view: View,
    /// The cut's watermarks.
    pub watermarks: Progress,
    /// The committed files the reader must read (pruned by the filter).
    pub files: Vec<DataFileRef>,
    /// Delete files in the snapshot (not listed).
    pub delete_files: u64,
    /// The filter the reader applies to the files' rows (the hot rows have it applied).
    pub filter: Option<Filter>,
    /// Hot rows, one entry per run of one schema: (schema id, batches).
    pub streams: Vec<(i32, SchemaRef, Vec<RecordBatch>)>,
}

/// How long listing a snapshot's files may take before a scan gives up (`unavailable`).
const LISTING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A snapshot's files as a read-state lists them.
#[derive(Debug, Default, Clone)]
struct Listing {
    files: Vec<DataFileRef>,
    deletes: u64,
}

/// A listing's table (its uuid) and snapshot.
type SnapshotKey = (uuid::Uuid, i64);

/// A table's file listing (of the last snapshot asked: scans of one process see one snapshot at a time) and its
/// recent cuts.
#[derive(Default)]
pub struct TableCache {
    files: tokio::sync::Mutex<Option<(SnapshotKey, Arc<Listing>)>>,
    cuts: Mutex<BTreeMap<u64, Arc<Progress>>>,
}

impl TableCache {
    /// The files of the table's current snapshot, read once per snapshot (one scan reads, the others wait
    /// for it), within [`LISTING_TIMEOUT`]. An append on the snapshot listed before (every k2i commit) reads
    /// only the manifests it added: the cost does not grow with the table's history.
    async fn files(&self, table: &Table) -> Result<Arc<Listing>> {
        let Some(current) = table.metadata().current_snapshot() else { return Ok(Arc::default()) };
        let snapshot = current.snapshot_id();
        let key = (table.metadata().uuid(), snapshot);
        // The wait for another scan's listing counts against the same deadline.
        let listed = async {
            let mut cached = self.files.lock().await;
            // An `append` operation is trusted from a real summary only (iceberg-rust reads a v1 snapshot without
            // one as an append).
            let append = current.summary().operation == iceberg::spec::Operation::Append
                && (table.metadata().format_version() >= iceberg::spec::FormatVersion::V2
                    || !current.summary().additional_properties.is_empty());
            let previous = match cached.as_ref() {
                Some((held, listing)) if *held == key => return Ok(listing.clone()),
                Some(((uuid, id), listing))
                    if *uuid == key.0 && current.parent_snapshot_id() == Some(*id) && append =>
                {
                    Some(listing.clone())
                }
                _ => None,
            };
            let listing = Arc::new(match previous {
                Some(previous) => {
                    let added = data_files(table, Some(snapshot)).await?;
                    let mut listing = (*previous).clone();
                    listing.files.extend(added.files);
                    listing.deletes += added.deletes;
                    listing
                }
                None => data_files(table, None).await?,
            });
            *cached = Some((key, listing.clone()));
            Ok(listing)
        };
        tokio::time::timeout(LISTING_TIMEOUT, listed).await.map_err(|_| {
            Error::new(ErrorKind::Transient, "listing the snapshot's files took too long")
                .with("snapshot_id", snapshot)
                .with("timeout_s", LISTING_TIMEOUT.as_secs())
        })?
    }

    fn remember(&self, lsn: u64, watermarks: &Progress) {
        let mut cuts = self.cuts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cuts.entry(lsn).or_insert_with(|| Arc::new(watermarks.clone()));
        while cuts.len() > CUTS {
            cuts.pop_first();
        }
    }

    fn cut(&self, lsn: u64) -> Option<Arc<Progress>> {
        self.cuts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&lsn).cloned()
    }
}

/// An engine error as the client sees it: a bug or an I/O failure of the server (`unavailable` when it is
/// transient: the store or catalog is down).
fn internal(e: Error) -> Refusal {
    let code = if e.is_retryable() { ErrorCode::Unavailable } else { ErrorCode::Internal };
    Refusal(code, e.with_causes())
}

/// Builds the read-state of `request` on `view`.
pub async fn read_state(
    view: View,
    request: &ScanBegin,
    cache: &TableCache,
) -> std::result::Result<ReadState, Refusal> {
    let watermarks = watermarks(&view).map_err(internal)?;
    cache.remember(view.lsn, &watermarks);
    let since = match request.since_lsn {
        None => None,
        Some(lsn) if lsn == view.lsn => Some(watermarks.clone()),
        Some(lsn) => {
            Some(cache.cut(lsn).map(|w| (*w).clone()).or_else(|| snapshot_cut(view.table.metadata(), lsn)).ok_or_else(
                || {
                    Refusal(
                        ErrorCode::LsnNotServed,
                        format!(
                            "since_lsn {lsn} is neither a read-state this process served nor a k2i snapshot's LSN; \
                             pass the previous read-state's watermarks as filter.offsets_from instead"
                        ),
                    )
                },
            )?)
        }
    };
    let filter = effective_filter(request.filter.clone(), since);
    let listing = cache.files(&view.table).await.map_err(internal)?;
    let files = match &filter {
        Some(filter) => {
            let bounds = Bounds::of(filter);
            listing.files.iter().filter(|f| may_hold_rows(f, &bounds)).cloned().collect()
        }
        None => listing.files.clone(),
    };
    let columns = request.columns.as_deref();
    if let Some(columns) = columns {
        let schema = view.table.metadata().current_schema();
        let newest = view.hot.last().map(|rows| rows.batch.schema());
        if let Some(unknown) = columns.iter().find(|c| {
            schema.field_by_name(c).is_none() && newest.as_ref().is_none_or(|s| s.field_with_name(c).is_err())
        }) {
            return Err(Refusal(ErrorCode::InvalidRequest, format!("no column `{unknown}` in the table")));
        }
    }
    let streams = hot_streams(&view.hot, filter.as_ref(), columns).map_err(|e| match e.kind() {
        ErrorKind::Config => Refusal(ErrorCode::InvalidRequest, e.to_string()),
        _ => internal(e),
    })?;
    Ok(ReadState { view, watermarks, files, delete_files: listing.deletes, filter, streams })
}

/// The next offset of every partition once every row of the cut is read: the committed progress, raised by
/// the hot rows.
fn watermarks(view: &View) -> Result<Progress> {
    let mut marks = view.progress.clone();
    for rows in &view.hot {
        let (topics, partitions, offsets) = hot::metadata_columns(&rows.batch)?;
        for i in 0..rows.batch.num_rows() {
            let tp = TopicPartition { topic: topics.value(i).to_owned(), partition: partitions.value(i) };
            let next = offsets.value(i) + 1;
            let mark = marks.entry(tp).or_insert(next);
            *mark = (*mark).max(next);
        }
    }
    Ok(marks)
}

/// The watermarks of a k2i snapshot whose `k2i.lsn` is `lsn` (its `k2i.progress`).
fn snapshot_cut(metadata: &TableMetadata, lsn: u64) -> Option<Progress> {
    metadata
        .snapshots()
        .filter(|s| progress::snapshot_lsn(s) == Some(lsn))
        .find_map(|s| s.summary().additional_properties.get(progress::PROP_PROGRESS))
        .and_then(|text| progress::decode_progress(text).ok())
}

/// The request's filter with `since` watermarks raising its `offsets_from`.
fn effective_filter(filter: Option<Filter>, since: Option<Progress>) -> Option<Filter> {
    let Some(since) = since else { return filter };
    let mut filter = filter.unwrap_or_default();
    let mut from: HashMap<(String, i32), i64> = filter
        .offsets_from
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect();
    for (tp, next) in since {
        let entry = from.entry((tp.topic, tp.partition)).or_insert(next);
        *entry = (*entry).max(next);
    }
    let mut offsets: Vec<OffsetFrom> =
        from.into_iter().map(|((topic, partition), offset)| OffsetFrom { topic, partition, offset }).collect();
    offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    filter.offsets_from = Some(offsets);
    Some(filter)
}

/// Whether a committed file may hold rows the filter keeps. Files without offset ranges (written by
/// another engine: a compaction) always may.
fn may_hold_rows(file: &DataFileRef, bounds: &Bounds<'_>) -> bool {
    file.offset_ranges.is_empty()
        || file.offset_ranges.iter().any(|r| {
            let key = (r.topic.as_str(), r.partition);
            r.start < r.end
                && bounds.partitions.as_ref().is_none_or(|ps| ps.contains(&key))
                && r.end > bounds.from.get(&key).copied().unwrap_or(i64::MIN)
        })
}

/// A filter as lookups.
struct Bounds<'a> {
    partitions: Option<HashSet<(&'a str, i32)>>,
    from: HashMap<(&'a str, i32), i64>,
}

impl<'a> Bounds<'a> {
    fn of(filter: &'a Filter) -> Self {
        Self {
            partitions: filter
                .partitions
                .as_ref()
                .map(|ps| ps.iter().map(|p| (p.topic.as_str(), p.partition)).collect()),
            from: filter.offsets_from.iter().flatten().map(|o| ((o.topic.as_str(), o.partition), o.offset)).collect(),
        }
    }
}

/// The hot rows after the filter and the projection, grouped into runs of one schema.
fn hot_streams(
    hot: &[HotRows],
    filter: Option<&Filter>,
    columns: Option<&[String]>,
) -> Result<Vec<(i32, SchemaRef, Vec<RecordBatch>)>> {
    // Projection names are checked against the newest schema: a column added later reads null in older rows.
    let newest = hot.last().map(|rows| rows.batch.schema());
    let mut streams: Vec<(i32, SchemaRef, Vec<RecordBatch>)> = Vec::new();
    for rows in hot {
        let rows = match filter {
            Some(filter) => {
                let keep = k2i_rpc::client::filter_mask(&rows.batch, filter)
                    .map_err(|e| Error::new(ErrorKind::Internal, "cannot filter hot rows").source(e))?;
                hot::filter(rows, &keep)?
            }
            None => rows.clone(),
        };
        if rows.batch.num_rows() == 0 {
            continue;
        }
        let batch = match (columns, &newest) {
            (Some(columns), Some(newest)) => project(&rows.batch, columns, newest)?,
            _ => rows.batch,
        };
        let schema_id = rows.schema.schema_id();
        match streams.last_mut() {
            Some((id, schema, batches)) if *id == schema_id && *schema == batch.schema() => batches.push(batch),
            _ => streams.push((schema_id, batch.schema(), vec![batch])),
        }
    }
    Ok(streams)
}

/// The named columns of `batch`, in the order asked; a column of the newest schema that `batch` lacks reads
/// null.
fn project(batch: &RecordBatch, columns: &[String], newest: &SchemaRef) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for name in columns {
        if let Ok(index) = batch.schema().index_of(name) {
            fields.push(batch.schema().field(index).clone());
            arrays.push(batch.column(index).clone());
        } else if let Ok(field) = newest.field_with_name(name) {
            fields.push(field.clone().with_nullable(true));
            arrays.push(new_null_array(field.data_type(), batch.num_rows()));
        } else {
            return Err(Error::new(ErrorKind::Config, "no such column in the table").with("column", name));
        }
    }
    RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), arrays)
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot project hot rows").source(e))
}

/// The files of the table's current snapshot as the read-state lists them; with `added_by`, only those that
/// snapshot added (read from the manifests it added: a merged manifest also holds older files, left out).
async fn data_files(table: &Table, added_by: Option<i64>) -> Result<Listing> {
    let metadata = table.metadata();
    let mut out = Listing::default();
    let manifests = |m: &iceberg::spec::ManifestFile| added_by.is_none_or(|id| m.added_snapshot_id == id);
    let live = crate::recovery::live_files_of(table, manifests).await?;
    for live in live.into_iter().filter(|f| added_by.is_none_or(|id| f.snapshot_id == Some(id))) {
        let file = &live.data_file;
        if file.content_type() != iceberg::spec::DataContentType::Data {
            out.deletes += 1;
            continue;
        }
        let snapshot = live.snapshot_id.and_then(|id| metadata.snapshot_by_id(id));
        let offset_ranges = snapshot
            .and_then(|s| s.summary().additional_properties.get(progress::PROP_OFFSETS))
            .and_then(|text| progress::decode_ranges(text).ok())
            .map(|ranges| {
                ranges
                    .into_iter()
                    .filter(|(_, r)| r.start < r.end)
                    .map(|(tp, r)| OffsetRangeRef {
                        topic: tp.topic,
                        partition: tp.partition,
                        start: r.start,
                        end: r.end,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.files.push(DataFileRef {
            path: file.file_path().to_owned(),
            format: file.file_format().to_string().to_lowercase(),
            size: file.file_size_in_bytes(),
            rows: file.record_count(),
            partition: partition_json(metadata, live.spec_id, file),
            snapshot_id: live.snapshot_id.unwrap_or(-1),
            lsn: snapshot.and_then(|s| progress::snapshot_lsn(s)),
            offset_ranges,
        });
    }
    Ok(out)
}

/// A file's partition values by partition field name (`None` for an unpartitioned table).
fn partition_json(metadata: &TableMetadata, spec_id: i32, file: &iceberg::spec::DataFile) -> Option<serde_json::Value> {
    let spec = metadata.partition_spec_by_id(spec_id)?;
    if spec.fields().is_empty() {
        return None;
    }
    let schema = metadata.current_schema();
    let partition_type = spec.partition_type(schema).ok()?;
    let mut object = serde_json::Map::new();
    for ((field, value), typed) in spec.fields().iter().zip(file.partition().iter()).zip(partition_type.fields()) {
        let json = match value {
            Some(literal) => literal.clone().try_into_json(&typed.field_type).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        object.insert(field.name.clone(), json);
    }
    Some(serde_json::Value::Object(object))
}

/// Rows of hot parts as counted in the read-state.
pub fn rows(streams: &[(i32, SchemaRef, Vec<RecordBatch>)]) -> u64 {
    streams.iter().flat_map(|(_, _, batches)| batches).map(|b| b.num_rows() as u64).sum()
}

/// The watermarks as the protocol lists them.
pub fn watermark_list(marks: &Progress) -> Vec<Watermark> {
    marks
        .iter()
        .map(|(tp, next)| Watermark { topic: tp.topic.clone(), partition: tp.partition, next_offset: *next })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k2i_rpc::message::PartitionRef;

    fn file(ranges: &[(i32, i64, i64)]) -> DataFileRef {
        DataFileRef {
            path: "p".into(),
            format: "parquet".into(),
            size: 1,
            rows: 1,
            partition: None,
            snapshot_id: 1,
            lsn: None,
            offset_ranges: ranges
                .iter()
                .map(|&(partition, start, end)| OffsetRangeRef { topic: "t".into(), partition, start, end })
                .collect(),
        }
    }

    fn from(list: &[(i32, i64)]) -> Filter {
        Filter {
            partitions: None,
            offsets_from: Some(
                list.iter().map(|&(partition, offset)| OffsetFrom { topic: "t".into(), partition, offset }).collect(),
            ),
        }
    }

    #[test]
    fn files_wholly_below_the_offsets_are_pruned_and_foreign_files_kept() {
        let filter = from(&[(0, 100), (1, 50)]);
        let bounds = Bounds::of(&filter);
        assert!(!may_hold_rows(&file(&[(0, 0, 100), (1, 40, 50)]), &bounds));
        assert!(may_hold_rows(&file(&[(0, 0, 100), (1, 40, 51)]), &bounds));
        assert!(may_hold_rows(&file(&[(2, 0, 1)]), &bounds), "a partition without a bound is not restricted");
        assert!(may_hold_rows(&file(&[]), &bounds), "a file another engine wrote has no ranges");
        assert!(!may_hold_rows(&file(&[(0, 5, 5), (1, 0, 10)]), &bounds), "empty ranges do not count");
        let only =
            Filter { partitions: Some(vec![PartitionRef { topic: "t".into(), partition: 3 }]), offsets_from: None };
        assert!(!may_hold_rows(&file(&[(0, 0, 100)]), &Bounds::of(&only)), "a partition not listed");
    }

    #[test]
    fn since_watermarks_raise_the_requested_offsets() {
        let since = Progress::from([(TopicPartition { topic: "t".into(), partition: 0 }, 10)]);
        let filter = effective_filter(Some(from(&[(0, 20), (1, 5)])), Some(since.clone())).unwrap();
        let offsets: Vec<(i32, i64)> = filter.offsets_from.unwrap().iter().map(|o| (o.partition, o.offset)).collect();
        assert_eq!(offsets, [(0, 20), (1, 5)]);
        let filter = effective_filter(None, Some(since)).unwrap();
        assert_eq!(filter.offsets_from.unwrap()[0].offset, 10);
        assert!(effective_filter(None, None).is_none());
    }

    #[test]
    fn projection_fills_columns_older_rows_lack() {
        use arrow_array::Int64Array;
        use arrow_schema::{DataType, Field};
        let old = RecordBatch::try_from_iter([("a", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
        let newest = Arc::new(ArrowSchema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let out = project(&old, &["b".into(), "a".into()], &newest).unwrap();
        assert_eq!(out.schema().field(0).name(), "b");
        assert_eq!(out.column(0).null_count(), 2);
        assert!(project(&old, &["zz".into()], &newest).is_err());
    }
}
