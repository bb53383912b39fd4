//! `rewards-runtime`: the pipeline (decode, evaluate, persist, ack) and its
//! sources (Kafka, JSON-lines files, in-process calls).
