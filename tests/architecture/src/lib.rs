//! Test-only crate: the tests under `tests/` hold two invariants of ARCHITECTURE.md.
//!
//! - `layers.rs`: every `crate::…`, `super::…` and cross-crate path in the production code of
//!   `bosun-model`, `bosun-agent` and `bosun-control` is an edge the layers table in
//!   ARCHITECTURE.md allows, and no modules import each other in a cycle, at any depth.
//! - `dependencies.rs`: `bosun-model` and `bosun-control` do not link the crates they must not
//!   (`cargo tree -e normal`).
