//! `userbus bench`: the load generator.
//!
//! Opens `-c` connections (and `--subscribers` more in fan-out mode) with blocking
//! sockets ([`dial`]), so a bad address, or with `--tls` a certificate the CA did
//! not sign, fails at once with a clear message, then hands them to `--threads`
//! load threads, each a `mio` reactor of its own ([`worker`]) over its
//! share of the connections ([`conn`]). Requests come from [`workload`], replies are
//! counted by [`scan`] without being built, and latencies go into HDR histograms
//! ([`totals`]) that [`report`] turns into a table, JSON or, via [`plot`], an SVG
//! percentile curve.
//!
//! The library entry point [`run`] is what `cargo bench` drives too.
//!
//! # Example
//! `userbus bench -p 7878 -t register -c 50 -P 16 --duration 10 --plot reg.svg`
//!
//! `userbus bench --tls --cacert ca.pem -h localhost -p 6380 -t register -n 2000`

pub mod conn;
pub mod dial;
pub mod plot;
pub mod report;
pub mod scan;
pub mod totals;
pub mod worker;
pub mod workload;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::client::transport::{self, TlsOptions, Transport};
use crate::config::DEFAULT_PORT;
use dial::{Dialer, info_field, subscribe};
pub use report::Report;
pub use workload::{Mix, Test};

/// Requests sent when neither `-n` nor `--duration` is given.
pub const DEFAULT_REQUESTS: u64 = 100_000;
/// How long connecting (and the SUBSCRIBE hand-shake) may take per connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the progress bar is redrawn.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Longest `--names` prefix (names are at most 64 bytes; the index follows it).
pub const MAX_PREFIX_BYTES: usize = 40;
/// The channel subscribers listen to in fan-out mode.
pub const FANOUT_CHANNEL: &str = "user.registered";

/// `userbus bench` flags.
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Server host.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server RESP port.
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Load connections.
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    pub connections: usize,
    /// Requests to send in all [default: 100000 unless --duration].
    #[arg(short = 'n', long = "requests", conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Send for this many seconds instead of a request count.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Requests in flight per connection: the pipeline depth.
    #[arg(short = 'P', long = "pipeline", default_value_t = 1)]
    pub pipeline: usize,
    /// Load threads, each a reactor of its own with a share of the connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The test to run.
    #[arg(short = 't', long = "test", value_enum, default_value_t = Test::Ping)]
    pub test: Test,
    /// Command ratio of the mixed test.
    #[arg(long, default_value = "register:1,lookup:8,unregister:1")]
    pub mix: Mix,
    /// Random names from a keyspace of this size (u000000000000 ...); default:
    /// sequential unique names PREFIX-N (see --names).
    #[arg(short = 'r', long = "keyspace", value_name = "N")]
    pub keyspace: Option<u64>,
    /// Prefix of sequential names [default: a fresh run id]; reuse one to look up
    /// or unregister the names an earlier run registered.
    #[arg(long = "names", value_name = "PREFIX")]
    pub names: Option<String>,
    /// Open loop: send this many requests per second in all, on schedule, and count
    /// latency from each request's scheduled time.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Fan-out mode: this many extra connections SUBSCRIBE to user.registered and
    /// the report adds the latency of each push.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub subscribers: usize,
    /// Connect with TLS (to a server's --tls-port); needs --cacert.
    #[arg(long, requires = "cacert")]
    pub tls: bool,
    /// PEM file of the CA that signed the server's certificate (with --tls).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (--tls-ca).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw the latency percentile curve into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// With --plot: draw these recorded percentile curves instead of running a
    /// load, one per LABEL=FILE (FILE: "percentile milliseconds" lines, as
    /// redis-benchmark prints its distribution and benches/latency.sh --curves
    /// keeps it).
    #[arg(long, value_name = "LABEL=FILE", requires = "plot")]
    pub curve: Vec<String>,
    /// The title of a --curve plot.
    #[arg(long, value_name = "TEXT", requires = "curve")]
    pub title: Option<String>,
    /// No progress bar (it is shown only on a terminal anyway).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::HelpShort)]
    help: Option<bool>,
}

impl Default for Args {
    fn default() -> Self {
        use clap::FromArgMatches;
        let cmd = <Self as clap::Args>::augment_args(clap::Command::new("bench"));
        let m = cmd
            .try_get_matches_from(["bench"])
            .expect("invariant: every flag has a default");
        Args::from_arg_matches(&m).expect("invariant: defaults parse")
    }
}

/// Why a benchmark could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A flag combination that makes no sense.
    Usage(String),
    /// The host name did not resolve.
    Resolve {
        /// `host:port` as given.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The `--tls` files could not be used.
    Tls(std::io::Error),
    /// A connection could not be opened (or its TLS handshake failed).
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The subscribe hand-shake failed.
    Subscribe(String),
    /// A load thread failed.
    Io(std::io::Error),
    /// The plot could not be drawn.
    Plot(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Resolve { target, source } => write!(f, "cannot resolve {target}: {source}"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            Error::Subscribe(m) => write!(f, "subscribing failed: {m}"),
            Error::Io(e) => write!(f, "load thread failed: {e}"),
            Error::Plot(m) => write!(f, "cannot draw the plot: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. } | Error::Connect { source, .. } => Some(source),
            Error::Io(e) | Error::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl Args {
    fn check(&self) -> Result<(), Error> {
        let usage = |m: &str| Err(Error::Usage(m.to_string()));
        if self.connections == 0 {
            return usage("-c must be at least 1");
        }
        if self.pipeline == 0 {
            return usage("-P must be at least 1");
        }
        if self.threads == 0 || self.threads > self.connections {
            return usage("--threads must be between 1 and the number of connections");
        }
        if self.requests == Some(0) {
            return usage("-n must be at least 1");
        }
        if self.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
            return usage("--duration must be a positive number of seconds");
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return usage("--rate must be a positive number of requests per second");
        }
        if self.tls && self.cacert.is_none() {
            return usage(
                "--tls needs --cacert FILE, the PEM CA that signed the server's certificate",
            );
        }
        if self.cert.is_some() != self.key.is_some() {
            return usage("--cert and --key go together");
        }
        if self.subscribers > 0 && !matches!(self.test, Test::Register | Test::Mixed) {
            return usage("--subscribers needs a test that registers: -t register or mixed");
        }
        if let Some(p) = &self.names {
            let ok = !p.is_empty()
                && p.len() <= MAX_PREFIX_BYTES
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !ok {
                return usage(&format!(
                    "--names: 1-{MAX_PREFIX_BYTES} letters, digits, '_' or '.'"
                ));
            }
        }
        Ok(())
    }
}

/// Runs the benchmark `args` describes and returns its report; the progress bar
/// is drawn on stderr when it is a terminal (and `quiet` is off).
pub fn run(args: &Args) -> Result<Report, Error> {
    args.check()?;
    let target = format!("{}:{}", args.host, args.port);
    let tls = match (args.tls, &args.cacert) {
        (true, Some(ca)) => {
            let opts = TlsOptions {
                cacert: ca.clone(),
                client: args.cert.clone().zip(args.key.clone()),
            };
            Some(transport::client_config(&opts).map_err(Error::Tls)?)
        }
        _ => None,
    };
    let (dialer, first) = Dialer::resolve(&args.host, args.port, tls)?;
    let prefix = args.names.clone().unwrap_or_else(workload::run_id);
    let commits_before = info_field(&dialer, "persistence", "commits");

    let mut load = Vec::with_capacity(args.connections);
    load.push(first);
    for _ in 1..args.connections {
        load.push(dialer.open()?);
    }
    let mut subs = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        subs.push(subscribe(&dialer)?);
    }

    let threads = args.threads;
    let shared = Arc::new(totals::Shared::new(threads));
    let (tx, rx) = mpsc::channel();
    let mut shares: Vec<(Vec<Transport>, Vec<Transport>)> =
        (0..threads).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, s) in load.into_iter().enumerate() {
        shares[i % threads].0.push(s);
    }
    for (i, s) in subs.into_iter().enumerate() {
        shares[i % threads].1.push(s);
    }
    let total = match (args.requests, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_REQUESTS),
    };
    let stamp = args.subscribers > 0;
    let started = Instant::now();
    for (t, (l, s)) in shares.into_iter().enumerate() {
        let quota = total.map(|n| n / threads as u64 + u64::from((t as u64) < n % threads as u64));
        let plan = worker::Plan {
            workload: workload::Workload::new(
                args.test,
                &args.mix,
                args.keyspace,
                &prefix,
                t,
                threads,
                stamp,
                args.pipeline,
            ),
            pipeline: args.pipeline,
            quota,
            deadline: args.duration.map(Duration::from_secs_f64),
            rate: args.rate.map(|r| r / threads as f64),
            stamp_needle: stamp
                .then(|| format!("\"{}\":\"{prefix}:", workload::STAMP_FIELD).into_bytes()),
        };
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                let _ = tx.send(worker::run(l, s, plan, shared));
            })
            .map_err(Error::Io)?;
    }
    drop(tx);

    let bar = progress_bar(args, total);
    let mut results = Vec::with_capacity(threads);
    while results.len() < threads {
        match rx.recv_timeout(PROGRESS_INTERVAL) {
            Ok(r) => results.push(r.map_err(Error::Io)?),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Io(std::io::Error::other("a load thread panicked")));
            }
        }
        if let Some(b) = &bar {
            let done = shared.done.load(Ordering::Relaxed);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            if total.is_some() {
                b.set_position(done);
                b.set_message(format!("{rate:.0} requests/s"));
            } else {
                b.set_position(started.elapsed().as_millis() as u64);
                b.set_message(format!("{done} requests, {rate:.0}/s"));
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let totals = totals::Totals::sum(&results);
    let commits = commits_before.and_then(|before| {
        info_field(&dialer, "persistence", "commits").map(|after| after.saturating_sub(before))
    });
    let report = Report::new(args, &target, &prefix, &totals, commits);
    if let Some(path) = &args.plot {
        plot::draw(&report, path).map_err(Error::Plot)?;
    }
    Ok(report)
}

fn progress_bar(args: &Args, total: Option<u64>) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if args.quiet || args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let (len, template) = match total {
        Some(n) => (n, "{bar:40} {pos}/{len} requests, {msg}, eta {eta}"),
        None => (
            args.duration.map_or(0, |d| (d * 1000.0) as u64),
            "{bar:40} {elapsed} {msg}",
        ),
    };
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}
