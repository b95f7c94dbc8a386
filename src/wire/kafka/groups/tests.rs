//! Unit tests of the group state machine (`super::state`): pure, no I/O.
