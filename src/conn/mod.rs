//! One client connection, as a state machine: its socket, input and output
//! buffers, what it speaks (RESP with its parse progress, or HTTP), its session,
//! whether it waits in a blocking command, and the readiness interest its state
//! calls for.
//!
//! The reactor drives it through methods named for what happens to it: it is
//! queued and read, the tick touches it and runs its requests (each reply
//! recorded with whether it used storage), it blocks and is woken or times out, a
//! failed commit rolls its tick back, it finishes (closes once flushed) or is
//! aborted. Its fields are private; each fact lives in one place here.
//!
//! [`outbound`] is the other direction: the bytes of a connection this process
//! opens (to NATS, to a webhook endpoint).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::cmd::Outcome;
use crate::config::{Limits, MAX_PENDING_OUTPUT_BYTES, PubSubLimits};
use crate::http::sse::SseState;
use crate::http::{HttpError, HttpState, REQUEST_TIMEOUT, Request};
use crate::protocol::{Args, Parsed, ProtocolError, Reply, RequestParser};
use crate::session::Session;

mod held;
mod io;
pub mod outbound;
mod replies;

use self::held::HeldReplies;
pub use self::io::ReadEnd;
use self::replies::TickReplies;

/// Bytes asked of the kernel per `read` (the size of the reactor's scratch buffer).
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving requests.
    Open,
    /// Reads no more requests; closes once its output is flushed (QUIT, protocol
    /// error, peer half-close).
    Closing,
    /// Done: the reactor removes it at the end of the tick.
    Closed,
}

/// What the connection speaks, with that protocol's own state.
#[derive(Debug)]
enum Speaks {
    /// RESP (and inline lines): progress through the frame at the input's front.
    Resp(RequestParser),
    /// HTTP/1.1, accepted on the HTTP port.
    Http(HttpState),
}

/// A blocking command's wait (XREAD/XREADGROUP ... BLOCK). The command stays at
/// the front of the input while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Not waiting.
    None,
    /// Parked: nothing more is read or run until a commit wakes it or its
    /// deadline passes.
    Parked {
        /// Wake when the committed log grows past this sequence number.
        after: i64,
        /// When it gives up with a nil reply; `None` waits forever.
        deadline: Option<Instant>,
        /// Bytes the command takes at the front of the input.
        consumed: usize,
    },
    /// Woken by a commit: the command runs again, with the `after` its first run
    /// resolved, and blocks again until the same deadline if it still finds
    /// nothing.
    Woken {
        after: i64,
        deadline: Option<Instant>,
    },
}

/// The request at the front of a RESP connection's input, lent to the reactor to
/// run; `Conn::request_done` then records what became of it.
pub struct Running<'c> {
    /// Its arguments (the command name first).
    pub args: Args<'c>,
    /// The reply encoder over the connection's output.
    pub out: Reply<'c>,
    /// The client's session.
    pub session: &'c mut Session,
    /// For a woken blocking command, the `after` its first run resolved.
    pub woken_after: Option<i64>,
}

/// The front of a RESP connection's input.
pub enum Next<'c> {
    /// No request to run: input incomplete or empty, or the connection is not
    /// open, blocked, or backpressured.
    Nothing,
    /// A request to run.
    Request(Running<'c>),
    /// The input broke the protocol: the error is the reply, and the connection
    /// is closing.
    ProtocolError(ProtocolError),
}

/// The next HTTP request on a connection.
#[derive(Debug)]
pub enum NextHttp {
    /// Nothing to answer now.
    Nothing,
    /// A complete request, consumed from the input.
    Request(Request),
    /// A request that cannot be served: answer its status and close.
    Failed(HttpError),
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Bytes read and not yet consumed, from `rhead` on.
    rbuf: Vec<u8>,
    /// Start of the unconsumed input in `rbuf`.
    rhead: usize,
    /// Replies not yet written, from `wpos` on.
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    wpos: usize,
    speaks: Speaks,
    phase: Phase,
    session: Session,
    block: Block,
    /// The current tick's replies.
    tick: TickReplies,
    /// Write replies waiting for JetStream (`--durability replicated`): the
    /// output is flushed up to the first of them.
    held: HeldReplies,
    /// The request lent out by `next_request`: the input it takes and where its
    /// reply starts.
    front: (usize, usize),
    /// Interest registered with the poll.
    registered: Interest,
    /// In the reactor's work list for this or the next tick.
    queued: bool,
    /// Input may be waiting in the socket (a read stopped at its budget or was
    /// skipped under backpressure): read again without waiting for an event.
    more_input: bool,
    /// The poll reported the peer's half-close or a socket error. Until then a
    /// short read proves the socket drained (edge-triggered readiness reports
    /// whatever arrives after it); from then on reads go on until `WouldBlock` or
    /// end of stream, since no further event will announce the end.
    read_closed: bool,
    /// Since when a subscriber's unsent output has been over the soft limit.
    over_soft_limit_since: Option<Instant>,
    /// The TLS session, for connections accepted on a TLS port.
    tls: Option<Box<rustls::ServerConnection>>,
}

impl Conn {
    /// A RESP connection for an accepted socket, registered for reading.
    pub fn new(stream: TcpStream, peer: SocketAddr, id: u64, limits: Limits) -> Self {
        let local = stream.local_addr().ok();
        Conn {
            stream,
            peer,
            local,
            rbuf: Vec::new(),
            rhead: 0,
            wbuf: Vec::new(),
            wpos: 0,
            speaks: Speaks::Resp(RequestParser::new(limits)),
            phase: Phase::Open,
            session: Session::new(id),
            block: Block::None,
            tick: TickReplies::default(),
            held: HeldReplies::default(),
            front: (0, 0),
            registered: Interest::READABLE,
            queued: false,
            more_input: false,
            read_closed: false,
            over_soft_limit_since: None,
            tls: None,
        }
    }

    /// Makes it an HTTP connection (accepted on the HTTP port).
    pub fn speak_http(&mut self) {
        self.speaks = Speaks::Http(HttpState::default());
    }

    /// Puts a TLS session between the socket and the buffers.
    pub fn use_tls(&mut self, tls: rustls::ServerConnection) {
        self.tls = Some(Box::new(tls));
    }

    /// Requires AUTH before commands run (a password is configured).
    pub fn require_auth(&mut self) {
        self.session.authenticated = false;
        self.sync_auth();
    }

    /// The client's id (CLIENT ID).
    pub fn id(&self) -> u64 {
        self.session.id
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Our address on this connection.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The client's session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The client's session, for the request context of an HTTP route.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// True for connections accepted on an HTTP port.
    pub fn is_http(&self) -> bool {
        matches!(self.speaks, Speaks::Http(_))
    }

    // ---- life ----------------------------------------------------------------

    /// Serving requests.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Done; removed at the end of the tick.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Stops reading requests; closes once its output is flushed.
    pub fn finish(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Closing;
        }
    }

    /// Closes without flushing what is left (an I/O error, a limit).
    pub fn abort(&mut self) {
        self.phase = Phase::Closed;
    }

    // ---- scheduling ----------------------------------------------------------

    /// Marks it for the reactor's work list; false when it already is there.
    pub fn enqueue(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Takes it off the work list as the tick serves it.
    pub fn dequeue(&mut self) {
        self.queued = false;
    }

    /// The poll reported the peer's half-close or an error.
    pub fn note_read_closed(&mut self) {
        self.read_closed = true;
    }

    /// Input may wait in the socket that no event will announce.
    pub fn has_more_input(&self) -> bool {
        self.more_input
    }

    /// Leaves input in the socket for later (blocked or backpressured).
    pub fn defer_input(&mut self) {
        self.more_input = true;
    }

    /// Reads what the socket holds, up to the tick's budget. Returns how the read
    /// ended and the bytes read.
    pub fn read(&mut self, scratch: &mut [u8]) -> std::io::Result<(ReadEnd, usize)> {
        let read = self.fill(scratch)?;
        self.more_input = read.0 == ReadEnd::Budget;
        Ok(read)
    }

    /// Input bytes received and not yet consumed by a complete request.
    pub fn unparsed_input(&self) -> usize {
        self.rbuf.len() - self.rhead
    }

    /// True when buffered input may hold a request to run.
    pub fn has_input(&self) -> bool {
        self.rhead < self.rbuf.len()
    }

    // ---- output --------------------------------------------------------------

    /// Reply bytes not yet written.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// True when the peer must read before more requests run.
    pub fn backpressured(&self) -> bool {
        self.pending_output() > MAX_PENDING_OUTPUT_BYTES
    }

    /// True when there is something to write (replies not held back, or TLS
    /// records).
    pub fn wants_write(&self) -> bool {
        self.held.limit(self.wbuf.len()) > self.wpos || self.tls_wants_write()
    }

    /// A RESP encoder over the output, for what is written outside a request's
    /// reply: pushes, timeouts, CLIENT LIST.
    pub fn out(&mut self) -> Reply<'_> {
        Reply::new(&mut self.wbuf, self.session.resp3)
    }

    /// The raw output, for event-stream frames and heartbeats.
    pub fn out_bytes(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// True when a subscriber's unsent pushes broke the pub/sub output limits:
    /// over the hard limit, or over the soft limit for longer than allowed.
    pub fn pubsub_output_exceeded(&mut self, limits: &PubSubLimits, now: Instant) -> bool {
        let pending = self.pending_output();
        if pending > limits.hard_bytes {
            return true;
        }
        if pending <= limits.soft_bytes {
            self.over_soft_limit_since = None;
            return false;
        }
        let since = *self.over_soft_limit_since.get_or_insert(now);
        now.duration_since(since) >= limits.soft_time
    }

    /// Registers the interest its state calls for, when that changed.
    pub fn update_interest(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        let want = if self.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if want != self.registered {
            registry.reregister(&mut self.stream, token, want)?;
            self.registered = want;
        }
        Ok(())
    }

    /// Registers the socket with the poll, for reading.
    pub fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        registry.register(&mut self.stream, token, self.registered)
    }

    /// Takes the socket out of the poll.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    // ---- the tick --------------------------------------------------------------

    /// The tick touched it (ran a request or wrote to it); false when it already
    /// had this tick, so the reactor lists it once.
    pub fn touch(&mut self) -> bool {
        self.tick.begin()
    }

    /// The tick is over: its replies are final.
    pub fn end_tick(&mut self) {
        self.tick.end();
    }

    /// Parses the request at the front of the input and lends it out to run.
    /// `request_done` must follow a `Next::Request`.
    pub fn next_request(&mut self) -> Next<'_> {
        if self.phase != Phase::Open || matches!(self.block, Block::Parked { .. }) {
            return Next::Nothing;
        }
        let Speaks::Resp(parser) = &mut self.speaks else {
            return Next::Nothing;
        };
        loop {
            if self.rhead >= self.rbuf.len() {
                return Next::Nothing;
            }
            if self.wbuf.len() - self.wpos > MAX_PENDING_OUTPUT_BYTES {
                self.more_input = true;
                return Next::Nothing;
            }
            let input = &self.rbuf[self.rhead..];
            match parser.parse(input) {
                Ok(Parsed::Incomplete) => return Next::Nothing,
                Ok(Parsed::Empty { consumed }) => self.rhead += consumed,
                Ok(Parsed::Request { consumed }) => {
                    self.front = (consumed, self.wbuf.len());
                    let woken_after = match self.block {
                        Block::Woken { after, .. } => Some(after),
                        _ => None,
                    };
                    return Next::Request(Running {
                        args: parser.args(input),
                        out: Reply::new(&mut self.wbuf, self.session.resp3),
                        session: &mut self.session,
                        woken_after,
                    });
                }
                Err(e) => {
                    let reply_start = self.wbuf.len();
                    Reply::new(&mut self.wbuf, self.session.resp3)
                        .error(&format!("ERR Protocol error: {e}"));
                    self.tick.record(reply_start, false);
                    self.phase = Phase::Closing;
                    return Next::ProtocolError(e);
                }
            }
        }
    }

    /// Records what became of the request `next_request` lent out: its reply is
    /// one block of the tick (tied to the commit when it used storage). A `Block`
    /// outcome parks the connection with the command left in place (until the
    /// deadline its first run set, when it was woken); anything else consumes it.
    pub fn request_done(&mut self, outcome: &Outcome, used_storage: bool) {
        let (consumed, reply_start) = self.front;
        self.tick.record(reply_start, used_storage);
        if let Outcome::Block(wait) = outcome {
            let deadline = match self.block {
                Block::Woken { deadline, .. } => deadline,
                _ => wait.timeout.map(|t| Instant::now() + t),
            };
            self.block = Block::Parked {
                after: wait.after,
                deadline,
                consumed,
            };
        } else {
            if self.block != Block::None {
                self.block = Block::None;
            }
            self.rhead += consumed;
        }
        if let Speaks::Resp(parser) = &mut self.speaks {
            parser.set_unauthenticated(!self.session.authenticated);
        }
    }

    /// The next complete HTTP request, consumed from the input. Starts the
    /// request's deadline when only part of it has arrived, clears it when none is
    /// pending.
    pub fn next_http_request(&mut self, now: Instant) -> NextHttp {
        let has_input = self.has_input();
        let backpressured = self.backpressured();
        let Speaks::Http(http) = &mut self.speaks else {
            return NextHttp::Nothing;
        };
        if self.phase != Phase::Open || http.sse.is_some() {
            return NextHttp::Nothing;
        }
        if !has_input {
            http.deadline = None;
            return NextHttp::Nothing;
        }
        if backpressured {
            self.more_input = true;
            return NextHttp::Nothing;
        }
        match crate::http::parse_request(&self.rbuf[self.rhead..]) {
            Ok(Some(req)) => {
                self.rhead += req.len;
                self.session.last_active = now;
                http.deadline = None;
                NextHttp::Request(req)
            }
            Ok(None) => {
                http.deadline.get_or_insert(now + REQUEST_TIMEOUT);
                NextHttp::Nothing
            }
            Err(e) => NextHttp::Failed(e),
        }
    }

    /// Writes one reply with `write`, recorded as a block of the tick that used
    /// storage or not (HTTP responses; RESP replies go through `run_request`).
    pub fn reply(&mut self, used_storage: bool, write: impl FnOnce(&mut Vec<u8>)) {
        self.tick.record(self.wbuf.len(), used_storage);
        write(&mut self.wbuf);
    }

    /// Rewrites the tick's replies after its commit failed: those that used
    /// storage become `-<error>` (RESP) or a 503 that closes the connection
    /// (HTTP); the others stay. A command parked this tick got its error: it is
    /// consumed and the connection goes on. Returns true when the connection must
    /// be served again (it was parked).
    pub fn roll_back_tick(&mut self, error: &str) -> bool {
        self.held.forget_uncommitted();
        let resp3 = self.session.resp3;
        let is_http = self.is_http();
        let mut closes = false;
        let changed = self.tick.roll_back(&mut self.wbuf, |out| {
            if is_http {
                // Responses after it may have said keep-alive; this one closes, so
                // nothing after it is read as sent.
                crate::http::Response::error(503, error.strip_prefix("ERR ").unwrap_or(error))
                    .write(out, false, false);
                closes = true;
                false
            } else {
                Reply::new(out, resp3).error(error);
                true
            }
        });
        if closes {
            self.phase = Phase::Closing;
        }
        if changed && let Block::Parked { consumed, .. } = self.block {
            self.rhead += consumed;
            self.block = Block::None;
            return true;
        }
        false
    }

    // ---- replicated writes (`--durability replicated`) ----------------------------

    /// Holds the reply just recorded (a write whose events JetStream must
    /// acknowledge first); `keep_alive` for an HTTP response, `None` for RESP.
    pub fn hold_reply(&mut self, keep_alive: Option<bool>) {
        if let Some(start) = self.tick.last_start() {
            self.held.hold(start, self.wbuf.len(), keep_alive);
        }
    }

    /// The tick committed with `seq` as its last event; true when it held a
    /// reply here.
    pub fn commit_held(&mut self, seq: i64) -> bool {
        self.held.commit(seq)
    }

    /// Lets the replies of the ticks up to `confirmed` go; true when one did.
    pub fn release_held(&mut self, confirmed: i64) -> bool {
        self.held.release(confirmed)
    }

    /// Rewrites the held replies of the ticks up to `seq` as `-<error>` (HTTP: a
    /// 503 with the error as JSON); returns how many.
    pub fn fail_held(&mut self, seq: i64, error: &str) -> usize {
        let resp3 = self.session.resp3;
        self.held
            .fail(seq, &mut self.wbuf, |out, keep_alive| match keep_alive {
                Some(keep_alive) => {
                    crate::http::Response::error(503, error).write(out, keep_alive, false)
                }
                None => Reply::new(out, resp3).error(error),
            })
    }

    // ---- blocking commands -----------------------------------------------------

    /// Parked in a blocking command.
    pub fn is_blocked(&self) -> bool {
        matches!(self.block, Block::Parked { .. })
    }

    /// When the parked command gives up, if it does.
    pub fn block_deadline(&self) -> Option<Instant> {
        match self.block {
            Block::Parked { deadline, .. } => deadline,
            _ => None,
        }
    }

    /// Wakes a parked command when the log grew past what it waits for, so it runs
    /// again. Returns true when it woke.
    pub fn wake(&mut self, last_seq: i64) -> bool {
        match self.block {
            Block::Parked {
                after, deadline, ..
            } if after < last_seq => {
                self.block = Block::Woken { after, deadline };
                true
            }
            _ => false,
        }
    }

    /// Answers a parked command whose deadline passed with a nil array and
    /// consumes it. Returns true when it did.
    pub fn time_out(&mut self, now: Instant) -> bool {
        match self.block {
            Block::Parked {
                deadline: Some(d),
                consumed,
                ..
            } if now >= d => {
                self.rhead += consumed;
                self.block = Block::None;
                self.out().null_array();
                true
            }
            _ => false,
        }
    }

    // ---- authentication ----------------------------------------------------------

    fn sync_auth(&mut self) {
        if let Speaks::Resp(parser) = &mut self.speaks {
            parser.set_unauthenticated(!self.session.authenticated);
        }
    }

    // ---- event streams (HTTP) -----------------------------------------------------

    /// Turns an HTTP connection into an event stream that sends from seq `from`.
    pub fn start_stream(&mut self, from: i64, now: Instant) {
        if let Speaks::Http(http) = &mut self.speaks {
            http.sse = Some(SseState {
                next_seq: from,
                last_write: now,
            });
        }
    }

    /// The event stream's position, for a connection that became one.
    pub fn stream_state(&self) -> Option<SseState> {
        match &self.speaks {
            Speaks::Http(http) => http.sse,
            Speaks::Resp(_) => None,
        }
    }

    /// True for an event stream.
    pub fn is_streaming(&self) -> bool {
        self.stream_state().is_some()
    }

    /// The stream sent up to `next_seq` (exclusive); `wrote` when it wrote.
    pub fn stream_advanced(&mut self, next_seq: i64, wrote: Option<Instant>) {
        if let Speaks::Http(HttpState { sse: Some(s), .. }) = &mut self.speaks {
            s.next_seq = next_seq;
            if let Some(at) = wrote {
                s.last_write = at;
            }
        }
    }

    /// Writes a heartbeat comment on an event stream.
    pub fn stream_heartbeat(&mut self, now: Instant) {
        if let Speaks::Http(HttpState { sse: Some(s), .. }) = &mut self.speaks {
            crate::http::sse::write_heartbeat(&mut self.wbuf);
            s.last_write = now;
        }
    }

    /// True when the stream has been silent for `idle`.
    pub fn stream_idle(&self, now: Instant, idle: Duration) -> bool {
        self.stream_state()
            .is_some_and(|s| now.duration_since(s.last_write) >= idle)
    }

    /// True when an HTTP request began arriving and missed its deadline.
    pub fn request_overdue(&self, now: Instant) -> bool {
        match &self.speaks {
            Speaks::Http(http) => http.deadline.is_some_and(|d| now >= d),
            Speaks::Resp(_) => false,
        }
    }

    /// Subscribed to channels or patterns, or streaming events: waits by design.
    pub fn is_subscriber(&self) -> bool {
        self.session.subscriptions() > 0 || self.is_streaming()
    }
}
