//! Flow records against tshark: the counters of every `--flows` record (packets and IP-layer
//! bytes per direction) must equal what tshark counts on the same capture.
//!
//! For each capture (several fixtures: the demo `reference-layout.pcap`, VLAN, IPv6 with
//! extension headers, IPv4 and IPv6 fragments, Linux cooked; and a handful of files of the
//! tcpdump corpus at `../shared/corpus/tcpdump/`, Ethernet or Linux cooked, with TCP and UDP
//! conversations), [`flow_counters_match_tshark`] runs `exfilwatch read --flows FILE` with a rule
//! file that has no rules, and tshark (`-o ip.defragment:FALSE -o ipv6.defragment:FALSE`, so
//! every frame is one row) over the same file. Each tshark row that carries IP is put in a
//! conversation the way the design keys flows: VLAN ids, the outer IP header's protocol and both
//! endpoints (ports for TCP and UDP only), direction-normalised; a later fragment (offset > 0)
//! joins the conversation of its first fragment (same VLANs, addresses, protocol and IP id) when
//! that came before it, and otherwise belongs to no flow (the design counts it, without a flow).
//! A row's bytes are `ip.len` (IPv4) or `ipv6.plen + 40` (IPv6).
//!
//! Records are matched to rows by conversation and time: a record covers the rows of its
//! conversation from its `start` to its `end` (microseconds, as the records print them);
//! records of one conversation whose times overlap (ICMP messages of different types between the
//! same hosts are different flows, and the records name no ICMP type) are compared as one
//! cluster. Per cluster, the packets and bytes sent by each endpoint must be equal, and every
//! tshark row must fall in some record. Differences that are accepted are listed in
//! [`ACCEPTED`] with their reasons; an unlisted difference fails the test, and so does a listed
//! one that no longer occurs.
//!
//! Environment: without tshark (`TSHARK`, default `tshark` on PATH) the test says why and
//! passes, and without the corpus (`EXFILWATCH_CORPUS`, default `../shared/corpus/tcpdump`) it
//! checks the fixtures only; under `CI=true` either is a failure. `EXFILWATCH_FLOWS_CORPUS`
//! replaces [`CORPUS`] by other comma-separated corpus file names, or by every file (`all`, to
//! look for differences; most of the corpus is malformed on purpose, so expect many).
//! [`conversation_matching_finds_differences`] checks the matching itself on hand-made input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{ci, run, tshark};

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Fixtures (fixtures/) whose flow records are compared.
const FIXTURES: &[&str] = &[
    "reference-layout.pcap",
    "link_ethernet.pcap",
    "link_vlan_8021q.pcap",
    "link_vlan_qinq.pcap",
    "link_sll.pcap",
    "link_sll2.pcap",
    "ipv4_options.pcap",
    "ipv6_ext_headers.pcap",
    "ipv4_fragments.pcap",
    "ipv6_fragments.pcap",
    "egress_protocols.pcap",
    "tcp_syn_after_rst.pcap",
    "tcp_syn_after_fin.pcap",
    "flow_expiry.pcap",
    "volume_by_flow.pcap",
    "volume_by_src.pcap",
    "long_flow.pcap",
    "policy.pcap",
];

/// Files of the tcpdump corpus whose flow records are compared: TCP and UDP conversations over
/// Ethernet or Linux cooked capture; tunnels (the outer header is the flow); time going
/// backwards; and one file of each kind of accepted difference.
const CORPUS: &[&str] = &[
    "ssh.pcap",
    "mptcp-v0.pcap",
    "mptcp-v1.pcap",
    "resp_1_benchmark.pcap",
    "of10_s4810.pcap",
    "bgp-4byte-asn.pcap",
    "afs.pcap",
    "dns_tcp.pcap",
    "tcp-handshake-nano.pcap",
    "ntp-control.pcap",
    "geneve.pcap",
    "various_gre.pcap",
    "erspan-type-ii-3.pcap",
    "kday4.pcap",
    "bigtcp-ipv6.pcap",
    "ipv6_jumbogram_1.pcap",
    "macsec-short-valid.pcap",
    "ipv6-srh-tlv-pad1-padn-5-trunc.pcap",
    "ip_ts_opts_asan.pcap",
];

/// One difference between exfilwatch's flow records and tshark's counts that is accepted.
struct Accepted {
    /// `fixtures/NAME` or `corpus/NAME`.
    file: &'static str,
    /// The differences, exactly as the test renders them.
    diffs: &'static [&'static str],
    reason: &'static str,
}

const LINK_AVSP: &str = "Arista timestamp ethertype (0xd28b) in front of IPv4: exfilwatch does \
     not decode that link header (decode: not_ip), tshark does; no flow";
const LINK_MACSEC: &str = "MACsec (802.1AE, ethertype 0x88e5) with integrity only: tshark \
     reads the IP packet inside, exfilwatch does not decode MACsec (decode: not_ip); no flow";
const LINK_NSH: &str = "Network Service Header (ethertype 0x894f) in front of IPv4: not \
     decoded by exfilwatch (decode: not_ip); no flow";
const LINK_MPLS: &str = "MPLS label stack in front of IPv4: not decoded by exfilwatch (decode: \
     not_ip); no flow";
const ZERO_LEN: &str = "an IP length field of 0 (BIG TCP / segmentation offload, IPv6 \
     jumbograms): tshark's ipv6.plen is 0 (so 40 bytes, and often no transport header decoded), \
     exfilwatch counts the IP bytes captured, as src/decode documents for lengths of 0";
const NO_TRANSPORT: &str = "captured up to the end of the IPv4 header (with bogus options): no \
     ICMP type or code to key a flow, exfilwatch skips it (decode: transport_truncated); tshark \
     still shows the IP layer";
const MALFORMED: &str = "fuzzed packet whose IP header or extension chain is cut off or invalid \
     (decode: ip_truncated or ip_malformed, or a fragment header with payload length 0): \
     exfilwatch skips it, tshark shows the layers it could read";

/// Every accepted difference. Most are in corpus files that only `EXFILWATCH_FLOWS_CORPUS=all`
/// compares; [`CORPUS`] holds one file of each kind, to keep each in view.
///
/// Not listed because they are not differences: later fragments whose first fragment was not
/// seen before them (the design counts them without a flow; such rows are dropped and counted
/// in the output); tunnels (GRE, Geneve, VXLAN, ERSPAN: both sides see the outer header's
/// flow); packets stamped earlier than one before them in their conversation (they count at the
/// conversation's latest time, as exfilwatch's `end` is its latest packet time).
const ACCEPTED: &[Accepted] = &[
    Accepted {
        file: "corpus/arista_ether.pcap",
        diffs: &[
            "proto 63 10.2.23.24 <-> 10.136.1.32: 7 tshark packet(s) in no flow record [#1, #3, #5, #9, #11, #13, #15]",
            "proto 63 10.2.23.24 <-> 10.136.1.32 vlan [100]: 5 tshark packet(s) in no flow record [#4, #6, #8, #12, #16]",
        ],
        reason: LINK_AVSP,
    },
    Accepted {
        file: "corpus/bigtcp-ipv6-geneve-ipv4.pcap",
        diffs: &[
            "proto 17 [2604:1380:4091:ce00::b]:55411 <-> [2604:1380:4091:ce00::d]:6081 from 1759500341755329 to 1759500341755329 (1 record(s)): exfilwatch a->b 1 pkts 80122 B, b->a 0 pkts 0 B; tshark a->b 0 pkts 0 B, b->a 0 pkts 0 B",
            "proto 17 2604:1380:4091:ce00::b <-> 2604:1380:4091:ce00::d: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/bigtcp-ipv6-geneve-ipv6.pcap",
        diffs: &[
            "proto 17 [2604:1380:4091:ce00::b]:6081 <-> [2604:1380:4091:ce00::d]:23733 from 1759500354176759 to 1759500354176759 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 80142 B; tshark a->b 0 pkts 0 B, b->a 0 pkts 0 B",
            "proto 17 2604:1380:4091:ce00::b <-> 2604:1380:4091:ce00::d: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/bigtcp-ipv6-hbh.pcap",
        diffs: &[
            "proto 6 [2604:1380:4091:ce00::b]:43913 <-> [2604:1380:4091:ce00::d]:41851 from 1759760007172200 to 1759760007172200 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 80080 B; tshark a->b 0 pkts 0 B, b->a 1 pkts 40 B",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/bigtcp-ipv6-vxlan-ipv4.pcap",
        diffs: &[
            "proto 17 [2604:1380:4091:ce00::b]:4789 <-> [2604:1380:4091:ce00::d]:52238 from 1759417892151342 to 1759417892151342 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 80122 B; tshark a->b 0 pkts 0 B, b->a 0 pkts 0 B",
            "proto 17 2604:1380:4091:ce00::b <-> 2604:1380:4091:ce00::d: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/bigtcp-ipv6-vxlan-ipv6.pcap",
        diffs: &[
            "proto 17 [2604:1380:4091:ce00::b]:4789 <-> [2604:1380:4091:ce00::d]:37059 from 1759417864542102 to 1759417864542102 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 80142 B; tshark a->b 0 pkts 0 B, b->a 0 pkts 0 B",
            "proto 17 2604:1380:4091:ce00::b <-> 2604:1380:4091:ce00::d: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/bigtcp-ipv6.pcap",
        diffs: &[
            "proto 6 [2604:1380:4091:ce00::b]:43267 <-> [2604:1380:4091:ce00::d]:41219 from 1759417761939724 to 1759417761939724 (1 record(s)): exfilwatch a->b 1 pkts 80040 B, b->a 0 pkts 0 B; tshark a->b 0 pkts 0 B, b->a 0 pkts 0 B",
            "proto 6 2604:1380:4091:ce00::b <-> 2604:1380:4091:ce00::d: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/heapoverflow-ip_demux_print.pcap",
        diffs: &[
            "proto 51 48.48.48.48 <-> 48.48.48.48: 1 tshark packet(s) in no flow record [#2]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/hoobr_rt6_print.pcap",
        diffs: &[
            "proto 48 3030:3030:3030:3030:3030:3030:3030:3030 <-> 3030:3030:3030:3030:3030:3030:3030:3030: 1 tshark packet(s) in no flow record [#3]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/icmp-rfc8335-missing-bytes.pcap",
        diffs: &[
            "proto 1 35.36.42.37 <-> 38.39.40.41: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_MACSEC,
    },
    Accepted {
        file: "corpus/icmpv6-length-zero.pcapng",
        diffs: &[
            "proto 58 6e02::41 <-> fe80::25a:28ff:fe08:f150 from 1274329489656077 to 1274329489656077 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 72 B; tshark a->b 0 pkts 0 B, b->a 1 pkts 40 B",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/ip6_frag_asan.pcap",
        diffs: &[
            "proto 44 452:22:19:0:41a:e4ff:10ff:484d <-> 2243:80:1400:100:19:ffff:ffff:fffb: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ip_ts_opts_asan.pcap",
        diffs: &[
            "proto 1 95.18.83.227 <-> 149.8.33.81: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: NO_TRANSPORT,
    },
    Accepted {
        file: "corpus/ipv6-next-header-oobr-1.pcap",
        diffs: &[
            "proto 43 3030:3030:3030:3030:3030:3030:3030:3030 <-> 3030:3030:3030:3030:3030:3030:3030:3030: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ipv6-next-header-oobr-2.pcap",
        diffs: &[
            "proto 51 3030:3030:3030:3030:3030:3030:3030:3030 <-> 3030:3030:3030:3030:3030:3030:3030:3030: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ipv6-rthdr-oobr.pcap",
        diffs: &[
            "proto 48 3030:3030:3030:3030:3030:3030:3030:3030 <-> 3030:3030:3030:3030:3030:3030:3030:3030: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ipv6-srh-tlv-pad1-padn-5-trunc.pcap",
        diffs: &[
            "proto 59 2001:db8:1::1 <-> cafe:1::2: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ipv6-too-long-jumbo.pcap",
        diffs: &[
            "proto 12 1:6:1a28:312:d7cb:b318:34e5:d3ea <-> 2b7f:cd1f:ec3c:fb9c:e731:d16b:a8fe:ba8c from 1338986423226395 to 1338986423226395 (1 record(s)): exfilwatch a->b 1 pkts 476 B, b->a 0 pkts 0 B; tshark a->b 1 pkts 40 B, b->a 0 pkts 0 B",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/ipv6_frag6_negative_len.pcap",
        diffs: &[
            "proto 44 7fff:ffff:c3b2:a102:1305:80:38:2949 <-> 9675:86dd:7300:2c:1c7f:ffff:ffc3:b2a1: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ipv6_jumbogram_1.pcap",
        diffs: &[
            "proto 58 2200::240:2:0:0:4 <-> 2200::244:212:3fff:feae:22f7 from 1659344995627421 to 1659344995627421 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 65576 B; tshark a->b 0 pkts 0 B, b->a 1 pkts 40 B",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/ipv6_jumbogram_invalid_length.pcap",
        diffs: &[
            "proto 58 2200::240:2:0:0:4 <-> 2200::244:212:3fff:feae:22f7 from 1659344995627421 to 1659344995627421 (1 record(s)): exfilwatch a->b 0 pkts 0 B, b->a 1 pkts 65576 B; tshark a->b 0 pkts 0 B, b->a 1 pkts 40 B",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/ipv6_missing_jumbo_payload_option.pcap",
        diffs: &[
            "proto 0 a:b:c:0:ffff:ffff:44:43 <-> 134:d12e:101:600:85bf:af00::: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/ipv6hdr-heapoverflow.pcap",
        diffs: &[
            "proto 0 3030:3030:3030:3030:3030:3030:3030:3030 <-> 3030:3030:3030:3030:3030:3030:3030:3030: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: MALFORMED,
    },
    Accepted {
        file: "corpus/macsec-integonly.pcap",
        diffs: &[
            "proto 1 192.168.113.1 <-> 192.168.113.2: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_MACSEC,
    },
    Accepted {
        file: "corpus/macsec-short-longer.pcap",
        diffs: &[
            "proto 17 192.168.114.1:37459 <-> 192.168.114.2:6666: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_MACSEC,
    },
    Accepted {
        file: "corpus/macsec-short-shorter.pcap",
        diffs: &[
            "proto 17 192.168.114.1:38582 <-> 192.168.114.2:6666: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_MACSEC,
    },
    Accepted {
        file: "corpus/macsec-short-valid.pcap",
        diffs: &[
            "proto 17 192.168.114.1:37459 <-> 192.168.114.2:6666: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_MACSEC,
    },
    Accepted {
        file: "corpus/nsh.pcap",
        diffs: &[
            "proto 17 10.0.8.3:52229 <-> 10.13.13.13:8000: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_NSH,
    },
    Accepted {
        file: "corpus/quic_32_bit_pointer_overflow.pcap",
        diffs: &[
            "proto 17 [::8:46:ee:102:202:202]:0 <-> [202:200:0:fe7e:b65f:677a:82b:601]:443 from 1605796366999999 to 1605796366999999 (1 record(s)): exfilwatch a->b 1 pkts 84 B, b->a 0 pkts 0 B; tshark a->b 1 pkts 40 B, b->a 0 pkts 0 B",
        ],
        reason: ZERO_LEN,
    },
    Accepted {
        file: "corpus/tok2str-oobr-2.pcap",
        diffs: &[
            "proto 17 127.0.0.1:3503 <-> 192.168.0.1:3503: 1 tshark packet(s) in no flow record [#1]",
        ],
        reason: LINK_MPLS,
    },
];

/// A rule file without rules: only the flow table runs.
const NO_RULES: &str = "# No rules: the flow records are all this run is for.\n";

#[test]
fn flow_counters_match_tshark() {
    let Some(tshark) = tshark("flow counter test") else {
        return;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(String, PathBuf)> = FIXTURES
        .iter()
        .map(|f| (format!("fixtures/{f}"), crate_dir.join("fixtures").join(f)))
        .collect();
    let corpus = std::env::var_os("EXFILWATCH_CORPUS")
        .map_or_else(|| crate_dir.join("../shared/corpus/tcpdump"), PathBuf::from);
    if corpus.is_dir() {
        files.extend(
            corpus_selection(&corpus)
                .into_iter()
                .map(|f| (format!("corpus/{f}"), corpus.join(f))),
        );
    } else {
        let msg = format!("corpus {} missing", corpus.display());
        if ci() {
            panic!("{msg}; CI=true requires it");
        }
        println!("SKIPPED: {msg}; comparing the fixtures only");
    }

    let rules = temp_path("flows-no-rules.toml");
    std::fs::write(&rules, NO_RULES).expect("write the empty rule file");
    let mut problems = Vec::new();
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut summary = Vec::new();
    for (name, path) in &files {
        match compare_file(&tshark, &rules, name, path) {
            Err(e) => problems.push(format!("{name}: {e}")),
            Ok(None) => summary.push(format!("{name}: skipped (link type not decoded)")),
            Ok(Some(c)) => {
                summary.push(format!(
                    "{name}: {} records, {} tshark rows ({} more with an IP header tshark could \
                     not read), {} orphan fragments",
                    c.records, c.rows, c.unread, c.orphans
                ));
                if !c.diffs.is_empty() {
                    found.insert(name.clone(), c.diffs);
                }
            }
        }
    }
    let _ = std::fs::remove_file(&rules);

    let accepted: BTreeMap<&str, &Accepted> = ACCEPTED.iter().map(|a| (a.file, a)).collect();
    assert_eq!(accepted.len(), ACCEPTED.len(), "a file is listed twice");
    for (name, diffs) in &found {
        let listed: BTreeSet<&str> = accepted
            .get(name.as_str())
            .map(|a| a.diffs.iter().copied().collect())
            .unwrap_or_default();
        for d in diffs.iter().filter(|d| !listed.contains(d.as_str())) {
            problems.push(format!("{name}: unlisted difference: {d}"));
        }
    }
    let compared: BTreeSet<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    for a in ACCEPTED.iter().filter(|a| compared.contains(a.file)) {
        let now: BTreeSet<&str> = found
            .get(a.file)
            .map(|d| d.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for d in a.diffs.iter().filter(|d| !now.contains(*d)) {
            problems.push(format!(
                "{}: listed difference no longer occurs (remove it from ACCEPTED): {d}",
                a.file
            ));
        }
    }
    println!("flow records against tshark, {} files:", files.len());
    for s in &summary {
        println!("  {s}");
    }
    for a in ACCEPTED.iter().filter(|a| compared.contains(a.file)) {
        println!(
            "  accepted: {}: {} ({})",
            a.file,
            a.diffs.join("; "),
            a.reason
        );
    }
    assert!(
        problems.is_empty(),
        "{} difference(s) between flow records and tshark:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// What comparing one file found.
struct Compared {
    records: usize,
    rows: usize,
    /// Frames whose outer IP header tshark could not read.
    unread: usize,
    orphans: usize,
    diffs: Vec<String>,
}

/// The corpus files to compare: [`CORPUS`], or the comma-separated names in
/// `EXFILWATCH_FLOWS_CORPUS` (`all`: every file, to look for differences).
fn corpus_selection(corpus: &Path) -> Vec<String> {
    match std::env::var("EXFILWATCH_FLOWS_CORPUS") {
        Ok(all) if all == "all" => {
            let mut names: Vec<String> = std::fs::read_dir(corpus)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        }
        Ok(list) => list.split(',').map(str::to_string).collect(),
        Err(_) => CORPUS.iter().map(|f| f.to_string()).collect(),
    }
}

/// Compares one file; None when exfilwatch does not decode its link type.
fn compare_file(
    tshark: &str,
    rules: &Path,
    name: &str,
    file: &Path,
) -> Result<Option<Compared>, String> {
    let flows = temp_path(&format!("flows-{}.jsonl", name.replace('/', "-")));
    let _ = std::fs::remove_file(&flows);
    let mut cmd = Command::new(BIN);
    cmd.args(["read", "--quiet", "--rules"])
        .arg(rules)
        .arg("--flows")
        .arg(&flows)
        .arg(file);
    let out = run(&mut cmd, RUN_TIMEOUT)?;
    if out.status.code() == Some(2) && out.stderr.contains("unsupported link type") {
        let _ = std::fs::remove_file(&flows);
        return Ok(None);
    }
    if out.status.code() != Some(0) {
        return Err(format!(
            "exfilwatch exited {} (want 0: no rules, no alerts): {}",
            out.status,
            out.stderr.trim_end()
        ));
    }
    let text = std::fs::read_to_string(&flows).unwrap_or_default();
    let _ = std::fs::remove_file(&flows);
    let records = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Record::parse)
        .collect::<Result<Vec<_>, _>>()?;

    let mut cmd = Command::new(tshark);
    cmd.args(["-n", "-r"]).arg(file).args([
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-T",
        "fields",
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
    let out = run(&mut cmd, RUN_TIMEOUT)?;
    if !out.status.success() && out.stdout.is_empty() {
        return Err(format!("tshark {}: {}", out.status, out.stderr.trim_end()));
    }
    let (mut rows, mut unread) = (Vec::new(), 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match Row::parse(line)? {
            Parsed::Row(row) => rows.push(row),
            Parsed::Incomplete => unread += 1,
            Parsed::NotIp => {}
        }
    }
    let (packets, orphans) = assign(&rows);
    Ok(Some(Compared {
        records: records.len(),
        rows: rows.len(),
        unread,
        orphans,
        diffs: match_up(&records, &packets),
    }))
}

// ------------------------------------------------------------------------------------------------
// Conversations, records and rows.
// ------------------------------------------------------------------------------------------------

/// An endpoint: address, and port for TCP, UDP and SCTP.
type Endpoint = (IpAddr, Option<u16>);

/// Whether exfilwatch keys flows of this protocol by ports: TCP, UDP and SCTP.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

/// VLAN ids (outermost first), IP protocol, both endpoints in ascending order.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
struct Conversation {
    vlans: Vec<u16>,
    proto: u8,
    a: Endpoint,
    b: Endpoint,
}

impl Conversation {
    /// The conversation of a packet from `src` to `dst`, and whether `src` is its `a` side.
    fn of(vlans: Vec<u16>, proto: u8, src: Endpoint, dst: Endpoint) -> (Conversation, bool) {
        let src_is_a = src <= dst;
        let (a, b) = if src_is_a { (src, dst) } else { (dst, src) };
        (Conversation { vlans, proto, a, b }, src_is_a)
    }
}

impl std::fmt::Display for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ep = |(ip, port): &Endpoint| match (ip, port) {
            (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, None) => a.to_string(),
        };
        write!(
            f,
            "proto {} {} <-> {}",
            self.proto,
            ep(&self.a),
            ep(&self.b)
        )?;
        if !self.vlans.is_empty() {
            write!(f, " vlan {:?}", self.vlans)?;
        }
        Ok(())
    }
}

/// Packets and bytes sent by the `a` side and by the `b` side.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Counts {
    pkts: [u64; 2],
    bytes: [u64; 2],
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a->b {} pkts {} B, b->a {} pkts {} B",
            self.pkts[0], self.bytes[0], self.pkts[1], self.bytes[1]
        )
    }
}

/// One flow record, as the conversation it belongs to.
struct Record {
    conv: Conversation,
    start: i64,
    end: i64,
    counts: Counts,
}

impl Record {
    fn parse(line: &str) -> Result<Record, String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad flow record {line:?}: {e}"))?;
        let bad = || format!("incomplete flow record: {line}");
        let proto = match &v["proto"] {
            serde_json::Value::String(s) => match s.as_str() {
                "TCP" => 6,
                "UDP" => 17,
                "ICMP" => 1,
                "IPv6-ICMP" => 58,
                // design.md asks for the number (132); exfilwatch names it as EVE does.
                "SCTP" => 132,
                _ => return Err(bad()),
            },
            n => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(bad)?,
        };
        let endpoint = |ip: &str, port: &str| -> Result<Endpoint, String> {
            let ip = v[ip]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            let port = v[port].as_u64().map(|p| p as u16);
            if port.is_some() != has_ports(proto) {
                return Err(bad());
            }
            Ok((ip, port))
        };
        let (src, dst) = (
            endpoint("src_ip", "src_port")?,
            endpoint("dest_ip", "dest_port")?,
        );
        let vlans = v["vlan"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_u64().map(|i| i as u16))
                    .collect()
            })
            .unwrap_or_default();
        let (conv, src_is_a) = Conversation::of(vlans, proto, src, dst);
        let f = &v["flow"];
        let n = |k: &str| f[k].as_u64().ok_or_else(bad);
        let (toserver, toclient) = (
            [n("pkts_toserver")?, n("bytes_toserver")?],
            [n("pkts_toclient")?, n("bytes_toclient")?],
        );
        let (sent_a, sent_b) = if src_is_a {
            (toserver, toclient)
        } else {
            (toclient, toserver)
        };
        let time = |k: &str| f[k].as_str().and_then(rfc3339_micros).ok_or_else(bad);
        Ok(Record {
            conv,
            start: time("start")?,
            end: time("end")?,
            counts: Counts {
                pkts: [sent_a[0], sent_b[0]],
                bytes: [sent_a[1], sent_b[1]],
            },
        })
    }
}

/// The tshark fields read per frame, in this order (every occurrence, comma-separated).
const TSHARK_FIELDS: [&str; 30] = [
    "frame.number",
    "frame.time_epoch",
    "frame.protocols",
    "ieee8021ad.id",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.len",
    "ip.id",
    "ip.frag_offset",
    "ip.flags.mf",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "ipv6.fraghdr.ident",
    "ah.next_header",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "sctp.srcport",
    "sctp.dstport",
];

/// What one frame of tshark's output is.
enum Parsed {
    /// No IP layer.
    NotIp,
    /// An IP layer whose addresses, protocol or length tshark did not give.
    Incomplete,
    Row(Row),
}

/// One frame of tshark's output that carries IP: the outer IP header's view.
#[derive(Clone, Debug)]
struct Row {
    frame: u64,
    /// Microseconds since the epoch (truncated, as exfilwatch prints times).
    time: i64,
    vlans: Vec<u16>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// `ip.len`, or `ipv6.plen + 40`.
    len: u64,
    /// The source and destination ports (TCP and UDP, when tshark decoded them).
    ports: Option<(u16, u16)>,
    /// IP id (IPv4) or fragment identification (IPv6), for fragments.
    frag_id: u32,
    /// None for a whole packet; Some(true) for a first fragment (offset 0, more fragments);
    /// Some(false) for a later one (offset > 0).
    first_fragment: Option<bool>,
}

impl Row {
    /// What the frame is: a row when tshark read its outer IP header.
    fn parse(line: &str) -> Result<Parsed, String> {
        let values: Vec<&str> = line.split('\t').collect();
        if values.len() != TSHARK_FIELDS.len() {
            return Err(format!("unexpected tshark row: {line:?}"));
        }
        let all = |name: &str| -> Vec<&str> {
            let i = TSHARK_FIELDS
                .iter()
                .position(|f| *f == name)
                .expect("a field of TSHARK_FIELDS");
            values[i].split(',').filter(|v| !v.is_empty()).collect()
        };
        let number = |v: &str| -> Option<u64> {
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        };
        // The first occurrence of a field: the outer header's.
        let first = |name: &str| all(name).first().and_then(|v| number(v));
        let first_ip = |name: &str| all(name).first().and_then(|v| v.parse::<IpAddr>().ok());
        let layers: Vec<&str> = values[2].split(':').collect();
        let Some(outer_at) = layers.iter().position(|l| *l == "ip" || *l == "ipv6") else {
            return Ok(Parsed::NotIp);
        };
        let outer = &layers[outer_at];
        let frame = first("frame.number").ok_or_else(|| format!("no frame number: {line:?}"))?;
        let time = epoch_micros(values[1]).ok_or_else(|| format!("bad time: {line:?}"))?;
        // The VLAN tags in front of the outer IP header, in frame order (tags further in, e.g.
        // in a mirrored frame inside GRE, are not the packet's).
        let (ad, q) = (all("ieee8021ad.id"), all("vlan.id"));
        let (mut next_ad, mut next_q) = (ad.iter(), q.iter());
        let vlans: Vec<u16> = layers[..outer_at]
            .iter()
            .filter_map(|l| match *l {
                "ieee8021ad" => next_ad.next(),
                "vlan" => next_q.next(),
                _ => None,
            })
            .filter_map(|v| v.parse().ok())
            .collect();
        // Authentication headers (IPv4 or IPv6) come before the transport: follow them.
        let mut ah = all("ah.next_header").into_iter().filter_map(number);
        // The outer IP header's fields; Err when tshark could not read them (a bad length, a
        // version that contradicts the link type).
        let mut outer_ip = || -> Result<_, ()> {
            let (src, dst, proto, len, frag_id, first_fragment);
            if *outer == "ip" {
                src = first_ip("ip.src").ok_or(())?;
                dst = first_ip("ip.dst").ok_or(())?;
                let mut next = first("ip.proto").ok_or(())?;
                while next == 51 {
                    match ah.next() {
                        Some(n) => next = n,
                        None => break,
                    }
                }
                proto = next as u8;
                len = first("ip.len").ok_or(())?;
                frag_id = first("ip.id").unwrap_or(0) as u32;
                first_fragment = match (first("ip.frag_offset"), first("ip.flags.mf")) {
                    (Some(offset), _) if offset > 0 => Some(false),
                    (_, Some(1)) => Some(true),
                    _ => None,
                };
            } else {
                src = first_ip("ipv6.src").ok_or(())?;
                dst = first_ip("ipv6.dst").ok_or(())?;
                len = first("ipv6.plen").ok_or(())? + 40;
                // Follow the outer header's extension chain to its upper-layer protocol.
                let mut next = first("ipv6.nxt").ok_or(())?;
                let mut used: HashMap<&str, usize> = HashMap::new();
                for _ in 0..8 {
                    let field = match next {
                        0 => "ipv6.hopopts.nxt",
                        43 => "ipv6.routing.nxt",
                        60 => "ipv6.dstopts.nxt",
                        44 => "ipv6.fraghdr.nxt",
                        51 => match ah.next() {
                            Some(n) => {
                                next = n;
                                continue;
                            }
                            None => break,
                        },
                        _ => break,
                    };
                    let n = used.entry(field).or_default();
                    match all(field).get(*n).and_then(|v| number(v)) {
                        Some(v) => next = v,
                        None => break,
                    }
                    *n += 1;
                }
                proto = next as u8;
                frag_id = first("ipv6.fraghdr.ident").unwrap_or(0) as u32;
                first_fragment = match (first("ipv6.fraghdr.offset"), first("ipv6.fraghdr.more")) {
                    (Some(offset), _) if offset > 0 => Some(false),
                    (Some(_), Some(1)) => Some(true),
                    _ => None,
                };
            }
            Ok((src, dst, proto, len, frag_id, first_fragment))
        };
        let Ok((src, dst, proto, len, frag_id, first_fragment)) = outer_ip() else {
            return Ok(Parsed::Incomplete);
        };
        // The first port fields of the outer header's protocol are that header's (tunnelled or
        // ICMP-quoted headers come after it).
        let ports = match proto {
            6 => first("tcp.srcport").zip(first("tcp.dstport")),
            17 => first("udp.srcport").zip(first("udp.dstport")),
            132 => first("sctp.srcport").zip(first("sctp.dstport")),
            _ => None,
        }
        .map(|(s, d)| (s as u16, d as u16));
        Ok(Parsed::Row(Row {
            frame,
            time,
            vlans,
            src,
            dst,
            proto,
            len,
            ports,
            frag_id,
            first_fragment,
        }))
    }
}

/// One packet of a conversation, as tshark saw it.
struct Packet {
    conv: Conversation,
    /// Sent by the `a` side.
    from_a: bool,
    time: i64,
    len: u64,
    frame: u64,
}

/// Puts every row in its conversation; later fragments go with their first fragment when it
/// came before them, else nowhere (counted as orphans).
fn assign(rows: &[Row]) -> (Vec<Packet>, usize) {
    type FragKey = (Vec<u16>, IpAddr, IpAddr, u8, u32);
    let mut firsts: HashMap<FragKey, (Conversation, bool)> = HashMap::new();
    let mut packets = Vec::new();
    let mut orphans = 0;
    // A flow's end is its latest packet time: a packet stamped earlier than one before it in
    // its conversation (corpus files go back in time) counts at that latest time.
    let mut latest: HashMap<Conversation, i64> = HashMap::new();
    for r in rows {
        let frag_key = (r.vlans.clone(), r.src, r.dst, r.proto, r.frag_id);
        let (conv, from_a) = if r.first_fragment == Some(false) {
            match firsts.get(&frag_key) {
                Some(c) => c.clone(),
                None => {
                    orphans += 1;
                    continue;
                }
            }
        } else {
            let ports = if has_ports(r.proto) { r.ports } else { None };
            let c = Conversation::of(
                r.vlans.clone(),
                r.proto,
                (r.src, ports.map(|p| p.0)),
                (r.dst, ports.map(|p| p.1)),
            );
            if r.first_fragment == Some(true) {
                firsts.insert(frag_key, c.clone());
            }
            c
        };
        let time = latest.entry(conv.clone()).or_insert(r.time);
        *time = r.time.max(*time);
        packets.push(Packet {
            time: *time,
            conv,
            from_a,
            len: r.len,
            frame: r.frame,
        });
    }
    (packets, orphans)
}

/// Records of one conversation whose times overlap, compared as one.
struct Cluster {
    start: i64,
    end: i64,
    ours: Counts,
    theirs: Counts,
    records: usize,
}

/// Compares the records with tshark's packets; one rendered difference per cluster whose
/// counts differ, and one per conversation with packets outside every record.
fn match_up(records: &[Record], packets: &[Packet]) -> Vec<String> {
    let mut clusters: BTreeMap<&Conversation, Vec<Cluster>> = BTreeMap::new();
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.conv.clone(), r.start, r.end));
    for r in sorted {
        let list = clusters.entry(&r.conv).or_default();
        match list.last_mut() {
            Some(c) if r.start <= c.end => {
                c.end = c.end.max(r.end);
                for i in 0..2 {
                    c.ours.pkts[i] += r.counts.pkts[i];
                    c.ours.bytes[i] += r.counts.bytes[i];
                }
                c.records += 1;
            }
            _ => list.push(Cluster {
                start: r.start,
                end: r.end,
                ours: r.counts,
                theirs: Counts::default(),
                records: 1,
            }),
        }
    }
    let mut outside: BTreeMap<Conversation, Vec<u64>> = BTreeMap::new();
    for p in packets {
        let cluster = clusters.get_mut(&p.conv).and_then(|list| {
            list.iter_mut()
                .find(|c| c.start <= p.time && p.time <= c.end)
        });
        match cluster {
            Some(c) => {
                let i = usize::from(!p.from_a);
                c.theirs.pkts[i] += 1;
                c.theirs.bytes[i] += p.len;
            }
            None => outside.entry(p.conv.clone()).or_default().push(p.frame),
        }
    }
    let mut diffs = Vec::new();
    for (conv, list) in &clusters {
        for c in list.iter().filter(|c| c.ours != c.theirs) {
            diffs.push(format!(
                "{conv} from {} to {} ({} record(s)): exfilwatch {}; tshark {}",
                c.start, c.end, c.records, c.ours, c.theirs
            ));
        }
    }
    for (conv, frames) in outside {
        let list: Vec<String> = frames.iter().map(|f| format!("#{f}")).collect();
        diffs.push(format!(
            "{conv}: {} tshark packet(s) in no flow record [{}]",
            frames.len(),
            list.join(", ")
        ));
    }
    diffs
}

// ------------------------------------------------------------------------------------------------
// The matching itself.
// ------------------------------------------------------------------------------------------------

#[test]
fn conversation_matching_finds_differences() {
    let row = |fields: &[(&str, &str)]| {
        let line: Vec<&str> = TSHARK_FIELDS
            .iter()
            .map(|name| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("", |(_, v)| *v)
            })
            .collect();
        match Row::parse(&line.join("\t")).expect("row parses") {
            Parsed::Row(row) => row,
            _ => panic!("not an IP row: {fields:?}"),
        }
    };
    let v4 = |frame,
              time,
              src,
              dst,
              len,
              id,
              offset,
              mf,
              ports: Option<(&'static str, &'static str)>| {
        let mut f = vec![
            ("frame.number", frame),
            ("frame.time_epoch", time),
            (
                "frame.protocols",
                if ports.is_some() {
                    "eth:ethertype:ip:udp"
                } else {
                    "eth:ethertype:ip:data"
                },
            ),
            ("ip.src", src),
            ("ip.dst", dst),
            ("ip.proto", "17"),
            ("ip.len", len),
            ("ip.id", id),
            ("ip.frag_offset", offset),
            ("ip.flags.mf", mf),
        ];
        if let Some((s, d)) = ports {
            f.extend([("udp.srcport", s), ("udp.dstport", d)]);
        }
        row(&f)
    };
    // IPv4 UDP both ways; an IPv6 fragment chain behind a hop-by-hop header on VLAN 100; a
    // later IPv4 fragment without its first.
    let q = v4(
        "1",
        "100.000001999",
        "10.0.0.1",
        "10.0.0.2",
        "60",
        "0x0001",
        "0",
        "0",
        Some(("5000", "53")),
    );
    assert_eq!(
        (q.time, q.len, q.ports, q.first_fragment),
        (100_000_001, 60, Some((5000, 53)), None)
    );
    let a = v4(
        "2",
        "100.5",
        "10.0.0.2",
        "10.0.0.1",
        "90",
        "0x0002",
        "0",
        "0",
        Some(("53", "5000")),
    );
    let v6 = |frame, time, plen, offset, more, ports: bool| {
        let mut f = vec![
            ("frame.number", frame),
            ("frame.time_epoch", time),
            (
                "frame.protocols",
                "eth:ethertype:vlan:ethertype:ipv6:ipv6.hopopts:ipv6.fraghdr:udp",
            ),
            ("vlan.id", "100"),
            ("ipv6.src", "fd00::1"),
            ("ipv6.dst", "fd00::2"),
            ("ipv6.plen", plen),
            ("ipv6.nxt", "0"),
            ("ipv6.hopopts.nxt", "44"),
            ("ipv6.fraghdr.nxt", "17"),
            ("ipv6.fraghdr.offset", offset),
            ("ipv6.fraghdr.more", more),
            ("ipv6.fraghdr.ident", "0x00000007"),
        ];
        if ports {
            f.extend([("udp.srcport", "7"), ("udp.dstport", "9")]);
        }
        row(&f)
    };
    let f1 = v6("3", "101", "48", "0", "1", true);
    assert_eq!(
        (f1.proto, f1.len, f1.vlans.clone(), f1.first_fragment),
        (17, 88, vec![100], Some(true))
    );
    let f2 = v6("4", "101.1", "32", "3", "0", false);
    assert_eq!(f2.first_fragment, Some(false));
    let orphan = v4(
        "5", "102", "10.0.0.1", "10.0.0.2", "28", "0x0009", "24", "0", None,
    );
    let (packets, orphans) = assign(&[q, a, f1, f2, orphan]);
    assert_eq!((packets.len(), orphans), (4, 1));

    let record = |line: &str| Record::parse(line).expect("record parses");
    let udp = r#"{"proto":"UDP","src_ip":"10.0.0.1","src_port":5000,"dest_ip":"10.0.0.2","dest_port":53,"flow":{"pkts_toserver":1,"pkts_toclient":1,"bytes_toserver":60,"bytes_toclient":BYTES,"start":"1970-01-01T00:01:40.000001Z","end":"1970-01-01T00:01:40.500000Z"}}"#;
    let frag = r#"{"proto":"UDP","src_ip":"fd00::1","src_port":7,"dest_ip":"fd00::2","dest_port":9,"vlan":[100],"flow":{"pkts_toserver":2,"pkts_toclient":0,"bytes_toserver":160,"bytes_toclient":0,"start":"1970-01-01T00:01:41.000000Z","end":"1970-01-01T00:01:41.100000Z"}}"#;
    let good = [record(&udp.replace("BYTES", "90")), record(frag)];
    assert_eq!(match_up(&good, &packets), Vec::<String>::new());
    let wrong = [record(&udp.replace("BYTES", "91")), record(frag)];
    assert_eq!(
        match_up(&wrong, &packets),
        vec![
            "proto 17 10.0.0.1:5000 <-> 10.0.0.2:53 from 100000001 to 100500000 (1 record(s)): \
             exfilwatch a->b 1 pkts 60 B, b->a 1 pkts 91 B; tshark a->b 1 pkts 60 B, b->a 1 \
             pkts 90 B"
        ]
    );
    let missing = [record(frag)];
    assert_eq!(
        match_up(&missing, &packets),
        vec![
            "proto 17 10.0.0.1:5000 <-> 10.0.0.2:53: 2 tshark packet(s) in no flow record [#1, #2]"
        ]
    );
    assert_eq!(
        rfc3339_micros("2025-11-25T12:00:00.001123Z"),
        Some(1_764_072_000_001_123)
    );
}

// ------------------------------------------------------------------------------------------------
// Helpers.
// ------------------------------------------------------------------------------------------------

/// `[-]SECONDS.FRACTION` (tshark's frame.time_epoch) in microseconds, truncated.
fn epoch_micros(s: &str) -> Option<i64> {
    let (sign, s) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    Some(sign * (secs.parse::<i64>().ok()? * 1_000_000 + micros.parse::<i64>().ok()?))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (the records' times) in microseconds since the epoch.
fn rfc3339_micros(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    secs.checked_mul(1_000_000)?
        .checked_add(micros.parse().ok()?)
}

/// A path under Cargo's per-target scratch directory, with the process id in its name.
fn temp_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{name}", std::process::id()))
}
