//! What each fuzz target does with one input: shared by the libFuzzer binaries in
//! `fuzz/fuzz_targets/` and by `tests/fuzz_regressions.rs`, which compiles this file by path and
//! replays every input saved in `tests/data/fuzz/` through the same functions.
//!
//! Each public function takes the raw input bytes and returns normally, or panics with a message
//! naming the broken invariant (a panic inside exfilwatch is a finding too). The input layouts
//! are documented per function and must stay stable: the saved inputs depend on them.

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use exfilwatch::alert::{AlertWriter, Format, Output};
use exfilwatch::capture::pcapng::PcapngReader;
use exfilwatch::capture::FileSource;
use exfilwatch::decode::{self, proto, DecodeError, DecodeStats, Frame, PacketSummary, Transport};
use exfilwatch::engine::Engine;
use exfilwatch::rules::{compile_files, RuleSet};
use exfilwatch::time::{Timestamp, NANOS_PER_SEC};

/// The data-link types `decode` supports; an input byte picks one by index (modulo).
pub const LINKTYPES: [i32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

/// Packet time every engine input starts from (2023-11-14T22:13:20Z).
const BASE_SECS: i64 = 1_700_000_000;

fn linktype_of(b: u8) -> i32 {
    LINKTYPES[usize::from(b) % LINKTYPES.len()]
}

/// Reads input bytes front to back; past the end every byte is 0.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.byte();
        }
        out
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = start.saturating_add(n);
        &self.data[start..end]
    }

    fn rest(&mut self) -> &'a [u8] {
        let n = self.data.len().saturating_sub(self.pos);
        self.take(n)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[usize::from(self.byte()) % xs.len()]
    }
}

// ---------------------------------------------------------------------------------------------
// decode

/// Target `decode`: one frame through `decode::decode` and its IP part through
/// `decode::decode_ip`.
///
/// Layout: byte 0 picks the link type (`LINKTYPES[b % 10]`; from 0xF0 up, the next 4 bytes are
/// an arbitrary big-endian `i32` link type instead); the next byte is the wire length's excess
/// over the captured length as an `i8` (negative: a record claiming less than it holds); the
/// rest is the frame.
pub fn decode(data: &[u8]) {
    let mut input = Input::new(data);
    let sel = input.byte();
    let linktype = if sel >= 0xF0 {
        i32::from_be_bytes(input.array())
    } else {
        linktype_of(sel)
    };
    let excess = i64::from(input.byte() as i8);
    let bytes = input.rest();
    let orig_len = (bytes.len() as i64 + excess).clamp(0, i64::from(u32::MAX)) as u32;
    let frame = Frame {
        ts: Timestamp::from_parts(BASE_SECS, 123_456_789),
        linktype,
        orig_len,
        data: bytes,
        pcap_cnt: 7,
    };
    let r = decode::decode(&frame);
    check_decoded(&frame, &r);
    DecodeStats::default().record(&r);
    // The IP decoder on its own, on bytes that need not follow any link header.
    if let Ok(s) = decode::decode_ip(bytes) {
        check_ip_fields(&s);
    }
}

/// Where the IP header starts for a link type, before VLAN tags, if it has a fixed place.
fn ip_offset(linktype: i32) -> Option<usize> {
    match linktype {
        0 | 108 => Some(4),
        1 => Some(14),
        12 | 14 | 101 | 228 | 229 => Some(0),
        113 => Some(16),
        276 => Some(20),
        _ => None,
    }
}

/// Invariants of every summary, whatever produced it.
fn check_ip_fields(s: &PacketSummary) {
    assert_eq!(
        s.src.is_ipv4(),
        s.dst.is_ipv4(),
        "source and destination of different IP versions: {s:?}"
    );
    let min = if s.src.is_ipv4() { 20 } else { 40 };
    assert!(s.ip_len >= min, "ip_len below the IP header: {s:?}");
    match s.transport {
        Transport::Ports { .. } => assert!(
            matches!(s.proto, proto::TCP | proto::UDP | proto::SCTP),
            "ports for a protocol without ports: {s:?}"
        ),
        Transport::Icmp { .. } => assert!(
            matches!(s.proto, proto::ICMP | proto::ICMPV6),
            "ICMP type/code for a non-ICMP protocol: {s:?}"
        ),
        Transport::None => {}
    }
    if s.proto != proto::TCP {
        assert_eq!(s.tcp_flags, 0, "TCP flags on a non-TCP packet: {s:?}");
    }
    if let Some(f) = s.fragment {
        if f.offset != 0 {
            assert_eq!(
                s.transport,
                Transport::None,
                "a later fragment with transport fields read from its payload: {s:?}"
            );
            assert_eq!(s.tcp_flags, 0, "a later fragment with TCP flags: {s:?}");
        }
    }
}

/// Checks a decode outcome against the frame it came from and against `decode_ip` on the IP
/// bytes the link layer points at.
fn check_decoded(frame: &Frame<'_>, r: &Result<PacketSummary, DecodeError>) {
    let s = match r {
        Ok(s) => s,
        Err(DecodeError::UnsupportedLinkType(lt)) => {
            assert_eq!(*lt, frame.linktype, "unsupported link type misreported");
            assert!(
                !LINKTYPES.contains(&frame.linktype),
                "supported link type {} refused",
                frame.linktype
            );
            return;
        }
        Err(_) => {
            assert!(
                decode::linktype::is_supported(frame.linktype),
                "link type {} is unsupported but decode did not say so: {r:?}",
                frame.linktype
            );
            return;
        }
    };
    assert!(
        LINKTYPES.contains(&frame.linktype),
        "decoded a frame of unsupported link type {}",
        frame.linktype
    );
    assert_eq!(s.ts, frame.ts, "timestamp not carried over");
    assert_eq!(s.pcap_cnt, frame.pcap_cnt, "pcap_cnt not carried over");
    assert_eq!(s.orig_len, frame.orig_len, "orig_len not carried over");
    assert_eq!(
        i32::from(s.linktype),
        frame.linktype,
        "link type not carried over"
    );
    if (frame.data.len() as u64) < u64::from(frame.orig_len) {
        assert!(
            s.truncated,
            "a frame shorter than its wire length is not flagged truncated: {s:?}"
        );
    }
    assert!(s.vlans.len() <= 3, "more than three VLAN tags kept: {s:?}");
    if !s.vlans.is_empty() {
        assert!(
            matches!(frame.linktype, 1 | 113 | 276),
            "VLAN tags on a link type without ethertypes: {s:?}"
        );
    }
    check_ip_fields(s);
    // The same IP bytes decoded on their own give the same IP-layer fields.
    let offset = ip_offset(frame.linktype).expect("supported link type") + 4 * s.vlans.len();
    let ip = frame
        .data
        .get(offset..)
        .unwrap_or_else(|| panic!("decoded, but the frame ends before offset {offset}: {s:?}"));
    match decode::decode_ip(ip) {
        Ok(d) => {
            let fields = |p: &PacketSummary| {
                (
                    p.src,
                    p.dst,
                    p.proto,
                    p.transport,
                    p.tcp_flags,
                    p.fragment,
                    p.ip_len,
                )
            };
            assert_eq!(
                fields(s),
                fields(&d),
                "decode and decode_ip disagree on the IP layer at offset {offset}"
            );
            assert!(
                s.truncated >= d.truncated,
                "decode lost decode_ip's truncated flag"
            );
        }
        Err(e) => panic!("decode succeeded ({s:?}) but decode_ip on its IP bytes failed: {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// engine

/// A writer that keeps what it is given, shared with the check that reads it afterwards.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The rule sets an engine input can pick: the embedded defaults, and two made for fuzzing
/// (`fuzz/rules/`): `wide` watches every address with every rule kind, every limit track and
/// a policy; `tight` has a one-flow table and one-millisecond timeouts.
fn engine_rule_sets() -> &'static [RuleSet; 3] {
    static SETS: OnceLock<[RuleSet; 3]> = OnceLock::new();
    SETS.get_or_init(|| {
        let compile = |name: &str, text: &str| {
            compile_files(&[(name.to_string(), text.to_string())])
                .unwrap_or_else(|e| panic!("fuzz rule set does not compile: {e}"))
        };
        [
            RuleSet::embedded().expect("embedded rules compile"),
            compile("fuzz/rules/wide.toml", include_str!("../rules/wide.toml")),
            compile("fuzz/rules/tight.toml", include_str!("../rules/tight.toml")),
        ]
    })
}

/// An engine writing into buffers, and those buffers.
struct EngineRun {
    engine: Engine,
    alerts: SharedBuf,
    flows: Option<SharedBuf>,
    format: Format,
    /// Talkers are being collected.
    talkers: bool,
}

impl EngineRun {
    fn new(rules: RuleSet, format: Format, flow_output: bool) -> Self {
        let alerts = SharedBuf::default();
        let writer = AlertWriter::new(format, Output::writer(Box::new(alerts.clone())));
        let mut engine = Engine::new(rules, writer);
        let flows = flow_output.then(|| {
            let buf = SharedBuf::default();
            engine.set_flow_output(Output::writer(Box::new(buf.clone())));
            buf
        });
        EngineRun {
            engine,
            alerts,
            flows,
            format,
            talkers: false,
        }
    }

    fn process(&mut self, s: &PacketSummary) {
        self.engine
            .process(s, "fuzz \"input\".pcap")
            .expect("writing to memory cannot fail");
    }

    /// Ends the input and checks everything written: whole lines, JSON where JSON is due, one
    /// line per counted alert, one flow end record per ended flow. Returns the alert output and
    /// the flow records, sorted (the order of flows ending at the same moment is unspecified).
    fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        self.engine.finish().expect("writing to memory cannot fail");
        if self.talkers {
            assert!(self.engine.talkers().is_some(), "talkers not collected");
        }
        let stats = self.engine.stats();
        let alerts = self.alerts.take();
        let lines = check_lines("alert output", &alerts);
        assert_eq!(
            lines.len() as u64,
            stats.alerts(),
            "alert lines written differ from alerts counted ({:?})",
            stats.rules
        );
        if self.format == Format::Json {
            for (i, l) in lines.iter().enumerate() {
                let v = parse_json_line("alert output", i, l);
                assert_eq!(v["event_type"], "alert", "alert line {i}: {l}");
                check_alert_json(i, l, &v);
            }
        }
        let mut flow_lines = Vec::new();
        if let Some(flows) = self.flows {
            let out = flows.take();
            let ended: u64 = stats.ended.iter().map(|(_, n)| n).sum();
            let mut ends = 0;
            for (i, l) in check_lines("flow output", &out).into_iter().enumerate() {
                let v = parse_json_line("flow output", i, l);
                assert_eq!(v["event_type"], "flow", "flow line {i}: {l}");
                if v["flow"]["reason"] != "update" {
                    ends += 1;
                }
                flow_lines.push(l.to_string());
            }
            assert_eq!(ends, ended, "flow end records differ from flows ended");
        }
        flow_lines.sort();
        (alerts, flow_lines)
    }
}

/// The lines of an output, checked to be whole and UTF-8.
fn check_lines<'a>(what: &str, buf: &'a [u8]) -> Vec<&'a str> {
    assert!(
        buf.is_empty() || buf.ends_with(b"\n"),
        "{what}: last line not terminated"
    );
    let text = std::str::from_utf8(buf).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    text.split_terminator('\n').collect()
}

/// Output depends only on the input: a second run gives the same alerts, in the same order,
/// and the same flow records.
fn assert_same_output(first: &(Vec<u8>, Vec<String>), second: &(Vec<u8>, Vec<String>)) {
    assert!(
        first.0 == second.0,
        "the same input gave different alerts:\n{}\n--- second run ---\n{}",
        String::from_utf8_lossy(&first.0),
        String::from_utf8_lossy(&second.0)
    );
    assert_eq!(
        first.1, second.1,
        "the same input gave different flow records"
    );
}

fn parse_json_line(what: &str, i: usize, line: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{what}: line {i} is not JSON ({e}): {line}"));
    assert!(
        v.is_object(),
        "{what}: line {i} is not a JSON object: {line}"
    );
    v
}

/// Fields every JSON alert has, with the types EVE readers expect.
fn check_alert_json(i: usize, line: &str, v: &serde_json::Value) {
    for key in [
        "timestamp",
        "rule",
        "severity",
        "message",
        "src_ip",
        "dest_ip",
    ] {
        assert!(
            v[key].is_string(),
            "alert line {i}: `{key}` missing: {line}"
        );
    }
    for key in ["src_ip", "dest_ip"] {
        let ip = v[key].as_str().unwrap_or_default();
        assert!(
            ip.parse::<IpAddr>().is_ok(),
            "alert line {i}: `{key}` is not an IP address: {line}"
        );
    }
    assert!(
        v["proto"].is_string() || v["proto"].is_u64(),
        "alert line {i}: bad proto: {line}"
    );
}

/// Target `engine`: frames decoded and fed through the whole engine (flow table, rules, limits,
/// policy, alert and flow-record writers), with packet time jumping forwards and backwards.
/// The input runs twice, on two engines: the output must not differ.
///
/// Layout: byte 0 is the configuration: bits 0-1 the rule set (0 embedded, 1 and 3 `wide`,
/// 2 `tight`), bit 2 text alerts instead of JSON, bit 3 flow records on, bit 4 live naming
/// (`in_iface`), bit 5 collect talkers. Then records, each an op byte: bits 0-2 move the clock
/// (0 stay, 1 +N ms [1 byte], 2 +N ms [2 bytes], 3 -N ms [1 byte], 4 +N s [2 bytes],
/// 5 -N s [2 bytes], 6 set to an absolute i64 of nanoseconds [8 bytes], 7 +N min [1 byte]);
/// bits 3-4 the action (0 or 1 a packet, 2 a clock tick without a packet, 3 flow update
/// records [1 byte: minimum age in seconds]); bit 5 a wire length above the captured one
/// [1 byte, after the length]. A packet is: a link type byte (`LINKTYPES[b % 10]`), a
/// big-endian u16 length, the excess byte if flagged, then that many frame bytes.
pub fn engine(data: &[u8]) {
    let first = engine_once(data);
    let second = engine_once(data);
    assert_same_output(&first, &second);
}

fn engine_once(data: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut input = Input::new(data);
    let config = input.byte();
    let sets = engine_rule_sets();
    let rules = match config & 3 {
        0 => sets[0].clone(),
        2 => sets[2].clone(),
        _ => sets[1].clone(),
    };
    let format = if config & 4 != 0 {
        Format::Text
    } else {
        Format::Json
    };
    let mut run = EngineRun::new(rules, format, config & 8 != 0);
    if config & 16 != 0 {
        run.engine.set_interface("fuzz0");
    }
    if config & 32 != 0 {
        run.engine.collect_talkers();
        run.talkers = true;
    }
    let mut now = Timestamp::from_parts(BASE_SECS, 0);
    let mut pcap_cnt = 0u64;
    let ms = |n: i64| n * 1_000_000;
    while !input.done() {
        let op = input.byte();
        let delta = match op & 7 {
            0 => 0,
            1 => ms(i64::from(input.byte())),
            2 => ms(i64::from(u16::from_be_bytes(input.array()))),
            3 => -ms(i64::from(input.byte())),
            4 => i64::from(u16::from_be_bytes(input.array())) * NANOS_PER_SEC,
            5 => -i64::from(u16::from_be_bytes(input.array())) * NANOS_PER_SEC,
            6 => {
                now = Timestamp(i64::from_be_bytes(input.array()));
                0
            }
            _ => i64::from(input.byte()) * 60 * NANOS_PER_SEC,
        };
        now = Timestamp(now.0.saturating_add(delta));
        match (op >> 3) & 3 {
            2 => run.engine.tick(now).expect("writing to memory cannot fail"),
            3 => {
                let min_age = i64::from(input.byte()) * NANOS_PER_SEC;
                run.engine
                    .write_flow_updates(exfilwatch::time::Duration(min_age))
                    .expect("writing to memory cannot fail");
            }
            _ => {
                let linktype = linktype_of(input.byte());
                let len = usize::from(u16::from_be_bytes(input.array()));
                let excess = if op & 32 != 0 {
                    u32::from(input.byte())
                } else {
                    0
                };
                let bytes = input.take(len);
                pcap_cnt += 1;
                let frame = Frame {
                    ts: now,
                    linktype,
                    orig_len: (bytes.len() as u32).saturating_add(excess),
                    data: bytes,
                    pcap_cnt,
                };
                let r = decode::decode(&frame);
                check_decoded(&frame, &r);
                if let Ok(s) = r {
                    run.process(&s);
                }
            }
        }
    }
    run.finish()
}

// ---------------------------------------------------------------------------------------------
// rules

/// Target `rules`: arbitrary text as rule files. The input (lossy UTF-8) is split at NUL
/// characters into up to four files; odd-length inputs write text alerts, even-length JSON.
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let files: Vec<(String, String)> = text
        .splitn(4, '\0')
        .enumerate()
        .map(|(i, t)| (format!("fuzz-{i}.toml"), t.to_string()))
        .collect();
    check_rule_files(&files, data.len() % 2 == 1);
}

/// Compiles rule files: an error must point inside the file it names; a rule set that
/// compiles must display, compile the same again, and run an engine over fixed traffic with
/// well-formed output, the same on a second engine.
fn check_rule_files(files: &[(String, String)], text_alerts: bool) {
    match compile_files(files) {
        Err(e) => {
            assert!(e.line >= 1, "line 0 in {e:?}");
            assert!(e.column >= 1, "column 0 in {e:?}");
            assert!(!e.message.is_empty(), "empty message in {e:?}");
            let (_, text) = files
                .iter()
                .find(|(name, _)| *name == e.file)
                .unwrap_or_else(|| panic!("error names no input file: {e:?}"));
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                e.line <= lines.len(),
                "error line past the end of the file ({} lines): {e:?}",
                lines.len()
            );
            let width = lines[e.line - 1].chars().count();
            assert!(
                e.column <= width + 1,
                "error column past the end of its line ({width} characters): {e:?}"
            );
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("{}:{}:{}: ", e.file, e.line, e.column)),
                "error display: {shown}"
            );
        }
        Ok(set) => {
            let shown = set.to_string();
            assert!(shown.starts_with("# compiled from: "), "check-rules output");
            let format = if text_alerts {
                Format::Text
            } else {
                Format::Json
            };
            let again = compile_files(files).expect("compiled once, compiles again");
            assert!(again == set, "compiling the same files twice differs");
            let run_once = |set: RuleSet| {
                let mut run = EngineRun::new(set, format, true);
                for s in fixed_traffic() {
                    run.process(s);
                }
                run.finish()
            };
            let first = run_once(set);
            let second = run_once(again);
            assert_same_output(&first, &second);
        }
    }
}

/// Target `rules_structured`: rule files assembled from fragments of the rule syntax, picked by
/// the input bytes: sections, keys and values that are mostly valid, some subtly not
/// (duplicates, out-of-range numbers, unknown names, host bits, bad units), so inputs reach the
/// compiler's checks past the TOML parser.
pub fn rules_structured(data: &[u8]) {
    let mut input = Input::new(data);
    let text_alerts = input.byte() & 1 == 1;
    let nfiles = 1 + usize::from(input.byte() % 3);
    let mut files = Vec::with_capacity(nfiles);
    for i in 0..nfiles {
        let mut doc = String::new();
        let sections = 1 + usize::from(input.byte() % 12);
        for _ in 0..sections {
            if input.done() {
                break;
            }
            write_section(&mut input, &mut doc);
        }
        files.push((format!("gen-{i}.toml"), doc));
    }
    check_rule_files(&files, text_alerts);
}

const NAMES: &[&str] = &[
    "internal",
    "ai",
    "data",
    "admin",
    "lab",
    "any",
    "a",
    "x-1",
    "v6",
    "_x",
    "Bad",
    "",
    "é",
    "internal",
    "a.b",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];
const NETS: &[&str] = &[
    "\"10.0.0.0/8\"",
    "[\"10.0.1.0/24\", \"fd00::/8\"]",
    "\"10.0.1.0/24\"",
    "\"10.0.1.5/24\"",
    "\"0.0.0.0/0\"",
    "\"::/0\"",
    "\"10.0.0.1\"",
    "\"2001:db8::1\"",
    "\"2001:db8::/129\"",
    "\"10.0.0.0/33\"",
    "\"300.1.1.1/8\"",
    "[]",
    "42",
    "[\"10.0.0.0/8\", 7]",
    "\"internal\"",
    "[\"ai\", \"10.0.0.0/8\"]",
    "[\"ai\", \"data\"]",
    "\" 10.0.2.0/24 \"",
    "\"fe80::%eth0/64\"",
    "\"::ffff:10.0.0.0/104\"",
];
const PORTS: &[&str] = &[
    "22",
    "0",
    "65535",
    "65536",
    "-1",
    "\"1-1024\"",
    "\"1024-1\"",
    "\"80-\"",
    "\"-80\"",
    "\" 80 - 90 \"",
    "\"0-65535\"",
    "\"ai\"",
    "\"web\"",
    "[\"ai\", 80, \"8000-8010\"]",
    "[]",
    "1.5",
    "\"99999999999999999999\"",
    "[[1]]",
    "true",
];
const DURATIONS: &[&str] = &[
    "\"30s\"",
    "\"1ms\"",
    "\"0s\"",
    "\"10m\"",
    "\"1h\"",
    "\"2d\"",
    "\"106751d\"",
    "\"106752d\"",
    "\"9223372036854775807ms\"",
    "\"99999999999999999999s\"",
    "\"1 h\"",
    "\"1.5s\"",
    "\"s\"",
    "\"-1s\"",
    "0",
    "60",
    "3153600000",
    "3153600001",
    "-1",
    "1e3",
    "true",
];
const BYTE_SIZES: &[&str] = &[
    "100",
    "0",
    "-1",
    "\"10MiB\"",
    "\"1 TiB\"",
    "\"18446744073709551615\"",
    "\"18446744073709551616\"",
    "\"16777216TiB\"",
    "\"99999999TB\"",
    "\"KiB\"",
    "\"1.5GB\"",
    "\"10mib\"",
    "\" 7 B \"",
    "9223372036854775807",
];
const COUNTS: &[&str] = &[
    "1",
    "0",
    "-3",
    "100000000",
    "100000001",
    "9223372036854775807",
    "\"10\"",
    "2.0",
];
const KINDS: &[&str] = &[
    "\"new-connection\"",
    "\"egress\"",
    "\"egress-volume\"",
    "\"long-flow\"",
    "\"egress_volume\"",
    "\"\"",
];
const SEVERITIES: &[&str] = &[
    "\"info\"",
    "\"low\"",
    "\"medium\"",
    "\"high\"",
    "\"critical\"",
    "\"HIGH\"",
];
const PROTOS: &[&str] = &["\"tcp\"", "\"udp\"", "\"icmp\"", "\"any\"", "\"sctp\"", "6"];
const TRACKS: &[&str] = &[
    "\"by_src\"",
    "\"by_dst\"",
    "\"by_rule\"",
    "\"by_flow\"",
    "\"by_host\"",
];
const IDS: &[&str] = &[
    "\"r1\"",
    "\"r2\"",
    "\"ai-egress\"",
    "\"r1\"",
    "\"R1\"",
    "\"\"",
    "\"policy\"",
    "\"a_b\"",
    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
];
const STRINGS: &[&str] = &[
    "\"plain\"",
    "\"quote \\\" backslash \\\\ tab \\t nul \\u0000 bell \\u0007\"",
    "\"line\\nbreak\\r\\u2028sep\"",
    "\"\u{e9}\u{1f600}\u{202e}rtl\"",
    "'literal \\n'",
    "\"\"\"\nmulti\nline\"\"\"",
    "\"\"",
];
const ZONE_LISTS: &[&str] = &[
    "[\"internal\"]",
    "[\"ai\", \"data\"]",
    "[\"ai\", \"ai\"]",
    "[]",
    "[\"nope\"]",
    "[\"internal\", \"admin\", \"ai\", \"data\", \"lab\"]",
    "\"ai\"",
];
const ZONES: &[&str] = &[
    "\"any\"",
    "\"ai\"",
    "\"data\"",
    "\"internal\"",
    "\"nope\"",
    "\"\"",
];
const RAW_LINES: &[&str] = &[
    "[rule.limit]",
    "count = 1",
    "per = \"1s\"",
    "limit.count = 2",
    "limit.per = \"1m\"",
    "[networks.sub]",
    "bogus = 1",
    "\"quoted key\" = \"10.0.0.0/8\"",
    "[[rule]]",
    "[rule]",
    "[[networks]]",
    "]]",
    "= 1",
    "# comment \u{0}",
    "a.b.c = 1",
    "key = ",
    "\"unterminated",
    "[policy.allow]",
    "\u{feff}",
    "\r",
    "x = 1979-05-27T07:32:00Z",
    "x = { a = 1, a = 2 }",
];

/// `key = value` pairs of one table kind: (key, values).
type Keys = &'static [(&'static str, &'static [&'static str])];

const RULE_KEYS: Keys = &[
    ("id", IDS),
    ("kind", KINDS),
    ("severity", SEVERITIES),
    ("message", STRINGS),
    ("proto", PROTOS),
    ("src", NETS),
    ("dest", NETS),
    ("src_not", NETS),
    ("dest_not", NETS),
    ("dest_port", PORTS),
    ("bytes", BYTE_SIZES),
    ("track", TRACKS),
    ("window", DURATIONS),
    ("duration", DURATIONS),
    ("limit.count", COUNTS),
    ("limit.per", DURATIONS),
    ("limit.track", TRACKS),
    ("bogus", COUNTS),
];
const FLOW_KEYS: Keys = &[
    ("tcp_new", DURATIONS),
    ("tcp_established", DURATIONS),
    ("tcp_closed", DURATIONS),
    ("udp", DURATIONS),
    ("icmp", DURATIONS),
    ("other", DURATIONS),
    ("fragment", DURATIONS),
    ("max_flows", COUNTS),
    ("tcp", DURATIONS),
];
const ALLOW_KEYS: Keys = &[
    ("from", ZONES),
    ("to", ZONES),
    ("proto", PROTOS),
    ("dest_port", PORTS),
    ("zones", ZONE_LISTS),
];
const POLICY_KEYS: Keys = &[
    ("zones", ZONE_LISTS),
    ("severity", SEVERITIES),
    ("allow", COUNTS),
];
/// Every value pool, for the occasional value of the wrong kind.
const ALL_VALUES: &[&[&str]] = &[
    NETS, PORTS, DURATIONS, BYTE_SIZES, COUNTS, KINDS, STRINGS, ZONE_LISTS,
];

fn value(input: &mut Input<'_>, pool: &'static [&'static str]) -> &'static str {
    if input.byte() & 7 == 0 {
        let other = input.pick(ALL_VALUES);
        input.pick(other)
    } else {
        input.pick(pool)
    }
}

fn key_values(input: &mut Input<'_>, doc: &mut String, keys: Keys, n: usize) {
    for _ in 0..n {
        let (key, pool) = input.pick(keys);
        let v = value(input, pool);
        doc.push_str(key);
        doc.push_str(" = ");
        doc.push_str(v);
        doc.push('\n');
    }
}

fn write_section(input: &mut Input<'_>, doc: &mut String) {
    let count = usize::from(input.byte() % 6);
    match input.byte() % 12 {
        0 | 1 => {
            doc.push_str("[networks]\n");
            for _ in 0..=count {
                let name = input.pick(NAMES);
                let v = value(input, NETS);
                doc.push_str(&format!("\"{name}\" = {v}\n"));
            }
        }
        2 => {
            doc.push_str("[ports]\n");
            for _ in 0..=count {
                let name = input.pick(NAMES);
                let v = value(input, PORTS);
                doc.push_str(&format!("\"{name}\" = {v}\n"));
            }
        }
        3 => {
            doc.push_str("[flow]\n");
            key_values(input, doc, FLOW_KEYS, count);
        }
        4..=7 => {
            // Mostly well-formed rules: an id and a kind, then any keys.
            doc.push_str("[[rule]]\n");
            let id = value(input, IDS);
            let kind = value(input, KINDS);
            doc.push_str(&format!("id = {id}\nkind = {kind}\n"));
            key_values(input, doc, RULE_KEYS, count);
        }
        8 => {
            doc.push_str("[policy]\n");
            key_values(input, doc, POLICY_KEYS, count);
        }
        9 => {
            doc.push_str("[[policy.allow]]\n");
            key_values(input, doc, ALLOW_KEYS, count);
        }
        10 => {
            doc.push_str(input.pick(RAW_LINES));
            doc.push('\n');
        }
        _ => {
            // A few raw input bytes, wherever they land.
            let n = usize::from(input.byte() % 24);
            doc.push_str(&String::from_utf8_lossy(input.take(n)));
            doc.push('\n');
        }
    }
}

/// A fixed, varied stream of packets over two hours and a half (TCP handshakes, data, FIN, RST,
/// ECN SYNs, UDP, ICMP, fragments, GRE, IPv6, VLANs, time going backwards) for the rule sets the
/// `rules` targets compile.
fn fixed_traffic() -> &'static [PacketSummary] {
    static TRAFFIC: OnceLock<Vec<PacketSummary>> = OnceLock::new();
    TRAFFIC.get_or_init(build_fixed_traffic)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ECE_CWR: u8 = 0xC0;

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, claimed: u16, frag: u16, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len() as u16).saturating_add(claimed);
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn ipv6(src: [u16; 8], dst: [u16; 8], next: u8, claimed: u16, l4: &[u8]) -> Vec<u8> {
    let plen = (l4.len() as u16).saturating_add(claimed);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    for w in src.iter().chain(dst.iter()) {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p.extend_from_slice(l4);
    p
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::with_capacity(8);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 8, 0, 0]);
    u
}

fn build_fixed_traffic() -> Vec<PacketSummary> {
    const AI: [u8; 4] = [10, 0, 1, 5];
    const AI2: [u8; 4] = [10, 0, 1, 30];
    const ADMIN: [u8; 4] = [10, 0, 0, 7];
    const DATA: [u8; 4] = [10, 0, 2, 9];
    const LAN: [u8; 4] = [192, 168, 1, 10];
    const DNS: [u8; 4] = [8, 8, 8, 8];
    const WEB: [u8; 4] = [203, 0, 113, 50];
    const ULA: [u16; 8] = [0xfd00, 0, 0, 0, 0, 0, 0, 1];
    const DOC: [u16; 8] = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1];
    const LL: [u16; 8] = [0xfe80, 0, 0, 0, 0, 0, 0, 1];
    let icmp_echo = [8, 0, 0, 0, 0, 1, 0, 1];
    let icmp6_echo = [128, 0, 0, 0, 0, 1, 0, 1];
    // (milliseconds after the start, link type, frame bytes)
    let mut frames: Vec<(i64, i32, Vec<u8>)> = vec![
        (0, 101, ipv4(AI, DNS, 6, 0, 0, &tcp(40000, 443, SYN))),
        (
            100,
            101,
            ipv4(DNS, AI, 6, 0, 0, &tcp(443, 40000, SYN | ACK)),
        ),
        (
            200,
            101,
            ipv4(AI, DNS, 6, 1400, 0, &tcp(40000, 443, ACK | PSH)),
        ),
        (300, 101, ipv4(LAN, AI, 6, 0, 0, &tcp(5555, 11434, SYN))),
        (310, 101, ipv4(LAN, AI, 6, 0, 0, &tcp(5555, 11434, SYN))),
        (
            400,
            101,
            ipv4(ADMIN, AI, 6, 0, 0, &tcp(50000, 22, SYN | ECE_CWR)),
        ),
        (500, 101, ipv4(AI, DNS, 17, 30, 0, &udp(5353, 53))),
        (600, 101, ipv4(AI, WEB, 1, 56, 0, &icmp_echo)),
        (700, 229, ipv6(ULA, DOC, 6, 0, &tcp(40001, 8000, SYN))),
        (800, 229, ipv6(DOC, ULA, 17, 100, &udp(53, 40002))),
        (900, 229, ipv6(LL, DOC, 58, 0, &icmp6_echo)),
        // A first fragment (more fragments) and a later one of the same datagram.
        (
            1000,
            101,
            ipv4(DATA, DNS, 17, 1472, 0x2000, &udp(7000, 7001)),
        ),
        (1001, 101, ipv4(DATA, DNS, 17, 8, 185, &[0; 8])),
        (
            1100,
            101,
            ipv4([10, 0, 3, 4], [1, 1, 1, 1], 47, 100, 0, &[0; 4]),
        ),
        (2000, 101, ipv4(AI, DNS, 6, 60000, 0, &tcp(40000, 443, ACK))),
        (
            10_000,
            101,
            ipv4(AI, DNS, 6, 60000, 0, &tcp(40000, 443, ACK)),
        ),
        (70_000, 101, ipv4(AI2, WEB, 6, 0, 0, &tcp(40100, 80, SYN))),
        (
            70_100,
            101,
            ipv4(AI2, WEB, 6, 4000, 0, &tcp(40100, 80, ACK)),
        ),
        (
            65_000,
            101,
            ipv4(AI2, WEB, 6, 4000, 0, &tcp(40100, 80, ACK)),
        ),
        (
            1_900_000,
            101,
            ipv4(AI, DNS, 6, 60000, 0, &tcp(40000, 443, ACK)),
        ),
        (
            1_900_100,
            101,
            ipv4(DNS, AI, 6, 0, 0, &tcp(443, 40000, RST)),
        ),
        (
            1_900_200,
            101,
            ipv4(AI, DNS, 6, 0, 0, &tcp(40000, 443, FIN | ACK)),
        ),
        (
            1_900_300,
            101,
            ipv4(DNS, AI, 6, 0, 0, &tcp(443, 40000, FIN | ACK)),
        ),
        (
            9_000_000,
            101,
            ipv4(AI, DNS, 6, 0, 0, &tcp(40000, 443, SYN)),
        ),
        (
            9_000_001,
            101,
            ipv4([0, 0, 0, 0], [255, 255, 255, 255], 17, 0, 0, &udp(68, 67)),
        ),
    ];
    // The same SYN in 802.1Q, QinQ and Linux cooked frames.
    let syn = ipv4(AI, WEB, 6, 0, 0, &tcp(41000, 8080, SYN));
    let mut eth = vec![0; 12];
    eth.extend_from_slice(&[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
    eth.extend_from_slice(&syn);
    frames.push((1200, 1, eth));
    let mut qinq = vec![0; 12];
    qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
    qinq.extend_from_slice(&syn);
    frames.push((1300, 1, qinq));
    let mut sll = vec![0; 14];
    sll.extend_from_slice(&[0x08, 0x00]);
    sll.extend_from_slice(&syn);
    frames.push((1400, 113, sll));
    let start = Timestamp::from_parts(BASE_SECS, 0);
    frames
        .iter()
        .enumerate()
        .map(|(i, (at, linktype, bytes))| {
            let frame = Frame {
                ts: Timestamp(start.0 + at * 1_000_000),
                linktype: *linktype,
                orig_len: bytes.len() as u32,
                data: bytes,
                pcap_cnt: i as u64 + 1,
            };
            decode::decode(&frame)
                .unwrap_or_else(|e| panic!("fixed traffic frame {i} does not decode: {e:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// capture

/// Removes a file when dropped (also when a check panics, in the regression test).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Target `capture`: the input as a capture file, read through `FileSource` (libpcap, and our
/// pcapng reader where libpcap gives up) to the end (or its first error), every frame decoded.
/// The reading must end: no more frames than the file has room for (every pcap or pcapng record
/// takes at least 12 bytes). Read a batch at a time (`read_frames`, as the capture thread reads,
/// at a batch size taken from the input), it must give the same frames and the same end
/// ([`read_frames_differences`]).
pub fn capture(data: &[u8]) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = TempFile(
        std::env::temp_dir().join(format!("exfilwatch-fuzz-{}-{n}.pcap", std::process::id())),
    );
    std::fs::write(&file.0, data).expect("writing the capture file");
    let path = file.0.to_str().expect("temporary path is UTF-8");
    let mut src = match FileSource::open(path) {
        Ok(src) => src,
        Err(e) => {
            assert!(
                e.to_string().contains(path),
                "open error without the file: {e}"
            );
            return;
        }
    };
    assert_eq!(src.name(), path);
    let linktype = src.linktype();
    let mut stats = DecodeStats::default();
    let bound = data.len() / 12 + 1;
    let mut frames = 0u64;
    loop {
        match src.next_frame() {
            Ok(Some(frame)) => {
                frames += 1;
                assert!(
                    frames as usize <= bound,
                    "more frames than a {}-byte file can hold",
                    data.len()
                );
                assert_eq!(frame.pcap_cnt, frames, "pcap_cnt");
                let frame_linktype = frame.linktype;
                let r = decode::decode(&frame);
                check_decoded(&frame, &r);
                stats.record(&r);
                // libpcap gives one link type per file; our pcapng reader, when it took over,
                // each packet's interface's.
                assert!(
                    frame_linktype == linktype || src.took_over(),
                    "frame link type {frame_linktype} in a file of {linktype}"
                );
            }
            Ok(None) => break,
            Err(e) => {
                assert!(
                    e.to_string().contains(path),
                    "read error without the file: {e}"
                );
                break;
            }
        }
    }
    assert_eq!(src.packets_read(), frames, "packets_read");
    assert!(
        matches!(src.next_frame(), Ok(None)),
        "a finished source yields more"
    );

    let max = 1 + usize::from(data.last().copied().unwrap_or(0) % 16);
    let (differences, _) = read_frames_differences(path, &[max]);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// One frame as `FileSource` gave it: number, link type, time, wire length, bytes.
pub type FrameRecord = (u64, i32, Timestamp, u32, Vec<u8>);

/// Everything `FileSource` gives for `path` read one way: the frames, how the reading ended
/// (`None` at the end of the file, else the error's text) and whether our pcapng reader took
/// over. `batch` 0 reads frame by frame (`next_frame`), else with `read_frames` of up to `batch`
/// at a time. Panics when `read_frames` miscounts or a finished source reads on.
pub fn frames_of(path: &str, batch: usize) -> (Vec<FrameRecord>, Option<String>, bool) {
    let mut frames = Vec::new();
    let mut src = match FileSource::open(path) {
        Ok(s) => s,
        Err(e) => return (frames, Some(e.to_string()), false),
    };
    let record = |f: &Frame<'_>| (f.pcap_cnt, f.linktype, f.ts, f.orig_len, f.data.to_vec());
    let end = loop {
        if batch == 0 {
            match src.next_frame() {
                Ok(Some(f)) => frames.push(record(&f)),
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            }
            continue;
        }
        let before = frames.len();
        match src.read_frames(batch, |f| frames.push(record(&f))) {
            Ok(0) => break None,
            Ok(n) => {
                assert_eq!(n, frames.len() - before, "{path}: read_frames' count");
                assert!(n <= batch, "{path}: {n} frames for at most {batch}");
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    let again = if batch == 0 {
        src.next_frame().map(|f| f.is_some())
    } else {
        src.read_frames(batch, |_| {}).map(|n| n > 0)
    };
    assert!(matches!(again, Ok(false)), "{path}: read on after its end");
    (frames, end, src.took_over())
}

/// How `FileSource::read_frames`, asked for up to each of `batches` frames at a time, differs
/// from `next_frame` one by one on `path` (frames, end or error text, take-over): one line per
/// batch size that differs. Also the frames read.
pub fn read_frames_differences(path: &str, batches: &[usize]) -> (Vec<String>, usize) {
    let one_by_one = frames_of(path, 0);
    let mut differences = Vec::new();
    for &batch in batches {
        let (b, a) = (frames_of(path, batch), &one_by_one);
        if b != *a {
            let first = a.0.iter().zip(&b.0).position(|(x, y)| x != y);
            differences.push(format!(
                "{path}: read_frames({batch}) gave {} frames, end {:?}, took over {}; next_frame \
                 {} frames, end {:?}, took over {} (first differing frame: {first:?})",
                b.0.len(),
                b.1,
                b.2,
                a.0.len(),
                a.1,
                a.2,
            ));
        }
    }
    (differences, one_by_one.0.len())
}

/// [`read_frames_differences`] at batch sizes 1, 2, 7 and 1,024 on each of `paths` (the tests'
/// fixtures and corpus): panics naming every difference, or when fewer than `min_frames` frames
/// were read in all.
#[allow(dead_code)] // not a fuzz target: tests/files.rs and tests/corpus.rs call it
pub fn read_frames_agree(paths: &[PathBuf], min_frames: usize) {
    let (mut differences, mut frames) = (Vec::new(), 0);
    for p in paths {
        let (d, n) = read_frames_differences(&p.to_string_lossy(), &[1, 2, 7, 1024]);
        differences.extend(d);
        frames += n;
    }
    println!("{} inputs, {frames} frames each way", paths.len());
    assert!(frames >= min_frames, "only {frames} frames read");
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// pcapng

/// Target `pcapng`: the input as a pcapng stream, read from memory by exfilwatch's own pcapng
/// reader (the one that takes over where libpcap stops) to its end or its first error, every
/// frame decoded. No panic; no more packets than the input has room for (a packet block takes at
/// least 16 bytes); an error lies inside the input, says something, and leaves the reader
/// finished; the reader's count agrees.
pub fn pcapng(data: &[u8]) {
    let mut reader = PcapngReader::new(data);
    let mut packets = 0u64;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                packets += 1;
                assert!(
                    packets as usize <= data.len() / 16,
                    "{packets} packets from {} bytes",
                    data.len()
                );
                let frame = Frame {
                    ts: p.ts,
                    linktype: p.linktype,
                    orig_len: p.orig_len,
                    data: p.data,
                    pcap_cnt: packets,
                };
                let r = decode::decode(&frame);
                check_decoded(&frame, &r);
            }
            Ok(None) => break,
            Err(e) => {
                assert!(
                    e.offset < data.len() as u64,
                    "error offset {} in {} bytes: {e}",
                    e.offset,
                    data.len()
                );
                assert!(e.to_string().contains("byte offset"), "{e}");
                assert!(
                    matches!(reader.next_packet(), Ok(None)),
                    "a failed reader yields more"
                );
                break;
            }
        }
    }
    assert_eq!(reader.packets_read(), packets, "packets_read");
}
