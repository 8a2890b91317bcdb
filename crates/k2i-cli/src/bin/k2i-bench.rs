//! `k2i-bench`: measures `k2i ingest --until-caught-up` against the physical limit on the same machine and
//! in the same run — a plain librdkafka consumer that only counts bytes of the same topic — and prints the
//! ratio, CPU seconds and peak RSS against the buffer cap. Run through `scripts/bench.sh`.
//!
//! Steps: create a fresh topic (P partitions), preload N records of the chosen shape, (a) consume it all with
//! a raw rdkafka consumer, (b) run `k2i ingest --until-caught-up` into a fresh SQLite-catalog table while
//! sampling the process's CPU time and peak RSS from /proc, then write a table to stdout and JSON to
//! `--out`.
//!
//! `k2i-bench commit-history` measures instead how a commit's latency depends on the table's history (see
//! [`commit_history`]); it needs no Kafka and no `--k2i`. `k2i-bench freshness` measures how soon a produced
//! record is readable through the read-state RPC against how soon it is in Iceberg, and full scans of hot
//! rows (see [`freshness`]). `k2i-bench formats` runs the throughput benchmark for each registry format
//! (Protobuf, Avro, JSON Schema: the same 10-field event) on the same record count and prints them side by
//! side (see [`run_formats`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

// A crate root looks for modules beside itself; this binary's live in a folder named after it.
#[path = "k2i-bench/avro.rs"]
mod avro;
#[path = "k2i-bench/commit_history.rs"]
mod commit_history;
#[path = "k2i-bench/freshness.rs"]
mod freshness;
#[path = "k2i-bench/json_schema.rs"]
mod json_schema;
#[path = "k2i-bench/protobuf.rs"]
mod protobuf;

/// Record shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// JSON objects with 10 fields of mixed types (nested object and array included).
    Json,
    /// Opaque 1 KiB values (`--record-bytes` to change).
    Raw,
    /// Confluent-framed Protobuf: a 10-field event (mixed scalars, a timestamp, one nested message).
    Protobuf,
    /// Confluent-framed Protobuf: a ~100-column nested bid request.
    ProtobufWide,
    /// Confluent-framed Avro: the `protobuf` shape's 10-field event with the same values.
    Avro,
    /// Confluent-framed JSON with a JSON Schema: the `protobuf` shape's 10-field event with the same values.
    JsonSchema,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Raw => "raw",
            Self::Protobuf => "protobuf",
            Self::ProtobufWide => "protobuf-wide",
            Self::Avro => "avro",
            Self::JsonSchema => "json-schema",
        }
    }

    /// The `kafka.format.type` k2i reads it with.
    fn format(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Raw => "raw",
            Self::Protobuf | Self::ProtobufWide => "protobuf",
            Self::Avro => "avro",
            Self::JsonSchema => "json_schema",
        }
    }

    /// Whether k2i reads the shape through the Schema Registry.
    fn registry(self) -> bool {
        match self {
            Self::Protobuf | Self::ProtobufWide | Self::Avro | Self::JsonSchema => true,
            Self::Json | Self::Raw => false,
        }
    }
}

/// Benchmark k2i against the raw consume rate of the same topic.
#[derive(Debug, Parser)]
#[command(name = "k2i-bench", subcommand_negates_reqs = true)]
struct Args {
    /// Another measurement instead of the throughput benchmark.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "K2I_TEST_KAFKA", default_value = "127.0.0.1:19092")]
    bootstrap_servers: String,
    /// The Schema Registry (the Protobuf, Avro and JSON Schema shapes).
    #[arg(long, env = "K2I_TEST_REGISTRY", default_value = "http://127.0.0.1:18081/apis/ccompat/v7")]
    registry: String,
    /// The k2i binary to measure.
    #[arg(long, required = true)]
    k2i: Option<PathBuf>,
    /// Record shape.
    #[arg(long, value_enum, default_value_t = Shape::Json)]
    shape: Shape,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Records to preload.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Value size for the raw shape.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// k2i's buffer cap (`buffer.max_size_mb`).
    #[arg(long, default_value_t = 256)]
    buffer_mb: u64,
    /// k2i's `buffer.flush_batch_size`.
    #[arg(long, default_value_t = 100_000)]
    flush_batch_size: usize,
    /// Where the run's files go (warehouse, logs, the JSON report).
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
}

/// Measurements other than the default throughput benchmark.
#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Commit latency on a table with a small history and with a long one (issue 9, B.7), with k2i's
    /// fencing decision timed on its own; in process, on a SQLite SQL catalog in a temp dir.
    CommitHistory(commit_history::Args),
    /// Produce → visible through the read-state RPC against produce → visible in Iceberg (p50 / p99 / max),
    /// and full-scan throughput of hot rows; runs `--k2i ingest` with the RPC on.
    Freshness(freshness::Args),
    /// The throughput benchmark once per registry format (by default protobuf, avro and json-schema: the same
    /// 10-field event) on the same record count, each against the raw consume of its own topic, side by side.
    Formats(FormatsArgs),
}

/// `k2i-bench formats`: the other options (`--buffer-mb`, `--flush-batch-size`, `--registry`, …) are the
/// top-level ones.
#[derive(Debug, clap::Args)]
struct FormatsArgs {
    /// The shapes to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "protobuf,avro,json-schema")]
    shapes: Vec<Shape>,
    /// Records to preload per shape (default: the top-level `--records`).
    #[arg(long)]
    records: Option<usize>,
    /// Partitions of each topic (default: the top-level `--partitions`).
    #[arg(long)]
    partitions: Option<i32>,
}

fn json_record(i: usize) -> String {
    let countries = ["DE", "FR", "US", "BR", "JP", "IN", "NG", "AU"];
    format!(
        r#"{{"id":{i},"user":"user-{}","amount":{}.{:02},"ok":{},"ts":"2026-11-25T10:{:02}:{:02}.{:03}Z","country":"{}","tags":["t{}","t{}"],"device":{{"os":"linux","version":{}}},"score":{:.3},"note":"event number {i} with some free text"}}"#,
        i % 10_000,
        i % 1000,
        i % 100,
        i.is_multiple_of(2),
        (i / 60) % 60,
        i % 60,
        i % 1000,
        countries[i % countries.len()],
        i % 7,
        i % 11,
        i % 5,
        (i % 1000) as f64 / 1000.0
    )
}

fn raw_record(i: usize, size: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(size);
    let mut x = i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    while value.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        value.extend_from_slice(&x.to_le_bytes());
    }
    value.truncate(size);
    value
}

/// How a shape's records are made: the registry shapes with their schema and its registered id.
enum Encoder {
    Json,
    Raw,
    Protobuf(Box<prost_reflect::MessageDescriptor>, u32),
    Avro(Box<apache_avro::Schema>, u32),
    JsonSchema(u32),
}

/// Registers `schema` (the registry's `schema_type`: `PROTOBUF`, `AVRO`, `JSON`)
/// under `<topic>-value` through the Confluent REST API and returns its id.
fn register(registry: &str, topic: &str, schema_type: &str, schema: &str) -> Result<u32> {
    let url = format!("{}/subjects/{topic}-value/versions", registry.trim_end_matches('/'));
    let body = serde_json::json!({ "schemaType": schema_type, "schema": schema });
    k2i_core::tls::install_crypto_provider();
    let response = reqwest::blocking::Client::new()
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .with_context(|| format!("cannot reach the registry at {url}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().with_context(|| format!("{url} answered {status}"))?;
    match answer["id"].as_u64() {
        Some(id) if status.is_success() => Ok(u32::try_from(id)?),
        _ => bail!("{url} answered {status}: {answer}"),
    }
}

fn preload(args: &Args, topic: &str) -> Result<u64> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "1")
        .create()
        .context("cannot create the producer")?;
    let encoder = match args.shape {
        Shape::Json => Encoder::Json,
        Shape::Raw => Encoder::Raw,
        Shape::Protobuf | Shape::ProtobufWide => {
            let schema =
                if args.shape == Shape::Protobuf { protobuf::EVENT.to_owned() } else { protobuf::bid_request() };
            let id = register(&args.registry, topic, "PROTOBUF", &schema)?;
            Encoder::Protobuf(Box::new(protobuf::descriptor(&schema)?), id)
        }
        Shape::Avro => Encoder::Avro(Box::new(avro::schema()?), register(&args.registry, topic, "AVRO", avro::EVENT)?),
        Shape::JsonSchema => Encoder::JsonSchema(register(&args.registry, topic, "JSON", json_schema::EVENT)?),
    };
    let mut bytes = 0u64;
    for i in 0..args.records {
        let value = match &encoder {
            Encoder::Json => json_record(i).into_bytes(),
            Encoder::Raw => raw_record(i, args.record_bytes),
            Encoder::Protobuf(descriptor, id) => protobuf::record(descriptor, *id, i),
            Encoder::Avro(schema, id) => avro::record(schema, *id, i)?,
            Encoder::JsonSchema(id) => json_schema::record(*id, i),
        };
        bytes += value.len() as u64;
        let key = format!("k{}", i % 10_000);
        let partition = (i % args.partitions as usize) as i32;
        let mut record = BaseRecord::to(topic).key(&key).payload(&value).partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        bail!("cannot produce: {e}");
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).context("cannot flush the producer")?;
    Ok(bytes)
}

/// (a) The physical limit: a consumer that reads every partition from the start and only counts bytes.
fn raw_consume(args: &Args, topic: &str) -> Result<(f64, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", format!("{topic}-raw"))
        .set("enable.auto.commit", "false")
        // librdkafka backs a partition's fetching off for fetch.queue.backoff.ms (1 s by default) whenever its
        // prefetch queue is full; the consumer then idles (measured: 1,000,000 Avro events of ~100 bytes took
        // 2.8–3.9 s instead of about 1 s). k2i sets 10 ms too.
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .context("cannot create the raw consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let (mut count, mut bytes) = (0usize, 0u64);
    while count < args.records {
        match consumer.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                count += 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
            }
            Some(Err(e)) => bail!("raw consume failed: {e}"),
            None if started.elapsed() > Duration::from_secs(600) => bail!("raw consume stalled at {count} records"),
            None => {}
        }
    }
    Ok((started.elapsed().as_secs_f64(), bytes))
}

struct Sampled {
    secs: f64,
    cpu_secs: f64,
    peak_rss_mb: f64,
    stdout: String,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (b) `k2i ingest --until-caught-up`, sampling CPU time and peak RSS from /proc while it runs.
fn run_k2i(k2i: &std::path::Path, config: &std::path::Path) -> Result<Sampled> {
    let ticks = clock_ticks();
    let started = Instant::now();
    let mut child = Command::new(k2i)
        .args(["-q", "ingest", "--until-caught-up", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", k2i.display()))?;
    let (mut cpu_secs, mut peak_kb) = (0.0f64, 0u64);
    let pid = child.id();
    loop {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            if let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) {
                let (u, s): (f64, f64) = (u.parse().unwrap_or(0.0), s.parse().unwrap_or(0.0));
                cpu_secs = cpu_secs.max((u + s) / ticks);
            }
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("k2i failed: {}", out.status);
    }
    Ok(Sampled {
        secs: started.elapsed().as_secs_f64(),
        cpu_secs,
        peak_rss_mb: peak_kb as f64 / 1024.0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// "… in C commits and F data files" → (C, F).
fn commits_and_files(summary: &str) -> (u64, u64) {
    let numbers: Vec<u64> =
        summary.split(" in ").last().unwrap_or_default().split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers.first().copied().unwrap_or(0), numbers.get(1).copied().unwrap_or(0))
}

fn main() -> Result<()> {
    let args = Args::parse();
    match (&args.mode, &args.k2i) {
        (Some(Mode::CommitHistory(history)), _) => commit_history::run(history, &args.out),
        (Some(Mode::Freshness(freshness)), Some(binary)) => freshness::run(freshness, &args, binary),
        (Some(Mode::Freshness(_)), None) => bail!("--k2i is required: freshness runs `k2i ingest`"),
        (Some(Mode::Formats(formats)), Some(binary)) => run_formats(formats, &args, binary),
        (Some(Mode::Formats(_)), None) => bail!("--k2i is required: formats runs `k2i ingest`"),
        (None, Some(binary)) => throughput(&args, binary).map(drop),
        // clap requires --k2i when no mode is given.
        (None, None) => bail!("--k2i is required"),
    }
}

/// The throughput benchmark of `args.shape`: preload a fresh topic, (a) raw consume, (b) k2i; prints the
/// table, writes the JSON report to `args.out` and returns it.
fn throughput(args: &Args, k2i_binary: &Path) -> Result<serde_json::Value> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let shape = args.shape.name();
    let topic = format!("bench-{shape}-{}p-{}-{stamp}", args.partitions, args.records);
    let run_dir = args.out.join(&topic);
    std::fs::create_dir_all(&run_dir)?;

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &args.bootstrap_servers).create()?;
    let created = futures_lite_block(admin.create_topics(
        [&NewTopic::new(&topic, args.partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for result in created? {
        result.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    eprintln!("k2i-bench: preloading {} {shape} records into {topic} ({} partitions)", args.records, args.partitions);
    let payload_bytes = preload(args, &topic)?;

    eprintln!("k2i-bench: (a) raw consume");
    let (raw_secs, raw_bytes) = raw_consume(args, &topic)?;

    let config = run_dir.join("k2i.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = [\"{}\"]\ntopic = \"{topic}\"\nconsumer_group = \"{topic}-k2i\"\n\n[kafka.format]\ntype = \"{format}\"\n{registry}\n\
             [buffer]\nmax_size_mb = {}\nflush_batch_size = {}\n\n[schema_evolution]\nschema_update_min_interval = \"0s\"\n\n\
             [iceberg]\nwarehouse_path = \"{}\"\ndatabase_name = \"bench\"\ntable_name = \"events\"\n\n\
             [transaction_log]\nlog_dir = \"{}\"\n\n[monitoring]\nhealth_port = {port}\nmetrics_port = {port}\n",
            args.bootstrap_servers,
            args.buffer_mb,
            args.flush_batch_size,
            run_dir.join("warehouse").display(),
            run_dir.join("txlog").display(),
            port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
            format = args.shape.format(),
            registry = if args.shape.registry() {
                format!(
                    "\n[kafka.format.registry]\nurl = \"{}\"\ncache_dir = \"{}\"\n",
                    args.registry,
                    run_dir.join("schemas").display()
                )
            } else {
                String::new()
            },
        ),
    )?;
    eprintln!("k2i-bench: (b) k2i ingest --until-caught-up");
    let k2i = run_k2i(k2i_binary, &config)?;
    let (commits, files) = commits_and_files(&k2i.stdout);

    let mb = raw_bytes as f64 / 1e6;
    let raw_rps = args.records as f64 / raw_secs;
    let k2i_rps = args.records as f64 / k2i.secs;
    let report = serde_json::json!({
        "shape": shape, "partitions": args.partitions, "records": args.records, "payload_bytes": payload_bytes,
        "buffer_mb": args.buffer_mb, "flush_batch_size": args.flush_batch_size,
        "raw": { "seconds": raw_secs, "records_per_second": raw_rps, "mb_per_second": mb / raw_secs },
        "k2i": {
            "seconds": k2i.secs, "records_per_second": k2i_rps, "mb_per_second": mb / k2i.secs,
            "cpu_seconds": k2i.cpu_secs, "peak_rss_mb": k2i.peak_rss_mb, "snapshots": commits, "files": files,
        },
        "ratio_k2i_to_raw": k2i_rps / raw_rps,
        "payload_mib_per_cpu_second": payload_bytes as f64 / 1048576.0 / k2i.cpu_secs,
        "peak_rss_minus_buffer_cap_mb": k2i.peak_rss_mb - args.buffer_mb as f64,
        "k2i_summary": k2i.stdout.trim(),
    });
    println!("k2i-bench: {shape}, {} records, {} partitions, {mb:.1} MB", args.records, args.partitions);
    println!("| run | seconds | records/s | MB/s | CPU s | peak RSS MiB | snapshots | files |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!("| raw librdkafka consume | {raw_secs:.2} | {raw_rps:.0} | {:.1} | | | | |", mb / raw_secs);
    println!(
        "| k2i ingest --until-caught-up | {:.2} | {k2i_rps:.0} | {:.1} | {:.2} | {:.0} | {commits} | {files} |",
        k2i.secs,
        mb / k2i.secs,
        k2i.cpu_secs,
        k2i.peak_rss_mb
    );
    println!(
        "ratio k2i / raw: {:.2}; peak RSS {:.0} MiB vs buffer cap {} MiB (+{:.0} MiB)",
        k2i_rps / raw_rps,
        k2i.peak_rss_mb,
        args.buffer_mb,
        k2i.peak_rss_mb - args.buffer_mb as f64
    );
    println!(
        "payload: {:.1} MiB/s per core of k2i CPU ({:.1} MiB of values in {:.2} CPU s)",
        payload_bytes as f64 / 1048576.0 / k2i.cpu_secs,
        payload_bytes as f64 / 1048576.0,
        k2i.cpu_secs
    );
    let json_path = args.out.join(format!("{topic}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", json_path.display());
    Ok(report)
}

/// `k2i-bench formats`: [`throughput`] once per shape with the same record count and partitions, then one
/// table of the k2i side of each against the raw consume of its own topic, and `formats-….json`.
fn run_formats(formats: &FormatsArgs, args: &Args, k2i: &Path) -> Result<()> {
    let records = formats.records.unwrap_or(args.records);
    let partitions = formats.partitions.unwrap_or(args.partitions);
    let mut reports = Vec::new();
    for &shape in &formats.shapes {
        let one = Args {
            mode: None,
            bootstrap_servers: args.bootstrap_servers.clone(),
            registry: args.registry.clone(),
            k2i: Some(k2i.to_owned()),
            shape,
            partitions,
            records,
            record_bytes: args.record_bytes,
            buffer_mb: args.buffer_mb,
            flush_batch_size: args.flush_batch_size,
            out: args.out.clone(),
        };
        reports.push(throughput(&one, k2i)?);
        println!();
    }
    let number = |report: &serde_json::Value, path: &str| report.pointer(path).and_then(serde_json::Value::as_f64);
    let rows: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "format": r["shape"],
                "payload_mib": number(r, "/payload_bytes").map(|b| b / 1_048_576.0),
                "records_per_second": number(r, "/k2i/records_per_second"),
                "payload_mib_per_cpu_second": number(r, "/payload_mib_per_cpu_second"),
                "ratio_k2i_to_raw": number(r, "/ratio_k2i_to_raw"),
                "raw_records_per_second": number(r, "/raw/records_per_second"),
                "peak_rss_mb": number(r, "/k2i/peak_rss_mb"),
            })
        })
        .collect();
    println!("k2i-bench formats: {records} records each, {partitions} partitions");
    println!("| format | payload MiB | records/s | MiB/s per core | ratio to raw consume | RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in &rows {
        let f = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.2} | {:.0} |",
            row["format"].as_str().unwrap_or_default(),
            f("payload_mib"),
            f("records_per_second"),
            f("payload_mib_per_cpu_second"),
            f("ratio_k2i_to_raw"),
            f("peak_rss_mb")
        );
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let json_path = args.out.join(format!("formats-{partitions}p-{records}-{stamp}.json"));
    let report = serde_json::json!({
        "records": records, "partitions": partitions, "buffer_mb": args.buffer_mb,
        "flush_batch_size": args.flush_batch_size, "formats": rows, "runs": reports,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", json_path.display());
    Ok(())
}

/// Runs a future to completion on a small runtime (only the topic creation is async).
fn futures_lite_block<F: std::future::Future>(future: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future))
}
