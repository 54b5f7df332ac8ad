//! The reactor: one `mio` poll loop, the listener, the connections in a slab, and
//! the tick.
//!
//! ```text
//! poll (timeout = next timer)
//!   accept until WouldBlock, read until WouldBlock (per-connection budget)
//!   parse and run every complete request, in arrival order
//! COMMIT (one transaction for the whole tick)
//!   ok:   dispatch the tick's events to the handler callbacks
//!   fail: every reply of the tick that touched storage becomes `-ERR storage: ...`
//! flush every connection with output; WRITABLE interest only where a write blocked
//! webhooks: outcomes stored before the commit, next requests sent after it
//! close what finished; run due timers (accept back-off, checkpoints)
//! ```
//! Nothing a tick did leaves the process before its commit. A failing client only
//! ever closes itself: errors inside the loop are per connection.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::cmd::Shared;
use crate::config::{
    ACCEPT_BACKOFF, ACCEPT_BUDGET, CHECKPOINT_IDLE, CHECKPOINT_RETRY, Config,
    MAX_UNAUTH_OUTPUT_BYTES, RETENTION_BATCH, RETENTION_INTERVAL, SHUTDOWN_FLUSH_TIMEOUT,
    TCP_KEEPALIVE,
};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::events::PubSub;
use crate::events::{Event, Handlers};
use crate::metrics::Stats;
use crate::store::Store;

mod backup;
mod commit;
mod conns;
mod follow;
mod http;
mod offsets;
mod relay;
mod replicated;
mod resp;
mod timers;
mod webhooks;

use self::http::HTTP_SWEEP;

/// The RESP listener.
const LISTENER: Token = Token(usize::MAX - 1);
/// The HTTP listener.
const HTTP_LISTENER: Token = Token(usize::MAX - 4);
/// The RESP-over-TLS listener.
const TLS_LISTENER: Token = Token(usize::MAX - 5);
/// The HTTPS listener.
const HTTPS_LISTENER: Token = Token(usize::MAX - 6);

/// The four ways in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Resp,
    Http,
    RespTls,
    Https,
}

impl Listener {
    const ALL: [Listener; 4] = [
        Listener::Resp,
        Listener::Http,
        Listener::RespTls,
        Listener::Https,
    ];

    fn http(self) -> bool {
        matches!(self, Listener::Http | Listener::Https)
    }

    fn tls(self) -> bool {
        matches!(self, Listener::RespTls | Listener::Https)
    }

    fn token(self) -> Token {
        match self {
            Listener::Resp => LISTENER,
            Listener::Http => HTTP_LISTENER,
            Listener::RespTls => TLS_LISTENER,
            Listener::Https => HTTPS_LISTENER,
        }
    }
}
/// Wakes the loop for a shutdown requested from another thread.
const WAKER: Token = Token(usize::MAX - 2);
/// The self-pipe SIGINT and SIGTERM write to.
const SIGNALS: Token = Token(usize::MAX - 3);
/// Connection keys stay below this so they never collide with the tokens above.
const MAX_CONN_TOKEN: usize = usize::MAX - 16;

/// Pushes one tick may queue for a subscriber beyond its hard limit before the
/// flush judges it (a memory bound; the limits apply to what the flush leaves).
const PUBSUB_TICK_SLACK_BYTES: usize = 4 * 1024 * 1024;

/// Cross-protocol attempts are logged at most this often.
const CROSS_PROTOCOL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` when it
/// cannot be read or is unlimited.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How often idle connections are looked for (with `--timeout`).
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// Events a durable handler is given per tick.
const DURABLE_BATCH: usize = 1000;
/// First back-off after a durable handler panics; it doubles per panic in a row.
const DURABLE_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest back-off after a durable handler panics.
const DURABLE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Poll events fetched per wait.
const EVENTS_CAPACITY: usize = 1024;

/// Accept failures are logged at warn level at most this often.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// errno values that mean "out of descriptors or memory" on accept (Linux).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const ENOBUFS: i32 = 105;
const ENOMEM: i32 = 12;

/// Up to `limit` committed events from sequence number `from` on, out of `fresh`,
/// the last commit's events; `None` unless `fresh` is exactly the log's tail
/// (`first..=last`, no gaps) and `from` falls in it, when the log must be read.
fn committed_tail(fresh: &[Event], last: i64, from: i64, limit: usize) -> Option<&[Event]> {
    let (first, tail) = (fresh.first()?.seq, fresh.last()?.seq);
    if tail != last || tail - first + 1 != fresh.len() as i64 || !(first..=last).contains(&from) {
        return None;
    }
    let start = usize::try_from(from - first).ok()?;
    Some(&fresh[start..fresh.len().min(start.saturating_add(limit))])
}

/// Asks a running reactor to shut down, from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Stops accepting, finishes the tick, commits, flushes replies and returns
    /// from `run`.
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the reactor for shutdown: {e}");
        }
    }
}

/// When each of the reactor's timed jobs is next due; `None` when it is not
/// scheduled. The poll waits until the nearest of them.
#[derive(Debug, Default)]
struct Timers {
    /// The end of an accept back-off (out of descriptors).
    accept_paused_until: Option<Instant>,
    /// The next idle-time WAL checkpoint (pushed back by every commit).
    checkpoint_at: Option<Instant>,
    /// The next trim of the event log (with `--retain-events`).
    trim_at: Option<Instant>,
    /// The next check of HTTP deadlines and stream heartbeats.
    http_sweep_at: Option<Instant>,
    /// The next check for idle connections (with `--timeout`).
    idle_sweep_at: Option<Instant>,
}

impl Timers {
    /// The nearest scheduled time.
    fn next(&self) -> Option<Instant> {
        [
            self.accept_paused_until,
            self.checkpoint_at,
            self.trim_at,
            self.http_sweep_at,
            self.idle_sweep_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True when any job is scheduled.
    fn any(&self) -> bool {
        self.next().is_some()
    }
}

/// The server's single-threaded event loop and everything it owns.
pub struct Reactor {
    poll: Poll,
    /// The listeners, indexed like `Listener::ALL`; `None` when off or stopping.
    listeners: [Option<TcpListener>; 4],
    /// The TLS configuration, when a TLS port is on.
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Connections streaming events (`GET /events`).
    sse_conns: Vec<usize>,
    /// A stream is behind the log with room to catch up: poll without waiting.
    sse_behind: bool,
    /// A listener stopped at its per-tick accept budget: accept again next tick.
    accept_more: bool,
    conns: Slab<Conn>,
    /// When each timed job is next due.
    timers: Timers,
    /// What every request may touch: store, the tick's events, settings,
    /// counters, subscriptions.
    shared: Shared,
    handlers: Handlers,
    /// Where every plain-socket read lands before its bytes join a connection.
    scratch: Vec<u8>,
    /// Connections parked in a blocking read, in the order they blocked (an
    /// index: each connection holds its own wait).
    blocked: Vec<usize>,
    /// Connections to serve this tick.
    work: Vec<usize>,
    /// Connections to serve next tick without waiting for an event.
    carry: Vec<usize>,
    /// Connections whose output grew this tick.
    touched: Vec<usize>,
    /// Connections to remove at the end of the tick.
    closing: Vec<usize>,
    /// An event's JSON while it is pushed to subscribers (kept for its capacity).
    push_payload: Vec<u8>,
    /// When the current tick started: the time of every request it runs.
    tick_now: Instant,
    next_client_id: u64,
    /// When the last accept failure was logged at warn level (rate limit).
    accept_warned_at: Option<Instant>,
    shutdown_flag: Arc<AtomicBool>,
    /// The poll's one waker: shutdown handles and the webhook resolver fire it.
    waker: Arc<Waker>,
    signals: Option<UnixStream>,
    stopping: bool,
    /// A durable handler has more events to catch up on: poll without waiting.
    durable_behind: bool,
    /// The JetStream relay (`--nats`).
    relay: Option<crate::nats::relay::Relay>,
    /// The relay's position as stored in the database.
    relay_stored: i64,
    /// The position the current tick stores, until its commit.
    relay_persisting: Option<i64>,
    /// When the position was last stored.
    relay_stored_at: Option<Instant>,
    /// The relay has room and committed events to send: poll without waiting.
    relay_behind: bool,
    /// Write replies and events held for JetStream (`--durability replicated`).
    replication: Option<replicated::Replication>,
    /// The follower (`--follow`, or a fenced primary).
    follow: Option<follow::Follow>,
    /// The follower has delivered events to apply: poll without waiting.
    follow_behind: bool,
    /// A promotion whose first event the stream has not confirmed yet: fenced in
    /// that window, the node promotes itself again (`follow::Promoted`).
    promoted: Option<follow::Promoted>,
    /// Why the server must stop with an error (a follower that cannot start).
    fatal: Option<String>,
    /// Durable handler offsets in JetStream (`--nats` with durable handlers).
    handler_kv: offsets::HandlerKv,
    /// The webhook endpoints and their HTTP client.
    webhooks: webhooks::Webhooks,
}

impl Reactor {
    /// Binds the listener, opens the store and prepares the loop.
    pub fn new(config: Config, handlers: Handlers, handle_signals: bool) -> Result<Reactor> {
        let mut config = config;
        config.validate().map_err(Error::Config)?;
        // One place holds the secret from here on, however it was given.
        config.requirepass = config.password().map_err(Error::Config)?;
        config.password_file = None;
        if config.requirepass.is_none() && config.protected_mode && !config.bind.is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {} without a password (protected mode): set \
                 --requirepass, USERBUS_PASSWORD or --password-file, or pass \
                 --protected-mode no to serve unauthenticated clients from the network",
                config.bind
            )));
        }
        if let Some(fds) = open_files_limit() {
            // Listeners, the poll, SQLite's files and the signal pipe need a few.
            let cap = usize::try_from(fds)
                .unwrap_or(usize::MAX)
                .saturating_sub(32);
            if config.maxclients > cap {
                log::warn!(
                    "maxclients {} lowered to {cap}: the open files limit is {fds} (raise it with ulimit -n)",
                    config.maxclients
                );
                config.maxclients = cap.max(1);
            }
        }
        let poll = Poll::new()?;
        let tls_config = if config.tls_port != 0 || config.https_port != 0 {
            let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
                return Err(Error::Config(
                    "--tls-port and --https-port need --tls-cert and --tls-key".into(),
                ));
            };
            Some(crate::tls::server_config(
                cert,
                key,
                config.tls_ca.as_deref(),
            )?)
        } else {
            None
        };
        let mut listeners: [Option<TcpListener>; 4] = Default::default();
        for (i, which) in Listener::ALL.into_iter().enumerate() {
            let port = match which {
                Listener::Resp => Some(config.port),
                Listener::Http => Some(config.http_port).filter(|&p| p != 0),
                Listener::RespTls => Some(config.tls_port).filter(|&p| p != 0),
                Listener::Https => Some(config.https_port).filter(|&p| p != 0),
            };
            if let Some(port) = port {
                let addr = std::net::SocketAddr::new(config.bind, port);
                let mut l = TcpListener::bind(addr)?;
                poll.registry()
                    .register(&mut l, which.token(), Interest::READABLE)?;
                listeners[i] = Some(l);
            }
        }
        let mut store = Store::open_warming(&config.db, config.durability, config.max_db_pages)?;
        store.set_unique_fields(&config.unique_fields)?;
        if config.follow {
            // A follower applies events by name from its first tick.
            store.finish_warming()?;
        }
        // A poll may have one `Waker` only (mio asserts it): shutdown and the
        // webhook resolver share it.
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = if handle_signals {
            let (rx, tx) = std::os::unix::net::UnixStream::pair()?;
            rx.set_nonblocking(true)?;
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
            }
            let mut rx = UnixStream::from_std(rx);
            poll.registry()
                .register(&mut rx, SIGNALS, Interest::READABLE)?;
            Some(rx)
        } else {
            None
        };
        let mut store = store;
        // Checkpoints run on their own thread and connection from here on; the
        // reactor stops it in `finish`.
        store
            .start_checkpointer(config.durability)
            .map_err(|e| Error::Config(format!("cannot start the WAL checkpointer: {e}")))?;
        // Base images of the user index are written on their own thread too.
        store
            .start_imager()
            .map_err(|e| Error::Config(format!("cannot start the imager: {e}")))?;
        let mut handlers = handlers;
        for h in &mut handlers.durable {
            h.offset = store.handler_offset(&h.name)?;
            log::info!(
                "durable handler '{}' resumes after event {}",
                h.name,
                h.offset
            );
        }
        let mut relay = if config.follow {
            None
        } else {
            relay::build(&config, &mut store)?
        };
        follow::resume_chain(&config, &mut store, relay.as_mut());
        let follow = if config.follow {
            Some(follow::build(&config, &mut store)?)
        } else {
            None
        };
        let replica = crate::replica::Replica {
            role: if config.follow {
                crate::replica::Role::Follower
            } else {
                crate::replica::Role::Primary
            },
            nats: config.nats_enabled(),
            stream: config.nats_stream.clone(),
            ..Default::default()
        };
        let webhooks = webhooks::Webhooks::new(&config, &mut store, Arc::clone(&waker))?;
        let relay_stored = relay.as_ref().map_or(0, |r| r.confirmed());
        if config.durability.replicated() && relay.is_none() && !config.follow {
            return Err(Error::Config(
                "--durability replicated needs a NATS relay, and --nats could not be used \
                 (see the error above)"
                    .into(),
            ));
        }
        let replication = config.durability.replicated().then(|| {
            replicated::Replication::new(
                config.replication_timeout,
                store.committed_counts().last_seq,
            )
        });
        let trim_at = config.retain_events.map(|_| Instant::now());
        let idle_sweep_at = (config.timeout > 0).then(|| Instant::now() + IDLE_SWEEP);
        // Handlers behind the log catch up from the first tick, events or not.
        let durable_behind = !config.follow
            && handlers
                .durable
                .iter()
                .any(|h| h.offset < store.committed_counts().last_seq);
        let bound = |i: usize| -> io::Result<u16> {
            listeners[i]
                .as_ref()
                .map_or(Ok(0), |l| l.local_addr().map(|a| a.port()))
        };
        let port = bound(0)?;
        // CONFIG GET reports the ports in use, also when 0 asked for any.
        config.port = port;
        config.http_port = bound(1)?;
        config.tls_port = bound(2)?;
        config.https_port = bound(3)?;
        Ok(Reactor {
            poll,
            listeners,
            tls_config,
            sse_conns: Vec::new(),
            sse_behind: false,
            accept_more: false,
            conns: Slab::new(),
            timers: Timers {
                trim_at,
                idle_sweep_at,
                ..Timers::default()
            },
            shared: Shared {
                store,
                events: Vec::new(),
                config,
                stats: Stats {
                    replication: replication.as_ref().map(|_| Default::default()),
                    replica,
                    ..Stats::new(port, crate::cmd::COMMANDS.iter().map(|c| c.name))
                },
                pubsub: PubSub::default(),
                backups: crate::cmd::Backups::default(),
                stream_tokens: Default::default(),
            },
            handlers,
            scratch: vec![0; crate::conn::READ_CHUNK_BYTES],
            blocked: Vec::new(),
            work: Vec::new(),
            carry: Vec::new(),
            touched: Vec::new(),
            closing: Vec::new(),
            push_payload: Vec::new(),
            tick_now: Instant::now(),
            next_client_id: 1,
            accept_warned_at: None,
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            signals,
            stopping: false,
            durable_behind,
            relay,
            relay_stored,
            relay_persisting: None,
            relay_stored_at: None,
            relay_behind: false,
            replication,
            follow,
            follow_behind: false,
            promoted: None,
            fatal: None,
            handler_kv: offsets::HandlerKv::default(),
            webhooks,
        })
    }

    /// The bound RESP address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listeners[0] {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The bound HTTP address, when the HTTP side is on.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener_addr(Listener::Http)
    }

    /// The bound RESP-over-TLS address, when on.
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener_addr(Listener::RespTls)
    }

    /// The bound HTTPS address, when on.
    pub fn https_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener_addr(Listener::Https)
    }

    fn listener_addr(&self, which: Listener) -> Option<std::net::SocketAddr> {
        let i = Listener::ALL.iter().position(|&l| l == which)?;
        self.listeners[i].as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle that stops the loop from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.shutdown_flag.clone(),
            waker: self.waker.clone(),
        }
    }

    /// The settings the reactor runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs ticks until shutdown.
    pub fn run(mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.stopping {
            self.turn(&mut events)?;
            if let Some(job) = self.shared.backups.take_started() {
                self.run_backup(job, &mut events)?;
            }
        }
        self.finish();
        match self.fatal.take() {
            Some(why) => Err(Error::Config(why)),
            None => Ok(()),
        }
    }

    /// One pass of the loop: poll, readiness, the tick, the timers.
    fn turn(&mut self, events: &mut Events) -> Result<()> {
        let timeout = self.poll_timeout();
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e.into());
        }
        self.work.append(&mut self.carry);
        if std::mem::take(&mut self.accept_more) {
            self.accept_all();
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => self.accept(Listener::Resp),
                HTTP_LISTENER => self.accept(Listener::Http),
                TLS_LISTENER => self.accept(Listener::RespTls),
                HTTPS_LISTENER => self.accept(Listener::Https),
                relay::NATS => self.relay_ready(ev),
                follow::FOLLOW => {
                    let closed = ev.is_read_closed() || ev.is_error();
                    self.follow_ready(ev.is_readable() || closed, ev.is_writable());
                }
                WAKER => {
                    self.webhook_woken();
                    if self.shutdown_flag.load(Ordering::SeqCst) {
                        self.begin_stop("shutdown requested");
                    }
                }
                SIGNALS => {
                    self.drain_signals();
                    self.begin_stop("signal received");
                }
                t if crate::webhook::transport::Transport::owns(t) => self.webhook_ready(ev),
                Token(k) => {
                    let closed = ev.is_read_closed() || ev.is_error();
                    self.ready(k, ev.is_writable(), ev.is_readable() || closed, closed);
                }
            }
        }
        self.tick();
        self.run_timers();
        self.warm_index();
        Ok(())
    }

    /// One slice of loading the user index, after the tick committed (the store
    /// reads nothing while a tick is open), when one is due; one a turn, so
    /// requests wait at most a slice.
    fn warm_index(&mut self) {
        let store = &mut self.shared.store;
        if store
            .warm_due_in(Instant::now())
            .is_none_or(|d| !d.is_zero())
        {
            return;
        }
        if let Err(e) = store.warm_step() {
            log::error!("user index: {e}");
            self.fatal = Some(format!("user index: {e}"));
            self.begin_stop("the user index cannot load");
        }
    }

    /// One connection's readiness: flush committed output now, queue reads for the
    /// tick.
    fn ready(&mut self, k: usize, writable: bool, readable: bool, read_closed: bool) {
        let Some(conn) = self.conns.get_mut(k) else {
            return; // an event for a key closed earlier: ignore it
        };
        if conn.is_closed() {
            return;
        }
        if read_closed {
            conn.note_read_closed();
        }
        if writable && conn.wants_write() {
            let was_blocked = conn.backpressured();
            self.flush(k);
            let Some(conn) = self.conns.get(k) else {
                return;
            };
            if was_blocked && !conn.backpressured() {
                self.queue(k);
            }
        }
        if readable {
            self.queue(k);
        }
    }

    fn queue(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k)
            && conn.enqueue()
        {
            self.work.push(k);
        }
    }

    /// Queues connection `k` for the next tick, without waiting for an event.
    fn carry_over(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k)
            && conn.enqueue()
        {
            self.carry.push(k);
        }
    }

    /// Reads, parses and runs the requests of every queued connection, commits,
    /// then flushes.
    fn tick(&mut self) {
        let started = Instant::now();
        self.tick_now = started;
        self.shared.stats.tick_requests = 0;
        // First, so that a WEBHOOK command of this tick writes after them.
        self.persist_webhooks();
        let mut work = std::mem::take(&mut self.work);
        for &k in &work {
            if let Some(conn) = self.conns.get_mut(k) {
                conn.dequeue();
            }
            self.serve(k);
        }
        work.clear();
        self.work = work;
        let requests = self.shared.stats.tick_requests;
        self.apply_followed();
        self.persist_relay();
        self.commit();
        // The committed events (none after a failed commit), for the streams and
        // durable handlers that are not behind them.
        let mut fresh = std::mem::take(&mut self.shared.events);
        if !self.sse_conns.is_empty() {
            self.feed_sse(&fresh);
        }
        self.flush_touched();
        if !self.shared.stats.replica.read_only() {
            self.run_durable_handlers(&fresh);
        }
        self.step_relay(&fresh);
        self.step_webhooks(&fresh);
        self.step_kv_writers(false);
        self.release_held(&mut fresh);
        self.step_follow();
        fresh.clear();
        self.shared.events = fresh;
        if requests > 0 {
            self.shared
                .stats
                .tick_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn events(seqs: &[i64]) -> Vec<Event> {
        seqs.iter()
            .map(|&seq| Event {
                seq,
                kind: EventKind::Registered,
                user_id: seq,
                name: format!("u{seq}"),
                fields: Default::default(),
                before: None,
                at_ms: 0,
            })
            .collect()
    }

    fn seqs(batch: Option<&[Event]>) -> Option<Vec<i64>> {
        batch.map(|b| b.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn the_commits_events_serve_only_what_they_hold() {
        let fresh = events(&[4, 5, 6, 7]);
        assert_eq!(
            seqs(committed_tail(&fresh, 7, 4, 10)),
            Some(vec![4, 5, 6, 7])
        );
        assert_eq!(seqs(committed_tail(&fresh, 7, 6, 10)), Some(vec![6, 7]));
        assert_eq!(seqs(committed_tail(&fresh, 7, 5, 2)), Some(vec![5, 6]));
        // Before them, past them, or not the log's tail: read the log.
        assert_eq!(seqs(committed_tail(&fresh, 7, 3, 10)), None);
        assert_eq!(seqs(committed_tail(&fresh, 7, 8, 10)), None);
        assert_eq!(seqs(committed_tail(&fresh, 8, 5, 10)), None);
        assert_eq!(seqs(committed_tail(&events(&[4, 6, 7]), 7, 6, 10)), None);
        assert_eq!(seqs(committed_tail(&[], 7, 7, 10)), None);
    }
}
