//! Raw bytes as an HTTP/1.1 request head and as a response head, and the polling request
//! built from a parsed request.
//!
//! Invariants: no panic; the head length is within the input; whole and chunked input give
//! the same result; every accessor of a parsed request answers without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire::http::{RequestParser, ResponseParser};
use tidewire::poll::PollRequest;
use tidewire::ws::UpgradeRequest;

const MAX_HEAD: usize = 2048;

fn request(data: &[u8], chunk: usize) -> String {
    let mut parser = RequestParser::new(MAX_HEAD);
    let mut end = 0;
    loop {
        end = (end + chunk).min(data.len());
        match parser.parse(&data[..end]) {
            Ok(Some((req, n))) => {
                assert!(n <= end);
                let summary = format!(
                    "{} {} {:?} {:?} {:?} {:?} {} {} {:?} {:?} {:?}",
                    req.method(),
                    req.path_only(),
                    req.query_param("ch"),
                    req.token(),
                    req.cookie("sid"),
                    req.origin(),
                    req.accepts_event_stream(),
                    req.is_websocket_upgrade(),
                    req.last_event_id(),
                    req.content_length(),
                    PollRequest::from_request(&req),
                );
                let upgrade = UpgradeRequest::from_request(req).map(|u| u.key().to_owned());
                return format!("ok {n} {summary} {upgrade:?}");
            }
            Err(e) => return format!("err {e:?}"),
            Ok(None) if end == data.len() => return "partial".into(),
            Ok(None) => {}
        }
    }
}

fn response(data: &[u8], chunk: usize) -> String {
    let mut parser = ResponseParser::new(MAX_HEAD);
    let mut end = 0;
    loop {
        end = (end + chunk).min(data.len());
        match parser.parse(&data[..end]) {
            Ok(Some((resp, n))) => {
                assert!(n <= end);
                return format!("ok {n} {} {:?}", resp.status(), resp.media_type());
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
