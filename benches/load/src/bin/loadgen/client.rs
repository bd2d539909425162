//! One client WebSocket connection driven by readiness events: the opening handshake, then
//! masked data frames out and the server's echoes in, validated byte for byte.
//!
//! The framing is hand-written and minimal (RFC 6455 §5.2): every connection sends the same
//! pre-encoded masked frame ([`Workload::frame`]); replies are decoded in place from the
//! event loop's shared read buffer, so a connection holds no payload buffer of its own.
//!
//! With `--deflate` the connection offers permessage-deflate (RFC 7692, [`crate::deflate`]):
//! what it sends is compressed (in no-context mode once per message variant, shared like the
//! plain frames; with context takeover by the connection's own compressor, per send), and
//! compressed replies are gathered, inflated and compared with what was sent.
//!
//! Hub mode ([`Workload::hub`]) speaks Tidewire's envelope protocol instead: each connection
//! subscribes to its own channel, then publishes on it with one `pub` in flight and waits
//! for both the `ack` and the `msg` carrying the data. Those frames differ per connection
//! (channel, `ref`), so each is encoded into the connection's own buffer, and replies are
//! gathered into a message buffer and checked loosely (op, channel, ref, exact data).

use std::io::{self, ErrorKind, Read, Write};

use mio::net::TcpStream;

use crate::deflate::{self, Agreed, Mode, Payload};

/// GUID of RFC 6455 §1.3 for `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest handshake response accepted.
const MAX_RESPONSE: usize = 8 * 1024;
/// Longest hub message accepted.
const MAX_HUB_MESSAGE: usize = 1 << 20;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// RSV1 in a frame's first byte: the message is compressed (RFC 7692 §6).
const RSV1: u8 = 0x40;

/// The messages every connection sends, encoded once.
pub(crate) struct Workload {
    /// Hub mode: the JSON value published (the `data` of each `pub`); echo mode: the first
    /// of `payloads`.
    payload: Vec<u8>,
    /// Echo mode: the messages, each connection cycling through them in turn.
    payloads: Vec<Vec<u8>>,
    /// Opcode of the data frames (text or binary).
    opcode: u8,
    /// Each of `payloads` as one complete masked frame, compressed in no-context mode (echo
    /// mode; empty in hub mode and with context takeover, where every connection compresses
    /// its own).
    frames: Vec<Vec<u8>>,
    mask: [u8; 4],
    /// Hub mode: `payload` is the JSON value published (the `data` of each `pub`).
    hub: bool,
    /// permessage-deflate offered.
    pub(crate) deflate: Option<Mode>,
}

impl Workload {
    /// Messages of `size` bytes of ASCII (valid UTF-8, so they also work as text) masked
    /// with `mask`; `payload.variants()` of them. JSON and prose go as text frames.
    pub(crate) fn new(
        size: usize,
        text: bool,
        payload: Payload,
        deflate: Option<Mode>,
        mask: [u8; 4],
    ) -> io::Result<Self> {
        let payloads: Vec<Vec<u8>> =
            (0..payload.variants(size)).map(|k| payload.make(size, k)).collect();
        let opcode = if text || payload != Payload::Letters { OP_TEXT } else { OP_BINARY };
        let mut frames = Vec::new();
        match deflate {
            None => {
                for p in &payloads {
                    let mut frame = Vec::with_capacity(size + 14);
                    encode_masked(&mut frame, opcode, p, mask);
                    frames.push(frame);
                }
            }
            // Without context each message compresses the same every time: once here.
            Some(Mode::NoContext) => {
                for p in &payloads {
                    let mut body = Vec::new();
                    deflate::deflate_into(&mut deflate::compressor(), p, &mut body)?;
                    let mut frame = Vec::with_capacity(body.len() + 14);
                    encode_masked(&mut frame, opcode | RSV1, &body, mask);
                    frames.push(frame);
                }
            }
            Some(Mode::Context) => {}
        }
        let first = payloads[0].clone();
        Ok(Self { payload: first, payloads, opcode, frames, mask, hub: false, deflate })
    }

    /// Bytes on the wire of the frames sent per message, over the raw bytes (no-context
    /// mode and no compression; `None` with context takeover, where it varies).
    pub(crate) fn tx_ratio(&self) -> Option<f64> {
        if self.frames.is_empty() {
            return None;
        }
        let wire: usize = self.frames.iter().map(|f| f.len()).sum();
        let raw: usize = self.payloads.iter().map(|p| p.len()).sum();
        Some(wire as f64 / raw.max(1) as f64)
    }

    pub(crate) fn variants(&self) -> usize {
        self.payloads.len()
    }

    /// Hub mode: the published data is a JSON string of `size` bytes, quotes included (at
    /// least 2), of ASCII letters, so any server writes it back byte for byte.
    pub(crate) fn hub(size: usize, mask: [u8; 4]) -> Self {
        let inner = size.saturating_sub(2);
        let mut payload = Vec::with_capacity(inner + 2);
        payload.push(b'"');
        payload.extend((0..inner).map(|i| b'a' + (i % 26) as u8));
        payload.push(b'"');
        Self {
            payloads: vec![payload.clone()],
            payload,
            opcode: OP_TEXT,
            frames: Vec::new(),
            mask,
            hub: true,
            deflate: None,
        }
    }
}

/// Appends one final, masked frame (client to server, RFC 6455 §5.3); `opcode` may carry
/// [`RSV1`].
fn encode_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// What one call to [`Conn::drive`] achieved.
#[derive(Default)]
pub(crate) struct Progress {
    /// The opening handshake completed.
    pub(crate) opened: bool,
    /// Echoes received complete and correct (hub mode: round trips, the `ack` and the
    /// `msg` of one `pub`).
    pub(crate) echoes: u32,
}

/// A hub connection's protocol state (hub mode).
struct HubState {
    /// `chat:lgN`.
    ch: String,
    /// `"ch":"chat:lgN"` as it appears in the server's messages.
    ch_field: Vec<u8>,
    /// The frame being sent (`sub`, then each `pub`), masked.
    out: Vec<u8>,
    /// `ref` of the `pub` in flight (0: none yet).
    reference: u64,
    subscribed: bool,
    in_flight: bool,
    acked: bool,
    delivered: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// TCP connect in progress.
    Connecting,
    /// Request written (or being written), waiting for the 101.
    Handshake,
    Open,
}

/// A client connection. The caller owns the event loop and the read buffer.
pub(crate) struct Conn {
    stream: TcpStream,
    state: State,
    /// Handshake request while it is being written; empty afterwards.
    request: Vec<u8>,
    /// Expected `Sec-WebSocket-Accept`.
    accept: String,
    /// Handshake response read so far; empty afterwards.
    response: Vec<u8>,
    /// Bytes of the data frame already written; `None` when no frame is being sent.
    frame_pos: Option<usize>,
    /// Control replies (pongs) waiting behind the data frame.
    control_out: Vec<u8>,
    /// Send the next message when an echo completes.
    pub(crate) keep_sending: bool,
    decoder: Decoder,
    /// Hub mode: the envelope protocol's state.
    hub: Option<HubState>,
    /// Echo mode: index of the message in flight (or next) in [`Workload::payloads`].
    variant: usize,
    /// What the server agreed to for permessage-deflate (when offered).
    agreed: Option<Agreed>,
    /// Context takeover: zlib states, created with the first message and dropped by
    /// [`Conn::drop_deflate_state`]; no-context mode: only the inflater's.
    zstate: Option<Box<deflate::State>>,
    /// Context takeover: the frame being sent, compressed by this connection.
    out: Vec<u8>,
    /// Bytes of the echoes received (after inflating).
    rx_raw: u64,
}

impl Conn {
    /// Wraps a socket whose non-blocking connect was started; `key` is the
    /// `Sec-WebSocket-Key` (base64 of 16 random bytes). `hub_channel`: hub mode, with this
    /// channel (the connection counts as opened once subscribed to it).
    pub(crate) fn new(
        stream: TcpStream,
        host: &str,
        path: &str,
        key: &str,
        hub_channel: Option<String>,
        deflate: Option<Mode>,
        variant: usize,
    ) -> Self {
        let extensions = deflate
            .map_or(String::new(), |m| format!("Sec-WebSocket-Extensions: {}\r\n", m.offer()));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
        )
        .into_bytes();
        let accept = base64(&sha1_smol::Sha1::from(format!("{key}{WS_GUID}")).digest().bytes());
        Self {
            stream,
            state: State::Connecting,
            request,
            accept,
            response: Vec::new(),
            frame_pos: None,
            control_out: Vec::new(),
            keep_sending: false,
            decoder: Decoder::default(),
            hub: hub_channel.map(|ch| HubState {
                ch_field: format!("\"ch\":\"{ch}\"").into_bytes(),
                ch,
                out: Vec::new(),
                reference: 0,
                subscribed: false,
                in_flight: false,
                acked: false,
                delivered: false,
            }),
            variant,
            agreed: None,
            zstate: None,
            out: Vec::new(),
            rx_raw: 0,
        }
    }

    /// Payload bytes of data frames received (as on the wire) and of the echoes they carried.
    pub(crate) fn rx_bytes(&self) -> (u64, u64) {
        (self.decoder.wire, self.rx_raw)
    }

    /// Frees this connection's zlib states (idle mode, once primed: what stays on the
    /// server is measured, not what the client holds).
    pub(crate) fn drop_deflate_state(&mut self) {
        self.zstate = None;
        self.out = Vec::new();
    }

    fn zstate(&mut self, w: &Workload) -> io::Result<&mut deflate::State> {
        let (Some(mode), Some(agreed)) = (w.deflate, self.agreed) else {
            return Err(invalid("compressed frame without permessage-deflate agreed"));
        };
        Ok(self.zstate.get_or_insert_with(|| Box::new(deflate::State::new(mode, agreed))))
    }

    /// Echo mode: sends the current variant (context takeover: compressed now).
    fn send_echo(&mut self, w: &Workload) -> io::Result<()> {
        self.decoder.expect = self.variant;
        if w.deflate == Some(Mode::Context) {
            let variant = self.variant;
            let mut body = std::mem::take(&mut self.out);
            body.clear();
            self.zstate(w)?.compress(&w.payloads[variant], &mut body)?;
            let mut frame = Vec::with_capacity(body.len() + 14);
            encode_masked(&mut frame, w.opcode | RSV1, &body, w.mask);
            self.out = frame;
        }
        self.frame_pos = Some(0);
        self.flush(w)
    }

    /// An echo completed: counts it, moves to the next variant, sends it when asked to.
    fn on_echo(&mut self, w: &Workload, progress: &mut Progress) -> io::Result<()> {
        progress.echoes += 1;
        if self.frame_pos.is_some() {
            return Err(invalid("echo complete before the message was sent"));
        }
        self.rx_raw += w.payloads[self.variant].len() as u64;
        self.variant = (self.variant + 1) % w.variants();
        if self.keep_sending {
            self.send_echo(w)?;
        }
        Ok(())
    }

    /// Queues one message; the connection must be open with nothing in flight.
    pub(crate) fn start_send(&mut self, w: &Workload) -> io::Result<()> {
        debug_assert!(self.state == State::Open && self.frame_pos.is_none());
        if let Some(h) = &mut self.hub {
            debug_assert!(h.subscribed && !h.in_flight);
            h.reference += 1;
            let mut text = Vec::with_capacity(w.payload.len() + h.ch.len() + 48);
            text.extend_from_slice(b"{\"op\":\"pub\",\"ch\":\"");
            text.extend_from_slice(h.ch.as_bytes());
            text.extend_from_slice(b"\",\"data\":");
            text.extend_from_slice(&w.payload);
            text.extend_from_slice(format!(",\"ref\":{}}}", h.reference).as_bytes());
            h.out.clear();
            encode_masked(&mut h.out, OP_TEXT, &text, w.mask);
            h.in_flight = true;
            h.acked = false;
            h.delivered = false;
        } else {
            return self.send_echo(w);
        }
        self.frame_pos = Some(0);
        self.flush(w)
    }

    /// Handles a readiness event: finishes the connect, writes what is pending, and when
    /// `readable` reads and decodes until the socket has nothing more. Errors end the
    /// benchmark.
    pub(crate) fn drive(
        &mut self,
        w: &Workload,
        rbuf: &mut [u8],
        readable: bool,
    ) -> io::Result<Progress> {
        let mut progress = Progress::default();
        if self.state == State::Connecting {
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(progress),
                Err(e) => return Err(e),
            }
            self.stream.set_nodelay(true)?;
            self.state = State::Handshake;
        }
        self.flush(w)?;
        // A writable-only event (the peer acknowledged data) reads nothing: no syscall.
        if !readable {
            return Ok(progress);
        }
        loop {
            let n = match self.stream.read(rbuf) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "server closed")),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.on_bytes(w, &rbuf[..n], &mut progress)?;
            // A short read drained the socket: with edge-triggered readiness the next
            // arrival raises a new event, so the extra read that would say WouldBlock is
            // skipped (one syscall less per message).
            if n < rbuf.len() {
                break;
            }
        }
        Ok(progress)
    }

    fn on_bytes(
        &mut self,
        w: &Workload,
        mut data: &[u8],
        progress: &mut Progress,
    ) -> io::Result<()> {
        if self.state == State::Handshake {
            let start = self.response.len().saturating_sub(3);
            self.response.extend_from_slice(data);
            let Some(end) = find(&self.response[start..], b"\r\n\r\n").map(|i| start + i + 4)
            else {
                if self.response.len() > MAX_RESPONSE {
                    return Err(invalid("handshake response too long"));
                }
                return Ok(());
            };
            self.agreed = self.check_response(&self.response[..end], w.deflate)?;
            self.decoder.deflate = self.agreed.is_some();
            // Bytes after the response are frames already.
            let rest = data.len() - (self.response.len() - end);
            data = &data[rest..];
            self.response = Vec::new();
            self.state = State::Open;
            match &mut self.hub {
                // Opened once subscribed.
                Some(h) => {
                    let sub = format!("{{\"op\":\"sub\",\"ch\":\"{}\"}}", h.ch);
                    h.out.clear();
                    encode_masked(&mut h.out, OP_TEXT, sub.as_bytes(), w.mask);
                    self.frame_pos = Some(0);
                    self.flush(w)?;
                }
                None => progress.opened = true,
            }
        }
        while !data.is_empty() {
            match self.decoder.decode(&mut data, w)? {
                None => {}
                Some(Decoded::Echo) => self.on_echo(w, progress)?,
                Some(Decoded::Compressed) => {
                    let expected = &w.payloads[self.variant];
                    let mut message = std::mem::take(&mut self.decoder.message);
                    message.extend_from_slice(&deflate::TAIL);
                    let state = self.zstate(w)?;
                    let inflated = state.inflate(&message, expected.len());
                    let same = inflated.is_ok() && state.inflated == *expected;
                    self.decoder.message = message;
                    inflated?;
                    if !same {
                        return Err(invalid("inflated echo differs from what was sent"));
                    }
                    self.on_echo(w, progress)?;
                }
                Some(Decoded::Message) => {
                    let (opened, done) = self.on_envelope(w)?;
                    progress.opened |= opened;
                    if done {
                        progress.echoes += 1;
                        if self.frame_pos.is_some() {
                            return Err(invalid("reply complete before the pub was sent"));
                        }
                        if self.keep_sending {
                            self.start_send(w)?;
                        }
                    }
                }
                Some(Decoded::Ping) => {
                    encode_masked(&mut self.control_out, OP_PONG, &self.decoder.control, w.mask);
                    self.flush(w)?;
                }
                Some(Decoded::Close) => return Err(invalid("server sent a close frame")),
            }
        }
        Ok(())
    }

    /// Checks one hub message ([`Decoder::message`]); returns (subscribed now, round trip
    /// complete now).
    fn on_envelope(&mut self, w: &Workload) -> io::Result<(bool, bool)> {
        let h = self.hub.as_mut().ok_or_else(|| invalid("hub message in echo mode"))?;
        let m = &self.decoder.message[..];
        let rest = m.strip_prefix(b"{\"op\":\"").ok_or_else(|| bad_envelope("no op", m))?;
        let op = &rest[..find(rest, b"\"").ok_or_else(|| bad_envelope("no op", m))?];
        match op {
            b"subscribed" => {
                if h.subscribed || find(m, &h.ch_field).is_none() {
                    return Err(bad_envelope("unexpected subscribed", m));
                }
                h.subscribed = true;
                Ok((true, false))
            }
            b"ack" => {
                let expected = format!("\"ref\":{}", h.reference);
                let at = find(m, expected.as_bytes()).map(|i| i + expected.len());
                let ends = at.and_then(|i| m.get(i)).is_some_and(|&b| b == b',' || b == b'}');
                if !h.in_flight || h.acked || !ends {
                    return Err(bad_envelope(
                        &format!("ack is not the one of ref {}", h.reference),
                        m,
                    ));
                }
                h.acked = true;
                Ok((false, h.delivered && complete(h)))
            }
            b"msg" => {
                let data = find(m, b"\"data\":").map(|i| &m[i + 7..]);
                let exact = data.is_some_and(|d| {
                    d.starts_with(&w.payload) && matches!(d.get(w.payload.len()), Some(b',' | b'}'))
                });
                if !h.in_flight || h.delivered || find(m, &h.ch_field).is_none() || !exact {
                    return Err(bad_envelope("unexpected msg", m));
                }
                h.delivered = true;
                Ok((false, h.acked && complete(h)))
            }
            // Presence of the connection's own user; pongs of pings it never sends.
            b"presence" | b"pong" => Ok((false, false)),
            _ => Err(bad_envelope("server said", m)),
        }
    }

    /// Checks the 101; returns what was agreed for permessage-deflate when `deflate` offered it.
    fn check_response(&self, head: &[u8], deflate: Option<Mode>) -> io::Result<Option<Agreed>> {
        let head =
            std::str::from_utf8(head).map_err(|_| invalid("handshake response not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(invalid(&format!("handshake refused: {status}")));
        }
        let headers: Vec<(&str, &str)> =
            lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim(), v.trim())).collect();
        let accept = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| *v);
        if accept != Some(self.accept.as_str()) {
            return Err(invalid("wrong or missing Sec-WebSocket-Accept"));
        }
        let extensions: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, v)| *v)
            .collect();
        match deflate {
            None if extensions.is_empty() => Ok(None),
            None => Err(invalid("the server accepted an extension that was not offered")),
            Some(mode) => {
                let joined = extensions.join(", ");
                let value = (!extensions.is_empty()).then_some(joined.as_str());
                deflate::parse_agreement(mode, value).map(Some)
            }
        }
    }

    /// Writes the request, the data frame, then control replies, until done or the socket
    /// is full (a later writable event resumes).
    fn flush(&mut self, w: &Workload) -> io::Result<()> {
        if self.state == State::Connecting {
            return Ok(());
        }
        if !self.request.is_empty() {
            let n = write_some(&mut self.stream, &self.request)?;
            self.request.drain(..n);
            if !self.request.is_empty() {
                return Ok(());
            }
        }
        if let Some(pos) = self.frame_pos {
            let frame = match &self.hub {
                Some(h) => &h.out[..],
                None if w.deflate == Some(Mode::Context) => &self.out[..],
                None => &w.frames[self.variant][..],
            };
            let pos = pos + write_some(&mut self.stream, &frame[pos..])?;
            if pos < frame.len() {
                self.frame_pos = Some(pos);
                return Ok(());
            }
            self.frame_pos = None;
        }
        if !self.control_out.is_empty() {
            let n = write_some(&mut self.stream, &self.control_out)?;
            self.control_out.drain(..n);
        }
        Ok(())
    }
}

/// Ends the round trip in flight.
fn complete(h: &mut HubState) -> bool {
    h.in_flight = false;
    true
}

fn bad_envelope(what: &str, m: &[u8]) -> io::Error {
    let shown = String::from_utf8_lossy(&m[..m.len().min(200)]).into_owned();
    invalid(&format!("hub: {what}: {shown}"))
}

/// Writes as much of `buf` as the socket takes; 0 when it is full.
fn write_some(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

enum Decoded {
    /// A whole echo arrived and matches what was sent.
    Echo,
    /// Hub mode: a whole text message, in [`Decoder::message`].
    Message,
    /// A whole compressed message, in [`Decoder::message`] (without the tail).
    Compressed,
    /// A ping; its payload is in [`Decoder::control`].
    Ping,
    Close,
}

/// Resumable decoder of server frames (unmasked), checking each data byte against the
/// expected payload as it arrives.
#[derive(Default)]
struct Decoder {
    header: [u8; 14],
    have: usize,
    /// Header length once known (2 until the second byte is in).
    need: usize,
    /// Payload bytes left in the current frame; `None` while reading a header.
    left: Option<usize>,
    opcode: u8,
    fin: bool,
    /// A data message is open (its first frame was seen, its final one not yet).
    in_message: bool,
    /// Data payload bytes of the open message so far.
    received: usize,
    /// Payload of the current control frame.
    control: Vec<u8>,
    /// Hub mode, and compressed messages: the open (or just completed) data message.
    message: Vec<u8>,
    /// permessage-deflate was agreed: RSV1 may mark a message as compressed.
    deflate: bool,
    /// The open message is compressed (RSV1 on its first frame).
    compressed: bool,
    /// Echo mode: the expected message, an index in [`Workload::payloads`].
    expect: usize,
    /// Data payload bytes received (as on the wire).
    wire: u64,
}

impl Decoder {
    /// Consumes bytes from the front of `data`; returns when a frame ends or `data` is used
    /// up.
    fn decode(&mut self, data: &mut &[u8], w: &Workload) -> io::Result<Option<Decoded>> {
        let left = match self.left {
            Some(left) => left,
            None => {
                if self.need == 0 {
                    self.need = 2;
                }
                let take = (self.need - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                *data = &data[take..];
                if self.have == 2 {
                    if self.header[1] & 0x80 != 0 {
                        return Err(invalid("server frame is masked"));
                    }
                    self.need = match self.header[1] & 0x7F {
                        126 => 4,
                        127 => 10,
                        _ => 2,
                    };
                }
                if self.have < self.need {
                    return Ok(None);
                }
                let len = self.start_frame(w)?;
                self.have = 0;
                self.need = 2;
                self.left = Some(len);
                len
            }
        };
        let take = left.min(data.len());
        let (chunk, rest) = data.split_at(take);
        *data = rest;
        if self.opcode >= OP_CLOSE {
            self.control.extend_from_slice(chunk);
        } else if w.hub || self.compressed {
            self.wire += take as u64;
            self.message.extend_from_slice(chunk);
        } else {
            self.wire += take as u64;
            let expected = &w.payloads[self.expect][self.received..self.received + take];
            if chunk != expected {
                return Err(invalid("echo payload differs from what was sent"));
            }
            self.received += take;
        }
        if take < left {
            self.left = Some(left - take);
            return Ok(None);
        }
        self.left = None;
        Ok(match self.opcode {
            OP_PING => Some(Decoded::Ping),
            OP_PONG => None,
            OP_CLOSE => Some(Decoded::Close),
            _ if !self.fin => None,
            _ if w.hub => {
                self.in_message = false;
                Some(Decoded::Message)
            }
            _ if self.compressed => {
                self.in_message = false;
                self.compressed = false;
                Some(Decoded::Compressed)
            }
            _ => {
                if self.received != w.payloads[self.expect].len() {
                    return Err(invalid("echo shorter than what was sent"));
                }
                self.in_message = false;
                Some(Decoded::Echo)
            }
        })
    }

    /// Checks a complete header; returns the payload length.
    fn start_frame(&mut self, w: &Workload) -> io::Result<usize> {
        let h = &self.header;
        let len = match h[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        };
        let rsv1 = h[0] & RSV1 != 0;
        if h[0] & 0x30 != 0 || (rsv1 && !self.deflate) {
            return Err(invalid("reserved bits set (no extension was negotiated for them)"));
        }
        self.fin = h[0] & 0x80 != 0;
        self.opcode = h[0] & 0x0F;
        if rsv1 && !matches!(self.opcode, OP_TEXT | OP_BINARY) {
            return Err(invalid("RSV1 on a control or continuation frame"));
        }
        let expected = if w.hub { 0 } else { w.payloads[self.expect].len() };
        let room = expected.saturating_sub(self.received) as u64;
        // A compressed message may be a little longer than the raw one (tiny payloads).
        let wire_room = expected as u64 + 1024;
        match self.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !self.fin || len > 125 {
                    return Err(invalid("bad control frame"));
                }
                self.control.clear();
            }
            OP_TEXT | OP_BINARY => {
                if self.in_message {
                    return Err(invalid("new message inside a fragmented one"));
                }
                if self.opcode != w.opcode {
                    return Err(invalid("echo has another opcode than what was sent"));
                }
                if w.hub {
                    if len > MAX_HUB_MESSAGE as u64 {
                        return Err(invalid("hub message too long"));
                    }
                    self.message.clear();
                    self.in_message = true;
                    return Ok(len as usize);
                }
                self.in_message = true;
                self.received = 0;
                self.compressed = rsv1;
                if rsv1 {
                    if len > wire_room {
                        return Err(invalid("compressed echo far longer than what was sent"));
                    }
                    self.message.clear();
                    return Ok(len as usize);
                }
                if len > expected as u64 {
                    return Err(invalid("echo longer than what was sent"));
                }
            }
            OP_CONTINUATION => {
                if !self.in_message {
                    return Err(invalid("continuation without a message"));
                }
                if w.hub {
                    if self.message.len() as u64 + len > MAX_HUB_MESSAGE as u64 {
                        return Err(invalid("hub message too long"));
                    }
                } else if self.compressed {
                    if self.message.len() as u64 + len > wire_room {
                        return Err(invalid("compressed echo far longer than what was sent"));
                    }
                } else if len > room {
                    return Err(invalid("echo longer than what was sent"));
                }
            }
            _ => return Err(invalid("reserved opcode")),
        }
        Ok(len as usize)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg.to_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Decodes `stream` fed in chunks of `step` bytes, counting echoes and pings.
    fn decode_all(w: &Workload, stream: &[u8], step: usize) -> io::Result<(usize, usize)> {
        let mut d = Decoder::default();
        let (mut echoes, mut pings) = (0, 0);
        for mut chunk in stream.chunks(step) {
            while !chunk.is_empty() {
                match d.decode(&mut chunk, w)? {
                    Some(Decoded::Echo) => echoes += 1,
                    Some(Decoded::Ping) => pings += 1,
                    Some(Decoded::Close) => panic!("close"),
                    Some(Decoded::Message | Decoded::Compressed) => panic!("not an echo"),
                    None => {}
                }
            }
        }
        Ok((echoes, pings))
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        let digest = sha1_smol::Sha1::from(format!("dGhlIHNhbXBsZSBub25jZQ=={WS_GUID}")).digest();
        assert_eq!(base64(&digest.bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn masked_frame_unmasks_to_payload() {
        let w = Workload::new(300, false, Payload::Letters, None, [1, 2, 3, 4]).unwrap();
        assert_eq!(&w.frames[0][..4], &[0x82, 0x80 | 126, 1, 44]);
        let body = &w.frames[0][8..];
        let unmasked: Vec<u8> =
            body.iter().zip([1, 2, 3, 4].iter().cycle()).map(|(b, m)| b ^ m).collect();
        assert_eq!(unmasked, w.payload);
    }

    #[test]
    fn echoes_decode_whole_and_split_in_any_chunking() {
        for size in [0, 20, 125, 126, 1024, 70_000] {
            let w = Workload::new(size, false, Payload::Letters, None, [9, 8, 7, 6]).unwrap();
            let mut stream = server_frame(OP_BINARY, true, &w.payload);
            stream.extend(server_frame(OP_PING, true, b"hi"));
            // The same message fragmented in two.
            let half = size / 2;
            stream.extend(server_frame(OP_BINARY, false, &w.payload[..half]));
            stream.extend(server_frame(OP_CONTINUATION, true, &w.payload[half..]));
            for step in [1, 3, 7, stream.len()] {
                assert_eq!(
                    decode_all(&w, &stream, step).unwrap(),
                    (2, 1),
                    "size {size} step {step}"
                );
            }
        }
    }

    #[test]
    fn wrong_echoes_are_errors() {
        let w = Workload::new(100, false, Payload::Letters, None, [0; 4]).unwrap();
        let mut other = w.payload.clone();
        other[50] ^= 1;
        assert!(decode_all(&w, &server_frame(OP_BINARY, true, &other), 1).is_err());
        assert!(decode_all(&w, &server_frame(OP_BINARY, true, &w.payload[..99]), 1).is_err());
        assert!(decode_all(&w, &server_frame(OP_TEXT, true, &w.payload), 1).is_err());
        let mut long = w.payload.clone();
        long.push(b'x');
        assert!(decode_all(&w, &server_frame(OP_BINARY, true, &long), 1).is_err());
    }

    #[test]
    fn hub_messages_gather_across_frames_and_chunks() {
        let w = Workload::hub(20, [1, 2, 3, 4]);
        assert_eq!(w.payload.len(), 20);
        assert!(w.payload.starts_with(b"\"abc") && w.payload.ends_with(b"\""));
        let msg = br#"{"op":"ack","ref":3,"ep":"a1","off":4}"#;
        let mut stream = server_frame(OP_TEXT, false, &msg[..10]);
        stream.extend(server_frame(OP_CONTINUATION, true, &msg[10..]));
        stream.extend(server_frame(OP_TEXT, true, msg));
        for step in [1, 5, stream.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for mut chunk in stream.chunks(step) {
                while !chunk.is_empty() {
                    if let Some(Decoded::Message) = d.decode(&mut chunk, &w).unwrap() {
                        got.push(d.message.clone());
                    }
                }
            }
            assert_eq!(got, vec![msg.to_vec(), msg.to_vec()], "step {step}");
        }
        assert!(decode_all(&w, &server_frame(OP_BINARY, true, msg), 1).is_err());
    }
}
