//! Who a connection is ([`Principal`]) and what it may do ([`Authorize`]).
//!
//! The principal is authenticated by the adapter at the upgrade (before the WebSocket 101
//! or the SSE 200) and handed to [`Hub::connect`](super::Hub::connect). Every join
//! (`sub`, [`Hub::subscribe`](super::Hub::subscribe)) asks [`Authorize::can_read`] and every
//! client publish asks [`Authorize::can_write`]; a refusal is an `err` reply with code
//! `forbidden` and changes nothing. The trusted server-side
//! [`Hub::publish`](super::Hub::publish) is not checked.
//!
//! A policy is any type implementing [`Authorize`], or a closure
//! `Fn(&Principal, &str, Access) -> bool`:
//!
//! ```
//! use tidewire::hub::{Access, Authorize, DemoAuth, Principal};
//!
//! let only_mine = |p: &Principal, ch: &str, _: Access| {
//!     p.user.as_deref().is_some_and(|u| ch == format!("inbox:{u}"))
//! };
//! assert!(only_mine.can_read(&Principal::user("ann"), "inbox:ann"));
//! assert!(!only_mine.can_write(&Principal::anonymous(), "inbox:ann"));
//!
//! let demo = DemoAuth;
//! assert!(demo.can_write(&Principal::user("ann"), "chat:lobby"));
//! assert!(!demo.can_read(&Principal::anonymous(), "chat:lobby"));
//! ```

/// The authenticated identity of a connection: a user name and the application's claims
/// about it (roles, tenant, plan...), as its authentication found them. The hub's
/// [`Authorize`] policy sees all of it on every join and publish.
///
/// ```
/// use tidewire::hub::Principal;
///
/// let ann = Principal::user("ann").with_claim("role", "admin").with_claim("tenant", "t1");
/// assert_eq!(ann.claim("role"), Some("admin"));
/// assert_eq!(ann.claim("plan"), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user name; `None` for an anonymous client.
    pub user: Option<String>,
    /// Claims, shared by every clone (a principal is cloned per connection and poll).
    pub(crate) claims: Option<std::sync::Arc<std::collections::BTreeMap<String, String>>>,
}

impl Principal {
    /// An anonymous client.
    #[must_use]
    pub fn anonymous() -> Self {
        Self { user: None, claims: None }
    }

    /// A named user.
    #[must_use]
    pub fn user(name: impl Into<String>) -> Self {
        Self { user: Some(name.into()), claims: None }
    }

    /// This principal with claim `name` set to `value`.
    #[must_use]
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let claims = self.claims.get_or_insert_with(Default::default);
        std::sync::Arc::make_mut(claims).insert(name.into(), value.into());
        self
    }

    /// The value of claim `name`.
    #[must_use]
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.as_ref()?.get(name).map(String::as_str)
    }

    /// Every claim, by name.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &str)> {
        self.claims.iter().flat_map(|c| c.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Whether no user is known.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none()
    }
}

/// Which right a closure policy is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Join the channel and receive its messages (and presence).
    Read,
    /// Publish to the channel.
    Write,
}

/// An application's authorization policy, consulted on every join and client publish.
///
/// Implementations MUST be pure and cheap: the hub calls them inline, under the adapter's
/// one lock. A join that needs more (a database, another service) is answered later:
/// [`join_verdict`](Self::join_verdict) returns [`JoinVerdict::Defer`] and the
/// application answers with [`Hub::decide_join`](super::Hub::decide_join) (see
/// [`JoinId`](super::JoinId)).
pub trait Authorize {
    /// Whether `p` may join `ch` (receive its messages and presence). Also what
    /// [`Hub::authorize`](super::Hub::authorize) answers.
    fn can_read(&self, p: &Principal, ch: &str) -> bool;
    /// Whether `p` may publish to `ch`.
    fn can_write(&self, p: &Principal, ch: &str) -> bool;
    /// How a join of `p` to `ch` is decided: now, or later by the application. The
    /// default asks [`can_read`](Self::can_read) (never defers).
    fn join_verdict(&self, p: &Principal, ch: &str) -> JoinVerdict {
        if self.can_read(p, ch) { JoinVerdict::Allow } else { JoinVerdict::Refuse }
    }
}

/// What [`Authorize::join_verdict`] says about a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JoinVerdict {
    /// It joins now.
    Allow,
    /// It does not join: `err` with code `forbidden` (SSE and polls: `403`).
    Refuse,
    /// The application decides later: the hub holds the join and emits
    /// [`HubEvent::JoinRequested`](super::HubEvent::JoinRequested).
    Defer,
}

impl<F: Fn(&Principal, &str, Access) -> bool> Authorize for F {
    fn can_read(&self, p: &Principal, ch: &str) -> bool {
        self(p, ch, Access::Read)
    }
    fn can_write(&self, p: &Principal, ch: &str) -> bool {
        self(p, ch, Access::Write)
    }
}

/// Everyone may read and write everything: for tests and closed deployments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowAll;

impl Authorize for AllowAll {
    fn can_read(&self, _: &Principal, _: &str) -> bool {
        true
    }
    fn can_write(&self, _: &Principal, _: &str) -> bool {
        true
    }
}

/// The demo's policy (DESIGN.md "The runnable surface"): a user (token `user:<name>`) may
/// read `public:*` and `chat:*` and write `chat:*`; an anonymous client may read
/// `public:*`; everything else is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DemoAuth;

impl DemoAuth {
    /// The principal for the demo's bearer token: no token is anonymous, `user:<name>`
    /// (a non-empty name of at most 64 bytes without control characters) is that user;
    /// anything else is `None` (the adapter answers `401`).
    #[must_use]
    pub fn authenticate(token: Option<&str>) -> Option<Principal> {
        let Some(token) = token else { return Some(Principal::anonymous()) };
        let name = token.strip_prefix("user:")?;
        let ok = !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control);
        ok.then(|| Principal::user(name))
    }
}

impl Authorize for DemoAuth {
    fn can_read(&self, p: &Principal, ch: &str) -> bool {
        ch.starts_with("public:") || (p.user.is_some() && ch.starts_with("chat:"))
    }
    fn can_write(&self, p: &Principal, ch: &str) -> bool {
        p.user.is_some() && ch.starts_with("chat:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_policy_matches_the_design() {
        let ann = Principal::user("ann");
        let anon = Principal::anonymous();
        let d = DemoAuth;
        let cases = [
            ("public:ticks", (true, false), (true, false)),
            ("chat:lobby", (true, true), (false, false)),
            ("admin:x", (false, false), (false, false)),
            ("publicx", (false, false), (false, false)),
        ];
        for (ch, user, anonymous) in cases {
            assert_eq!((d.can_read(&ann, ch), d.can_write(&ann, ch)), user, "{ch}");
            assert_eq!((d.can_read(&anon, ch), d.can_write(&anon, ch)), anonymous, "{ch}");
        }
    }

    #[test]
    fn demo_tokens_authenticate() {
        assert_eq!(DemoAuth::authenticate(None), Some(Principal::anonymous()));
        assert_eq!(DemoAuth::authenticate(Some("user:ann")), Some(Principal::user("ann")));
        for bad in ["", "user:", "ann", "admin:ann", "user:a\nb"] {
            assert_eq!(DemoAuth::authenticate(Some(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn closures_and_allow_all_are_policies() {
        let read_only = |_: &Principal, _: &str, a: Access| a == Access::Read;
        let p = Principal::anonymous();
        assert!(read_only.can_read(&p, "x") && !read_only.can_write(&p, "x"));
        assert!(AllowAll.can_read(&p, "x") && AllowAll.can_write(&p, "x"));
    }
}
