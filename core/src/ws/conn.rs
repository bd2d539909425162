//! `WsConnection`. (Being written.)
