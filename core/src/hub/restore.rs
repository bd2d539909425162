//! [`Hub::restore`]: a channel whose log continues from a position an earlier process
//! persisted.

use super::{Hub, HubError};
use crate::replay::{Position, ReplayLog};

impl Hub {
    /// Creates `ch` with its log continuing after `last` (same epoch; the next publish is
    /// `last.offset + 1`), as an earlier process of this server left it. A client that was
    /// at `last` resumes exactly; one that was behind it gets `recovered: false` (the
    /// messages themselves were not persisted). Not with a bus (the bus numbers).
    ///
    /// # Errors
    /// [`HubError::BadChannel`], [`HubError::ChannelLimit`]; [`HubError::Unavailable`] with
    /// a bus, or when `ch` already exists (nothing is changed).
    pub fn restore(&mut self, ch: &str, last: Position) -> Result<(), HubError> {
        if self.bus.is_some() || self.channels.contains_key(ch) {
            return Err(HubError::Unavailable);
        }
        self.dropped.remove(ch);
        let key = self.channel_entry(ch)?;
        if let Some(c) = self.channels.get_mut(&key) {
            c.log = ReplayLog::continuing(last, self.cfg.log);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{AllowAll, HubConfig};
    use crate::replay::Epoch;

    #[test]
    fn a_restored_channel_continues_its_epoch() {
        let now = crate::time::test_epoch();
        let mut h = Hub::new(HubConfig::default(), AllowAll, 1);
        let last = Position { epoch: Epoch(77), offset: 41 };
        h.restore("ticks", last).unwrap();
        let raw = serde_json::value::RawValue::from_string("1".into()).unwrap();
        let next = h.publish(now, "ticks", &raw).unwrap();
        assert_eq!(next, Position { epoch: Epoch(77), offset: 42 });
        assert_eq!(h.restore("ticks", last), Err(HubError::Unavailable), "exists already");
        assert_eq!(h.restore("", last), Err(HubError::BadChannel));
    }
}
