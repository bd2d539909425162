//! [`SimClient`]: a real [`ClientSession`] whose sockets are simulated links.
//!
//! The client is the session's adapter: a [`SessionAction::Connect`] opens a link to the
//! client's server, a `Close` closes it (after the bytes already written), and reads,
//! ends of file and resets of the link are fed back as `handle_read`, `handle_eof` and
//! `handle_error`. Every [`SessionEvent`] is kept, stamped with the client's time, for the
//! test's oracle to drain.

use std::collections::BTreeMap;

use super::net::{Delivery, LinkId, Net, NetEvent, Side};
use crate::client::{ClientSession, SessionAction, SessionEvent, SockId};
use crate::time::Instant;

/// One simulated client. See the [module docs](self).
///
/// - Inputs: [`handle_net`](Self::handle_net), [`handle_timeout`](Self::handle_timeout),
///   and commands on [`session_mut`](Self::session_mut) followed by
///   [`drive`](Self::drive).
/// - Outputs: writes to the [`Net`], [`poll_timeout`](Self::poll_timeout),
///   [`drain_events`](Self::drain_events), [`connect_times`](Self::connect_times).
#[derive(Debug)]
pub struct SimClient {
    id: usize,
    server: usize,
    session: ClientSession,
    socks: BTreeMap<SockId, LinkId>,
    links: BTreeMap<LinkId, SockId>,
    events: Vec<(Instant, SessionEvent)>,
    connects: Vec<Instant>,
}

impl SimClient {
    /// Client node `id` running `session` against server node `server`.
    #[must_use]
    pub fn new(id: usize, server: usize, session: ClientSession) -> Self {
        Self {
            id,
            server,
            session,
            socks: BTreeMap::new(),
            links: BTreeMap::new(),
            events: Vec::new(),
            connects: Vec::new(),
        }
    }

    /// The node's id.
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    /// The server node it connects to.
    #[must_use]
    pub fn server(&self) -> usize {
        self.server
    }

    /// The session.
    #[must_use]
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// The session, for commands. Call [`drive`](Self::drive) after them.
    pub fn session_mut(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    /// Replaces the session (the application restarted): every link of the old one is
    /// reset by the client's kernel.
    pub fn replace_session(&mut self, now: Instant, net: &mut Net, session: ClientSession) {
        for &link in self.links.keys() {
            net.abort(link, Side::Client);
        }
        self.links.clear();
        self.socks.clear();
        self.session = session;
        self.drive(now, net);
    }

    /// The links the session holds open.
    pub fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links.keys().copied()
    }

    /// The events since the last call, with the client's time.
    pub fn drain_events(&mut self) -> Vec<(Instant, SessionEvent)> {
        std::mem::take(&mut self.events)
    }

    /// When the session asked for each connection, in order.
    #[must_use]
    pub fn connect_times(&self) -> &[Instant] {
        &self.connects
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// Fires the session's deadlines.
    pub fn handle_timeout(&mut self, now: Instant, net: &mut Net) {
        self.session.handle_timeout(now);
        self.drive(now, net);
    }

    /// A segment for this client arrived.
    pub fn handle_net(&mut self, now: Instant, net: &mut Net, d: Delivery) {
        let Some(&sock) = self.links.get(&d.link) else { return };
        match d.event {
            NetEvent::Connected => self.session.handle_connected(now, sock),
            NetEvent::Data(b) => self.session.handle_read(now, sock, &b),
            NetEvent::Eof => self.session.handle_eof(now, sock),
            NetEvent::Reset => {
                self.links.remove(&d.link);
                self.socks.remove(&sock);
                self.session.handle_error(now, sock);
            }
            NetEvent::Accepted => {}
        }
        self.drive(now, net);
    }

    /// The adapter's drain after an input or a command: bytes, socket actions, events.
    pub fn drive(&mut self, now: Instant, net: &mut Net) {
        loop {
            let mut progress = false;
            while let Some((sock, bytes)) = self.session.poll_transmit() {
                progress = true;
                if let Some(&link) = self.socks.get(&sock) {
                    net.write(link, Side::Client, bytes);
                }
            }
            while let Some(action) = self.session.poll_action() {
                progress = true;
                match action {
                    SessionAction::Connect { sock, .. } => {
                        self.connects.push(now);
                        let link = net.connect(self.id, self.server);
                        self.socks.insert(sock, link);
                        self.links.insert(link, sock);
                    }
                    SessionAction::Close { sock } => {
                        if let Some(link) = self.socks.remove(&sock) {
                            self.links.remove(&link);
                            net.close(link, Side::Client);
                        }
                    }
                }
            }
            while let Some(ev) = self.session.poll_event() {
                self.events.push((now, ev));
            }
            if !progress {
                break;
            }
        }
    }
}
