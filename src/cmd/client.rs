//! CLIENT: the connection's own settings.
//!
//! # Format
//! - `CLIENT ID` → `:id`
//! - `CLIENT SETNAME name` → `+OK` (an empty name clears it)
//! - `CLIENT GETNAME` → the name, or nil
//! - `CLIENT SETINFO LIB-NAME|LIB-VER value` → `+OK`
//! - `CLIENT LIST [TYPE normal|pubsub] [ID id ...]` / `CLIENT INFO` → one line per
//!   connection, as Redis formats it

use super::{ClientFilter, Ctx, Outcome, Spec, int_arg, unknown_subcommand, wrong_arity};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "client",
    arity: -2,
    flags: &["admin"],
    summary: "Inspects and names the connection.",
    run,
};

/// Client names are printable ASCII without spaces, as in Redis.
pub fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let sub = args.get(1).unwrap_or_default().to_ascii_lowercase();
    let n = args.len();
    match (sub.as_slice(), n) {
        (b"id", 2) => ctx.out.int(ctx.session.id as i64),
        (b"getname", 2) => match &ctx.session.name {
            Some(name) => ctx.out.bulk(name.as_bytes()),
            None => ctx.out.null(),
        },
        (b"setname", 3) => {
            let name = args.get(2).unwrap_or_default();
            if valid_client_name(name) {
                ctx.session.name =
                    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
                ctx.out.ok();
            } else {
                ctx.out.error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
        }
        (b"setinfo", 4) => {
            let attr = args.get(2).unwrap_or_default();
            let value = args.get(3).unwrap_or_default();
            if !valid_client_name(value) {
                ctx.out.error(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(attr)
                ));
            } else if attr.eq_ignore_ascii_case(b"lib-name") {
                ctx.session.lib_name = Some(String::from_utf8_lossy(value).into_owned());
                ctx.out.ok();
            } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                ctx.session.lib_ver = Some(String::from_utf8_lossy(value).into_owned());
                ctx.out.ok();
            } else {
                ctx.out.error(&format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(attr)
                ));
            }
        }
        (b"list", _) => match list_filter(args) {
            Ok(f) => return Outcome::ClientList(f),
            Err(e) => ctx.out.error(e),
        },
        (b"info", 2) => return Outcome::ClientList(ClientFilter::This),
        (b"id" | b"getname" | b"setname" | b"setinfo" | b"info", _) => {
            wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub)), ctx)
        }
        _ => unknown_subcommand("client", args.get(1).unwrap_or_default(), ctx),
    }
    Outcome::Continue
}

/// Parses `CLIENT LIST`'s options.
fn list_filter(args: &Args<'_>) -> Result<ClientFilter, &'static str> {
    let opt = args.get(2);
    match opt {
        None => Ok(ClientFilter::All),
        Some(o) if o.eq_ignore_ascii_case(b"type") && args.len() == 4 => {
            let t = args.get(3).unwrap_or_default().to_ascii_lowercase();
            match t.as_slice() {
                b"normal" => Ok(ClientFilter::PubSub(false)),
                b"pubsub" => Ok(ClientFilter::PubSub(true)),
                // No replicas or masters here: those lists are empty.
                b"master" | b"replica" | b"slave" => Ok(ClientFilter::Ids(Vec::new())),
                _ => Err("ERR Unknown client type"),
            }
        }
        Some(o) if o.eq_ignore_ascii_case(b"id") && args.len() > 3 => args
            .iter_from(3)
            .map(|a| int_arg(a).filter(|&n| n > 0).map(|n| n as u64))
            .collect::<Option<Vec<u64>>>()
            .map(ClientFilter::Ids)
            .ok_or("ERR Invalid client ID"),
        Some(_) => Err("ERR syntax error"),
    }
}

/// One CLIENT LIST line (with its trailing newline) for a connection.
pub fn describe(
    s: &crate::session::Session,
    peer: Option<std::net::SocketAddr>,
    local: Option<std::net::SocketAddr>,
) -> String {
    let fmt_addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    format!(
        "id={} addr={} laddr={} name={} age={} idle={} db=0 sub={} psub={} cmd={}{}{} resp={} lib-name={} lib-ver={}\n",
        s.id,
        fmt_addr(peer),
        fmt_addr(local),
        s.name.as_deref().unwrap_or(""),
        s.since.elapsed().as_secs(),
        s.last_active.elapsed().as_secs(),
        s.channels.len(),
        s.patterns.len(),
        s.last_cmd,
        if s.last_sub.is_some() { "|" } else { "" },
        s.last_sub.as_deref().unwrap_or(""),
        if s.resp3 { 3 } else { 2 },
        s.lib_name.as_deref().unwrap_or(""),
        s.lib_ver.as_deref().unwrap_or(""),
    )
}
