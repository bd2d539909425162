//! [`ClientMessage`]: what a client sends (`sub`, `unsub`, `pub`, `ping`).

use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use super::{EnvelopeError, PositionObject, peek, wire_position};
use crate::replay::Position;

/// A message from a client (a WebSocket text frame). The client builds and
/// [`encode`](Self::encode)s it; the hub [`decode`](Self::decode)s it.
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
    /// Read (and checked) through `peek`; named here so that it is not an unknown field.
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

impl ClientMessage {
    /// Decodes one text frame, strictly: unknown fields are refused.
    ///
    /// # Errors
    /// [`EnvelopeError`]: `bad_json` when the frame is not a JSON object, `unknown_op` for
    /// an `op` this server does not know, `bad_message` for missing, extra or wrong fields.
    pub fn decode(frame: &[u8]) -> Result<Self, EnvelopeError> {
        let (op, reference) = peek(frame, &["sub", "unsub", "pub", "ping"])?;
        let bad = |msg: String| EnvelopeError::bad_message(msg, reference);
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

    /// The JSON text of this message, ready to be a WebSocket text frame. Absent optional
    /// fields are left out; the keys come in the order of DESIGN.md ("Wire formats").
    #[must_use]
    pub fn encode(&self) -> String {
        // Cannot fail: string keys, and string, number, map or raw JSON values.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for ClientMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let reference = match self {
            Self::Sub { ch, pos, reference } => {
                m.serialize_entry("op", "sub")?;
                m.serialize_entry("ch", ch)?;
                if let Some(p) = pos {
                    m.serialize_entry("pos", &PositionObject(*p))?;
                }
                reference
            }
            Self::Unsub { ch, reference } => {
                m.serialize_entry("op", "unsub")?;
                m.serialize_entry("ch", ch)?;
                reference
            }
            Self::Pub { ch, id, data, reference } => {
                m.serialize_entry("op", "pub")?;
                m.serialize_entry("ch", ch)?;
                if let Some(id) = id {
                    m.serialize_entry("id", id)?;
                }
                m.serialize_entry("data", data)?;
                reference
            }
            Self::Ping { reference } => {
                m.serialize_entry("op", "ping")?;
                reference
            }
        };
        if let Some(r) = reference {
            m.serialize_entry("ref", r)?;
        }
        m.end()
    }
}
