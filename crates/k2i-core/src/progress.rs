//! The vocabulary every stage shares about Kafka progress, and the one walker of a table's snapshot chain.
//!
//! # Where progress lives
//! Iceberg is the source of truth for progress (invariant 1). Every k2i snapshot carries, in its summary:
//! - `k2i.offsets`: the offset ranges `[start, end)` of the records this snapshot adds, per partition;
//! - `k2i.progress`: the next offset of *every* partition the table has ever recorded, merged on the very
//!   base snapshot the commit's compare-and-swap is pinned to (so it is exact even with several instances);
//! - `k2i.commit-id`, `k2i.consumer-group`, `k2i.version`.
//!
//! The same commit also writes the table property `k2i.progress` (`{"commit-id": …, "offsets": …}`), because a
//! table property survives what a snapshot summary does not: another engine appends a snapshot and then
//! `expire_snapshots` keeps only that one — the k2i snapshot is gone from the metadata, its data is not.
//!
//! # Finding it
//! [`walk`] follows `parent-snapshot-id` from the current snapshot. A parent id that is no longer in the
//! metadata means the chain was truncated by snapshot expiry: it is reported as [`Step::Truncated`], never read
//! as "the chain ended". [`recorded`] takes the first k2i snapshot's `k2i.progress` (complete by construction);
//! snapshots written before `k2i.progress` existed (`k2i.offsets` only) are merged newest-first. If the chain
//! is truncated before a complete answer, the table property fills in. Rolling the table back to an older
//! snapshot makes that snapshot's ancestry the truth: the walk finds the older k2i snapshot first, so the
//! partitions resume where the table's data now ends. If a table that holds k2i data has neither (the chain
//! truncated and no property), progress cannot be established: that is an error, never "start over".
//!
//! # LSN
//! Every k2i snapshot also records `k2i.lsn`: the highest log sequence number of the table's rows once it is
//! visible (docs/rpc.md). The table property carries it too (`"lsn"`), so it survives expiry; [`table_lsn`]
//! takes the highest of both, so the LSN never goes back (also not after a rollback).

use std::collections::BTreeMap;

use iceberg::spec::{Snapshot, TableMetadata};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// Summary property: this snapshot's offset ranges per topic and partition.
pub const PROP_OFFSETS: &str = "k2i.offsets";
/// Summary property and table property: the next offset of every partition the table has recorded.
pub const PROP_PROGRESS: &str = "k2i.progress";
/// Summary property: the flush's unique id.
pub const PROP_COMMIT_ID: &str = "k2i.commit-id";
/// Summary property: the consumer group that wrote the snapshot.
pub const PROP_GROUP: &str = "k2i.consumer-group";
/// Summary property: the k2i version that wrote the snapshot.
pub const PROP_VERSION: &str = "k2i.version";
/// Summary property: the highest LSN of the table's rows once the snapshot is visible.
pub const PROP_LSN: &str = "k2i.lsn";
/// Table property set when k2i creates a table.
pub const PROP_CREATED_BY: &str = "k2i.created-by";

/// A Kafka partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// The first offset.
    pub start: i64,
    /// One past the last offset: the next offset to consume.
    pub end: i64,
}

/// The unique id of one flush (a UUID v7, so ids sort by creation time).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(String);

impl CommitId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as written in summaries and the transaction log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CommitId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The next offset per partition.
pub type Progress = BTreeMap<TopicPartition, i64>;

/// Why a `k2i.*` property cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("{property} is not JSON: {reason}")]
    NotJson {
        /// The property.
        property: &'static str,
        /// serde_json's message.
        reason: String,
    },
    /// A value has the wrong shape.
    #[error("{path} is not {expected}")]
    Shape {
        /// Where, e.g. `k2i.offsets.orders.3`.
        path: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A partition key is not a number.
    #[error("{path}: `{key}` is not a partition")]
    Partition {
        /// The enclosing object.
        path: String,
        /// The key.
        key: String,
    },
}

/// Encodes offset ranges as the `k2i.offsets` property: `{"<topic>": {"<partition>": [start, end]}}`.
pub fn encode_ranges(ranges: &BTreeMap<TopicPartition, OffsetRange>) -> String {
    let mut topics: BTreeMap<&str, BTreeMap<String, [i64; 2]>> = BTreeMap::new();
    for (tp, range) in ranges {
        topics.entry(&tp.topic).or_default().insert(tp.partition.to_string(), [range.start, range.end]);
    }
    serde_json::to_string(&topics).unwrap_or_default()
}

/// Decodes the `k2i.offsets` property.
pub fn decode_ranges(text: &str) -> Result<BTreeMap<TopicPartition, OffsetRange>, DecodeError> {
    let mut out = BTreeMap::new();
    for_each_partition(PROP_OFFSETS, text, |tp, value, path| {
        let pair = value.as_array().filter(|a| a.len() == 2).and_then(|a| Some((a[0].as_i64()?, a[1].as_i64()?)));
        let (start, end) = pair.ok_or(DecodeError::Shape { path, expected: "[start, end]" })?;
        out.insert(tp, OffsetRange { start, end });
        Ok(())
    })?;
    Ok(out)
}

/// Encodes progress as `{"<topic>": {"<partition>": next}}` (the `k2i.progress` summary property).
pub fn encode_progress(progress: &Progress) -> String {
    serde_json::to_string(&progress_value(progress)).unwrap_or_default()
}

fn progress_value(progress: &Progress) -> Value {
    let mut topics: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for (tp, next) in progress {
        topics.entry(&tp.topic).or_default().insert(tp.partition.to_string(), *next);
    }
    serde_json::to_value(topics).unwrap_or_default()
}

/// Decodes the `k2i.progress` summary property.
pub fn decode_progress(text: &str) -> Result<Progress, DecodeError> {
    let mut out = Progress::new();
    for_each_partition(PROP_PROGRESS, text, |tp, value, path| {
        let next = value.as_i64().ok_or(DecodeError::Shape { path, expected: "an offset" })?;
        out.insert(tp, next);
        Ok(())
    })?;
    Ok(out)
}

/// The table property `k2i.progress`: the last k2i commit's id, the whole progress map and the table's LSN.
pub fn encode_table_property(commit_id: &CommitId, progress: &Progress, lsn: u64) -> String {
    serde_json::json!({"commit-id": commit_id.as_str(), "offsets": progress_value(progress), "lsn": lsn}).to_string()
}

/// The table's LSN: the highest `k2i.lsn` of any snapshot in the metadata or of the table property (0 for a
/// table without one).
pub fn table_lsn(metadata: &TableMetadata) -> u64 {
    let property = metadata
        .properties()
        .get(PROP_PROGRESS)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|value| value.get("lsn").and_then(Value::as_u64));
    metadata.snapshots().filter_map(|s| snapshot_lsn(s)).chain(property).max().unwrap_or(0)
}

/// A k2i snapshot's `k2i.lsn`.
pub fn snapshot_lsn(snapshot: &Snapshot) -> Option<u64> {
    snapshot.summary().additional_properties.get(PROP_LSN)?.parse().ok()
}

/// Decodes the table property `k2i.progress` into the commit id that wrote it and the progress.
pub fn decode_table_property(text: &str) -> Result<(CommitId, Progress), DecodeError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::NotJson { property: PROP_PROGRESS, reason: e.to_string() })?;
    let shape = |path: &str, expected| DecodeError::Shape { path: format!("{PROP_PROGRESS}.{path}"), expected };
    let id = value.get("commit-id").and_then(Value::as_str).ok_or_else(|| shape("commit-id", "a string"))?;
    let offsets = value.get("offsets").ok_or_else(|| shape("offsets", "an object"))?;
    Ok((CommitId::from(id), decode_progress(&offsets.to_string())?))
}

fn for_each_partition(
    property: &'static str,
    text: &str,
    mut f: impl FnMut(TopicPartition, &Value, String) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson { property, reason: e.to_string() })?;
    let topics = value.as_object().ok_or(DecodeError::Shape { path: property.to_owned(), expected: "an object" })?;
    for (topic, partitions) in topics {
        let path = format!("{property}.{topic}");
        let partitions =
            partitions.as_object().ok_or(DecodeError::Shape { path: path.clone(), expected: "an object" })?;
        for (key, value) in partitions {
            let partition: i32 =
                key.parse().map_err(|_| DecodeError::Partition { path: path.clone(), key: key.clone() })?;
            f(TopicPartition { topic: topic.clone(), partition }, value, format!("{path}.{key}"))?;
        }
    }
    Ok(())
}

/// One step of [`walk`].
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// A snapshot of the chain, newest first.
    Snapshot(&'a Snapshot),
    /// The next parent is not in the metadata any more (expired): the chain goes on, but cannot be read.
    Truncated {
        /// The missing parent's id.
        missing: i64,
    },
}

/// The current snapshot's ancestry, newest first, ending with [`Step::Truncated`] if expiry cut it. This is
/// the only walk of a snapshot chain in k2i: progress lookup, "did my commit land" and recovery all use it.
pub fn walk(metadata: &TableMetadata) -> impl Iterator<Item = Step<'_>> {
    let mut next = metadata.current_snapshot_id().map(Ok::<i64, i64>);
    // Bounded by the number of snapshots: malformed metadata with a parent cycle must not loop forever
    // (this also runs inside the rebalance callback).
    let mut left = metadata.snapshots().len() + 1;
    std::iter::from_fn(move || {
        left = left.checked_sub(1)?;
        let id = next.take()?.ok()?;
        match metadata.snapshot_by_id(id) {
            Some(snapshot) => {
                next = snapshot.parent_snapshot_id().map(Ok);
                Some(Step::Snapshot(snapshot.as_ref()))
            }
            None => Some(Step::Truncated { missing: id }),
        }
    })
}

/// The commit id of a k2i snapshot.
pub fn commit_id_of(snapshot: &Snapshot) -> Option<&str> {
    snapshot.summary().additional_properties.get(PROP_COMMIT_ID).map(String::as_str)
}

/// What a table records about progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The next offset of every partition the table has recorded.
    pub progress: Progress,
    /// Where it came from.
    pub source: Source,
}

/// Where [`Recorded`] progress was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Source {
    /// Nothing recorded: the table has no k2i data.
    #[default]
    Nothing,
    /// The newest k2i snapshot of the current chain.
    Snapshot(i64),
    /// The table property (the chain was truncated by expiry before any k2i snapshot).
    TableProperty,
}

fn corrupt(table: &TableMetadata, snapshot: Option<i64>, e: DecodeError) -> Error {
    let error = Error::new(ErrorKind::Corrupt, "a k2i progress property of the table is malformed")
        .with("table_uuid", table.uuid())
        .with("reason", &e);
    match snapshot {
        Some(id) => error.with("snapshot_id", id),
        None => error.with("property", PROP_PROGRESS),
    }
}

/// The progress the table records (see the module docs for the rules). `Err` when the table holds k2i data
/// but its progress cannot be established, or a property is malformed: both are for the operator to fix,
/// not to retry.
pub fn recorded(metadata: &TableMetadata) -> Result<Recorded> {
    let mut legacy = Progress::new();
    let mut legacy_at = None;
    for step in walk(metadata) {
        let snapshot = match step {
            Step::Snapshot(s) => s,
            Step::Truncated { missing } => return truncated(metadata, legacy, legacy_at, missing),
        };
        let props = &snapshot.summary().additional_properties;
        if let Some(text) = props.get(PROP_PROGRESS) {
            let mut progress = decode_progress(text).map_err(|e| corrupt(metadata, Some(snapshot.snapshot_id()), e))?;
            // Older snapshots never override newer ones; newer `k2i.offsets`-only snapshots cannot exist after a
            // `k2i.progress` one, but merge them anyway rather than lose them.
            progress.extend(legacy);
            return Ok(Recorded { progress, source: Source::Snapshot(legacy_at.unwrap_or(snapshot.snapshot_id())) });
        }
        if let Some(text) = props.get(PROP_OFFSETS) {
            let ranges = decode_ranges(text).map_err(|e| corrupt(metadata, Some(snapshot.snapshot_id()), e))?;
            for (tp, range) in ranges {
                legacy.entry(tp).or_insert(range.end);
            }
            legacy_at.get_or_insert(snapshot.snapshot_id());
        }
    }
    match legacy_at {
        Some(id) => Ok(Recorded { progress: legacy, source: Source::Snapshot(id) }),
        // The chain ended without a k2i snapshot. Some expiry implementations (pyiceberg's) clear the parent
        // id of the oldest snapshot they keep, so this is often truncation in disguise.
        None => without_chain(metadata, None),
    }
}

/// No k2i snapshot is in the current chain (it ended, or was cut at `missing`); `legacy` partitions were
/// found in snapshots written before `k2i.progress` existed.
fn truncated(metadata: &TableMetadata, legacy: Progress, legacy_at: Option<i64>, missing: i64) -> Result<Recorded> {
    match legacy_at {
        // Written before the table property existed: every such flush recorded all its owned partitions; the
        // property, if a later commit wrote it, is newer only if the chain below it was rolled back.
        Some(id) => Ok(Recorded { progress: legacy, source: Source::Snapshot(id) }),
        None => without_chain(metadata, Some(missing)),
    }
}

fn without_chain(metadata: &TableMetadata, missing: Option<i64>) -> Result<Recorded> {
    let in_metadata = |id: &str| metadata.snapshots().any(|s| commit_id_of(s) == Some(id));
    if let Some(text) = metadata.properties().get(PROP_PROGRESS) {
        let (id, progress) = decode_table_property(text).map_err(|e| corrupt(metadata, None, e))?;
        // The commit the property names is still in the metadata but not in the current chain: the table was
        // rolled back to before any k2i data, which is gone from the table — every partition starts over.
        // Otherwise that commit was expired and the property is the truth (k2i snapshots kept off the chain
        // by a tag or a branch do not change that).
        if in_metadata(id.as_str()) {
            return Ok(Recorded::default());
        }
        return Ok(Recorded { progress, source: Source::TableProperty });
    }
    // No property (a table written before it existed): k2i snapshots off the chain mean a rollback.
    if metadata.snapshots().any(|s| commit_id_of(s).is_some()) {
        return Ok(Recorded::default());
    }
    // A table k2i wrote whose chain no longer shows any of it: truncated by expiry (some implementations
    // also clear the kept snapshot's parent id, so an ended chain with data is treated the same).
    let cut = missing
        .or_else(|| metadata.current_snapshot_id().filter(|_| metadata.properties().contains_key(PROP_CREATED_BY)));
    match cut {
        Some(missing) if holds_k2i_data(metadata) => Err(Error::new(
            ErrorKind::Corrupt,
            "cannot establish the table's Kafka progress: the snapshot chain was expired past every k2i snapshot \
             and the table has no k2i.progress property",
        )
        .with("table_uuid", metadata.uuid())
        .with("chain_cut_at_snapshot", missing)
        .with("fix", "set it explicitly with `k2i table set-progress --offset TOPIC/PARTITION=OFFSET`")),
        _ => Ok(Recorded::default()),
    }
}

/// Whether k2i wrote to this table (created it, or a k2i snapshot is still in the metadata).
fn holds_k2i_data(metadata: &TableMetadata) -> bool {
    metadata.properties().contains_key(PROP_CREATED_BY) || metadata.snapshots().any(|s| commit_id_of(s).is_some())
}

/// Whether a commit is in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    /// Its snapshot is in the current chain.
    Snapshot(i64),
    /// Its snapshot was expired, but the table property names it as the last k2i commit.
    Expired,
    /// Not in the table.
    No,
}

/// Looks for `commit_id` in the current chain. `bases` are the snapshots the commit's attempts were pinned
/// to: a commit lands as a child of its base, so the walk stops at the first base it meets (a commit costs
/// O(snapshots since its base), not O(table history)). With no bases known it walks the whole chain (recovery
/// of an intent logged before attempts were recorded); the live path never asks before its first attempt.
pub fn find_commit(metadata: &TableMetadata, commit_id: &CommitId, bases: &[Option<i64>]) -> Landed {
    for step in walk(metadata) {
        match step {
            Step::Snapshot(snapshot) => {
                if commit_id_of(snapshot) == Some(commit_id.as_str()) {
                    return Landed::Snapshot(snapshot.snapshot_id());
                }
                if bases.contains(&Some(snapshot.snapshot_id())) {
                    return Landed::No;
                }
            }
            Step::Truncated { .. } => break,
        }
    }
    let named = metadata
        .properties()
        .get(PROP_PROGRESS)
        .and_then(|text| decode_table_property(text).ok())
        .is_some_and(|(id, _)| &id == commit_id);
    if named { Landed::Expired } else { Landed::No }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }

    #[test]
    fn offsets_round_trip_through_the_summary_property() {
        let mut ranges = BTreeMap::new();
        ranges.insert(tp("a", 0), OffsetRange { start: 0, end: 10 });
        ranges.insert(tp("a", 3), OffsetRange { start: 5, end: 6 });
        ranges.insert(tp("b.c", 1), OffsetRange { start: 100, end: 200 });
        let text = encode_ranges(&ranges);
        assert_eq!(text, r#"{"a":{"0":[0,10],"3":[5,6]},"b.c":{"1":[100,200]}}"#);
        assert_eq!(decode_ranges(&text).unwrap(), ranges);
        assert_eq!(
            decode_ranges(r#"{"a":{"x":[0,1]}}"#).unwrap_err().to_string(),
            "k2i.offsets.a: `x` is not a partition"
        );
        assert_eq!(decode_ranges(r#"{"a":{"0":[1]}}"#).unwrap_err().to_string(), "k2i.offsets.a.0 is not [start, end]");
        assert!(matches!(decode_ranges("{"), Err(DecodeError::NotJson { .. })));
    }

    #[test]
    fn progress_and_the_table_property_round_trip() {
        let progress = Progress::from([(tp("a", 0), 10), (tp("a", 1), 0), (tp("b", 7), 3)]);
        let text = encode_progress(&progress);
        assert_eq!(text, r#"{"a":{"0":10,"1":0},"b":{"7":3}}"#);
        assert_eq!(decode_progress(&text).unwrap(), progress);
        let id = CommitId::generate();
        let (back_id, back) = decode_table_property(&encode_table_property(&id, &progress, 7)).unwrap();
        assert_eq!((back_id, back), (id, progress));
        assert_eq!(decode_progress(r#"{"a":{"0":"x"}}"#).unwrap_err().to_string(), "k2i.progress.a.0 is not an offset");
        assert_eq!(
            decode_table_property(r#"{"offsets":{}}"#).unwrap_err().to_string(),
            "k2i.progress.commit-id is not a string"
        );
    }
}
