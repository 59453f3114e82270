//! The TOML schema and its compilation into typed rules, with every mistake located.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::{
    AllowEntry, Limit, NetSet, Policy, PortSet, ProtoFilter, Rule, RuleError, RuleKind, RuleSet,
    Severity, Track, Volume, VolumeTrack, ZoneRef, POLICY_RULE_ID,
};
use crate::flow::FlowConfig;
use crate::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    networks: BTreeMap<Spanned<String>, Spanned<Value>>,
    #[serde(default)]
    ports: BTreeMap<Spanned<String>, Spanned<Value>>,
    #[serde(default)]
    flow: Option<RawFlow>,
    #[serde(default)]
    rule: Vec<RawRule>,
    policy: Option<Spanned<RawPolicy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    zones: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    allow: Vec<RawAllow>,
    severity: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    from: Spanned<String>,
    to: Spanned<String>,
    proto: Option<Spanned<String>>,
    dest_port: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    tcp_new: Option<Spanned<Value>>,
    tcp_established: Option<Spanned<Value>>,
    tcp_closed: Option<Spanned<Value>>,
    udp: Option<Spanned<Value>>,
    icmp: Option<Spanned<Value>>,
    other: Option<Spanned<Value>>,
    fragment: Option<Spanned<Value>>,
    max_flows: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    kind: Spanned<String>,
    severity: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
    proto: Option<Spanned<String>>,
    src: Option<Spanned<Value>>,
    dest: Option<Spanned<Value>>,
    src_not: Option<Spanned<Value>>,
    dest_not: Option<Spanned<Value>>,
    dest_port: Option<Spanned<Value>>,
    limit: Option<Spanned<RawLimit>>,
    bytes: Option<Spanned<Value>>,
    track: Option<Spanned<String>>,
    window: Option<Spanned<Value>>,
    duration: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    count: Spanned<Value>,
    per: Spanned<Value>,
    track: Option<Spanned<String>>,
}

/// One file being compiled: its name and text, to turn byte spans into line and column.
struct Src<'a> {
    name: &'a str,
    text: &'a str,
    /// Byte offset where each line starts: locating a span is a binary search, so a file of
    /// 10,000 rules compiles in linear time.
    line_starts: Vec<usize>,
}

impl<'a> Src<'a> {
    fn new(name: &'a str, text: &'a str) -> Src<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Src {
            name,
            text,
            line_starts,
        }
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> RuleError {
        let at = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= at);
        let line_start = self.line_starts[line - 1];
        let column = self
            .text
            .get(line_start..at)
            .map_or(0, |s| s.chars().count())
            + 1;
        RuleError {
            file: self.name.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        self.err(span.clone(), "").line
    }
}

/// Compiles rule files `(name, text)`, in order, into one rule set.
pub fn compile_files(files: &[(String, String)]) -> Result<RuleSet, RuleError> {
    let mut parsed = Vec::with_capacity(files.len());
    for (name, text) in files {
        let src = Src::new(name, text);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            src.err(span, e.message().trim_end().to_string())
        })?;
        parsed.push((src, raw));
    }

    // Names first (all files), so a rule may use a network defined in another file.
    let mut networks: BTreeMap<String, NetSet> = BTreeMap::new();
    let mut ports: BTreeMap<String, PortSet> = BTreeMap::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    for (src, raw) in &parsed {
        for (name, value) in &raw.networks {
            check_name(src, name, "network")?;
            let key = format!("network {}", name.get_ref());
            if let Some(prev) = defined.insert(key, where_(src, name.span())) {
                return Err(src.err(
                    name.span(),
                    format!("network `{}` is already defined at {prev}", name.get_ref()),
                ));
            }
            let nets = cidr_list(src, value)?;
            networks.insert(
                name.get_ref().clone(),
                NetSet::new(nets, name.get_ref().clone()),
            );
        }
        for (name, value) in &raw.ports {
            check_name(src, name, "port set")?;
            let key = format!("ports {}", name.get_ref());
            if let Some(prev) = defined.insert(key, where_(src, name.span())) {
                return Err(src.err(
                    name.span(),
                    format!("port set `{}` is already defined at {prev}", name.get_ref()),
                ));
            }
            let ranges = port_ranges(src, value, None)?;
            ports.insert(
                name.get_ref().clone(),
                PortSet::from_ranges(ranges, name.get_ref().clone()),
            );
        }
    }

    let mut flow = FlowConfig::default();
    let mut flow_set: HashMap<&'static str, String> = HashMap::new();
    let mut rules = Vec::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for (src, raw) in &parsed {
        if let Some(f) = &raw.flow {
            let durations: [(&'static str, &Option<Spanned<Value>>, &mut Duration); 7] = [
                ("tcp_new", &f.tcp_new, &mut flow.tcp_new),
                (
                    "tcp_established",
                    &f.tcp_established,
                    &mut flow.tcp_established,
                ),
                ("tcp_closed", &f.tcp_closed, &mut flow.tcp_closed),
                ("udp", &f.udp, &mut flow.udp),
                ("icmp", &f.icmp, &mut flow.icmp),
                ("other", &f.other, &mut flow.other),
                ("fragment", &f.fragment, &mut flow.fragment),
            ];
            for (key, value, slot) in durations {
                if let Some(v) = value {
                    once(src, &mut flow_set, key, v.span())?;
                    *slot = duration(src, v, true)?;
                }
            }
            if let Some(v) = &f.max_flows {
                once(src, &mut flow_set, "max_flows", v.span())?;
                flow.max_flows = match v.get_ref() {
                    Value::Integer(n) if (1..=100_000_000).contains(n) => *n as usize,
                    _ => {
                        return Err(src.err(
                            v.span(),
                            "max_flows must be a whole number from 1 to 100000000",
                        ))
                    }
                };
            }
        }
        for r in &raw.rule {
            let rule = compile_rule(src, r, &networks, &ports)?;
            if rule.id == POLICY_RULE_ID {
                return Err(src.err(
                    r.id.span(),
                    "rule id `policy` is reserved: the [policy] section's alerts carry it",
                ));
            }
            if let Some(prev) = ids.insert(rule.id.clone(), rule.origin.clone()) {
                return Err(src.err(
                    r.id.span(),
                    format!("duplicate rule id `{}` (first defined at {prev})", rule.id),
                ));
            }
            rules.push(rule);
        }
    }

    let mut policy: Option<(Policy, String)> = None;
    for (src, raw) in &parsed {
        if let Some(p) = &raw.policy {
            if let Some((_, prev)) = &policy {
                return Err(src.err(p.span(), format!("a [policy] is already defined at {prev}")));
            }
            let compiled = compile_policy(src, p.get_ref(), &networks, &ports)?;
            policy = Some((compiled, where_(src, p.span())));
        }
    }

    Ok(RuleSet {
        networks,
        ports,
        flow,
        rules,
        policy: policy.map(|(p, _)| p),
        sources: files.iter().map(|(n, _)| n.clone()).collect(),
    })
}

fn where_(src: &Src<'_>, span: Range<usize>) -> String {
    format!("{}:{}", src.name, src.line_of(&span))
}

fn once(
    src: &Src<'_>,
    seen: &mut HashMap<&'static str, String>,
    key: &'static str,
    span: Range<usize>,
) -> Result<(), RuleError> {
    if let Some(prev) = seen.insert(key, where_(src, span.clone())) {
        return Err(src.err(span, format!("flow.{key} is already set at {prev}")));
    }
    Ok(())
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn check_name(src: &Src<'_>, name: &Spanned<String>, what: &str) -> Result<(), RuleError> {
    if is_valid_name(name.get_ref()) {
        Ok(())
    } else {
        Err(src.err(
            name.span(),
            format!(
                "{what} name `{}` must be lowercase letters, digits, '-' or '_' (at most 64)",
                name.get_ref()
            ),
        ))
    }
}

fn compile_rule(
    src: &Src<'_>,
    r: &RawRule,
    networks: &BTreeMap<String, NetSet>,
    ports: &BTreeMap<String, PortSet>,
) -> Result<Rule, RuleError> {
    let id = r.id.get_ref();
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(src.err(
            r.id.span(),
            format!("rule id `{id}` must be lowercase letters, digits and '-' (at most 64)"),
        ));
    }
    let kind = match r.kind.get_ref().as_str() {
        "new-connection" => RuleKind::NewConnection,
        "egress" => RuleKind::Egress,
        "egress-volume" => RuleKind::EgressVolume,
        "long-flow" => RuleKind::LongFlow,
        other => {
            return Err(src.err(
                r.kind.span(),
                format!(
                    "unknown rule kind `{other}`; expected new-connection, egress, egress-volume or long-flow"
                ),
            ))
        }
    };
    let (volume, duration) = kind_params(src, r, kind)?;
    let severity = match &r.severity {
        None => Severity::Medium,
        Some(s) => Severity::parse(s.get_ref()).ok_or_else(|| {
            src.err(
                s.span(),
                format!(
                    "unknown severity `{}`; expected info, low, medium, high or critical",
                    s.get_ref()
                ),
            )
        })?,
    };
    let proto = match &r.proto {
        None => ProtoFilter::Any,
        Some(p) => match p.get_ref().as_str() {
            "any" => ProtoFilter::Any,
            "tcp" => ProtoFilter::Tcp,
            "udp" => ProtoFilter::Udp,
            "icmp" => ProtoFilter::Icmp,
            other => {
                return Err(src.err(
                    p.span(),
                    format!("unknown proto `{other}`; expected tcp, udp, icmp or any"),
                ))
            }
        },
    };
    if kind == RuleKind::NewConnection && !matches!(proto, ProtoFilter::Any | ProtoFilter::Tcp) {
        let span = r.proto.as_ref().map_or(0..0, |p| p.span());
        return Err(src.err(
            span,
            "a new-connection rule matches TCP SYNs only; proto must be `tcp` or absent",
        ));
    }
    let net = |v: &Option<Spanned<Value>>| -> Result<Option<NetSet>, RuleError> {
        v.as_ref().map(|v| net_ref(src, v, networks)).transpose()
    };
    let dest_port = match &r.dest_port {
        None => None,
        Some(v) => {
            let label = label_of(v.get_ref());
            Some(PortSet::from_ranges(
                port_ranges(src, v, Some(ports))?,
                label,
            ))
        }
    };
    let limit = match &r.limit {
        None => None,
        Some(l) => Some(compile_limit(src, l.get_ref())?),
    };
    let message = match &r.message {
        Some(m) => m.get_ref().clone(),
        None => match kind {
            RuleKind::NewConnection => "New connection".to_string(),
            RuleKind::Egress => "Connection leaving the allowed networks".to_string(),
            RuleKind::EgressVolume => "Outbound volume above threshold".to_string(),
            RuleKind::LongFlow => "Long-lived connection".to_string(),
        },
    };
    Ok(Rule {
        id: id.clone(),
        kind,
        severity,
        message,
        proto,
        src: net(&r.src)?,
        dest: net(&r.dest)?,
        src_not: net(&r.src_not)?,
        dest_not: net(&r.dest_not)?,
        dest_port,
        limit,
        volume,
        duration,
        origin: where_(src, r.id.span()),
    })
}

/// The kind-specific keys: `bytes`, `track`, `window` (egress-volume), `duration` (long-flow).
fn kind_params(
    src: &Src<'_>,
    r: &RawRule,
    kind: RuleKind,
) -> Result<(Option<Volume>, Option<Duration>), RuleError> {
    let misplaced = |v: Option<std::ops::Range<usize>>, key: &str, owner: &str| match v {
        Some(span) => Err(src.err(
            span,
            format!("`{key}` belongs to {owner} rules, not {}", kind.as_str()),
        )),
        None => Ok(()),
    };
    if kind != RuleKind::EgressVolume {
        misplaced(r.bytes.as_ref().map(|v| v.span()), "bytes", "egress-volume")?;
        misplaced(r.track.as_ref().map(|v| v.span()), "track", "egress-volume")?;
        misplaced(
            r.window.as_ref().map(|v| v.span()),
            "window",
            "egress-volume",
        )?;
    }
    if kind != RuleKind::LongFlow {
        misplaced(
            r.duration.as_ref().map(|v| v.span()),
            "duration",
            "long-flow",
        )?;
    }
    let id_span = r.id.span();
    match kind {
        RuleKind::EgressVolume => {
            let b = r.bytes.as_ref().ok_or_else(|| {
                src.err(
                    id_span.clone(),
                    "an egress-volume rule needs `bytes`, e.g. \"10MiB\"",
                )
            })?;
            let bytes = byte_size(src, b)?;
            let track = match r.track.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
                None | Some(("by_flow", _)) => {
                    if let Some(w) = &r.window {
                        return Err(src.err(w.span(), "`window` goes with track = \"by_src\""));
                    }
                    VolumeTrack::ByFlow
                }
                Some(("by_src", span)) => {
                    let w = r.window.as_ref().ok_or_else(|| {
                        src.err(span, "track = \"by_src\" needs a `window`, e.g. \"1h\"")
                    })?;
                    VolumeTrack::BySrc {
                        window: duration(src, w, false)?,
                    }
                }
                Some((other, span)) => {
                    return Err(src.err(
                        span,
                        format!("unknown track `{other}`; expected by_flow or by_src"),
                    ))
                }
            };
            Ok((Some(Volume { bytes, track }), None))
        }
        RuleKind::LongFlow => {
            let d = r.duration.as_ref().ok_or_else(|| {
                src.err(id_span, "a long-flow rule needs `duration`, e.g. \"30m\"")
            })?;
            Ok((None, Some(duration(src, d, false)?)))
        }
        _ => Ok((None, None)),
    }
}

/// `10MiB`, `1.5 GB`? No: a whole number and a unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB),
/// or a whole number of bytes.
fn byte_size(src: &Src<'_>, v: &Spanned<Value>) -> Result<u64, RuleError> {
    let parsed = match v.get_ref() {
        Value::Integer(n) if *n >= 0 => Some(*n as u64),
        Value::String(s) => {
            let t = s.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let scale: Option<u64> = match unit.trim() {
                "" | "B" => Some(1),
                "KB" => Some(1_000),
                "KiB" => Some(1 << 10),
                "MB" => Some(1_000_000),
                "MiB" => Some(1 << 20),
                "GB" => Some(1_000_000_000),
                "GiB" => Some(1 << 30),
                "TB" => Some(1_000_000_000_000),
                "TiB" => Some(1 << 40),
                _ => None,
            };
            match (num.parse::<u64>(), scale) {
                (Ok(n), Some(k)) => n.checked_mul(k),
                _ => None,
            }
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        src.err(
            v.span(),
            format!(
                "bad byte size {}; expected a whole number and a unit (B, KB, KiB, MB, MiB, GB, GiB), e.g. \"10MiB\"",
                v.get_ref()
            ),
        )
    })
}

fn compile_policy(
    src: &Src<'_>,
    p: &RawPolicy,
    networks: &BTreeMap<String, NetSet>,
    ports: &BTreeMap<String, PortSet>,
) -> Result<Policy, RuleError> {
    let mut zones = Vec::new();
    for z in p.zones.get_ref() {
        if !networks.contains_key(z.get_ref()) {
            return Err(src.err(
                z.span(),
                format!("policy zone `{}` is not a [networks] name", z.get_ref()),
            ));
        }
        if zones.contains(z.get_ref()) {
            return Err(src.err(z.span(), format!("zone `{}` is listed twice", z.get_ref())));
        }
        zones.push(z.get_ref().clone());
    }
    if zones.is_empty() {
        return Err(src.err(p.zones.span(), "a policy needs at least one zone"));
    }
    let zone_ref = |z: &Spanned<String>| -> Result<ZoneRef, RuleError> {
        match z.get_ref().as_str() {
            "any" => Ok(ZoneRef::Any),
            name if zones.iter().any(|w| w == name) => Ok(ZoneRef::Zone(name.to_string())),
            name => Err(src.err(
                z.span(),
                format!(
                    "`{name}` is not a policy zone (zones: {}) nor \"any\"",
                    zones.join(", ")
                ),
            )),
        }
    };
    let mut allow = Vec::new();
    for a in &p.allow {
        let proto = match a.proto.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
            None | Some(("any", _)) => ProtoFilter::Any,
            Some(("tcp", _)) => ProtoFilter::Tcp,
            Some(("udp", _)) => ProtoFilter::Udp,
            Some(("icmp", _)) => ProtoFilter::Icmp,
            Some((other, span)) => {
                return Err(src.err(
                    span,
                    format!("unknown proto `{other}`; expected tcp, udp, icmp or any"),
                ))
            }
        };
        let dest_port = match &a.dest_port {
            None => None,
            Some(v) => Some(PortSet::from_ranges(
                port_ranges(src, v, Some(ports))?,
                label_of(v.get_ref()),
            )),
        };
        allow.push(AllowEntry {
            from: zone_ref(&a.from)?,
            to: zone_ref(&a.to)?,
            proto,
            dest_port,
            origin: where_(src, a.from.span()),
        });
    }
    let severity = match &p.severity {
        None => Severity::High,
        Some(s) => Severity::parse(s.get_ref())
            .ok_or_else(|| src.err(s.span(), format!("unknown severity `{}`", s.get_ref())))?,
    };
    Ok(Policy {
        zones,
        allow,
        severity,
    })
}

fn compile_limit(src: &Src<'_>, l: &RawLimit) -> Result<Limit, RuleError> {
    let count = match l.count.get_ref() {
        Value::Integer(n) if *n >= 1 => *n as u64,
        _ => {
            return Err(src.err(
                l.count.span(),
                "limit.count must be a whole number of at least 1",
            ))
        }
    };
    let per = duration(src, &l.per, false)?;
    let track = match &l.track {
        None => Track::ByRule,
        Some(t) => match t.get_ref().as_str() {
            "by_src" => Track::BySrc,
            "by_dst" => Track::ByDst,
            "by_rule" => Track::ByRule,
            "by_flow" => Track::ByFlow,
            other => {
                return Err(src.err(
                    t.span(),
                    format!("unknown track `{other}`; expected by_src, by_dst, by_rule or by_flow"),
                ))
            }
        },
    };
    Ok(Limit { count, per, track })
}

/// A duration: a string like `30s`, `10m`, `1h`, or (where `int_secs`) a whole number of
/// seconds. Must be above zero.
fn duration(src: &Src<'_>, v: &Spanned<Value>, int_secs: bool) -> Result<Duration, RuleError> {
    let d = match v.get_ref() {
        Value::String(s) => Duration::parse(s),
        Value::Integer(n) if int_secs && *n >= 0 && *n <= 100 * 365 * 86_400 => {
            Some(Duration::from_secs(*n))
        }
        _ => None,
    };
    match d {
        Some(d) if d.0 > 0 => Ok(d),
        _ => Err(src.err(
            v.span(),
            format!(
                "bad duration {}; expected a whole number and a unit (ms, s, m, h, d), e.g. \"30s\"{}",
                v.get_ref(),
                if int_secs { " or \"10m\", or whole seconds" } else { "" }
            ),
        )),
    }
}

fn label_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `[networks]` values: a CIDR string or an address, or a list of them.
fn cidr_list(src: &Src<'_>, v: &Spanned<Value>) -> Result<Vec<IpNetwork>, RuleError> {
    let items: Vec<&Value> = match v.get_ref() {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err(src.err(v.span(), "a network needs at least one CIDR"));
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => parse_cidr(s).map_err(|m| src.err(v.span(), m)),
            other => Err(src.err(
                v.span(),
                format!("expected a CIDR string like \"10.0.0.0/8\", found {other}"),
            )),
        })
        .collect()
}

fn parse_cidr(s: &str) -> Result<IpNetwork, String> {
    let net: IpNetwork = s
        .trim()
        .parse()
        .map_err(|e| format!("bad CIDR \"{s}\": {e}"))?;
    // "10.0.1.5/24" is almost always a typo for the network; say so rather than guess.
    if net.network() != net.ip() {
        return Err(format!(
            "bad CIDR \"{s}\": host bits set (did you mean \"{}/{}\"?)",
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

/// A rule's `src`/`dest`/`src_not`/`dest_not`: a network name, a CIDR, or a list of either.
fn net_ref(
    src: &Src<'_>,
    v: &Spanned<Value>,
    networks: &BTreeMap<String, NetSet>,
) -> Result<NetSet, RuleError> {
    let items: Vec<&Value> = match v.get_ref() {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err(src.err(v.span(), "an empty network list matches nothing"));
    }
    let mut nets = Vec::new();
    let mut labels = Vec::new();
    for item in items {
        let Value::String(s) = item else {
            return Err(src.err(
                v.span(),
                format!("expected a network name or CIDR string, found {item}"),
            ));
        };
        if let Some(set) = networks.get(s) {
            nets.extend_from_slice(&set.nets);
        } else if s.contains('/') || s.parse::<std::net::IpAddr>().is_ok() {
            nets.push(parse_cidr(s).map_err(|m| src.err(v.span(), m))?);
        } else {
            let known: Vec<&str> = networks.keys().map(String::as_str).collect();
            return Err(src.err(
                v.span(),
                format!(
                    "unknown network `{s}` (defined: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        labels.push(s.clone());
    }
    Ok(NetSet::new(nets, labels.join(",")))
}

/// Ports: a number, `"a-b"`, a `[ports]` name (when `names` is given), or a list of those.
fn port_ranges(
    src: &Src<'_>,
    v: &Spanned<Value>,
    names: Option<&BTreeMap<String, PortSet>>,
) -> Result<Vec<(u16, u16)>, RuleError> {
    let items: Vec<&Value> = match v.get_ref() {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err(src.err(v.span(), "an empty port list matches nothing"));
    }
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Integer(n) => {
                let p = u16::try_from(*n)
                    .map_err(|_| src.err(v.span(), format!("port {n} is out of range 0-65535")))?;
                out.push((p, p));
            }
            Value::String(s) => {
                if let Some(set) = names.and_then(|m| m.get(s)) {
                    out.extend_from_slice(&set.ranges);
                } else if let Some(r) = parse_port_range(s) {
                    out.push(r.map_err(|m| src.err(v.span(), m))?);
                } else if names.is_some() {
                    let known: Vec<&str> = names
                        .into_iter()
                        .flat_map(|m| m.keys().map(String::as_str))
                        .collect();
                    return Err(src.err(
                        v.span(),
                        format!(
                            "unknown port set `{s}` (defined: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                } else {
                    return Err(src.err(
                        v.span(),
                        format!("bad port `{s}`; expected a number or a range \"a-b\""),
                    ));
                }
            }
            other => {
                return Err(src.err(
                    v.span(),
                    format!("expected a port, a range \"a-b\" or a port set name, found {other}"),
                ))
            }
        }
    }
    Ok(out)
}

/// `Some(Ok)` for a valid "a-b" or "a", `Some(Err)` for a malformed numeric one, `None` if the
/// string is not numeric at all (it may be a name).
fn parse_port_range(s: &str) -> Option<Result<(u16, u16), String>> {
    let t = s.trim();
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let parse = |x: &str| -> Result<u16, String> {
        x.trim().parse::<u16>().map_err(|_| {
            format!(
                "bad port range \"{s}\": `{}` is not a port 0-65535",
                x.trim()
            )
        })
    };
    Some(match t.split_once('-') {
        None => parse(t).map(|p| (p, p)),
        Some((a, b)) => match (parse(a), parse(b)) {
            (Ok(a), Ok(b)) if a <= b => Ok((a, b)),
            (Ok(a), Ok(b)) => Err(format!("bad port range \"{s}\": {a} is above {b}")),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
    })
}
