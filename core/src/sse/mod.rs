//! Server-Sent Events (WHATWG HTML §9.2) as sans-IO code: the `text/event-stream`
//! [`encode`]r and [`parse`]r. The rules they follow, one test each, are listed in the
//! project's SSE guide; the WHATWG algorithm is cited in the parser's docs.
//!
//! ```text
//! encode   events, id-only cursor blocks, retry, keep-alive comments → shared Bytes
//! parse    any split of a byte stream → events, last event ID, retry (linear, bounded)
//! ```

pub mod encode;
pub mod parse;

pub use encode::{EncodeError, Encoded};
pub use parse::{ParserLimits, SseError, SseEvent, SseParser};
