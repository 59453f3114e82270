//! Rules: TOML files in, typed [`RuleSet`] out, or a [`RuleError`] that names file, line and
//! column.
//!
//! The schema (`[networks]`, `[ports]`, `[flow]`, `[[rule]]`) is the contract documented in the
//! README; unknown keys are errors, so a typo never silently disables a rule. Several files are
//! one rule set: names of networks, ports and rules must be unique across them. Evaluation of
//! the compiled rules on packet summaries and flows lives in [`eval`]; rules never see bytes.

pub mod eval;
mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::flow::FlowConfig;
use crate::time::Duration;

pub use schema::compile_files;

/// The default rules, compiled into the binary.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");
/// The name the embedded rules are reported under.
pub const DEFAULT_RULES_NAME: &str = "<embedded rules/default.toml>";
/// The rule id of the `[policy]` section's alerts (so no `[[rule]]` may have it).
pub const POLICY_RULE_ID: &str = "policy";

/// A rule-file mistake, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RuleError {
    /// The file, as named on the command line.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
}

/// A problem reading rule files at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A directory given to `--rules` holds no `*.toml` file.
    #[error("{0}: no *.toml rule files in this directory")]
    EmptyDir(PathBuf),
    /// A mistake in a file.
    #[error(transparent)]
    Rule(#[from] RuleError),
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// What a rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// The first pure SYN (SYN set, ACK and RST clear) of a TCP flow.
    NewConnection,
    /// A new flow whose initiator is inside `src` and whose responder is outside `dest_not`.
    Egress,
    /// Bytes sent by a host in `src` to peers outside `dest_not` above a threshold (per flow,
    /// or per source host within a sliding window).
    EgressVolume,
    /// A flow between a host in `src` and a peer outside `dest_not` still talking after a
    /// duration.
    LongFlow,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::NewConnection => "new-connection",
            RuleKind::Egress => "egress",
            RuleKind::EgressVolume => "egress-volume",
            RuleKind::LongFlow => "long-flow",
        }
    }
}

/// Which IP protocols a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoFilter {
    Any,
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

impl ProtoFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtoFilter::Any => "any",
            ProtoFilter::Tcp => "tcp",
            ProtoFilter::Udp => "udp",
            ProtoFilter::Icmp => "icmp",
        }
    }

    /// Whether protocol number `p` passes.
    pub fn matches(self, p: u8) -> bool {
        use crate::decode::proto;
        match self {
            ProtoFilter::Any => true,
            ProtoFilter::Tcp => p == proto::TCP,
            ProtoFilter::Udp => p == proto::UDP,
            ProtoFilter::Icmp => p == proto::ICMP || p == proto::ICMPV6,
        }
    }
}

/// A set of networks (IPv4 and IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetSet {
    nets: Vec<IpNetwork>,
    /// The IPv4 networks as (network, mask) numbers, and the IPv6 ones: what `contains`
    /// compares (rules test a few sets per new flow; a flood is a million new flows).
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// The names and literals it was written as, for display.
    label: String,
}

impl NetSet {
    pub(crate) fn new(nets: Vec<IpNetwork>, label: String) -> NetSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in &nets {
            match n {
                IpNetwork::V4(n) => {
                    let mask = u32::from(n.mask());
                    v4.push((u32::from(n.network()) & mask, mask));
                }
                IpNetwork::V6(n) => {
                    let mask = u128::from(n.mask());
                    v6.push((u128::from(n.network()) & mask, mask));
                }
            }
        }
        NetSet {
            nets,
            v4,
            v6,
            label,
        }
    }

    /// Whether `ip` lies in any of the networks (an IPv4 address only in IPv4 ones, an IPv6
    /// address only in IPv6 ones, as `IpNetwork::contains` has it).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, mask)| a & mask == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }

    /// The networks.
    pub fn networks(&self) -> &[IpNetwork] {
        &self.nets
    }

    /// How the rule named it (e.g. `internal` or `10.0.0.0/8`).
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// A set of ports as sorted, merged inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
    label: String,
}

impl PortSet {
    fn from_ranges(mut ranges: Vec<(u16, u16)>, label: String) -> PortSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        PortSet {
            ranges: merged,
            label,
        }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        // Ranges are sorted and disjoint: find the last range starting at or before `port`.
        let i = self.ranges.partition_point(|&(a, _)| a <= port);
        i > 0 && self.ranges[i - 1].1 >= port
    }

    /// The merged ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    /// How the rule named it.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    BySrc,
    ByDst,
    ByRule,
    ByFlow,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Track::BySrc => "by_src",
            Track::ByDst => "by_dst",
            Track::ByRule => "by_rule",
            Track::ByFlow => "by_flow",
        }
    }
}

/// At most `count` alerts per `per` of packet time per tracking key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u64,
    pub per: Duration,
    pub track: Track,
}

/// How an `egress-volume` rule sums bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeTrack {
    /// Within one flow.
    ByFlow,
    /// Summed over the source host's matching flows within a sliding window.
    BySrc { window: Duration },
}

/// The threshold of an `egress-volume` rule: it fires when the sum goes above `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume {
    pub bytes: u64,
    pub track: VolumeTrack,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub message: String,
    pub proto: ProtoFilter,
    pub src: Option<NetSet>,
    pub dest: Option<NetSet>,
    pub src_not: Option<NetSet>,
    pub dest_not: Option<NetSet>,
    pub dest_port: Option<PortSet>,
    pub limit: Option<Limit>,
    /// `egress-volume` only.
    pub volume: Option<Volume>,
    /// `long-flow` only: how long a flow must have lived.
    pub duration: Option<Duration>,
    /// Where it was written: file and line.
    pub origin: String,
}

impl Rule {
    /// Whether a connection from `src` to `dst:dport` (no port for portless protocols) over
    /// protocol `proto` satisfies the rule's address, port and protocol conditions.
    pub fn matches_tuple(&self, proto: u8, src: IpAddr, dst: IpAddr, dport: Option<u16>) -> bool {
        self.matches_addrs(proto, src, dst) && self.matches_port(dport)
    }

    /// [`Rule::matches_tuple`] without the destination port: for candidates a port index
    /// found by that port ([`crate::rules::eval`]), whose ports are known to match.
    pub fn matches_addrs(&self, proto: u8, src: IpAddr, dst: IpAddr) -> bool {
        self.proto.matches(proto)
            && self.src.as_ref().is_none_or(|n| n.contains(src))
            && self.dest.as_ref().is_none_or(|n| n.contains(dst))
            && self.src_not.as_ref().is_none_or(|n| !n.contains(src))
            && self.dest_not.as_ref().is_none_or(|n| !n.contains(dst))
    }

    /// Whether destination port `dport` (`None`: a portless protocol) is one the rule takes.
    pub fn matches_port(&self, dport: Option<u16>) -> bool {
        match &self.dest_port {
            None => true,
            Some(ps) => dport.is_some_and(|p| ps.contains(p)),
        }
    }
}

/// A zone reference in a policy allow entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneRef {
    /// Any host, in a zone or not.
    Any,
    /// A watched network by name.
    Zone(String),
}

impl ZoneRef {
    pub fn as_str(&self) -> &str {
        match self {
            ZoneRef::Any => "any",
            ZoneRef::Zone(z) => z,
        }
    }

    /// Whether a host in `zone` ("any" for hosts in no zone) is covered.
    pub fn covers(&self, zone: &str) -> bool {
        match self {
            ZoneRef::Any => true,
            ZoneRef::Zone(z) => z == zone,
        }
    }
}

/// One `[[policy.allow]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub from: ZoneRef,
    pub to: ZoneRef,
    pub proto: ProtoFilter,
    /// Responder ports; `None` allows every port (and portless protocols).
    pub dest_port: Option<PortSet>,
    pub origin: String,
}

/// The default-deny policy: flows that start in or reach a watched zone must be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Watched network names.
    pub zones: Vec<String>,
    pub allow: Vec<AllowEntry>,
    /// Severity of `policy` alerts.
    pub severity: Severity,
}

impl Policy {
    /// Whether a flow from a host in `from` to one in `to` over `proto`, to `dport`, is allowed.
    pub fn allows(&self, from: &str, to: &str, proto: u8, dport: Option<u16>) -> bool {
        self.allow.iter().any(|a| {
            a.from.covers(from)
                && a.to.covers(to)
                && a.proto.matches(proto)
                && match &a.dest_port {
                    None => true,
                    Some(ps) => dport.is_some_and(|p| ps.contains(p)),
                }
        })
    }
}

/// Everything the rule files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub networks: BTreeMap<String, NetSet>,
    pub ports: BTreeMap<String, PortSet>,
    pub flow: FlowConfig,
    pub rules: Vec<Rule>,
    /// The `[policy]`, if any file has one.
    pub policy: Option<Policy>,
    /// The files it was compiled from, in order.
    pub sources: Vec<String>,
}

impl RuleSet {
    /// The embedded default rules.
    pub fn embedded() -> Result<RuleSet, RuleError> {
        compile_files(&[(DEFAULT_RULES_NAME.to_string(), DEFAULT_RULES.to_string())])
    }

    /// Loads `--rules` paths: files, or directories whose `*.toml` files are read in name
    /// order. No paths means the embedded defaults.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, LoadError> {
        if paths.is_empty() {
            return Ok(RuleSet::embedded()?);
        }
        let mut files = Vec::new();
        for path in paths {
            for file in expand(path)? {
                let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
                    path: file.clone(),
                    source,
                })?;
                files.push((file.display().to_string(), text));
            }
        }
        Ok(compile_files(&files)?)
    }
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(LoadError::EmptyDir(path.to_path_buf()));
    }
    out.sort();
    Ok(out)
}

/// `check-rules` output: what the files compile to, one fact a line.
impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# compiled from: {}", self.sources.join(", "))?;
        writeln!(f, "[networks]")?;
        for (name, set) in &self.networks {
            let nets: Vec<String> = set.nets.iter().map(|n| n.to_string()).collect();
            writeln!(f, "{name} = [{}]", nets.join(", "))?;
        }
        writeln!(f, "\n[ports]")?;
        for (name, set) in &self.ports {
            writeln!(f, "{name} = [{}]", fmt_ranges(&set.ranges))?;
        }
        let c = &self.flow;
        writeln!(f, "\n[flow]")?;
        writeln!(
            f,
            "tcp_new = {}  tcp_established = {}  tcp_closed = {}  udp = {}  icmp = {}  other = {}  max_flows = {}",
            c.tcp_new, c.tcp_established, c.tcp_closed, c.udp, c.icmp, c.other, c.max_flows
        )?;
        for r in &self.rules {
            writeln!(f, "\n[[rule]]  # {}", r.origin)?;
            writeln!(f, "id = {}", r.id)?;
            writeln!(f, "kind = {}", r.kind.as_str())?;
            writeln!(f, "severity = {}", r.severity.as_str())?;
            writeln!(f, "message = {:?}", r.message)?;
            if r.proto != ProtoFilter::Any {
                writeln!(f, "proto = {}", r.proto.as_str())?;
            }
            for (name, set) in [
                ("src", &r.src),
                ("dest", &r.dest),
                ("src_not", &r.src_not),
                ("dest_not", &r.dest_not),
            ] {
                if let Some(s) = set {
                    let nets: Vec<String> = s.nets.iter().map(|n| n.to_string()).collect();
                    writeln!(f, "{name} = {} -> [{}]", s.label, nets.join(", "))?;
                }
            }
            if let Some(p) = &r.dest_port {
                writeln!(f, "dest_port = {} -> [{}]", p.label, fmt_ranges(&p.ranges))?;
            }
            if let Some(l) = &r.limit {
                writeln!(
                    f,
                    "limit = at most {} per {} {}",
                    l.count,
                    l.per,
                    l.track.as_str()
                )?;
            }
            if let Some(v) = &r.volume {
                match v.track {
                    VolumeTrack::ByFlow => writeln!(f, "bytes = above {} per flow", v.bytes)?,
                    VolumeTrack::BySrc { window } => writeln!(
                        f,
                        "bytes = above {} per source host within {window}",
                        v.bytes
                    )?,
                }
            }
            if let Some(d) = &r.duration {
                writeln!(f, "duration = longer than {d}")?;
            }
        }
        if let Some(p) = &self.policy {
            writeln!(f, "\n[policy]")?;
            writeln!(f, "zones = [{}]", p.zones.join(", "))?;
            writeln!(f, "severity = {}", p.severity.as_str())?;
            for a in &p.allow {
                write!(
                    f,
                    "allow {} -> {} proto {}",
                    a.from.as_str(),
                    a.to.as_str(),
                    a.proto.as_str()
                )?;
                if let Some(ps) = &a.dest_port {
                    write!(f, " dest_port [{}]", fmt_ranges(&ps.ranges))?;
                }
                writeln!(f, "  # {}", a.origin)?;
            }
        }
        Ok(())
    }
}

fn fmt_ranges(r: &[(u16, u16)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
