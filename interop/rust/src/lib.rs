//! Nothing to see here: this crate only holds the lapin interop tests under `tests/`.
