//! Kafka: the consumer-group source, the dead-letter topic producer and topic administration.
