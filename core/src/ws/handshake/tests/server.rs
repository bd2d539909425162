//! Tests of the server side: parsing and validating the upgrade request, and the responses.

use super::*;

/// A request built from exactly these header lines.
fn request_lines(request_line: &str, lines: &[&str]) -> Vec<u8> {
    let mut s = format!("{request_line}\r\n");
    for line in lines {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

const GOOD: [&str; 5] = [
    "Host: h",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

/// `GOOD` with line `i` replaced (or dropped if `line` is empty).
fn good_but(i: usize, line: &str) -> Vec<u8> {
    let mut lines = GOOD.to_vec();
    if line.is_empty() {
        lines.remove(i);
    } else {
        lines[i] = line;
    }
    request_lines("GET / HTTP/1.1", &lines)
}

// --- request: success and accessors ------------------------------------------------

#[test]
fn parses_rfc_example_request() {
    let input = request_with(
        "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\n",
    );
    let r = req_ok(&input);
    assert_eq!(r.path(), "/chat?room=1");
    assert_eq!(r.path_only(), "/chat");
    assert_eq!(r.query_param("room").as_deref(), Some("1"));
    assert_eq!(r.query_param("nope"), None);
    assert_eq!(r.host(), "server.example.com");
    assert_eq!(r.origin(), Some("http://example.com"));
    assert_eq!(r.protocols(), ["chat", "superchat"]);
    assert_eq!(r.extensions(), ["permessage-deflate; client_max_window_bits", "x-foo"]);
    assert_eq!(r.key(), KEY);
    assert_eq!(r.header("SEC-WEBSOCKET-VERSION"), Some("13"));
    assert_eq!(r.header("x-missing"), None);
    let names: Vec<&str> = r.headers().map(|(n, _)| n).collect();
    assert_eq!(names[0], "Host");
    assert_eq!(names.len(), 8);
    assert_eq!(r.bearer_token(), None);
    assert_eq!(r.token(), None);
}

#[test]
fn connection_and_upgrade_are_token_lists() {
    for connection in [
        "Connection: keep-alive, Upgrade",
        "Connection: upgrade",
        "Connection: UPGRADE",
        "Connection:keep-alive,upgrade ",
    ] {
        assert!(req(&good_but(2, connection)).is_ok(), "{connection}");
    }
    for upgrade in ["Upgrade: WebSocket", "Upgrade: h2c, websocket", "Upgrade: WEBSOCKET"] {
        assert!(req(&good_but(1, upgrade)).is_ok(), "{upgrade}");
    }
    // Two Connection headers combine into one list.
    let mut lines = GOOD.to_vec();
    lines[2] = "Connection: keep-alive";
    lines.push("Connection: Upgrade");
    assert!(req(&request_lines("GET / HTTP/1.1", &lines)).is_ok());
}

#[test]
fn several_protocol_headers_are_gathered() {
    let input = request_with(
        "Sec-WebSocket-Protocol: a, b\r\nX-Other: 1\r\nsec-websocket-protocol:  c ,, d\r\n",
    );
    assert_eq!(req_ok(&input).protocols(), ["a", "b", "c", "d"]);
}

#[test]
fn query_token_is_percent_decoded() {
    let input = format!(
        "GET /ws?x=1&to%6Ben=ab%2Bc+d%3D%zz&token=second HTTP/1.1\r\n{}\r\n\r\n",
        GOOD[1..].join("\r\n") + "\r\nHost: h"
    );
    let r = req_ok(input.as_bytes());
    assert_eq!(r.path_only(), "/ws");
    assert_eq!(r.query_param("token").as_deref(), Some("ab+c d=%zz"));
    assert_eq!(r.token().as_deref(), Some("ab+c d=%zz"));
    assert_eq!(r.query_param("x").as_deref(), Some("1"));
}

#[test]
fn query_param_with_invalid_utf8_is_none() {
    let input = format!("GET /?token=%FF HTTP/1.1\r\n{}\r\n\r\n", GOOD.join("\r\n"));
    assert_eq!(req_ok(input.as_bytes()).query_param("token"), None);
}

#[test]
fn cookies_from_several_headers() {
    let input = request_with("Cookie: a=1; session=\"abc\"\r\nCookie: b=2;c=3\r\nCookie: a=9\r\n");
    let r = req_ok(&input);
    assert_eq!(r.cookie("a"), Some("1"));
    assert_eq!(r.cookie("session"), Some("abc"));
    assert_eq!(r.cookie("b"), Some("2"));
    assert_eq!(r.cookie("c"), Some("3"));
    assert_eq!(r.cookie("A"), None);
    assert_eq!(r.cookie("missing"), None);
}

#[test]
fn bearer_token_and_token_precedence() {
    let input = format!(
        "GET /?token=fromquery HTTP/1.1\r\n{}\r\nAuthorization: bEaReR  t0k.en~\r\n\r\n",
        GOOD.join("\r\n")
    );
    let r = req_ok(input.as_bytes());
    assert_eq!(r.bearer_token(), Some("t0k.en~"));
    assert_eq!(r.token().as_deref(), Some("t0k.en~"));

    for auth in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Bearer "] {
        let input = format!(
            "GET /?token=q HTTP/1.1\r\n{}\r\nAuthorization: {auth}\r\n\r\n",
            GOOD.join("\r\n")
        );
        let r = req_ok(input.as_bytes());
        assert_eq!(r.bearer_token(), None, "{auth}");
        assert_eq!(r.token().as_deref(), Some("q"), "{auth}");
    }
}

#[test]
fn non_utf8_header_value_is_none_but_listed() {
    let mut input = request_with("");
    input.truncate(input.len() - 2);
    input.extend_from_slice(b"X-Bin: caf\xe9\r\n\r\n");
    let r = req_ok(&input);
    assert_eq!(r.header("x-bin"), None);
    assert!(r.headers().any(|(n, v)| n == "X-Bin" && v == b"caf\xe9"));
}

// --- request: errors ---------------------------------------------------------------

#[test]
fn request_errors() {
    use HandshakeError as E;
    let cases: Vec<(Vec<u8>, E)> = vec![
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), E::Malformed),
        (b"\x01\x02\r\n\r\n".to_vec(), E::Malformed),
        (request_lines("GET / HTTP/1.1", &[&GOOD[..], &["Host: h"]].concat()), E::Malformed),
        (
            request_lines(
                "GET / HTTP/1.1",
                &[&GOOD[..], &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]].concat(),
            ),
            E::Malformed,
        ),
        (good_but(0, "Host: caf\u{e9}").replace_latin1(), E::Malformed),
        (
            request_lines(
                "GET / HTTP/1.1",
                &[&GOOD[..], &["Sec-WebSocket-Protocol: a b"]].concat(),
            ),
            E::Malformed,
        ),
        (request_lines("POST / HTTP/1.1", &GOOD), E::MethodNotGet),
        (request_lines("get / HTTP/1.1", &GOOD), E::MethodNotGet),
        (request_lines("GET / HTTP/1.0", &GOOD), E::HttpVersion),
        (request_lines("GET / HTTP/2.0", &GOOD), E::HttpVersion),
        (request_lines("GET / FTP/1.1", &GOOD), E::Malformed),
        (good_but(0, ""), E::MissingHost),
        (good_but(1, ""), E::MissingUpgrade),
        (good_but(1, "Upgrade: websocket2"), E::MissingUpgrade),
        (good_but(2, ""), E::MissingConnectionUpgrade),
        (good_but(2, "Connection: keep-alive, upgraded"), E::MissingConnectionUpgrade),
        (good_but(4, ""), E::UnsupportedVersion),
        (good_but(4, "Sec-WebSocket-Version: 8"), E::UnsupportedVersion),
        (good_but(4, "Sec-WebSocket-Version: 13, 8"), E::UnsupportedVersion),
        (good_but(3, ""), E::InvalidKey),
        (good_but(3, "Sec-WebSocket-Key: c2hvcnQ="), E::InvalidKey),
        (good_but(3, "Sec-WebSocket-Key: not base64 at all!!!!!"), E::InvalidKey),
        (good_but(3, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"), E::InvalidKey),
    ];
    for (input, expected) in cases {
        assert_eq!(req(&input).map(|_| ()), Err(expected), "{}", String::from_utf8_lossy(&input));
    }
}

/// Turns the UTF-8 `é` of a test input into a lone Latin-1 byte.
trait ReplaceLatin1 {
    fn replace_latin1(self) -> Vec<u8>;
}

impl ReplaceLatin1 for Vec<u8> {
    fn replace_latin1(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = 0;
        while i < self.len() {
            if self[i..].starts_with("\u{e9}".as_bytes()) {
                out.push(0xe9);
                i += 2;
            } else {
                out.push(self[i]);
                i += 1;
            }
        }
        out
    }
}

#[test]
fn too_many_headers() {
    let filler: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
    let mut lines = GOOD.to_vec();
    lines.extend(filler.iter().map(String::as_str));
    assert_eq!(req(&request_lines("GET / HTTP/1.1", &lines)), Err(HandshakeError::TooManyHeaders));
    // Exactly MAX_HEADERS lines is fine.
    lines.truncate(MAX_HEADERS);
    assert!(req(&request_lines("GET / HTTP/1.1", &lines)).is_ok());
}

#[test]
fn head_of_exactly_max_head_and_one_more() {
    let input = request_with("");
    let n = input.len();
    let run = |max: usize| three_ways(|i, c| feed_req(i, max, c), &input);
    assert_eq!(run(n).unwrap().unwrap().1, n);
    assert_eq!(run(n - 1), Err(HandshakeError::HeadTooLarge));
    // A head without an end is refused as soon as max_head bytes are in.
    let mut p = RequestParser::new(8);
    assert_eq!(p.parse(b"GET / HT"), Err(HandshakeError::HeadTooLarge));
    let mut p = RequestParser::new(8);
    assert_eq!(p.parse(b"GET / H"), Ok(None));
}

#[test]
fn trickled_head_is_parsed_once() {
    let padding = "x".repeat(MAX - request_with("X-Pad: \r\n").len());
    let input = request_with(&format!("X-Pad: {padding}\r\n"));
    assert_eq!(input.len(), MAX);
    let mut p = RequestParser::new(MAX);
    for end in 1..input.len() {
        assert_eq!(p.parse(&input[..end]), Ok(None));
        // Only the last three bytes are ever searched twice.
        assert_eq!(p.http.scan.scanned, end);
    }
    assert_eq!(p.http.scan.parses, 0);
    let (r, len) = p.parse(&input).unwrap().unwrap();
    assert_eq!((len, p.http.scan.parses), (MAX, 1));
    assert_eq!(r.header("x-pad").map(str::len), Some(padding.len()));
}

// --- server responses --------------------------------------------------------------

#[test]
fn accept_response_bytes() {
    let r = req_ok(&request_with("Sec-WebSocket-Protocol: chat, superchat\r\n"));
    let out = accept_response(&r, Some("chat"), &[("Set-Cookie", "id=1")]).unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
          Sec-WebSocket-Protocol: chat\r\nSet-Cookie: id=1\r\n\r\n"
    );
    let plain = accept_response(&r, None, &[]).unwrap();
    assert!(!plain.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
}

#[test]
fn accept_response_rejects_bad_input() {
    let r = req_ok(&request_with("Sec-WebSocket-Protocol: chat\r\n"));
    let bad = Err(SendError::InvalidHeader);
    assert_eq!(accept_response(&r, Some("superchat"), &[]), bad);
    assert_eq!(accept_response(&r, Some("Chat"), &[]), bad);
    for header in [
        ("X-A", "a\r\nX-Evil: 1"),
        ("X-A", "a\nb"),
        ("X-A", "a\0"),
        ("", "v"),
        ("X A", "v"),
        ("X:A", "v"),
        ("X-\u{e9}", "v"),
    ] {
        assert_eq!(accept_response(&r, None, &[header]), bad, "{header:?}");
    }
}

#[test]
fn reject_response_bytes() {
    let out = reject_response(401, &[("WWW-Authenticate", "Bearer")], b"no").unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\n\
          Content-Length: 2\r\nConnection: close\r\nWWW-Authenticate: Bearer\r\n\r\nno"
    );
    let out = reject_response(418, &[("content-type", "application/json")], b"{}").unwrap();
    assert_eq!(
        &out[..],
        b"HTTP/1.1 418 Status\r\nContent-Length: 2\r\nConnection: close\r\n\
          content-type: application/json\r\n\r\n{}"
    );
    for (status, reason) in
        [(403, "Forbidden"), (429, "Too Many Requests"), (503, "Service Unavailable")]
    {
        let out = reject_response(status, &[], b"").unwrap();
        assert!(out.starts_with(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes()));
    }
}

#[test]
fn reject_response_rejects_bad_input() {
    let bad = Err(SendError::InvalidHeader);
    for status in [0, 99, 101, 600, 1000] {
        assert_eq!(reject_response(status, &[], b""), bad, "{status}");
    }
    assert_eq!(reject_response(400, &[("X", "a\r\n")], b""), bad);
    assert_eq!(reject_response(400, &[("Content-Length", "5")], b""), bad);
    assert_eq!(reject_response(400, &[("transfer-encoding", "chunked")], b""), bad);
}

#[test]
fn error_responses() {
    let out = error_response(HandshakeError::UnsupportedVersion);
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    let body = format!("{}\n", HandshakeError::UnsupportedVersion);
    assert!(text.ends_with(&format!(
        "Content-Length: {}\r\nConnection: close\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n{body}",
        body.len()
    )));

    let text = String::from_utf8(error_response(HandshakeError::MethodNotGet).to_vec()).unwrap();
    assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    assert!(text.contains("\r\nAllow: GET\r\n"));

    for (err, line) in [
        (HandshakeError::HeadTooLarge, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        (HandshakeError::HttpVersion, "HTTP/1.1 505 HTTP Version Not Supported\r\n"),
        (HandshakeError::MissingUpgrade, "HTTP/1.1 426 Upgrade Required\r\n"),
        (HandshakeError::InvalidKey, "HTTP/1.1 400 Bad Request\r\n"),
        (HandshakeError::Timeout, "HTTP/1.1 408 Request Timeout\r\n"),
        (HandshakeError::Status(101), "HTTP/1.1 400 Bad Request\r\n"),
        (HandshakeError::Status(0), "HTTP/1.1 400 Bad Request\r\n"),
        (HandshakeError::Status(503), "HTTP/1.1 503 Service Unavailable\r\n"),
    ] {
        let out = error_response(err);
        assert!(out.starts_with(line.as_bytes()), "{err:?}");
        assert!(out.ends_with(format!("\r\n\r\n{err}\n").as_bytes()), "{err:?}");
    }
}
