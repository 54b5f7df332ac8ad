//! The floor for PING on userbus's design: one thread, one `mio` poll loop, one
//! read and one write per ready connection per wake-up, and nothing else: no
//! parser beyond matching `*1\r\n$4\r\nPING\r\n`, no command table, no statistics,
//! no clock, no storage. Whatever userbus spends above this per PING is its own
//! work; what this spends is the kernel's and the loop's, which no server built
//! this way avoids.
//!
//! It takes the same command line as `userbus serve` (only `--port` is read), so
//! the comparison script can run it in userbus's place for the PING scenarios:
//!
//! ```sh
//! cargo build --release --example ping_floor
//! USERBUS_BIN=target/release/examples/ping_floor ../shared/tools/compare-redis.sh ping1 ping16
//! ```
//!
//! Anything that is not a multibulk PING closes the connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes of a PING frame split across reads.
    partial: usize,
    /// Replies the socket did not take yet.
    out: Vec<u8>,
}

fn main() -> io::Result<()> {
    let mut port = 7878u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--port" {
            port = args
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| io::Error::other("--port needs a number"))?;
        }
    }
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let entry = conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    entry.insert(Conn {
                        stream,
                        partial: 0,
                        out: Vec::new(),
                    });
                }
                continue;
            }
            let k = ev.token().0;
            let Some(conn) = conns.get_mut(k) else {
                continue;
            };
            let open = serve(conn, &mut buf, ev.is_readable());
            if !open {
                let mut conn = conns.remove(k);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Reads until a short read (which drains the socket), answers every whole PING
/// with one write; false when the connection is done.
fn serve(conn: &mut Conn, buf: &mut [u8], readable: bool) -> bool {
    let mut more = readable;
    while more {
        let n = match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        };
        for &b in &buf[..n] {
            if b != PING[conn.partial] {
                return false;
            }
            conn.partial += 1;
            if conn.partial == PING.len() {
                conn.partial = 0;
                conn.out.extend_from_slice(PONG);
            }
        }
        more = n == buf.len();
    }
    let mut sent = 0;
    while sent < conn.out.len() {
        match conn.stream.write(&conn.out[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    conn.out.drain(..sent);
    true
}
