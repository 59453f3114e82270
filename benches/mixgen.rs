//! Deterministic benchmark captures (shared by the benches; not part of the library).
//!
//! - [`span_mix`]: a SPAN-port-like mix: about `packets` packets over 25,000 concurrently
//!   active TCP/UDP flows, each a small conversation (handshake, data both ways, FIN close);
//!   about a third of the TCP flows go to local-AI ports (about 1% of packets are SYNs to AI
//!   ports), 10% of flows are VLAN-tagged, 10% IPv6, and about 5% start on the AI subnet towards
//!   the internet (a few thousand egress flows).
//! - [`syn_flood`]: `n` SYNs from distinct sources to 10.0.1.20:11434, each a new flow that the
//!   default `ai-port-syn` rule matches.
//! - [`flood`]: floods of other shapes ([`Flood`]): random IPv6 sources to an AI service, or
//!   the AI subnet's hosts opening connections to random internet addresses (each flow
//!   matching `ai-egress`).
//! - [`to_pcapng`] ([`pcapng_of`] in memory): a classic pcap file of these rewritten as pcapng
//!   (one interface, microsecond times), the format dumpcap and Wireshark write.
//!
//! Each has a `_with` form that hands the frames to a callback instead of a pcap file (the
//! criterion micro-benchmarks keep them in memory).

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct PcapWriter {
    w: BufWriter<File>,
}

impl PcapWriter {
    fn create(path: &Path) -> io::Result<PcapWriter> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
        // Classic pcap, microseconds, little-endian, snaplen 65535, Ethernet.
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&65535u32.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { w })
    }

    fn packet(&mut self, ts_us: u64, frame: &[u8]) -> io::Result<()> {
        self.w
            .write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
        self.w
            .write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.w.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.w.write_all(frame)
    }
}

#[derive(Clone, Copy)]
struct FlowSpec {
    v6: bool,
    vlan: Option<u16>,
    udp: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    /// Next step of the conversation script.
    step: u32,
    /// Data segments each way before closing.
    data: u32,
}

const AI_PORTS: [u16; 6] = [11434, 8000, 8080, 1234, 7860, 30000];

fn new_flow(rng: &mut Rng, serial: u64) -> FlowSpec {
    let v6 = rng.below(10) == 0;
    let vlan = (rng.below(10) == 0).then(|| 100 + rng.below(8) as u16);
    let kind = rng.below(100);
    let udp = kind >= 80; // 20% UDP
    let egress = rng.below(20) == 0; // 5% from the AI subnet to the internet
    let to_ai = !udp && !egress && rng.below(3) == 0;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let host = (serial % 60_000) as u16;
    if v6 {
        src[..2].copy_from_slice(&[0xfd, 0x00]);
        src[14..].copy_from_slice(&host.to_be_bytes());
        dst[..2].copy_from_slice(&[0x20, 0x01]);
        dst[15] = rng.below(250) as u8;
    } else if egress {
        src[..4].copy_from_slice(&[10, 0, 1, 2 + rng.below(200) as u8]);
        dst[..4].copy_from_slice(&[93, 184, (rng.below(250)) as u8, 1 + rng.below(250) as u8]);
    } else if to_ai {
        src[..4].copy_from_slice(&[10, 3, (host >> 8) as u8, host as u8]);
        dst[..4].copy_from_slice(&[10, 0, 1, 20 + rng.below(10) as u8]);
    } else {
        src[..4].copy_from_slice(&[10, 3, (host >> 8) as u8, host as u8]);
        dst[..4].copy_from_slice(&[10, 0, 2, 5 + rng.below(50) as u8]);
    }
    let dport = if to_ai {
        AI_PORTS[rng.below(AI_PORTS.len() as u64) as usize]
    } else if udp {
        53
    } else {
        [443, 5432, 6379, 22][rng.below(4) as usize]
    };
    FlowSpec {
        v6,
        vlan,
        udp,
        src,
        dst,
        sport: 1024 + (serial % 60_000) as u16,
        dport,
        step: 0,
        data: 4 + rng.below(40) as u32,
    }
}

fn frame(buf: &mut Vec<u8>, f: &FlowSpec, reverse: bool, flags: u8, payload: usize) {
    buf.clear();
    buf.extend_from_slice(&[2, 0, 0, 0, 0, if reverse { 1 } else { 2 }]);
    buf.extend_from_slice(&[2, 0, 0, 0, 0, if reverse { 2 } else { 1 }]);
    if let Some(v) = f.vlan {
        buf.extend_from_slice(&[0x81, 0x00]);
        buf.extend_from_slice(&v.to_be_bytes());
    }
    let (src, dst, sp, dp) = if reverse {
        (&f.dst, &f.src, f.dport, f.sport)
    } else {
        (&f.src, &f.dst, f.sport, f.dport)
    };
    let l4 = if f.udp { 8 } else { 20 } + payload;
    let proto = if f.udp { 17 } else { 6 };
    if f.v6 {
        buf.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        buf.extend_from_slice(&(l4 as u16).to_be_bytes());
        buf.extend_from_slice(&[proto, 64]);
        buf.extend_from_slice(src);
        buf.extend_from_slice(dst);
    } else {
        buf.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        buf.extend_from_slice(&((20 + l4) as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        buf.extend_from_slice(&src[..4]);
        buf.extend_from_slice(&dst[..4]);
    }
    buf.extend_from_slice(&sp.to_be_bytes());
    buf.extend_from_slice(&dp.to_be_bytes());
    if f.udp {
        buf.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
    } else {
        buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    buf.resize(buf.len() + payload, 0x61);
}

/// Writes the SPAN-like mix; returns the number of packets written.
pub fn span_mix(path: &Path, packets: u64) -> io::Result<u64> {
    let mut w = PcapWriter::create(path)?;
    span_mix_with(packets, |ts_us, frame| w.packet(ts_us, frame))?;
    w.w.flush()?;
    Ok(packets)
}

/// Writes the SPAN-like mix with every payload cut to a 25th (4-56 bytes of TCP data, 2-18 of
/// UDP; 93-byte frames on average against 641): the same flows, packets and times, so the
/// per-packet work is the same while the bytes to read are a seventh.
pub fn span_mix_small(path: &Path, packets: u64) -> io::Result<u64> {
    let mut w = PcapWriter::create(path)?;
    span_mix_scaled(packets, 25, |ts_us, frame| w.packet(ts_us, frame))?;
    w.w.flush()?;
    Ok(packets)
}

/// The SPAN-like mix in memory: calls `emit(timestamp in µs, Ethernet frame)` for each packet,
/// in order (what [`span_mix`] writes).
pub fn span_mix_with(
    packets: u64,
    emit: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    span_mix_scaled(packets, 1, emit)
}

/// [`span_mix_with`] with payload lengths divided by `div`.
fn span_mix_scaled(
    packets: u64,
    div: usize,
    mut emit: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    const ACTIVE: usize = 25_000;
    let mut rng = Rng::new(0x5eed_0001);
    let mut serial = 0u64;
    let mut flows: Vec<FlowSpec> = (0..ACTIVE)
        .map(|_| {
            serial += 1;
            new_flow(&mut rng, serial)
        })
        .collect();
    let mut buf = Vec::with_capacity(1600);
    let mut ts = 1_764_072_000_000_000u64;
    for _ in 0..packets {
        ts += 50; // 20k packets/s of packet time
        let i = rng.below(ACTIVE as u64) as usize;
        let f = flows[i];
        let s = f.step;
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const FIN: u8 = 0x01;
        const PSH: u8 = 0x08;
        let (rev, flags, len, done) = if f.udp {
            (
                s % 2 == 1,
                0,
                (60 + rng.below(400) as usize) / div,
                s + 1 >= 2 * f.data,
            )
        } else {
            match s {
                0 => (false, SYN, 0, false),
                1 => (true, SYN | ACK, 0, false),
                2 => (false, ACK, 0, false),
                x if x < 3 + 2 * f.data => (
                    x % 2 == 1,
                    PSH | ACK,
                    (100 + rng.below(1300) as usize) / div,
                    false,
                ),
                x if x == 3 + 2 * f.data => (false, FIN | ACK, 0, false),
                x if x == 4 + 2 * f.data => (true, FIN | ACK, 0, false),
                _ => (false, ACK, 0, true),
            }
        };
        frame(&mut buf, &f, rev, flags, len);
        emit(ts, &buf)?;
        if done {
            serial += 1;
            flows[i] = new_flow(&mut rng, serial);
        } else {
            flows[i].step += 1;
        }
    }
    Ok(())
}

/// Writes `n` SYNs, each from a new source to 10.0.1.20:11434 ([`Flood::V4ToAi`]).
pub fn syn_flood(path: &Path, n: u64) -> io::Result<u64> {
    flood(path, Flood::V4ToAi, n)
}

/// The SYN flood in memory: calls `emit(timestamp in µs, Ethernet frame)` for each SYN.
pub fn syn_flood_with(n: u64, emit: impl FnMut(u64, &[u8]) -> io::Result<()>) -> io::Result<()> {
    flood_with(Flood::V4ToAi, n, emit)
}

/// A SYN flood: which SYNs.
#[derive(Clone, Copy, Debug)]
pub enum Flood {
    /// The issue's: each from a new IPv4 source (172.16.0.0/12, in order) to 10.0.1.20:11434,
    /// each flow matching `ai-port-syn`.
    V4ToAi,
    /// From random IPv6 sources (2001:db8::/32) to [fd00:0:0:1::14]:11434: long addresses
    /// in every alert, each flow matching `ai-port-syn`.
    V6ToAi,
    /// From the AI subnet's hosts (10.0.1.2-201) to random internet addresses on port 443,
    /// each flow matching `ai-egress`.
    Egress,
}

/// Writes `n` SYNs of `kind` as a classic pcap file; returns `n`.
pub fn flood(path: &Path, kind: Flood, n: u64) -> io::Result<u64> {
    let mut w = PcapWriter::create(path)?;
    flood_with(kind, n, |ts_us, frame| w.packet(ts_us, frame))?;
    w.w.flush()?;
    Ok(n)
}

/// [`flood`] in memory: calls `emit(timestamp in µs, Ethernet frame)` for each SYN.
pub fn flood_with(
    kind: Flood,
    n: u64,
    mut emit: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut rng = Rng::new(0x5eed_f100d);
    let mut buf = Vec::with_capacity(96);
    let mut ts = 1_764_072_000_000_000u64;
    for i in 0..n {
        ts += 1;
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        let (v6, sport, dport) = match kind {
            Flood::V4ToAi => {
                src[..4].copy_from_slice(&[
                    172,
                    16 + ((i >> 16) & 0x0f) as u8,
                    (i >> 8) as u8,
                    i as u8,
                ]);
                dst[..4].copy_from_slice(&[10, 0, 1, 20]);
                (false, 1024 + (i % 60_000) as u16, 11434)
            }
            Flood::V6ToAi => {
                src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                src[4..12].copy_from_slice(&rng.next().to_be_bytes());
                src[12..].copy_from_slice(&(rng.next() as u32).to_be_bytes());
                dst[..2].copy_from_slice(&[0xfd, 0x00]);
                dst[7] = 1;
                dst[15] = 0x14;
                (true, 1024 + (i % 60_000) as u16, 11434)
            }
            Flood::Egress => {
                src[..4].copy_from_slice(&[10, 0, 1, 2 + (i % 200) as u8]);
                let first = [23u8, 34, 52, 93, 104, 142, 151, 185][rng.below(8) as usize];
                let rest = (rng.next() as u32).to_be_bytes();
                dst[..4].copy_from_slice(&[first, rest[1], rest[2], rest[3]]);
                (false, 1024 + ((i / 200) % 60_000) as u16, 443)
            }
        };
        let f = FlowSpec {
            v6,
            vlan: None,
            udp: false,
            src,
            dst,
            sport,
            dport,
            step: 0,
            data: 0,
        };
        frame(&mut buf, &f, false, 0x02, 0);
        emit(ts, &buf)?;
    }
    Ok(())
}

/// A pcapng block of type `ty` (little-endian): `body` padded to 4 bytes, between the block's
/// length written before and after it.
pub fn ng_block(ty: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().next_multiple_of(4);
    let len = (12 + padded) as u32;
    let mut out = Vec::with_capacity(len as usize);
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(8 + padded, 0);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// An Interface Description Block: Ethernet, snap length `snaplen`, no options (so
/// microsecond times).
pub fn ng_idb(snaplen: u32) -> Vec<u8> {
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend_from_slice(&snaplen.to_le_bytes());
    ng_block(1, &body)
}

/// An Enhanced Packet Block: interface `iface`, time `us` in microseconds, `caplen` captured
/// of `len`, then `data` (the captured bytes; fewer than `caplen` in a crafted block).
pub fn ng_epb(iface: u32, us: u64, caplen: u32, len: u32, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(20 + data.len());
    for v in [iface, (us >> 32) as u32, us as u32, caplen, len] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(data);
    ng_block(6, &body)
}

/// `pcap` (a classic pcap file as [`PcapWriter`] writes them: little-endian, microseconds,
/// Ethernet) as little-endian pcapng: a section header, one Ethernet interface with the same
/// snap length, and a packet block of interface 0 per record, with `extra(i)`'s blocks written
/// before the `i`th record's (from 0).
pub fn pcapng_of(pcap: &[u8], mut extra: impl FnMut(usize) -> Vec<u8>) -> io::Result<Vec<u8>> {
    let word = |at: usize| -> io::Result<u32> {
        let b = pcap
            .get(at..at + 4)
            .ok_or_else(|| io::Error::other("pcap cut short"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0)? != 0xa1b2_c3d4 || word(20)? != 1 {
        return Err(io::Error::other(
            "not a little-endian microsecond Ethernet pcap",
        ));
    }
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes()); // section length not given
    let mut out = ng_block(0x0A0D_0D0A, &shb);
    out.extend(ng_idb(word(16)?));
    let (mut at, mut i) = (24, 0);
    while at < pcap.len() {
        out.extend(extra(i));
        let (sec, us, caplen, len) = (word(at)?, word(at + 4)?, word(at + 8)?, word(at + 12)?);
        let data = pcap
            .get(at + 16..at + 16 + caplen as usize)
            .ok_or_else(|| io::Error::other("record cut short"))?;
        let t = u64::from(sec) * 1_000_000 + u64::from(us);
        out.extend(ng_epb(0, t, caplen, len, data));
        at += 16 + caplen as usize;
        i += 1;
    }
    Ok(out)
}

/// Rewrites the classic pcap file `pcap` as pcapng at `path` ([`pcapng_of`]); returns the
/// bytes written.
pub fn to_pcapng(pcap: &Path, path: &Path) -> io::Result<u64> {
    let out = pcapng_of(&std::fs::read(pcap)?, |_| vec![])?;
    std::fs::write(path, &out)?;
    Ok(out.len() as u64)
}
