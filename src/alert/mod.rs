//! Alerts: what a rule match becomes, how it is written, and how rate limits hold it back.
//!
//! Contract: an [`AlertWriter`] writes each alert as one whole line (JSON with EVE field names,
//! or text), built in memory first so a line is never split by a partial write of ours. Strings
//! that come from rules or file names are escaped by serde_json, whatever bytes they hold.
//! [`Limiter`] applies `limit` on packet time and keeps the suppressed counts.

mod limit;
mod output;

use std::io::{self, Write};
use std::net::IpAddr;

pub use limit::{Limiter, Verdict};
pub use output::Output;

use crate::decode::{proto, Vlans};
use crate::rules::Rule;
use crate::time::{Duration, Timestamp};

/// Output format of alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object a line, EVE field names.
    #[default]
    Json,
    /// One human-readable line an alert.
    Text,
}

/// One alert, ready to write.
#[derive(Debug, Clone)]
pub struct Alert<'a> {
    pub ts: Timestamp,
    pub rule: &'a Rule,
    pub proto: u8,
    pub src: IpAddr,
    pub src_port: Option<u16>,
    pub dest: IpAddr,
    pub dest_port: Option<u16>,
    /// ICMP type and code of the packet, for ICMP and ICMPv6.
    pub icmp: Option<(u8, u8)>,
    pub vlans: Vlans,
    pub community_id: String,
    /// Alerts of the same limit key held back since the last one written.
    pub suppressed: u64,
    /// The input file (offline) and the packet's number in it.
    pub pcap_filename: &'a str,
    pub pcap_cnt: u64,
    /// The capture interface (live); replaces `pcap_filename` and `pcap_cnt`.
    pub in_iface: Option<&'a str>,
    /// The flow's counters at this packet (EVE's `flow` object).
    pub flow: Option<FlowCounters>,
    /// by_src volume alerts: the window's sum and the window.
    pub window: Option<(u64, Duration)>,
    /// Policy alerts: the initiator's and the responder's zones.
    pub zones: Option<(&'a str, &'a str)>,
}

/// A flow's counters as alerts and flow records report them (IP-layer bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowCounters {
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    /// The flow's first packet time.
    pub start: Timestamp,
}

impl FlowCounters {
    /// Writes the members of the `flow` object (without braces).
    pub fn write_members(&self, w: &mut Vec<u8>) -> io::Result<()> {
        write!(
            w,
            "\"pkts_toserver\":{},\"pkts_toclient\":{},\"bytes_toserver\":{},\"bytes_toclient\":{},\"start\":\"{}\"",
            self.pkts_toserver, self.pkts_toclient, self.bytes_toserver, self.bytes_toclient, self.start
        )
    }
}

/// Writes alerts to a byte stream in one [`Format`].
pub struct AlertWriter {
    format: Format,
    out: Output,
    line: Vec<u8>,
}

impl AlertWriter {
    pub fn new(format: Format, out: Output) -> AlertWriter {
        AlertWriter {
            format,
            out,
            line: Vec::with_capacity(512),
        }
    }

    /// Writes one alert as one line.
    pub fn write(&mut self, a: &Alert<'_>) -> io::Result<()> {
        self.line.clear();
        match self.format {
            Format::Json => json_line(&mut self.line, a)?,
            Format::Text => text_line(&mut self.line, a)?,
        }
        self.out.write_line(&self.line)
    }

    /// Writes a line that is not an alert (a stats record), whole.
    pub fn write_raw_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_line(line)
    }

    /// The format alerts are written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Reopens a file output by its path (SIGHUP).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.out.reopen()
    }

    /// What it writes to, for messages.
    pub fn describe(&self) -> String {
        self.out.describe()
    }

    /// Flushes buffered lines to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn json_str(w: &mut Vec<u8>, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *w, s).map_err(io::Error::other)
}

/// Renders `a` as a JSON line (with its newline) into `w`.
pub fn json_line(w: &mut Vec<u8>, a: &Alert<'_>) -> io::Result<()> {
    write!(
        w,
        "{{\"timestamp\":\"{}\",\"event_type\":\"alert\",\"rule\":",
        a.ts
    )?;
    json_str(w, &a.rule.id)?;
    write!(
        w,
        ",\"severity\":\"{}\",\"message\":",
        a.rule.severity.as_str()
    )?;
    json_str(w, &a.rule.message)?;
    match proto::name(a.proto) {
        Some(n) => write!(w, ",\"proto\":\"{n}\"")?,
        None => write!(w, ",\"proto\":{}", a.proto)?,
    }
    write!(w, ",\"src_ip\":\"{}\"", a.src)?;
    if let Some(p) = a.src_port {
        write!(w, ",\"src_port\":{p}")?;
    }
    write!(w, ",\"dest_ip\":\"{}\"", a.dest)?;
    if let Some(p) = a.dest_port {
        write!(w, ",\"dest_port\":{p}")?;
    }
    if let Some((t, c)) = a.icmp {
        write!(w, ",\"icmp_type\":{t},\"icmp_code\":{c}")?;
    }
    if !a.vlans.is_empty() {
        w.extend_from_slice(b",\"vlan\":[");
        for (i, v) in a.vlans.as_slice().iter().enumerate() {
            if i > 0 {
                w.push(b',');
            }
            write!(w, "{v}")?;
        }
        w.push(b']');
    }
    write!(w, ",\"community_id\":\"{}\"", a.community_id)?;
    if a.suppressed > 0 {
        write!(w, ",\"suppressed\":{}", a.suppressed)?;
    }
    if let Some((from, to)) = a.zones {
        w.extend_from_slice(b",\"from_zone\":");
        json_str(w, from)?;
        w.extend_from_slice(b",\"to_zone\":");
        json_str(w, to)?;
    }
    if let Some((bytes, window)) = a.window {
        write!(w, ",\"bytes\":{bytes},\"window\":\"{window}\"")?;
    }
    if let Some(f) = &a.flow {
        w.extend_from_slice(b",\"flow\":{");
        f.write_members(w)?;
        w.push(b'}');
    }
    match a.in_iface {
        Some(iface) => {
            w.extend_from_slice(b",\"in_iface\":");
            json_str(w, iface)?;
            w.extend_from_slice(b"}\n");
            Ok(())
        }
        None => {
            w.extend_from_slice(b",\"pcap_filename\":");
            json_str(w, a.pcap_filename)?;
            writeln!(w, ",\"pcap_cnt\":{}}}", a.pcap_cnt)
        }
    }
}

fn endpoint(w: &mut Vec<u8>, ip: IpAddr, port: Option<u16>) -> io::Result<()> {
    match (ip, port) {
        (IpAddr::V6(v6), Some(p)) => write!(w, "[{v6}]:{p}"),
        (ip, Some(p)) => write!(w, "{ip}:{p}"),
        (ip, None) => write!(w, "{ip}"),
    }
}

/// Renders `a` as a text line:
/// `TIMESTAMP SEVERITY RULE PROTO SRC -> DST[ vlan=ID,ID][ icmp=TYPE/CODE] MESSAGE[ (suppressed N)]`.
pub fn text_line(w: &mut Vec<u8>, a: &Alert<'_>) -> io::Result<()> {
    write!(w, "{} {} {} ", a.ts, a.rule.severity.as_str(), a.rule.id)?;
    match proto::name(a.proto) {
        Some(n) => write!(w, "{n} ")?,
        None => write!(w, "{} ", a.proto)?,
    }
    endpoint(w, a.src, a.src_port)?;
    w.extend_from_slice(b" -> ");
    endpoint(w, a.dest, a.dest_port)?;
    if !a.vlans.is_empty() {
        w.extend_from_slice(b" vlan=");
        for (i, v) in a.vlans.as_slice().iter().enumerate() {
            if i > 0 {
                w.push(b',');
            }
            write!(w, "{v}")?;
        }
    }
    if let Some((t, c)) = a.icmp {
        write!(w, " icmp={t}/{c}")?;
    }
    if let Some((from, to)) = a.zones {
        write!(w, " zones={from}->{to}")?;
    }
    if let Some((bytes, window)) = a.window {
        write!(w, " bytes={bytes}/{window}")?;
    }
    w.push(b' ');
    // The message is the rules author's text: keep it on one line whatever it holds.
    for ch in a.rule.message.chars() {
        if ch.is_control() {
            write!(w, "{}", ch.escape_default())?;
        } else {
            let mut buf = [0u8; 4];
            w.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
    if a.suppressed > 0 {
        write!(w, " (suppressed {})", a.suppressed)?;
    }
    w.push(b'\n');
    Ok(())
}
