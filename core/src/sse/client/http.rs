//! The HTTP/1.1 side of an [`SseClient`]'s connection, for adapters that speak it over a
//! plain socket: the `GET` request's bytes ([`sse_request`]) and the response as it is
//! read ([`SseResponseReader`]): the head (status, `Content-Type`, `Retry-After`) goes to
//! [`SseClient::handle_response`], the body (close-delimited, `Content-Length` delimited
//! or `Transfer-Encoding: chunked`, RFC 9112 §6–7) to [`SseClient::handle_read`], its end
//! to [`SseClient::handle_eof`].

use super::SseClient;
use crate::http::ResponseParser;
use crate::policy::backoff::parse_retry_after;
use crate::sse::SseState;
use crate::time::Instant;

/// The `GET` request of one attempt: `Accept: text/event-stream`, `Cache-Control:
/// no-cache`, `Last-Event-ID` when there is one, then `headers`. `None` when a value holds
/// CR, LF or NUL, or a header name is not a token.
#[must_use]
pub fn sse_request(
    host: &str,
    path: &str,
    last_event_id: Option<&str>,
    headers: &[(String, String)],
) -> Option<Vec<u8>> {
    let bad_value = |v: &str| v.contains(['\r', '\n', '\0']);
    let bad_name = |n: &str| {
        n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if bad_value(host)
        || bad_value(path)
        || headers.iter().any(|(n, v)| bad_name(n) || bad_value(v))
    {
        return None;
    }
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
    );
    if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
        if bad_value(id) {
            return None;
        }
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    Some(req.into_bytes())
}

/// One response, read from its connection: the head to [`SseClient::handle_response`],
/// the body (close-delimited, `Content-Length` or chunked) to [`SseClient::handle_read`],
/// its end to [`SseClient::handle_eof`].
#[derive(Debug)]
pub struct SseResponseReader {
    /// While the head is read: its parser and the bytes so far.
    head: Option<(ResponseParser, Vec<u8>)>,
    framing: Framing,
}

/// How the response body ends.
#[derive(Debug)]
enum Framing {
    /// At the end of the connection.
    Close,
    /// After this many more bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Dechunker),
}

impl SseResponseReader {
    /// A reader for a new connection's response; a head over `max_head` bytes fails it.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { head: Some((ResponseParser::new(max_head), Vec::new())), framing: Framing::Close }
    }

    /// Feeds bytes the connection read to `client`. `unix_now` (seconds since the Unix
    /// epoch, from the adapter's wall clock) dates a `Retry-After` given as an HTTP date.
    /// Returns `true` when the connection is over for the client (its body ended, or it
    /// broke the framing): the adapter drops it.
    pub fn feed(
        &mut self,
        now: Instant,
        unix_now: u64,
        data: &[u8],
        client: &mut SseClient,
    ) -> bool {
        let Some((parser, head)) = &mut self.head else { return self.body(now, data, client) };
        head.extend_from_slice(data);
        let (response, len) = match parser.parse(head) {
            Ok(None) => return false,
            Ok(Some(parsed)) => parsed,
            Err(_) => {
                client.handle_error(now);
                return true;
            }
        };
        let rest = head.split_off(len);
        self.head = None;
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("chunked")));
        self.framing = if chunked {
            Framing::Chunked(Dechunker::default())
        } else if let Some(len) =
            response.header("content-length").and_then(|v| v.trim().parse().ok())
        {
            Framing::Length(len)
        } else {
            Framing::Close
        };
        let retry_after =
            response.header("retry-after").and_then(|v| parse_retry_after(v, unix_now));
        let media_type = response.media_type();
        client.handle_response(now, response.status(), media_type.as_deref(), retry_after);
        if client.state() != SseState::Open {
            return false;
        }
        if !rest.is_empty() {
            return self.body(now, &rest, client);
        }
        if matches!(self.framing, Framing::Length(0)) {
            client.handle_eof(now);
            return true;
        }
        false
    }

    /// Body bytes.
    fn body(&mut self, now: Instant, data: &[u8], client: &mut SseClient) -> bool {
        let ended = match &mut self.framing {
            Framing::Close => {
                client.handle_read(now, data);
                false
            }
            Framing::Length(left) => {
                let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                client.handle_read(now, &data[..take]);
                *left -= take as u64;
                *left == 0
            }
            Framing::Chunked(dechunker) => {
                let mut out = Vec::with_capacity(data.len());
                let result = dechunker.feed(data, &mut out);
                client.handle_read(now, &out);
                match result {
                    Ok(done) => done,
                    Err(()) => {
                        client.handle_error(now);
                        return true;
                    }
                }
            }
        };
        if ended {
            client.handle_eof(now);
        }
        ended
    }
}

/// Decodes `Transfer-Encoding: chunked` (RFC 9112 §7.1): sizes, extensions and trailers
/// are skipped; the data is passed on. Bounded: it holds no data, only its position.
#[derive(Debug, Default)]
struct Dechunker {
    state: Chunk,
}

#[derive(Debug, Default)]
enum Chunk {
    /// Reading a size line: the value so far, its digit count, whether in an extension.
    #[default]
    SizeStart,
    Size {
        value: u64,
        digits: u32,
        ext: bool,
    },
    Data(u64),
    /// After the data: CR LF.
    DataEnd {
        cr: bool,
    },
    /// The trailer section; whether the current line is still empty.
    Trailer {
        empty_line: bool,
    },
    Done,
}

impl Dechunker {
    /// Appends the data of `input` to `out`. Returns whether the body ended.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, ()> {
        while let Some((&b, rest)) = input.split_first() {
            match &mut self.state {
                Chunk::Done => return Ok(true),
                Chunk::Data(left) => {
                    let take = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                    out.extend_from_slice(&input[..take]);
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = Chunk::DataEnd { cr: false };
                    }
                    input = &input[take..];
                    continue;
                }
                Chunk::SizeStart => {
                    let digit = char::from(b).to_digit(16).ok_or(())?;
                    self.state = Chunk::Size { value: u64::from(digit), digits: 1, ext: false };
                }
                Chunk::Size { value, digits, ext } => match b {
                    b'\n' => {
                        self.state = if *value == 0 {
                            Chunk::Trailer { empty_line: true }
                        } else {
                            Chunk::Data(*value)
                        };
                    }
                    b'\r' => {}
                    _ if *ext => {}
                    b';' | b' ' | b'\t' => *ext = true,
                    _ => {
                        let digit = char::from(b).to_digit(16).ok_or(())?;
                        *digits += 1;
                        if *digits > 15 {
                            return Err(());
                        }
                        *value = *value << 4 | u64::from(digit);
                    }
                },
                Chunk::DataEnd { cr } => match b {
                    b'\r' if !*cr => *cr = true,
                    b'\n' => self.state = Chunk::SizeStart,
                    _ => return Err(()),
                },
                Chunk::Trailer { empty_line } => match b {
                    b'\n' if *empty_line => self.state = Chunk::Done,
                    b'\n' => *empty_line = true,
                    b'\r' => {}
                    _ => *empty_line = false,
                },
            }
            input = rest;
        }
        Ok(matches!(self.state, Chunk::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk(input: &[u8], split: usize) -> (Vec<u8>, Result<bool, ()>) {
        let mut d = Dechunker::default();
        let mut out = Vec::new();
        let mut result = Ok(false);
        for part in input.chunks(split.max(1)) {
            result = d.feed(part, &mut out);
            if result != Ok(false) {
                break;
            }
        }
        (out, result)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let body = b"7\r\ndata: a\r\n3;ext=1\r\n\n\n\n\r\n0\r\nX-Trailer: t\r\n\r\n";
        for split in [1, 2, 3, 7, body.len()] {
            let (out, result) = dechunk(body, split);
            assert_eq!(out, b"data: a\n\n\n", "split {split}");
            assert_eq!(result, Ok(true), "split {split}");
        }
        let (out, result) = dechunk(b"4\r\nab", 100);
        assert_eq!((out.as_slice(), result), (&b"ab"[..], Ok(false)));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [&b"zz\r\n"[..], b"3\r\nabcX", b"1234567890abcdef0\r\n"] {
            assert_eq!(dechunk(bad, 100).1, Err(()), "{}", String::from_utf8_lossy(bad));
        }
    }
}
