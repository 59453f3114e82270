//! Decoder tests over hand-written byte arrays.

use super::*;

/// IPv4 header (20 bytes), 10.0.1.20 -> 93.184.216.34, protocol TCP, total length 40.
const IPV4_TCP_HDR: [u8; 20] = [
    0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 1, 20, 93, 184,
    216, 34,
];
/// TCP header, 50000 -> 443, SYN with ECE and CWR (an ECN-setup SYN), data offset 5.
const TCP_ECN_SYN: [u8; 20] = [
    0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0xc2, 0xff, 0xff, 0, 0, 0, 0,
];
const ETH_HDR_IPV4: [u8; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x00];

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn frame(linktype: i32, data: &[u8]) -> Frame<'_> {
    Frame {
        ts: Timestamp::from_parts(1_764_072_000, 0),
        linktype,
        orig_len: data.len() as u32,
        data,
        pcap_cnt: 7,
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

#[test]
fn test_ethernet_ipv4_ecn_syn() {
    let pkt = cat(&[&ETH_HDR_IPV4, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
    let s = decode(&frame(linktype::ETHERNET, &pkt)).unwrap();
    assert_eq!(s.src, v4([10, 0, 1, 20]));
    assert_eq!(s.dst, v4([93, 184, 216, 34]));
    assert_eq!(s.proto, proto::TCP);
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 50000,
            dst: 443
        }
    );
    assert!(
        tcp_flags::is_pure_syn(s.tcp_flags),
        "ECE|CWR|SYN is a pure SYN"
    );
    assert_eq!(s.ip_len, 40);
    assert_eq!(s.pcap_cnt, 7);
    assert!(!s.truncated);
    assert!(s.vlans.is_empty());
    assert_eq!(s.fragment, None);
}

#[test]
fn test_vlan_tags_up_to_three() {
    // 802.1ad outer 100, 802.1Q 200, 802.1Q 300, then IPv4.
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x88, 0xa8, 0x20, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x81, 0x00]);
    eth.extend_from_slice(&[0x01, 0x2c, 0x08, 0x00]);
    let pkt = cat(&[&eth, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
    let s = decode(&frame(linktype::ETHERNET, &pkt)).unwrap();
    assert_eq!(
        s.vlans.as_slice(),
        &[100, 200, 300],
        "priority bits are masked off"
    );
}

#[test]
fn test_four_vlan_tags_rejected() {
    let mut eth = vec![0u8; 12];
    for _ in 0..4 {
        eth.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    }
    eth.extend_from_slice(&[0x08, 0x00]);
    let pkt = cat(&[&eth, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
    assert_eq!(
        decode(&frame(linktype::ETHERNET, &pkt)),
        Err(DecodeError::TooManyVlanTags)
    );
}

#[test]
fn test_vlan_tag_cut_off() {
    let pkt = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x00, 0x00];
    assert_eq!(
        decode(&frame(linktype::ETHERNET, &pkt)),
        Err(DecodeError::LinkTruncated)
    );
}

#[test]
fn test_arp_is_not_ip() {
    let mut pkt = vec![0u8; 12];
    pkt.extend_from_slice(&[0x08, 0x06]);
    pkt.extend_from_slice(&[0u8; 28]);
    assert_eq!(
        decode(&frame(linktype::ETHERNET, &pkt)),
        Err(DecodeError::NotIp(0x0806))
    );
}

#[test]
fn test_linux_cooked_v1_and_v2() {
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&[0x08, 0x00]);
    let pkt = cat(&[&sll, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
    let s = decode(&frame(linktype::LINUX_SLL, &pkt)).unwrap();
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 50000,
            dst: 443
        }
    );

    let mut sll2 = vec![0x08, 0x00];
    sll2.extend_from_slice(&[0u8; 18]);
    let pkt = cat(&[&sll2, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
    let s = decode(&frame(linktype::LINUX_SLL2, &pkt)).unwrap();
    assert_eq!(s.linktype, 276);
    assert_eq!(s.dst, v4([93, 184, 216, 34]));

    assert_eq!(
        decode(&frame(linktype::LINUX_SLL2, &sll2[..10])),
        Err(DecodeError::LinkTruncated)
    );
}

#[test]
fn test_raw_ip_link_types() {
    let pkt = cat(&[&IPV4_TCP_HDR, &TCP_ECN_SYN]);
    for lt in [12, 14, 101, 228] {
        let s = decode(&frame(lt, &pkt)).unwrap();
        assert_eq!(s.src, v4([10, 0, 1, 20]), "link type {lt}");
    }
    let mut bad = pkt.clone();
    bad[0] = 0x55;
    assert_eq!(decode(&frame(101, &bad)), Err(DecodeError::IpVersion));
}

#[test]
fn test_null_loopback_either_byte_order() {
    for af in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
        let pkt = cat(&[&af, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
        for lt in [linktype::NULL, linktype::LOOP] {
            let s = decode(&frame(lt, &pkt)).unwrap();
            assert_eq!(s.proto, proto::TCP);
        }
    }
    let pkt = cat(&[&[7u8, 0, 0, 0], &IPV4_TCP_HDR]);
    assert_eq!(
        decode(&frame(linktype::NULL, &pkt)),
        Err(DecodeError::NotIp(0))
    );
}

#[test]
fn test_ipv4_options_are_skipped() {
    // IHL 6: one 4-byte option (NOP NOP NOP EOL), total length 44.
    let mut ip = IPV4_TCP_HDR.to_vec();
    ip[0] = 0x46;
    ip[3] = 44;
    ip.extend_from_slice(&[1, 1, 1, 0]);
    let pkt = cat(&[&ip, &TCP_ECN_SYN]);
    let s = decode_ip(&pkt).unwrap();
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 50000,
            dst: 443
        }
    );
    assert_eq!(s.ip_len, 44);
}

#[test]
fn test_impossible_ihl() {
    let mut ip = IPV4_TCP_HDR.to_vec();
    ip[0] = 0x44;
    assert_eq!(decode_ip(&ip), Err(DecodeError::IpMalformed));
}

#[test]
fn test_ip_header_cut_off() {
    assert_eq!(
        decode_ip(&IPV4_TCP_HDR[..15]),
        Err(DecodeError::IpTruncated)
    );
    assert_eq!(decode_ip(&[]), Err(DecodeError::IpTruncated));
}

#[test]
fn test_tcp_cut_after_ports_keeps_the_flow() {
    let pkt = cat(&[&IPV4_TCP_HDR, &TCP_ECN_SYN[..6]]);
    let s = decode_ip(&pkt).unwrap();
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 50000,
            dst: 443
        }
    );
    assert_eq!(s.tcp_flags, 0, "flags were not captured");
    assert!(s.truncated);
    // Cut inside the options but after the flags: still a SYN.
    let mut tcp = TCP_ECN_SYN.to_vec();
    tcp[12] = 0x80; // 32-byte header, only 20 captured
    let s = decode_ip(&cat(&[&IPV4_TCP_HDR, &tcp])).unwrap();
    assert!(tcp_flags::is_pure_syn(s.tcp_flags));
    assert!(s.truncated);
}

#[test]
fn test_tcp_without_ports_is_an_error() {
    let pkt = cat(&[&IPV4_TCP_HDR, &TCP_ECN_SYN[..3]]);
    assert_eq!(decode_ip(&pkt), Err(DecodeError::TransportTruncated));
}

#[test]
fn test_tcp_data_offset_below_five() {
    let mut tcp = TCP_ECN_SYN;
    tcp[12] = 0x40;
    assert_eq!(
        decode_ip(&cat(&[&IPV4_TCP_HDR, &tcp])),
        Err(DecodeError::TcpMalformed)
    );
}

#[test]
fn test_ipv4_fragments_first_has_ports_later_does_not() {
    let mut first = IPV4_TCP_HDR.to_vec();
    first[6] = 0x20; // MF, offset 0
    let s = decode_ip(&cat(&[&first, &TCP_ECN_SYN])).unwrap();
    assert_eq!(
        s.fragment,
        Some(Fragment {
            id: 0x1234,
            offset: 0,
            more: true
        })
    );
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 50000,
            dst: 443
        }
    );

    let mut later = IPV4_TCP_HDR.to_vec();
    later[6] = 0x00;
    later[7] = 0x03; // offset 3 (24 bytes), last fragment
                     // Its payload looks like a TCP header with other ports: it must not be read as one.
    let s = decode_ip(&cat(&[&later, &TCP_ECN_SYN])).unwrap();
    assert_eq!(s.transport, Transport::None);
    assert_eq!(s.tcp_flags, 0);
    assert_eq!(
        s.fragment,
        Some(Fragment {
            id: 0x1234,
            offset: 3,
            more: false
        })
    );
}

/// IPv6 header: 2001:db8::1 -> 2001:db8::2, next header `nh`, payload length `plen`.
fn ipv6(nh: u8, plen: u16) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&plen.to_be_bytes());
    h.extend_from_slice(&[nh, 64]);
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h
}

#[test]
fn test_ipv6_extension_headers_to_tcp() {
    // Hop-by-hop (8 bytes: next=routing) -> routing (8 bytes, type 0 segments left 0:
    // next=dest opts) -> destination options (8 bytes: next=TCP) -> TCP.
    let hbh = [43u8, 0, 1, 4, 0, 0, 0, 0];
    let rt = [60u8, 0, 0, 0, 0, 0, 0, 0];
    let dst = [6u8, 0, 1, 4, 0, 0, 0, 0];
    let plen = (hbh.len() + rt.len() + dst.len() + TCP_ECN_SYN.len()) as u16;
    let pkt = cat(&[&ipv6(0, plen), &hbh, &rt, &dst, &TCP_ECN_SYN]);
    let s = decode_ip(&pkt).unwrap();
    assert_eq!(s.proto, proto::TCP);
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 50000,
            dst: 443
        }
    );
    assert_eq!(s.ip_len, u32::from(plen) + 40);
    assert!(s.src.is_ipv6());
}

#[test]
fn test_ipv6_fragment_header() {
    // Fragment header: next=UDP, offset 0, M=1, id 0xdeadbeef.
    let frag = [17u8, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
    let udp = [0x30u8, 0x39, 0x00, 0x35, 0, 16, 0, 0];
    let pkt = cat(&[&ipv6(44, 16), &frag, &udp]);
    let s = decode_ip(&pkt).unwrap();
    assert_eq!(s.proto, proto::UDP);
    assert_eq!(
        s.transport,
        Transport::Ports {
            src: 12345,
            dst: 53
        }
    );
    assert_eq!(
        s.fragment,
        Some(Fragment {
            id: 0xdead_beef,
            offset: 0,
            more: true
        })
    );
    // A later fragment (offset 185 units).
    let frag = [17u8, 0, 0x05, 0xc8, 0xde, 0xad, 0xbe, 0xef];
    let s = decode_ip(&cat(&[&ipv6(44, 16), &frag, &udp])).unwrap();
    assert_eq!(s.transport, Transport::None);
    assert_eq!(s.fragment.map(|f| f.offset), Some(185));
}

#[test]
fn test_ipv6_extension_header_cut_off() {
    let hbh = [6u8, 2, 1, 4, 0, 0, 0, 0]; // claims 24 bytes, 8 present
    assert_eq!(
        decode_ip(&cat(&[&ipv6(0, 24), &hbh])),
        Err(DecodeError::IpTruncated)
    );
}

#[test]
fn test_icmp_and_icmpv6_type_code() {
    let mut ip = IPV4_TCP_HDR.to_vec();
    ip[9] = 1;
    ip[3] = 28;
    let s = decode_ip(&cat(&[&ip, &[8u8, 0, 0, 0, 0, 1, 0, 1]])).unwrap();
    assert_eq!(
        s.transport,
        Transport::Icmp {
            icmp_type: 8,
            code: 0
        }
    );
    let s = decode_ip(&cat(&[&ipv6(58, 8), &[128u8, 0, 0, 0, 0, 1, 0, 1]])).unwrap();
    assert_eq!(s.proto, proto::ICMPV6);
    assert_eq!(
        s.transport,
        Transport::Icmp {
            icmp_type: 128,
            code: 0
        }
    );
}

#[test]
fn test_other_protocol_by_number() {
    let mut ip = IPV4_TCP_HDR.to_vec();
    ip[9] = 47; // GRE
    let s = decode_ip(&cat(&[&ip, &[0u8; 20]])).unwrap();
    assert_eq!(s.proto, 47);
    assert_eq!(s.transport, Transport::None);
}

#[test]
fn test_snaplen_cut_marks_truncated() {
    let pkt = cat(&[&ETH_HDR_IPV4, &IPV4_TCP_HDR, &TCP_ECN_SYN]);
    let mut f = frame(linktype::ETHERNET, &pkt);
    f.orig_len = 1514;
    let s = decode(&f).unwrap();
    assert!(s.truncated);
    assert_eq!(s.orig_len, 1514);
}

#[test]
fn test_unsupported_link_type() {
    assert_eq!(
        decode(&frame(105, &[0u8; 64])),
        Err(DecodeError::UnsupportedLinkType(105))
    );
}

/// Every prefix of every test packet, and every single-byte corruption of it, decodes to
/// something or an error: never a panic.
#[test]
fn test_no_panic_on_prefixes_and_corruptions() {
    let pkts = [
        cat(&[&ETH_HDR_IPV4, &IPV4_TCP_HDR, &TCP_ECN_SYN]),
        cat(&[
            &ipv6(0, 44),
            &[43u8, 0, 1, 4, 0, 0, 0, 0],
            &[6u8, 0, 0, 0, 0, 0, 0, 0],
            &TCP_ECN_SYN,
        ]),
    ];
    let lts = [0, 1, 12, 101, 108, 113, 228, 229, 276];
    for pkt in &pkts {
        for lt in lts {
            for n in 0..=pkt.len() {
                let _ = decode(&frame(lt, &pkt[..n]));
            }
            for i in 0..pkt.len() {
                for v in [0x00, 0x45, 0x60, 0x81, 0xff] {
                    let mut p = pkt.clone();
                    p[i] = v;
                    let _ = decode(&frame(lt, &p));
                }
            }
        }
    }
}

/// xorshift64*: deterministic random bytes for the property tests below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Properties that hold for every summary, whatever the bytes.
fn check_invariants(s: &PacketSummary, data_len: usize) {
    assert!(s.vlans.len() <= 3);
    assert_eq!(
        s.src.is_ipv4(),
        s.dst.is_ipv4(),
        "one address family per packet"
    );
    if let Some(f) = s.fragment {
        if f.offset != 0 {
            assert_eq!(
                s.transport,
                Transport::None,
                "a later fragment never has ports"
            );
            assert_eq!(s.tcp_flags, 0);
        }
    }
    if s.proto != proto::TCP {
        assert_eq!(s.tcp_flags, 0);
    }
    if let Transport::Icmp { .. } = s.transport {
        assert!(s.proto == proto::ICMP || s.proto == proto::ICMPV6);
    }
    assert!(s.ip_len > 0 || data_len == 0);
}

/// 200,000 random frames over every link type, and 200,000 mutations of valid ones (bit
/// flips, truncations, insertions): never a panic, and every summary keeps its invariants.
#[test]
fn test_property_random_and_mutated_frames() {
    let lts = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105, -1];
    let mut rng = Rng(0x0dec_0de5);
    let valid = [
        cat(&[&ETH_HDR_IPV4, &IPV4_TCP_HDR, &TCP_ECN_SYN]),
        cat(&[
            &[0u8; 12],
            &[0x81, 0x00, 0x00, 0x64, 0x86, 0xdd],
            &ipv6(0, 36),
            &[44u8, 0, 1, 4, 0, 0, 0, 0],
            &[6u8, 0, 0, 1, 0, 0, 0, 9],
            &TCP_ECN_SYN,
        ]),
        cat(&[&[0u8; 14], &[0x08, 0x00], &IPV4_TCP_HDR, &TCP_ECN_SYN]),
    ];
    let mut buf = Vec::with_capacity(256);
    for i in 0..400_000u32 {
        buf.clear();
        if i % 2 == 0 {
            let n = (rng.next() % 200) as usize;
            buf.extend((0..n).map(|_| rng.next() as u8));
            // Steer some random frames into IP: plausible version nibbles after the link header.
            if n > 20 && rng.next() % 2 == 0 {
                buf[0] = if rng.next() % 2 == 0 { 0x45 } else { 0x60 };
            }
        } else {
            buf.extend_from_slice(&valid[(rng.next() % 3) as usize]);
            for _ in 0..1 + rng.next() % 4 {
                let len = buf.len().max(1);
                match rng.next() % 4 {
                    0 => {
                        let at = (rng.next() as usize) % len;
                        if let Some(b) = buf.get_mut(at) {
                            *b ^= 1 << (rng.next() % 8);
                        }
                    }
                    1 => buf.truncate((rng.next() as usize) % len),
                    2 => {
                        let at = (rng.next() as usize) % len;
                        buf.insert(at.min(buf.len()), rng.next() as u8);
                    }
                    _ => {
                        let at = (rng.next() as usize) % len;
                        if let Some(b) = buf.get_mut(at) {
                            *b = [0, 0xff, 0x45, 0x60, 0x81, 5][(rng.next() % 6) as usize];
                        }
                    }
                }
            }
        }
        let lt = lts[(rng.next() % lts.len() as u64) as usize];
        let mut f = frame(lt, &buf);
        f.orig_len = (buf.len() as u32).saturating_add((rng.next() % 3) as u32 * 100);
        if let Ok(s) = decode(&f) {
            check_invariants(&s, buf.len());
        }
        if let Ok(s) = decode_ip(&buf) {
            check_invariants(&s, buf.len());
        }
    }
}

/// The plain-IPv4 fast path gives exactly what the general (etherparse) path gives, on random
/// and mutated IPv4 headers of every length, fragment state, protocol and truncation.
#[test]
fn test_plain_ipv4_fast_path_equals_the_general_decoder() {
    let mut rng = Rng(0x1b4_f457);
    let mut taken = 0;
    let base = cat(&[&IPV4_TCP_HDR, &TCP_ECN_SYN]);
    let mut buf = Vec::with_capacity(256);
    for i in 0..300_000u32 {
        buf.clear();
        if i % 3 == 0 {
            let n = (rng.next() % 120) as usize;
            buf.extend((0..n).map(|_| rng.next() as u8));
            if let Some(b) = buf.first_mut() {
                *b = 0x45;
            }
        } else {
            buf.extend_from_slice(&base);
            for _ in 0..1 + rng.next() % 4 {
                let len = buf.len().max(1);
                match rng.next() % 5 {
                    0 => {
                        let at = 1 + (rng.next() as usize) % (len - 1).max(1);
                        if let Some(b) = buf.get_mut(at) {
                            *b ^= 1 << (rng.next() % 8);
                        }
                    }
                    1 => buf.truncate((rng.next() as usize) % (len + 1)),
                    2 => {
                        // Total length, fragment fields and protocol are the interesting ones.
                        let at = [2usize, 3, 6, 7, 9][(rng.next() % 5) as usize];
                        if let Some(b) = buf.get_mut(at) {
                            *b = rng.next() as u8;
                        }
                    }
                    3 => {
                        if let Some(b) = buf.get_mut(9) {
                            *b = [1u8, 6, 17, 51, 58, 132, 0][(rng.next() % 7) as usize];
                        }
                    }
                    _ => buf.extend((0..rng.next() % 40).map(|_| rng.next() as u8)),
                }
            }
        }
        let (fast, general) = super::decode_ip_both(&buf);
        if let Some(fast) = fast {
            taken += 1;
            assert_eq!(fast, general, "{buf:02x?}");
        }
    }
    assert!(
        taken > 100_000,
        "the fast path was taken only {taken} times"
    );
}

/// The plain-IPv6 fast path gives exactly what the general (etherparse) path gives, on random
/// and mutated IPv6 headers: every next header near the taken ones, payload lengths short,
/// long, zero and exact, cuts anywhere.
#[test]
fn test_plain_ipv6_fast_path_equals_the_general_decoder() {
    let mut rng = Rng(0x0006_f457);
    let mut taken = 0;
    let mut buf = Vec::with_capacity(256);
    for _ in 0..300_000u32 {
        buf.clear();
        let nh = [6u8, 17, 58, 0, 43, 44, 59, 60, 132, 1][(rng.next() % 10) as usize];
        let body = (rng.next() % 60) as u16;
        let plen = match rng.next() % 4 {
            0 => 0,
            1 => body,
            2 => (rng.next() % 100) as u16,
            _ => body.saturating_sub((rng.next() % 8) as u16),
        };
        buf.extend_from_slice(&ipv6(nh, plen));
        buf.extend((0..body).map(|_| rng.next() as u8));
        if rng.next() % 3 == 0 {
            // TCP data offset and flags that parse.
            if let Some(b) = buf.get_mut(40 + 12) {
                *b = 0x50 | (*b & 0x0f);
            }
        }
        match rng.next() % 4 {
            0 => buf.truncate((rng.next() as usize) % (buf.len() + 1)),
            1 => {
                let at = (rng.next() as usize) % buf.len();
                buf[at] ^= 1 << (rng.next() % 8);
            }
            _ => {}
        }
        let (fast, general) = super::decode_ip_both(&buf);
        if let Some(fast) = fast {
            taken += 1;
            assert_eq!(fast, general, "{buf:02x?}");
        }
    }
    assert!(taken > 50_000, "the fast path was taken only {taken} times");
}
