//! The client's side of the wire formats (DESIGN.md "Wire formats"): it encodes the
//! envelope messages a client sends and decodes what the server sends, over WebSocket, in
//! SSE `reset` events, in polling responses and in HTTP publish replies. The server's side
//! is [`hub::envelope`](crate::hub::envelope); the shapes here mirror its output exactly.
//!
//! ```
//! use tidewire::client::wire::{ClientFrame, ServerFrame};
//!
//! let sub = ClientFrame::Sub { ch: "orders:42", pos: Some("a1:17".parse().unwrap()), reference: Some(3) };
//! assert_eq!(sub.encode(), r#"{"op":"sub","ch":"orders:42","pos":{"ep":"a1","off":17},"ref":3}"#);
//!
//! let msg = ServerFrame::decode(br#"{"op":"msg","ch":"orders:42","ep":"a1","off":18,"data":{"total":3}}"#).unwrap();
//! let ServerFrame::Msg { ch, pos, data } = msg else { panic!() };
//! assert_eq!((ch.as_str(), pos.to_string(), data.as_str()), ("orders:42", "a1:18".into(), r#"{"total":3}"#));
//! ```

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::replay::Position;

/// A message from the client (a WebSocket text frame).
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientFrame<'a> {
    /// Join a channel, resuming after `pos` when given.
    Sub {
        /// The channel.
        ch: &'a str,
        /// The last position the client has.
        pos: Option<Position>,
        /// Echoed in an `err` that refuses the subscription.
        reference: Option<u64>,
    },
    /// Leave a channel.
    Unsub {
        /// The channel.
        ch: &'a str,
    },
    /// Publish `data` (JSON text) to a channel.
    Pub {
        /// The channel.
        ch: &'a str,
        /// The client message id that makes the publish idempotent.
        id: &'a str,
        /// Any JSON value, as text. Must be valid JSON (checked by
        /// [`ClientSession::publish`](super::ClientSession::publish)).
        data: &'a str,
        /// Echoed in the `ack` or `err`.
        reference: Option<u64>,
    },
    /// Application-level liveness check.
    Ping {
        /// Echoed in the `pong`.
        reference: Option<u64>,
    },
}

struct WirePos(Position);

impl Serialize for WirePos {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("ep", &self.0.epoch.to_string())?;
        m.serialize_entry("off", &self.0.offset)?;
        m.end()
    }
}

impl Serialize for ClientFrame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            Self::Sub { ch, pos, reference } => {
                m.serialize_entry("op", "sub")?;
                m.serialize_entry("ch", ch)?;
                if let Some(p) = pos {
                    m.serialize_entry("pos", &WirePos(*p))?;
                }
                if let Some(r) = reference {
                    m.serialize_entry("ref", r)?;
                }
            }
            Self::Unsub { ch } => {
                m.serialize_entry("op", "unsub")?;
                m.serialize_entry("ch", ch)?;
            }
            Self::Pub { ch, id, data, reference } => {
                m.serialize_entry("op", "pub")?;
                m.serialize_entry("ch", ch)?;
                m.serialize_entry("id", id)?;
                // Checked JSON is embedded as it is; anything else travels as a string.
                match serde_json::from_str::<&RawValue>(data) {
                    Ok(raw) => m.serialize_entry("data", raw)?,
                    Err(_) => m.serialize_entry("data", data)?,
                }
                if let Some(r) = reference {
                    m.serialize_entry("ref", r)?;
                }
            }
            Self::Ping { reference } => {
                m.serialize_entry("op", "ping")?;
                if let Some(r) = reference {
                    m.serialize_entry("ref", r)?;
                }
            }
        }
        m.end()
    }
}

impl ClientFrame<'_> {
    /// The JSON text of this message.
    #[must_use]
    pub fn encode(&self) -> String {
        // Cannot fail: string keys, and string, number, map or raw JSON values.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A message from the server, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerFrame {
    /// A channel message.
    Msg {
        /// The channel.
        ch: String,
        /// Its position.
        pos: Position,
        /// Its data, as JSON text.
        data: String,
    },
    /// A publish was accepted.
    Ack {
        /// The `ref` of the publish.
        reference: Option<u64>,
        /// Where the message was placed, if the server said.
        pos: Option<Position>,
    },
    /// A request was refused.
    Err {
        /// The `ref` of the request.
        reference: Option<u64>,
        /// The machine-readable code (`forbidden`, `bad_message`, …).
        code: String,
        /// The explanation.
        msg: String,
    },
    /// A subscription is in place; `recovered: false` means refetch, then continue from
    /// `pos`.
    Subscribed {
        /// The channel.
        ch: String,
        /// Whether every missed message follows.
        recovered: bool,
        /// Where the client continues from.
        pos: Option<Position>,
    },
    /// Members joined or left a channel.
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

/// Why a server frame could not be used: not JSON, an unknown `op`, or a missing or
/// malformed field. A client ignores such frames (a newer server may send more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unusable server frame")]
pub struct BadFrame;

#[derive(Deserialize)]
struct Wire<'a> {
    op: String,
    #[serde(default)]
    ch: Option<String>,
    #[serde(default)]
    ep: Option<String>,
    #[serde(default)]
    off: Option<u64>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
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

fn position(ep: Option<&str>, off: Option<u64>) -> Option<Position> {
    Some(Position { epoch: ep?.parse().ok()?, offset: off? })
}

impl ServerFrame {
    /// Decodes one text frame. Unknown fields are ignored.
    ///
    /// # Errors
    /// [`BadFrame`] for anything but a JSON object with a known `op` and its fields.
    pub fn decode(frame: &[u8]) -> Result<Self, BadFrame> {
        let w: Wire<'_> = serde_json::from_slice(frame).map_err(|_| BadFrame)?;
        let pos = position(w.ep.as_deref(), w.off);
        Ok(match w.op.as_str() {
            "msg" => Self::Msg {
                ch: w.ch.ok_or(BadFrame)?,
                pos: pos.ok_or(BadFrame)?,
                data: w.data.ok_or(BadFrame)?.get().to_owned(),
            },
            "ack" => Self::Ack { reference: w.reference, pos },
            "err" => Self::Err {
                reference: w.reference,
                code: w.code.unwrap_or_default(),
                msg: w.msg.unwrap_or_default(),
            },
            "subscribed" => Self::Subscribed {
                ch: w.ch.ok_or(BadFrame)?,
                recovered: w.recovered.ok_or(BadFrame)?,
                pos,
            },
            "presence" => Self::Presence {
                ch: w.ch.ok_or(BadFrame)?,
                join: w.join.unwrap_or_default(),
                leave: w.leave.unwrap_or_default(),
            },
            "pong" => Self::Pong { reference: w.reference },
            _ => return Err(BadFrame),
        })
    }
}

/// A polling response body: `{"ch":..,"pos":"EP:OFF","recovered":bool,"events":[..]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollBody {
    /// The channel.
    pub ch: String,
    /// The position to poll on from.
    pub pos: Position,
    /// `false`: the position asked for is gone; refetch, then continue from `pos`.
    pub recovered: bool,
    /// The messages after the position asked for, in order.
    pub events: Vec<(Position, String)>,
}

#[derive(Deserialize)]
struct WirePoll<'a> {
    ch: String,
    pos: String,
    recovered: bool,
    #[serde(default, borrow)]
    events: Vec<WirePollEvent<'a>>,
}

#[derive(Deserialize)]
struct WirePollEvent<'a> {
    ep: String,
    off: u64,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl PollBody {
    /// Decodes a polling response body.
    ///
    /// # Errors
    /// [`BadFrame`] when the body does not have the shape above.
    pub fn decode(body: &[u8]) -> Result<Self, BadFrame> {
        let w: WirePoll<'_> = serde_json::from_slice(body).map_err(|_| BadFrame)?;
        let events = w
            .events
            .into_iter()
            .map(|e| Ok((position(Some(&e.ep), Some(e.off)).ok_or(BadFrame)?, e.data.get().into())))
            .collect::<Result<_, BadFrame>>()?;
        Ok(Self {
            ch: w.ch,
            pos: w.pos.parse().map_err(|_| BadFrame)?,
            recovered: w.recovered,
            events,
        })
    }
}

/// The data of an SSE `reset` event, `{"ch":..,"pos":"EP:OFF","recovered":false}`, and of
/// nothing else: returns the channel and the position to continue from.
///
/// # Errors
/// [`BadFrame`] for another shape.
pub fn decode_reset(data: &[u8]) -> Result<(String, Position), BadFrame> {
    #[derive(Deserialize)]
    struct Reset {
        ch: String,
        pos: String,
    }
    let r: Reset = serde_json::from_slice(data).map_err(|_| BadFrame)?;
    Ok((r.ch, r.pos.parse().map_err(|_| BadFrame)?))
}

/// The reply to `POST /api/publish`: `{"ep":..,"off":..}` (anything else gives `None`).
#[must_use]
pub fn decode_publish_reply(body: &[u8]) -> Option<Position> {
    #[derive(Deserialize)]
    struct Reply {
        ep: String,
        off: u64,
    }
    let r: Reply = serde_json::from_slice(body).ok()?;
    position(Some(&r.ep), Some(r.off))
}

/// Whether `text` is one JSON value.
#[must_use]
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::envelope::{ClientMessage, ServerMessage};

    fn pos(s: &str) -> Position {
        s.parse().unwrap()
    }

    #[test]
    fn client_frames_decode_on_the_hub() {
        let sub = ClientFrame::Sub { ch: "a\"b", pos: Some(pos("a1:17")), reference: Some(2) };
        let ClientMessage::Sub { ch, pos: p, .. } =
            ClientMessage::decode(sub.encode().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!((ch.as_str(), p), ("a\"b", Some(pos("a1:17"))));
        let m = ClientMessage::decode(ClientFrame::Unsub { ch: "c" }.encode().as_bytes()).unwrap();
        assert!(matches!(m, ClientMessage::Unsub { ref ch, .. } if ch == "c"));
        let p = ClientFrame::Pub { ch: "c", id: "x-1", data: r#"{"n":[1,2]}"#, reference: Some(9) };
        assert_eq!(p.encode(), r#"{"op":"pub","ch":"c","id":"x-1","data":{"n":[1,2]},"ref":9}"#);
        let ClientMessage::Pub { id, data, reference, .. } =
            ClientMessage::decode(p.encode().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (id.as_deref(), data.get(), reference),
            (Some("x-1"), r#"{"n":[1,2]}"#, Some(9))
        );
        let m = ClientMessage::decode(ClientFrame::Ping { reference: Some(4) }.encode().as_bytes());
        assert!(matches!(m, Ok(ClientMessage::Ping { reference: Some(4) })));
    }

    #[test]
    fn server_frames_round_trip_from_the_hub() {
        let p = pos("a1:18");
        let data = RawValue::from_string(r#""hi""#.into()).unwrap();
        let cases = [
            (
                ServerMessage::Msg { ch: "c", pos: p, data: &data },
                ServerFrame::Msg { ch: "c".into(), pos: p, data: r#""hi""#.into() },
            ),
            (
                ServerMessage::Ack { reference: Some(7), pos: Some(p) },
                ServerFrame::Ack { reference: Some(7), pos: Some(p) },
            ),
            (
                ServerMessage::Err { reference: Some(7), code: "forbidden", msg: "no" },
                ServerFrame::Err { reference: Some(7), code: "forbidden".into(), msg: "no".into() },
            ),
            (
                ServerMessage::Subscribed { ch: "c", recovered: false, pos: p },
                ServerFrame::Subscribed { ch: "c".into(), recovered: false, pos: Some(p) },
            ),
            (
                ServerMessage::Presence { ch: "c", join: &["ann".into()], leave: &[] },
                ServerFrame::Presence { ch: "c".into(), join: vec!["ann".into()], leave: vec![] },
            ),
            (ServerMessage::Pong { reference: Some(1) }, ServerFrame::Pong { reference: Some(1) }),
        ];
        for (msg, want) in cases {
            assert_eq!(ServerFrame::decode(&msg.encode()), Ok(want));
        }
        for bad in [&b"nope"[..], br#"{"op":"msg","ch":"c"}"#, br#"{"op":"dance"}"#, b"[]"] {
            assert_eq!(ServerFrame::decode(bad), Err(BadFrame));
        }
    }

    #[test]
    fn poll_bodies_resets_and_replies() {
        let body = br#"{"ch":"t","pos":"a1:7","recovered":true,"events":[{"ep":"a1","off":7,"data":{"n":7}}]}"#;
        let b = PollBody::decode(body).unwrap();
        assert_eq!(b.pos, pos("a1:7"));
        assert_eq!(b.events, vec![(pos("a1:7"), r#"{"n":7}"#.to_owned())]);
        assert!(PollBody::decode(br#"{"ch":"t","pos":"x","recovered":true}"#).is_err());
        assert_eq!(
            decode_reset(br#"{"ch":"t","pos":"b2:3","recovered":false}"#),
            Ok(("t".into(), pos("b2:3")))
        );
        assert_eq!(decode_publish_reply(br#"{"ep":"a1","off":9}"#), Some(pos("a1:9")));
        assert_eq!(decode_publish_reply(b"{}"), None);
        assert!(is_json(" [1] ") && !is_json("{") && !is_json("1 2"));
    }
}
