//! Capture files at their edges. fixtures/manifest.toml already runs every hardening case
//! (multi-link pcapng, cut, hostile, garbage and wrong-magic files, zero-length and over-snaplen
//! records, time going backwards and past 2038: exit status, alerts before the fault, the
//! message's file and position). This adds what a manifest case cannot say:
//!
//! - [`multi_link_pcapng_matches_tshark`]: on the files libpcap gives up on and our pcapng reader
//!   finishes, every TCP SYN alert's packet number, time and addresses equal tshark's frame;
//!   the packet count equals tshark's frame count;
//! - [`file_source_hands_over_at_the_failing_packet`]: `FileSource` delivers libpcap's packets,
//!   then ours from the packet libpcap stopped at, each with its own interface's link type;
//! - [`read_frames_gives_what_next_frame_gives`]: the batched read the capture thread uses
//!   (`pcap_dispatch`) gives every fixture capture, and every cut of a classic pcap and of a
//!   multi-link pcapng file, exactly as `next_frame` one by one does: frames, the end or the
//!   located error, the hand-over to our reader, at any batch size;
//! - [`standard_input_keeps_libpcaps_error_with_a_hint`]: standard input cannot be read twice;
//! - [`a_named_pipe_reads_as_its_file`]: a path that is a pipe (`<(zcat x.pcap.gz)` names one)
//!   gives every fixture's alerts and exit status as the file does; a multi-link pcapng file
//!   through it keeps libpcap's error, with the hint;
//! - [`every_cut_of_a_multi_link_file_reads_a_prefix`]: the binary on every truncation of a
//!   multi-link file (before and after the hand-over): never a panic; the alerts of the packets
//!   before the cut and no others; exit 2 with the file and the packet number where it broke.
//!
//! Environment: `TSHARK` names the tshark binary (default `tshark` on PATH); without it the
//! tshark test passes with a note, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use exfilwatch::capture::FileSource;
use exfilwatch::time::Timestamp;

#[path = "../benches/mixgen.rs"]
mod mixgen;

// The batched-read check the fuzz target `capture` runs too.
#[allow(dead_code)]
#[path = "../fuzz/src/harness.rs"]
mod harness;

mod common;
use common::{par_map, run, tshark};

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");
const TIMEOUT: Duration = Duration::from_secs(30);

/// Every TCP SYN (ACK and RST clear) that starts a flow alerts, whatever its addresses.
const ANY_SYN_RULES: &str = r#"
[[rule]]
id = "any-syn"
kind = "new-connection"
severity = "info"
"#;

/// The fixtures libpcap stops on and our reader finishes (see fixtures/README.md).
const TAKEN_OVER: &[&str] = &[
    "pcapng_multi_link.pcapng",
    "pcapng_two_snaplens.pcapng",
    "pcapng_multi_link_first_unsupported.pcapng",
    "pcapng_sections_byte_orders.pcapng",
    "pcapng_over_snaplen.pcapng",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("files");
    std::fs::create_dir_all(&d).expect("temp dir");
    d.join(name)
}

/// Files a test writes, removed when the guard goes, whether the test passes or fails (a
/// failed assertion unwinds through it): thousands of cut files are not left behind.
#[derive(Default)]
struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    /// [`tmp`]`(name)`, removed with the guard.
    fn path(&mut self, name: &str) -> PathBuf {
        let p = tmp(name);
        self.0.push(p.clone());
        p
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One SYN as both sides report it: packet number, time (RFC 3339, microseconds) and tuple.
type Syn = (u64, String, String, u16, String, u16);

/// The any-syn alerts of one run, and the packets it read (from the summary line).
fn exfilwatch_syns(file: &Path, rules: &Path) -> (Vec<Syn>, u64) {
    let mut cmd = Command::new(BIN);
    cmd.args(["read", "--rules"]).arg(rules).arg(file);
    let out = run(&mut cmd, TIMEOUT).expect("exfilwatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let syns = stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON alert");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let port = |k: &str| v[k].as_u64().unwrap_or_default() as u16;
            (
                v["pcap_cnt"].as_u64().unwrap_or_default(),
                s("timestamp"),
                s("src_ip"),
                port("src_port"),
                s("dest_ip"),
                port("dest_port"),
            )
        })
        .collect();
    (syns, packets_in_summary(&out.stderr))
}

/// N of the summary's `exfilwatch: 1 file(s), N packets`.
fn packets_in_summary(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("exfilwatch: ")?;
            let (_, rest) = rest.split_once(" file(s), ")?;
            rest.split_once(" packets")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no summary line in {stderr:?}"))
}

/// tshark's epoch time `S.FFFFFFFFF` as exfilwatch prints times.
fn rfc3339(epoch: &str) -> String {
    let (secs, frac) = epoch.split_once('.').unwrap_or((epoch, "0"));
    let frac = format!("{frac:0<9}");
    Timestamp::from_parts(
        secs.parse().expect("tshark seconds"),
        frac[..9].parse().expect("tshark fraction"),
    )
    .to_string()
}

/// tshark's TCP SYNs (ACK and RST clear) and its frame count.
fn tshark_syns(tshark: &str, file: &Path) -> Result<(Vec<Syn>, u64), String> {
    let mut cmd = Command::new(tshark);
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=/t"]);
    for f in [
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "tcp.flags",
    ] {
        cmd.args(["-e", f]);
    }
    let out = run(&mut cmd, TIMEOUT)?;
    if !out.status.success() {
        return Err(format!("tshark failed: {}", out.stderr.trim_end()));
    }
    let mut syns = Vec::new();
    let mut frames = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        frames += 1;
        let c: Vec<&str> = line.split('\t').collect();
        let [number, time, src4, src6, sport, dst4, dst6, dport, flags] = c[..] else {
            return Err(format!("unexpected tshark row {line:?}"));
        };
        let flags = u16::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & 0x02 == 0 || flags & 0x14 != 0 {
            continue;
        }
        let either = |a: &str, b: &str| if a.is_empty() { b } else { a }.to_string();
        syns.push((
            number.parse().map_err(|e| format!("{line:?}: {e}"))?,
            rfc3339(time),
            either(src4, src6),
            sport.parse().map_err(|e| format!("{line:?}: {e}"))?,
            either(dst4, dst6),
            dport.parse().map_err(|e| format!("{line:?}: {e}"))?,
        ));
    }
    Ok((syns, frames))
}

#[test]
fn multi_link_pcapng_matches_tshark() {
    let Some(tshark) = tshark("comparison") else {
        return;
    };
    let rules = tmp("any-syn.toml");
    std::fs::write(&rules, ANY_SYN_RULES).expect("rules file");
    let mut problems = Vec::new();
    for name in TAKEN_OVER {
        let file = fixture(name);
        let (ours, packets) = exfilwatch_syns(&file, &rules);
        let (theirs, frames) = match tshark_syns(&tshark, &file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        if ours.is_empty() {
            problems.push(format!("{name}: no SYN alert at all"));
        }
        if ours != theirs {
            problems.push(format!(
                "{name}: SYNs differ\n  exfilwatch: {ours:?}\n  tshark:     {theirs:?}"
            ));
        }
        if packets != frames {
            problems.push(format!(
                "{name}: exfilwatch read {packets} packets, tshark {frames} frames"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn file_source_hands_over_at_the_failing_packet() {
    let path = fixture("pcapng_multi_link.pcapng");
    let mut src = FileSource::open(path.to_str().expect("UTF-8 path")).expect("opens");
    assert!(src.may_have_several_linktypes());
    let mut seen = Vec::new();
    loop {
        let frame = match src.next_frame() {
            Ok(Some(f)) => (f.pcap_cnt, f.linktype, f.ts.to_string(), f.data.len()),
            Ok(None) => break,
            Err(e) => panic!("{e}"),
        };
        seen.push((frame, src.took_over()));
    }
    let t = |s: &str| format!("2025-11-25T12:00:0{s}Z");
    // Packets 1-2 from libpcap (Ethernet); libpcap stops at the raw-IP interface's IDB and our
    // reader goes on at packet 3: raw IP as DLT_RAW 12, Linux SLL 113, Ethernet again.
    let expected = [
        ((1, 1, t("0.000000"), 74), false),
        ((2, 1, t("0.000300"), 74), false),
        ((3, 12, t("1.000250"), 40), true),
        ((4, 12, t("1.000400"), 0), true),
        ((5, 1, t("1.000500"), 60), true),
        ((6, 113, t("2.500000"), 96), true),
        ((7, 12, t("3.000000"), 57), true),
        ((8, 113, t("3.250000"), 76), true),
        ((9, 1, t("4.000000"), 60), true),
    ];
    assert_eq!(seen, expected);
    assert_eq!(src.packets_read(), 9);
    assert!(matches!(src.next_frame(), Ok(None)));
}

/// A little-endian classic pcap file `pcap` with, after its `after`th record, a record header
/// whose captured length (300,000 bytes) libpcap refuses; the records after it follow unchanged.
fn with_refused_record(pcap: &[u8], after: usize) -> Vec<u8> {
    let at = record_start(pcap, after);
    let mut out = pcap[..at].to_vec();
    out.extend_from_slice(&pcap[at..at + 8]); // the next record's time
    out.extend_from_slice(&300_000u32.to_le_bytes());
    out.extend_from_slice(&300_000u32.to_le_bytes());
    out.extend_from_slice(&pcap[at..]);
    out
}

/// Where the record after the first `n` starts in `pcap` (a little-endian classic pcap).
fn record_start(pcap: &[u8], n: usize) -> usize {
    assert_eq!(&pcap[..2], &[0xd4, 0xc3], "little-endian microsecond pcap");
    let mut at = 24;
    for _ in 0..n {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap());
        at += 16 + caplen as usize;
    }
    at
}

/// A little-endian classic pcap (Ethernet) with snap length `snaplen` and records of these
/// captured lengths (zero bytes; `(caplen, present)`: only `present` bytes of it written).
fn crafted_pcap(snaplen: u32, records: &[(u32, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, snaplen, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, &(caplen, present)) in records.iter().enumerate() {
        for v in [1_764_072_000 + i as u32, 0, caplen, caplen] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.resize(out.len() + present, 0);
    }
    out
}

/// `pcap` with a record longer than the file's snap length (but under libpcap's 256 KiB
/// limit, so libpcap cuts it to the snap length and reads on) inserted after its `after`th.
fn with_long_record(pcap: &[u8], after: usize) -> Vec<u8> {
    assert_eq!(&pcap[..2], &[0xd4, 0xc3], "little-endian microsecond pcap");
    let snaplen = u32::from_le_bytes(pcap[16..20].try_into().unwrap());
    let long = snaplen + 1_000;
    assert!(long <= 262_144, "snap length {snaplen}");
    let at = record_start(pcap, after);
    let mut out = pcap[..at].to_vec();
    out.extend_from_slice(&pcap[at..at + 8]); // the next record's time
    out.extend_from_slice(&long.to_le_bytes());
    out.extend_from_slice(&long.to_le_bytes());
    out.extend((0..long).map(|i| i as u8));
    out.extend_from_slice(&pcap[at..]);
    out
}

/// A capture's name, bytes, records read, of them by our plain reader, and the error.
type EditedCapture = (&'static str, Vec<u8>, u64, u64, Option<String>);

/// The mix `pcap` (of `n` records) as pcapng, whole and edited: (name, bytes, records read,
/// of them by our plain reader, libpcap's error). Blocks libpcap skips (name resolution,
/// interface statistics, a custom block) are skipped by us too; at a second interface's block,
/// a packet over the snap length, a packet of an interface not described, or a block cut by
/// the end of the file, libpcap reads on (and its error stands, or our pcapng reader takes
/// over where libpcap stops on a valid file); a file with two section headers before its
/// first interface's is libpcap's from the start.
fn pcapng_mixes(pcap: &[u8], n: u64) -> Vec<EditedCapture> {
    let snaplen = u32::from_le_bytes(pcap[16..20].try_into().unwrap());
    // The mix as pcapng, with `blocks` before record `k` if given.
    let ng = |extra: Option<(usize, Vec<u8>)>| {
        mixgen::pcapng_of(pcap, |i| match &extra {
            Some((k, blocks)) if *k == i => blocks.clone(),
            _ => vec![],
        })
        .expect("the mix as pcapng")
    };
    let skipped = [
        mixgen::ng_block(4, &[1, 0, 4, 0, 10, 0, 1, 20, 0, 0, 0, 0]),
        mixgen::ng_block(5, &[0; 8]),
        mixgen::ng_block(0x0000_0BAD, &[0; 9]),
    ]
    .concat();
    let whole = ng(None);
    let mut cut = whole.clone();
    cut.truncate(cut.len() - 6);
    // A second section header before the interface's (libpcap passes over it on opening).
    let shb_len = u32::from_le_bytes(whole[4..8].try_into().unwrap()) as usize;
    let two_sections = [&whole[..shb_len], &whole[..shb_len], &whole[shb_len..]].concat();
    let over = mixgen::ng_epb(
        0,
        1_764_072_000_000_000,
        snaplen + 4,
        snaplen + 4,
        &vec![0; snaplen as usize + 4],
    );
    let stray = mixgen::ng_epb(1, 1_764_072_000_000_000, 60, 60, &[0; 60]);
    let half = (n / 2) as usize;
    vec![
        ("mix", whole, n, n, None),
        ("mix-skipped-blocks", ng(Some((half, skipped))), n, n, None),
        (
            "mix-second-interface",
            ng(Some((half, mixgen::ng_idb(snaplen)))),
            n,
            n / 2,
            None,
        ),
        // (libpcap refuses it; our pcapng reader takes over there, as wherever libpcap stops
        // on a valid file, and reads it and the rest.)
        (
            "mix-over-snaplen",
            ng(Some((half, over))),
            n + 1,
            n / 2,
            None,
        ),
        (
            "mix-undescribed-interface",
            ng(Some((half, stray))),
            n / 2,
            n / 2,
            Some(format!(
                "packet {}: libpcap error: a packet arrived on interface 1, but there's no \
                 Interface Description Block for that interface",
                n / 2 + 1
            )),
        ),
        (
            "mix-cut-tail",
            cut,
            n - 1,
            n - 1,
            Some(format!("packet {n}: libpcap error")),
        ),
        // (Not ours at all: libpcap frames the blocks before the first interface's in the
        // first header's byte order only, and our reader in each header's own.)
        ("mix-two-section-headers", two_sections, n, 0, None),
    ]
}

/// Reads `path` to its end or error with [`FileSource::read_frames`]: (records read, of them
/// read by our plain reader, the error).
fn read_plainly(path: &Path) -> (u64, u64, Option<String>) {
    let mut src = FileSource::open(&path.to_string_lossy()).expect("opens");
    let err = loop {
        match src.read_frames(1_024, |_| {}) {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    (src.packets_read(), src.plain_records(), err)
}

/// Reads `path` as [`read_plainly`] does and checks that it ends in an error containing
/// `message` after `records` records, `plain` of them ours.
fn read_plainly_to_error(path: &Path, records: u64, plain: u64, message: &str) {
    let (r, p, err) = read_plainly(path);
    assert_eq!((r, p), (records, plain), "{path:?}");
    let err = err.unwrap_or_else(|| panic!("{path:?}: no error"));
    assert!(err.contains(message), "{path:?}: {err}");
}

/// Records libpcap reads in `path` one by one (`next_frame`), to its end or error.
fn libpcap_records(path: &Path) -> u64 {
    harness::frames_of(&path.to_string_lossy(), 0).0.len() as u64
}

#[test]
fn plain_records_are_ours_until_one_is_not() {
    let mut temps = TempFiles::default();
    // Classic pcap in both byte orders and both resolutions, cooked v1 (whose pseudo-header
    // libpcap swaps, but only in files of the other byte order), empty records, time going
    // back: every record is ours. (What the frames are is `read_frames_gives_what_next_frame_
    // gives`'s to check; this shows which reader gave them.)
    for name in [
        "pcap_be_micro.pcap",
        "pcap_be_nanos.pcap",
        "pcap_le_nanos.pcap",
        "link_sll.pcap",
        "zero_length_record.pcap",
        "time_backwards.pcap",
        "reference-layout.pcap",
    ] {
        let path = fixture(name);
        let n = libpcap_records(&path);
        assert!(n >= 4, "{name}: {n} records");
        assert_eq!(read_plainly(&path), (n, n, None), "{name}");
    }
    // A record cut short by the end of the file: libpcap reads it, and its error stands.
    read_plainly_to_error(
        &fixture("corrupt_truncated_record.pcap"),
        1,
        1,
        "packet 2: libpcap error: truncated dump file",
    );
    // A record over the snap length from the first: all libpcap's.
    let path = fixture("over_snaplen.pcap");
    assert_eq!(read_plainly(&path), (libpcap_records(&path), 0, None));

    let mix = temps.path("plain-mix.pcap");
    let n = mixgen::span_mix(&mix, 3_000).expect("mix") as u64;
    assert_eq!(read_plainly(&mix), (n, n, None));
    let bytes = std::fs::read(&mix).expect("mix");
    // A record libpcap cuts to the snap length after the 1,500th: libpcap reads from it on.
    let long = temps.path("plain-mix-long-record.pcap");
    std::fs::write(&long, with_long_record(&bytes, 1_500)).expect("write");
    assert_eq!(read_plainly(&long), (n + 1, 1_500, None));
    // A record libpcap refuses after the 1,500th: its error, at packet 1,501.
    let refused = temps.path("plain-mix-refused-record.pcap");
    std::fs::write(&refused, with_refused_record(&bytes, 1_500)).expect("write");
    read_plainly_to_error(
        &refused,
        1_500,
        1_500,
        "packet 1501: libpcap error: invalid packet capture length 300000",
    );
    // The mix with its last record cut (a capture whose writer was killed): libpcap is
    // handed the file at that record, and its error stands.
    let tail = temps.path("plain-mix-cut-tail.pcap");
    std::fs::write(&tail, &bytes[..bytes.len() - 5]).expect("write");
    read_plainly_to_error(
        &tail,
        n - 1,
        n - 1,
        &format!("packet {n}: libpcap error: truncated dump file"),
    );
    // A header snap length above 256 KiB: libpcap keeps it but refuses any record longer than
    // 256 KiB, so such a record is not plain (and no buffer grows to the header's size).
    for (name, snaplen, records) in [
        (
            "plain-snap-1m.pcap",
            1 << 20,
            vec![(60, 60), (300_000, 300_000), (60, 60)],
        ),
        ("plain-snap-max.pcap", 0x7fff_ffff, vec![(0x7fff_0000, 40)]),
    ] {
        let path = temps.path(name);
        std::fs::write(&path, crafted_pcap(snaplen, &records)).expect("write");
        let first_long = records.iter().position(|r| r.0 > 262_144).unwrap() as u64;
        read_plainly_to_error(
            &path,
            first_long,
            first_long,
            &format!(
                "packet {}: libpcap error: invalid packet capture length {}, bigger than \
                 maximum of 262144",
                first_long + 1,
                records[first_long as usize].0
            ),
        );
        harness::read_frames_agree(std::slice::from_ref(&path), first_long as usize);
    }
    // pcapng in both byte orders, after 2038: every packet ours up to a block libpcap reads
    // itself (another interface's description, a new section, a packet over the snap length)
    // and libpcap's from there on; none when the section describes two interfaces before its
    // first packet (libpcap stops after the first on opening the file).
    for (name, plain) in [
        ("pcapng_basic.pcapng", 8),
        ("pcapng_be.pcapng", 8),
        ("pcapng_past_2038.pcapng", 3),
        ("pcapng_multi_link.pcapng", 2),
        ("pcapng_sections_byte_orders.pcapng", 2),
        ("pcapng_two_snaplens.pcapng", 1),
        ("pcapng_two_interfaces_nanos.pcapng", 0),
        ("pcapng_over_snaplen.pcapng", 0),
    ] {
        let path = fixture(name);
        let n = libpcap_records(&path);
        assert_eq!(read_plainly(&path), (n, plain, None), "{name}");
    }
    for (name, edited, records, plain, error) in pcapng_mixes(&bytes, n) {
        let path = temps.path(&format!("plain-{name}.pcapng"));
        std::fs::write(&path, edited).expect("write");
        assert_eq!(libpcap_records(&path), records, "{name}");
        match error {
            None => assert_eq!(read_plainly(&path), (records, plain, None), "{name}"),
            Some(message) => read_plainly_to_error(&path, records, plain, &message),
        }
    }
    // The file cut shorter while being read: the record we would hand libpcap lies past its
    // new end, which is said.
    let cut = temps.path("plain-mix-cut-while-read.pcap");
    std::fs::write(&cut, &bytes).expect("write");
    let mut src = FileSource::open(&cut.to_string_lossy()).expect("opens");
    assert_eq!(src.read_frames(1_000, |_| {}), Ok(1_000));
    assert_eq!(src.plain_records(), 1_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .expect("open");
    f.set_len(24 + (bytes.len() as u64 - 24) / 10).expect("cut");
    let err = src.next_frame().expect_err("an error").to_string();
    let at = record_start(&bytes, 1_000);
    assert!(
        err.contains(&format!(
            "packet 1001: the file changed while being read: the record after the 1000 read \
             starts at byte {at}, but the file is now"
        )),
        "{err}"
    );
    assert_eq!(src.next_frame().map(|f| f.is_none()), Ok(true), "finished");
}

#[test]
fn read_frames_gives_what_next_frame_gives() {
    let mut inputs: Vec<PathBuf> = common::files_in("fixtures", &["pcap", "pcapng"])
        .iter()
        .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .collect();
    assert!(inputs.len() >= 50, "{} fixture captures", inputs.len());
    // A mix of several thousand packets: batches end at every size asked for, 1,024 included.
    let mut temps = TempFiles::default();
    let mix = temps.path("frames-mix.pcap");
    let n = mixgen::span_mix(&mix, 5_000).expect("mix");
    assert!(n >= 5_000);
    inputs.push(mix.clone());
    // Every cut of a classic pcap file (libpcap's errors inside a batch), of a pcapng file and
    // of the multi-link pcapng file (before, at and after the hand-over to our reader).
    for name in [
        "flow_timeouts_custom.pcap",
        "pcapng_basic.pcapng",
        "pcapng_multi_link.pcapng",
    ] {
        let whole = std::fs::read(fixture(name)).expect("fixture");
        for cut in 0..whole.len() {
            let file = temps.path(&format!("frames-cut-{cut:05}-{name}"));
            std::fs::write(&file, &whole[..cut]).expect("cut file");
            inputs.push(file);
        }
    }
    // The mix with a record libpcap refuses (a captured length of 300,000 bytes) after its
    // 2,500th: libpcap could read on after that error, and neither way of reading may. And
    // with a record libpcap cuts to the snap length there: our plain reader hands it back.
    let mix_bytes = std::fs::read(&mix).expect("mix");
    for (name, edited) in [
        ("refused", with_refused_record(&mix_bytes, 2_500)),
        ("long", with_long_record(&mix_bytes, 2_500)),
    ] {
        let file = temps.path(&format!("frames-mix-{name}-record.pcap"));
        std::fs::write(&file, edited).expect("edited mix");
        inputs.push(file);
    }
    // The mix as pcapng, whole and with blocks that our plain reader skips or hands to
    // libpcap halfway.
    for (name, edited, ..) in pcapng_mixes(&mix_bytes, n as u64) {
        let file = temps.path(&format!("frames-{name}.pcapng"));
        std::fs::write(&file, edited).expect("pcapng mix");
        inputs.push(file);
    }
    harness::read_frames_agree(&inputs, 20_000);
}

/// Runs `exfilwatch read --quiet PATH` (JSON alerts on standard output) with `input`'s bytes
/// written into a named pipe at PATH; the output's mentions of the pipe's path are replaced by
/// `input`'s.
fn read_through_pipe(input: &Path, fifo: &Path) -> common::Output {
    let _ = std::fs::remove_file(fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {fifo:?}"
    );
    let bytes = std::fs::read(input).expect("fixture");
    let writer_path = fifo.to_path_buf();
    let feeder = std::thread::spawn(move || {
        // Opening blocks until exfilwatch opens the pipe; a reader that stops at an error
        // closes it early (a broken pipe is expected then).
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(writer_path) {
            let _ = std::io::Write::write_all(&mut w, &bytes);
        }
    });
    let mut out = run(
        Command::new(BIN).args(["read", "--quiet"]).arg(fifo),
        TIMEOUT,
    )
    .expect("exfilwatch on a pipe");
    feeder.join().expect("feeder");
    let _ = std::fs::remove_file(fifo);
    let (from, to) = (fifo.to_string_lossy(), input.to_string_lossy());
    out.stdout = String::from_utf8_lossy(&out.stdout)
        .replace(&*from, &to)
        .into_bytes();
    out.stderr = out.stderr.replace(&*from, &to);
    out
}

/// The fixtures our pcapng reader reads on in after libpcap stopped (or names the fault
/// itself): it reads the file again from its start, which a pipe cannot give.
const READ_ON_BY_US: &[&str] = &[
    "pcapng_huge_block.pcapng",
    "pcapng_multi_link.pcapng",
    "pcapng_multi_link_cut_block.pcapng",
    "pcapng_multi_link_cut_block_header.pcapng",
    "pcapng_multi_link_first_unsupported.pcapng",
    "pcapng_over_snaplen.pcapng",
    "pcapng_sections_byte_orders.pcapng",
    "pcapng_two_snaplens.pcapng",
];

#[test]
fn a_named_pipe_reads_as_its_file() {
    let inputs = common::files_in("fixtures", &["pcap", "pcapng"]);
    assert!(inputs.len() >= 40, "{} fixture captures", inputs.len());
    let fifo = tmp(&format!("pipe-{}", std::process::id()));
    let mut with_alerts = 0;
    for input in &inputs {
        let direct = run(
            Command::new(BIN).args(["read", "--quiet"]).arg(input),
            TIMEOUT,
        )
        .expect("exfilwatch on the file");
        let piped = read_through_pipe(input, &fifo);
        let name = input.file_name().unwrap_or_default().to_string_lossy();
        if READ_ON_BY_US.contains(&&*name) {
            // libpcap's error (or, for a first interface we do not decode, the skip) stands,
            // after the alerts of the packets before it.
            let (p, d) = (
                String::from_utf8_lossy(&piped.stdout),
                String::from_utf8_lossy(&direct.stdout),
            );
            assert_eq!(piped.status.code(), Some(2), "{name}: {}", piped.stderr);
            assert!(
                piped.stderr.contains(&*input.to_string_lossy()),
                "{}",
                piped.stderr
            );
            assert!(d.starts_with(&*p), "{name}: {p}\n{d}");
            assert!(p != d || piped.stderr != direct.stderr, "{name}: read on");
            if name == "pcapng_multi_link.pcapng" {
                assert!(
                    piped.stderr.contains("packet 3:")
                        && piped.stderr.contains("not from a pipe or device"),
                    "{}",
                    piped.stderr
                );
                assert_eq!(p.lines().count(), 1, "the alert of packet 1");
            }
            continue;
        }
        assert_eq!(
            (piped.status.code(), String::from_utf8_lossy(&piped.stdout)),
            (
                direct.status.code(),
                String::from_utf8_lossy(&direct.stdout)
            ),
            "{name}: through a pipe, then from the file"
        );
        with_alerts += usize::from(!direct.stdout.is_empty());
    }
    assert!(with_alerts >= 20, "{with_alerts} fixtures with alerts");
}

#[test]
fn standard_input_keeps_libpcaps_error_with_a_hint() {
    let bytes = std::fs::read(fixture("pcapng_multi_link.pcapng")).expect("fixture");
    let mut child = Command::new(BIN)
        .args(["read", "--quiet", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exfilwatch starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || {
        // exfilwatch stops reading at the error: a broken pipe is expected.
        let _ = std::io::Write::write_all(&mut stdin, &bytes);
    });
    let out = child.wait_with_output().expect("exfilwatch ends");
    feeder.join().expect("feeder");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("-: packet 3:")
            && stderr.contains("different from the type of the first interface")
            && stderr.contains("not from standard input: save it to a file first"),
        "{stderr}"
    );
    // The alert of packet 1, read before the second interface appeared, is written.
    let alerts: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON alert");
            v["pcap_cnt"].as_u64().unwrap_or_default()
        })
        .collect();
    assert_eq!(alerts, [1]);
}

#[test]
fn every_cut_of_a_multi_link_file_reads_a_prefix() {
    let name = "pcapng_multi_link.pcapng";
    let whole = std::fs::read(fixture(name)).expect("fixture");
    let rules = tmp("any-syn-cuts.toml");
    std::fs::write(&rules, ANY_SYN_RULES).expect("rules file");
    let (all, packets) = exfilwatch_syns(&fixture(name), &rules);
    assert_eq!((all.len(), packets), (4, 9), "the whole file: {all:?}");

    let cuts: Vec<usize> = (0..whole.len()).collect();
    let outcomes: Vec<(&str, Vec<String>)> = par_map(&cuts, |&cut| {
        let mut temp = TempFiles::default();
        let file = temp.path(&format!("cut-{cut:04}-{name}"));
        std::fs::write(&file, &whole[..cut]).expect("cut file");
        let mut cmd = Command::new(BIN);
        cmd.args(["read", "--rules"]).arg(&rules).arg(&file);
        let out = match run(&mut cmd, TIMEOUT) {
            Ok(o) => o,
            Err(e) => return ("hang", vec![format!("cut at {cut}: {e}")]),
        };
        drop(temp);
        let mut p = Vec::new();
        if out.stderr.contains("panicked") {
            p.push(format!("cut at {cut}: panicked: {}", out.stderr));
        }
        let code = out.status.code();
        if code == Some(2) && out.stderr.contains("cannot read capture") {
            // Cut before the first packet: libpcap cannot open it.
            return ("not opened", p);
        }
        let read = packets_in_summary(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let got: Vec<u64> = stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["pcap_cnt"].as_u64().unwrap_or_default()
            })
            .collect();
        let want: Vec<u64> = all.iter().map(|s| s.0).filter(|&n| n <= read).collect();
        if got != want {
            p.push(format!(
                "cut at {cut}: {read} packets read, alerts {got:?}, want {want:?}"
            ));
        }
        let outcome = match code {
            Some(2) => {
                let located = format!("cut-{cut:04}-{name}: packet {}:", read + 1);
                if !out.stderr.contains(&located) {
                    p.push(format!("cut at {cut}: no {located:?} in {:?}", out.stderr));
                }
                if out.stderr.contains("(block at byte offset") {
                    "located by our reader"
                } else {
                    "located by libpcap"
                }
            }
            // A cut between blocks is a shorter, valid file.
            Some(0 | 1) => "read to its end",
            other => {
                p.push(format!("cut at {cut}: exit {other:?}: {}", out.stderr));
                "bad exit"
            }
        };
        (outcome, p)
    });
    let mut tally = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (outcome, p) in outcomes {
        *tally.entry(outcome).or_insert(0) += 1;
        problems.extend(p);
    }
    println!("{} cuts of {name}: {tally:?}", cuts.len());
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
