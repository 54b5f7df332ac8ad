//! Routes: path and method to the registry, health, metrics, the event stream,
//! the webhooks (`webhooks`) and the page. Writes go through the same registry
//! operations as RESP, in the same tick transaction, and produce the same events.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Method, Request, Response, percent_decode, query_param};
use crate::cmd::Ctx;
use crate::config::MAX_USERS_PAGE;
use crate::registry::{self, FieldChanges, Updated, WriteError};
use crate::store::StorageError;
use crate::store::users::UserRef;

/// The page served at `/`.
const PAGE: &str = include_str!("page.html");
/// Users a `GET /users` page holds when no `limit` is given.
const DEFAULT_PAGE: usize = 100;

/// The context a route runs in: the one requests of both protocols share.
pub type Env<'a> = Ctx<'a, ()>;

/// What a request turned into.
#[derive(Debug)]
pub enum Routed {
    /// A response to write.
    Response(Response),
    /// The start of an event stream: first event to send.
    Events {
        /// The first sequence number to send.
        from: i64,
    },
}

/// Answers one request.
pub fn route(req: &Request, env: &mut Env<'_>) -> Routed {
    let path = req.path.as_str();
    let allowed: &str = match path {
        "/" | "/healthz" | "/metrics" | "/events" => "GET, HEAD",
        "/events/token" => "POST",
        "/users" => "GET, HEAD, POST",
        _ if path.starts_with("/users/") => "GET, HEAD, PATCH, DELETE",
        _ => match super::webhooks::allowed(path) {
            Some(allowed) => allowed,
            None => return Routed::Response(Response::error(404, "no such route")),
        },
    };
    // The page holds no data (it asks for the password and sends it on its
    // requests), so it loads without one, like the health check.
    if !matches!(path, "/healthz" | "/")
        && let Some(secret) = env.config.requirepass.as_deref()
    {
        let token = req
            .authorization
            .as_deref()
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !crate::auth::password_matches(token, secret) && !stream_token_redeemed(req, env) {
            let offered = req.authorization.is_some() || query_param(&req.query, "token").is_some();
            env.stats.auth_failures += u64::from(offered);
            return Routed::Response(
                Response::error(
                    401,
                    "authentication required: send Authorization: Bearer <password>",
                )
                .with("WWW-Authenticate", "Bearer"),
            );
        }
    }
    let get = matches!(req.method, Method::Get | Method::Head);
    let response = match (path, req.method) {
        ("/", _) if get => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: PAGE.as_bytes().to_vec(),
        },
        ("/healthz", _) if get => health(env),
        ("/metrics", _) if get => metrics(env),
        // HEAD gets the stream's head only: it must not become a stream.
        ("/events", Method::Head) => Response {
            status: 200,
            content_type: "text/event-stream",
            headers: vec![("Cache-Control", "no-cache".to_string())],
            body: Vec::new(),
        },
        ("/events", Method::Get) => return events_start(req, env),
        ("/events/token", Method::Post) => stream_token(env),
        ("/users", _) if get => list(req, env),
        ("/users", Method::Post) => create(req, env),
        (_, _)
            if path.starts_with("/users/")
                && (get || matches!(req.method, Method::Delete | Method::Patch)) =>
        {
            user(req, &path["/users/".len()..], env)
        }
        _ if path.starts_with("/webhooks") => match super::webhooks::route(req, env) {
            Some(response) => response,
            None => Response::error(405, "method not allowed").with("Allow", allowed),
        },
        _ => Response::error(405, "method not allowed").with("Allow", allowed),
    };
    Routed::Response(response)
}

fn storage_failure(e: &StorageError) -> Response {
    if e.is_loading() {
        return Response::error(503, "loading: the user index is still loading; retry")
            .with("Retry-After", "1");
    }
    Response::error(503, &format!("storage: {e}"))
}

/// A write on a follower: 503, with Redis's READONLY text.
fn read_only() -> Response {
    Response::error(
        503,
        "read only replica: this node follows the NATS stream; write to the primary",
    )
}

fn health(env: &Env<'_>) -> Response {
    let store = env.store_view();
    if let Some(kind) = store.last_error() {
        return Response::error(
            503,
            &format!("storage failing ({kind}): the last commit did not succeed"),
        );
    }
    let checkpoints = store.checkpoint_stats().unwrap_or_default();
    if let Some(kind) = checkpoints.last_error {
        return Response::error(
            503,
            &format!("checkpoints failing ({kind}): the WAL is not copied into the database"),
        );
    }
    Response::text(200, "ok\n")
}

fn metrics(env: &mut Env<'_>) -> Response {
    let groups = env.store_untied().groups().unwrap_or_default();
    let text = crate::metrics::prometheus(&crate::metrics::View {
        stats: env.stats,
        counts: env.store_view().committed_counts(),
        groups: &groups,
        pubsub: env.pubsub,
        storage_error: env.store_view().last_error(),
        loading_percent: env.store_view().loading().map(|p| p.percent),
        index_image: env.store_view().image_stats(),
    });
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        headers: Vec::new(),
        body: text.into_bytes(),
    }
}

/// True for `GET /events?token=…` with a token from `POST /events/token`, which
/// it spends. No other route takes a token: they need the password itself.
fn stream_token_redeemed(req: &Request, env: &mut Env<'_>) -> bool {
    req.path == "/events"
        && req.method == Method::Get
        && query_param(&req.query, "token")
            .is_some_and(|t| env.stream_tokens.redeem(&t, std::time::Instant::now()))
}

/// `POST /events/token`: a token that starts one event stream within a minute,
/// for an `EventSource` (which cannot send `Authorization`).
fn stream_token(env: &mut Env<'_>) -> Response {
    match env.stream_tokens.issue(std::time::Instant::now()) {
        Ok(token) => Response::json(
            200,
            &json!({ "token": token, "expires_in": super::stream_token::TOKEN_TTL.as_secs() }),
        )
        .with("Cache-Control", "no-store"),
        Err(e) => Response::error(503, &format!("no random source for a token: {e}")),
    }
}

fn events_start(req: &Request, env: &Env<'_>) -> Routed {
    let last = env.store_view().committed_counts().last_seq;
    // Last-Event-ID (a reconnect) wins over ?from=; ids are seqs, `N-0` accepted.
    let from = if let Some(id) = &req.last_event_id {
        match id.trim_end_matches("-0").parse::<i64>() {
            Ok(seq) => seq.saturating_add(1),
            Err(_) => {
                return Routed::Response(Response::error(400, "Last-Event-ID must be a seq"));
            }
        }
    } else if let Some(from) = query_param(&req.query, "from") {
        if query_param(&req.query, "last").is_some() {
            return Routed::Response(Response::error(400, "give from or last, not both"));
        }
        match from.parse::<i64>() {
            Ok(seq) => seq.max(0),
            Err(_) => return Routed::Response(Response::error(400, "from must be a seq")),
        }
    } else if let Some(n) = query_param(&req.query, "last") {
        // Seqs have no gaps after the trimmed prefix, so the N newest events are
        // the ones from last - N + 1 (the stream starts at the oldest one kept).
        match n.parse::<i64>() {
            Ok(n) if n >= 0 => last.saturating_sub(n).saturating_add(1).max(1),
            _ => {
                return Routed::Response(Response::error(
                    400,
                    "last must be a non-negative count of events",
                ));
            }
        }
    } else {
        last + 1
    };
    Routed::Events { from }
}

/// Query keys of `GET /users` paging; a unique field of one of these names is
/// looked up with LOOKUPBY only.
const LIST_KEYS: [&str; 3] = ["cursor", "limit", "match"];

fn list(req: &Request, env: &mut Env<'_>) -> Response {
    if env.store_view().has_unique_fields() {
        for pair in req.query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
                return Response::error(400, "malformed percent-encoding in the query");
            };
            let k = String::from_utf8_lossy(&k);
            if !LIST_KEYS.contains(&k.as_ref()) && env.store_view().is_unique_field(&k) {
                return lookup_by(&k, &v, env);
            }
        }
    }
    let cursor = match query_param(&req.query, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.parse::<i64>() {
            Ok(c) if c >= 0 => c,
            _ => return Response::error(400, "cursor must be a non-negative integer"),
        },
    };
    let limit = match query_param(&req.query, "limit").filter(|c| !c.is_empty()) {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(l) if l >= 1 => l.min(MAX_USERS_PAGE),
            _ => return Response::error(400, "limit must be a positive integer"),
        },
    };
    let pattern = query_param(&req.query, "match");
    let page = match registry::users_page(
        env.store(),
        cursor,
        limit,
        pattern.as_deref().map(str::as_bytes),
    ) {
        Ok(page) => page,
        Err(e) => return storage_failure(&e),
    };
    // last_seq lets a reader of the list follow on with /events?from=last_seq+1.
    let last_seq = env.store().counts().last_seq;
    Response::json(
        200,
        &json!({ "users": page.names, "next_cursor": page.next, "last_seq": last_seq }),
    )
}

fn create(req: &Request, env: &mut Env<'_>) -> Response {
    if env.stats.replica.read_only() {
        return read_only();
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, &format!("invalid JSON: {e}")),
    };
    let Some(obj) = body.as_object() else {
        return Response::error(422, "the body must be a JSON object");
    };
    let Some(name) = obj.get("name").and_then(Value::as_str) else {
        return Response::error(422, "\"name\" must be a string");
    };
    let name = match registry::check_name(name.as_bytes()) {
        Ok(n) => n,
        Err(e) => return Response::error(422, e),
    };
    let empty = serde_json::Map::new();
    let fields_obj = match obj.get("fields") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Response::error(422, "\"fields\" must be an object of strings"),
    };
    let mut pairs = Vec::with_capacity(fields_obj.len());
    for (k, v) in fields_obj {
        let Some(v) = v.as_str() else {
            return Response::error(422, &format!("field '{k}' must be a string"));
        };
        pairs.push((k.as_bytes(), v.as_bytes()));
    }
    let fields: BTreeMap<String, String> =
        match registry::check_fields(pairs.len(), pairs.into_iter()) {
            Ok(f) => f,
            Err(e) => return Response::error(422, &e),
        };
    let (store, events, stats) = env.registry();
    match registry::register(store, events, stats, name, fields) {
        Ok(Some(id)) => Response::json(201, &json!({ "id": id, "name": name }))
            .with("Location", format!("/users/{}", percent_encode(name))),
        Ok(None) => Response::error(409, "name taken"),
        Err(e) => write_failure(&e),
    }
}

/// The response to a refused write: 503 for storage, 409 for a unique value
/// another user holds, 422 for a rule the change breaks.
fn write_failure(e: &WriteError) -> Response {
    match e {
        WriteError::Storage(e) => storage_failure(e),
        WriteError::Taken(_) => Response::error(409, &e.to_string()),
        _ => Response::error(422, &e.to_string()),
    }
}

/// `GET /users?<field>=<value>` for a unique field: the user as `GET
/// /users/{name}` answers it, or 404.
fn lookup_by(field: &str, value: &[u8], env: &mut Env<'_>) -> Response {
    let Ok(value) = std::str::from_utf8(value) else {
        return Response::error(404, "no such user");
    };
    match env.store().lookup_by(field, value) {
        Ok(Some(u)) => Response::json(200, &user_json(&u)),
        Ok(None) => Response::error(404, "no such user"),
        Err(e) => storage_failure(&e),
    }
}

/// A user as `GET /users/{name}` answers it.
fn user_json(u: &UserRef<'_>) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "created_at": crate::clock::rfc3339(u.created_at),
        "fields": u.fields.to_map(),
    })
}

/// `PATCH /users/{name}`: a JSON merge patch (RFC 7396) of the user's fields.
fn patch(req: &Request, name: &str, env: &mut Env<'_>) -> Response {
    if env.stats.replica.read_only() {
        return read_only();
    }
    match req.content_type.as_deref() {
        Some("application/json" | "application/merge-patch+json") => {}
        _ => {
            return Response::error(
                415,
                "send the patch as Content-Type: application/merge-patch+json \
                 (or application/json)",
            );
        }
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, &format!("invalid JSON: {e}")),
    };
    let Some(obj) = body.as_object() else {
        return Response::error(
            400,
            "the patch must be a JSON object of fields: a string sets a field, null removes it",
        );
    };
    // The merge patch of the whole user as GET shows it, `{"fields": {...}}`, is
    // the same merge of those fields: no field's value is an object, so the two
    // forms cannot be mistaken for each other.
    let obj = match obj.get("fields") {
        Some(Value::Object(fields)) if obj.len() == 1 => fields,
        _ => obj,
    };
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for (k, v) in obj {
        match v {
            Value::String(v) => set.push((k.as_bytes(), v.as_bytes())),
            Value::Null => remove.push(k.clone()),
            _ => {
                return Response::error(
                    400,
                    &format!("field '{k}' must be a string (to set it) or null (to remove it)"),
                );
            }
        }
    }
    let set = match registry::check_fields(set.len(), set.into_iter()) {
        Ok(f) => f,
        Err(e) => return Response::error(422, &e),
    };
    let changes = FieldChanges { set, remove };
    let (store, events, stats) = env.registry();
    match registry::update(store, events, stats, name, &changes) {
        Ok(Updated::Unknown) => Response::error(404, "no such user"),
        Ok(_) => match env.store().lookup(name) {
            Ok(Some(u)) => Response::json(200, &user_json(&u)),
            Ok(None) => Response::error(404, "no such user"),
            Err(e) => storage_failure(&e),
        },
        Err(e) => write_failure(&e),
    }
}

fn user(req: &Request, encoded: &str, env: &mut Env<'_>) -> Response {
    let Some(raw) = percent_decode(encoded, false) else {
        return Response::error(400, "malformed percent-encoding in the name");
    };
    // A name that breaks the rules cannot exist.
    let Ok(name) = registry::check_name(&raw) else {
        return Response::error(404, "no such user");
    };
    if req.method == Method::Patch {
        return patch(req, name, env);
    }
    if req.method == Method::Delete {
        if env.stats.replica.read_only() {
            return read_only();
        }
        let (store, events, stats) = env.registry();
        return match registry::unregister(store, events, stats, name) {
            Ok(true) => Response {
                status: 204,
                content_type: "application/json",
                headers: Vec::new(),
                body: Vec::new(),
            },
            Ok(false) => Response::error(404, "no such user"),
            Err(e) => storage_failure(&e),
        };
    }
    match env.store().lookup(name) {
        Ok(Some(u)) => Response::json(200, &user_json(&u)),
        Ok(None) => Response::error(404, "no such user"),
        Err(e) => storage_failure(&e),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
