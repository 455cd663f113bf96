#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vnu_fuzzing::parsers::ndp(data));
