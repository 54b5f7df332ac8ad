//! The one context every request runs in, RESP command or HTTP route: the
//! server's shared state (the store inside the tick's transaction, the tick's
//! events, settings, counters, subscriptions), the client's session, and the
//! output. Reaching the store through it ties the request's reply to the tick's
//! commit, for both protocols alike.

use super::Backups;
use crate::config::Config;
use crate::events::Event;
use crate::events::PubSub;
use crate::http::stream_token::StreamTokens;
use crate::metrics::Stats;
use crate::protocol::Reply;
use crate::session::Session;
use crate::store::{StorageError, Store};

/// What every request may touch of the server, owned by the reactor.
pub struct Shared {
    /// The database; writes go into the tick's transaction.
    pub store: Store,
    /// Events the tick produced, dispatched after its commit.
    pub events: Vec<Event>,
    /// The server's settings.
    pub config: Config,
    /// Counters and gauges.
    pub stats: Stats,
    /// The subscription index.
    pub pubsub: PubSub,
    /// The backup under way and the last one's outcome.
    pub backups: Backups,
    /// The one-use tokens that start an event stream (`POST /events/token`).
    pub stream_tokens: StreamTokens,
}

/// What a request may see and touch while it runs. `O` is its output: a RESP
/// reply encoder for commands; HTTP routes return their response instead (`()`).
pub struct Ctx<'a, O = Reply<'a>> {
    /// The reply encoder over the connection's output.
    pub out: O,
    /// The client's settings.
    pub session: &'a mut Session,
    /// The server's settings.
    pub config: &'a Config,
    /// Counters and gauges for INFO.
    pub stats: &'a mut Stats,
    /// The subscription index.
    pub pubsub: &'a mut PubSub,
    /// The backup under way and the last one's outcome (BACKUP, INFO).
    pub backups: &'a mut Backups,
    /// The one-use tokens that start an event stream.
    pub stream_tokens: &'a mut StreamTokens,
    /// The connection's key in the reactor (its pubsub identity).
    pub key: usize,
    /// For a blocking command run again after a wake: the `after` its first run
    /// resolved (`$` keeps meaning what it meant then).
    pub woken_after: Option<i64>,
    store: &'a mut Store,
    events: &'a mut Vec<Event>,
    used_storage: bool,
}

impl<'a, O> Ctx<'a, O> {
    /// A context for one request of connection `key`.
    pub fn new(shared: &'a mut Shared, out: O, session: &'a mut Session, key: usize) -> Self {
        Ctx {
            out,
            session,
            config: &shared.config,
            stats: &mut shared.stats,
            pubsub: &mut shared.pubsub,
            backups: &mut shared.backups,
            stream_tokens: &mut shared.stream_tokens,
            key,
            woken_after: None,
            store: &mut shared.store,
            events: &mut shared.events,
            used_storage: false,
        }
    }

    /// True when the request touched storage: its reply depends on the commit.
    pub fn used_storage(&self) -> bool {
        self.used_storage
    }

    /// The store; using it ties this request's reply to the tick's commit.
    pub fn store(&mut self) -> &mut Store {
        self.used_storage = true;
        self.store
    }

    /// The store, the tick's events and the counters, for the registry's
    /// operations (which tie the reply to the commit like `store`).
    pub fn registry(&mut self) -> (&mut Store, &mut Vec<Event>, &mut Stats) {
        self.used_storage = true;
        (self.store, self.events, self.stats)
    }

    /// The store for counters and health that do not depend on the commit (INFO,
    /// metrics).
    pub fn store_view(&self) -> &Store {
        self.store
    }

    /// The store for a read whose answer does not depend on the tick's commit
    /// (the consumer groups' counters in `/metrics`).
    pub fn store_untied(&mut self) -> &mut Store {
        self.store
    }
}

impl<'a> Ctx<'a, Reply<'a>> {
    /// The store with the reply encoder, for replies written straight from what
    /// the store lends (tied to the commit like `store`).
    pub fn store_and_out(&mut self) -> (&mut Store, &mut Reply<'a>) {
        self.used_storage = true;
        (self.store, &mut self.out)
    }

    /// Replies `-ERR storage: ...`, or `-LOADING ...` while the user index loads.
    pub fn storage_error(&mut self, e: &StorageError) {
        storage_error(&mut self.out, e);
    }
}

/// Writes the reply to a failed storage request: `-ERR storage: ...`, or
/// `-LOADING ...` for a user the index has not loaded yet.
pub(crate) fn storage_error(out: &mut Reply<'_>, e: &StorageError) {
    if e.is_loading() {
        out.error(e.message());
    } else {
        out.error(&format!("ERR storage: {e}"));
    }
}
