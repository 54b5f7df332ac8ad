//! Server lists as `--nats` takes them.
//!
//! # Format
//! ```text
//! nats://[user:pass@|token@]host[:port][,[nats://][user:pass@|token@]host[:port]...]
//! tls://...
//! ```
//! The port defaults to 4222; an IPv6 host goes in brackets (`[::1]:4222`). An
//! entry without a scheme takes the first entry's; `nats://` and `tls://` cannot
//! be mixed in one list. User, password and token may be percent-encoded
//! (`%40` for `@`). An entry without credentials uses the first credentials in
//! the list, so `nats://u:p@a,b,c` authenticates to all three.
//!
//! Nothing here displays a secret: servers display as `nats://host:port`, errors
//! quote an entry with its credentials masked.

use std::fmt;

/// The client port nats-server listens on by default.
pub const DEFAULT_PORT: u16 = 4222;

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `user` and `pass` in CONNECT.
    UserPass {
        /// The user.
        user: String,
        /// The password.
        pass: String,
    },
    /// `auth_token` in CONNECT.
    Token(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::UserPass { user, .. } => write!(f, "UserPass({user:?}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// One server of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// True for `tls://`: the connection must upgrade to TLS after INFO.
    pub tls: bool,
    /// Credentials for this server, if the list has any.
    pub credentials: Option<Credentials>,
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A server list that cannot be used; the entry is quoted with credentials masked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// No servers, or an empty entry between commas.
    Empty,
    /// A scheme other than `nats://` or `tls://`.
    UnknownScheme(String),
    /// `nats://` and `tls://` entries in one list.
    MixedSchemes,
    /// An entry without a host, or with a character no host name has.
    InvalidHost(String),
    /// A port that is not a number from 1 to 65535.
    InvalidPort(String),
    /// Empty credentials, or a bad percent-escape in them.
    InvalidCredentials(String),
    /// A path, query or fragment after the address.
    UnexpectedPath(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Empty => f.write_str("no NATS server given (an empty entry in the list?)"),
            UrlError::UnknownScheme(e) => {
                write!(f, "NATS URL {e}: the scheme must be nats:// or tls://")
            }
            UrlError::MixedSchemes => {
                f.write_str("NATS URLs mix nats:// and tls://; use one scheme for the list")
            }
            UrlError::InvalidHost(e) => write!(f, "NATS URL {e}: missing or invalid host"),
            UrlError::InvalidPort(e) => {
                write!(f, "NATS URL {e}: the port must be a number from 1 to 65535")
            }
            UrlError::InvalidCredentials(e) => write!(
                f,
                "NATS URL {e}: credentials must be user:password@ or token@ (percent-encoded)"
            ),
            UrlError::UnexpectedPath(e) => {
                write!(f, "NATS URL {e}: nothing may follow host:port")
            }
        }
    }
}

impl std::error::Error for UrlError {}

/// Parses a comma-separated server list.
pub fn parse_servers(list: &str) -> Result<Vec<ServerAddr>, UrlError> {
    let mut servers = Vec::new();
    let mut list_tls = None;
    let mut first_credentials = None;
    for entry in list.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(UrlError::Empty);
        }
        let (server, explicit) = parse_entry(entry, list_tls.unwrap_or(false))?;
        match list_tls {
            None => list_tls = Some(server.tls),
            Some(tls) if explicit && tls != server.tls => return Err(UrlError::MixedSchemes),
            Some(_) => {}
        }
        if first_credentials.is_none() {
            first_credentials.clone_from(&server.credentials);
        }
        servers.push(server);
    }
    for s in &mut servers {
        if s.credentials.is_none() {
            s.credentials.clone_from(&first_credentials);
        }
    }
    Ok(servers)
}

/// One entry; the flag says whether it named its scheme.
fn parse_entry(entry: &str, default_tls: bool) -> Result<(ServerAddr, bool), UrlError> {
    let masked = || mask(entry);
    let (tls, explicit, rest) = match entry.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("nats") => (false, true, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tls") => (true, true, rest),
        Some(_) => return Err(UrlError::UnknownScheme(masked())),
        None => (default_tls, false, entry),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    if hostport.contains(['/', '?', '#']) {
        return Err(UrlError::UnexpectedPath(masked()));
    }
    let credentials = match userinfo {
        None => None,
        Some(info) => {
            Some(credentials(info).ok_or_else(|| UrlError::InvalidCredentials(masked()))?)
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| UrlError::InvalidHost(masked()))?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UrlError::InvalidHost(masked()));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(UrlError::InvalidHost(masked())),
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.contains(':')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !host_ok {
        return Err(UrlError::InvalidHost(masked()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| UrlError::InvalidPort(masked()))?,
    };
    Ok((
        ServerAddr {
            host: host.to_string(),
            port,
            tls,
            credentials,
        },
        explicit,
    ))
}

/// `user:pass` or `token`, percent-decoded; `None` when empty or badly escaped.
fn credentials(info: &str) -> Option<Credentials> {
    match info.split_once(':') {
        Some((user, pass)) => {
            let user = percent_decode(user)?;
            if user.is_empty() {
                return None;
            }
            Some(Credentials::UserPass {
                user,
                pass: percent_decode(pass)?,
            })
        }
        None => Some(Credentials::Token(
            percent_decode(info).filter(|t| !t.is_empty())?,
        )),
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The entry with anything before its last `@` (after the scheme) masked.
fn mask(entry: &str) -> String {
    let (scheme, rest) = match entry.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), entry),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => entry.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panic(list in "\\PC{0,40}") {
            let _ = parse_servers(&list);
        }

        #[test]
        fn errors_never_show_the_password(
            pass in "[a-z]{6,12}",
            host in "[a-z:\\[\\]/ ]{0,10}",
            port in "[0-9a-z]{0,7}",
        ) {
            let list = format!("nats://u:{pass}@{host}:{port}");
            if let Err(e) = parse_servers(&list) {
                prop_assert!(!e.to_string().contains(&pass), "{e}");
            }
        }
    }

    fn addr(host: &str, port: u16, tls: bool, credentials: Option<Credentials>) -> ServerAddr {
        ServerAddr {
            host: host.into(),
            port,
            tls,
            credentials,
        }
    }

    fn user(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials::UserPass {
            user: u.into(),
            pass: p.into(),
        })
    }

    #[test]
    fn one_server_with_and_without_port() {
        assert_eq!(
            parse_servers("nats://127.0.0.1:4333").unwrap(),
            [addr("127.0.0.1", 4333, false, None)]
        );
        assert_eq!(
            parse_servers("NATS://nats.example/").unwrap(),
            [addr("nats.example", DEFAULT_PORT, false, None)]
        );
        assert_eq!(
            parse_servers("localhost").unwrap(),
            [addr("localhost", DEFAULT_PORT, false, None)]
        );
    }

    #[test]
    fn lists_inherit_scheme_and_credentials() {
        assert_eq!(
            parse_servers("tls://u:p@a:1, b:2,tls://c").unwrap(),
            [
                addr("a", 1, true, user("u", "p")),
                addr("b", 2, true, user("u", "p")),
                addr("c", DEFAULT_PORT, true, user("u", "p")),
            ]
        );
        assert_eq!(
            parse_servers("nats://a,nats://tok@b").unwrap(),
            [
                addr(
                    "a",
                    DEFAULT_PORT,
                    false,
                    Some(Credentials::Token("tok".into()))
                ),
                addr(
                    "b",
                    DEFAULT_PORT,
                    false,
                    Some(Credentials::Token("tok".into()))
                ),
            ]
        );
    }

    #[test]
    fn credentials_are_percent_decoded() {
        assert_eq!(
            parse_servers("nats://al%40ice:p%3As%25@h:5").unwrap(),
            [addr("h", 5, false, user("al@ice", "p:s%"))]
        );
        // The password may itself hold '@': the last one ends the credentials.
        assert_eq!(
            parse_servers("nats://u:p@ss@h").unwrap(),
            [addr("h", DEFAULT_PORT, false, user("u", "p@ss"))]
        );
        assert_eq!(
            parse_servers("nats://u:@h").unwrap(),
            [addr("h", DEFAULT_PORT, false, user("u", ""))]
        );
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(
            parse_servers("nats://[::1]:4222,[fe80::1]").unwrap(),
            [
                addr("::1", 4222, false, None),
                addr("fe80::1", DEFAULT_PORT, false, None)
            ]
        );
        assert_eq!(
            parse_servers("nats://[::1]:4222").unwrap()[0].to_string(),
            "nats://[::1]:4222"
        );
    }

    #[test]
    fn display_never_shows_secrets() {
        let s = &parse_servers("tls://u:secret@h:7").unwrap()[0];
        assert_eq!(s.to_string(), "tls://h:7");
        assert!(!format!("{s:?}").contains("secret"));
        let e = parse_servers("nats://u:secret@h:99999").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NATS URL nats://***@h:99999: the port must be a number from 1 to 65535"
        );
    }

    #[test]
    fn bad_lists_are_clear_errors() {
        let cases: &[(&str, UrlError)] = &[
            ("", UrlError::Empty),
            ("nats://a,,nats://b", UrlError::Empty),
            ("http://a:1", UrlError::UnknownScheme("http://a:1".into())),
            ("nats://a,tls://b", UrlError::MixedSchemes),
            ("nats://", UrlError::InvalidHost("nats://".into())),
            ("nats://:4222", UrlError::InvalidHost("nats://:4222".into())),
            ("nats://a b:1", UrlError::InvalidHost("nats://a b:1".into())),
            (
                "nats://::1:4222",
                UrlError::InvalidHost("nats://::1:4222".into()),
            ),
            ("nats://[::1", UrlError::InvalidHost("nats://[::1".into())),
            ("nats://a:0", UrlError::InvalidPort("nats://a:0".into())),
            ("nats://a:x", UrlError::InvalidPort("nats://a:x".into())),
            ("nats://a:", UrlError::InvalidPort("nats://a:".into())),
            ("nats://a:+1", UrlError::InvalidPort("nats://a:+1".into())),
            (
                "nats://a:65536",
                UrlError::InvalidPort("nats://a:65536".into()),
            ),
            (
                "nats://a:1/x",
                UrlError::UnexpectedPath("nats://a:1/x".into()),
            ),
            (
                "nats://@a",
                UrlError::InvalidCredentials("nats://***@a".into()),
            ),
            (
                "nats://:p@a",
                UrlError::InvalidCredentials("nats://***@a".into()),
            ),
            (
                "nats://u:%zz@a",
                UrlError::InvalidCredentials("nats://***@a".into()),
            ),
        ];
        for (list, want) in cases {
            assert_eq!(parse_servers(list).as_ref(), Err(want), "{list:?}");
        }
    }
}
