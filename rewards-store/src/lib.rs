//! `rewards-store`: PostgreSQL (source of truth) and Redis (write-through
//! cache) adapters implementing the storage traits of `rewards-core`.

pub mod postgres;

pub mod breaker;
pub mod cached;
pub mod redis;
