//! Tests of the client side: encoding the request and validating the response.

use super::*;

// --- client request ----------------------------------------------------------------

#[test]
fn client_request_bytes() {
    let out = client_request(
        "server.example.com",
        "/chat?x=1",
        KEY,
        &strings(&["chat", "superchat"]),
        &[("Origin".to_owned(), "http://example.com".to_owned())],
    )
    .unwrap();
    assert_eq!(
        &out[..],
        b"GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
          Origin: http://example.com\r\n\r\n"
    );
    let plain = client_request("h", "/", KEY, &[], &[]).unwrap();
    assert!(!plain.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
}

#[test]
fn client_request_rejects_bad_input() {
    let bad = Err(SendError::InvalidHeader);
    let ok_proto = strings(&["chat"]);
    let hdr = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
    assert_eq!(client_request("h", "chat", KEY, &[], &[]), bad);
    assert_eq!(client_request("h", "", KEY, &[], &[]), bad);
    assert_eq!(client_request("h", "/a b", KEY, &[], &[]), bad);
    assert_eq!(client_request("h", "/a\r\nX: 1", KEY, &[], &[]), bad);
    assert_eq!(client_request("h", "/a#frag", KEY, &[], &[]), bad);
    assert_eq!(client_request("h", "/caf\u{e9}", KEY, &[], &[]), bad);
    assert_eq!(client_request("", "/", KEY, &[], &[]), bad);
    assert_eq!(client_request("h\r\nX: 1", "/", KEY, &[], &[]), bad);
    assert_eq!(client_request("h", "/", "short", &[], &[]), bad);
    assert_eq!(client_request("h", "/", KEY, &strings(&["a b"]), &[]), bad);
    assert_eq!(client_request("h", "/", KEY, &strings(&[""]), &[]), bad);
    assert_eq!(client_request("h", "/", KEY, &ok_proto, &hdr("X", "a\nb")), bad);
    assert_eq!(client_request("h", "/", KEY, &ok_proto, &hdr("X Y", "v")), bad);
    assert!(client_request("h", "/", KEY, &ok_proto, &hdr("X", "v")).is_ok());
}

// --- client response ---------------------------------------------------------------

#[test]
fn parses_rfc_example_response() {
    let input = response_with("Sec-WebSocket-Protocol: chat\r\nX-Server: t\r\n");
    let (r, len) = resp(&input, &strings(&["superchat", "chat"])).unwrap().unwrap();
    assert_eq!(len, input.len());
    assert_eq!(r.status(), 101);
    assert_eq!(r.subprotocol(), Some("chat"));
    assert_eq!(r.header("x-server"), Some("t"));
    assert_eq!(r.header("missing"), None);

    let (r, _) = resp(&response_with(""), &strings(&["chat"])).unwrap().unwrap();
    assert_eq!(r.subprotocol(), None);
}

#[test]
fn response_token_lists() {
    let input = b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\
                  sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    assert!(resp(input, &[]).is_ok());
}

#[test]
fn response_errors() {
    use HandshakeError as E;
    let offered = strings(&["chat"]);
    let line = |s: &str| format!("HTTP/1.1 101 Switching Protocols\r\n{s}\r\n").into_bytes();
    let cases: Vec<(Vec<u8>, E)> = vec![
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(), E::Status(404)),
        (b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), E::Status(200)),
        (b"HTTP/1.0 101 Switching Protocols\r\n\r\n".to_vec(), E::HttpVersion),
        (b"HTTP/1.1 abc\r\n\r\n".to_vec(), E::Malformed),
        (b"garbage\r\n\r\n".to_vec(), E::Malformed),
        (b"HTTP/2 101 Switching Protocols\r\n\r\n".to_vec(), E::HttpVersion),
        (line("Connection: Upgrade\r\n"), E::MissingUpgrade),
        (line("Upgrade: websocket\r\n"), E::MissingConnectionUpgrade),
        (line("Upgrade: websocket\r\nConnection: Upgrade\r\n"), E::InvalidAccept),
        (
            line("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n"),
            E::InvalidAccept,
        ),
        (response_with(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")), E::InvalidAccept),
        (response_with("Sec-WebSocket-Protocol: superchat\r\n"), E::UnexpectedSubprotocol),
        (response_with("Sec-WebSocket-Protocol: chat, chat\r\n"), E::UnexpectedSubprotocol),
        (
            response_with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"),
            E::UnexpectedSubprotocol,
        ),
        (response_with("Sec-WebSocket-Extensions: permessage-deflate\r\n"), E::UnexpectedExtension),
    ];
    for (input, expected) in cases {
        assert_eq!(
            resp(&input, &offered).map(|_| ()),
            Err(expected),
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
    let filler: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(resp(&response_with(&filler), &offered).map(|_| ()), Err(E::TooManyHeaders));
    let input = response_with("");
    let mut p = ResponseParser::new(input.len() - 1);
    assert_eq!(p.parse(&input, KEY, &offered).map(|_| ()), Err(E::HeadTooLarge));
    let mut p = ResponseParser::new(input.len());
    assert!(p.parse(&input, KEY, &offered).is_ok());
}
