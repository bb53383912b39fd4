//! The bundled example daemon (`rewards-daemon`) and its building blocks.
//!
//! See [`daemon`] for how it is put together and `docs/operations.md` for
//! how to run it.

pub mod daemon;
