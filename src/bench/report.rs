//! The benchmark report: throughput, errors and latency percentiles, printed as a
//! table a person reads or as JSON a script reads.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Args;
use super::totals::Totals;
use super::workload::Kind;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram in microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One command's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    /// Replies.
    pub requests: u64,
    /// Error replies.
    pub errors: u64,
    /// `:0` or nil replies.
    pub misses: u64,
    /// Latency.
    pub latency_ms: Latency,
}

/// Fan-out results.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Pushes received, all subscribers together.
    pub pushes: u64,
    /// Pushes expected and never received.
    pub missing: u64,
    /// REGISTER sent → push received.
    pub latency_ms: Latency,
    /// REGISTER's reply received → push received.
    pub after_reply_ms: Latency,
}

/// What a benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The test (`ping`, `register`, ...).
    pub test: String,
    /// `host:port`.
    pub target: String,
    /// Whether the connections spoke TLS (`--tls`).
    pub tls: bool,
    /// Load connections.
    pub connections: usize,
    /// Pipeline depth.
    pub pipeline: usize,
    /// Load threads.
    pub threads: usize,
    /// Open-loop rate, when one was set.
    pub rate: Option<f64>,
    /// The mix of the mixed test.
    pub mix: Option<String>,
    /// Keyspace of random names, or `null` for sequential names.
    pub keyspace: Option<u64>,
    /// Prefix of sequential names.
    pub names: String,
    /// Replies received.
    pub requests: u64,
    /// Error replies.
    pub errors: u64,
    /// `:0` or nil replies (taken or unknown names).
    pub misses: u64,
    /// Requests without a reply (connection lost or given up).
    pub lost: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Wall time from start to the last reply, seconds.
    pub seconds: f64,
    /// Replies per second.
    pub requests_per_sec: f64,
    /// Latency of all requests.
    pub latency_ms: Latency,
    /// Per command (the mixed test).
    pub commands: BTreeMap<String, CommandReport>,
    /// Server commits during the run (userbus INFO), when known.
    pub commits: Option<u64>,
    /// Write requests per commit, when known.
    pub writes_per_commit: Option<f64>,
    /// Fan-out results, in fan-out mode.
    pub fanout: Option<FanoutReport>,
    /// Bytes received from and sent to the server.
    pub net_bytes: (u64, u64),
    /// The merged latency histogram (microseconds), for plotting.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
    /// The send-to-push histogram of fan-out mode (microseconds), for plotting.
    #[serde(skip)]
    pub push_histogram: Option<Histogram<u64>>,
}

impl Report {
    /// Builds the report of a run.
    pub fn new(
        args: &Args,
        target: &str,
        prefix: &str,
        totals: &Totals,
        commits: Option<u64>,
    ) -> Report {
        let mut histogram = super::totals::histogram();
        let mut commands = BTreeMap::new();
        let (mut requests, mut errors, mut misses) = (0, 0, 0);
        for k in Kind::ALL {
            let t = &totals.kinds[k.index()];
            if t.replies == 0 {
                continue;
            }
            let _ = histogram.add(&t.latency);
            requests += t.replies;
            errors += t.errors;
            misses += t.misses;
            commands.insert(
                k.as_str().to_string(),
                CommandReport {
                    requests: t.replies,
                    errors: t.errors,
                    misses: t.misses,
                    latency_ms: Latency::of(&t.latency),
                },
            );
        }
        let writes = [Kind::Register, Kind::Unregister]
            .iter()
            .map(|k| totals.kinds[k.index()].replies)
            .sum::<u64>();
        let seconds = totals.elapsed.as_secs_f64();
        Report {
            test: args.test.as_str().to_string(),
            target: target.to_string(),
            tls: args.tls,
            connections: args.connections,
            pipeline: args.pipeline,
            threads: args.threads,
            rate: args.rate,
            mix: (args.test == super::Test::Mixed).then(|| args.mix.to_string()),
            keyspace: args.keyspace,
            names: prefix.to_string(),
            requests,
            errors,
            misses,
            lost: totals.lost,
            first_error: totals.first_error.clone(),
            seconds,
            requests_per_sec: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency::of(&histogram),
            commands,
            commits,
            writes_per_commit: commits
                .filter(|c| *c > 0 && writes > 0)
                .map(|c| writes as f64 / c as f64),
            fanout: (args.subscribers > 0).then(|| FanoutReport {
                subscribers: args.subscribers,
                pushes: totals.pushes,
                missing: totals.missing_pushes,
                latency_ms: Latency::of(&totals.push_latency),
                after_reply_ms: Latency::of(&totals.push_after_reply),
            }),
            net_bytes: totals.net_bytes,
            histogram,
            push_histogram: (args.subscribers > 0).then(|| totals.push_latency.clone()),
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn latency_row(out: &mut String, label: &str, l: &Latency) {
    let _ = writeln!(
        out,
        "  {label:<22} p50 {:>8.3}  p90 {:>8.3}  p99 {:>8.3}  p99.9 {:>8.3}  max {:>8.3}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!(", open loop at {r:.0} req/s"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "userbus bench: {} against {}{}: {} connections, pipeline {}, {} thread{}{mode}",
            self.test,
            self.target,
            if self.tls { " (TLS)" } else { "" },
            self.connections,
            self.pipeline,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
        );
        if let Some(m) = &self.mix {
            let _ = writeln!(s, "  mix {m}");
        }
        let names = match self.keyspace {
            Some(k) => format!("random in a keyspace of {k}"),
            None => format!("sequential, prefix {}", self.names),
        };
        let _ = writeln!(s, "  names {names}");
        let _ = writeln!(
            s,
            "  {} requests in {:.2} s: {:.0} requests/s",
            self.requests, self.seconds, self.requests_per_sec
        );
        let _ = writeln!(
            s,
            "  errors {}  misses (:0 or nil) {}  lost {}",
            self.errors, self.misses, self.lost
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "  first error: {e}");
        }
        let _ = writeln!(s, "  latency (ms)");
        latency_row(&mut s, "all", &self.latency_ms);
        if self.commands.len() > 1 {
            for (name, c) in &self.commands {
                latency_row(&mut s, &format!("{name} ({})", c.requests), &c.latency_ms);
            }
        }
        if let Some(fo) = &self.fanout {
            let _ = writeln!(
                s,
                "  fan-out: {} subscribers, {} pushes, {} missing",
                fo.subscribers, fo.pushes, fo.missing
            );
            latency_row(&mut s, "send -> push", &fo.latency_ms);
            latency_row(&mut s, "reply -> push", &fo.after_reply_ms);
        }
        if let (Some(c), Some(w)) = (self.commits, self.writes_per_commit) {
            let _ = writeln!(s, "  server commits {c} ({w:.1} writes per commit)");
        }
        f.write_str(&s)
    }
}
