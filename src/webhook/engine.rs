//! The delivery engine's decisions, without I/O: which event an endpoint sends
//! next, when, and what an attempt's outcome does to it. The reactor
//! (`reactor/webhooks.rs`) reads the log, runs the transport and stores what
//! changed; everything it decides is decided here.
//!
//! Order: one request in flight per endpoint, events in seq order. Dead letters
//! requeued by `WEBHOOK REPLAY id` go first, lowest seq first; then the events
//! after the endpoint's position that its filter lets through. An event that
//! keeps failing is retried per the schedule (±20% jitter), then becomes a dead
//! letter and the endpoint moves on. `410 Gone` disables the endpoint and
//! dead-letters that event; a private target, or failing for
//! `--webhook-disable-after` without a success, disable it holding its place
//! until it is enabled or rewound.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::sign::Secret;
use super::url::Url;
use crate::events::EventKind;
use crate::store::{WebhookDeadLetter, WebhookRow, WebhookState};

/// The reason LIST shows for an endpoint disabled by a `410 Gone` answer.
pub const GONE: &str = "410 Gone";
/// The reason LIST shows for an endpoint whose target is a private address.
pub const PRIVATE: &str = "private address";
/// The `user-agent` deliveries carry.
pub const USER_AGENT: &str = concat!("userbus/", env!("CARGO_PKG_VERSION"));
/// Most characters of a failure kept as `last_error`.
const MAX_ERROR_CHARS: usize = 200;

/// The event kinds an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter(u8);

const KINDS: [EventKind; 3] = [
    EventKind::Registered,
    EventKind::Unregistered,
    EventKind::Updated,
];

impl Filter {
    /// Every kind.
    pub const ALL: Filter = Filter(0b111);

    fn bit(kind: EventKind) -> u8 {
        match kind {
            EventKind::Registered => 1,
            EventKind::Unregistered => 2,
            EventKind::Updated => 4,
        }
    }

    /// Reads `*` or kinds separated by commas; the error names the first
    /// unknown kind (`unknown event kind 'x'`).
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut bits = 0;
        for part in text.split(',').map(str::trim) {
            if part == "*" {
                bits = Filter::ALL.0;
                continue;
            }
            match KINDS.iter().find(|k| k.as_str() == part) {
                Some(&k) => bits |= Filter::bit(k),
                None => return Err(format!("unknown event kind '{part}'")),
            }
        }
        Ok(Filter(bits))
    }

    /// As stored and listed: `*`, or the kinds separated by commas.
    pub fn text(self) -> String {
        if self == Filter::ALL {
            return "*".into();
        }
        KINDS
            .iter()
            .filter(|&&k| self.matches(k))
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True when events of `kind` go to the endpoint.
    pub fn matches(self, kind: EventKind) -> bool {
        self.0 & Filter::bit(kind) != 0
    }
}

/// How retries go: the delays between attempts, and how long an endpoint may
/// fail before it is disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Delay before attempt 2, 3, ...; an event gets `len + 1` attempts.
    pub schedule: Vec<Duration>,
    /// Failing this long without a success disables the endpoint.
    pub disable_after: Duration,
}

/// What one attempt came to, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered with this status.
    Answered(u16),
    /// No answer: connect, TLS or protocol failure, or a timeout.
    Failed(String),
    /// The target resolved to a private address (without `--webhook-allow-private`).
    Refused(String),
}

/// What applying an outcome did.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Delivered; `from_dead` when it was a requeued dead letter.
    Delivered {
        /// The event was a requeued dead letter (its row goes).
        from_dead: bool,
    },
    /// Tried again at this time (Unix ms).
    Retry {
        /// When.
        at_ms: i64,
    },
    /// Out of attempts: this dead letter is stored and the endpoint moves on.
    DeadLetter(WebhookDeadLetter),
    /// The endpoint is disabled for this reason. After a `410 Gone` the event
    /// is a dead letter (`dead`) and the endpoint has moved past it; otherwise
    /// the event stays next.
    Disabled {
        /// Why.
        why: String,
        /// The event, dead-lettered (after a 410).
        dead: Option<WebhookDeadLetter>,
    },
}

/// What an endpoint sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A requeued dead letter: exactly this seq.
    Dead(i64),
    /// The first event after this seq that the filter lets through.
    After(i64),
}

/// One endpoint as the engine keeps it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its id.
    pub id: i64,
    /// Its target, as given.
    pub url: String,
    /// Its target, parsed once; the error when the stored text is not a URL
    /// (each attempt then fails with it).
    pub target: Result<Arc<Url>, String>,
    /// Its signing secret.
    pub secret: Secret,
    /// The kinds it receives.
    pub filter: Filter,
    /// Its delivery state, as stored after the last tick that changed it.
    pub state: WebhookState,
    /// Dead letters requeued by REPLAY, ascending: they go first.
    pub requeued: VecDeque<i64>,
    /// Dead letters not requeued.
    pub dead_letters: i64,
    /// The seq of the request in flight.
    pub in_flight: Option<i64>,
    /// The state changed since it was last stored.
    pub dirty: bool,
}

impl Endpoint {
    /// The endpoint a stored row describes; the error when its secret or filter
    /// cannot be read (a row edited by hand).
    pub fn from_row(row: WebhookRow) -> Result<Endpoint, String> {
        Ok(Endpoint {
            id: row.id,
            secret: Secret::parse(&row.secret).map_err(|e| format!("secret: {e}"))?,
            filter: Filter::parse(&row.events)?,
            target: Url::parse(&row.url).map(Arc::new),
            url: row.url,
            state: row.state,
            requeued: row.requeued.into(),
            dead_letters: row.dead_letters,
            in_flight: None,
            dirty: false,
        })
    }

    /// True while it delivers.
    pub fn enabled(&self) -> bool {
        self.state.disabled.is_none()
    }

    /// True when an event waits for its next attempt.
    pub fn retrying(&self) -> bool {
        self.state.attempt_seq != 0 && self.state.attempts > 0
    }

    /// Its figures for INFO and `/metrics`.
    pub fn status(&self) -> super::status::Status {
        super::status::Status {
            id: self.id,
            enabled: self.enabled(),
            delivered: self.state.delivered,
            failed: self.state.failed,
            retrying: self.enabled() && self.retrying(),
            position: self.state.position,
            requeued: self.requeued.len() as i64,
            last_status: self.state.last_status,
            dead_letters: self.dead_letters,
        }
    }

    /// Where it goes on from; `None` while disabled or a request is in flight.
    pub fn target(&self) -> Option<Target> {
        if !self.enabled() || self.in_flight.is_some() {
            return None;
        }
        Some(match self.requeued.front() {
            Some(&seq) => Target::Dead(seq),
            None => Target::After(self.state.position),
        })
    }

    /// When an attempt at `seq` may go (Unix ms): now for a new event, the
    /// stored time for one being retried.
    pub fn due_at(&self, seq: i64) -> i64 {
        if self.state.attempt_seq == seq {
            self.state.next_attempt_at
        } else {
            0
        }
    }

    /// Passes over events up to `seq` that it does not receive (or that are no
    /// longer in the log).
    pub fn skip_to(&mut self, seq: i64) {
        if seq > self.state.position {
            self.state.position = seq;
            self.dirty = true;
        }
    }

    /// Drops a requeued dead letter whose event is no longer in the log.
    pub fn drop_requeued(&mut self, seq: i64) {
        if self.requeued.front() == Some(&seq) {
            self.requeued.pop_front();
        }
    }

    /// A request for `seq` went out.
    pub fn sent(&mut self, seq: i64) {
        self.in_flight = Some(seq);
    }

    /// Applies the outcome of the attempt at the event in flight, `seq`, at
    /// `now_ms`; `jitter` is a random number in `0..1`.
    pub fn apply(
        &mut self,
        seq: i64,
        attempt: &Attempt,
        policy: &Policy,
        now_ms: i64,
        jitter: f64,
    ) -> Verdict {
        self.in_flight = None;
        self.dirty = true;
        let from_dead = self.requeued.front() == Some(&seq);
        let s = &mut self.state;
        if let Attempt::Answered(status @ 200..=299) = attempt {
            s.delivered += 1;
            s.last_status = i64::from(*status);
            s.last_error.clear();
            s.failing_since = None;
            s.attempt_seq = 0;
            s.attempts = 0;
            s.next_attempt_at = 0;
            if from_dead {
                self.requeued.pop_front();
            } else {
                s.position = s.position.max(seq);
            }
            return Verdict::Delivered { from_dead };
        }
        s.failed += 1;
        let (status, error) = match attempt {
            Attempt::Answered(status) => (*status, format!("HTTP {status}")),
            Attempt::Failed(why) | Attempt::Refused(why) => (0, why.clone()),
        };
        s.last_status = i64::from(status);
        s.last_error = error.chars().take(MAX_ERROR_CHARS).collect();
        let since = *s.failing_since.get_or_insert(now_ms);
        if s.attempt_seq != seq {
            s.attempt_seq = seq;
            s.attempts = 0;
        }
        s.attempts += 1;
        let disabled = match attempt {
            Attempt::Refused(_) => Some(PRIVATE.to_string()),
            Attempt::Answered(410) => Some(GONE.to_string()),
            _ if now_ms.saturating_sub(since) >= millis(policy.disable_after) => {
                Some(format!("failing since {}", crate::clock::rfc3339(since)))
            }
            _ => None,
        };
        if let Some(why) = disabled {
            s.next_attempt_at = 0;
            s.disabled = Some(why.clone());
            // The target said the endpoint is gone: that event is not tried
            // again (REPLAY brings it back); ENABLE goes on after it. Otherwise
            // the event stays next and ENABLE tries it again at once.
            let dead = (*attempt == Attempt::Answered(410)).then(|| self.dead_letter(seq, now_ms));
            return Verdict::Disabled { why, dead };
        }
        let attempts = usize::try_from(s.attempts).unwrap_or(usize::MAX);
        match policy.schedule.get(attempts - 1) {
            Some(&delay) => {
                let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
                s.next_attempt_at = now_ms.saturating_add((millis(delay) as f64 * factor) as i64);
                Verdict::Retry {
                    at_ms: s.next_attempt_at,
                }
            }
            None => Verdict::DeadLetter(self.dead_letter(seq, now_ms)),
        }
    }

    /// Makes the event being tried, `seq`, a dead letter and moves past it.
    fn dead_letter(&mut self, seq: i64, now_ms: i64) -> WebhookDeadLetter {
        let s = &mut self.state;
        let dead = WebhookDeadLetter {
            seq,
            attempts: s.attempts,
            last_status: s.last_status,
            last_error: s.last_error.clone(),
            at: now_ms,
        };
        s.attempt_seq = 0;
        s.attempts = 0;
        s.next_attempt_at = 0;
        if self.requeued.front() == Some(&seq) {
            self.requeued.pop_front();
        } else {
            s.position = s.position.max(seq);
        }
        self.dead_letters += 1;
        dead
    }

    /// The headers of an attempt at event `seq` with body `body` at Unix time
    /// `timestamp` (seconds); `writer` is the database's writer id, which makes
    /// the `webhook-id` distinct per event and stable across retries, replays
    /// and restarts.
    pub fn headers(
        &self,
        writer: &str,
        seq: i64,
        timestamp: i64,
        body: &[u8],
    ) -> Vec<(&'static str, Cow<'static, str>)> {
        let id = message_id(writer, seq);
        let signature = self.secret.sign(&id, timestamp, body);
        vec![
            ("webhook-id", id.into()),
            ("webhook-timestamp", timestamp.to_string().into()),
            ("webhook-signature", signature.into()),
            ("content-type", Cow::Borrowed("application/json")),
            ("user-agent", Cow::Borrowed(USER_AGENT)),
        ]
    }
}

/// The `webhook-id` of event `seq`: `msg_<writer>_<seq>`.
pub fn message_id(writer: &str, seq: i64) -> String {
    format!("msg_{writer}_{seq}")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::from_row(WebhookRow {
            id: 1,
            url: "http://example.com/".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: "*".into(),
            created_at: 0,
            state: WebhookState {
                position: 10,
                ..WebhookState::default()
            },
            dead_letters: 0,
            requeued: Vec::new(),
        })
        .expect("valid row")
    }

    fn policy() -> Policy {
        Policy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(60)],
            disable_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn filters_parse_list_and_match() {
        assert_eq!(Filter::parse("*"), Ok(Filter::ALL));
        let f = Filter::parse("user.updated,user.registered").expect("parses");
        assert_eq!(f.text(), "user.registered,user.updated");
        assert!(f.matches(EventKind::Updated) && !f.matches(EventKind::Unregistered));
        assert_eq!(Filter::ALL.text(), "*");
        assert_eq!(
            Filter::parse("user.registered,user.deleted"),
            Err("unknown event kind 'user.deleted'".into())
        );
    }

    #[test]
    fn a_delivery_moves_the_position_and_clears_the_failure() {
        let mut e = endpoint();
        assert_eq!(e.target(), Some(Target::After(10)));
        e.sent(11);
        assert_eq!(e.target(), None, "one in flight");
        let v = e.apply(11, &Attempt::Answered(204), &policy(), 1000, 0.5);
        assert_eq!(v, Verdict::Delivered { from_dead: false });
        assert_eq!((e.state.position, e.state.delivered), (11, 1));
        assert_eq!(e.target(), Some(Target::After(11)));
        assert!(e.dirty);
    }

    #[test]
    fn failures_retry_on_schedule_with_jitter_then_dead_letter() {
        let mut e = endpoint();
        let p = policy();
        e.sent(11);
        let v = e.apply(11, &Attempt::Answered(500), &p, 1000, 0.0);
        assert_eq!(v, Verdict::Retry { at_ms: 1000 + 4000 });
        assert_eq!(e.due_at(11), 5000);
        assert_eq!(e.due_at(12), 0);
        assert!(e.retrying());
        e.sent(11);
        let v = e.apply(11, &Attempt::Failed("timeout".into()), &p, 6000, 1.0);
        assert_eq!(
            v,
            Verdict::Retry {
                at_ms: 6000 + 72_000
            }
        );
        assert_eq!(
            (e.state.last_status, e.state.last_error.as_str()),
            (0, "timeout")
        );
        e.sent(11);
        let v = e.apply(11, &Attempt::Answered(503), &p, 80_000, 0.5);
        let Verdict::DeadLetter(dead) = v else {
            panic!("not dead-lettered: {v:?}");
        };
        assert_eq!((dead.seq, dead.attempts, dead.last_status), (11, 3, 503));
        assert_eq!(
            (e.state.position, e.dead_letters, e.state.failed),
            (11, 1, 3)
        );
        assert!(!e.retrying());
        assert_eq!(e.state.failing_since, Some(1000), "no success yet");
    }

    #[test]
    fn gone_and_private_targets_disable_at_once() {
        let mut e = endpoint();
        e.sent(11);
        let v = e.apply(11, &Attempt::Answered(410), &policy(), 1000, 0.5);
        let Verdict::Disabled {
            why,
            dead: Some(dead),
        } = v
        else {
            panic!("not disabled with a dead letter: {v:?}");
        };
        assert_eq!((why.as_str(), dead.seq, dead.last_status), (GONE, 11, 410));
        assert_eq!(e.target(), None);
        assert_eq!(e.state.position, 11, "ENABLE goes on after it");
        let mut e = endpoint();
        e.sent(11);
        let refused = Attempt::Refused("10.0.0.1".into());
        let v = e.apply(11, &refused, &policy(), 1000, 0.5);
        let want = Verdict::Disabled {
            why: PRIVATE.into(),
            dead: None,
        };
        assert_eq!(v, want);
        assert_eq!(e.state.position, 10, "the event stays next");
    }

    #[test]
    fn failing_past_the_limit_disables() {
        let mut e = endpoint();
        let p = Policy {
            schedule: vec![Duration::from_secs(1); 10],
            disable_after: Duration::from_secs(10),
        };
        e.sent(11);
        e.apply(11, &Attempt::Answered(500), &p, 1000, 0.5);
        e.sent(11);
        let v = e.apply(11, &Attempt::Answered(500), &p, 11_000, 0.5);
        let Verdict::Disabled { why, dead: None } = v else {
            panic!("still enabled: {v:?}");
        };
        assert!(
            why.starts_with("failing since 1970-01-01T00:00:01"),
            "{why}"
        );
    }

    #[test]
    fn requeued_dead_letters_go_first_and_leave_when_delivered() {
        let mut e = endpoint();
        e.requeued = [3, 7].into();
        assert_eq!(e.target(), Some(Target::Dead(3)));
        e.sent(3);
        let v = e.apply(3, &Attempt::Answered(200), &policy(), 1000, 0.5);
        assert_eq!(v, Verdict::Delivered { from_dead: true });
        assert_eq!(e.state.position, 10, "the position is not rewound");
        assert_eq!(e.target(), Some(Target::Dead(7)));
        e.drop_requeued(7);
        assert_eq!(e.target(), Some(Target::After(10)));
    }

    #[test]
    fn headers_carry_a_verifiable_signature() {
        let e = endpoint();
        let h = e.headers("abc", 42, 1_614_265_330, b"{}");
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_ref());
        assert_eq!(get("webhook-id"), Some("msg_abc_42"));
        assert_eq!(get("webhook-timestamp"), Some("1614265330"));
        assert_eq!(
            get("webhook-signature"),
            Some(e.secret.sign("msg_abc_42", 1_614_265_330, b"{}").as_str())
        );
        assert_eq!(get("content-type"), Some("application/json"));
        assert!(get("user-agent").is_some_and(|u| u.starts_with("userbus/")));
    }
}
