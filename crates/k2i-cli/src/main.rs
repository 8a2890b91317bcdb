//! The `k2i` binary: parses the command line, sets up logging, runs one command and maps the outcome to a
//! documented exit code (see docs/commands.md).

mod cli;
mod commands;
mod logging;
mod read;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Exit codes, documented in README.md and docs/commands.md.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A runtime error (I/O, a server, …).
    pub const RUNTIME: u8 = 1;
    /// A usage or configuration error. clap exits with 2 on usage errors too.
    pub const CONFIG: u8 = 2;
    /// A record could not be stored and `errors.policy = "fail"`.
    pub const INVALID_RECORD: u8 = 3;
    /// Persistent state is damaged or unreadable, or the table's Kafka progress cannot be established: an
    /// operator must look (`k2i table progress`, `k2i table set-progress`); restarting alone will not help.
    pub const CORRUPT: u8 = 4;
    /// `k2i status`: the instance answers but is not healthy (not ready). K2I used 6 too.
    /// `k2i resume`: the instance answers but no table is paused (HTTP 409): there is nothing to resume.
    pub const UNHEALTHY: u8 = 6;
    /// `k2i status`: nothing answers at the URL.
    pub const UNREACHABLE: u8 = 7;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.global);
    // Every HTTPS client (registry, status, resume) needs rustls' provider; once, before any is built.
    k2i_core::tls::install_crypto_provider();
    let outcome = match cli.command {
        Command::Validate(args) => commands::validate(&args),
        Command::Ingest(args) => commands::ingest(&args),
        Command::Status(args) => commands::status(&args),
        Command::Resume(args) => commands::resume(&args),
        Command::Read(args) => read::read(&args),
        Command::Query(args) => read::query(&args),
        Command::Table(args) => commands::table(&args),
        Command::Completions(args) => commands::completions(&args),
        Command::Man(args) => commands::man(&args),
    };
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("error: {}", failure.error);
            for cause in failure.error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// An error and the exit code it maps to.
pub struct Failure {
    error: anyhow::Error,
    code: u8,
}

impl Failure {
    fn config(error: impl Into<anyhow::Error>) -> Self {
        Self { error: error.into(), code: exit::CONFIG }
    }

    fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self { error: error.into(), code: exit::RUNTIME }
    }

    fn with_code(error: impl Into<anyhow::Error>, code: u8) -> Self {
        Self { error: error.into(), code }
    }

    fn engine(error: k2i_core::Error) -> Self {
        let code = match error.kind() {
            k2i_core::ErrorKind::Config => exit::CONFIG,
            k2i_core::ErrorKind::InvalidRecord => exit::INVALID_RECORD,
            k2i_core::ErrorKind::Corrupt => exit::CORRUPT,
            _ => exit::RUNTIME,
        };
        Self { error: error.into(), code }
    }
}
