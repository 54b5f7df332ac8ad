//! The reply encoder: RESP2 or RESP3, written straight into a connection's output.
//!
//! Commands describe their reply with these calls and never build intermediate
//! values; the protocol version decides how aggregates and nulls are spelled.

/// Appends encoded replies to an output buffer.
#[derive(Debug)]
pub struct Reply<'a> {
    buf: &'a mut Vec<u8>,
    resp3: bool,
}

impl<'a> Reply<'a> {
    /// An encoder appending to `buf`, in RESP3 when `resp3` is set.
    pub fn new(buf: &'a mut Vec<u8>, resp3: bool) -> Self {
        Reply { buf, resp3 }
    }

    /// True when the connection speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// Switches the version for the replies that follow.
    pub fn set_resp3(&mut self, resp3: bool) {
        self.resp3 = resp3;
    }

    /// `+text`: `text` must not contain CR or LF.
    #[inline]
    pub fn simple(&mut self, text: &str) {
        self.buf.reserve(text.len() + 3);
        self.buf.push(b'+');
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// `-<text>`: `text` starts with its error code (`ERR ...`); CR and LF in it are
    /// replaced by spaces so the reply stays one line.
    pub fn error(&mut self, text: &str) {
        self.buf.push(b'-');
        self.buf.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `-<bytes>` for an error that quotes the peer's bytes as they came (CR and
    /// LF become spaces).
    pub fn error_bytes(&mut self, text: &[u8]) {
        self.buf.push(b'-');
        self.buf.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `:n`.
    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    /// `$len` and the bytes.
    pub fn bulk(&mut self, data: &[u8]) {
        self.header(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string of an integer's decimal digits.
    pub fn bulk_int(&mut self, n: i64) {
        let mut b = itoa::Buffer::new();
        self.bulk(b.format(n).as_bytes());
    }

    /// The null a missing value gets: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"$-1\r\n");
        }
    }

    /// The null a missing aggregate gets: `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.buf.extend_from_slice(b"_\r\n");
        } else {
            self.buf.extend_from_slice(b"*-1\r\n");
        }
    }

    /// The header of an array of `n` elements.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// The header of a map of `n` pairs (an array of `2n` elements in RESP2).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n as i64);
        } else {
            self.header(b'*', 2 * n as i64);
        }
    }

    /// The header of an out-of-band push of `n` elements (an array in RESP2).
    pub fn push(&mut self, n: usize) {
        self.header(if self.resp3 { b'>' } else { b'*' }, n as i64);
    }

    /// A verbatim text (`=len\r\ntxt:...` in RESP3, a bulk string in RESP2).
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            self.header(b'=', text.len() as i64 + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    /// Where the next byte goes: a mark for [`Reply::insert`] and
    /// [`Reply::truncate`].
    pub fn mark(&self) -> usize {
        self.buf.len()
    }

    /// Writes what `f` encodes at `mark`, ahead of everything written since: the
    /// header of an aggregate whose length is known only once its elements are
    /// written (they are then encoded once, straight from where they are read).
    pub fn insert(&mut self, mark: usize, f: impl FnOnce(&mut Reply<'_>)) {
        let mut head = Vec::new();
        f(&mut Reply::new(&mut head, self.resp3));
        let at = mark.min(self.buf.len());
        self.buf.splice(at..at, head);
    }

    /// Drops everything written since `mark` (a reply abandoned half-way).
    pub fn truncate(&mut self, mark: usize) {
        self.buf.truncate(mark);
    }

    fn header(&mut self, kind: u8, n: i64) {
        let mut b = itoa::Buffer::new();
        self.buf.push(kind);
        self.buf.extend_from_slice(b.format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_spell_aggregates_and_nulls() {
        let mut v = Vec::new();
        let mut r = Reply::new(&mut v, false);
        r.map(1);
        r.bulk(b"id");
        r.int(7);
        r.null();
        r.null_array();
        assert_eq!(v, b"*2\r\n$2\r\nid\r\n:7\r\n$-1\r\n*-1\r\n");
        let mut v = Vec::new();
        let mut r = Reply::new(&mut v, true);
        r.map(1);
        r.push(0);
        r.null();
        r.verbatim("hi");
        assert_eq!(v, b"%1\r\n>0\r\n_\r\n=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn headers_go_in_ahead_of_their_elements() {
        let mut v = b"+OK\r\n".to_vec();
        let mut r = Reply::new(&mut v, true);
        let mark = r.mark();
        r.int(1);
        r.int(2);
        r.insert(mark, |r| {
            r.map(1);
            r.bulk(b"k");
            r.array(2);
        });
        let end = r.mark();
        r.int(3);
        r.truncate(end);
        assert_eq!(v, b"+OK\r\n%1\r\n$1\r\nk\r\n*2\r\n:1\r\n:2\r\n");
    }

    #[test]
    fn errors_stay_on_one_line() {
        let mut v = Vec::new();
        Reply::new(&mut v, false).error("ERR a\r\nb");
        assert_eq!(v, b"-ERR a  b\r\n");
    }
}
