//! Raw bytes as an upgrade request (server) and as an upgrade response (client).
//!
//! Invariants: no panic; the head length returned is within the input; whole and chunked
//! input give the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire::ws::handshake::{RequestParser, ResponseParser};

const MAX_HEAD: usize = 2048;
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(data: &[u8], chunk: usize) -> String {
    let mut parser = RequestParser::new(MAX_HEAD);
    let mut end = 0;
    loop {
        end = (end + chunk).min(data.len());
        match parser.parse(&data[..end]) {
            Ok(Some((req, n))) => {
                assert!(n <= end);
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
