//! Renders the rules' `[policy]` as default-deny host firewall rules for the hosts of one zone
//! (nftables or iptables-restore input).
//!
//! The result is the reference AI host's firewall generalised to the policy: policy DROP on
//! input, forward and output; loopback and established/related accepted both ways; an OUTPUT
//! accept for every allow entry whose `from` covers the zone (towards the `to` zone's
//! addresses), an INPUT accept for every allow entry whose `to` covers the zone (from the
//! `from` zone's addresses); drops logged at 5 per minute with the prefixes
//! `IPT_INPUT_DROP: ` and `IPT_OUTPUT_DROP: `.
//!
//! Semantics, chosen to agree with the monitor's reading of the policy:
//! - A zone's addresses are the hosts it holds under "most specific watched network wins":
//!   its networks minus the strictly more specific networks of other policy zones (an exactly
//!   equal network belongs to the zone listed first in `zones`). With nested zones
//!   (`internal` 10.0.0.0/8 and `admin` 10.0.0.0/24) `internal` renders as the CIDRs of
//!   10.0.0.0/8 without 10.0.0.0/24. `any` renders as no address match.
//! - `proto = "any"` with `dest_port` renders one rule for TCP and one for UDP (iptables cannot
//!   match ports without a protocol); without `dest_port` it renders no protocol match.
//! - `proto = "icmp"` is ICMP for IPv4 and ICMPv6 for IPv6; with `dest_port` it matches no
//!   packet (ICMP has no ports), so nothing is rendered and a comment says so.
//! - ICMPv6 neighbour discovery and MLD, without which an IPv6 host cannot resolve its
//!   neighbours, are always accepted, restricted to link-local packets (hop limit 255 for
//!   neighbour discovery, 1 for MLD). ICMP errors about allowed connections are RELATED.
//!
//! Formats: [`FirewallFormat::Nftables`] is one `inet` table covering IPv4 and IPv6.
//! [`FirewallFormat::Iptables`] is iptables-restore input for IPv4 only and
//! [`FirewallFormat::Ip6tables`] the ip6tables-restore input for IPv6; each names in a header
//! comment the networks of the other family it left out. Output is deterministic: it depends
//! only on the rule set, the zone and the format.

use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::rules::{AllowEntry, Policy, ProtoFilter, RuleSet, ZoneRef};

/// Output dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallFormat {
    /// `nft -f` input: one `inet` table, IPv4 and IPv6.
    Nftables,
    /// `iptables-restore` input: the IPv4 half.
    Iptables,
    /// `ip6tables-restore` input: the IPv6 half.
    Ip6tables,
}

/// Why the policy cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("the rules have no [policy] to render")]
    NoPolicy,
    #[error("`{0}` is not a policy zone")]
    UnknownZone(String),
}

/// The nftables table the rules live in.
const NFT_TABLE: &str = "exfilwatch";
/// Log prefixes of the reference rules.
const INPUT_PREFIX: &str = "IPT_INPUT_DROP: ";
const OUTPUT_PREFIX: &str = "IPT_OUTPUT_DROP: ";
/// Port slots one `-m multiport` match takes (a range counts twice).
const MULTIPORT_SLOTS: usize = 15;

/// The firewall for the hosts of `zone`.
pub fn render(
    rules: &RuleSet,
    zone: &str,
    format: FirewallFormat,
) -> Result<String, FirewallError> {
    let policy = rules.policy.as_ref().ok_or(FirewallError::NoPolicy)?;
    if !policy.zones.iter().any(|z| z == zone) {
        return Err(FirewallError::UnknownZone(zone.to_string()));
    }
    let plan = Plan::new(rules, policy, zone);
    Ok(match format {
        FirewallFormat::Nftables => plan.nftables(),
        FirewallFormat::Iptables => plan.iptables(Family::V4),
        FirewallFormat::Ip6tables => plan.iptables(Family::V6),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A CIDR block; `addr` holds an IPv4 address in its low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    family: Family,
    addr: u128,
    len: u32,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::V4 => write!(f, "{}/{}", Ipv4Addr::from(self.addr as u32), self.len),
            Family::V6 => write!(f, "{}/{}", Ipv6Addr::from(self.addr), self.len),
        }
    }
}

/// `2^k - 1`, for `k` up to 128.
fn span(k: u32) -> u128 {
    if k >= 128 {
        u128::MAX
    } else {
        (1u128 << k) - 1
    }
}

/// A network as an inclusive address interval, with its family and prefix length.
fn interval(net: &IpNetwork) -> (Family, u128, u128, u32) {
    let (family, addr, len) = match net {
        IpNetwork::V4(n) => (
            Family::V4,
            u128::from(u32::from(n.ip())),
            u32::from(n.prefix()),
        ),
        IpNetwork::V6(n) => (Family::V6, u128::from(n.ip()), u32::from(n.prefix())),
    };
    let host = span(family.bits() - len);
    (family, addr & !host, (addr & !host) | host, len)
}

/// Sorts and merges inclusive intervals (adjacent ones too).
fn merge(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if last.1 == u128::MAX || a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `set` minus `cut`, both sorted and disjoint.
fn subtract(set: &[(u128, u128)], cut: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    for &(mut a, b) in set {
        let mut alive = true;
        for &(c, d) in cut {
            if d < a || c > b {
                continue;
            }
            if c > a {
                out.push((a, c - 1));
            }
            if d >= b {
                alive = false;
                break;
            }
            a = d + 1;
        }
        if alive {
            out.push((a, b));
        }
    }
    out
}

/// The fewest CIDR blocks covering exactly `[lo, hi]`.
fn cidrs(family: Family, mut lo: u128, hi: u128) -> Vec<Cidr> {
    let bits = family.bits();
    let mut out = Vec::new();
    loop {
        let mut k = lo.trailing_zeros().min(bits);
        while span(k) > hi - lo {
            k -= 1;
        }
        out.push(Cidr {
            family,
            addr: lo,
            len: bits - k,
        });
        let end = lo + span(k);
        if end >= hi {
            return out;
        }
        lo = end + 1;
    }
}

/// The addresses whose hosts belong to `zone`: its networks minus the more specific networks
/// of the other policy zones (an equal network goes to the zone listed first).
fn zone_addresses(rules: &RuleSet, policy: &Policy, zone: &str) -> (Vec<Cidr>, Vec<Cidr>) {
    let rank = |z: &str| policy.zones.iter().position(|w| w == z);
    let Some(own_rank) = rank(zone) else {
        return (Vec::new(), Vec::new());
    };
    let Some(own) = rules.networks.get(zone) else {
        return (Vec::new(), Vec::new());
    };
    let mut result = (Vec::new(), Vec::new());
    for family in [Family::V4, Family::V6] {
        let mut kept = Vec::new();
        for net in own.networks() {
            let (fam, lo, hi, len) = interval(net);
            if fam != family {
                continue;
            }
            let mut cut = Vec::new();
            for (i, other) in policy.zones.iter().enumerate() {
                if i == own_rank {
                    continue;
                }
                let Some(set) = rules.networks.get(other) else {
                    continue;
                };
                for m in set.networks() {
                    let (mfam, mlo, mhi, mlen) = interval(m);
                    let wins = mlen > len || (mlen == len && i < own_rank);
                    if mfam == family && wins && mlo <= hi && mhi >= lo {
                        cut.push((mlo, mhi));
                    }
                }
            }
            kept.extend(subtract(&[(lo, hi)], &merge(cut)));
        }
        let blocks: Vec<Cidr> = merge(kept)
            .into_iter()
            .flat_map(|(lo, hi)| cidrs(family, lo, hi))
            .collect();
        match family {
            Family::V4 => result.0 = blocks,
            Family::V6 => result.1 = blocks,
        }
    }
    result
}

/// Makes text safe inside a one-line comment (no line breaks or other control characters).
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

/// The transport match of one accept rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    /// No protocol match.
    All,
    Tcp,
    Udp,
    /// ICMP or ICMPv6, by the address family.
    Icmp,
}

/// One accept rule, format-neutral.
#[derive(Debug, Clone)]
struct Accept {
    /// The peer's addresses (source on input, destination on output); `None`: any address of
    /// either family.
    peers: Option<(Family, Vec<Cidr>)>,
    l4: L4,
    /// Destination ports; empty: every port.
    ports: Vec<(u16, u16)>,
}

/// The rules rendered for one allow entry in one direction.
#[derive(Debug, Clone)]
struct Rendered {
    /// Describes the entry and where it was written.
    comment: String,
    /// Why nothing (or less) was rendered, if so.
    notes: Vec<String>,
    accepts: Vec<Accept>,
}

/// What the firewall says, before it is spelt in a dialect.
struct Plan {
    zone: String,
    sources: Vec<String>,
    own: (Vec<Cidr>, Vec<Cidr>),
    input: Vec<Rendered>,
    output: Vec<Rendered>,
}

fn describe(a: &AllowEntry) -> String {
    let mut s = format!(
        "allow {} -> {} proto {}",
        a.from.as_str(),
        a.to.as_str(),
        a.proto.as_str()
    );
    if let Some(ps) = &a.dest_port {
        s.push_str(" dest_port ");
        s.push_str(&port_list(ps.ranges(), "-", ","));
    }
    format!("{} ({})", comment_safe(&s), comment_safe(&a.origin))
}

/// `22`, `5432,6379`, `1000-2000`, with the given range and list separators.
fn port_list(ranges: &[(u16, u16)], range_sep: &str, list_sep: &str) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}{range_sep}{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(list_sep)
}

fn cidr_list(c: &[Cidr]) -> String {
    c.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", ")
}

impl Plan {
    fn new(rules: &RuleSet, policy: &Policy, zone: &str) -> Plan {
        let mut input = Vec::new();
        let mut output = Vec::new();
        for a in &policy.allow {
            if a.from.covers(zone) {
                output.push(Self::entry(rules, policy, a, Dir::Out));
            }
            if a.to.covers(zone) {
                input.push(Self::entry(rules, policy, a, Dir::In));
            }
        }
        Plan {
            zone: zone.to_string(),
            sources: rules.sources.iter().map(|s| comment_safe(s)).collect(),
            own: zone_addresses(rules, policy, zone),
            input,
            output,
        }
    }

    fn entry(rules: &RuleSet, policy: &Policy, a: &AllowEntry, dir: Dir) -> Rendered {
        let peer = match dir {
            Dir::Out => &a.to,
            Dir::In => &a.from,
        };
        let ports: Vec<(u16, u16)> = a
            .dest_port
            .as_ref()
            .map(|p| p.ranges().to_vec())
            .unwrap_or_default();
        let mut notes = Vec::new();
        let l4s: &[L4] = match (a.proto, ports.is_empty()) {
            (ProtoFilter::Tcp, _) => &[L4::Tcp],
            (ProtoFilter::Udp, _) => &[L4::Udp],
            (ProtoFilter::Any, true) => &[L4::All],
            (ProtoFilter::Any, false) => &[L4::Tcp, L4::Udp],
            (ProtoFilter::Icmp, true) => &[L4::Icmp],
            (ProtoFilter::Icmp, false) => {
                notes.push("ICMP has no ports: this entry matches no packet".to_string());
                &[]
            }
        };
        let peers: Vec<Option<(Family, Vec<Cidr>)>> = match peer {
            ZoneRef::Any => vec![None],
            ZoneRef::Zone(z) => {
                let (v4, v6) = zone_addresses(rules, policy, z);
                if v4.is_empty() && v6.is_empty() {
                    notes.push(format!(
                        "zone {} holds no address of its own (more specific zones hold all of it)",
                        comment_safe(z)
                    ));
                }
                [(Family::V4, v4), (Family::V6, v6)]
                    .into_iter()
                    .filter(|(_, c)| !c.is_empty())
                    .map(Some)
                    .collect()
            }
        };
        let mut accepts = Vec::new();
        for p in &peers {
            for &l4 in l4s {
                accepts.push(Accept {
                    peers: p.clone(),
                    l4,
                    ports: if l4 == L4::All || l4 == L4::Icmp {
                        Vec::new()
                    } else {
                        ports.clone()
                    },
                });
            }
        }
        Rendered {
            comment: describe(a),
            notes,
            accepts,
        }
    }

    fn header(&self, out: &mut String, what: &str) {
        let sources = if self.sources.is_empty() {
            "(no files)".to_string()
        } else {
            self.sources.join(", ")
        };
        let mut own: Vec<Cidr> = self.own.0.clone();
        own.extend(self.own.1.iter().copied());
        let _ = writeln!(out, "# {what}");
        let _ = writeln!(
            out,
            "# Generated by `exfilwatch firewall` from the [policy] of: {sources}"
        );
        let _ = writeln!(
            out,
            "# For the hosts of zone `{}` ({}): default deny; loopback and",
            comment_safe(&self.zone),
            if own.is_empty() {
                "no addresses of its own".to_string()
            } else {
                cidr_list(&own)
            }
        );
        let _ = writeln!(
            out,
            "# established/related accepted; outbound to and inbound from what the allow entries"
        );
        let _ = writeln!(
            out,
            "# name; drops logged at 5/minute as \"{INPUT_PREFIX}\" and \"{OUTPUT_PREFIX}\"."
        );
        let _ = writeln!(
            out,
            "# Zone addresses: most specific watched network wins; `any` matches every address."
        );
    }

    fn nftables(&self) -> String {
        let mut out = String::from("#!/usr/sbin/nft -f\n");
        self.header(
            &mut out,
            "nftables ruleset (IPv4 and IPv6), load with `nft -f FILE`.",
        );
        let _ = writeln!(
            out,
            "# It replaces only its own table `inet {NFT_TABLE}` (declare, delete, define), not"
        );
        let _ = writeln!(
            out,
            "# the rest of the ruleset; a packet this table drops stays dropped whatever other tables say."
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "table inet {NFT_TABLE}");
        let _ = writeln!(out, "delete table inet {NFT_TABLE}");
        let _ = writeln!(out, "table inet {NFT_TABLE} {{");
        for (chain, dir) in [
            ("input", Some(Dir::In)),
            ("forward", None),
            ("output", Some(Dir::Out)),
        ] {
            let _ = writeln!(out, "\tchain {chain} {{");
            let _ = writeln!(
                out,
                "\t\ttype filter hook {chain} priority filter; policy drop;"
            );
            let Some(dir) = dir else {
                let _ = writeln!(out, "\t\t# nothing is forwarded");
                let _ = writeln!(out, "\t}}");
                continue;
            };
            let (lo, entries, prefix) = match dir {
                Dir::In => ("iif", &self.input, INPUT_PREFIX),
                Dir::Out => ("oif", &self.output, OUTPUT_PREFIX),
            };
            let _ = writeln!(out, "\t\t{lo} \"lo\" accept");
            let _ = writeln!(out, "\t\tct state established,related accept");
            let _ = writeln!(
                out,
                "\t\t# IPv6 neighbour discovery (hop limit 255) and MLD (hop limit 1), always: an"
            );
            let _ = writeln!(
                out,
                "\t\t# IPv6 host needs them to reach its neighbours; both stay on the local link."
            );
            let _ = writeln!(
                out,
                "\t\ticmpv6 type {{ nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 accept"
            );
            let _ = writeln!(
                out,
                "\t\ticmpv6 type {{ mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }} ip6 hoplimit 1 accept"
            );
            for e in entries {
                let _ = writeln!(out, "\t\t# {}", e.comment);
                for n in &e.notes {
                    let _ = writeln!(out, "\t\t#   {n}");
                }
                for a in &e.accepts {
                    let _ = writeln!(out, "\t\t{}", nft_rule(a, dir));
                }
            }
            let _ = writeln!(out, "\t\tlimit rate 5/minute log prefix \"{prefix}\"");
            let _ = writeln!(out, "\t}}");
        }
        let _ = writeln!(out, "}}");
        out
    }

    fn iptables(&self, family: Family) -> String {
        let (tool, other) = match family {
            Family::V4 => ("iptables-restore", Family::V6),
            Family::V6 => ("ip6tables-restore", Family::V4),
        };
        let mut out = String::new();
        self.header(
            &mut out,
            &format!(
                "{tool} input: the {} half of the policy, load with `{tool} FILE`.",
                family.name()
            ),
        );
        let _ = writeln!(
            out,
            "# {tool} replaces the whole filter table (the flush of the reference rules)."
        );
        let _ = writeln!(
            out,
            "# {} is not filtered by this document: load the {} rendering as well",
            other.name(),
            match other {
                Family::V4 => "iptables (`--format iptables`)",
                Family::V6 => "ip6tables (`--format ip6tables`)",
            }
        );
        let _ = writeln!(out, "# or use the nftables rendering, which covers both.");
        let mut left_out = Vec::new();
        for (chain, entries) in [("INPUT", &self.input), ("OUTPUT", &self.output)] {
            for e in entries {
                let mut nets: Vec<Cidr> = Vec::new();
                for a in &e.accepts {
                    if let Some((f, c)) = &a.peers {
                        if *f == other && nets.is_empty() {
                            nets.extend(c.iter().copied());
                        }
                    }
                }
                if !nets.is_empty() {
                    left_out.push(format!("{chain} {}: {}", e.comment, cidr_list(&nets)));
                }
            }
        }
        if !left_out.is_empty() {
            let _ = writeln!(
                out,
                "# {} networks of allow entries left out of this document:",
                other.name()
            );
            for l in &left_out {
                let _ = writeln!(out, "#   {l}");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "*filter");
        let _ = writeln!(out, ":INPUT DROP [0:0]");
        let _ = writeln!(out, ":FORWARD DROP [0:0]");
        let _ = writeln!(out, ":OUTPUT DROP [0:0]");
        for dir in [Dir::In, Dir::Out] {
            let (chain, lo, entries, prefix) = match dir {
                Dir::In => ("INPUT", "-i", &self.input, INPUT_PREFIX),
                Dir::Out => ("OUTPUT", "-o", &self.output, OUTPUT_PREFIX),
            };
            let _ = writeln!(out, "-A {chain} {lo} lo -j ACCEPT");
            let _ = writeln!(
                out,
                "-A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
            );
            if family == Family::V6 {
                let _ = writeln!(
                    out,
                    "# IPv6 neighbour discovery (hop limit 255) and MLD (hop limit 1), always: an"
                );
                let _ = writeln!(
                    out,
                    "# IPv6 host needs them to reach its neighbours; both stay on the local link."
                );
                for t in [
                    "router-solicitation",
                    "router-advertisement",
                    "neighbour-solicitation",
                    "neighbour-advertisement",
                ] {
                    let _ = writeln!(
                        out,
                        "-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -m hl --hl-eq 255 -j ACCEPT"
                    );
                }
                // MLD query, v1 report, done, v2 report.
                for t in [130, 131, 132, 143] {
                    let _ = writeln!(
                        out,
                        "-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -m hl --hl-eq 1 -j ACCEPT"
                    );
                }
            }
            for e in entries {
                let _ = writeln!(out, "# {}", e.comment);
                for n in &e.notes {
                    let _ = writeln!(out, "#   {n}");
                }
                let lines: Vec<String> = e
                    .accepts
                    .iter()
                    .flat_map(|a| ipt_rules(a, dir, family))
                    .collect();
                if lines.is_empty() && !e.accepts.is_empty() {
                    let _ = writeln!(
                        out,
                        "#   no {} addresses: nothing to accept in this document",
                        family.name()
                    );
                }
                for line in lines {
                    let _ = writeln!(out, "{line}");
                }
            }
            let _ = writeln!(
                out,
                "-A {chain} -m limit --limit 5/min -j LOG --log-prefix \"{prefix}\""
            );
        }
        let _ = writeln!(out, "COMMIT");
        out
    }
}

fn nft_set<T: AsRef<str>>(items: &[T]) -> String {
    match items {
        [one] => one.as_ref().to_string(),
        _ => format!(
            "{{ {} }}",
            items
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn nft_rule(a: &Accept, dir: Dir) -> String {
    let mut parts: Vec<String> = Vec::new();
    let side = match dir {
        Dir::In => "saddr",
        Dir::Out => "daddr",
    };
    let family = a.peers.as_ref().map(|(f, _)| *f);
    if let Some((f, nets)) = &a.peers {
        let fam = match f {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        };
        let nets: Vec<String> = nets.iter().map(Cidr::to_string).collect();
        parts.push(format!("{fam} {side} {}", nft_set(&nets)));
    }
    let ports: Vec<String> = a
        .ports
        .iter()
        .map(|&(x, y)| {
            if x == y {
                x.to_string()
            } else {
                format!("{x}-{y}")
            }
        })
        .collect();
    match a.l4 {
        L4::All => {}
        L4::Tcp | L4::Udp => {
            let p = if a.l4 == L4::Tcp { "tcp" } else { "udp" };
            if ports.is_empty() {
                parts.push(format!("meta l4proto {p}"));
            } else {
                parts.push(format!("{p} dport {}", nft_set(&ports)));
            }
        }
        L4::Icmp => parts.push(
            match family {
                Some(Family::V4) => "meta l4proto icmp",
                Some(Family::V6) => "meta l4proto ipv6-icmp",
                None => "meta l4proto { icmp, ipv6-icmp }",
            }
            .to_string(),
        ),
    }
    parts.push("accept".to_string());
    parts.join(" ")
}

/// The iptables rules for one accept in `family` (none if its addresses are of the other).
fn ipt_rules(a: &Accept, dir: Dir, family: Family) -> Vec<String> {
    let (chain, side) = match dir {
        Dir::In => ("INPUT", "-s"),
        Dir::Out => ("OUTPUT", "-d"),
    };
    let addrs: Vec<String> = match &a.peers {
        None => vec![String::new()],
        Some((f, _)) if *f != family => return Vec::new(),
        Some((_, nets)) => nets.iter().map(|c| format!(" {side} {c}")).collect(),
    };
    let protos: Vec<String> = match a.l4 {
        L4::All => vec![String::new()],
        L4::Icmp => vec![match family {
            Family::V4 => " -p icmp".to_string(),
            Family::V6 => " -p ipv6-icmp".to_string(),
        }],
        L4::Tcp | L4::Udp => {
            let p = if a.l4 == L4::Tcp { "tcp" } else { "udp" };
            match a.ports.as_slice() {
                [] => vec![format!(" -p {p}")],
                [(x, y)] => vec![format!(
                    " -p {p} -m {p} --dport {}",
                    port_list(&[(*x, *y)], ":", ",")
                )],
                many => {
                    let mut chunks: Vec<Vec<(u16, u16)>> = vec![Vec::new()];
                    let mut used = 0;
                    for &r in many {
                        let cost = if r.0 == r.1 { 1 } else { 2 };
                        if used + cost > MULTIPORT_SLOTS {
                            chunks.push(Vec::new());
                            used = 0;
                        }
                        used += cost;
                        if let Some(last) = chunks.last_mut() {
                            last.push(r);
                        }
                    }
                    chunks
                        .iter()
                        .map(|c| {
                            format!(" -p {p} -m multiport --dports {}", port_list(c, ":", ","))
                        })
                        .collect()
                }
            }
        }
    };
    let mut out = Vec::new();
    for addr in &addrs {
        for proto in &protos {
            out.push(format!("-A {chain}{addr}{proto} -j ACCEPT"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> (u128, u128) {
        let n: IpNetwork = s.parse().unwrap();
        let (_, lo, hi, _) = interval(&n);
        (lo, hi)
    }

    fn show(family: Family, set: &[(u128, u128)]) -> String {
        let c: Vec<Cidr> = set
            .iter()
            .flat_map(|&(lo, hi)| cidrs(family, lo, hi))
            .collect();
        cidr_list(&c)
    }

    #[test]
    fn subtracting_a_nested_network_leaves_its_complement_as_cidrs() {
        let left = subtract(&[v4("10.0.0.0/8")], &[v4("10.0.0.0/24")]);
        assert_eq!(
            show(Family::V4, &left),
            "10.0.1.0/24, 10.0.2.0/23, 10.0.4.0/22, 10.0.8.0/21, 10.0.16.0/20, 10.0.32.0/19, \
             10.0.64.0/18, 10.0.128.0/17, 10.1.0.0/16, 10.2.0.0/15, 10.4.0.0/14, 10.8.0.0/13, \
             10.16.0.0/12, 10.32.0.0/11, 10.64.0.0/10, 10.128.0.0/9"
        );
        let left = subtract(&[v4("10.0.0.0/8")], &[v4("10.0.0.0/24"), v4("10.0.1.0/24")]);
        assert!(show(Family::V4, &left).starts_with("10.0.2.0/23, "));
        assert!(subtract(&[v4("10.0.0.0/24")], &[v4("10.0.0.0/8")]).is_empty());
    }

    #[test]
    fn whole_address_spaces_do_not_overflow() {
        assert_eq!(show(Family::V4, &[v4("0.0.0.0/0")]), "0.0.0.0/0");
        let n: IpNetwork = "::/0".parse().unwrap();
        let (_, lo, hi, _) = interval(&n);
        assert_eq!(show(Family::V6, &[(lo, hi)]), "::/0");
        assert_eq!(merge(vec![(lo, hi), (5, 6)]), vec![(lo, hi)]);
        let n: IpNetwork = "fd00::1/64".parse().unwrap();
        let (_, lo, hi, _) = interval(&n);
        assert_eq!(show(Family::V6, &[(lo, hi)]), "fd00::/64");
    }

    #[test]
    fn merge_joins_adjacent_blocks() {
        let m = merge(vec![v4("10.0.0.128/25"), v4("10.0.0.0/25")]);
        assert_eq!(show(Family::V4, &m), "10.0.0.0/24");
    }

    #[test]
    fn multiport_chunks_hold_at_most_fifteen_slots() {
        let ports: Vec<(u16, u16)> = (1..=20).map(|p| (p * 10, p * 10)).collect();
        let a = Accept {
            peers: None,
            l4: L4::Tcp,
            ports,
        };
        let rules = ipt_rules(&a, Dir::Out, Family::V4);
        assert_eq!(rules.len(), 2);
        assert!(rules[0]
            .ends_with("--dports 10,20,30,40,50,60,70,80,90,100,110,120,130,140,150 -j ACCEPT"));
        assert!(rules[1].ends_with("--dports 160,170,180,190,200 -j ACCEPT"));
    }

    #[test]
    fn comments_cannot_break_out_of_their_line() {
        assert_eq!(comment_safe("a\nb\r\tc"), "a?b??c");
    }
}
