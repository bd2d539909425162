//! The client's wire formats' old path: they are [`crate::envelope`] now, one codec shared
//! with the hub. These re-exports keep `tidewire::client::wire::…` working.

pub use crate::envelope::{PollBody, ServerMessage as ServerFrame, decode_publish_reply};
