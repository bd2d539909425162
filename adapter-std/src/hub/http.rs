//! The hub's HTTP transports: SSE streams, polls and HTTP publishes.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::Machine as _;
use tidewire::client::wire::is_json;
use tidewire::hub::{ConnId, HubError, Principal, Transport};
use tidewire::poll::{Poll, PollRequest};
use tidewire::replay::{Epoch, Position};
use tidewire::sse::{SseStream, SseStreamEvent, StreamEnd};

use super::{Inner, Slot, refuse};
use crate::channels::{json_string, peer_closed, pull, write_batch};
use crate::http::HttpRequest;
use crate::server::Held;

/// How often an idle stream looks whether its client closed the connection.
const LIVENESS: Duration = Duration::from_secs(1);
/// The longest a blocked write sleeps before the stream looks at its state again.
const PATIENCE: Duration = Duration::from_millis(250);
/// A position no hub log has (epoch 0 is never drawn): resuming from it is "gone".
const GONE: Position = Position { epoch: Epoch(0), offset: 0 };

fn text_plain() -> [(&'static str, &'static str); 1] {
    [("Content-Type", "text/plain; charset=utf-8")]
}

pub(super) fn serve_sse(
    inner: &Arc<Inner>,
    req: HttpRequest,
    principal: Principal,
) -> io::Result<()> {
    let r = req.request();
    let Some(ch) = r.query_param("ch").filter(|c| !c.is_empty()) else {
        return req.respond(400, &text_plain(), b"missing ch parameter\n");
    };
    let from = r.last_event_id().map(str::to_owned).or_else(|| r.query_param("pos"));
    let pos = from.filter(|p| !p.is_empty()).map(|p| p.parse::<Position>().unwrap_or(GONE));
    let now = Instant::now();
    let mut stream = SseStream::new(inner.opts.sse, now, &[])
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
    let slot = Arc::new(Slot::default());
    let joined = inner.with(|st, now| {
        let conn = st.hub.connect(now, Transport::Sse, principal);
        match st.hub.subscribe(now, conn, &ch, pos) {
            Ok(_) => {
                st.slots.insert(conn, Arc::clone(&slot));
                Ok(conn)
            }
            Err(e) => {
                st.hub.disconnect(now, conn);
                Err(e)
            }
        }
    });
    let conn = match joined {
        Ok(conn) => conn,
        Err(e) => return refuse(req, e),
    };
    if req.hold(Arc::clone(&slot) as Arc<dyn Held>) {
        slot.shutdown_by_server();
    }
    let _end = run_sse(inner, conn, &slot, &mut stream, req.socket(), req.limits().send_timeout);
    req.finish();
    inner.forget(conn, None);
    Ok(())
}

/// The stream's thread: pulls the hub's frames into the stream (while it holds less than
/// `push_buffer`) and writes what the stream queues, until it ends.
fn run_sse(
    inner: &Inner,
    conn: ConnId,
    slot: &Slot,
    stream: &mut SseStream,
    sock: &TcpStream,
    stall: Option<Duration>,
) -> StreamEnd {
    let bound = inner.opts.push_buffer.max(1);
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    let mut shutdown = false;
    let mut ended = None;
    let mut next_check = Instant::now() + LIVENESS;
    let mut stalled_since: Option<Instant> = None;
    let _ = sock.set_write_timeout(Some(PATIENCE));
    loop {
        let now = Instant::now();
        let (ready, close, stop, aborted) = {
            let mut f = slot.flags();
            let ready = f.ready && stream.buffered() < bound;
            if ready {
                f.ready = false;
            }
            (ready, f.close.take(), std::mem::take(&mut f.stop), f.aborted)
        };
        if aborted {
            return ended.unwrap_or(StreamEnd::ClientGone);
        }
        if close.is_some() {
            // The hub dropped the connection (too slow): nothing more can reach it in order.
            stream.end(now, StreamEnd::TooSlow);
        }
        if stop {
            stream.close(now);
        }
        if ready {
            let mut st = inner.lock();
            while stream.buffered() < bound {
                let Some(frame) = st.hub.pull(conn) else { break };
                stream.send_frame(now, frame);
            }
            if st.hub.buffered(conn).is_some_and(|(n, _)| n > 0) {
                slot.flags().ready = true;
            }
        }
        while let Some(ev) = stream.poll_event() {
            if let SseStreamEvent::Ended(why) = ev {
                ended.get_or_insert(why);
            }
        }
        if ended == Some(StreamEnd::TooSlow) {
            return StreamEnd::TooSlow;
        }
        if batch.is_empty() && !shutdown {
            pull(stream, &mut batch, &mut shutdown);
        }
        if batch.is_empty() {
            if shutdown {
                return ended.unwrap_or(StreamEnd::Closed);
            }
            if let Some(d) = stream.poll_timeout()
                && d <= now
            {
                stream.handle_timeout(now);
                continue;
            }
            if now >= next_check {
                next_check = now + LIVENESS;
                if peer_closed(sock) {
                    stream.handle_eof(now);
                    return StreamEnd::ClientGone;
                }
                continue;
            }
            let until = stream.poll_timeout().map_or(next_check, |d| d.min(next_check));
            let mut f = slot.flags();
            while !(f.ready || f.close.is_some() || f.stop || f.aborted) && Instant::now() < until {
                f = slot.wait(f, Some(until));
            }
            continue;
        }
        match write_batch(sock, &mut batch) {
            Ok(()) => stalled_since = None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let since = *stalled_since.get_or_insert(now);
                if stall.is_some_and(|t| now >= since + t) {
                    stream.handle_eof(now);
                    return StreamEnd::TooSlow;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                stream.handle_eof(now);
                return ended.unwrap_or(StreamEnd::ClientGone);
            }
        }
    }
}

pub(super) fn serve_poll(
    inner: &Arc<Inner>,
    req: HttpRequest,
    principal: Principal,
) -> io::Result<()> {
    let request = match PollRequest::from_request(req.request()) {
        Ok(r) => r,
        Err(e) => return req.respond(e.status(), &text_plain(), format!("{e}\n").as_bytes()),
    };
    let ch = request.channel.clone();
    let now = Instant::now();
    let mut poll = Poll::new(inner.opts.poll, now, request);
    let slot = Arc::new(Slot::default());
    // Join (the policy decides), answer at once if possible, else hold.
    let first = inner.with(|st, now| {
        let conn = st.hub.connect(now, Transport::Poll, principal);
        if let Err(e) = st.hub.subscribe(now, conn, &ch, None) {
            st.hub.disconnect(now, conn);
            return Err(e);
        }
        // With a bus, the channel's log may still be loading: then hold.
        let answer = if st.hub.is_synced(&ch) {
            st.hub.log(&ch).and_then(|log| poll.check(now, log))
        } else {
            None
        };
        if answer.is_some() {
            st.hub.disconnect(now, conn);
        } else {
            st.polls.entry(Arc::from(ch.as_str())).or_default().insert(conn, Arc::clone(&slot));
        }
        Ok((conn, answer))
    });
    let conn = match first {
        Err(e) => return refuse(req, e),
        Ok((_, Some(answer))) => return req.send(&answer),
        Ok((conn, None)) => conn,
    };
    if req.hold(Arc::clone(&slot) as Arc<dyn Held>) {
        slot.shutdown_by_server();
    }
    let response = loop {
        let (stop, aborted) = {
            let mut f = slot.flags();
            f.news = false;
            (f.stop, f.aborted)
        };
        if aborted {
            break None;
        }
        let now = Instant::now();
        {
            let st = inner.lock();
            let Some(log) = st.hub.log(&ch) else { break None };
            let at = if stop { poll.poll_timeout().map_or(now, |d| d.max(now)) } else { now };
            if st.hub.is_synced(&ch)
                && let Some(answer) = poll.check(at, log)
            {
                break Some(answer);
            }
            if stop && !st.hub.is_synced(&ch) {
                break None;
            }
        }
        let deadline = poll.poll_timeout().unwrap_or(now);
        let mut f = slot.flags();
        while !(f.news || f.stop || f.aborted) && Instant::now() < deadline {
            f = slot.wait(f, Some(deadline));
        }
    };
    inner.forget(conn, Some(&ch));
    match response {
        Some(bytes) => req.send(&bytes),
        None => {
            req.finish();
            Err(ErrorKind::ConnectionAborted.into())
        }
    }
}

/// How a publish went: the position (none for a duplicate whose position was forgotten),
/// or a status and a code.
type Published = Result<Option<Position>, (u16, String)>;

pub(super) fn serve_publish(
    inner: &Arc<Inner>,
    mut req: HttpRequest,
    principal: &Principal,
    trusted: bool,
) -> io::Result<()> {
    if req.request().method() != "POST" {
        let headers = [("Allow", "POST"), ("Content-Type", "text/plain; charset=utf-8")];
        return req.respond(405, &headers, b"use POST\n");
    }
    let Some(ch) = req.request().query_param("ch").filter(|c| !c.is_empty()) else {
        return req.respond(400, &text_plain(), b"missing ch parameter\n");
    };
    let id = req.request().query_param("id").filter(|i| !i.is_empty());
    let body = req.read_body(inner.opts.max_publish_body)?;
    let Some(data) = std::str::from_utf8(&body).ok().filter(|t| is_json(t)) else {
        return reply_error(req, 400, "bad_json");
    };
    let outcome: Published = if inner.bus.is_some() {
        // With Redis the bus numbers and deduplicates (across instances).
        let who = (!trusted).then_some(principal);
        inner
            .submit(who, &ch, id.as_deref(), data.as_bytes())
            .map(Some)
            .map_err(|e| (status_of(e.code()), e.code().to_owned()))
    } else if trusted {
        inner
            .with(|st, now| st.hub.publish_json(now, &ch, data.as_bytes()))
            .map(Some)
            .map_err(|e| (status_of(e.code()), e.code().to_owned()))
    } else {
        client_publish(inner, principal, &ch, id.as_deref(), data)
    };
    match outcome {
        Ok(pos) => {
            let body = pos.map_or_else(
                || "{}".to_owned(),
                |p| format!(r#"{{"ep":"{}","off":{}}}"#, p.epoch, p.offset),
            );
            let headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")];
            req.respond(200, &headers, body.as_bytes())
        }
        Err((status, code)) => reply_error(req, status, &code),
    }
}

/// A user publish through the hub's client path: authorization, and dedup by the user's
/// id in the same window as WebSocket publishes.
fn client_publish(
    inner: &Inner,
    principal: &Principal,
    ch: &str,
    id: Option<&str>,
    data: &str,
) -> Published {
    inner
        .with(|st, now| st.hub.publish_as(now, principal, ch, id, data.as_bytes()))
        .map(Some)
        .map_err(|e| (status_of(e.code()), e.code().to_owned()))
}

/// The HTTP status of a hub refusal.
fn status_of(code: &str) -> u16 {
    match code {
        "forbidden" => 403,
        "channel_limit" | "too_many_channels" | "unavailable" => 503,
        _ if code == HubError::UnknownConn.code() => 500,
        _ => 400,
    }
}

fn reply_error(req: HttpRequest, status: u16, code: &str) -> io::Result<()> {
    let body = format!(r#"{{"error":{}}}"#, json_string(code));
    req.respond(status, &[("Content-Type", "application/json")], body.as_bytes())
}
