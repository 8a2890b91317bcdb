//! The commands that exist today: `validate`, `completions`, `man`.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::Failure;
use crate::cli::{Cli, CompletionsArgs, ManArgs, ValidateArgs};

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
