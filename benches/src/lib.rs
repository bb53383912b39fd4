//! Benchmarks and the load generator of the rewards engine.
