//! Flow-table micro-benchmark: `FlowTable::advance` + `track` over pre-decoded packet
//! summaries, against a plain `std::collections::HashMap<FlowKey, u32>` lookup-or-insert of the
//! same keys, in the same run.
//!
//! `cargo bench --bench flow_table`. Two groups, each reporting time per packet sequence and
//! packets per second; quote `flow_table` as a ratio to `std_hashmap` of the same group:
//!
//! - `flow_steady`: the pipeline bench's SPAN-like mix (`mixgen::span_mix_with`), packets
//!   200,000..400,000, on a table that first tracked packets 0..200,000 (untimed): about 25,000
//!   flows alive throughout, mostly data segments of established flows, some closing.
//! - `flow_new`: 100,000 SYNs from distinct sources (`mixgen::syn_flood_with`), each a new flow,
//!   on a fresh table each iteration.
//!
//! The baseline computes the same `FlowKey::of` per packet and does one `entry` per packet; it
//! keeps no flow state, no expiry lists and no counters.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use exfilwatch::decode::{decode, linktype, Frame, PacketSummary};
use exfilwatch::flow::{FlowConfig, FlowKey, FlowTable};
use exfilwatch::time::Timestamp;

#[path = "mixgen.rs"]
mod mixgen;

/// Packets tracked (untimed) before the measured ones: the mix opens its 25,000 flows first.
const WARM: usize = 200_000;
/// Packets measured in the steady mix.
const STEADY: usize = 200_000;
/// New flows per iteration of the flood.
const FLOOD: usize = 100_000;

/// Decodes generated frames into summaries, as the capture thread would.
fn summaries(gen: impl FnOnce(&mut dyn FnMut(u64, &[u8]))) -> Vec<PacketSummary> {
    let mut out = Vec::new();
    gen(&mut |ts_us, data| {
        let frame = Frame {
            ts: Timestamp(ts_us as i64 * 1000),
            linktype: linktype::ETHERNET,
            orig_len: data.len() as u32,
            data,
            pcap_cnt: out.len() as u64 + 1,
        };
        out.push(decode(&frame).expect("every generated frame decodes"));
    });
    out
}

fn track_all(table: &mut FlowTable, packets: &[PacketSummary]) -> u32 {
    let mut created = 0u32;
    for p in packets {
        table.advance(p.ts);
        if let Some(t) = table.track(p) {
            created += u32::from(t.created);
        }
    }
    created
}

fn map_all(map: &mut HashMap<FlowKey, u32>, packets: &[PacketSummary]) -> u32 {
    let mut acc = 0u32;
    for p in packets {
        let next = map.len() as u32;
        acc = acc.wrapping_add(*map.entry(FlowKey::of(p).0).or_insert(next));
    }
    acc
}

fn bench_steady(c: &mut Criterion) {
    let all = summaries(|emit| {
        mixgen::span_mix_with((WARM + STEADY) as u64, |ts, f| {
            emit(ts, f);
            Ok(())
        })
        .expect("in-memory generation cannot fail")
    });
    let (warm, steady) = all.split_at(WARM);
    {
        let mut t = FlowTable::new(FlowConfig::default());
        track_all(&mut t, warm);
        let (before, closed, expired) = (t.len(), t.stats().closed, t.stats().expired);
        let created = track_all(&mut t, steady);
        println!(
            "flow_steady: {} packets measured after {} untimed; flows alive {} -> {}; in the measured part {} created, {} closed, {} expired",
            steady.len(),
            warm.len(),
            before,
            t.len(),
            created,
            t.stats().closed - closed,
            t.stats().expired - expired,
        );
    }

    let mut g = c.benchmark_group("flow_steady");
    g.throughput(Throughput::Elements(steady.len() as u64));
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    // Each iteration rebuilds the warm state untimed and times only the steady packets.
    g.bench_function("std_hashmap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut map = HashMap::new();
                map_all(&mut map, warm);
                let t0 = Instant::now();
                black_box(map_all(&mut map, black_box(steady)));
                total += t0.elapsed();
            }
            total
        })
    });
    g.bench_function("flow_table", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut table = FlowTable::new(FlowConfig::default());
                track_all(&mut table, warm);
                let t0 = Instant::now();
                black_box(track_all(&mut table, black_box(steady)));
                total += t0.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn bench_new_flows(c: &mut Criterion) {
    let flood = summaries(|emit| {
        mixgen::syn_flood_with(FLOOD as u64, |ts, f| {
            emit(ts, f);
            Ok(())
        })
        .expect("in-memory generation cannot fail")
    });
    {
        let mut t = FlowTable::new(FlowConfig::default());
        let created = track_all(&mut t, &flood);
        assert_eq!(
            created as usize, FLOOD,
            "every SYN of the flood is a new flow"
        );
        println!("flow_new: {} packets, {created} new flows", flood.len());
    }

    let mut g = c.benchmark_group("flow_new");
    g.throughput(Throughput::Elements(flood.len() as u64));
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    // A fresh, empty map or table per iteration (made and dropped untimed).
    g.bench_function("std_hashmap", |b| {
        b.iter_batched(
            HashMap::new,
            |mut map| {
                black_box(map_all(&mut map, black_box(&flood)));
                map
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("flow_table", |b| {
        b.iter_batched(
            || FlowTable::new(FlowConfig::default()),
            |mut table| {
                black_box(track_all(&mut table, black_box(&flood)));
                table
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_steady, bench_new_flows
}
criterion_main!(benches);
