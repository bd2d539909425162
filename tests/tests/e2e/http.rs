//! A raw HTTP/1.1 client over `std::net`, the same for both adapters: it writes the request
//! bytes a test gives and parses the response with core's [`ResponseParser`], so a test
//! sees exactly the statuses, headers and bodies each adapter puts on the wire.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tidewire::http::ResponseParser;

/// A response: status, headers (lower-case names) and the body read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with `extra` header lines (each ending in `\r\n`).
pub(crate) fn get(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n"), b"")
}

/// `POST path` with a body.
pub(crate) fn post(addr: SocketAddr, path: &str, extra: &str, body: &[u8]) -> Answer {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    request(addr, &head, body)
}

/// Writes `head` and `body`, reads one response: its body by `Content-Length`, or until the
/// server closes (at most 5 s in all).
pub(crate) fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_answer(&mut s, Duration::from_secs(5), None)
}

/// Reads one response from `s` within `limit`. `stop`: a streaming body is read until it
/// holds this many bytes (or the limit passes) instead of until the end.
pub(crate) fn read_answer(s: &mut TcpStream, limit: Duration, stop: Option<usize>) -> Answer {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut parser = ResponseParser::new(16 << 10);
    let mut chunk = [0u8; 8192];
    let mut head = None;
    let mut eof = false;
    while Instant::now() < deadline {
        if head.is_none()
            && let Some((resp, len)) = parser.parse(&buf).expect("a valid response head")
        {
            head = Some(resp);
            buf.drain(..len);
        }
        if let Some(resp) = &head {
            let want = resp.header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
            let no_body = resp.status() == 304 || resp.status() == 101;
            if no_body
                || want.is_some_and(|n| buf.len() >= n)
                || stop.is_some_and(|n| buf.len() >= n)
            {
                break;
            }
        }
        if eof {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => eof = true,
        }
    }
    let resp = head.unwrap_or_else(|| panic!("no response head within {limit:?}: {buf:?}"));
    let headers = resp.headers().map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned())).collect();
    Answer { status: resp.status(), headers, body: buf }
}

/// Opens an event stream (`GET path` with `Accept: text/event-stream` and `extra`), returns
/// the socket once the head arrived.
pub(crate) fn open_stream(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, Answer) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{extra}\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let a = read_answer(&mut s, Duration::from_secs(5), Some(0));
    (s, a)
}

/// Reads from an open stream until `done(text so far)` or `limit`; returns the text and
/// whether the server ended the stream.
pub(crate) fn read_stream(
    s: &mut TcpStream,
    mut text: String,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 8192];
    while !done(&text) && Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return (text, true),
            Ok(n) => text.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (text, true),
        }
    }
    (text, false)
}

/// The `id:` lines of an event stream, in order.
pub(crate) fn sse_ids(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("id:")).map(|v| v.trim().to_owned()).collect()
}

/// The `data:` lines of an event stream, in order.
pub(crate) fn sse_data(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("data:")).map(|v| v.trim().to_owned()).collect()
}
