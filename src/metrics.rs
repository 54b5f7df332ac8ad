//! Counters and gauges the server keeps about itself, for INFO (and, later, the
//! HTTP metrics endpoint).

use std::time::Instant;

/// The server's counters. Plain integers: one thread owns them.
#[derive(Debug, Clone)]
pub struct Stats {
    /// When the server started.
    pub started: Instant,
    /// The RESP port actually bound.
    pub tcp_port: u16,
    /// Connections open now.
    pub connected_clients: usize,
    /// Connections accepted since start.
    pub connections_received: u64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: u64,
    /// Commands run (known commands with a valid arity).
    pub commands: u64,
    /// Requests naming no known command.
    pub unknown_commands: u64,
    /// Connections dropped for sending HTTP to the RESP port.
    pub cross_protocol_attempts: u64,
    /// When a cross-protocol attempt was last logged (at most once a minute).
    pub cross_protocol_logged_at: Option<Instant>,
    /// Protocol errors (each closed its connection).
    pub protocol_errors: u64,
    /// Users registered (committed).
    pub registrations: u64,
    /// Users unregistered (committed).
    pub unregistrations: u64,
    /// Registrations and unregistrations of the open tick, not yet committed.
    pub tick_registrations: u64,
    /// See `tick_registrations`.
    pub tick_unregistrations: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Ticks whose writes were rolled back.
    pub failed_commits: u64,
    /// Events produced (committed).
    pub events: u64,
    /// Subscribers disconnected at their output-buffer limit.
    pub slow_subscriber_disconnects: u64,
    /// Pushes sent to subscribers.
    pub pushes: u64,
    /// Durable handlers and their offsets, as of the last tick.
    pub durable_offsets: Vec<(String, i64)>,
    /// Events removed by retention.
    pub trimmed_events: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
    /// Bytes read from clients.
    pub net_input_bytes: u64,
    /// Bytes written to clients.
    pub net_output_bytes: u64,
}

impl Stats {
    /// Fresh counters.
    pub fn new(tcp_port: u16) -> Self {
        Stats {
            started: Instant::now(),
            tcp_port,
            connected_clients: 0,
            connections_received: 0,
            rejected_connections: 0,
            commands: 0,
            unknown_commands: 0,
            cross_protocol_attempts: 0,
            cross_protocol_logged_at: None,
            protocol_errors: 0,
            registrations: 0,
            unregistrations: 0,
            tick_registrations: 0,
            tick_unregistrations: 0,
            commits: 0,
            failed_commits: 0,
            events: 0,
            slow_subscriber_disconnects: 0,
            pushes: 0,
            durable_offsets: Vec::new(),
            trimmed_events: 0,
            handler_panics: 0,
            net_input_bytes: 0,
            net_output_bytes: 0,
        }
    }

    /// Folds the tick's counts in after its commit (or drops them after a rollback).
    pub fn finish_tick(&mut self, committed: bool) {
        if committed {
            self.registrations += self.tick_registrations;
            self.unregistrations += self.tick_unregistrations;
        }
        self.tick_registrations = 0;
        self.tick_unregistrations = 0;
    }
}
