//! `userbus bench`, the real binary, against a real server in this process: request
//! counts, errors, JSON fields, the plot, fan-out and failures to connect.

mod common;

use std::process::Output;

use common::{TestServer, free_port, run_userbus, userbus, words};
use serde_json::Value;

/// Runs `userbus bench` against `server` with `args` (and `-p` its port).
fn bench(server: &TestServer, args: &[&str]) -> Output {
    let port = server.addr.port().to_string();
    userbus()
        .args(["bench", "-h", "127.0.0.1", "-p", &port, "-q"])
        .args(args)
        .output()
        .expect("run userbus bench")
}

/// Runs `userbus bench --json`, asserts success and parses the report.
fn bench_json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench(server, &all);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Starts a server and runs `userbus bench --json` with the words of `line` against
/// it; returns the server, for more runs and checks, and the report.
fn bench_fresh(line: &str) -> (TestServer, Value) {
    let server = TestServer::start();
    let r = bench_json(&server, &words(line));
    (server, r)
}

fn assert_clean(report: &Value, requests: u64) {
    assert_eq!(report["requests"], requests, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
}

fn user_count(server: &TestServer) -> i64 {
    redis::cmd("USERCOUNT")
        .query(&mut server.redis())
        .expect("USERCOUNT")
}

#[test]
fn ping_sends_exactly_n_requests_without_errors() {
    let (_server, r) = bench_fresh("-t ping -n 1000 -c 5 -P 7");
    assert_clean(&r, 1000);
    assert_eq!(r["test"], "ping");
    assert_eq!(r["pipeline"], 7);
}

#[test]
fn register_adds_every_user_then_lookup_and_unregister_find_them() {
    let server = TestServer::start();
    let common = "-n 300 -c 4 -P 4 --names t1";
    let r = bench_json(&server, &words(&format!("-t register {common}")));
    assert_clean(&r, 300);
    assert_eq!(r["misses"], 0, "sequential names never collide");
    assert_eq!(user_count(&server), 300);

    let r = bench_json(&server, &words(&format!("-t lookup {common}")));
    assert_clean(&r, 300);
    assert_eq!(r["misses"], 0, "every registered name is found: {r}");

    let r = bench_json(&server, &words(&format!("-t unregister {common}")));
    assert_clean(&r, 300);
    assert_eq!(r["misses"], 0, "every registered name is removed: {r}");
    assert_eq!(user_count(&server), 0);
}

#[test]
fn runs_without_names_do_not_collide() {
    let server = TestServer::start();
    for _ in 0..2 {
        let r = bench_json(&server, &words("-t register -n 100 -c 3"));
        assert_clean(&r, 100);
        assert_eq!(r["misses"], 0);
    }
    assert_eq!(user_count(&server), 200);
}

#[test]
fn mixed_reports_each_command() {
    let (_server, r) =
        bench_fresh("-t mixed -n 2000 -r 50 -c 8 -P 3 --mix register:2,lookup:6,unregister:2");
    assert_clean(&r, 2000);
    assert_eq!(r["mix"], "register:2,lookup:6,unregister:2");
    let commands = r["commands"].as_object().expect("commands");
    let sum: u64 = ["register", "lookup", "unregister"]
        .iter()
        .map(|c| commands[*c]["requests"].as_u64().expect("count"))
        .sum();
    assert_eq!(sum, 2000);
}

#[test]
fn mixed_with_sequential_names_has_no_errors() {
    let (_server, r) = bench_fresh("-t mixed -n 1000 -c 4");
    assert_clean(&r, 1000);
}

#[test]
fn json_report_has_the_documented_fields() {
    let (_server, r) = bench_fresh("-t register -n 200 -c 2");
    for field in [
        "test",
        "target",
        "connections",
        "pipeline",
        "threads",
        "names",
        "requests",
        "errors",
        "misses",
        "lost",
        "seconds",
        "requests_per_sec",
        "latency_ms",
        "commands",
        "commits",
        "writes_per_commit",
    ] {
        assert!(r.get(field).is_some(), "no {field} in {r}");
    }
    for p in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(r["latency_ms"][p].is_number(), "no latency_ms.{p} in {r}");
    }
    let l = &r["latency_ms"];
    assert!(l["p50"].as_f64() <= l["p99"].as_f64());
    assert!(l["p99"].as_f64() <= l["max"].as_f64());
    assert!(r["requests_per_sec"].as_f64().expect("rps") > 0.0);
    assert!(r["commits"].as_u64().expect("userbus reports commits") >= 1);
}

#[test]
fn text_report_shows_rate_and_percentiles() {
    let server = TestServer::start();
    let out = bench(&server, &words("-t ping -n 500 -c 2"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in [
        "500 requests in",
        "requests/s",
        "p50",
        "p99.9",
        "max",
        "errors 0",
    ] {
        assert!(text.contains(s), "no {s:?} in:\n{text}");
    }
}

#[test]
fn plot_writes_an_svg() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("latency.svg");
    let mut args = words("-t ping -n 500 --plot");
    args.push(svg.to_str().expect("utf-8 path"));
    let r = bench_json(&server, &args);
    assert_clean(&r, 500);
    let text = std::fs::read_to_string(&svg).expect("plot written");
    assert!(
        text.contains("<svg"),
        "not an SVG: {}",
        &text[..text.len().min(200)]
    );
    assert!(text.contains("percentile"));
}

#[test]
fn subscribers_receive_every_registration_and_report_fanout_latency() {
    let (_server, r) = bench_fresh("-t register -n 200 -c 4 --subscribers 3");
    assert_clean(&r, 200);
    let f = &r["fanout"];
    assert_eq!(f["subscribers"], 3, "{r}");
    assert_eq!(f["pushes"], 600, "{r}");
    assert_eq!(f["missing"], 0, "{r}");
    assert!(f["latency_ms"]["p50"].as_f64().expect("p50") > 0.0, "{r}");
    assert!(f["after_reply_ms"]["max"].is_number(), "{r}");
}

#[test]
fn open_loop_rate_sends_on_schedule() {
    let (_server, r) = bench_fresh("-t ping -n 300 -c 4 --rate 1000");
    assert_clean(&r, 300);
    assert_eq!(r["rate"], 1000.0);
    // 300 requests at 1000/s take about 0.3 s, not the few ms of a closed loop.
    assert!(r["seconds"].as_f64().expect("seconds") >= 0.25, "{r}");
}

#[test]
fn threads_share_the_connections_and_the_count() {
    let (server, r) = bench_fresh("-t register -n 1001 -c 6 --threads 3 -P 5");
    assert_clean(&r, 1001);
    assert_eq!(r["threads"], 3);
    assert_eq!(user_count(&server), 1001);
}

#[test]
fn duration_bounds_the_run() {
    let (_server, r) = bench_fresh("-t ping --duration 0.3 -c 2");
    assert!(r["requests"].as_u64().expect("requests") > 0);
    assert_eq!(r["errors"], 0);
    let secs = r["seconds"].as_f64().expect("seconds");
    assert!((0.29..5.0).contains(&secs), "{secs}");
}

#[test]
fn unknown_host_fails_with_a_clear_message() {
    let out = run_userbus(&words("bench -h no-such-host.invalid -n 10"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve no-such-host.invalid"),
        "stderr: {err}"
    );
}

#[test]
fn refused_connection_fails_with_a_clear_message() {
    // A port that was free a moment ago: nothing listens there.
    let port = free_port();
    let out = run_userbus(&["bench", "-p", &port.to_string(), "-n", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "stderr: {err}"
    );
}

#[test]
fn subscribers_without_registrations_is_a_usage_error() {
    let server = TestServer::start();
    let out = bench(&server, &words("-t ping --subscribers 2 -n 10"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--subscribers"));
}

#[test]
fn help_is_long_flag_only_since_h_is_the_host() {
    let out = run_userbus(&["bench", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-h, --host"), "{text}");
    assert!(text.contains("--subscribers"), "{text}");
}
