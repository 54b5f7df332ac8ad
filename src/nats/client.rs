//! The NATS connection as a state machine the reactor drives: it connects across
//! the listed servers, hands over what the server sends as [`Event`]s, and queues
//! what the caller publishes, never blocking.
//!
//! See the module map in [`super`] for the states and the interface; what each
//! server operation does is in `client/ops.rs`.

mod ops;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use super::event::{ConnError, Event, PublishError, RequestId, Sid};
use super::headers;
use super::link::Link;
use super::proto::{self, DEFAULT_MAX_PAYLOAD_BYTES, EncodeError, ServerInfo};
use super::servers::Servers;
use super::url::{Credentials, ServerAddr};

/// The subscription of the inbox (`_INBOX.<random>.*`); callers' start after it.
const INBOX_SID: Sid = 1;
/// Characters of the random part of the inbox prefix.
const INBOX_RANDOM_CHARS: usize = 22;

/// How the client connects and how long it waits.
#[derive(Debug, Clone)]
pub struct Options {
    /// The servers, tried in turn.
    pub servers: Vec<ServerAddr>,
    /// Credentials for servers whose URL carries none.
    pub credentials: Option<Credentials>,
    /// TLS trust, for `tls://` servers and servers whose INFO requires TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name CONNECT gives the server (shown in its connection list).
    pub name: String,
    /// Limit on TCP connect, INFO, TLS handshake and CONNECT, together.
    pub connect_timeout: Duration,
    /// Time between our PINGs on a connected link.
    pub ping_interval: Duration,
    /// PINGs without PONG before the link counts as dead.
    pub max_pings_outstanding: u32,
    /// First wait before retrying a server after a failed attempt.
    pub reconnect_delay_min: Duration,
    /// Longest wait between attempts on one server.
    pub reconnect_delay_max: Duration,
    /// Most bytes queued and not yet written (while connected) or queued for the
    /// next connection (while not); a publish over it fails.
    pub max_buffered_bytes: usize,
}

impl Options {
    /// Defaults for `servers`: 2 s to connect, a PING every 10 s with 2
    /// outstanding at most, back-off from 100 ms to 5 s, 8 MiB buffered.
    pub fn new(servers: Vec<ServerAddr>) -> Options {
        Options {
            servers,
            credentials: None,
            tls: None,
            name: "userbus".into(),
            connect_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(10),
            max_pings_outstanding: 2,
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
            max_buffered_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Where an open connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TCP connect is in flight.
    Connecting { deadline: Instant },
    /// Waiting for the server's INFO.
    AwaitingInfo { deadline: Instant },
    /// INFO said TLS: the handshake is under way.
    TlsHandshake { deadline: Instant },
    /// CONNECT and PING sent; waiting for PONG (or `-ERR`).
    Handshaking { deadline: Instant },
    /// PONG came: subscriptions and publishes flow.
    Connected {
        ping_at: Instant,
        pings_outstanding: u32,
    },
}

impl Phase {
    /// What the phase waits for, as a timeout names it.
    fn step(self) -> &'static str {
        match self {
            Phase::Connecting { .. } => "the TCP connect",
            Phase::AwaitingInfo { .. } => "INFO",
            Phase::TlsHandshake { .. } => "the TLS handshake",
            Phase::Handshaking { .. } => "the answer to CONNECT",
            Phase::Connected { .. } => "PONG",
        }
    }

    /// When the timer of this phase fires.
    fn deadline(self) -> Instant {
        match self {
            Phase::Connecting { deadline }
            | Phase::AwaitingInfo { deadline }
            | Phase::TlsHandshake { deadline }
            | Phase::Handshaking { deadline } => deadline,
            Phase::Connected { ping_at, .. } => ping_at,
        }
    }
}

/// The connection's state.
#[derive(Debug)]
enum State {
    /// No socket; the next attempt is due at `retry_at` (never without servers
    /// or after `shutdown`).
    Disconnected { retry_at: Option<Instant> },
    /// A socket to server `server`, in `phase`.
    Open {
        link: Box<Link>,
        server: usize,
        phase: Phase,
    },
}

/// A NATS client on the reactor.
#[derive(Debug)]
pub struct Client {
    opts: Options,
    token: Token,
    servers: Servers,
    state: State,
    /// The caller's subscriptions, replayed on every connection.
    subs: BTreeMap<Sid, String>,
    next_sid: Sid,
    /// `_INBOX.<random>.`: replies to requests arrive on `<inbox><id>`.
    inbox: String,
    next_request: RequestId,
    /// Operations queued while not connected, sent after the next PONG.
    pending: Vec<u8>,
    events: VecDeque<Event>,
    /// The current server's INFO.
    info: Option<Box<ServerInfo>>,
    max_payload: usize,
    connections: u64,
}

impl Client {
    /// A client that registers its sockets under `token`; the first attempt is
    /// due at once (see [`Client::next_deadline`]).
    pub fn new(options: Options, token: Token) -> Client {
        let mut servers = Servers::new(
            options.servers.clone(),
            options.reconnect_delay_min,
            options.reconnect_delay_max,
        );
        let inbox = inbox_prefix(&mut servers);
        let retry_at = servers.next_try(Instant::now());
        Client {
            opts: options,
            token,
            servers,
            state: State::Disconnected { retry_at },
            subs: BTreeMap::new(),
            next_sid: INBOX_SID + 1,
            inbox,
            next_request: 1,
            pending: Vec::new(),
            events: VecDeque::new(),
            info: None,
            max_payload: DEFAULT_MAX_PAYLOAD_BYTES,
            connections: 0,
        }
    }

    /// Handles a readiness event for the client's token.
    pub fn ready(&mut self, registry: &Registry, readable: bool, writable: bool, now: Instant) {
        if !(readable || writable) {
            return;
        }
        self.with_link(registry, now, |c, link, phase, server| {
            c.drive(link, phase, server, now)
        });
    }

    /// Runs what is due at `now`: a connection attempt, a timeout, a PING.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        match self.state {
            State::Disconnected { retry_at: Some(at) } if at <= now => {
                self.connect_next(registry, now);
            }
            State::Open { phase, .. } if phase.deadline() <= now => {
                let (interval, max) = (self.opts.ping_interval, self.opts.max_pings_outstanding);
                self.with_link(registry, now, |_, link, phase, _| match phase {
                    Phase::Connected {
                        ping_at,
                        pings_outstanding,
                    } => {
                        if *pings_outstanding >= max {
                            return Err(ConnError::StaleConnection);
                        }
                        proto::ping(link.out());
                        *pings_outstanding += 1;
                        *ping_at = now + interval;
                        link.flush()
                    }
                    other => Err(ConnError::Timeout(other.step())),
                });
            }
            _ => {}
        }
    }

    /// Writes what publishes and subscriptions queued; the reactor calls it
    /// after handing the client work (as it flushes its own connections).
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        self.with_link(registry, now, |_, link, _, _| link.flush());
    }

    /// When [`Client::on_timer`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Disconnected { retry_at } => *retry_at,
            State::Open { phase, .. } => Some(phase.deadline()),
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True once a server answered our CONNECT, until the connection ends.
    pub fn is_connected(&self) -> bool {
        matches!(
            self.state,
            State::Open {
                phase: Phase::Connected { .. },
                ..
            }
        )
    }

    /// The server connected to.
    pub fn server(&self) -> Option<&ServerAddr> {
        match self.state {
            State::Open {
                server,
                phase: Phase::Connected { .. },
                ..
            } => Some(self.servers.addr(server)),
            _ => None,
        }
    }

    /// Connections made after the first one.
    pub fn reconnects(&self) -> u64 {
        self.connections.saturating_sub(1)
    }

    /// The prefix of this client's reply subjects (`_INBOX.<random>.`).
    pub fn inbox_prefix(&self) -> &str {
        &self.inbox
    }

    /// Subscribes to `subject` (now, or when connected) and on every reconnection.
    pub fn subscribe(&mut self, subject: &str) -> Result<Sid, EncodeError> {
        proto::check_subject(subject)?;
        let sid = self.next_sid;
        self.next_sid += 1;
        self.subs.insert(sid, subject.to_string());
        if let Some(link) = self.connected_link() {
            proto::subscribe(link.out(), subject, sid)?;
        }
        Ok(sid)
    }

    /// Ends subscription `sid`; messages already received for it are dropped.
    pub fn unsubscribe(&mut self, sid: Sid) {
        if self.subs.remove(&sid).is_some()
            && let Some(link) = self.connected_link()
        {
            proto::unsubscribe(link.out(), sid, None);
        }
    }

    /// Queues a publish (`PUB`, or `HPUB` with headers): on the link when
    /// connected, else for the next connection.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let bytes = payload.len()
            + if headers.is_empty() {
                0
            } else {
                headers::encoded_len(headers)
            };
        if bytes > self.max_payload {
            return Err(PublishError::TooLarge {
                bytes,
                limit: self.max_payload,
            });
        }
        let limit = self.opts.max_buffered_bytes;
        let buffered = self.pending.len() + self.connected_link().map_or(0, |l| l.unsent());
        let out = match &mut self.state {
            State::Open {
                link,
                phase: Phase::Connected { .. },
                ..
            } => link.out(),
            _ => &mut self.pending,
        };
        let mark = out.len();
        proto::publish(out, subject, reply, headers, payload).map_err(PublishError::Invalid)?;
        if buffered + (out.len() - mark) > limit {
            out.truncate(mark);
            return Err(PublishError::BufferFull { limit });
        }
        Ok(())
    }

    /// Publishes with a reply subject of this client's inbox; the answer comes as
    /// [`Event::Reply`] with the returned id. The caller keeps its own timeout.
    pub fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<RequestId, PublishError> {
        let id = self.next_request;
        let reply = format!("{}{id}", self.inbox);
        self.publish(subject, Some(&reply), headers, payload)?;
        self.next_request += 1;
        Ok(id)
    }

    /// Closes the connection (what is queued is written if the socket takes it at
    /// once) and makes no further attempts.
    pub fn shutdown(&mut self, registry: &Registry) {
        if let State::Open { mut link, .. } =
            std::mem::replace(&mut self.state, State::Disconnected { retry_at: None })
        {
            let _ = link.flush();
            link.deregister(registry);
        }
    }

    fn connected_link(&mut self) -> Option<&mut Link> {
        match &mut self.state {
            State::Open {
                link,
                phase: Phase::Connected { .. },
                ..
            } => Some(link),
            _ => None,
        }
    }

    /// Runs `f` on the open link, then reregisters it for what it needs, or, if
    /// `f` failed, closes it and moves on to the next attempt.
    fn with_link(
        &mut self,
        registry: &Registry,
        now: Instant,
        f: impl FnOnce(&mut Self, &mut Link, &mut Phase, usize) -> Result<(), ConnError>,
    ) {
        let (mut link, server, mut phase) =
            match std::mem::replace(&mut self.state, State::Disconnected { retry_at: None }) {
                State::Open {
                    link,
                    server,
                    phase,
                } => (link, server, phase),
                other => {
                    self.state = other;
                    return;
                }
            };
        let result = f(self, &mut link, &mut phase, server).and_then(|()| {
            let interest = match phase {
                // Connect completion shows as WRITABLE.
                Phase::Connecting { .. } => Interest::READABLE | Interest::WRITABLE,
                _ if link.wants_write() => Interest::READABLE | Interest::WRITABLE,
                _ => Interest::READABLE,
            };
            link.set_interest(registry, self.token, interest)
                .map_err(|e| ConnError::Io(format!("register: {e}")))
        });
        match result {
            Ok(()) => {
                self.state = State::Open {
                    link,
                    server,
                    phase,
                }
            }
            Err(e) => {
                link.deregister(registry);
                drop(link);
                self.lost(server, phase, e, now);
                self.connect_next(registry, now);
            }
        }
    }

    /// Records the end of a connection or of an attempt.
    fn lost(&mut self, server: usize, phase: Phase, reason: ConnError, now: Instant) {
        self.info = None;
        let addr = self.servers.addr(server).to_string();
        if let Phase::Connected { .. } = phase {
            // The caller reports it (once), from the event.
            log::debug!("nats: disconnected from {addr}: {reason}");
            self.servers.dropped(server, now);
            self.events.push_back(Event::Disconnected {
                server: addr,
                reason,
            });
            return;
        }
        let b = self.servers.failed(server, now);
        // The caller reports failures from the event (once per distinct reason).
        log::debug!(
            "nats: cannot connect to {addr}: {reason} (attempt {}; next in {} ms)",
            b.failures,
            b.delay.as_millis()
        );
        self.events.push_back(Event::ConnectFailed {
            server: addr,
            reason,
            retry_in: b.delay,
        });
    }

    /// Starts an attempt on the next server that is due, or waits for one.
    fn connect_next(&mut self, registry: &Registry, now: Instant) {
        while let Some(server) = self.servers.due(now) {
            let opened = self
                .servers
                .socket_addr(server)
                .and_then(Link::connect)
                .and_then(|mut link| {
                    link.set_interest(
                        registry,
                        self.token,
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| ConnError::Io(format!("register: {e}")))?;
                    Ok(link)
                });
            let deadline = now + self.opts.connect_timeout;
            match opened {
                Ok(link) => {
                    log::debug!("nats: connecting to {}", self.servers.addr(server));
                    self.state = State::Open {
                        link: Box::new(link),
                        server,
                        phase: Phase::Connecting { deadline },
                    };
                    return;
                }
                Err(e) => self.lost(server, Phase::Connecting { deadline }, e, now),
            }
        }
        self.state = State::Disconnected {
            retry_at: self.servers.next_try(now),
        };
    }
}

/// `_INBOX.<22 random base62 characters>.`
fn inbox_prefix(servers: &mut Servers) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::from("_INBOX.");
    let mut bits = 0;
    for k in 0..INBOX_RANDOM_CHARS {
        // Ten base-62 digits use 59.5 of a u64's 64 bits.
        if k % 10 == 0 {
            bits = servers.random_u64();
        }
        s.push(char::from(ALPHABET[(bits % 62) as usize]));
        bits /= 62;
    }
    s.push('.');
    s
}
