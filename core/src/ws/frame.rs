//! RFC 6455 §5 frame codec. (Being written: see the issue-2 brief.)
