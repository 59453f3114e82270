//! Same input, same bytes. Every output of `exfilwatch read` (alerts, flow records, the report
//! as text and as JSON, the summary without its wall-clock rate, the exit status) must be
//! identical from run to run, however its threads happen to be scheduled: time is packet time,
//! and nothing may depend on which thread got there first or on a hash seed.
//!
//! Each input is read twice: once as usual, and once with the process pinned to one CPU (the
//! lowest it may use), where the capture, engine and writer threads take turns instead of
//! overlapping, so batches reach the engine and records the writer at other moments. A run
//! must exit 0, 1 or 2 (never a signal) and, when its alerts go to a file, leave standard
//! output empty.
//!
//! - [`fixtures_give_the_same_bytes_every_run`]: every fixture capture with the embedded rules
//!   (JSON and text alerts) and with every readable rule file of `fixtures/rules/` and
//!   `rules/`; at least half of the runs must write alerts and three quarters flow records.
//! - [`large_inputs_give_the_same_bytes_every_run`]: generated captures of hundreds of batches:
//!   the benches' SPAN-like mix (default rules as JSON and as text, by-source volume, policy
//!   and watch_many rules), two mixes read as one timeline, and a SYN flood with the default
//!   rules and through a two-flow table (an eviction per packet); the mix and the flood also
//!   from standard input with JSON alerts on standard output.

#[path = "../benches/mixgen.rs"]
mod mixgen;

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory of this test process's own (two `cargo test` runs may share the target
/// directory).
fn work_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("determinism-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Everything one run wrote, as compared.
#[derive(PartialEq, Eq)]
struct Outputs {
    /// Exit status (0, 1 or 2: a signal or another status fails the test at once).
    status: i32,
    alerts: Vec<u8>,
    flows: Vec<u8>,
    report_json: Vec<u8>,
    /// Diagnostics and the summary, the summary's wall-clock rate cut off.
    summary: String,
    /// `--report`'s text (standard error, after the summary).
    report: String,
}

/// The text `--report` starts with on standard error.
const REPORT_HEADING: &str = "\n== exfilwatch report ==\n";

/// The summary's first line ends in " in 0.123 s (16260 packets/s)": the one part that is not
/// packet time. Every other byte stays.
fn without_rate(summary: &str) -> String {
    summary
        .split_inclusive('\n')
        .map(|l| {
            let body = l.trim_end_matches('\n');
            match body.rfind(" in ") {
                Some(i) if body.starts_with("exfilwatch: ") && body.ends_with(" packets/s)") => {
                    format!("{}{}", &body[..i], &l[body.len()..])
                }
                _ => l.to_string(),
            }
        })
        .collect()
}

/// The lowest CPU this process may run on (a container's cpuset need not include CPU 0),
/// asked once.
fn first_allowed_cpu() -> usize {
    static CPU: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sched_getaffinity fills the set it is given; CPU_ISSET reads it.
    *CPU.get_or_init(|| unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("no CPU in this process's affinity mask")
    })
}

/// Where a run reads its capture and writes its alerts.
#[derive(Clone, Copy)]
enum Io<'a> {
    /// The captures named in the arguments; alerts to a file (`--alerts`).
    Files,
    /// This capture on standard input (the arguments name `-`); alerts to standard output.
    Piped(&'a Path),
}

/// Runs `exfilwatch read` with `args` and every output option, writing into `dir`; pinned to
/// one CPU when `pin`.
fn read(args: &[&str], io: Io<'_>, dir: &Path, pin: bool) -> Outputs {
    let (alerts, flows, report_json) = (dir.join("alerts"), dir.join("flows"), dir.join("rj"));
    for f in [&alerts, &flows, &report_json] {
        let _ = std::fs::remove_file(f);
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("read");
    if let Io::Files = io {
        cmd.arg("--alerts").arg(&alerts);
    }
    cmd.arg("--flows")
        .arg(&flows)
        .arg("--report")
        .arg("--report-json")
        .arg(&report_json)
        .args(args)
        .current_dir(crate_dir());
    if pin {
        let cpu = first_allowed_cpu();
        // SAFETY: between fork and exec only sched_setaffinity runs, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let what = format!("read {}", args.join(" "));
    let stdin = match io {
        Io::Files => Stdio::null(),
        Io::Piped(capture) => Stdio::from(std::fs::File::open(capture).unwrap()),
    };
    let out = common::run_with_stdin(&mut cmd, stdin, Duration::from_secs(120)).unwrap();
    let status = match out.status.code() {
        Some(c @ 0..=2) => c,
        _ => panic!("{what}: {} (stderr: {})", out.status, out.stderr),
    };
    if let Io::Files = io {
        assert!(
            out.stdout.is_empty(),
            "{what}: standard output not empty with --alerts"
        );
    }
    let (summary, report) = match out.stderr.find(REPORT_HEADING) {
        Some(i) => (&out.stderr[..i], &out.stderr[i..]),
        None => (&out.stderr[..], ""),
    };
    let slurp = |p: &Path| std::fs::read(p).unwrap_or_default();
    Outputs {
        status,
        alerts: match io {
            Io::Files => slurp(&alerts),
            Io::Piped(_) => out.stdout,
        },
        flows: slurp(&flows),
        report_json: slurp(&report_json),
        summary: without_rate(summary),
        report: report.to_string(),
    }
}

/// Reads `args` once more, pinned, and names the outputs that differ from `free` (a run of
/// the same arguments as usual).
fn differs(args: &[&str], io: Io<'_>, dir: &Path, free: &Outputs) -> Option<String> {
    let (a, b) = (free, &read(args, io, dir, true));
    if a == b {
        return None;
    }
    let what = [
        ("exit status", a.status != b.status),
        ("alerts", a.alerts != b.alerts),
        ("flow records", a.flows != b.flows),
        ("--report-json", a.report_json != b.report_json),
        ("--report", a.report != b.report),
        ("summary", a.summary != b.summary),
    ];
    let names: Vec<&str> = what.iter().filter(|w| w.1).map(|w| w.0).collect();
    Some(format!(
        "read {}: {} differ",
        args.join(" "),
        names.join(", ")
    ))
}

/// [`common::files_in`] as strings, for arguments.
fn files_in(dir: &str, ext: &[&str]) -> Vec<String> {
    common::files_in(dir, ext)
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn fixtures_give_the_same_bytes_every_run() {
    let captures = files_in("fixtures", &["pcap", "pcapng"]);
    // The bad_* rule files fail before reading (the fixture tests check their messages).
    let mut rules: Vec<String> = files_in("fixtures/rules", &["toml"])
        .into_iter()
        .filter(|r| !r.contains("/bad_"))
        .collect();
    rules.extend(files_in("rules", &["toml"]));
    assert!(captures.len() >= 50, "fixtures missing: {captures:?}");
    assert!(rules.len() >= 10, "rule files missing: {rules:?}");
    let dir = work_dir("fixtures");
    let mut failures = Vec::new();
    let (mut runs, mut with_alerts, mut with_flows) = (0, 0, 0);
    for cap in &captures {
        let mut sets: Vec<Vec<&str>> = vec![vec![cap], vec!["--format", "text", cap]];
        sets.extend(rules.iter().map(|r| vec!["--rules", r.as_str(), cap]));
        for args in &sets {
            let free = read(args, Io::Files, &dir, false);
            runs += 1;
            with_alerts += usize::from(!free.alerts.is_empty());
            with_flows += usize::from(!free.flows.is_empty());
            failures.extend(differs(args, Io::Files, &dir, &free));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} inputs gave different bytes on a second run:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Most runs must have had something to compare.
    assert!(
        with_alerts * 2 >= runs && with_flows * 4 >= runs * 3,
        "of {runs} runs only {with_alerts} wrote alerts and {with_flows} flow records"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The other test may still use it; the last one out removes it.
    let _ = std::fs::remove_dir(dir.parent().unwrap());
}

#[test]
fn large_inputs_give_the_same_bytes_every_run() {
    let dir = work_dir("large");
    let mix = dir.join("mix.pcap");
    let n = mixgen::span_mix(&mix, 200_000).unwrap();
    assert!(n >= 200_000, "the mix has {n} packets");
    let half = dir.join("mix-half.pcap");
    mixgen::span_mix(&half, 100_000).unwrap();
    let flood = dir.join("flood.pcap");
    mixgen::syn_flood(&flood, 50_000).unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (mix, half, flood) = (s(&mix), s(&half), s(&flood));

    let (mix_path, flood_path) = (PathBuf::from(&mix), PathBuf::from(&flood));
    // (arguments, input and alert output, whether alerts are expected)
    let mut cases: Vec<(Vec<&str>, Io, bool)> = vec![
        (vec![&mix], Io::Files, true),
        (vec!["--format", "text", &mix], Io::Files, true),
    ];
    for r in [
        "fixtures/rules/volume_by_src.toml",
        "fixtures/rules/policy.toml",
        "fixtures/rules/watch_many.toml",
    ] {
        cases.push((vec!["--rules", r, &mix], Io::Files, true));
    }
    // Two files as one timeline; the second starts over in time, and the same generator's
    // flows in it continue the first's.
    cases.push((vec![&half, &mix], Io::Files, true));
    // Every packet a new flow in a two-flow table (an eviction per packet; its one rule,
    // AI-host egress, matches none of them), and with the defaults.
    cases.push((
        vec!["--rules", "fixtures/rules/flow_eviction.toml", &flood],
        Io::Files,
        false,
    ));
    cases.push((vec![&flood], Io::Files, true));
    // A pipe in and out: the capture on standard input, JSON alerts on standard output.
    cases.push((vec!["-"], Io::Piped(&mix_path), true));
    cases.push((vec!["-"], Io::Piped(&flood_path), true));

    let mut failures = Vec::new();
    for (args, io, alerts) in &cases {
        let free = read(args, *io, &dir, false);
        let what = format!("read {}", args.join(" "));
        assert_eq!(free.status, i32::from(*alerts), "{what}: exit status");
        assert!(
            !alerts || free.alerts.len() > 100_000,
            "{what}: too few alerts to mean anything ({} bytes)",
            free.alerts.len()
        );
        assert!(free.flows.len() > 100_000, "{what}: too few flow records");
        failures.extend(differs(args, *io, &dir, &free));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
    // The other test may still use it; the last one out removes it.
    let _ = std::fs::remove_dir(dir.parent().unwrap());
}
