//! The commands that exist today: `validate`, `completions`, `man`.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::Failure;
use crate::cli::{Cli, CompletionsArgs, IngestArgs, ManArgs, ValidateArgs};

pub fn validate(args: &ValidateArgs) -> Result<(), Failure> {
    let config = k2i_core::config::load(&args.config).map_err(Failure::config)?;
    if args.print {
        print!("{}", config.to_redacted_toml());
    } else {
        let ice = &config.iceberg;
        let catalog = serde_json::to_value(ice.catalog_type).ok();
        let catalog = catalog.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        println!(
            "{}: valid (topics {} → table {}.{} in the {catalog} catalog)",
            args.config.display(),
            config.kafka.topic_list().join(", "),
            ice.database_name,
            ice.table_name,
        );
    }
    tracing::debug!(file = %args.config.display(), "configuration validated");
    Ok(())
}

/// Runs an ingest. CLI overrides go through the same environment overlay as `K2I_*` variables, so they are
/// validated like the file.
pub fn ingest(args: &IngestArgs) -> Result<(), Failure> {
    let mut env: k2i_core::config::Env =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
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
