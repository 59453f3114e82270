//! The command line around `read`: check-rules, the report, broken pipes, bad outputs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn check_rules_prints_the_embedded_defaults() {
    let out = Command::new(BIN).arg("check-rules").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ai = [10.0.1.0/24]"), "{text}");
    assert!(text.contains("id = ai-port-syn"), "{text}");
    assert!(text.contains("id = ai-egress"), "{text}");
    // The port set, merged and sorted, holds the documented services.
    let ports = text
        .lines()
        .skip_while(|l| *l != "[ports]")
        .find(|l| l.starts_with("ai = ["))
        .unwrap();
    for p in ["1234", "7860", "8000", "8080", "11434", "30000"] {
        assert!(ports.contains(p), "{ports}");
    }
}

#[test]
fn check_rules_reports_file_line_and_column() {
    let rules = tmp("bad.toml");
    std::fs::write(
        &rules,
        "[networks]\nai = [\"10.0.1.0/24\"]\n\n[[rule]]\nid = \"x\"\nkind = \"egress\"\nsrc = \"aii\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-rules")
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:7:7: unknown network `aii`", rules.display())),
        "{err}"
    );
}

#[test]
fn closed_pipe_on_stdout_exits_quietly() {
    // Many alerts, a reader that takes one line and goes away.
    let mut child = Command::new(BIN)
        .args(["read", "--quiet"])
        .arg(fixture("reference-layout.pcap"))
        .arg(fixture("reference-layout.pcap"))
        .arg(fixture("reference-layout.pcap"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !err.contains("Broken pipe"),
        "no error for a closed pipe: {err}"
    );
    assert!(out.status.code().is_some(), "not killed by SIGPIPE");
}

#[test]
fn unopenable_alert_path_fails_before_reading() {
    let out = Command::new(BIN)
        .args(["read", "--alerts", "/nonexistent-dir/alerts.json"])
        .arg(fixture("reference-layout.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("/nonexistent-dir/alerts.json: cannot open alert output"),
        "{err}"
    );
    assert!(
        !err.contains("packets"),
        "no summary: nothing was read: {err}"
    );
}

#[test]
fn full_disk_is_reported_with_exit_2() {
    let out = Command::new(BIN)
        .args(["read", "--quiet", "--alerts", "/dev/full"])
        .arg(fixture("reference-layout.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("writing alerts failed"), "{err}");
}

#[test]
fn report_json_lists_top_destinations_and_alerts() {
    let report = tmp("report.json");
    let _ = std::fs::remove_file(&report);
    let out = Command::new(BIN)
        .args(["read", "--quiet", "--report", "--report-json"])
        .arg(&report)
        .arg(fixture("reference-layout.pcap"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("== exfilwatch report =="), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let hosts = v["inside_hosts"].as_array().unwrap();
    // 10.0.1.21 uploads about 6 KB over TLS: it is the top talker, to 93.184.216.34.
    assert_eq!(hosts[0]["host"], "10.0.1.21");
    assert_eq!(hosts[0]["top_destinations"][0]["dest_ip"], "93.184.216.34");
    let alerts = v["alerts"].as_array().unwrap();
    let syn = alerts.iter().find(|a| a["rule"] == "ai-port-syn").unwrap();
    assert_eq!(syn["alerts"], 6);
    let egress = alerts.iter().find(|a| a["rule"] == "ai-egress").unwrap();
    assert_eq!(egress["alerts"], 3);
    assert!(
        v["policy"].is_null(),
        "the default rules ship the policy commented out"
    );
}

/// A classic pcap of SYNs to 10.0.1.20:11434 at the given (unsigned 32-bit) seconds.
fn syns_at(path: &Path, secs: &[u32]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[
        2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ]);
    for (i, &s) in secs.iter().enumerate() {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 0, 3, 1 + i as u8, 10, 0, 1, 20, 0x9c, 0x40, 0x2c, 0xaa]);
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&7u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&f);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn classic_pcap_seconds_are_unsigned_past_2038() {
    let pcap = tmp("y2038.pcap");
    syns_at(&pcap, &[0x7fff_ffff, 0x8000_0000, 0xffff_ffff]);
    let out = Command::new(BIN)
        .args(["read", "--quiet"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stamps: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["timestamp"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        stamps,
        [
            "2038-01-19T03:14:07.000007Z",
            "2038-01-19T03:14:08.000007Z",
            "2106-02-07T06:28:15.000007Z"
        ]
    );
}

/// The summary's `open_at_end`: without `--flows` the flows left at the end are only counted
/// (by end reason, with a shortcut when none of them was closed by FIN or RST); with it each
/// gets a record. On every fixture the count must equal the records with reason `shutdown`,
/// and every created flow must end exactly once.
#[test]
fn summary_counts_the_flows_open_at_the_end_as_their_records_do() {
    let summary_field = |stderr: &str, key: &str| -> Option<u64> {
        let flows = stderr
            .lines()
            .find(|l| l.trim_start().starts_with("flows:"))?;
        flows
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .map(|v| v.parse().expect("a number"))
    };
    let mut checked = 0;
    let (mut open_total, mut closed_records) = (0, 0);
    let files = common::files_in("fixtures", &["pcap", "pcapng"]);
    for (i, file) in files.iter().enumerate() {
        let counted = Command::new(BIN)
            .args(["read", "--alerts", "/dev/null"])
            .arg(file)
            .output()
            .unwrap();
        let records_path = tmp(&format!("open-at-end-{i}.json"));
        let _ = std::fs::remove_file(&records_path);
        let recorded = Command::new(BIN)
            .args(["read", "--alerts", "/dev/null", "--flows"])
            .arg(&records_path)
            .arg(file)
            .output()
            .unwrap();
        let records = std::fs::read_to_string(&records_path).unwrap_or_default();
        let _ = std::fs::remove_file(&records_path);
        let (err1, err2) = (
            String::from_utf8_lossy(&counted.stderr),
            String::from_utf8_lossy(&recorded.stderr),
        );
        let (Some(open), Some(open2)) = (
            summary_field(&err1, "open_at_end"),
            summary_field(&err2, "open_at_end"),
        ) else {
            // A file nothing could be read from has no summary.
            assert_eq!(
                counted.status.code(),
                Some(2),
                "{file:?}: no summary: {err1}"
            );
            continue;
        };
        let reason = |r: &str| {
            records
                .lines()
                .filter(|l| l.contains(&format!("\"reason\":\"{r}\"")))
                .count() as u64
        };
        assert_eq!(
            open, open2,
            "{file:?}: the summary with and without --flows"
        );
        assert_eq!(open, reason("shutdown"), "{file:?}: {err1}");
        assert_eq!(
            records.lines().count() as u64,
            summary_field(&err1, "created").unwrap(),
            "{file:?}: one record per created flow"
        );
        open_total += open;
        closed_records += reason("fin") + reason("rst");
        checked += 1;
    }
    assert!(checked >= 40, "{checked} fixtures had a summary");
    assert!(
        open_total > 0 && closed_records > 0,
        "{open_total} open, {closed_records} closed"
    );
}

/// Alerts and flow records given one file (as Suricata's eve.json holds both) share it: every
/// line whole, the same lines as two files get.
#[test]
fn alerts_and_flow_records_can_share_one_file() {
    let capture = fixture("flow_expiry.pcap");
    let (alerts, flows, both) = (
        tmp("own-alerts.json"),
        tmp("own-flows.json"),
        tmp("both.json"),
    );
    for p in [&alerts, &flows, &both] {
        let _ = std::fs::remove_file(p);
    }
    let run = |a: &Path, f: &Path| {
        let out = Command::new(BIN)
            .args(["read", "--quiet", "--alerts"])
            .arg(a)
            .arg("--flows")
            .arg(f)
            .arg(&capture)
            .output()
            .unwrap();
        assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    };
    run(&alerts, &flows);
    // The same file by two spellings.
    run(&both, &tmp("../cli/both.json"));
    let lines = |p: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.ends_with('\n'));
        let v: Vec<String> = text.lines().map(String::from).collect();
        for l in &v {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
        v
    };
    let mut separate = lines(&alerts);
    separate.extend(lines(&flows));
    separate.sort();
    let mut shared = lines(&both);
    shared.sort();
    assert!(shared
        .iter()
        .any(|l| l.contains("\"event_type\":\"alert\"")));
    assert!(shared.iter().any(|l| l.contains("\"event_type\":\"flow\"")));
    assert_eq!(shared, separate);
    for p in [&alerts, &flows, &both] {
        let _ = std::fs::remove_file(p);
    }
}
