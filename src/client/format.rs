//! Reply formatting, byte for byte as redis-cli prints it: the human form
//! (`(integer) 1`, `"text"`, numbered nested arrays, `1# "key" => value` maps) and
//! the `--raw` form (bare values, one per line).
//!
//! The rules are those of redis-cli 7's `cliFormatReplyTTY` and
//! `cliFormatReplyRaw`, so output can be diffed against redis-cli's for the same
//! replies; the unit tests below pin outputs taken from redis-cli 7.0.

use super::reply::Value;

/// How replies are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// redis-cli's terminal form: types and quotes shown, aggregates numbered.
    Human,
    /// redis-cli's `--raw` form: bare values, one per line.
    Raw,
}

/// Formats `value` in `style`, ending with a newline.
pub fn format(value: &Value, style: Style) -> Vec<u8> {
    let mut out = Vec::new();
    match style {
        Style::Human => human(value, "", &mut out),
        Style::Raw => {
            raw(value, &mut out);
            out.push(b'\n');
        }
    }
    out
}

/// Formats a report meant to be read as it is (the reply of `INFO` or `CLIENT
/// LIST`): bare, without a newline added, as redis-cli prints those in both styles.
pub fn report(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    raw(value, &mut out);
    out
}

/// Quotes `bytes` the way redis-cli shows a bulk string: in double quotes, with
/// `\n`, `\r`, `\t`, `\a`, `\b`, `\\` and `\"` escaped and every other byte outside
/// printable ASCII as `\xNN`.
pub fn quote(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

/// `cliFormatReplyTTY`: `prefix` is the indentation of the enclosing aggregates,
/// written before every element but the first (whose number the caller wrote).
fn human(value: &Value, prefix: &str, out: &mut Vec<u8>) {
    match value {
        Value::Error(text) => line(out, b"(error) ", text),
        Value::Status(text) | Value::Verbatim(text) => line(out, b"", text),
        Value::Integer(n) => line(out, b"(integer) ", n.to_string().as_bytes()),
        Value::Double(text) => line(out, b"(double) ", text),
        Value::BigNumber(text) => line(out, b"(big number) ", text),
        Value::Bulk(bytes) => {
            quote(bytes, out);
            out.push(b'\n');
        }
        Value::Nil => out.extend_from_slice(b"(nil)\n"),
        Value::Boolean(true) => out.extend_from_slice(b"(true)\n"),
        Value::Boolean(false) => out.extend_from_slice(b"(false)\n"),
        Value::Array(items) => list(items, ')', "(empty array)\n", prefix, out),
        Value::Push(items) => list(items, ')', "(empty push)\n", prefix, out),
        Value::Set(items) => list(items, '~', "(empty set)\n", prefix, out),
        Value::Map(pairs) if pairs.is_empty() => out.extend_from_slice(b"(empty hash)\n"),
        Value::Map(pairs) => {
            let (width, inner) = indent(pairs.len(), prefix);
            for (i, (key, val)) in pairs.iter().enumerate() {
                number(out, if i == 0 { "" } else { prefix }, i + 1, width, '#');
                human(key, &inner, out);
                // The value goes on the key's line: drop the key's newline.
                out.pop();
                out.extend_from_slice(b" => ");
                if is_multiline(val) {
                    out.push(b'\n');
                    out.extend_from_slice(inner.as_bytes());
                }
                human(val, &inner, out);
            }
        }
    }
}

fn list(items: &[Value], sep: char, empty: &str, prefix: &str, out: &mut Vec<u8>) {
    if items.is_empty() {
        out.extend_from_slice(empty.as_bytes());
        return;
    }
    let (width, inner) = indent(items.len(), prefix);
    for (i, item) in items.iter().enumerate() {
        number(out, if i == 0 { "" } else { prefix }, i + 1, width, sep);
        human(item, &inner, out);
    }
}

/// The width of the largest element number and the prefix of nested lines: the
/// enclosing prefix plus room for `NN) `.
fn indent(count: usize, prefix: &str) -> (usize, String) {
    let width = count.to_string().len();
    (width, format!("{prefix}{:width$}", "", width = width + 2))
}

fn number(out: &mut Vec<u8>, prefix: &str, n: usize, width: usize, sep: char) {
    out.extend_from_slice(format!("{prefix}{n:>width$}{sep} ").as_bytes());
}

fn line(out: &mut Vec<u8>, label: &[u8], text: &[u8]) {
    out.extend_from_slice(label);
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Whether the human form of `value` spans several lines (a map's value then
/// starts on a line of its own).
fn is_multiline(value: &Value) -> bool {
    match value {
        Value::Array(items) | Value::Set(items) | Value::Push(items) => match items.as_slice() {
            [] => false,
            [only] => is_multiline(only),
            _ => true,
        },
        Value::Map(pairs) => match pairs.as_slice() {
            [] => false,
            [(_, only)] => is_multiline(only),
            _ => true,
        },
        _ => false,
    }
}

/// `cliFormatReplyRaw`: bare values; aggregates one element a line, map pairs as
/// `key value`; an error keeps a newline of its own, nil prints nothing.
fn raw(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => {}
        Value::Error(text) => line(out, b"", text),
        Value::Status(text)
        | Value::Bulk(text)
        | Value::Verbatim(text)
        | Value::Double(text)
        | Value::BigNumber(text) => out.extend_from_slice(text),
        Value::Boolean(true) => out.extend_from_slice(b"(true)"),
        Value::Boolean(false) => out.extend_from_slice(b"(false)"),
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw(item, out);
            }
        }
        Value::Map(pairs) => {
            for (i, (key, val)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw(key, out);
                out.push(b' ');
                raw(val, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn human(v: &Value) -> String {
        String::from_utf8(format(v, Style::Human)).unwrap()
    }

    fn raw(v: &Value) -> String {
        String::from_utf8(format(v, Style::Raw)).unwrap()
    }

    #[test]
    fn scalars_print_with_their_type() {
        assert_eq!(human(&Value::Integer(-3)), "(integer) -3\n");
        assert_eq!(human(&bulk("text")), "\"text\"\n");
        assert_eq!(human(&Value::Nil), "(nil)\n");
        assert_eq!(human(&Value::Status(b"OK".to_vec())), "OK\n");
        assert_eq!(
            human(&Value::Error(b"ERR unknown".to_vec())),
            "(error) ERR unknown\n"
        );
        assert_eq!(human(&Value::Double(b"3.141".to_vec())), "(double) 3.141\n");
        assert_eq!(human(&Value::Boolean(true)), "(true)\n");
        assert_eq!(human(&Value::Boolean(false)), "(false)\n");
        assert_eq!(
            human(&Value::Verbatim(b"a\nb".to_vec())),
            "a\nb\n",
            "verbatim text is printed unquoted"
        );
        assert_eq!(
            human(&Value::BigNumber(b"12345678901234567890".to_vec())),
            "(big number) 12345678901234567890\n"
        );
    }

    #[test]
    fn bulk_strings_are_quoted_like_sdscatrepr() {
        // redis-cli 7.0: SET k "a\x01\xff\"\\\n\t\r\a\bé"; GET k
        let v = Value::Bulk(b"a\x01\xff\"\\\n\t\r\x07\x08\xc3\xa9".to_vec());
        assert_eq!(
            human(&v),
            "\"a\\x01\\xff\\\"\\\\\\n\\t\\r\\a\\b\\xc3\\xa9\"\n"
        );
    }

    #[test]
    fn empty_aggregates_are_named() {
        assert_eq!(human(&Value::Array(vec![])), "(empty array)\n");
        assert_eq!(human(&Value::Map(vec![])), "(empty hash)\n");
        assert_eq!(human(&Value::Set(vec![])), "(empty set)\n");
        assert_eq!(human(&Value::Push(vec![])), "(empty push)\n");
    }

    #[test]
    fn nested_arrays_are_numbered_and_aligned() {
        // redis-cli 7.0: EVAL "return {1,{2,{'a','b'},3},'b'}" 0
        let v = Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![
                Value::Integer(2),
                Value::Array(vec![bulk("a"), bulk("b")]),
                Value::Integer(3),
            ]),
            bulk("b"),
        ]);
        assert_eq!(
            human(&v),
            "1) (integer) 1\n\
             2) 1) (integer) 2\n   \
                2) 1) \"a\"\n      \
                   2) \"b\"\n   \
                3) (integer) 3\n\
             3) \"b\"\n"
        );
    }

    #[test]
    fn ten_or_more_elements_right_align_their_numbers() {
        let inner: Vec<Value> = (1..=10).map(|i| bulk(&i.to_string())).collect();
        let v = Value::Array(vec![bulk("1-0"), Value::Array(inner)]);
        let out = human(&v);
        assert!(
            out.starts_with("1) \"1-0\"\n2)  1) \"1\"\n    2) \"2\"\n"),
            "{out}"
        );
        assert!(out.ends_with("    9) \"9\"\n   10) \"10\"\n"), "{out}");
    }

    #[test]
    fn maps_print_key_arrow_value() {
        // redis-cli 7.0 -3: LOOKUP alice against userbus
        let v = Value::Map(vec![
            (bulk("id"), Value::Integer(1)),
            (bulk("name"), bulk("alice")),
            (
                bulk("fields"),
                Value::Map(vec![
                    (bulk("age"), bulk("30")),
                    (bulk("email"), bulk("a@b.c")),
                ]),
            ),
            (bulk("modules"), Value::Array(vec![])),
            (
                bulk("one"),
                Value::Map(vec![(bulk("x"), Value::Integer(1))]),
            ),
        ]);
        assert_eq!(
            human(&v),
            "1# \"id\" => (integer) 1\n\
             2# \"name\" => \"alice\"\n\
             3# \"fields\" => \n   \
                1# \"age\" => \"30\"\n   \
                2# \"email\" => \"a@b.c\"\n\
             4# \"modules\" => (empty array)\n\
             5# \"one\" => 1# \"x\" => (integer) 1\n"
        );
    }

    #[test]
    fn sets_and_pushes_have_their_own_markers() {
        let set = Value::Set(vec![Value::Integer(0), Value::Integer(1)]);
        assert_eq!(human(&set), "1~ (integer) 0\n2~ (integer) 1\n");
        let push = Value::Push(vec![bulk("message"), bulk("user.registered"), bulk("{}")]);
        assert_eq!(
            human(&push),
            "1) \"message\"\n2) \"user.registered\"\n3) \"{}\"\n"
        );
    }

    #[test]
    fn raw_prints_bare_values_one_per_line() {
        assert_eq!(raw(&Value::Integer(5)), "5\n");
        assert_eq!(raw(&bulk("a b")), "a b\n");
        assert_eq!(raw(&Value::Nil), "\n");
        assert_eq!(raw(&Value::Error(b"ERR x".to_vec())), "ERR x\n\n");
        assert_eq!(raw(&Value::Boolean(false)), "(false)\n");
        assert_eq!(raw(&Value::Array(vec![])), "\n");
        let nested = Value::Array(vec![
            Value::Integer(1),
            Value::Array(vec![bulk("a"), bulk("b")]),
            bulk("c"),
        ]);
        assert_eq!(raw(&nested), "1\na\nb\nc\n");
        let map = Value::Map(vec![
            (bulk("proto"), Value::Integer(3)),
            (bulk("modules"), Value::Array(vec![])),
        ]);
        assert_eq!(raw(&map), "proto 3\nmodules \n");
    }

    #[test]
    fn reports_print_as_sent() {
        assert_eq!(report(&bulk("# Server\r\nx:1\r\n")), b"# Server\r\nx:1\r\n");
    }
}
