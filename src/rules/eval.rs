//! Rule evaluation on packet summaries and flows.
//!
//! Contract: [`Evaluator::evaluate`] is called once per tracked packet and appends the rules
//! that match it, in rule order, with the tuple the alert reports. `new-connection` rules look
//! at a flow's first pure SYN (so retransmissions never fire); `egress` rules look at a flow
//! once, at the packet that created it, with the initiator as source. Rate limits are applied
//! after this, by the alert layer.

use std::net::IpAddr;

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

/// Rules of one kind indexed by destination port: a packet walks only the rules whose port
/// set holds its port, plus those without one, so 1,000 rules on distinct ports cost what the
/// few that can match cost.
#[derive(Debug, Clone, Default)]
struct PortIndex {
    /// Rules without `dest_port`, in rule order.
    any: Vec<usize>,
    /// Segment starts (sorted); segment `i` covers `starts[i]..starts[i+1]`.
    starts: Vec<u32>,
    /// Rules whose port set covers each segment, in rule order.
    lists: Vec<Vec<usize>>,
}

impl PortIndex {
    fn build(rules: &[Rule], ids: &[usize]) -> PortIndex {
        let mut idx = PortIndex::default();
        let mut bounds: Vec<u32> = vec![0, 65_536];
        for &i in ids {
            match &rules[i].dest_port {
                None => idx.any.push(i),
                Some(ps) => {
                    for &(a, b) in ps.ranges() {
                        bounds.push(u32::from(a));
                        bounds.push(u32::from(b) + 1);
                    }
                }
            }
        }
        bounds.sort_unstable();
        bounds.dedup();
        idx.starts = bounds[..bounds.len() - 1].to_vec();
        idx.lists = vec![Vec::new(); idx.starts.len()];
        for &i in ids {
            if let Some(ps) = &rules[i].dest_port {
                for &(a, b) in ps.ranges() {
                    let first = idx.starts.partition_point(|&s| s < u32::from(a));
                    let end = idx.starts.partition_point(|&s| s <= u32::from(b));
                    for list in &mut idx.lists[first..end] {
                        list.push(i);
                    }
                }
            }
        }
        idx
    }

    /// The rules that may match destination port `port` (`None`: a portless protocol).
    fn candidates(&self, port: Option<u16>) -> (&[usize], &[usize]) {
        let specific = match port {
            None => &[][..],
            Some(p) => {
                let seg = self.starts.partition_point(|&s| s <= u32::from(p));
                self.lists
                    .get(seg.wrapping_sub(1))
                    .map_or(&[][..], |l| &l[..])
            }
        };
        (&self.any, specific)
    }
}

/// The rules split by kind and indexed by port, so a packet only walks the rules that can
/// match it.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    new_connection: PortIndex,
    egress: PortIndex,
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
        if t.first_syn {
            if let Transport::Ports { src, dst } = p.transport {
                let (any, specific) = self.new_connection.candidates(Some(dst));
                for &i in any.iter().chain(specific) {
                    if rules[i].matches_tuple(p.proto, p.src, p.dst, Some(dst)) {
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
            let ports = has_ports(flow.key.proto);
            let dport = ports.then_some(resp.port);
            let (any, specific) = self.egress.candidates(dport);
            for &i in any.iter().chain(specific) {
                if rules[i].matches_tuple(flow.key.proto, ini.addr, resp.addr, dport) {
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
        let c = |p: Option<u16>| {
            let (any, specific) = e.egress.candidates(p);
            let mut v: Vec<usize> = any.iter().chain(specific).copied().collect();
            v.sort();
            v
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
        let (any, specific) = e.new_connection.candidates(Some(4999));
        assert!(any.is_empty());
        assert_eq!(specific, &[4999, 9999]);
    }
}
