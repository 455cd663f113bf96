//! Benchmarks for vhost-net-user (filled in by the performance work).
