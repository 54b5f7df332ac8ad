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
//! close what finished; run due timers (accept back-off, checkpoints)
//! ```
//! Nothing a tick did leaves the process before its commit. A failing client only
//! ever closes itself: errors inside the loop are per connection.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::cmd::{self, ClientFilter, Ctx, Outcome};
use crate::config::{
    ACCEPT_BACKOFF, CHECKPOINT_COMMITS, CHECKPOINT_IDLE, CHECKPOINT_RETRY, Config, RETENTION_BATCH,
    RETENTION_INTERVAL, SHUTDOWN_FLUSH_TIMEOUT,
};
use crate::conn::BlockState;
use crate::conn::{Conn, Phase, ReadEnd};
use crate::error::Result;
use crate::events::{Event, Handlers};
use crate::metrics::Stats;
use crate::protocol::{Parsed, Reply};
use crate::pubsub::PubSub;
use crate::store::Store;

mod http;

use self::http::HTTP_SWEEP;

/// The RESP listener.
const LISTENER: Token = Token(usize::MAX - 1);
/// The HTTP listener.
const HTTP_LISTENER: Token = Token(usize::MAX - 4);
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

/// A connection parked in a blocking read (XREAD/XREADGROUP ... BLOCK).
///
/// The blocked command stays at the front of the connection's input. A commit
/// that may satisfy it lets the connection run again, which re-executes the
/// command inside that tick's transaction (so a group read records its pending
/// entries in the same group commit); a command that still finds nothing blocks
/// again until the same deadline. At the deadline the reactor replies nil and
/// consumes the command.
#[derive(Debug)]
struct Waiter {
    /// The connection's key, and its client id (a guard against key reuse).
    key: usize,
    client_id: u64,
    /// Wake when the committed log grows past this sequence number.
    after: i64,
    /// When it gives up with a nil reply; `None` waits forever.
    deadline: Option<Instant>,
    /// Bytes the blocked command takes at the front of the input.
    consumed: usize,
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

/// The server's single-threaded event loop and everything it owns.
pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    /// Connections streaming events (`GET /events`).
    sse_conns: Vec<usize>,
    /// A stream is behind the log with room to catch up: poll without waiting.
    sse_behind: bool,
    /// When HTTP deadlines and heartbeats are next checked.
    http_sweep_at: Option<Instant>,
    conns: Slab<Conn>,
    store: Store,
    config: Config,
    stats: Stats,
    handlers: Handlers,
    pubsub: PubSub,
    /// Blocked XREADs, in the order they blocked.
    waiters: Vec<Waiter>,
    /// Connections to serve this tick.
    work: Vec<usize>,
    /// Connections to serve next tick without waiting for an event.
    carry: Vec<usize>,
    /// Connections whose output grew this tick.
    touched: Vec<usize>,
    /// Connections to remove at the end of the tick.
    closing: Vec<usize>,
    /// Events of the tick, dispatched after its commit.
    tick_events: Vec<Event>,
    next_client_id: u64,
    accept_paused_until: Option<Instant>,
    /// When the last accept failure was logged at warn level (rate limit).
    accept_warned_at: Option<Instant>,
    /// When the next idle-time WAL checkpoint is due (pushed back by every commit).
    checkpoint_at: Option<Instant>,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<UnixStream>,
    stopping: bool,
    /// A durable handler has more events to catch up on: poll without waiting.
    durable_behind: bool,
    /// When the event log is trimmed next (with `--retain-events`).
    trim_at: Option<Instant>,
}

impl Reactor {
    /// Binds the listener, opens the store and prepares the loop.
    pub fn new(config: Config, handlers: Handlers, handle_signals: bool) -> Result<Reactor> {
        let poll = Poll::new()?;
        let addr = std::net::SocketAddr::new(config.bind, config.port);
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let http_listener = if config.http_port == 0 {
            None
        } else {
            let addr = std::net::SocketAddr::new(config.bind, config.http_port);
            let mut l = TcpListener::bind(addr)?;
            poll.registry()
                .register(&mut l, HTTP_LISTENER, Interest::READABLE)?;
            Some(l)
        };
        let store = Store::open(&config.db, config.durability, config.max_db_pages)?;
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
        let mut handlers = handlers;
        for h in &mut handlers.durable {
            h.offset = store.handler_offset(&h.name)?;
            log::info!(
                "durable handler '{}' resumes after event {}",
                h.name,
                h.offset
            );
        }
        let trim_at = config.retain_events.map(|_| Instant::now());
        // Handlers behind the log catch up from the first tick, events or not.
        let durable_behind = handlers
            .durable
            .iter()
            .any(|h| h.offset < store.committed_counts().last_seq);
        let port = listener.local_addr()?.port();
        // CONFIG GET port reports the port in use, also when 0 asked for any.
        let mut config = config;
        config.port = port;
        if let Some(l) = &http_listener {
            config.http_port = l.local_addr()?.port();
        }
        Ok(Reactor {
            poll,
            listener: Some(listener),
            http_listener,
            sse_conns: Vec::new(),
            sse_behind: false,
            http_sweep_at: None,
            conns: Slab::new(),
            store,
            config,
            stats: Stats::new(port),
            handlers,
            pubsub: PubSub::default(),
            waiters: Vec::new(),
            work: Vec::new(),
            carry: Vec::new(),
            touched: Vec::new(),
            closing: Vec::new(),
            tick_events: Vec::new(),
            next_client_id: 1,
            accept_paused_until: None,
            accept_warned_at: None,
            checkpoint_at: None,
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            signals,
            stopping: false,
            durable_behind,
            trim_at,
        })
    }

    /// The bound RESP address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The bound HTTP address, when the HTTP side is on.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
        &self.config
    }

    /// Runs ticks until shutdown.
    pub fn run(mut self) -> Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            self.work.append(&mut self.carry);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(false),
                    HTTP_LISTENER => self.accept(true),
                    WAKER => {
                        if self.shutdown_flag.load(Ordering::SeqCst) {
                            self.begin_stop("shutdown requested");
                        }
                    }
                    SIGNALS => {
                        self.drain_signals();
                        self.begin_stop("signal received");
                    }
                    Token(k) => self.ready(
                        k,
                        ev.is_writable(),
                        ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ),
                }
            }
            self.tick();
            self.run_timers();
            if self.stopping {
                self.finish();
                return Ok(());
            }
        }
    }

    /// One connection's readiness: flush committed output now, queue reads for the
    /// tick.
    fn ready(&mut self, k: usize, writable: bool, readable: bool) {
        let Some(conn) = self.conns.get_mut(k) else {
            return; // an event for a key closed earlier: ignore it
        };
        if conn.phase == Phase::Closed {
            return;
        }
        if writable && conn.pending_output() > 0 {
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
            && !conn.queued
        {
            conn.queued = true;
            self.work.push(k);
        }
    }

    /// Reads, parses and runs the requests of every queued connection, commits,
    /// then flushes.
    fn tick(&mut self) {
        let started = Instant::now();
        self.stats.tick_requests = 0;
        let mut work = std::mem::take(&mut self.work);
        for &k in &work {
            if let Some(conn) = self.conns.get_mut(k) {
                conn.queued = false;
            }
            self.serve(k);
        }
        work.clear();
        self.work = work;
        let requests = self.stats.tick_requests;
        self.commit();
        if !self.sse_conns.is_empty() {
            self.feed_sse();
        }
        self.flush_touched();
        self.run_durable_handlers();
        if requests > 0 {
            self.stats
                .tick_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Feeds each durable handler the committed events after its offset, a batch a
    /// tick, and stores how far it got. A panic stops that handler at the event
    /// that panicked and retries it after a back-off.
    fn run_durable_handlers(&mut self) {
        if self.handlers.durable.is_empty() {
            return;
        }
        let last = self.store.committed_counts().last_seq;
        let now = Instant::now();
        self.durable_behind = false;
        for h in &mut self.handlers.durable {
            if h.offset >= last || h.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            let rows = match self.store.events_between(
                h.offset.saturating_add(1),
                i64::MAX,
                DURABLE_BATCH,
                false,
            ) {
                Ok(rows) => rows,
                Err(e) => {
                    log::warn!("durable handler '{}': cannot read the log: {e}", h.name);
                    h.retry_at = Some(now + DURABLE_RETRY_MAX);
                    continue;
                }
            };
            let start = h.offset;
            for row in &rows {
                let event = Event::from_row(row);
                if crate::events::call_isolated(&mut h.callback, &event) {
                    h.offset = row.seq;
                    h.failures = 0;
                    h.retry_at = None;
                } else {
                    h.failures += 1;
                    let wait = (DURABLE_RETRY_MIN * 2u32.saturating_pow(h.failures.min(16) - 1))
                        .min(DURABLE_RETRY_MAX);
                    self.stats.handler_panics += 1;
                    log::error!(
                        "durable handler '{}' panicked on event {} (retry in {wait:?})",
                        h.name,
                        row.seq
                    );
                    h.retry_at = Some(now + wait);
                    break;
                }
            }
            // Events missing from the log (trimmed) are skipped over, not waited for.
            if rows.is_empty() {
                h.offset = last;
            }
            if h.offset != start
                && let Err(e) = self.store.set_handler_offset(&h.name, h.offset)
            {
                log::warn!("durable handler '{}': cannot store its offset: {e}", h.name);
            }
            if h.offset < last && h.retry_at.is_none() {
                self.durable_behind = true;
            }
        }
        self.stats.durable_offsets.clear();
        self.stats.durable_offsets.extend(
            self.handlers
                .durable
                .iter()
                .map(|h| (h.name.clone(), h.offset)),
        );
    }

    /// Flushes every connection whose output grew, then removes finished ones.
    fn flush_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for &k in &touched {
            if let Some(conn) = self.conns.get_mut(k) {
                conn.tick = None;
            }
            self.flush(k);
        }
        touched.clear();
        self.touched = touched;
        self.close_finished();
    }

    /// Reads what a connection sent and runs its complete requests.
    fn serve(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        let mut eof = false;
        if conn.blocked {
            // Input waits in the socket until the blocking command completes.
            conn.more_input = true;
            return;
        }
        if conn.backpressured() {
            // Come back when the peer has read (the writable event requeues it).
            conn.more_input = true;
        } else {
            match conn.read() {
                Ok((end, n)) => {
                    self.stats.net_input_bytes += n as u64;
                    conn.more_input = end == ReadEnd::Budget;
                    eof = end == ReadEnd::Eof;
                }
                Err(e) => {
                    log::debug!(
                        "conn={} peer={} reason=read error: {e}",
                        conn.session.id,
                        conn.peer
                    );
                    conn.phase = Phase::Closed;
                    self.closing.push(k);
                    return;
                }
            }
        }
        self.run_requests(k);
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if eof && conn.phase == Phase::Open {
            // The peer will send nothing more: answer what it sent, then close.
            log::debug!(
                "conn={} peer={} reason=peer closed",
                conn.session.id,
                conn.peer
            );
            conn.phase = Phase::Closing;
            self.note_touched(k);
        } else if conn.more_input && !conn.backpressured() && conn.phase == Phase::Open {
            conn.queued = true;
            self.carry.push(k);
        }
    }

    fn note_touched(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k)
            && conn.tick.is_none()
        {
            conn.mark_tick();
            self.touched.push(k);
        }
    }

    /// Parses and runs every complete request buffered on connection `k`.
    fn run_requests(&mut self, k: usize) {
        if self.conns.get(k).is_some_and(|c| c.http.is_some()) {
            self.run_http(k);
            return;
        }
        loop {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            if conn.phase != Phase::Open || conn.blocked || !conn.has_input() {
                return;
            }
            if conn.backpressured() {
                conn.more_input = true;
                return;
            }
            if conn.tick.is_none() {
                conn.mark_tick();
                self.touched.push(k);
            }
            let Conn {
                rbuf,
                rhead,
                parser,
                wbuf,
                session,
                tick,
                tick_replies,
                phase,
                peer,
                ..
            } = conn;
            let reply_start = wbuf.len();
            let input = &rbuf[*rhead..];
            let outcome = match parser.parse(input) {
                Ok(Parsed::Incomplete) => return,
                Ok(Parsed::Empty { consumed }) => {
                    *rhead += consumed;
                    Outcome::Continue
                }
                Ok(Parsed::Request { consumed }) => {
                    let args = parser.args(input);
                    session.last_active = Instant::now();
                    let mut used_storage = false;
                    let resp3 = session.resp3;
                    let mut ctx = Ctx::new(
                        Reply::new(wbuf, resp3),
                        session,
                        &mut self.store,
                        &mut used_storage,
                        &mut self.tick_events,
                        &self.config,
                        &mut self.stats,
                        &mut self.pubsub,
                        k,
                    );
                    let outcome = cmd::execute(&args, &mut ctx);
                    if let Outcome::Block(wait) = &outcome {
                        // Leave the command in place: it runs again when woken.
                        let deadline = match &session.block {
                            Some(b) => b.deadline,
                            None => wait.timeout.map(|t| Instant::now() + t),
                        };
                        session.block = Some(BlockState {
                            deadline,
                            after: wait.after,
                        });
                        self.waiters.push(Waiter {
                            key: k,
                            client_id: session.id,
                            after: wait.after,
                            deadline,
                            consumed,
                        });
                    } else {
                        session.block = None;
                        *rhead += consumed;
                    }
                    if let Some(mark) = tick {
                        mark.used_storage |= used_storage;
                    }
                    tick_replies.push((reply_start, used_storage));
                    self.stats.tick_requests += 1;
                    outcome
                }
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    log::debug!("conn={} peer={peer} reason=protocol error: {e}", session.id);
                    Reply::new(wbuf, session.resp3).error(&format!("ERR Protocol error: {e}"));
                    tick_replies.push((reply_start, false));
                    *phase = Phase::Closing;
                    return;
                }
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => {
                    conn.phase = Phase::Closing;
                    return;
                }
                Outcome::Drop => {
                    let now = Instant::now();
                    if self
                        .stats
                        .cross_protocol_logged_at
                        .is_none_or(|t| now.duration_since(t) >= CROSS_PROTOCOL_LOG_INTERVAL)
                    {
                        self.stats.cross_protocol_logged_at = Some(now);
                        log::warn!(
                            "conn={} peer={} reason=HTTP request on the RESP port \
                             (possible cross-protocol attack); connection dropped",
                            conn.session.id,
                            conn.peer
                        );
                    }
                    conn.phase = Phase::Closing;
                    return;
                }
                Outcome::ClientList(filter) => self.client_list(k, &filter),
                Outcome::Block(_) => {
                    conn.blocked = true;
                    return;
                }
            }
        }
    }

    /// Writes the CLIENT LIST (or CLIENT INFO) reply for connection `k`.
    fn client_list(&mut self, k: usize, filter: &ClientFilter) {
        let mut text = String::new();
        for (key, c) in self.conns.iter() {
            let wanted = match filter {
                ClientFilter::All => true,
                ClientFilter::This => key == k,
                ClientFilter::Ids(ids) => ids.contains(&c.session.id),
                ClientFilter::PubSub(subscribed) => (c.session.subscriptions() > 0) == *subscribed,
            };
            if wanted && c.phase != Phase::Closed {
                text.push_str(&cmd::describe_client(&c.session, Some(c.peer), c.local));
            }
        }
        if let Some(conn) = self.conns.get_mut(k) {
            let resp3 = conn.session.resp3;
            Reply::new(&mut conn.wbuf, resp3).verbatim(&text);
        }
    }

    /// Ends the tick's transaction; on success the tick's events go out, on failure
    /// every reply that depended on storage is replaced by the storage error.
    fn commit(&mut self) {
        let wrote = self.store.tick_has_writes();
        let started = Instant::now();
        match self.store.finish_tick() {
            Ok(()) => {
                self.stats.finish_tick(true);
                if wrote {
                    self.stats
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.stats
                        .requests_per_commit
                        .observe(self.stats.tick_requests as f64);
                    self.stats.commits += 1;
                    self.checkpoint_at = Some(Instant::now() + CHECKPOINT_IDLE);
                    log::trace!("commit in {:?}", started.elapsed());
                }
                let mut events = std::mem::take(&mut self.tick_events);
                for event in &events {
                    self.stats.events += 1;
                    self.stats.handler_panics += self.handlers.dispatch(event) as u64;
                    if !self.pubsub.is_empty() {
                        self.publish(event);
                    }
                }
                let woke = !events.is_empty() && !self.waiters.is_empty();
                events.clear();
                self.tick_events = events;
                if woke {
                    self.wake_readers();
                }
            }
            Err(e) => {
                self.stats.failed_commits += 1;
                self.stats.finish_tick(false);
                self.tick_events.clear();
                let reply = format!("ERR storage: {e}");
                for &k in &self.touched {
                    let Some(conn) = self.conns.get_mut(k) else {
                        continue;
                    };
                    let Some(mark) = conn.tick else { continue };
                    if !mark.used_storage {
                        continue;
                    }
                    // Replies that did not depend on storage stay (a SUBSCRIBE
                    // took effect and says so); the others become the error.
                    let tail = conn.wbuf.split_off(mark.out_len);
                    let resp3 = conn.session.resp3;
                    let is_http = conn.http.is_some();
                    for (i, &(start, storage)) in conn.tick_replies.iter().enumerate() {
                        if storage && is_http {
                            // Responses after it may have said keep-alive; this one
                            // closes, so nothing after it is read as sent.
                            crate::http::Response::error(503, &reply["ERR ".len()..]).write(
                                &mut conn.wbuf,
                                false,
                                false,
                            );
                            conn.phase = Phase::Closing;
                            break;
                        } else if storage {
                            Reply::new(&mut conn.wbuf, resp3).error(&reply);
                        } else {
                            let end = conn
                                .tick_replies
                                .get(i + 1)
                                .map_or(mark.out_len + tail.len(), |r| r.0);
                            conn.wbuf
                                .extend_from_slice(&tail[start - mark.out_len..end - mark.out_len]);
                        }
                    }
                    // A read that blocked this tick already got its error reply:
                    // consume it and let the connection go on.
                    if conn.blocked {
                        if let Some(i) = self.waiters.iter().position(|w| w.key == k) {
                            conn.rhead += self.waiters.swap_remove(i).consumed;
                        }
                        conn.blocked = false;
                        conn.session.block = None;
                        conn.queued = true;
                        self.carry.push(k);
                    }
                }
            }
        }
    }

    /// Lets the blocked readers that the last commit may satisfy run again.
    fn wake_readers(&mut self) {
        let last_seq = self.store.committed_counts().last_seq;
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            if w.after >= last_seq {
                self.waiters.push(w);
            } else {
                self.unblock(&w, None);
            }
        }
    }

    /// Unparks a blocked connection. With a timeout reply, the blocked command is
    /// answered and consumed; without, it runs again next tick.
    fn unblock(&mut self, w: &Waiter, timeout_reply: Option<fn(&mut Reply<'_>)>) {
        let Some(conn) = self.conns.get_mut(w.key) else {
            return;
        };
        if conn.session.id != w.client_id || !conn.blocked {
            return;
        }
        conn.blocked = false;
        if let Some(reply) = timeout_reply {
            conn.rhead += w.consumed;
            conn.session.block = None;
            reply(&mut Reply::new(&mut conn.wbuf, conn.session.resp3));
            self.note_touched(w.key);
        }
        if let Some(conn) = self.conns.get_mut(w.key)
            && conn.phase == Phase::Open
            && !conn.queued
        {
            conn.queued = true;
            self.carry.push(w.key);
        }
    }

    /// Pushes a committed event to its channel's subscribers and to the pattern
    /// subscribers it matches; drops subscribers past their output limits.
    fn publish(&mut self, event: &Event) {
        let channel = event.kind.as_str().as_bytes();
        let payload = event.to_json();
        let targets = self.pubsub.targets(channel);
        let mut deliveries: Vec<(usize, Option<Vec<u8>>)> =
            targets.direct.iter().map(|&k| (k, None)).collect();
        for (pattern, keys) in targets.patterns {
            deliveries.extend(keys.iter().map(|&k| (k, Some(pattern.to_vec()))));
        }
        let hard = self.config.pubsub_limits().hard_bytes;
        let memory_guard = hard
            .saturating_mul(2)
            .max(hard.saturating_add(PUBSUB_TICK_SLACK_BYTES));
        for (k, pattern) in deliveries {
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let mut out = Reply::new(&mut conn.wbuf, conn.session.resp3);
            match &pattern {
                None => {
                    out.push(3);
                    out.bulk(b"message");
                }
                Some(p) => {
                    out.push(4);
                    out.bulk(b"pmessage");
                    out.bulk(p);
                }
            }
            out.bulk(channel);
            out.bulk(payload.as_bytes());
            self.stats.pushes += 1;
            // The limits are judged after the flush, on what the peer did not take;
            // this only bounds memory within one tick.
            if conn.pending_output() > memory_guard {
                self.drop_slow_subscriber(k);
                continue;
            }
            self.note_touched(k);
        }
    }

    /// Disconnects a subscriber that fell behind its output limits.
    fn drop_slow_subscriber(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        log::warn!(
            "conn={} peer={} reason=subscriber output buffer limit ({} bytes unsent); \
             disconnected, it can resume from the durable log",
            conn.session.id,
            conn.peer,
            conn.pending_output()
        );
        self.stats.slow_subscriber_disconnects += 1;
        conn.phase = Phase::Closed;
        self.closing.push(k);
    }

    /// Writes what connection `k` has pending and updates its interest.
    fn flush(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.phase == Phase::Closed {
            return;
        }
        match conn.flush() {
            Ok(n) => self.stats.net_output_bytes += n as u64,
            Err(e) => {
                log::debug!(
                    "conn={} peer={} reason=write error: {e}",
                    conn.session.id,
                    conn.peer
                );
                conn.phase = Phase::Closed;
            }
        }
        if conn.phase == Phase::Closing && conn.pending_output() == 0 {
            conn.phase = Phase::Closed;
        }
        let streaming = conn.http.as_ref().is_some_and(|h| h.sse.is_some());
        if conn.phase == Phase::Open
            && (conn.session.subscriptions() > 0 || streaming)
            && conn.pubsub_output_exceeded(&self.config.pubsub_limits(), Instant::now())
        {
            self.drop_slow_subscriber(k);
            return;
        }
        if conn.phase == Phase::Closed {
            self.closing.push(k);
            return;
        }
        let want = conn.interest();
        if want != conn.registered {
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(k), want)
            {
                Ok(()) => conn.registered = want,
                Err(e) => {
                    log::debug!("conn={} reason=reregister failed: {e}", conn.session.id);
                    conn.phase = Phase::Closed;
                    self.closing.push(k);
                }
            }
        }
    }

    /// Removes the connections that finished this tick.
    fn close_finished(&mut self) {
        for k in self.closing.drain(..) {
            if self.conns.get(k).is_some_and(|c| c.phase == Phase::Closed) {
                let mut conn = self.conns.remove(k);
                let _ = self.poll.registry().deregister(&mut conn.stream);
                if conn.blocked {
                    self.waiters.retain(|w| w.key != k);
                }
                if conn.http.as_ref().is_some_and(|h| h.sse.is_some()) {
                    self.sse_conns.retain(|&s| s != k);
                }
                for ch in &conn.session.channels {
                    self.pubsub.unsubscribe(k, ch);
                }
                for p in &conn.session.patterns {
                    self.pubsub.punsubscribe(k, p);
                }
                self.stats.connected_clients -= 1;
                log::debug!("conn={} peer={} closed", conn.session.id, conn.peer);
            }
        }
    }

    /// Accepts until a listener would block or descriptors run out.
    fn accept(&mut self, http: bool) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let listener = if http {
                &self.http_listener
            } else {
                &self.listener
            };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    self.stats.connections_received += 1;
                    if self.conns.len() >= self.config.maxclients
                        || self.conns.vacant_key() >= MAX_CONN_TOKEN
                    {
                        self.stats.rejected_connections += 1;
                        log::warn!("peer={peer} reason=max number of clients reached");
                        // Best effort: a fresh socket's send buffer takes this at once.
                        let msg: &[u8] = if http {
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                              Content-Length: 42\r\nConnection: close\r\n\r\n\
                              {\"error\":\"max number of clients reached\"}"
                        } else {
                            b"-ERR max number of clients reached\r\n"
                        };
                        let _ = io::Write::write(&mut stream, msg);
                        continue;
                    }
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("peer={peer} reason=set TCP_NODELAY failed: {e}");
                    }
                    let k = self.conns.vacant_key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, Token(k), Interest::READABLE)
                    {
                        log::warn!("peer={peer} reason=register failed: {e}");
                        continue;
                    }
                    let id = self.next_client_id;
                    self.next_client_id += 1;
                    let mut conn = Conn::new(stream, peer, id, self.config.limits());
                    if http {
                        conn.http = Some(crate::http::HttpState::default());
                        self.stats.http_connections += 1;
                        self.http_sweep_at
                            .get_or_insert(Instant::now() + HTTP_SWEEP);
                    }
                    self.conns.insert(conn);
                    self.stats.connected_clients += 1;
                    log::debug!("conn={id} peer={peer} accepted");
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        if matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)) {
                            let now = Instant::now();
                            if self
                                .accept_warned_at
                                .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_INTERVAL)
                            {
                                log::warn!(
                                    "accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?} \
                                     at a time until descriptors free up"
                                );
                                self.accept_warned_at = Some(now);
                            }
                            self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                            return;
                        }
                        // The peer gave up before we got to it (ECONNABORTED and such).
                        log::debug!("accept failed: {e}");
                    }
                },
            }
        }
    }

    /// How long the next poll may wait: until the nearest timer, or not at all
    /// when connections have input left over from the last tick.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.carry.is_empty() || self.durable_behind || self.sse_behind {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let first_deadline = self.waiters.iter().filter_map(|w| w.deadline).min();
        let first_retry = self
            .handlers
            .durable
            .iter()
            .filter_map(|h| h.retry_at)
            .min();
        [
            self.accept_paused_until,
            self.checkpoint_at,
            first_deadline,
            first_retry,
            self.trim_at,
            self.http_sweep_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    /// Runs what is due: the end of an accept back-off, WAL checkpoints.
    fn run_timers(&mut self) {
        let now = Instant::now();
        if let Some(until) = self.accept_paused_until
            && now >= until
        {
            self.accept_paused_until = None;
            self.accept(false);
            self.accept(true);
        }
        if self
            .waiters
            .iter()
            .any(|w| w.deadline.is_some_and(|d| now >= d))
        {
            let (expired, waiting) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|w| w.deadline.is_some_and(|d| now >= d));
            self.waiters = waiting;
            let expired: Vec<Waiter> = expired;
            for w in &expired {
                self.unblock(w, Some(|out: &mut Reply<'_>| out.null_array()));
            }
            self.flush_touched();
        }
        if self.http_sweep_at.is_some_and(|t| now >= t) {
            self.sweep_http(now);
        }
        if self.trim_at.is_some_and(|t| now >= t) {
            self.trim_events(now);
        }
        let due = self.checkpoint_at.is_some_and(|t| now >= t);
        if due || self.store.commits_since_checkpoint() >= CHECKPOINT_COMMITS {
            self.checkpoint_at = if self.store.checkpoint() {
                None
            } else {
                Some(now + CHECKPOINT_RETRY)
            };
        }
    }

    /// Trims the event log to `--retain-events`, below every durable handler's
    /// offset; a full batch comes back at once for more.
    fn trim_events(&mut self, now: Instant) {
        let Some(retention) = self.config.retain_events else {
            self.trim_at = None;
            return;
        };
        let floor = self
            .handlers
            .durable
            .iter()
            .map(|h| h.offset)
            .min()
            .unwrap_or(i64::MAX);
        let before = retention
            .max_age
            .map(|a| crate::clock::now_ms() - i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
        match self
            .store
            .trim(retention.max_entries, before, floor, RETENTION_BATCH)
        {
            Ok(n) => {
                if n > 0 {
                    log::debug!("trimmed {n} events");
                    self.stats.trimmed_events += n as u64;
                }
                self.trim_at = Some(if n >= RETENTION_BATCH {
                    now
                } else {
                    now + RETENTION_INTERVAL
                });
            }
            Err(e) => {
                log::warn!("trimming the event log failed (will retry): {e}");
                self.trim_at = Some(now + RETENTION_INTERVAL);
            }
        }
    }

    fn drain_signals(&mut self) {
        if let Some(rx) = &mut self.signals {
            let mut buf = [0u8; 64];
            while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    /// Stops accepting; the current tick still finishes and commits.
    fn begin_stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        log::info!("{why}: shutting down ({} clients)", self.conns.len());
        self.stopping = true;
        for mut l in [self.listener.take(), self.http_listener.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    /// Flushes the last replies (for a bounded time), closes every connection,
    /// checkpoints.
    fn finish(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let pending: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.phase != Phase::Closed && c.pending_output() > 0)
                .map(|(k, _)| k)
                .collect();
            let now = Instant::now();
            if pending.is_empty() || now >= deadline {
                break;
            }
            for k in pending {
                self.flush(k);
            }
            self.close_finished();
            if let Err(e) = self.poll.poll(&mut events, Some(deadline - now))
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
        }
        for mut conn in self.conns.drain() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.stats.connected_clients = 0;
        let _ = self.store.checkpoint();
        log::info!("stopped");
    }
}
