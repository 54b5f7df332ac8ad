//! The `userbus` binary: `serve` runs the server, `cli` is the line client, `bench`
//! loads a server.

use std::process::ExitCode;

/// See Cargo.toml for why the allocator is mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use userbus::{Config, Server, bench};

/// An event-driven user registry: RESP over TCP, SQLite underneath, events out.
#[derive(Debug, Parser)]
#[command(name = "userbus", version, about, long_about = None, after_help = SERVE_FLAGS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The serve flags, summarised on the top-level help too.
const SERVE_FLAGS: &str = "\
serve flags (each also read from its environment variable; see `userbus serve --help`):
  --bind <ADDR>             USERBUS_BIND              address to listen on [127.0.0.1]
  --port <PORT>             USERBUS_PORT              RESP port, 0 = any free port [7878]
  --http-port <PORT>        USERBUS_HTTP_PORT         HTTP port, 0 disables [7879]
  --db <PATH>               USERBUS_DB                SQLite database file [./userbus.db]
  --durability <MODE>       USERBUS_DURABILITY        strict (fsync per commit) | normal [strict]
  --maxclients <N>          USERBUS_MAXCLIENTS        most clients at once [10000]
  --max-bulk-bytes <N>      USERBUS_MAX_BULK_BYTES    largest bulk string [524288]
  --max-multibulk-len <N>   USERBUS_MAX_MULTIBULK_LEN most request arguments [1048576]
  --max-inline-bytes <N>    USERBUS_MAX_INLINE_BYTES  longest inline line [65536]
  --max-db-pages <N>        USERBUS_MAX_DB_PAGES      database size cap in pages, 0 = none [0]
  --max-query-buffer-bytes <N> USERBUS_MAX_QUERY_BUFFER_BYTES unparsed input per client [1048576]
  --timeout <SECS>          USERBUS_TIMEOUT           close idle clients, 0 = never [0]
  --requirepass <PASS>      USERBUS_PASSWORD          password for AUTH and HTTP Bearer [none]
  --password-file <PATH>    USERBUS_PASSWORD_FILE     read the password from a file [none]
  --protected-mode <yes|no> USERBUS_PROTECTED_MODE    no password: loopback only [yes]
  --tls-port <PORT>         USERBUS_TLS_PORT          RESP over TLS, 0 = off [0]
  --https-port <PORT>       USERBUS_HTTPS_PORT        HTTPS, 0 = off [0]
  --tls-cert <PEM>          USERBUS_TLS_CERT          certificate chain [none]
  --tls-key <PEM>           USERBUS_TLS_KEY           private key [none]
  --tls-ca <PEM>            USERBUS_TLS_CA            require client certificates from this CA [none]
  --max-deliveries <N>      USERBUS_MAX_DELIVERIES    dead-letter after N deliveries, 0 = never [0]
  --retain-events <SPEC>    USERBUS_RETAIN_EVENTS     trim the log: 1000000, 30d or 1000000,30d [keep all]
  --pubsub-hard-limit-bytes <N>   USERBUS_PUBSUB_HARD_LIMIT_BYTES   drop a subscriber at once [33554432]
  --pubsub-soft-limit-bytes <N>   USERBUS_PUBSUB_SOFT_LIMIT_BYTES   ... or when over this [8388608]
  --pubsub-soft-limit-seconds <N> USERBUS_PUBSUB_SOFT_LIMIT_SECONDS ... for this long [60]
RUST_LOG sets the log level (default info).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (RUST_LOG sets the log level; default info).
    Serve(Box<Config>),
    /// The line client: one command, an interactive prompt, or a script on stdin.
    Cli(userbus::client::Args),
    /// Load a running server: connections, pipelining, command mix, latency
    /// percentiles (`-h` is the host; `--help` for help).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Cli(args) => userbus::client::run(args),
        Command::Bench(args) => run_bench(&args),
    }
}

/// Exit status of a benchmark whose connections could not be opened.
const EXIT_CANNOT_CONNECT: u8 = 2;

fn run_bench(args: &bench::Args) -> ExitCode {
    let report = match bench::run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("userbus bench: {e}");
            return match e {
                bench::Error::Resolve { .. } | bench::Error::Connect { .. } => {
                    ExitCode::from(EXIT_CANNOT_CONNECT)
                }
                _ => ExitCode::FAILURE,
            };
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    if report.requests == 0 {
        eprintln!("userbus bench: no request completed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn top_level_help_lists_every_serve_flag() {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve exists");
        for arg in serve.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| *l != "help") {
                assert!(SERVE_FLAGS.contains(&format!("--{long} ")), "--{long}");
            }
        }
    }
}
