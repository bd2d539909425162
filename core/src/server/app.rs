//! The application's own HTTP requests: a request for a path that is not the hub's stays a
//! connection of the server, which reads its body ([`BodyReader`]) and writes its answer,
//! so that every adapter serves them with the same pump as the hub's connections.

use bytes::Bytes;

use super::conn::Proto;
use super::{ConnHandle, Server, ServerEvent};
use crate::http::{BodyError, BodyReader, InvalidHeader, Request};
use crate::time::Instant;

/// A request the application answers: its body as it arrives.
pub(super) struct AppRequest {
    /// Reads from the hand-over on, bounded by [`ServerConfig::max_request_body`](super::ServerConfig::max_request_body).
    reader: BodyReader,
    /// The application asked for the body ([`Server::read_body`]): its deadline runs.
    asked: bool,
    /// The body (or why there is none) was given.
    given: bool,
}

impl AppRequest {
    /// When the body must have arrived: only once the application waits for it.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.reader.poll_timeout().filter(|_| self.asked)
    }
}

impl Server {
    /// Keeps a request for the application's own path and tells the application.
    pub(super) fn keep_for_app(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        req: Request,
        rest: &[u8],
    ) {
        let (max, timeout) = (self.cfg.max_request_body, self.cfg.head_timeout);
        let mut reader = BodyReader::new(now, &req, max, timeout);
        reader.handle_read(rest);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let app = AppRequest { reader, asked: false, given: false };
        c.proto = Proto::App(Box::new(app));
        self.stats.handed_over += 1;
        self.events.push_handover(ServerEvent::Request { conn, request: req });
    }

    /// Socket input for an application request: its body (`Some`), its end (`None`), or
    /// the clock (`Some(&[])`).
    pub(super) fn app_input(&mut self, now: Instant, conn: ConnHandle, data: Option<&[u8]>) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let Proto::App(app) = &mut c.proto else { return };
        match data {
            Some(data) => app.reader.handle_read(data),
            None => app.reader.handle_eof(),
        }
        if app.asked {
            // Only past the deadline (which runs once the application asked).
            app.reader.handle_timeout(now);
            if app.reader.poll_timeout().is_none() {
                self.events.mark_arrived();
            }
        }
    }

    /// The body of `conn`'s request ([`ServerEvent::Request`]), at most `max` bytes
    /// (and at most [`ServerConfig::max_request_body`](super::ServerConfig::max_request_body)),
    /// due within [`ServerConfig::head_timeout`](super::ServerConfig::head_timeout) of the
    /// first call, which also answers `Expect: 100-continue`. `None`: not complete yet; call
    /// again once [`poll_arrived`](Self::poll_arrived) says something came. A body that
    /// cannot be read is answered here ([`BodyError::response`]) and the connection ends.
    /// Given once: later calls, and calls for a connection that is gone or answered, give
    /// [`BodyError::Truncated`].
    pub fn read_body(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        max: usize,
    ) -> Option<Result<Bytes, BodyError>> {
        let timeout = self.cfg.head_timeout;
        let Some(Proto::App(app)) = self.conns.get_mut(&conn).map(|c| &mut c.proto) else {
            return Some(Err(BodyError::Truncated));
        };
        if app.given {
            return Some(Err(BodyError::Truncated));
        }
        if !std::mem::replace(&mut app.asked, true) {
            app.reader.limit(now, max, timeout);
        }
        let interim = app.reader.poll_transmit();
        let outcome = app.reader.poll_body();
        app.given = outcome.is_some();
        self.touch(conn);
        if let Some(bytes) = interim
            && let Some(c) = self.conns.get_mut(&conn)
        {
            c.out.push_back(bytes);
        }
        if let Some(Err(e)) = &outcome {
            match e.response() {
                Some(bytes) => self.send_and_end(conn, bytes),
                None => self.end_quietly(now, conn),
            }
        }
        self.route_hub_outputs(now);
        outcome
    }

    /// Answers `conn`'s request ([`ServerEvent::Request`]) with `status`, extra `headers` and
    /// `body` ([`crate::http::response`]); the connection ends once it is written. A
    /// connection that is gone or answered is left alone.
    ///
    /// # Errors
    /// [`InvalidHeader`] for a response that cannot be written (nothing is sent then; the
    /// request can still be answered).
    pub fn answer(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), InvalidHeader> {
        let bytes = crate::http::response(status, headers, body)?;
        if matches!(self.conns.get(&conn).map(|c| &c.proto), Some(Proto::App(_))) {
            self.send_and_end(conn, bytes);
            self.route_hub_outputs(now);
        }
        Ok(())
    }

    /// The application gives `conn`'s request up unanswered: the connection ends without a
    /// response. A connection that is gone or answered is left alone.
    pub fn drop_request(&mut self, now: Instant, conn: ConnHandle) {
        if matches!(self.conns.get(&conn).map(|c| &c.proto), Some(Proto::App(_))) {
            self.end_quietly(now, conn);
            self.touch(conn);
            self.route_hub_outputs(now);
        }
    }
}
