//! The commands: `validate`, `ingest`, `status`, `resume`, `table`, `completions`, `man`.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::Failure;
use crate::cli::{
    Cli, CompletionsArgs, IngestArgs, ManArgs, ResumeAction, ResumeArgs, TableAction, TableArgs, ValidateArgs,
};

/// Validates the configuration. Warnings (keys accepted and ignored, features not built yet) go to standard
/// error and do not change the exit code; `k2i ingest` refuses what is not built.
pub fn validate(args: &ValidateArgs) -> Result<(), Failure> {
    let config = k2i_core::config::load(&args.config).map_err(Failure::config)?;
    if args.print {
        print!("{}", config.to_redacted_toml());
    } else {
        let ice = &config.iceberg;
        println!(
            "{}: valid (topics {} → table {}.{} in the {} catalog)",
            args.config.display(),
            config.kafka.topic_list().join(", "),
            ice.database_name,
            ice.table_name,
            config.catalog_name(),
        );
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    for unbuilt in config.unbuilt() {
        eprintln!("warning: {unbuilt}");
    }
    tracing::debug!(file = %args.config.display(), "configuration validated");
    Ok(())
}

/// Runs an ingest. CLI overrides go through the same environment overlay as `K2I_*` variables, so they are
/// validated like the file.
pub fn ingest(args: &IngestArgs) -> Result<(), Failure> {
    let mut env = k2i_core::config::process_env();
    if let Some(servers) = &args.bootstrap_servers {
        env.insert("K2I_KAFKA__BOOTSTRAP_SERVERS".into(), servers.clone());
    }
    if let Some(topic) = &args.topic {
        env.insert("K2I_KAFKA__TOPIC".into(), topic.clone());
        env.insert("K2I_KAFKA__TOPICS".into(), String::new());
    }
    if let Some(group) = &args.consumer_group {
        env.insert("K2I_KAFKA__CONSUMER_GROUP".into(), group.clone());
    }
    let config = k2i_core::config::load_with_env(&args.config, &env).map_err(Failure::config)?;
    for warning in config.warnings() {
        tracing::warn!("configuration: {warning}");
    }
    let table = format!("{}.{}", config.iceberg.database_name, config.iceberg.table_name);
    tracing::info!(topics = %config.kafka.topic_list().join(","), table, until_caught_up = args.until_caught_up, "starting ingest");
    let options = k2i_core::engine::IngestOptions { until_caught_up: args.until_caught_up, handle_signals: true };
    let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let summary = k2i_core::engine::run(config, options, shutdown).map_err(Failure::engine)?;
    let plural = |n: u64, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
    println!(
        "ingested {} ({} skipped) into {table} in {} and {}",
        plural(summary.rows, "row"),
        plural(summary.skipped, "record"),
        plural(summary.commits, "commit"),
        plural(summary.files, "data file"),
    );
    Ok(())
}

/// `k2i table progress` and `k2i table set-progress`.
pub fn table(args: &TableArgs) -> Result<(), Failure> {
    match &args.action {
        TableAction::Progress(args) => {
            let config = k2i_core::config::load(&args.config).map_err(Failure::config)?;
            let recorded = k2i_core::table::progress(&config).map_err(Failure::engine)?;
            let source = match recorded.source {
                k2i_core::progress::Source::Nothing => "nothing recorded".to_owned(),
                k2i_core::progress::Source::Snapshot(id) => format!("snapshot {id}"),
                k2i_core::progress::Source::TableProperty => "table property k2i.progress".to_owned(),
            };
            if args.json {
                let progress: serde_json::Value =
                    serde_json::from_str(&k2i_core::progress::encode_progress(&recorded.progress))
                        .context("cannot encode the progress")
                        .map_err(Failure::runtime)?;
                println!("{}", serde_json::json!({"source": source, "progress": progress}));
            } else {
                println!("source: {source}");
                println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITION", "NEXT OFFSET");
                for (tp, next) in &recorded.progress {
                    println!("{:<40} {:>10} {:>14}", tp.topic, tp.partition, next);
                }
            }
            Ok(())
        }
        TableAction::SetProgress(args) => {
            let config = k2i_core::config::load(&args.config).map_err(Failure::config)?;
            let mut offsets = k2i_core::progress::Progress::new();
            for text in &args.offsets {
                let (tp, next) = parse_offset(text).map_err(Failure::config)?;
                offsets.insert(tp, next);
            }
            let (progress, snapshot) = k2i_core::table::set_progress(&config, &offsets).map_err(Failure::engine)?;
            println!(
                "set the progress of {} partition(s) in snapshot {snapshot}; the table now records:",
                offsets.len()
            );
            for (tp, next) in &progress {
                println!("  {tp} next offset {next}");
            }
            Ok(())
        }
    }
}

/// Parses `TOPIC/PARTITION=OFFSET` (topic names cannot contain `/` or `=`).
fn parse_offset(text: &str) -> anyhow::Result<(k2i_core::progress::TopicPartition, i64)> {
    let parse = || {
        let (tp, next) = text.split_once('=')?;
        let (topic, partition) = tp.rsplit_once('/')?;
        let partition: i32 = partition.parse().ok().filter(|p: &i32| *p >= 0)?;
        let next: i64 = next.parse().ok().filter(|n: &i64| *n >= 0)?;
        (!topic.is_empty()).then(|| (k2i_core::progress::TopicPartition { topic: topic.to_owned(), partition }, next))
    };
    parse().with_context(|| format!("--offset {text:?} is not TOPIC/PARTITION=OFFSET (partition and offset ≥ 0)"))
}

pub fn completions(args: &CompletionsArgs) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "k2i", &mut out);
    out.flush().context("cannot write to standard output").map_err(Failure::runtime)
}

/// Renders `k2i.1` and one `k2i-<command>.1` per command. The version is the package version without the
/// git revision, so the checked-in pages only change when the CLI does.
pub fn man(args: &ManArgs) -> Result<(), Failure> {
    let dir = &args.output_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Failure::runtime)?;
    let root = Cli::command().version(env!("CARGO_PKG_VERSION")).long_version(None::<&str>);
    let mut pages = vec![("k2i".to_owned(), root.clone())];
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("k2i-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).version(env!("CARGO_PKG_VERSION"));
        pages.push((name, page));
    }
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buffer = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buffer)
            .and_then(|()| std::fs::write(&path, &buffer))
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(Failure::runtime)?;
    }
    Ok(())
}

/// Queries a running instance's `/status` and `/health` and prints them.
pub fn status(args: &crate::cli::StatusArgs) -> Result<(), Failure> {
    let base = match (&args.url, &args.config) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(path)) => {
            let config = k2i_core::config::load(path).map_err(Failure::config)?;
            let m = &config.monitoring;
            let host =
                if m.listen_address.is_unspecified() { "127.0.0.1".to_owned() } else { m.listen_address.to_string() };
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            format!("http://{host}:{}", m.health_port)
        }
        (None, None) => "http://127.0.0.1:8080".to_owned(),
    };
    k2i_core::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .context("cannot create an HTTP client")
        .map_err(Failure::runtime)?;
    let get = |path: &str| -> Result<serde_json::Value, Failure> {
        let url = format!("{base}{path}");
        let response = client
            .get(&url)
            .send()
            .with_context(|| format!("k2i is unreachable at {base}"))
            .map_err(|e| Failure::with_code(e, crate::exit::UNREACHABLE))?;
        response
            .json()
            .with_context(|| format!("{url} did not answer JSON"))
            .map_err(|e| Failure::with_code(e, crate::exit::UNREACHABLE))
    };
    let status = get("/status")?;
    let health = get("/health")?;
    let healthy = health["status"] == "healthy";
    if args.json {
        let doc = serde_json::json!({ "url": base, "health": health, "status": status });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render_status(&base, &health, &status));
    }
    if healthy {
        Ok(())
    } else {
        let reason = health["reason"].as_str().unwrap_or("unknown").to_owned();
        Err(Failure::with_code(anyhow::anyhow!("k2i at {base} is not healthy: {reason}"), crate::exit::UNHEALTHY))
    }
}

/// The base URL of the health port of the instance the configuration at `path` describes: `0.0.0.0` and `::`
/// (listen on every address) become the loopback address of the same family.
fn health_url(path: &std::path::Path) -> Result<String, Failure> {
    let config = k2i_core::config::load(path).map_err(Failure::config)?;
    let m = &config.monitoring;
    let host = match m.listen_address {
        std::net::IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    Ok(format!("http://{host}:{}", m.health_port))
}

/// POSTs an operator's decision for a table paused by a breaking schema change to a running instance's
/// `/resume`: exit 0 when it is accepted (202), `UNHEALTHY` (6) when no table is paused (409), `RUNTIME` (1)
/// when nothing answers or the answer is anything else.
pub fn resume(args: &ResumeArgs) -> Result<(), Failure> {
    let base = match (&args.url, &args.config) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(path)) => health_url(path)?,
        (None, None) => "http://127.0.0.1:8080".to_owned(),
    };
    let action = args.action.as_str();
    let url = format!("{base}/resume?action={action}");
    k2i_core::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .context("cannot create an HTTP client")
        .map_err(Failure::runtime)?;
    let response = client
        .post(&url)
        .send()
        .with_context(|| format!("k2i is unreachable at {base} (POST {url})"))
        .map_err(Failure::runtime)?;
    let code = response.status();
    let text =
        response.text().with_context(|| format!("cannot read the answer of POST {url}")).map_err(Failure::runtime)?;
    let answer: Option<serde_json::Value> = serde_json::from_str(&text).ok().filter(serde_json::Value::is_object);
    let Some(answer) = answer.filter(|_| matches!(code.as_u16(), 202 | 409)) else {
        let snippet: String = text.trim().chars().take(200).collect();
        let body = if snippet.is_empty() { "an empty body".to_owned() } else { format!("`{snippet}`") };
        return Err(Failure::runtime(anyhow::anyhow!(
            "POST {url} answered {code} with {body}, not a k2i resume answer (is {base} a k2i health port?)"
        )));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    }
    let text_of = |key: &str| answer[key].as_str().unwrap_or("unknown").to_owned();
    if code == reqwest::StatusCode::CONFLICT {
        let reason = text_of("reason");
        return Err(Failure::with_code(
            anyhow::anyhow!("nothing to resume at {base}: {reason}"),
            crate::exit::UNHEALTHY,
        ));
    }
    if !args.json {
        let what = match args.action {
            ResumeAction::Retry => {
                "the paused schema is checked again against the table and the subject's latest registered schema"
            }
            ResumeAction::Skip => "the records of the paused schema id are skipped from now on",
            ResumeAction::DeadLetter => {
                "the records of the paused schema id go to the dead-letter topic from now on (without \
                 errors.dead_letter_topic the table stays paused and the instance logs it)"
            }
        };
        println!("k2i at {base} accepted {action}: {what}");
        println!("  paused: {}", text_of("paused"));
    }
    Ok(())
}

fn render_status(base: &str, health: &serde_json::Value, status: &serde_json::Value) -> String {
    use std::fmt::Write;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "k2i at {base}: {} ({})", text(&health["status"]), text(&health["phase"]));
    if let Some(reason) = health["reason"].as_str() {
        let _ = writeln!(out, "  not ready: {reason}");
    }
    if let Some(components) = health["components"].as_object() {
        for (name, c) in components {
            let state = if c["ok"].as_bool() == Some(true) { "ok" } else { "FAILING" };
            let _ = writeln!(out, "  {name:<8} {state:<8} {}", text(&c["detail"]));
        }
    }
    let buffer = &status["buffer"];
    let _ = writeln!(
        out,
        "buffer: {} rows, {} bytes{}",
        text(&buffer["rows"]),
        text(&buffer["bytes"]),
        if buffer["paused"].as_bool() == Some(true) { ", consumption paused" } else { "" }
    );
    match status["last_commit"].as_object() {
        Some(c) => {
            let _ = writeln!(
                out,
                "last commit: snapshot {} at {}, {} rows in {} files",
                text(&c["snapshot_id"]),
                text(&c["at"]),
                text(&c["rows"]),
                text(&c["files"])
            );
        }
        None => out.push_str("last commit: none yet\n"),
    }
    if let Some(r) = status["recovery"].as_object() {
        let _ = writeln!(
            out,
            "recovery at start: {} flushes found committed, {} rolled back ({} files deleted)",
            text(&r["landed"]),
            text(&r["rolled_back"]),
            text(&r["files_deleted"])
        );
    }
    let _ = writeln!(
        out,
        "{:<32} {:>9} {:>12} {:>14} {:>10} {:>12}",
        "TOPIC", "PARTITION", "POSITION", "HIGH WATERMARK", "LAG", "COMMITTED"
    );
    for p in status["partitions"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<32} {:>9} {:>12} {:>14} {:>10} {:>12}",
            text(&p["topic"]),
            text(&p["partition"]),
            text(&p["position"]),
            text(&p["high_watermark"]),
            text(&p["lag"]),
            text(&p["committed"])
        );
    }
    out
}
