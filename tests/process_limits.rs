//! Process-level faults, on the real binary: running out of file descriptors while
//! accepting (EMFILE) backs off on a timer without spinning and recovers; a database
//! path that cannot be opened stops the start with one line naming it.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `userbus serve` on free ports with a temp database; returns the process
/// and the RESP port, read from the startup line (the readiness check).
fn serve(db: &std::path::Path) -> (Server, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_userbus"))
        .args(["serve", "--port", "0", "--http-port", "0", "--db"])
        .arg(db)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn userbus");
    let stderr = child.stderr.take().expect("stderr");
    let child = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(common::IO_TIMEOUT)
            .expect("userbus printed its startup line");
        if let Some((_, rest)) = line.split_once("resp=127.0.0.1:") {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // Keep draining the log so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, port.parse().expect("port"));
        }
    }
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which ends with ')'): utime is 14th, stime 15th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ping(s: &mut TcpStream) -> bool {
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

#[test]
fn out_of_descriptors_backs_off_without_spinning_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = serve(&dir.path().join("db"));
    let pid = server.0.id();
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    first.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    assert!(ping(&mut first));
    // Lower the running server's descriptor limit (soft) to just above what it
    // holds; the original soft limit comes back afterwards.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let original: String = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l["Max open files".len()..].split_whitespace().next())
        .expect("open files limit")
        .to_string();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = open + 3;
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
    // More clients than descriptors: the kernel queues them in the backlog.
    let mut clients: Vec<TcpStream> = (0..12)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .collect();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_ticks(pid) - before;
    // A busy loop would burn ~150 ticks in 1.5 s; backing off costs next to none.
    assert!(
        spent < 30,
        "the server spun while out of descriptors: {spent} ticks"
    );
    // The connection it already had is still served.
    assert!(ping(&mut first));
    let served = clients.iter_mut().map(ping).filter(|&ok| ok).count();
    assert!(served < clients.len(), "the limit did not bite");
    // Descriptors come back: the queued clients are accepted and served.
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={original}:")])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in &mut clients {
        c.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        loop {
            if ping(c) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a queued client was never served"
            );
        }
    }
    drop(server);
}

#[test]
fn a_database_that_cannot_be_opened_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for db in [
        dir.path().join("missing-dir").join("userbus.db"),
        // A directory is not a database file.
        dir.path().to_path_buf(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_userbus"))
            .args(["serve", "--port", "0", "--http-port", "0", "--db"])
            .arg(&db)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(&db.display().to_string()), "{err}");
    }
}
