//! The `userbus` binary: `serve` runs the server, `cli` is the line client, `bench`
//! loads a server, `backup` writes a consistent snapshot of a database.

use std::process::ExitCode;

/// See Cargo.toml for why the allocator is mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};
use userbus::{Config, Server, bench};

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
    Serve(Box<Config>),
    /// The line client: one command, an interactive prompt, or a script on stdin.
    Cli(userbus::client::Args),
    /// Load a running server: connections, pipelining, command mix, latency
    /// percentiles (`-h` is the host; `--help` for help).
    Bench(bench::Args),
    /// Write a consistent snapshot of a database, also while a server runs on it.
    Backup(BackupArgs),
}

/// `userbus backup PATH`: the snapshot goes to PATH through SQLite's online backup
/// API, from one read snapshot, with a fresh writer id and its event seq recorded.
#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// Where to write the snapshot (a new file, unless --force).
    path: std::path::PathBuf,
    /// The database to copy (the one `userbus serve --db` uses).
    #[arg(long, env = "USERBUS_DB", value_name = "PATH", default_value = userbus::config::DEFAULT_DB)]
    db: std::path::PathBuf,
    /// Replace PATH if it exists.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let command = Cli::command();
    let summary = serve_summary(&command);
    let cli = match Cli::from_arg_matches(&command.after_help(summary).get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Cli(args) => userbus::client::run(args),
        Command::Bench(args) => run_bench(&args),
        Command::Backup(args) => backup(&args),
    }
}

/// The serve flags, summarised on the top-level help: one line a flag with its
/// environment variable, its short help and its default, all taken from the flag
/// definitions (`Config`), so the summary cannot drift from them.
fn serve_summary(cli: &clap::Command) -> String {
    let Some(serve) = cli.find_subcommand("serve") else {
        return String::new();
    };
    let rows: Vec<[String; 3]> = serve
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "help"))
        .map(|a| [flag(a), env(a), help(a)])
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (flag_w, env_w) = (width(0), width(1));
    let mut out = String::from(
        "serve flags (each also read from its environment variable; \
         see `userbus serve --help`):\n",
    );
    for [flag, env, help] in &rows {
        out.push_str(&format!("  {flag:flag_w$}  {env:env_w$}  {help}\n"));
    }
    out.push_str("RUST_LOG sets the log level (default info).");
    out
}

/// `--name <VALUE>` as the usage line writes it.
fn flag(arg: &Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    match arg.get_value_names() {
        Some([value, ..]) => format!("--{long} <{value}>"),
        _ => format!("--{long}"),
    }
}

/// The environment variable a flag reads, or nothing.
fn env(arg: &Arg) -> String {
    arg.get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The short help (the first paragraph of the field's doc) and the default in
/// brackets, `[none]` when there is none.
fn help(arg: &Arg) -> String {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if default.is_empty() {
        format!("{help} [none]")
    } else {
        format!("{help} [{}]", default.join(","))
    }
}

/// Exit status of a benchmark whose connections could not be opened.
const EXIT_CANNOT_CONNECT: u8 = 2;

fn run_bench(args: &bench::Args) -> ExitCode {
    if let (false, Some(path)) = (args.curve.is_empty(), &args.plot) {
        let title = args.title.as_deref().unwrap_or("latency percentiles");
        return match bench::plot::draw_files(title, &args.curve, path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("userbus bench: cannot draw the plot: {e}");
                ExitCode::FAILURE
            }
        };
    }
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

fn backup(args: &BackupArgs) -> ExitCode {
    match userbus::store::backup::snapshot(&args.db, &args.path, args.force) {
        Ok(s) => {
            println!(
                "snapshot {}: event seq {}, {} users, {} pages, taken {}; writer {} (copied from {})",
                s.path.display(),
                s.seq,
                s.users,
                s.pages,
                userbus::clock::rfc3339(s.taken_at_ms),
                s.writer,
                s.source_writer
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("userbus backup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(e) = config.validate() {
        log::error!("cannot start: {}", userbus::Error::Config(e));
        return ExitCode::FAILURE;
    }
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
    fn serve_refuses_nats_settings_without_nats_before_opening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("never.db");
        let config = Config {
            db: db.clone(),
            port: 0,
            http_port: 0,
            nats_token: Some("t".into()),
            ..Config::default()
        };
        assert_eq!(serve(config), ExitCode::FAILURE);
        assert!(!db.exists(), "the database was created");
    }

    #[test]
    fn top_level_help_lists_every_serve_flag_with_its_env_and_default() {
        let cli = Cli::command();
        let summary = serve_summary(&cli);
        let serve = cli.find_subcommand("serve").expect("serve exists");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long().filter(|l| *l != "help") else {
                continue;
            };
            let line = summary
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("--{long} ")))
                .unwrap_or_else(|| panic!("--{long} missing from\n{summary}"));
            if let Some(env) = arg.get_env() {
                assert!(line.contains(&*env.to_string_lossy()), "{line}");
            }
            for value in arg.get_default_values() {
                assert!(line.contains(&*value.to_string_lossy()), "{line}");
            }
        }
    }
}
