//! Raw bytes as an upgrade request (server) and as an upgrade response (client).
//!
//! Invariants: no panic; the head length returned is within the input; whole and chunked
//! input give the same result; a request the server parser accepts gets a 101 (with and
//! without a subprotocol it offered) that a client which sent that key accepts in turn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire::ws::UpgradeRequest;
use tidewire::ws::handshake::{RequestParser, ResponseParser, accept_response};

const MAX_HEAD: usize = 2048;
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The server's 101 for `req` must satisfy a client that offered the same protocols.
fn check_accept(req: &UpgradeRequest) {
    let offered = req.protocols().to_vec();
    let choices = std::iter::once(None).chain(offered.first().map(|p| Some(p.as_str())));
    for chosen in choices {
        let response = accept_response(req, chosen, &[]).expect("accepting a parsed request");
        let mut parser = ResponseParser::new(usize::MAX);
        let (resp, n) = parser
            .parse(&response, req.key(), &offered)
            .expect("the client accepts the server's 101")
            .expect("the 101 is a whole head");
        assert_eq!(n, response.len());
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.subprotocol(), chosen);
    }
}

fn request(data: &[u8], chunk: usize) -> String {
    let mut parser = RequestParser::new(MAX_HEAD);
    let mut end = 0;
    loop {
        end = (end + chunk).min(data.len());
        match parser.parse(&data[..end]) {
            Ok(Some((req, n))) => {
                assert!(n <= end);
                check_accept(&req);
                return format!("ok {n} {req:?}");
            }
            Err(e) => return format!("err {e:?}"),
            Ok(None) if end == data.len() => return "partial".into(),
            Ok(None) => {}
        }
    }
}

fn response(data: &[u8], chunk: usize) -> String {
    let offered = vec!["chat".to_owned()];
    let mut parser = ResponseParser::new(MAX_HEAD);
    let mut end = 0;
    loop {
        end = (end + chunk).min(data.len());
        match parser.parse(&data[..end], KEY, &offered) {
            Ok(Some((resp, n))) => {
                assert!(n <= end);
                return format!("ok {n} {resp:?}");
            }
            Err(e) => return format!("err {e:?}"),
            Ok(None) if end == data.len() => return "partial".into(),
            Ok(None) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    let chunk = usize::from(selector) + 1;
    assert_eq!(request(data, data.len().max(1)), request(data, chunk));
    assert_eq!(response(data, data.len().max(1)), response(data, chunk));
});
