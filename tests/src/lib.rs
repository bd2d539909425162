//! Workspace-level tests for Tidewire live in `tests/tests/`: property tests (proptest),
//! deterministic simulations and interop runs. This library is intentionally empty.
