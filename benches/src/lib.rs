//! Benchmarks and the load generator of the rewards engine.
pub mod peers;
