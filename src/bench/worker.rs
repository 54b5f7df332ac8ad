//! One load thread: a `mio` reactor that owns a share of the connections.
//!
//! Each connection is registered once for READABLE and WRITABLE (edge-triggered),
//! reads and writes until `WouldBlock`, and scans replies as they arrive. Closed
//! loop (the default): a connection sends a pipeline of `-P` requests and the next
//! one as soon as the last reply of the previous one is in, like `redis-benchmark`;
//! latency counts from the batch's send. Open loop (`--rate`): requests are due at
//! fixed intervals whatever the replies do; a due request goes out on any connection
//! with fewer than `-P` requests in flight, and its latency counts from the time it
//! was due, so a stalled server shows up as latency instead of a slower schedule
//! (coordinated omission, as wrk2 avoids it).
//!
//! With `--tls` each connection carries its rustls session ([`Conn`] drives it);
//! the loop is the same.
//!
//! Subscriber connections (fan-out mode) only read: every push is scanned, the
//! REGISTER's serial number and send time are read back from the stamp field of its
//! JSON, and two latencies are recorded: from the send, and from the moment the
//! publishing connection saw the REGISTER's reply.

use std::io::ErrorKind;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::conn::{Conn, Io, Pending};
use super::scan::Outcome;
use super::totals::{ReplySeen, Shared, Totals};
use super::workload::{Kind, Request, Workload};
use crate::client::transport::Transport;

/// A run gives up on replies that have not come back this long after the last one.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// After the load ends, how long subscribers wait for a push before giving up on
/// the pushes still missing.
pub const FANOUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest poll wait: the loop wakes this often to check deadlines and other threads.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Poll wait while subscribers wait for the other threads' load to end.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(5);
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;

/// What one thread is to do.
#[derive(Debug)]
pub struct Plan {
    /// Its requests.
    pub workload: Workload,
    /// Most requests in flight per connection (`-P`).
    pub pipeline: usize,
    /// Requests to send (`-n` share); `None` with a deadline.
    pub quota: Option<u64>,
    /// Stop sending at this time since the run's epoch (`--duration`).
    pub deadline: Option<Duration>,
    /// Requests per second for this thread (`--rate` share): open loop.
    pub rate: Option<f64>,
    /// The start of the stamp field in a push of this run: `"bench":"<prefix>:`.
    pub stamp_needle: Option<Vec<u8>>,
}

/// A thread's reactor.
struct Worker {
    poll: Poll,
    conns: Vec<Conn>,
    plan: Plan,
    shared: Arc<Shared>,
    totals: Totals,
    finder: Option<memchr::memmem::Finder<'static>>,
    issued: u64,
    in_flight: usize,
    /// Round-robin cursor for open-loop dispatch.
    cursor: usize,
    last_progress: Instant,
    load_done: bool,
    last_push: Instant,
}

/// Runs one thread's share: `load` connections send requests, `subscribers` read
/// pushes. Each arrives connected (and, for TLS, past its handshake). Returns what
/// it measured.
pub fn run(
    load: Vec<Transport>,
    subscribers: Vec<Transport>,
    plan: Plan,
    shared: Arc<Shared>,
) -> std::io::Result<Totals> {
    let poll = Poll::new()?;
    let mut conns = Vec::with_capacity(load.len() + subscribers.len());
    let roles = load
        .into_iter()
        .map(|s| (s, false))
        .chain(subscribers.into_iter().map(|s| (s, true)));
    for (i, (t, subscriber)) in roles.enumerate() {
        let (s, tls) = t.into_parts();
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn::new(stream, tls, subscriber, plan.pipeline));
    }
    let finder = plan
        .stamp_needle
        .as_deref()
        .map(|n| memchr::memmem::Finder::new(n).into_owned());
    let now = Instant::now();
    let mut w = Worker {
        poll,
        conns,
        plan,
        shared,
        totals: Totals::new(),
        finder,
        issued: 0,
        in_flight: 0,
        cursor: 0,
        last_progress: now,
        load_done: false,
        last_push: now,
    };
    w.run()?;
    Ok(w.totals)
}

impl Worker {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        if self.plan.rate.is_none() {
            for i in 0..self.conns.len() {
                self.refill(i);
            }
        }
        loop {
            let now_ns = self.shared.now_ns();
            self.dispatch_due(now_ns);
            self.check_load_done(now_ns);
            if self.load_done && self.subscribers_done() {
                return Ok(());
            }
            let timeout = self.timeout(now_ns);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if i >= self.conns.len() || !self.conns[i].open {
                    continue;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read_ready(i);
                }
                if ev.is_writable() && self.conns[i].open {
                    self.flush(i);
                }
            }
        }
    }

    /// How long the next poll may wait.
    fn timeout(&self, now_ns: u64) -> Duration {
        let mut t = CHECK_INTERVAL;
        if self.load_done {
            return DRAIN_CHECK_INTERVAL;
        }
        if let Some(d) = self.plan.deadline {
            t = t.min(d.saturating_sub(Duration::from_nanos(now_ns)));
        }
        if let Some(rate) = self.plan.rate
            && self.quota_left()
        {
            // A request already due is waiting for room: a reply wakes the loop.
            let next = (self.issued as f64 * 1e9 / rate) as u64;
            if next > now_ns {
                t = t.min(Duration::from_nanos(next - now_ns));
            }
        }
        t
    }

    fn sending(&self, now_ns: u64) -> bool {
        self.quota_left()
            && self
                .plan
                .deadline
                .is_none_or(|d| Duration::from_nanos(now_ns) < d)
    }

    fn quota_left(&self) -> bool {
        self.plan.quota.is_none_or(|q| self.issued < q)
    }

    /// Marks the load ended once nothing more is to be sent and every reply is in
    /// (or given up on).
    fn check_load_done(&mut self, now_ns: u64) {
        if self.load_done {
            return;
        }
        let any_open = self.conns.iter().any(|c| c.open && !c.subscriber);
        let stalled = self.in_flight > 0 && self.last_progress.elapsed() > STALL_TIMEOUT;
        if stalled {
            self.give_up("no reply within the stall timeout");
        }
        let nothing_to_send = !self.sending(now_ns) || !any_open;
        if nothing_to_send && self.in_flight == 0 {
            self.load_done = true;
            self.totals.elapsed = Duration::from_nanos(now_ns);
            self.shared.loads_running.fetch_sub(1, Ordering::AcqRel);
            self.last_push = Instant::now();
        }
    }

    /// Counts every request still in flight as lost.
    fn give_up(&mut self, why: &str) {
        for c in &mut self.conns {
            self.totals.lost += c.abandon() as u64;
        }
        self.in_flight = 0;
        self.note_error(why);
    }

    /// True once every subscriber has every push it should get, or pushes stopped.
    fn subscribers_done(&mut self) -> bool {
        if !self.conns.iter().any(|c| c.subscriber && c.open) {
            return true;
        }
        if self.shared.loads_running.load(Ordering::Acquire) > 0 {
            self.last_push = Instant::now();
            return false;
        }
        let want = self.shared.registered.load(Ordering::Acquire);
        let complete = self
            .conns
            .iter()
            .filter(|c| c.subscriber && c.open)
            .all(|c| c.stamped >= want);
        if complete {
            return true;
        }
        if self.last_push.elapsed() > FANOUT_DRAIN_TIMEOUT {
            for c in self.conns.iter().filter(|c| c.subscriber && c.open) {
                self.totals.missing_pushes += want.saturating_sub(c.stamped);
            }
            return true;
        }
        false
    }

    /// Closed loop: sends the next pipeline once the previous one is answered.
    fn refill(&mut self, i: usize) {
        let now_ns = self.shared.now_ns();
        let c = &self.conns[i];
        if c.subscriber || !c.open || c.in_flight > 0 || !self.sending(now_ns) {
            return;
        }
        let left = self.plan.quota.map_or(u64::MAX, |q| q - self.issued);
        let n = (self.plan.pipeline as u64).min(left) as usize;
        let c = &mut self.conns[i];
        if self.plan.workload.encode_pings(&mut c.out, n) {
            c.expect(now_ns, Kind::Ping, None, n as u32);
        } else {
            for _ in 0..n {
                let r = self.plan.workload.encode(&mut c.out, now_ns);
                c.expect(now_ns, r.kind, r.serial, 1);
            }
        }
        self.in_flight += n;
        self.issued += n as u64;
        self.flush(i);
    }

    /// Open loop: hands every request due by now to connections with room, one
    /// each in turn.
    fn dispatch_due(&mut self, now_ns: u64) {
        let Some(rate) = self.plan.rate else { return };
        let interval = 1e9 / rate;
        let n = self.conns.len();
        let mut without_room = 0;
        while without_room < n && self.quota_left() {
            let due_ns = (self.issued as f64 * interval) as u64;
            if due_ns > now_ns
                || self
                    .plan
                    .deadline
                    .is_some_and(|d| due_ns >= d.as_nanos() as u64)
            {
                break;
            }
            let c = &mut self.conns[self.cursor % n];
            self.cursor = self.cursor.wrapping_add(1);
            if c.subscriber || !c.open || c.in_flight >= self.plan.pipeline {
                without_room += 1;
                continue;
            }
            let Request { kind, serial } = self.plan.workload.encode(&mut c.out, due_ns);
            c.expect(due_ns, kind, serial, 1);
            self.in_flight += 1;
            self.issued += 1;
            without_room = 0;
        }
        for i in 0..n {
            if self.conns[i].open && self.conns[i].has_output() {
                self.flush(i);
            }
        }
    }

    /// Reads until `WouldBlock`, handling each complete reply as it comes.
    fn read_ready(&mut self, i: usize) {
        loop {
            match self.conns[i].read_some() {
                Io::Moved(n) => {
                    self.totals.net_bytes.0 += n as u64;
                    if let Err(e) = self.consume(i) {
                        self.close(i, &e);
                        return;
                    }
                    if !self.conns[i].subscriber && self.plan.rate.is_none() {
                        self.refill(i);
                    }
                }
                Io::Idle => {
                    // Records the TLS session queued while reading (or requests a
                    // refill left behind) go out now, not at some later edge.
                    if self.conns[i].has_output() {
                        self.flush(i);
                    }
                    return;
                }
                Io::Failed(why) => {
                    self.close(i, &why);
                    return;
                }
            }
        }
    }

    /// Handles every complete reply in the connection's buffer.
    fn consume(&mut self, i: usize) -> Result<(), String> {
        let now_ns = self.shared.now_ns();
        let mut replies = 0;
        while let Some((outcome, range)) = self.conns[i].next_reply().map_err(|e| e.to_string())? {
            if self.conns[i].subscriber {
                self.on_push(i, range, now_ns);
            } else {
                self.on_reply(i, outcome, range, now_ns)?;
                replies += 1;
            }
        }
        self.conns[i].compact();
        if replies > 0 {
            self.shared.done.fetch_add(replies, Ordering::Relaxed);
            self.last_progress = Instant::now();
        }
        Ok(())
    }

    fn on_reply(
        &mut self,
        i: usize,
        outcome: Outcome,
        range: Range<usize>,
        now_ns: u64,
    ) -> Result<(), String> {
        let Some(Pending {
            kind,
            serial,
            start_ns: sent,
            ..
        }) = self.conns[i].answered()
        else {
            return Err("a reply to no request".into());
        };
        self.in_flight -= 1;
        let t = &mut self.totals.kinds[kind.index()];
        t.replies += 1;
        t.latency
            .saturating_record(now_ns.saturating_sub(sent) / 1000);
        match outcome {
            Outcome::Error => {
                t.errors += 1;
                if self.totals.first_error.is_none() {
                    let text = String::from_utf8_lossy(self.conns[i].reply_bytes(range))
                        .trim_end()
                        .to_string();
                    self.note_error(&text);
                }
            }
            Outcome::Zero | Outcome::Nil => t.misses += 1,
            Outcome::Value => {
                if let Some(s) = serial {
                    self.shared.replies.store(s, now_ns / 1000);
                    self.shared.registered.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        Ok(())
    }

    /// A push on a subscriber connection: pairs it with its REGISTER.
    fn on_push(&mut self, i: usize, range: Range<usize>, now_ns: u64) {
        self.totals.pushes += 1;
        self.last_push = Instant::now();
        let Some(finder) = &self.finder else { return };
        let reply = self.conns[i].reply_bytes(range);
        let Some(at) = finder.find(reply) else { return };
        let mut rest = &reply[at + finder.needle().len()..];
        let (Some(serial), Some(sent_ns)) = (digits(&mut rest), digits(&mut rest)) else {
            return;
        };
        self.conns[i].stamped += 1;
        self.totals
            .push_latency
            .saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
        // A push seen before its REGISTER's reply counts as no delay after it.
        let after = match self.shared.replies.load(serial) {
            ReplySeen::At(reply_us) => (now_ns / 1000).saturating_sub(reply_us),
            ReplySeen::NotYet => 0,
            ReplySeen::Overwritten => return,
        };
        self.totals.push_after_reply.saturating_record(after);
    }

    /// Writes until the output is sent or the socket is full.
    fn flush(&mut self, i: usize) {
        match self.conns[i].write_out() {
            Io::Moved(n) => self.totals.net_bytes.1 += n as u64,
            Io::Idle => {}
            Io::Failed(why) => self.close(i, &why),
        }
    }

    fn close(&mut self, i: usize, why: &str) {
        let c = &mut self.conns[i];
        if !c.open {
            return;
        }
        c.open = false;
        let _ = self.poll.registry().deregister(&mut c.stream);
        let abandoned = c.abandon();
        self.totals.lost += abandoned as u64;
        self.in_flight -= abandoned;
        let role = if c.subscriber { "subscriber" } else { "load" };
        self.note_error(&format!("{role} connection {i}: {why}"));
    }

    fn note_error(&mut self, what: &str) {
        if self.totals.first_error.is_none() {
            self.totals.first_error = Some(what.to_string());
        }
    }
}

/// Reads a decimal number and the one separator byte after it.
fn digits(rest: &mut &[u8]) -> Option<u64> {
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    let v = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
    *rest = rest.get(n + 1..)?;
    Some(v)
}
