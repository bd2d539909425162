//! The envelope protocol: JSON messages in WebSocket text frames (DESIGN.md "Wire
//! formats"), typed with serde.
//!
//! Client → server: `sub` (with an optional resume position), `unsub`, `pub` (with a client
//! message id that makes it idempotent, and a `ref` the answer carries), `ping`.
//! Server → client: `msg`, `ack`, `err`, `subscribed` (with `recovered`), `presence`, `pong`.
//!
//! Decoding never panics and never allocates more than the frame it is given: a malformed
//! or unknown message is an [`EnvelopeError`] with the `code` of the `err` reply and the
//! `ref` to answer, if one could be read. Message data stays raw JSON
//! ([`RawValue`]), so a publish is validated once and broadcast without re-encoding; a `msg`
//! is encoded once per broadcast and shared by every WebSocket receiver.
//!
//! ```
//! use tidewire::hub::envelope::{ClientMessage, ServerMessage};
//! use tidewire::replay::Position;
//!
//! let m = ClientMessage::decode(br#"{"op":"sub","ch":"orders:42","pos":{"ep":"a1","off":17}}"#).unwrap();
//! let ClientMessage::Sub { ch, pos, .. } = m else { panic!() };
//! assert_eq!((ch.as_str(), pos.unwrap().to_string()), ("orders:42", "a1:17".to_string()));
//!
//! let data = serde_json::value::RawValue::from_string(r#"{"total":3}"#.into()).unwrap();
//! let pos: Position = "a1:18".parse().unwrap();
//! let out = ServerMessage::Msg { ch: "orders:42", pos, data: &data }.encode();
//! assert_eq!(out, r#"{"op":"msg","ch":"orders:42","ep":"a1","off":18,"data":{"total":3}}"#);
//! ```

use bytes::Bytes;
use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::replay::{Epoch, Position};

/// A message from a client.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientMessage {
    /// Join a channel, resuming after `pos` when given.
    Sub {
        /// The channel.
        ch: String,
        /// The last position the client has.
        pos: Option<Position>,
        /// Echoed in the `err` if the join is refused.
        reference: Option<u64>,
    },
    /// Leave a channel.
    Unsub {
        /// The channel.
        ch: String,
        /// The client's correlation number (unsub gets no reply).
        reference: Option<u64>,
    },
    /// Publish `data` to a channel.
    Pub {
        /// The channel.
        ch: String,
        /// The client's id for this message: a retry with the same id is acknowledged
        /// again but published once.
        id: Option<String>,
        /// Any JSON value.
        data: Box<RawValue>,
        /// Echoed in the `ack` or `err`.
        reference: Option<u64>,
    },
    /// Application-level liveness check; answered with `pong`.
    Ping {
        /// Echoed in the `pong`.
        reference: Option<u64>,
    },
}

/// Every field any client message may carry. (serde's internally tagged enums cannot hold a
/// `RawValue`, so the `op` is dispatched by hand after this flat decode.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    /// Read (and checked) through `Peek`; named here so that it is not an unknown field.
    #[serde(rename = "op")]
    _op: String,
    #[serde(default)]
    ch: Option<String>,
    #[serde(default, deserialize_with = "wire_position")]
    pos: Option<Position>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
}

/// Why a client message was refused; becomes an `err` reply (and no state change).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {msg}")]
pub struct EnvelopeError {
    /// The `code` of the `err` reply: `bad_json`, `unknown_op` or `bad_message`.
    pub code: &'static str,
    /// A human-readable explanation.
    pub msg: String,
    /// The `ref` of the message, when it could be read.
    pub reference: Option<u64>,
}

/// The position as it travels: `{"ep":"a1","off":17}`.
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

/// Just enough of a message to answer an error: its `op` and `ref`.
#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    op: Option<String>,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
}

impl ClientMessage {
    /// Decodes one text frame.
    ///
    /// # Errors
    /// [`EnvelopeError`]: `bad_json` when the frame is not a JSON object, `unknown_op` for
    /// an `op` this server does not know, `bad_message` for missing or wrong fields.
    pub fn decode(frame: &[u8]) -> Result<Self, EnvelopeError> {
        let peek = serde_json::from_slice::<Peek>(frame).map_err(|e| EnvelopeError {
            code: "bad_json",
            msg: e.to_string(),
            reference: None,
        })?;
        let reference = peek.reference;
        let bad = |msg: String| EnvelopeError { code: "bad_message", msg, reference };
        let op = peek.op.ok_or_else(|| bad("missing field `op`".into()))?;
        if !["sub", "unsub", "pub", "ping"].contains(&op.as_str()) {
            return Err(EnvelopeError {
                code: "unknown_op",
                msg: format!("unknown op `{op}`"),
                reference,
            });
        }
        let w: Wire<'_> = serde_json::from_slice(frame).map_err(|e| bad(e.to_string()))?;
        let need = |field: Option<String>, name: &str| {
            field.ok_or_else(|| bad(format!("`{op}` needs field `{name}`")))
        };
        let extra = |present: bool, name: &str| {
            if present { Err(bad(format!("`{op}` takes no field `{name}`"))) } else { Ok(()) }
        };
        match op.as_str() {
            "sub" => {
                extra(w.id.is_some(), "id")?;
                extra(w.data.is_some(), "data")?;
                Ok(Self::Sub { ch: need(w.ch, "ch")?, pos: w.pos, reference: w.reference })
            }
            "unsub" => {
                extra(w.pos.is_some(), "pos")?;
                extra(w.id.is_some(), "id")?;
                extra(w.data.is_some(), "data")?;
                Ok(Self::Unsub { ch: need(w.ch, "ch")?, reference: w.reference })
            }
            "pub" => {
                extra(w.pos.is_some(), "pos")?;
                let data = w.data.ok_or_else(|| bad("`pub` needs field `data`".into()))?;
                Ok(Self::Pub {
                    ch: need(w.ch, "ch")?,
                    id: w.id,
                    data: data.to_owned(),
                    reference: w.reference,
                })
            }
            _ => {
                extra(w.ch.is_some(), "ch")?;
                extra(w.pos.is_some() || w.id.is_some() || w.data.is_some(), "pos/id/data")?;
                Ok(Self::Ping { reference: w.reference })
            }
        }
    }
}

/// A message to a client. Borrowed fields: encode straight from the hub's state.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerMessage<'a> {
    /// A channel message.
    Msg {
        /// The channel.
        ch: &'a str,
        /// Its position.
        pos: Position,
        /// Its data, as published.
        data: &'a RawValue,
    },
    /// A publish was accepted (or was a duplicate of one that was).
    Ack {
        /// The `ref` of the publish.
        reference: Option<u64>,
        /// Where the message was placed.
        pos: Option<Position>,
    },
    /// A request was refused; nothing changed.
    Err {
        /// The `ref` of the request.
        reference: Option<u64>,
        /// A stable machine-readable code (`forbidden`, `bad_json`, `unknown_op`, …).
        code: &'a str,
        /// A human-readable explanation.
        msg: &'a str,
    },
    /// A subscription is in place. `recovered: false` means the position the client
    /// brought is gone: it must refetch the channel's state; `pos` is where it stands now.
    Subscribed {
        /// The channel.
        ch: &'a str,
        /// Whether every missed message follows (or none was missed).
        recovered: bool,
        /// The channel's position the client now continues from.
        pos: Position,
    },
    /// Members joined or left a channel's presence.
    Presence {
        /// The channel.
        ch: &'a str,
        /// Who joined.
        join: &'a [String],
        /// Who left.
        leave: &'a [String],
    },
    /// The answer to a `ping`.
    Pong {
        /// The `ref` of the ping.
        reference: Option<u64>,
    },
}

impl Serialize for ServerMessage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Self::Msg { ch, pos, data } => {
                m.serialize_entry("op", "msg")?;
                m.serialize_entry("ch", ch)?;
                m.serialize_entry("ep", &pos.epoch.to_string())?;
                m.serialize_entry("off", &pos.offset)?;
                m.serialize_entry("data", data)?;
            }
            Self::Ack { reference, pos } => {
                m.serialize_entry("op", "ack")?;
                if let Some(r) = reference {
                    m.serialize_entry("ref", r)?;
                }
                if let Some(p) = pos {
                    m.serialize_entry("ep", &p.epoch.to_string())?;
                    m.serialize_entry("off", &p.offset)?;
                }
            }
            Self::Err { reference, code, msg } => {
                m.serialize_entry("op", "err")?;
                if let Some(r) = reference {
                    m.serialize_entry("ref", r)?;
                }
                m.serialize_entry("code", code)?;
                m.serialize_entry("msg", msg)?;
            }
            Self::Subscribed { ch, recovered, pos } => {
                m.serialize_entry("op", "subscribed")?;
                m.serialize_entry("ch", ch)?;
                m.serialize_entry("recovered", recovered)?;
                m.serialize_entry("ep", &pos.epoch.to_string())?;
                m.serialize_entry("off", &pos.offset)?;
            }
            Self::Presence { ch, join, leave } => {
                m.serialize_entry("op", "presence")?;
                m.serialize_entry("ch", ch)?;
                m.serialize_entry("join", join)?;
                m.serialize_entry("leave", leave)?;
            }
            Self::Pong { reference } => {
                m.serialize_entry("op", "pong")?;
                if let Some(r) = reference {
                    m.serialize_entry("ref", r)?;
                }
            }
        }
        m.end()
    }
}

impl ServerMessage<'_> {
    /// The JSON text of this message, ready to be a WebSocket text frame (valid UTF-8).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        // Serializing these shapes cannot fail: every key is a string and every value is a
        // string, number, bool, list of strings or already-valid raw JSON.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn decodes_every_client_op() {
        let m = ClientMessage::decode(br#"{"op":"sub","ch":"a","ref":2}"#).unwrap();
        assert!(
            matches!(m, ClientMessage::Sub { ref ch, pos: None, reference: Some(2) } if ch == "a")
        );
        let m = ClientMessage::decode(br#"{"op":"unsub","ch":"a"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Unsub { ref ch, reference: None } if ch == "a"));
        let m = ClientMessage::decode(
            br#"{"op":"pub","ch":"c","id":"m1","data":[1,{"x":null}],"ref":7}"#,
        )
        .unwrap();
        let ClientMessage::Pub { ch, id, data, reference } = m else { panic!() };
        assert_eq!(
            (ch.as_str(), id.as_deref(), data.get(), reference),
            ("c", Some("m1"), r#"[1,{"x":null}]"#, Some(7))
        );
        let m = ClientMessage::decode(br#"{"ref":3,"op":"ping"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Ping { reference: Some(3) }));
    }

    #[test]
    fn errors_carry_a_code_and_the_ref() {
        let cases: [(&[u8], &str, Option<u64>); 9] = [
            (b"", "bad_json", None),
            (b"not json", "bad_json", None),
            (b"[1,2]", "bad_json", None),
            (br#"{"op":"dance","ref":4}"#, "unknown_op", Some(4)),
            (br#"{"ref":5}"#, "bad_message", Some(5)),
            (br#"{"op":"sub","ref":6}"#, "bad_message", Some(6)),
            (br#"{"op":"pub","ch":"a","ref":8}"#, "bad_message", Some(8)),
            (br#"{"op":"sub","ch":"a","pos":{"ep":"zz","off":1}}"#, "bad_message", None),
            (br#"{"op":"sub","ch":"a","extra":1}"#, "bad_message", None),
        ];
        for (input, code, reference) in cases {
            let e = ClientMessage::decode(input).unwrap_err();
            assert_eq!(
                (e.code, e.reference),
                (code, reference),
                "{}",
                String::from_utf8_lossy(input)
            );
            assert!(!e.msg.is_empty());
        }
    }

    #[test]
    fn encodes_every_server_op() {
        let pos: Position = "a1:18".parse().unwrap();
        let data = raw(r#""hi""#);
        let cases = [
            (
                ServerMessage::Msg { ch: "c", pos, data: &data },
                r#"{"op":"msg","ch":"c","ep":"a1","off":18,"data":"hi"}"#,
            ),
            (
                ServerMessage::Ack { reference: Some(7), pos: Some(pos) },
                r#"{"op":"ack","ref":7,"ep":"a1","off":18}"#,
            ),
            (ServerMessage::Ack { reference: None, pos: None }, r#"{"op":"ack"}"#),
            (
                ServerMessage::Err { reference: Some(7), code: "forbidden", msg: "no \"write\"" },
                r#"{"op":"err","ref":7,"code":"forbidden","msg":"no \"write\""}"#,
            ),
            (
                ServerMessage::Subscribed { ch: "c", recovered: false, pos },
                r#"{"op":"subscribed","ch":"c","recovered":false,"ep":"a1","off":18}"#,
            ),
            (
                ServerMessage::Presence { ch: "c", join: &["ann".into()], leave: &[] },
                r#"{"op":"presence","ch":"c","join":["ann"],"leave":[]}"#,
            ),
            (ServerMessage::Pong { reference: Some(1) }, r#"{"op":"pong","ref":1}"#),
        ];
        for (msg, want) in cases {
            assert_eq!(msg.encode(), want);
        }
    }
}
