//! A connection's socket I/O: reads into its input (plain or through TLS), writes
//! of its output until the socket would block, and the lingering close that lets
//! the last reply survive.

use std::io::{self, Read, Write};

use super::{Conn, Phase};
use crate::config::READ_BUDGET_BYTES;

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
    /// Reads until the socket is drained, the peer closes, or the tick's budget is
    /// spent. Returns how it ended and the bytes read.
    ///
    /// A read that fills less than `scratch` took everything the kernel held, so it
    /// ends the loop as `Drained` without the extra `read` that would only say
    /// `WouldBlock`: bytes that arrive later raise a new readiness event. Once the
    /// poll has reported the peer's half-close (`read_closed`), reads go on to the
    /// end of stream, which no later event would announce.
    pub(super) fn fill(&mut self, scratch: &mut [u8]) -> io::Result<(ReadEnd, usize)> {
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

    /// Writes pending output, up to the first held reply, until done or the
    /// socket would block. Returns the bytes written. A closing connection whose
    /// output is all out becomes closed (after a TLS close_notify).
    pub fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        // Replies held for JetStream, and all that follows them, stay.
        let limit = self.held.limit(self.wbuf.len());
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
                if self.wpos == limit {
                    break;
                }
                let end = limit.min(self.wpos + TLS_PLAINTEXT_CHUNK_BYTES);
                let n = tls.writer().write(&self.wbuf[self.wpos..end])?;
                self.wpos += n;
                total += n;
            }
        } else {
            while self.wpos < limit {
                match self.stream.write(&self.wbuf[self.wpos..limit]) {
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
        if self.phase == Phase::Closing && self.pending_output() == 0 && !self.tls_wants_write() {
            if let Some(tls) = self.tls.as_mut() {
                // A clean TLS close: best effort, the socket closes either way.
                tls.send_close_notify();
                let _ = tls.write_tls(&mut self.stream);
            }
            self.phase = Phase::Closed;
        }
        Ok(total)
    }

    fn compact_output(&mut self) {
        if self.wpos == self.wbuf.len() {
            if self.wbuf.capacity() > IDLE_OUTPUT_CAPACITY_BYTES {
                self.wbuf = Vec::new();
            }
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos >= COMPACT_OUTPUT_BYTES && self.wpos >= self.pending_output() {
            // Only once the written part is at least the unsent part: a reply of
            // many megabytes written in small pieces is then moved a bounded
            // number of times, not once per piece.
            self.wbuf.drain(..self.wpos);
            self.held.shift(self.wpos);
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
}
