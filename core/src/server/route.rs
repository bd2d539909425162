//! Which paths the hub serves ([`Routes`]), and how a path names a channel ([`Route`]).

use crate::http::Request;

/// The hub's endpoints. A request for any other path goes to the application
/// ([`ServerEvent::Request`](super::ServerEvent::Request) or
/// [`ServerEvent::Upgrade`](super::ServerEvent::Upgrade)). `None` turns an endpoint off.
///
/// The defaults are what the client session and `tidewire.js` expect: `/ws`, `/events`,
/// `/poll` and `/api/publish`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Routes {
    /// The envelope protocol over WebSocket (`GET` with `Upgrade: websocket`).
    pub ws: Option<Route>,
    /// One channel as Server-Sent Events (`GET`).
    pub sse: Option<Route>,
    /// One channel by polling (`GET`).
    pub poll: Option<Route>,
    /// A publish to one channel (`POST`, one JSON value as the body).
    pub publish: Option<Route>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            ws: Some(Route::new("/ws")),
            sse: Some(Route::new("/events")),
            poll: Some(Route::new("/poll")),
            publish: Some(Route::new("/api/publish")),
        }
    }
}

impl Routes {
    /// No hub endpoint: every request goes to the application.
    #[must_use]
    pub fn none() -> Self {
        Self { ws: None, sse: None, poll: None, publish: None }
    }
}

/// A path pattern and, optionally, the channel it names.
///
/// A pattern is a path whose segments are literal or `{name}` (one whole segment). Without
/// a channel template the channel comes from the `ch` query parameter; with one, the
/// template's `{name}`s are filled from the path:
///
/// ```
/// use tidewire::server::Route;
///
/// let r = Route::new("/events");
/// assert_eq!(r.matches("/events"), Some(None));
/// assert_eq!(r.matches("/events/x"), None);
///
/// let orders = Route::with_channel("/orders/{id}/live", "orders:{id}");
/// assert_eq!(orders.matches("/orders/42/live"), Some(Some("orders:42".to_owned())));
/// assert_eq!(orders.matches("/orders//live"), None); // a capture is never empty
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    path: String,
    channel: Option<String>,
}

impl Route {
    /// A fixed path (or a pattern); the channel comes from the `ch` query parameter.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into(), channel: None }
    }

    /// A pattern whose captures fill the channel template.
    #[must_use]
    pub fn with_channel(path: impl Into<String>, channel: impl Into<String>) -> Self {
        Self { path: path.into(), channel: Some(channel.into()) }
    }

    /// The pattern.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `None` when `path` (without its query) does not match; `Some(channel)` when it
    /// does, with the channel named by the template (`Some(None)` without a template).
    #[must_use]
    pub fn matches(&self, path: &str) -> Option<Option<String>> {
        let mut captures: Vec<(&str, &str)> = Vec::new();
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => break,
                (Some(w), Some(g)) => {
                    if let Some(name) = w.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                        if g.is_empty() {
                            return None;
                        }
                        captures.push((name, g));
                    } else if w != g {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        let Some(template) = &self.channel else { return Some(None) };
        let mut ch = template.clone();
        for (name, value) in captures {
            let value = String::from_utf8(crate::http::percent_decode(value)).ok()?;
            ch = ch.replace(&format!("{{{name}}}"), &value);
        }
        Some(Some(ch))
    }
}

/// Which hub endpoint a request is for, with the channel its path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Ws,
    Sse(Option<String>),
    Poll(Option<String>),
    Publish(Option<String>),
    App,
}

impl Routes {
    pub(crate) fn endpoint(&self, req: &Request) -> Endpoint {
        let path = req.path_only();
        let find = |r: &Option<Route>| r.as_ref().and_then(|r| r.matches(path));
        if find(&self.ws).is_some() {
            Endpoint::Ws
        } else if let Some(ch) = find(&self.sse) {
            Endpoint::Sse(ch)
        } else if let Some(ch) = find(&self.poll) {
            Endpoint::Poll(ch)
        } else if let Some(ch) = find(&self.publish) {
            Endpoint::Publish(ch)
        } else {
            Endpoint::App
        }
    }
}
