//! The two Lua scripts that make Redis the one owner of each channel's offsets, the
//! commands that run them, and the parsing of their replies.
//!
//! Scripts are sent with `EVALSHA` (the SHA-1 is computed here); a `NOSCRIPT` reply (a
//! restarted or flushed server) makes the machine send the same call again with `EVAL`,
//! which also caches the script for the next `EVALSHA`.

use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::resp::{Reply, encode_command};
use crate::hub::BusHistory;
use crate::replay::{Epoch, Position};

/// Appends a message to a channel's log (see the [module docs](super) for the layout).
///
/// `KEYS`: meta, log\[, dedup\]. `ARGV`: proposed epoch, data, log_max, pub/sub channel,
/// dedup TTL in seconds. Returns `"EPOCH:OFFSET"`.
///
/// A meta hash that has to be created starts a new epoch and drops any stale stream. An
/// `XADD` that fails (a stream whose last ID is ahead of the meta's offset: the two were
/// restored or edited apart) also starts a new epoch, at offset 1, on an emptied stream,
/// so offsets and IDs always agree.
pub(super) const PUBLISH_LUA: &str = r"
local meta, log, dedup = KEYS[1], KEYS[2], KEYS[3]
if dedup then
  local seen = redis.call('GET', dedup)
  if seen then return seen end
end
if redis.call('HSETNX', meta, 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', meta, 'off', '0')
  redis.call('DEL', log)
end
local off = redis.call('HINCRBY', meta, 'off', 1)
local r = redis.pcall('XADD', log, 'MAXLEN', '~', ARGV[3], off .. '-0', 'd', ARGV[2])
if type(r) == 'table' and r.err then
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', ARGV[1], 'off', '1')
  off = 1
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[3], '1-0', 'd', ARGV[2])
end
local pos = redis.call('HGET', meta, 'epoch') .. ':' .. off
redis.call('PUBLISH', ARGV[4], pos .. ' ' .. ARGV[2])
if dedup then redis.call('SET', dedup, pos, 'EX', ARGV[5]) end
return pos
";

/// Loads a channel's epoch, head and retained history.
///
/// `KEYS`: meta, log. `ARGV`: proposed epoch, count, the first stream ID wanted (`""`:
/// the newest `count`), the offset after which entries are wanted and its epoch (`""`
/// likewise). Returns `{epoch, off, {offset, data, offset, data, …}}`, oldest first. When
/// more than `count` entries follow `after`, or `after` is of another epoch than the
/// channel's, the newest `count` are returned instead (the hub keeps no more, and starts
/// over from the oldest it gets). When the channel's offset in `after`'s epoch is behind
/// `after` (the data was restored from an older snapshot), the channel starts a new epoch
/// (the proposed one) on an emptied stream. A meta hash that has to be created
/// starts a new epoch and drops any stale stream; a stream that is gone while its meta
/// stays gives an empty history at the meta's head (the hub treats what it misses as
/// trimmed).
pub(super) const HISTORY_LUA: &str = r"
local meta, log = KEYS[1], KEYS[2]
if redis.call('HSETNX', meta, 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', meta, 'off', '0')
  redis.call('DEL', log)
end
local epoch = redis.call('HGET', meta, 'epoch')
local off = redis.call('HGET', meta, 'off') or '0'
if ARGV[5] ~= '' and epoch == ARGV[5] and tonumber(off) < tonumber(ARGV[4]) then
  -- Behind what a hub saw in this epoch: the data went back in time (an older
  -- snapshot). Its next offsets were handed out already: start a new epoch.
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', ARGV[1], 'off', '0')
  epoch, off = ARGV[1], '0'
end
local n = tonumber(ARGV[2])
local entries
if ARGV[3] ~= '' and epoch == ARGV[5] and tonumber(off) - tonumber(ARGV[4]) <= n then
  entries = redis.call('XRANGE', log, ARGV[3], '+', 'COUNT', n)
else
  local rev = redis.call('XREVRANGE', log, '+', '-', 'COUNT', n)
  entries = {}
  for i = #rev, 1, -1 do entries[#entries + 1] = rev[i] end
end
local out = {}
for _, e in ipairs(entries) do
  local fields = e[2]
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'd' then
      out[#out + 1] = string.match(e[1], '^(%d+)-')
      out[#out + 1] = fields[j + 1]
      break
    end
  end
end
return {epoch, off, out}
";

/// Which script a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScriptKind {
    /// [`PUBLISH_LUA`].
    Publish,
    /// [`HISTORY_LUA`].
    History,
}

impl ScriptKind {
    /// The script's text.
    pub(super) fn body(self) -> &'static str {
        match self {
            Self::Publish => PUBLISH_LUA,
            Self::History => HISTORY_LUA,
        }
    }

    /// The index of the script in per-script tables.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The lowercase hex SHA-1 of a script, as `EVALSHA` wants it.
pub(super) fn sha1_hex(body: &str) -> String {
    let digest = Sha1::digest(body.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes `EVALSHA sha …` (or `EVAL body …` when `eval`) with `keys` and `args`.
pub(super) fn call(
    kind: ScriptKind,
    sha: &str,
    eval: bool,
    keys: &[&[u8]],
    args: &[&[u8]],
) -> Bytes {
    let numkeys = keys.len().to_string();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
    if eval {
        parts.push(b"EVAL");
        parts.push(kind.body().as_bytes());
    } else {
        parts.push(b"EVALSHA");
        parts.push(sha.as_bytes());
    }
    parts.push(numkeys.as_bytes());
    parts.extend_from_slice(keys);
    parts.extend_from_slice(args);
    let mut out = Vec::new();
    encode_command(&mut out, &parts);
    Bytes::from(out)
}

/// Whether an error reply says the script is not cached.
pub(super) fn is_noscript(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with(b"NOSCRIPT"))
}

/// The position [`PUBLISH_LUA`] returned.
pub(super) fn parse_position(reply: &Reply) -> Option<Position> {
    reply.as_str()?.parse().ok()
}

/// The history [`HISTORY_LUA`] returned.
pub(super) fn parse_history(reply: &Reply) -> Option<BusHistory> {
    let Reply::Array(items) = reply else { return None };
    let [epoch, off, entries] = items.as_slice() else { return None };
    let epoch: Epoch = epoch.as_str()?.parse().ok()?;
    let head: u64 = off.as_str()?.parse().ok()?;
    let Reply::Array(entries) = entries else { return None };
    if entries.len() % 2 != 0 {
        return None;
    }
    let mut out: Vec<(u64, Bytes)> = Vec::with_capacity(entries.len() / 2);
    for pair in entries.chunks_exact(2) {
        let offset: u64 = pair[0].as_str()?.parse().ok()?;
        let data = pair[1].as_bytes()?.clone();
        // Offsets must rise and stay within the head: anything else is not a coherent log.
        if offset == 0 || offset > head || out.last().is_some_and(|l| l.0 >= offset) {
            return None;
        }
        out.push((offset, data));
    }
    Some(BusHistory { epoch, head, entries: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn sha_is_hex_sha1() {
        assert_eq!(sha1_hex("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn parses_replies() {
        assert_eq!(parse_position(&bulk("a1:7")), Some(Position { epoch: Epoch(0xa1), offset: 7 }));
        assert_eq!(parse_position(&bulk("nope")), None);
        assert_eq!(parse_position(&Reply::Int(1)), None);
        let h = Reply::Array(vec![
            bulk("ff"),
            bulk("3"),
            Reply::Array(vec![bulk("2"), bulk("{\"a\":1}"), bulk("3"), bulk("2")]),
        ]);
        assert_eq!(
            parse_history(&h),
            Some(BusHistory {
                epoch: Epoch(0xff),
                head: 3,
                entries: vec![(2, Bytes::from_static(b"{\"a\":1}")), (3, Bytes::from_static(b"2"))],
            })
        );
        let beyond =
            Reply::Array(vec![bulk("ff"), bulk("1"), Reply::Array(vec![bulk("2"), bulk("x")])]);
        assert_eq!(parse_history(&beyond), None);
        let unordered = Reply::Array(vec![
            bulk("ff"),
            bulk("5"),
            Reply::Array(vec![bulk("3"), bulk("x"), bulk("2"), bulk("y")]),
        ]);
        assert_eq!(parse_history(&unordered), None);
        assert_eq!(
            parse_history(&Reply::Array(vec![bulk("zz"), bulk("0"), Reply::Array(vec![])])),
            None
        );
        assert!(is_noscript(&Reply::Error(Bytes::from_static(b"NOSCRIPT No matching script."))));
    }
}
