//! Fuzzes command argument handling: the input is parsed as a pipeline of RESP or
//! inline requests, and each request runs through the real command table
//! (`cmd::execute`, which `userbus::fuzzing` re-exports) against a real SQLite
//! store, one tick per input, the way the reactor runs them (minus sockets). The
//! pure argument helpers (names, fields, stream ids, globs, retention specs,
//! integers) also get every argument.
//!
//! The store lives in a temporary directory and is replaced every
//! `INPUTS_PER_STORE` inputs, so what earlier inputs registered stays bounded.
#![no_main]

use std::cell::RefCell;
use std::path::PathBuf;
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use userbus::config::{Config, Durability, Limits, Retention};
use userbus::fuzzing::{
    self, Backups, COMMANDS, Ctx, Outcome, PubSub, Session, Shared, Stats, glob, registry, stream,
};
use userbus::protocol::request::parse_int;
use userbus::protocol::{Args, Parsed, Reply, RequestParser};
use userbus::store::Store;

/// Requests run per input at most (a pipeline of thousands adds nothing).
const MAX_REQUESTS: usize = 32;
/// Inputs a store serves before a fresh one replaces it.
const INPUTS_PER_STORE: u64 = 20_000;

struct Env {
    dir: PathBuf,
    /// What the commands share: the store (replaced now and then), settings,
    /// counters, the subscription index and the tick's events.
    shared: Option<Shared>,
    inputs: u64,
}

impl Env {
    fn new() -> Env {
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Env {
            dir,
            shared: None,
            inputs: 0,
        }
    }

    /// Counts an input, replacing the store when it is due.
    fn next_input(&mut self) {
        if self.inputs.is_multiple_of(INPUTS_PER_STORE) {
            // The old store closes before its files go.
            let (config, stats) = match self.shared.take() {
                Some(old) => (old.config, old.stats),
                None => (
                    Config::default(),
                    Stats::new(0, COMMANDS.iter().map(|c| c.name)),
                ),
            };
            let db = self.dir.join("fuzz.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            self.shared = Some(Shared {
                store: Store::open(&db, Durability::Normal, 0).expect("open store"),
                events: Vec::new(),
                config,
                stats,
                pubsub: PubSub::default(),
                backups: Backups::default(),
                stream_tokens: Default::default(),
            });
        }
        self.inputs += 1;
    }
}

/// The store directories are `<temp>/userbus-fuzz-<pid>`.
const DIR_PREFIX: &str = "userbus-fuzz-";

/// libFuzzer ends the process with `exit`, so no destructor removes the store: each
/// run removes the directories of runs whose process is gone (where /proc tells).
fn remove_stale_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

thread_local! {
    static ENV: RefCell<Env> = RefCell::new(Env::new());
}

fn session() -> Session {
    Session::new(1)
}

/// The pure helpers commands use on their arguments; checks what they promise.
fn helpers(args: &Args<'_>) {
    let mut prev: &[u8] = b"";
    for arg in args.iter_from(0) {
        if let Ok(name) = registry::check_name(arg) {
            assert_eq!(name.as_bytes(), arg);
            assert!(!name.is_empty() && name.len() <= userbus::config::MAX_NAME_BYTES);
        }
        let _ = registry::check_field_name(arg);
        let _ = stream::stream(arg);
        if let (Ok(start), Ok(end)) = (stream::range_start(arg), stream::range_end(arg)) {
            assert!(start >= 0 && end >= -1);
        }
        let _ = stream::read_after(arg, 42);
        if let Ok(seq) = stream::exact_id(arg) {
            let _ = stream::id_text(seq);
        }
        if let Some(n) = parse_int(arg) {
            assert_eq!(
                n.to_string().as_bytes(),
                arg,
                "parse_int accepts only canonical text"
            );
        }
        if let Ok(text) = std::str::from_utf8(arg) {
            if let Ok(r) = Retention::from_str(text) {
                let shown = r.to_string();
                assert_eq!(
                    Retention::from_str(&shown),
                    Ok(r),
                    "{text:?} shown as {shown:?}"
                );
            }
            let _ = Durability::from_str(text);
        }
        // Patterns and texts are short on the wire; keep the product bounded too.
        if prev.len() <= 256 && arg.len() <= 256 {
            let _ = glob::matches(prev, arg);
        }
        if !arg.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')) {
            assert!(glob::matches(arg, arg), "a literal pattern matches itself");
        }
        assert!(glob::matches(b"*", arg));
        prev = arg;
    }
    let pairs: Vec<(&[u8], &[u8])> = args
        .iter_from(0)
        .collect::<Vec<_>>()
        .chunks_exact(2)
        .map(|kv| (kv[0], kv[1]))
        .collect();
    let _ = registry::check_fields(pairs.len(), pairs.into_iter());
}

fuzz_target!(|data: &[u8]| {
    ENV.with(|env| {
        let mut env = env.borrow_mut();
        env.next_input();
        let Env { shared, inputs, .. } = &mut *env;
        let shared = shared.as_mut().expect("invariant: next_input opened it");
        let mut parser = RequestParser::new(Limits::default());
        let mut session = session();
        shared.pubsub = PubSub::default();
        shared.events.clear();
        let mut out = Vec::new();
        let mut start = 0;
        for _ in 0..MAX_REQUESTS {
            let window = &data[start..];
            let consumed = match parser.parse(window) {
                Ok(Parsed::Request { consumed }) => consumed,
                Ok(Parsed::Empty { consumed }) => {
                    start += consumed;
                    continue;
                }
                Ok(Parsed::Incomplete) | Err(_) => break,
            };
            let args = parser.args(window);
            helpers(&args);
            out.clear();
            let resp3 = session.resp3;
            let mut ctx = Ctx::new(shared, Reply::new(&mut out, resp3), &mut session, 1);
            let outcome = fuzzing::execute(&args, &mut ctx);
            start += consumed;
            match outcome {
                Outcome::Close | Outcome::Drop => break,
                // A blocked request holds back the rest of the connection's input.
                Outcome::Block(_) => break,
                Outcome::Continue | Outcome::ClientList(_) => {}
            }
        }
        let _ = shared.store.finish_tick();
        if inputs.is_multiple_of(256) {
            shared.store.checkpoint();
        }
    });
});
