//! What the load generator sends: the tests, the command mix, user names, and the
//! RESP encoding of each request, written straight into a connection's output
//! buffer.
//!
//! Names are either random in a keyspace (`-r N`: `u` and twelve digits, the names
//! `redis-benchmark` makes of `u__rand_int__`, so both tools fill the same keys) or
//! sequential and unique: `<prefix>-<index>`. Thread `t` of `T` takes the indices
//! `t, t+T, t+2T, ...`, so a later run with the same prefix and request count
//! (say `-t lookup --names PREFIX`) meets exactly the names an earlier one made.

use std::fmt;
use std::str::FromStr;

/// The field every benchmark REGISTER carries (the same row `compare-redis.sh`
/// writes, and the storage-limit measurement inserts).
pub const FIELD: (&str, &str) = ("email", "a@example.com");
/// The field that carries a REGISTER's serial number and send time in fan-out mode;
/// it comes back in the `user.registered` push.
pub const STAMP_FIELD: &str = "bench";
/// Digits of a random name's number (`u000000012345`), as `redis-benchmark` pads
/// `__rand_int__`.
pub const RANDOM_NAME_DIGITS: usize = 12;

/// A benchmark test (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Test {
    /// `PING`: the protocol and reactor alone.
    Ping,
    /// `REGISTER name email a@example.com`: a write, one commit per tick.
    Register,
    /// `LOOKUP name`: a read.
    Lookup,
    /// `UNREGISTER name`: a write.
    Unregister,
    /// A mix of REGISTER, LOOKUP and UNREGISTER (`--mix`).
    Mixed,
}

impl Test {
    /// The test's name as `-t` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Test::Ping => "ping",
            Test::Register => "register",
            Test::Lookup => "lookup",
            Test::Unregister => "unregister",
            Test::Mixed => "mixed",
        }
    }
}

/// The command a single request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `PING`
    Ping,
    /// `REGISTER`
    Register,
    /// `LOOKUP`
    Lookup,
    /// `UNREGISTER`
    Unregister,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; 4] = [Kind::Ping, Kind::Register, Kind::Lookup, Kind::Unregister];

    /// A dense index, for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The command's name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Register => "register",
            Kind::Lookup => "lookup",
            Kind::Unregister => "unregister",
        }
    }
}

/// The command ratio of the `mixed` test: `register:1,lookup:8,unregister:1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// Weight of each kind, indexed by [`Kind::index`] (PING is allowed too).
    pub weights: [u32; 4],
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            weights: [0, 1, 8, 1],
        }
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once(':')
                .ok_or_else(|| format!("'{part}': expected command:weight, e.g. lookup:8"))?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(name.trim()))
                .ok_or_else(|| {
                    format!("'{name}': the mix knows register, lookup, unregister and ping")
                })?;
            weights[kind.index()] = weight
                .trim()
                .parse()
                .map_err(|_| format!("'{weight}': a weight is a whole number"))?;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err("the mix needs at least one command with a weight above 0".into());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for k in Kind::ALL {
            let w = self.weights[k.index()];
            if w > 0 {
                write!(f, "{sep}{}:{w}", k.as_str())?;
                sep = ",";
            }
        }
        Ok(())
    }
}

/// A small fast pseudo-random generator (SplitMix64); benchmark names need no more.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: no division, negligible bias for benchmark purposes.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// One thread's request source.
#[derive(Debug, Clone)]
pub struct Workload {
    test: Test,
    mix: [u32; 4],
    mix_total: u32,
    keyspace: Option<u64>,
    prefix: String,
    thread: u64,
    threads: u64,
    /// Sequential names handed out (local count).
    made: u64,
    /// In the mixed test with sequential names: names unregistered (local count).
    removed: u64,
    stamp: bool,
    rng: Rng,
    pings: Vec<u8>,
}

/// The request just encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Its command.
    pub kind: Kind,
    /// For a stamped REGISTER, its serial number (unique in the run).
    pub serial: Option<u64>,
}

impl Workload {
    /// The requests of thread `thread` of `threads`. `stamp` adds the fan-out field
    /// to every REGISTER; `pipeline` sizes the pre-encoded PING batch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        test: Test,
        mix: &Mix,
        keyspace: Option<u64>,
        prefix: &str,
        thread: usize,
        threads: usize,
        stamp: bool,
        pipeline: usize,
    ) -> Workload {
        let mix = match test {
            Test::Ping => [1, 0, 0, 0],
            Test::Register => [0, 1, 0, 0],
            Test::Lookup => [0, 0, 1, 0],
            Test::Unregister => [0, 0, 0, 1],
            Test::Mixed => mix.weights,
        };
        Workload {
            test,
            mix,
            mix_total: mix.iter().sum(),
            keyspace: keyspace.filter(|k| *k > 0),
            prefix: prefix.to_string(),
            thread: thread as u64,
            threads: threads.max(1) as u64,
            made: 0,
            removed: 0,
            stamp,
            rng: Rng::new(
                0x5EED_0000 ^ (thread as u64).wrapping_mul(0x9E37_79B9) ^ prefix_hash(prefix),
            ),
            pings: PING.repeat(pipeline.max(1)),
        }
    }

    /// Appends `count` requests to `out` when they are all PINGs (one copy of a
    /// pre-encoded pipeline); false when this workload sends other commands.
    pub fn encode_pings(&mut self, out: &mut Vec<u8>, count: usize) -> bool {
        if self.test != Test::Ping {
            return false;
        }
        let full = count / (self.pings.len() / PING.len());
        for _ in 0..full {
            out.extend_from_slice(&self.pings);
        }
        for _ in 0..count % (self.pings.len() / PING.len()) {
            out.extend_from_slice(PING);
        }
        true
    }

    /// Appends the next request to `out`; `send_ns` is the time stamped into a
    /// fan-out REGISTER.
    pub fn encode(&mut self, out: &mut Vec<u8>, send_ns: u64) -> Request {
        let kind = self.pick();
        let mut name = NameBuf::new();
        let mut serial = None;
        match kind {
            Kind::Ping => {
                out.extend_from_slice(PING);
                return Request { kind, serial };
            }
            Kind::Register => {
                let index = self.fresh_index();
                match self.keyspace {
                    Some(k) => self.random_name(&mut name, k),
                    None => self.sequential_name(&mut name, index),
                }
                let n = if self.stamp { 6 } else { 4 };
                header(out, n);
                bulk(out, b"REGISTER");
                bulk(out, name.as_bytes());
                bulk(out, FIELD.0.as_bytes());
                bulk(out, FIELD.1.as_bytes());
                if self.stamp {
                    bulk(out, STAMP_FIELD.as_bytes());
                    let mut stamp = NameBuf::new();
                    stamp.push(self.prefix.as_bytes());
                    stamp.push(b":");
                    stamp.push_u64(index);
                    stamp.push(b":");
                    stamp.push_u64(send_ns);
                    bulk(out, stamp.as_bytes());
                    serial = Some(index);
                }
            }
            Kind::Lookup | Kind::Unregister => {
                match (self.keyspace, self.test) {
                    (Some(k), _) => self.random_name(&mut name, k),
                    (None, Test::Mixed) => {
                        let local = if kind == Kind::Unregister && self.removed < self.made {
                            self.removed += 1;
                            self.removed - 1
                        } else if self.made > self.removed {
                            self.removed + self.rng.below(self.made - self.removed)
                        } else {
                            0
                        };
                        let index = local * self.threads + self.thread;
                        self.sequential_name(&mut name, index)
                    }
                    (None, _) => {
                        let index = self.fresh_index();
                        self.sequential_name(&mut name, index)
                    }
                }
                header(out, 2);
                bulk(
                    out,
                    if kind == Kind::Lookup {
                        b"LOOKUP"
                    } else {
                        b"UNREGISTER"
                    },
                );
                bulk(out, name.as_bytes());
            }
        }
        Request { kind, serial }
    }

    fn pick(&mut self) -> Kind {
        if self.mix_total == 0 {
            return Kind::Ping;
        }
        let mut r = self.rng.below(u64::from(self.mix_total)) as u32;
        for k in Kind::ALL {
            let w = self.mix[k.index()];
            if r < w {
                return k;
            }
            r -= w;
        }
        Kind::Ping
    }

    /// The next sequential index of this thread (unique across threads).
    fn fresh_index(&mut self) -> u64 {
        let index = self.made * self.threads + self.thread;
        self.made += 1;
        index
    }

    fn sequential_name(&self, name: &mut NameBuf, index: u64) {
        name.push(self.prefix.as_bytes());
        name.push(b"-");
        name.push_u64(index);
    }

    fn random_name(&mut self, name: &mut NameBuf, keyspace: u64) {
        let n = self.rng.below(keyspace);
        let mut digits = itoa::Buffer::new();
        let d = digits.format(n).as_bytes();
        name.push(b"u");
        for _ in d.len()..RANDOM_NAME_DIGITS {
            name.push(b"0");
        }
        name.push(d);
    }
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Longest name or stamp built (names are at most 64 bytes on the server).
const NAME_BUF_BYTES: usize = 128;

/// A name built on the stack.
struct NameBuf {
    bytes: [u8; NAME_BUF_BYTES],
    len: usize,
}

impl NameBuf {
    fn new() -> NameBuf {
        NameBuf {
            bytes: [0; NAME_BUF_BYTES],
            len: 0,
        }
    }

    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(NAME_BUF_BYTES - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn push_u64(&mut self, n: u64) {
        let mut digits = itoa::Buffer::new();
        self.push(digits.format(n).as_bytes());
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn header(out: &mut Vec<u8>, n: usize) {
    let mut digits = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(digits.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    let mut digits = itoa::Buffer::new();
    out.push(b'$');
    out.extend_from_slice(digits.format(b.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn prefix_hash(prefix: &str) -> u64 {
    prefix.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// A run id: a short base-36 stamp of the clock and the process id, so that
/// sequential names of different runs do not collide.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = Rng::new(nanos ^ (u64::from(std::process::id()) << 32)).next_u64();
    let mut s = String::from("b");
    for _ in 0..8 {
        let d = (x % 36) as u32;
        s.push(char::from_digit(d, 36).unwrap_or('0'));
        x /= 36;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_prints_back() {
        let m: Mix = "register:1, lookup:8,UNREGISTER:1"
            .parse()
            .expect("valid mix");
        assert_eq!(m.weights, [0, 1, 8, 1]);
        assert_eq!(m.to_string(), "register:1,lookup:8,unregister:1");
        assert_eq!(Mix::default(), m);
    }

    #[test]
    fn bad_mixes_are_refused() {
        assert!("register".parse::<Mix>().is_err());
        assert!("get:1".parse::<Mix>().is_err());
        assert!("lookup:x".parse::<Mix>().is_err());
        assert!("lookup:0".parse::<Mix>().is_err());
    }

    /// The names of `n` requests of `test`, spread over `threads` threads the way a
    /// run spreads them.
    fn names(test: Test, keyspace: Option<u64>, threads: usize, n: usize) -> Vec<String> {
        let mut all = Vec::new();
        for t in 0..threads {
            let mut w = Workload::new(test, &Mix::default(), keyspace, "p", t, threads, false, 1);
            for _ in 0..n / threads {
                let mut out = Vec::new();
                w.encode(&mut out, 0);
                let text = String::from_utf8(out).expect("utf-8");
                all.push(text.split("\r\n").nth(4).expect("name").to_string());
            }
        }
        all
    }

    #[test]
    fn sequential_names_cover_the_same_set_whatever_the_threads() {
        let mut one = names(Test::Register, None, 1, 12);
        let mut three = names(Test::Lookup, None, 3, 12);
        one.sort();
        three.sort();
        assert_eq!(one, three);
        assert!(one.contains(&"p-0".to_string()) && one.contains(&"p-11".to_string()));
    }

    #[test]
    fn random_names_are_padded_like_redis_benchmark() {
        for name in names(Test::Register, Some(1000), 1, 50) {
            assert_eq!(name.len(), 1 + RANDOM_NAME_DIGITS, "{name}");
            assert!(name.starts_with("u000000000"), "{name}");
        }
    }

    #[test]
    fn stamped_register_carries_prefix_serial_and_time() {
        let mut w = Workload::new(Test::Register, &Mix::default(), None, "run", 1, 2, true, 1);
        let mut out = Vec::new();
        let r = w.encode(&mut out, 12345);
        assert_eq!(r.serial, Some(1));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("*6\r\n$8\r\nREGISTER\r\n$5\r\nrun-1\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("$5\r\nbench\r\n$11\r\nrun:1:12345\r\n"),
            "{text}"
        );
    }

    #[test]
    fn pings_come_in_pre_encoded_pipelines() {
        let mut w = Workload::new(Test::Ping, &Mix::default(), None, "p", 0, 1, false, 4);
        let mut out = Vec::new();
        assert!(w.encode_pings(&mut out, 6));
        assert_eq!(out, PING.repeat(6));
    }
}
