//! The reactor's side of the JetStream relay (`--nats`): building it from the
//! settings, feeding it each commit's events (or the log, when it is behind),
//! storing its confirmed position in the tick's transaction, and what INFO and
//! `/metrics` show of it. The relay itself is `nats::relay`.

use std::time::{Duration, Instant};

use mio::{Events, Token};

use super::{Reactor, committed_tail};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::nats::client::{Client, Options};
use crate::nats::relay::{Relay, RelayOptions, RelayStatus};
use crate::store::Store;

/// The relay's NATS connection.
pub(super) const NATS: Token = Token(usize::MAX - 7);
/// How often at most a tick that writes nothing else stores the relay's position.
const RELAY_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// Why `--nats` and its flags give no NATS client options.
pub(super) enum OptionsError {
    /// No `--nats`.
    Absent,
    /// A server list or credentials that cannot be used: the text to log (the
    /// relay goes without NATS) or to fail with (a follower cannot start).
    Unusable(String),
    /// A configuration error that stops the server.
    Fatal(Error),
}

/// The NATS client options `--nats` and its flags give, named `name`.
pub(super) fn client_options(
    config: &Config,
    name: String,
) -> std::result::Result<Options, OptionsError> {
    let servers = match config.nats_servers() {
        Ok(Some(servers)) => servers,
        Ok(None) => return Err(OptionsError::Absent),
        Err(e) => return Err(OptionsError::Unusable(format!("--nats: {e}"))),
    };
    let needs_tls = servers.iter().any(|s| s.tls);
    let mut options = Options::new(servers);
    options.credentials = config
        .nats_credentials()
        .map_err(|e| OptionsError::Unusable(format!("NATS credentials: {e}")))?
        .to_client();
    match &config.nats_ca {
        Some(ca) => {
            options.tls = Some(crate::nats::link::tls_config(ca).map_err(OptionsError::Fatal)?)
        }
        None if needs_tls => {
            return Err(OptionsError::Fatal(Error::Config(
                "a tls:// NATS server needs --nats-ca (the CA that signed its certificate)".into(),
            )));
        }
        None => {}
    }
    options.name = name;
    Ok(options)
}

/// The relay `--nats` asks for, resuming after the position stored in `store`;
/// `None` without `--nats`. A server list or credentials that cannot be used are
/// an error line and no relay: local service goes on.
pub(super) fn build(config: &Config, store: &mut Store) -> Result<Option<Relay>> {
    let options = match client_options(config, format!("userbus {}", store.writer_id())) {
        Ok(options) => options,
        Err(OptionsError::Absent) => return Ok(None),
        Err(OptionsError::Unusable(why)) => {
            log::error!("{why}; events are not relayed to NATS");
            return Ok(None);
        }
        Err(OptionsError::Fatal(e)) => return Err(e),
    };
    let list = config.nats.as_deref().unwrap_or_default();
    let confirmed = store
        .relay_confirmed(&config.nats_stream)
        .map_err(|e| Error::Config(format!("cannot read the relay's position: {e}")))?;
    let opts = RelayOptions {
        stream: config.nats_stream.clone(),
        subject_prefix: config.nats_subject_prefix.clone(),
        replicas: config.nats_replicas,
        writer: store.writer_id().to_string(),
    };
    log::info!(
        "nats: relaying events to stream '{}' on {} as writer {}, after seq {confirmed}",
        opts.stream,
        crate::config::nats::mask_servers(list),
        opts.writer
    );
    Ok(Some(Relay::new(
        Client::new(options, NATS),
        opts,
        confirmed,
    )))
}

impl Reactor {
    /// Stores the relay's confirmed position in the tick's transaction when it
    /// moved: in a tick that writes anyway, or once a second at most on its own
    /// (a commit of its own costs an fsync in strict mode; a position stored late
    /// only makes a restart read the stream's tail, see `nats::relay`).
    pub(super) fn persist_relay(&mut self) {
        let Some(relay) = &self.relay else { return };
        let confirmed = relay.confirmed();
        if confirmed <= self.relay_stored {
            return;
        }
        let now = self.tick_now;
        if !self.shared.store.tick_has_writes()
            && self
                .relay_stored_at
                .is_some_and(|t| now.duration_since(t) < RELAY_PERSIST_INTERVAL)
        {
            return;
        }
        match self
            .shared
            .store
            .set_relay_confirmed(&self.shared.config.nats_stream, confirmed)
        {
            Ok(()) => self.relay_persisting = Some(confirmed),
            Err(e) => log::warn!("nats: cannot store the relay's position: {e}"),
        }
    }

    /// Stores the relay's confirmed position now, in a transaction of its own (at
    /// shutdown, so that a clean restart resumes exactly where the stream is).
    pub(super) fn store_relay_position(&mut self) {
        let Some(relay) = &self.relay else { return };
        let confirmed = relay.confirmed();
        if confirmed <= self.relay_stored {
            return;
        }
        let store = &mut self.shared.store;
        match store
            .set_relay_confirmed(&self.shared.config.nats_stream, confirmed)
            .and_then(|()| store.finish_tick())
        {
            Ok(()) => self.relay_stored = confirmed,
            Err(e) => log::warn!("nats: cannot store the relay's position: {e}"),
        }
    }

    /// After a commit: what the tick stored of the relay's position is stored.
    pub(super) fn relay_committed(&mut self, committed: bool) {
        if let Some(seq) = self.relay_persisting.take()
            && committed
        {
            self.relay_stored = seq;
            self.relay_stored_at = Some(self.tick_now);
        }
    }

    /// Takes in what the NATS connection reported, publishes the committed events
    /// the relay has room for (`fresh`: what the last commit added), writes.
    pub(super) fn step_relay(&mut self, fresh: &[Event]) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let now = Instant::now();
        if self.replication.is_some() {
            // Held replies wait for acks: take in those that came during the tick
            // now rather than at the next poll, so the window refills and the
            // replies go out a tick sooner.
            relay.ready(self.poll.registry(), true, false, now);
        }
        relay.process(now);
        let last = self.shared.store.committed_counts().last_seq;
        if relay.confirmed() > last {
            relay.ahead_of(last);
        }
        if let Some((from, room)) = relay.wants()
            && from <= last
        {
            if let Some(batch) = committed_tail(fresh, last, from, room) {
                relay.publish(batch, now);
            } else {
                match self.shared.store.events_between(from, last, room, false) {
                    Ok(rows) if rows.is_empty() => relay.missing(from),
                    Ok(rows) => {
                        let events: Vec<Event> = rows.iter().map(Event::from_row).collect();
                        relay.publish(&events, now);
                    }
                    Err(e) => log::warn!("nats: cannot read the event log: {e}"),
                }
            }
            // Still behind with room: come back without waiting for an event.
            self.relay_behind = relay.wants().is_some_and(|(next, _)| next <= last);
        } else {
            self.relay_behind = false;
        }
        relay.flush(self.poll.registry(), now);
        let acks = &mut self.shared.stats.nats_ack_seconds;
        relay.drain_ack_times(|t| acks.observe(t.as_secs_f64()));
        let status = self
            .shared
            .stats
            .nats
            .get_or_insert_with(RelayStatus::default);
        relay.status_into(status);
        status.lag_events = (last - status.confirmed).max(0);
        if status.lag_events == 0 {
            status.behind_since = None;
        } else if status.behind_since.is_none() {
            status.behind_since = Some(now);
        }
    }

    /// The relay's connection is ready (`ev`): read and write what it can.
    pub(super) fn relay_ready(&mut self, ev: &mio::event::Event) {
        if let Some(relay) = self.relay.as_mut() {
            let closed = ev.is_read_closed() || ev.is_error();
            relay.ready(
                self.poll.registry(),
                ev.is_readable() || closed,
                ev.is_writable(),
                Instant::now(),
            );
        }
    }

    /// At shutdown: one wait on the NATS connection alone, until `wake` (or
    /// the relay's own next deadline, if sooner) and never past `deadline`, then
    /// the relay's timers and its step. False when the poll failed.
    pub(super) fn poll_relay_only(
        &mut self,
        events: &mut Events,
        wake: Option<Instant>,
        deadline: Instant,
    ) -> bool {
        let now = Instant::now();
        let wake = [wake, self.relay.as_ref().and_then(Relay::next_deadline)]
            .into_iter()
            .flatten()
            .min()
            .map_or(deadline, |d| d.clamp(now, deadline));
        if let Err(e) = self.poll.poll(events, Some(wake - now))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return false;
        }
        for ev in events.iter().filter(|ev| ev.token() == NATS) {
            self.relay_ready(ev);
        }
        self.relay_timers(Instant::now());
        self.step_relay(&[]);
        true
    }

    /// The relay's timers (connect attempts, PINGs, answers that did not come).
    pub(super) fn relay_timers(&mut self, now: Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if relay.next_deadline().is_some_and(|d| now >= d) {
            relay.on_timer(self.poll.registry(), now);
            self.step_relay(&[]);
            self.release_held(&mut Vec::new());
        }
    }
}
