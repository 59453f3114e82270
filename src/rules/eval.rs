//! Rule evaluation on packet summaries and flows.
//!
//! Contract: [`Evaluator::evaluate`] is called once per tracked packet and appends the rules
//! that match it, in rule order, with the tuple the alert reports. `new-connection` rules look
//! at a flow's first pure SYN (so retransmissions never fire); `egress` rules look at a flow
//! once, at the packet that created it, with the initiator as source. Rate limits are applied
//! after this, by the alert layer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Rule, RuleKind, RuleSet};

use crate::decode::{proto, PacketSummary, Transport};
use crate::flow::{Flow, Tracked};

/// A rule that matched, with the tuple its alert reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index into [`RuleSet::rules`].
    pub rule: usize,
    pub src: IpAddr,
    pub dest: IpAddr,
    /// Ports, for protocols that have them.
    pub src_port: Option<u16>,
    pub dest_port: Option<u16>,
}

/// Rules that can only match packets from (or to) certain networks, indexed by those
/// networks: per prefix length, a hash map from the masked address to the rules. A lookup costs
/// one probe per distinct prefix length, whatever the number of rules.
#[derive(Debug, Clone, Default)]
struct NetIndex {
    /// (is IPv6, prefix length, masked address -> rules in rule order).
    levels: Vec<(bool, u8, HashMap<u128, Vec<usize>>)>,
}

fn masked(ip: IpAddr, len: u8) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => {
            let v = u128::from(u32::from(a));
            let keep = if len == 0 {
                0
            } else {
                (!0u32 << (32 - len)) as u128
            };
            (false, v & keep)
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            let keep = if len == 0 {
                0
            } else {
                !0u128 << (128 - u32::from(len))
            };
            (true, v & keep)
        }
    }
}

impl NetIndex {
    fn add(&mut self, net: &IpNetwork, rule: usize) {
        let len = net.prefix();
        let (v6, key) = masked(net.network(), len);
        let level = match self.levels.iter().position(|l| l.0 == v6 && l.1 == len) {
            Some(i) => i,
            None => {
                self.levels.push((v6, len, HashMap::new()));
                self.levels.len() - 1
            }
        };
        let rules = self.levels[level].2.entry(key).or_default();
        if rules.last() != Some(&rule) {
            rules.push(rule);
        }
    }

    fn lookup(&self, ip: IpAddr, out: &mut Vec<usize>) {
        for (v6, len, map) in &self.levels {
            // Only levels of the address's own family (masking an IPv4 address to an IPv6
            // prefix length would also overflow the shift).
            if ip.is_ipv6() != *v6 {
                continue;
            }
            if let Some(r) = map.get(&masked(ip, *len).1) {
                out.extend_from_slice(r);
            }
        }
    }
}

/// A group of rules split by what narrows them most cheaply: rules with `src` networks are
/// found by the packet's source, rules with `dest` (and no `src`) by its destination, the rest
/// are always candidates. Small groups are just walked.
#[derive(Debug, Clone, Default)]
struct Bucket {
    always: Vec<usize>,
    by_src: NetIndex,
    by_dest: NetIndex,
}

/// Below this many rules a bucket is walked, not indexed.
const INDEX_FROM: usize = 8;

impl Bucket {
    fn build(rules: &[Rule], ids: &[usize]) -> Bucket {
        let mut b = Bucket::default();
        if ids.len() < INDEX_FROM {
            b.always = ids.to_vec();
            return b;
        }
        for &i in ids {
            let r = &rules[i];
            match (&r.src, &r.dest) {
                (Some(src), _) => src.networks().iter().for_each(|n| b.by_src.add(n, i)),
                (None, Some(dest)) => dest.networks().iter().for_each(|n| b.by_dest.add(n, i)),
                (None, None) => b.always.push(i),
            }
        }
        b
    }

    /// Whether rules are found by network here (else all are in `always`).
    fn indexed(&self) -> bool {
        !self.by_src.levels.is_empty() || !self.by_dest.levels.is_empty()
    }

    /// Appends the rules found by the network of `src` or `dest` (unsorted; a rule may appear
    /// twice when several of its networks hold the address). `always` is not included.
    fn by_network(&self, src: IpAddr, dest: IpAddr, out: &mut Vec<usize>) {
        self.by_src.lookup(src, out);
        self.by_dest.lookup(dest, out);
    }
}

/// Rules of one kind indexed by destination port, then by network ([`Bucket`]): a packet looks
/// only at the rules whose port set holds its port and whose networks hold its addresses, so
/// 1,000 rules on distinct ports or networks cost what the few that can match cost.
#[derive(Debug, Clone, Default)]
struct PortIndex {
    /// Rules without `dest_port`.
    any: Bucket,
    /// The segment of each port (65,536 entries): the ports between two consecutive bounds of
    /// the rules' port ranges, numbered from 0. Empty when there is one segment, which is then
    /// every port's.
    seg_of: Vec<u16>,
    /// Rules whose port set covers each segment.
    lists: Vec<Bucket>,
    /// Per segment, the candidates whatever the addresses: its bucket's `always` and `any`'s,
    /// sorted, each once. Without networks indexed (small rule sets) they are all of them.
    always: Vec<Vec<usize>>,
    /// Whether `any` or a segment's bucket finds rules by network.
    indexed: bool,
}

impl PortIndex {
    fn build(rules: &[Rule], ids: &[usize]) -> PortIndex {
        let mut idx = PortIndex::default();
        let mut any = Vec::new();
        let mut bounds: Vec<u32> = vec![0, 65_536];
        for &i in ids {
            match &rules[i].dest_port {
                None => any.push(i),
                Some(ps) => {
                    for &(a, b) in ps.ranges() {
                        bounds.push(u32::from(a));
                        bounds.push(u32::from(b) + 1);
                    }
                }
            }
        }
        idx.any = Bucket::build(rules, &any);
        bounds.sort_unstable();
        bounds.dedup();
        let segments = bounds.len() - 1;
        if segments > 1 {
            // `bounds` holds 0 and 65,536, so the segments cover every port once; there are at
            // most 65,536 of them (one a port), so each number fits in 16 bits.
            idx.seg_of = Vec::with_capacity(65_536);
            for (i, w) in bounds.windows(2).enumerate() {
                let n = (w[1] - w[0]) as usize;
                idx.seg_of.extend(std::iter::repeat_n(i as u16, n));
            }
            debug_assert_eq!(idx.seg_of.len(), 65_536);
        }
        let mut lists = vec![Vec::new(); segments];
        for &i in ids {
            if let Some(ps) = &rules[i].dest_port {
                for &(a, b) in ps.ranges() {
                    // `a` starts a segment and `b` ends one: both are bounds.
                    for list in &mut lists[idx.segment(a)..=idx.segment(b)] {
                        list.push(i);
                    }
                }
            }
        }
        idx.lists = lists.iter().map(|l| Bucket::build(rules, l)).collect();
        idx.always = idx
            .lists
            .iter()
            .map(|b| {
                let mut v = [idx.any.always.as_slice(), &b.always].concat();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        idx.indexed = idx.any.indexed() || idx.lists.iter().any(Bucket::indexed);
        idx
    }

    /// The segment holding `port` (segment 0 when there is only one).
    #[inline]
    fn segment(&self, port: u16) -> usize {
        self.seg_of
            .get(usize::from(port))
            .map_or(0, |&i| usize::from(i))
    }

    /// The rules that may match a packet from `src` to `dest` on destination port `port`
    /// (`None`: a portless protocol), sorted, each once: the segment's `always` list when no
    /// network is indexed, else that and the network lookups gathered in `out`.
    fn candidates<'a>(
        &'a self,
        src: IpAddr,
        dest: IpAddr,
        port: Option<u16>,
        out: &'a mut Vec<usize>,
    ) -> &'a [usize] {
        let seg = port.map(|p| self.segment(p));
        // `any.always` is in rule order already (sorted, each once).
        let always = match seg {
            Some(i) => self.always.get(i).map_or(&[][..], Vec::as_slice),
            None => &self.any.always,
        };
        if !self.indexed {
            return always;
        }
        out.clear();
        out.extend_from_slice(always);
        self.any.by_network(src, dest, out);
        if let Some(b) = seg.and_then(|i| self.lists.get(i)) {
            b.by_network(src, dest, out);
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }
}

/// The rules split by kind and indexed by port, so a packet only walks the rules that can
/// match it.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    new_connection: PortIndex,
    egress: PortIndex,
    /// Candidate rule numbers of the packet at hand (no allocation per packet).
    scratch: RefCell<Vec<usize>>,
}

/// Whether a protocol carries ports in our summaries.
pub fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::SCTP)
}

impl Evaluator {
    pub fn new(rules: &RuleSet) -> Evaluator {
        let of = |k: RuleKind| -> Vec<usize> {
            (0..rules.rules.len())
                .filter(|&i| rules.rules[i].kind == k)
                .collect()
        };
        Evaluator {
            new_connection: PortIndex::build(&rules.rules, &of(RuleKind::NewConnection)),
            egress: PortIndex::build(&rules.rules, &of(RuleKind::Egress)),
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// Appends the matches of packet `p`, which [`crate::flow::FlowTable::track`] put in
    /// `flow` as `t`.
    pub fn evaluate(
        &self,
        rules: &[Rule],
        p: &PacketSummary,
        flow: &Flow,
        t: &Tracked,
        out: &mut Vec<Match>,
    ) {
        // Rule order is preserved across kinds: collect both, then merge by index.
        let start = out.len();
        let mut cand = self.scratch.borrow_mut();
        if t.first_syn {
            if let Transport::Ports { src, dst } = p.transport {
                let cand = self
                    .new_connection
                    .candidates(p.src, p.dst, Some(dst), &mut cand);
                for &i in cand {
                    // The port index found it by this port: only the rest is tested.
                    debug_assert!(rules[i].matches_port(Some(dst)));
                    if rules[i].matches_addrs(p.proto, p.src, p.dst) {
                        out.push(Match {
                            rule: i,
                            src: p.src,
                            dest: p.dst,
                            src_port: Some(src),
                            dest_port: Some(dst),
                        });
                    }
                }
            }
        }
        if t.created {
            let (ini, resp) = (flow.initiator(), flow.responder());
            let ports = has_ports(flow.key.proto());
            let dport = ports.then_some(resp.port);
            let cand = self
                .egress
                .candidates(ini.addr, resp.addr, dport, &mut cand);
            for &i in cand {
                debug_assert!(rules[i].matches_port(dport));
                if rules[i].matches_addrs(flow.key.proto(), ini.addr, resp.addr) {
                    out.push(Match {
                        rule: i,
                        src: ini.addr,
                        dest: resp.addr,
                        src_port: ports.then_some(ini.port),
                        dest_port: dport,
                    });
                }
            }
        }
        if out.len() - start > 1 {
            out[start..].sort_by_key(|m| m.rule);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile_files;

    fn set(text: &str) -> RuleSet {
        compile_files(&[("t.toml".into(), text.into())]).unwrap()
    }

    #[test]
    fn test_port_index_candidates_are_exactly_the_covering_rules() {
        let rs = set(concat!(
            "[[rule]]\nid = \"a\"\nkind = \"egress\"\ndest_port = [80, \"8000-8100\"]\n",
            "[[rule]]\nid = \"b\"\nkind = \"egress\"\n",
            "[[rule]]\nid = \"c\"\nkind = \"egress\"\ndest_port = \"8050-9000\"\n",
            "[[rule]]\nid = \"d\"\nkind = \"egress\"\ndest_port = 65535\n",
            "[[rule]]\nid = \"e\"\nkind = \"new-connection\"\ndest_port = 80\n",
        ));
        let e = Evaluator::new(&rs);
        let a: IpAddr = "10.0.1.5".parse().unwrap();
        let c = |p: Option<u16>| {
            let mut v = Vec::new();
            e.egress.candidates(a, a, p, &mut v).to_vec()
        };
        assert_eq!(c(Some(80)), vec![0, 1]);
        assert_eq!(c(Some(81)), vec![1]);
        assert_eq!(c(Some(8000)), vec![0, 1]);
        assert_eq!(c(Some(8050)), vec![0, 1, 2]);
        assert_eq!(c(Some(8100)), vec![0, 1, 2]);
        assert_eq!(c(Some(8101)), vec![1, 2]);
        assert_eq!(c(Some(9001)), vec![1]);
        assert_eq!(c(Some(65535)), vec![1, 3]);
        assert_eq!(c(Some(0)), vec![1]);
        assert_eq!(
            c(None),
            vec![1],
            "portless protocols only see rules without ports"
        );
        // Brute force: for every port, the candidates are exactly the rules that match it.
        for p in 0..=65535u16 {
            let want: Vec<usize> = (0..4)
                .filter(|&i| {
                    rs.rules[i]
                        .dest_port
                        .as_ref()
                        .is_none_or(|ps| ps.contains(p))
                })
                .collect();
            assert_eq!(c(Some(p)), want, "port {p}");
        }
    }

    #[test]
    fn test_port_segments_at_their_extremes() {
        // One segment (no rule of the kind names a port): every port finds the portless rules.
        let rs = set("[[rule]]\nid = \"a\"\nkind = \"egress\"\n");
        let e = Evaluator::new(&rs);
        let a: IpAddr = "10.0.1.5".parse().unwrap();
        let mut v = Vec::new();
        assert!(e.egress.seg_of.is_empty());
        for p in [0, 1, 80, 65_534, 65_535] {
            assert_eq!(e.egress.candidates(a, a, Some(p), &mut v), [0], "port {p}");
        }
        // 65,536 segments: a rule on every even port makes each port its own segment.
        let ports: Vec<String> = (0..=65_535u32).step_by(2).map(|p| p.to_string()).collect();
        let text = format!(
            "[[rule]]\nid = \"even\"\nkind = \"egress\"\ndest_port = [{}]\n\
             [[rule]]\nid = \"any\"\nkind = \"egress\"\n",
            ports.join(", ")
        );
        let rs = set(&text);
        let e = Evaluator::new(&rs);
        assert_eq!(e.egress.lists.len(), 65_536);
        assert_eq!(e.egress.seg_of.len(), 65_536);
        for p in 0..=65_535u16 {
            let want: &[usize] = if p % 2 == 0 { &[0, 1] } else { &[1] };
            assert_eq!(e.egress.candidates(a, a, Some(p), &mut v), want, "port {p}");
        }
        assert_eq!(e.egress.candidates(a, a, None, &mut v), [1]);
    }

    #[test]
    fn test_ten_thousand_rules_compile_and_index() {
        let mut text = String::from("[networks]\nai = [\"10.0.1.0/24\"]\n");
        for i in 0..10_000 {
            text.push_str(&format!(
                "[[rule]]\nid = \"r{i}\"\nkind = \"new-connection\"\ndest_port = {}\nsrc = \"ai\"\n",
                i % 5000
            ));
        }
        let rs = set(&text);
        assert_eq!(rs.rules.len(), 10_000);
        let e = Evaluator::new(&rs);
        let mut v = Vec::new();
        let ai: IpAddr = "10.0.1.7".parse().unwrap();
        let got = e.new_connection.candidates(ai, ai, Some(4999), &mut v);
        assert_eq!(got, [4999, 9999]);
    }

    #[test]
    fn test_network_index_finds_exactly_the_rules_that_match() {
        // 1,000 rules on random networks (src, dest, both, neither; v4 and v6; some negated,
        // some with ports) against brute force over every rule, on random tuples drawn near
        // those networks.
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        let mut below = move |n: u64| next() % n;
        let mut nets = Vec::new();
        let mut text = String::new();
        for i in 0..1000 {
            let v6 = below(5) == 0;
            let len = if v6 { 32 + below(97) } else { 8 + below(25) };
            let addr: IpAddr = if v6 {
                format!("2001:db8:{:x}::", below(16)).parse().unwrap()
            } else {
                format!("10.{}.{}.0", below(4), below(4)).parse().unwrap()
            };
            let n = IpNetwork::new(addr, len as u8).unwrap();
            let net = format!("{}/{len}", n.network());
            nets.push(net.clone());
            let kind = if below(2) == 0 {
                "egress"
            } else {
                "new-connection"
            };
            text.push_str(&format!("[[rule]]\nid = \"r{i}\"\nkind = \"{kind}\"\n"));
            match below(4) {
                0 => text.push_str(&format!("src = \"{net}\"\n")),
                1 => text.push_str(&format!("dest = \"{net}\"\n")),
                2 => text.push_str(&format!("src = \"{net}\"\ndest_not = \"10.0.0.0/16\"\n")),
                _ => {}
            }
            if below(3) == 0 {
                text.push_str(&format!("dest_port = {}\n", 1000 + below(20)));
            }
        }
        let rs = set(&text);
        let e = Evaluator::new(&rs);
        let mut cand = Vec::new();
        let pick = |below: &mut dyn FnMut(u64) -> u64| -> IpAddr {
            if below(5) == 0 {
                format!("2001:db8:{:x}::{:x}", below(16), below(65536))
                    .parse()
                    .unwrap()
            } else {
                format!("10.{}.{}.{}", below(4), below(4), below(256))
                    .parse()
                    .unwrap()
            }
        };
        let mut matched = 0;
        for _ in 0..20_000 {
            let (src, dest) = (pick(&mut below), pick(&mut below));
            let port = Some(1000 + below(22) as u16);
            for (index, kind) in [
                (&e.egress, RuleKind::Egress),
                (&e.new_connection, RuleKind::NewConnection),
            ] {
                let cand = index.candidates(src, dest, port, &mut cand);
                // Candidates are found by their port: the evaluator tests only the rest.
                assert!(cand.iter().all(|&i| rs.rules[i].matches_port(port)));
                let got: Vec<usize> = cand
                    .iter()
                    .copied()
                    .filter(|&i| rs.rules[i].matches_addrs(proto::TCP, src, dest))
                    .collect();
                let want: Vec<usize> = (0..rs.rules.len())
                    .filter(|&i| {
                        rs.rules[i].kind == kind
                            && rs.rules[i].matches_tuple(proto::TCP, src, dest, port)
                    })
                    .collect();
                assert_eq!(got, want, "{src} -> {dest}:{port:?}");
                matched += want.len();
                // Far fewer candidates than rules: the index narrows, it does not walk.
                assert!(cand.len() < 200, "{} candidates", cand.len());
            }
        }
        assert!(
            matched > 10_000,
            "the test tuples hit too few rules: {matched}"
        );
    }
}
