//! The fuzz targets' code lives in [`harness`], which `tests/fuzz_regressions.rs` also compiles
//! (by path) to replay every saved input: a finding and its regression test run the same code.

pub mod harness;
