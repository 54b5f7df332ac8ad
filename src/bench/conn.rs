//! One load-generator connection: its socket, the output not yet written, the read
//! buffer with the reply in progress, and the requests whose replies are still due.
//!
//! The connection does the socket I/O and the reply scanning; what a reply means
//! (latency, errors, fan-out) is the worker's business.
//!
//! With `--tls` a rustls session sits between the socket and the buffers, driven
//! without blocking as the server's connections drive theirs: records are read
//! until `WouldBlock` and decrypted, the plaintext drained into the read buffer;
//! requests go into the session's writer and its records out until `WouldBlock`.
//! The socket stays registered for WRITABLE (edge-triggered), so records the
//! session still wants to write leave at the next writable edge.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::ops::Range;

use mio::net::TcpStream;

use super::scan::{Outcome, ScanError, Scanner};
use super::workload::Kind;

/// Read buffer per connection; it grows (up to `MAX_REPLY_BYTES`) only for a reply
/// larger than this.
pub const READ_BUF_BYTES: usize = 64 * 1024;
/// Largest single reply the generator accepts.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Plaintext handed to a TLS session per write (about one TLS record), so requests
/// are encrypted no faster than the socket takes them.
pub const TLS_PLAINTEXT_CHUNK_BYTES: usize = 16 * 1024;

/// Requests whose replies are due, run-length encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// When they were sent (closed loop) or due (open loop), ns since the epoch.
    pub start_ns: u64,
    /// Their command.
    pub kind: Kind,
    /// A stamped REGISTER's serial number.
    pub serial: Option<u64>,
    /// How many (only unstamped requests are merged).
    pub count: u32,
}

/// What one read or write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Moved this many bytes.
    Moved(usize),
    /// Nothing more to do until the next readiness event (or, for writes, nothing
    /// left to write).
    Idle,
    /// The connection is done for, and why.
    Failed(String),
}

/// One connection of a load thread.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The TLS session over the socket (`--tls`).
    tls: Option<Box<rustls::ClientConnection>>,
    /// A subscriber only reads pushes.
    pub subscriber: bool,
    /// False once closed.
    pub open: bool,
    /// Requests encoded and not yet written.
    pub out: Vec<u8>,
    sent: usize,
    inp: Vec<u8>,
    filled: usize,
    /// Bytes of `inp` the scanner has consumed.
    scanned: usize,
    /// Where the reply in progress starts in `inp`.
    reply_start: usize,
    scanner: Scanner,
    pending: VecDeque<Pending>,
    /// Requests sent and not answered.
    pub in_flight: usize,
    /// Pushes of this run received (subscribers).
    pub stamped: u64,
}

impl Conn {
    /// A connection around `stream` (and its TLS session, if any), expecting up to
    /// `pipeline` batches in flight.
    pub fn new(
        stream: TcpStream,
        tls: Option<Box<rustls::ClientConnection>>,
        subscriber: bool,
        pipeline: usize,
    ) -> Conn {
        Conn {
            stream,
            tls,
            subscriber,
            open: true,
            out: Vec::with_capacity(READ_BUF_BYTES),
            sent: 0,
            inp: vec![0; READ_BUF_BYTES],
            filled: 0,
            scanned: 0,
            reply_start: 0,
            scanner: Scanner::new(),
            pending: VecDeque::with_capacity(pipeline),
            in_flight: 0,
            stamped: 0,
        }
    }

    /// Notes `count` requests just encoded into `out`, merged into the last entry
    /// when they share its send time and kind (a closed-loop pipeline of PINGs is
    /// one entry).
    pub fn expect(&mut self, start_ns: u64, kind: Kind, serial: Option<u64>, count: u32) {
        self.in_flight += count as usize;
        if serial.is_none()
            && let Some(last) = self.pending.back_mut()
            && last.start_ns == start_ns
            && last.kind == kind
            && last.serial.is_none()
        {
            last.count += count;
            return;
        }
        self.pending.push_back(Pending {
            start_ns,
            kind,
            serial,
            count,
        });
    }

    /// The request the next reply answers, taken off the queue.
    pub fn answered(&mut self) -> Option<Pending> {
        let p = self.pending.front_mut()?;
        let one = Pending { count: 1, ..*p };
        p.count -= 1;
        if p.count == 0 {
            self.pending.pop_front();
        }
        self.in_flight -= 1;
        Some(one)
    }

    /// Forgets every request in flight; returns how many there were.
    pub fn abandon(&mut self) -> usize {
        self.pending.clear();
        std::mem::take(&mut self.in_flight)
    }

    /// True while encoded requests (or TLS records) wait to be written.
    pub fn has_output(&self) -> bool {
        self.sent < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// One read into the buffer (growing it for a reply larger than it). `Moved`
    /// counts the reply bytes read (the plaintext, with TLS).
    pub fn read_some(&mut self) -> Io {
        if self.filled == self.inp.len() {
            if self.inp.len() >= MAX_REPLY_BYTES {
                return Io::Failed("a reply larger than the read limit".into());
            }
            let grown = (self.inp.len() * 2).min(MAX_REPLY_BYTES);
            self.inp.resize(grown, 0);
        }
        if self.tls.is_some() {
            return self.read_tls();
        }
        loop {
            match self.stream.read(&mut self.inp[self.filled..]) {
                Ok(0) => return Io::Failed("connection closed by the server".into()),
                Ok(n) => {
                    self.filled += n;
                    return Io::Moved(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::Idle,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Io::Failed(format!("read failed: {e}")),
            }
        }
    }

    /// `read_some` through the TLS session: plaintext it already holds first, else
    /// records from the socket until some plaintext comes out of them or the
    /// socket would block.
    fn read_tls(&mut self) -> Io {
        let Some(tls) = self.tls.as_mut() else {
            return Io::Idle;
        };
        loop {
            match tls.reader().read(&mut self.inp[self.filled..]) {
                Ok(0) => return Io::Failed("connection closed by the server".into()),
                Ok(n) => {
                    self.filled += n;
                    return Io::Moved(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    return Io::Failed(
                        "connection closed by the server (no TLS close_notify)".into(),
                    );
                }
                Err(e) => return Io::Failed(format!("TLS read failed: {e}")),
            }
            match tls.read_tls(&mut self.stream) {
                // EOF: the session notes it, and the reader reports it above.
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::Idle,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Io::Failed(format!("read failed: {e}")),
            }
            if let Err(e) = tls.process_new_packets() {
                // Best effort: the alert the session queued tells the server why.
                let _ = tls.write_tls(&mut self.stream);
                return Io::Failed(format!("TLS error: {e}"));
            }
        }
    }

    /// The next complete reply in the buffer: its outcome and where its bytes are
    /// (valid until [`Conn::compact`]).
    pub fn next_reply(&mut self) -> Result<Option<(Outcome, Range<usize>)>, ScanError> {
        let (used, outcome) = self.scanner.next(&self.inp[self.scanned..self.filled])?;
        self.scanned += used;
        Ok(outcome.map(|o| {
            let range = self.reply_start..self.scanned;
            self.reply_start = self.scanned;
            (o, range)
        }))
    }

    /// The bytes of a reply [`Conn::next_reply`] returned.
    pub fn reply_bytes(&self, range: Range<usize>) -> &[u8] {
        &self.inp[range]
    }

    /// Drops the replies handled, keeping the one in progress at the front.
    pub fn compact(&mut self) {
        let keep = self.reply_start;
        if keep > 0 {
            self.inp.copy_within(keep..self.filled, 0);
            self.filled -= keep;
            self.scanned -= keep;
            self.reply_start = 0;
        }
    }

    /// Writes until the output is sent or the socket is full; `Moved` counts the
    /// request bytes written (the plaintext, with TLS).
    pub fn write_out(&mut self) -> Io {
        if self.tls.is_some() {
            return self.write_tls();
        }
        let mut moved = 0;
        loop {
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
                return if moved > 0 {
                    Io::Moved(moved)
                } else {
                    Io::Idle
                };
            }
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Io::Failed("the server stopped reading".into()),
                Ok(n) => {
                    self.sent += n;
                    moved += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return if moved > 0 {
                        Io::Moved(moved)
                    } else {
                        Io::Idle
                    };
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Io::Failed(format!("write failed: {e}")),
            }
        }
    }

    /// `write_out` through the TLS session: records it holds go out first, then the
    /// next chunk of requests goes in, until all is sent or the socket is full.
    fn write_tls(&mut self) -> Io {
        let Some(tls) = self.tls.as_mut() else {
            return Io::Idle;
        };
        let mut moved = 0;
        let progress = |moved| {
            if moved > 0 {
                Io::Moved(moved)
            } else {
                Io::Idle
            }
        };
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Io::Failed("the server stopped reading".into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return progress(moved),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Io::Failed(format!("write failed: {e}")),
                }
            }
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
                return progress(moved);
            }
            let end = self.out.len().min(self.sent + TLS_PLAINTEXT_CHUNK_BYTES);
            match tls.writer().write(&self.out[self.sent..end]) {
                Ok(0) => return Io::Failed("the TLS session takes no more data".into()),
                Ok(n) => {
                    self.sent += n;
                    moved += n;
                }
                Err(e) => return Io::Failed(format!("TLS write failed: {e}")),
            }
        }
    }
}
