//! The checks and store calls behind `WEBHOOK ...` (RESP) and `/webhooks`
//! (HTTP), so both answer alike; each side only words the replies.

use std::fmt;

use super::engine::Filter;
use super::private::is_private;
use super::sign::Secret;
use super::url::Url;
use crate::store::{StorageError, Store, WebhookRow};

/// Why `WEBHOOK ADD` (or `POST /webhooks`) refused an endpoint.
#[derive(Debug)]
#[non_exhaustive]
pub enum AddError {
    /// The URL cannot be used; the text says why.
    Url(String),
    /// The target is an IP literal in a private range, or `localhost`, and
    /// `--webhook-allow-private` is off.
    Private,
    /// An event kind that does not exist.
    Kind(String),
    /// A secret not written `whsec_` + base64 of 24 to 64 bytes.
    Secret(String),
    /// No secret could be generated (the system's random generator failed).
    Random(String),
    /// The write failed.
    Storage(StorageError),
}

impl fmt::Display for AddError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddError::Url(why) => write!(f, "invalid url: {why}"),
            AddError::Private => f.write_str(
                "webhook target is a private address (start with --webhook-allow-private)",
            ),
            AddError::Kind(why) => f.write_str(why),
            AddError::Secret(why) => write!(f, "invalid secret: {why}"),
            AddError::Random(why) => write!(f, "cannot generate a secret: {why}"),
            AddError::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

/// An endpoint just added: its id and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its id.
    pub id: i64,
    /// Its secret, `whsec_...`.
    pub secret: String,
}

/// Checks a target URL: parses, and refuses a private IP literal or
/// `localhost` unless `allow_private` (names are checked again, once resolved,
/// before every connection).
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, AddError> {
    let url = Url::parse(text).map_err(AddError::Url)?;
    let local_name = url.host == "localhost" || url.host.ends_with(".localhost");
    if !allow_private && (local_name || url.host_ip().is_some_and(is_private)) {
        return Err(AddError::Private);
    }
    Ok(url)
}

/// Adds an endpoint: `secret` is checked (or generated when `None`), `kinds`
/// are the event kinds it receives (none, or `*`, for all). It starts after the
/// last event the tick sees.
pub fn add(
    store: &mut Store,
    url: &str,
    secret: Option<&str>,
    kinds: &[&str],
    allow_private: bool,
) -> Result<Added, AddError> {
    let url = check_url(url, allow_private)?;
    let filter = if kinds.is_empty() {
        Filter::ALL
    } else {
        Filter::parse(&kinds.join(",")).map_err(AddError::Kind)?
    };
    let secret = match secret {
        Some(text) => Secret::parse(text).map_err(AddError::Secret)?,
        None => Secret::generate().map_err(AddError::Random)?,
    };
    let text = secret.text();
    let id = store
        .webhook_add(url.as_str(), &text, &filter.text(), crate::clock::now_ms())
        .map_err(AddError::Storage)?;
    Ok(Added { id, secret: text })
}

/// One value of an endpoint's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

/// An endpoint as LIST, `GET /webhooks` and INFO describe it, in LIST's key
/// order; `last_seq` is the last event the tick sees. Never the secret.
pub fn describe(w: &WebhookRow, last_seq: i64) -> Vec<(&'static str, Value)> {
    let s = &w.state;
    let lag = (last_seq - s.position).max(0) + w.requeued.len() as i64;
    let retrying = s.disabled.is_none() && s.attempt_seq != 0 && s.attempts > 0;
    vec![
        ("id", Value::Int(w.id)),
        ("url", Value::Text(w.url.clone())),
        ("events", Value::Text(w.events.clone())),
        (
            "state",
            Value::Text(
                if s.disabled.is_some() {
                    "disabled"
                } else {
                    "enabled"
                }
                .into(),
            ),
        ),
        (
            "reason",
            Value::Text(s.disabled.clone().unwrap_or_default()),
        ),
        ("position", Value::Int(s.position)),
        ("lag", Value::Int(lag)),
        ("delivered", Value::Int(s.delivered)),
        ("failed", Value::Int(s.failed)),
        ("retrying", Value::Int(i64::from(retrying))),
        ("dead_letters", Value::Int(w.dead_letters)),
        ("last_status", Value::Int(s.last_status)),
        ("last_error", Value::Text(s.last_error.clone())),
    ]
}

/// An endpoint's description as a JSON object.
pub fn describe_json(w: &WebhookRow, last_seq: i64) -> serde_json::Value {
    let map = describe(w, last_seq)
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Int(n) => serde_json::Value::from(n),
                Value::Text(t) => serde_json::Value::from(t),
            };
            (k.to_string(), v)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    #[test]
    fn add_checks_its_input_and_generates_a_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("a.db"), Durability::Normal, 0).expect("open");
        let added = add(&mut store, "https://example.com/h", None, &[], false).expect("added");
        assert!(added.secret.starts_with("whsec_"));
        let row = store.webhook(added.id).expect("read").expect("there");
        assert_eq!(row.secret, added.secret);
        assert_eq!(row.events, "*");
        let err = |r: Result<Added, AddError>| r.expect_err("refused").to_string();
        assert!(err(add(&mut store, "ftp://x/", None, &[], false)).starts_with("invalid url: "));
        for private in [
            "http://127.0.0.1:9/",
            "http://localhost/",
            "http://[::1]/",
            "http://10.1.2.3/",
        ] {
            assert_eq!(
                err(add(&mut store, private, None, &[], false)),
                "webhook target is a private address (start with --webhook-allow-private)"
            );
        }
        assert!(add(&mut store, "http://127.0.0.1:9/", None, &[], true).is_ok());
        assert_eq!(
            err(add(
                &mut store,
                "http://example.com/",
                None,
                &["user.x"],
                false
            )),
            "unknown event kind 'user.x'"
        );
        assert!(
            err(add(
                &mut store,
                "http://example.com/",
                Some("nope"),
                &[],
                false
            ))
            .starts_with("invalid secret: ")
        );
        let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let added = add(
            &mut store,
            "http://example.com/",
            Some(given),
            &["user.updated", "user.registered"],
            false,
        )
        .expect("added");
        assert_eq!(added.secret, given);
        let row = store.webhook(added.id).expect("read").expect("there");
        assert_eq!(row.events, "user.registered,user.updated");
        let keys: Vec<&str> = describe(&row, 0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "id",
                "url",
                "events",
                "state",
                "reason",
                "position",
                "lag",
                "delivered",
                "failed",
                "retrying",
                "dead_letters",
                "last_status",
                "last_error"
            ]
        );
    }
}
