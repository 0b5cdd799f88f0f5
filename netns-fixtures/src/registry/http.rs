//! Just enough HTTP/1.1 for the fixture's token server and throttling proxy: read one
//! request head (and a body by `Content-Length`), write one answer.

use std::collections::HashMap;
use std::io::{self, Read, Write};

/// Request heads larger than this are refused.
const HEAD_LIMIT: usize = 64 * 1024;

/// A request line and its headers (names lower-cased).
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub headers: HashMap<String, String>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The query parameters of the target, percent-decoded, in order (a name may repeat).
    pub fn query(&self) -> Vec<(String, String)> {
        match self.target.split_once('?') {
            Some((_, q)) => parse_form(q),
            None => Vec::new(),
        }
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// Reads one request head byte by byte (so nothing after it is consumed), `None` at a clean
/// end of stream.
pub fn read_head(r: &mut impl Read) -> io::Result<Option<RequestHead>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if r.read(&mut byte)? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.push(byte[0]);
        if buf.len() > HEAD_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some(RequestHead {
        method,
        target,
        headers,
    }))
}

/// The body announced by `Content-Length` (none otherwise).
pub fn read_body(r: &mut impl Read, head: &RequestHead) -> io::Result<Vec<u8>> {
    let len: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(HEAD_LIMIT)];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Writes a whole answer and asks the client to close the connection.
pub fn respond(
    w: &mut impl Write,
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// `a=1&b=x%2Fy+z` → pairs, `+` as space.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_head_and_a_query() {
        let raw = b"GET /token?service=s&scope=repository%3Ans%2Fapp%3Apull&scope=b+c HTTP/1.1\r\nHost: x\r\nAuthorization: Basic abc\r\n\r\nrest";
        let mut r = &raw[..];
        let head = read_head(&mut r).unwrap().unwrap();
        assert_eq!(head.path(), "/token");
        assert_eq!(head.header("authorization"), Some("Basic abc"));
        assert_eq!(
            head.query(),
            [
                ("service".into(), "s".into()),
                ("scope".into(), "repository:ns/app:pull".into()),
                ("scope".into(), "b c".into())
            ]
        );
        assert_eq!(r, b"rest");
        assert_eq!(decode("100%"), "100%");
    }
}
