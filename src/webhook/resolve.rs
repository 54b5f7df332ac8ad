//! Host names resolved off the loop: `getaddrinfo` (std's `ToSocketAddrs`) blocks,
//! so one resolver thread takes questions from a channel, answers through another
//! and wakes the poll with a `mio::Waker`. The transport starts it when the first
//! host name needs it (IP literals never do) and it ends when the [`Resolver`] is
//! dropped.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use mio::Waker;

/// One question: the addresses of `host` at `port`.
#[derive(Debug)]
struct Query {
    ticket: u64,
    host: String,
    port: u16,
}

/// One answer, for the question with the same ticket.
#[derive(Debug)]
pub struct Answer {
    /// The ticket [`Resolver::ask`] was given.
    pub ticket: u64,
    /// The addresses, in the resolver's order, or why there are none.
    pub result: Result<Vec<SocketAddr>, String>,
}

/// The resolver thread and its two channels.
#[derive(Debug)]
pub struct Resolver {
    queries: Option<Sender<Query>>,
    answers: Receiver<Answer>,
    /// Questions asked and not yet answered.
    outstanding: usize,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the thread; its answers wake the poll through `waker`, the
    /// poll's one `mio::Waker` (mio allows one per poll), which the reactor
    /// shares with its shutdown handles.
    pub fn start(waker: Arc<Waker>) -> io::Result<Resolver> {
        let (query_tx, query_rx) = mpsc::channel::<Query>();
        let (answer_tx, answer_rx) = mpsc::channel::<Answer>();
        let thread = std::thread::Builder::new()
            .name("userbus-resolve".to_string())
            .spawn(move || serve(&query_rx, &answer_tx, &waker))?;
        Ok(Resolver {
            queries: Some(query_tx),
            answers: answer_rx,
            outstanding: 0,
            thread: Some(thread),
        })
    }

    /// Asks for the addresses of `host` at `port`; the answer comes with `ticket`.
    /// Returns false when the thread is gone (it panicked), and no answer comes.
    pub fn ask(&mut self, ticket: u64, host: &str, port: u16) -> bool {
        let query = Query {
            ticket,
            host: host.to_string(),
            port,
        };
        let sent = self.queries.as_ref().is_some_and(|q| q.send(query).is_ok());
        if sent {
            self.outstanding += 1;
        }
        sent
    }

    /// The answers that have arrived.
    pub fn answers(&mut self, into: &mut Vec<Answer>) {
        while let Ok(answer) = self.answers.try_recv() {
            self.outstanding = self.outstanding.saturating_sub(1);
            into.push(answer);
        }
    }
}

impl Drop for Resolver {
    /// Closes the question channel, which ends the thread. It is joined when idle;
    /// one still inside a lookup (which may take the system resolver's whole
    /// timeout) is left to finish on its own rather than hold up the loop.
    fn drop(&mut self) {
        self.queries = None;
        let mut late = Vec::new();
        self.answers(&mut late);
        if let Some(thread) = self.thread.take()
            && self.outstanding == 0
            && thread.join().is_err()
        {
            log::warn!("webhook resolver thread panicked");
        }
    }
}

fn serve(queries: &Receiver<Query>, answers: &Sender<Answer>, waker: &Waker) {
    while let Ok(Query { ticket, host, port }) = queries.recv() {
        let result = (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
            .map_err(|e| e.to_string())
            .and_then(|addrs| {
                if addrs.is_empty() {
                    Err(format!("{host} has no addresses"))
                } else {
                    Ok(addrs)
                }
            });
        if answers.send(Answer { ticket, result }).is_err() {
            return;
        }
        if let Err(e) = waker.wake() {
            log::warn!("webhook resolver cannot wake the loop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mio::{Events, Poll, Token};

    use super::*;

    #[test]
    fn answers_wake_the_poll_and_the_thread_ends_on_drop() {
        let mut poll = Poll::new().unwrap();
        let token = Token(7);
        let waker = Arc::new(Waker::new(poll.registry(), token).unwrap());
        let mut resolver = Resolver::start(waker).unwrap();
        assert!(resolver.ask(1, "localhost", 8080));
        assert!(resolver.ask(2, "no-such-host.invalid", 80));
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        while got.len() < 2 {
            poll.poll(&mut events, Some(Duration::from_secs(30)))
                .unwrap();
            assert!(events.iter().any(|e| e.token() == token), "woken");
            resolver.answers(&mut got);
        }
        got.sort_by_key(|a| a.ticket);
        let local = got[0].result.as_ref().unwrap();
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
        assert!(got[1].result.is_err());
        let thread = resolver.thread.as_ref().unwrap().thread().id();
        drop(resolver);
        assert_ne!(thread, std::thread::current().id());
    }
}
