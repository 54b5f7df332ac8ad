//! The HTTP side: requests parsed with `httparse` from a connection's input, routed
//! (`router`), answered in order with keep-alive and pipelining; `GET /events`
//! turns the connection into a Server-Sent Events stream (`sse`).
//!
//! Limits answer with their status and close: head bytes and header count (431),
//! request-target length (414), body bytes (413), a head or body that takes too
//! long to arrive (408). Request smuggling is refused: any `Transfer-Encoding`
//! (501) and a duplicate or malformed `Content-Length` (400) close the connection.

pub(crate) mod router;
pub(crate) mod sse;
pub(crate) mod stream_token;
pub(crate) mod webhooks;

use std::time::Instant;

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Longest request target (path and query), in bytes.
pub const MAX_TARGET_BYTES: usize = 4096;
/// Largest request body, in bytes (a user with 32 fields of 4 KiB fits).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Time a request may take to arrive, head and body, once its first byte is in.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// HTTP state of a connection accepted on the HTTP port.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpState {
    /// When the request being received must be complete (408 after).
    pub deadline: Option<Instant>,
    /// Set once the connection became an event stream.
    pub sse: Option<sse::SseState>,
}

/// Request methods the routes know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD (a GET without the body)
    Head,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// Anything else (answered 405 on known paths).
    Other,
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, still percent-encoded.
    pub path: String,
    /// The query string (after `?`), still encoded.
    pub query: String,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `Last-Event-ID`, when sent.
    pub last_event_id: Option<String>,
    /// The `Authorization` header, when sent.
    pub authorization: Option<Vec<u8>>,
    /// The `Content-Type` header's media type (lowercase, without parameters),
    /// when sent.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// Bytes of input the request took (head and body).
    pub len: usize,
}

/// A request that cannot be served: answered with `status` and the connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status code.
    pub status: u16,
    /// Why, for the JSON body.
    pub message: String,
}

fn fail(status: u16, message: impl Into<String>) -> HttpError {
    HttpError {
        status,
        message: message.into(),
    }
}

/// Parses one request from the front of `buf`: `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(fail(431, "request head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(fail(431, format!("more than {MAX_HEADERS} headers")));
        }
        Err(e) => return Err(fail(400, format!("malformed request: {e}"))),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(fail(431, "request head too large"));
    }
    let target = req.path.unwrap_or("/");
    if target.len() > MAX_TARGET_BYTES {
        return Err(fail(414, "request target too long"));
    }
    let version = req.version.unwrap_or(1);
    let mut content_length: Option<usize> = None;
    let mut keep_alive = version >= 1;
    let mut last_event_id = None;
    let mut authorization = None;
    let mut content_type = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(fail(
                501,
                "Transfer-Encoding is not supported; send Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(fail(400, "duplicate Content-Length"));
            }
            let text = std::str::from_utf8(h.value).unwrap_or("");
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(400, "Content-Length must be digits"));
            }
            let n: usize = text
                .parse()
                .map_err(|_| fail(413, format!("body over {MAX_BODY_BYTES} bytes")))?;
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                keep_alive = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let v = String::from_utf8_lossy(h.value);
            let media = v.split(';').next().unwrap_or_default().trim();
            content_type = Some(media.to_ascii_lowercase());
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = Some(String::from_utf8_lossy(h.value).trim().to_string());
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY_BYTES {
        return Err(fail(413, format!("body over {MAX_BODY_BYTES} bytes")));
    }
    let Some(body) = buf.get(head_len..head_len + body_len) else {
        return Ok(None);
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        _ => Method::Other,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        keep_alive,
        last_event_id,
        authorization,
        content_type,
        body: body.to_vec(),
        len: head_len + body_len,
    }))
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers (`Location`, `Allow`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response; `head_only` leaves out the body (HEAD).
    pub fn write(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase of a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set); `None` for a
/// malformed escape.
pub fn percent_decode(s: &str, plus: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The decoded value of `key` in a query string.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true)?;
        (k == key.as_bytes())
            .then(|| percent_decode(v, true).map(|v| String::from_utf8_lossy(&v).into_owned()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_request_with_body() {
        let raw = b"POST /users?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET";
        let req = parse_request(raw).unwrap().unwrap();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/users");
        assert_eq!(req.query, "x=1");
        assert_eq!(req.body, b"{}");
        assert_eq!(req.len, raw.len() - 3);
        assert!(req.keep_alive);
    }

    #[test]
    fn waits_for_head_and_body() {
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost").unwrap().is_none());
        assert!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn refuses_smuggling_and_oversize() {
        let te = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request(te).unwrap_err().status, 501);
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(parse_request(dup).unwrap_err().status, 400);
        let bad = b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx";
        assert_eq!(parse_request(bad).unwrap_err().status, 400);
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(parse_request(big.as_bytes()).unwrap_err().status, 413);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(parse_request(long.as_bytes()).unwrap_err().status, 414);
        let huge = vec![b'a'; MAX_HEAD_BYTES + 1];
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend_from_slice(&huge);
        assert_eq!(parse_request(&head).unwrap_err().status, 431);
    }

    #[test]
    fn http10_closes_unless_asked() {
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
        let r = parse_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive);
        let r = parse_request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn decodes_percent_escapes_and_queries() {
        assert_eq!(
            percent_decode("%C3%A9t%C3%A9", false).unwrap(),
            "été".as_bytes()
        );
        assert!(percent_decode("%G1", false).is_none());
        assert!(percent_decode("%4", false).is_none());
        assert_eq!(query_param("cursor=5&match=a%2A", "match").unwrap(), "a*");
        assert_eq!(query_param("limit=10", "cursor"), None);
    }
}
