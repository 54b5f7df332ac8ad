//! What a run shares between its threads and what each thread measured: progress
//! counters, the reply-time ring of fan-out mode, and per-command counts with HDR
//! latency histograms (microseconds) that merge across threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::workload::Kind;

/// Highest latency the histograms hold (larger values are clamped), in microseconds.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits the histograms keep.
pub const HISTOGRAM_DIGITS: u8 = 3;

/// A new latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_DIGITS)
        .expect("invariant: constant histogram bounds are valid")
}

/// State every thread of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// Time zero of the run.
    pub epoch: Instant,
    /// Replies received so far, for the progress bar.
    pub done: AtomicU64,
    /// Stamped REGISTERs that succeeded: each should reach every subscriber.
    pub registered: AtomicU64,
    /// Threads whose load has not ended yet.
    pub loads_running: AtomicUsize,
    /// When each stamped REGISTER's reply was seen.
    pub replies: ReplyTimes,
}

impl Shared {
    /// State for `threads` threads, time zero now.
    pub fn new(threads: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            done: AtomicU64::new(0),
            registered: AtomicU64::new(0),
            loads_running: AtomicUsize::new(threads),
            replies: ReplyTimes::new(),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Slots of the reply-time ring: a push whose REGISTER is this many registrations
/// old has lost its reply time (it is then measured from the send only).
const RING_SLOTS: u64 = 1 << 16;
const RING_TIME_BITS: u32 = 40;
const RING_TIME_MASK: u64 = (1 << RING_TIME_BITS) - 1;

/// What the ring knows of a REGISTER's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplySeen {
    /// Seen at this time, microseconds since the epoch.
    At(u64),
    /// Not seen yet: the push overtook the reply.
    NotYet,
    /// Too old: a later REGISTER took its slot.
    Overwritten,
}

/// When the reply to each recent stamped REGISTER was seen, by serial number: a
/// ring of atomics, each holding the serial's high bits as a tag and the time in
/// microseconds, so a subscriber on another thread can pair its push with the reply.
#[derive(Debug)]
pub struct ReplyTimes {
    slots: Box<[AtomicU64]>,
}

impl ReplyTimes {
    fn new() -> ReplyTimes {
        ReplyTimes {
            slots: (0..RING_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn tag(serial: u64) -> u64 {
        // +1 keeps an untouched slot (0) from matching serial 0.
        ((serial / RING_SLOTS) + 1) << RING_TIME_BITS
    }

    /// Notes that `serial`'s reply was seen at `reply_us`.
    pub fn store(&self, serial: u64, reply_us: u64) {
        let v = Self::tag(serial) | (reply_us & RING_TIME_MASK);
        self.slots[(serial % RING_SLOTS) as usize].store(v, Ordering::Release);
    }

    /// When `serial`'s reply was seen, if it was and is still in the ring.
    pub fn load(&self, serial: u64) -> ReplySeen {
        let v = self.slots[(serial % RING_SLOTS) as usize].load(Ordering::Acquire);
        let (tag, want) = (v >> RING_TIME_BITS, Self::tag(serial) >> RING_TIME_BITS);
        match tag.cmp(&want) {
            std::cmp::Ordering::Equal => ReplySeen::At(v & RING_TIME_MASK),
            std::cmp::Ordering::Less => ReplySeen::NotYet,
            std::cmp::Ordering::Greater => ReplySeen::Overwritten,
        }
    }
}

/// Counts and latencies of one command kind.
#[derive(Debug, Clone)]
pub struct KindTotals {
    /// Replies received.
    pub replies: u64,
    /// Error replies.
    pub errors: u64,
    /// `:0` or nil replies.
    pub misses: u64,
    /// Latency, microseconds.
    pub latency: Histogram<u64>,
}

/// What one thread measured.
#[derive(Debug, Clone)]
pub struct Totals {
    /// By command, indexed by [`Kind::index`].
    pub kinds: Vec<KindTotals>,
    /// Requests that never got a reply (connection lost, or given up).
    pub lost: u64,
    /// The first error reply or connection failure, for the report.
    pub first_error: Option<String>,
    /// Time from the epoch to the last reply of this thread's load.
    pub elapsed: Duration,
    /// Pushes received by this thread's subscribers.
    pub pushes: u64,
    /// Pushes that subscribers expected but never received.
    pub missing_pushes: u64,
    /// Send of the REGISTER → push received, microseconds.
    pub push_latency: Histogram<u64>,
    /// REGISTER reply seen → push received, microseconds.
    pub push_after_reply: Histogram<u64>,
    /// Bytes read and written.
    pub net_bytes: (u64, u64),
}

impl Totals {
    /// Nothing measured yet.
    pub fn new() -> Totals {
        Totals {
            kinds: Kind::ALL
                .iter()
                .map(|_| KindTotals {
                    replies: 0,
                    errors: 0,
                    misses: 0,
                    latency: histogram(),
                })
                .collect(),
            lost: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            pushes: 0,
            missing_pushes: 0,
            push_latency: histogram(),
            push_after_reply: histogram(),
            net_bytes: (0, 0),
        }
    }

    /// Adds `other`'s counts and latencies to these.
    pub fn merge(&mut self, other: &Totals) {
        for (a, b) in self.kinds.iter_mut().zip(&other.kinds) {
            a.replies += b.replies;
            a.errors += b.errors;
            a.misses += b.misses;
            // Same bounds on both sides: adding cannot fail.
            let _ = a.latency.add(&b.latency);
        }
        self.lost += other.lost;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.elapsed = self.elapsed.max(other.elapsed);
        self.pushes += other.pushes;
        self.missing_pushes += other.missing_pushes;
        let _ = self.push_latency.add(&other.push_latency);
        let _ = self.push_after_reply.add(&other.push_after_reply);
        self.net_bytes.0 += other.net_bytes.0;
        self.net_bytes.1 += other.net_bytes.1;
    }

    /// Every thread's result folded into one.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Totals>) -> Totals {
        let mut t = Totals::new();
        for o in all {
            t.merge(o);
        }
        t
    }
}

impl Default for Totals {
    fn default() -> Self {
        Totals::new()
    }
}
