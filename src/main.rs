//! The `userbus` binary: `serve` runs the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use userbus::{Config, Server};

/// An event-driven user registry: RESP over TCP, SQLite underneath, events out.
#[derive(Debug, Parser)]
#[command(name = "userbus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (RUST_LOG sets the log level; default info).
    Serve(Config),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(config) => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    let server = match Server::builder(config).handle_signals(true).build() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("stopped on error: {e}");
            ExitCode::FAILURE
        }
    }
}
