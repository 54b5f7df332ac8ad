//! The `/webhooks` routes: the same endpoints, checks and store writes as the
//! `WEBHOOK` command (`webhook::admin`), in the same tick transaction.
//!
//! - `GET /webhooks` → 200, an array of endpoints (LIST's keys)
//! - `POST /webhooks` `{"url":..,"secret"?:..,"events"?:[..]}` → 201 `{"id","secret"}`
//! - `GET /webhooks/{id}` → 200 one endpoint, or 404
//! - `DELETE /webhooks/{id}` → 204, or 404
//! - `POST /webhooks/{id}/replay` `{}` → 200 `{"requeued":n}`;
//!   `{"from_seq":n}` → 200 `{"ok":true}`
//! - `GET /webhooks/{id}/dead-letters` → 200, an array of dead letters
//!
//! Bad input is 400 `{"error":..}`, a body that is not `application/json` 415;
//! a follower answers 503 (endpoints change on the primary only).

use serde_json::{Value, json};

use super::router::Env;
use super::{Method, Request, Response};
use crate::store::StorageError;
use crate::webhook::admin::{self, AddError};

/// Dead letters `GET /webhooks/{id}/dead-letters` lists.
const MAX_DEAD_LETTERS: usize = 1000;

/// The methods `path` (under `/webhooks`) allows; `None` when it is no route.
pub fn allowed(path: &str) -> Option<&'static str> {
    match path.strip_prefix("/webhooks")? {
        "" => Some("GET, HEAD, POST"),
        rest => {
            let rest = rest.strip_prefix('/')?;
            match rest.split_once('/') {
                None => Some("GET, HEAD, DELETE"),
                Some((_, "replay")) => Some("POST"),
                Some((_, "dead-letters")) => Some("GET, HEAD"),
                Some(_) => None,
            }
        }
    }
}

/// Answers a request to a `/webhooks` path (`allowed` knows it); `None` for a
/// method the path does not take.
pub fn route(req: &Request, env: &mut Env<'_>) -> Option<Response> {
    let path = req.path.as_str();
    let get = matches!(req.method, Method::Get | Method::Head);
    let rest = path["/webhooks".len()..].trim_start_matches('/');
    let (id_text, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let write = !get;
    let method_ok = match (id_text.is_empty(), tail) {
        (true, _) => get || req.method == Method::Post,
        (false, "") => get || req.method == Method::Delete,
        (false, "replay") => req.method == Method::Post,
        (false, _) => get,
    };
    if !method_ok {
        return None;
    }
    if env.stats.replica.read_only() {
        return Some(Response::error(
            503,
            "read only replica: webhooks live on the primary",
        ));
    }
    if id_text.is_empty() {
        return Some(if get { list(env) } else { create(req, env) });
    }
    let Ok(id) = id_text.parse::<i64>() else {
        return Some(Response::error(404, "no such webhook"));
    };
    if write && req.method == Method::Post {
        return Some(replay(req, id, env));
    }
    Some(match (tail, req.method) {
        ("", Method::Delete) => match env.store().webhook_delete(id) {
            Ok(true) => Response {
                status: 204,
                content_type: "application/json",
                headers: Vec::new(),
                body: Vec::new(),
            },
            Ok(false) => Response::error(404, "no such webhook"),
            Err(e) => storage_failure(&e),
        },
        ("", _) => {
            let last = env.store().counts().last_seq;
            match env.store().webhook(id) {
                Ok(Some(w)) => Response::json(200, &admin::describe_json(&w, last)),
                Ok(None) => Response::error(404, "no such webhook"),
                Err(e) => storage_failure(&e),
            }
        }
        _ => dead_letters(id, env),
    })
}

fn storage_failure(e: &StorageError) -> Response {
    Response::error(503, &format!("storage: {e}"))
}

/// The body as a JSON object; the error response otherwise.
fn json_body(req: &Request, empty_ok: bool) -> Result<serde_json::Map<String, Value>, Response> {
    if empty_ok && req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    if req.content_type.as_deref() != Some("application/json") {
        return Err(Response::error(
            415,
            "send the body as Content-Type: application/json",
        ));
    }
    match serde_json::from_slice(&req.body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(Response::error(400, "the body must be a JSON object")),
        Err(e) => Err(Response::error(400, &format!("invalid JSON: {e}"))),
    }
}

fn list(env: &mut Env<'_>) -> Response {
    let last = env.store().counts().last_seq;
    match env.store().webhooks() {
        Ok(rows) => Response::json(
            200,
            &Value::Array(rows.iter().map(|w| admin::describe_json(w, last)).collect()),
        ),
        Err(e) => storage_failure(&e),
    }
}

fn create(req: &Request, env: &mut Env<'_>) -> Response {
    let obj = match json_body(req, false) {
        Ok(obj) => obj,
        Err(response) => return response,
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "url" | "secret" | "events"))
    {
        return Response::error(400, &format!("unknown key \"{k}\""));
    }
    let Some(url) = obj.get("url").and_then(Value::as_str) else {
        return Response::error(400, "\"url\" must be a string");
    };
    let secret = match obj.get("secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Response::error(400, "\"secret\" must be a string"),
    };
    let kinds: Vec<&str> = match obj.get("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => match items.iter().map(Value::as_str).collect() {
            Some(kinds) => kinds,
            None => return Response::error(400, "\"events\" must be an array of strings"),
        },
        Some(_) => return Response::error(400, "\"events\" must be an array of strings"),
    };
    let allow_private = env.config.webhook_allow_private;
    match admin::add(env.store(), url, secret, &kinds, allow_private) {
        Ok(added) => Response::json(201, &json!({ "id": added.id, "secret": added.secret }))
            .with("Location", format!("/webhooks/{}", added.id)),
        Err(AddError::Storage(e)) => storage_failure(&e),
        Err(e) => Response::error(400, &e.to_string()),
    }
}

fn replay(req: &Request, id: i64, env: &mut Env<'_>) -> Response {
    let obj = match json_body(req, true) {
        Ok(obj) => obj,
        Err(response) => return response,
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "from_seq") {
        return Response::error(400, &format!("unknown key \"{k}\""));
    }
    match obj.get("from_seq") {
        None | Some(Value::Null) => match env.store().webhook_requeue_dead(id) {
            Ok(Some(n)) => Response::json(200, &json!({ "requeued": n })),
            Ok(None) => Response::error(404, "no such webhook"),
            Err(e) => storage_failure(&e),
        },
        Some(v) => {
            let Some(from) = v.as_i64().filter(|n| *n >= 0) else {
                return Response::error(400, "\"from_seq\" must be a non-negative integer");
            };
            match env.store().webhook_rewind(id, from) {
                Ok(true) => Response::json(200, &json!({ "ok": true })),
                Ok(false) => Response::error(404, "no such webhook"),
                Err(e) => storage_failure(&e),
            }
        }
    }
}

fn dead_letters(id: i64, env: &mut Env<'_>) -> Response {
    match env.store().webhook(id) {
        Ok(Some(_)) => {}
        Ok(None) => return Response::error(404, "no such webhook"),
        Err(e) => return storage_failure(&e),
    }
    match env.store().webhook_dead_letters(id, MAX_DEAD_LETTERS) {
        Ok(rows) => Response::json(
            200,
            &Value::Array(
                rows.iter()
                    .map(|d| {
                        json!({
                            "seq": d.seq,
                            "attempts": d.attempts,
                            "last_status": d.last_status,
                            "last_error": d.last_error,
                            "at": crate::clock::rfc3339(d.at),
                        })
                    })
                    .collect(),
            ),
        ),
        Err(e) => storage_failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_webhooks_are_known_by_shape() {
        assert_eq!(allowed("/webhooks"), Some("GET, HEAD, POST"));
        assert_eq!(allowed("/webhooks/3"), Some("GET, HEAD, DELETE"));
        assert_eq!(allowed("/webhooks/3/replay"), Some("POST"));
        assert_eq!(allowed("/webhooks/3/dead-letters"), Some("GET, HEAD"));
        assert_eq!(allowed("/webhooks/3/other"), None);
        assert_eq!(allowed("/webhooksx"), None);
        assert_eq!(allowed("/users"), None);
    }
}
