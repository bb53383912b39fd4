//! The bundled example daemon's building blocks and host-application examples.
