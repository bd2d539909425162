//! The envelope codec's old path: it is [`crate::envelope`] now, shared with the client.
//! These re-exports keep `tidewire::hub::envelope::…` working.

pub use crate::envelope::{ClientMessage, EnvelopeError, ServerMessage};
