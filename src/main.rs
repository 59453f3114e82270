//! The `exfilwatch` binary: flags in, exit code out; everything else is the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(exfilwatch::cli::main())
}
