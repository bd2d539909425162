//! The hub: protocol-agnostic multi-connection logic (DESIGN.md "The hub"). So far the
//! [`envelope`] protocol that WebSocket clients speak to it.

pub mod envelope;
