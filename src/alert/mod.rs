//! Alerts: what a rule match becomes, how it is written, and how rate limits hold it back.
//!
//! Contract: an [`AlertWriter`] writes each alert as one whole line (JSON with EVE field names,
//! or text), built in memory first so a line is never split by a partial write of ours. Strings
//! that come from rules or file names are escaped by serde_json, whatever bytes they hold.
//! [`Limiter`] applies `limit` on packet time and keeps the suppressed counts.

mod limit;
mod output;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub use limit::{Limiter, Verdict, SWEEP_EVERY as LIMITER_SWEEP_EVERY};
#[cfg(test)]
pub(crate) use output::MemorySink;
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

/// One alert, ready to write: a record and what its indexes name.
#[derive(Debug, Clone)]
pub struct Alert<'a> {
    pub record: &'a Record,
    pub rule: &'a Rule,
    /// The input file (offline); the record has the packet's number in it.
    pub pcap_filename: &'a str,
    /// The capture interface (live); replaces `pcap_filename` and `pcap_cnt`.
    pub in_iface: Option<&'a str>,
    /// Policy alerts: the initiator's and the responder's zones.
    pub zones: Option<(&'a str, &'a str)>,
}

/// An alert as the engine hands it over: everything by value, the rule and zone names by index
/// into a [`Context`], so that it can cross to the output's thread and be formatted there.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    pub ts: Timestamp,
    /// Index into [`Context::rules`].
    pub rule: u32,
    pub proto: u8,
    pub src: IpAddr,
    pub src_port: Option<u16>,
    pub dest: IpAddr,
    pub dest_port: Option<u16>,
    /// ICMP type and code of the packet, for ICMP and ICMPv6.
    pub icmp: Option<(u8, u8)>,
    pub vlans: Vlans,
    /// The ports Community ID hashes, oriented from `src` (for ICMP, the flow key's type/code
    /// equivalents).
    pub hash_ports: Option<(u16, u16)>,
    /// Alerts of the same limit key held back since the last one written.
    pub suppressed: u64,
    /// The packet's number in its file (offline).
    pub pcap_cnt: u64,
    /// The flow's counters at this packet (EVE's `flow` object).
    pub flow: Option<FlowCounters>,
    /// by_src volume alerts: the window's sum and the window.
    pub window: Option<(u64, Duration)>,
    /// Indexes into [`Context::zones`] of the initiator's and the responder's zones.
    pub zones: Option<(u32, u32)>,
}

/// What [`Record`]s refer to: fixed for an engine's life.
#[derive(Debug, Default, Clone)]
pub struct Context {
    pub rules: Vec<Rule>,
    pub zones: Vec<String>,
    /// The capture interface (live): alerts carry `in_iface` instead of the file.
    pub iface: Option<String>,
}

impl Record {
    /// The alert `self` stands for (`None` if its rule is not in `ctx`), from `file`.
    pub fn view<'a>(&'a self, ctx: &'a Context, file: &'a str) -> Option<Alert<'a>> {
        let zone = |i: u32| ctx.zones.get(i as usize).map_or("any", String::as_str);
        Some(Alert {
            record: self,
            rule: ctx.rules.get(self.rule as usize)?,
            pcap_filename: file,
            in_iface: ctx.iface.as_deref(),
            zones: self.zones.map(|(a, b)| (zone(a), zone(b))),
        })
    }
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
        self.write_members_ts(w, &mut ts)
    }

    /// [`FlowCounters::write_members`] with `stamp` writing the start time.
    fn write_members_ts(
        &self,
        w: &mut Vec<u8>,
        stamp: &mut impl FnMut(&mut Vec<u8>, Timestamp),
    ) -> io::Result<()> {
        w.extend_from_slice(b"\"pkts_toserver\":");
        num(w, self.pkts_toserver);
        w.extend_from_slice(b",\"pkts_toclient\":");
        num(w, self.pkts_toclient);
        w.extend_from_slice(b",\"bytes_toserver\":");
        num(w, self.bytes_toserver);
        w.extend_from_slice(b",\"bytes_toclient\":");
        num(w, self.bytes_toclient);
        w.extend_from_slice(b",\"start\":\"");
        stamp(w, self.start);
        w.push(b'"');
        Ok(())
    }
}

/// Writes alerts to a byte stream in one [`Format`]. To an output with a writer thread of its
/// own, records are handed over as they are and formatted on that thread (a flood's formatting
/// then overlaps the engine's work); otherwise they are formatted here.
pub struct AlertWriter {
    format: Format,
    out: Output,
    line: Vec<u8>,
    frags: Fragments,
    ctx: Arc<Context>,
    /// The input file of the latest record.
    file: Arc<str>,
}

/// JSON pieces that only change with the rule or the input file, escaped once. They are kept
/// for the context and the file they were [bound](Fragments::bind) to (held here, so that a
/// pointer comparison identifies them); alerts from anything else are written piece by piece.
#[derive(Default)]
pub struct Fragments {
    ctx: Option<Arc<Context>>,
    /// Per rule index of `ctx`: `","event_type":"alert","rule":ID,"severity":"S","message":MSG`.
    rules: Vec<Box<[u8]>>,
    /// The bound file and its `,"pcap_filename":NAME,"pcap_cnt":`.
    file: Option<(Arc<str>, Box<[u8]>)>,
    /// The last time written and its text (alerts come in time order, and an alert's flow
    /// often started at its packet): the same time is copied whole, the same second's
    /// `YYYY-MM-DDTHH:MM:SS.` taken from it.
    last: Option<(Timestamp, [u8; 27])>,
    /// The last IPv6 source and destination written and their text: an address's text costs
    /// about 300 instructions, and a server's address repeats alert after alert.
    v6: [V6Text; 2],
}

/// An IPv6 address and its text (`len` 0: none yet).
#[derive(Clone, Copy)]
struct V6Text {
    addr: Ipv6Addr,
    text: [u8; 40],
    len: u8,
}

impl Default for V6Text {
    fn default() -> V6Text {
        V6Text {
            addr: Ipv6Addr::UNSPECIFIED,
            text: [0; 40],
            len: 0,
        }
    }
}

/// The rule's piece of a JSON line (see [`Fragments::rules`]).
fn rule_piece(r: &Rule) -> io::Result<Box<[u8]>> {
    let mut w = Vec::with_capacity(64 + r.message.len());
    w.extend_from_slice(b"\",\"event_type\":\"alert\",\"rule\":");
    json_str(&mut w, &r.id)?;
    w.extend_from_slice(b",\"severity\":\"");
    w.extend_from_slice(r.severity.as_str().as_bytes());
    w.extend_from_slice(b"\",\"message\":");
    json_str(&mut w, &r.message)?;
    Ok(w.into())
}

/// The file's piece of a JSON line (see [`Fragments::file`]).
fn file_piece(name: &str) -> io::Result<Box<[u8]>> {
    let mut w = Vec::with_capacity(32 + name.len());
    w.extend_from_slice(b",\"pcap_filename\":");
    json_str(&mut w, name)?;
    w.extend_from_slice(b",\"pcap_cnt\":");
    Ok(w.into())
}

impl Fragments {
    /// Keeps pieces for alerts viewed in `ctx` and read from `file` from now on.
    pub fn bind(&mut self, ctx: &Arc<Context>, file: &Arc<str>) -> io::Result<()> {
        if !self.ctx.as_ref().is_some_and(|c| Arc::ptr_eq(c, ctx)) {
            self.rules = ctx
                .rules
                .iter()
                .map(rule_piece)
                .collect::<io::Result<_>>()?;
            self.ctx = Some(Arc::clone(ctx));
        }
        if !self
            .file
            .as_ref()
            .is_some_and(|(f, _)| Arc::ptr_eq(f, file))
        {
            self.file = Some((Arc::clone(file), file_piece(file)?));
        }
        Ok(())
    }

    /// Appends the piece of `a`'s rule: the kept one when `a` was viewed in the bound context.
    fn rule(&mut self, w: &mut Vec<u8>, a: &Alert<'_>) -> io::Result<()> {
        let i = a.record.rule as usize;
        let bound = self.ctx.as_ref().and_then(|c| c.rules.get(i));
        match self.rules.get(i) {
            Some(piece) if bound.is_some_and(|r| std::ptr::eq(r, a.rule)) => {
                w.extend_from_slice(piece)
            }
            _ => w.extend_from_slice(&rule_piece(a.rule)?),
        }
        Ok(())
    }

    /// Writes `t` as RFC 3339 with microseconds, the date and time of day from the cache.
    fn ts(&mut self, w: &mut Vec<u8>, t: Timestamp) {
        let mut text = [0u8; 27];
        match &self.last {
            Some((last, cached)) if *last == t => {
                w.extend_from_slice(cached);
                return;
            }
            Some((last, cached)) if last.secs() == t.secs() => {
                text[..20].copy_from_slice(&cached[..20]);
            }
            _ => {
                let mut buf = [0u8; 40];
                let n = t.write_rfc3339(&mut buf);
                if n != 27 {
                    // Not the four-digit-year form: no caching.
                    w.extend_from_slice(&buf[..n]);
                    return;
                }
                text[..20].copy_from_slice(&buf[..20]);
            }
        }
        // Microseconds (below 10^6) as three pairs of digits.
        let micros = (t.subsec_nanos() / 1000) as usize;
        let pair = |n: usize| DIGIT_PAIRS[n % 100];
        text[20..22].copy_from_slice(&pair(micros / 10_000));
        text[22..24].copy_from_slice(&pair(micros / 100));
        text[24..26].copy_from_slice(&pair(micros));
        text[26] = b'Z';
        w.extend_from_slice(&text);
        self.last = Some((t, text));
    }

    /// Appends `addr`'s text; an IPv6 address copied from the text kept for `side` (0 the
    /// source, 1 the destination) when it is the one last written there.
    #[inline]
    fn addr(&mut self, w: &mut Vec<u8>, addr: IpAddr, side: usize) {
        let v6 = match addr {
            IpAddr::V4(v4) => return ipv4(w, v4),
            IpAddr::V6(v6) => v6,
        };
        let kept = &mut self.v6[side & 1];
        let len = usize::from(kept.len);
        if len > 0 && kept.addr == v6 {
            w.extend_from_slice(&kept.text[..len]);
            return;
        }
        let start = w.len();
        ipv6(w, v6);
        let text = &w[start..];
        kept.text[..text.len()].copy_from_slice(text);
        kept.len = text.len() as u8;
        kept.addr = v6;
    }

    /// Appends the file's piece: the kept one when `name` is the bound file itself.
    fn file(&mut self, w: &mut Vec<u8>, name: &str) -> io::Result<()> {
        match &self.file {
            Some((f, piece)) if std::ptr::eq(f.as_ref(), name) => w.extend_from_slice(piece),
            _ => w.extend_from_slice(&file_piece(name)?),
        }
        Ok(())
    }
}

impl AlertWriter {
    pub fn new(format: Format, out: Output) -> AlertWriter {
        AlertWriter {
            format,
            out,
            line: Vec::with_capacity(512),
            frags: Fragments::default(),
            ctx: Default::default(),
            file: Arc::from(""),
        }
    }

    /// Sets what records refer to (before the first record).
    pub fn set_context(&mut self, ctx: Context) {
        self.ctx = Arc::new(ctx);
    }

    /// Writes the alert `r` stands for (read from `file`) as one line; a record whose rule is
    /// not in the context is skipped.
    pub fn write_record(&mut self, r: &Record, file: &Arc<str>) -> io::Result<()> {
        if !Arc::ptr_eq(&self.file, file) {
            self.file = Arc::clone(file);
        }
        if self.out.formats_on_its_thread() {
            return self.out.push_record(*r, self.format, &self.ctx, &self.file);
        }
        let Some(a) = r.view(&self.ctx, &self.file) else {
            return Ok(());
        };
        self.frags.bind(&self.ctx, &self.file)?;
        self.line.clear();
        write_alert(&mut self.line, self.format, &a, &mut self.frags)?;
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

/// Appends `v` in decimal. Longer numbers are written in place: the line grows by 20
/// bytes, the digits go straight in, and it is cut back to their count (no buffer that is
/// copied after being written byte by byte, which the CPU cannot forward from).
fn num(w: &mut Vec<u8>, v: impl Into<u64>) {
    let v: u64 = v.into();
    // Counters are mostly one or two digits.
    if v < 10 {
        w.push(b'0' + v as u8);
        return;
    }
    if v < 100 {
        w.extend_from_slice(&DIGIT_PAIRS[v as usize]);
        return;
    }
    let n = v.ilog10() as usize + 1;
    let len = w.len();
    w.resize(len + 20, 0);
    let buf = &mut w[len..len + 20];
    let (mut x, mut i) = (v, n);
    while x >= 100 {
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[(x % 100) as usize]);
        x /= 100;
    }
    if x >= 10 {
        buf[i - 2..i].copy_from_slice(&DIGIT_PAIRS[x as usize]);
    } else {
        buf[i - 1] = b'0' + x as u8;
    }
    w.truncate(len + n);
}

/// [`num`] for a port: at most five digits, each length written by its own straight-line
/// code (no digit count, no loop), in place as `num` writes.
#[inline]
fn port(w: &mut Vec<u8>, p: u16) {
    if p < 100 {
        return num(w, p);
    }
    let len = w.len();
    w.resize(len + 5, 0);
    let b = &mut w[len..len + 5];
    let p = usize::from(p);
    let n = if p >= 10_000 {
        let r = p % 10_000;
        b[0] = b'0' + (p / 10_000) as u8;
        b[1..3].copy_from_slice(&DIGIT_PAIRS[r / 100]);
        b[3..5].copy_from_slice(&DIGIT_PAIRS[r % 100]);
        5
    } else if p >= 1_000 {
        b[0..2].copy_from_slice(&DIGIT_PAIRS[p / 100]);
        b[2..4].copy_from_slice(&DIGIT_PAIRS[p % 100]);
        4
    } else {
        b[0] = b'0' + (p / 100) as u8;
        b[1..3].copy_from_slice(&DIGIT_PAIRS[p % 100]);
        3
    };
    w.truncate(len + n);
}

fn ts(w: &mut Vec<u8>, t: Timestamp) {
    let mut buf = [0u8; 40];
    let n = t.write_rfc3339(&mut buf);
    w.extend_from_slice(&buf[..n]);
}

fn json_str(w: &mut Vec<u8>, s: &str) -> io::Result<()> {
    serde_json::to_writer(&mut *w, s).map_err(io::Error::other)
}

/// "00" to "99".
const DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// The decimal text of each octet value: its digits, then how many there are.
const OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let d = [(i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8];
        // Digits after the first: 0, 1 or 2.
        let n = if i >= 100 {
            2
        } else if i >= 10 {
            1
        } else {
            0
        };
        let skip = 2 - n;
        let mut k = 0;
        while k + skip < 3 {
            t[i][k] = b'0' + d[k + skip];
            k += 1;
        }
        t[i][3] = (n + 1) as u8;
        i += 1;
    }
    t
};

/// An address in its standard text form, the same bytes as std's `Display` (checked
/// against it in the tests), without the formatting machinery: through `write!`, an IPv6
/// address cost about 2,000 instructions, most of a v6 alert line.
pub(crate) fn ip(w: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => ipv4(w, v4),
        IpAddr::V6(v6) => ipv6(w, v6),
    }
}

/// Dotted decimal written in place (as in `num`), each octet's text from the table (three
/// bytes copied, its length kept).
fn ipv4(w: &mut Vec<u8>, v4: Ipv4Addr) {
    let len = w.len();
    w.resize(len + 16, 0);
    let buf = &mut w[len..len + 16];
    let mut n = 0;
    for x in v4.octets() {
        let t = OCTETS[usize::from(x)];
        buf[n..n + 3].copy_from_slice(&t[..3]);
        n += usize::from(t[3]);
        buf[n] = b'.';
        n += 1;
    }
    w.truncate(len + n - 1);
}

/// RFC 5952 text as std writes it: an IPv4-mapped address as `::ffff:` and dotted decimal;
/// otherwise lowercase hex groups without leading zeros, the longest run of two or more
/// zero groups (the first of equal runs) written as `::`. In place, as `ipv4`: each group is
/// written with a colon after it ([`hex_group`]), and the last colon is cut.
fn ipv6(w: &mut Vec<u8>, v6: Ipv6Addr) {
    if let Some(v4) = v6.to_ipv4_mapped() {
        w.extend_from_slice(b"::ffff:");
        return ipv4(w, v4);
    }
    let g = v6.segments();
    let mut zeros = 0;
    for (i, &x) in g.iter().enumerate() {
        zeros |= usize::from(x == 0) << i;
    }
    let [skip, resume] = ZERO_RUNS[zeros].map(usize::from);
    let len = w.len();
    // Seven groups and their colons (35 bytes), then the last group's eight-byte write.
    w.resize(len + 48, 0);
    let buf = &mut w[len..len + 48];
    let mut n = 0;
    for &x in &g[..skip] {
        n = hex_group(buf, n, x);
    }
    if skip < 8 {
        // "::": one colon more, two at the start.
        if skip == 0 {
            buf[n] = b':';
            n += 1;
        }
        buf[n] = b':';
        n += 1;
        for &x in &g[resume..] {
            n = hex_group(buf, n, x);
        }
        if resume == 8 {
            n += 1;
        }
    }
    w.truncate(len + n - 1);
}

/// Writes `x` in lowercase hex without leading zeros, and a colon, at `n` in `buf`; returns
/// where the next group starts. One eight-byte store, no loop or branch: the two digit pairs
/// from a table, shifted past the leading zeros, the colon put after them.
#[inline(always)]
fn hex_group(buf: &mut [u8], n: usize, x: u16) -> usize {
    let digits = 4 - ((x | 1).leading_zeros() as usize >> 2);
    let [hi, lo] = x.to_be_bytes();
    let text = u64::from(HEX_PAIRS[usize::from(hi)]) | u64::from(HEX_PAIRS[usize::from(lo)]) << 16;
    let text = text >> (8 * (4 - digits)) | u64::from(b':') << (8 * digits);
    buf[n..n + 8].copy_from_slice(&text.to_le_bytes());
    n + digits + 1
}

/// For each set of zero groups (bit i for group i), where the run written as `::` starts
/// and where the groups after it resume: the longest run of two or more, the first of
/// equal runs; [8, 8] when there is none.
const ZERO_RUNS: [[u8; 2]; 256] = {
    let mut t = [[8u8; 2]; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut best, mut start, mut run, mut i) = (1, 8, 0, 0);
        while i < 8 {
            if mask >> i & 1 == 1 {
                run += 1;
                if run > best {
                    best = run;
                    start = i + 1 - run;
                }
            } else {
                run = 0;
            }
            i += 1;
        }
        if start < 8 {
            t[mask] = [start as u8, (start + best) as u8];
        }
        mask += 1;
    }
    t
};

/// "00" to "ff", each pair as a little-endian `u16` (its first digit in the low byte).
const HEX_PAIRS: [u16; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = u16::from_le_bytes([HEX[i >> 4], HEX[i & 0xf]]);
        i += 1;
    }
    t
};

/// Appends `a` as one line in `format` to `w`.
pub fn write_alert(
    w: &mut Vec<u8>,
    format: Format,
    a: &Alert<'_>,
    frags: &mut Fragments,
) -> io::Result<()> {
    match format {
        Format::Json => json_line_with(w, a, frags),
        Format::Text => text_line(w, a),
    }
}

/// Renders `a` as a JSON line (with its newline) into `w`.
pub fn json_line(w: &mut Vec<u8>, a: &Alert<'_>) -> io::Result<()> {
    json_line_with(w, a, &mut Fragments::default())
}

/// [`json_line`] with the rule's and the file's pieces from (and into) `frags`.
pub fn json_line_with(w: &mut Vec<u8>, a: &Alert<'_>, frags: &mut Fragments) -> io::Result<()> {
    w.extend_from_slice(b"{\"timestamp\":\"");
    frags.ts(w, a.record.ts);
    frags.rule(w, a)?;
    match proto::name(a.record.proto) {
        Some(n) => {
            w.extend_from_slice(b",\"proto\":\"");
            w.extend_from_slice(n.as_bytes());
            w.push(b'"');
        }
        None => {
            w.extend_from_slice(b",\"proto\":");
            num(w, a.record.proto);
        }
    }
    w.extend_from_slice(b",\"src_ip\":\"");
    frags.addr(w, a.record.src, 0);
    w.push(b'"');
    if let Some(p) = a.record.src_port {
        w.extend_from_slice(b",\"src_port\":");
        port(w, p);
    }
    w.extend_from_slice(b",\"dest_ip\":\"");
    frags.addr(w, a.record.dest, 1);
    w.push(b'"');
    if let Some(p) = a.record.dest_port {
        w.extend_from_slice(b",\"dest_port\":");
        port(w, p);
    }
    if let Some((t, c)) = a.record.icmp {
        w.extend_from_slice(b",\"icmp_type\":");
        num(w, t);
        w.extend_from_slice(b",\"icmp_code\":");
        num(w, c);
    }
    if !a.record.vlans.is_empty() {
        w.extend_from_slice(b",\"vlan\":[");
        for (i, v) in a.record.vlans.as_slice().iter().enumerate() {
            if i > 0 {
                w.push(b',');
            }
            num(w, *v);
        }
        w.push(b']');
    }
    // The flow's Community ID (v1, seed 0), oriented from the alert's source; only JSON
    // carries it.
    w.extend_from_slice(b",\"community_id\":\"");
    let len = w.len();
    w.resize(len + crate::community_id::ID_LEN, 0);
    let r = a.record;
    crate::community_id::write_v1(&mut w[len..], 0, r.src, r.dest, r.proto, r.hash_ports);
    w.push(b'"');
    if a.record.suppressed > 0 {
        w.extend_from_slice(b",\"suppressed\":");
        num(w, a.record.suppressed);
    }
    if let Some((from, to)) = a.zones {
        w.extend_from_slice(b",\"from_zone\":");
        json_str(w, from)?;
        w.extend_from_slice(b",\"to_zone\":");
        json_str(w, to)?;
    }
    if let Some((bytes, window)) = a.record.window {
        w.extend_from_slice(b",\"bytes\":");
        num(w, bytes);
        write!(w, ",\"window\":\"{window}\"")?;
    }
    if let Some(f) = &a.record.flow {
        w.extend_from_slice(b",\"flow\":{");
        f.write_members_ts(w, &mut |w, t| frags.ts(w, t))?;
        w.push(b'}');
    }
    match a.in_iface {
        Some(iface) => {
            w.extend_from_slice(b",\"in_iface\":");
            json_str(w, iface)?;
            w.extend_from_slice(b"}\n");
        }
        None => {
            frags.file(w, a.pcap_filename)?;
            num(w, a.record.pcap_cnt);
            w.extend_from_slice(b"}\n");
        }
    }
    Ok(())
}

fn endpoint(w: &mut Vec<u8>, addr: IpAddr, port: Option<u16>) {
    let v6 = addr.is_ipv6() && port.is_some();
    if v6 {
        w.push(b'[');
    }
    ip(w, addr);
    if v6 {
        w.push(b']');
    }
    if let Some(p) = port {
        w.push(b':');
        self::port(w, p);
    }
}

/// Renders `a` as a text line:
/// `TIMESTAMP SEVERITY RULE PROTO SRC -> DST[ vlan=ID,ID][ icmp=TYPE/CODE] MESSAGE[ (suppressed N)]`.
pub fn text_line(w: &mut Vec<u8>, a: &Alert<'_>) -> io::Result<()> {
    write!(
        w,
        "{} {} {} ",
        a.record.ts,
        a.rule.severity.as_str(),
        a.rule.id
    )?;
    match proto::name(a.record.proto) {
        Some(n) => write!(w, "{n} ")?,
        None => write!(w, "{} ", a.record.proto)?,
    }
    endpoint(w, a.record.src, a.record.src_port);
    w.extend_from_slice(b" -> ");
    endpoint(w, a.record.dest, a.record.dest_port);
    if !a.record.vlans.is_empty() {
        w.extend_from_slice(b" vlan=");
        for (i, v) in a.record.vlans.as_slice().iter().enumerate() {
            if i > 0 {
                w.push(b',');
            }
            write!(w, "{v}")?;
        }
    }
    if let Some((t, c)) = a.record.icmp {
        write!(w, " icmp={t}/{c}")?;
    }
    if let Some((from, to)) = a.zones {
        write!(w, " zones={from}->{to}")?;
    }
    if let Some((bytes, window)) = a.record.window {
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
    if a.record.suppressed > 0 {
        write!(w, " (suppressed {})", a.record.suppressed)?;
    }
    w.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ipv4_text_equals_std() {
        let mut x: u32 = 0x2545_f491;
        let edges = [0u8, 1, 9, 10, 11, 99, 100, 101, 199, 200, 249, 250, 255];
        let mut addrs: Vec<u32> = Vec::new();
        for &a in &edges {
            for &b in &edges {
                addrs.push(u32::from_be_bytes([a, b, 255 - a, b / 2]));
            }
        }
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            addrs.push(x);
        }
        for a in addrs {
            let v4 = std::net::Ipv4Addr::from(a);
            let mut w = b"x".to_vec();
            ip(&mut w, IpAddr::V4(v4));
            assert_eq!(&w[1..], v4.to_string().as_bytes(), "{v4}");
        }
    }

    /// IPv6 text equals std's for every pattern of zero and non-zero groups (each with
    /// group values of one to four digits, and 0xffff), for IPv4-mapped and -compatible
    /// addresses, and for random ones.
    #[test]
    fn test_ipv6_text_equals_std() {
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let values = [1u16, 0xf, 0x10, 0xab, 0x100, 0xfff, 0x1000, 0xffff];
        let mut addrs: Vec<[u16; 8]> = Vec::new();
        for mask in 0u32..256 {
            for round in 0..24 {
                let mut g = [0u16; 8];
                for (i, s) in g.iter_mut().enumerate() {
                    if mask >> i & 1 == 1 {
                        let r = next();
                        *s = if round < 8 {
                            values[(round + i) % values.len()]
                        } else {
                            (r as u16).max(1)
                        };
                    }
                }
                addrs.push(g);
            }
        }
        for _ in 0..1000 {
            let r = next() as u32;
            let [a, b, c, d] = r.to_be_bytes();
            let lo = [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])];
            // Mapped (::ffff:a.b.c.d), compatible (::a.b.c.d) and near misses of both.
            for head in [[0, 0, 0, 0, 0, 0xffff], [0; 6], [0, 0, 0, 0, 1, 0xffff]] {
                let mut g = [0u16; 8];
                g[..6].copy_from_slice(&head);
                g[6..].copy_from_slice(&lo);
                addrs.push(g);
                g[6] = 0;
                addrs.push(g);
                g[7] = 0;
                addrs.push(g);
            }
        }
        for _ in 0..100_000 {
            let r = u128::from(next()) << 64 | u128::from(next());
            addrs.push(Ipv6Addr::from(r).segments());
        }
        for g in addrs {
            let v6 = Ipv6Addr::from(g);
            let mut w = b"x".to_vec();
            ip(&mut w, IpAddr::V6(v6));
            assert_eq!(&w[1..], v6.to_string().as_bytes(), "{g:x?}");
        }
    }

    /// Pieces kept for the bound context and file are used only for alerts from them: an
    /// alert from another file, or with a rule of another context at the same index, is
    /// written with its own, as if formatted alone.
    #[test]
    fn test_kept_pieces_serve_only_the_bound_context_and_file() {
        let rules = crate::rules::RuleSet::embedded().unwrap().rules;
        let ctx = Arc::new(Context {
            rules: rules.clone(),
            ..Default::default()
        });
        let mut renamed = rules.clone();
        for r in &mut renamed {
            r.id = format!("other-{}", r.id);
            r.message = format!("other {}", r.message);
        }
        let other = Context {
            rules: renamed,
            ..Default::default()
        };
        let (bound, unbound): (Arc<str>, Arc<str>) = (Arc::from("a.pcap"), Arc::from("b.pcap"));
        let record = Record {
            ts: Timestamp(1_764_072_000_000_000_000),
            rule: 0,
            proto: 6,
            src: IpAddr::from([10, 0, 1, 5]),
            src_port: Some(40000),
            dest: IpAddr::from([10, 0, 1, 20]),
            dest_port: Some(11434),
            icmp: None,
            vlans: Vlans::default(),
            hash_ports: Some((40000, 11434)),
            suppressed: 0,
            pcap_cnt: 7,
            flow: None,
            window: None,
            zones: None,
        };
        let mut frags = Fragments::default();
        frags.bind(&ctx, &bound).unwrap();
        for (c, file) in [
            (&*ctx, &bound),
            (&other, &unbound),
            (&*ctx, &unbound),
            (&other, &bound),
        ] {
            for rule in 0..rules.len() as u32 {
                let r = Record { rule, ..record };
                let a = r.view(c, file).unwrap();
                let (mut kept, mut alone) = (Vec::new(), Vec::new());
                json_line_with(&mut kept, &a, &mut frags).unwrap();
                json_line(&mut alone, &a).unwrap();
                assert_eq!(
                    String::from_utf8(kept).unwrap(),
                    String::from_utf8(alone).unwrap()
                );
            }
        }
    }

    /// Decimal numbers equal std's, at every power of ten and its neighbours and across a
    /// pseudo-random sample.
    #[test]
    fn test_numbers_equal_std() {
        let mut values = vec![0u64, u64::MAX, u64::MAX - 1];
        for p in 0..20 {
            let t = 10u64.pow(p);
            values.extend([t - 1, t, t + 1]);
        }
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..100_000 {
            let x = next();
            values.push(x >> (x % 64));
        }
        for v in values {
            let mut w = b"x".to_vec();
            num(&mut w, v);
            assert_eq!(w, format!("x{v}").as_bytes());
        }
        // Every port.
        for p in 0..=u16::MAX {
            let mut w = b"x".to_vec();
            port(&mut w, p);
            assert_eq!(w, format!("x{p}").as_bytes());
        }
    }

    /// Addresses from the text kept per side equal std's: IPv6 sources and destinations
    /// repeated, changed, swapped between the sides and mixed with IPv4 and mapped ones.
    #[test]
    fn test_kept_addresses_equal_std() {
        let pool: Vec<IpAddr> = [
            "2001:db8::1",
            "2001:db8::2",
            "fd00:0:0:1::14",
            "::ffff:10.0.1.5",
            "10.0.1.5",
            "::",
            "2001:db8:a6a3:a450:6513:270e:269e:d37",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut f = Fragments::default();
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let x = next();
            // Mostly a repeat of an address just written, sometimes another.
            let side = (x % 2) as usize;
            let addr = pool[((x >> 8) % 3 + (x >> 16) % 2 * ((x >> 24) % 5)) as usize];
            let mut w = b"x".to_vec();
            f.addr(&mut w, addr, side);
            assert_eq!(
                &w[1..],
                addr.to_string().as_bytes(),
                "{addr} on side {side}"
            );
        }
    }

    #[test]
    fn test_cached_timestamps_equal_the_full_writer() {
        let mut f = Fragments::default();
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut t = 1_764_072_000_000_000_000i64;
        for i in 0..200_000 {
            let x = next();
            // Mostly small steps (the cache hits), sometimes jumps, backwards and far.
            // (Wrapping: far jumps may cross the ends of the range, as in release builds.)
            t = t.wrapping_add(match i % 1000 {
                0 => -((x % 100_000_000_000) as i64),
                1 => (x % 4_000_000_000_000_000_000) as i64,
                _ => (x % 3_000_000) as i64,
            });
            let ts = Timestamp(t);
            let mut buf = [0u8; 40];
            let n = ts.write_rfc3339(&mut buf);
            // Every other time twice (the second from the whole-time cache).
            for _ in 0..1 + i % 2 {
                let mut a = Vec::new();
                f.ts(&mut a, ts);
                assert_eq!(a, &buf[..n], "{t}");
            }
        }
    }
}
