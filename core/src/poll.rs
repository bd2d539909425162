//! Polling by cursor, short and long: the transport of last resort, for clients behind
//! proxies that break WebSocket and event streams.
//!
//! `GET /poll?ch=NAME&pos=EPOCH:OFFSET` answers with the channel's messages after `pos` and
//! the new position, from the same [`ReplayLog`] (and the same "position gone" rule) as
//! SSE. The position is the response's `ETag`; a request whose `If-None-Match` equals the
//! current position gets `304 Not Modified`. With `wait=1` (long polling) a request with
//! nothing new is held until a message arrives or `long_poll` (default 25 s) passes.
//!
//! The body is JSON; each message's data is embedded as it was published (the hub stores
//! JSON text):
//!
//! ```text
//! {"ch":"ticks","pos":"a1:7","recovered":true,"events":[{"ep":"a1","off":6,"data":{"n":6}},{"ep":"a1","off":7,"from":"ann","data":{"n":7}}]}
//! ```
//!
//! An event's `from` is its publisher's user as the server authenticated them (recorded by
//! the hub in the log); it is absent when there is none to show.
//!
//! `recovered: false` means the position was gone: no events, `pos` is the head, and the
//! client must refetch state before it polls on from `pos`.
//!
//! ```
//! use bytes::Bytes;
//! use tidewire::http::RequestParser;
//! use tidewire::poll::{Poll, PollConfig, PollRequest};
//! use tidewire::replay::{Epoch, LogLimits, ReplayLog};
//! use tidewire::Instant;
//!
//! let now = Instant::now();
//! let mut log = ReplayLog::new(Epoch(0xa1), LogLimits::default());
//! log.append(now, Bytes::from_static(b"{\"n\":1}"));
//! let head = b"GET /poll?ch=ticks&pos=a1:0 HTTP/1.1\r\nHost: x\r\n\r\n";
//! let (req, _) = RequestParser::new(8192).parse(head).unwrap().unwrap();
//! let mut poll = Poll::new(PollConfig::default(), now, PollRequest::from_request(&req).unwrap());
//! let response = poll.check(now, &log).expect("answered at once");
//! let text = String::from_utf8(response.to_vec()).unwrap();
//! assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(text.contains("ETag: \"a1:1\"\r\n"));
//! assert!(text.ends_with(r#"{"ch":"ticks","pos":"a1:1","recovered":true,"events":[{"ep":"a1","off":1,"data":{"n":1}}]}"#));
//! ```

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::http::{self, Request};
use crate::replay::{LogEntry, Position, ReplayLog};
use crate::time::{Duration, Instant};

/// Settings of polling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollConfig {
    /// How long a long-poll request is held without news (default 25 s, below the 30 s
    /// idle timeout of common proxies).
    pub long_poll: Duration,
    /// The most messages in one response (default 100); the client polls again at once
    /// from the returned position for the rest.
    pub max_events: usize,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self { long_poll: Duration::from_secs(25), max_events: 100 }
    }
}

/// A polling request that cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// No `ch` parameter.
    #[error("missing ch parameter")]
    MissingChannel,
    /// `pos` or `If-None-Match` is not `EPOCH:OFFSET`.
    #[error("pos must be EPOCH:OFFSET")]
    BadPosition,
}

impl PollError {
    /// The status to answer with (400).
    #[must_use]
    pub fn status(self) -> u16 {
        400
    }
}

/// What a polling client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollRequest {
    /// The channel (`ch`).
    pub channel: String,
    /// The last position the client has (`pos`, or its `If-None-Match`); `None` for a
    /// first request, which gets no messages and the current head.
    pub pos: Option<Position>,
    /// Whether `If-None-Match` named `pos` (a `304` is allowed).
    pub conditional: bool,
    /// Long polling (`wait=1`).
    pub wait: bool,
}

impl PollRequest {
    /// Reads `ch`, `pos`, `wait` and `If-None-Match` from a request.
    ///
    /// # Errors
    /// [`PollError`] for a missing channel or a malformed position.
    pub fn from_request(req: &Request) -> Result<Self, PollError> {
        let channel = req.query_param("ch").filter(|c| !c.is_empty());
        Self::for_channel(req, channel.ok_or(PollError::MissingChannel)?)
    }

    /// Reads `pos`, `wait` and `If-None-Match` from a request for `channel` (named by the
    /// route, e.g. a path pattern, rather than `ch`).
    ///
    /// # Errors
    /// [`PollError::BadPosition`] for a malformed position.
    pub fn for_channel(req: &Request, channel: String) -> Result<Self, PollError> {
        let etag = req.header("if-none-match").map(|v| v.trim().trim_matches('"').to_owned());
        let etag = match etag.filter(|v| !v.is_empty() && v != "*") {
            Some(v) => Some(v.parse::<Position>().map_err(|_| PollError::BadPosition)?),
            None => None,
        };
        let pos = match req.query_param("pos").filter(|p| !p.is_empty()) {
            Some(p) => Some(p.parse::<Position>().map_err(|_| PollError::BadPosition)?),
            None => etag,
        };
        let conditional = etag.is_some() && etag == pos;
        let wait = matches!(req.query_param("wait").as_deref(), Some("1" | "true"));
        Ok(Self { channel, pos, conditional, wait })
    }
}

/// One polling request being answered. See the [module docs](self).
///
/// Call [`check`](Self::check) when the request arrives and again after every publish on
/// its channel; it returns the complete HTTP response once there is one to give. At
/// [`poll_timeout`](Self::poll_timeout), [`handle_timeout`](Self::handle_timeout) answers a
/// held long poll with "nothing new".
#[derive(Clone, Debug)]
pub struct Poll {
    cfg: PollConfig,
    req: PollRequest,
    headers: Vec<(String, String)>,
    deadline: Option<Instant>,
    answered: bool,
}

impl Poll {
    /// A request that arrived at `now`.
    #[must_use]
    pub fn new(cfg: PollConfig, now: Instant, req: PollRequest) -> Self {
        let deadline = req.wait.then(|| now + cfg.long_poll);
        Self { cfg, req, headers: Vec::new(), deadline, answered: false }
    }

    /// Adds headers to the response (e.g. CORS). Names and values that cannot be written
    /// are dropped.
    #[must_use]
    pub fn with_headers(mut self, headers: &[(&str, &str)]) -> Self {
        self.headers = headers
            .iter()
            .filter(|(n, v)| http::check_header(n, v).is_ok())
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    fn respond<'a>(
        &'a self,
        status: u16,
        mut headers: Vec<(&'a str, &'a str)>,
        body: &[u8],
    ) -> Bytes {
        headers.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        http::response(status, &headers, body).unwrap_or_default()
    }

    /// The request.
    #[must_use]
    pub fn request(&self) -> &PollRequest {
        &self.req
    }

    /// Whether the response was given.
    #[must_use]
    pub fn is_answered(&self) -> bool {
        self.answered
    }

    /// The response, if the request can be answered now: messages after the position, a
    /// first position, "gone", or (short polls) "nothing new". `None` while a long poll is
    /// held, and after the response was given.
    pub fn check(&mut self, now: Instant, log: &ReplayLog) -> Option<Bytes> {
        if self.answered {
            return None;
        }
        let expired = self.deadline.is_some_and(|d| now >= d);
        let hold = self.deadline.is_some() && !expired;
        let Some(pos) = self.req.pos else {
            return Some(self.answer(log.head(), true, &[]));
        };
        match log.since_entries(pos) {
            Err(gone) => Some(self.answer(gone.head, false, &[])),
            Ok(missed) if missed.len() == 0 => {
                if hold {
                    None
                } else if self.req.conditional {
                    self.answered = true;
                    let etag = format!("\"{pos}\"");
                    Some(self.respond(
                        304,
                        vec![("ETag", &etag), ("Cache-Control", "no-cache")],
                        b"",
                    ))
                } else {
                    Some(self.answer(pos, true, &[]))
                }
            }
            Ok(missed) => {
                let events: Vec<LogEntry<'_>> = missed.take(self.cfg.max_events).collect();
                let last = events.last().map_or(pos, |e| e.pos);
                Some(self.answer(last, true, &events))
            }
        }
    }

    /// Answers a held long poll whose time is up (nothing new: `304` for a conditional
    /// request, else an empty list). `None` before the deadline.
    pub fn handle_timeout(&mut self, now: Instant, log: &ReplayLog) -> Option<Bytes> {
        if self.deadline.is_some_and(|d| now >= d) { self.check(now, log) } else { None }
    }

    /// When a held long poll must be answered.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.answered { None } else { self.deadline }
    }

    fn answer(&mut self, pos: Position, recovered: bool, events: &[LogEntry<'_>]) -> Bytes {
        self.answered = true;
        let events = events
            .iter()
            .map(|&LogEntry { pos: p, data, from }| PollEvent {
                ep: p.epoch.to_string(),
                off: p.offset,
                from: from.map(ToString::to_string),
                // The hub stores JSON text; anything else is carried as a JSON string.
                data: std::str::from_utf8(data)
                    .ok()
                    .and_then(|text| RawValue::from_string(text.to_owned()).ok())
                    .unwrap_or_else(|| {
                        let lossy = String::from_utf8_lossy(data);
                        serde_json::value::to_raw_value(&lossy).unwrap_or_default()
                    }),
            })
            .collect();
        let body = PollBody { ch: &self.req.channel, pos: pos.to_string(), recovered, events };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let etag = format!("\"{pos}\"");
        let headers = vec![
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-cache"),
            ("ETag", etag.as_str()),
        ];
        self.respond(200, headers, &body)
    }
}

/// The JSON body of a polling response.
#[derive(Serialize)]
struct PollBody<'a> {
    ch: &'a str,
    pos: String,
    recovered: bool,
    events: Vec<PollEvent>,
}

#[derive(Serialize)]
struct PollEvent {
    ep: String,
    off: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    data: Box<RawValue>,
}

#[cfg(test)]
mod tests;
