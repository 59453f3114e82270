//! Flow table semantics on hand-built summaries.

use super::*;
use crate::decode::Fragment;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_parts(1_764_072_000 + secs, 0)
}

fn tcp(t: i64, src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> PacketSummary {
    PacketSummary {
        ts: at(t),
        pcap_cnt: 0,
        linktype: 1,
        orig_len: 60,
        ip_len: 40,
        vlans: Vlans::NONE,
        src: ip(src),
        dst: ip(dst),
        proto: proto::TCP,
        transport: Transport::Ports { src: sp, dst: dp },
        tcp_flags: flags,
        fragment: None,
        truncated: false,
    }
}

fn udp(t: i64, src: &str, sp: u16, dst: &str, dp: u16) -> PacketSummary {
    PacketSummary {
        proto: proto::UDP,
        tcp_flags: 0,
        ..tcp(t, src, sp, dst, dp, 0)
    }
}

use tcp_flags::{ACK, FIN, RST, SYN};

fn step(ft: &mut FlowTable, p: &PacketSummary) -> Option<Tracked> {
    ft.advance(p.ts);
    ft.track(p)
}

#[test]
fn test_both_directions_one_flow_initiator_is_first_sender() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let a = step(&mut ft, &tcp(0, "10.0.1.5", 40000, "1.1.1.1", 443, SYN)).unwrap();
    let b = step(
        &mut ft,
        &tcp(0, "1.1.1.1", 443, "10.0.1.5", 40000, SYN | ACK),
    )
    .unwrap();
    assert_eq!(a.slot, b.slot);
    assert!(a.created && a.first_syn);
    assert!(!b.created && !b.first_syn);
    assert_eq!(b.direction, Direction::ToClient);
    let f = ft.get(a.slot).unwrap();
    assert_eq!(f.initiator().addr, ip("10.0.1.5"));
    assert_eq!(f.pkts, [1, 1]);
    assert_eq!(f.bytes, [40, 40]);
    assert_eq!(f.state, FlowState::Established);
    assert_eq!(ft.len(), 1);
}

#[test]
fn test_synack_seen_first_makes_its_receiver_the_initiator() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let t = step(
        &mut ft,
        &tcp(0, "1.1.1.1", 443, "10.0.1.5", 40000, SYN | ACK),
    )
    .unwrap();
    let f = ft.get(t.slot).unwrap();
    assert_eq!(f.initiator().addr, ip("10.0.1.5"));
    assert_eq!(f.responder().port, 443);
    assert_eq!(t.direction, Direction::ToClient);
}

#[test]
fn test_retransmitted_syn_is_not_first() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let p = tcp(0, "10.0.1.5", 40000, "1.1.1.1", 443, SYN);
    assert!(step(&mut ft, &p).unwrap().first_syn);
    let r = step(&mut ft, &tcp(1, "10.0.1.5", 40000, "1.1.1.1", 443, SYN)).unwrap();
    assert!(!r.first_syn && !r.created);
}

#[test]
fn test_new_syn_after_rst_or_fins_is_a_new_flow() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let c = "10.0.1.5";
    let s = "1.1.1.1";
    let first = step(&mut ft, &tcp(0, c, 40000, s, 443, SYN)).unwrap();
    step(&mut ft, &tcp(0, s, 443, c, 40000, RST | ACK));
    // A straggler ACK joins the closed flow.
    let straggler = step(&mut ft, &tcp(0, c, 40000, s, 443, ACK)).unwrap();
    assert!(!straggler.created);
    let again = step(&mut ft, &tcp(0, c, 40000, s, 443, SYN)).unwrap();
    assert!(again.created && again.first_syn);
    assert_ne!(ft.get(again.slot).unwrap().id, 1);
    let ended: Vec<_> = ft.drain_ended().map(|(f, r)| (f.id, r)).collect();
    assert_eq!(ended, vec![(1, EndReason::Rst)]);
    let _ = first;

    // FIN from one side only: not closed; from both: closed.
    step(&mut ft, &tcp(1, c, 40000, s, 443, FIN | ACK));
    let retx = step(&mut ft, &tcp(1, c, 40000, s, 443, SYN)).unwrap();
    assert!(!retx.created, "one FIN does not close the flow");
    step(&mut ft, &tcp(1, s, 443, c, 40000, FIN | ACK));
    let again = step(&mut ft, &tcp(1, c, 40000, s, 443, SYN)).unwrap();
    assert!(again.created);
    assert_eq!(ft.stats().reused, 2);
}

/// Keys are equal (and find their flow) exactly when the packets' endpoints, protocol and
/// VLANs are: an IPv4 address and the IPv6 address of the same number, swapped ports, another
/// protocol, and each VLAN stack make another flow; each packet again finds its own.
#[test]
fn test_key_tells_every_field_apart() {
    let base = udp(0, "0.0.0.1", 1, "0.0.0.2", 2);
    let mut variants = vec![
        base,
        udp(0, "::1", 1, "::2", 2),
        udp(0, "0.0.0.1", 1, "::2", 2),
        udp(0, "0.0.0.1", 2, "0.0.0.2", 1),
        udp(0, "0.0.0.1", 1, "0.0.0.3", 2),
    ];
    let mut sctp = base;
    sctp.proto = 132;
    variants.push(sctp);
    for ids in [&[10][..], &[10, 20], &[20, 10], &[10, 20, 30], &[0]] {
        let mut v = base;
        v.vlans = Vlans::from_ids(ids);
        variants.push(v);
    }
    let mut ft = FlowTable::new(FlowConfig::default());
    for (i, p) in variants.iter().enumerate() {
        assert!(step(&mut ft, p).unwrap().created, "variant {i}");
    }
    for (i, p) in variants.iter().enumerate() {
        let t = step(&mut ft, p).unwrap();
        assert!(!t.created, "variant {i}");
        let f = ft.get(t.slot).unwrap();
        assert_eq!(
            (f.initiator(), f.key.proto(), f.key.vlans),
            (
                Endpoint {
                    addr: p.src,
                    port: match p.transport {
                        Transport::Ports { src, .. } => src,
                        _ => unreachable!(),
                    }
                },
                p.proto,
                p.vlans
            ),
            "variant {i}"
        );
    }
    assert_eq!(ft.len(), variants.len());
}

/// The key's `lo` is the smaller endpoint as `Endpoint` orders them (address, then port),
/// across families, equal addresses and equal ports.
#[test]
fn test_key_orders_endpoints_as_endpoint_does() {
    let addrs = [
        "0.0.0.0",
        "10.0.1.5",
        "10.0.1.6",
        "255.255.255.255",
        "::",
        "::a00:105",
        "2001:db8::1",
        "ffff::1",
    ];
    for a in addrs {
        for b in addrs {
            for (sp, dp) in [(1u16, 2u16), (2, 1), (7, 7), (0, 65535)] {
                let p = tcp(0, a, sp, b, dp, SYN);
                let (key, from_lo) = FlowKey::of(&p);
                let (x, y) = (
                    Endpoint {
                        addr: ip(a),
                        port: sp,
                    },
                    Endpoint {
                        addr: ip(b),
                        port: dp,
                    },
                );
                assert_eq!(from_lo, x <= y, "{a}:{sp} {b}:{dp}");
                assert_eq!(
                    (key.lo(), key.hi()),
                    (x.min(y), x.max(y)),
                    "{a}:{sp} {b}:{dp}"
                );
            }
        }
    }
}

#[test]
fn test_idle_timeouts_by_class() {
    let mut ft = FlowTable::new(FlowConfig::default());
    step(&mut ft, &udp(0, "10.0.1.5", 5000, "8.8.8.8", 53));
    assert!(
        !step(&mut ft, &udp(300, "10.0.1.5", 5000, "8.8.8.8", 53))
            .unwrap()
            .created
    );
    // Exactly 300 s idle is not expired; 300 s and a nanosecond is.
    let mut late = udp(600, "10.0.1.5", 5000, "8.8.8.8", 53);
    late.ts = Timestamp(at(600).0 + 1);
    assert!(step(&mut ft, &late).unwrap().created);
    assert_eq!(ft.stats().expired, 1);

    // TCP not established: 60 s.
    step(&mut ft, &tcp(1000, "10.0.1.5", 1, "1.1.1.1", 80, SYN));
    ft.advance(at(1061));
    assert_eq!(
        ft.len(),
        0,
        "the UDP flow (idle 460 s) and the TCP flow both expired"
    );
}

/// Every flow expires at the first packet time past its own timeout, whichever list it is
/// in and whichever flow heads its list: the table skips the lists while no head can have
/// expired, so a flow put at the head of an empty list with a shorter timeout, or becoming
/// head when the head before it is touched, must still go at its exact nanosecond.
#[test]
fn test_each_flow_expires_at_its_own_nanosecond() {
    let just_after = |secs| Timestamp(at(secs).0 + 1);
    let mut ft = FlowTable::new(FlowConfig::default());
    step(&mut ft, &udp(0, "10.0.1.5", 5000, "8.8.8.8", 53)); // UDP: expires after 300
    step(&mut ft, &udp(100, "10.0.1.6", 5000, "8.8.8.8", 53)); // after 400
    step(&mut ft, &tcp(150, "10.0.1.7", 1, "1.1.1.1", 80, SYN)); // TCP new: after 210
    step(&mut ft, &udp(200, "10.0.1.5", 5000, "8.8.8.8", 53)); // first UDP: now after 500
    for (t, left) in [
        (at(210), 3),
        (just_after(210), 2),
        (at(400), 2),
        (just_after(400), 1),
        (at(500), 1),
        (just_after(500), 0),
    ] {
        ft.advance(t);
        assert_eq!(ft.len(), left, "at {t:?}");
    }
    assert_eq!(ft.stats().expired, 3);
}

#[test]
fn test_established_tcp_lives_longer() {
    let mut ft = FlowTable::new(FlowConfig::default());
    step(&mut ft, &tcp(0, "10.0.1.5", 1, "1.1.1.1", 80, SYN));
    step(&mut ft, &tcp(0, "1.1.1.1", 80, "10.0.1.5", 1, SYN | ACK));
    ft.advance(at(599));
    assert_eq!(ft.len(), 1);
    ft.advance(at(601));
    assert_eq!(ft.len(), 0);
}

#[test]
fn test_cap_evicts_longest_idle() {
    let cfg = FlowConfig {
        max_flows: 3,
        ..FlowConfig::default()
    };
    let mut ft = FlowTable::new(cfg);
    step(&mut ft, &udp(0, "10.0.1.1", 1, "8.8.8.8", 53));
    step(&mut ft, &tcp(1, "10.0.1.2", 1, "8.8.8.8", 53, SYN));
    step(&mut ft, &udp(2, "10.0.1.3", 1, "8.8.8.8", 53));
    // Refresh the first: now the TCP flow is the longest idle.
    step(&mut ft, &udp(3, "10.0.1.1", 1, "8.8.8.8", 53));
    step(&mut ft, &udp(4, "10.0.1.4", 1, "8.8.8.8", 53));
    assert_eq!(ft.len(), 3);
    assert_eq!(ft.stats().evicted, 1);
    let ended: Vec<_> = ft
        .drain_ended()
        .map(|(f, r)| (f.initiator().addr, r))
        .collect();
    assert_eq!(ended, vec![(ip("10.0.1.2"), EndReason::Evicted)]);
    assert_eq!(ft.stats().peak, 3);
}

#[test]
fn test_vlan_separates_flows() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let mut a = udp(0, "10.0.1.1", 1, "8.8.8.8", 53);
    step(&mut ft, &a);
    a.vlans = Vlans::from_ids(&[10]);
    assert!(step(&mut ft, &a).unwrap().created);
}

#[test]
fn test_fragments_join_first_or_are_orphans() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let mut first = udp(0, "10.0.1.1", 5000, "8.8.8.8", 53);
    first.fragment = Some(Fragment {
        id: 7,
        offset: 0,
        more: true,
    });
    let t = step(&mut ft, &first).unwrap();
    let mut later = udp(0, "10.0.1.1", 0, "8.8.8.8", 0);
    later.transport = Transport::None;
    later.fragment = Some(Fragment {
        id: 7,
        offset: 185,
        more: false,
    });
    later.ip_len = 500;
    let l = step(&mut ft, &later).unwrap();
    assert_eq!(l.slot, t.slot);
    assert!(!l.created);
    assert_eq!(ft.get(t.slot).unwrap().bytes[0], 540);
    // Another id: no first fragment seen.
    later.fragment = Some(Fragment {
        id: 8,
        offset: 185,
        more: false,
    });
    assert_eq!(step(&mut ft, &later), None);
    assert_eq!(ft.stats().orphan_fragments, 1);
    assert_eq!(ft.len(), 1);
}

#[test]
fn test_icmp_echo_request_and_reply_are_one_flow() {
    let mut ft = FlowTable::new(FlowConfig::default());
    let mut req = udp(0, "10.0.1.1", 0, "8.8.8.8", 0);
    req.proto = proto::ICMP;
    req.transport = Transport::Icmp {
        icmp_type: 8,
        code: 0,
    };
    let mut rep = udp(0, "8.8.8.8", 0, "10.0.1.1", 0);
    rep.proto = proto::ICMP;
    rep.transport = Transport::Icmp {
        icmp_type: 0,
        code: 0,
    };
    let a = step(&mut ft, &req).unwrap();
    let b = step(&mut ft, &rep).unwrap();
    assert_eq!(a.slot, b.slot);
    assert_eq!(b.direction, Direction::ToClient);
}

#[test]
fn test_shutdown_ends_all_in_order() {
    let mut ft = FlowTable::new(FlowConfig::default());
    for i in 1..=5u8 {
        step(
            &mut ft,
            &udp(i64::from(i), &format!("10.0.1.{i}"), 1, "8.8.8.8", 53),
        );
    }
    ft.shutdown();
    let order: Vec<u64> = ft.drain_ended().map(|(f, _)| f.id).collect();
    assert_eq!(order, vec![1, 2, 3, 4, 5]);
    assert!(ft.is_empty());
}

/// Flows in every end state: open TCP and UDP, closed by RST, closed by FINs both ways, and
/// one ended by timeout before the end (already out of the table).
fn mixed_table() -> FlowTable {
    let mut ft = FlowTable::new(FlowConfig::default());
    let pkts = [
        tcp(0, "10.0.1.1", 1000, "1.1.1.1", 443, SYN),
        udp(1, "10.0.1.2", 53, "8.8.8.8", 53),
        tcp(2, "10.0.1.3", 1001, "1.1.1.1", 443, SYN),
        tcp(2, "1.1.1.1", 443, "10.0.1.3", 1001, RST),
        tcp(3, "10.0.1.4", 1002, "1.1.1.1", 443, FIN | ACK),
        tcp(3, "1.1.1.1", 443, "10.0.1.4", 1002, FIN | ACK),
        tcp(4, "10.0.1.5", 1003, "1.1.1.1", 80, SYN),
        // 61 s later the first SYN-only flow has timed out; the rest are within theirs.
        tcp(61, "10.0.1.6", 1004, "1.1.1.1", 80, SYN),
    ];
    for p in &pkts {
        step(&mut ft, p);
    }
    ft
}

#[test]
fn test_shutdown_counted_counts_what_shutdown_hands_out() {
    for (i, r) in EndReason::ALL.into_iter().enumerate() {
        assert_eq!(r.index(), i, "{r:?}");
    }
    let mut handed = mixed_table();
    let timed_out: Vec<EndReason> = handed.drain_ended().map(|(_, r)| r).collect();
    assert_eq!(timed_out, vec![EndReason::Timeout]);
    handed.shutdown();
    let mut expected = [0u64; EndReason::ALL.len()];
    for (_, r) in handed.drain_ended() {
        expected[r.index()] += 1;
    }
    assert_eq!(expected, [0, 1, 1, 0, 3], "fin, rst, and three still open");

    let mut counted = mixed_table();
    assert_eq!(counted.shutdown_counted(), expected);
    assert!(counted.is_empty());
    // The flow that ended before the end of input is still handed out, once.
    let before: Vec<EndReason> = counted.drain_ended().map(|(_, r)| r).collect();
    assert_eq!(before, vec![EndReason::Timeout]);
    // The table is usable again, from a clean state.
    let t = step(
        &mut counted,
        &tcp(70, "10.0.1.1", 1000, "1.1.1.1", 443, SYN),
    )
    .unwrap();
    assert!(t.created);
    assert_eq!(counted.len(), 1);
    counted.shutdown();
    assert_eq!(counted.drain_ended().count(), 1);
    assert!(counted.is_empty());
}
