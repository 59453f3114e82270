//! The engine: flow table, then rules, then rate limits, then the alert writer, for one
//! packet summary at a time, in packet order.
//!
//! Contract: [`Engine::process`] is deterministic: the same summaries in the same order give
//! the same alerts and flow records, byte for byte. It owns all per-flow state, so one engine
//! sees all the packets of every flow it tracks. Per packet it does O(1) flow work plus the
//! rules that can match: connection rules only on a flow's first packet or first SYN, volume
//! and duration rules only on flows they apply to (a per-flow volume or a duration rule from
//! the packet where the flow first could fire one: most flows never get that far).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnetwork::IpNetwork;

use crate::alert::{
    AlertWriter, Context, FlowCounters, Limiter, Output, Record, Verdict, LIMITER_SWEEP_EVERY,
};
use crate::community_id::community_id_v1;
use crate::decode::{proto, PacketSummary, Transport};
use crate::flow::{Direction, EndReason, Flow, FlowState, FlowStats, FlowTable, Lookahead};
use crate::rules::eval::{has_ports, Evaluator, Match};
use crate::rules::{NetSet, Rule, RuleKind, RuleSet, Severity, VolumeTrack};
use crate::time::{Duration, Timestamp};

/// Per-rule counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Matches (each one either written or suppressed: `matched == alerts + suppressed`).
    pub matched: u64,
    /// Alerts written.
    pub alerts: u64,
    /// Matches held back by the rule's limit.
    pub suppressed: u64,
}

/// Flows by policy verdict, counted when they start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    /// Touching a watched zone and covered by an allow entry.
    pub allowed: u64,
    /// Touching a watched zone and covered by none (each raised a `policy` alert).
    pub denied: u64,
    /// Touching no watched zone.
    pub unwatched: u64,
}

/// What the engine counted.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub packets: u64,
    pub flows: FlowStats,
    /// Flows that ended, by reason (timeout, fin, rst, evicted, shutdown).
    pub ended: [(&'static str, u64); EndReason::ALL.len()],
    /// Per rule, in rule order (the `policy` pseudo-rule last, when there is a policy).
    pub rules: Vec<(String, RuleCounts)>,
    pub policy: Option<PolicyCounts>,
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

    /// Matches, all rules.
    pub fn matched(&self) -> u64 {
        self.rules.iter().map(|(_, c)| c.matched).sum()
    }

    /// Adds another engine's counters (live workers running the same rules). Peaks add up:
    /// the sum bounds the flows alive at once.
    pub fn merge(&mut self, o: &EngineStats) {
        self.packets += o.packets;
        self.flows.merge(&o.flows);
        for (a, b) in self.ended.iter_mut().zip(&o.ended) {
            a.1 += b.1;
        }
        for ((_, a), (_, b)) in self.rules.iter_mut().zip(&o.rules) {
            a.matched += b.matched;
            a.alerts += b.alerts;
            a.suppressed += b.suppressed;
        }
        if let (Some(a), Some(b)) = (self.policy.as_mut(), &o.policy) {
            a.allowed += b.allowed;
            a.denied += b.denied;
            a.unwatched += b.unwatched;
        }
    }
}

/// Bytes one inside host sent to one outside peer, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Talk {
    pub bytes: u64,
    pub flows: u64,
}

/// Per inside host, what it sent to each outside address (ended flows).
pub type Talkers = BTreeMap<IpAddr, BTreeMap<IpAddr, Talk>>;

/// One volume or duration rule watching one flow.
#[derive(Debug, Clone, Copy)]
struct WatchEntry {
    /// Index of the rule (`u32::MAX` for none: entries are 8 bytes, one per watch rule per
    /// flow, so a flood of new flows touches a quarter of what `usize` and padding cost).
    rule: u32,
    /// The inside host (the one in `src`) is the flow's initiator.
    inside_is_initiator: bool,
    fired: bool,
}

impl WatchEntry {
    const NONE: WatchEntry = WatchEntry {
        rule: u32::MAX,
        inside_is_initiator: false,
        fired: false,
    };
}

/// A flow's watch state, kept in [`Flow::ext`]: its block of watch entries, if it has one, and
/// whether the deferred rules (per-flow volume, duration) are still to be looked at. A new
/// flow's `ext` (`u32::MAX`) reads as no block, deferred rules pending. Block numbers are below
/// the flows alive (`max_flows` is at most 10^8), far from the 31 bits they have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WatchRef(u32);

impl WatchRef {
    const PENDING: u32 = 1 << 31;
    const NO_BLOCK: u32 = !Self::PENDING;

    fn block(self) -> Option<u32> {
        let b = self.0 & Self::NO_BLOCK;
        (b != Self::NO_BLOCK).then_some(b)
    }

    fn pending(self) -> bool {
        self.0 & Self::PENDING != 0
    }

    fn new(block: Option<u32>, pending: bool) -> WatchRef {
        debug_assert!(block.is_none_or(|b| b < Self::NO_BLOCK), "block {block:?}");
        let b = block.map_or(Self::NO_BLOCK, |b| b & Self::NO_BLOCK);
        WatchRef(b | if pending { Self::PENDING } else { 0 })
    }
}

/// The volume and duration rules, split by when a flow needs their entries.
#[derive(Debug, Clone, Default)]
struct WatchRules {
    /// `by_src` volume rules: every inside packet counts from the flow's first, so a flow gets
    /// their entries when it is created.
    eager: Vec<usize>,
    /// `by_flow` volume and `long-flow` rules: they can only fire once the flow has sent more
    /// than `min_bytes` one way or lasted longer than `min_age`, so a flow gets their entries at
    /// the first packet where either holds (before the rules are checked on that packet).
    deferred: Vec<usize>,
    min_bytes: u64,
    min_age: Duration,
}

impl WatchRules {
    fn new(rules: &RuleSet) -> WatchRules {
        let mut w = WatchRules {
            min_bytes: u64::MAX,
            min_age: Duration(i64::MAX),
            ..WatchRules::default()
        };
        for (i, r) in rules.rules.iter().enumerate() {
            match (r.kind, r.volume, r.duration) {
                (RuleKind::EgressVolume, Some(v), _) => match v.track {
                    VolumeTrack::BySrc { .. } => w.eager.push(i),
                    VolumeTrack::ByFlow => {
                        w.min_bytes = w.min_bytes.min(v.bytes);
                        w.deferred.push(i);
                    }
                },
                (RuleKind::LongFlow, _, Some(d)) => {
                    w.min_age = w.min_age.min(d);
                    w.deferred.push(i);
                }
                _ => {}
            }
        }
        w
    }

    /// Entries a flow's block holds at most.
    fn stride(&self) -> usize {
        self.eager.len() + self.deferred.len()
    }

    /// Whether `flow`, at packet time `now`, has got far enough for a deferred rule to fire.
    fn due(&self, flow: &Flow, now: Timestamp) -> bool {
        flow.bytes[0].max(flow.bytes[1]) > self.min_bytes
            || now.since(flow.first_seen) > self.min_age
    }
}

/// by_src windows by (rule, inside host).
type SrcWindowMap = HashMap<(usize, IpAddr), SrcWindow>;

/// The by_src windows of one engine, or of several that share them.
type SrcWindows = Arc<Mutex<SrcWindowMap>>;

/// A by_src sliding window: packets' bytes in time order, merged within a quantum.
#[derive(Debug, Default)]
struct SrcWindow {
    q: VecDeque<(Timestamp, u64)>,
    sum: u64,
    /// Fired and not yet back to or below the threshold.
    above: bool,
}

/// Zone lookup: the most specific watched network holding an address.
#[derive(Debug, Default)]
struct Zones {
    /// (network, zone name), longest prefix first.
    nets: Vec<(IpNetwork, String)>,
}

impl Zones {
    /// The zone of `ip`: the most specific watched network holding it, else `any`.
    fn of(&self, ip: IpAddr) -> &str {
        match self.index(ip) {
            0 => "any",
            i => self
                .nets
                .get(i as usize - 1)
                .map_or("any", |(_, z)| z.as_str()),
        }
    }

    /// [`Zones::of`] as an index into [`Zones::names`].
    fn index(&self, ip: IpAddr) -> u32 {
        self.nets
            .iter()
            .position(|(n, _)| n.contains(ip))
            .map_or(0, |i| i as u32 + 1)
    }

    /// Zone names by [`Zones::of`]'s index: `any` (in no watched network), then one per
    /// network.
    fn names(&self) -> Vec<String> {
        std::iter::once("any".to_string())
            .chain(self.nets.iter().map(|(_, z)| z.clone()))
            .collect()
    }
}

/// Extra facts a match carries to its alert.
#[derive(Debug, Clone, Copy)]
enum Extra {
    None,
    Window(u64, Duration),
    Zones,
}

/// Flow tracking, rule evaluation and alert output for a stream of summaries.
pub struct Engine {
    rules: RuleSet,
    eval: Evaluator,
    /// `egress-volume` and `long-flow` rules.
    watch_rules: WatchRules,
    /// The `policy` pseudo-rule (index `rules.rules.len()` in counts).
    policy_rule: Option<Rule>,
    zones: Zones,
    /// Networks that make a host "inside" for the report.
    inside: NetSet,
    flows: FlowTable,
    /// Per-flow watch entries, `watch_rules.stride()` slots a flow (unused slots have
    /// `rule == u32::MAX`): no allocation per flow.
    watches: Vec<WatchEntry>,
    free_watches: Vec<u32>,
    /// by_src volume windows by (rule, inside host); shared by live workers' engines
    /// ([`Engine::share_with`]), since a host's flows are spread over them.
    windows: SrcWindows,
    /// Rate-limit state; shared by live workers' engines like `windows`.
    limiter: Arc<Mutex<Limiter>>,
    /// When this engine last swept the limiter (packet time): it sweeps every
    /// [`LIMITER_SWEEP_EVERY`], so the lock is not taken per packet.
    limits_swept: Option<Timestamp>,
    /// Added to flow ids in rate-limit keys, so that flows of engines sharing the limiter
    /// never share a key (flow ids count from 1 in each engine's table).
    flow_id_base: u64,
    writer: AlertWriter,
    flow_out: Option<Output>,
    talkers: Option<Talkers>,
    matches: Vec<(Match, Extra)>,
    scratch: Vec<Match>,
    ended_buf: Vec<(Flow, EndReason)>,
    /// The file the packets being processed were read from (alerts name it).
    file: Arc<str>,
    counts: Vec<RuleCounts>,
    policy_counts: PolicyCounts,
    ended: [u64; EndReason::ALL.len()],
    packets: u64,
    /// Live capture interface, reported as `in_iface`.
    iface: Option<String>,
    line: Vec<u8>,
}

impl Engine {
    pub fn new(rules: RuleSet, writer: AlertWriter) -> Engine {
        let eval = Evaluator::new(&rules);
        let flows = FlowTable::new(rules.flow);
        let watch_rules = WatchRules::new(&rules);
        let mut zones = Zones::default();
        let policy_rule = rules.policy.as_ref().map(|p| {
            for z in &p.zones {
                if let Some(set) = rules.networks.get(z) {
                    zones
                        .nets
                        .extend(set.networks().iter().map(|n| (*n, z.clone())));
                }
            }
            zones
                .nets
                .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix()));
            Rule {
                id: crate::rules::POLICY_RULE_ID.into(),
                kind: RuleKind::Egress,
                severity: p.severity,
                message: "Flow not allowed by the policy".into(),
                proto: crate::rules::ProtoFilter::Any,
                src: None,
                dest: None,
                src_not: None,
                dest_not: None,
                dest_port: None,
                limit: None,
                volume: None,
                duration: None,
                origin: "[policy]".into(),
            }
        });
        let inside = NetSet::new(
            rules
                .networks
                .values()
                .flat_map(|s| s.networks().iter().copied())
                .collect(),
            String::new(),
        );
        let counts = vec![RuleCounts::default(); rules.rules.len() + 1];
        let mut writer = writer;
        writer.set_context(alert_context(&rules, policy_rule.as_ref(), &zones, None));
        Engine {
            rules,
            eval,
            watch_rules,
            policy_rule,
            zones,
            inside,
            flows,
            watches: Vec::new(),
            free_watches: Vec::new(),
            windows: SrcWindows::default(),
            limiter: Arc::default(),
            limits_swept: None,
            flow_id_base: 0,
            writer,
            flow_out: None,
            talkers: None,
            matches: Vec::new(),
            scratch: Vec::new(),
            ended_buf: Vec::new(),
            file: Arc::from(""),
            counts,
            policy_counts: PolicyCounts::default(),
            ended: [0; EndReason::ALL.len()],
            packets: 0,
            iface: None,
            line: Vec::with_capacity(512),
        }
    }

    /// Makes this engine keep the state that spans flows with `first`'s: the by_src volume
    /// windows and the rate limits, so that a host's bytes add up and a limit counts its
    /// alerts whichever engine sees each flow (live workers: the kernel spreads a host's flows
    /// over them). `worker` (1, 2, ...; `first` is 0) keeps the engines' flows apart in
    /// by_flow limits. Both must run the same rules.
    pub fn share_with(&mut self, first: &Engine, worker: u16) {
        self.windows = Arc::clone(&first.windows);
        self.limiter = Arc::clone(&first.limiter);
        self.flow_id_base = u64::from(worker) << 48;
    }

    /// Drops closed rate-limit windows every [`LIMITER_SWEEP_EVERY`] of packet time, taking
    /// the limiter's lock only then. (Inlined: called per packet, the check alone cost more in
    /// a call's register saves than in itself.)
    #[inline]
    fn sweep_limits(&mut self) {
        let now = self.flows.now();
        if self
            .limits_swept
            .is_none_or(|t| now.since(t) >= LIMITER_SWEEP_EVERY)
        {
            self.sweep_limits_now(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn sweep_limits_now(&mut self, now: Timestamp) {
        self.limits_swept = Some(now);
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sweep(now);
    }

    /// Writes one `"event_type":"flow"` record per ended flow to `out`.
    pub fn set_flow_output(&mut self, out: Output) {
        self.flow_out = Some(out);
    }

    /// Collects, per inside host, the bytes it sent to each outside address (for the report).
    pub fn collect_talkers(&mut self) {
        self.talkers = Some(Talkers::new());
    }

    /// The collected talkers (after [`Engine::finish`], every flow is in).
    pub fn talkers(&self) -> Option<&Talkers> {
        self.talkers.as_ref()
    }

    /// Live mode: alerts name the interface (`in_iface`) instead of a file.
    pub fn set_interface(&mut self, name: &str) {
        self.iface = Some(name.to_string());
        self.writer.set_context(alert_context(
            &self.rules,
            self.policy_rule.as_ref(),
            &self.zones,
            self.iface.clone(),
        ));
    }

    /// Processes one packet read from `file`. An error is an output failing.
    pub fn process(&mut self, p: &PacketSummary, file: &str) -> io::Result<()> {
        if *self.file != *file {
            self.file = Arc::from(file);
        }
        self.process_hashed(p, None)
    }

    /// Processes packets read from `file`, in order, exactly as [`Engine::process`] one by
    /// one would. Meanwhile the flow table's memory for the packets a few places ahead is
    /// being loaded (hash, then index bucket, then flow and list nodes, one step apart), so
    /// tracking a flow that is not in cache seldom waits for memory.
    pub fn process_batch(&mut self, batch: &[PacketSummary], file: &Arc<str>) -> io::Result<()> {
        if !Arc::ptr_eq(&self.file, file) {
            self.file = Arc::clone(file);
        }
        // Packets between look-ahead steps; the ring holds every packet in flight.
        const STEP: usize = 4;
        const RING: usize = 16;
        const _: () = assert!(RING > 3 * STEP);
        let mut ahead = [Lookahead::EMPTY; RING];
        let mut slots = [None; RING];
        let n = batch.len();
        for i in 0..n + 3 * STEP {
            if let Some(p) = batch.get(i) {
                self.flows.lookahead(p, &mut ahead[i % RING]);
            }
            if let Some(j) = i.checked_sub(STEP).filter(|&j| j < n) {
                slots[j % RING] = self.flows.lookahead_flow(&ahead[j % RING]);
            }
            if let Some(j) = i.checked_sub(2 * STEP).filter(|&j| j < n) {
                self.flows.lookahead_links(slots[j % RING]);
            }
            if let Some(j) = i.checked_sub(3 * STEP) {
                if let Some(p) = batch.get(j) {
                    self.process_hashed(p, Some(&ahead[j % RING]))?;
                }
            }
        }
        Ok(())
    }

    fn process_hashed(&mut self, p: &PacketSummary, ahead: Option<&Lookahead>) -> io::Result<()> {
        self.packets += 1;
        self.flows.advance(p.ts);
        self.sweep_limits();
        let tracked = self.flows.track_hashed(p, ahead);
        self.handle_ended()?;
        let Some(t) = tracked else {
            return Ok(());
        };
        self.matches.clear();
        let Engine {
            flows,
            rules,
            eval,
            matches,
            watches,
            free_watches,
            windows,
            zones,
            policy_counts,
            watch_rules,
            scratch,
            ..
        } = self;
        let Some(flow) = flows.get(t.slot) else {
            return Ok(());
        };
        if t.created || t.first_syn {
            scratch.clear();
            eval.evaluate(&rules.rules, p, flow, &t, scratch);
            matches.extend(scratch.iter().map(|m| (*m, Extra::None)));
        }
        if t.created {
            check_policy(rules, zones, policy_counts, flow, matches);
        }
        let stride = watch_rules.stride();
        let w = WatchRef(flow.ext);
        let eager = t.created && !watch_rules.eager.is_empty();
        let deferred = w.pending() && watch_rules.due(flow, p.ts);
        if eager || deferred {
            let mut block = w.block();
            for (ids, now) in [
                (&watch_rules.eager, eager),
                (&watch_rules.deferred, deferred),
            ] {
                if now {
                    add_watch_entries(rules, ids, flow, stride, watches, free_watches, &mut block);
                }
            }
            let pending = w.pending() && !deferred && !watch_rules.deferred.is_empty();
            let w2 = WatchRef::new(block, pending);
            if w2 != w {
                flows.set_ext(t.slot, w2.0);
            }
        }
        let Some(flow) = flows.get(t.slot) else {
            return Ok(());
        };
        if let Some(b) = WatchRef(flow.ext).block() {
            if let Some(entries) = watches.get_mut(b as usize * stride..) {
                let len = stride.min(entries.len());
                let entries = &mut entries[..len];
                check_watches(rules, entries, windows, matches, p, flow, t.direction);
            }
        }
        if self.matches.is_empty() {
            return Ok(());
        }
        if self.matches.len() > 1 {
            self.matches.sort_by_key(|(m, _)| m.rule);
        }
        let flow = flow.clone();
        let matches = std::mem::take(&mut self.matches);
        let r = self.emit_all(p, &flow, &matches);
        self.matches = matches;
        r
    }

    fn emit_all(
        &mut self,
        p: &PacketSummary,
        flow: &Flow,
        matches: &[(Match, Extra)],
    ) -> io::Result<()> {
        let icmp = match p.transport {
            Transport::Icmp { icmp_type, code } => Some((icmp_type, code)),
            _ => None,
        };
        let counters = counters_of(flow);
        for (m, extra) in matches {
            let rule = match self.rules.rules.get(m.rule) {
                Some(r) => r,
                None => match &self.policy_rule {
                    Some(r) => r,
                    None => continue,
                },
            };
            self.counts[m.rule].matched += 1;
            let suppressed = match &rule.limit {
                None => 0,
                Some(limit) => {
                    let verdict = self
                        .limiter
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .check(
                            m.rule,
                            limit,
                            p.ts,
                            m.src,
                            m.dest,
                            self.flow_id_base + flow.id,
                        );
                    match verdict {
                        Verdict::Emit { suppressed } => suppressed,
                        Verdict::Suppress => {
                            self.counts[m.rule].suppressed += 1;
                            continue;
                        }
                    }
                }
            };
            // The hash is the flow's: for ICMP, the flow key's type/code equivalents, oriented
            // from the alert's source (the packet's own type/code only go in icmp_type/code).
            let hash_ports = match (m.src_port, m.dest_port) {
                (Some(s), Some(d)) => Some((s, d)),
                _ if matches!(flow.key.proto(), proto::ICMP | proto::ICMPV6) => {
                    let (a, b) = if flow.initiator().addr == m.src {
                        (flow.initiator(), flow.responder())
                    } else {
                        (flow.responder(), flow.initiator())
                    };
                    Some((a.port, b.port))
                }
                _ => None,
            };
            let record = Record {
                ts: p.ts,
                rule: m.rule as u32,
                proto: flow.key.proto(),
                src: m.src,
                src_port: m.src_port,
                dest: m.dest,
                dest_port: m.dest_port,
                icmp,
                vlans: p.vlans,
                hash_ports,
                suppressed,
                pcap_cnt: p.pcap_cnt,
                flow: Some(counters),
                window: match extra {
                    Extra::Window(sum, w) => Some((*sum, *w)),
                    _ => None,
                },
                zones: match extra {
                    Extra::Zones => Some((self.zones.index(m.src), self.zones.index(m.dest))),
                    _ => None,
                },
            };
            self.writer.write_record(&record, &self.file)?;
            self.counts[m.rule].alerts += 1;
        }
        Ok(())
    }

    #[inline]
    fn handle_ended(&mut self) -> io::Result<()> {
        // Most packets end no flow: inlined, that check costs less than a call would.
        if !self.flows.has_ended() {
            return Ok(());
        }
        self.handle_ended_now()
    }

    #[inline(never)]
    fn handle_ended_now(&mut self) -> io::Result<()> {
        let mut ended = std::mem::take(&mut self.ended_buf);
        self.flows.take_ended(&mut ended);
        let r = self.account_ended(&ended);
        self.ended_buf = ended;
        r
    }

    fn account_ended(&mut self, ended: &[(Flow, EndReason)]) -> io::Result<()> {
        for (flow, reason) in ended {
            let reason = *reason;
            self.ended[reason.index()] += 1;
            if let Some(b) = WatchRef(flow.ext).block() {
                self.free_watches.push(b);
            }
            if let Some(t) = self.talkers.as_mut() {
                account_talk(t, &self.inside, flow);
            }
            if self.flow_out.is_some() {
                self.line.clear();
                flow_record(&mut self.line, flow, reason.as_str(), self.iface.as_deref())?;
                if let Some(out) = self.flow_out.as_mut() {
                    out.write_line(&self.line)?;
                }
            }
        }
        Ok(())
    }

    /// Writes an update record for every flow alive longer than `min_age` (live mode).
    pub fn write_flow_updates(&mut self, min_age: Duration) -> io::Result<()> {
        let Some(out) = self.flow_out.as_mut() else {
            return Ok(());
        };
        let now = self.flows.now();
        for f in self.flows.alive() {
            if now.since(f.first_seen) > min_age {
                self.line.clear();
                flow_record(&mut self.line, f, "update", self.iface.as_deref())?;
                out.write_line(&self.line)?;
            }
        }
        out.flush()
    }

    /// Advances the flow clock without a packet (live mode's timer), expiring idle flows.
    pub fn tick(&mut self, now: Timestamp) -> io::Result<()> {
        self.flows.advance(now);
        self.sweep_limits();
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, w| !w.q.is_empty() || w.above);
        self.handle_ended()
    }

    /// Ends the input: flows still alive end with reason `shutdown`; outputs are flushed.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.flow_out.is_none() && self.talkers.is_none() {
            // Flows that ended before the end of input first: they give back watch entries.
            self.handle_ended()?;
            // Nothing keeps a record per flow: count the rest by reason and drop them at
            // once (a million flows one by one took 50 ms after a flood).
            let counts = self.flows.shutdown_counted();
            for (total, n) in self.ended.iter_mut().zip(counts) {
                *total += n;
            }
            self.watches.clear();
            self.free_watches.clear();
        } else {
            // In batches: a million live flows never sit in memory twice.
            while self.flows.shutdown_some(4096) {
                self.handle_ended()?;
            }
            self.handle_ended()?;
        }
        if let Some(out) = self.flow_out.as_mut() {
            out.flush()?;
        }
        self.writer.flush()
    }

    /// Flushes written alerts (and flow records) to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(out) = self.flow_out.as_mut() {
            out.flush()?;
        }
        self.writer.flush()
    }

    /// Writes a non-alert line (a stats record) into the alert stream.
    pub fn write_record(&mut self, line: &[u8]) -> io::Result<()> {
        self.writer.write_raw_line(line)
    }

    /// The alert format.
    pub fn format(&self) -> crate::alert::Format {
        self.writer.format()
    }

    /// Reopens the alert file (and the flow file) by path.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Some(out) = self.flow_out.as_mut() {
            out.reopen()?;
        }
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

    /// The compiled rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let ended = EndReason::ALL.map(|r| (r.as_str(), self.ended[r.index()]));
        let mut rules: Vec<(String, RuleCounts)> = self
            .rules
            .rules
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (r.id.clone(), c.clone()))
            .collect();
        if self.policy_rule.is_some() {
            rules.push((
                crate::rules::POLICY_RULE_ID.into(),
                self.counts[self.rules.rules.len()].clone(),
            ));
        }
        EngineStats {
            packets: self.packets,
            flows: self.flows.stats().clone(),
            ended,
            rules,
            policy: self
                .policy_rule
                .as_ref()
                .map(|_| self.policy_counts.clone()),
        }
    }

    /// The severity of `policy` alerts, if there is a policy.
    pub fn policy_severity(&self) -> Option<Severity> {
        self.policy_rule.as_ref().map(|r| r.severity)
    }
}

fn check_policy(
    rules: &RuleSet,
    zones: &Zones,
    counts: &mut PolicyCounts,
    flow: &Flow,
    matches: &mut Vec<(Match, Extra)>,
) {
    let Some(policy) = &rules.policy else {
        return;
    };
    let (ini, resp) = (flow.initiator(), flow.responder());
    let from = zones.of(ini.addr);
    let to = zones.of(resp.addr);
    if from == "any" && to == "any" {
        counts.unwatched += 1;
        return;
    }
    let dport = has_ports(flow.key.proto()).then_some(resp.port);
    if policy.allows(from, to, flow.key.proto(), dport) {
        counts.allowed += 1;
    } else {
        counts.denied += 1;
        matches.push((
            Match {
                rule: rules.rules.len(),
                src: ini.addr,
                dest: resp.addr,
                src_port: dport.map(|_| ini.port),
                dest_port: dport,
            },
            Extra::Zones,
        ));
    }
}

/// Adds an entry for each of the volume and duration rules `ids` that `flow` matches (with its
/// inside side) to the flow's block of `stride` entries, which it takes from the free list or
/// the end of `watches` the first time one is needed.
fn add_watch_entries(
    rules: &RuleSet,
    ids: &[usize],
    flow: &Flow,
    stride: usize,
    watches: &mut Vec<WatchEntry>,
    free_watches: &mut Vec<u32>,
    block: &mut Option<u32>,
) {
    let (ini, resp) = (flow.initiator(), flow.responder());
    let ports = has_ports(flow.key.proto());
    for &i in ids {
        let r = &rules.rules[i];
        let side = |a: crate::flow::Endpoint, b: crate::flow::Endpoint| {
            r.matches_tuple(flow.key.proto(), a.addr, b.addr, ports.then_some(b.port))
        };
        let inside_is_initiator = if side(ini, resp) {
            true
        } else if side(resp, ini) {
            false
        } else {
            continue;
        };
        let Ok(rule) = u32::try_from(i) else {
            continue;
        };
        let b = *block.get_or_insert_with(|| new_watch_block(stride, watches, free_watches));
        let slots = &mut watches[b as usize * stride..][..stride];
        // A block has a slot for every watch rule, so one is free.
        let slot = slots.iter_mut().find(|e| e.rule == u32::MAX);
        debug_assert!(slot.is_some(), "a full watch block");
        if let Some(slot) = slot {
            *slot = WatchEntry {
                rule,
                inside_is_initiator,
                fired: false,
            };
        }
    }
}

/// An empty block of `stride` watch entries: one a flow gave back, or a new one at the end.
fn new_watch_block(
    stride: usize,
    watches: &mut Vec<WatchEntry>,
    free_watches: &mut Vec<u32>,
) -> u32 {
    match free_watches.pop() {
        Some(b) => {
            watches[b as usize * stride..][..stride].fill(WatchEntry::NONE);
            b
        }
        None => {
            watches.resize(watches.len() + stride, WatchEntry::NONE);
            (watches.len() / stride - 1) as u32
        }
    }
}

fn check_watches(
    rules: &RuleSet,
    entries: &mut [WatchEntry],
    windows: &Mutex<SrcWindowMap>,
    matches: &mut Vec<(Match, Extra)>,
    p: &PacketSummary,
    flow: &Flow,
    dir: Direction,
) {
    for e in entries.iter_mut().filter(|e| e.rule != u32::MAX) {
        let rule = e.rule as usize;
        let Some(r) = rules.rules.get(rule) else {
            continue;
        };
        let inside_dir = if e.inside_is_initiator {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let (inside, peer) = if e.inside_is_initiator {
            (flow.initiator(), flow.responder())
        } else {
            (flow.responder(), flow.initiator())
        };
        let ports = has_ports(flow.key.proto());
        let m = Match {
            rule,
            src: inside.addr,
            dest: peer.addr,
            src_port: ports.then_some(inside.port),
            dest_port: ports.then_some(peer.port),
        };
        match (r.kind, r.volume, r.duration) {
            (RuleKind::LongFlow, _, Some(d)) if !e.fired && p.ts.since(flow.first_seen) > d => {
                e.fired = true;
                matches.push((m, Extra::None));
            }
            (RuleKind::EgressVolume, Some(v), _) if dir == inside_dir => match v.track {
                VolumeTrack::ByFlow => {
                    if !e.fired && flow.bytes[inside_dir as usize] > v.bytes {
                        e.fired = true;
                        matches.push((m, Extra::None));
                    }
                }
                VolumeTrack::BySrc { window } => {
                    let mut windows = windows.lock().unwrap_or_else(PoisonError::into_inner);
                    let w = windows.entry((rule, inside.addr)).or_default();
                    let now = p.ts;
                    while let Some(&(t, b)) = w.q.front() {
                        if now.since(t) < window {
                            break;
                        }
                        w.q.pop_front();
                        w.sum -= b;
                    }
                    if w.above && w.sum <= v.bytes {
                        w.above = false;
                    }
                    let bytes = u64::from(p.ip_len);
                    // Packets within a quantum of the newest share its entry, so memory
                    // stays bounded by window/quantum whatever the packet rate.
                    let quantum = Duration((window.0 / 10_000).max(1_000_000));
                    match w.q.back_mut() {
                        Some((t, b)) if now.since(*t) < quantum && now >= *t => *b += bytes,
                        _ => w.q.push_back((now, bytes)),
                    }
                    w.sum += bytes;
                    if !w.above && w.sum > v.bytes {
                        w.above = true;
                        matches.push((m, Extra::Window(w.sum, window)));
                    }
                }
            },
            _ => {}
        }
    }
}

/// What alert records refer to: the rules by their match index (the policy's pseudo-rule right
/// after the configured ones), the zone names, the capture interface.
fn alert_context(
    rules: &RuleSet,
    policy: Option<&Rule>,
    zones: &Zones,
    iface: Option<String>,
) -> Context {
    Context {
        rules: rules.rules.iter().chain(policy).cloned().collect(),
        zones: zones.names(),
        iface,
    }
}

fn counters_of(f: &Flow) -> FlowCounters {
    FlowCounters {
        pkts_toserver: f.pkts[0],
        pkts_toclient: f.pkts[1],
        bytes_toserver: f.bytes[0],
        bytes_toclient: f.bytes[1],
        start: f.first_seen,
    }
}

fn account_talk(t: &mut Talkers, inside: &NetSet, f: &Flow) {
    let is_inside = |ip: IpAddr| inside.contains(ip);
    let (ini, resp) = (f.initiator().addr, f.responder().addr);
    for (host, peer, sent) in [(ini, resp, f.bytes[0]), (resp, ini, f.bytes[1])] {
        if is_inside(host) && !is_inside(peer) {
            let e = t.entry(host).or_default().entry(peer).or_default();
            e.bytes += sent;
            e.flows += 1;
        }
    }
}

/// An EVE-style flow record: `timestamp` is the flow's start, as in EVE.
fn flow_record(w: &mut Vec<u8>, f: &Flow, reason: &str, iface: Option<&str>) -> io::Result<()> {
    use std::io::Write;
    let (ini, resp) = (f.initiator(), f.responder());
    let p = f.key.proto();
    write!(
        w,
        "{{\"timestamp\":\"{}\",\"event_type\":\"flow\"",
        f.first_seen
    )?;
    match proto::name(p) {
        Some(n) => write!(w, ",\"proto\":\"{n}\"")?,
        None => write!(w, ",\"proto\":{p}")?,
    }
    let ports = has_ports(p);
    w.extend_from_slice(b",\"src_ip\":\"");
    crate::alert::ip(w, ini.addr);
    w.push(b'"');
    if ports {
        write!(w, ",\"src_port\":{}", ini.port)?;
    }
    w.extend_from_slice(b",\"dest_ip\":\"");
    crate::alert::ip(w, resp.addr);
    w.push(b'"');
    if ports {
        write!(w, ",\"dest_port\":{}", resp.port)?;
    }
    if !f.key.vlans.is_empty() {
        w.extend_from_slice(b",\"vlan\":[");
        for (i, v) in f.key.vlans.as_slice().iter().enumerate() {
            if i > 0 {
                w.push(b',');
            }
            write!(w, "{v}")?;
        }
        w.push(b']');
    }
    let hash_ports =
        (ports || matches!(p, proto::ICMP | proto::ICMPV6)).then_some((ini.port, resp.port));
    write!(
        w,
        ",\"community_id\":\"{}\",\"flow\":{{",
        community_id_v1(0, ini.addr, resp.addr, p, hash_ports)
    )?;
    counters_of(f).write_members(w)?;
    let age = f.last_seen.since(f.first_seen).0.max(0) / crate::time::NANOS_PER_SEC;
    let state = match f.state {
        FlowState::New => "new",
        FlowState::Established => "established",
        FlowState::Closed => "closed",
    };
    write!(
        w,
        ",\"end\":\"{}\",\"age\":{age},\"state\":\"{state}\",\"reason\":\"{reason}\"}}",
        f.last_seen
    )?;
    if let Some(i) = iface {
        w.extend_from_slice(b",\"in_iface\":");
        serde_json::to_writer(&mut *w, i).map_err(io::Error::other)?;
    }
    w.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Format;
    use crate::decode::Vlans;
    use crate::rules::compile_files;

    use crate::alert::MemorySink;

    fn datagram(ms: i64, src: &str, dst: &str, ip_len: u32) -> PacketSummary {
        PacketSummary {
            ts: Timestamp(1_764_072_000_000_000_000 + ms * 1_000_000),
            linktype: 1,
            orig_len: ip_len + 14,
            ip_len,
            vlans: Vlans::NONE,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: proto::UDP,
            transport: Transport::Ports {
                src: 40_000,
                dst: 53,
            },
            ..PacketSummary::EMPTY
        }
    }

    /// Engines that share a limiter (live workers) keep their flows apart in by_flow limits,
    /// though flow ids count from 1 in each engine's table: host A's flow in the first engine
    /// and host B's in the second are both flow 1, and each writes its one alert.
    #[test]
    fn test_shared_limiter_keeps_each_engines_flows_apart() {
        let rules = compile_files(&[(
            "t.toml".into(),
            concat!(
                "[networks]\nai = [\"10.0.1.0/24\"]\n\n",
                "[[rule]]\nid = \"window\"\nkind = \"egress-volume\"\nsrc = \"ai\"\n",
                "bytes = 1000\ntrack = \"by_src\"\nwindow = \"1m\"\nseverity = \"low\"\n",
                "message = \"m\"\nlimit = { count = 1, per = \"1h\", track = \"by_flow\" }\n",
            )
            .into(),
        )])
        .unwrap();
        let engine = |buf: &MemorySink| {
            let out = Output::writer(Box::new(buf.clone()));
            Engine::new(rules.clone(), AlertWriter::new(Format::Text, out))
        };
        let (a_out, b_out) = (MemorySink::default(), MemorySink::default());
        let (mut a, mut b) = (engine(&a_out), engine(&b_out));
        b.share_with(&a, 1);
        a.process(&datagram(0, "10.0.1.5", "8.8.8.8", 1001), "t.pcap")
            .unwrap();
        b.process(&datagram(1, "10.0.1.6", "8.8.8.8", 1001), "t.pcap")
            .unwrap();
        a.finish().unwrap();
        b.finish().unwrap();
        let lines = |b: &MemorySink| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        assert_eq!(lines(&a_out).lines().count(), 1, "{}", lines(&a_out));
        assert!(lines(&a_out).contains("10.0.1.5"), "{}", lines(&a_out));
        assert_eq!(lines(&b_out).lines().count(), 1, "{}", lines(&b_out));
        assert!(lines(&b_out).contains("10.0.1.6"), "{}", lines(&b_out));
        let stats = b.stats();
        assert_eq!(stats.suppressed(), 0);
    }
}
