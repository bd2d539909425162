//! Who a request is: the application's [`Authenticate`] policy, its [`Verdict`], and the
//! one map from a hub refusal to an HTTP status ([`status_of`]).

use core::net::SocketAddr;

use crate::http::Request;
use crate::hub::{DemoAuth, HubError, Principal};

/// What a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The identity the hub checks joins and publishes against (and puts in presence).
    pub principal: Principal,
    /// A trusted server-side publisher (an admin token, a back end): its publishes skip
    /// the [`Authorize`](crate::hub::Authorize) policy and are deduplicated by id in a
    /// window of their own. Only the publish endpoint looks at it.
    pub trusted: bool,
}

impl Credential {
    /// An untrusted client acting as `principal`.
    #[must_use]
    pub fn client(principal: Principal) -> Self {
        Self { principal, trusted: false }
    }
}

/// Why a request was refused: the status and a short reason, sent as the response's
/// `text/plain` body. Typed, so a test or a log can tell refusals apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Refusal {
    /// The HTTP status (401, 403, 429, 503, ...).
    pub status: u16,
    /// Why, in a few words (no credential, never peer bytes).
    pub reason: String,
}

impl Refusal {
    /// A refusal with `status` and `reason`.
    #[must_use]
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into() }
    }

    /// `401 bad token`, answered with `WWW-Authenticate: Bearer`.
    #[must_use]
    pub fn unauthorized() -> Self {
        Self::new(401, "bad token")
    }
}

/// The answer of an [`Authenticate`] policy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Go on as this credential.
    Allow(Credential),
    /// Answer with this status; nothing is opened.
    Refuse(Refusal),
    /// The application decides later (e.g. after a database lookup): the server emits
    /// [`ServerEvent::Authenticate`](super::ServerEvent::Authenticate) and holds the
    /// request until [`Server::decide`](super::Server::decide) is called with `Allow` or
    /// `Refuse` (or the head timeout passes: `503`).
    Defer,
}

/// The application's authentication, asked once per request to a hub endpoint, before any
/// `101` or `200`. It sees the whole head (`Authorization`, cookies, the query).
///
/// Implementations MUST be cheap and MUST NOT block: a lookup that takes time answers
/// [`Verdict::Defer`] and decides later. A closure `Fn(&Request) -> Verdict` is a policy.
pub trait Authenticate {
    /// Who `req` is.
    fn authenticate(&self, req: &Request) -> Verdict;

    /// Who `req`, from the socket address `peer` (when the adapter gave it to
    /// [`Server::handle_accept_from`](super::Server::handle_accept_from)), is. The default
    /// ignores the address; override it for rules such as "trusted on loopback".
    fn authenticate_from(&self, req: &Request, peer: Option<SocketAddr>) -> Verdict {
        let _ = peer;
        self.authenticate(req)
    }
}

impl<F: Fn(&Request) -> Verdict> Authenticate for F {
    fn authenticate(&self, req: &Request) -> Verdict {
        self(req)
    }
}

impl Authenticate for DemoAuth {
    /// The demo's tokens ([`DemoAuth::authenticate`], from the bearer token or `?token=`):
    /// none is anonymous, `user:<name>` is that user, anything else `401`.
    fn authenticate(&self, req: &Request) -> Verdict {
        match DemoAuth::authenticate(req.token().as_deref()) {
            Some(p) => Verdict::Allow(Credential::client(p)),
            None => Verdict::Refuse(Refusal::unauthorized()),
        }
    }
}

/// The one map from a hub refusal to an HTTP status, used by every endpoint:
///
/// | error | status |
/// |---|---|
/// | `Forbidden` | 403 |
/// | `BadChannel`, `BadId`, `BadJson` | 400 |
/// | `TooManyChannels`, `ChannelLimit`, `Unavailable` | 503 |
/// | `UnknownConn` (a server bug, never a client's fault) | 500 |
#[must_use]
pub fn status_of(e: HubError) -> u16 {
    match e {
        HubError::Forbidden => 403,
        HubError::BadChannel | HubError::BadId | HubError::BadJson => 400,
        HubError::TooManyChannels | HubError::ChannelLimit | HubError::Unavailable => 503,
        HubError::TooManyPending => 429,
        _ => 500,
    }
}

/// Whether a request may come from its `Origin`: always without a `Cookie` (its credentials
/// are not ambient), else only from the server's own origin (same host as `Host`) or one
/// in `allowed`.
pub(crate) fn origin_allowed(req: &Request, allowed: &[String]) -> bool {
    let Some(origin) = req.origin() else { return true };
    if req.header("cookie").is_none() {
        return true;
    }
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = origin.split_once("://").map(|(_, h)| h);
    matches!((host, req.host()), (Some(h), Some(own)) if h.eq_ignore_ascii_case(own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hub_error_has_one_status() {
        let cases = [
            (HubError::Forbidden, 403),
            (HubError::BadChannel, 400),
            (HubError::BadId, 400),
            (HubError::BadJson, 400),
            (HubError::TooManyChannels, 503),
            (HubError::ChannelLimit, 503),
            (HubError::Unavailable, 503),
            (HubError::UnknownConn, 500),
        ];
        for (e, s) in cases {
            assert_eq!(status_of(e), s, "{e:?}");
        }
    }
}
