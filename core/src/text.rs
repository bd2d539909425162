//! Text that is known to be UTF-8: [`Utf8Bytes`], a zero-copy validated payload shared by
//! every protocol that carries text (a WebSocket text message, an SSE event's data).
//!
//! This is the one module of `tidewire` allowed `unsafe`: [`Utf8Bytes::as_str`] skips
//! re-validation of bytes that were validated when the value was built.
#![allow(unsafe_code)]

use core::fmt;
use core::ops::Deref;

use bytes::Bytes;

/// Bytes that are valid UTF-8: a text message payload, shared and zero-copy like [`Bytes`].
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

/// The bytes given to [`Utf8Bytes::try_from_bytes`] are not UTF-8; they are handed back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bytes are not valid UTF-8")]
pub struct NotUtf8(pub Bytes);

impl Utf8Bytes {
    /// Wraps a static string without copying.
    #[must_use]
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Validates `bytes` (SIMD-accelerated) and wraps them without copying.
    ///
    /// # Errors
    /// [`NotUtf8`] with the bytes when they are not valid UTF-8.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, NotUtf8> {
        if simdutf8::basic::from_utf8(&bytes).is_ok() {
            Ok(Self(bytes))
        } else {
            Err(NotUtf8(bytes))
        }
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `Utf8Bytes` either validates the bytes (`try_from_bytes`,
        // `from_validated` callers validate first) or starts from a `str`/`String`, and the
        // inner `Bytes` is never mutated afterwards.
        unsafe { core::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying shared bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the UTF-8 guarantee and returns the bytes.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Wraps bytes the caller has already validated as UTF-8 (checked in debug builds).
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(core::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(t: Utf8Bytes) -> Self {
        t.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
