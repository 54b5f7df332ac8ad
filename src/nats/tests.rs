//! The client against real `nats-server` processes (on ephemeral loopback ports,
//! with temporary store directories) and against scripted fake servers, each test
//! driving the client with its own `mio::Poll` loop bounded by a deadline.
//!
//! Without `nats-server` on the PATH the tests that need it print a note and pass,
//! unless `USERBUS_NATS_TEST=1` (CI), where a missing server fails them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::client::{Client, Options};
use super::event::{ConnError, Event, PublishError, RequestId};
use super::headers::Status;
use super::jetstream::{self, StreamSpec};
use super::link::tls_config;
use super::proto::ServerInfo;
use super::url::parse_servers;

const CLIENT: Token = Token(3);
/// Bound on any one wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// True when `nats-server` runs; false (with a note) when it is missing, unless
/// `USERBUS_NATS_TEST=1`, where a missing server is a failure.
fn have_nats_server() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("USERBUS_NATS_TEST").as_deref() != Ok("1"),
            "nats-server is not installed and USERBUS_NATS_TEST=1"
        );
        eprintln!("note: nats-server not installed; skipping this test");
    }
    found
}

/// A nats-server child with JetStream, its store in a temporary directory.
struct NatsServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a port of its choosing (`-p -1`) with `args` added.
    fn start(args: &[&str]) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, port) = spawn(&dir, None, &args);
        NatsServer {
            child,
            dir,
            port,
            args,
        }
    }

    /// `nats://127.0.0.1:<port>`, with `auth` (`user:pass@`) when given.
    fn url(&self, auth: &str) -> String {
        format!("nats://{auth}127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same store.
    fn restart(&mut self) {
        self.kill();
        let (child, _) = spawn(&self.dir, Some(self.port), &self.args);
        self.child = child;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs nats-server and waits (on its log, not a timer) until it listens.
fn spawn(dir: &tempfile::TempDir, port: Option<u16>, args: &[String]) -> (Child, u16) {
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    let mut child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
        .arg(dir.path().join("js"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Drains the log for the server's whole life so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match ready_port(&rx) {
        Some(port) => (child, port),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server did not log its client port and readiness");
        }
    }
}

/// The client port from nats-server's log, once it says it is ready.
fn ready_port(log: &mpsc::Receiver<String>) -> Option<u16> {
    let deadline = Instant::now() + WAIT;
    let mut port = None;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        if let Some(at) = line.split("Listening for client connections on ").nth(1) {
            port = at.rsplit(':').next().and_then(|p| p.trim().parse().ok());
        }
        if line.contains("Server is ready") {
            return port;
        }
    }
}

/// A client and the poll loop that drives it, keeping every event it saw.
struct Driver {
    poll: Poll,
    events: Events,
    client: Client,
    seen: Vec<Event>,
}

impl Driver {
    fn new(opts: Options) -> Driver {
        Driver {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(16),
            client: Client::new(opts, CLIENT),
            seen: Vec::new(),
        }
    }

    fn to(url: &str) -> Driver {
        Driver::new(fast(Options::new(parse_servers(url).unwrap())))
    }

    /// One turn of the loop: flush, poll until readiness, the client's deadline
    /// or `until`, then hand the client its events, its timer and a flush.
    fn turn(&mut self, until: Instant) {
        // What the test queued since the last turn goes out before the poll.
        self.client.flush(self.poll.registry(), Instant::now());
        let now = Instant::now();
        let mut timeout = until.saturating_duration_since(now);
        if let Some(at) = self.client.next_deadline() {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let now = Instant::now();
        let registry = self.poll.registry();
        for ev in self.events.iter() {
            if ev.token() == CLIENT {
                let broken = ev.is_error() || ev.is_read_closed();
                self.client.ready(
                    registry,
                    ev.is_readable() || broken,
                    ev.is_writable() || ev.is_write_closed(),
                    now,
                );
            }
        }
        self.client.on_timer(registry, now);
        self.client.flush(registry, now);
    }

    /// Runs until `f` picks an event, failing after `WAIT`.
    fn until<T>(&mut self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some(ev) = self.client.poll_event() {
                let picked = f(&ev);
                self.seen.push(ev);
                if let Some(t) = picked {
                    return t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out; events so far: {:#?}",
                self.seen
            );
            self.turn(deadline);
        }
    }

    /// Runs for `d`, returning the events of that time.
    fn run_for(&mut self, d: Duration) -> Vec<Event> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            self.turn(deadline);
            while let Some(ev) = self.client.poll_event() {
                out.push(ev.clone());
                self.seen.push(ev);
            }
        }
        out
    }

    fn connected(&mut self) -> Box<ServerInfo> {
        self.until(|e| match e {
            Event::Connected { info, .. } => Some(info.clone()),
            _ => None,
        })
    }

    /// Sends a request and waits for its reply: status and payload.
    fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> (Option<Status>, Vec<u8>) {
        let id = self.client.request(subject, headers, payload).unwrap();
        self.reply(id)
    }

    fn reply(&mut self, want: RequestId) -> (Option<Status>, Vec<u8>) {
        self.until(|e| match e {
            Event::Reply {
                id,
                status,
                payload,
                ..
            } if *id == want => Some((status.clone(), payload.clone())),
            _ => None,
        })
    }
}

/// Short timers, so failures and back-off show within a test's time.
fn fast(mut opts: Options) -> Options {
    opts.connect_timeout = Duration::from_millis(500);
    opts.reconnect_delay_min = Duration::from_millis(20);
    opts.reconnect_delay_max = Duration::from_millis(160);
    opts
}

#[test]
fn connects_and_answers_with_pongs_to_keep_alive() {
    if !have_nats_server() {
        return;
    }
    let server = NatsServer::start(&[]);
    let mut opts = fast(Options::new(parse_servers(&server.url("")).unwrap()));
    opts.ping_interval = Duration::from_millis(40);
    let mut d = Driver::new(opts);
    let info = d.connected();
    assert!(info.jetstream && info.headers);
    assert_eq!(info.port, server.port);
    assert!(!info.version.is_empty());
    assert!(d.client.is_connected());
    assert_eq!(
        d.client.server().map(|s| s.to_string()),
        Some(server.url(""))
    );
    // 15 PINGs go out; with 2 unanswered the client would have dropped the link.
    let events = d.run_for(Duration::from_millis(600));
    assert!(events.is_empty(), "{events:?}");
    assert!(d.client.is_connected());
    assert_eq!(d.client.reconnects(), 0);
}

#[test]
fn headers_round_trip_and_requests_to_nobody_get_503() {
    if !have_nats_server() {
        return;
    }
    let server = NatsServer::start(&[]);
    let mut d = Driver::to(&server.url(""));
    let sid = d.client.subscribe("t.>").unwrap();
    d.connected();
    let headers = [
        ("Nats-Msg-Id", "a1"),
        ("X-Multi", "one"),
        ("X-Multi", "two"),
    ];
    d.client
        .publish("t.one", Some("answer.here"), &headers, b"world")
        .unwrap();
    d.client.publish("t.two", None, &[], b"plain").unwrap();
    let got = d.until(|e| match e {
        Event::Message {
            sid: s,
            subject,
            reply,
            status,
            headers,
            payload,
        } if *s == sid && subject == "t.one" => Some((
            reply.clone(),
            status.clone(),
            headers
                .get_all("x-multi")
                .map(String::from)
                .collect::<Vec<_>>(),
            headers.get("Nats-Msg-Id").map(String::from),
            payload.clone(),
        )),
        _ => None,
    });
    assert_eq!(
        got,
        (
            Some("answer.here".into()),
            None,
            vec!["one".to_string(), "two".to_string()],
            Some("a1".into()),
            b"world".to_vec()
        )
    );
    let plain = d.until(|e| match e {
        Event::Message {
            subject,
            headers,
            payload,
            ..
        } if subject == "t.two" => Some((headers.is_empty(), payload.clone())),
        _ => None,
    });
    assert_eq!(plain, (true, b"plain".to_vec()));
    let (status, payload) = d.request("nobody.listens", &[], b"?");
    assert_eq!(status.map(|s| s.code), Some(Status::NO_RESPONDERS));
    assert!(payload.is_empty());
    let inbox = d.client.inbox_prefix();
    assert!(inbox.starts_with("_INBOX.") && inbox.ends_with('.'));
    assert_eq!(inbox.len(), "_INBOX.".len() + 22 + 1);

    // After UNSUB nothing more arrives on the subscription.
    d.client.unsubscribe(sid);
    d.client.publish("t.three", None, &[], b"gone").unwrap();
    let (status, _) = d.request("nobody.listens", &[], b"");
    assert!(status.is_some(), "the request after the publish came back");
    assert!(
        !d.seen
            .iter()
            .any(|e| matches!(e, Event::Message { subject, .. } if subject == "t.three"))
    );

    // Shutdown closes the link and schedules nothing more.
    d.client.shutdown(d.poll.registry());
    assert!(!d.client.is_connected());
    assert_eq!(d.client.next_deadline(), None);
    assert!(d.run_for(Duration::from_millis(100)).is_empty());
}

#[test]
fn jetstream_stream_create_and_every_ack_outcome() {
    if !have_nats_server() {
        return;
    }
    let server = NatsServer::start(&[]);
    let mut d = Driver::to(&server.url(""));
    d.connected();
    let spec = StreamSpec::new("REC", &["rec.>"], 1);

    let (status, body) = d.request(&jetstream::stream_info_subject("REC"), &[], b"");
    let missing = jetstream::parse_stream_info(status.as_ref(), &body).unwrap_err();
    assert_eq!(missing.err_code(), Some(jetstream::ERR_STREAM_NOT_FOUND));

    let create = jetstream::stream_create_subject("REC");
    let (status, body) = d.request(&create, &[], &spec.create_request());
    let info = jetstream::parse_stream_info(status.as_ref(), &body).unwrap();
    assert_eq!(spec.check(&info.config), Ok(()));
    assert_eq!(info.config.duplicate_window, 120_000_000_000);
    assert_eq!(info.state.last_seq, 0);

    // The same CREATE again succeeds; another config for the name is refused.
    let (status, body) = d.request(&create, &[], &spec.create_request());
    assert!(jetstream::parse_stream_info(status.as_ref(), &body).is_ok());
    let other = StreamSpec::new("REC", &["other.>"], 1);
    let (status, body) = d.request(&create, &[], &other.create_request());
    let e = jetstream::parse_stream_info(status.as_ref(), &body).unwrap_err();
    assert_eq!(e.err_code(), Some(jetstream::ERR_STREAM_NAME_IN_USE));
    assert!(other.check(&info.config).is_err());
    // A single server cannot keep 3 replicas.
    let r3 = StreamSpec::new("R3", &["r3.>"], 3);
    let (status, body) = d.request(
        &jetstream::stream_create_subject("R3"),
        &[],
        &r3.create_request(),
    );
    let e = jetstream::parse_stream_info(status.as_ref(), &body).unwrap_err();
    assert_eq!(e.err_code(), Some(jetstream::ERR_REPLICAS_NOT_SUPPORTED));

    let publish = |d: &mut Driver, id: &str, last: &str, last_id: Option<&str>| {
        let mut h = vec![
            (jetstream::MSG_ID, id),
            (jetstream::EXPECTED_LAST_SEQUENCE, last),
        ];
        if let Some(last_id) = last_id {
            h.push((jetstream::EXPECTED_LAST_MSG_ID, last_id));
        }
        let (status, body) = d.request("rec.user.registered", &h, b"{\"seq\":1}");
        jetstream::parse_pub_ack(status.as_ref(), &body)
    };
    let ack = publish(&mut d, "w-1", "0", None).unwrap();
    assert_eq!(
        (ack.stream.as_str(), ack.seq, ack.duplicate),
        ("REC", 1, false)
    );
    let ack = publish(&mut d, "w-2", "1", Some("w-1")).unwrap();
    assert_eq!((ack.seq, ack.duplicate), (2, false));
    let ack = publish(&mut d, "w-2", "1", Some("w-1")).unwrap();
    assert_eq!((ack.seq, ack.duplicate), (2, true));
    let e = publish(&mut d, "w-3", "5", None).unwrap_err();
    assert_eq!(e.err_code(), Some(jetstream::ERR_WRONG_LAST_SEQUENCE));
    assert_eq!(
        e.to_string(),
        "wrong last sequence: 2 (err_code 10071, code 400)"
    );
    let e = publish(&mut d, "w-3", "2", Some("x-9")).unwrap_err();
    assert_eq!(e.err_code(), Some(jetstream::ERR_WRONG_LAST_MSG_ID));
    assert_eq!(
        e.to_string(),
        "wrong last msg ID: w-2 (err_code 10070, code 400)"
    );

    let get = jetstream::stream_msg_get_subject("REC");
    let (status, body) = d.request(&get, &[], &jetstream::msg_get_request(2));
    let stored = jetstream::parse_msg_get(status.as_ref(), &body).unwrap();
    assert_eq!((stored.seq, stored.msg_id()), (2, Some("w-2")));
    assert_eq!(stored.subject, "rec.user.registered");
    let (status, body) = d.request(&get, &[], &jetstream::msg_get_request(3));
    let e = jetstream::parse_msg_get(status.as_ref(), &body).unwrap_err();
    assert_eq!(e.err_code(), Some(jetstream::ERR_NO_MESSAGE_FOUND));

    let (status, body) = d.request(&jetstream::stream_info_subject("REC"), &[], b"");
    let info = jetstream::parse_stream_info(status.as_ref(), &body).unwrap();
    assert_eq!(
        (
            info.state.messages,
            info.state.first_seq,
            info.state.last_seq
        ),
        (2, 1, 2)
    );
}

#[test]
fn reconnects_after_a_restart_and_replays_subscriptions() {
    if !have_nats_server() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let mut d = Driver::to(&server.url(""));
    let sid = d.client.subscribe("r.x").unwrap();
    d.connected();
    server.kill();
    let reason = d.until(|e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(reason, ConnError::Closed | ConnError::Io(_)),
        "{reason:?}"
    );
    assert!(!d.client.is_connected());
    // Refused while it is down, with back-off.
    let refused = d.until(|e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(matches!(refused, ConnError::Connect(_)), "{refused:?}");
    server.restart();
    d.connected();
    assert_eq!(d.client.reconnects(), 1);
    d.client.publish("r.x", None, &[], b"again").unwrap();
    let payload = d.until(|e| match e {
        Event::Message {
            sid: s, payload, ..
        } if *s == sid => Some(payload.clone()),
        _ => None,
    });
    assert_eq!(payload, b"again");
}

#[test]
fn publishes_queued_before_connecting_follow_the_subscriptions() {
    if !have_nats_server() {
        return;
    }
    let server = NatsServer::start(&[]);
    let mut d = Driver::to(&server.url(""));
    let sid = d.client.subscribe("q.>").unwrap();
    d.client.publish("q.1", None, &[], b"early").unwrap();
    let id = d.client.request("nobody", &[], b"").unwrap();
    let payload = d.until(|e| match e {
        Event::Message {
            sid: s, payload, ..
        } if *s == sid => Some(payload.clone()),
        _ => None,
    });
    assert_eq!(payload, b"early");
    assert_eq!(d.reply(id).0.map(|s| s.code), Some(503));
}

#[test]
fn wrong_credentials_give_a_clear_error_event() {
    if !have_nats_server() {
        return;
    }
    let server = NatsServer::start(&["--user", "alice", "--pass", "secret"]);
    let mut d = Driver::to(&server.url("alice:wrong@"));
    let text = d.until(|e| match e {
        Event::ServerError(text) => Some(text.clone()),
        _ => None,
    });
    assert_eq!(text, "Authorization Violation");
    let (server_name, reason) = d.until(|e| match e {
        Event::ConnectFailed { server, reason, .. } => Some((server.clone(), reason.clone())),
        _ => None,
    });
    assert!(reason.is_auth(), "{reason:?}");
    assert_eq!(server_name, server.url(""));
    assert_eq!(reason.to_string(), "server error 'Authorization Violation'");
    assert!(!d.client.is_connected());

    let mut ok = Driver::to(&server.url("alice:secret@"));
    assert!(ok.connected().auth_required);
}

#[test]
fn tls_with_the_ca_connects_and_without_it_fails_clearly() {
    if !have_nats_server() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", cert.pem());
    let key_file = write("server.key", key.serialize_pem());
    let server = NatsServer::start(&[
        "--tls",
        "--tlscert",
        cert_file.to_str().unwrap(),
        "--tlskey",
        key_file.to_str().unwrap(),
    ]);

    let url = format!("tls://127.0.0.1:{}", server.port);
    let mut opts = fast(Options::new(parse_servers(&url).unwrap()));
    opts.tls = Some(tls_config(&ca_file).unwrap());
    let mut d = Driver::new(opts);
    let sid = d.client.subscribe("secure").unwrap();
    assert!(d.connected().tls_required);
    d.client
        .publish("secure", None, &[("K", "v")], b"sealed")
        .unwrap();
    let payload = d.until(|e| match e {
        Event::Message {
            sid: s, payload, ..
        } if *s == sid => Some(payload.clone()),
        _ => None,
    });
    assert_eq!(payload, b"sealed");

    // nats:// to a server that requires TLS, with no CA given.
    let mut plain = Driver::to(&server.url(""));
    let reason = plain.until(|e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, ConnError::TlsNotConfigured);

    // nats:// with the CA given: INFO's tls_required upgrades the connection.
    let mut opts = fast(Options::new(parse_servers(&server.url("")).unwrap()));
    opts.tls = Some(tls_config(&ca_file).unwrap());
    Driver::new(opts).connected();

    // A CA that did not sign the server's certificate.
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = CertifiedIssuer::self_signed(other, KeyPair::generate().unwrap()).unwrap();
    let mut opts = fast(Options::new(parse_servers(&url).unwrap()));
    opts.tls = Some(tls_config(&write("other.pem", other.pem())).unwrap());
    let reason = Driver::new(opts).until(|e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        matches!(&reason, ConnError::Tls(t) if t.starts_with("invalid peer certificate")),
        "{reason:?}"
    );
    assert!(
        tls_config(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string()
            .contains("cannot read --nats-ca")
    );
}

#[test]
fn a_refused_connection_backs_off() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut d = Driver::to(&format!("nats://127.0.0.1:{port}"));
    let events = d.run_for(Duration::from_millis(800));
    let delays: Vec<Duration> = events
        .iter()
        .map(|e| match e {
            Event::ConnectFailed {
                reason: ConnError::Connect(_),
                retry_in,
                ..
            } => *retry_in,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // 20, 40, 80, 160 ms (each jittered to between half and all of it), then 160 ms
    // at most: some 6 to 12 attempts in 800 ms, not thousands.
    assert!((4..=16).contains(&delays.len()), "{delays:?}");
    for (k, delay) in delays.iter().enumerate() {
        let full = Duration::from_millis(20 << k.min(3));
        assert!(
            *delay >= full / 2 && *delay <= full,
            "attempt {k}: {delays:?}"
        );
    }
    // Publishing while away queues up to the buffer limit, then fails cleanly.
    let mut opts = fast(Options::new(
        parse_servers(&format!("127.0.0.1:{port}")).unwrap(),
    ));
    opts.max_buffered_bytes = 1000;
    let mut away = Client::new(opts, CLIENT);
    let mut queued = 0;
    let full = loop {
        match away.publish("x", None, &[], &[b'.'; 100]) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(full, PublishError::BufferFull { limit: 1000 });
    assert_eq!(queued, 8);
    assert!(matches!(
        away.publish("x", None, &[], &vec![0; 2 << 20]),
        Err(PublishError::TooLarge { .. })
    ));
    assert!(matches!(
        away.publish("bad subject", None, &[], b""),
        Err(PublishError::Invalid(_))
    ));
}

/// A fake server: sends `info`, then for each line it reads answers from
/// `script(line)` (nothing when it returns `None`), until the client goes away.
fn fake_server(
    info: &'static str,
    mut script: impl FnMut(&str) -> Option<&'static str> + Send + 'static,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut sock, _)) = listener.accept() else {
            return;
        };
        if sock.write_all(info.as_bytes()).is_err() {
            return;
        }
        let mut reader = BufReader::new(sock.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some(answer) = script(line.trim_end())
                && sock.write_all(answer.as_bytes()).is_err()
            {
                return;
            }
            line.clear();
        }
    });
    port
}

const FAKE_INFO: &str = "INFO {\"server_id\":\"FAKE\",\"version\":\"2.9.10\",\"proto\":1,\"headers\":true,\"max_payload\":1048576} \r\n";

#[test]
fn unanswered_pings_end_a_stale_connection() {
    // Answers only the PING that follows CONNECT, with a permissions error the
    // server would send for a forbidden publish; no PONG after that.
    let mut pings = 0;
    let port = fake_server(FAKE_INFO, move |line| {
        if line != "PING" {
            return None;
        }
        pings += 1;
        (pings == 1).then_some("PONG\r\n-ERR 'Permissions Violation for Publish to \"x\"'\r\n")
    });
    let mut opts = fast(Options::new(
        parse_servers(&format!("127.0.0.1:{port}")).unwrap(),
    ));
    opts.ping_interval = Duration::from_millis(30);
    let mut d = Driver::new(opts);
    d.connected();
    let text = d.until(|e| match e {
        Event::ServerError(t) => Some(t.clone()),
        _ => None,
    });
    assert!(text.starts_with("Permissions Violation"));
    let started = Instant::now();
    let reason = d.until(|e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, ConnError::StaleConnection);
    // Two PINGs unanswered, the third interval ends it.
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_server_that_never_sends_info_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut d = Driver::to(&format!("nats://127.0.0.1:{port}"));
    let reason = d.until(|e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, ConnError::Timeout("INFO"));
    assert_eq!(reason.to_string(), "timed out waiting for INFO");
    drop(listener);
}

#[test]
fn a_server_speaking_something_else_is_a_protocol_error() {
    let port = fake_server("HTTP/1.1 400 Bad Request\r\n\r\n", |_| None);
    let mut d = Driver::to(&format!("nats://127.0.0.1:{port}"));
    let reason = d.until(|e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(matches!(reason, ConnError::Protocol(_)), "{reason:?}");
}

#[test]
fn a_tls_url_to_a_server_without_tls_fails_clearly() {
    let port = fake_server(FAKE_INFO, |_| None);
    let mut d = Driver::to(&format!("tls://127.0.0.1:{port}"));
    let reason = d.until(|e| match e {
        Event::ConnectFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, ConnError::TlsNotOffered);
}

/// What the relay must allow for: once the duplicate window has passed, a
/// repeated id is no longer a duplicate, and after a restart the stream no longer
/// knows its last id (`wrong last msg ID: ` with nothing after it).
#[test]
fn jetstream_forgets_ids_after_the_window_and_a_restart() {
    if !have_nats_server() {
        return;
    }
    let mut server = NatsServer::start(&[]);
    let mut d = Driver::to(&server.url(""));
    d.connected();
    let mut spec = StreamSpec::new("W", &["w.>"], 1);
    spec.duplicate_window = Duration::from_millis(100);
    let (status, body) = d.request(
        &jetstream::stream_create_subject("W"),
        &[],
        &spec.create_request(),
    );
    assert_eq!(
        jetstream::parse_stream_info(status.as_ref(), &body)
            .unwrap()
            .config
            .duplicate_window,
        100_000_000
    );
    let publish = |d: &mut Driver, headers: &[(&str, &str)]| {
        let (status, body) = d.request("w.x", headers, b"{}");
        jetstream::parse_pub_ack(status.as_ref(), &body)
    };
    let first = [
        (jetstream::MSG_ID, "w-1"),
        (jetstream::EXPECTED_LAST_SEQUENCE, "0"),
    ];
    assert_eq!(publish(&mut d, &first).unwrap().seq, 1);
    assert!(publish(&mut d, &first).unwrap().duplicate);
    d.run_for(Duration::from_millis(250));
    let e = publish(&mut d, &first).unwrap_err();
    assert_eq!(e.err_code(), Some(jetstream::ERR_WRONG_LAST_SEQUENCE));

    server.restart();
    d.connected();
    d.run_for(Duration::from_millis(250));
    let chained = [
        (jetstream::MSG_ID, "w-2"),
        (jetstream::EXPECTED_LAST_SEQUENCE, "1"),
        (jetstream::EXPECTED_LAST_MSG_ID, "w-1"),
    ];
    let e = publish(&mut d, &chained).unwrap_err();
    assert_eq!(
        e.to_string(),
        "wrong last msg ID:  (err_code 10070, code 400)"
    );
    // Without the chained id the same message is taken; the chain resumes after.
    assert_eq!(publish(&mut d, &chained[..2]).unwrap().seq, 2);
    let next = [
        (jetstream::MSG_ID, "w-3"),
        (jetstream::EXPECTED_LAST_SEQUENCE, "2"),
        (jetstream::EXPECTED_LAST_MSG_ID, "w-2"),
    ];
    assert_eq!(publish(&mut d, &next).unwrap().seq, 3);
}
