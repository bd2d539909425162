//! The envelope protocol: JSON messages in WebSocket text frames (DESIGN.md "Wire
//! formats"), one codec for both ends. The [`Hub`](crate::hub::Hub) decodes what clients
//! send and encodes what it answers; the [`ClientSession`](crate::client::ClientSession)
//! does the opposite, with the same types.
//!
//! - [`ClientMessage`], client → server: `sub` (with an optional resume position), `unsub`,
//!   `pub` (with a client message id that makes it idempotent, and a `ref` the answer
//!   carries), `ping`.
//! - [`ServerMessage`], server → client: `msg` (with `from`, the publisher's user as the
//!   server authenticated it, when there is one to show), `ack`, `err`, `subscribed` (with
//!   `recovered`), `presence`, `pong`.
//! - [`PollBody`], [`decode_reset`], [`decode_publish_reply`]: the JSON bodies a client reads
//!   from the other transports (a polling response, an SSE `reset` event, the reply to
//!   `POST /api/publish`).
//!
//! Both directions encode and decode. Decoding never panics and never allocates more than
//! the frame it is given. What a server reads is checked strictly (unknown fields and
//! missing ones are refused with the `code` of the `err` reply and the `ref` to answer);
//! what a client reads is read leniently (unknown fields are ignored, so a newer server may
//! send more). Either way a frame that cannot be used is an [`EnvelopeError`]. Message data
//! stays raw JSON, so a publish is validated once and broadcast without re-encoding; a `msg`
//! is encoded once per broadcast and shared by every WebSocket receiver.
//!
//! ```
//! use tidewire::envelope::{ClientMessage, ServerMessage};
//! use tidewire::replay::Position;
//!
//! // A client subscribes, resuming after a position; the server reads it.
//! let pos: Position = "a1:17".parse().unwrap();
//! let sub = ClientMessage::Sub { ch: "orders:42".into(), pos: Some(pos), reference: Some(3) };
//! let text = sub.encode();
//! assert_eq!(text, r#"{"op":"sub","ch":"orders:42","pos":{"ep":"a1","off":17},"ref":3}"#);
//! let ClientMessage::Sub { ch, pos, .. } = ClientMessage::decode(text.as_bytes()).unwrap() else { panic!() };
//! assert_eq!((ch.as_str(), pos.unwrap().to_string()), ("orders:42", "a1:17".to_string()));
//!
//! // The server answers with a message; the client reads it.
//! let msg = ServerMessage::Msg {
//!     ch: "orders:42".into(),
//!     pos: "a1:18".parse().unwrap(),
//!     from: Some("ann".into()), // who published it, as the server authenticated them
//!     data: r#"{"total":3}"#.into(),
//! };
//! let bytes = msg.encode();
//! assert_eq!(bytes, r#"{"op":"msg","ch":"orders:42","ep":"a1","off":18,"from":"ann","data":{"total":3}}"#);
//! assert_eq!(ServerMessage::decode(&bytes).unwrap(), msg);
//! ```

mod body;
mod client;
mod server;

pub use body::{PollBody, PollEvent, decode_from, decode_publish_reply, decode_reset};
pub use client::ClientMessage;
pub use server::ServerMessage;
pub(crate) use server::ServerMessageRef;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::replay::{Epoch, Position};

/// Why a frame or body could not be used. A server answers it with an `err` reply (and
/// changes nothing); a client ignores the frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {msg}")]
pub struct EnvelopeError {
    /// The `code` of the `err` reply: `bad_json` (not a JSON object), `unknown_op` (an `op`
    /// this end does not know) or `bad_message` (missing, extra or malformed fields).
    pub code: &'static str,
    /// A human-readable explanation.
    pub msg: String,
    /// The `ref` of the message, when it could be read.
    pub reference: Option<u64>,
}

impl EnvelopeError {
    fn bad_json(e: &serde_json::Error) -> Self {
        Self { code: "bad_json", msg: e.to_string(), reference: None }
    }

    fn bad_message(msg: String, reference: Option<u64>) -> Self {
        Self { code: "bad_message", msg, reference }
    }
}

/// Whether `text` is one JSON value.
#[must_use]
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok()
}

/// Just enough of a message to dispatch it and to answer an error: its `op` and `ref`.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    op: Option<String>,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
}

/// Reads the `op` and `ref` of `frame`, refusing a frame without an `op`, or with one not
/// in `known`.
fn peek(frame: &[u8], known: &[&str]) -> Result<(String, Option<u64>), EnvelopeError> {
    let peek = serde_json::from_slice::<Peek>(frame).map_err(|e| EnvelopeError::bad_json(&e))?;
    let reference = peek.reference;
    let op = peek
        .op
        .ok_or_else(|| EnvelopeError::bad_message("missing field `op`".into(), reference))?;
    if !known.contains(&op.as_str()) {
        return Err(EnvelopeError {
            code: "unknown_op",
            msg: format!("unknown op `{op}`"),
            reference,
        });
    }
    Ok((op, reference))
}

/// A position as `sub` carries it: `{"ep":"a1","off":17}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePosition {
    ep: String,
    off: u64,
}

fn wire_position<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Position>, D::Error> {
    let Some(w) = Option::<WirePosition>::deserialize(d)? else { return Ok(None) };
    let epoch: Epoch = w.ep.parse().map_err(|_| de::Error::custom("ep must be hex"))?;
    Ok(Some(Position { epoch, offset: w.off }))
}

/// Encodes a position as `sub` carries it.
struct PositionObject(Position);

impl Serialize for PositionObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("ep", &self.0.epoch.to_string())?;
        m.serialize_entry("off", &self.0.offset)?;
        m.end()
    }
}

/// A position from the flat `ep` and `off` fields the server's messages carry.
fn flat_position(ep: Option<&str>, off: Option<u64>) -> Option<Position> {
    Some(Position { epoch: ep?.parse().ok()?, offset: off? })
}

#[cfg(test)]
mod tests;
