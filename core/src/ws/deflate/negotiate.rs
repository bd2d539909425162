//! Negotiation of permessage-deflate in `Sec-WebSocket-Extensions` (RFC 7692 §7.1): the
//! client's offer ([`client_offer`]), the server's choice among offers ([`negotiate_server`]),
//! and the client's check of the answer ([`negotiate_response`]). Pure string work.

use super::{DeflateConfig, EXTENSION_NAME, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// What was agreed for one connection (RFC 7692 §7.1), as both ends see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window is at most 2^this bytes (8–15).
    pub server_max_window_bits: u8,
    /// The client's LZ77 window is at most 2^this bytes (8–15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    /// The agreement of a bare `permessage-deflate`: context takeover, windows of 15.
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// Why an extension offer or answer was not acceptable (RFC 7692 §7.1). A server declines
/// such an offer and looks at the next; a client fails the connection (1010).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// A parameter that permessage-deflate does not define (or, in an answer, one that may
    /// only appear in offers).
    #[error("unknown permessage-deflate parameter")]
    UnknownParameter,
    /// The same parameter twice in one offer or answer.
    #[error("repeated permessage-deflate parameter")]
    DuplicateParameter,
    /// A value on a valueless parameter, a missing or malformed value, or window bits
    /// outside 8–15.
    #[error("invalid permessage-deflate parameter value")]
    InvalidValue,
    /// Answer: permessage-deflate twice, or an extension that was not offered.
    #[error("server accepted an extension that was not offered")]
    UnexpectedExtension,
    /// Answer: a parameter that does not fit the offer (`server_no_context_takeover`
    /// missing when asked for, a window larger than offered, `client_max_window_bits` when
    /// not offered).
    #[error("permessage-deflate answer does not fit the offer")]
    Mismatch,
}

/// `client_max_window_bits` as found in an offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ClientBits {
    #[default]
    Absent,
    /// Without a value: "you may limit my window" (offers only).
    Supported,
    Bits(u8),
}

/// The parameters of one `permessage-deflate` element, syntax-checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: ClientBits,
}

/// Splits one extension element (`name; a; b=1`) into its name and its parameter text.
fn split_name(element: &str) -> (&str, &str) {
    match element.split_once(';') {
        Some((name, rest)) => (name.trim(), rest),
        None => (element.trim(), ""),
    }
}

/// A window-bits value: `8`–`15` in decimal without leading zeros, as a token or a quoted
/// string (RFC 7692 §7.1.2.1).
fn window_bits(value: Option<&str>) -> Result<u8, NegotiationError> {
    let raw = value.ok_or(NegotiationError::InvalidValue)?;
    let raw = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
    let ok = !raw.is_empty() && raw.len() <= 2 && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u8>() {
        Ok(bits)
            if ok
                && !raw.starts_with('0')
                && (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) =>
        {
            Ok(bits)
        }
        _ => Err(NegotiationError::InvalidValue),
    }
}

/// Parses the parameter text after the name. `offer` allows a valueless
/// `client_max_window_bits`, which only an offer may carry.
fn parse_params(text: &str, offer: bool) -> Result<Params, NegotiationError> {
    use NegotiationError as E;
    let mut p = Params::default();
    let mut seen = [false; 4];
    for param in text.split(';') {
        let param = param.trim();
        if param.is_empty() {
            // `permessage-deflate;` or `a;;b`: not a parameter at all.
            return Err(E::InvalidValue);
        }
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim_end(), Some(v.trim_start())),
            None => (param, None),
        };
        let index = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ]
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
        .ok_or(E::UnknownParameter)?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(E::DuplicateParameter);
        }
        match index {
            0 | 1 if value.is_some() => return Err(E::InvalidValue),
            0 => p.server_no_context_takeover = true,
            1 => p.client_no_context_takeover = true,
            2 => p.server_max_window_bits = Some(window_bits(value)?),
            _ => {
                p.client_max_window_bits = match value {
                    None if offer => ClientBits::Supported,
                    None => return Err(E::InvalidValue),
                    v => ClientBits::Bits(window_bits(v)?),
                };
            }
        }
    }
    Ok(p)
}

/// Parses one offered element: `None` when it is another extension.
fn parse_offer(element: &str) -> Option<Result<Params, NegotiationError>> {
    let (name, rest) = split_name(element);
    if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return None;
    }
    Some(if element.contains(';') { parse_params(rest, true) } else { Ok(Params::default()) })
}

/// The client's offer for `cfg`, the value of its `Sec-WebSocket-Extensions` header: one
/// offer, with `client_max_window_bits` always present (valueless at 15) so that a server
/// may limit the client's window, as browsers do.
///
/// ```
/// use tidewire::ws::deflate::{DeflateConfig, client_offer};
///
/// assert_eq!(client_offer(&DeflateConfig::default()), "permessage-deflate; client_max_window_bits");
/// let mut cfg = DeflateConfig::no_context_takeover();
/// cfg.server_max_window_bits = 10;
/// assert_eq!(
///     client_offer(&cfg),
///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
///      server_max_window_bits=10; client_max_window_bits"
/// );
/// ```
#[must_use]
pub fn client_offer(cfg: &DeflateConfig) -> String {
    let mut s = String::from(EXTENSION_NAME);
    if cfg.server_no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if cfg.client_no_context_takeover {
        s.push_str("; client_no_context_takeover");
    }
    if cfg.server_bits() < MAX_WINDOW_BITS {
        s.push_str(&format!("; server_max_window_bits={}", cfg.server_bits()));
    }
    if cfg.client_bits() < MAX_WINDOW_BITS {
        s.push_str(&format!("; client_max_window_bits={}", cfg.client_bits()));
    } else {
        s.push_str("; client_max_window_bits");
    }
    s
}

/// The server's side (RFC 7692 §7.1): takes the first acceptable `permessage-deflate` offer
/// among `offers` (the elements of the request's `Sec-WebSocket-Extensions`, in order, as
/// [`UpgradeRequest::extensions`](crate::ws::UpgradeRequest::extensions) gives them) and
/// returns the answer for the response header and the agreement.
///
/// An offer with an unknown, repeated or invalid parameter is declined and the next one is
/// looked at; `None` when none is acceptable (the extension is then not used). Every
/// well-formed offer is acceptable (a window of 8 for the server's sends is honoured by
/// sending uncompressed). The answer:
/// - `server_no_context_takeover` when offered or configured;
/// - `client_no_context_takeover` when offered (the client resets anyway; saying so lets
///   the server free its inflater between messages) or configured;
/// - `server_max_window_bits` = the smaller of the offered and configured values, present
///   when either is below 15 (§7.1.2.1 lets a server limit itself unasked);
/// - `client_max_window_bits` only when offered (§7.1.2.2): the smaller of the offered value
///   (if any) and the configured one, present when that is below 15.
///
/// ```
/// use tidewire::ws::deflate::{DeflateConfig, negotiate_server};
///
/// let offers = ["x-webkit-deflate-frame".to_owned(),
///     "permessage-deflate; server_max_window_bits=20".to_owned(),   // invalid: declined
///     "permessage-deflate; client_max_window_bits".to_owned()];
/// let (answer, params) = negotiate_server(&DeflateConfig::default(), &offers).unwrap();
/// assert_eq!(answer, "permessage-deflate");
/// assert_eq!(params.client_max_window_bits, 15);
/// ```
#[must_use]
pub fn negotiate_server(cfg: &DeflateConfig, offers: &[String]) -> Option<(String, DeflateParams)> {
    let offer = offers.iter().filter_map(|o| parse_offer(o)).find_map(Result::ok)?;
    let server_bits =
        offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS).min(cfg.server_bits());
    let client_bits = match offer.client_max_window_bits {
        ClientBits::Absent => None,
        ClientBits::Supported => Some(cfg.client_bits()),
        ClientBits::Bits(b) => Some(b.min(cfg.client_bits())),
    };
    let params = DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover
            || cfg.server_no_context_takeover,
        client_no_context_takeover: offer.client_no_context_takeover
            || cfg.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits.unwrap_or(MAX_WINDOW_BITS),
    };
    let mut answer = String::from(EXTENSION_NAME);
    if params.server_no_context_takeover {
        answer.push_str("; server_no_context_takeover");
    }
    if params.client_no_context_takeover {
        answer.push_str("; client_no_context_takeover");
    }
    if server_bits < MAX_WINDOW_BITS {
        answer.push_str(&format!("; server_max_window_bits={server_bits}"));
    }
    if let Some(bits) = client_bits.filter(|&b| b < MAX_WINDOW_BITS) {
        answer.push_str(&format!("; client_max_window_bits={bits}"));
    }
    Some((answer, params))
}

/// The client's side (RFC 7692 §7.1): checks the server's answer against the offer that
/// [`client_offer`] made for `cfg`. `answers` are the elements of the response's
/// `Sec-WebSocket-Extensions` headers, in order.
///
/// `Ok(None)`: the server declined (no element). `Ok(Some(params))`: the agreement; when
/// the client offered `client_no_context_takeover`, it resets whatever the answer says.
///
/// # Errors
/// Any [`NegotiationError`]: another extension or permessage-deflate twice
/// (`UnexpectedExtension`), a malformed answer, `server_no_context_takeover` or
/// `server_max_window_bits` missing when asked for, or a window above the offered one
/// (`Mismatch`). The client then fails the connection with 1010.
pub fn negotiate_response(
    cfg: &DeflateConfig,
    answers: &[String],
) -> Result<Option<DeflateParams>, NegotiationError> {
    let mut found = None;
    for element in answers {
        let (name, rest) = split_name(element);
        if !name.eq_ignore_ascii_case(EXTENSION_NAME) || found.is_some() {
            return Err(NegotiationError::UnexpectedExtension);
        }
        let p = if element.contains(';') { parse_params(rest, false)? } else { Params::default() };
        found = Some(p);
    }
    let Some(p) = found else { return Ok(None) };
    if cfg.server_no_context_takeover && !p.server_no_context_takeover {
        return Err(NegotiationError::Mismatch);
    }
    let asked_server_bits = (cfg.server_bits() < MAX_WINDOW_BITS).then(|| cfg.server_bits());
    let server_bits = match (asked_server_bits, p.server_max_window_bits) {
        (Some(_), None) => return Err(NegotiationError::Mismatch),
        (Some(asked), Some(got)) if got > asked => return Err(NegotiationError::Mismatch),
        (_, got) => got.unwrap_or(MAX_WINDOW_BITS),
    };
    let client_bits = match p.client_max_window_bits {
        ClientBits::Bits(got) if got > cfg.client_bits() => return Err(NegotiationError::Mismatch),
        ClientBits::Bits(got) => got,
        ClientBits::Absent | ClientBits::Supported => cfg.client_bits(),
    };
    Ok(Some(DeflateParams {
        server_no_context_takeover: p.server_no_context_takeover,
        client_no_context_takeover: p.client_no_context_takeover || cfg.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    }))
}

#[cfg(test)]
mod tests;
