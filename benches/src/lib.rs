//! Benchmarks and the load generator of the rewards engine.
pub mod eval_inputs;
pub mod peers;
pub mod store_load;
