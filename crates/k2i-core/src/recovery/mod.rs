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
pub async fn recover(log: &mut TxLog, table: &Table) -> Result<RecoveryReport> {
    crate::fault::hit(crate::fault::Point::Recovery);
    let pending: Vec<Pending> = log.pending().cloned().collect();
    let mut report = RecoveryReport::default();
    for flush in pending {
        let commit_id = flush.commit_id().to_owned();
        if let Some(snapshot) = find_commit(table, &commit_id) {
            tracing::info!(commit_id, snapshot_id = snapshot.snapshot_id(), "recovery: the flush had committed");
            log.append(Record::Committed { commit_id: commit_id.clone(), snapshot_id: snapshot.snapshot_id() })?;
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

/// Deletes the data files of a flush that will never be committed; returns how many existed.
pub async fn delete_flush_files(table: &Table, flush: &Pending) -> Result<usize> {
    let Record::Intent { commit_id, data_dir, .. } = &flush.intent else { return Ok(0) };
    let mut files: Vec<String> = match &flush.files {
        Some(Record::Files { files, .. }) => files.clone(),
        _ => Vec::new(),
    };
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
