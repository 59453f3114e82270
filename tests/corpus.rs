//! Corpus tests: the real binary over the tcpdump project's test captures.
//!
//! The corpus lives outside the repository, at `../shared/corpus/tcpdump/` from the project root
//! (830 .pcap/.pcapng files: dozens of link types, tunnels, IPv6 extension headers and many files
//! that fuzzers made malformed on purpose). Without it both tests print why and pass, except under
//! `CI=true`, where a missing corpus (or a missing `tshark`) is a failure.
//!
//! - [`corpus_is_read_without_panic_or_hang`]: every file, twice (broad JSON rules; embedded
//!   defaults with `--format text` and the summary), each run under a timeout: exit 0, 1 or 2,
//!   never a signal or a panic; the output agrees with the exit status; an error names the file.
//! - [`new_connection_tuples_match_tshark`]: a differential test against Wireshark. For every file
//!   exfilwatch can decode and that may hold a TCP SYN, the (src, sport, dst, dport) tuples of an
//!   any-port `new-connection` rule, with their counts (and, per tuple, the packet numbers that
//!   raised them: `pcap_cnt` against tshark's `frame.number`), must equal what tshark's
//!   dissectors see: its TCP segments with SYN set and ACK, RST clear (the filter
//!   `tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.flags.reset==0`), deduplicated per flow the way
//!   the design does it (see [`TsharkFlows`]). Every accepted difference is listed in [`ACCEPTED`]
//!   with its reason; an unlisted difference fails the test, and so does a listed one that no
//!   longer occurs.
//! - [`read_frames_gives_what_next_frame_gives`]: in-process, the capture layer's batched read
//!   (`pcap_dispatch`, what the capture thread uses) gives every file exactly what reading it
//!   frame by frame gives: the same frames, and the same end or located error, at any batch size.
//! - [`tshark_rows_are_classified_and_deduplicated_per_flow`]: the differential test's own
//!   helpers (tshark row reading, flow replay, pre-filter, timeout) on hand-written inputs.
//!
//! Environment: `CI=true` turns the skips into failures; `EXFILWATCH_CORPUS` points at another
//! corpus directory; `TSHARK` names the tshark binary (default `tshark` on PATH);
//! `EXFILWATCH_TSHARK_ALL=1` runs tshark on every decodable file instead of only those the cheap
//! pre-filter ([`may_hold_tcp_syn`]) selects (about 100 s instead of 15 s on two cores).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

// The batched-read check the fuzz target `capture` runs too.
#[allow(dead_code)]
#[path = "../fuzz/src/harness.rs"]
mod harness;

mod common;
use common::{ci, par_map, run, tshark, Output};

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

/// A run of exfilwatch on one corpus file longer than this is a hang (the whole corpus takes a
/// few seconds).
const EXFILWATCH_TIMEOUT: Duration = Duration::from_secs(20);
const TSHARK_TIMEOUT: Duration = Duration::from_secs(120);

/// One difference between exfilwatch and tshark that is accepted, with the reason.
struct Accepted {
    /// File name inside the corpus directory.
    file: &'static str,
    /// The differences in that file, exactly as the test renders them (see [`diff_tuples`]).
    diffs: &'static [&'static str],
    reason: &'static str,
}

/// Every accepted difference between exfilwatch's new-connection tuples and tshark's.
///
/// Not listed here because they are not differences:
/// - files whose link type exfilwatch does not decode (it exits 2 with "unsupported link type";
///   e.g. `ipoib.pcap`, IP over InfiniBand, and `arcnet-rfc1051-arp-icmp-http.pcap` /
///   `arcnet-rfc1201-arp-icmp-http.pcap`, ARCNET, which do hold TCP SYNs): skipped by the diff,
///   and named in the test's output;
/// - TCP headers that tshark dissects inside ICMP/ICMPv6 error messages: not TCP segments on the
///   wire, never a new connection; such tshark rows are dropped and counted in the output;
/// - SYN retransmissions (e.g. the three SYNs of one flow in `bgp-shutdown-msg-variations.pcap`):
///   tshark's rows are deduplicated per flow, as the design does.
const ACCEPTED: &[Accepted] = &[Accepted {
    file: "geneve.pcap",
    diffs: &["30.0.0.2:51225 -> 30.0.0.1:22: tshark 1 [#3], exfilwatch 0 [] (tunnelled)"],
    reason: "Geneve tunnel (UDP 6081): the SYN is in the inner Ethernet/IPv4 frame; exfilwatch \
             does not decode tunnels, it sees the outer UDP flow 20.0.0.2 -> 20.0.0.1:6081",
}];

// ------------------------------------------------------------------------------------------------
// Test 1: robustness.
// ------------------------------------------------------------------------------------------------

/// Every alert path (new-connection and egress on any address, with a rate limit) for the JSON
/// run; the text run uses the embedded defaults.
const BROAD_RULES: &str = r#"
[networks]
all = ["0.0.0.0/0", "::/0"]

[[rule]]
id = "any-syn"
kind = "new-connection"
severity = "info"

[[rule]]
id = "any-egress"
kind = "egress"
src = "all"
severity = "low"
limit = { count = 3, per = "1s", track = "by_src" }
"#;

#[test]
fn corpus_is_read_without_panic_or_hang() {
    let Some(files) = corpus_files() else { return };
    let rules = write_temp("corpus-broad-rules.toml", BROAD_RULES);
    let started = Instant::now();

    let results = par_map(&files, |file| {
        let mut problems = Vec::new();
        let mut codes = Vec::new();
        let json: [&std::ffi::OsStr; 4] = [
            "read".as_ref(),
            "--quiet".as_ref(),
            "--rules".as_ref(),
            rules.as_os_str(),
        ];
        let text: [&std::ffi::OsStr; 3] = ["read".as_ref(), "--format".as_ref(), "text".as_ref()];
        for (what, is_json, args) in [
            ("json, broad rules", true, &json[..]),
            ("text, embedded defaults", false, &text[..]),
        ] {
            let mut cmd = Command::new(BIN);
            cmd.args(args).arg(file);
            match run(&mut cmd, EXFILWATCH_TIMEOUT) {
                Err(e) => problems.push(format!("{} ({what}): {e}", file.display())),
                Ok(out) => {
                    codes.push(out.status.code());
                    for p in check_robust_run(file, is_json, &out) {
                        problems.push(format!("{} ({what}): {p}", file.display()));
                    }
                }
            }
        }
        (codes, problems)
    });

    let _ = std::fs::remove_file(&rules);
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (codes, p) in results {
        for c in codes {
            let key = c.map_or_else(|| "signal".to_string(), |c| c.to_string());
            *by_code.entry(key).or_default() += 1;
        }
        problems.extend(p);
    }
    println!(
        "corpus robustness: {} files, {} runs in {:.1} s; exit codes {by_code:?}",
        files.len(),
        files.len() * 2,
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) reading the corpus:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn read_frames_gives_what_next_frame_gives() {
    let Some(files) = corpus_files() else { return };
    harness::read_frames_agree(&files, 8_000);
}

/// What one exfilwatch run on a corpus file must satisfy.
fn check_robust_run(file: &Path, json: bool, out: &Output) -> Vec<String> {
    let mut problems = Vec::new();
    if out.stderr.contains("panicked") {
        problems.push(format!("panicked:\n{}", out.stderr.trim_end()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        None => problems.push(format!("killed: {}", out.status)),
        Some(0) if !stdout.is_empty() => {
            problems.push("exit 0 (no alert) but alerts on stdout".to_string())
        }
        Some(1) if stdout.is_empty() => {
            problems.push("exit 1 (alerts) but nothing on stdout".to_string())
        }
        Some(2) => {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            if !out.stderr.contains(&*name) {
                problems.push(format!(
                    "exit 2 without a message naming the file; stderr: {:?}",
                    out.stderr
                ));
            }
        }
        Some(0 | 1) => {}
        Some(c) => problems.push(format!(
            "exit {c} (want 0, 1 or 2); stderr: {}",
            out.stderr.trim_end()
        )),
    }
    if json {
        for line in stdout.lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v["event_type"] == "alert" && v["pcap_filename"].is_string() => {}
                _ => problems.push(format!("not a JSON alert line: {line}")),
            }
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------------
// Test 2: differential test against tshark.
// ------------------------------------------------------------------------------------------------

const ANY_SYN_RULES: &str = r#"
[[rule]]
id = "any-syn"
kind = "new-connection"
severity = "info"
"#;

#[test]
fn new_connection_tuples_match_tshark() {
    let Some(files) = corpus_files() else { return };
    let Some(tshark) = tshark("differential test") else {
        return;
    };
    let run_all = std::env::var("EXFILWATCH_TSHARK_ALL").is_ok_and(|v| v == "1" || v == "true");
    let rules = write_temp("corpus-any-syn-rules.toml", ANY_SYN_RULES);
    let mut problems = Vec::new();

    // Phase 1: exfilwatch on every file, and the cheap pre-filter on its bytes.
    let started = Instant::now();
    let ours = par_map(&files, |file| {
        let mut cmd = Command::new(BIN);
        cmd.args(["read", "--quiet", "--rules"])
            .arg(&rules)
            .arg(file);
        let out = run(&mut cmd, EXFILWATCH_TIMEOUT)?;
        let may_hold_syn = std::fs::read(file).map_or(true, |b| may_hold_tcp_syn(&b));
        let unsupported =
            out.status.code() == Some(2) && out.stderr.contains("unsupported link type");
        let alerts = parse_new_connection_alerts(&out.stdout)?;
        Ok::<_, String>((out, unsupported, may_hold_syn, alerts))
    });
    let phase1 = started.elapsed();
    let _ = std::fs::remove_file(&rules);

    let mut unsupported_with_syn = Vec::new();
    let mut unsupported = 0;
    let mut candidates = Vec::new();
    for (file, result) in files.iter().zip(ours) {
        let name = file_name(file);
        match result {
            Err(e) => problems.push(format!("{name}: exfilwatch: {e}")),
            Ok((out, true, may_hold_syn, _)) => {
                unsupported += 1;
                if may_hold_syn {
                    unsupported_with_syn.push(format!("{name} ({})", out.stderr.trim_end()));
                }
            }
            Ok((_, false, may_hold_syn, alerts)) => {
                if run_all || may_hold_syn || !alerts.is_empty() {
                    candidates.push((file.clone(), alerts));
                }
            }
        }
    }

    // Phase 2: tshark on the candidates.
    let started = Instant::now();
    let theirs = par_map(&candidates, |(file, _)| {
        tshark_new_connections(&tshark, file)
    });
    let phase2 = started.elapsed();

    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files_with_syn = 0;
    let mut icmp_embedded = 0;
    let mut tshark_notes = Vec::new();
    for ((file, ours), theirs) in candidates.iter().zip(theirs) {
        let name = file_name(file);
        let theirs = match theirs {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: tshark: {e}"));
                continue;
            }
        };
        if !theirs.note.is_empty() {
            tshark_notes.push(format!("{name}: {}", theirs.note));
        }
        icmp_embedded += theirs.icmp_embedded_syns;
        if !theirs.counts.is_empty() || !ours.is_empty() {
            files_with_syn += 1;
        }
        let diffs = diff_tuples(ours, &theirs);
        if !diffs.is_empty() {
            found.insert(name, diffs);
        }
    }

    // Compare what was found with the accepted list, both ways.
    let accepted: BTreeMap<&str, &Accepted> = ACCEPTED.iter().map(|a| (a.file, a)).collect();
    assert_eq!(
        accepted.len(),
        ACCEPTED.len(),
        "a file is listed twice in ACCEPTED"
    );
    for (name, diffs) in &found {
        let listed: BTreeSet<&str> = accepted
            .get(name.as_str())
            .map(|a| a.diffs.iter().copied().collect())
            .unwrap_or_default();
        for d in diffs {
            if !listed.contains(d.as_str()) {
                problems.push(format!("{name}: unlisted difference: {d}"));
            }
        }
    }
    for a in ACCEPTED {
        let now: BTreeSet<&str> = found
            .get(a.file)
            .map(|d| d.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for d in a.diffs {
            if !now.contains(d) {
                problems.push(format!(
                    "{}: listed difference no longer occurs (remove it from ACCEPTED): {d}",
                    a.file
                ));
            }
        }
    }

    println!(
        "tshark diff: {} files; {unsupported} skipped (link type exfilwatch does not decode); \
         tshark run on {} ({}); {files_with_syn} hold TCP SYNs; {} accepted difference(s) in \
         {} file(s); {icmp_embedded} ICMP-embedded SYN header(s) ignored; \
         exfilwatch {:.1} s, tshark {:.1} s",
        files.len(),
        candidates.len(),
        if run_all {
            "all decodable files"
        } else {
            "pre-filtered"
        },
        ACCEPTED.iter().map(|a| a.diffs.len()).sum::<usize>(),
        ACCEPTED.len(),
        phase1.as_secs_f64(),
        phase2.as_secs_f64(),
    );
    for a in ACCEPTED {
        println!(
            "  accepted: {}: {} ({})",
            a.file,
            a.diffs.join("; "),
            a.reason
        );
    }
    for f in &unsupported_with_syn {
        println!("  skipped, but its bytes look like TCP SYNs: {f}");
    }
    for n in &tshark_notes {
        println!("  tshark: {n}");
    }
    assert!(
        problems.is_empty(),
        "{} difference(s) with tshark:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A connection tuple as both sides report it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Tuple {
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |ip: &IpAddr, port: u16| match ip {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        write!(
            f,
            "{} -> {}",
            ep(&self.src, self.sport),
            ep(&self.dst, self.dport)
        )
    }
}

/// The packet numbers of the any-syn alerts of one run, per tuple.
fn parse_new_connection_alerts(stdout: &[u8]) -> Result<BTreeMap<Tuple, Vec<u64>>, String> {
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad JSON line {line:?}: {e}"))?;
        let ip = |k: &str| v[k].as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let port = |k: &str| v[k].as_u64().and_then(|p| u16::try_from(p).ok());
        let tuple = (|| {
            Some(Tuple {
                src: ip("src_ip")?,
                sport: port("src_port")?,
                dst: ip("dest_ip")?,
                dport: port("dest_port")?,
            })
        })()
        .ok_or_else(|| format!("alert without a TCP tuple: {line}"))?;
        let packet = v["pcap_cnt"]
            .as_u64()
            .ok_or_else(|| format!("alert without pcap_cnt: {line}"))?;
        counts.entry(tuple).or_insert_with(Vec::new).push(packet);
    }
    Ok(counts)
}

/// What tshark sees in one file.
struct TsharkSyns {
    /// Frame numbers of the new connections per tuple, after the per-flow deduplication of
    /// [`TsharkFlows`].
    counts: BTreeMap<Tuple, Vec<u64>>,
    /// Tuples whose SYN tshark found inside a tunnel (more than one IP layer).
    tunnelled: BTreeSet<Tuple>,
    /// SYN headers tshark dissected inside ICMP/ICMPv6 errors (ignored).
    icmp_embedded_syns: usize,
    /// tshark's complaints, if any (a cut-off file still yields the rows before the cut).
    note: String,
}

/// The tshark fields read per TCP frame, in this order.
const TSHARK_FIELDS: [&str; 12] = [
    "frame.number",
    "frame.time_epoch",
    "frame.protocols",
    "ieee8021ad.id",
    "vlan.id",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "tcp.flags",
];

const TCP_FIN: u16 = 0x01;
const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;
const TCP_ACK: u16 = 0x10;

/// Runs tshark over every TCP frame of `file` and replays them through [`TsharkFlows`].
///
/// tshark is given `-Y tcp` rather than the SYN filter because the flow deduplication needs the
/// FINs, RSTs and timestamps too; the SYN test on each row is the filter's
/// (`tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.flags.reset==0`).
fn tshark_new_connections(tshark: &str, file: &Path) -> Result<TsharkSyns, String> {
    let mut cmd = Command::new(tshark);
    cmd.args(["-n", "-r"])
        .arg(file)
        .args(["-Y", "tcp", "-T", "fields"]);
    cmd.args([
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in TSHARK_FIELDS {
        cmd.args(["-e", f]);
    }
    let out = run(&mut cmd, TSHARK_TIMEOUT)?;
    let note: String = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("Running as user") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !out.status.success() && out.stdout.is_empty() {
        return Err(format!("{}: {note}", out.status));
    }
    let mut flows = TsharkFlows::default();
    let mut result = TsharkSyns {
        counts: BTreeMap::new(),
        tunnelled: BTreeSet::new(),
        icmp_embedded_syns: 0,
        note,
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row = TcpRow::parse(line)?;
        let syn = row.is_syn();
        match row.layering {
            Layering::IcmpEmbedded => result.icmp_embedded_syns += usize::from(syn),
            Layering::Plain | Layering::Tunnelled => {
                let Some(tuple) = row.tuple.clone() else {
                    if syn {
                        return Err(format!("SYN row without a full tuple: {line}"));
                    }
                    continue;
                };
                if flows.packet(&row, &tuple) {
                    let frames = result.counts.entry(tuple.clone()).or_default();
                    frames.push(row.frame);
                    if row.layering == Layering::Tunnelled {
                        result.tunnelled.insert(tuple);
                    }
                }
            }
        }
    }
    Ok(result)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Layering {
    /// One IP layer: a TCP segment exfilwatch must decode.
    Plain,
    /// More than one IP layer (IP-in-IP, GRE, Geneve, VXLAN, …): the tuple is the innermost.
    Tunnelled,
    /// The TCP header is a quote inside an ICMP/ICMPv6 error.
    IcmpEmbedded,
}

/// One frame of tshark's field output.
struct TcpRow {
    frame: u64,
    time: f64,
    layering: Layering,
    /// Both VLAN id lists (802.1ad and 802.1Q), as a flow-key component.
    vlans: String,
    tuple: Option<Tuple>,
    /// The innermost TCP header's flags; None when tshark did not get that far (truncation).
    flags: Option<u16>,
}

impl TcpRow {
    fn parse(line: &str) -> Result<TcpRow, String> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != TSHARK_FIELDS.len() {
            return Err(format!("unexpected tshark row: {line:?}"));
        }
        let last = |s: &str| s.rsplit(',').next().unwrap_or("").to_string();
        let layers: Vec<&str> = f[2].split(':').collect();
        let last_tcp = layers.iter().rposition(|l| *l == "tcp");
        let icmp_before_tcp =
            last_tcp.is_some_and(|t| layers[..t].iter().any(|l| *l == "icmp" || *l == "icmpv6"));
        let ip_layers: Vec<&str> = layers[..last_tcp.unwrap_or(layers.len())]
            .iter()
            .copied()
            .filter(|l| *l == "ip" || *l == "ipv6")
            .collect();
        let layering = if icmp_before_tcp {
            Layering::IcmpEmbedded
        } else if ip_layers.len() > 1 {
            Layering::Tunnelled
        } else {
            Layering::Plain
        };
        let (src, dst) = match ip_layers.last() {
            Some(&"ipv6") => (last(f[6]), last(f[9])),
            _ => (last(f[5]), last(f[8])),
        };
        let tuple = (|| {
            Some(Tuple {
                src: src.parse().ok()?,
                sport: last(f[7]).parse().ok()?,
                dst: dst.parse().ok()?,
                dport: last(f[10]).parse().ok()?,
            })
        })();
        let flags = u16::from_str_radix(last(f[11]).trim_start_matches("0x"), 16).ok();
        Ok(TcpRow {
            frame: f[0]
                .parse()
                .map_err(|_| format!("bad frame number in {line:?}"))?,
            time: f[1].parse().unwrap_or(0.0),
            layering,
            vlans: format!("{}/{}", f[3], f[4]),
            tuple,
            flags,
        })
    }

    /// The reference filter: `tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.flags.reset==0`.
    fn is_syn(&self) -> bool {
        self.flags
            .is_some_and(|f| f & TCP_SYN != 0 && f & (TCP_ACK | TCP_RST) == 0)
    }
}

/// The design's TCP flow rules, replayed on tshark's rows to turn "every SYN" into "the first
/// SYN of each flow": a flow is keyed by VLANs and both endpoints (direction-normalised); only
/// its first SYN counts; it closes at an RST or once both sides sent a FIN, and a SYN on a
/// closed flow starts a new one; it expires on packet time after 60 s idle (600 s once both
/// sides have sent; 60 s once closed).
#[derive(Default)]
struct TsharkFlows {
    flows: HashMap<FlowKey, TsharkFlow>,
}

/// Layering, VLAN ids, and the two endpoints in ascending order.
type FlowKey = (Layering, String, (IpAddr, u16), (IpAddr, u16));

#[derive(Default)]
struct TsharkFlow {
    last_seen: f64,
    sent: [bool; 2],
    fin: [bool; 2],
    closed: bool,
    syn_seen: bool,
}

impl TsharkFlows {
    /// Feeds one frame; true when it is a flow's first SYN (a new connection).
    fn packet(&mut self, row: &TcpRow, t: &Tuple) -> bool {
        let (a, b) = ((t.src, t.sport), (t.dst, t.dport));
        let side = usize::from(a > b);
        let key = (row.layering, row.vlans.clone(), a.min(b), a.max(b));
        let syn = row.is_syn();
        if let Some(f) = self.flows.get(&key) {
            let timeout = if f.closed {
                60.0
            } else if f.sent == [true, true] {
                600.0
            } else {
                60.0
            };
            if row.time - f.last_seen > timeout || (syn && f.closed) {
                self.flows.remove(&key);
            }
        }
        let f = self.flows.entry(key).or_default();
        f.last_seen = row.time;
        f.sent[side] = true;
        let flags = row.flags.unwrap_or(0);
        let new_connection = syn && !f.syn_seen;
        f.syn_seen |= syn;
        if flags & TCP_RST != 0 {
            f.closed = true;
        }
        if flags & TCP_FIN != 0 {
            f.fin[side] = true;
            f.closed |= f.fin == [true, true];
        }
        new_connection
    }
}

/// The differences of one file, one per tuple whose new connections differ (in number, or in
/// the packets that raised them), rendered as
/// `TUPLE: tshark N [#FRAME, …], exfilwatch M [#PACKET, …][ (tunnelled)]`.
fn diff_tuples(ours: &BTreeMap<Tuple, Vec<u64>>, theirs: &TsharkSyns) -> Vec<String> {
    let packets = |frames: &Vec<u64>| {
        let list: Vec<String> = frames.iter().map(|f| format!("#{f}")).collect();
        format!("{} [{}]", frames.len(), list.join(", "))
    };
    let sorted = |v: Option<&Vec<u64>>| {
        let mut v = v.cloned().unwrap_or_default();
        v.sort_unstable();
        v
    };
    let tuples: BTreeSet<&Tuple> = ours.keys().chain(theirs.counts.keys()).collect();
    tuples
        .into_iter()
        .filter_map(|t| {
            let (n, m) = (sorted(theirs.counts.get(t)), sorted(ours.get(t)));
            let tunnel = if theirs.tunnelled.contains(t) {
                " (tunnelled)"
            } else {
                ""
            };
            (n != m).then(|| {
                format!(
                    "{t}: tshark {}, exfilwatch {}{tunnel}",
                    packets(&n),
                    packets(&m)
                )
            })
        })
        .collect()
}

/// The cheap pre-filter: could these bytes hold a TCP SYN (SYN set, ACK and RST clear) after an
/// IPv4 header or an IPv6 header chain, at any offset? A superset of what any decoder finds in
/// an uncompressed, unfragmented header, whatever the link type or encapsulation; a file where it
/// finds nothing (and exfilwatch alerts nothing) is not given to tshark. Misses only SYNs that
/// are not in the bytes as such (header compression, a TCP header split across IP fragments).
fn may_hold_tcp_syn(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| ipv4_syn_at(bytes, i) || ipv6_syn_at(bytes, i))
}

fn syn_flags_at(bytes: &[u8], tcp: usize) -> bool {
    tcp.checked_add(13)
        .and_then(|i| bytes.get(i))
        .is_some_and(|f| u16::from(*f) & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN)
}

fn ipv4_syn_at(bytes: &[u8], i: usize) -> bool {
    let Some(h) = bytes.get(i..i + 20) else {
        return false;
    };
    let ihl = usize::from(h[0] & 0x0f);
    let later_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0;
    h[0] >> 4 == 4 && ihl >= 5 && h[9] == 6 && !later_fragment && syn_flags_at(bytes, i + ihl * 4)
}

fn ipv6_syn_at(bytes: &[u8], i: usize) -> bool {
    let Some(h) = bytes.get(i..i + 40) else {
        return false;
    };
    if h[0] >> 4 != 6 {
        return false;
    }
    let (mut next, mut at) = (h[6], i + 40);
    for _ in 0..8 {
        let Some(ext) = bytes.get(at..at + 4) else {
            return false;
        };
        match next {
            6 => return syn_flags_at(bytes, at),
            0 | 43 | 60 => at += (usize::from(ext[1]) + 1) * 8,
            44 if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 == 0 => at += 8,
            51 => at += (usize::from(ext[1]) + 2) * 4,
            _ => return false,
        }
        next = ext[0];
    }
    false
}

/// The test's own tshark-row reading and flow replay, on rows as tshark 4.0 prints them (the
/// corpus holds no ICMP error quoting a TCP header, so that case is checked here).
#[test]
fn tshark_rows_are_classified_and_deduplicated_per_flow() {
    let row = |fields: &str| TcpRow::parse(&fields.replace(' ', "\t")).expect("row parses");
    let plain =
        row("1 1.0 eth:ethertype:vlan:ethertype:ip:tcp _ 10 10.0.0.1 _ 1025 10.0.0.2 _ 22 0x0002");
    assert_eq!(plain.layering, Layering::Plain);
    assert!(plain.is_syn());
    let geneve = row(
        "3 1.0 eth:ethertype:ip:udp:geneve:eth:ethertype:ip:tcp _ _ 20.0.0.2,30.0.0.2 _ 51225 \
         20.0.0.1,30.0.0.1 _ 22 0x0002",
    );
    assert_eq!(geneve.layering, Layering::Tunnelled);
    assert_eq!(
        geneve.tuple.as_ref().unwrap().to_string(),
        "30.0.0.2:51225 -> 30.0.0.1:22"
    );
    let six_in_four = row("1 1.0 eth:ethertype:ip:ipv6:tcp _ _ 192.0.2.1 2001:db8::1 80 192.0.2.2 2001:db8::2 443 0x0012");
    assert_eq!(six_in_four.layering, Layering::Tunnelled);
    assert_eq!(
        six_in_four.tuple.as_ref().unwrap().to_string(),
        "[2001:db8::1]:80 -> [2001:db8::2]:443"
    );
    assert!(!six_in_four.is_syn());
    let quoted = row(
        "1 1.0 eth:ethertype:ip:icmp:ip:tcp _ _ 93.184.216.34,10.0.1.5 _ 40000 \
         10.0.1.5,93.184.216.34 _ 22 0x0002",
    );
    assert_eq!(quoted.layering, Layering::IcmpEmbedded);

    // Retransmitted SYN: one connection; SYN after RST, or after the idle timeout: a new one.
    let mut flows = TsharkFlows::default();
    let mut feed = |frame: u64, time: f64, flags: u16, reverse: bool| {
        let mut r = row("1 1.0 eth:ethertype:ip:tcp _ _ 10.0.0.1 _ 1025 10.0.0.2 _ 22 0x0002");
        (r.frame, r.time, r.flags) = (frame, time, Some(flags));
        let mut t = r.tuple.clone().unwrap();
        if reverse {
            t = Tuple {
                src: t.dst,
                sport: t.dport,
                dst: t.src,
                dport: t.sport,
            };
        }
        flows.packet(&r, &t)
    };
    assert!(
        feed(1, 0.0, TCP_SYN | 0xc0, false),
        "ECE and CWR are ignored"
    );
    assert!(!feed(2, 1.0, TCP_SYN, false));
    assert!(!feed(3, 2.0, TCP_RST | TCP_ACK, true));
    assert!(feed(4, 3.0, TCP_SYN, false));
    assert!(!feed(5, 4.0, TCP_FIN | TCP_ACK, false));
    assert!(!feed(6, 5.0, TCP_SYN, false), "half-closed is not closed");
    assert!(feed(7, 70.0, TCP_SYN, false), "expired after 60 s idle");
    assert!(
        !feed(8, 71.0, TCP_SYN, true),
        "a SYN back joins the open flow"
    );

    let hang = run(Command::new("sleep").arg("10"), Duration::from_millis(200));
    assert!(hang.is_err_and(|e| e.starts_with("hang: killed after")));

    // The pre-filter: IPv4, and IPv6 behind a hop-by-hop header; a SYN+ACK is not a SYN.
    let mut v4 = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    v4.extend([4, 1, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, TCP_SYN as u8]);
    assert!(may_hold_tcp_syn(&v4));
    *v4.last_mut().unwrap() = (TCP_SYN | TCP_ACK) as u8;
    assert!(!may_hold_tcp_syn(&v4));
    let mut v6 = vec![0x60, 0, 0, 0, 0, 22, 0, 64];
    v6.extend([0xfe; 32]);
    v6.extend([6, 0, 0, 0, 0, 0, 0, 0]);
    v6.extend([4, 1, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, TCP_SYN as u8]);
    assert!(may_hold_tcp_syn(&v6));
}

// ------------------------------------------------------------------------------------------------
// Helpers.
// ------------------------------------------------------------------------------------------------

/// The corpus files (`EXFILWATCH_CORPUS`, by default `../shared/corpus/tcpdump` from the
/// project root) in name order, or None (after saying why) when the corpus is absent
/// outside CI.
fn corpus_files() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os("EXFILWATCH_CORPUS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/tcpdump"),
        PathBuf::from,
    );
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("corpus {} missing ({e})", dir.display());
            if ci() {
                panic!("{msg}; CI=true requires it");
            }
            println!("SKIPPED: {msg}; corpus tests skipped");
            return None;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    Some(files)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Writes a file under Cargo's per-target scratch directory; the name carries the process id
/// so that concurrent test runs do not share it.
fn write_temp(name: &str, contents: &str) -> PathBuf {
    let path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write temporary rules file");
    path
}
