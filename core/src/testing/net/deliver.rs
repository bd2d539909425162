//! The driver's side of the [`Net`]: what is due, faults applied at delivery, the user
//! timeout, and the bookkeeping of the direction queues.

use std::cmp::Reverse;

use super::{Delivery, LinkId, Net, NetEvent, Partition, Segment, Side};
use crate::time::Instant;

impl Net {
    /// When the next segment is due.
    #[must_use]
    pub fn next_due(&self) -> Option<Instant> {
        let a = self.heap.peek().map(|Reverse((at, _, _))| *at);
        let b = self.give_up.peek().map(|Reverse((at, _, _))| *at);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes toward `to` cannot get through from `now` on: start the sender's user timeout
    /// unless it runs already.
    pub(super) fn stall(&mut self, id: LinkId, to: Side, now: Instant) {
        let timeout = self.cfg.user_timeout;
        let Some(l) = self.links.get_mut(&id) else { return };
        let d = l.dir(to);
        if d.unacked_since.is_none() {
            d.unacked_since = Some(now);
            self.give_up.push(Reverse((now + timeout, id, to == Side::Server)));
        }
    }

    /// The sender of `to`'s bytes gives up if they waited a whole user timeout.
    pub(super) fn check_give_up(&mut self, id: LinkId, to_server: bool) -> Option<Delivery> {
        let now = self.now;
        let timeout = self.cfg.user_timeout;
        let to = if to_server { Side::Server } else { Side::Client };
        let l = self.links.get_mut(&id)?;
        let since = l.dir(to).unacked_since?;
        if since + timeout > now {
            return None;
        }
        let (client, server) = (l.client, l.server);
        let sender = to.other();
        // The sender's socket is gone: its bytes die, nothing more reaches it, and what it
        // would get is answered with RST (see `deliver`).
        l.gone[sender as usize] = true;
        // The peer's own unacknowledged bytes keep their timer.
        let d = l.dir(to);
        d.closed = true;
        d.queue.clear();
        d.scheduled = None;
        d.unacked_since = None;
        let back = l.dir(sender);
        back.queue.clear();
        back.scheduled = None;
        if l.gone == [true, true] {
            self.links.remove(&id);
        }
        self.stats.resets += 1;
        Some(Delivery { link: id, to: sender, client, server, event: NetEvent::Reset })
    }

    /// A link whose `Side` end has window room again after it ran out, with the link's
    /// client and server nodes.
    pub fn pop_writable(&mut self) -> Option<(LinkId, Side, usize, usize)> {
        self.writable.pop_front()
    }

    /// The next segment due at or before the network's time, after applying the faults. Call until
    /// `None`.
    pub fn pop_due(&mut self) -> Option<Delivery> {
        let now = self.now;
        while let Some(Reverse((at, id, to_server))) = self.give_up.peek().copied() {
            if at > now {
                break;
            }
            self.give_up.pop();
            if let Some(d) = self.check_give_up(id, to_server) {
                return Some(d);
            }
        }
        while let Some(Reverse((at, id, to_server))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            let to = if to_server { Side::Server } else { Side::Client };
            if let Some(d) = self.deliver(now, id, to, at) {
                return Some(d);
            }
        }
        None
    }

    pub(super) fn deliver(
        &mut self,
        now: Instant,
        id: LinkId,
        to: Side,
        at: Instant,
    ) -> Option<Delivery> {
        let rto = self.cfg.rto;
        let l = self.links.get(&id)?;
        let (client, server, incarnation, blackholed) =
            (l.client, l.server, l.incarnation, l.blackholed.is_some());
        let dir = match to {
            Side::Server => &l.to_server,
            Side::Client => &l.to_client,
        };
        if dir.scheduled != Some(at) {
            return None;
        }
        let host = self.hosts[server];
        let mut postpone = None;
        let mut stalled = true;
        if let Some(p) = self.partition_of(client, server, now) {
            postpone = Some(p.until);
        } else if to == Side::Server && !host.up && !host.refuse {
            postpone = Some(now + rto);
        } else if to == Side::Client
            && let Some(&until) = self.paused.get(&client)
            && until > now
        {
            // A paused reader's kernel still acknowledges: no user timeout.
            postpone = Some(until);
            stalled = false;
        }
        let l = self.links.get_mut(&id)?;
        l.dir(to).scheduled = None;
        if blackholed {
            l.dir(to).queue.clear();
            return None;
        }
        if l.gone[to as usize] {
            // A socket that gave up answers with RST (once); the peer is done too.
            let d = l.dir(to);
            d.queue.clear();
            d.closed = true;
            if l.gone[to.other() as usize] {
                self.collect(id);
            } else if !std::mem::replace(&mut l.rst_sent, true) {
                self.push(now, id, to.other(), Segment::Rst);
            }
            return None;
        }
        if let Some(until) = postpone {
            self.stats.postponed += 1;
            if stalled {
                self.stall(id, to, now);
            }
            self.reschedule(id, to, Some(until));
            return None;
        }
        let l = self.links.get_mut(&id)?;
        let d = l.dir(to);
        d.unacked_since = None;
        let (_, seg) = d.queue.pop_front()?;
        let next = d.queue.front().map(|(t, _)| *t);
        let stale = to == Side::Server && (host.incarnation != incarnation || !host.up);
        let event = match seg {
            _ if stale => {
                // A host that does not know the connection (restarted, or the process is
                // gone) answers with RST.
                let d = l.dir(to);
                d.queue.clear();
                d.closed = true;
                l.to_client.queue.clear();
                l.to_client.closed = true;
                self.push(now, id, Side::Client, Segment::Rst);
                return None;
            }
            Segment::Syn if to == Side::Server => {
                l.accepted = true;
                self.push(now, id, Side::Client, Segment::Syn);
                NetEvent::Accepted
            }
            Segment::Syn => NetEvent::Connected,
            Segment::Data(b) => {
                let window = self.cfg.window;
                let d = l.dir(to);
                d.bytes = d.bytes.saturating_sub(b.len());
                if d.blocked && d.bytes <= window / 2 {
                    d.blocked = false;
                    self.writable.push_back((id, to.other(), client, server));
                }
                self.stats.bytes += b.len() as u64;
                NetEvent::Data(b)
            }
            Segment::Fin => NetEvent::Eof,
            Segment::Rst => {
                // The receiver's socket is dead too.
                l.gone[to as usize] = true;
                l.dir(to.other()).closed = true;
                self.stats.resets += 1;
                NetEvent::Reset
            }
        };
        self.stats.segments += 1;
        self.reschedule(id, to, next);
        if event == NetEvent::Reset || event == NetEvent::Eof {
            self.collect(id);
        }
        Some(Delivery { link: id, to, client, server, event })
    }

    pub(super) fn partition_of(
        &self,
        client: usize,
        server: usize,
        now: Instant,
    ) -> Option<&Partition> {
        self.partitions
            .iter()
            .filter(|p| p.server == server && p.from <= now && now < p.until)
            .find(|p| p.clients.contains(&client))
    }

    /// Queues `seg` toward `to`, in order after what is queued there.
    pub(super) fn push(&mut self, now: Instant, id: LinkId, to: Side, seg: Segment) {
        let jitter = self.rng.duration_up_to(self.cfg.jitter);
        let Some(l) = self.links.get_mut(&id) else { return };
        if l.blackholed.is_some() {
            return;
        }
        let latency = l.latency;
        let d = l.dir(to);
        let last = d.queue.back().map(|(t, _)| *t);
        let at = last.map_or(now + latency + jitter, |t| t.max(now + latency + jitter));
        d.queue.push_back((at, seg));
        if d.scheduled.is_none() {
            self.reschedule(id, to, Some(at));
        }
    }

    pub(super) fn reschedule(&mut self, id: LinkId, to: Side, at: Option<Instant>) {
        let Some(l) = self.links.get_mut(&id) else { return };
        let d = l.dir(to);
        if let Some(at) = at {
            if let Some(front) = d.queue.front_mut() {
                front.0 = front.0.max(at);
            }
            d.scheduled = Some(at);
            self.heap.push(Reverse((at, id, to == Side::Server)));
        } else {
            d.scheduled = None;
        }
    }

    /// Forgets a link once both ends are closed and nothing is queued.
    pub(super) fn collect(&mut self, id: LinkId) {
        if let Some(l) = self.links.get(&id)
            && ((l.to_server.closed && l.to_client.closed) || l.gone == [true, true])
            && l.to_server.queue.is_empty()
            && l.to_client.queue.is_empty()
        {
            self.links.remove(&id);
        }
    }
}
