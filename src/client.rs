//! `userbus cli`: the line client, a small redis-cli for userbus.
//!
//! Three ways in, one way out. With a command on the command line it runs that one
//! command (one-shot); with none it reads commands, one a line, from an interactive
//! prompt with line editing and history when standard input is a terminal, or
//! from standard input as a script otherwise. Lines are split with the server's
//! own inline quoting rules ([`split_line`]) and every command goes out as a RESP
//! array; each reply is read with a small blocking parser ([`reply`]) and printed
//! as redis-cli prints it ([`format`](mod@format)).
//!
//! `SUBSCRIBE`/`PSUBSCRIBE` and blocking stream reads (`XREAD ... BLOCK`,
//! `XREADGROUP ... BLOCK ... >`, see [`follow`]) keep printing until Ctrl-C.
//!
//! One difference from redis-cli: the human form is printed whether or not
//! standard output is a terminal (redis-cli switches to `--raw` for a pipe), so a
//! script sees what a person sees; `--raw` asks for bare values.

pub mod follow;
pub mod format;
pub mod reply;
pub mod transport;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::DEFAULT_PORT;
use crate::protocol::split_line;
use follow::Follow;
use format::Style;
use reply::{ReadError, Value};
use transport::Transport;

/// History file in the user's home directory: like redis-cli's
/// `~/.rediscli_history` it follows the person, not the working directory, and it
/// is a file of its own because userbus commands are not Redis commands.
const HISTORY_FILE: &str = ".userbus_history";

/// What redis-cli prints before the pushes of a subscription; blocking stream
/// reads get the same line since they, too, now print until Ctrl-C.
const READING_MESSAGES: &str = "Reading messages... (press Ctrl-C to quit)\n";

/// Exit status when the server replied an error (one-shot) or the connection broke.
const EXIT_ERROR: u8 = 1;
/// Exit status when the server cannot be reached.
const EXIT_NO_CONNECTION: u8 = 2;

/// Flags of `userbus cli`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    disable_help_flag = true,
    after_help = "\
Without CMD: an interactive prompt on a terminal (history in ~/.userbus_history),
otherwise one command a line from standard input:
  printf 'REGISTER alice\\nLOOKUP alice\\n' | userbus cli
SUBSCRIBE, PSUBSCRIBE and XREAD/XREADGROUP ... BLOCK print until Ctrl-C.
Replies print as redis-cli shows them on a terminal, also into a pipe (redis-cli
switches to --raw there); --raw prints bare values.
Exit status: 0 ok; 1 the server replied an error (one-shot) or the connection
broke; 2 the server cannot be reached."
)]
pub struct Args {
    /// Server host name or address.
    #[arg(
        short = 'h',
        long = "host",
        env = "USERBUS_HOST",
        default_value = "127.0.0.1"
    )]
    pub host: String,
    /// Server RESP port.
    #[arg(short = 'p', long = "port", env = "USERBUS_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Print bare values, one per line (redis-cli's --raw).
    #[arg(long)]
    pub raw: bool,
    /// Speak RESP3 from the start (sends HELLO 3 on connecting).
    #[arg(short = '3')]
    pub resp3: bool,
    /// Connect with TLS (to a server's --tls-port); needs --cacert.
    #[arg(long, requires = "cacert")]
    pub tls: bool,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (--tls-ca).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Print help (`-h` is the host, as in redis-cli).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The command and its arguments; none starts the prompt or reads stdin.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

/// Runs the client; the exit status follows the flags' help text.
pub fn run(args: Args) -> ExitCode {
    let target = Target {
        host: args.host.clone(),
        port: args.port,
    };
    let style = if args.raw { Style::Raw } else { Style::Human };
    let tls = match (args.tls, &args.cacert) {
        (true, Some(ca)) => Some(transport::TlsOptions {
            cacert: ca.clone(),
            client: args.cert.clone().zip(args.key.clone()),
        }),
        _ => None,
    };
    let mut session = Session {
        target,
        tls,
        conn: None,
        style,
        resp3: args.resp3,
        out: io::stdout(),
    };
    if let Err(e) = session.connect() {
        eprintln!("{e}");
        return ExitCode::from(EXIT_NO_CONNECTION);
    }
    let result = if !args.command.is_empty() {
        let argv: Vec<Vec<u8>> = args
            .command
            .iter()
            .map(|a| a.as_encoded_bytes().to_vec())
            .collect();
        session.one_shot(&argv)
    } else if io::stdin().is_terminal() {
        session.interactive()
    } else {
        session.script(io::stdin().lock())
    };
    match result {
        Ok(code) => code,
        Err(Failure::Connection(e)) => {
            eprintln!("Error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
        // A reader that went away (`userbus cli SUBSCRIBE ... | head`) is no error.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("Error: writing output: {}", reply::describe_io(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The server's address as the person gave it.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The server could not be reached.
#[derive(Debug)]
struct ConnectError {
    target: Target,
    error: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Could not connect to {}: {}", self.target, self.error)
    }
}

/// What ends a command other than a reply.
#[derive(Debug)]
enum Failure {
    /// The connection failed or the server broke the protocol.
    Connection(ReadError),
    /// Standard output failed.
    Output(io::Error),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The last reply was not an error.
    Ok,
    /// The server replied an error.
    ServerError,
}

/// Whether the line loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Quit,
}

/// The connection and how to print what comes back on it.
struct Session {
    target: Target,
    /// `None` after the connection broke; the next command reconnects.
    conn: Option<BufReader<Transport>>,
    /// TLS settings, with `--tls`.
    tls: Option<transport::TlsOptions>,
    style: Style,
    /// Whether the connection speaks RESP3 (`-3` or a `HELLO 3`), so that a
    /// reconnect restores it.
    resp3: bool,
    out: io::Stdout,
}

impl Session {
    fn connect(&mut self) -> Result<(), ConnectError> {
        let fail = |e: &io::Error| ConnectError {
            target: self.target.clone(),
            error: reply::describe_io(e),
        };
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .map_err(|e| fail(&e))?;
        // Requests are single writes; Nagle would only delay them.
        stream.set_nodelay(true).map_err(|e| fail(&e))?;
        let stream =
            Transport::new(stream, &self.target.host, self.tls.as_ref()).map_err(|e| fail(&e))?;
        self.conn = Some(BufReader::new(stream));
        if self.resp3 {
            let hello = [b"HELLO".to_vec(), b"3".to_vec()];
            match self.send(&hello).and_then(|()| self.read()) {
                Ok(Value::Error(e)) => {
                    eprintln!("Error: HELLO 3: {}", String::from_utf8_lossy(&e));
                    self.resp3 = false;
                }
                Ok(_) => {}
                Err(Failure::Connection(e)) => {
                    self.conn = None;
                    return Err(ConnectError {
                        target: self.target.clone(),
                        error: e.to_string(),
                    });
                }
                Err(Failure::Output(_)) => {}
            }
        }
        Ok(())
    }

    fn one_shot(&mut self, argv: &[Vec<u8>]) -> Result<ExitCode, Failure> {
        Ok(match self.execute(argv)? {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::ServerError => ExitCode::from(EXIT_ERROR),
        })
    }

    /// The prompt, with rustyline's line editing and history.
    fn interactive(&mut self) -> Result<ExitCode, Failure> {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("Error: cannot start the line editor: {e}");
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        };
        let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(HISTORY_FILE));
        if let Some(path) = &history {
            // A missing file is the first session's normal state.
            let _ = editor.load_history(path);
        }
        loop {
            let prompt = match self.conn {
                Some(_) => format!("{}> ", self.target),
                None => "not connected> ".to_string(),
            };
            let line = match editor.readline(&prompt) {
                Ok(line) => line,
                // Ctrl-C and Ctrl-D at the prompt leave, as in redis-cli.
                Err(rustyline::error::ReadlineError::Interrupted)
                | Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("Error: reading the prompt: {e}");
                    return Ok(ExitCode::from(EXIT_ERROR));
                }
            };
            if !line.trim().is_empty() && !is_secret(line.as_bytes()) {
                let _ = editor.add_history_entry(line.as_str());
                // Saved at every line, as redis-cli does: a session that ends
                // with Ctrl-C inside SUBSCRIBE keeps its history.
                if let Some(path) = &history {
                    let _ = editor.save_history(path);
                }
            }
            if self.line(line.as_bytes())? == Next::Quit {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// One command a line from a script; the status is 0 at its end.
    fn script(&mut self, input: impl BufRead) -> Result<ExitCode, Failure> {
        for line in input.split(b'\n') {
            let mut line = line.map_err(Failure::Output)?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if self.line(&line)? == Next::Quit {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Runs one line of the prompt or a script. A broken connection is reported
    /// and the next line reconnects, as in redis-cli.
    fn line(&mut self, line: &[u8]) -> Result<Next, Failure> {
        let Ok(argv) = split_line(line) else {
            self.print(b"Invalid argument(s)\n")?;
            return Ok(Next::Continue);
        };
        let Some(name) = argv.first() else {
            return Ok(Next::Continue);
        };
        if name.eq_ignore_ascii_case(b"quit") || name.eq_ignore_ascii_case(b"exit") {
            return Ok(Next::Quit);
        }
        if self.conn.is_none()
            && let Err(e) = self.connect()
        {
            eprintln!("{e}");
            return Ok(Next::Continue);
        }
        match self.execute(&argv) {
            Ok(_) => Ok(Next::Continue),
            Err(Failure::Connection(e)) => {
                eprintln!("Error: {e}");
                self.conn = None;
                Ok(Next::Continue)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends one command and prints what comes back for it.
    fn execute(&mut self, argv: &[Vec<u8>]) -> Result<Outcome, Failure> {
        let name = argv
            .first()
            .map(|n| n.to_ascii_lowercase())
            .unwrap_or_default();
        if matches!(
            name.as_slice(),
            b"subscribe" | b"psubscribe" | b"ssubscribe"
        ) {
            return self.subscribe(argv);
        }
        if let Some(follow) = Follow::detect(argv) {
            return self.follow(follow);
        }
        self.send(argv)?;
        let expected = pubsub_confirmations(&name, argv.len());
        let mut seen = 0;
        loop {
            let value = self.read()?;
            if let Value::Error(_) = value {
                self.show(&value, false)?;
                return Ok(Outcome::ServerError);
            }
            if expected > 0 {
                // (P)UNSUBSCRIBE is answered by one confirmation per name.
                if is_pubsub_reply(&value, &name) {
                    seen += 1;
                }
                self.show(&value, false)?;
                if seen >= expected {
                    return Ok(Outcome::Ok);
                }
                continue;
            }
            if let Value::Push(_) = value {
                // An out-of-band RESP3 push: shown, and the reply is still to come.
                self.show(&value, false)?;
                continue;
            }
            self.show(&value, is_report(argv))?;
            if name == b"hello" && argv.get(1).is_some_and(|v| v == b"2" || v == b"3") {
                self.resp3 = argv.get(1).is_some_and(|v| v == b"3");
            }
            return Ok(Outcome::Ok);
        }
    }

    /// SUBSCRIBE and PSUBSCRIBE: every push until Ctrl-C (or an error reply).
    fn subscribe(&mut self, argv: &[Vec<u8>]) -> Result<Outcome, Failure> {
        self.send(argv)?;
        if self.style == Style::Human {
            self.print(READING_MESSAGES.as_bytes())?;
        }
        loop {
            let value = self.read()?;
            self.show(&value, false)?;
            if let Value::Error(_) = value {
                return Ok(Outcome::ServerError);
            }
        }
    }

    /// A blocking stream read, repeated until Ctrl-C (or an error reply).
    fn follow(&mut self, mut follow: Follow) -> Result<Outcome, Failure> {
        if self.style == Style::Human {
            self.print(READING_MESSAGES.as_bytes())?;
        }
        loop {
            self.send(follow.request())?;
            let value = loop {
                match self.read()? {
                    Value::Push(items) => self.show(&Value::Push(items), false)?,
                    value => break value,
                }
            };
            match value {
                Value::Nil => {} // the BLOCK timeout passed: wait again
                Value::Error(_) => {
                    self.show(&value, false)?;
                    return Ok(Outcome::ServerError);
                }
                _ => {
                    self.show(&value, false)?;
                    follow.advance(&value);
                }
            }
        }
    }

    fn send(&mut self, argv: &[Vec<u8>]) -> Result<(), Failure> {
        let conn = self
            .conn
            .as_mut()
            .ok_or(Failure::Connection(ReadError::Closed))?;
        conn.get_mut()
            .write_all(&reply::encode_request(argv))
            .map_err(|e| Failure::Connection(e.into()))
    }

    fn read(&mut self) -> Result<Value, Failure> {
        let conn = self
            .conn
            .as_mut()
            .ok_or(Failure::Connection(ReadError::Closed))?;
        reply::read_value(conn).map_err(Failure::Connection)
    }

    fn show(&mut self, value: &Value, report: bool) -> Result<(), Failure> {
        let text = if report {
            format::report(value)
        } else {
            format::format(value, self.style)
        };
        self.print(&text)
    }

    fn print(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let mut out = self.out.lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(Failure::Output)
    }
}

/// Replies redis-cli prints as they are even in its human form: reports made to
/// be read, not values.
fn is_report(argv: &[Vec<u8>]) -> bool {
    let is = |i: usize, word: &[u8]| argv.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word));
    is(0, b"info") || (is(0, b"client") && (is(1, b"list") || is(1, b"info")))
}

/// How many confirmations a (P)UNSUBSCRIBE gets: one per name, or at least one
/// when it names none. Zero for every other command.
fn pubsub_confirmations(name: &[u8], argc: usize) -> usize {
    match name {
        b"unsubscribe" | b"punsubscribe" | b"sunsubscribe" => argc.saturating_sub(1).max(1),
        _ => 0,
    }
}

/// Whether `value` is the `[command, name, count]` confirmation of `command`.
fn is_pubsub_reply(value: &Value, command: &[u8]) -> bool {
    match value {
        Value::Array(items) | Value::Push(items) => {
            matches!(items.first(), Some(Value::Bulk(kind)) if kind.eq_ignore_ascii_case(command))
        }
        _ => false,
    }
}

/// Lines kept out of the history because they carry a password.
fn is_secret(line: &[u8]) -> bool {
    let Ok(argv) = split_line(line) else {
        return false;
    };
    let Some(name) = argv.first() else {
        return false;
    };
    name.eq_ignore_ascii_case(b"auth")
        || (name.eq_ignore_ascii_case(b"hello")
            && argv.iter().any(|a| a.eq_ignore_ascii_case(b"auth")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_the_history() {
        assert!(is_secret(b"AUTH default secret"));
        assert!(is_secret(b"hello 3 auth default secret"));
        assert!(!is_secret(b"HELLO 3"));
        assert!(!is_secret(b"REGISTER auth"));
    }

    #[test]
    fn unsubscribe_waits_for_one_confirmation_per_name() {
        assert_eq!(pubsub_confirmations(b"unsubscribe", 1), 1);
        assert_eq!(pubsub_confirmations(b"punsubscribe", 3), 2);
        assert_eq!(pubsub_confirmations(b"lookup", 2), 0);
    }
}
