//! One client connection: its socket, input and output buffers, parse progress,
//! session settings, and the readiness interest its state calls for.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpStream;

use crate::config::{Limits, MAX_PENDING_OUTPUT_BYTES, PubSubLimits, READ_BUDGET_BYTES};
use crate::protocol::RequestParser;

/// Bytes asked of the kernel per `read` (the size of the reactor's scratch buffer).
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Buffer capacity an empty connection keeps; more is released.
const IDLE_INPUT_CAPACITY_BYTES: usize = 4 * 1024;
/// Output capacity an empty connection keeps; more is released after a flush.
const IDLE_OUTPUT_CAPACITY_BYTES: usize = 64 * 1024;
/// Reads of unread input drained before a close (bounded: a peer that keeps
/// sending cannot hold the loop).
const LINGER_DRAIN_READS: usize = 16;
/// Plaintext handed to a TLS session per write (about one TLS record).
const TLS_PLAINTEXT_CHUNK_BYTES: usize = 16 * 1024;
/// Output already written that is worth moving out of the buffer's way.
const COMPACT_OUTPUT_BYTES: usize = 64 * 1024;

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

/// Per-client settings that commands change.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client's id (CLIENT ID), unique for the process.
    pub id: u64,
    /// Replies in RESP3 (after `HELLO 3`).
    pub resp3: bool,
    /// CLIENT SETNAME.
    pub name: Option<String>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<String>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<String>,
    /// When the connection was accepted.
    pub since: Instant,
    /// When the last request arrived.
    pub last_active: Instant,
    /// The last command run, lowercase (`NULL` before the first).
    pub last_cmd: &'static str,
    /// The subcommand it ran, lowercase, for the commands CLIENT LIST names with
    /// theirs (`client|list`).
    pub last_sub: Option<String>,
    /// Subscribed channels, in subscription order.
    pub channels: Vec<Vec<u8>>,
    /// Subscribed patterns, in subscription order.
    pub patterns: Vec<Vec<u8>>,
    /// The blocking command at the front of the input, while it waits.
    pub block: Option<BlockState>,
    /// Authenticated (always true when no password is configured).
    pub authenticated: bool,
}

/// A blocking command's wait, kept across its re-executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockState {
    /// When it gives up; `None` waits forever.
    pub deadline: Option<Instant>,
    /// The sequence number it waits to see exceeded (`$` resolved at first run).
    pub after: i64,
}

impl Session {
    /// A fresh session for client `id`: RESP2, unnamed, authenticated (the reactor
    /// clears that when a password is configured).
    pub fn new(id: u64) -> Session {
        let now = Instant::now();
        Session {
            id,
            resp3: false,
            name: None,
            lib_name: None,
            lib_ver: None,
            since: now,
            last_active: now,
            last_cmd: "NULL",
            last_sub: None,
            channels: Vec::new(),
            patterns: Vec::new(),
            block: None,
            authenticated: true,
        }
    }

    /// Channels plus patterns: the count Redis reports in (un)subscribe replies.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// What the current tick did on this connection, so the replies that depended on
/// storage can be replaced if the tick's commit fails.
#[derive(Debug, Clone, Copy)]
pub struct TickMark {
    /// Length of the output before the tick's first reply.
    pub out_len: usize,
    /// Whether any request of the tick read or wrote storage.
    pub used_storage: bool,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our local address.
    pub local: Option<SocketAddr>,
    /// Bytes read and not yet consumed, from `rhead` on.
    pub rbuf: Vec<u8>,
    /// Start of the unconsumed input in `rbuf`.
    pub rhead: usize,
    /// Progress through the frame at `rhead`.
    pub parser: RequestParser,
    /// Replies not yet written, from `wpos` on.
    pub wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    pub wpos: usize,
    /// Life phase.
    pub phase: Phase,
    /// Client settings.
    pub session: Session,
    /// Interest registered with the poll.
    pub registered: Interest,
    /// In this tick's work list.
    pub queued: bool,
    /// Input may be waiting in the socket (a read stopped at its budget or was
    /// skipped under backpressure): read again without waiting for an event.
    pub more_input: bool,
    /// The poll reported the peer's half-close or a socket error. Until then a
    /// short read proves the socket drained (edge-triggered readiness reports
    /// whatever arrives after it); from then on reads go on until `WouldBlock` or
    /// end of stream, since no further event will announce the end.
    pub read_closed: bool,
    /// What the current tick did here.
    pub tick: Option<TickMark>,
    /// Per request of the current tick: where its reply starts in `wbuf`, and
    /// whether it touched storage. Kept (cleared) across ticks to reuse its memory.
    pub tick_replies: Vec<(usize, bool)>,
    /// Since when a subscriber's unsent output has been over the soft limit.
    pub over_soft_limit_since: Option<Instant>,
    /// Waiting in a blocking command (XREAD BLOCK): nothing more is read or run
    /// until the reactor completes it.
    pub blocked: bool,
    /// HTTP state, for connections accepted on the HTTP port (`None`: RESP).
    pub http: Option<crate::http::HttpState>,
    /// The TLS session, for connections accepted on a TLS port.
    pub tls: Option<Box<rustls::ServerConnection>>,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket would block: everything available was read.
    Drained,
    /// The per-tick budget ran out; more may be waiting.
    Budget,
    /// The peer closed its side.
    Eof,
}

impl Conn {
    /// A connection for an accepted socket.
    pub fn new(stream: TcpStream, peer: SocketAddr, id: u64, limits: Limits) -> Self {
        let local = stream.local_addr().ok();
        Conn {
            stream,
            peer,
            local,
            rbuf: Vec::new(),
            rhead: 0,
            parser: RequestParser::new(limits),
            wbuf: Vec::new(),
            wpos: 0,
            phase: Phase::Open,
            session: Session::new(id),
            over_soft_limit_since: None,
            blocked: false,
            http: None,
            tls: None,
            registered: Interest::READABLE,
            queued: false,
            more_input: false,
            read_closed: false,
            tick: None,
            tick_replies: Vec::new(),
        }
    }

    /// Reads until the socket is drained, the peer closes, or the tick's budget is
    /// spent. Returns how it ended and the bytes read.
    ///
    /// A read that fills less than `scratch` took everything the kernel held, so it
    /// ends the loop as `Drained` without the extra `read` that would only say
    /// `WouldBlock`: bytes that arrive later raise a new readiness event. Once the
    /// poll has reported the peer's half-close (`read_closed`), reads go on to the
    /// end of stream, which no later event would announce.
    pub fn read(&mut self, scratch: &mut [u8]) -> io::Result<(ReadEnd, usize)> {
        // Drop consumed input first so the buffer holds at most one partial frame
        // plus what this read brings.
        if self.rhead > 0 {
            self.rbuf.drain(..self.rhead);
            self.rhead = 0;
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > IDLE_INPUT_CAPACITY_BYTES {
            // A burst is over: give its memory back (idle connections stay small).
            self.rbuf = Vec::new();
        }
        if self.tls.is_some() {
            return self.read_tls();
        }
        let mut total = 0;
        loop {
            if total >= READ_BUDGET_BYTES {
                return Ok((ReadEnd::Budget, total));
            }
            // Reads land in the reactor's scratch buffer and only the bytes that
            // came are kept, so a connection's buffer is sized by its traffic.
            match self.stream.read(scratch) {
                Ok(0) => return Ok((ReadEnd::Eof, total)),
                Ok(n) => {
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    total += n;
                    if n < scratch.len() && !self.read_closed {
                        return Ok((ReadEnd::Drained, total));
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok((ReadEnd::Drained, total)),
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                },
            }
        }
    }

    /// `read` for a TLS connection: records from the socket into the session, the
    /// plaintext they carry into the input buffer. A TLS error queues its alert
    /// (sent by the next flush) and fails the read.
    fn read_tls(&mut self) -> io::Result<(ReadEnd, usize)> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok((ReadEnd::Drained, 0));
        };
        let mut total = 0;
        loop {
            if total >= READ_BUDGET_BYTES {
                return Ok((ReadEnd::Budget, total));
            }
            let eof = match tls.read_tls(&mut self.stream) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((ReadEnd::Drained, total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let state = tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let plain = state.plaintext_bytes_to_read();
            if plain > 0 {
                let len = self.rbuf.len();
                self.rbuf.resize(len + plain, 0);
                let n = tls.reader().read(&mut self.rbuf[len..])?;
                self.rbuf.truncate(len + n);
                total += n;
            }
            if eof || state.peer_has_closed() {
                return Ok((ReadEnd::Eof, total));
            }
        }
    }

    /// Writes pending output until done or the socket would block. Returns the
    /// bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        if let Some(tls) = self.tls.as_mut() {
            // Plaintext goes into the session only once its earlier records are on
            // the wire, so unsent output stays in `wbuf`, where the limits see it.
            loop {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.compact_output();
                            return Ok(total);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if self.wpos == self.wbuf.len() {
                    break;
                }
                let end = self.wbuf.len().min(self.wpos + TLS_PLAINTEXT_CHUNK_BYTES);
                let n = tls.writer().write(&self.wbuf[self.wpos..end])?;
                self.wpos += n;
                total += n;
            }
        } else {
            while self.wpos < self.wbuf.len() {
                match self.stream.write(&self.wbuf[self.wpos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.wpos += n;
                        total += n;
                    }
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e),
                    },
                }
            }
        }
        self.compact_output();
        Ok(total)
    }

    fn compact_output(&mut self) {
        if self.wpos == self.wbuf.len() {
            if self.wbuf.capacity() > IDLE_OUTPUT_CAPACITY_BYTES {
                self.wbuf = Vec::new();
            }
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos >= COMPACT_OUTPUT_BYTES {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
    }

    /// True when TLS records (handshake messages, alerts, encrypted replies) wait
    /// to be written.
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Prepares the socket for closing so the last reply survives: FIN after the
    /// written bytes, and the peer's unread input drained (closing over unread input
    /// makes the kernel send a reset, which can destroy a reply still in flight,
    /// such as a 413 to a client still sending its body).
    pub fn linger_close(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut scratch = [0u8; 4096];
        for _ in 0..LINGER_DRAIN_READS {
            match self.stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Reply bytes not yet written.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
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

    /// True when the peer must read before more requests run.
    pub fn backpressured(&self) -> bool {
        self.pending_output() > MAX_PENDING_OUTPUT_BYTES
    }

    /// True when buffered input may hold a request to run.
    pub fn has_input(&self) -> bool {
        self.rhead < self.rbuf.len()
    }

    /// The interest this connection's state calls for.
    pub fn interest(&self) -> Interest {
        if self.pending_output() > 0 || self.tls_wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// Starts the tick's bookkeeping on first use this tick.
    pub fn mark_tick(&mut self) -> &mut TickMark {
        let out_len = self.wbuf.len();
        self.tick_replies.clear();
        self.tick.get_or_insert(TickMark {
            out_len,
            used_storage: false,
        })
    }
}
