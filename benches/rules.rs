//! Rule-evaluation micro-benchmark: `rules::eval::Evaluator::evaluate` on the embedded default
//! rules (the baseline) and on the defaults plus thousands of generated rules that cannot match
//! the traffic, in the same run.
//!
//! `cargo bench --bench rules`. The input is the evaluation events of the pipeline bench's
//! SPAN-like mix (`mixgen::span_mix_with`): the packets that create a flow or are its first
//! pure SYN, the only ones the engine evaluates (8,192 of them, each with its flow as
//! `FlowTable::track` left it). About a third of the TCP flows go to AI ports (`ai-port-syn`
//! matches) and 5% leave the AI subnet (`ai-egress` matches). Criterion reports time per batch and
//! events per second; quote each rule set as a ratio to `default`:
//!
//! - `default`: `rules/default.toml`, as `RuleSet::embedded` compiles it (the engine's rules
//!   without `--rules`).
//! - `ports_1000`, `ports_10000`: the defaults plus 1,000 or 10,000 rules, half
//!   `new-connection`, half `egress`, each on its own destination port (31000 up, a port the mix
//!   never uses) and its own source network (a /24 in 100.64.0.0/10, which the mix never uses).
//! - `nets_1000`: the defaults plus 1,000 such rules without `dest_port` (networks only).
//!
//! Every rule set yields the same matches (checked before measuring).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use exfilwatch::decode::{decode, linktype, Frame, PacketSummary};
use exfilwatch::flow::{Flow, FlowConfig, FlowTable, Tracked};
use exfilwatch::rules::eval::{Evaluator, Match};
use exfilwatch::rules::{compile_files, RuleSet, DEFAULT_RULES, DEFAULT_RULES_NAME};
use exfilwatch::time::Timestamp;

#[path = "mixgen.rs"]
mod mixgen;

/// Evaluation events per iteration.
const EVENTS: usize = 8192;

/// One evaluation: a packet, its flow as tracking left it, and what tracking said.
struct Event {
    p: PacketSummary,
    flow: Flow,
    t: Tracked,
}

/// The first `n` packets of the mix that the engine would evaluate rules on.
fn events(n: usize) -> Vec<Event> {
    let mut table = FlowTable::new(FlowConfig::default());
    let mut out = Vec::with_capacity(n);
    let mut cnt = 0u64;
    // Every flow of the mix starts with a packet that creates it: n events come within the
    // first n packets or so; generate plenty and stop keeping once there are enough.
    mixgen::span_mix_with(4 * n as u64, |ts_us, data| {
        cnt += 1;
        if out.len() == n {
            return Ok(());
        }
        let frame = Frame {
            ts: Timestamp(ts_us as i64 * 1000),
            linktype: linktype::ETHERNET,
            orig_len: data.len() as u32,
            data,
            pcap_cnt: cnt,
        };
        let p = decode(&frame).expect("every generated frame decodes");
        table.advance(p.ts);
        let t = table.track(&p).expect("no fragments in the mix");
        if t.created || t.first_syn {
            let flow = table.get(t.slot).expect("tracked flow").clone();
            out.push(Event { p, flow, t });
        }
        Ok(())
    })
    .expect("in-memory generation cannot fail");
    assert_eq!(out.len(), n, "enough evaluation events");
    out
}

/// The default rules plus `n` generated rules that no packet of the mix matches: alternately
/// `new-connection` and `egress`, each with its own source network and (if `ports`) its own
/// destination port.
fn rule_set(n: usize, ports: bool) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        let kind = if i % 2 == 0 {
            "new-connection"
        } else {
            "egress"
        };
        let net = format!("100.{}.{}.0/24", 64 + i / 256, i % 256);
        text.push_str(&format!(
            "[[rule]]\nid = \"gen-{i}\"\nkind = \"{kind}\"\nsrc = \"{net}\"\nseverity = \"low\"\n"
        ));
        if ports {
            text.push_str(&format!("dest_port = {}\n", 31_000 + i));
        }
    }
    let mut files = vec![(DEFAULT_RULES_NAME.to_string(), DEFAULT_RULES.to_string())];
    if n > 0 {
        files.push(("generated.toml".to_string(), text));
    }
    compile_files(&files).expect("generated rules compile")
}

fn eval_all(rules: &RuleSet, eval: &Evaluator, events: &[Event], out: &mut Vec<Match>) -> usize {
    let mut n = 0;
    for e in events {
        out.clear();
        eval.evaluate(&rules.rules, &e.p, &e.flow, &e.t, out);
        n += out.len();
    }
    n
}

/// The ids of the rules each event matches.
fn matched_ids(rules: &RuleSet, events: &[Event]) -> Vec<Vec<String>> {
    let eval = Evaluator::new(rules);
    let mut out = Vec::new();
    events
        .iter()
        .map(|e| {
            out.clear();
            eval.evaluate(&rules.rules, &e.p, &e.flow, &e.t, &mut out);
            out.iter().map(|m| rules.rules[m.rule].id.clone()).collect()
        })
        .collect()
}

fn bench_rules(c: &mut Criterion) {
    let events = events(EVENTS);
    let default = RuleSet::embedded().expect("embedded rules compile");
    let sets = [
        ("default", default),
        ("ports_1000", rule_set(1_000, true)),
        ("ports_10000", rule_set(10_000, true)),
        ("nets_1000", rule_set(1_000, false)),
    ];
    let want = matched_ids(&sets[0].1, &events);
    for (name, rules) in &sets[1..] {
        assert_eq!(
            matched_ids(rules, &events),
            want,
            "{name}: the generated rules match nothing"
        );
    }
    let count = |id: &str| want.iter().flatten().filter(|m| *m == id).count();
    println!(
        "rules: {} events; matches with every rule set: {} ai-port-syn, {} ai-egress",
        events.len(),
        count("ai-port-syn"),
        count("ai-egress"),
    );

    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(events.len() as u64));
    for (name, rules) in &sets {
        if *name == "nets_1000" {
            // Two orders of magnitude slower: fewer, flat samples keep it within seconds.
            g.sample_size(10);
            g.sampling_mode(SamplingMode::Flat);
        }
        let eval = Evaluator::new(rules);
        let mut out = Vec::new();
        g.bench_function(*name, |b| {
            b.iter(|| black_box(eval_all(rules, &eval, black_box(&events), &mut out)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_rules
}
criterion_main!(benches);
