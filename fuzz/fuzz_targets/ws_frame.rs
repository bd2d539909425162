//! Raw bytes into the frame decoder and reassembler, as a server and as a client.
//!
//! Invariants: no panic; no frame over `max_frame`, no message over `max_message`; every
//! decoded frame re-encodes (shortest length form) to bytes that decode to the same frame;
//! feeding the same bytes whole or in chunks gives the same frames and the same first error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidewire::ws::frame::{Frame, FrameDecoder, Role, encode};
use tidewire::ws::reassemble::{Incoming, Reassembler};

const MAX_FRAME: usize = 4096;
const MAX_MESSAGE: usize = 8192;

#[derive(Debug, PartialEq)]
enum Out {
    Item(Incoming),
    Error(tidewire::ws::ProtocolError),
}

/// Encodes `frame` as the peer would (masked towards a server) and decodes it again.
fn check_reencode(role: Role, frame: &Frame) {
    let mask = match role {
        Role::Server => Some([0x37, 0xfa, 0x21, 0x3d]),
        Role::Client => None,
    };
    let mut wire = BytesMut::new();
    encode(frame, mask, &mut wire);
    let mut decoder = FrameDecoder::new(role).with_allowed_rsv(0b111);
    let again = decoder.decode(&mut wire, MAX_FRAME).expect("a re-encoded frame decodes");
    assert_eq!(again.as_ref(), Some(frame), "re-encoded frame differs");
    assert!(wire.is_empty(), "re-encoded frame left {} bytes", wire.len());
}

fn run(role: Role, data: &[u8], chunk: usize) -> Vec<Out> {
    let mut decoder = FrameDecoder::new(role);
    let mut reassembler = Reassembler::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf, MAX_FRAME) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= MAX_FRAME);
                    check_reencode(role, &frame);
                    match reassembler.push(frame) {
                        Ok(None) => {}
                        Ok(Some(item)) => {
                            if let Incoming::Message(m) = &item {
                                assert!(m.len() <= MAX_MESSAGE);
                            }
                            out.push(Out::Item(item));
                        }
                        Err(e) => {
                            out.push(Out::Error(e));
                            return out;
                        }
                    }
                }
                Err(e) => {
                    out.push(Out::Error(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    let role = if selector & 1 == 0 { Role::Server } else { Role::Client };
    let chunk = usize::from(selector >> 1) + 1;
    let whole = run(role, data, data.len());
    let split = run(role, data, chunk);
    assert_eq!(whole, split, "chunking changed the result (chunk size {chunk})");
});
