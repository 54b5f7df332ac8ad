//! Webhooks end to end, smallest case: a receiver on loopback, `WEBHOOK ADD`, two
//! REGISTERs; the receiver gets two POSTs in seq order with the Standard Webhooks
//! headers and a signature it checks itself (ring's HMAC, base64 written here),
//! and LIST counts them delivered. The receiver is `common::webhook::Receiver`,
//! answering 204.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use common::nats::base64_decode;
use common::webhook::{Received, Receiver, always};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `bytes` in padded standard base64, as the signature header carries them.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Checks `r`'s signature as a receiver would.
fn verify(r: &Received) {
    let id = r.webhook_id();
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &base64_decode(SECRET.strip_prefix("whsec_").expect("prefix")),
    );
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let want = format!("v1,{}", base64(ring::hmac::sign(&key, &signed).as_ref()));
    assert_eq!(r.header("webhook-signature"), Some(want.as_str()), "{r:?}");
}

#[test]
fn a_registration_reaches_the_receiver_signed_and_in_order() {
    let receiver = Receiver::start();
    receiver.script(always(204));
    let url = receiver.url("/hook?x=1");
    let server = TestServer::start_fast(|c| c.webhook_allow_private = true);
    let mut c = server.redis();
    let added: Vec<redis::Value> = redis::cmd("WEBHOOK")
        .arg("ADD")
        .arg(&url)
        .arg("SECRET")
        .arg(SECRET)
        .query(&mut c)
        .expect("added");
    assert_eq!(added.len(), 4, "{added:?}");
    for name in ["alice", "bob"] {
        let id: i64 = redis::cmd("REGISTER")
            .arg(name)
            .query(&mut c)
            .expect("registered");
        assert!(id > 0);
    }
    let got = receiver.wait_for(2, Duration::from_secs(10));
    for (r, (seq, name)) in got.iter().zip([(1, "alice"), (2, "bob")]) {
        assert_eq!(r.request_line(), "POST /hook?x=1 HTTP/1.1");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("user-agent")
                .is_some_and(|a| a.starts_with("userbus/"))
        );
        assert!(r.webhook_id().ends_with(&format!("_{seq}")), "{r:?}");
        let ts: i64 = r
            .header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("seconds");
        assert!((ts - common::now_ms() / 1000).abs() < 60);
        let event = r.json();
        assert_eq!(
            (event["seq"].as_i64(), event["name"].as_str()),
            (Some(seq), Some(name))
        );
        assert_eq!(event["kind"], "user.registered");
        verify(r);
    }
    assert_ne!(got[0].webhook_id(), got[1].webhook_id());
    // The outcome is committed in the tick after the answer: wait for LIST.
    let mut delivered = 0;
    for _ in 0..100 {
        let list: Vec<BTreeMap<String, redis::Value>> = redis::cmd("WEBHOOK")
            .arg("LIST")
            .query(&mut c)
            .expect("list");
        delivered = match list[0].get("delivered") {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        };
        if delivered == 2 {
            assert_eq!(list[0].get("position"), Some(&redis::Value::Int(2)));
            assert_eq!(list[0].get("lag"), Some(&redis::Value::Int(0)));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(delivered, 2);
    server.stop();
}

#[test]
fn replay_from_a_seq_delivers_again_in_order() {
    let receiver = Receiver::start();
    receiver.script(always(204));
    let url = receiver.url("/r");
    let server = TestServer::start_fast(|c| c.webhook_allow_private = true);
    let mut c = server.redis();
    let added: BTreeMap<String, redis::Value> = redis::cmd("WEBHOOK")
        .arg("ADD")
        .arg(&url)
        .query(&mut c)
        .expect("added");
    let Some(redis::Value::Int(id)) = added.get("id") else {
        panic!("{added:?}");
    };
    for name in ["a", "b", "c"] {
        let _: i64 = redis::cmd("REGISTER")
            .arg(name)
            .query(&mut c)
            .expect("registered");
    }
    let seqs = |n: usize| -> Vec<i64> {
        let got = receiver.wait_for(n, Duration::from_secs(10));
        got.iter().map(Received::seq).collect()
    };
    assert_eq!(seqs(3), [1, 2, 3]);
    let ok: String = redis::cmd("WEBHOOK")
        .arg("REPLAY")
        .arg(id)
        .arg(2)
        .query(&mut c)
        .expect("replay");
    assert_eq!(ok, "OK");
    assert_eq!(seqs(5)[3..], [2, 3]);
    server.stop();
}
