//! The client side of permessage-deflate (RFC 7692) for `--deflate`, and the realistic
//! payloads (`--payload json|prose`) that compression needs to be measured on.
//!
//! Messages are raw DEFLATE with a sync flush whose `00 00 FF FF` tail is stripped (§7.2.1);
//! replies get it back before they are inflated (§7.2.2). flate2 on zlib-rs, level 3 (what
//! Tidewire's `DeflateConfig` uses by default).

use std::io::{self, ErrorKind};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The sync-flush tail stripped on send and appended on receive.
pub(crate) const TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];
/// The client's compression level.
const LEVEL: u32 = 3;

/// What `--deflate` offers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// `client_no_context_takeover; server_no_context_takeover`: both ends reset per
    /// message, so an idle connection needs no zlib state.
    NoContext,
    /// Plain `permessage-deflate`: both ends keep their state between messages.
    Context,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "no-context" | "no-context-takeover" => Ok(Self::NoContext),
            "context" | "context-takeover" => Ok(Self::Context),
            _ => Err(format!("--deflate {s}: expected no-context or context")),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NoContext => "no-context",
            Self::Context => "context",
        }
    }

    /// The `Sec-WebSocket-Extensions` offer.
    pub(crate) fn offer(self) -> &'static str {
        match self {
            Self::NoContext => {
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
            }
            Self::Context => "permessage-deflate",
        }
    }
}

/// What the server agreed to.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Agreed {
    /// The server resets its compressor per message: our inflater resets too.
    pub(crate) server_no_context_takeover: bool,
    /// We must reset our compressor per message.
    pub(crate) client_no_context_takeover: bool,
}

/// Parses the server's `Sec-WebSocket-Extensions` value (all such header lines joined with
/// `,`) against what `mode` offered. The answer must be exactly one permessage-deflate with
/// known parameters, no `client_max_window_bits` below 15 (we did not offer to limit our
/// window), and in no-context mode `server_no_context_takeover`.
pub(crate) fn parse_agreement(mode: Mode, value: Option<&str>) -> io::Result<Agreed> {
    let value = value.ok_or_else(|| invalid("the server did not accept permessage-deflate"))?;
    let mut exts = value.split(',').map(str::trim).filter(|e| !e.is_empty());
    let ext = exts.next().ok_or_else(|| invalid("empty Sec-WebSocket-Extensions"))?;
    if exts.next().is_some() {
        return Err(invalid(&format!("more than one extension accepted: {value}")));
    }
    let mut params = ext.split(';').map(str::trim);
    if !params.next().is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate")) {
        return Err(invalid(&format!("unexpected extension: {value}")));
    }
    let mut agreed = Agreed::default();
    for p in params {
        let (name, val) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => agreed.server_no_context_takeover = true,
            "client_no_context_takeover" => agreed.client_no_context_takeover = true,
            "server_max_window_bits" => {} // a smaller window inflates with ours
            "client_max_window_bits" => {
                if val.is_some_and(|v| v != "15") {
                    return Err(invalid(&format!("window limit we did not offer: {value}")));
                }
            }
            _ => return Err(invalid(&format!("unknown parameter in {value}"))),
        }
    }
    if mode == Mode::NoContext && !agreed.server_no_context_takeover {
        return Err(invalid(&format!("server_no_context_takeover was not agreed: {value}")));
    }
    Ok(agreed)
}

/// A connection's zlib states, created on its first message.
pub(crate) struct State {
    /// Created on the first send (no-context mode sends pre-compressed frames).
    compress: Option<Compress>,
    decompress: Decompress,
    /// Reset the compressor after each message.
    reset_compress: bool,
    /// Reset the inflater after each message.
    reset_decompress: bool,
    /// The last inflated reply.
    pub(crate) inflated: Vec<u8>,
}

impl State {
    pub(crate) fn new(mode: Mode, agreed: Agreed) -> Self {
        Self {
            compress: None,
            decompress: Decompress::new(false),
            reset_compress: mode == Mode::NoContext || agreed.client_no_context_takeover,
            reset_decompress: agreed.server_no_context_takeover,
            inflated: Vec::new(),
        }
    }

    /// Compresses one message onto `out` (tail stripped).
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let c = self.compress.get_or_insert_with(compressor);
        deflate_into(c, input, out)?;
        if self.reset_compress {
            c.reset();
        }
        Ok(())
    }

    /// Inflates one message (`input`, tail already appended) into [`State::inflated`];
    /// more than `limit` bytes is an error.
    pub(crate) fn inflate(&mut self, input: &[u8], limit: usize) -> io::Result<()> {
        let out = &mut self.inflated;
        out.clear();
        out.reserve(limit + 64);
        let start = self.decompress.total_in();
        loop {
            let used = (self.decompress.total_in() - start) as usize;
            if out.len() > limit {
                return Err(invalid("reply inflates to more than what was sent"));
            }
            if out.len() == out.capacity() {
                out.reserve(4096);
            }
            let before = (self.decompress.total_in(), out.len());
            let status = self
                .decompress
                .decompress_vec(&input[used..], out, FlushDecompress::Sync)
                .map_err(|e| invalid(&format!("reply does not inflate: {e}")))?;
            let used = (self.decompress.total_in() - start) as usize;
            if status == Status::StreamEnd {
                return Err(invalid("reply has a final DEFLATE block"));
            }
            if used == input.len() && out.len() < out.capacity() {
                break;
            }
            if (self.decompress.total_in(), out.len()) == before {
                return Err(invalid("inflating the reply made no progress"));
            }
        }
        if self.reset_decompress {
            self.decompress.reset(false);
        }
        Ok(())
    }
}

/// Raw DEFLATE of `input` with a sync flush, appended to `out`, the tail stripped.
pub(crate) fn deflate_into(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let start = c.total_in();
    let out_start = out.len();
    loop {
        let used = (c.total_in() - start) as usize;
        out.reserve(input.len() - used + 64);
        c.compress_vec(&input[used..], out, FlushCompress::Sync)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let used = (c.total_in() - start) as usize;
        // Done once every byte went in and the flush left room in the output.
        if used == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !out[out_start..].ends_with(&TAIL) {
        return Err(io::Error::other("deflate output does not end with the sync-flush tail"));
    }
    out.truncate(out.len() - TAIL.len());
    Ok(())
}

/// A fresh compressor as the client uses it (for pre-compressed no-context messages).
pub(crate) fn compressor() -> Compress {
    Compress::new(Compression::new(LEVEL), false)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.to_owned())
}

// ---------------------------------------------------------------- payloads

/// What the messages contain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Payload {
    /// `abc…xyzabc…` (the default; compresses to almost nothing).
    Letters,
    /// A chat message as JSON: fixed keys, varying ids, names and words.
    Json,
    /// English-like prose: words from a list of a few hundred, sentences, line breaks.
    Prose,
}

impl Payload {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "letters" => Ok(Self::Letters),
            "json" => Ok(Self::Json),
            "prose" | "text" => Ok(Self::Prose),
            _ => Err(format!("--payload {s}: expected letters, json or prose")),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Letters => "letters",
            Self::Json => "json",
            Self::Prose => "prose",
        }
    }

    /// Distinct messages of `size` bytes a connection cycles through: at least 16, and
    /// together at least four LZ77 windows (4 × 32 KiB, at most 1024 messages), so that
    /// with context takeover a message cannot simply point back at an identical one sent
    /// earlier on the same connection (it still finds the keys and words it shares with
    /// them, as real traffic does).
    pub(crate) fn variants(self, size: usize) -> usize {
        if self == Self::Letters { 1 } else { (4 * 32 * 1024 / size.max(1)).clamp(16, 1024) }
    }

    /// Message `k` of `size` bytes, ASCII (so valid UTF-8).
    pub(crate) fn make(self, size: usize, k: usize) -> Vec<u8> {
        let mut rng =
            Rng(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let out = match self {
            Self::Letters => (0..size).map(|i| b'a' + (i % 26) as u8).collect(),
            Self::Json => json(size, k, &mut rng),
            Self::Prose => prose(size, &mut rng),
        };
        debug_assert_eq!(out.len(), size);
        out
    }
}

const NAMES: [&str; 16] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil",
];
const ROOMS: [&str; 4] = ["general", "random", "support", "dev-ops"];
const WORDS: [&str; 96] = [
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like",
    "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no",
    "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "deploy",
    "server", "latency", "meeting", "tomorrow", "release", "build", "ticket", "review", "lunch",
    "thanks",
];

/// A chat message of exactly `size` bytes: `{"type":"message",...,"text":"…"}`.
fn json(size: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let head = format!(
        "{{\"type\":\"message\",\"room\":\"{}\",\"id\":\"m{:08}\",\"ts\":{},\"user\":{{\"id\":{},\"name\":\"{}\"}},\"text\":\"",
        ROOMS[rng.below(ROOMS.len())],
        1_000_000 + k * 7919 + rng.below(1000),
        1_765_090_000_000u64 + rng.next() % 86_400_000,
        1000 + rng.below(9000),
        NAMES[rng.below(NAMES.len())],
    );
    let tail = "\"}";
    let mut out = head.into_bytes();
    if out.len() + tail.len() > size {
        // Too small for the skeleton: letters, still a JSON string.
        return prose(size, rng);
    }
    let room = size - out.len() - tail.len();
    out.extend(words(room, rng, false));
    out.extend_from_slice(tail.as_bytes());
    out
}

fn prose(size: usize, rng: &mut Rng) -> Vec<u8> {
    words(size, rng, true)
}

/// Exactly `n` bytes of words; sentences capitalised and, with `lines`, line breaks.
fn words(n: usize, rng: &mut Rng, lines: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    let mut sentence_start = true;
    while out.len() < n {
        let w = WORDS[rng.below(WORDS.len())].as_bytes();
        if !out.is_empty() {
            out.push(b' ');
        }
        let at = out.len();
        out.extend_from_slice(w);
        if sentence_start {
            out[at] = out[at].to_ascii_uppercase();
            sentence_start = false;
        }
        match rng.below(16) {
            0 | 1 => {
                out.push(b'.');
                sentence_start = true;
                if lines && rng.below(4) == 0 {
                    out.push(b'\n');
                }
            }
            2 => out.push(b','),
            _ => {}
        }
    }
    out.truncate(n);
    if let Some(b) = out.last_mut()
        && (*b == b' ' || *b == b'\n')
    {
        *b = b'.';
    }
    out
}

/// xorshift64* for the payloads: deterministic per variant.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_and_are_ascii() {
        for p in [Payload::Letters, Payload::Json, Payload::Prose] {
            for size in [0, 1, 20, 200, 1024, 16384] {
                for k in 0..p.variants(size) {
                    let m = p.make(size, k);
                    assert_eq!(m.len(), size, "{p:?} {size}");
                    assert!(m.is_ascii());
                }
            }
        }
        let m = Payload::Json.make(200, 3);
        assert!(m.starts_with(b"{\"type\":\"message\"") && m.ends_with(b"\"}"));
        assert_ne!(Payload::Json.make(200, 1), Payload::Json.make(200, 2));
    }

    #[test]
    fn compress_and_inflate_round_trip_in_both_modes() {
        for mode in [Mode::NoContext, Mode::Context] {
            let agreed = Agreed {
                server_no_context_takeover: mode == Mode::NoContext,
                client_no_context_takeover: mode == Mode::NoContext,
            };
            // One side compresses (as a server would), the other inflates.
            let mut tx = State::new(mode, agreed);
            let mut rx = State::new(mode, agreed);
            for k in 0..20 {
                let msg = Payload::Prose.make(if k % 2 == 0 { 200 } else { 16384 }, k % 16);
                let mut wire = Vec::new();
                tx.compress(&msg, &mut wire).unwrap();
                assert!(wire.len() < msg.len());
                wire.extend_from_slice(&TAIL);
                rx.inflate(&wire, msg.len()).unwrap();
                assert_eq!(rx.inflated, msg);
            }
        }
    }

    #[test]
    fn agreement_is_checked() {
        let nc = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let a = parse_agreement(Mode::NoContext, Some(nc)).unwrap();
        assert!(a.server_no_context_takeover && a.client_no_context_takeover);
        assert!(parse_agreement(Mode::NoContext, Some("permessage-deflate")).is_err());
        assert!(parse_agreement(Mode::Context, None).is_err());
        assert!(parse_agreement(Mode::Context, Some("permessage-deflate; x=1")).is_err());
        assert!(
            parse_agreement(Mode::Context, Some("permessage-deflate; client_max_window_bits=10"))
                .is_err()
        );
        let a = parse_agreement(Mode::Context, Some("permessage-deflate")).unwrap();
        assert!(!a.server_no_context_takeover);
    }
}
