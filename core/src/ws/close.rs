//! Close codes (RFC 6455 §7.4): which may be sent, what they mean for a reconnecting client,
//! and the close frame payload.

use core::fmt;

use super::error::ProtocolError;

/// A WebSocket close status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

/// What a reconnecting client should do after a close code (DESIGN.md "Close codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseClass {
    /// Done: do not reconnect (1000, protocol/data errors, 1009, 4000–4099).
    Terminal,
    /// Reconnect with backoff and jitter (1001, 1006, 1011, 4100–4199, other app codes).
    Retryable,
    /// Reconnect with backoff whose floor the server raised (1012, 1013).
    RetryLater,
    /// Reconnect only with fresh credentials (1008).
    Reauthenticate,
}

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: unsupported data.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: closed abnormally, without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: invalid frame payload data (bad UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation (rate limit, expired token).
    pub const POLICY: Self = Self(1008);
    /// 1009: message too big.
    pub const TOO_BIG: Self = Self(1009);
    /// 1010: a required extension was not negotiated.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: internal server error.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: service restart.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: bad gateway.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS_FAILURE: Self = Self(1015);
    /// 4003: application: forbidden (terminal).
    pub const FORBIDDEN: Self = Self(4003);
    /// 4004: application: not found (terminal).
    pub const NOT_FOUND: Self = Self(4004);
    /// 4100: application: consumer too slow, resume later (retryable).
    pub const TOO_SLOW: Self = Self(4100);

    /// Whether this code may appear in a close frame on the wire (RFC 6455 §7.4.1 and the
    /// IANA registry): 1000–1003, 1007–1014 and 3000–4999. 1005, 1006 and 1015 are
    /// reserved for reporting and everything else is unassigned.
    #[must_use]
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// What a reconnecting client does after this code.
    #[must_use]
    pub fn class(self) -> CloseClass {
        match self.0 {
            1001 | 1005 | 1006 | 1011 | 1014 | 1015 | 4100..=4199 => CloseClass::Retryable,
            1012 | 1013 => CloseClass::RetryLater,
            1008 => CloseClass::Reauthenticate,
            1000 | 1002 | 1003 | 1007 | 1009 | 1010 | 4000..=4099 => CloseClass::Terminal,
            // Other registered (3000–3999) and private (4200–4999) codes: unknown meaning, so
            // a client retries with backoff rather than giving up on a live service.
            _ => CloseClass::Retryable,
        }
    }
}

/// Parses a received close frame payload (§5.5.1): empty → `None` (reported as 1005);
/// otherwise a sendable code and a UTF-8 reason.
///
/// # Errors
/// [`ProtocolError::InvalidClosePayload`] for a 1-byte payload,
/// [`ProtocolError::InvalidCloseCode`] for a code that may not be sent,
/// [`ProtocolError::InvalidUtf8`] for a reason that is not UTF-8.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_match_autobahn_7_7_and_7_9() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn classes_follow_the_design_table() {
        assert_eq!(CloseCode::NORMAL.class(), CloseClass::Terminal);
        assert_eq!(CloseCode::GOING_AWAY.class(), CloseClass::Retryable);
        assert_eq!(CloseCode::PROTOCOL_ERROR.class(), CloseClass::Terminal);
        assert_eq!(CloseCode::INVALID_PAYLOAD.class(), CloseClass::Terminal);
        assert_eq!(CloseCode::POLICY.class(), CloseClass::Reauthenticate);
        assert_eq!(CloseCode::TOO_BIG.class(), CloseClass::Terminal);
        assert_eq!(CloseCode::INTERNAL_ERROR.class(), CloseClass::Retryable);
        assert_eq!(CloseCode::SERVICE_RESTART.class(), CloseClass::RetryLater);
        assert_eq!(CloseCode::TRY_AGAIN_LATER.class(), CloseClass::RetryLater);
        assert_eq!(CloseCode::FORBIDDEN.class(), CloseClass::Terminal);
        assert_eq!(CloseCode(4099).class(), CloseClass::Terminal);
        assert_eq!(CloseCode::TOO_SLOW.class(), CloseClass::Retryable);
        assert_eq!(CloseCode::ABNORMAL.class(), CloseClass::Retryable);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(parse_close_payload(&[3]), Err(ProtocolError::InvalidClosePayload));
        assert_eq!(parse_close_payload(&[3, 232]), Ok(Some((CloseCode::NORMAL, ""))));
        assert_eq!(parse_close_payload(b"\x03\xe8bye"), Ok(Some((CloseCode::NORMAL, "bye"))));
        assert_eq!(parse_close_payload(&[3, 237]), Err(ProtocolError::InvalidCloseCode(1005)));
        assert_eq!(parse_close_payload(b"\x03\xe8\xff"), Err(ProtocolError::InvalidUtf8));
    }
}
