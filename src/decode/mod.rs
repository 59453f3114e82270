//! Decoding: one captured frame in, one small owned [`PacketSummary`] (or a counted
//! [`DecodeError`]) out.
//!
//! Contract: [`decode`] never panics and never allocates; it reads only bytes it has checked
//! are there. A frame cut short by the snap length (`caplen < orig_len`) yields whatever its
//! headers still hold, flagged `truncated`; a frame whose IP header is incomplete or malformed is
//! an error, counted by kind in [`DecodeStats`]. IP fragments are data: a first fragment
//! carries its ports, a later one only its [`Fragment`] identity, never ports read from its
//! payload. Everything above this module (flows, rules) sees summaries, never bytes.
//!
//! Link layers are ours (see [`link`]); IPv4 with options and IPv6 with its extension headers
//! are sliced by `etherparse`'s lax parser; TCP, UDP and ICMP fields are read by hand because a
//! truncated TCP header still has its ports and flags.

pub mod link;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{ip_number, Ipv6ExtensionSlice, LaxIpSlice};

use crate::time::Timestamp;

/// A header field: its byte range, as in smoltcp's `field` modules (one per header below and in
/// [`link`]).
type Field = core::ops::Range<usize>;

/// The big-endian 16-bit number in field `f` of `b`, if `b` holds the field.
#[inline(always)]
fn be16(b: &[u8], f: Field) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(f)?.first_chunk::<2>()?))
}

pub use link::linktype;

/// Up to three VLAN ids, outermost first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vlans {
    ids: [u16; link::MAX_VLAN_TAGS],
    len: u8,
}

impl Vlans {
    /// No tags.
    pub const NONE: Vlans = Vlans {
        ids: [0; link::MAX_VLAN_TAGS],
        len: 0,
    };

    /// From a list of ids (at most three are kept).
    pub fn from_ids(ids: &[u16]) -> Vlans {
        let mut v = Vlans::NONE;
        for &id in ids.iter().take(link::MAX_VLAN_TAGS) {
            v.push(id);
        }
        v
    }

    /// The ids, outermost first.
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the frame was untagged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids and their number in one word (for hashing): equal exactly when the
    /// `Vlans` are.
    pub fn packed(&self) -> u64 {
        const _: () = assert!(link::MAX_VLAN_TAGS == 3);
        u64::from(self.ids[0])
            | u64::from(self.ids[1]) << 16
            | u64::from(self.ids[2]) << 32
            | u64::from(self.len) << 48
    }

    fn push(&mut self, id: u16) {
        if let Some(slot) = self.ids.get_mut(usize::from(self.len)) {
            *slot = id;
            self.len += 1;
        }
    }
}

/// IP protocol numbers we name.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// The name alerts give a protocol (`TCP`, `UDP`, `ICMP`, `IPv6-ICMP`), if it has one:
    /// every other protocol, SCTP included, is reported by its number.
    pub fn name(p: u8) -> Option<&'static str> {
        match p {
            TCP => Some("TCP"),
            UDP => Some("UDP"),
            ICMP => Some("ICMP"),
            ICMPV6 => Some("IPv6-ICMP"),
            _ => None,
        }
    }
}

/// TCP flag bits as in the header's 13th byte (NS, the 9th bit, is left out).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// SYN set, ACK and RST clear: a connection attempt, whatever ECN or other bits say.
    pub fn is_pure_syn(flags: u8) -> bool {
        flags & (SYN | ACK | RST) == SYN
    }
}

/// What the transport layer told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP, UDP or SCTP ports (TCP flags are in [`PacketSummary::tcp_flags`]).
    Ports { src: u16, dst: u16 },
    /// ICMP or ICMPv6 type and code.
    Icmp { icmp_type: u8, code: u8 },
    /// A protocol without ports, or a later fragment.
    None,
}

/// An IP fragment's identity: later fragments find their flow by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// IPv4 identification (16 bits) or IPv6 fragment header identification.
    pub id: u32,
    /// Offset in 8-byte units; 0 for the first fragment.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// The owned summary of one packet: all the rules and the flow table ever see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSummary {
    /// Capture time.
    pub ts: Timestamp,
    /// 1-based number of the packet in its file (EVE's `pcap_cnt`).
    pub pcap_cnt: u64,
    /// Data-link type it was read with.
    pub linktype: u16,
    /// Length on the wire.
    pub orig_len: u32,
    /// IP-layer length: the IPv4 total length or the IPv6 payload length + 40; what was
    /// captured when the header's length is zero (TSO, jumbograms).
    pub ip_len: u32,
    /// VLAN tags, outermost first.
    pub vlans: Vlans,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    pub transport: Transport,
    /// TCP flags (0 for other protocols or when the header was cut before them).
    pub tcp_flags: u8,
    /// Set when the packet is an IP fragment (first or later).
    pub fragment: Option<Fragment>,
    /// The frame was cut short (by snap length or its own length fields).
    pub truncated: bool,
}

impl PacketSummary {
    /// A summary with every field zero or empty: the slot [`decode_into`] fills in.
    pub const EMPTY: PacketSummary = PacketSummary {
        ts: Timestamp(0),
        pcap_cnt: 0,
        linktype: 0,
        orig_len: 0,
        ip_len: 0,
        vlans: Vlans::NONE,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        proto: 0,
        transport: Transport::None,
        tcp_flags: 0,
        fragment: None,
        truncated: false,
    };
}

/// Why a frame produced no summary. Each kind is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not IP: ARP, LLDP, 802.3 LLC, and the like (by ethertype; 0 for an unknown address
    /// family on a loopback link). Normal traffic, not a fault.
    NotIp(u16),
    /// The frame ends inside its link-layer header or a VLAN tag.
    LinkTruncated,
    /// More than three VLAN tags.
    TooManyVlanTags,
    /// The IP version nibble is neither 4 nor 6.
    IpVersion,
    /// The frame ends inside the IP header (or its mandatory part).
    IpTruncated,
    /// An IP header that cannot be right (IHL below 5, an extension header that does not parse).
    IpMalformed,
    /// The frame ends before the transport ports of a first fragment or unfragmented packet.
    TransportTruncated,
    /// A TCP data offset below 5 words.
    TcpMalformed,
    /// A link type we do not decode: the packets of such interfaces in a pcapng file of several
    /// link types (a file of one such link type is refused before reading).
    UnsupportedLinkType(i32),
}

/// Counters for every decode outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub ipv4: u64,
    pub ipv6: u64,
    pub vlan_tagged: u64,
    pub truncated: u64,
    pub fragments_first: u64,
    pub fragments_later: u64,
    pub not_ip: u64,
    pub link_truncated: u64,
    pub too_many_vlan_tags: u64,
    pub ip_version: u64,
    pub ip_truncated: u64,
    pub ip_malformed: u64,
    pub transport_truncated: u64,
    pub tcp_malformed: u64,
    pub unsupported_linktype: u64,
}

impl DecodeStats {
    /// Counts one outcome.
    pub fn record(&mut self, r: &Result<PacketSummary, DecodeError>) {
        self.record_ref(r.as_ref().map_err(|e| *e));
    }

    /// [`DecodeStats::record`] of a summary held elsewhere ([`decode_into`]'s slot).
    fn record_ref(&mut self, r: Result<&PacketSummary, DecodeError>) {
        match r {
            Ok(s) => {
                if s.src.is_ipv4() {
                    self.ipv4 += 1;
                } else {
                    self.ipv6 += 1;
                }
                self.vlan_tagged += u64::from(!s.vlans.is_empty());
                self.truncated += u64::from(s.truncated);
                match s.fragment {
                    Some(f) if f.offset == 0 => self.fragments_first += 1,
                    Some(_) => self.fragments_later += 1,
                    None => {}
                }
            }
            Err(e) => *self.error_slot(e) += 1,
        }
    }

    fn error_slot(&mut self, e: DecodeError) -> &mut u64 {
        match e {
            DecodeError::NotIp(_) => &mut self.not_ip,
            DecodeError::LinkTruncated => &mut self.link_truncated,
            DecodeError::TooManyVlanTags => &mut self.too_many_vlan_tags,
            DecodeError::IpVersion => &mut self.ip_version,
            DecodeError::IpTruncated => &mut self.ip_truncated,
            DecodeError::IpMalformed => &mut self.ip_malformed,
            DecodeError::TransportTruncated => &mut self.transport_truncated,
            DecodeError::TcpMalformed => &mut self.tcp_malformed,
            DecodeError::UnsupportedLinkType(_) => &mut self.unsupported_linktype,
        }
    }

    /// Adds another set of counters (per-file or per-worker totals).
    pub fn merge(&mut self, o: &DecodeStats) {
        let DecodeStats {
            ipv4,
            ipv6,
            vlan_tagged,
            truncated,
            fragments_first,
            fragments_later,
            not_ip,
            link_truncated,
            too_many_vlan_tags,
            ip_version,
            ip_truncated,
            ip_malformed,
            transport_truncated,
            tcp_malformed,
            unsupported_linktype,
        } = o;
        self.ipv4 += ipv4;
        self.ipv6 += ipv6;
        self.vlan_tagged += vlan_tagged;
        self.truncated += truncated;
        self.fragments_first += fragments_first;
        self.fragments_later += fragments_later;
        self.not_ip += not_ip;
        self.link_truncated += link_truncated;
        self.too_many_vlan_tags += too_many_vlan_tags;
        self.ip_version += ip_version;
        self.ip_truncated += ip_truncated;
        self.ip_malformed += ip_malformed;
        self.transport_truncated += transport_truncated;
        self.tcp_malformed += tcp_malformed;
        self.unsupported_linktype += unsupported_linktype;
    }

    /// Name/value pairs in a fixed order, for the summary.
    pub fn fields(&self) -> [(&'static str, u64); 15] {
        [
            ("ipv4", self.ipv4),
            ("ipv6", self.ipv6),
            ("vlan_tagged", self.vlan_tagged),
            ("truncated", self.truncated),
            ("fragments_first", self.fragments_first),
            ("fragments_later", self.fragments_later),
            ("not_ip", self.not_ip),
            ("link_truncated", self.link_truncated),
            ("too_many_vlan_tags", self.too_many_vlan_tags),
            ("bad_ip_version", self.ip_version),
            ("ip_truncated", self.ip_truncated),
            ("ip_malformed", self.ip_malformed),
            ("transport_truncated", self.transport_truncated),
            ("tcp_malformed", self.tcp_malformed),
            ("unsupported_linktype", self.unsupported_linktype),
        ]
    }
}

/// A captured frame as the capture layer hands it over: borrowed bytes plus their metadata.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    pub linktype: i32,
    /// Length on the wire (`len` in the record header).
    pub orig_len: u32,
    /// The captured bytes (`caplen` of them).
    pub data: &'a [u8],
    /// 1-based packet number in its file.
    pub pcap_cnt: u64,
}

/// Decodes one frame.
pub fn decode(frame: &Frame<'_>) -> Result<PacketSummary, DecodeError> {
    let mut s = PacketSummary::EMPTY;
    decode_into(frame, &mut s)?;
    Ok(s)
}

/// Decodes `frame` onto the end of `batch`, in place (see [`decode_into`]), and counts the
/// outcome in `stats`. On an error `batch` is as it was. What the capture loops do per frame.
#[inline]
pub fn decode_append(
    frame: &Frame<'_>,
    batch: &mut Vec<PacketSummary>,
    stats: &mut DecodeStats,
) -> Result<(), DecodeError> {
    batch.push(PacketSummary::EMPTY);
    let n = batch.len();
    let r = decode_into(frame, &mut batch[n - 1]);
    stats.record_ref(r.map(|()| &batch[n - 1]));
    if r.is_err() {
        batch.pop();
    }
    r
}

/// [`decode`] into `out`, field by field (on an error `out` holds some of them). The capture
/// loops decode straight into their batch: a summary built elsewhere and copied in had its
/// narrow field writes read back by the copy's wide loads, which stalled store forwarding.
#[inline]
pub fn decode_into(frame: &Frame<'_>, out: &mut PacketSummary) -> Result<(), DecodeError> {
    let mut vlans = Vlans::NONE;
    let link::Network { offset, version } = link::network(frame.linktype, frame.data, &mut vlans)?;
    let ip_bytes = frame.data.get(offset..).ok_or(DecodeError::LinkTruncated)?;
    // The link layer said which IP version follows: a packet that says otherwise is bogus
    // (the kernel drops it; so do we).
    match (version, ip_bytes.first()) {
        (Some(v), Some(b)) if b >> 4 != v => return Err(DecodeError::IpVersion),
        (_, None) => return Err(DecodeError::IpTruncated),
        _ => {}
    }
    decode_ip_into(ip_bytes, out)?;
    out.ts = frame.ts;
    out.pcap_cnt = frame.pcap_cnt;
    out.linktype = u16::try_from(frame.linktype).unwrap_or(u16::MAX);
    out.orig_len = frame.orig_len;
    out.vlans = vlans;
    out.truncated |= (frame.data.len() as u64) < u64::from(frame.orig_len);
    Ok(())
}

/// Decodes an IP packet (IPv4 or IPv6 by its version nibble) and its transport header.
/// Time, link fields and VLANs are left at their defaults for [`decode`] to fill in.
pub fn decode_ip(bytes: &[u8]) -> Result<PacketSummary, DecodeError> {
    let mut s = PacketSummary::EMPTY;
    decode_ip_into(bytes, &mut s)?;
    Ok(s)
}

/// [`decode_ip`] into `out`: the IP and transport fields.
#[inline(always)]
fn decode_ip_into(bytes: &[u8], out: &mut PacketSummary) -> Result<(), DecodeError> {
    if let Some(r) = decode_ipv4_plain_into(bytes, out) {
        return r;
    }
    if let Some(r) = decode_ipv6_plain_into(bytes, out) {
        return r;
    }
    decode_ip_general(bytes, out)
}

mod ipv6_field {
    use super::Field;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
    pub const LEN: usize = 40;
}

/// The common IPv6 case read directly: the fixed header followed at once by TCP, UDP or
/// ICMPv6 (no extension header). `None` sends everything else to the general decoder, which
/// gives the same summary for these packets too (a test compares them).
#[inline(always)]
fn decode_ipv6_plain_into(
    bytes: &[u8],
    out: &mut PacketSummary,
) -> Option<Result<(), DecodeError>> {
    use ipv6_field as f;
    let h = bytes.get(..f::LEN)?;
    let nh = h[f::NEXT_HEADER];
    if h[0] >> 4 != 6 || !matches!(nh, 6 | 17 | 58) {
        return None;
    }
    let plen = usize::from(be16(h, f::PAYLOAD_LEN)?);
    // A payload length of 0 (jumbogram, segmentation offload) states nothing.
    let stated = if plen == 0 { 0 } else { f::LEN + plen };
    let (payload, ip_len, incomplete) = ip_payload(bytes, f::LEN, stated);
    let addr = |r: Field| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[r]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let ip = IpParts {
        src: addr(f::SRC),
        dst: addr(f::DST),
        ip_len,
        fragment: None,
        proto: nh,
    };
    Some(summarise_into(ip, payload, incomplete, out))
}

mod ipv4_field {
    use super::Field;
    pub const TOTAL_LEN: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLAGS_FRAG: Field = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
    pub const MIN_LEN: usize = 20;
    pub const AUTH: u8 = 51;
}

/// The common case read directly: IPv4 without options (IHL 5) and without an authentication
/// header, whole header captured. `None` sends everything else to the general decoder, which
/// gives the same summary for these packets too (a test compares them on every packet of the
/// property test's frames).
#[inline(always)]
fn decode_ipv4_plain_into(
    bytes: &[u8],
    out: &mut PacketSummary,
) -> Option<Result<(), DecodeError>> {
    use ipv4_field as f;
    let h = bytes.get(..f::MIN_LEN)?;
    if h[0] != 0x45 || h[f::PROTOCOL] == f::AUTH {
        return None;
    }
    let total = usize::from(be16(h, f::TOTAL_LEN)?);
    if total != 0 && total < f::MIN_LEN {
        return Some(Err(DecodeError::IpMalformed));
    }
    let (payload, ip_len, incomplete) = ip_payload(bytes, f::MIN_LEN, total);
    let flags_frag = be16(h, f::FLAGS_FRAG)?;
    let (more, offset) = (flags_frag & 0x2000 != 0, flags_frag & 0x1fff);
    let fragment = if more || offset != 0 {
        Some(Fragment {
            id: u32::from(be16(h, f::IDENT)?),
            offset,
            more,
        })
    } else {
        None
    };
    let addr = |r: Field| {
        IpAddr::V4(Ipv4Addr::new(
            h[r.start],
            h[r.start + 1],
            h[r.start + 2],
            h[r.start + 3],
        ))
    };
    let ip = IpParts {
        src: addr(f::SRC),
        dst: addr(f::DST),
        ip_len,
        fragment,
        proto: h[f::PROTOCOL],
    };
    Some(summarise_into(ip, payload, incomplete, out))
}

/// The payload of an IP packet of `bytes` with a `header`-byte header and a `stated` total
/// length (header included; 0 when the header states none: segmentation offload, jumbograms),
/// the IP-layer length to count, and whether the capture cut the payload short. Without a
/// stated length the payload is what was captured, as the general path has it.
#[inline(always)]
fn ip_payload(bytes: &[u8], header: usize, stated: usize) -> (&[u8], u32, bool) {
    let rest = &bytes[header..];
    if stated == 0 {
        (rest, bytes.len() as u32, false)
    } else if stated > bytes.len() {
        (rest, stated as u32, true)
    } else {
        (&bytes[header..stated], stated as u32, false)
    }
}

/// What the IP layer told us, for [`summarise_into`].
struct IpParts {
    src: IpAddr,
    dst: IpAddr,
    ip_len: u32,
    fragment: Option<Fragment>,
    proto: u8,
}

/// The IP and transport fields of `out` for an IP packet whose transport header starts
/// `payload` (`incomplete`: the IP payload was cut short); the other fields are left as they
/// are. Later fragments carry no transport header.
#[inline(always)]
fn summarise_into(
    ip: IpParts,
    payload: &[u8],
    incomplete: bool,
    out: &mut PacketSummary,
) -> Result<(), DecodeError> {
    let later_fragment = ip.fragment.is_some_and(|f| f.offset != 0);
    let transport_cut = if later_fragment {
        out.transport = Transport::None;
        out.tcp_flags = 0;
        false
    } else {
        decode_transport_into(ip.proto, payload, out)?
    };
    out.ip_len = ip.ip_len;
    out.src = ip.src;
    out.dst = ip.dst;
    out.proto = ip.proto;
    out.fragment = ip.fragment;
    out.truncated = incomplete || transport_cut;
    Ok(())
}

/// Any IP packet, through etherparse's lax slicing.
fn decode_ip_general(bytes: &[u8], out: &mut PacketSummary) -> Result<(), DecodeError> {
    use etherparse::err::ip::{HeaderError, LaxHeaderSliceError};
    let (ip, stop) = LaxIpSlice::from_slice(bytes).map_err(|e| match e {
        LaxHeaderSliceError::Len(_) => DecodeError::IpTruncated,
        LaxHeaderSliceError::Content(HeaderError::UnsupportedIpVersion { .. }) => {
            DecodeError::IpVersion
        }
        LaxHeaderSliceError::Content(_) => DecodeError::IpMalformed,
    })?;
    if let Some((err, _layer)) = stop {
        // An extension header (IPv6 ext or IPv4 AH) is cut off or malformed: we cannot tell
        // which transport follows, so there is nothing reliable to summarise.
        use etherparse::err::ipv6_exts::HeaderSliceError;
        return Err(match err {
            HeaderSliceError::Len(_) => DecodeError::IpTruncated,
            HeaderSliceError::Content(_) => DecodeError::IpMalformed,
        });
    }
    let payload = ip.payload();
    let (src, dst, ip_len, fragment) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            let fragment = h.is_fragmenting_payload().then(|| Fragment {
                id: u32::from(h.identification()),
                offset: h.fragments_offset().value(),
                more: h.more_fragments(),
            });
            let total = u32::from(h.total_len());
            let header_len = u32::from(h.ihl()) * 4;
            // A total length of 0 is what segmentation offload (TSO, BIG TCP) leaves in
            // captures: use what was captured. Anything else below the header is bogus.
            let ip_len = if total == 0 {
                bytes.len() as u32
            } else if total < header_len {
                return Err(DecodeError::IpMalformed);
            } else {
                total
            };
            (
                IpAddr::V4(Ipv4Addr::from(h.source())),
                IpAddr::V4(Ipv4Addr::from(h.destination())),
                ip_len,
                fragment,
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            let fragment = v6
                .extensions()
                .clone()
                .into_iter()
                .find_map(|ext| match ext {
                    Ipv6ExtensionSlice::Fragment(f)
                        if f.more_fragments() || f.fragment_offset().value() != 0 =>
                    {
                        Some(Fragment {
                            id: f.identification(),
                            offset: f.fragment_offset().value(),
                            more: f.more_fragments(),
                        })
                    }
                    _ => None,
                });
            let plen = u32::from(h.payload_length());
            let ip_len = if plen == 0 {
                bytes.len() as u32
            } else {
                plen + 40
            };
            (
                IpAddr::V6(Ipv6Addr::from(h.source())),
                IpAddr::V6(Ipv6Addr::from(h.destination())),
                ip_len,
                fragment,
            )
        }
    };
    let ip = IpParts {
        src,
        dst,
        ip_len,
        fragment,
        proto: payload.ip_number.0,
    };
    summarise_into(ip, payload.payload, payload.incomplete, out)
}

mod field {
    use super::Field;
    /// TCP, UDP and SCTP all start with source and destination port.
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    /// TCP data offset (high nibble) and flags.
    pub const TCP_DATA_OFFSET: usize = 12;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_MIN_LEN: usize = 20;
    pub const UDP_LEN: usize = 8;
    /// ICMP and ICMPv6: type, code.
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CODE: usize = 1;
}

/// Reads ports/flags or ICMP type/code into `out.transport` and `out.tcp_flags`; returns
/// whether the header was cut short (but still usable). Written where they stay: returned as
/// a tuple, the transport was stored in byte pieces and read back whole, which the CPU cannot
/// forward (a fifth of `decode_into`'s samples on small packets).
#[inline(always)]
fn decode_transport_into(
    proto: u8,
    p: &[u8],
    out: &mut PacketSummary,
) -> Result<bool, DecodeError> {
    let ports = |p: &[u8]| -> Option<Transport> {
        Some(Transport::Ports {
            src: be16(p, field::SRC_PORT)?,
            dst: be16(p, field::DST_PORT)?,
        })
    };
    let (transport, flags, cut) = match proto {
        x if x == ip_number::TCP.0 => {
            let t = ports(p).ok_or(DecodeError::TransportTruncated)?;
            match (p.get(field::TCP_DATA_OFFSET), p.get(field::TCP_FLAGS)) {
                (Some(&off), Some(&flags)) => {
                    if off >> 4 < 5 {
                        return Err(DecodeError::TcpMalformed);
                    }
                    let cut = p.len() < field::TCP_MIN_LEN.max(usize::from(off >> 4) * 4);
                    (t, flags, cut)
                }
                // Ports but no flags: the flow is still known.
                _ => (t, 0, true),
            }
        }
        x if x == ip_number::UDP.0 || x == ip_number::SCTP.0 => {
            let t = ports(p).ok_or(DecodeError::TransportTruncated)?;
            (t, 0, x == ip_number::UDP.0 && p.len() < field::UDP_LEN)
        }
        x if x == ip_number::ICMP.0 || x == ip_number::IPV6_ICMP.0 => {
            match (p.get(field::ICMP_TYPE), p.get(field::ICMP_CODE)) {
                (Some(&icmp_type), Some(&code)) => (Transport::Icmp { icmp_type, code }, 0, false),
                _ => return Err(DecodeError::TransportTruncated),
            }
        }
        _ => (Transport::None, 0, false),
    };
    out.transport = transport;
    out.tcp_flags = flags;
    Ok(cut)
}

#[cfg(test)]
pub(crate) fn decode_ip_both(
    bytes: &[u8],
) -> (
    Option<Result<PacketSummary, DecodeError>>,
    Result<PacketSummary, DecodeError>,
) {
    let mut fast = PacketSummary::EMPTY;
    let r = decode_ipv4_plain_into(bytes, &mut fast)
        .or_else(|| decode_ipv6_plain_into(bytes, &mut fast));
    let mut general = PacketSummary::EMPTY;
    let g = decode_ip_general(bytes, &mut general).map(|()| general);
    (r.map(|r| r.map(|()| fast)), g)
}

#[cfg(test)]
mod tests;
