//! The engine: flow table, then rules, then rate limits, then the alert writer, for one
//! packet summary at a time, in packet order.
//!
//! Contract: [`Engine::process`] is deterministic: the same summaries in the same order give
//! the same alerts, byte for byte. It owns all per-flow state, so one engine sees all the
//! packets of every flow it tracks.

use std::io;
use std::sync::Arc;

use crate::alert::{Alert, AlertWriter, Limiter, Verdict};
use crate::community_id::community_id_v1;
use crate::decode::{PacketSummary, Transport};
use crate::flow::{EndReason, FlowStats, FlowTable};
use crate::rules::eval::{Evaluator, Match};
use crate::rules::RuleSet;

/// Per-rule counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Alerts written.
    pub alerts: u64,
    /// Matches held back by the rule's limit.
    pub suppressed: u64,
}

/// What the engine counted.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub packets: u64,
    pub flows: FlowStats,
    /// Flows that ended, by reason (timeout, fin, rst, evicted, shutdown).
    pub ended: [(&'static str, u64); 5],
    /// Indexed like [`RuleSet::rules`].
    pub rules: Vec<(String, RuleCounts)>,
}

impl EngineStats {
    /// Alerts written, all rules.
    pub fn alerts(&self) -> u64 {
        self.rules.iter().map(|(_, c)| c.alerts).sum()
    }

    /// Matches suppressed, all rules.
    pub fn suppressed(&self) -> u64 {
        self.rules.iter().map(|(_, c)| c.suppressed).sum()
    }
}

/// Flow tracking, rule evaluation and alert output for a stream of summaries.
pub struct Engine {
    rules: RuleSet,
    eval: Evaluator,
    flows: FlowTable,
    limiter: Limiter,
    writer: AlertWriter,
    matches: Vec<Match>,
    counts: Vec<RuleCounts>,
    ended: [u64; 5],
    packets: u64,
    /// Live capture interface, reported as `in_iface`.
    iface: Option<String>,
}

impl Engine {
    pub fn new(rules: RuleSet, writer: AlertWriter) -> Engine {
        let eval = Evaluator::new(&rules);
        let flows = FlowTable::new(rules.flow);
        let counts = vec![RuleCounts::default(); rules.rules.len()];
        Engine {
            rules,
            eval,
            flows,
            limiter: Limiter::default(),
            writer,
            matches: Vec::new(),
            counts,
            ended: [0; 5],
            packets: 0,
            iface: None,
        }
    }

    /// Live mode: alerts name the interface (`in_iface`) instead of a file.
    pub fn set_interface(&mut self, name: &str) {
        self.iface = Some(name.to_string());
    }

    /// Processes one packet read from `file`. An error is the alert output failing.
    pub fn process(&mut self, p: &PacketSummary, file: &str) -> io::Result<()> {
        self.packets += 1;
        self.flows.advance(p.ts);
        self.limiter.sweep(self.flows.now());
        let tracked = self.flows.track(p);
        self.count_ended();
        let Some(t) = tracked else {
            return Ok(());
        };
        if !(t.created || t.first_syn) {
            return Ok(());
        }
        let Some(flow) = self.flows.get(t.slot) else {
            return Ok(());
        };
        self.matches.clear();
        self.eval
            .evaluate(&self.rules.rules, p, flow, &t, &mut self.matches);
        let icmp = match p.transport {
            Transport::Icmp { icmp_type, code } => Some((icmp_type, code)),
            _ => None,
        };
        for m in &self.matches {
            let rule = &self.rules.rules[m.rule];
            let suppressed = match &rule.limit {
                None => 0,
                Some(limit) => match self
                    .limiter
                    .check(m.rule, limit, p.ts, m.src, m.dest, flow.id)
                {
                    Verdict::Emit { suppressed } => suppressed,
                    Verdict::Suppress => {
                        self.counts[m.rule].suppressed += 1;
                        continue;
                    }
                },
            };
            let ports = match (m.src_port, m.dest_port, icmp) {
                (Some(s), Some(d), _) => Some((s, d)),
                (_, _, Some((t, c))) => Some((u16::from(t), u16::from(c))),
                _ => None,
            };
            let alert = Alert {
                ts: p.ts,
                rule,
                proto: p.proto,
                src: m.src,
                src_port: m.src_port,
                dest: m.dest,
                dest_port: m.dest_port,
                icmp,
                vlans: p.vlans,
                community_id: community_id_v1(0, m.src, m.dest, p.proto, ports),
                suppressed,
                pcap_filename: file,
                pcap_cnt: p.pcap_cnt,
                in_iface: self.iface.as_deref(),
            };
            self.writer.write(&alert)?;
            self.counts[m.rule].alerts += 1;
        }
        Ok(())
    }

    fn count_ended(&mut self) {
        for (_, reason) in self.flows.drain_ended() {
            self.ended[reason_index(reason)] += 1;
        }
    }

    /// Ends the input: flows still alive end with reason `shutdown`; output is flushed.
    pub fn finish(&mut self) -> io::Result<()> {
        self.flows.shutdown();
        self.count_ended();
        self.writer.flush()
    }

    /// Flushes written alerts to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let names = ["timeout", "fin", "rst", "evicted", "shutdown"];
        let mut ended = [("", 0); 5];
        for (i, n) in names.iter().enumerate() {
            ended[i] = (n, self.ended[i]);
        }
        EngineStats {
            packets: self.packets,
            flows: self.flows.stats().clone(),
            ended,
            rules: self
                .rules
                .rules
                .iter()
                .zip(&self.counts)
                .map(|(r, c)| (r.id.clone(), c.clone()))
                .collect(),
        }
    }

    /// Advances the flow clock without a packet (live mode's timer), expiring idle flows.
    pub fn tick(&mut self, now: crate::time::Timestamp) {
        self.flows.advance(now);
        self.limiter.sweep(self.flows.now());
        self.count_ended();
    }

    /// Writes a non-alert line (a stats record) into the alert stream.
    pub fn write_record(&mut self, line: &[u8]) -> io::Result<()> {
        self.writer.write_raw_line(line)
    }

    /// The alert format.
    pub fn format(&self) -> crate::alert::Format {
        self.writer.format()
    }

    /// Reopens the alert file by its path.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.writer.reopen()
    }

    /// What alerts are written to.
    pub fn output_name(&self) -> String {
        self.writer.describe()
    }

    /// Flows alive now.
    pub fn flows_alive(&self) -> usize {
        self.flows.len()
    }
}

fn reason_index(r: EndReason) -> usize {
    match r {
        EndReason::Timeout => 0,
        EndReason::Fin => 1,
        EndReason::Rst => 2,
        EndReason::Evicted => 3,
        EndReason::Shutdown => 4,
    }
}

/// The file name shared by every alert of one input file.
pub type FileName = Arc<str>;
