//! The nats-server harness of `common::nats` checked on its own: one node and a
//! 3-node cluster start, stop, die and come back; the test client writes and reads
//! JetStream messages with their headers; authentication is enforced; nats-py
//! consumes what was published.
//!
//! Without nats-server (or nats-py) these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::time::Duration;

use common::nats::{
    LEADER_TIMEOUT, NatsAuth, NatsCluster, NatsServer, NatsTestClient, StoredMsg, base64_decode,
    nats_available, nats_py_available, run_nats_py_consumer,
};
use serde_json::Value;

/// Publishes `payload` on `subject` with `Nats-Msg-Id: id` and returns the ack's seq.
fn publish(c: &mut NatsTestClient, subject: &str, id: &str, payload: &str) -> u64 {
    let ack = c
        .js_publish(subject, &[("Nats-Msg-Id", id)], payload.as_bytes())
        .expect("an ack");
    assert!(ack.get("error").is_none(), "publish {id}: {ack}");
    ack["seq"].as_u64().expect("seq in ack")
}

/// Checks a stored message against what `publish` sent.
fn assert_msg(m: &StoredMsg, seq: u64, subject: &str, id: &str, payload: &str) {
    assert_eq!(
        (m.seq, m.subject.as_str(), m.msg_id(), m.text().as_str()),
        (seq, subject, Some(id), payload),
        "{m:?}"
    );
}

#[test]
fn base64_decodes_rfc4648_vectors() {
    for (text, bytes) in [
        ("", ""),
        ("Zg==", "f"),
        ("Zm8=", "fo"),
        ("Zm9v", "foo"),
        ("Zm9vYg==", "foob"),
        ("Zm9vYmE=", "fooba"),
        ("Zm9vYmFy", "foobar"),
    ] {
        assert_eq!(base64_decode(text), bytes.as_bytes(), "{text}");
    }
    assert_eq!(base64_decode("/+8="), [0xff, 0xef]);
}

#[test]
fn single_node_stores_messages_with_headers_and_reads_them_back() {
    if !nats_available() {
        return;
    }
    let server = NatsServer::start();
    let mut c = server.client();
    c.create_stream("H", &["h.>"], 1);
    // Payload lengths 3k, 3k+1 and 3k+2 cover each base64 padding.
    let sent = [
        ("h.a", "w-1", "abc"),
        ("h.b", "w-2", r#"{"x":1}"#),
        ("h.a", "w-3", "hello"),
    ];
    for (i, (subject, id, payload)) in sent.iter().enumerate() {
        assert_eq!(publish(&mut c, subject, id, payload), i as u64 + 1);
    }
    let again = c
        .js_publish("h.a", &[("Nats-Msg-Id", "w-2")], b"other")
        .unwrap();
    assert_eq!(again["duplicate"], true, "{again}");

    for (i, (subject, id, payload)) in sent.iter().enumerate() {
        let m = c.stream_msg("H", i as u64 + 1).expect("stored");
        assert_msg(&m, i as u64 + 1, subject, id, payload);
        assert_eq!(m.headers.status, None);
    }
    assert_eq!(c.stream_msg("H", 4), None);
    let all = c.all_msgs("H");
    assert_eq!(all.len(), 3);
    for (m, (i, (subject, id, payload))) in all.iter().zip(sent.iter().enumerate()) {
        assert_msg(m, i as u64 + 1, subject, id, payload);
    }
    assert_eq!(all[1].json(), serde_json::json!({"x": 1}));
    let info = c.stream_info("H");
    assert_eq!(
        (&info["state"]["messages"], &info["config"]["num_replicas"]),
        (&Value::from(3), &Value::from(1))
    );
    assert_eq!(c.try_stream_info("NONE"), None);

    // A plain request and an unheard subject.
    let (h, payload) = c.request("$JS.API.INFO", b"");
    assert_eq!(h.status, None);
    assert!(String::from_utf8_lossy(&payload).contains("account_info_response"));
    assert_eq!(
        c.try_request("nobody.here", &[], b"", Duration::from_secs(2)),
        Err(common::nats::RequestError::NoResponders)
    );
}

#[test]
fn single_node_keeps_its_port_and_store_across_kill9_stop_and_restart() {
    if !nats_available() {
        return;
    }
    let mut server = NatsServer::start();
    let (port, url) = (server.port(), server.url());
    let mut c = server.client();
    c.create_stream("K", &["k.>"], 1);
    publish(&mut c, "k.x", "a-1", "one");

    server.kill9();
    assert!(!server.running());
    assert!(NatsTestClient::connect(&url).is_err());
    server.restart();
    assert_eq!(server.port(), port);
    let mut c = NatsTestClient::connect(&url).expect("connects after restart");
    assert_eq!(publish(&mut c, "k.x", "a-2", "two"), 2);

    server.stop();
    assert!(NatsTestClient::connect(&url).is_err());
    server.restart();
    let mut c = server.client();
    let ids: Vec<_> = c
        .all_msgs("K")
        .iter()
        .map(|m| m.msg_id().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["a-1", "a-2"]);
    assert!(server.log().contains("Server is ready"));
}

#[test]
fn user_password_and_token_servers_refuse_clients_without_them() {
    if !nats_available() {
        return;
    }
    let server = NatsServer::start_with(NatsAuth::user_password("ub", "s3cret"));
    let port = server.port();
    let refused = NatsTestClient::connect(&server.url())
        .err()
        .expect("refused");
    assert!(refused.contains("Authorization Violation"), "{refused}");
    let wrong = NatsTestClient::connect(&format!("nats://ub:wrong@127.0.0.1:{port}"));
    assert!(wrong.is_err());
    assert_eq!(
        server.url_with_auth(),
        format!("nats://ub:s3cret@127.0.0.1:{port}")
    );
    server.client().flush();

    let server = NatsServer::start_with(NatsAuth::Token("t0ken".into()));
    let refused = NatsTestClient::connect(&server.url())
        .err()
        .expect("refused");
    assert!(refused.contains("Authorization Violation"), "{refused}");
    let port = server.port();
    assert!(NatsTestClient::connect(&format!("nats://nope@127.0.0.1:{port}")).is_err());
    NatsTestClient::connect(&format!("nats://t0ken@127.0.0.1:{port}"))
        .expect("token accepted")
        .flush();
}

#[test]
fn cluster_elects_a_new_stream_leader_after_kill9_and_keeps_every_message() {
    if !nats_available() {
        return;
    }
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    let mut c = NatsTestClient::connect(&cluster.urls()).expect("connects");
    let created = c.create_stream("R", &["r.>"], 3);
    assert_eq!(created["config"]["num_replicas"], 3);
    for i in 1..=3 {
        assert_eq!(publish(&mut c, "r.x", &format!("w-{i}"), "before"), i);
    }
    let old = cluster.wait_stream_leader("R", None);

    cluster.kill9(old);
    let live = (0..3).find(|&i| i != old).expect("a live node");
    let mut c = cluster.client(live);
    NatsTestClient::connect(&cluster.urls())
        .expect("a client passes over the dead node")
        .flush();
    // The first publish after the kill waits out the election.
    let ack = c.js_publish_retrying("r.x", &[("Nats-Msg-Id", "w-4")], b"after", LEADER_TIMEOUT);
    assert_eq!(ack["seq"], 4, "{ack}");
    let new = cluster.wait_stream_leader("R", Some(old));
    assert_ne!(new, old);
    assert_eq!(cluster.stream_leader("R"), Some(new));

    cluster.restart(old);
    cluster.wait_current("R");
    assert_eq!(publish(&mut c, "r.x", "w-5", "rejoined"), 5);
    let all = cluster.client(old).all_msgs("R");
    let ids: Vec<_> = all.iter().map(|m| m.msg_id().unwrap_or_default()).collect();
    assert_eq!(ids, ["w-1", "w-2", "w-3", "w-4", "w-5"]);
    let seqs: Vec<_> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    if nats_py_available() {
        let got = run_nats_py_consumer(&cluster.urls(), "R", "r.>", 5);
        let seqs: Vec<_> = got.iter().map(|m| m["seq"].as_u64()).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5].map(Some), "{got:?}");
    }
}

#[test]
fn nats_py_consumer_fetches_and_acks_with_a_durable_consumer() {
    if !nats_py_available() {
        return;
    }
    let server = NatsServer::start();
    let mut c = server.client();
    c.create_stream("P", &["p.>"], 1);
    publish(&mut c, "p.user.registered", "w-1", r#"{"name":"ann"}"#);
    publish(&mut c, "p.other", "w-2", "skip");
    publish(&mut c, "p.user.registered", "w-3", r#"{"name":"bob"}"#);

    let got = run_nats_py_consumer(&server.url(), "P", "p.user.>", 2);
    let expected = serde_json::json!([
        {"seq": 1, "msg_id": "w-1", "subject": "p.user.registered", "data": r#"{"name":"ann"}"#},
        {"seq": 3, "msg_id": "w-3", "subject": "p.user.registered", "data": r#"{"name":"bob"}"#},
    ]);
    assert_eq!(Value::from(got), expected);

    // The durable consumer resumes after what it acked.
    publish(&mut c, "p.user.unregistered", "w-4", r#"{"name":"ann"}"#);
    let got = run_nats_py_consumer(&server.url(), "P", "p.user.>", 1);
    assert_eq!(got[0]["seq"], 4, "{got:?}");
    assert_eq!(got[0]["msg_id"], "w-4");
}
