//! The pub/sub connection's replies: `PING`, subscription confirmations (which start the
//! history of a followed channel: subscribe first, then load) and live messages.

use std::sync::Arc;

use bytes::Bytes;

use super::bus::{RedisBus, Want};
use super::resp::Reply;
use super::types::RedisEvent;
use crate::replay::Position;
use crate::time::Instant;

impl RedisBus {
    /// A reply on the pub/sub connection; `false`: the connection is unusable.
    pub(super) fn on_sub_reply(&mut self, now: Instant, reply: Reply) -> bool {
        let items = match reply {
            Reply::Simple(s) if s.eq_ignore_ascii_case(b"PONG") => return self.on_pong(now),
            Reply::Array(items) => items,
            _ => return false,
        };
        let Some(kind) = items.first().and_then(Reply::as_bytes) else { return false };
        match &kind[..] {
            b"message" => {
                let (Some(name), Some(payload)) =
                    (items.get(1).and_then(Reply::as_str), items.get(2).and_then(Reply::as_bytes))
                else {
                    return false;
                };
                self.on_message(name, payload);
                true
            }
            b"pong" => self.on_pong(now),
            verb @ (b"subscribe" | b"unsubscribe") => {
                let Some(name) = items.get(1).and_then(Reply::as_str) else { return false };
                if self.sub_waits.pop_front().is_none() {
                    return false;
                }
                let subscribed = verb == b"subscribe";
                if let Some(ch) = self.channel_of(name) {
                    self.on_confirmed(now, &ch, subscribed);
                }
                true
            }
            _ => false,
        }
    }

    fn on_pong(&mut self, now: Instant) -> bool {
        if self.sub_waits.pop_front().is_none() {
            return false;
        }
        if let Some(s) = self.sub.as_mut() {
            s.pinged = true;
        }
        self.maybe_up(now);
        true
    }

    /// The hub's channel name of pub/sub channel `name` (`None` outside the prefix).
    fn channel_of(&self, name: &str) -> Option<Arc<str>> {
        let ch = name.strip_prefix(self.cfg.key_prefix.as_str())?.strip_prefix(':')?;
        Some(self.followed.get_key_value(ch).map_or_else(|| Arc::from(ch), |(k, _)| k.clone()))
    }

    /// A `SUBSCRIBE` (or `UNSUBSCRIBE`) of `ch` was confirmed. The last change in flight
    /// decides: a confirmed subscription of a followed channel loads the history it waits
    /// for.
    fn on_confirmed(&mut self, now: Instant, ch: &Arc<str>, subscribed: bool) {
        let left = match self.inflight.get_mut(ch) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if left > 0 {
            return;
        }
        self.inflight.remove(ch);
        if !subscribed {
            return;
        }
        let Some(f) = self.followed.get_mut(ch) else { return };
        f.subscribed = true;
        let want: Option<Want> = f.want.take();
        if let Some(want) = want
            && self.is_up()
        {
            self.load_history(now, ch.clone(), want);
        }
    }

    /// A live message: `"EPOCH:OFFSET DATA"` on the channel's pub/sub channel. Messages of
    /// channels not followed, and payloads not in that form (someone else publishing on
    /// the channel), are ignored.
    fn on_message(&mut self, name: &str, payload: &Bytes) {
        let Some(ch) = self.channel_of(name) else { return };
        if !self.followed.contains_key(&ch) {
            return;
        }
        let Some(space) = payload.iter().position(|&b| b == b' ') else { return };
        let Some(pos) =
            std::str::from_utf8(&payload[..space]).ok().and_then(|s| s.parse::<Position>().ok())
        else {
            return;
        };
        let data = payload.slice(space + 1..);
        self.events.push_back(RedisEvent::Message { ch: ch.to_string(), pos, data });
    }
}
