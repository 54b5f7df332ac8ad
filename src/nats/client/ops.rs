//! What the client does with each operation the server sends: the handshake
//! (INFO, then TLS if asked, then CONNECT and PING until PONG), answers to the
//! server's PINGs, and delivery of messages and replies as events.

use std::time::Instant;

use super::{Client, INBOX_SID, Phase};
use crate::nats::event::{ConnError, Event, RequestId};
use crate::nats::link::Link;
use crate::nats::proto::{self, Connect, ServerInfo, ServerOp};
use crate::nats::url::Credentials;

impl Client {
    /// Reads until the socket would block, acting on every operation.
    pub(super) fn drive(
        &mut self,
        link: &mut Link,
        phase: &mut Phase,
        server: usize,
        now: Instant,
    ) -> Result<(), ConnError> {
        if let Phase::Connecting { deadline } = *phase {
            if !link.connect_done()? {
                return Ok(());
            }
            *phase = Phase::AwaitingInfo { deadline };
        }
        loop {
            let got = link.read_some()?;
            loop {
                if let Phase::TlsHandshake { deadline } = *phase {
                    if link.tls_handshaking() {
                        break;
                    }
                    self.send_connect(link, server, true);
                    *phase = Phase::Handshaking { deadline };
                }
                let Some(op) = link.next_op()? else { break };
                self.on_op(link, phase, server, op, now)?;
            }
            if got.is_none() {
                break;
            }
        }
        link.flush()
    }

    fn on_op(
        &mut self,
        link: &mut Link,
        phase: &mut Phase,
        server: usize,
        op: ServerOp,
        now: Instant,
    ) -> Result<(), ConnError> {
        if let Phase::AwaitingInfo { deadline } = *phase {
            let ServerOp::Info(info) = op else {
                return Err(ConnError::ExpectedInfo);
            };
            return self.on_info(link, phase, server, info, deadline);
        }
        match op {
            ServerOp::Ping => proto::pong(link.out()),
            ServerOp::Pong => match phase {
                Phase::Handshaking { .. } => self.on_connected(link, phase, server, now),
                Phase::Connected {
                    pings_outstanding, ..
                } => {
                    *pings_outstanding = pings_outstanding.saturating_sub(1);
                }
                _ => {}
            },
            ServerOp::Ok => {}
            ServerOp::Err(text) => {
                log::debug!("nats: {}: -ERR '{text}'", self.servers.addr(server));
                self.events.push_back(Event::ServerError(text.clone()));
                // The server keeps the connection after a permissions violation
                // and closes it after every other error.
                let connected = matches!(phase, Phase::Connected { .. });
                if !(connected && text.starts_with("Permissions Violation")) {
                    return Err(ConnError::Server(text));
                }
            }
            ServerOp::Info(info) => {
                if info.ldm {
                    log::info!(
                        "nats: {} is entering lame duck mode",
                        self.servers.addr(server)
                    );
                }
                self.set_info(link, info);
            }
            ServerOp::Msg(msg) => {
                if matches!(phase, Phase::Connected { .. }) {
                    self.deliver(msg);
                }
            }
        }
        Ok(())
    }

    fn set_info(&mut self, link: &mut Link, info: Box<ServerInfo>) {
        if info.max_payload > 0 {
            self.max_payload = usize::try_from(info.max_payload).unwrap_or(usize::MAX);
            link.set_max_payload(self.max_payload);
        }
        self.info = Some(info);
    }

    /// The server's first INFO: upgrade to TLS or send CONNECT.
    fn on_info(
        &mut self,
        link: &mut Link,
        phase: &mut Phase,
        server: usize,
        info: Box<ServerInfo>,
        deadline: Instant,
    ) -> Result<(), ConnError> {
        let addr = self.servers.addr(server);
        let tls = addr.tls || info.tls_required;
        if tls {
            if !info.tls_required && !info.tls_available {
                return Err(ConnError::TlsNotOffered);
            }
            let config = self.opts.tls.clone().ok_or(ConnError::TlsNotConfigured)?;
            link.start_tls(config, &addr.host)?;
            *phase = Phase::TlsHandshake { deadline };
        } else {
            self.send_connect(link, server, false);
            *phase = Phase::Handshaking { deadline };
        }
        self.set_info(link, info);
        Ok(())
    }

    fn send_connect(&self, link: &mut Link, server: usize, tls: bool) {
        let credentials = self
            .servers
            .addr(server)
            .credentials
            .as_ref()
            .or(self.opts.credentials.as_ref());
        let (user, pass, auth_token) = match credentials {
            Some(Credentials::UserPass { user, pass }) => {
                (Some(user.as_str()), Some(pass.as_str()), None)
            }
            Some(Credentials::Token(t)) => (None, None, Some(t.as_str())),
            None => (None, None, None),
        };
        let connect = Connect {
            verbose: false,
            pedantic: false,
            tls_required: tls,
            name: &self.opts.name,
            lang: "rust",
            version: env!("CARGO_PKG_VERSION"),
            protocol: 1,
            echo: true,
            headers: true,
            no_responders: true,
            user,
            pass,
            auth_token,
        };
        proto::connect(link.out(), &connect);
        proto::ping(link.out());
    }

    /// The PONG to our CONNECT's PING: the server took our credentials.
    fn on_connected(&mut self, link: &mut Link, phase: &mut Phase, server: usize, now: Instant) {
        *phase = Phase::Connected {
            ping_at: now + self.opts.ping_interval,
            pings_outstanding: 0,
        };
        self.servers.connected(server);
        self.connections += 1;
        let out = link.out();
        let inbox = format!("{}*", self.inbox);
        proto::subscribe(out, &inbox, INBOX_SID).expect("invariant: the inbox subject is valid");
        for (sid, subject) in &self.subs {
            proto::subscribe(out, subject, *sid).expect("invariant: subscribe checked the subject");
        }
        out.append(&mut self.pending);
        let addr = self.servers.addr(server);
        let info = self.info.clone().unwrap_or_default();
        log::info!(
            "nats: connected to {addr} (server {} {}, jetstream {})",
            info.server_name,
            info.version,
            if info.jetstream { "on" } else { "off" }
        );
        self.events.push_back(Event::Connected {
            server: addr.to_string(),
            info,
        });
    }

    fn deliver(&mut self, msg: proto::Msg) {
        if msg.sid == INBOX_SID {
            match msg
                .subject
                .strip_prefix(&self.inbox)
                .and_then(|t| t.parse::<RequestId>().ok())
            {
                Some(id) => self.events.push_back(Event::Reply {
                    id,
                    status: msg.status,
                    headers: msg.headers,
                    payload: msg.payload,
                }),
                None => log::debug!("nats: reply on unexpected subject {}", msg.subject),
            }
        } else if self.subs.contains_key(&msg.sid) {
            self.events.push_back(Event::Message {
                sid: msg.sid,
                subject: msg.subject,
                reply: msg.reply,
                status: msg.status,
                headers: msg.headers,
                payload: msg.payload,
            });
        }
    }
}
