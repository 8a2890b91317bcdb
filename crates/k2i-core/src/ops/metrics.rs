//! Prometheus metrics, defined once here with their units in their names; `docs/operations.md` documents
//! each with an alert example. Every metric is updated by the stage it describes.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The engine's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// Records consumed, per topic and partition.
    pub records_consumed: IntCounterVec,
    /// Payload and key bytes consumed, per topic and partition.
    pub bytes_consumed: IntCounterVec,
    /// Records between the partition's high watermark and the offset committed to the group (after the
    /// Iceberg commit), per topic and partition, from librdkafka's statistics.
    pub consumer_lag: IntGaugeVec,
    /// Records that could not be stored, by kind (`not_json`, `not_object`, `tombstone`, `schema_conflict`,
    /// `evolution_off`).
    pub decode_errors: IntCounterVec,
    /// Records skipped by `errors.policy = "skip"`.
    pub records_skipped: IntCounter,
    /// Rows buffered, not yet flushed.
    pub buffer_rows: IntGauge,
    /// Estimated bytes buffered, not yet flushed.
    pub buffer_bytes: IntGauge,
    /// Flushes committed.
    pub flushes: IntCounter,
    /// Seconds from a flush's hand-over to its Iceberg commit (write + commit).
    pub flush_duration: Histogram,
    /// Seconds of the catalog commit alone.
    pub commit_duration: Histogram,
    /// Data files written.
    pub data_files: IntCounter,
    /// Bytes of data files written.
    pub data_file_bytes: IntCounter,
    /// Size of each data file written.
    pub data_file_size: Histogram,
    /// Commits that lost a compare-and-swap to another writer and were retried.
    pub commit_conflicts: IntCounter,
    /// Flushes rejected by the fencing check (invariant 2) and discarded.
    pub commits_fenced: IntCounter,
    /// Catalog operations retried after a transient error, by operation.
    pub catalog_retries: IntCounterVec,
    /// Times consumption was paused (buffer full while a flush was in flight).
    pub consumer_pauses: IntCounter,
    /// Times consumption resumed.
    pub consumer_resumes: IntCounter,
    /// Columns added to the table by schema evolution.
    pub schema_columns_added: IntCounter,
    /// Columns widened by schema evolution.
    pub schema_columns_promoted: IntCounter,
    /// Records whose writer schema was a breaking change for the table.
    pub schema_breaking: IntCounter,
    /// 1 while a table is paused by a breaking schema change.
    pub schema_paused: IntGauge,
    /// Records sent to the dead-letter topic.
    pub records_dead_lettered: IntCounter,
    /// Registry schemas fetched and compiled.
    pub schemas_resolved: IntCounter,
    /// Kafka timestamp (ms since the epoch) of the newest committed record; `k2i_freshness_seconds` is
    /// computed from it at scrape time.
    pub newest_committed_timestamp_ms: IntGauge,
    /// Age in seconds of the newest committed record (set at scrape time).
    pub freshness: IntGauge,
    /// Flushes recovery found committed (at the last start).
    pub recovered_landed: IntCounter,
    /// Flushes recovery rolled back (at the last start).
    pub recovered_rolled_back: IntCounter,
    /// Flushes recovery found with an unknown outcome that could still land: files kept (at the last start).
    pub recovered_kept: IntCounter,
    /// Offsets skipped because Kafka had deleted them before k2i read them (`kafka.on_data_loss = "skip"`).
    pub offsets_lost: IntCounter,
    /// Read-state scans served.
    pub rpc_scans: IntCounter,
    /// Scans open now.
    pub rpc_scans_open: IntGauge,
    /// Bytes of frames the read-state server sent.
    pub rpc_bytes_served: IntCounter,
    /// Hot rows served by scans.
    pub rpc_hot_rows_served: IntCounter,
    /// Rows in the hot view now (buffered, pending or in flight).
    pub rpc_hot_rows: IntGauge,
    /// The last read-state's LSN minus its committed LSN: how far the hot part runs ahead of the table.
    pub rpc_lsn_lag: IntGauge,
    /// Requests answered with an error frame, by code.
    pub rpc_errors: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric names are valid");
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric names are valid");
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric names are valid");
    registry.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("metric names are valid");
    registry.register(Box::new(h.clone())).expect("metric names are unique");
    h
}

impl Metrics {
    /// Creates and registers every metric.
    // Deliberate `expect`s: names and labels are constants; a clash is a bug caught by the first test.
    pub fn new() -> Self {
        let r = Registry::new();
        let seconds = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let sizes = prometheus::exponential_buckets(64.0 * 1024.0, 4.0, 8).expect("valid buckets");
        let lag = IntGaugeVec::new(
            Opts::new(
                "k2i_consumer_lag_records",
                "Records between the high watermark and the committed offset, per partition.",
            ),
            &["topic", "partition"],
        )
        .expect("valid");
        r.register(Box::new(lag.clone())).expect("unique");
        Self {
            records_consumed: counter_vec(
                &r,
                "k2i_records_consumed_total",
                "Records consumed from Kafka.",
                &["topic", "partition"],
            ),
            bytes_consumed: counter_vec(
                &r,
                "k2i_bytes_consumed_total",
                "Key and value bytes consumed from Kafka.",
                &["topic", "partition"],
            ),
            consumer_lag: lag,
            decode_errors: counter_vec(
                &r,
                "k2i_decode_errors_total",
                "Records that could not be stored, by kind.",
                &["kind"],
            ),
            records_skipped: counter(&r, "k2i_records_skipped_total", "Records skipped by errors.policy = skip."),
            buffer_rows: gauge(&r, "k2i_buffer_rows", "Rows buffered and not yet flushed."),
            buffer_bytes: gauge(&r, "k2i_buffer_bytes", "Estimated bytes buffered and not yet flushed."),
            flushes: counter(&r, "k2i_flushes_total", "Flushes committed to the table."),
            flush_duration: histogram(
                &r,
                "k2i_flush_duration_seconds",
                "Seconds to write and commit one flush.",
                seconds.clone(),
            ),
            commit_duration: histogram(&r, "k2i_commit_duration_seconds", "Seconds of one catalog commit.", seconds),
            data_files: counter(&r, "k2i_data_files_written_total", "Data files written."),
            data_file_bytes: counter(&r, "k2i_data_file_bytes_written_total", "Bytes of data files written."),
            data_file_size: histogram(&r, "k2i_data_file_size_bytes", "Size of each data file written.", sizes),
            commit_conflicts: counter(
                &r,
                "k2i_commit_conflicts_total",
                "Commits that lost a compare-and-swap and were retried.",
            ),
            commits_fenced: counter(
                &r,
                "k2i_commits_fenced_total",
                "Flushes rejected by the fencing check and discarded.",
            ),
            catalog_retries: counter_vec(
                &r,
                "k2i_catalog_retries_total",
                "Catalog operations retried after a transient error.",
                &["operation"],
            ),
            consumer_pauses: counter(
                &r,
                "k2i_consumer_pauses_total",
                "Times consumption paused because the buffer was full.",
            ),
            consumer_resumes: counter(&r, "k2i_consumer_resumes_total", "Times consumption resumed."),
            schema_columns_added: counter(&r, "k2i_schema_columns_added_total", "Columns added by schema evolution."),
            schema_columns_promoted: counter(
                &r,
                "k2i_schema_columns_promoted_total",
                "Columns widened by schema evolution (int to long, float to double).",
            ),
            schema_breaking: counter(
                &r,
                "k2i_schema_breaking_records_total",
                "Records whose writer schema is a breaking change for the table.",
            ),
            schema_paused: gauge(&r, "k2i_schema_paused", "1 while a table is paused by a breaking schema change."),
            records_dead_lettered: counter(
                &r,
                "k2i_records_dead_lettered_total",
                "Records sent to the dead-letter topic (acknowledged before their offsets are committed).",
            ),
            schemas_resolved: counter(&r, "k2i_schemas_resolved_total", "Registry schemas fetched and compiled."),
            newest_committed_timestamp_ms: gauge(
                &r,
                "k2i_newest_committed_timestamp_ms",
                "Kafka timestamp of the newest committed record.",
            ),
            freshness: gauge(&r, "k2i_freshness_seconds", "Age of the newest committed record, in seconds."),
            rpc_scans: counter(&r, "k2i_rpc_scans_total", "Read-state scans served."),
            rpc_scans_open: gauge(&r, "k2i_rpc_scans_open", "Read-state scans open now."),
            rpc_bytes_served: counter(&r, "k2i_rpc_bytes_served_total", "Bytes of frames the read-state server sent."),
            rpc_hot_rows_served: counter(&r, "k2i_rpc_hot_rows_served_total", "Hot rows served by read-state scans."),
            rpc_hot_rows: gauge(&r, "k2i_rpc_hot_rows", "Rows of the last read-state's hot part."),
            rpc_lsn_lag: gauge(
                &r,
                "k2i_rpc_lsn_lag",
                "LSN of the last read-state minus its committed LSN (rows readable before Iceberg has them).",
            ),
            rpc_errors: counter_vec(
                &r,
                "k2i_rpc_errors_total",
                "Read-state requests answered with an error.",
                &["code"],
            ),
            recovered_landed: counter(&r, "k2i_recovery_landed_total", "Flushes recovery found committed."),
            recovered_rolled_back: counter(&r, "k2i_recovery_rolled_back_total", "Flushes recovery rolled back."),
            recovered_kept: counter(
                &r,
                "k2i_recovery_kept_total",
                "Flushes recovery found with an unknown outcome that could still land; their files were kept.",
            ),
            offsets_lost: counter(
                &r,
                "k2i_offsets_lost_total",
                "Offsets skipped because Kafka had deleted them before k2i read them (kafka.on_data_loss = skip).",
            ),
            registry: r,
        }
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let newest = self.newest_committed_timestamp_ms.get();
        if newest > 0 {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(newest);
            self.freshness.set((now_ms - newest).max(0) / 1000);
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
