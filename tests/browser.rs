//! The page at `/` in a real browser: Debian's `chromium`, headless, driven over
//! the DevTools protocol.
//!
//! `chromium --dump-dom --virtual-time-budget=…` cannot be used here: virtual time
//! stands still while a fetch is pending, and the page keeps one open for good
//! (its `EventSource` on `/events`), so the dump never comes. The DevTools protocol
//! reads the live DOM instead, and so also sees the events that arrive later.
//!
//! Without chromium the test prints a notice and passes, unless
//! `USERBUS_BROWSER_TEST=1` (set by `.ci/run`, which installs chromium) makes a
//! missing browser a failure.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::TestServer;
use common::reply::{call, register_new};
use redis::{ConnectionLike, Value as Redis};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long the browser may take to start, and the page to reach a state.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

/// The chromium binary: `/usr/bin/chromium`, else `chromium` on `PATH`.
fn chromium() -> Option<PathBuf> {
    let fixed = Path::new("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
}

/// A headless chromium this test started; closed (by its pid) when dropped.
struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Events read while waiting for a reply, kept for `wait_event`.
    events: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Chromium says where DevTools listens on stderr; the rest of stderr is kept
        // (drained, so chromium never blocks on it) for failure messages.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                log.lock().expect("log lock").push(line);
            }
        });
        let url = match rx.recv_timeout(BROWSER_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium did not open DevTools within {BROWSER_TIMEOUT:?}; stderr:\n{}",
                    stderr.lock().expect("log lock").join("\n")
                );
            }
        };
        let addr = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("DevTools URL {url:?}"));
        let tcp = TcpStream::connect(addr).expect("connect to DevTools");
        tcp.set_read_timeout(Some(BROWSER_TIMEOUT))
            .expect("timeout");
        let (ws, _) = tungstenite::client(url.as_str(), tcp).expect("DevTools handshake");
        Browser {
            child,
            ws,
            next_id: 1,
            events: Vec::new(),
            stderr,
            _profile: profile,
        }
    }

    /// Sends one DevTools command (to `session`, when given) and returns its result.
    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let v = self.receive(method);
            if v.get("method").is_some() {
                self.events.push(v);
                continue;
            }
            if v["id"] != id {
                continue;
            }
            if let Some(err) = v.get("error") {
                panic!("{method} failed: {err}");
            }
            return v["result"].clone();
        }
    }

    /// The next DevTools message; `waiting_for` names it in a failure.
    fn receive(&mut self, waiting_for: &str) -> Value {
        loop {
            let msg = self.ws.read().unwrap_or_else(|e| {
                panic!(
                    "waiting for {waiting_for}: {e}; chromium stderr:\n{}",
                    self.stderr.lock().expect("log lock").join("\n")
                )
            });
            if let Ok(text) = msg.into_text()
                && !text.is_empty()
            {
                return serde_json::from_str(text.as_str()).expect("DevTools JSON");
            }
        }
    }

    /// Waits for the event `method` from `session`.
    fn wait_event(&mut self, session: &str, method: &str) -> Value {
        let matches = |v: &Value| v["method"] == method && v["sessionId"] == session;
        if let Some(i) = self.events.iter().position(matches) {
            return self.events.remove(i);
        }
        loop {
            let v = self.receive(method);
            if matches(&v) {
                return v;
            }
        }
    }

    /// Opens `url` in a new tab, waits for its load event and returns the tab's
    /// session.
    fn open(&mut self, url: &str) -> String {
        let target = self.send(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.send(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        self.send(Some(&session), "Page.enable", json!({}));
        let nav = self.send(Some(&session), "Page.navigate", json!({ "url": url }));
        if let Some(err) = nav.get("errorText") {
            panic!("navigating to {url}: {err}");
        }
        self.wait_event(&session, "Page.loadEventFired");
        session
    }

    /// Evaluates `expression` in the page, awaiting it if it is a promise; returns
    /// its value.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self.send(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{expression}\nthrew: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Waits (in the page, re-checking on every DOM change) until `condition` is
    /// true, then returns the page's state: the user count, the listed names
    /// (`data-name`), the event lines, the status line, the users list's HTML,
    /// the open user (title, fields, status line; null while none is open), each
    /// chart's model (`{points, max}` by canvas id) and each group's lag.
    fn wait_for(&mut self, session: &str, condition: &str) -> Value {
        let expression = format!(
            r##"new Promise((resolve, reject) => {{
                const state = () => ({{
                    count: document.getElementById("count").textContent,
                    names: [...document.querySelectorAll("#users li")].map((li) => li.dataset.name),
                    events: [...document.querySelectorAll("#events li")].map((li) => li.textContent),
                    status: document.getElementById("status").textContent,
                    usersHtml: document.getElementById("users").outerHTML,
                    user: document.getElementById("user")?.hidden === false ? {{
                        title: document.getElementById("user-title").textContent,
                        fields: Object.fromEntries([...document.querySelectorAll("#user-fields tr[data-field]")]
                            .map((tr) => [tr.dataset.field, tr.querySelector("td").textContent])),
                        status: document.getElementById("user-status").textContent,
                    }} : null,
                    charts: Object.fromEntries([...document.querySelectorAll("canvas")]
                        .map((c) => [c.id, {{ points: Number(c.dataset.points || 0), max: Number(c.dataset.max || 0) }}])),
                    groups: Object.fromEntries([...document.querySelectorAll("#groups tbody tr")]
                        .map((tr) => [tr.dataset.group, tr.querySelector(".lag").textContent])),
                }});
                const ready = (s) => {condition};
                const check = () => {{
                    const s = state();
                    if (ready(s)) {{ observer.disconnect(); clearTimeout(timer); resolve(s); }}
                }};
                const observer = new MutationObserver(check);
                observer.observe(document.body, {{ childList: true, subtree: true, characterData: true, attributes: true }});
                const timer = setTimeout(() => {{
                    observer.disconnect();
                    reject(new Error("not reached in time: " + JSON.stringify(state())));
                }}, {timeout});
                check();
            }})"##,
            timeout = BROWSER_TIMEOUT.as_millis() / 2,
        );
        self.eval(session, &expression)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask politely, then make sure: the child is ours, ended by its pid.
        let _ = self.ws.send(Message::text(
            json!({ "id": 0, "method": "Browser.close" }).to_string(),
        ));
        let _ = self.ws.flush();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chromium binary, or `None` (after a notice) when the test should skip;
/// panics when it is missing and `USERBUS_BROWSER_TEST=1`.
fn chromium_or_skip() -> Option<PathBuf> {
    let binary = chromium();
    if binary.is_none() {
        if std::env::var("USERBUS_BROWSER_TEST").as_deref() == Ok("1") {
            panic!(
                "USERBUS_BROWSER_TEST=1 but no chromium at /usr/bin/chromium or on PATH; \
                 install it with `apt-get install -y chromium` (.ci/run does)"
            );
        }
        eprintln!(
            "skipping the browser test: chromium is not installed \
             (set USERBUS_BROWSER_TEST=1 to make this a failure)"
        );
    }
    binary
}

/// LOOKUP's RESP2 reply as (id, fields); `None` for an unknown user.
fn lookup(redis: &mut redis::Connection, name: &str) -> Option<(i64, BTreeMap<String, String>)> {
    let Redis::Array(items) = call(redis, &["LOOKUP", name]) else {
        return None;
    };
    let (Some(Redis::Int(id)), Some(Redis::Array(flat))) = (items.get(1), items.get(7)) else {
        panic!("LOOKUP {name}: {items:?}");
    };
    let text = |v: &Redis| match v {
        Redis::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8"),
        other => panic!("bulk {other:?}"),
    };
    Some((
        *id,
        flat.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect(),
    ))
}

#[test]
fn page_shows_users_registered_over_resp_and_follows_live_events() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let server = TestServer::start_http();
    let mut redis = server.redis();
    register_new(&mut redis, "alice", &[("email", "alice@example.com")]);
    register_new(&mut redis, "bob", &[]);

    let mut browser = Browser::launch(&binary);
    let tab = browser.open(&server.url("/"));

    // The list, fetched from /users: both names and the count.
    let page = browser.wait_for(&tab, r#"s.names.length === 2 && s.count === "2""#);
    assert_eq!(page["names"], json!(["alice", "bob"]), "{page}");
    let html = page["usersHtml"].as_str().expect("users HTML");
    assert!(
        html.contains(r#"<li data-name="alice">alice</li>"#),
        "alice is not in the users list: {html}"
    );

    // Live: a registration over RESP reaches the page through /events.
    let carol = register_new(&mut redis, "carol", &[]);
    let page = browser.wait_for(
        &tab,
        r#"s.names.includes("carol") && s.events.some((e) => e.includes("user.registered carol"))"#,
    );
    assert_eq!(page["count"], "3", "{page}");
    assert_eq!(page["status"], "live", "{page}");
    // The event line starts with the seq the log gave carol's registration (the
    // newest entry of the log, which nothing trims here).
    let seq = match redis
        .req_command(redis::cmd("XLEN").arg("events"))
        .expect("a reply")
    {
        Redis::Int(n) => n,
        other => panic!("XLEN events: {other:?}"),
    };
    assert!(
        page["events"][0]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("#{seq} user.registered carol "))),
        "carol (id {carol}, seq {seq}): {page}"
    );

    // An unregistration takes the name off the list.
    match redis
        .req_command(redis::cmd("UNREGISTER").arg("bob"))
        .expect("a reply")
    {
        Redis::Int(1) => {}
        other => panic!("UNREGISTER bob: {other:?}"),
    }
    let page = browser.wait_for(&tab, r#"!s.names.includes("bob") && s.count === "2""#);
    assert_eq!(page["names"], json!(["alice", "carol"]), "{page}");

    // The form registers over HTTP; the server has the user, the page shows it.
    browser.eval(
        &tab,
        r#"document.getElementById("name").value = "dave";
           document.getElementById("email").value = "dave@example.com";
           document.getElementById("register").requestSubmit();"#,
    );
    let page = browser.wait_for(
        &tab,
        r#"s.status.startsWith("registered dave") && s.names.includes("dave")"#,
    );
    assert_eq!(page["count"], "3", "{page}");
    let user = redis
        .req_command(redis::cmd("LOOKUP").arg("dave"))
        .expect("a reply");
    let text = format!("{user:?}");
    assert!(
        text.contains("dave@example.com"),
        "LOOKUP dave after the form: {text}"
    );
}

#[test]
fn page_shows_the_last_50_events_on_load_then_live_ones() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let server = TestServer::start_http();
    let mut redis = server.redis();
    for i in 1..=60 {
        register_new(&mut redis, &format!("u{i}"), &[]);
    }
    let mut browser = Browser::launch(&binary);
    let tab = browser.open(&server.url("/"));

    // Seqs 11..=60, newest first; the first ten are not on the page.
    let page = browser.wait_for(&tab, r#"s.events.length === 50 && s.count === "60""#);
    let lines: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e.as_str().expect("event line"))
        .collect();
    for (line, seq) in lines.iter().zip((11..=60).rev()) {
        assert!(
            line.starts_with(&format!("#{seq} user.registered u{seq} ")),
            "{line} for seq {seq}: {page}"
        );
    }
    for i in 1..=10 {
        let name = format!(" u{i} ");
        assert!(
            !lines.iter().any(|l| l.contains(&name)),
            "u{i} is among the events: {page}"
        );
    }

    // Then live: a new event goes on top.
    register_new(&mut redis, "u61", &[]);
    let page = browser.wait_for(&tab, r#"s.events.length === 51 && s.count === "61""#);
    assert!(
        page["events"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("#61 user.registered u61 ")),
        "{page}"
    );
    assert_eq!(page["status"], "live", "{page}");
}

#[test]
fn page_shows_a_users_fields_edits_them_with_patch_and_unregisters() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let server = TestServer::start_http();
    let mut redis = server.redis();
    let id = register_new(
        &mut redis,
        "alice",
        &[("email", "alice@example.com"), ("plan", "free")],
    );
    register_new(&mut redis, "bob", &[]);
    let mut browser = Browser::launch(&binary);
    let tab = browser.open(&server.url("/"));
    browser.wait_for(&tab, r#"s.names.length === 2"#);

    // A click shows the user's fields, from GET /users/alice.
    browser.eval(
        &tab,
        r#"document.querySelector('#users li[data-name="alice"]').click()"#,
    );
    let page = browser.wait_for(&tab, r#"s.user && s.user.fields.plan === "free""#);
    assert_eq!(
        page["user"]["fields"],
        json!({"email": "alice@example.com", "plan": "free"}),
        "{page}"
    );
    assert_eq!(page["user"]["title"], format!("alice (id {id})"), "{page}");

    // The form: a changed value, a removed field and a new one make one merge patch.
    browser.eval(
        &tab,
        r#"document.querySelector('#edit-fields tr[data-field="email"] .value').value = "alice@new.example";
           document.querySelector('#edit-fields tr[data-field="plan"] .remove').checked = true;
           document.getElementById("new-field").value = "team";
           document.getElementById("new-value").value = "blue";
           document.getElementById("edit").requestSubmit();"#,
    );
    let page = browser.wait_for(
        &tab,
        r#"s.user && s.user.status === "saved alice" && s.user.fields.team === "blue""#,
    );
    assert_eq!(
        page["user"]["fields"],
        json!({"email": "alice@new.example", "team": "blue"}),
        "{page}"
    );
    let sent = browser.eval(&tab, r#"document.getElementById("patch-sent").textContent"#);
    assert_eq!(
        sent,
        r#"PATCH /users/alice {"email":"alice@new.example","plan":null,"team":"blue"}"#
    );
    assert_eq!(
        lookup(&mut redis, "alice"),
        Some((
            id,
            BTreeMap::from([
                ("email".to_string(), "alice@new.example".to_string()),
                ("team".to_string(), "blue".to_string()),
            ])
        ))
    );
    // The update came back as an event too.
    browser.wait_for(
        &tab,
        r#"s.events.some((e) => e.includes("user.updated alice"))"#,
    );

    // The button unregisters the user.
    browser.eval(&tab, r#"document.getElementById("unregister").click()"#);
    let page = browser.wait_for(
        &tab,
        r#"!s.names.includes("alice") && s.user && s.user.status === "unregistered alice""#,
    );
    assert_eq!(page["names"], json!(["bob"]), "{page}");
    assert_eq!(lookup(&mut redis, "alice"), None);
}

#[test]
fn page_charts_registrations_and_commit_latency_and_shows_group_lag() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let server = TestServer::start_http();
    let mut redis = server.redis();
    let mut browser = Browser::launch(&binary);
    let tab = browser.open(&server.url("/"));
    // Two readings of /metrics make the first point.
    let page = browser.wait_for(&tab, r#"s.charts["chart-registrations"].points >= 1"#);
    assert_eq!(page["charts"]["chart-registrations"]["max"], 0, "{page}");

    for i in 0..20 {
        register_new(&mut redis, &format!("c{i}"), &[]);
    }
    assert_eq!(
        call(&mut redis, &["XGROUP", "CREATE", "events", "mailer", "0"]),
        Redis::Okay
    );
    let page = browser.wait_for(
        &tab,
        r#"s.charts["chart-registrations"].max > 0 && s.charts["chart-commit"].max > 0
           && s.groups.mailer === "20""#,
    );
    let rate = page["charts"]["chart-registrations"]["max"]
        .as_f64()
        .expect("max");
    assert!(rate > 0.0 && rate <= 20.0 * 1000.0, "{page}");

    // Reading the group moves its lag.
    call(
        &mut redis,
        &[
            "XREADGROUP",
            "GROUP",
            "mailer",
            "m1",
            "COUNT",
            "5",
            "STREAMS",
            "events",
            ">",
        ],
    );
    browser.wait_for(&tab, r#"s.groups.mailer === "15""#);
}

#[test]
fn page_on_a_server_with_a_password_asks_for_it_then_works_live() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    const SECRET: &str = "page-s3cret";
    let server = TestServer::start_http_with(|c| c.requirepass = Some(SECRET.into()));
    let mut redis = server.redis();
    assert_eq!(call(&mut redis, &["AUTH", SECRET]), Redis::Okay);
    register_new(&mut redis, "alice", &[("email", "alice@example.com")]);
    let mut browser = Browser::launch(&binary);
    let tab = browser.open(&server.url("/"));

    let page = browser.wait_for(&tab, r#"s.status.startsWith("authentication required")"#);
    assert_eq!(page["names"], json!([]), "{page}");

    browser.eval(
        &tab,
        &format!(
            r#"document.getElementById("token").value = "{SECRET}";
               document.getElementById("auth").requestSubmit();"#
        ),
    );
    let page = browser.wait_for(
        &tab,
        r#"s.names.includes("alice") && s.status === "live" && s.events.length === 1"#,
    );
    assert_eq!(page["count"], "1", "{page}");
    assert_eq!(
        browser.eval(&tab, r#"sessionStorage.getItem("userbus.token")"#),
        SECRET
    );

    // Live events over the token-started stream; a click and the metrics work too.
    register_new(&mut redis, "bob", &[]);
    browser.wait_for(
        &tab,
        r#"s.names.includes("bob") && s.events.some((e) => e.includes("user.registered bob"))"#,
    );
    browser.eval(
        &tab,
        r#"document.querySelector('#users li[data-name="alice"]').click()"#,
    );
    browser.wait_for(
        &tab,
        r#"s.user && s.user.fields.email === "alice@example.com"
           && s.charts["chart-registrations"].points >= 1"#,
    );

    // A stream the server ended (its token is spent, so the browser's own retry
    // is refused) starts again with a new token, from the last event seen.
    browser.eval(
        &tab,
        r#"source.close(); source.dispatchEvent(new Event("error"));"#,
    );
    register_new(&mut redis, "carol", &[]);
    let page = browser.wait_for(
        &tab,
        r#"s.names.includes("carol") && s.status === "live"
           && s.events.some((e) => e.includes("user.registered carol"))"#,
    );
    assert_eq!(page["events"].as_array().map(Vec::len), Some(3), "{page}");
}
