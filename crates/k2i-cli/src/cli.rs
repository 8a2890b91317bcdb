//! The command line, declared with clap's derive API. Every flag carries its own help text; the man pages in
//! `docs/man` are rendered from these declarations.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// The version with the git revision it was built from.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("K2I_GIT_REVISION"), ")");

/// k2i streams Kafka topics into Apache Iceberg tables, exactly once.
#[derive(Debug, Parser)]
#[command(name = "k2i", version = LONG_VERSION, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 runtime error, 2 usage or configuration error, 3 a record could not be stored \
                  (errors.policy = \"fail\"), 4 damaged state or unknown table progress (see k2i table), 6 k2i status: not healthy / k2i resume: no table is paused, 7 k2i status: unreachable.\nDocs: docs/commands.md"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output (-v debug, -vv trace). `K2I_LOG` (a tracing filter such as `k2i=debug`) overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration file and report every problem at once.
    Validate(ValidateArgs),
    /// Stream the topics into the Iceberg table, exactly once, until SIGINT/SIGTERM (or until caught up).
    Ingest(IngestArgs),
    /// Show the health, partitions, lag, buffer and last commit of a running `k2i ingest`.
    Status(StatusArgs),
    /// Tell a running `k2i ingest` what to do with a table paused by a breaking schema change.
    ///
    /// With `schema_evolution.on_breaking_change = "pause"`, a record whose writer schema cannot be stored in
    /// the table pauses the table (`/readyz` answers 503 with the reason) until an operator decides. This
    /// command POSTs the decision to `/resume?action=...` on the instance's health port and prints the answer.
    #[command(after_help = "Exit codes: 0 the instance accepted the action, 6 no table is paused (HTTP 409), 1 the \
                      instance cannot be reached or gave another answer, 2 the configuration cannot be loaded.")]
    Resume(ResumeArgs),
    /// Print a table's rows from a running `k2i ingest`: committed ∪ not yet committed, each row exactly once.
    ///
    /// Asks the instance's read-state socket (`rpc.socket_path`, needs `rpc.enabled = true`) for the table's
    /// state at one LSN: the committed data files (read here through the table's catalog and store) plus the
    /// rows buffered but not committed yet. `--follow` then prints new rows as they arrive.
    #[command(after_help = "Exit codes: 0 success, 1 the socket or the table's files cannot be read, 2 the \
                      configuration cannot be loaded or the request is invalid (unknown table or column).")]
    Read(ReadArgs),
    /// Run SQL (DataFusion) over a table's rows from a running `k2i ingest`: committed ∪ not yet committed at
    /// one LSN, so `SELECT count(*)` equals what was consumed, before any Iceberg reader could see it.
    #[command(after_help = "The table is registered under its name (`events`) and its qualified name \
                      (`db.events`). Exit codes: 0 success, 1 the socket or the files cannot be read, 2 the \
                      configuration cannot be loaded or the SQL is invalid.")]
    Query(QueryArgs),
    /// Inspect or repair the Iceberg table's Kafka progress.
    Table(TableArgs),
    /// Print a shell completion script to standard output.
    Completions(CompletionsArgs),
    /// Write one man page per command into a directory.
    Man(ManArgs),
}

/// `k2i validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file (TOML). Environment variables `K2I_<SECTION>__<KEY>` override its keys.
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Print the resolved configuration (defaults and overrides applied, secrets redacted) as TOML.
    #[arg(long)]
    pub print: bool,
}

/// `k2i ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The configuration file (TOML). Environment variables `K2I_<SECTION>__<KEY>` override its keys.
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Read the partitions' high watermarks at start and exit 0 once everything below them is committed
    /// (batch and backfill mode).
    #[arg(long)]
    pub until_caught_up: bool,
    /// Override kafka.bootstrap_servers (comma-separated `host:port` list).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub bootstrap_servers: Option<String>,
    /// Override kafka.topic (replaces `topic` / `topics`).
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// Override kafka.consumer_group.
    #[arg(long, value_name = "GROUP")]
    pub consumer_group: Option<String>,
}

/// `k2i status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of the instance's health port (default: from --config, else http://127.0.0.1:8080). Takes
    /// precedence over --config and K2I_CONFIG.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Derive the URL from this configuration's [monitoring] listen_address and health_port.
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the status document as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `k2i resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Base URL of the instance's health port (default: from --config, else http://127.0.0.1:8080). Takes
    /// precedence over --config and K2I_CONFIG.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Derive the URL from this configuration's [monitoring] listen_address and health_port (0.0.0.0 and ::
    /// become 127.0.0.1 and ::1).
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do with the records of the paused schema.
    #[arg(long, value_enum, default_value_t = ResumeAction::Retry)]
    pub action: ResumeAction,
    /// Print the instance's answer as JSON instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// What `k2i resume` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResumeAction {
    /// Check the paused schema again, against the table as it is now and against the subject's latest
    /// registered schema: a compatible version registered meanwhile reads the paused records.
    Retry,
    /// Skip the records of the paused schema id from now on (counted in k2i_records_skipped_total).
    Skip,
    /// Send the records of the paused schema id to the dead-letter topic from now on (needs
    /// errors.dead_letter_topic; without it the table stays paused and the log says so).
    DeadLetter,
}

impl ResumeAction {
    /// The value of `/resume?action=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::DeadLetter => "dead-letter",
        }
    }
}

/// How `k2i read` and `k2i query` print rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RowFormat {
    /// An aligned text table.
    Table,
    /// One JSON object per row (JSON Lines).
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream on standard output (for `pyarrow.ipc.open_stream`).
    Arrow,
}

/// `k2i read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The configuration of the running ingest (its rpc.socket_path, catalog and table).
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// The table, as `namespace.name` (default: the configuration's table).
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// Only rows after a read-state's LSN (one printed by an earlier `k2i read`, or a k2i snapshot's `k2i.lsn`).
    #[arg(long, value_name = "LSN")]
    pub since_lsn: Option<u64>,
    /// Only these columns, comma-separated.
    #[arg(long, value_name = "COLUMN,...", value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RowFormat::Table)]
    pub format: RowFormat,
    /// Print at most this many rows (with --follow: stop after this many).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Keep reading: print rows as they arrive, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how often to ask for new rows.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
}

/// `k2i query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The configuration of the running ingest (its rpc.socket_path, catalog and table).
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// The table, as `namespace.name` (default: the configuration's table).
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// Output format (`arrow` writes an Arrow IPC stream).
    #[arg(long, value_enum, default_value_t = RowFormat::Table)]
    pub format: RowFormat,
    /// The SQL statement.
    pub sql: String,
}

/// `k2i table`.
#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(subcommand)]
    pub action: TableAction,
}

/// What `k2i table` does.
#[derive(Debug, Subcommand)]
pub enum TableAction {
    /// Print the next offset of every partition the table records, and where it was found.
    Progress(TableProgressArgs),
    /// Set the next offset of partitions explicitly (when the table's progress cannot be established, or
    /// to skip or replay records). Commits an empty snapshot that records it; stop the instances first.
    SetProgress(SetProgressArgs),
}

/// `k2i table progress`.
#[derive(Debug, Args)]
pub struct TableProgressArgs {
    /// The configuration file naming the catalog and table.
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Print JSON (`{"source": …, "progress": {"<topic>": {"<partition>": next}}}`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `k2i table set-progress`.
#[derive(Debug, Args)]
pub struct SetProgressArgs {
    /// The configuration file naming the catalog and table.
    #[arg(short, long, env = "K2I_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// A partition's next offset, as `TOPIC/PARTITION=OFFSET` (repeat for several partitions).
    #[arg(long = "offset", value_name = "TOPIC/PARTITION=OFFSET", required = true)]
    pub offsets: Vec<String>,
}

/// `k2i completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `k2i man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
}
