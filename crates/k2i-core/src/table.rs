//! Operator actions on a table, outside an ingest: read the Kafka progress the table records, and set it
//! explicitly when it cannot be established (`k2i table progress`, `k2i table set-progress`).
//!
//! Setting progress commits an empty k2i snapshot whose `k2i.progress` is the table's recorded progress with
//! the given partitions replaced (and writes the same map to the table property), so it wins over anything
//! older: the next ingest resumes each given partition at the given offset. A running instance that owns
//! one of those partitions is fenced at its next commit and restarts the partition from the new offset.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::transaction::{ApplyTransactionAction, Transaction};

use crate::catalog::{self, TableRef};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::Ops;
use crate::progress::{self, CommitId, PROP_COMMIT_ID, PROP_OFFSETS, PROP_PROGRESS, PROP_VERSION, Progress, Recorded};

/// Summary property of a snapshot written by `k2i table set-progress`: the partitions it set.
pub const PROP_SET_PROGRESS: &str = "k2i.set-progress";

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot start the async runtime").source(e))
}

async fn open(config: &Config) -> Result<TableRef> {
    let table = catalog::open(config, Arc::new(Ops::new())).await?;
    if !table.catalog.table_exists(&table.ident).await.map_err(|e| table.error("cannot check the table", e))? {
        return Err(Error::new(ErrorKind::Config, "the table does not exist").with("table", table.table_name()));
    }
    Ok(table)
}

/// The progress the configured table records, and where it was found.
pub fn progress(config: &Config) -> Result<Recorded> {
    runtime()?.block_on(async {
        let table = open(config).await?.load().await?;
        progress::recorded(table.metadata())
    })
}

/// Sets the next offset of the given partitions; returns the table's whole progress afterwards and the
/// snapshot that records it. Partitions not given keep what the table records (nothing, if the table's
/// progress cannot be established — then give every partition).
pub fn set_progress(config: &Config, offsets: &Progress) -> Result<(Progress, i64)> {
    if offsets.is_empty() {
        return Err(Error::new(ErrorKind::Config, "no partition offsets given"));
    }
    runtime()?.block_on(async {
        let table_ref = open(config).await?;
        let base = table_ref.load().await?;
        let mut merged = match progress::recorded(base.metadata()) {
            Ok(recorded) => recorded.progress,
            Err(e) => {
                tracing::warn!(error = %e, "the table's progress cannot be read; only the given partitions are set");
                Progress::new()
            }
        };
        merged.extend(offsets.iter().map(|(tp, next)| (tp.clone(), *next)));
        let id = CommitId::generate();
        // The LSN stays where it is: setting progress adds no rows.
        let lsn = progress::table_lsn(base.metadata());
        let set: Vec<String> = offsets.iter().map(|(tp, next)| format!("{tp}={next}")).collect();
        let props = HashMap::from([
            (PROP_OFFSETS.to_owned(), "{}".to_owned()),
            (PROP_PROGRESS.to_owned(), progress::encode_progress(&merged)),
            (PROP_COMMIT_ID.to_owned(), id.to_string()),
            (PROP_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            (PROP_SET_PROGRESS.to_owned(), set.join(" ")),
            (progress::PROP_LSN.to_owned(), lsn.to_string()),
        ]);
        let tx = Transaction::new(&base);
        let tx = tx
            .fast_append()
            .set_snapshot_properties(props)
            .apply(tx)
            .map_err(|e| table_ref.error("cannot prepare the commit", e))?;
        let tx = tx
            .update_table_properties()
            .set(PROP_PROGRESS.to_owned(), progress::encode_table_property(&id, &merged, lsn))
            .apply(tx)
            .map_err(|e| table_ref.error("cannot prepare the commit", e))?;
        let updated =
            tx.commit(table_ref.catalog.as_ref()).await.map_err(|e| table_ref.error("cannot commit the progress", e))?;
        let snapshot = updated.metadata().current_snapshot_id().unwrap_or(-1);
        tracing::info!(table = %table_ref.table_name(), snapshot_id = snapshot, set = %set.join(" "), "set the table's Kafka progress");
        Ok((merged, snapshot))
    })
}
