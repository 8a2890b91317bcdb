//! Start-up recovery: reconciling the transaction log with the table before consuming anything.
//!
//! For every flush the log has an intent for but no outcome (each intent lists the base snapshot of every
//! commit attempt it made):
//! - its commit id is in the table's snapshot chain (walked back only to its newest attempt's base), or the
//!   table's `k2i.progress` property names it (its snapshot was expired) → it landed before the crash (only
//!   the committed record was lost): record it as committed;
//! - it is not, and an attempt could still land → keep its files. That is a remote (REST) catalog whose main
//!   branch still points at an attempt's base: a request the server holds may yet be applied (invariant 9:
//!   an unknown outcome is not a failure). The files stay for orphan cleanup if it never lands; the flush's
//!   records are read again from the table's progress and, if the old request lands first, the new commit
//!   is fenced. With an embedded SQL catalog the commit ran in the dead process and cannot land later;
//! - otherwise it never will: [`abort`] it — delete its data files unless the table references them (those
//!   listed in its files record, and — for a local warehouse — every file in the data directory whose name
//!   starts with `k2i-<commit id>-`, which also catches files written before the files record), then record
//!   it as aborted. The live path uses the same [`abort`] for a fenced flush.
//!
//! Then the log is checkpointed (bounded size). Progress itself is never taken from the log: partitions
//! resume from the offsets in the table. So losing the whole log directory cannot break exactly-once; it
//! can only leave orphan data files, for maintenance to remove.

use std::collections::HashSet;

use iceberg::spec::ManifestList;
use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::progress::{self, CommitId, Landed};
use crate::txlog::{Pending, Record, TxLog};

/// What recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Flushes found committed in the table.
    pub landed: Vec<String>,
    /// Flushes rolled back, with the number of data files deleted for each.
    pub rolled_back: Vec<(String, usize)>,
    /// Flushes whose outcome is unknown and whose commit could still land: files kept.
    pub kept: Vec<String>,
}

/// Resolves every pending flush of the log against the table. `remote`: the catalog is a server that may
/// still apply a request the dead process sent (REST), not an embedded database.
pub async fn recover(log: &mut TxLog, table: &Table, table_name: &str, remote: bool) -> Result<RecoveryReport> {
    crate::fault::hit(crate::fault::Point::Recovery);
    let pending: Vec<Pending> = log.pending().cloned().collect();
    let mut report = RecoveryReport::default();
    let metadata = table.metadata();
    for flush in pending {
        let commit_id = CommitId::from(flush.commit_id());
        if flush.intent.table != table_name {
            let intent_table = &flush.intent.table;
            // Written while this log served another table: that table's flushes are not ours to judge.
            tracing::warn!(%commit_id, table = intent_table, "recovery: skipping a flush of another table");
            continue;
        }
        let landed = progress::find_commit(metadata, &commit_id, &flush.bases);
        if let Landed::Snapshot(_) | Landed::Expired = landed {
            let snapshot_id = if let Landed::Snapshot(id) = landed { id } else { -1 };
            tracing::info!(%commit_id, snapshot_id, "recovery: the flush had committed");
            log.append(Record::Committed { commit_id: commit_id.to_string(), snapshot_id })?;
            report.landed.push(commit_id.to_string());
            continue;
        }
        if remote && could_still_land(table, &flush.bases) {
            tracing::warn!(
                %commit_id,
                "recovery: the flush's last commit attempt has an unknown outcome and could still land; keeping its files"
            );
            log.append(Record::Aborted {
                commit_id: commit_id.to_string(),
                reason: "outcome unknown; files kept for orphan cleanup".into(),
            })?;
            report.kept.push(commit_id.to_string());
            continue;
        }
        let outcome = abort(table, &flush).await?;
        let deleted = match outcome {
            Aborted::Deleted(n) => n,
            Aborted::Referenced => {
                tracing::warn!(%commit_id, "recovery: the flush's files are in the table (its snapshot was expired); keeping them");
                log.append(Record::Committed { commit_id: commit_id.to_string(), snapshot_id: -1 })?;
                report.landed.push(commit_id.to_string());
                continue;
            }
        };
        tracing::info!(%commit_id, deleted_files = deleted, "recovery: the flush never committed; rolled back");
        log.append(Record::Aborted {
            commit_id: commit_id.to_string(),
            reason: "not committed before the process stopped".into(),
        })?;
        report.rolled_back.push((commit_id.to_string(), deleted));
    }
    log.checkpoint()?;
    Ok(report)
}

/// Whether a commit attempt pinned to one of `bases` could still be applied: the main branch has not moved
/// past every base (the compare-and-swap requires main to be the base).
fn could_still_land(table: &Table, bases: &[Option<i64>]) -> bool {
    bases.contains(&table.metadata().current_snapshot_id())
}

/// What [`abort`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The flush's files were deleted (how many existed).
    Deleted(usize),
    /// A file of the flush is referenced by the table: the flush landed after all (its snapshot was
    /// expired); nothing was deleted.
    Referenced,
}

/// Rolls back a flush that will never be committed: deletes its data files, unless the table references
/// one of them (then the flush landed and nothing is touched).
pub async fn abort(table: &Table, flush: &Pending) -> Result<Aborted> {
    let files = flush_files(table, flush).await?;
    if !files.is_empty() {
        let live = live_data_files(table).await?;
        if files.iter().any(|f| live.iter().any(|l| same_file(l, f))) {
            return Ok(Aborted::Referenced);
        }
    }
    delete_files(table, files).await.map(Aborted::Deleted)
}

/// The flush's data files: those in its files record and those written before the files record (a crash
/// mid-write): for a local warehouse every file in the data directory whose name starts with
/// `k2i-<commit id>-`; on an object store (no cheap listing) the names the writer gives them, probed in the
/// order it writes them ([`crate::sink::data_file_name`]: group by group, file by file, none skipped), so a
/// missing name ends each sequence. An interrupted multipart upload leaves no object, only parts that the
/// bucket's lifecycle rule for incomplete uploads removes.
async fn flush_files(table: &Table, flush: &Pending) -> Result<Vec<String>> {
    let (commit_id, data_dir) = (&flush.intent.commit_id, &flush.intent.data_dir);
    let mut files = flush.files().to_vec();
    let add = |files: &mut Vec<String>, path: String| {
        if !files.iter().any(|f| same_file(f, &path)) {
            files.push(path);
        }
    };
    if let Some(dir) = local_path(data_dir) {
        let prefix = format!("k2i-{commit_id}-");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_str().is_some_and(|n| n.starts_with(&prefix)) {
                    add(&mut files, format!("{}/{}", data_dir.trim_end_matches('/'), name.to_string_lossy()));
                }
            }
        }
    } else if flush.files.is_none() {
        let io = table.file_io();
        let exists = async |path: &str| {
            io.exists(path).await.map_err(|e| Error::iceberg("cannot check a data file", e).with("file", path))
        };
        'groups: for group in 0.. {
            for file in 0.. {
                let path = format!(
                    "{}/{}",
                    data_dir.trim_end_matches('/'),
                    crate::sink::data_file_name(commit_id, group, file)
                );
                if !exists(&path).await? {
                    if file == 0 {
                        break 'groups;
                    }
                    break;
                }
                add(&mut files, path);
            }
        }
    }
    Ok(files)
}

/// Every data file the table's current snapshot references.
pub async fn live_data_files(table: &Table) -> Result<HashSet<String>> {
    Ok(live_files(table).await?.into_iter().map(|f| f.data_file.file_path().to_owned()).collect())
}

/// A file of the current snapshot, with the snapshot that added it.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// The file.
    pub data_file: iceberg::spec::DataFile,
    /// The snapshot that added it (when the manifest records it).
    pub snapshot_id: Option<i64>,
    /// The partition spec its partition values follow.
    pub spec_id: i32,
}

/// The files (data and delete files) the table's current snapshot references, in manifest order.
pub async fn live_files(table: &Table) -> Result<Vec<LiveFile>> {
    live_files_of(table, |_| true).await
}

/// The files of the current snapshot's manifests that `manifests` selects (by their manifest-list entry).
pub async fn live_files_of(
    table: &Table,
    manifests: impl Fn(&iceberg::spec::ManifestFile) -> bool,
) -> Result<Vec<LiveFile>> {
    let mut live = Vec::new();
    let Some(snapshot) = table.metadata().current_snapshot() else { return Ok(live) };
    let fail = |what: &str, e: iceberg::Error| Error::iceberg(what.to_owned(), e).with("table", table.identifier());
    let io = table.file_io();
    let bytes = io
        .new_input(snapshot.manifest_list())
        .map_err(|e| fail("cannot open the manifest list", e))?
        .read()
        .await
        .map_err(|e| fail("cannot read the manifest list", e))?;
    let list = ManifestList::parse_with_version(&bytes, table.metadata().format_version())
        .map_err(|e| fail("cannot parse the manifest list", e))?;
    for manifest_file in list.entries().iter().filter(|m| manifests(m)) {
        let manifest = manifest_file.load_manifest(io).await.map_err(|e| fail("cannot read a manifest", e))?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            live.push(LiveFile {
                data_file: entry.data_file().clone(),
                snapshot_id: entry.snapshot_id(),
                spec_id: manifest_file.partition_spec_id,
            });
        }
    }
    Ok(live)
}

/// Deletes files that no snapshot references; returns how many existed.
async fn delete_files(table: &Table, files: Vec<String>) -> Result<usize> {
    let io = table.file_io();
    let mut deleted = 0;
    for file in files {
        let exists =
            io.exists(&file).await.map_err(|e| Error::iceberg("cannot check a data file", e).with("file", &file))?;
        if exists {
            io.delete(&file).await.map_err(|e| Error::iceberg("cannot delete a data file", e).with("file", &file))?;
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
