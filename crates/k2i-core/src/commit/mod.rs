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

/// Commits a flush as one snapshot, after checking on a fresh copy of the table that every partition's
/// recorded progress is where the flush starts. If the commit id is already in the table (an earlier attempt
/// landed and only its answer was lost) that snapshot is returned instead of committing twice.
pub async fn commit(table: &TableRef, request: CommitRequest<'_>) -> Result<Committed> {
    let props = HashMap::from([
        (PROP_OFFSETS.to_owned(), encode_offsets(request.ranges)),
        (PROP_COMMIT_ID.to_owned(), request.commit_id.to_owned()),
        (PROP_GROUP.to_owned(), request.group.to_owned()),
        (PROP_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ]);
    retry("commit", || async {
        let current = table.load().await?;
        if let Some(snapshot) = find_commit(&current, request.commit_id) {
            return Ok(Committed { snapshot_id: snapshot.snapshot_id(), table: current.clone() });
        }
        let wanted: Vec<TopicPartition> = request.ranges.keys().cloned().collect();
        let recorded = table_offsets(&current, &wanted)?;
        for (tp, range) in request.ranges {
            if let Some(&next) = recorded.get(tp)
                && next != range.start
            {
                return Err(Error::new(
                    ErrorKind::Fenced,
                    "the table's progress for a partition is not where this commit starts",
                )
                .with("table", table.table_name())
                .with("partition", tp)
                .with("table_next_offset", next)
                .with("commit_start", range.start)
                .with("commit_id", request.commit_id));
            }
        }
        let tx = Transaction::new(&current);
        let append = tx.fast_append().add_data_files(request.files.clone()).set_snapshot_properties(props.clone());
        let tx = append.apply(tx).map_err(|e| table.error("cannot prepare the commit", e))?;
        match tx.commit(table.catalog.as_ref()).await {
            Ok(updated) => {
                let snapshot = find_commit(&updated, request.commit_id).ok_or_else(|| {
                    Error::new(ErrorKind::Internal, "the committed snapshot is not in the table")
                        .with("commit_id", request.commit_id)
                })?;
                Ok(Committed { snapshot_id: snapshot.snapshot_id(), table: updated.clone() })
            }
            // The next attempt reloads the table first, so an ambiguous failure that did land is found by its id.
            Err(e) => Err(table.error("cannot commit the snapshot", e)),
        }
    })
    .await
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
