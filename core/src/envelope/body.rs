//! The JSON bodies a client reads from the HTTP transports: a polling response, the data of
//! an SSE `reset` or `from` event, the reply to `POST /api/publish`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{EnvelopeError, flat_position};
use crate::replay::Position;

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
    pub events: Vec<PollEvent>,
}

/// One message of a [`PollBody`]: `{"ep":..,"off":..,"from":..,"data":..}` (`from` absent
/// when the server shows no publisher).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollEvent {
    /// Its position.
    pub pos: Position,
    /// Its publisher's user, as the server authenticated them.
    pub from: Option<String>,
    /// Its data, as JSON text.
    pub data: String,
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
    #[serde(default)]
    from: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn bad_position(what: &str) -> EnvelopeError {
    EnvelopeError::bad_message(format!("{what} is not a position"), None)
}

impl PollBody {
    /// Decodes a polling response body.
    ///
    /// # Errors
    /// [`EnvelopeError`]: `bad_json` when the body is not JSON of the shape above,
    /// `bad_message` for a malformed position.
    pub fn decode(body: &[u8]) -> Result<Self, EnvelopeError> {
        let w: WirePoll<'_> =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::bad_json(&e))?;
        let events = w
            .events
            .into_iter()
            .map(|e| {
                let pos = flat_position(Some(&e.ep), Some(e.off))
                    .ok_or_else(|| bad_position("an event's `ep`/`off`"))?;
                Ok(PollEvent { pos, from: e.from, data: e.data.get().into() })
            })
            .collect::<Result<_, EnvelopeError>>()?;
        Ok(Self {
            ch: w.ch,
            pos: w.pos.parse().map_err(|_| bad_position("`pos`"))?,
            recovered: w.recovered,
            events,
        })
    }
}

/// The data of an SSE `reset` event, `{"ch":..,"pos":"EP:OFF","recovered":false}`, and of
/// nothing else: returns the channel and the position to continue from.
///
/// # Errors
/// [`EnvelopeError`] (`bad_json`, `bad_message`) for another shape.
pub fn decode_reset(data: &[u8]) -> Result<(String, Position), EnvelopeError> {
    #[derive(Deserialize)]
    struct Reset {
        ch: String,
        pos: String,
    }
    let r: Reset = serde_json::from_slice(data).map_err(|e| EnvelopeError::bad_json(&e))?;
    Ok((r.ch, r.pos.parse().map_err(|_| bad_position("`pos`"))?))
}

/// The data of an SSE `from` event, `{"ch":..,"pos":"EP:OFF","from":"ann"}`: the publisher
/// of the channel message at `pos`, which follows it in the same stream (an SSE event has
/// only `id`, `event` and `data` for an `EventSource` to read, so the publisher travels in
/// an event of its own, and the message's `data` stays as published). Returns the position
/// and the publisher.
///
/// # Errors
/// [`EnvelopeError`] (`bad_json`, `bad_message`) for another shape.
pub fn decode_from(data: &[u8]) -> Result<(Position, String), EnvelopeError> {
    #[derive(Deserialize)]
    struct From {
        pos: String,
        from: String,
    }
    let r: From = serde_json::from_slice(data).map_err(|e| EnvelopeError::bad_json(&e))?;
    Ok((r.pos.parse().map_err(|_| bad_position("`pos`"))?, r.from))
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
    flat_position(Some(&r.ep), Some(r.off))
}
