//! A webhook endpoint's URL: `http://` or `https://`, a host (name, IPv4, or
//! `[IPv6]`), an optional port, and the path and query the request line carries.
//! Checked once, when the endpoint is added, with errors an operator can act on;
//! what passes can go into a request line and a `Host` header as it is.

use std::fmt;
use std::net::IpAddr;

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest host name, in bytes (DNS's limit).
const MAX_HOST_BYTES: usize = 253;

/// A parsed webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https` (else `http`).
    pub https: bool,
    /// The host, lower case; an IPv6 address without its brackets.
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
    /// The request target: the path (at least `/`) and the query, if any.
    pub path_and_query: String,
    /// The URL as given.
    text: String,
    /// The `Host` header's value, made once: each request writes it.
    host_header: String,
}

impl Url {
    /// Parses `s`: `http` or `https` only, no user info, no fragment, printable
    /// ASCII only (non-ASCII must be percent-encoded), at most [`MAX_URL_BYTES`].
    /// The error says what is wrong, for `-ERR invalid url: ...`.
    pub fn parse(s: &str) -> Result<Url, String> {
        if s.len() > MAX_URL_BYTES {
            return Err(format!("longer than {MAX_URL_BYTES} bytes"));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(if c.is_ascii_whitespace() {
                "contains whitespace".to_string()
            } else if c.is_ascii() {
                "contains a control character".to_string()
            } else {
                "contains a non-ASCII character (percent-encode it)".to_string()
            });
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| "expected http://host/... or https://host/...".to_string())?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(format!("scheme must be http or https, not '{scheme}'"));
        };
        if rest.contains('#') {
            return Err("a fragment (#...) is not allowed".to_string());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err("user info (user:password@) is not allowed".to_string());
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => parse_port(p)?,
        };
        let path_and_query = match target.strip_prefix('?') {
            Some(_) => format!("/{target}"),
            None if target.is_empty() => "/".to_string(),
            None => target.to_string(),
        };
        let host_header = host_header(&host, port, https);
        Ok(Url {
            https,
            host,
            port,
            path_and_query,
            text: s.to_string(),
            host_header,
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host as an IP address, when it is one (an IP literal needs no
    /// resolution).
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header's value: the host (IPv6 in brackets), with the port
    /// unless it is the scheme's default.
    pub fn host_header(&self) -> &str {
        &self.host_header
    }
}

/// See [`Url::host_header`].
fn host_header(host: &str, port: u16, https: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let default = if https { 443 } else { 80 };
    if port == default {
        host
    } else {
        format!("{host}:{port}")
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `host[:port]` or `[v6][:port]`; the host comes back lower case.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in the host".to_string())?;
        let ip: std::net::Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("'{v6}' is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected '{after}' after the host"))?,
            ),
        };
        return Ok((ip.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(format!("host longer than {MAX_HOST_BYTES} bytes"));
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("character '{c}' is not allowed in a host"));
    }
    if host.starts_with('.') || host.contains("..") {
        return Err(format!("'{host}' is not a valid host name"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port '{p}' is not a number"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {p} is out of range (1-65535)")),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        match Url::parse(s) {
            Ok(u) => panic!("{s} parsed as {u:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn http_and_https_with_default_ports() {
        let u = ok("http://example.com/hook");
        assert!(!u.https);
        assert_eq!((u.host.as_str(), u.port), ("example.com", 80));
        assert_eq!(u.path_and_query, "/hook");
        assert_eq!(u.host_header(), "example.com");
        let u = ok("HTTPS://Example.COM");
        assert!(u.https);
        assert_eq!((u.host.as_str(), u.port), ("example.com", 443));
        assert_eq!(u.path_and_query, "/");
        assert_eq!(u.as_str(), "HTTPS://Example.COM");
    }

    #[test]
    fn ports_queries_and_ip_literals() {
        let u = ok("http://127.0.0.1:8080/a/b?x=1&y=2");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path_and_query, "/a/b?x=1&y=2");
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        assert_eq!(u.host_ip(), Some("127.0.0.1".parse().unwrap()));
        let u = ok("https://[::1]:8443?q");
        assert_eq!(u.host, "::1");
        assert_eq!(u.path_and_query, "/?q");
        assert_eq!(u.host_header(), "[::1]:8443");
        assert_eq!(ok("https://[::1]").host_header(), "[::1]");
        assert_eq!(ok("http://example.com").host_ip(), None);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(err("ftp://x/").contains("scheme"));
        assert!(err("example.com/hook").contains("expected http"));
        assert!(err("http://u:p@example.com/").contains("user info"));
        assert!(err("http://example.com/#frag").contains("fragment"));
        assert!(err("http:///path").contains("no host"));
        assert!(err("http://example.com:0/").contains("out of range"));
        assert!(err("http://example.com:65536/").contains("out of range"));
        assert!(err("http://example.com:/").contains("not a number"));
        assert!(err("http://example.com:8x/").contains("not a number"));
        assert!(err("http://exa mple.com/").contains("whitespace"));
        assert!(err("http://example.com/\r\nX: y").contains("whitespace"));
        assert!(err("http://example.com/\u{7f}").contains("control"));
        assert!(err("http://exämple.com/").contains("non-ASCII"));
        assert!(err("http://ex%61mple.com/").contains("not allowed in a host"));
        assert!(err("http://[::1/").contains("unclosed"));
        assert!(err("http://[zz]/").contains("IPv6"));
        assert!(err("http://[::1]x/").contains("unexpected"));
        assert!(err("http://a..b/").contains("not a valid host"));
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(err(&long).contains("longer than"));
    }
}
