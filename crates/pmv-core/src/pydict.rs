//! A parser for Python literal syntax, as `repr(dict)` writes it.
//!
//! The upstream xinpianchang downloader saves each item's metadata as `str(dict)`, and
//! its own reader calls `eval()` on it. This module reads the same text as data only:
//! strings (single, double and triple quoted, with escapes, adjacent literals joined,
//! `r`/`u`/`b` prefixes), integers, floats, `True`/`False`/`None`, lists, tuples and
//! dicts. Anything else (names, calls, operators) is an error with its byte offset;
//! nothing is ever evaluated. Nesting is limited so hostile input cannot exhaust the
//! stack.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    Str(String),
    Bytes(Vec<u8>),
    Int(i128),
    Float(f64),
    Bool(bool),
    None,
    List(Vec<PyValue>),
    Tuple(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Bool(_) => "bool",
            PyValue::None => "None",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyError {
    /// Byte offset in the input.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for PyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for PyError {}

const MAX_DEPTH: usize = 64;

/// Parses one Python literal; only whitespace (and `#` comments) may follow it.
pub fn parse(input: &str) -> Result<PyValue, PyError> {
    let mut p = Parser {
        s: input.as_bytes(),
        src: input,
        pos: 0,
    };
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected text after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, message: impl Into<String>) -> PyError {
        PyError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.pos += 1,
                b'\\' if self.s.get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<PyValue, PyError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting deeper than 64 levels"));
        }
        self.skip_ws();
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.dict(depth),
            Some(b'[') => self.seq(depth, b']').map(|(items, _)| PyValue::List(items)),
            Some(b'(') => self.tuple(depth),
            Some(b'\'' | b'"') => self.strings(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.pos += 1;
                }
                let word = &self.src[start..self.pos];
                if matches!(self.peek(), Some(b'\'' | b'"'))
                    && word.len() <= 2
                    && word
                        .chars()
                        .all(|c| matches!(c.to_ascii_lowercase(), 'r' | 'u' | 'b'))
                {
                    self.pos = start;
                    return self.strings();
                }
                match word {
                    "True" => Ok(PyValue::Bool(true)),
                    "False" => Ok(PyValue::Bool(false)),
                    "None" => Ok(PyValue::None),
                    _ => Err(PyError {
                        offset: start,
                        message: format!(
                            "'{word}' is a name, not a literal (nothing is evaluated)"
                        ),
                    }),
                }
            }
            Some(c) if c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.') => self.number(),
            Some(_) => Err(self.err(format!(
                "unexpected character '{}'",
                self.src[self.pos..]
                    .chars()
                    .next()
                    .unwrap_or('?')
                    .escape_debug()
            ))),
        }
    }

    fn dict(&mut self, depth: usize) -> Result<PyValue, PyError> {
        self.pos += 1; // {
        let mut items = vec![];
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(PyValue::Dict(items));
            }
            let key = self.value(depth + 1)?;
            if matches!(key, PyValue::List(_) | PyValue::Dict(_)) {
                return Err(self.err(format!("a {} cannot be a dict key", key.type_name())));
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a dict key"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            items.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                None => return Err(self.err("unterminated dict")),
                _ => return Err(self.err("expected ',' or '}' in a dict")),
            }
        }
    }

    /// Items up to `close`, and how many separating commas there were.
    fn seq(&mut self, depth: usize, close: u8) -> Result<(Vec<PyValue>, usize), PyError> {
        self.pos += 1; // [ or (
        let mut items = vec![];
        let mut commas = 0;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, commas));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    commas += 1;
                }
                Some(c) if c == close => {}
                None => return Err(self.err("unterminated list or tuple")),
                _ => return Err(self.err(format!("expected ',' or '{}'", close as char))),
            }
        }
    }

    fn tuple(&mut self, depth: usize) -> Result<PyValue, PyError> {
        let (items, commas) = self.seq(depth, b')')?;
        // `(x)` is x in parentheses; `(x,)` and `()` are tuples.
        if items.len() == 1 && commas == 0 {
            Ok(items.into_iter().next().unwrap())
        } else {
            Ok(PyValue::Tuple(items))
        }
    }

    fn number(&mut self) -> Result<PyValue, PyError> {
        let start = self.pos;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_'))
            || (matches!(self.peek(), Some(b'-' | b'+'))
                && matches!(self.s.get(self.pos - 1), Some(b'e' | b'E')))
        {
            self.pos += 1;
        }
        let text: String = self.src[start..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let bad = || PyError {
            offset: start,
            message: format!("'{}' is not a number", &self.src[start..self.pos]),
        };
        let (sign, digits) = match text.strip_prefix('-') {
            Some(rest) => (-1i128, rest),
            None => (1, text.strip_prefix('+').unwrap_or(&text)),
        };
        let radix = match digits.get(..2).map(str::to_ascii_lowercase).as_deref() {
            Some("0x") => Some(16),
            Some("0o") => Some(8),
            Some("0b") => Some(2),
            _ => None,
        };
        if let Some(radix) = radix {
            return i128::from_str_radix(&digits[2..], radix)
                .map(|v| PyValue::Int(sign * v))
                .map_err(|_| bad());
        }
        if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() {
            return digits
                .parse::<i128>()
                .map(|v| PyValue::Int(sign * v))
                .map_err(|_| bad());
        }
        match text.parse::<f64>() {
            Ok(v) if !digits.eq_ignore_ascii_case("inf") && !digits.eq_ignore_ascii_case("nan") => {
                Ok(PyValue::Float(v))
            }
            _ => Err(bad()),
        }
    }

    /// One or more adjacent string literals, joined as Python does.
    fn strings(&mut self) -> Result<PyValue, PyError> {
        let mut text: Option<String> = None;
        let mut bytes: Option<Vec<u8>> = None;
        loop {
            let lit_start = self.pos;
            let (is_bytes, piece) = self.string_literal()?;
            match (is_bytes, &mut text, &mut bytes) {
                (false, _, Some(_)) | (true, Some(_), _) => {
                    return Err(PyError {
                        offset: lit_start,
                        message: "cannot join bytes and str literals".into(),
                    });
                }
                (false, t, None) => t
                    .get_or_insert_with(String::new)
                    .push_str(std::str::from_utf8(&piece).expect("str literals decode to UTF-8")),
                (true, None, b) => b.get_or_insert_with(Vec::new).extend_from_slice(&piece),
            }
            let save = self.pos;
            self.skip_ws();
            let next_is_string = match self.peek() {
                Some(b'\'' | b'"') => true,
                Some(c) if matches!(c.to_ascii_lowercase(), b'r' | b'u' | b'b') => {
                    let mut i = self.pos;
                    while i < self.s.len()
                        && i - self.pos < 2
                        && matches!(self.s[i].to_ascii_lowercase(), b'r' | b'u' | b'b')
                    {
                        i += 1;
                    }
                    matches!(self.s.get(i), Some(b'\'' | b'"'))
                }
                _ => false,
            };
            if !next_is_string {
                self.pos = save;
                break;
            }
        }
        Ok(match (text, bytes) {
            (_, Some(b)) => PyValue::Bytes(b),
            (t, None) => PyValue::Str(t.unwrap_or_default()),
        })
    }

    /// One literal with its optional prefix. Returns (is_bytes, content bytes).
    fn string_literal(&mut self) -> Result<(bool, Vec<u8>), PyError> {
        let mut raw = false;
        let mut is_bytes = false;
        while let Some(c) = self.peek() {
            match c.to_ascii_lowercase() {
                b'r' => raw = true,
                b'b' => is_bytes = true,
                b'u' => {}
                _ => break,
            }
            self.pos += 1;
        }
        let quote = self.peek().ok_or_else(|| self.err("expected a string"))?;
        let triple = self.s.get(self.pos..self.pos + 3) == Some(&[quote; 3][..]);
        let open_at = self.pos;
        self.pos += if triple { 3 } else { 1 };
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(PyError {
                    offset: open_at,
                    message: "unterminated string".into(),
                });
            };
            if c == quote {
                if !triple {
                    self.pos += 1;
                    break;
                }
                if self.s.get(self.pos..self.pos + 3) == Some(&[quote; 3][..]) {
                    self.pos += 3;
                    break;
                }
            }
            if c == b'\n' && !triple {
                return Err(PyError {
                    offset: open_at,
                    message: "unterminated string (line break inside quotes)".into(),
                });
            }
            if is_bytes && c >= 0x80 {
                return Err(self.err("bytes literals may only hold ASCII"));
            }
            if c == b'\\' {
                if raw {
                    // Raw strings keep the backslash and the next character.
                    out.push(b'\\');
                    self.pos += 1;
                    if let Some(n) = self.peek() {
                        let len = utf8_len(n);
                        out.extend_from_slice(&self.s[self.pos..self.pos + len]);
                        self.pos += len;
                    }
                    continue;
                }
                self.escape(&mut out, is_bytes)?;
                continue;
            }
            let len = utf8_len(c);
            out.extend_from_slice(&self.s[self.pos..self.pos + len]);
            self.pos += len;
        }
        Ok((is_bytes, out))
    }

    fn escape(&mut self, out: &mut Vec<u8>, is_bytes: bool) -> Result<(), PyError> {
        let at = self.pos;
        self.pos += 1; // backslash
        let Some(c) = self.peek() else {
            return Err(self.err("backslash at end of input"));
        };
        self.pos += 1;
        let simple = match c {
            b'\n' => Some(None),
            b'\\' => Some(Some(b'\\')),
            b'\'' => Some(Some(b'\'')),
            b'"' => Some(Some(b'"')),
            b'a' => Some(Some(0x07)),
            b'b' => Some(Some(0x08)),
            b'f' => Some(Some(0x0c)),
            b'n' => Some(Some(b'\n')),
            b'r' => Some(Some(b'\r')),
            b't' => Some(Some(b'\t')),
            b'v' => Some(Some(0x0b)),
            _ => None,
        };
        if let Some(b) = simple {
            out.extend(b);
            return Ok(());
        }
        let hex = |p: &mut Self, n: usize| -> Result<u32, PyError> {
            let digits = p
                .src
                .get(p.pos..p.pos + n)
                .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| PyError {
                    offset: at,
                    message: format!("escape needs {n} hex digits"),
                })?;
            p.pos += n;
            Ok(u32::from_str_radix(digits, 16).expect("checked hex"))
        };
        let push_char = |out: &mut Vec<u8>, v: u32| -> Result<(), PyError> {
            let ch = char::from_u32(v).ok_or_else(|| PyError {
                offset: at,
                message: format!("escape \\U{v:08x} is not a Unicode scalar value"),
            })?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            Ok(())
        };
        match c {
            b'x' => {
                let v = hex(self, 2)?;
                if is_bytes {
                    out.push(v as u8);
                    Ok(())
                } else {
                    push_char(out, v)
                }
            }
            b'u' if !is_bytes => {
                let v = hex(self, 4)?;
                push_char(out, v)
            }
            b'U' if !is_bytes => {
                let v = hex(self, 8)?;
                push_char(out, v)
            }
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                if is_bytes {
                    out.push((v & 0xff) as u8);
                    Ok(())
                } else {
                    push_char(out, v)
                }
            }
            b'N' if !is_bytes => Err(PyError {
                offset: at,
                message: "named escapes \\N{...} are not supported".into(),
            }),
            _ => {
                // Python keeps unknown escapes as written.
                out.push(b'\\');
                self.pos -= 1;
                let len = utf8_len(c);
                out.extend_from_slice(&self.s[self.pos..self.pos + len]);
                self.pos += len;
                Ok(())
            }
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> PyValue {
        PyValue::Str(v.into())
    }

    #[test]
    fn the_real_sample_parses() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/xinpianchang/example/99945958.txt"
        ))
        .unwrap();
        let PyValue::Dict(items) = parse(&text).unwrap() else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 5);
        assert_eq!(items[0], (s("mp4_id"), s("99945958")));
        assert_eq!(
            items[4],
            (s("mp4_txt_brief"), s(" Hong Kong Circa 2017, City B-Roll"))
        );
    }

    #[test]
    fn repr_quoting_and_escapes() {
        // repr() switches to double quotes when the text holds a single quote.
        assert_eq!(parse(r#""it's""#).unwrap(), s("it's"));
        assert_eq!(parse(r"'a\'b\\c\n'").unwrap(), s("a'b\\c\n"));
        assert_eq!(parse(r"'\x41\u4e2d\U0001F600\101'").unwrap(), s("A中😀A"));
        assert_eq!(parse("'中文 简介'").unwrap(), s("中文 简介"));
        assert_eq!(parse("'a' \"b\"").unwrap(), s("ab"));
        assert_eq!(parse("r'\\d+'").unwrap(), s("\\d+"));
        assert_eq!(parse("u'x'").unwrap(), s("x"));
        assert_eq!(parse("b'\\xff'").unwrap(), PyValue::Bytes(vec![0xff]));
        assert_eq!(parse("'''a\nb'''").unwrap(), s("a\nb"));
        assert_eq!(parse(r"'\q'").unwrap(), s("\\q"));
    }

    #[test]
    fn numbers_and_constants() {
        assert_eq!(parse("-12").unwrap(), PyValue::Int(-12));
        assert_eq!(parse("1_000").unwrap(), PyValue::Int(1000));
        assert_eq!(parse("0x1F").unwrap(), PyValue::Int(31));
        assert_eq!(parse("1.5e-3").unwrap(), PyValue::Float(0.0015));
        assert_eq!(parse("True").unwrap(), PyValue::Bool(true));
        assert_eq!(parse("None").unwrap(), PyValue::None);
        assert!(parse("inf").is_err());
        assert!(parse("1.2.3").is_err());
    }

    #[test]
    fn containers() {
        assert_eq!(
            parse("{'a': [1, (2,), (3)], 'b': {}, 'c': ()}").unwrap(),
            PyValue::Dict(vec![
                (
                    s("a"),
                    PyValue::List(vec![
                        PyValue::Int(1),
                        PyValue::Tuple(vec![PyValue::Int(2)]),
                        PyValue::Int(3)
                    ])
                ),
                (s("b"), PyValue::Dict(vec![])),
                (s("c"), PyValue::Tuple(vec![])),
            ])
        );
        assert_eq!(
            parse("[1, 2,]").unwrap(),
            PyValue::List(vec![PyValue::Int(1), PyValue::Int(2)])
        );
        assert_eq!(
            parse("((1,))").unwrap(),
            PyValue::Tuple(vec![PyValue::Int(1)])
        );
    }

    #[test]
    fn code_is_never_evaluated() {
        for hostile in [
            "__import__('os').system('rm -rf /')",
            "{'a': open('/etc/passwd').read()}",
            "{'a': 1 + 1}",
            "{'a': [x for x in range(3)]}",
            "lambda: 0",
            "{'a': b'\\u1234' 'x'}",
        ] {
            assert!(parse(hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn malformed_input_is_located() {
        let e = parse("{'a': 'b'").unwrap_err();
        assert!(e.message.contains("unterminated"), "{e}");
        let e = parse("{'a' 'b'}").unwrap_err();
        assert_eq!(e.message, "expected ':' after a dict key");
        let e = parse("{'a': 'b'} trailing").unwrap_err();
        assert_eq!(e.offset, 11);
        assert!(parse("").is_err());
        assert!(parse("{[1]: 2}").is_err());
        assert!(parse("'\\N{DASH}'").is_err());
        assert!(parse("'\\x4'").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }
}
