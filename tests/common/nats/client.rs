//! A small blocking NATS client for tests: a std `TcpStream` speaking the NATS text
//! protocol (INFO, CONNECT, PING/PONG, SUB, PUB/HPUB, MSG/HMSG, +OK/-ERR) and the
//! few JetStream API requests tests read streams with. Independent of the crate's
//! own client on purpose: tests check that client against this one and the server.
//!
//! Every read has a deadline, so a silent server fails a test instead of hanging
//! it. Failures a test does not ask about are panics with the server's words.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::message::{Headers, StoredMsg};

/// How long a request waits for its reply unless told otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long each attempt of `js_publish_retrying` waits for its ack.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `connect` waits for the server's INFO and PONG.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// nats-server's err_code for "no message found" (`JSNoMessageFoundErr`).
const NO_MESSAGE_FOUND: u64 = 10037;

/// nats-server's err_code for "stream not found" (`JSStreamNotFoundErr`).
const STREAM_NOT_FOUND: u64 = 10059;

/// Why a request got no reply a test can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Nobody subscribes to the subject (a `503` status): for JetStream, no
    /// stream or no leader yet.
    NoResponders,
    /// No reply before the deadline.
    Timeout,
    /// The server sent `-ERR`, or the connection broke.
    Closed(String),
}

/// One protocol operation read from the server.
enum Op {
    Info,
    Ping,
    Pong,
    Ok,
    Err(String),
    Msg {
        subject: String,
        headers: Headers,
        payload: Vec<u8>,
    },
}

/// A connected client. Requests go out one at a time; their replies come to one
/// wildcard inbox subscription, and replies to requests that timed out are dropped.
pub struct NatsTestClient {
    stream: TcpStream,
    buf: Vec<u8>,
    inbox: String,
    next_reply: u64,
    /// The server's INFO at connect.
    pub info: Value,
}

impl NatsTestClient {
    /// Connects to the first server of `url` (`nats://[user:pass@|token@]host:port`,
    /// comma-separated, the scheme optional; an entry without credentials takes
    /// the first entry's, as `--nats` does) that completes INFO, CONNECT and
    /// PING/PONG. `Err` carries each server's failure, such as the server's
    /// `-ERR 'Authorization Violation'`.
    pub fn connect(url: &str) -> Result<NatsTestClient, String> {
        let mut failures = Vec::new();
        let mut first_auth = None;
        for server in url.split(',') {
            let rest = server.trim();
            let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
            let (auth, hostport) = match rest.rsplit_once('@') {
                Some((a, h)) => (Some(a), h),
                None => (None, rest),
            };
            first_auth = first_auth.or(auth);
            match Self::connect_one(hostport, auth.or(first_auth)) {
                Ok(c) => return Ok(c),
                Err(e) => failures.push(format!("{hostport}: {e}")),
            }
        }
        Err(failures.join("; "))
    }

    /// Connects to `hostport` with `auth` (`user:pass` or a token).
    fn connect_one(hostport: &str, auth: Option<&str>) -> Result<NatsTestClient, String> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .map_err(|e| format!("bad address {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("no address for {hostport}"))?;
        let stream =
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = NatsTestClient {
            stream,
            buf: Vec::new(),
            inbox: unique_inbox(),
            next_reply: 0,
            info: Value::Null,
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let line = c.read_line(deadline).map_err(|e| format!("{e:?}"))?;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| format!("expected INFO, got {line:?}"))?;
        c.info = serde_json::from_str(info).map_err(|e| format!("bad INFO ({e}): {info}"))?;
        let mut connect = json!({
            "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
            "lang": "rust-test", "version": "0", "protocol": 1,
        });
        match auth.map(|a| a.split_once(':')) {
            Some(Some((user, pass))) => {
                connect["user"] = json!(user);
                connect["pass"] = json!(pass);
            }
            Some(None) => connect["auth_token"] = json!(auth),
            None => {}
        }
        c.send(format!("CONNECT {connect}\r\nPING\r\nSUB {}.* 1\r\n", c.inbox).as_bytes())
            .map_err(|e| format!("{e:?}"))?;
        loop {
            match c.read_op(deadline).map_err(|e| format!("{e:?}"))? {
                Op::Pong => return Ok(c),
                Op::Err(e) => return Err(format!("-ERR {e}")),
                _ => {}
            }
        }
    }

    /// Sends `payload` on `subject` without headers.
    pub fn publish(&mut self, subject: &str, payload: &[u8]) {
        let mut out = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.send(&out).expect("PUB sent");
    }

    /// Sends `payload` on `subject` with the header fields `headers`, no reply
    /// expected; `flush` confirms the server read it.
    pub fn publish_with_headers(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) {
        let out = hpub(subject, None, headers, payload);
        self.send(&out).expect("HPUB sent");
    }

    /// Round-trips a PING, so everything sent before has been processed.
    pub fn flush(&mut self) {
        self.send(b"PING\r\n").expect("PING sent");
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.read_op(deadline) {
                Ok(Op::Pong) => return,
                Ok(Op::Err(e)) => panic!("nats-server sent -ERR {e} before PONG"),
                Ok(_) => {}
                Err(e) => panic!("no PONG from nats-server: {e:?}"),
            }
        }
    }

    /// A request with the default timeout; panics without a reply.
    pub fn request(&mut self, subject: &str, payload: &[u8]) -> (Headers, Vec<u8>) {
        self.try_request(subject, &[], payload, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("request on {subject}: {e:?}"))
    }

    /// A request with header fields, waiting at most `timeout` for the reply.
    pub fn try_request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(Headers, Vec<u8>), RequestError> {
        self.next_reply += 1;
        let reply = format!("{}.{}", self.inbox, self.next_reply);
        let out = if headers.is_empty() {
            let mut out = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
            out
        } else {
            hpub(subject, Some(&reply), headers, payload)
        };
        self.send(&out)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_op(deadline)? {
                Op::Msg {
                    subject,
                    headers,
                    payload,
                } if subject == reply => {
                    if headers.status == Some(503) && payload.is_empty() {
                        return Err(RequestError::NoResponders);
                    }
                    return Ok((headers, payload));
                }
                Op::Err(e) => return Err(RequestError::Closed(format!("-ERR {e}"))),
                _ => {}
            }
        }
    }

    /// A JetStream API request whose reply is JSON (errors included, as the
    /// `error` member), waiting at most `timeout`. A server without a JetStream
    /// meta leader, or a clustered stream without a leader, does not answer.
    pub fn try_api(
        &mut self,
        subject: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, RequestError> {
        let (_, payload) = self.try_request(subject, &[], body.to_string().as_bytes(), timeout)?;
        Ok(parse_json(subject, &payload))
    }

    /// A JetStream API request that must succeed.
    pub fn api(&mut self, subject: &str, body: &Value) -> Value {
        let v = self
            .try_api(subject, body, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{subject}: {e:?}"));
        assert!(v.get("error").is_none(), "{subject} {body}: {v}");
        v
    }

    /// Publishes into JetStream and returns the ack's JSON: `{"stream","seq"}`,
    /// `"duplicate": true` for an id seen before, or an `error` member.
    pub fn js_publish(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Value, RequestError> {
        let (_, reply) = self.try_request(subject, headers, payload, REQUEST_TIMEOUT)?;
        Ok(parse_json(subject, &reply))
    }

    /// Publishes another writer's message (`Nats-Msg-Id: someone-else-<seq+1>`)
    /// on `userbus.user.registered`, chained after `seq` as a relay chains its
    /// own, and asserts it landed at `seq + 1`.
    pub fn publish_foreign_after(&mut self, seq: u64) {
        let (id, last) = (format!("someone-else-{}", seq + 1), seq.to_string());
        let ack = self
            .js_publish(
                "userbus.user.registered",
                &[("Nats-Msg-Id", &id), ("Nats-Expected-Last-Sequence", &last)],
                b"{}",
            )
            .expect("ack");
        assert_eq!(ack["seq"], seq + 1, "{ack}");
    }

    /// `js_publish` again and again while there is no stream leader (no
    /// responders, a timeout or a 503 error) until `within` has passed; then
    /// panics. Each attempt waits `ATTEMPT_TIMEOUT`; an attempt that timed out
    /// but landed makes the next one's ack `"duplicate": true` with the same
    /// `seq`, when the headers carry a `Nats-Msg-Id`. Other errors are returned
    /// in the ack as they came.
    pub fn js_publish_retrying(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let outcome = self
                .try_request(subject, headers, payload, ATTEMPT_TIMEOUT)
                .map(|(_, reply)| parse_json(subject, &reply));
            match &outcome {
                Ok(ack) if ack["error"]["code"] != 503 => return ack.clone(),
                Err(RequestError::Closed(e)) => panic!("publish on {subject}: connection {e}"),
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "publish on {subject} still failing after {within:?}: {outcome:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a file-storage stream with `replicas` copies taking `subjects`;
    /// returns the server's answer and panics on an error.
    pub fn create_stream(&mut self, name: &str, subjects: &[&str], replicas: usize) -> Value {
        let config = json!({
            "name": name, "subjects": subjects, "storage": "file",
            "retention": "limits", "discard": "old", "num_replicas": replicas,
        });
        self.api(&format!("$JS.API.STREAM.CREATE.{name}"), &config)
    }

    /// Deletes the stream `name`; panics on an error.
    pub fn delete_stream(&mut self, name: &str) {
        self.api(&format!("$JS.API.STREAM.DELETE.{name}"), &json!({}));
    }

    /// `$JS.API.STREAM.INFO.<name>`: `config`, `state` (`messages`, `first_seq`,
    /// `last_seq`, ...) and, in a cluster, `cluster`. Panics on any error.
    pub fn stream_info(&mut self, name: &str) -> Value {
        self.try_stream_info(name)
            .unwrap_or_else(|| panic!("stream {name} not found"))
    }

    /// Like `stream_info`, `None` when the stream does not exist.
    pub fn try_stream_info(&mut self, name: &str) -> Option<Value> {
        let subject = format!("$JS.API.STREAM.INFO.{name}");
        let v = self
            .try_api(&subject, &json!({}), REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{subject}: {e:?}"));
        if v["error"]["err_code"] == STREAM_NOT_FOUND {
            return None;
        }
        assert!(v.get("error").is_none(), "{subject}: {v}");
        Some(v)
    }

    /// The message at `seq` of stream `name`, `None` when there is none (deleted or
    /// out of range). Panics on other errors.
    pub fn stream_msg(&mut self, name: &str, seq: u64) -> Option<StoredMsg> {
        let subject = format!("$JS.API.STREAM.MSG.GET.{name}");
        let v = self
            .try_api(&subject, &json!({ "seq": seq }), REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{subject} seq {seq}: {e:?}"));
        if v["error"]["err_code"] == NO_MESSAGE_FOUND {
            return None;
        }
        assert!(v.get("error").is_none(), "{subject} seq {seq}: {v}");
        Some(
            StoredMsg::from_api(&v)
                .unwrap_or_else(|| panic!("{subject} seq {seq}: no message in {v}")),
        )
    }

    /// The last message on `key` in KV bucket `bucket`, read as `nats kv get`
    /// reads it; `None` when the key or the bucket is missing, or no answer came
    /// within 2 s (a cluster does not answer a MSG.GET from a missing stream).
    pub fn kv_last(&mut self, bucket: &str, key: &str) -> Option<StoredMsg> {
        let reply = self
            .try_api(
                &format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"),
                &json!({ "last_by_subj": format!("$KV.{bucket}.{key}") }),
                Duration::from_secs(2),
            )
            .ok()?;
        StoredMsg::from_api(&reply)
    }

    /// Polls `kv_last(bucket, key)` until its message satisfies `done` and returns
    /// it; fails after `within`, naming `what` and what the key holds.
    pub fn wait_kv(
        &mut self,
        bucket: &str,
        key: &str,
        within: Duration,
        what: &str,
        done: impl Fn(&StoredMsg) -> bool,
    ) -> StoredMsg {
        let deadline = Instant::now() + within;
        loop {
            let got = self.kv_last(bucket, key);
            if let Some(m) = got.as_ref().filter(|m| done(m)) {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "key {key}: waited {within:?} for {what}; it holds {:?}",
                got.map(|m| m.text())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every message the stream holds, from `first_seq` to `last_seq`, in order.
    pub fn all_msgs(&mut self, name: &str) -> Vec<StoredMsg> {
        let info = self.stream_info(name);
        let state = &info["state"];
        if state["messages"] == 0 {
            return Vec::new();
        }
        let (first, last) = (
            state["first_seq"].as_u64().unwrap_or(1),
            state["last_seq"].as_u64().unwrap_or(0),
        );
        (first..=last)
            .filter_map(|seq| self.stream_msg(name, seq))
            .collect()
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), RequestError> {
        self.stream
            .set_write_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|()| self.stream.write_all(bytes))
            .map_err(|e| RequestError::Closed(e.to_string()))
    }

    /// Reads more bytes into `buf`, waiting no later than `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), RequestError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Timeout);
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| RequestError::Closed(e.to_string()))?;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(RequestError::Closed("closed by nats-server".into())),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(RequestError::Timeout)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(RequestError::Closed(e.to_string())),
        }
    }

    /// The next control line without its CRLF.
    fn read_line(&mut self, deadline: Instant) -> Result<String, RequestError> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            self.fill(deadline)?;
        }
    }

    /// `n` bytes of message body and the CRLF after them.
    fn read_body(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, RequestError> {
        let want = n
            .checked_add(2)
            .expect("invariant: a body length fits usize");
        while self.buf.len() < want {
            self.fill(deadline)?;
        }
        assert_eq!(
            &self.buf[n..want],
            b"\r\n",
            "message body not followed by CRLF"
        );
        let body = self.buf[..n].to_vec();
        self.buf.drain(..want);
        Ok(body)
    }

    /// The next operation; PINGs are answered here.
    fn read_op(&mut self, deadline: Instant) -> Result<Op, RequestError> {
        let line = self.read_line(deadline)?;
        let (verb, args) = line.split_once(' ').unwrap_or((&line, ""));
        let words: Vec<&str> = args.split_whitespace().collect();
        let number = |s: &str| -> usize {
            s.parse()
                .unwrap_or_else(|_| panic!("bad length {s:?} in {line:?}"))
        };
        let op = match verb.to_ascii_uppercase().as_str() {
            "INFO" => Op::Info,
            "PING" => {
                self.send(b"PONG\r\n")?;
                Op::Ping
            }
            "PONG" => Op::Pong,
            "+OK" => Op::Ok,
            "-ERR" => Op::Err(args.trim().to_string()),
            // MSG <subject> <sid> [reply-to] <#bytes>
            "MSG" if (3..=4).contains(&words.len()) => {
                let payload = self.read_body(number(words[words.len() - 1]), deadline)?;
                Op::Msg {
                    subject: words[0].to_string(),
                    headers: Headers::default(),
                    payload,
                }
            }
            // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
            "HMSG" if (4..=5).contains(&words.len()) => {
                let head = number(words[words.len() - 2]);
                let total = number(words[words.len() - 1]);
                assert!(head <= total, "header length over total in {line:?}");
                let mut body = self.read_body(total, deadline)?;
                let payload = body.split_off(head);
                Op::Msg {
                    subject: words[0].to_string(),
                    headers: Headers::parse(&body),
                    payload,
                }
            }
            _ => panic!("unexpected line from nats-server: {line:?}"),
        };
        Ok(op)
    }
}

/// `HPUB subject [reply] <#header bytes> <#total bytes>` with its block and payload.
fn hpub(subject: &str, reply: Option<&str>, headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let block = Headers::encode(headers);
    let reply = reply.map(|r| format!("{r} ")).unwrap_or_default();
    let mut out = format!(
        "HPUB {subject} {reply}{} {}\r\n",
        block.len(),
        block.len() + payload.len()
    )
    .into_bytes();
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

fn parse_json(subject: &str, payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap_or_else(|e| {
        panic!(
            "reply on {subject} is not JSON ({e}): {}",
            String::from_utf8_lossy(payload)
        )
    })
}

/// An inbox prefix no other client of this test run shares.
fn unique_inbox() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("_INBOX.t{}x{nanos}x{n}", std::process::id())
}
