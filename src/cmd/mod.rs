//! Commands: the table of every command, argument checks shared by all, and the
//! context a command runs in. One command (or one family of subcommands) a file.

use crate::protocol::Args;

mod auth;
mod backup;
mod client;
mod command;
mod config;
mod ctx;
mod echo;
mod hello;
mod info;
mod lookup;
mod lookupby;
mod ping;
mod quit;
mod register;
mod replicaof;
mod reset;
mod select;
mod subscribe;
mod unregister;
mod update;
mod usercount;
mod users;
mod webhook;
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

pub use backup::{Backups, Job as BackupJob};
pub use client::describe as describe_client;
pub use ctx::{Ctx, Shared};
pub use replicaof::PROMOTION_WAIT;
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
pub static COMMANDS: &[Spec] = &TABLE;

const TABLE: [Spec; 42] = [
    ping::SPEC,
    echo::SPEC,
    quit::SPEC,
    reset::SPEC,
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
    update::UPDATE,
    update::DELFIELDS,
    lookupby::SPEC,
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
    backup::SPEC,
    replicaof::REPLICAOF,
    replicaof::SLAVEOF,
    webhook::SPEC,
];

/// Commands a RESP2 client may run while subscribed (Redis's rule).
const SUBSCRIBED_ALLOWED: [&str; 7] = [
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];

/// Finds a command by name, ignoring case.
pub fn find(name: &[u8]) -> Option<&'static Spec> {
    find_index(name).map(|(_, s)| s)
}

/// Longest name a [`NameKey`] holds; no command name is longer.
const KEY_NAME_BYTES: usize = 15;

/// A name folded to lowercase and packed with its length into one integer, so
/// that finding a command is a hash probe and an integer compare instead of a
/// case-insensitive string compare per table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameKey(u128);

impl NameKey {
    /// The key of a name as sent; `None` when it is longer than every command's.
    fn of(name: &[u8]) -> Option<NameKey> {
        if name.len() > KEY_NAME_BYTES {
            return None;
        }
        // Loaded in word-sized pieces: a byte-wise copy to the stack read back as
        // one integer stalls on store forwarding.
        let (low, high) = name.split_at(name.len().min(8));
        let bytes = u128::from(load_le(low)) | u128::from(load_le(high)) << 64;
        let folded = ascii_lowercase_16(bytes);
        // The length goes in the last byte, which no name reaches.
        Some(NameKey(
            folded | (name.len() as u128) << (8 * KEY_NAME_BYTES),
        ))
    }

    /// The key of a name known at compile time.
    const fn of_static(name: &str) -> NameKey {
        let name = name.as_bytes();
        assert!(
            name.len() <= KEY_NAME_BYTES,
            "command name too long for NameKey"
        );
        let mut bytes = [0u8; 16];
        let mut i = 0;
        while i < name.len() {
            bytes[i] = name[i].to_ascii_lowercase();
            i += 1;
        }
        bytes[KEY_NAME_BYTES] = name.len() as u8;
        NameKey(u128::from_le_bytes(bytes))
    }

    /// Its first slot in `SLOTS` (Fibonacci hashing of the folded key).
    const fn slot(self) -> usize {
        let folded = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOT_BITS)) as usize
    }
}

/// Up to eight bytes as a little-endian integer (missing high bytes are zero).
fn load_le(b: &[u8]) -> u64 {
    let n = b.len();
    if let (Some(head), Some(tail)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        if let Some(all) = b.first_chunk::<8>() {
            return u64::from_le_bytes(*all);
        }
        // 4 to 7 bytes: two overlapping words; the bytes both hold are the same.
        let head = u64::from(u32::from_le_bytes(*head));
        let tail = u64::from(u32::from_le_bytes(*tail));
        return head | tail << (8 * (n - 4));
    }
    // 0 to 3 bytes: the first, middle and last cover them all.
    match (b.first(), b.get(n / 2), b.last()) {
        (Some(&first), Some(&mid), Some(&last)) => {
            u64::from(first) | u64::from(mid) << (8 * (n / 2)) | u64::from(last) << (8 * (n - 1))
        }
        _ => 0,
    }
}

/// `to_ascii_lowercase` of each of the sixteen bytes of `x` at once: a byte in
/// `A..=Z` gets its 0x20 bit set, every other byte stays as it is.
fn ascii_lowercase_16(x: u128) -> u128 {
    const ONES: u128 = u128::MAX / 0xff;
    const HIGH: u128 = ONES * 0x80;
    // Each byte's low seven bits, plus a bias, carry into its high bit exactly
    // when the byte is at least 'A' (or above 'Z'); no sum leaves its byte.
    let low = x & (ONES * 0x7f);
    let from_a = low + ONES * u128::from(0x80 - b'A');
    let past_z = low + ONES * u128::from(0x80 - b'Z' - 1);
    // Upper case: at least 'A', not above 'Z', and ASCII (high bit clear).
    let upper = from_a & !past_z & !x & HIGH;
    x | (upper >> 2)
}

/// The key of every entry of `COMMANDS`, at the same index.
static KEYS: [NameKey; TABLE.len()] = {
    let mut keys = [NameKey(0); TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        keys[i] = NameKey::of_static(TABLE[i].name);
        i += 1;
    }
    keys
};

const SLOT_BITS: u32 = 7;
/// A free slot of `SLOTS`.
const NO_COMMAND: u8 = u8::MAX;

/// An open-addressing hash table of `COMMANDS` indices by `NameKey::slot`,
/// collisions taking the next free slot. Kept at most half full, so a probe for a
/// name that is no command soon meets a free slot.
static SLOTS: [u8; 1 << SLOT_BITS] = {
    let mut slots = [NO_COMMAND; 1 << SLOT_BITS];
    assert!(TABLE.len() <= slots.len() / 2 && TABLE.len() < NO_COMMAND as usize);
    let mut i = 0;
    while i < TABLE.len() {
        let key = KEYS[i];
        let mut slot = key.slot();
        while slots[slot] != NO_COMMAND {
            assert!(
                KEYS[slots[slot] as usize].0 != key.0,
                "two commands share a name"
            );
            slot = (slot + 1) % slots.len();
        }
        slots[slot] = i as u8;
        i += 1;
    }
    slots
};

/// Finds a command and its index in `COMMANDS`.
fn find_index(name: &[u8]) -> Option<(usize, &'static Spec)> {
    NameKey::of(name).and_then(find_key)
}

fn find_key(key: NameKey) -> Option<(usize, &'static Spec)> {
    let mut slot = key.slot();
    loop {
        let index = usize::from(*SLOTS.get(slot)?);
        if index == usize::from(NO_COMMAND) {
            return None;
        }
        if KEYS.get(index) == Some(&key) {
            return COMMANDS.get(index).map(|spec| (index, spec));
        }
        slot = (slot + 1) % SLOTS.len();
    }
}

// Requests that open an HTTP exchange (`POST /...`, `Host: ...`): a browser page
// talking to the RESP port, which must not get to run commands (Redis's
// cross-protocol scripting guard). The connection closes without a reply.
const POST: NameKey = NameKey::of_static("post");
const HOST: NameKey = NameKey::of_static("host:");

/// Runs one request and writes its reply.
// Inlined into the reactor's request loop: it runs once per request, and called
// out of line it costs PING about 30 instructions (callgrind).
#[inline(always)]
pub fn execute(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some(name) = args.get(0) else {
        return Outcome::Continue;
    };
    let key = NameKey::of(name);
    let Some((index, spec)) = key.and_then(find_key) else {
        // Neither cross-protocol name is a command: they are looked for here only.
        if matches!(key, Some(POST | HOST)) {
            ctx.stats.cross_protocol_attempts += 1;
            return Outcome::Drop;
        }
        ctx.stats.unknown_commands += 1;
        unknown_command(args, ctx);
        return Outcome::Continue;
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        wrong_arity(spec.name, ctx);
        return Outcome::Continue;
    }
    // Redis's CMD_NO_AUTH commands (AUTH, HELLO, QUIT, RESET) are the only ones
    // before AUTH; PING is not among them.
    if !ctx.session.authenticated && !spec.flags.contains(&"no-auth") {
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
    if ctx.stats.replica.read_only() && crate::replica::USER_WRITES.contains(&spec.name) {
        ctx.out.error(crate::replica::READONLY);
        return Outcome::Continue;
    }
    ctx.stats.commands += 1;
    if let Some(n) = ctx.stats.command_calls.get_mut(index) {
        *n += 1;
    }
    ctx.session.last_cmd = spec.name;
    // Commands with subcommands are named `client|list`, as Redis shows them.
    if matches!(spec.name, "client" | "config" | "command" | "webhook") {
        ctx.session.last_sub = args
            .get(1)
            .map(|sub| String::from_utf8_lossy(sub).to_ascii_lowercase());
    } else if ctx.session.last_sub.is_some() {
        ctx.session.last_sub = None;
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
    match crate::events::stream::stream(key) {
        Ok(crate::events::stream::Stream::Events) => true,
        Ok(crate::events::stream::Stream::Dead) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_found_in_any_case() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            let lower = spec.name.as_bytes().to_vec();
            let upper = spec.name.to_ascii_uppercase().into_bytes();
            let mixed: Vec<u8> = lower
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    if j % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        *c
                    }
                })
                .collect();
            for name in [lower, upper, mixed] {
                let (index, found) = find_index(&name).expect("found");
                assert_eq!(index, i);
                assert_eq!(found.name, spec.name);
            }
        }
    }

    #[test]
    fn lowercasing_sixteen_bytes_matches_byte_by_byte() {
        // Every byte value in every position.
        for base in 0..=255u8 {
            let bytes: [u8; 16] = std::array::from_fn(|i| base.wrapping_add(i as u8));
            let want = bytes.map(|b| b.to_ascii_lowercase());
            let got = ascii_lowercase_16(u128::from_le_bytes(bytes)).to_le_bytes();
            assert_eq!(got, want, "{bytes:?}");
        }
    }

    #[test]
    fn load_le_reads_any_short_slice() {
        let data: Vec<u8> = (1..=8).collect();
        for n in 0..=8 {
            let mut want = [0u8; 8];
            want[..n].copy_from_slice(&data[..n]);
            assert_eq!(load_le(&data[..n]), u64::from_le_bytes(want), "{n}");
        }
    }

    #[test]
    fn near_names_are_not_commands() {
        for name in [
            &b""[..],
            b"pin",
            b"pingg",
            b"ping\0",
            b"\0ping",
            b"p\0ng",
            b"PING ",
            b"xautoclaimxxxxxx",
            b"punsubscribe1234567",
            b"P\xc9NG",
            b"\xd0ing",
        ] {
            assert!(find(name).is_none(), "{name:?}");
        }
    }

    /// The guard as Redis states it: the name, in any case.
    fn is_cross_protocol(name: &[u8]) -> bool {
        name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
    }

    #[test]
    fn cross_protocol_keys_match_the_check() {
        for name in [
            &b"POST"[..],
            b"post",
            b"Host:",
            b"HOST:",
            b"host",
            b"posts",
            b"host\x1a",
            b"GET",
        ] {
            let by_key = matches!(NameKey::of(name), Some(POST | HOST));
            assert_eq!(by_key, is_cross_protocol(name), "{name:?}");
        }
        // `execute` looks for them only among names that are not commands.
        assert!(find(b"post").is_none() && find(b"host:").is_none());
    }
}
