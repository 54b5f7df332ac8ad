//! Commands: the table of every command, argument checks shared by all, and the
//! context a command runs in. One command (or one family of subcommands) a file.

use crate::config::Config;
use crate::conn::Session;
use crate::events::Event;
use crate::metrics::Stats;
use crate::protocol::{Args, Reply};
use crate::pubsub::PubSub;
use crate::store::{StorageError, Store};

mod auth;
mod client;
mod command;
mod config;
mod echo;
mod hello;
mod info;
mod lookup;
mod ping;
mod quit;
mod register;
mod select;
mod subscribe;
mod unregister;
mod usercount;
mod users;
mod xack;
mod xadd;
mod xclaim;
mod xgroup;
mod xinfo;
mod xlen;
mod xpending;
mod xrange;
mod xread;
mod xreadgroup;

pub use client::describe as describe_client;
pub use xread::Wait;

/// What the reactor must do after a command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Go on with the next request.
    Continue,
    /// Stop reading; close once the replies are flushed (QUIT).
    Close,
    /// A cross-protocol request: stop reading and close, replying nothing to it.
    Drop,
    /// The command needs a view of every connection (CLIENT LIST, CLIENT INFO):
    /// the reactor writes the reply itself, in place.
    ClientList(ClientFilter),
    /// XREAD BLOCK found nothing: the connection waits for entries or a timeout,
    /// and its later requests wait behind it.
    Block(Wait),
}

/// Which connections CLIENT LIST describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFilter {
    /// Every connection.
    All,
    /// The one asking (CLIENT INFO).
    This,
    /// These client ids.
    Ids(Vec<u64>),
    /// Connections with (true) or without (false) subscriptions.
    PubSub(bool),
}

/// What a command may see and touch while it runs.
pub struct Ctx<'a> {
    /// The reply encoder over the connection's output.
    pub out: Reply<'a>,
    /// The client's settings.
    pub session: &'a mut Session,
    /// The database, inside the tick's transaction.
    store: &'a mut Store,
    /// Set when the command touched storage (its reply depends on the commit).
    pub used_storage: &'a mut bool,
    /// Events the tick produced, dispatched after its commit.
    pub events: &'a mut Vec<Event>,
    /// The server's settings.
    pub config: &'a Config,
    /// Counters and gauges for INFO.
    pub stats: &'a mut Stats,
    /// The subscription index.
    pub pubsub: &'a mut PubSub,
    /// The connection's key in the reactor (its pubsub identity).
    pub key: usize,
}

impl<'a> Ctx<'a> {
    /// A context for one request.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        out: Reply<'a>,
        session: &'a mut Session,
        store: &'a mut Store,
        used_storage: &'a mut bool,
        events: &'a mut Vec<Event>,
        config: &'a Config,
        stats: &'a mut Stats,
        pubsub: &'a mut PubSub,
        key: usize,
    ) -> Self {
        Ctx {
            out,
            session,
            store,
            used_storage,
            events,
            config,
            stats,
            pubsub,
            key,
        }
    }

    /// The store; using it ties this request's reply to the tick's commit.
    pub fn store(&mut self) -> &mut Store {
        *self.used_storage = true;
        self.store
    }

    /// The store, the tick's events and the counters, for the registry's
    /// operations (which tie the reply to the commit like `store`).
    pub fn registry(&mut self) -> (&mut Store, &mut Vec<Event>, &mut Stats) {
        *self.used_storage = true;
        (self.store, self.events, self.stats)
    }

    /// The store with the reply encoder, for replies written straight from what
    /// the store lends (tied to the commit like `store`).
    pub fn store_and_out(&mut self) -> (&mut Store, &mut Reply<'a>) {
        *self.used_storage = true;
        (self.store, &mut self.out)
    }

    /// The store for counters that do not depend on the commit (INFO).
    pub fn store_view(&self) -> &Store {
        self.store
    }

    /// Replies `-ERR storage: ...`.
    pub fn storage_error(&mut self, e: &StorageError) {
        self.out.error(&format!("ERR storage: {e}"));
    }
}

/// A command's entry in the table.
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// Flags reported by COMMAND.
    pub flags: &'static [&'static str],
    /// One line for COMMAND DOCS.
    pub summary: &'static str,
    /// Runs it; arity is already checked.
    pub run: fn(&Args<'_>, &mut Ctx<'_>) -> Outcome,
}

/// Every command, in the order COMMAND lists them.
pub static COMMANDS: &[Spec] = &[
    ping::SPEC,
    echo::SPEC,
    quit::SPEC,
    hello::SPEC,
    auth::SPEC,
    select::SPEC,
    command::SPEC,
    client::SPEC,
    config::SPEC,
    info::SPEC,
    register::SPEC,
    unregister::SPEC,
    lookup::SPEC,
    users::SPEC,
    usercount::SPEC,
    subscribe::SUBSCRIBE,
    subscribe::PSUBSCRIBE,
    subscribe::UNSUBSCRIBE,
    subscribe::PUNSUBSCRIBE,
    xlen::SPEC,
    xrange::XRANGE,
    xrange::XREVRANGE,
    xread::SPEC,
    xgroup::SPEC,
    xreadgroup::SPEC,
    xack::SPEC,
    xpending::SPEC,
    xclaim::XCLAIM,
    xclaim::XAUTOCLAIM,
    xinfo::SPEC,
    xadd::XADD,
    xadd::XDEL,
    xadd::XTRIM,
    xadd::XSETID,
];

/// Commands a RESP2 client may run while subscribed (Redis's rule).
const SUBSCRIBED_ALLOWED: [&str; 6] = [
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "ping",
    "quit",
];

/// Finds a command by name, ignoring case.
pub fn find(name: &[u8]) -> Option<&'static Spec> {
    find_index(name).map(|(_, s)| s)
}

/// Finds a command and its index in `COMMANDS`.
fn find_index(name: &[u8]) -> Option<(usize, &'static Spec)> {
    COMMANDS
        .iter()
        .enumerate()
        .find(|(_, s)| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Runs one request and writes its reply.
pub fn execute(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some(name) = args.get(0) else {
        return Outcome::Continue;
    };
    if is_cross_protocol(name) {
        ctx.stats.cross_protocol_attempts += 1;
        return Outcome::Drop;
    }
    let Some((index, spec)) = find_index(name) else {
        ctx.stats.unknown_commands += 1;
        unknown_command(args, ctx);
        return Outcome::Continue;
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        wrong_arity(spec.name, ctx);
        return Outcome::Continue;
    }
    if !ctx.session.authenticated && !matches!(spec.name, "auth" | "hello" | "ping" | "quit") {
        ctx.out.error(crate::auth::NOAUTH);
        return Outcome::Continue;
    }
    if !ctx.session.resp3
        && ctx.session.subscriptions() > 0
        && !SUBSCRIBED_ALLOWED.contains(&spec.name)
    {
        ctx.out.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
             are allowed in this context",
            spec.name
        ));
        return Outcome::Continue;
    }
    ctx.stats.commands += 1;
    if let Some(n) = ctx.stats.command_calls.get_mut(index) {
        *n += 1;
    }
    let last = &mut ctx.session.last_cmd;
    last.clear();
    last.push_str(spec.name);
    // Commands with subcommands are named `client|list`, as Redis shows them.
    if matches!(spec.name, "client" | "config" | "command")
        && let Some(sub) = args.get(1)
    {
        last.push('|');
        last.push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
    }
    (spec.run)(args, ctx)
}

/// `-ERR unknown command 'x', with args beginning with: 'a' 'b' `, as Redis words
/// it: raw bytes, the name cut at 128 bytes, arguments while the list is under 128
/// bytes, each cut where a C string would end (NUL) or at the room left.
fn unknown_command(args: &Args<'_>, ctx: &mut Ctx<'_>) {
    fn c_str(b: &[u8], max: usize) -> &[u8] {
        let end = memchr::memchr(0, b).unwrap_or(b.len()).min(max);
        &b[..end]
    }
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(c_str(args.get(0).unwrap_or_default(), 128));
    text.extend_from_slice(b"', with args beginning with: ");
    let mut quoted = 0;
    for a in args.iter_from(1) {
        if quoted >= 128 {
            break;
        }
        let a = c_str(a, 128 - quoted);
        text.push(b'\'');
        text.extend_from_slice(a);
        text.extend_from_slice(b"' ");
        quoted += a.len() + 3;
    }
    ctx.out.error_bytes(&text);
}

/// Requests that open an HTTP exchange (`POST /...`, `Host: ...`): a browser page
/// talking to the RESP port, which must not get to run commands (Redis's
/// cross-protocol scripting guard). The connection closes without a reply.
pub fn is_cross_protocol(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
}

/// `-ERR wrong number of arguments for 'x' command`.
pub fn wrong_arity(name: &str, ctx: &mut Ctx<'_>) {
    ctx.out.error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ));
}

/// `-ERR unknown subcommand 'x'. Try CMD HELP.`
pub fn unknown_subcommand(cmd: &str, sub: &[u8], ctx: &mut Ctx<'_>) {
    let sub = String::from_utf8_lossy(sub);
    let sub: String = sub.chars().take(128).collect();
    ctx.out.error(&format!(
        "ERR unknown subcommand '{sub}'. Try {} HELP.",
        cmd.to_ascii_uppercase()
    ));
}

/// `-ERR syntax error`.
pub fn syntax_error(ctx: &mut Ctx<'_>) {
    ctx.out.error("ERR syntax error");
}

/// `-ERR value is not an integer or out of range`.
pub fn not_an_integer(ctx: &mut Ctx<'_>) {
    ctx.out.error("ERR value is not an integer or out of range");
}

/// Parses a bulk as an `i64` with Redis's strictness.
pub fn int_arg(arg: &[u8]) -> Option<i64> {
    crate::protocol::request::parse_int(arg)
}

/// The group commands' stream key: `events` only. Replies the error otherwise.
pub fn group_stream(key: &[u8], ctx: &mut Ctx<'_>) -> bool {
    match crate::stream::stream(key) {
        Ok(crate::stream::Stream::Events) => true,
        Ok(crate::stream::Stream::Dead) => {
            ctx.out
                .error("ERR consumer groups read the 'events' stream, not 'events.dead'");
            false
        }
        Err(e) => {
            ctx.out.error(&e);
            false
        }
    }
}

/// A group or consumer name as text; replies the error for one that is not UTF-8.
pub fn name_arg<'b>(arg: &'b [u8], what: &str, ctx: &mut Ctx<'_>) -> Option<&'b str> {
    match std::str::from_utf8(arg) {
        Ok(s) => Some(s),
        Err(_) => {
            ctx.out
                .error(&format!("ERR {what} names must be valid UTF-8"));
            None
        }
    }
}

/// `-NOGROUP No such key 'events' or consumer group 'g'` (XREADGROUP, XPENDING,
/// XCLAIM wording).
pub fn no_group(group: &str, ctx: &mut Ctx<'_>, suffix: &str) {
    ctx.out.error(&format!(
        "NOGROUP No such key 'events' or consumer group '{group}'{suffix}"
    ));
}

/// `-NOGROUP No such consumer group 'g' for key name 'events'` (XGROUP, XINFO
/// wording).
pub fn no_such_group(group: &str, ctx: &mut Ctx<'_>) {
    ctx.out.error(&format!(
        "NOGROUP No such consumer group '{group}' for key name 'events'"
    ));
}
