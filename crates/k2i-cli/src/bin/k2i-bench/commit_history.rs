//! `k2i-bench commit-history`: does a k2i commit cost more on a table with a long history (issue 9, B.7)?
//!
//! Everything runs in this process, on an embedded SQLite SQL catalog in a temp dir opened by k2i's own
//! `catalog::open`, with the table created by `catalog::ensure_table` and every commit made by
//! `commit::commit` (empty file lists: each is still a real snapshot whose summary carries the `k2i.*`
//! properties the fencing check reads). No Kafka is needed.
//!
//! 1. Create the table and commit `--small` flushes: the small history.
//! 2. Measure there: (a) `--samples` whole commits and `load_table` alone (iceberg reading and parsing
//!    metadata.json, which every commit does); (b) k2i's own part, the fencing decision on the loaded
//!    metadata — `progress::recorded` + `progress::find_commit` — once with the attempt's base known (the
//!    walk stops there) and once with no base known (the walk goes to the root).
//! 3. Grow the table to `--snapshots`. Committing that often through the catalog would rewrite a growing
//!    metadata.json each time (quadratic), so the history is synthesised instead: one metadata.json built with
//!    iceberg's `TableMetadataBuilder`, whose chain continues the real one with foreign snapshots (the newest
//!    real summary without its `k2i.*` keys), topped by one k2i snapshot that carries the table's progress,
//!    all pointing at one empty manifest list; the catalog is pointed at it (`drop_table`, which in the SQL
//!    catalog forgets the row and keeps the files, then `register_table`).
//! 4. Measure (a) and (b) again, print both and the ratios, and write JSON to `--out`.
//!
//! The timed commits of each point add `--samples` snapshots; the load and the decisions are timed before
//! them, on exactly `--small` and `--snapshots` snapshots.
//!
//! The no-base row is not only a worst case for comparison: `commit::commit` hands `find_commit` the bases
//! of the flush's earlier attempts, and a first attempt has none, so that is what it pays today.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use iceberg::MetadataLocation;
use iceberg::spec::{
    MAIN_BRANCH, ManifestListWriter, NestedField, PrimitiveType, Schema, Snapshot, SnapshotReference,
    SnapshotRetention, TableMetadata, TableMetadataBuilder, Type,
};
use iceberg::table::Table;
use k2i_core::catalog::{self, TableRef};
use k2i_core::commit::{self, CommitRequest};
use k2i_core::ops::Ops;
use k2i_core::progress::{self, CommitId, Landed, OffsetRange, PROP_PROGRESS, TopicPartition};
use serde_json::{Value, json};

/// Commit latency at a small history and at a long one, with the fencing decision timed on its own.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshots of the long history (synthesised in one metadata.json, see the module docs).
    #[arg(long, default_value_t = 20_000)]
    snapshots: usize,
    /// Real k2i commits that make the small history.
    #[arg(long, default_value = "10")]
    small: NonZeroUsize,
    /// Commits timed at each history; the median is reported.
    #[arg(long, default_value = "20")]
    samples: NonZeroUsize,
}

/// Fencing decisions timed per history: each takes microseconds, so more samples than commits.
const DECISION_SAMPLES: usize = 201;
/// Offsets each benchmark flush covers.
const FLUSH_RECORDS: i64 = 100;

/// Runs the benchmark and writes the report into `out`.
pub fn run(args: &Args, out: &Path) -> Result<()> {
    let (small, samples) = (args.small.get(), args.samples.get());
    ensure!(
        args.snapshots > small + samples,
        "--snapshots ({}) must exceed --small + --samples ({})",
        args.snapshots,
        small + samples
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let dir = tempfile::tempdir().context("cannot create the temp dir")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(measure(args, dir.path()))?;
    print(&report);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let path = out.join(format!("commit-history-{}-{stamp}.json", args.snapshots));
    std::fs::write(&path, serde_json::to_string_pretty(&report.to_json())?)?;
    println!("report: {}", path.display());
    Ok(())
}

/// What one history measured.
struct Point {
    snapshots: usize,
    metadata_bytes: u64,
    commit: Stats,
    load: Stats,
    bounded: Stats,
    whole_chain: Stats,
}

struct Report {
    profile: &'static str,
    small: Point,
    long: Point,
    grow_secs: f64,
}

async fn measure(args: &Args, dir: &Path) -> Result<Report> {
    let table = open(dir).await?;
    let schema = Schema::builder()
        .with_fields(vec![NestedField::optional(1, "v", Type::Primitive(PrimitiveType::Long)).into()])
        .build()?;
    let created = catalog::ensure_table(&table, async || Ok(schema.clone())).await?;
    let mut flusher = Flusher { table: &table, created, next: 0 };
    for _ in 0..args.small.get() {
        flusher.commit().await?;
    }
    eprintln!("k2i-bench: measuring at {} snapshots", args.small);
    let small = point(&mut flusher, args.samples.get()).await?;

    eprintln!("k2i-bench: growing the table to {} snapshots", args.snapshots);
    let started = Instant::now();
    grow(&table, args.snapshots).await?;
    let grow_secs = started.elapsed().as_secs_f64();
    eprintln!("k2i-bench: measuring at {} snapshots", args.snapshots);
    let long = point(&mut flusher, args.samples.get()).await?;
    ensure!(long.snapshots == args.snapshots, "the grown table has {} snapshots", long.snapshots);
    Ok(Report { profile: if cfg!(debug_assertions) { "debug" } else { "release" }, small, long, grow_secs })
}

/// The SQL catalog on SQLite in `dir`, opened the way `k2i ingest` opens it.
async fn open(dir: &Path) -> Result<TableRef> {
    let text = format!(
        "[kafka]\nbootstrap_servers = [\"127.0.0.1:9092\"]\ntopic = \"bench\"\nconsumer_group = \"k2i-bench\"\n\n\
         [iceberg]\nwarehouse_path = \"{}\"\ndatabase_name = \"bench\"\ntable_name = \"history\"\n\n\
         [transaction_log]\nlog_dir = \"{}\"\n",
        dir.join("warehouse").display(),
        dir.join("txlog").display(),
    );
    let config = k2i_core::config::from_toml(&text, Path::new("k2i-bench commit-history"), &Default::default())?;
    Ok(catalog::open(&config, Arc::new(Ops::new())).await?)
}

/// Commits consecutive flushes of one partition.
struct Flusher<'a> {
    table: &'a TableRef,
    /// The table as created: its UUID is the one every commit pins.
    created: Table,
    next: i64,
}

impl Flusher<'_> {
    async fn commit(&mut self) -> Result<Duration> {
        let commit_id = CommitId::generate();
        let ranges = BTreeMap::from([(partition(), OffsetRange { start: self.next, end: self.next + FLUSH_RECORDS })]);
        let gaps = BTreeMap::new();
        let request = CommitRequest {
            commit_id: &commit_id,
            files: Vec::new(),
            ranges: &ranges,
            gaps: &gaps,
            group: "k2i-bench",
            table_uuid: self.created.metadata().uuid(),
            lsns: None,
        };
        let started = Instant::now();
        commit::commit(self.table, request, &Mutex::new(Vec::new()), &|_| Ok(())).await?;
        let elapsed = started.elapsed();
        self.next += FLUSH_RECORDS;
        Ok(elapsed)
    }
}

fn partition() -> TopicPartition {
    TopicPartition { topic: "bench".into(), partition: 0 }
}

/// Measures the table as it is: load and fencing decision first (on exactly this history), then commits.
async fn point(flusher: &mut Flusher<'_>, samples: usize) -> Result<Point> {
    let table = flusher.table;
    let mut loads = Vec::with_capacity(samples);
    let mut loaded = None;
    for _ in 0..samples {
        let started = Instant::now();
        let t = table.catalog.load_table(&table.ident).await?;
        loads.push(started.elapsed());
        loaded = Some(t);
    }
    let loaded = loaded.context("no sample taken")?;
    let metadata = loaded.metadata();
    let base = metadata.current_snapshot_id();
    let mut bounded = Vec::with_capacity(DECISION_SAMPLES);
    let mut whole_chain = Vec::with_capacity(DECISION_SAMPLES);
    for _ in 0..DECISION_SAMPLES {
        bounded.push(decision(metadata, &[base])?);
        whole_chain.push(decision(metadata, &[])?);
    }
    let mut commits = Vec::with_capacity(samples);
    for _ in 0..samples {
        commits.push(flusher.commit().await?);
    }
    Ok(Point {
        snapshots: metadata.snapshots().count(),
        metadata_bytes: metadata_bytes(&loaded)?,
        commit: Stats::of(commits),
        load: Stats::of(loads),
        bounded: Stats::of(bounded),
        whole_chain: Stats::of(whole_chain),
    })
}

/// k2i's part of a commit's check on its base: the recorded progress and whether the (fresh) commit id is
/// already in the chain, walking until one of `bases`.
fn decision(metadata: &TableMetadata, bases: &[Option<i64>]) -> Result<Duration> {
    let commit_id = CommitId::generate();
    let started = Instant::now();
    let recorded = progress::recorded(metadata)?;
    let landed = progress::find_commit(metadata, &commit_id, bases);
    let elapsed = started.elapsed();
    ensure!(landed == Landed::No, "a fresh commit id was found in the table: {landed:?}");
    ensure!(recorded.progress.contains_key(&partition()), "no progress recorded for the benchmark partition");
    Ok(elapsed)
}

fn metadata_bytes(table: &Table) -> Result<u64> {
    let location = table.metadata_location_result()?;
    let path = location.strip_prefix("file://").unwrap_or(location);
    Ok(std::fs::metadata(path).with_context(|| format!("cannot stat {path}"))?.len())
}

/// Grows the table's chain to `to` snapshots in one new metadata.json (see the module docs).
async fn grow(table: &TableRef, to: usize) -> Result<()> {
    let current = table.load().await?;
    let metadata = current.metadata();
    let have = metadata.snapshots().count();
    let add = to - have;
    let newest = metadata.current_snapshot().context("the table has no snapshot")?;
    let k2i_summary = newest.summary().clone();
    let mut foreign = k2i_summary.clone();
    foreign.additional_properties.retain(|key, _| !key.starts_with("k2i."));
    foreign.additional_properties.insert("engine-name".to_owned(), "k2i-bench synthetic history".to_owned());

    // One empty manifest list for every synthetic snapshot: the next commit reads its parent's, the table holds
    // no data files anyway (every benchmark flush is empty).
    let manifest_list = format!("{}/metadata/snap-k2i-bench-history.avro", metadata.location());
    let writer = current.file_io().new_output(&manifest_list)?.writer().await?;
    let first_id = synthetic_id(metadata, 0)?;
    ManifestListWriter::v2(writer, first_id, metadata.current_snapshot_id(), metadata.last_sequence_number() + 1)
        .close()
        .await?;

    let commit_id = CommitId::generate();
    let recorded = progress::recorded(metadata)?.progress;
    let mut top = k2i_summary;
    top.additional_properties.insert(progress::PROP_COMMIT_ID.to_owned(), commit_id.to_string());
    // Every synthetic snapshot gets the newest real one's time: iceberg refuses a snapshot more than a minute
    // older than the last one, and the commits measured afterwards come later.
    let timestamp_ms = newest.timestamp_ms();
    let mut builder =
        TableMetadataBuilder::new_from_metadata(metadata.clone(), current.metadata_location().map(str::to_owned));
    let (mut parent, mut sequence) = (metadata.current_snapshot_id(), metadata.last_sequence_number());
    let mut log = Vec::with_capacity(add);
    for i in 0..add {
        let id = synthetic_id(metadata, i)?;
        sequence += 1;
        let summary = if i + 1 == add { top.clone() } else { foreign.clone() };
        let snapshot = Snapshot::builder()
            .with_snapshot_id(id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(sequence)
            .with_timestamp_ms(timestamp_ms)
            .with_manifest_list(manifest_list.clone())
            .with_summary(summary)
            .with_schema_id(metadata.current_schema_id())
            .build();
        builder = builder.add_snapshot(snapshot)?;
        log.push(json!({"snapshot-id": id, "timestamp-ms": timestamp_ms}));
        parent = Some(id);
    }
    let head = parent.context("no snapshot added")?;
    let grown = builder
        .set_ref(MAIN_BRANCH, SnapshotReference::new(head, SnapshotRetention::branch(None, None, None)))?
        .set_properties(HashMap::from([(
            PROP_PROGRESS.to_owned(),
            progress::encode_table_property(&commit_id, &recorded, 0),
        )]))?
        .build()?
        .metadata;
    let grown = with_snapshot_log(grown, log)?;
    ensure!(grown.snapshots().count() == to, "the synthesised metadata has {} snapshots", grown.snapshots().count());
    let location = MetadataLocation::from_str(current.metadata_location_result()?)?.with_next_version();
    grown.write_to(current.file_io(), &location).await?;
    table.catalog.drop_table(&table.ident).await?;
    table.catalog.register_table(&table.ident, location.to_string()).await?;
    Ok(())
}

/// The builder logs only the branch's last move of one build; a table that committed this often has one
/// `snapshot-log` entry per commit, and iceberg rewrites them all on every commit, so they are put in.
fn with_snapshot_log(metadata: TableMetadata, synthetic: Vec<Value>) -> Result<TableMetadata> {
    let mut value = serde_json::to_value(&metadata)?;
    let log = value.get_mut("snapshot-log").and_then(Value::as_array_mut).context("no snapshot-log")?;
    let last = log.pop().context("the snapshot-log is empty")?;
    log.extend(synthetic);
    log.pop();
    log.push(last);
    Ok(serde_json::from_value(value)?)
}

/// Snapshot ids the synthetic history uses (iceberg's own are random 63-bit numbers).
fn synthetic_id(metadata: &TableMetadata, i: usize) -> Result<i64> {
    let id = i64::try_from(i)? + 1;
    ensure!(metadata.snapshot_by_id(id).is_none(), "snapshot id {id} is taken");
    Ok(id)
}

/// Median, minimum and maximum of some timings.
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    samples: usize,
}

impl Stats {
    fn of(mut timings: Vec<Duration>) -> Self {
        timings.sort();
        Self {
            median: timings[timings.len() / 2],
            min: timings[0],
            max: timings[timings.len() - 1],
            samples: timings.len(),
        }
    }

    fn ms(&self) -> f64 {
        self.median.as_secs_f64() * 1e3
    }

    fn us(&self) -> f64 {
        self.median.as_secs_f64() * 1e6
    }

    fn to_json(&self) -> Value {
        json!({
            "median_us": self.us(),
            "min_us": self.min.as_secs_f64() * 1e6,
            "max_us": self.max.as_secs_f64() * 1e6,
            "samples": self.samples,
        })
    }
}

impl Point {
    fn to_json(&self) -> Value {
        json!({
            "snapshots": self.snapshots,
            "metadata_json_bytes": self.metadata_bytes,
            "commit": self.commit.to_json(),
            "load_table": self.load.to_json(),
            "decision_base_known": self.bounded.to_json(),
            "decision_no_base_known": self.whole_chain.to_json(),
        })
    }
}

impl Report {
    fn ratios(&self) -> [f64; 4] {
        let (s, l) = (&self.small, &self.long);
        [
            l.commit.us() / s.commit.us(),
            l.load.us() / s.load.us(),
            l.bounded.us() / s.bounded.us(),
            l.whole_chain.us() / s.whole_chain.us(),
        ]
    }

    fn to_json(&self) -> Value {
        let [commit, load, bounded, whole_chain] = self.ratios();
        json!({
            "mode": "commit-history",
            "profile": self.profile,
            "catalog": "sql (SQLite, temp dir)",
            "small": self.small.to_json(),
            "long": self.long.to_json(),
            "grow_seconds": self.grow_secs,
            "ratio_long_to_small": {
                "commit": commit, "load_table": load,
                "decision_base_known": bounded, "decision_no_base_known": whole_chain,
            },
        })
    }
}

fn print(report: &Report) {
    let (s, l) = (&report.small, &report.long);
    let [commit, load, bounded, whole_chain] = report.ratios();
    println!(
        "k2i-bench commit-history: {} build, SQLite SQL catalog, {} commits and {DECISION_SAMPLES} decisions per history",
        report.profile, s.commit.samples
    );
    println!("| median | {} snapshots | {} snapshots | ratio |", s.snapshots, l.snapshots);
    println!("|---|---:|---:|---:|");
    println!(
        "| (a) k2i commit, whole (`commit::commit`) | {:.2} ms | {:.2} ms | {commit:.1} |",
        s.commit.ms(),
        l.commit.ms()
    );
    println!(
        "| (a) iceberg `load_table` alone (read + parse metadata.json) | {:.2} ms | {:.2} ms | {load:.1} |",
        s.load.ms(),
        l.load.ms()
    );
    println!(
        "| metadata.json | {:.0} KiB | {:.0} KiB | {:.1} |",
        s.metadata_bytes as f64 / 1024.0,
        l.metadata_bytes as f64 / 1024.0,
        l.metadata_bytes as f64 / s.metadata_bytes as f64
    );
    println!(
        "| (b) fencing decision, base known: `recorded` + `find_commit(.., [base])` | {:.2} µs | {:.2} µs | {bounded:.1} |",
        s.bounded.us(),
        l.bounded.us()
    );
    println!(
        "| (b) fencing decision, no base known: `recorded` + `find_commit(.., [])` (walks to the root) | {:.2} µs | {:.2} µs | {whole_chain:.1} |",
        s.whole_chain.us(),
        l.whole_chain.us()
    );
    println!("history synthesised in {:.1} s (one metadata.json, registered in the catalog)", report.grow_secs);
}
