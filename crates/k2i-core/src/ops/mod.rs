//! Operations: health, readiness, status and metrics, fed by every stage and served over HTTP
//! ([`server`]).
//!
//! [`Ops`] is shared by the polling thread, the commit task, the Kafka client's statistics callback and the
//! HTTP handlers. It holds the [`metrics::Metrics`] and a small state: the phase of the process, the
//! health of each component, per-partition positions, the last commit and what recovery did.

pub mod metrics;
pub mod server;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::buffer::TopicPartition;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Opening the catalog and the table.
    Starting,
    /// Reconciling the transaction log with the table.
    Recovering,
    /// Consuming and committing.
    Running,
    /// Flushing before exit.
    Stopping,
}

/// The health of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// Whether it works.
    pub ok: bool,
    /// What is wrong, or what it is doing.
    pub detail: String,
}

impl Component {
    fn up(detail: &str) -> Self {
        Self { ok: true, detail: detail.to_owned() }
    }
}

/// One partition in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the consumer will read (from librdkafka's statistics).
    pub position: Option<i64>,
    /// The partition's high watermark.
    pub high_watermark: Option<i64>,
    /// High watermark minus the committed offset.
    pub lag: Option<i64>,
    /// The next offset recorded in the table (the last commit's end).
    pub committed: Option<i64>,
}

/// The last commit in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastCommit {
    /// Snapshot id.
    pub snapshot_id: i64,
    /// When, as RFC 3339.
    pub at: String,
    /// Data files in it.
    pub files: usize,
    /// Rows in it.
    pub rows: usize,
}

/// What recovery did at start, in `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryStatus {
    /// Flushes found committed.
    pub landed: usize,
    /// Flushes rolled back.
    pub rolled_back: usize,
    /// Data files deleted by the rollbacks.
    pub files_deleted: usize,
}

/// What an operator's resume (`POST /resume`, `k2i resume`) does with a table paused by a breaking schema
/// change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResumeAction {
    /// Check the paused schema again: against the table as it is now (an operator may have changed it) and
    /// against the subject's latest schema (a compatible version registered meanwhile reads the records).
    Retry,
    /// Skip the records of the paused schema id from now on (counted).
    Skip,
    /// Send the records of the paused schema id to the dead-letter topic from now on.
    DeadLetter,
}

#[derive(Debug, Clone, Serialize)]
struct State {
    phase: Phase,
    kafka: Component,
    catalog: Component,
    txlog: Component,
    buffer: Component,
    partitions: BTreeMap<String, PartitionStatus>,
    buffer_rows: i64,
    buffer_bytes: i64,
    paused: bool,
    last_commit: Option<LastCommit>,
    recovery: Option<RecoveryStatus>,
    /// Why the table stopped, once it has.
    failed: Option<String>,
    /// Set while buffered data has waited too long for a commit.
    stalled: Option<String>,
    /// A flush could not land through every retry (a store or catalog outage); cleared by the next commit.
    unlanded: Option<String>,
    /// A table waits for a schema (registry unreachable) or is paused by a breaking schema change.
    schema: Option<String>,
    /// Dead letters wait for the dead-letter topic.
    dead_letters: Option<String>,
    /// Resume requests (`POST /resume`) not yet taken by the polling thread.
    #[serde(skip)]
    resumes: Vec<ResumeAction>,
    /// When the rebalance callback began waiting for the table's progress (cleared when it is done).
    #[serde(skip)]
    assigning_since: Option<std::time::Instant>,
}

/// How long an assignment's progress lookup may take before the instance reports itself not ready.
pub const ASSIGN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Health, status and metrics of one ingest.
pub struct Ops {
    /// The metrics.
    pub metrics: metrics::Metrics,
    state: Mutex<State>,
}

fn key(tp: &TopicPartition) -> String {
    tp.to_string()
}

fn partition_entry<'s>(state: &'s mut State, tp: &TopicPartition) -> &'s mut PartitionStatus {
    state.partitions.entry(key(tp)).or_insert_with(|| PartitionStatus {
        topic: tp.topic.clone(),
        partition: tp.partition,
        ..PartitionStatus::default()
    })
}

impl Ops {
    /// A fresh state in phase `starting`.
    pub fn new() -> Self {
        Self {
            metrics: metrics::Metrics::new(),
            state: Mutex::new(State {
                phase: Phase::Starting,
                kafka: Component::up("not connected yet"),
                catalog: Component::up("not opened yet"),
                txlog: Component::up("not opened yet"),
                buffer: Component::up("empty"),
                partitions: BTreeMap::new(),
                buffer_rows: 0,
                buffer_bytes: 0,
                paused: false,
                last_commit: None,
                recovery: None,
                failed: None,
                stalled: None,
                unlanded: None,
                schema: None,
                dead_letters: None,
                resumes: Vec::new(),
                assigning_since: None,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Enters a phase.
    pub fn set_phase(&self, phase: Phase) {
        self.with(|s| s.phase = phase);
    }

    /// Records the catalog's health (after every catalog operation's outcome).
    pub fn catalog(&self, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.with(|s| s.catalog = Component { ok, detail });
    }

    /// Records Kafka's health.
    pub fn kafka(&self, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.with(|s| s.kafka = Component { ok, detail });
    }

    /// Records the transaction log's health.
    pub fn txlog(&self, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.with(|s| s.txlog = Component { ok, detail });
    }

    /// Records what recovery did.
    pub fn recovered(&self, recovery: RecoveryStatus) {
        self.metrics.recovered_landed.inc_by(recovery.landed as u64);
        self.metrics.recovered_rolled_back.inc_by(recovery.rolled_back as u64);
        self.with(|s| s.recovery = Some(recovery));
    }

    /// Records the buffer's size and whether consumption is paused.
    pub fn buffer(&self, rows: usize, bytes: usize, paused: bool) {
        self.metrics.buffer_rows.set(rows as i64);
        self.metrics.buffer_bytes.set(bytes as i64);
        self.with(|s| {
            s.buffer_rows = rows as i64;
            s.buffer_bytes = bytes as i64;
            s.paused = paused;
            s.buffer = Component::up(if paused {
                "full: consumption paused until the flush in flight lands"
            } else {
                "accepting"
            });
        });
    }

    /// Records a partition's position, high watermark and lag (from librdkafka's statistics).
    pub fn partition_stats(&self, tp: &TopicPartition, position: Option<i64>, high: Option<i64>, lag: Option<i64>) {
        if let Some(lag) = lag {
            self.metrics.consumer_lag.with_label_values(&[&tp.topic, &tp.partition.to_string()]).set(lag);
        }
        self.with(|s| {
            let entry = partition_entry(s, tp);
            entry.position = position.or(entry.position);
            entry.high_watermark = high.or(entry.high_watermark);
            entry.lag = lag.or(entry.lag);
        });
    }

    /// Records a partition as assigned (with the table's progress) or revoked.
    pub fn assigned(&self, tp: &TopicPartition, committed: Option<i64>) {
        self.with(|s| {
            let entry = partition_entry(s, tp);
            entry.committed = committed.or(entry.committed);
        });
    }

    /// Forgets a revoked partition.
    pub fn revoked(&self, tp: &TopicPartition) {
        let _ = self.metrics.consumer_lag.remove_label_values(&[&tp.topic, &tp.partition.to_string()]);
        self.with(|s| s.partitions.remove(&key(tp)));
    }

    /// Records a commit.
    pub fn committed(&self, commit: LastCommit, ends: impl IntoIterator<Item = (TopicPartition, i64)>) {
        self.with(|s| {
            for (tp, end) in ends {
                if let Some(p) = s.partitions.get_mut(&key(&tp)) {
                    p.committed = Some(end);
                }
            }
            s.last_commit = Some(commit);
        });
    }

    /// The table stopped with this error (the process is not ready from now on).
    pub fn table_failed(&self, reason: impl Into<String>) {
        self.with(|s| s.failed = Some(reason.into()));
    }

    /// The rebalance callback starts (`true`) or ends (`false`) the progress lookup of an assignment; while
    /// it takes longer than [`ASSIGN_GRACE`] the instance is not ready (the polling thread is blocked in it).
    pub fn assigning(&self, active: bool) {
        self.with(|s| s.assigning_since = active.then(std::time::Instant::now));
    }

    /// Buffered data has waited too long for a commit (`Some`), or commits flow again (`None`).
    pub fn stalled(&self, reason: Option<String>) {
        self.with(|s| s.stalled = reason);
    }

    /// A flush could not land for now (`Some`), or a flush landed again (`None`).
    pub fn unlanded(&self, reason: Option<String>) {
        self.with(|s| s.unlanded = reason);
    }

    /// A table waits for a schema or is paused by a breaking change (`Some`), or decodes again (`None`).
    pub fn schema(&self, reason: Option<String>) {
        self.with(|s| s.schema = reason);
    }

    /// Dead letters wait for the dead-letter topic (`Some`), or it acknowledges again (`None`).
    pub fn dead_letters(&self, reason: Option<String>) {
        self.with(|s| s.dead_letters = reason);
    }

    /// The schema pause reason, if any.
    pub fn schema_reason(&self) -> Option<String> {
        self.with(|s| s.schema.clone())
    }

    /// Queues an operator's resume request for the polling thread.
    pub fn request_resume(&self, action: ResumeAction) {
        self.with(|s| s.resumes.push(action));
    }

    /// Takes the queued resume requests.
    pub fn take_resumes(&self) -> Vec<ResumeAction> {
        self.with(|s| std::mem::take(&mut s.resumes))
    }

    /// Whether the process is ready, and if not why.
    pub fn readiness(&self) -> Result<(), String> {
        self.with(|s| match s.phase {
            _ if s.failed.is_some() => Err(format!("table failed: {}", s.failed.as_deref().unwrap_or_default())),
            Phase::Starting => Err("starting".to_owned()),
            Phase::Recovering => Err("recovering: reconciling the transaction log with the table".to_owned()),
            Phase::Stopping => Err("stopping".to_owned()),
            Phase::Running if !s.catalog.ok => Err(format!("catalog unavailable: {}", s.catalog.detail)),
            Phase::Running if !s.txlog.ok => Err(format!("transaction log unavailable: {}", s.txlog.detail)),
            Phase::Running if !s.kafka.ok => Err(format!("kafka unavailable: {}", s.kafka.detail)),
            Phase::Running if s.assigning_since.is_some_and(|t| t.elapsed() > ASSIGN_GRACE) => Err(format!(
                "assigning partitions: waiting {}s for the table's progress",
                s.assigning_since.map(|t| t.elapsed().as_secs()).unwrap_or_default()
            )),
            Phase::Running if s.dead_letters.is_some() => {
                Err(format!("dead-letter topic unavailable: {}", s.dead_letters.as_deref().unwrap_or_default()))
            }
            Phase::Running if s.schema.is_some() => Err(format!("schema: {}", s.schema.as_deref().unwrap_or_default())),
            Phase::Running if s.unlanded.is_some() => {
                Err(format!("flushes cannot land: {}", s.unlanded.as_deref().unwrap_or_default()))
            }
            Phase::Running if s.stalled.is_some() => {
                Err(format!("commits stalled: {}", s.stalled.as_deref().unwrap_or_default()))
            }
            Phase::Running => Ok(()),
        })
    }

    /// The `/health` document: overall status and each component.
    pub fn health_json(&self) -> serde_json::Value {
        let ready = self.readiness();
        self.with(|s| {
            serde_json::json!({
                "status": if ready.is_ok() { "healthy" } else { "unhealthy" },
                "phase": s.phase,
                "reason": ready.err(),
                "components": { "kafka": s.kafka, "catalog": s.catalog, "txlog": s.txlog, "buffer": s.buffer },
            })
        })
    }

    /// The `/status` document.
    pub fn status_json(&self) -> serde_json::Value {
        let ready = self.readiness();
        self.with(|s| {
            serde_json::json!({
                "ready": ready.is_ok(),
                "reason": ready.err(),
                "phase": s.phase,
                "partitions": s.partitions.values().collect::<Vec<_>>(),
                "buffer": { "rows": s.buffer_rows, "bytes": s.buffer_bytes, "paused": s.paused },
                "last_commit": s.last_commit,
                "recovery": s.recovery,
                "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            })
        })
    }
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

impl Default for Ops {
    fn default() -> Self {
        Self::new()
    }
}
