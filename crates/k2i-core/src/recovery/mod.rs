//! Start-up recovery: reconciling the transaction log with the table before consuming anything.
//!
//! For every flush the log has an intent for but no outcome:
//! - its commit id is in the table's snapshot chain → the commit landed before the crash (only the
//!   committed record was lost): record it as committed;
//! - it is not → it never will be: delete its data files (those listed in its files record, and — for a
//!   local warehouse — every file in the data directory whose name starts with `k2i-<commit id>-`, which also
//!   catches files written before the files record), then record it as aborted.
//!
//! Then the log is checkpointed (bounded size). Progress itself is never taken from the log: partitions
//! resume from the offsets in the table's snapshot summaries. So losing the whole log directory cannot break
//! exactly-once; it can only leave orphan data files, for maintenance to remove.

use std::collections::HashSet;

use iceberg::spec::ManifestList;
use iceberg::table::Table;

use crate::commit::find_commit;
use crate::error::{Error, ErrorKind, Result};
use crate::txlog::{Pending, Record, TxLog};

/// What recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Flushes found committed in the table.
    pub landed: Vec<String>,
    /// Flushes rolled back, with the number of data files deleted for each.
    pub rolled_back: Vec<(String, usize)>,
}

/// Resolves every pending flush of the log against the table.
pub async fn recover(log: &mut TxLog, table: &Table, table_name: &str) -> Result<RecoveryReport> {
    crate::fault::hit(crate::fault::Point::Recovery);
    let pending: Vec<Pending> = log.pending().cloned().collect();
    let mut report = RecoveryReport::default();
    let mut live: Option<HashSet<String>> = None;
    for flush in pending {
        let commit_id = flush.commit_id().to_owned();
        if let Record::Intent { table: intent_table, .. } = &flush.intent
            && intent_table != table_name
        {
            // Written while this log served another table: that table's flushes are not ours to judge.
            tracing::warn!(commit_id, table = intent_table, "recovery: skipping a flush of another table");
            continue;
        }
        if let Some(snapshot) = find_commit(table, &commit_id) {
            tracing::info!(commit_id, snapshot_id = snapshot.snapshot_id(), "recovery: the flush had committed");
            log.append(Record::Committed { commit_id: commit_id.clone(), snapshot_id: snapshot.snapshot_id() })?;
            report.landed.push(commit_id);
            continue;
        }
        // The snapshot that committed the flush may have been expired (snapshot expiry by any engine), so its
        // absence from the chain does not prove it never landed: never delete a file the table references.
        if live.is_none() {
            live = Some(live_data_files(table).await?);
        }
        let live = live.as_ref().expect("just loaded");
        if flush_files(&flush).iter().any(|f| live.iter().any(|l| same_file(l, f))) {
            tracing::warn!(
                commit_id,
                "recovery: the flush's files are in the table (its snapshot was expired); keeping them"
            );
            log.append(Record::Committed { commit_id: commit_id.clone(), snapshot_id: -1 })?;
            report.landed.push(commit_id);
            continue;
        }
        let deleted = delete_flush_files(table, &flush).await?;
        tracing::info!(commit_id, deleted_files = deleted, "recovery: the flush never committed; rolled back");
        log.append(Record::Aborted {
            commit_id: commit_id.clone(),
            reason: "not committed before the process stopped".into(),
        })?;
        report.rolled_back.push((commit_id, deleted));
    }
    log.checkpoint()?;
    Ok(report)
}

fn flush_files(flush: &Pending) -> Vec<String> {
    match &flush.files {
        Some(Record::Files { files, .. }) => files.clone(),
        _ => Vec::new(),
    }
}

/// Every data file the table's current snapshot references.
pub async fn live_data_files(table: &Table) -> Result<HashSet<String>> {
    let mut live = HashSet::new();
    let Some(snapshot) = table.metadata().current_snapshot() else { return Ok(live) };
    let fail = |what: &str, e: iceberg::Error| {
        Error::new(ErrorKind::Catalog, what.to_owned()).with("table", table.identifier()).source(e)
    };
    let io = table.file_io();
    let bytes = io
        .new_input(snapshot.manifest_list())
        .map_err(|e| fail("cannot open the manifest list", e))?
        .read()
        .await
        .map_err(|e| fail("cannot read the manifest list", e))?;
    let list = ManifestList::parse_with_version(&bytes, table.metadata().format_version())
        .map_err(|e| fail("cannot parse the manifest list", e))?;
    for manifest_file in list.entries() {
        let manifest = manifest_file.load_manifest(io).await.map_err(|e| fail("cannot read a manifest", e))?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            live.insert(entry.data_file().file_path().to_owned());
        }
    }
    Ok(live)
}

/// Deletes the data files of a flush that will never be committed; returns how many existed.
pub async fn delete_flush_files(table: &Table, flush: &Pending) -> Result<usize> {
    let Record::Intent { commit_id, data_dir, .. } = &flush.intent else { return Ok(0) };
    let mut files = flush_files(flush);
    // Files written before the files record (a crash mid-write) are found by name in a local warehouse.
    if let Some(dir) = local_path(data_dir) {
        let prefix = format!("k2i-{commit_id}-");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    let path = format!("{}/{}", data_dir.trim_end_matches('/'), name.to_string_lossy());
                    if !files.iter().any(|f| same_file(f, &path)) {
                        files.push(path);
                    }
                }
            }
        }
    } else if flush.files.is_none() {
        tracing::warn!(
            commit_id,
            data_dir,
            "cannot list an object-store data directory; files of this flush may remain as orphans"
        );
    }
    let io = table.file_io();
    let mut deleted = 0;
    for file in files {
        let exists = io
            .exists(&file)
            .await
            .map_err(|e| Error::new(ErrorKind::Catalog, "cannot check a data file").with("file", &file).source(e))?;
        if exists {
            io.delete(&file).await.map_err(|e| {
                Error::new(ErrorKind::Catalog, "cannot delete a data file").with("file", &file).source(e)
            })?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// The local directory of a `file:` location.
fn local_path(location: &str) -> Option<std::path::PathBuf> {
    let path = location.strip_prefix("file://").or_else(|| location.strip_prefix("file:"))?;
    Some(std::path::PathBuf::from(if path.starts_with('/') { path.to_owned() } else { format!("/{path}") }))
}

fn same_file(a: &str, b: &str) -> bool {
    local_path(a).zip(local_path(b)).map_or(a == b, |(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_locations_map_to_local_paths() {
        assert_eq!(local_path("file:///w/db/t/data").unwrap(), std::path::PathBuf::from("/w/db/t/data"));
        assert_eq!(local_path("file:/w/db/t/data").unwrap(), std::path::PathBuf::from("/w/db/t/data"));
        assert!(local_path("s3://b/w").is_none());
        assert!(same_file("file:/w/a.parquet", "file:///w/a.parquet"));
    }
}
