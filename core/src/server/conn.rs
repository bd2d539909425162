//! One connection of a [`Server`](super::Server): what it is now ([`Proto`]) and what it
//! still has to write.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::Credential;
use crate::http::{BodyReader, Request, RequestParser};
use crate::hub::ConnId;
use crate::poll::Poll;
use crate::sse::SseStream;
use crate::time::Instant;
use crate::ws::WsConnection;

/// What a connection is, by the stage of its one request.
pub(super) enum Proto {
    /// Reading the request head.
    Head(BytesMut, RequestParser),
    /// The application decides who the request is ([`super::Verdict::Defer`]).
    Deciding { request: Request, rest: BytesMut },
    /// The hub's WebSocket: envelopes in, frames pulled from the hub out. `stash` holds a
    /// hub frame the machine pushed back.
    Ws { ws: Box<WsConnection>, hub: Option<ConnId>, stash: Option<Bytes> },
    /// One channel as SSE.
    Sse { sse: Box<SseStream>, hub: Option<ConnId> },
    /// A poll, held until a publish or its deadline. `once`: the hub connection is this
    /// request's own (past `max_poll_clients`).
    Poll { poll: Box<Poll>, hub: ConnId, once: bool },
    /// An SSE stream or a poll whose join waits for the application's decision: nothing
    /// is written until it comes (or the hub's `join_timeout` refuses it).
    Joining { hub: ConnId, then: super::join::AfterJoin },
    /// Reading a publish's body.
    Body { cred: Credential, ch: String, id: Option<String>, reader: Box<BodyReader> },
    /// A request for the application's own path, until the application answers it.
    App(Box<super::app::AppRequest>),
    /// A response is queued (or nothing is left to say); the connection ends after it.
    Done,
}

impl Proto {
    /// The hub connection this connection holds (a poll's is the poll client's).
    pub(super) fn hub_conn(&self) -> Option<ConnId> {
        match self {
            Proto::Ws { hub, .. } | Proto::Sse { hub, .. } => *hub,
            Proto::Poll { hub, .. } | Proto::Joining { hub, .. } => Some(*hub),
            _ => None,
        }
    }
}

pub(super) struct Conn {
    pub(super) proto: Proto,
    /// A response not yet pulled.
    pub(super) out: VecDeque<Bytes>,
    /// End after `out` (and the machine's bytes) are written.
    pub(super) shutdown: bool,
    /// End events (`Closed`, `Ended`) seen: exactly one per WebSocket or SSE stream.
    pub(super) ends: u32,
    /// When the head, a publish's body or a deferred decision must have arrived.
    pub(super) deadline: Instant,
    /// In the ready queue.
    pub(super) queued: bool,
    /// The peer's address, when the adapter gave it.
    pub(super) peer: Option<core::net::SocketAddr>,
}

impl Conn {
    pub(super) fn new(max_head: usize, deadline: Instant) -> Self {
        Self {
            proto: Proto::Head(BytesMut::new(), RequestParser::new(max_head)),
            out: VecDeque::new(),
            shutdown: false,
            ends: 0,
            deadline,
            queued: false,
            peer: None,
        }
    }

    /// Bytes queued in the transport and unsent responses.
    pub(super) fn buffered(&self) -> usize {
        let machine = match &self.proto {
            Proto::Ws { ws, .. } => ws.buffered_amount(),
            Proto::Sse { sse, .. } => sse.buffered(),
            _ => 0,
        };
        machine + self.out.iter().map(Bytes::len).sum::<usize>()
    }

    pub(super) fn describe(&self) -> String {
        let what = match &self.proto {
            Proto::Head(..) => "reading head".to_owned(),
            Proto::Deciding { .. } => "waiting for authentication".to_owned(),
            Proto::Ws { ws, hub, .. } => format!("ws {:?} hub {hub:?}", ws.state()),
            Proto::Sse { sse, hub } => format!("sse ended {} hub {hub:?}", sse.is_ended()),
            Proto::Poll { hub, .. } => format!("held poll {hub:?}"),
            Proto::Joining { hub, .. } => format!("join of {hub:?} waits for a decision"),
            Proto::Body { .. } => "reading body".to_owned(),
            Proto::App(_) => "the application's request".to_owned(),
            Proto::Done => "answered".to_owned(),
        };
        format!("{what}, {} bytes unsent, shutdown {}", self.buffered(), self.shutdown)
    }

    /// The connection's next deadline.
    pub(super) fn deadline(&self) -> Option<Instant> {
        use crate::machine::Machine;
        match &self.proto {
            Proto::Ws { ws, .. } => ws.poll_timeout(),
            Proto::Sse { sse, .. } => sse.poll_timeout(),
            Proto::Poll { poll, .. } => poll.poll_timeout(),
            Proto::Head(..) | Proto::Body { .. } | Proto::Deciding { .. } => Some(self.deadline),
            Proto::App(app) => app.deadline(),
            Proto::Joining { .. } | Proto::Done => None,
        }
    }
}
