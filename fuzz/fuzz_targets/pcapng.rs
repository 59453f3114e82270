#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfilwatch_fuzz::harness::pcapng(data));
