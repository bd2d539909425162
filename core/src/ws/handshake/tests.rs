//! Tests of the handshake: shared helpers, the keys, a client talking to a server, and
//! split invariance; the server side is tested in `tests/server.rs`, the client side in
//! `tests/client.rs`.

use super::*;
use crate::http::MAX_HEADERS;
use crate::ws::error::{HandshakeError, SendError};
use proptest::prelude::*;

mod client;
mod server;

type ReqResult = Result<Option<(UpgradeRequest, usize)>, HandshakeError>;
type RespResult = Result<Option<(HandshakeResponse, usize)>, HandshakeError>;

const MAX: usize = 16 << 10;
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// A frame after the head: masked text "Hi".
const TRAILER: &[u8] = b"\x81\x82\x01\x02\x03\x04\x49\x6b";

/// Feeds growing prefixes of `input`, ending at each cut and then at its full length;
/// returns the first answer that is not `Ok(None)`.
fn feed<T>(
    mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, HandshakeError>,
    input: &[u8],
    cuts: &[usize],
) -> Result<Option<(T, usize)>, HandshakeError> {
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        match parse(&input[..cut.min(input.len())]) {
            Ok(None) => {}
            other => return other,
        }
    }
    Ok(None)
}

fn feed_req(input: &[u8], max: usize, cuts: &[usize]) -> ReqResult {
    let mut p = RequestParser::new(max);
    feed(|b| p.parse(b), input, cuts)
}

fn feed_resp(input: &[u8], offered: &[String], cuts: &[usize]) -> RespResult {
    let mut p = ResponseParser::new(MAX);
    feed(|b| p.parse(b, KEY, offered), input, cuts)
}

/// Feeds `input` whole, one byte at a time, and followed by a frame; all three must agree
/// and a returned length must point exactly at the frame.
fn three_ways<T: PartialEq + std::fmt::Debug>(
    run: impl Fn(&[u8], &[usize]) -> Result<Option<(T, usize)>, HandshakeError>,
    input: &[u8],
) -> Result<Option<(T, usize)>, HandshakeError> {
    let whole = run(input, &[]);
    let bytewise: Vec<usize> = (1..input.len()).collect();
    assert_eq!(run(input, &bytewise), whole, "byte at a time");
    let mut trailing = input.to_vec();
    trailing.extend_from_slice(TRAILER);
    let with_trailer = run(&trailing, &[]);
    assert_eq!(with_trailer, whole, "with trailing frame bytes");
    if let Ok(Some((_, len))) = &with_trailer {
        assert_eq!(&trailing[*len..], TRAILER);
    }
    whole
}

fn req(input: &[u8]) -> ReqResult {
    three_ways(|i, c| feed_req(i, MAX, c), input)
}

fn req_ok(input: &[u8]) -> UpgradeRequest {
    let (r, len) = req(input).expect("valid request").expect("complete");
    assert_eq!(len, input.len());
    r
}

fn resp(input: &[u8], offered: &[String]) -> RespResult {
    three_ways(|i, c| feed_resp(i, offered, c), input)
}

/// A valid request with `extra` header lines (each ending in CRLF) appended.
fn request_with(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         {extra}\r\n"
    )
    .into_bytes()
}

fn response_with(extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// --- keys ---------------------------------------------------------------------------

#[test]
fn accept_key_matches_rfc_example() {
    assert_eq!(accept_key(KEY), ACCEPT);
}

#[test]
fn generated_key_is_16_bytes_in_base64() {
    let key = generate_key(*b"the sample nonce");
    assert_eq!(key, KEY);
    assert_eq!(BASE64.decode(&key).unwrap().len(), 16);
}

// --- client and server together ------------------------------------------------------

#[test]
fn client_and_server_agree() {
    let key = generate_key([7; 16]);
    let offered = strings(&["v2.proto", "v1.proto"]);
    let request = client_request(
        "example.com:8080",
        "/live?token=abc",
        &key,
        &offered,
        &[("Cookie".to_owned(), "sid=42".to_owned())],
    )
    .unwrap();
    let r = req_ok(&request);
    assert_eq!(r.key(), key);
    assert_eq!(r.protocols(), offered);
    assert_eq!((r.host(), r.cookie("sid")), ("example.com:8080", Some("42")));
    assert_eq!(r.token().as_deref(), Some("abc"));

    let response = accept_response(&r, Some("v1.proto"), &[]).unwrap();
    let mut p = ResponseParser::new(MAX);
    let (resp, len) = p.parse(&response, &key, &offered).unwrap().unwrap();
    assert_eq!(len, response.len());
    assert_eq!((resp.status(), resp.subprotocol()), (101, Some("v1.proto")));
    assert_eq!(resp.header("sec-websocket-accept"), Some(accept_key(&key).as_str()));
}

// --- split invariance --------------------------------------------------------------

fn sorted_cuts(mut cuts: Vec<usize>) -> Vec<usize> {
    cuts.sort_unstable();
    cuts
}

proptest! {
    #[test]
    fn request_split_invariance(cuts in proptest::collection::vec(0usize..400, 0..12),
                                tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let head = request_with("Sec-WebSocket-Protocol: a, b\r\nCookie: a=1\r\n");
        let mut input = head.clone();
        input.extend_from_slice(&tail);
        let whole = feed_req(&input, MAX, &[]);
        prop_assert_eq!(feed_req(&input, MAX, &sorted_cuts(cuts)), whole.clone());
        prop_assert_eq!(whole.map(|r| r.map(|(_, len)| len)), Ok(Some(head.len())));
    }

    #[test]
    fn response_split_invariance(cuts in proptest::collection::vec(0usize..300, 0..12)) {
        let input = response_with("Sec-WebSocket-Protocol: chat\r\n");
        let offered = strings(&["chat"]);
        let whole = feed_resp(&input, &offered, &[]);
        prop_assert!(whole.is_ok());
        prop_assert_eq!(feed_resp(&input, &offered, &sorted_cuts(cuts)), whole);
    }

    #[test]
    fn arbitrary_bytes_split_invariance(input in proptest::collection::vec(
                                            prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n')], 0..200),
                                        cuts in proptest::collection::vec(0usize..200, 0..8)) {
        let cuts = sorted_cuts(cuts);
        prop_assert_eq!(feed_req(&input, 128, &cuts), feed_req(&input, 128, &[]));
        prop_assert_eq!(feed_resp(&input, &[], &cuts), feed_resp(&input, &[], &[]));
    }
}
