//! Workspace-level tests for Tidewire live in `tests/tests/`: property tests (proptest),
//! deterministic simulations and interop runs. This library only compiles the README's
//! code blocks as doctests, so the quickstart can never drift from the API.

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
