//! Embeds a userbus server in a program of its own and reacts to its events.
//!
//! A handler callback runs on the server's thread after each commit, in commit
//! order, so it sees only changes that are durable; here it just logs a welcome (a
//! real program would queue the welcome mail). Keep callbacks quick: the server
//! waits for them.
//!
//! Run it (the database file is created when missing):
//!
//! ```text
//! cargo run --example embed                   # 127.0.0.1:7878, ./embed.db
//! cargo run --example embed -- 7900 /tmp/x.db # another port and database
//! ```
//!
//! and, from another terminal, try it with `nc` (or `redis-cli -p 7878`):
//!
//! ```text
//! $ nc localhost 7878
//! REGISTER alice plan pro
//! :1
//! UNREGISTER alice
//! :1
//! ```
//!
//! The example logs `welcome, alice (id 1, plan=pro)` and then `goodbye, alice`.
//! Ctrl-C stops it cleanly: the current tick commits and replies go out first.

use std::path::PathBuf;
use std::process::ExitCode;

use userbus::{Config, Server};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let port = match args.next().map(|p| p.parse::<u16>()) {
        None => userbus::config::DEFAULT_PORT,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("usage: embed [port] [db]: bad port: {e}");
            return ExitCode::FAILURE;
        }
    };
    let db = args
        .next()
        .map_or_else(|| PathBuf::from("embed.db"), PathBuf::from);
    let config = Config {
        port,
        http_port: 0,
        db,
        ..Config::default()
    };

    let server = Server::builder(config)
        .on_registered(|e| {
            let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            log::info!(
                "welcome, {} (id {}, {})",
                e.name,
                e.user_id,
                fields.join(" ")
            );
        })
        .on_unregistered(|e| log::info!("goodbye, {}", e.name))
        .handle_signals(true)
        .build();
    let server = match server {
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
