//! The fixtures, end to end: runs the real `exfilwatch` binary over every case of
//! fixtures/manifest.toml and compares its exit status and its alerts (the keys in [`KEYS`], same
//! number, same order) with the expected files fixtures/generate.rs wrote from each scenario.
//! Cases that name more keys in `also_compare` (severity, the `flow` object, a by_src volume
//! alert's `bytes` and `window`, a policy alert's zones) compare those too, and cases with a
//! `flows` file also run with `--flows FILE` and compare the flow records' [`RECORD_KEYS`] (as a
//! set: flows that end at the same moment, e.g. at the end of the input, come in no specified
//! order). Also: the checked-in fixtures are exactly what the generator writes today, the
//! `--format text` lines of two cases match whole, and standard input and `--alerts` behave like
//! the files. fixtures/README.md says what each fixture proves.

#[path = "../fixtures/generate.rs"]
#[allow(dead_code)]
mod generate;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// The alert keys compared; any other key of the binary's output is ignored.
const KEYS: &[&str] = &[
    "timestamp",
    "rule",
    "proto",
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "icmp_type",
    "icmp_code",
    "vlan",
    "suppressed",
    "community_id",
];

/// The flow record keys compared: all that the spec names (it says nothing of an ICMP record's
/// type and code, so those are not compared).
const RECORD_KEYS: &[&str] = &[
    "timestamp",
    "event_type",
    "proto",
    "src_ip",
    "src_port",
    "dest_ip",
    "dest_port",
    "vlan",
    "community_id",
    "flow",
];

/// How long one run of the binary over a few small files may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

/// One `[[case]]` of fixtures/manifest.toml; paths are relative to fixtures/.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    about: String,
    files: Vec<String>,
    rules: Option<String>,
    exit: i32,
    expected: String,
    text: Option<String>,
    /// Substrings standard error must contain (what an error message has to name).
    #[serde(default)]
    stderr: Vec<String>,
    /// Alert keys compared on top of [`KEYS`].
    #[serde(default)]
    also_compare: Vec<String>,
    /// The expected flow records of a run with `--flows`.
    flows: Option<String>,
}

impl Case {
    /// The alert keys this case compares: [`KEYS`] and its `also_compare`.
    fn keys(&self) -> Vec<&str> {
        KEYS.iter()
            .copied()
            .chain(self.also_compare.iter().map(String::as_str))
            .collect()
    }

    /// `read --quiet [EXTRA...] [--rules fixtures/RULES] fixtures/FILE...`
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["read", "--quiet"].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(rules) = &self.rules {
            args.push("--rules".to_string());
            args.push(format!("fixtures/{rules}"));
        }
        args.extend(self.files.iter().map(|f| format!("fixtures/{f}")));
        args
    }
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures_dir() -> PathBuf {
    crate_dir().join("fixtures")
}

fn manifest() -> Vec<Case> {
    let path = fixtures_dir().join("manifest.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `cargo run --example gen_fixtures`)",
            path.display()
        )
    });
    let manifest: Manifest =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    manifest.case
}

fn case(name: &str) -> Case {
    manifest()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name} in fixtures/manifest.toml"))
}

/// What one run of the binary did.
struct Run {
    /// The exit status; None if it was killed by a signal or timed out.
    status: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Runs the binary from the crate directory, feeding `stdin` if given, for at most
/// [`RUN_TIMEOUT`].
fn exfilwatch(args: &[String], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(args)
        .current_dir(crate_dir())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the exfilwatch binary starts");
    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        // The binary may exit before reading everything: a broken pipe is not our failure.
        thread::spawn(move || drop(pipe.write_all(&bytes)))
    });
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let (status, timed_out) = wait_with_timeout(&mut child);
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin feeder");
    }
    Run {
        status,
        timed_out,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        drop(pipe.read_to_end(&mut bytes));
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_with_timeout(child: &mut Child) -> (Option<i32>, bool) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        match child.try_wait().expect("waiting for exfilwatch") {
            Some(status) => return (status.code(), false),
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            None => {
                drop(child.kill());
                drop(child.wait());
                return (None, true);
            }
        }
    }
}

/// The `keys` of one JSON object, in that order, as one line of JSON (a nested object's keys
/// sorted).
fn project(object: &Value, keys: &[&str]) -> String {
    let fields: Vec<String> = keys
        .iter()
        .filter_map(|&key| object.get(key).map(|v| format!("\"{key}\":{v}")))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// Parses JSON lines and projects each onto [`KEYS`]; a line that is not a JSON object is kept
/// as `NOT JSON: line`, so it shows in the diff.
fn projected_lines(text: &str) -> Vec<String> {
    projected_lines_on(text, KEYS)
}

/// Parses JSON lines and projects each onto `keys`.
fn projected_lines_on(text: &str, keys: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => project(&v, keys),
            _ => format!("NOT JSON: {line}"),
        })
        .collect()
}

/// A line diff (longest common subsequence): `  ` both, `- ` expected only, `+ ` actual only.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push_str(&format!("      {}\n", expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("    - {}\n", expected[i]));
            i += 1;
        } else {
            out.push_str(&format!("    + {}\n", actual[j]));
            j += 1;
        }
    }
    out
}

/// Compares one run with the expected exit status and lines; None if they agree, else a report.
fn compare(
    what: &str,
    args: &[String],
    run: &Run,
    exit: i32,
    expected: &[String],
    actual: &[String],
) -> Option<String> {
    compare_with_stderr(what, args, run, exit, expected, actual, &[])
}

/// [`compare`], also requiring each of `stderr_names` in standard error.
fn compare_with_stderr(
    what: &str,
    args: &[String],
    run: &Run,
    exit: i32,
    expected: &[String],
    actual: &[String],
    stderr_names: &[String],
) -> Option<String> {
    let status_ok = run.status == Some(exit);
    let missing: Vec<&String> = stderr_names
        .iter()
        .filter(|s| !run.stderr.contains(s.as_str()))
        .collect();
    if status_ok && expected == actual && missing.is_empty() {
        return None;
    }
    let mut report = format!("{what}\n  command: exfilwatch {}\n", args.join(" "));
    if run.timed_out {
        report.push_str(&format!("  timed out after {RUN_TIMEOUT:?}\n"));
    } else if !status_ok {
        report.push_str(&format!(
            "  exit status {:?}, expected {exit}\n",
            run.status
        ));
    }
    if expected != actual {
        report.push_str(&format!(
            "  alerts differ ({} expected, {} actual; - expected only, + actual only):\n{}",
            expected.len(),
            actual.len(),
            diff(expected, actual)
        ));
    }
    if !missing.is_empty() {
        report.push_str(&format!("  standard error does not name {missing:?}\n"));
    }
    let stderr: Vec<&str> = run.stderr.lines().take(20).collect();
    if !stderr.is_empty() {
        report.push_str(&format!("  stderr:\n    {}\n", stderr.join("\n    ")));
    }
    Some(report)
}

fn expected_lines(file: &str) -> Vec<String> {
    expected_lines_on(file, KEYS)
}

fn expected_lines_on(file: &str, keys: &[&str]) -> Vec<String> {
    let path = fixtures_dir().join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    projected_lines_on(&text, keys)
}

fn check_case(case: &Case) -> Option<String> {
    let flows_path = case.flows.as_ref().map(|_| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "fixtures-{}-{}.flows.jsonl",
            std::process::id(),
            case.name
        ));
        drop(fs::remove_file(&path));
        path
    });
    let flows_arg = flows_path.as_ref().map(|p| p.display().to_string());
    let extra: Vec<&str> = match &flows_arg {
        Some(p) => vec!["--flows", p.as_str()],
        None => vec![],
    };
    let args = case.args(&extra);
    let run = exfilwatch(&args, None);
    let keys = case.keys();
    let what = format!("case {} ({})", case.name, case.about);
    let mut report = compare_with_stderr(
        &what,
        &args,
        &run,
        case.exit,
        &expected_lines_on(&case.expected, &keys),
        &projected_lines_on(&run.stdout, &keys),
        &case.stderr,
    );
    if let (Some(expected), Some(path)) = (&case.flows, &flows_path) {
        let mut want = expected_lines_on(expected, RECORD_KEYS);
        let written = fs::read_to_string(path).unwrap_or_default();
        drop(fs::remove_file(path));
        let mut got = projected_lines_on(&written, RECORD_KEYS);
        want.sort();
        got.sort();
        if want != got {
            let text = format!(
                "{what}: flow records differ ({} expected, {} written; sorted; - expected \
                 only, + written only):\n{}",
                want.len(),
                got.len(),
                diff(&want, &got)
            );
            report = Some(match report {
                Some(r) => format!("{r}{text}"),
                None => format!("{text}  command: exfilwatch {}\n", args.join(" ")),
            });
        }
    }
    report
}

#[test]
fn every_fixture_case_raises_its_expected_alerts() {
    let cases = manifest();
    assert!(!cases.is_empty(), "fixtures/manifest.toml lists no case");
    let failures: Vec<String> = cases.iter().filter_map(check_case).collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixture cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn text_format_lines_match_whole() {
    let cases: Vec<Case> = manifest()
        .into_iter()
        .filter(|c| c.text.is_some())
        .collect();
    assert!(
        !cases.is_empty(),
        "no case in fixtures/manifest.toml has `text`"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let text_file = case.text.as_deref().unwrap_or_default();
        let path = fixtures_dir().join(text_file);
        let expected: Vec<String> = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .map(str::to_string)
            .collect();
        let args = case.args(&["--format", "text"]);
        let run = exfilwatch(&args, None);
        let actual: Vec<String> = run.stdout.lines().map(str::to_string).collect();
        let what = format!("case {} with --format text", case.name);
        failures.extend(compare(&what, &args, &run, case.exit, &expected, &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn standard_input_reads_like_a_file() {
    let case = case("link_ethernet");
    let bytes = fs::read(fixtures_dir().join(&case.files[0])).expect("link_ethernet.pcap");
    let args: Vec<String> = ["read", "--quiet", "-"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let run = exfilwatch(&args, Some(&bytes));
    let failure = compare(
        "link_ethernet.pcap on standard input",
        &args,
        &run,
        case.exit,
        &expected_lines(&case.expected),
        &projected_lines(&run.stdout),
    );
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
}

#[test]
fn alerts_file_is_appended_to_not_stdout() {
    let case = case("link_ethernet");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures-alerts-append.jsonl");
    fs::write(&path, "").expect("temp alerts file");
    let mut args = case.args(&[]);
    args.splice(2..2, ["--alerts".to_string(), path.display().to_string()]);
    let mut failures = Vec::new();
    for round in 1..=2 {
        let run = exfilwatch(&args, None);
        let what = format!("run {round} with --alerts: standard output");
        failures.extend(compare(
            &what,
            &args,
            &run,
            case.exit,
            &[],
            &projected_lines(&run.stdout),
        ));
    }
    let once = expected_lines(&case.expected);
    let twice: Vec<String> = once.iter().chain(&once).cloned().collect();
    let written = projected_lines(&fs::read_to_string(&path).expect("alerts file"));
    if written != twice {
        failures.push(format!(
            "--alerts {} after two runs (- expected only, + actual only):\n{}",
            path.display(),
            diff(&twice, &written)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn checked_in_fixtures_are_what_the_generator_writes() {
    let fresh = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures-fresh");
    if fresh.exists() {
        fs::remove_dir_all(&fresh).expect("old temp fixtures removed");
    }
    generate::write_all(&fresh).expect("the generator writes into a temp dir");
    let written = files_under(&fresh);
    let checked_in: Vec<String> = files_under(&fixtures_dir())
        .into_iter()
        .filter(|f| f != "generate.rs" && f != "README.md")
        .collect();
    let mut problems = Vec::new();
    for file in &written {
        match fs::read(fixtures_dir().join(file)) {
            Err(_) => problems.push(format!("missing from fixtures/: {file}")),
            Ok(bytes) if bytes != fs::read(fresh.join(file)).expect("fresh file") => {
                problems.push(format!("out of date: fixtures/{file}"))
            }
            Ok(_) => {}
        }
    }
    for file in checked_in.iter().filter(|f| !written.contains(f)) {
        problems.push(format!(
            "not written by the generator (stale?): fixtures/{file}"
        ));
    }
    assert!(
        problems.is_empty(),
        "fixtures/ does not match fixtures/generate.rs; run `cargo run --example gen_fixtures` \
         (and delete stale files):\n  {}",
        problems.join("\n  ")
    );
}

/// Every file under `dir`, as a sorted list of `/`-separated relative paths.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push(parts.join("/"));
            }
        }
    }
    files.sort();
    files
}
