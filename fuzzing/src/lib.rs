//! Fuzz harnesses for what a guest controls: each entry point turns an arbitrary byte string
//! into a scenario (frames, descriptor rings, host events) and drives the backend's code with
//! it. The cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) call them with generated inputs;
//! `tests/corpus.rs` replays the committed corpus through the same functions on stable, so a
//! crash the fuzzer once found stays fixed.
//!
//! An entry point may panic only when it finds a bug: anything a guest can send must be
//! dropped or answered, never crash, hang or overflow.

mod bytes;
pub mod engine;
pub mod parsers;
pub mod ring;

pub use bytes::Input;

/// A harness: runs one input.
pub type Harness = fn(&[u8]);

/// The fuzz targets by name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` name them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("ring", ring::run),
    ("engine", engine::run),
    ("dhcp", parsers::dhcp),
    ("dhcpv6", parsers::dhcpv6),
    ("ndp", parsers::ndp),
    ("tftp", parsers::tftp),
];
