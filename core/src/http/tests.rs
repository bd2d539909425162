//! Tests of the generic heads: request accessors, content length, responses, the response
//! parser, and split invariance.

use proptest::prelude::*;

use super::*;

fn parse_req(input: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    RequestParser::new(16 << 10).parse(input)
}

/// Feeds growing prefixes, whole and byte by byte, and checks both give the same answer.
fn feed_req(input: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let whole = parse_req(input);
    let mut p = RequestParser::new(16 << 10);
    let mut bytewise = Ok(None);
    for end in 1..=input.len() {
        bytewise = p.parse(&input[..end]);
        if !matches!(bytewise, Ok(None)) {
            break;
        }
    }
    assert_eq!(bytewise, whole, "byte by byte");
    whole
}

#[test]
fn request_accessors() {
    let head = b"POST /api/publish?ch=chat%3Alobby&token=a+b HTTP/1.1\r\nHost: h:1\r\n\
        Authorization: Bearer  t0k \r\nCookie: a=1; sid=\"xyz\"\r\nAccept: text/html, \
        Text/Event-Stream;q=0.9\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
        Last-Event-ID: \r\nContent-Length: 12\r\nOrigin: http://o\r\n\r\nbody";
    let (req, len) = feed_req(head).unwrap().unwrap();
    assert_eq!(&head[len..], b"body");
    assert_eq!(req.method(), "POST");
    assert_eq!(req.path_only(), "/api/publish");
    assert_eq!(req.query_param("ch").as_deref(), Some("chat:lobby"));
    assert_eq!(req.query_param("token").as_deref(), Some("a b"));
    assert_eq!(req.bearer_token(), Some("t0k"));
    assert_eq!(req.token().as_deref(), Some("t0k"));
    assert_eq!(req.cookie("sid"), Some("xyz"));
    assert_eq!(req.host(), Some("h:1"));
    assert_eq!(req.origin(), Some("http://o"));
    assert!(req.accepts_event_stream());
    assert!(req.is_websocket_upgrade());
    assert!(req.has_token("connection", "upgrade"));
    assert_eq!(req.last_event_id(), None);
    assert_eq!(req.content_length(), Ok(Some(12)));
}

#[test]
fn content_length_rules() {
    let with = |extra: &str| {
        let head = format!("POST / HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        parse_req(head.as_bytes()).unwrap().unwrap().0.content_length()
    };
    assert_eq!(with(""), Ok(None));
    assert_eq!(with("Content-Length: 5\r\nContent-Length: 5\r\n"), Ok(Some(5)));
    for bad in [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +1\r\n",
        "Content-Length: 99999999999999999999\r\n",
        "Transfer-Encoding: chunked\r\n",
    ] {
        assert_eq!(with(bad), Err(HttpError::Malformed), "{bad:?}");
    }
}

#[test]
fn bad_heads_have_statuses() {
    assert_eq!(feed_req(b"GET / HTTP/1.0\r\n\r\n").unwrap_err().status(), 505);
    assert_eq!(feed_req(b"GET /\r\n\r\n").unwrap_err().status(), 400);
    assert_eq!(feed_req(b"\x01GET / HTTP/1.1\r\n\r\n").unwrap_err().status(), 400);
    let big = vec![b'a'; 20 << 10];
    assert_eq!(parse_req(&big).unwrap_err().status(), 431);
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parse_req(head.as_bytes()).unwrap_err(), HttpError::TooManyHeaders);
}

#[test]
fn responses() {
    let r = response(404, &[("X-A", "1")], b"nope").unwrap();
    assert_eq!(
        r,
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: 4\r\nConnection: close\r\nX-A: 1\r\n\r\nnope"
    );
    let r = response(304, &[("ETag", "\"a1:3\"")], b"ignored").unwrap();
    assert_eq!(r, "HTTP/1.1 304 Not Modified\r\nConnection: close\r\nETag: \"a1:3\"\r\n\r\n");
    assert_eq!(response(101, &[], b""), Err(InvalidHeader));
    assert_eq!(response(200, &[("Content-Length", "1")], b""), Err(InvalidHeader));
    assert_eq!(response(200, &[("X", "a\r\nb")], b""), Err(InvalidHeader));
    assert_eq!(response(200, &[("X Y", "a")], b""), Err(InvalidHeader));
    let s = stream_head(200, &[("Content-Type", "text/event-stream")]).unwrap();
    assert_eq!(
        s,
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/event-stream\r\n\r\n"
    );
}

#[test]
fn response_parser_reads_status_headers_and_media_type() {
    let head = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\
        Content-Type: Text/Event-Stream ; charset=utf-8\r\n\r\nrest";
    let mut p = ResponseParser::new(1024);
    assert_eq!(p.parse(&head[..20]), Ok(None));
    let (resp, len) = p.parse(head).unwrap().unwrap();
    assert_eq!(&head[len..], b"rest");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert_eq!(resp.media_type().as_deref(), Some("text/event-stream"));
    assert_eq!(
        ResponseParser::new(1024).parse(b"HTTP/1.0 200 OK\r\n\r\n"),
        Err(HttpError::HttpVersion)
    );
}

proptest! {
    #[test]
    fn request_heads_split_anywhere_agree(cuts in proptest::collection::vec(0usize..120, 0..8)) {
        let head = b"GET /events?ch=ticks HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\
            Last-Event-ID: a1:17\r\n\r\ntrailing";
        let whole = parse_req(head);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % head.len()).collect();
        cuts.sort_unstable();
        let mut p = RequestParser::new(16 << 10);
        let mut got = Ok(None);
        for end in cuts.into_iter().chain([head.len()]) {
            got = p.parse(&head[..end]);
            if !matches!(got, Ok(None)) {
                break;
            }
        }
        prop_assert_eq!(got, whole);
    }
}
