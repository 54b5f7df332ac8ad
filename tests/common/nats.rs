//! Real `nats-server` processes for tests: one JetStream node (`NatsServer`) or a
//! cluster of them routed on loopback (`NatsCluster`), each on an ephemeral port
//! with a temporary store directory and its log in a file that is printed when the
//! test fails. `client` is a blocking NATS client to check what reached the
//! streams; `run_nats_py_consumer` reads a stream the way a user's nats-py
//! program would.
//!
//! Without `nats-server` (or, for the nats-py test, Python's `nats` module) the
//! tests print a note and pass, unless `USERBUS_NATS_TEST=1` (CI), where a missing
//! one fails them: ask `nats_available()` / `nats_py_available()` first.

mod client;
mod cluster;
mod message;
mod process;

#[allow(unused_imports)]
pub use client::{NatsTestClient, REQUEST_TIMEOUT, RequestError};
#[allow(unused_imports)]
pub use cluster::{LEADER_TIMEOUT, NatsCluster};
#[allow(unused_imports)]
pub use message::{Headers, StoredMsg, base64_decode};
#[allow(unused_imports)]
pub use process::{NatsAuth, NatsServer};

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// How long a consumer run by `run_nats_py_consumer` may take in all.
const NATS_PY_TIMEOUT: Duration = Duration::from_secs(20);

/// The durable consumer `run_nats_py_consumer` creates or binds.
pub const NATS_PY_DURABLE: &str = "nats-py";

/// True when `nats-server` runs here. When it does not: false with a note, or a
/// panic under `USERBUS_NATS_TEST=1`.
pub fn nats_available() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    available(found, "nats-server is not installed")
}

/// True when `nats_available()` and `python3` imports `nats` (nats-py). When it
/// does not: false with a note, or a panic under `USERBUS_NATS_TEST=1`.
pub fn nats_py_available() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *FOUND.get_or_init(|| super::python3_imports("nats"));
    nats_available() && available(found, "python3 cannot import nats (pip install nats-py)")
}

fn available(found: bool, missing: &str) -> bool {
    super::found_or_skip(found, missing, "USERBUS_NATS_TEST")
}

/// Runs `tests/nats_py/consume.py`: nats-py connects to `url`, creates or binds
/// the durable pull consumer `NATS_PY_DURABLE` (explicit ack) on `stream` with
/// `subject_filter`, fetches and acks `n` messages, and prints one JSON line
/// each: `{"seq", "msg_id", "subject", "data"}`. Panics, with the script's
/// stderr, when it does not get them within its time limit.
pub fn run_nats_py_consumer(url: &str, stream: &str, subject_filter: &str, n: usize) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nats_py/consume.py");
    let out = Command::new("python3")
        .arg(script)
        .args([url, stream, subject_filter, &n.to_string()])
        .args(["--durable", NATS_PY_DURABLE])
        .args(["--timeout", &NATS_PY_TIMEOUT.as_secs().to_string()])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "consume.py {url} {stream} {subject_filter} {n} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("consume.py printed {l:?}: {e}"))
        })
        .collect()
}
