//! `userbus cli`, the real binary, against a real server: one-shot output as
//! redis-cli prints it, `--raw`, scripts on standard input with the server's
//! quoting rules, exit statuses, and commands that print until they are stopped.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{IO_TIMEOUT, TestServer, free_port, run_userbus, userbus};

/// `userbus cli -h <ip> -p <port> <args>`, with no `USERBUS_*` from the outside.
fn command(server: &TestServer, args: &[&str]) -> Command {
    let mut c = userbus();
    c.arg("cli")
        .arg("-h")
        .arg(server.addr.ip().to_string())
        .arg("-p")
        .arg(server.addr.port().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for the child to end; a child that hangs fails the test (it exits by
/// itself once the test's server is gone).
fn finish(child: Child) -> Output {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(IO_TIMEOUT)
        .expect("the cli did not finish in time")
        .expect("wait for the cli")
}

/// Runs a one-shot command.
fn run(server: &TestServer, args: &[&str]) -> Output {
    finish(command(server, args).spawn().expect("spawn the cli"))
}

/// Runs the cli with `script` on standard input.
fn run_script(server: &TestServer, script: &str) -> Output {
    let mut child = command(server, &[])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the cli");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(script.as_bytes())
        .expect("write the script");
    drop(stdin);
    finish(child)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit status and the exact standard output.
fn assert_output(o: &Output, code: i32, want: &str) {
    assert_eq!(stdout(o), want, "stderr: {}", stderr(o));
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
}

/// Output lines with the `created_at` value (a clock reading) blanked.
fn without_timestamps(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("\"20") {
            Some(i) if l.ends_with('"') => format!("{}\"<time>\"", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Reads standard output line by line on a thread, so a test can wait for a line
/// with a deadline.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects lines until one equals `last`; returns them all.
fn read_until(lines: &mpsc::Receiver<String>, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|_| panic!("no line {last:?} after {seen:#?}"));
        let done = line == last;
        seen.push(line);
        if done {
            return seen;
        }
    }
}

#[test]
fn one_shot_prints_replies_like_redis_cli() {
    let server = TestServer::start();
    assert_output(&run(&server, &["REGISTER", "alice"]), 0, "(integer) 1\n");
    assert_output(&run(&server, &["PING"]), 0, "PONG\n");
    assert_output(
        &run(&server, &["ECHO", "a \"b\"\n\u{e9}"]),
        0,
        "\"a \\\"b\\\"\\n\\xc3\\xa9\"\n",
    );
    assert_output(&run(&server, &["LOOKUP", "nobody"]), 0, "(nil)\n");
    assert_output(&run(&server, &["USERS"]), 0, "1) \"0\"\n2) 1) \"alice\"\n");
    assert_output(
        &run(&server, &["USERS", "0", "MATCH", "zz*"]),
        0,
        "1) \"0\"\n2) (empty array)\n",
    );
    assert_output(&run(&server, &["REGISTER", "alice"]), 0, "(integer) 0\n");
    assert_output(
        &run(&server, &["LOOKUP"]),
        1,
        "(error) ERR wrong number of arguments for 'lookup' command\n",
    );
    let lookup = run(&server, &["REGISTER", "bob", "email", "b@x", "age", "7"]);
    assert_output(&lookup, 0, "(integer) 2\n");
    let lookup = run(&server, &["LOOKUP", "bob"]);
    assert_eq!(lookup.status.code(), Some(0));
    assert_eq!(
        without_timestamps(&stdout(&lookup)),
        "1) \"id\"\n\
         2) (integer) 2\n\
         3) \"name\"\n\
         4) \"bob\"\n\
         5) \"created_at\"\n\
         6) \"<time>\"\n\
         7) \"fields\"\n\
         8) 1) \"age\"\n   \
            2) \"7\"\n   \
            3) \"email\"\n   \
            4) \"b@x\"\n"
    );
    server.stop();
}

#[test]
fn reports_print_as_the_server_sent_them() {
    let server = TestServer::start();
    let info = run(&server, &["INFO", "server"]);
    assert_eq!(info.status.code(), Some(0));
    let text = stdout(&info);
    assert!(text.starts_with("# Server\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n") && !text.ends_with("\r\n\n"),
        "{text:?}"
    );
    server.stop();
}

#[test]
fn raw_prints_bare_values_one_per_line() {
    let server = TestServer::start();
    assert_output(&run(&server, &["--raw", "REGISTER", "alice"]), 0, "1\n");
    assert_output(&run(&server, &["--raw", "REGISTER", "bob"]), 0, "2\n");
    assert_output(&run(&server, &["--raw", "USERS"]), 0, "0\nalice\nbob\n");
    assert_output(&run(&server, &["--raw", "LOOKUP", "nobody"]), 0, "\n");
    assert_output(&run(&server, &["--raw", "ECHO", "a\tb"]), 0, "a\tb\n");
    // As redis-cli --raw: the error on stdout, with a newline of its own.
    assert_output(
        &run(&server, &["--raw", "UNREGISTER"]),
        1,
        "ERR wrong number of arguments for 'unregister' command\n\n",
    );
    server.stop();
}

#[test]
fn piped_script_runs_every_line_and_speaks_resp3_after_hello() {
    let server = TestServer::start();
    let out = run_script(
        &server,
        "REGISTER alice email a@b.c\r\nHELLO 3\nLOOKUP alice\n\nLOOKUP nobody\nUSERS 0 MATCH zz*\n",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = without_timestamps(&stdout(&out));
    let hello_end = text.find("7# \"modules\" => (empty array)\n").expect(&text);
    assert!(
        text.starts_with("(integer) 1\n1# \"server\" => \"userbus\"\n"),
        "{text}"
    );
    assert_eq!(
        &text[hello_end..],
        "7# \"modules\" => (empty array)\n\
         1# \"id\" => (integer) 1\n\
         2# \"name\" => \"alice\"\n\
         3# \"created_at\" => \"<time>\"\n\
         4# \"fields\" => 1# \"email\" => \"a@b.c\"\n\
         (nil)\n\
         1) \"0\"\n\
         2) (empty array)\n"
    );
    server.stop();
}

#[test]
fn one_shot_resp3_flag_prints_maps() {
    let server = TestServer::start();
    run(&server, &["REGISTER", "alice", "a", "1", "b", "2"]);
    let out = run(&server, &["-3", "LOOKUP", "alice"]);
    assert_eq!(
        without_timestamps(&stdout(&out)),
        "1# \"id\" => (integer) 1\n\
         2# \"name\" => \"alice\"\n\
         3# \"created_at\" => \"<time>\"\n\
         4# \"fields\" => \n   \
            1# \"a\" => \"1\"\n   \
            2# \"b\" => \"2\"\n"
    );
    server.stop();
}

#[test]
fn script_lines_use_the_servers_quoting_rules() {
    let server = TestServer::start();
    let out = run_script(
        &server,
        "REGISTER \"a b\"\nECHO \"x\\ty\"\nECHO 'it\\'s' \"\\x41\"\nECHO \"unbalanced\nPING\n",
    );
    assert_output(
        &out,
        0,
        "(error) ERR invalid name: must not contain whitespace or control characters\n\
         \"x\\ty\"\n\
         (error) ERR wrong number of arguments for 'echo' command\n\
         Invalid argument(s)\n\
         PONG\n",
    );
    let out = run_script(&server, "ECHO \"a b\"\nquit\nPING\n");
    assert_output(&out, 0, "\"a b\"\n");
    server.stop();
}

#[test]
fn exit_status_is_0_ok_1_error_reply_2_no_connection() {
    let server = TestServer::start();
    assert_eq!(run(&server, &["PING"]).status.code(), Some(0));
    assert_eq!(run(&server, &["NOSUCHCOMMAND"]).status.code(), Some(1));
    // A script's error replies do not fail it, as in redis-cli.
    assert_eq!(
        run_script(&server, "NOSUCHCOMMAND\n").status.code(),
        Some(0)
    );

    let port = free_port();
    let out = run_userbus(&["cli", "-p", &port.to_string(), "PING"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("Could not connect to 127.0.0.1:{port}: Connection refused\n")
    );
    server.stop();
}

#[test]
fn host_and_port_come_from_the_environment_too() {
    let server = TestServer::start();
    let out = userbus()
        .args(["cli", "PING"])
        .env("USERBUS_HOST", server.addr.ip().to_string())
        .env("USERBUS_PORT", server.addr.port().to_string())
        .output()
        .expect("run the cli");
    assert_output(&out, 0, "PONG\n");
    server.stop();
}

#[test]
fn help_is_a_long_flag_because_dash_h_is_the_host() {
    let out = run_userbus(&["cli", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("-h, --host <HOST>"), "{text}");
    assert!(text.contains("--raw"), "{text}");
}

#[test]
fn subscribe_prints_messages_until_killed() {
    let server = TestServer::start();
    let mut child = command(&server, &["SUBSCRIBE", "user.registered"])
        .spawn()
        .expect("spawn the cli");
    let lines = lines_of(&mut child);
    // The confirmation is the readiness check: the subscription is live.
    assert_eq!(
        read_until(&lines, "3) (integer) 1"),
        [
            "Reading messages... (press Ctrl-C to quit)",
            "1) \"subscribe\"",
            "2) \"user.registered\"",
            "3) (integer) 1",
        ]
    );
    assert_output(&run(&server, &["REGISTER", "carol"]), 0, "(integer) 1\n");
    let message = read_until(&lines, "2) \"user.registered\"");
    assert_eq!(message, ["1) \"message\"", "2) \"user.registered\""]);
    let payload = lines.recv_timeout(IO_TIMEOUT).expect("payload line");
    assert!(
        payload.starts_with("3) \"{\\\"seq\\\":1,\\\"kind\\\":\\\"user.registered\\\"")
            && payload.contains("\\\"name\\\":\\\"carol\\\""),
        "{payload}"
    );
    child.kill().expect("kill the cli");
    child.wait().expect("reap the cli");
    server.stop();
}

#[test]
fn blocking_xread_follows_the_stream_until_killed() {
    let server = TestServer::start();
    assert_output(&run(&server, &["REGISTER", "alice"]), 0, "(integer) 1\n");
    let mut child = command(
        &server,
        &["--raw", "XREAD", "BLOCK", "50", "STREAMS", "events", "0"],
    )
    .spawn()
    .expect("spawn the cli");
    let lines = lines_of(&mut child);
    // The entry already in the log is the readiness check; the next read starts
    // after it, so it is not printed twice, and timeouts print nothing.
    let first = read_until(&lines, "alice");
    assert_eq!(first[..3], ["events", "1-0", "kind"]);
    let rest: Vec<String> = (0..4)
        .map(|_| lines.recv_timeout(IO_TIMEOUT).expect("rest of the entry"))
        .collect();
    assert_eq!(rest[..3], ["fields", "{}", "at"]);
    assert_output(&run(&server, &["UNREGISTER", "alice"]), 0, "(integer) 1\n");
    let second = read_until(&lines, "alice");
    assert_eq!(
        second[..5],
        ["events", "2-0", "kind", "user.unregistered", "id"]
    );
    child.kill().expect("kill the cli");
    child.wait().expect("reap the cli");
    server.stop();
}
