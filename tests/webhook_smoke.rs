//! Webhooks end to end, smallest case: a receiver on loopback, `WEBHOOK ADD`, two
//! REGISTERs; the receiver gets two POSTs in seq order with the Standard Webhooks
//! headers and a signature it checks itself (ring's HMAC, base64 written here),
//! and LIST counts them delivered.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Debug)]
struct Received {
    request_line: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Accepts connections on `listener` and answers every request 204, sending
/// each request to `tx`.
fn receive(listener: TcpListener, tx: mpsc::Sender<Received>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut writer = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            loop {
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    return;
                }
                let mut headers = BTreeMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    let (k, v) = line.split_once(':').expect("header");
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
                let len: usize = headers
                    .get("content-length")
                    .map_or(0, |v| v.parse().expect("length"));
                let mut body = vec![0; len];
                reader.read_exact(&mut body).expect("body");
                writer
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .expect("answer");
                if tx
                    .send(Received {
                        request_line: request_line.trim_end().to_string(),
                        headers,
                        body,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

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

fn unbase64(text: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = bits << 6 | A.iter().position(|&a| a == c).expect("base64") as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// Checks `r`'s signature as a receiver would.
fn verify(r: &Received) {
    let id = &r.headers["webhook-id"];
    let ts = &r.headers["webhook-timestamp"];
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &unbase64(SECRET.strip_prefix("whsec_").expect("prefix")),
    );
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let want = format!("v1,{}", base64(ring::hmac::sign(&key, &signed).as_ref()));
    assert_eq!(r.headers["webhook-signature"], want, "{r:?}");
}

#[test]
fn a_registration_reaches_the_receiver_signed_and_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook?x=1", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || receive(listener, tx));
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
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a delivery"),
        );
    }
    for (r, (seq, name)) in got.iter().zip([(1, "alice"), (2, "bob")]) {
        assert_eq!(r.request_line, "POST /hook?x=1 HTTP/1.1");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.headers["user-agent"].starts_with("userbus/"));
        assert!(
            r.headers["webhook-id"].ends_with(&format!("_{seq}")),
            "{r:?}"
        );
        let ts: i64 = r.headers["webhook-timestamp"].parse().expect("seconds");
        assert!((ts - common::now_ms() / 1000).abs() < 60);
        let event: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(
            (event["seq"].as_i64(), event["name"].as_str()),
            (Some(seq), Some(name))
        );
        assert_eq!(event["kind"], "user.registered");
        verify(r);
    }
    assert_ne!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/r", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || receive(listener, tx));
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
    let seq = |r: Received| -> i64 {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        v["seq"].as_i64().expect("seq")
    };
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a delivery")
    };
    assert_eq!([seq(next()), seq(next()), seq(next())], [1, 2, 3]);
    let ok: String = redis::cmd("WEBHOOK")
        .arg("REPLAY")
        .arg(id)
        .arg(2)
        .query(&mut c)
        .expect("replay");
    assert_eq!(ok, "OK");
    assert_eq!([seq(next()), seq(next())], [2, 3]);
    server.stop();
}
