//! A client's session: the settings its commands change (protocol version, name,
//! subscriptions, authentication) and what CLIENT LIST reports of it. Owned by its
//! connection; the commands see it through their context.

use std::time::Instant;

/// Per-client settings that commands change.
#[derive(Debug, Clone)]
pub struct Session {
    /// The client's id (CLIENT ID), unique for the process.
    pub id: u64,
    /// Replies in RESP3 (after `HELLO 3`).
    pub resp3: bool,
    /// CLIENT SETNAME.
    pub name: Option<String>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<String>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<String>,
    /// When the connection was accepted.
    pub since: Instant,
    /// When the last request arrived.
    pub last_active: Instant,
    /// The last command run, lowercase (`NULL` before the first).
    pub last_cmd: &'static str,
    /// The subcommand it ran, lowercase, for the commands CLIENT LIST names with
    /// theirs (`client|list`).
    pub last_sub: Option<String>,
    /// Subscribed channels, in subscription order.
    pub channels: Vec<Vec<u8>>,
    /// Subscribed patterns, in subscription order.
    pub patterns: Vec<Vec<u8>>,
    /// Authenticated (always true when no password is configured).
    pub authenticated: bool,
}

impl Session {
    /// A fresh session for client `id`: RESP2, unnamed, authenticated (the reactor
    /// clears that when a password is configured).
    pub fn new(id: u64) -> Session {
        let now = Instant::now();
        Session {
            id,
            resp3: false,
            name: None,
            lib_name: None,
            lib_ver: None,
            since: now,
            last_active: now,
            last_cmd: "NULL",
            last_sub: None,
            channels: Vec::new(),
            patterns: Vec::new(),
            authenticated: true,
        }
    }

    /// Channels plus patterns: the count Redis reports in (un)subscribe replies.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}
