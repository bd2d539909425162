//! Server-Sent Events (WHATWG HTML §9.2) as sans-IO code: the `text/event-stream`
//! [`encode`]r and [`parse`]r. The rules they follow, one test each, are listed in the
//! project's SSE guide; the WHATWG algorithm is cited in the parser's docs.
//!
//! ```text
//! client   EventSource semantics: connect, reconnect with backoff, Last-Event-ID, idle watchdog;
//!          EventSource: the client over outbound sockets (HTTP/1.1), for the adapters' driver
//! stream   server side of one response: resume from Last-Event-ID, live, keep-alive
//! encode   events, id-only cursor blocks, retry, keep-alive comments → shared Bytes
//! parse    any split of a byte stream → events, last event ID, retry (linear, bounded)
//! ```

pub mod client;
pub mod encode;
pub mod parse;
pub mod stream;

pub use client::{
    EventSource, EventSourceConfig, InvalidRequest, SseAction, SseClient, SseClientConfig,
    SseClientEvent, SseFailure, SseReason, SseState, SseTimer, StateChange,
};
pub use encode::{EncodeError, Encoded};
pub use parse::{ParserLimits, SseError, SseEvent, SseParser};
pub use stream::{Sent, SseStream, SseStreamConfig, SseStreamEvent, StreamEnd};
