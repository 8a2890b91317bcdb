//! `k2i-bench freshness`: how soon a produced record can be read through the read-state RPC (docs/rpc.md)
//! against how soon it is in Iceberg, and how fast a full scan of the hot rows is.
//!
//! Both parts run `--k2i ingest` (the binary under test) as a child process on a fresh topic, a fresh
//! SQLite-catalog warehouse and a fresh socket under `--out`, and kill it when they are done.
//!
//! 1. **Freshness.** k2i runs with `flush_interval = "1s"`, a freshness-oriented setting: the Iceberg side
//!    depends on it (a record waits up to one interval for its flush, then for the commit), the RPC side does
//!    not (a record is readable once the poll that fetched it is decoded). A warm-up record goes first and
//!    is awaited on both sides, so the clock starts with the consumer group joined and the table's schema
//!    evolved, not with k2i's start-up. Then `--records` records are produced at `--rate`, in bursts every
//!    [`TICK`]; each record's send instant is kept per (partition, offset) from its delivery report. Two
//!    followers note the instant they first see each (partition, offset):
//!    - the RPC side scans as fast as it can (a pause of [`RPC_PAUSE`] between scans) through k2i's
//!      [`Reader`], projecting only the partition and offset, with the previous read-state's watermarks as
//!      `offsets_from` (so each scan carries the rows that arrived since the last one, and the filter prunes
//!      every committed file);
//!    - the Iceberg side loads the table through the catalog every [`ICEBERG_POLL`] and takes, from each
//!      snapshot it has not seen, the offsets of its `k2i.offsets` summary property.
//!
//!    Latency is seen − sent, reported as p50 / p99 / max per side, with the ratio of the two p50s. Each
//!    side's observation adds up to one pause of its loop (on average half of it).
//! 2. **Scan throughput.** `--scan-rows` JSON records are preloaded, then k2i runs with flushes out of reach
//!    (`flush_interval = "1h"`, `flush_batch_size` above the count, `max_size_mb = 4096`) until every row is
//!    hot; [`SCANS`] full scans (all columns, hot rows only) are timed through the raw client and reported as
//!    rows/s and MiB/s of Arrow data: the bytes of the received columns (`get_slice_memory_size`). Their
//!    `get_array_memory_size` is reported beside it but overstates the data many times over: the IPC decoder
//!    slices each buffer out of the frame that carried it, and every buffer counts that whole frame.
//!
//! The report goes to stdout as tables and to `--out`/freshness.json; every record's latencies go to
//! `latencies.csv` in the run's directory.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use k2i_core::catalog::{self, TableRef};
use k2i_core::config::Config;
use k2i_core::ops::Ops;
use k2i_core::progress::{self, PROP_OFFSETS};
use k2i_core::read::reader::Reader;
use k2i_rpc::client::Client;
use k2i_rpc::message::{Filter, OffsetFrom, ScanBegin, Watermark};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};

use crate::Shape;

/// Freshness through the read-state RPC against Iceberg commits, and full-scan throughput of hot rows.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Records produced for the freshness measurement (after one warm-up record).
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Production rate of the freshness measurement, in records per second.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Partitions of each part's topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Hot rows the scan throughput is measured on (preloaded before k2i starts).
    #[arg(long, default_value_t = 1_000_000)]
    scan_rows: usize,
    /// Only measure scan throughput.
    #[arg(long, conflicts_with = "skip_scan")]
    skip_freshness: bool,
    /// Only measure freshness.
    #[arg(long)]
    skip_scan: bool,
}

/// The producer sends what is due every tick: small bursts, a steady rate.
const TICK: Duration = Duration::from_millis(10);
/// The RPC follower's pause between scans.
const RPC_PAUSE: Duration = Duration::from_millis(1);
/// The Iceberg follower's pause between table loads.
const ICEBERG_POLL: Duration = Duration::from_millis(20);
/// Full scans timed for the throughput.
const SCANS: usize = 5;
/// The freshness target through the RPC, at p99.
const TARGET_P99_MS: f64 = 50.0;
/// How long k2i may take to open its socket, and the followers to see the warm-up record.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long after the last send both followers may take to see every record.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long k2i may take to consume the preloaded rows of the scan part.
const LOAD_TIMEOUT: Duration = Duration::from_secs(900);
/// The table both parts write.
const NAMESPACE: &str = "bench";
const TABLE: &str = "events";

/// A Kafka record's identity: (partition, offset).
type Key = (i32, i64);
/// When each record was sent, or first seen.
type Instants = HashMap<Key, Instant>;

/// Runs the parts not skipped and writes the report to `top.out`.
pub fn run(args: &Args, top: &crate::Args, k2i: &Path) -> Result<()> {
    ensure!(args.rate > 0, "--rate must be above 0");
    ensure!(args.partitions > 0, "--partitions must be above 0");
    ensure!(args.skip_freshness || args.records > 0, "--records must be above 0");
    ensure!(args.skip_scan || args.scan_rows > 0, "--scan-rows must be above 0");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let run_dir = top.out.join(format!("freshness-{stamp}"));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut report = json!({ "partitions": args.partitions, "run_dir": run_dir.display().to_string() });
    if !args.skip_freshness {
        let freshness = runtime.block_on(freshness(args, top, k2i, &run_dir.join("freshness"), stamp))?;
        freshness.print();
        report["freshness"] = freshness.json();
    }
    if !args.skip_scan {
        let scan = scan_throughput(args, top, k2i, &run_dir.join("scan"), stamp, &runtime)?;
        scan.print();
        report["scan"] = scan.json();
    }
    let path = top.out.join("freshness.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", path.display());
    Ok(())
}

/// Part 1's figures.
struct Freshness {
    records: usize,
    rate: u32,
    partitions: i32,
    produce_secs: f64,
    rpc: Percentiles,
    rpc_scans: u64,
    rpc_scan_secs: f64,
    iceberg: Percentiles,
    iceberg_snapshots: u64,
}

impl Freshness {
    fn ratio(&self) -> f64 {
        self.iceberg.p50 / self.rpc.p50
    }

    fn target_met(&self) -> bool {
        self.rpc.p99 <= TARGET_P99_MS
    }

    fn mean_scan_ms(&self) -> f64 {
        self.rpc_scan_secs * 1e3 / self.rpc_scans.max(1) as f64
    }

    fn print(&self) {
        println!(
            "k2i-bench freshness: {} records at {}/s ({:.0}/s achieved) over {} partitions, \
             buffer.flush_interval = 1s",
            self.records,
            self.rate,
            self.records as f64 / self.produce_secs,
            self.partitions
        );
        println!("| produce → visible | p50 ms | p99 ms | max ms |");
        println!("|---|---:|---:|---:|");
        for (name, side) in [("read-state RPC (hot rows)", &self.rpc), ("Iceberg (its commit)", &self.iceberg)] {
            println!("| {name} | {:.1} | {:.1} | {:.1} |", side.p50, side.p99, side.max);
        }
        println!(
            "ratio Iceberg p50 / RPC p50: {:.1}; {} RPC scans (mean {:.2} ms), {} Iceberg snapshots",
            self.ratio(),
            self.rpc_scans,
            self.mean_scan_ms(),
            self.iceberg_snapshots
        );
        let met = if self.target_met() { "met" } else { "MISSED" };
        println!("target: p99 ≤ {TARGET_P99_MS} ms through the RPC: {met} ({:.1} ms)", self.rpc.p99);
    }

    fn json(&self) -> Value {
        json!({
            "records": self.records, "rate": self.rate, "partitions": self.partitions, "flush_interval": "1s",
            "produce_seconds": self.produce_secs, "records_per_second": self.records as f64 / self.produce_secs,
            "rpc": {
                "p50_ms": self.rpc.p50, "p99_ms": self.rpc.p99, "max_ms": self.rpc.max,
                "scans": self.rpc_scans, "mean_scan_ms": self.mean_scan_ms(),
            },
            "iceberg": {
                "p50_ms": self.iceberg.p50, "p99_ms": self.iceberg.p99, "max_ms": self.iceberg.max,
                "snapshots": self.iceberg_snapshots,
            },
            "ratio_iceberg_p50_to_rpc_p50": self.ratio(),
            "target_rpc_p99_ms": TARGET_P99_MS,
            "target_met": self.target_met(),
        })
    }
}

/// Part 1: produce at a steady rate, follow the table through the RPC and through the catalog.
async fn freshness(args: &Args, top: &crate::Args, k2i: &Path, dir: &Path, stamp: u64) -> Result<Freshness> {
    let topic = format!("bench-freshness-{}p-{}-{stamp}", args.partitions, args.records);
    create_topic(&top.bootstrap_servers, &topic, args.partitions).await?;
    // A freshness-oriented setting: it bounds the Iceberg side (a record waits up to one interval for its
    // flush); the RPC side does not depend on it.
    let buffer = "flush_interval = \"1s\"\n";
    let (config, _k2i) = start_ingest(k2i, dir, &top.bootstrap_servers, &topic, buffer)?;
    eprintln!("k2i-bench freshness: k2i ingests {topic}; waiting for the read-state socket");
    drop(wait_for_socket(&config.rpc.socket_path).await?);
    let reader = Reader::connect(&config).await?;
    let table = catalog::open(&config, Arc::new(Ops::new())).await?;
    // One producer for the warm-up and the measurement: its connection is up before the clock starts.
    let producer = Arc::new(Paced::new(&top.bootstrap_servers, &topic, args.partitions)?);

    eprintln!("k2i-bench freshness: one warm-up record, awaited through the RPC and in Iceberg");
    let warm_up = producer.clone();
    let warm_up = tokio::task::spawn_blocking(move || warm_up.send(0, 1, 1000)).await??;
    let deadline = Instant::now() + START_TIMEOUT;
    let rpc = tokio::spawn(follow_rpc(reader, Vec::new(), 1, deadline));
    let iceberg = tokio::spawn(follow_iceberg(table, topic.clone(), HashSet::new(), 1, deadline));
    let (rpc, iceberg) = (rpc.await??, iceberg.await??);
    ensure!(
        warm_up.keys().all(|key| rpc.seen.contains_key(key) && iceberg.seen.contains_key(key)),
        "the followers saw another record than the warm-up's"
    );

    eprintln!(
        "k2i-bench freshness: producing {} records at {}/s over {} partitions",
        args.records, args.rate, args.partitions
    );
    let planned = Duration::from_secs_f64(args.records as f64 / f64::from(args.rate));
    let deadline = Instant::now() + planned + DRAIN_TIMEOUT;
    let (records, rate) = (args.records, args.rate);
    let started = Instant::now();
    let sent = tokio::task::spawn_blocking(move || producer.send(1, records, rate));
    let rpc = tokio::spawn(follow_rpc(rpc.reader, rpc.watermarks, records, deadline));
    let iceberg = tokio::spawn(follow_iceberg(iceberg.table, topic, iceberg.snapshots, records, deadline));
    let sent = sent.await??;
    let produce_secs = started.elapsed().as_secs_f64();
    let (rpc, iceberg) = (rpc.await??, iceberg.await??);

    let latencies = latencies(&sent, &rpc.seen, &iceberg.seen)?;
    write_latencies(&dir.join("latencies.csv"), &latencies)?;
    Ok(Freshness {
        records,
        rate,
        partitions: args.partitions,
        produce_secs,
        rpc: Percentiles::of(latencies.iter().map(|l| l.rpc_ms).collect()),
        rpc_scans: rpc.scans,
        rpc_scan_secs: rpc.scan_secs,
        iceberg: Percentiles::of(latencies.iter().map(|l| l.iceberg_ms).collect()),
        iceberg_snapshots: iceberg.snapshots_with_records,
    })
}

/// Part 2's figures.
struct ScanThroughput {
    rows: usize,
    scans: Vec<Timed>,
}

/// One timed full scan.
#[derive(Default)]
struct Timed {
    secs: f64,
    rows: usize,
    /// The bytes the received columns hold (`get_slice_memory_size`): what the scan moved as Arrow data.
    arrow_bytes: usize,
    /// `get_array_memory_size` of the received batches. The IPC decoder slices every buffer out of the
    /// frame that carried it, and this counts the whole frame for each buffer: it overstates the data.
    memory_bytes: usize,
}

impl ScanThroughput {
    fn per_second(&self, of: impl Fn(&Timed) -> f64) -> Spread {
        Spread::of(self.scans.iter().map(|t| of(t) / t.secs).collect())
    }

    fn rows_per_second(&self) -> Spread {
        self.per_second(|t| t.rows as f64)
    }

    fn mib_per_second(&self) -> Spread {
        self.per_second(|t| t.arrow_bytes as f64 / 1048576.0)
    }

    fn memory_mib_per_second(&self) -> Spread {
        self.per_second(|t| t.memory_bytes as f64 / 1048576.0)
    }

    fn print(&self) {
        let first = self.scans.first();
        println!(
            "k2i-bench freshness: {} full scans of {} hot rows (all columns): {:.1} MiB of Arrow data \
             ({:.1} MiB by get_array_memory_size)",
            self.scans.len(),
            self.rows,
            first.map_or(0, |t| t.arrow_bytes) as f64 / 1048576.0,
            first.map_or(0, |t| t.memory_bytes) as f64 / 1048576.0
        );
        println!("| full scan | min | median | max |");
        println!("|---|---:|---:|---:|");
        let rows = self.rows_per_second();
        println!("| rows/s | {:.0} | {:.0} | {:.0} |", rows.min, rows.median, rows.max);
        let mib = self.mib_per_second();
        println!("| MiB/s (Arrow data) | {:.1} | {:.1} | {:.1} |", mib.min, mib.median, mib.max);
        let memory = self.memory_mib_per_second();
        println!(
            "| MiB/s (get_array_memory_size, counts shared frames) | {:.1} | {:.1} | {:.1} |",
            memory.min, memory.median, memory.max
        );
    }

    fn json(&self) -> Value {
        let first = self.scans.first();
        json!({
            "rows": self.rows, "scans": self.scans.len(),
            "arrow_bytes": first.map_or(0, |t| t.arrow_bytes),
            "get_array_memory_size_bytes": first.map_or(0, |t| t.memory_bytes),
            "seconds": self.scans.iter().map(|t| t.secs).collect::<Vec<_>>(),
            "rows_per_second": self.rows_per_second().json(),
            "mib_per_second": self.mib_per_second().json(),
            "get_array_memory_size_mib_per_second": self.memory_mib_per_second().json(),
        })
    }
}

/// Part 2: preload, let k2i hold every row hot, time full scans.
fn scan_throughput(
    args: &Args,
    top: &crate::Args,
    k2i: &Path,
    dir: &Path,
    stamp: u64,
    runtime: &tokio::runtime::Runtime,
) -> Result<ScanThroughput> {
    let rows = args.scan_rows;
    let topic = format!("bench-scan-{}p-{rows}-{stamp}", args.partitions);
    runtime.block_on(create_topic(&top.bootstrap_servers, &topic, args.partitions))?;
    eprintln!("k2i-bench freshness: preloading {rows} json records into {topic} for the scan");
    preload_json(top, &topic, rows, args.partitions)?;
    // Nothing flushes: every row stays hot, so a scan reads no files.
    let buffer = format!("flush_interval = \"1h\"\nflush_batch_size = {}\nmax_size_mb = 4096\n", rows + 1);
    let (config, _k2i) = start_ingest(k2i, dir, &top.bootstrap_servers, &topic, &buffer)?;
    runtime.block_on(async {
        let mut client = wait_for_socket(&config.rpc.socket_path).await?;
        let table = format!("{NAMESPACE}.{TABLE}");
        eprintln!("k2i-bench freshness: waiting until all {rows} rows are hot");
        let deadline = Instant::now() + LOAD_TIMEOUT;
        loop {
            let hot = client.tables().await?.iter().find(|t| t.name == table).map_or(0, |t| t.hot_rows);
            if hot == rows as u64 {
                break;
            }
            ensure!(hot < rows as u64, "{hot} rows are hot, more than the {rows} preloaded");
            ensure!(Instant::now() < deadline, "only {hot} of {rows} rows were hot after {LOAD_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut scans = Vec::with_capacity(SCANS);
        for _ in 0..SCANS {
            let started = Instant::now();
            let scan = client.scan(ScanBegin { table: table.clone(), ..ScanBegin::default() }).await?;
            client.end_scan(scan.state.scan_id).await?;
            let secs = started.elapsed().as_secs_f64();
            ensure!(scan.state.files.is_empty(), "the scan lists {} committed files", scan.state.files.len());
            let mut timed = Timed { secs, ..Timed::default() };
            for batch in scan.hot.iter().flat_map(|part| &part.batches) {
                timed.rows += batch.num_rows();
                timed.memory_bytes += batch.get_array_memory_size();
                for column in batch.columns() {
                    timed.arrow_bytes += column.to_data().get_slice_memory_size()?;
                }
            }
            ensure!(timed.rows == rows, "a full scan returned {} of {rows} hot rows", timed.rows);
            scans.push(timed);
        }
        Ok(ScanThroughput { rows, scans })
    })
}

/// `k2i-bench`'s preload of `records` JSON records over `partitions`, with the top-level connection flags.
fn preload_json(top: &crate::Args, topic: &str, records: usize, partitions: i32) -> Result<u64> {
    let json = crate::Args {
        mode: None,
        bootstrap_servers: top.bootstrap_servers.clone(),
        registry: top.registry.clone(),
        k2i: None,
        shape: Shape::Json,
        partitions,
        records,
        record_bytes: top.record_bytes,
        buffer_mb: top.buffer_mb,
        flush_batch_size: top.flush_batch_size,
        out: top.out.clone(),
    };
    crate::preload(&json, topic)
}

async fn create_topic(bootstrap_servers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap_servers).create()?;
    let created = admin
        .create_topics(
            [&NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in created {
        result.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// A running `k2i ingest`, killed and reaped when dropped.
struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        // The benchmark's topic and warehouse are thrown away: nothing needs a clean stop.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `dir`/k2i.toml (with `buffer` as its `[buffer]` section) and starts `k2i ingest` on it, logging to
/// `dir`/k2i.log.
fn start_ingest(
    k2i: &Path,
    dir: &Path,
    bootstrap_servers: &str,
    topic: &str,
    buffer: &str,
) -> Result<(Config, Ingest)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("k2i.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbootstrap_servers = [\"{bootstrap_servers}\"]\ntopic = \"{topic}\"\nconsumer_group = \"{topic}-k2i\"\n\n\
             [kafka.format]\ntype = \"json\"\n\n[buffer]\n{buffer}\n\
             [schema_evolution]\nschema_update_min_interval = \"0s\"\n\n\
             [iceberg]\nwarehouse_path = \"{}\"\ndatabase_name = \"{NAMESPACE}\"\ntable_name = \"{TABLE}\"\n\n\
             [transaction_log]\nlog_dir = \"{}\"\n\n[rpc]\nenabled = true\nsocket_path = \"{}\"\n\n\
             [monitoring]\nhealth_port = {port}\nmetrics_port = {port}\n",
            dir.join("warehouse").display(),
            dir.join("txlog").display(),
            dir.join("k2i.sock").display(),
        ),
    )?;
    let config = k2i_core::config::load(&path)?;
    let log = std::fs::File::create(dir.join("k2i.log"))?;
    let child = Command::new(k2i)
        .args(["ingest", "--config"])
        .arg(&path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", k2i.display()))?;
    Ok((config, Ingest(child)))
}

/// A client of the socket once k2i serves it.
async fn wait_for_socket(socket: &Path) -> Result<Client> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match Client::connect(socket).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!("k2i served no socket within {START_TIMEOUT:?}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Records each delivered record's send instant, carried as its delivery opaque.
#[derive(Default)]
struct Deliveries {
    sent: Mutex<Instants>,
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(message) => {
                lock(&self.sent).insert((message.partition(), message.offset()), *sent);
            }
            Err((e, _)) => {
                lock(&self.failed).get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the benchmark fails through that
/// thread's result anyway.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A producer of JSON records at a steady rate.
struct Paced {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    partitions: i32,
}

impl Paced {
    fn new(bootstrap_servers: &str, topic: &str, partitions: i32) -> Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            // Sent as soon as it is handed over: the producer's own batching is not what is measured.
            .set("linger.ms", "0")
            .set("acks", "1")
            .create_with_context(Deliveries::default())
            .context("cannot create the producer")?;
        Ok(Self { producer, topic: topic.to_owned(), partitions })
    }

    /// Sends `count` records (ids from `first`, partition id mod `partitions`) at `rate` per second, in
    /// bursts every [`TICK`], and returns each one's send instant by (partition, offset) once all are
    /// delivered. Blocks.
    fn send(&self, first: usize, count: usize, rate: u32) -> Result<Instants> {
        let started = Instant::now();
        let mut tick = started;
        let mut next = first;
        while next < first + count {
            let due = first + (tick.duration_since(started).as_secs_f64() * f64::from(rate)) as usize + 1;
            while next < due.min(first + count) {
                let value = crate::json_record(next);
                let key = format!("k{}", next % 10_000);
                let partition = (next % self.partitions as usize) as i32;
                let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(Instant::now()))
                    .key(&key)
                    .payload(&value)
                    .partition(partition);
                loop {
                    match self.producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => bail!("cannot produce: {e}"),
                    }
                }
                next += 1;
            }
            tick += TICK;
            std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        }
        self.producer.flush(Duration::from_secs(60)).context("cannot flush the producer")?;
        let deliveries = self.producer.context();
        if let Some(error) = lock(&deliveries.failed).take() {
            bail!("a record was not delivered: {error}");
        }
        let sent = std::mem::take(&mut *lock(&deliveries.sent));
        ensure!(sent.len() == count, "{} of {count} records were delivered", sent.len());
        Ok(sent)
    }
}

/// What the RPC follower saw, and where it stopped.
struct RpcFollowed {
    reader: Reader,
    watermarks: Vec<Watermark>,
    seen: Instants,
    scans: u64,
    scan_secs: f64,
}

/// Scans as fast as it can, each scan after the previous read-state's watermarks, until `expect` records
/// were seen; notes when each (partition, offset) was first seen.
async fn follow_rpc(
    mut reader: Reader,
    mut watermarks: Vec<Watermark>,
    expect: usize,
    deadline: Instant,
) -> Result<RpcFollowed> {
    let table = format!("{NAMESPACE}.{TABLE}");
    let columns = vec!["_kafka_partition".to_owned(), "_kafka_offset".to_owned()];
    let (mut seen, mut scans, mut scan_secs) = (Instants::new(), 0u64, 0.0);
    while seen.len() < expect {
        ensure!(Instant::now() < deadline, "the RPC showed {} of {expect} records before the deadline", seen.len());
        let offsets_from = watermarks
            .iter()
            .map(|w| OffsetFrom { topic: w.topic.clone(), partition: w.partition, offset: w.next_offset })
            .collect();
        let request = ScanBegin {
            table: table.clone(),
            columns: Some(columns.clone()),
            filter: Some(Filter { partitions: None, offsets_from: Some(offsets_from) }),
            ..ScanBegin::default()
        };
        let started = Instant::now();
        let fetched = reader.fetch(request).await?;
        let now = Instant::now();
        scans += 1;
        scan_secs += now.duration_since(started).as_secs_f64();
        for batch in &fetched.batches {
            for key in keys(batch)? {
                seen.entry(key).or_insert(now);
            }
        }
        watermarks = fetched.state.watermarks;
        tokio::time::sleep(RPC_PAUSE).await;
    }
    Ok(RpcFollowed { reader, watermarks, seen, scans, scan_secs })
}

/// The (partition, offset) of every row of a batch projected to those two columns.
fn keys(batch: &RecordBatch) -> Result<impl Iterator<Item = Key> + '_> {
    let column = |name: &str| batch.column_by_name(name).with_context(|| format!("a scanned batch has no {name}"));
    let partitions = column("_kafka_partition")?.as_primitive_opt::<Int32Type>().context("_kafka_partition")?;
    let offsets = column("_kafka_offset")?.as_primitive_opt::<Int64Type>().context("_kafka_offset")?;
    ensure!(partitions.null_count() == 0 && offsets.null_count() == 0, "a scanned row has no partition or offset");
    Ok(partitions.values().iter().copied().zip(offsets.values().iter().copied()))
}

/// What the Iceberg follower saw, and where it stopped.
struct IcebergFollowed {
    table: TableRef,
    snapshots: HashSet<i64>,
    snapshots_with_records: u64,
    seen: Instants,
}

/// Loads the table every [`ICEBERG_POLL`] until `expect` records of `topic` were seen in snapshots not in
/// `snapshots`; notes when each (partition, offset) was first seen.
async fn follow_iceberg(
    table: TableRef,
    topic: String,
    mut snapshots: HashSet<i64>,
    expect: usize,
    deadline: Instant,
) -> Result<IcebergFollowed> {
    let (mut seen, mut snapshots_with_records) = (Instants::new(), 0u64);
    while seen.len() < expect {
        ensure!(Instant::now() < deadline, "Iceberg held {} of {expect} records before the deadline", seen.len());
        let loaded = table.load().await?;
        let now = Instant::now();
        for snapshot in loaded.metadata().snapshots() {
            if !snapshots.insert(snapshot.snapshot_id()) {
                continue;
            }
            let Some(offsets) = snapshot.summary().additional_properties.get(PROP_OFFSETS) else { continue };
            let ranges = progress::decode_ranges(offsets)
                .with_context(|| format!("snapshot {} has an unreadable {PROP_OFFSETS}", snapshot.snapshot_id()))?;
            let before = seen.len();
            for (tp, range) in ranges.iter().filter(|(tp, _)| tp.topic == topic) {
                for offset in range.start..range.end {
                    seen.entry((tp.partition, offset)).or_insert(now);
                }
            }
            snapshots_with_records += u64::from(seen.len() > before);
        }
        tokio::time::sleep(ICEBERG_POLL).await;
    }
    Ok(IcebergFollowed { table, snapshots, snapshots_with_records, seen })
}

/// One record's way: when it was sent (ms after the first send) and seen − sent on each side.
struct Latency {
    key: Key,
    sent_ms: f64,
    rpc_ms: f64,
    iceberg_ms: f64,
}

/// Seen − sent of every sent record, in send order.
fn latencies(sent: &Instants, rpc: &Instants, iceberg: &Instants) -> Result<Vec<Latency>> {
    let first = sent.values().min().copied().unwrap_or_else(Instant::now);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = sent
        .iter()
        .map(|(key, sent)| {
            let (partition, offset) = key;
            let seen = |side: &Instants, name: &str| {
                let at = side
                    .get(key)
                    .with_context(|| format!("{name} never showed partition {partition} offset {offset}"))?;
                anyhow::Ok(ms(at.saturating_duration_since(*sent)))
            };
            Ok(Latency {
                key: *key,
                sent_ms: ms(sent.duration_since(first)),
                rpc_ms: seen(rpc, "the RPC")?,
                iceberg_ms: seen(iceberg, "Iceberg")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    Ok(out)
}

/// Every record's latencies as CSV, for a look at when the slow ones were sent.
fn write_latencies(path: &Path, latencies: &[Latency]) -> Result<()> {
    let mut csv = String::from("partition,offset,sent_ms,rpc_ms,iceberg_ms\n");
    for l in latencies {
        writeln!(csv, "{},{},{:.3},{:.3},{:.3}", l.key.0, l.key.1, l.sent_ms, l.rpc_ms, l.iceberg_ms)?;
    }
    std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))
}

struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = values.len();
            values.get(((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1).copied().unwrap_or(f64::NAN)
        };
        Self { p50: rank(0.50), p99: rank(0.99), max: rank(1.0) }
    }
}

struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let at = |i: usize| values.get(i).copied().unwrap_or(f64::NAN);
        Self { min: at(0), median: at(values.len() / 2), max: at(values.len().saturating_sub(1)) }
    }

    fn json(&self) -> Value {
        json!({ "min": self.min, "median": self.median, "max": self.max })
    }
}
