//! Fuzz regressions: every input in `tests/data/fuzz/` replayed through the code of the fuzz
//! target it was found by (or seeds), so a fixed bug stays fixed without cargo-fuzz.
//!
//! A file is named `TARGET-NAME`: TARGET is one of the fuzz targets (`decode`, `engine`,
//! `rules`, `rules_structured`, `capture`, `pcapng`), whose code is `fuzz/src/harness.rs`,
//! compiled here as is; NAME says what the input is (a seed, or the bug it found). Each
//! target's function panics when an invariant breaks; this test replays every file, then fails
//! naming each file that panicked. `scripts/fuzz.sh` runs the targets themselves.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

/// Replaying one input takes milliseconds; this much means it hangs (a fuzzing timeout).
const SLOW: Duration = Duration::from_secs(10);

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("decode", harness::decode),
    ("engine", harness::engine),
    ("rules", harness::rules),
    ("rules_structured", harness::rules_structured),
    ("capture", harness::capture),
    ("pcapng", harness::pcapng),
];

#[test]
fn fuzz_inputs_replay_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("reading tests/data/fuzz").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut per_target = [0usize; TARGETS.len()];
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_else(|| panic!("{}: file name is not UTF-8", path.display()));
        if name.starts_with('.') || name == "README.md" {
            continue;
        }
        let prefix = name.split_once('-').map_or(name, |(t, _)| t);
        let Some(i) = TARGETS.iter().position(|(t, _)| *t == prefix) else {
            panic!("{name}: does not start with a fuzz target name and '-'");
        };
        per_target[i] += 1;
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let run = TARGETS[i].1;
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(|| run(&data));
        let took = start.elapsed();
        match outcome {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(non-string panic)");
                failures.push(format!("{name}: panicked: {msg}"));
            }
            Ok(()) if took > SLOW => failures.push(format!("{name}: took {took:?}")),
            Ok(()) => {}
        }
    }
    for ((target, _), n) in TARGETS.iter().zip(per_target) {
        assert!(
            n > 0,
            "no input for fuzz target {target} in tests/data/fuzz"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} fuzz inputs fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}
