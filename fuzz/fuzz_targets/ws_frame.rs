//! Raw bytes into the frame decoder and reassembler, as a server and as a client.
//!
//! Invariants: no panic; no frame over `max_frame`, no message over `max_message`; feeding
//! the same bytes whole or in chunks gives the same frames and the same first error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidewire::ws::frame::{FrameDecoder, Role};
use tidewire::ws::reassemble::{Incoming, Reassembler};

const MAX_FRAME: usize = 4096;
const MAX_MESSAGE: usize = 8192;

#[derive(Debug, PartialEq)]
enum Out {
    Item(Incoming),
    Error(tidewire::ws::ProtocolError),
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
