//! Same input, same bytes. Every output of `exfilwatch read` (alerts, flow records, the report
//! as text and as JSON, the summary without its wall-clock rate, the exit status) must be
//! identical from run to run, however its threads happen to be scheduled: time is packet time,
//! and nothing may depend on which thread got there first or on a hash seed.
//!
//! Each input is read twice: once as usual, and once with the process pinned to one CPU (the
//! lowest it may use), where the capture, engine and writer threads take turns instead of
//! overlapping, so batches reach the engine and records the writer at other moments.
//!
//! - [`fixtures_give_the_same_bytes_every_run`]: every fixture capture with the embedded rules
//!   and with every rule file of `fixtures/rules/` and `rules/`.
//! - [`large_inputs_give_the_same_bytes_every_run`]: generated captures of hundreds of batches:
//!   the benches' SPAN-like mix (default, by-source volume and policy rules) and a SYN flood
//!   through a two-flow table (an eviction per packet), each with flow records and the report;
//!   and two mixes read as one timeline.

#[path = "../benches/mixgen.rs"]
mod mixgen;

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("determinism")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Everything one run wrote, as compared.
#[derive(PartialEq, Eq)]
struct Outputs {
    status: Option<i32>,
    alerts: Vec<u8>,
    flows: Vec<u8>,
    report_json: Vec<u8>,
    stdout: Vec<u8>,
    /// Diagnostics and the summary, its wall-clock rate cut off.
    stderr: String,
}

/// The summary's first line ends in "in 0.123 s (16260 packets/s)": the one part that is not
/// packet time.
fn without_rate(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| match l.rfind(" in ") {
            Some(i) if l.starts_with("exfilwatch: ") && l.ends_with(" packets/s)") => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lowest CPU this process may run on (a container's cpuset need not include CPU 0).
fn first_allowed_cpu() -> usize {
    // SAFETY: sched_getaffinity fills the set it is given; CPU_ISSET reads it.
    unsafe {
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
    }
}

/// Runs `exfilwatch read` with `args` and every output option, writing into `dir`; pinned to
/// one CPU when `pin`.
fn read(args: &[&str], dir: &Path, pin: bool) -> Outputs {
    let (alerts, flows, report_json) = (dir.join("alerts"), dir.join("flows"), dir.join("rj"));
    for f in [&alerts, &flows, &report_json] {
        let _ = std::fs::remove_file(f);
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("read")
        .arg("--alerts")
        .arg(&alerts)
        .arg("--flows")
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
    let out = common::run(&mut cmd, Duration::from_secs(120)).unwrap();
    let slurp = |p: &Path| std::fs::read(p).unwrap_or_default();
    Outputs {
        status: out.status.code(),
        alerts: slurp(&alerts),
        flows: slurp(&flows),
        report_json: slurp(&report_json),
        stdout: out.stdout,
        stderr: without_rate(&out.stderr),
    }
}

/// Reads `args` twice (free, then pinned) and describes the first output that differs.
fn differs(args: &[&str], dir: &Path) -> Option<String> {
    let (a, b) = (read(args, dir, false), read(args, dir, true));
    if a == b {
        return None;
    }
    let what = [
        ("exit status", a.status != b.status),
        ("alerts", a.alerts != b.alerts),
        ("flow records", a.flows != b.flows),
        ("--report-json", a.report_json != b.report_json),
        ("--report (stdout)", a.stdout != b.stdout),
        ("summary (stderr)", a.stderr != b.stderr),
    ];
    let names: Vec<&str> = what.iter().filter(|w| w.1).map(|w| w.0).collect();
    Some(format!(
        "read {}: {} differ",
        args.join(" "),
        names.join(", ")
    ))
}

fn files_in(dir: &Path, ext: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(crate_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| ext.iter().any(|x| e == *x)))
        .map(|p| {
            p.strip_prefix(crate_dir())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn fixtures_give_the_same_bytes_every_run() {
    let captures = files_in(Path::new("fixtures"), &["pcap", "pcapng"]);
    let mut rules = files_in(Path::new("fixtures/rules"), &["toml"]);
    rules.extend(files_in(Path::new("rules"), &["toml"]));
    assert!(captures.len() >= 50, "fixtures missing: {captures:?}");
    assert!(rules.len() >= 10, "rule files missing: {rules:?}");
    let dir = work_dir("fixtures");
    let mut failures = Vec::new();
    let mut runs = 0;
    for cap in &captures {
        let mut sets: Vec<Vec<&str>> = vec![vec![cap.as_str()]];
        sets.extend(
            rules
                .iter()
                .map(|r| vec!["--rules", r.as_str(), cap.as_str()]),
        );
        for args in &sets {
            runs += 1;
            failures.extend(differs(args, &dir));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} inputs gave different bytes on a second run:\n{}",
        failures.len(),
        failures.join("\n")
    );
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

    let mut cases: Vec<Vec<&str>> = vec![vec![&mix]];
    for r in [
        "fixtures/rules/volume_by_src.toml",
        "fixtures/rules/policy.toml",
        "fixtures/rules/watch_many.toml",
    ] {
        cases.push(vec!["--rules", r, &mix]);
    }
    // Two files as one timeline; the second starts over in time, and the same generator's
    // flows in it continue the first's.
    cases.push(vec![&half, &mix]);
    // Every packet a new flow in a two-flow table: an eviction per packet.
    cases.push(vec!["--rules", "fixtures/rules/flow_eviction.toml", &flood]);
    cases.push(vec![&flood]);

    let mut failures = Vec::new();
    for args in &cases {
        let first = read(args, &dir, false);
        assert!(
            first.alerts.len() > 1000 || args.contains(&"fixtures/rules/flow_eviction.toml"),
            "read {}: too few alerts to mean anything ({} bytes)",
            args.join(" "),
            first.alerts.len()
        );
        assert!(
            !first.flows.is_empty(),
            "read {}: no flow records",
            args.join(" ")
        );
        failures.extend(differs(args, &dir));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
