//! Benchmarks and the load generator of the rewards engine.
pub mod peers;
pub mod store_load;
