//! Flow tracking on packet time.
//!
//! Contract: [`FlowTable::track`] maps every non-fragment (or first-fragment) packet to exactly
//! one flow, creating it if needed, and later fragments to the flow of their first fragment (or
//! to none). Flows are keyed by VLAN ids, protocol and both endpoints, direction-normalised
//! ([`FlowKey`]); the initiator is the sender of the first packet seen, or the receiver of a
//! TCP SYN+ACK seen first. Flows idle longer than their class's timeout expire; a TCP flow that
//! saw RST or FIN from both sides is *closed* and a pure SYN on its tuple starts a new flow. The
//! table never holds more than `max_flows` flows: the longest-idle one is evicted first.
//!
//! Every operation is O(1): flows live in a slab, each timeout class keeps a linked list (of
//! compact nodes beside the slab) in last-activity order, so expiry pops list fronts and eviction compares six of them. Nothing
//! iterates a hash map, so the order of ended flows (and everything derived from it) is the same
//! on every run.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod index;
mod prefault;
use index::{prefetch, prefetch_lines, Index};
use prefault::Ahead;

use crate::decode::{proto, tcp_flags, PacketSummary, Transport, Vlans};
use crate::time::{Duration, Timestamp};

/// One side of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: IpAddr,
    /// Port, or for ICMP the Community ID port equivalent of type/code; 0 without ports.
    pub port: u16,
}

/// A direction-normalised flow key: `lo <= hi` (as [`Endpoint`]s order: address, then port).
///
/// Each address is kept as a number in two 8-byte words (an IPv4 address in the low word)
/// with its family beside it, so a key is built, compared and hashed a word at a time. Kept
/// as two [`IpAddr`]s (17-byte enums), building, comparing and hashing keys took a fifth of
/// the engine's time on small packets, much of it the CPU reloading bytes it had just stored
/// piecewise. [`FlowKey::lo`] and [`FlowKey::hi`] give the endpoints back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    lo_addr: [u64; 2],
    hi_addr: [u64; 2],
    /// `lo`'s port, `hi`'s port (16 bits each), the protocol (8), and the families (bit 40
    /// for `lo`, 41 for `hi`, set for IPv6; both sides of a packet have one family, but a key
    /// is total over any summary). One word, stored and read whole.
    meta: u64,
    pub vlans: Vlans,
}

/// An address as the key keeps it: its family (IPv6: true), then its number (high word,
/// low word), which orders exactly as `IpAddr` does.
#[inline(always)]
fn addr_key(a: &IpAddr) -> (bool, [u64; 2]) {
    match a {
        IpAddr::V4(v) => (false, [0, u64::from(u32::from(*v))]),
        IpAddr::V6(v) => {
            let n = u128::from(*v);
            (true, [(n >> 64) as u64, n as u64])
        }
    }
}

/// The address `addr_key` made.
fn addr_of(v6: bool, w: [u64; 2]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from((u128::from(w[0]) << 64) | u128::from(w[1])))
    } else {
        IpAddr::V4(Ipv4Addr::from(w[1] as u32))
    }
}

impl FlowKey {
    /// An all-zero key (0.0.0.0 port 0 on both sides, protocol 0, untagged).
    const ZERO: FlowKey = FlowKey {
        lo_addr: [0; 2],
        hi_addr: [0; 2],
        meta: 0,
        vlans: Vlans::NONE,
    };

    /// The key of a packet, and whether its sender is `lo`.
    pub fn of(p: &PacketSummary) -> (FlowKey, bool) {
        let mut key = FlowKey::ZERO;
        let from_lo = key.set(p);
        (key, from_lo)
    }

    /// Makes this the key of `p`, field by field where it lies, and returns whether `p`'s
    /// sender is `lo`. (Built elsewhere and copied, the key is read back in wide pieces
    /// just after being stored in narrow ones, which the CPU cannot forward: it waits for
    /// the stores to land, once per packet.)
    #[inline(always)]
    fn set(&mut self, p: &PacketSummary) -> bool {
        let (sp, dp) = match p.transport {
            Transport::Ports { src, dst } => (src, dst),
            Transport::Icmp { icmp_type, code } => {
                let (s, d, _) = crate::community_id::icmp_port_equivalents(
                    icmp_type,
                    code,
                    p.proto == proto::ICMPV6,
                );
                (s, d)
            }
            Transport::None => (0, 0),
        };
        let (s6, sa) = addr_key(&p.src);
        let (d6, da) = addr_key(&p.dst);
        let from_lo = (s6, sa, sp) <= (d6, da, dp);
        let ((l6, la, lp), (h6, ha, hp)) = if from_lo {
            ((s6, sa, sp), (d6, da, dp))
        } else {
            ((d6, da, dp), (s6, sa, sp))
        };
        self.lo_addr = la;
        self.hi_addr = ha;
        self.meta = u64::from(lp)
            | u64::from(hp) << 16
            | u64::from(p.proto) << 32
            | u64::from(l6) << 40
            | u64::from(h6) << 41;
        self.vlans = p.vlans;
        from_lo
    }

    /// The IP protocol number.
    pub fn proto(&self) -> u8 {
        (self.meta >> 32) as u8
    }

    /// The lower endpoint.
    pub fn lo(&self) -> Endpoint {
        Endpoint {
            addr: addr_of(self.meta & 1 << 40 != 0, self.lo_addr),
            port: self.meta as u16,
        }
    }

    /// The higher endpoint.
    pub fn hi(&self) -> Endpoint {
        Endpoint {
            addr: addr_of(self.meta & 1 << 41 != 0, self.hi_addr),
            port: (self.meta >> 16) as u16,
        }
    }

    /// Whether `a` is the lower endpoint's address.
    fn lo_is(&self, a: &IpAddr) -> bool {
        addr_key(a) == (self.meta & 1 << 40 != 0, self.lo_addr)
    }
}

impl std::hash::Hash for FlowKey {
    /// Six words: the four address words, ports, protocol and families, the VLANs.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.lo_addr[0]);
        h.write_u64(self.lo_addr[1]);
        h.write_u64(self.hi_addr[0]);
        h.write_u64(self.hi_addr[1]);
        h.write_u64(self.meta);
        h.write_u64(self.vlans.packed());
    }
}

/// Packet direction relative to the flow's initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the initiator (client) to the responder (server).
    ToServer = 0,
    /// From the responder back.
    ToClient = 1,
}

/// Where a flow stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Packets seen from one side only.
    New,
    /// Packets seen from both sides.
    Established,
    /// TCP: RST, or FIN from both sides. Stragglers still join it; a pure SYN starts anew.
    Closed,
}

/// Why a flow left the table (or closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Idle longer than its timeout.
    Timeout,
    /// Both sides sent FIN.
    Fin,
    /// A RST was seen.
    Rst,
    /// Pushed out of a full table.
    Evicted,
    /// Still alive at the end of input.
    Shutdown,
}

impl EndReason {
    /// Every reason, in [`EndReason::index`] order.
    pub const ALL: [EndReason; 5] = [
        EndReason::Timeout,
        EndReason::Fin,
        EndReason::Rst,
        EndReason::Evicted,
        EndReason::Shutdown,
    ];

    /// Position in counters kept by reason (its place in [`EndReason::ALL`]).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name, as in flow records.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Evicted => "evicted",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// A tracked flow.
#[derive(Clone, Debug)]
pub struct Flow {
    pub key: FlowKey,
    /// Sequence number of creation (1-based); unique for the life of the table.
    pub id: u64,
    /// Whether the initiator is `key.lo`.
    pub initiator_is_lo: bool,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Packets, indexed by [`Direction`].
    pub pkts: [u64; 2],
    /// IP-layer bytes, indexed by [`Direction`].
    pub bytes: [u64; 2],
    /// TCP flags seen, indexed by [`Direction`].
    pub tcp_flags: [u8; 2],
    pub state: FlowState,
    /// Why it closed (RST or FIN), once closed.
    pub close_reason: Option<EndReason>,
    /// A pure SYN was already seen (new-connection rules fire only on the first).
    pub syn_seen: bool,
    /// Free for the flow's owner (the engine keeps per-flow rule state there); `u32::MAX`
    /// when unused.
    pub ext: u32,
    // The timeout class whose list holds the flow (links live in `FlowTable::nodes`).
    class: u8,
}

impl Flow {
    /// The initiator's endpoint.
    pub fn initiator(&self) -> Endpoint {
        if self.initiator_is_lo {
            self.key.lo()
        } else {
            self.key.hi()
        }
    }

    /// The responder's endpoint.
    pub fn responder(&self) -> Endpoint {
        if self.initiator_is_lo {
            self.key.hi()
        } else {
            self.key.lo()
        }
    }
}

/// Idle timeouts and the size cap, from a rules file's `[flow]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    pub tcp_new: Duration,
    pub tcp_established: Duration,
    pub tcp_closed: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    pub other: Duration,
    /// How long a first fragment's identity is kept for its later fragments.
    pub fragment: Duration,
    pub max_flows: usize,
}

impl Default for FlowConfig {
    /// In the spirit of Suricata's defaults.
    fn default() -> Self {
        FlowConfig {
            tcp_new: Duration::from_secs(60),
            tcp_established: Duration::from_secs(600),
            tcp_closed: Duration::from_secs(60),
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(60),
            other: Duration::from_secs(60),
            fragment: Duration::from_secs(60),
            max_flows: 1_000_000,
        }
    }
}

/// The timeout classes; each keeps its flows in last-activity order.
const CLASS_TCP_NEW: u8 = 0;
const CLASS_TCP_EST: u8 = 1;
const CLASS_TCP_CLOSED: u8 = 2;
const CLASS_UDP: u8 = 3;
const CLASS_ICMP: u8 = 4;
const CLASS_OTHER: u8 = 5;
const CLASSES: usize = 6;
const NIL: u32 = u32::MAX;

/// Cap on remembered first fragments, so a fragment flood cannot grow memory.
const MAX_FRAGMENTS: usize = 65_536;

/// Counters of the table's life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
    /// Flows ended by a new SYN on a closed tuple.
    pub reused: u64,
    /// TCP flows that closed by FIN or RST.
    pub closed: u64,
    pub peak: u64,
    /// Later fragments whose first fragment was not seen (or whose flow is gone).
    pub orphan_fragments: u64,
}

impl FlowStats {
    /// Adds another table's counters. `peak` becomes the sum of the two peaks: an upper
    /// bound of the flows alive at once in both tables, which need not peak together.
    pub fn merge(&mut self, o: &FlowStats) {
        let FlowStats {
            created,
            expired,
            evicted,
            reused,
            closed,
            peak,
            orphan_fragments,
        } = o;
        self.created += created;
        self.expired += expired;
        self.evicted += evicted;
        self.reused += reused;
        self.closed += closed;
        self.peak += peak;
        self.orphan_fragments += orphan_fragments;
    }
}

/// What [`FlowTable::track`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// Slot of the flow, for [`FlowTable::get`].
    pub slot: u32,
    pub direction: Direction,
    /// This packet created the flow.
    pub created: bool,
    /// This packet is the flow's first pure SYN.
    pub first_syn: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    vlans: Vlans,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

impl FragKey {
    /// The identity shared by the fragments of `p`'s datagram.
    fn of(p: &PacketSummary, id: u32) -> FragKey {
        FragKey {
            vlans: p.vlans,
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            id,
        }
    }
}

/// The flow table.
pub struct FlowTable {
    cfg: FlowConfig,
    timeouts: [Duration; CLASSES],
    /// Slot numbers, hashed by their flow's key (the key lives in the slab only: 8 bytes per
    /// entry instead of 64, and a hit touches the flow it is about to update anyway).
    map: Index,
    hasher: foldhash::fast::RandomState,
    /// Flows in the slab.
    live: usize,
    /// Flows in the slab closed by FIN or RST (the others end as `shutdown` at the end).
    closed_live: usize,
    slab: Vec<Option<Flow>>,
    free: Vec<u32>,
    heads: [u32; CLASSES],
    tails: [u32; CLASSES],
    /// Monotonic packet clock: the latest timestamp seen.
    now: Timestamp,
    /// No listed flow can time out at or before this time: at most the earliest time any
    /// list's head may expire. Lowered whenever a flow is appended to a list, worked out
    /// again whenever the clock passes it (lists are in activity order, as activity times
    /// come from the monotonic clock, so a new head never expires before the old one).
    expiry_floor: Timestamp,
    /// Per slot: list links and activity time (monotonic, unlike packet timestamps). Kept
    /// apart from the flows so relinking touches 16-byte nodes, not three flows.
    nodes: Vec<Node>,
    /// How far `slab`'s and `nodes`' memory is faulted in ahead of new flows.
    slab_ahead: Ahead,
    nodes_ahead: Ahead,
    next_id: u64,
    frags: HashMap<FragKey, (FlowKey, Timestamp), foldhash::fast::RandomState>,
    frag_order: VecDeque<(Timestamp, FragKey)>,
    ended: Vec<(Flow, EndReason)>,
    stats: FlowStats,
}

impl FlowTable {
    pub fn new(cfg: FlowConfig) -> FlowTable {
        FlowTable {
            timeouts: [
                cfg.tcp_new,
                cfg.tcp_established,
                cfg.tcp_closed,
                cfg.udp,
                cfg.icmp,
                cfg.other,
            ],
            cfg,
            map: Index::default(),
            hasher: foldhash::fast::RandomState::default(),
            live: 0,
            closed_live: 0,
            slab: Vec::new(),
            free: Vec::new(),
            heads: [NIL; CLASSES],
            tails: [NIL; CLASSES],
            now: Timestamp(i64::MIN),
            expiry_floor: Timestamp(i64::MIN),
            nodes: Vec::new(),
            slab_ahead: Ahead::default(),
            nodes_ahead: Ahead::default(),
            next_id: 0,
            frags: HashMap::default(),
            frag_order: VecDeque::new(),
            ended: Vec::new(),
            stats: FlowStats::default(),
        }
    }

    /// Flows alive now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no flow is alive.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters so far.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// The packet clock (latest packet time seen).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The flow in `slot` (valid until the next mutating call).
    pub fn get(&self, slot: u32) -> Option<&Flow> {
        self.slab.get(slot as usize).and_then(Option::as_ref)
    }

    /// Sets the owner's per-flow value ([`Flow::ext`]).
    pub fn set_ext(&mut self, slot: u32, ext: u32) {
        if let Some(f) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) {
            f.ext = ext;
        }
    }

    /// Every flow alive, in a deterministic order (per timeout class, least recently active
    /// first).
    pub fn alive(&self) -> impl Iterator<Item = &Flow> + '_ {
        (0..CLASSES).flat_map(move |c| {
            let mut cur = self.heads[c];
            std::iter::from_fn(move || {
                let f = self.slab.get(cur as usize)?.as_ref()?;
                cur = self.nodes[cur as usize].next;
                Some(f)
            })
        })
    }

    /// Flows that ended since the last call, in the order they ended.
    pub fn drain_ended(&mut self) -> std::vec::Drain<'_, (Flow, EndReason)> {
        self.ended.drain(..)
    }

    /// Advances the packet clock to `ts` (never backwards) and expires idle flows. (Inlined,
    /// with the work in `expire_flows` and `forget_fragments`: on most packets nothing is due.)
    #[inline]
    pub fn advance(&mut self, ts: Timestamp) {
        if ts > self.now {
            self.now = ts;
        }
        if self.now > self.expiry_floor {
            self.expire_flows();
        }
        if !self.frag_order.is_empty() {
            self.forget_fragments();
        }
    }

    /// Ends the flows idle longer than their timeout, and works the floor out again.
    #[inline(never)]
    fn expire_flows(&mut self) {
        let mut floor = Timestamp(i64::MAX);
        for class in 0..CLASSES {
            loop {
                let head = self.heads[class];
                if head == NIL {
                    break;
                }
                let activity = self.nodes[head as usize].activity;
                if self.now.since(activity) <= self.timeouts[class] {
                    floor = floor.min(expiry(activity, self.timeouts[class]));
                    break;
                }
                self.remove(head, EndReason::Timeout);
                self.stats.expired += 1;
            }
        }
        self.expiry_floor = floor;
    }

    /// Forgets first fragments older than the fragment timeout, or beyond the cap.
    #[inline(never)]
    fn forget_fragments(&mut self) {
        while let Some(&(t, fk)) = self.frag_order.front() {
            if self.now.since(t) <= self.cfg.fragment && self.frag_order.len() <= MAX_FRAGMENTS {
                break;
            }
            self.frag_order.pop_front();
            if self.frags.get(&fk).is_some_and(|&(_, ft)| ft == t) {
                self.frags.remove(&fk);
            }
        }
    }

    /// Look-ahead for a packet a few packets before it is tracked, first step: its key and
    /// the key's hash, written into `ahead` (which stays unkeyed for a later fragment, whose
    /// key comes from its first fragment), after asking the CPU to load the index bucket the
    /// lookup will start at. Pass `ahead` on to [`FlowTable::lookahead_flow`] and to
    /// [`FlowTable::track_hashed`]. Look-ahead changes nothing in the table: it only warms
    /// the cache.
    #[inline(always)]
    pub fn lookahead(&self, p: &PacketSummary, ahead: &mut Lookahead) {
        ahead.keyed = p.fragment.is_none_or(|f| f.offset == 0);
        if ahead.keyed {
            ahead.from_lo = ahead.key.set(p);
            ahead.hash = self.hash(&ahead.key);
            self.map.prefetch(ahead.hash);
        }
    }

    /// Look-ahead, second step (once the bucket is likely loaded): the slot the lookup will
    /// most likely find, after asking the CPU to load its flow and list node. A guess: the
    /// flow may be gone or another by the time the packet is tracked.
    pub fn lookahead_flow(&self, ahead: &Lookahead) -> Option<u32> {
        if !ahead.keyed {
            return None;
        }
        let slot = self.map.hint(ahead.hash)?;
        let f = self.slab.get(slot as usize)?;
        prefetch_lines(f);
        prefetch(self.nodes.get(slot as usize)?);
        Some(slot)
    }

    /// Look-ahead, third step: the list nodes beside the slot's, which moving the flow to the
    /// back of its list writes.
    pub fn lookahead_links(&self, slot: Option<u32>) {
        let Some(n) = slot.and_then(|s| self.nodes.get(s as usize)) else {
            return;
        };
        for s in [n.prev, n.next] {
            if let Some(m) = self.nodes.get(s as usize) {
                prefetch(m);
            }
        }
    }

    /// Accounts a packet to its flow (call [`FlowTable::advance`] first). Returns `None` for a
    /// later fragment whose first fragment is unknown.
    pub fn track(&mut self, p: &PacketSummary) -> Option<Tracked> {
        self.track_hashed(p, None)
    }

    /// [`FlowTable::track`] with the key and hash from [`FlowTable::lookahead`] (`None`:
    /// worked out here).
    pub fn track_hashed(
        &mut self,
        p: &PacketSummary,
        ahead: Option<&Lookahead>,
    ) -> Option<Tracked> {
        let later_fragment = p.fragment.filter(|f| f.offset != 0);
        let own;
        let (key, from_lo, hash) = match (later_fragment, ahead) {
            (Some(f), _) => match self.frags.get(&FragKey::of(p, f.id)) {
                Some(&(k, _)) => {
                    own = k;
                    (&own, own.lo_is(&p.src), self.hash(&own))
                }
                None => {
                    self.stats.orphan_fragments += 1;
                    return None;
                }
            },
            (None, Some(a)) if a.keyed => (&a.key, a.from_lo, a.hash),
            (None, _) => {
                let from_lo;
                (own, from_lo) = FlowKey::of(p);
                (&own, from_lo, self.hash(&own))
            }
        };
        debug_assert!(later_fragment.is_some() || (*key, from_lo) == FlowKey::of(p));
        if let Some(f) = p.fragment.filter(|f| f.offset == 0) {
            let fk = FragKey::of(p, f.id);
            self.frags.insert(fk, (*key, self.now));
            self.frag_order.push_back((self.now, fk));
        }
        let pure_syn = p.proto == proto::TCP
            && later_fragment.is_none()
            && tcp_flags::is_pure_syn(p.tcp_flags);

        let mut created = false;
        // Below the cap, one hash probe finds the flow or the place for a new one.
        let below_cap = self.live < self.cfg.max_flows.max(1);
        debug_assert_eq!(hash, self.hash(key));
        let found = if below_cap && later_fragment.is_none() {
            let slab = &self.slab;
            // The slot `new_flow` will use if the key is not in: the top of the free list, or
            // the next one.
            let next = self.free.last().copied().unwrap_or(slab.len() as u32);
            let found = self
                .map
                .find_or_insert(hash, |slot| key_of(slab, slot) == Some(key), next);
            created = found.is_none();
            found
        } else {
            self.find(hash, key)
        };
        let slot = match found {
            None if created => {
                let slot = self.new_flow(*key, from_lo, p);
                debug_assert_eq!(self.find(hash, key), Some(slot));
                self.stats.peak = self.stats.peak.max(self.live as u64);
                slot
            }
            Some(slot) if pure_syn && self.is_closed(slot) => {
                self.remove(slot, EndReason::Shutdown);
                self.stats.reused += 1;
                created = true;
                self.insert(hash, *key, from_lo, p)
            }
            Some(slot) => slot,
            None if later_fragment.is_some() => {
                self.stats.orphan_fragments += 1;
                return None;
            }
            None => {
                created = true;
                self.insert(hash, *key, from_lo, p)
            }
        };
        let now = self.now;
        let flow = self.slab[slot as usize].as_mut()?;
        let direction = if from_lo == flow.initiator_is_lo {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let d = direction as usize;
        flow.pkts[d] += 1;
        flow.bytes[d] += u64::from(p.ip_len);
        if p.ts > flow.last_seen {
            flow.last_seen = p.ts;
        }
        let first_syn = pure_syn && !flow.syn_seen;
        if pure_syn {
            flow.syn_seen = true;
        }
        if p.proto == proto::TCP && later_fragment.is_none() {
            flow.tcp_flags[d] |= p.tcp_flags;
            if flow.state != FlowState::Closed {
                if p.tcp_flags & tcp_flags::RST != 0 {
                    flow.state = FlowState::Closed;
                    flow.close_reason = Some(EndReason::Rst);
                } else if flow.tcp_flags[0] & tcp_flags::FIN != 0
                    && flow.tcp_flags[1] & tcp_flags::FIN != 0
                {
                    flow.state = FlowState::Closed;
                    flow.close_reason = Some(EndReason::Fin);
                }
                if flow.state == FlowState::Closed {
                    self.stats.closed += 1;
                    self.closed_live += 1;
                }
            }
        }
        if flow.state == FlowState::New && flow.pkts[0] > 0 && flow.pkts[1] > 0 {
            flow.state = FlowState::Established;
        }
        let class = class_of(flow);
        self.touch(slot, class, now);
        Some(Tracked {
            slot,
            direction,
            created,
            first_syn,
        })
    }

    /// Ends every flow still alive (end of input), oldest activity first per class.
    pub fn shutdown(&mut self) {
        while self.shutdown_some(usize::MAX) {}
    }

    /// Ends at most `max` of the flows still alive (in [`FlowTable::shutdown`]'s order), so a
    /// caller can drain the ended flows in bounded batches; returns whether any remain.
    pub fn shutdown_some(&mut self, max: usize) -> bool {
        // No lookup follows the end of input: dropping the index at once spares a random
        // probe per flow (a million of them after a flood).
        self.map.clear();
        let mut n = 0;
        for class in 0..CLASSES {
            while self.heads[class] != NIL {
                if n == max {
                    return true;
                }
                self.remove(self.heads[class], EndReason::Shutdown);
                n += 1;
            }
        }
        false
    }

    /// Ends every flow still alive, as [`FlowTable::shutdown`] does, but only counts them by
    /// end reason (by [`EndReason::index`]) instead of handing each one out:
    /// for a caller that keeps no per-flow record. One pass over the slab, no list walk.
    /// Flows already ended and not yet taken stay for [`FlowTable::take_ended`].
    pub fn shutdown_counted(&mut self) -> [u64; EndReason::ALL.len()] {
        let mut counts = [0u64; EndReason::ALL.len()];
        if self.closed_live == 0 {
            // None closed: all end as `shutdown`, without reading every flow back in (after
            // the 1M-SYN flood, 120 MB read for about 2% of the run's CPU samples).
            debug_assert!(self.slab.iter().flatten().all(|f| f.close_reason.is_none()));
            counts[EndReason::Shutdown.index()] = self.live as u64;
        } else {
            for flow in self.slab.iter().flatten() {
                let reason = flow.close_reason.unwrap_or(EndReason::Shutdown);
                counts[reason.index()] += 1;
            }
        }
        self.map.clear();
        self.slab.clear();
        self.nodes.clear();
        self.free.clear();
        self.heads = [NIL; CLASSES];
        self.tails = [NIL; CLASSES];
        self.live = 0;
        self.closed_live = 0;
        counts
    }

    /// Whether flows ended since the last [`FlowTable::take_ended`].
    pub fn has_ended(&self) -> bool {
        !self.ended.is_empty()
    }

    /// Moves the flows that ended since the last call into `out` (cleared first), in the
    /// order they ended; no allocation once `out` has grown.
    pub fn take_ended(&mut self, out: &mut Vec<(Flow, EndReason)>) {
        out.clear();
        std::mem::swap(&mut self.ended, out);
    }

    fn is_closed(&self, slot: u32) -> bool {
        self.get(slot).is_some_and(|f| f.state == FlowState::Closed)
    }

    /// The slot of the flow with `key` (whose hash is `hash`).
    fn find(&self, hash: u32, key: &FlowKey) -> Option<u32> {
        let slab = &self.slab;
        self.map.find(hash, |slot| key_of(slab, slot) == Some(key))
    }

    /// The 32 bits of a key's hash the index keeps.
    fn hash(&self, key: &FlowKey) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    fn insert(&mut self, hash: u32, key: FlowKey, from_lo: bool, p: &PacketSummary) -> u32 {
        if self.live >= self.cfg.max_flows.max(1) {
            self.evict_longest_idle();
        }
        let slot = self.new_flow(key, from_lo, p);
        self.map.insert(hash, slot);
        self.stats.peak = self.stats.peak.max(self.live as u64);
        slot
    }

    /// Puts a new flow in the slab (not in the map).
    fn new_flow(&mut self, key: FlowKey, from_lo: bool, p: &PacketSummary) -> u32 {
        // A SYN+ACK seen first: its receiver opened the connection.
        let synack = p.proto == proto::TCP
            && p.fragment.is_none_or(|f| f.offset == 0)
            && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST)
                == tcp_flags::SYN | tcp_flags::ACK;
        self.next_id += 1;
        self.live += 1;
        self.stats.created += 1;
        let flow = Flow {
            key,
            id: self.next_id,
            initiator_is_lo: from_lo != synack,
            first_seen: p.ts,
            last_seen: p.ts,
            pkts: [0; 2],
            bytes: [0; 2],
            tcp_flags: [0; 2],
            state: FlowState::New,
            close_reason: None,
            syn_seen: false,
            ext: NIL,
            class: NIL as u8,
        };
        match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(flow);
                s
            }
            None => {
                self.slab.push(Some(flow));
                self.nodes.push(Node {
                    activity: self.now,
                    prev: NIL,
                    next: NIL,
                });
                self.slab_ahead.after_push(&self.slab);
                self.nodes_ahead.after_push(&self.nodes);
                (self.slab.len() - 1) as u32
            }
        }
    }

    fn evict_longest_idle(&mut self) {
        let victim = (0..CLASSES)
            .filter_map(|c| {
                let h = self.heads[c];
                (h != NIL).then(|| (self.nodes[h as usize].activity, h))
            })
            .min();
        if let Some((_, slot)) = victim {
            self.remove(slot, EndReason::Evicted);
            self.stats.evicted += 1;
        }
    }

    fn remove(&mut self, slot: u32, reason: EndReason) {
        self.unlink(slot);
        if let Some(flow) = self.slab.get_mut(slot as usize).and_then(Option::take) {
            self.live -= 1;
            if flow.close_reason.is_some() {
                self.closed_live -= 1;
            }
            if !self.map.is_empty() {
                let hash = self.hash(&flow.key);
                self.map.remove(hash, slot);
            }
            self.free.push(slot);
            let reason = match (reason, flow.close_reason) {
                // A closed flow that leaves later ended by its FIN or RST.
                (EndReason::Timeout | EndReason::Shutdown, Some(r)) => r,
                (r, _) => r,
            };
            self.ended.push((flow, reason));
        }
    }

    /// Moves `slot` to the back of `class`'s list with activity time `now`.
    fn touch(&mut self, slot: u32, class: u8, now: Timestamp) {
        let Some(f) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let old = f.class;
        f.class = class;
        if old == class && self.tails[class as usize] == slot {
            // Already last (a burst of one flow): only the time moves.
            self.nodes[slot as usize].activity = now;
            return;
        }
        self.unlink_from(slot, old);
        let expires = expiry(now, self.timeouts[class as usize]);
        self.expiry_floor = self.expiry_floor.min(expires);
        let tail = self.tails[class as usize];
        self.nodes[slot as usize] = Node {
            activity: now,
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.heads[class as usize] = slot;
        } else {
            self.nodes[tail as usize].next = slot;
        }
        self.tails[class as usize] = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let Some(f) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let class = f.class;
        f.class = NIL as u8;
        self.unlink_from(slot, class);
    }

    /// Takes `slot` out of `class`'s list (nothing when `class` is none).
    fn unlink_from(&mut self, slot: u32, class: u8) {
        if class as usize >= CLASSES {
            return; // not linked yet
        }
        let Node { prev, next, .. } = self.nodes[slot as usize];
        if prev == NIL {
            self.heads[class as usize] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[class as usize] = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        let n = &mut self.nodes[slot as usize];
        n.prev = NIL;
        n.next = NIL;
    }
}

/// What [`FlowTable::lookahead`] worked out for a packet (its key, direction and hash),
/// for the later look-ahead steps and for [`FlowTable::track_hashed`]: built and hashed once.
#[derive(Clone, Copy, Debug)]
pub struct Lookahead {
    key: FlowKey,
    hash: u32,
    from_lo: bool,
    /// False for a later fragment (its key is its first fragment's).
    keyed: bool,
}

impl Lookahead {
    /// A slot for [`FlowTable::lookahead`] to fill.
    pub const EMPTY: Lookahead = Lookahead {
        key: FlowKey::ZERO,
        hash: 0,
        from_lo: false,
        keyed: false,
    };
}

/// List links and activity time of one slot.
#[derive(Clone, Copy, Debug)]
struct Node {
    activity: Timestamp,
    prev: u32,
    next: u32,
}

/// The last time at which a flow last active at `activity` has not yet been idle longer than
/// `timeout` (saturating, so that `now > expiry(..)` exactly when `now.since(activity) >
/// timeout` for `now >= activity`).
fn expiry(activity: Timestamp, timeout: Duration) -> Timestamp {
    Timestamp(activity.0.saturating_add(timeout.0))
}

/// The key of the flow in `slot`, if any.
fn key_of(slab: &[Option<Flow>], slot: u32) -> Option<&FlowKey> {
    slab.get(slot as usize)?.as_ref().map(|f| &f.key)
}

fn class_of(f: &Flow) -> u8 {
    match (f.key.proto(), f.state) {
        (proto::TCP, FlowState::New) => CLASS_TCP_NEW,
        (proto::TCP, FlowState::Established) => CLASS_TCP_EST,
        (proto::TCP, FlowState::Closed) => CLASS_TCP_CLOSED,
        (proto::UDP, _) => CLASS_UDP,
        (proto::ICMP | proto::ICMPV6, _) => CLASS_ICMP,
        _ => CLASS_OTHER,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod size {
    /// The memory budget (400 MiB for a million flows) rests on these sizes.
    #[test]
    fn test_flow_entry_fits_its_budget() {
        assert!(std::mem::size_of::<super::FlowKey>() <= 56);
        assert!(std::mem::size_of::<Option<super::Flow>>() <= 128);
    }
}
