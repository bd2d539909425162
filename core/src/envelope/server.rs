//! [`ServerMessage`]: what a server sends (`msg`, `ack`, `err`, `subscribed`, `presence`,
//! `pong`), and [`ServerMessageRef`], the same messages borrowed from the hub's state so
//! that it encodes without copying.

use bytes::Bytes;
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use super::{EnvelopeError, flat_position, peek};
use crate::replay::Position;

/// A message from the server (a WebSocket text frame). The hub
/// [`encode`](Self::encode)s it; the client [`decode`](Self::decode)s it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// A channel message.
    Msg {
        /// The channel.
        ch: String,
        /// Its position.
        pos: Position,
        /// Who published it, as the server authenticated them (`"from"` on the wire;
        /// absent for an anonymous or trusted publisher, or a channel that hides them).
        from: Option<String>,
        /// Its data, one JSON value as text (as published).
        data: String,
    },
    /// A publish was accepted (or was a duplicate of one that was).
    Ack {
        /// The `ref` of the publish.
        reference: Option<u64>,
        /// Where the message was placed, if the server said.
        pos: Option<Position>,
    },
    /// A request was refused; nothing changed.
    Err {
        /// The `ref` of the request.
        reference: Option<u64>,
        /// A stable machine-readable code (`forbidden`, `bad_json`, `unknown_op`, …).
        code: String,
        /// A human-readable explanation.
        msg: String,
    },
    /// A subscription is in place. `recovered: false` means the position the client
    /// brought is gone: it must refetch the channel's state; `pos` is where it stands now
    /// (the hub always says).
    Subscribed {
        /// The channel.
        ch: String,
        /// Whether every missed message follows (or none was missed).
        recovered: bool,
        /// The channel's position the client now continues from.
        pos: Option<Position>,
    },
    /// Members joined or left a channel's presence.
    Presence {
        /// The channel.
        ch: String,
        /// Who joined.
        join: Vec<String>,
        /// Who left.
        leave: Vec<String>,
    },
    /// The answer to a `ping`.
    Pong {
        /// The `ref` of the ping.
        reference: Option<u64>,
    },
}

/// Every field any server message may carry; unknown ones are ignored.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    ch: Option<String>,
    #[serde(default)]
    ep: Option<String>,
    #[serde(default)]
    off: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    join: Option<Vec<String>>,
    #[serde(default)]
    leave: Option<Vec<String>>,
}

impl ServerMessage {
    /// Decodes one text frame, leniently: unknown fields are ignored, an `err` without a
    /// `code` or `msg` has empty ones, a `presence` without `join` or `leave` empty lists.
    ///
    /// # Errors
    /// [`EnvelopeError`]: `bad_json` when the frame is not a JSON object, `unknown_op` for
    /// an `op` this client does not know, `bad_message` for a missing or malformed field
    /// (`msg` needs `ch`, `ep`, `off` and `data`; `subscribed` needs `ch` and `recovered`;
    /// `presence` needs `ch`).
    pub fn decode(frame: &[u8]) -> Result<Self, EnvelopeError> {
        let known = ["msg", "ack", "err", "subscribed", "presence", "pong"];
        let (op, reference) = peek(frame, &known)?;
        let bad = |msg: String| EnvelopeError::bad_message(msg, reference);
        let w: Wire<'_> = serde_json::from_slice(frame).map_err(|e| bad(e.to_string()))?;
        let missing = |name: &str| bad(format!("`{op}` needs field `{name}`"));
        let pos = flat_position(w.ep.as_deref(), w.off);
        Ok(match op.as_str() {
            "msg" => Self::Msg {
                ch: w.ch.ok_or_else(|| missing("ch"))?,
                pos: pos.ok_or_else(|| missing("ep/off"))?,
                from: w.from,
                data: w.data.ok_or_else(|| missing("data"))?.get().to_owned(),
            },
            "ack" => Self::Ack { reference: w.reference, pos },
            "err" => Self::Err {
                reference: w.reference,
                code: w.code.unwrap_or_default(),
                msg: w.msg.unwrap_or_default(),
            },
            "subscribed" => Self::Subscribed {
                ch: w.ch.ok_or_else(|| missing("ch"))?,
                recovered: w.recovered.ok_or_else(|| missing("recovered"))?,
                pos,
            },
            "presence" => Self::Presence {
                ch: w.ch.ok_or_else(|| missing("ch"))?,
                join: w.join.unwrap_or_default(),
                leave: w.leave.unwrap_or_default(),
            },
            _ => Self::Pong { reference: w.reference },
        })
    }

    /// The JSON text of this message, ready to be a WebSocket text frame (valid UTF-8).
    /// A `msg` whose `data` is not one JSON value carries it as a JSON string.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let quoted: Box<RawValue>;
        let r = match self {
            Self::Msg { ch, pos, from, data } => {
                let data = match serde_json::from_str::<&RawValue>(data) {
                    Ok(raw) => raw,
                    Err(_) => {
                        // A `&str` always serializes (as a JSON string).
                        let Ok(q) = serde_json::value::to_raw_value(data) else {
                            return Bytes::new();
                        };
                        quoted = q;
                        &quoted
                    }
                };
                ServerMessageRef::Msg { ch, pos: *pos, from: from.as_deref(), data }
            }
            Self::Ack { reference, pos } => {
                ServerMessageRef::Ack { reference: *reference, pos: *pos }
            }
            Self::Err { reference, code, msg } => {
                ServerMessageRef::Err { reference: *reference, code, msg }
            }
            Self::Subscribed { ch, recovered, pos } => {
                ServerMessageRef::Subscribed { ch, recovered: *recovered, pos: *pos }
            }
            Self::Presence { ch, join, leave } => ServerMessageRef::Presence { ch, join, leave },
            Self::Pong { reference } => ServerMessageRef::Pong { reference: *reference },
        };
        r.encode()
    }
}

/// A [`ServerMessage`] borrowed from the hub's state: the hub encodes with it, straight
/// from its logs, names and replies, without copying. Same variants, same bytes.
#[derive(Debug)]
pub(crate) enum ServerMessageRef<'a> {
    /// [`ServerMessage::Msg`].
    Msg { ch: &'a str, pos: Position, from: Option<&'a str>, data: &'a RawValue },
    /// [`ServerMessage::Ack`].
    Ack { reference: Option<u64>, pos: Option<Position> },
    /// [`ServerMessage::Err`].
    Err { reference: Option<u64>, code: &'a str, msg: &'a str },
    /// [`ServerMessage::Subscribed`].
    Subscribed { ch: &'a str, recovered: bool, pos: Option<Position> },
    /// [`ServerMessage::Presence`].
    Presence { ch: &'a str, join: &'a [String], leave: &'a [String] },
    /// [`ServerMessage::Pong`].
    Pong { reference: Option<u64> },
}

impl ServerMessageRef<'_> {
    /// The JSON text of this message, ready to be a WebSocket text frame (valid UTF-8).
    #[must_use]
    pub(crate) fn encode(&self) -> Bytes {
        // Serializing these shapes cannot fail: every key is a string and every value is a
        // string, number, bool, list of strings or already-valid raw JSON.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl Serialize for ServerMessageRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let flat = |m: &mut S::SerializeMap, p: &Position| {
            m.serialize_entry("ep", &p.epoch.to_string())?;
            m.serialize_entry("off", &p.offset)
        };
        let reference = |m: &mut S::SerializeMap, r: &Option<u64>| match r {
            Some(r) => m.serialize_entry("ref", r),
            None => Ok(()),
        };
        match self {
            Self::Msg { ch, pos, from, data } => {
                m.serialize_entry("op", "msg")?;
                m.serialize_entry("ch", ch)?;
                flat(&mut m, pos)?;
                if let Some(from) = from {
                    m.serialize_entry("from", from)?;
                }
                m.serialize_entry("data", data)?;
            }
            Self::Ack { reference: r, pos } => {
                m.serialize_entry("op", "ack")?;
                reference(&mut m, r)?;
                if let Some(p) = pos {
                    flat(&mut m, p)?;
                }
            }
            Self::Err { reference: r, code, msg } => {
                m.serialize_entry("op", "err")?;
                reference(&mut m, r)?;
                m.serialize_entry("code", code)?;
                m.serialize_entry("msg", msg)?;
            }
            Self::Subscribed { ch, recovered, pos } => {
                m.serialize_entry("op", "subscribed")?;
                m.serialize_entry("ch", ch)?;
                m.serialize_entry("recovered", recovered)?;
                if let Some(p) = pos {
                    flat(&mut m, p)?;
                }
            }
            Self::Presence { ch, join, leave } => {
                m.serialize_entry("op", "presence")?;
                m.serialize_entry("ch", ch)?;
                m.serialize_entry("join", join)?;
                m.serialize_entry("leave", leave)?;
            }
            Self::Pong { reference: r } => {
                m.serialize_entry("op", "pong")?;
                reference(&mut m, r)?;
            }
        }
        m.end()
    }
}
