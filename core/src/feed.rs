//! [`Feeds`]: named channels, each with its [`ReplayLog`] and its subscribers, for the
//! one-way transports (SSE streams and held long polls).
//!
//! Publishing appends to the channel's log, encodes the SSE form once, and names the
//! subscribers to hand that one shared [`Bytes`] to; the caller (an adapter) owns the
//! subscribers' streams and wakes them. Resuming streams and polls read the same log, so
//! SSE and polling share positions and the "position gone" rule.
//!
//! Bounded: at most `max_channels` channels (a channel is created by its first publish or
//! subscriber and dropped when its log is empty and nobody listens), `max_subscribers`
//! per channel, and each log by [`LogLimits`].
//!
//! ```
//! use bytes::Bytes;
//! use tidewire::feed::{Feeds, FeedsConfig, SubscriberId};
//! use tidewire::Instant;
//!
//! let now = Instant::now();
//! let mut feeds = Feeds::new(FeedsConfig::default(), 0x5eed);
//! feeds.subscribe("ticks", SubscriberId(1)).unwrap();
//! let published = feeds.publish(now, "ticks", Bytes::from_static(b"{\"n\":1}")).unwrap();
//! assert_eq!(published.pos.offset, 1);
//! assert_eq!(published.subscribers, [SubscriberId(1)]);
//! assert!(published.sse.ends_with(b"event: ticks\ndata: {\"n\":1}\n\n"));
//! ```

use std::collections::HashMap;

use bytes::Bytes;

use crate::replay::{Epoch, LogLimits, Position, ReplayLog};
use crate::rng::Rng;
use crate::sse::SseStream;
use crate::sse::encode::EncodeError;
use crate::time::Instant;

/// Who listens on a channel: an id the adapter chose (one per stream or held poll).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub u64);

/// Bounds of a [`Feeds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedsConfig {
    /// Channels at most (default 10 000).
    pub max_channels: usize,
    /// Subscribers per channel at most (default 100 000).
    pub max_subscribers: usize,
    /// Longest channel name in bytes (default 256).
    pub max_name: usize,
    /// Each channel's log.
    pub log: LogLimits,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        Self {
            max_channels: 10_000,
            max_subscribers: 100_000,
            max_name: 256,
            log: LogLimits::default(),
        }
    }
}

/// Why a publish or subscribe was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The channel name is empty, too long, or holds CR, LF or NUL.
    #[error("invalid channel name")]
    BadName,
    /// `max_channels` channels exist already.
    #[error("too many channels")]
    TooManyChannels,
    /// The channel has `max_subscribers` subscribers already.
    #[error("too many subscribers on this channel")]
    TooManySubscribers,
    /// The payload is not UTF-8 text (event streams carry text; publish JSON).
    #[error("payload is not UTF-8")]
    NotText,
}

impl From<EncodeError> for FeedError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::NotUtf8 => Self::NotText,
            _ => Self::BadName,
        }
    }
}

/// What a publish produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's position in its channel.
    pub pos: Position,
    /// The SSE encoding (`id`, `event: <channel>`, `data`), shared by every stream.
    pub sse: Bytes,
    /// The channel's subscribers at the time of the publish, to hand `sse` to (streams)
    /// or to wake (held polls).
    pub subscribers: Vec<SubscriberId>,
}

#[derive(Debug)]
struct Channel {
    log: ReplayLog,
    subscribers: Vec<SubscriberId>,
}

/// The channels of a server. See the [module docs](self).
#[derive(Debug)]
pub struct Feeds {
    cfg: FeedsConfig,
    rng: Rng,
    channels: HashMap<String, Channel>,
}

impl Feeds {
    /// No channels yet. New logs draw their epochs from a generator seeded with `seed`
    /// (adapters seed it from OS entropy, so that a restarted server starts new epochs).
    #[must_use]
    pub fn new(cfg: FeedsConfig, seed: u64) -> Self {
        Self { cfg, rng: Rng::from_u64(seed), channels: HashMap::new() }
    }

    fn check_name(&self, name: &str) -> Result<(), FeedError> {
        let bad = name.is_empty()
            || name.len() > self.cfg.max_name
            || name.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        if bad { Err(FeedError::BadName) } else { Ok(()) }
    }

    fn channel(&mut self, name: &str) -> Result<&mut Channel, FeedError> {
        self.check_name(name)?;
        if !self.channels.contains_key(name) {
            if self.channels.len() >= self.cfg.max_channels {
                return Err(FeedError::TooManyChannels);
            }
            // A zero epoch is avoided so that "0:0" never matches by accident.
            let epoch = Epoch(self.rng.next_u64().max(1));
            let log = ReplayLog::new(epoch, self.cfg.log);
            self.channels.insert(name.to_owned(), Channel { log, subscribers: Vec::new() });
        }
        self.channels.get_mut(name).ok_or(FeedError::BadName)
    }

    /// Appends `data` (JSON text) to `channel`'s log and returns its position, its SSE
    /// form and the subscribers to deliver it to.
    ///
    /// # Errors
    /// [`FeedError`] for a bad name, too many channels, or data that is not text.
    pub fn publish(
        &mut self,
        now: Instant,
        channel: &str,
        data: Bytes,
    ) -> Result<Published, FeedError> {
        if std::str::from_utf8(&data).is_err() {
            return Err(FeedError::NotText);
        }
        let ch = self.channel(channel)?;
        let pos = Position { epoch: ch.log.epoch(), offset: ch.log.head().offset + 1 };
        let sse = SseStream::encode(pos, Some(channel), &data)?;
        let appended = ch.log.append(now, data);
        debug_assert_eq!(appended, pos);
        Ok(Published { pos, sse, subscribers: ch.subscribers.clone() })
    }

    /// Restores `channel` after a restart: an empty log continuing after `last` (see
    /// [`ReplayLog::continuing`]), so that clients that saw up to `last` resume exactly.
    /// Replaces the channel's log if it existed.
    ///
    /// # Errors
    /// [`FeedError`] for a bad name or too many channels.
    pub fn restore(&mut self, channel: &str, last: Position) -> Result<(), FeedError> {
        let limits = self.cfg.log;
        self.channel(channel)?.log = ReplayLog::continuing(last, limits);
        Ok(())
    }

    /// Adds a subscriber to `channel` (creating the channel). Subscribing twice is a no-op.
    ///
    /// # Errors
    /// [`FeedError`] for a bad name, too many channels or subscribers.
    pub fn subscribe(&mut self, channel: &str, id: SubscriberId) -> Result<(), FeedError> {
        let max = self.cfg.max_subscribers;
        let ch = self.channel(channel)?;
        if ch.subscribers.contains(&id) {
            return Ok(());
        }
        if ch.subscribers.len() >= max {
            return Err(FeedError::TooManySubscribers);
        }
        ch.subscribers.push(id);
        Ok(())
    }

    /// Removes a subscriber; a channel with an empty log and no subscribers is dropped.
    pub fn unsubscribe(&mut self, channel: &str, id: SubscriberId) {
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.subscribers.retain(|s| *s != id);
            if ch.subscribers.is_empty() && ch.log.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// The log of `channel`, creating the channel (empty) if needed, so that a first
    /// subscriber learns the position it starts from.
    ///
    /// # Errors
    /// [`FeedError`] for a bad name or too many channels.
    pub fn log(&mut self, channel: &str) -> Result<&ReplayLog, FeedError> {
        Ok(&self.channel(channel)?.log)
    }

    /// Channels that exist.
    #[must_use]
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether no channel exists.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Drops expired messages from every log (and channels left empty with nobody
    /// listening). Call it at [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.channels.retain(|_, ch| {
            ch.log.handle_timeout(now);
            !(ch.log.is_empty() && ch.subscribers.is_empty())
        });
    }

    /// The earliest expiry of a logged message.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.channels.values().filter_map(|ch| ch.log.poll_timeout()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn publish_reaches_the_subscribers_of_its_channel_only() {
        let t0 = crate::time::test_epoch();
        let mut f = Feeds::new(FeedsConfig::default(), 1);
        f.subscribe("a", SubscriberId(1)).unwrap();
        f.subscribe("a", SubscriberId(1)).unwrap();
        f.subscribe("b", SubscriberId(2)).unwrap();
        let p = f.publish(t0, "a", Bytes::from_static(b"1")).unwrap();
        assert_eq!(p.subscribers, [SubscriberId(1)]);
        assert_eq!(f.publish(t0, "a", Bytes::from_static(b"2")).unwrap().pos.offset, 2);
        f.unsubscribe("a", SubscriberId(1));
        assert!(f.publish(t0, "a", Bytes::from_static(b"3")).unwrap().subscribers.is_empty());
        let pos = Position { epoch: p.pos.epoch, offset: 1 };
        let missed: Vec<u64> =
            f.log("a").unwrap().since(pos).unwrap().map(|(p, _)| p.offset).collect();
        assert_eq!(missed, [2, 3]);
    }

    #[test]
    fn channels_are_bounded_and_names_checked() {
        let t0 = crate::time::test_epoch();
        let cfg = FeedsConfig { max_channels: 2, max_subscribers: 1, ..FeedsConfig::default() };
        let mut f = Feeds::new(cfg, 1);
        f.subscribe("a", SubscriberId(1)).unwrap();
        assert_eq!(f.subscribe("a", SubscriberId(2)), Err(FeedError::TooManySubscribers));
        f.publish(t0, "b", Bytes::new()).unwrap();
        assert_eq!(f.publish(t0, "c", Bytes::new()).unwrap_err(), FeedError::TooManyChannels);
        for bad in ["", "a\nb", "a\0"] {
            assert_eq!(f.subscribe(bad, SubscriberId(3)), Err(FeedError::BadName));
        }
        assert_eq!(
            f.publish(t0, "a", Bytes::from_static(b"\xff")).unwrap_err(),
            FeedError::NotText
        );
        // Leaving an empty channel frees its slot.
        f.unsubscribe("a", SubscriberId(1));
        assert_eq!(f.len(), 1);
        f.subscribe("c", SubscriberId(1)).unwrap();
    }

    #[test]
    fn a_restored_channel_continues_its_positions() {
        let t0 = crate::time::test_epoch();
        let mut f = Feeds::new(FeedsConfig::default(), 1);
        let last = Position { epoch: Epoch(0xab), offset: 9 };
        f.restore("t", last).unwrap();
        let p = f.publish(t0, "t", Bytes::from_static(b"1")).unwrap();
        assert_eq!(p.pos, Position { epoch: Epoch(0xab), offset: 10 });
        assert!(p.sse.starts_with(b"id: ab:10\n"));
        assert_eq!(f.log("t").unwrap().since(last).unwrap().count(), 1);
    }

    #[test]
    fn epochs_differ_per_seed_and_expired_channels_go() {
        let t0 = crate::time::test_epoch();
        let mut a = Feeds::new(FeedsConfig::default(), 1);
        let mut b = Feeds::new(FeedsConfig::default(), 2);
        let pa = a.publish(t0, "x", Bytes::new()).unwrap().pos;
        let pb = b.publish(t0, "x", Bytes::new()).unwrap().pos;
        assert_ne!(pa.epoch, pb.epoch, "a restarted server must not reuse positions");
        assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        a.handle_timeout(t0 + Duration::from_secs(120));
        assert!(a.is_empty());
    }
}
