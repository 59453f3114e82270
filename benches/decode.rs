//! Decoding micro-benchmark: `decode::decode` over a batch of SPAN-like frames, against a
//! baseline loop over the same batch that only touches each frame, in the same run.
//!
//! `cargo bench --bench decode`. The batch is 4,096 consecutive frames of the pipeline bench's
//! SPAN-like mix (`mixgen::span_mix_with`, built in memory), taken a million packets in, where
//! the traffic is steady: Ethernet, about 10% VLAN-tagged, 10% IPv6, 18% UDP to port 53, the
//! rest TCP (data segments, about 1% SYNs, FIN closes). Criterion reports
//! each function's time per batch and frames per second; quote `decode` as a ratio to `touch`
//! (and, for scale, to `etherparse_sliced`, a full header parse by etherparse).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exfilwatch::decode::{self, linktype, tcp_flags, Frame, Transport};
use exfilwatch::time::Timestamp;

#[path = "mixgen.rs"]
mod mixgen;

const FRAMES: usize = 4096;
/// Frames of the mix skipped first: its start is all handshakes (25,000 flows open at once).
const SKIP: usize = 1_000_000;

/// The frames, back to back in one buffer (as a capture buffer holds them).
struct Batch {
    bytes: Vec<u8>,
    /// (start, len, timestamp in µs) of each frame.
    index: Vec<(usize, usize, u64)>,
}

impl Batch {
    /// Frames `skip..skip + n` of the SPAN-like mix.
    fn span_mix(skip: usize, n: usize) -> Batch {
        let mut b = Batch {
            bytes: Vec::new(),
            index: Vec::with_capacity(n),
        };
        let mut i = 0;
        mixgen::span_mix_with((skip + n) as u64, |ts_us, frame| {
            if i >= skip {
                b.index.push((b.bytes.len(), frame.len(), ts_us));
                b.bytes.extend_from_slice(frame);
            }
            i += 1;
            Ok(())
        })
        .expect("in-memory generation cannot fail");
        b
    }

    fn frames(&self) -> Vec<Frame<'_>> {
        self.index
            .iter()
            .enumerate()
            .map(|(i, &(start, len, ts_us))| Frame {
                ts: Timestamp(ts_us as i64 * 1000),
                linktype: linktype::ETHERNET,
                orig_len: len as u32,
                data: &self.bytes[start..start + len],
                pcap_cnt: (SKIP + i) as u64 + 1,
            })
            .collect()
    }
}

/// Prints what the batch holds, and checks every frame decodes (the bench measures the success
/// path, not error returns).
fn describe(frames: &[Frame<'_>]) {
    let (mut vlan, mut v6, mut udp, mut syn_11434) = (0, 0, 0, 0);
    for f in frames {
        let s = decode::decode(f).expect("every generated frame decodes");
        vlan += usize::from(!s.vlans.is_empty());
        v6 += usize::from(s.src.is_ipv6());
        udp += usize::from(s.proto == decode::proto::UDP);
        if let Transport::Ports { dst: 11434, .. } = s.transport {
            syn_11434 += usize::from(tcp_flags::is_pure_syn(s.tcp_flags));
        }
    }
    let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
    let pct = |n: usize| 100.0 * n as f64 / frames.len() as f64;
    println!(
        "decode batch: {} frames, {} bytes (mean {} B); VLAN {:.1}%, IPv6 {:.1}%, UDP {:.1}%, SYN to 11434 {:.2}%",
        frames.len(),
        bytes,
        bytes / frames.len(),
        pct(vlan),
        pct(v6),
        pct(udp),
        pct(syn_11434),
    );
}

fn bench_decode(c: &mut Criterion) {
    let batch = Batch::span_mix(SKIP, FRAMES);
    let frames = batch.frames();
    describe(&frames);

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(frames.len() as u64));

    // Baseline: read each frame's length and first and last header bytes (the loop, the
    // memory traffic of reaching each frame, nothing parsed).
    g.bench_function("touch", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for f in black_box(&frames) {
                let d = f.data;
                acc = acc
                    .wrapping_add(d.len() as u64)
                    .wrapping_add(u64::from(d[0]))
                    .wrapping_add(u64::from(d[d.len().min(54) - 1]));
            }
            acc
        })
    });

    // Reference point: etherparse's zero-copy slicing of every layer (link to transport).
    g.bench_function("etherparse_sliced", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for f in black_box(&frames) {
                ok += u32::from(etherparse::SlicedPacket::from_ethernet(black_box(f.data)).is_ok());
            }
            ok
        })
    });

    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for f in black_box(&frames) {
                ok += u32::from(black_box(decode::decode(f)).is_ok());
            }
            ok
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_decode
}
criterion_main!(benches);
