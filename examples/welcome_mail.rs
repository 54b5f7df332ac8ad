//! A durable handler: a welcome mail for every registration, sent at least once
//! even across crashes and restarts.
//!
//! `durable_handler("welcome-mail", ...)` stores how far the handler got in the
//! database (table `handler_offsets`) and advances it only after the callback
//! returns. Stop the program at any point, start it again, and the handler picks up
//! with the first event it did not finish. A handler that panics (the mail server
//! is down, say) is retried on the same event after a growing back-off; the rest of
//! the server keeps serving.
//!
//! ```text
//! cargo run --example welcome_mail                 # 127.0.0.1:7878, ./welcome.db
//! redis-cli -p 7878 REGISTER alice email alice@example.com
//! ```
//!
//! logs `sending welcome mail to alice <alice@example.com> (event 1)`. Set
//! `FAIL_MAIL=1` to make every send panic: registrations still succeed, the mails
//! wait, and the next run without it sends them all.

use std::process::ExitCode;

use userbus::{Config, Server};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let fail = std::env::var_os("FAIL_MAIL").is_some();
    let config = Config {
        http_port: 0,
        db: "welcome.db".into(),
        ..Config::default()
    };
    let server = Server::builder(config)
        .durable_handler("welcome-mail", move |e| {
            if e.kind != userbus::EventKind::Registered {
                return;
            }
            if fail {
                panic!("mail server unreachable");
            }
            let to = e.fields.get("email").map_or("no address", String::as_str);
            log::info!(
                "sending welcome mail to {} <{to}> (event {})",
                e.name,
                e.seq
            );
        })
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
