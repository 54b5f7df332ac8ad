//! The embedding API: build a server, register handler callbacks, run it.
//!
//! ```no_run
//! use userbus::{Config, Server};
//!
//! let server = Server::builder(Config::default())
//!     .on_registered(|e| println!("welcome, {}", e.name))
//!     .build()?;
//! println!("listening on {}", server.local_addr()?);
//! server.run()?;
//! # Ok::<(), userbus::Error>(())
//! ```

use std::net::SocketAddr;

use crate::config::Config;
use crate::error::Result;
use crate::events::{Event, Handlers};
use crate::reactor::{Reactor, ShutdownHandle};

/// Configures a [`Server`].
#[derive(Debug)]
pub struct Builder {
    config: Config,
    handlers: Handlers,
    handle_signals: bool,
}

impl Builder {
    /// Calls `f` for every committed `user.registered` event, on the reactor thread,
    /// in commit order. It must be quick; a panic is logged and isolated.
    pub fn on_registered(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.handlers.on_registered(Box::new(f));
        self
    }

    /// Calls `f` for every committed `user.unregistered` event.
    pub fn on_unregistered(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.handlers.on_unregistered(Box::new(f));
        self
    }

    /// Calls `f` for every committed `user.updated` event (fields set or removed;
    /// [`Event::before`] holds the fields before the change).
    pub fn on_updated(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.handlers.on_updated(Box::new(f));
        self
    }

    /// Calls `f` for every committed event of any kind.
    pub fn on_event(mut self, f: impl FnMut(&Event) + Send + 'static) -> Self {
        self.handlers.on_event(Box::new(f));
        self
    }

    /// Adds a durable handler: `f` is called for every committed event after the
    /// handler's stored offset, on the reactor thread, in order; the offset (kept in
    /// SQLite under `name`) advances only after `f` returns, so after a crash or
    /// restart the handler resumes without skipping an event (at-least-once). A
    /// handler seen for the first time starts at the end of the log. A panic is
    /// logged and the same event is retried after a back-off.
    pub fn durable_handler(
        mut self,
        name: impl Into<String>,
        f: impl FnMut(&Event) + Send + 'static,
    ) -> Self {
        self.handlers.durable(name.into(), Box::new(f));
        self
    }

    /// Shut down cleanly on SIGINT and SIGTERM (off by default: an embedding
    /// program may own its signals).
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// Opens the database and binds the listener; the server accepts connections
    /// (into the kernel's backlog) from here on and serves them once `run` starts.
    pub fn build(self) -> Result<Server> {
        let reactor = Reactor::new(self.config, self.handlers, self.handle_signals)?;
        Ok(Server { reactor })
    }
}

/// A userbus server, bound and ready to run.
pub struct Server {
    reactor: Reactor,
}

impl Server {
    /// Starts configuring a server.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            handlers: Handlers::default(),
            handle_signals: false,
        }
    }

    /// The RESP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reactor.local_addr()?)
    }

    /// The HTTP address actually bound, when the HTTP side is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.reactor.http_addr()
    }

    /// The RESP-over-TLS address actually bound, when on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.reactor.tls_addr()
    }

    /// The HTTPS address actually bound, when on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.reactor.https_addr()
    }

    /// A handle that stops `run` from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.reactor.shutdown_handle()
    }

    /// Serves until shutdown (a signal, when enabled, or the shutdown handle).
    pub fn run(self) -> Result<()> {
        let c = self.reactor.config();
        let on =
            |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        log::info!(
            "userbus {} listening on resp={} http={} tls={} https={} db={} durability={}",
            env!("CARGO_PKG_VERSION"),
            self.reactor.local_addr()?,
            on(self.http_addr()),
            on(self.tls_addr()),
            on(self.https_addr()),
            c.db.display(),
            c.durability,
        );
        self.reactor.run()
    }
}
