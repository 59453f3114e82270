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

/// The rules split by kind, so a packet only walks the rules that can match it.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    new_connection: Vec<usize>,
    egress: Vec<usize>,
}

/// Whether a protocol carries ports in our summaries.
pub fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::SCTP)
}

impl Evaluator {
    pub fn new(rules: &RuleSet) -> Evaluator {
        let mut e = Evaluator::default();
        for (i, r) in rules.rules.iter().enumerate() {
            match r.kind {
                RuleKind::NewConnection => e.new_connection.push(i),
                RuleKind::Egress => e.egress.push(i),
                RuleKind::EgressVolume | RuleKind::LongFlow => {}
            }
        }
        e
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
                for &i in &self.new_connection {
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
        if t.created && !self.egress.is_empty() {
            let (ini, resp) = (flow.initiator(), flow.responder());
            let ports = has_ports(flow.key.proto);
            let dport = ports.then_some(resp.port);
            for &i in &self.egress {
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
