//! Wiring of one ingest: start → running → stopping. Everything with a policy lives elsewhere.
//!
//! ```text
//!  polling thread (the caller's)                                   tokio runtime
//!  ─────────────────────────────                                   ─────────────
//!  poller: poll a batch ─► route ─► TablePipeline (decode stage,    CommitActor per table: owns the Table,
//!          rebalance: seek from      buffer, flush policy, pending,  one queue of jobs (flush, evolve,
//!          the table's progress      pause reasons, state) ── Job ─► progress); flush lifecycle
//!          ▲                                                         Sealed → Intended → Written →
//!          └──────────────── Outcome (committed / fenced / failed) ◄─ Committed | Fenced
//! ```
//!
//! The polling thread never calls the catalog itself, with one exception the rebalance callback needs
//! (librdkafka requires the assignment, with its offsets, to be made inside the callback): the progress
//! lookup. Only sealed flushes and rare control jobs cross threads, never single records. One table's pause
//! or failure never stops another table; the process ends when every table has failed.
//!
//! Modules: [`pipeline`] (one table on the polling thread), [`actor`] (one table on the runtime),
//! [`poller`] (the loop, the outcome inbox, `--until-caught-up`).

pub mod actor;
pub mod pipeline;
pub mod poller;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;

use crate::buffer::TableBuffer;
use crate::buffer::hot::HotTable;
use crate::catalog;
use crate::commit;
use crate::config::{Config, EvolutionMode, TxlogDurability};
use crate::decode::Format;
use crate::decode::registry::RegistryClient;
use crate::error::{Error, ErrorKind, Result};
use crate::flush::FlushContext;
use crate::ops::{Ops, Phase, RecoveryStatus};
use crate::progress::{self, TopicPartition};
use crate::recovery;
use crate::schema;
use crate::sink::WriteOptions;
use crate::source;
use crate::txlog::{Durability, TxLog};

use actor::CommitActor;
use pipeline::TablePipeline;
use poller::{Inbox, Poller};

/// Rows per Arrow chunk in the buffer.
const CHUNK_ROWS: usize = 8192;
/// Timeout of metadata, watermark and seek requests.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a revocation waits for the flushes in flight to land.
const REVOKE_WAIT: Duration = Duration::from_secs(60);
/// With the read-state RPC on: how often an idle table actor reloads the table for readers.
const READ_REFRESH: Duration = Duration::from_secs(1);
/// Jobs queued per table actor: the flush in flight, the one handed over at the stop, and control jobs.
const JOB_QUEUE: usize = 4;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Read the high watermarks at start and stop once everything below them is committed.
    pub until_caught_up: bool,
    /// Stop on SIGINT / SIGTERM (flushing first).
    pub handle_signals: bool,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// Records consumed and stored as rows.
    pub rows: u64,
    /// Records consumed and skipped by the error policy.
    pub skipped: u64,
    /// Snapshots committed.
    pub commits: u64,
    /// Data files written.
    pub files: u64,
}

/// Runs an ingest on the calling thread until shutdown, caught-up (with `until_caught_up`) or every table
/// failed.
pub fn run(config: Config, options: IngestOptions, shutdown: Arc<AtomicBool>) -> Result<IngestSummary> {
    refuse_unbuilt(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("k2i-commit")
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot start the async runtime").source(e))?;
    if options.handle_signals {
        runtime.spawn(watch_signals(shutdown.clone()));
    }
    let ops = Arc::new(Ops::new());
    // Listening before anything else: /readyz answers "starting" / "recovering" while those take time.
    let monitoring = &config.monitoring;
    runtime.block_on(crate::ops::server::start(
        ops.clone(),
        SocketAddr::new(monitoring.listen_address, monitoring.health_port),
        SocketAddr::new(monitoring.listen_address, monitoring.metrics_port),
    ))?;
    let table_ref = runtime.block_on(catalog::open(&config, ops.clone()))?;
    let format = Format::new(config.kafka.format.kind, &config.kafka.format.protobuf)?;
    let registry = match &config.kafka.format.registry {
        Some(registry) if config.kafka.format.kind.needs_registry() => Some(Arc::new(RegistryClient::new(registry)?)),
        _ => None,
    };
    let mut table = runtime.block_on(catalog::ensure_table(&table_ref, async || {
        initial_schema(&config, &format, registry.as_deref()).await
    }))?;
    schema::check_metadata_columns(table.metadata().current_schema())?;
    // Refused at start rather than at the first commit (iceberg would reject every data file).
    commit::check_spec(&table)?;
    // Every commit checks it is still writing this table, not one dropped and recreated under the same name.
    let table_uuid = table.metadata().uuid();
    // A REST or Glue catalog may have placed the table on a store this build cannot write.
    crate::storage::check_location("the table location", table.metadata().location())
        .map_err(|e| e.with("table", table_ref.table_name()))?;
    // An existing table gains the columns the configuration asks for (headers, declared JSON columns).
    let missing = schema::reconcile(table.metadata().current_schema(), &config)?;
    if !missing.is_empty() {
        table = runtime.block_on(catalog::add_columns(&table_ref, &missing))?;
    }

    let durability = match config.transaction_log.durability {
        TxlogDurability::Always => Durability::Always,
        TxlogDurability::Interval => Durability::Interval(config.transaction_log.fsync_interval.get()),
    };
    ops.set_phase(Phase::Recovering);
    let (mut txlog, pending) = TxLog::open(&config.transaction_log.log_dir, durability)?;
    ops.txlog(true, format!("open in {}", config.transaction_log.log_dir.display()));
    if !pending.is_empty() {
        tracing::info!(pending = pending.len(), "recovering flushes the transaction log left unresolved");
    }
    let remote = catalog::is_remote(&config.iceberg);
    let report = runtime.block_on(recovery::recover(&mut txlog, &table, &table_ref.table_name(), remote))?;
    tracing::info!(
        landed = report.landed.len(),
        rolled_back = report.rolled_back.len(),
        kept = report.kept.len(),
        "recovery done"
    );
    ops.metrics.recovered_kept.inc_by(report.kept.len() as u64);
    ops.recovered(RecoveryStatus {
        landed: report.landed.len(),
        rolled_back: report.rolled_back.len(),
        files_deleted: report.rolled_back.iter().map(|(_, n)| n).sum(),
    });
    let txlog = Arc::new(Mutex::new(txlog));

    let (outcomes, inbox) = std::sync::mpsc::channel();
    let inbox = Arc::new(Inbox::new(inbox));
    let handle = runtime.handle().clone();
    let lookup_table = table_ref.clone();
    // The rebalance callback's progress lookup: the one catalog call the polling thread makes, because
    // librdkafka requires the assignment (with its offsets) to be made inside the callback.
    let lookup: source::OffsetLookup = Box::new(move || {
        handle.block_on(async {
            let table = lookup_table.load().await?;
            Ok(progress::recorded(table.metadata())?.progress)
        })
    });
    let revoke_inbox = inbox.clone();
    // Waits on the outcome channel for the flushes in flight. Bounded: a commit stuck on an unreachable
    // catalog must not hold the group's rebalance forever; if it lands later, the new owner's fencing check
    // rejects whatever would overlap.
    let before_revoke: source::RevokeHook =
        Box::new(move |_partitions: &[TopicPartition]| revoke_inbox.wait_all(Instant::now() + REVOKE_WAIT));
    let consumer = Arc::new(source::subscribe(&config.kafka, ops.clone(), lookup, before_revoke)?);

    let evolve = config.schema_evolution.mode == EvolutionMode::AutoAdditive;
    // LSNs continue after the table's; rows are kept for readers only when the read-state RPC serves them.
    let hot =
        Arc::new(HotTable::new(table_ref.table_name(), progress::table_lsn(table.metadata()), config.rpc.enabled));
    hot.refresh(table.clone(), progress::recorded(table.metadata())?.progress);
    let buffer =
        TableBuffer::new(format.clone(), table.metadata().current_schema().clone(), evolve, CHUNK_ROWS, hot.clone())?;
    let (jobs, queue) = mpsc::channel(JOB_QUEUE);
    // One table today (`Config::tables` turns the single-table keys into one); the multi-table issue opens a
    // catalog table, a pipeline and an actor per entry.
    let dead_lettering = config.errors.policy == crate::config::ErrorPolicy::DeadLetter
        || config.schema_evolution.on_breaking_change == crate::config::BreakingChangeAction::DeadLetter;
    let dead_letters = match (&config.errors.dead_letter_topic, dead_lettering) {
        (Some(topic), true) => Some(crate::dead_letter::DeadLetters::new(&config.kafka, topic)?),
        _ => None,
    };
    let mut pipeline = TablePipeline::new(0, table_ref.table_name(), buffer, hot.clone(), &config, jobs)
        .with_dead_letters(dead_letters);

    let targets = if options.until_caught_up {
        let topics = config.kafka.topic_list();
        let marks = source::watermarks(&consumer, &topics, METADATA_TIMEOUT)?;
        pipeline.learn(progress::recorded(table.metadata())?.progress);
        tracing::info!(partitions = marks.len(), "read high watermarks; will stop once they are committed");
        Some(marks)
    } else {
        None
    };

    let write = WriteOptions {
        compression: config.iceberg.compression,
        target_file_size_bytes: usize::try_from(config.iceberg.target_file_size_mb.get() * 1024 * 1024)
            .unwrap_or(usize::MAX),
    };
    let actor = CommitActor {
        index: 0,
        table,
        cx: FlushContext {
            table_ref: table_ref.clone(),
            table_uuid,
            group: config.kafka.consumer_group.clone(),
            write,
            txlog,
            ops: ops.clone(),
            hot: hot.clone(),
        },
        consumer: consumer.clone(),
        outcomes,
        schema_interval: config.schema_evolution.schema_update_min_interval.get(),
        last_schema_update: None,
        format,
        registry,
        refresh_every: config.rpc.enabled.then_some(READ_REFRESH),
        refresh_paused_until: None,
    };
    let actors = vec![runtime.spawn(actor.run(queue))];
    // Readers connect once the table's state is known (after recovery); the socket goes when this returns.
    let _read_server = if config.rpc.enabled {
        Some(runtime.block_on(crate::read::start(&config.rpc, vec![hot.clone()], ops.clone()))?)
    } else {
        None
    };

    let mut poller = Poller::new(&config, &consumer, &inbox, &ops, vec![pipeline], targets);
    ops.set_phase(Phase::Running);
    let outcome = poller.run(&shutdown);
    ops.set_phase(Phase::Stopping);
    // The last flushes' outcomes, unless the loop itself failed (then the next start resumes from the table).
    let finished = if outcome.is_ok() { poller.finish(|| actors.iter().all(|a| a.is_finished())) } else { Ok(()) };
    let mut pipelines = std::mem::take(&mut poller.pipelines);
    let summary = pipelines.iter().fold(IngestSummary::default(), |mut sum, p| {
        let s = p.summary();
        sum.rows += s.rows;
        sum.skipped += s.skipped;
        sum.commits += s.commits;
        sum.files += s.files;
        sum
    });
    let failed = poller::first_error(&mut pipelines);
    // Closing the queues ends the actors.
    drop(pipelines);
    for actor in actors {
        runtime
            .block_on(actor)
            .map_err(|e| Error::new(ErrorKind::Internal, "a table's commit actor panicked").source(e))?;
    }
    consumer.unsubscribe();
    match [outcome.err(), finished.err(), failed].into_iter().flatten().next() {
        Some(error) => {
            ops.table_failed(error.to_string());
            Err(error)
        }
        None => Ok(summary),
    }
}

/// The schema a new table is created with: the configured columns, and for a registry format the payload
/// columns of the subject's latest schema (the message `message_name` names, else the file's first).
async fn initial_schema(
    config: &Config,
    format: &Format,
    registry: Option<&RegistryClient>,
) -> Result<iceberg::spec::Schema> {
    let (Format::Registry(cx), Some(registry)) = (format, registry) else { return schema::initial_schema(config) };
    let strategy = config.kafka.format.registry.as_ref().map(|r| r.subject_name_strategy).unwrap_or_default();
    let topics = config.kafka.topic_list();
    let topic = topics.first().copied().unwrap_or_default();
    let message_name = config.kafka.format.message_name.as_deref();
    let subject = crate::decode::registry::subject(strategy, topic, message_name)?;
    let latest = registry.latest(&subject).await.map_err(|e| {
        e.with("subject", &subject)
            .with("hint", "the table is created from the subject's latest schema: register it first")
    })?;
    let compiled = Arc::new(crate::decode::compile(cx.kind, &latest).map_err(|e| e.with("subject", &subject))?);
    let (message, payload) = compiled.root(message_name, cx).map_err(|e| e.with("subject", &subject))?;
    compiled.warn_unstored();
    tracing::info!(subject, schema_id = latest.id, message, "creating the table from the subject's latest schema");
    cx.schemas.insert(compiled.clone());
    schema::initial_schema_with(config, &payload)
}

/// Features whose keys exist but which are not built yet: refused (exit 2) instead of pretending. The list
/// is the configuration's own ([`Config::unbuilt`]), so `k2i validate` warns about exactly what this refuses.
fn refuse_unbuilt(config: &Config) -> Result<()> {
    let Some(first) = config.unbuilt().into_iter().next() else { return Ok(()) };
    Err(Error::new(ErrorKind::Config, format!("{} is not built yet", first.what))
        .with("key", &first.key)
        .with("waits_for", first.issue))
}

async fn watch_signals(shutdown: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL only");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; flushing and stopping"),
            _ = int.recv() => tracing::info!("SIGINT received; flushing and stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.store(true, Ordering::SeqCst);
}
