//! HELLO: pick the protocol version and introduce the server.
//!
//! # Format
//! `HELLO [protover [AUTH username password] [SETNAME clientname]]` → a map:
//! `server`, `version`, `proto`, `id`, `mode`, `role`, `modules`.
//! `protover` is 2 or 3; anything else → `-NOPROTO unsupported protocol version`.

use super::{Ctx, Outcome, Spec, client::valid_client_name, int_arg};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "hello",
    arity: -1,
    flags: &["fast", "no-auth"],
    summary: "Handshakes with the server, optionally switching to RESP3.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let mut resp3 = ctx.session.resp3;
    let mut name = None;
    if let Some(ver) = args.get(1) {
        match int_arg(ver) {
            Some(2) => resp3 = false,
            Some(3) => resp3 = true,
            Some(_) => {
                ctx.out.error("NOPROTO unsupported protocol version");
                return Outcome::Continue;
            }
            None => {
                ctx.out
                    .error("ERR Protocol version is not an integer or out of range");
                return Outcome::Continue;
            }
        }
        let mut i = 2;
        while let Some(opt) = args.get(i) {
            let left = args.len() - i - 1;
            if opt.eq_ignore_ascii_case(b"AUTH") && left >= 2 {
                let user = args.get(i + 1).unwrap_or_default();
                let pass = args.get(i + 2).unwrap_or_default();
                if let Err(e) = super::auth::check(ctx, user, pass) {
                    ctx.out.error(e);
                    return Outcome::Continue;
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && left >= 1 {
                let n = args.get(i + 1).unwrap_or_default();
                if !valid_client_name(n) {
                    ctx.out.error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                    return Outcome::Continue;
                }
                name = Some(String::from_utf8_lossy(n).into_owned());
                i += 2;
            } else {
                ctx.out.error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                ));
                return Outcome::Continue;
            }
        }
    }
    if !ctx.session.authenticated {
        ctx.out.error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
        return Outcome::Continue;
    }
    ctx.session.resp3 = resp3;
    if let Some(n) = name {
        ctx.session.name = (!n.is_empty()).then_some(n);
    }
    // HELLO's own reply already speaks the version it chose.
    ctx.out.set_resp3(resp3);
    let out = &mut ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"userbus");
    out.bulk(b"version");
    out.bulk(env!("CARGO_PKG_VERSION").as_bytes());
    out.bulk(b"proto");
    out.int(if resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.int(ctx.session.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Outcome::Continue
}
