//! Whole-pipeline benchmark: exfilwatch against the bare libpcap read loop, on captures this
//! benchmark writes itself (deterministic), as ratios measured in the same run.
//!
//! `cargo bench --bench pipeline` (set `EXFW_BENCH_PACKETS` for a smaller mix, default 2M;
//! `EXFW_BENCH_RUNS`, default 5; `EXFW_BENCH_CAPTURES=FILE[:FILE...]` to measure those
//! capture files instead of the generated ones, with `EXFW_BENCH_RULES=FILE` for rules other
//! than the embedded defaults). Prints, for each capture, the median wall time of the bare
//! loop and of `exfilwatch read` (JSON alerts to a file) and their ratio, the same for the
//! best run of each, packets per second, alerts per second, and peak RSS.
//!
//! Captures: the SPAN-like mix (`mixgen::span_mix`: 641-byte frames on average); the same mix
//! with payloads cut to a 25th (93-byte frames: the same per-packet work on a seventh of the
//! bytes, the regime of the "2M small packets in about 0.14 s"); the 1M-SYN flood with
//! the default rules, and with a rule every SYN matches; and floods of other shapes with the
//! default rules (random IPv6 sources, AI hosts to the internet, the flood as pcapng).
//!
//! Two bare loops: the baseline of the targets (libpcap as it comes: its stdio stream reads
//! 4 KiB at a time), and the same loop through exfilwatch's capture layer, which gives libpcap
//! a 64 KiB stdio buffer and reads the plain records of a classic pcap file itself (see
//! `src/capture/plain.rs`). The second ratio says what the rest of exfilwatch costs.
//!
//! Each thread's work alone, on one thread, as ratios to the bare loop: reading and decoding
//! (the capture thread: the capture layer and `decode_append` into the pipeline's batches), and
//! the engine over those batches decoded beforehand (the engine thread, alerts to a file through
//! the writer thread). exfilwatch's wall time cannot be below the larger of the two; the
//! pipeline overlaps them on two cores.
//!
//! Two floors, also as ratios to the bare loop, for what any reader that does the job must
//! spend besides reading: writing as many bytes as exfilwatch's alerts to a new file, in the
//! writer's 256 KiB writes from one reused buffer, and bringing in as much fresh memory as
//! exfilwatch's peak RSS (allocated and filled, so every page is faulted in once).

use exfilwatch::pipeline::FILE_BATCH;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "mixgen.rs"]
mod mixgen;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

fn bare_loop(path: &Path) -> (u64, Duration) {
    let t = Instant::now();
    let mut cap = pcap::Capture::from_file(path).expect("open capture");
    let mut n = 0u64;
    loop {
        match cap.next_packet() {
            Ok(_) => n += 1,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => panic!("{e}"),
        }
    }
    (n, t.elapsed())
}

/// The bare loop through exfilwatch's capture layer, as the capture thread reads (in a classic
/// pcap file our plain-record reader, else libpcap with our stdio buffer and frames through
/// `pcap_dispatch` in batches).
fn buffered_loop(path: &Path) -> (u64, Duration) {
    let t = Instant::now();
    let mut src =
        exfilwatch::capture::FileSource::open(path.to_str().unwrap()).expect("open capture");
    let mut n = 0u64;
    while src.read_frames(FILE_BATCH, |_| n += 1).expect("read") > 0 {}
    (n, t.elapsed())
}

/// Reads and decodes `path` into batches of [`FILE_BATCH`] as the capture thread does, handing each
/// full batch, and the last one, to `full` (which empties it); returns the records read.
fn decode_batches(
    path: &Path,
    mut full: impl FnMut(&mut Vec<exfilwatch::decode::PacketSummary>),
) -> u64 {
    use exfilwatch::decode::{decode_append, DecodeStats};
    let mut src =
        exfilwatch::capture::FileSource::open(path.to_str().unwrap()).expect("open capture");
    let mut batch = Vec::with_capacity(FILE_BATCH);
    let mut stats = DecodeStats::default();
    let mut n = 0u64;
    loop {
        let room = FILE_BATCH.saturating_sub(batch.len());
        let read = src
            .read_frames(room, |frame| {
                n += 1;
                let _ = decode_append(&frame, &mut batch, &mut stats);
            })
            .expect("read");
        if batch.len() >= FILE_BATCH {
            full(&mut batch);
        }
        if read == 0 {
            break;
        }
    }
    full(&mut batch);
    n
}

/// The capture thread's work alone: the capture layer and decoding into batches (emptied when
/// full, as the pipeline hands them over), on this thread.
fn read_and_decode(path: &Path) -> (u64, Duration) {
    let t = Instant::now();
    let n = decode_batches(path, |b| {
        std::hint::black_box(&*b);
        b.clear();
    });
    (n, t.elapsed())
}

/// Every summary of `path`, in the pipeline's batches.
fn decoded_batches(path: &Path) -> Vec<Vec<exfilwatch::decode::PacketSummary>> {
    let mut batches = Vec::new();
    decode_batches(path, |b| {
        batches.push(std::mem::replace(b, Vec::with_capacity(FILE_BATCH)))
    });
    batches
}

/// The engine thread's work alone: exfilwatch's engine over `batches` (decoded beforehand),
/// JSON alerts appended to a new file at `out` through the writer thread, on this thread.
fn engine_alone(
    batches: &[Vec<exfilwatch::decode::PacketSummary>],
    path: &Path,
    rules: Option<&Path>,
    out: &Path,
) -> Duration {
    use exfilwatch::alert::{AlertWriter, Format, Output};
    use exfilwatch::rules::RuleSet;
    let rules = match rules {
        Some(r) => RuleSet::load(&[r.to_path_buf()]).expect("rules"),
        None => RuleSet::embedded().expect("embedded rules"),
    };
    let _ = std::fs::remove_file(out);
    let output = Output::append(out).expect("alert output");
    let file: std::sync::Arc<str> = std::sync::Arc::from(path.to_string_lossy().as_ref());
    let t = Instant::now();
    let mut engine = exfilwatch::engine::Engine::new(rules, AlertWriter::new(Format::Json, output));
    for b in batches {
        engine.process_batch(b, &file).expect("engine");
    }
    engine.finish().expect("finish");
    drop(engine);
    let elapsed = t.elapsed();
    let _ = std::fs::remove_file(out);
    elapsed
}

/// Writes as many bytes as `bytes` holds to a new file at `out` as exfilwatch's writer does:
/// 256 KiB writes from one buffer it reuses (the writer formats into its own, so the kernel
/// copies from memory in cache; writing straight from `bytes` would have it read half a
/// gigabyte that is in no cache any more). The page cache's cost does not depend on the
/// bytes, so the buffer holds the first 256 KiB of them throughout. Removes the file after.
fn write_floor(bytes: &[u8], out: &Path) -> Duration {
    use std::io::Write;
    let _ = std::fs::remove_file(out);
    let buf = bytes[..bytes.len().min(256 << 10)].to_vec();
    let t = Instant::now();
    let mut f = std::fs::File::create(out).expect("create floor output");
    let mut left = bytes.len();
    while left > 0 {
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).expect("write floor output");
        left -= n;
    }
    drop(f);
    let elapsed = t.elapsed();
    let _ = std::fs::remove_file(out);
    elapsed
}

/// Allocates and fills `kib` KiB of fresh memory, then frees it.
fn memory_floor(kib: i64) -> Duration {
    let t = Instant::now();
    let v = vec![0x5au8; kib.max(0) as usize * 1024];
    std::hint::black_box(&v);
    drop(v);
    t.elapsed()
}

struct Run {
    wall: Duration,
    max_rss_kib: i64,
    alerts: u64,
    /// The alert file's bytes.
    alert_bytes: Vec<u8>,
}

/// Runs `exfilwatch read` over `path` with JSON alerts to a new file at `out`, read back (the
/// alerts are counted in it) and removed: a flood's is half a gigabyte of dirty page cache,
/// which the kernel would write back while the next run is timed.
fn exfilwatch(path: &Path, rules: Option<&Path>, out: &Path) -> Run {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new(BIN);
    cmd.args(["read", "--quiet", "--alerts"]).arg(out);
    if let Some(r) = rules {
        cmd.arg("--rules").arg(r);
    }
    cmd.arg(path);
    let t = Instant::now();
    let mut child = cmd.spawn().expect("run exfilwatch");
    // The child's own high-water mark: VmHWM belongs to its address space (rusage's maxrss of
    // children is the largest of all children so far, and even wait4's for this child counts
    // the bench's own pages from before the exec: 1,064 MiB for the flood, tried).
    let hwm = |pid: u32| -> Option<i64> {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let l = st.lines().find(|l| l.starts_with("VmHWM:"))?;
        l.split_whitespace().nth(1)?.parse().ok()
    };
    let mut max_rss_kib = 0;
    let status = loop {
        if let Some(k) = hwm(child.id()) {
            max_rss_kib = max_rss_kib.max(k);
        }
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = t.elapsed();
    assert!(
        status.code().is_some_and(|c| c <= 1),
        "exfilwatch failed: {status}"
    );
    let alert_bytes = std::fs::read(out).unwrap_or_default();
    let _ = std::fs::remove_file(out);
    Run {
        wall,
        max_rss_kib,
        alerts: alert_bytes.iter().filter(|&&c| c == b'\n').count() as u64,
        alert_bytes,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-captures");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn measure(name: &str, path: &Path, rules: Option<&Path>, runs: usize) {
    let out = dir().join(format!("{name}.alerts.json"));
    let mut bare = Vec::new();
    let mut buffered = Vec::new();
    let mut decoding = Vec::new();
    let mut engine = Vec::new();
    let mut ours = Vec::new();
    let mut written = Vec::new();
    let mut faulted = Vec::new();
    let mut last = None;
    let mut packets = 0;
    // Warm the page cache (and learn the alert bytes and peak RSS the floors need), then
    // interleave all of them so drift hits each alike.
    let _ = bare_loop(path);
    let warm = exfilwatch(path, rules, &out);
    let floor_out = dir().join("floor.out");
    let batches = decoded_batches(path);
    for _ in 0..runs {
        let (n, t) = bare_loop(path);
        packets = n;
        bare.push(t);
        let (m, t) = buffered_loop(path);
        assert_eq!(m, n, "both loops read every packet");
        buffered.push(t);
        let (m, t) = read_and_decode(path);
        assert_eq!(m, n, "read and decode read every packet");
        decoding.push(t);
        engine.push(engine_alone(&batches, path, rules, &floor_out));
        let r = exfilwatch(path, rules, &out);
        ours.push(r.wall);
        // Its alerts are counted: keep no half gigabyte of them through the next runs.
        last = Some(Run {
            alert_bytes: Vec::new(),
            ..r
        });
        written.push(write_floor(&warm.alert_bytes, &floor_out));
        faulted.push(memory_floor(warm.max_rss_kib));
    }
    drop(batches);
    // The best of the runs too: on a shared machine noise only ever adds time.
    let (bb, ob) = (*bare.iter().min().unwrap(), *ours.iter().min().unwrap());
    let bufb = *buffered.iter().min().unwrap();
    let (b, bufm, o) = (median(bare), median(buffered), median(ours));
    let r = last.unwrap();
    println!(
        "{name}: {packets} packets | bare loop {:.3} s | exfilwatch {:.3} s | ratio {:.2} (best runs {:.3} / {:.3} s: {:.2}) | {:.2} Mpps | {} alerts ({:.2} M alerts/s) | peak RSS {} MiB",
        b.as_secs_f64(),
        o.as_secs_f64(),
        o.as_secs_f64() / b.as_secs_f64(),
        bb.as_secs_f64(),
        ob.as_secs_f64(),
        ob.as_secs_f64() / bb.as_secs_f64(),
        packets as f64 / o.as_secs_f64() / 1e6,
        r.alerts,
        r.alerts as f64 / o.as_secs_f64() / 1e6,
        r.max_rss_kib / 1024,
    );
    println!(
        "    bare loop through exfilwatch's capture layer {:.3} s: exfilwatch is {:.2} times it (best runs {:.3} / {:.3} s: {:.2})",
        bufm.as_secs_f64(),
        o.as_secs_f64() / bufm.as_secs_f64(),
        bufb.as_secs_f64(),
        ob.as_secs_f64(),
        ob.as_secs_f64() / bufb.as_secs_f64(),
    );
    let (dm, em) = (median(decoding), median(engine));
    println!(
        "    each thread's work alone, on one thread: read and decode {:.3} s ({:.2} times the bare loop), engine {:.3} s ({:.2} times)",
        dm.as_secs_f64(),
        dm.as_secs_f64() / b.as_secs_f64(),
        em.as_secs_f64(),
        em.as_secs_f64() / b.as_secs_f64(),
    );
    let (wm, fm) = (median(written), median(faulted));
    println!(
        "    floors: writing the {} MB of alerts {:.3} s ({:.2} times the bare loop), faulting in {} MiB {:.3} s ({:.2} times)",
        warm.alert_bytes.len() / 1_000_000,
        wm.as_secs_f64(),
        wm.as_secs_f64() / b.as_secs_f64(),
        warm.max_rss_kib / 1024,
        fm.as_secs_f64(),
        fm.as_secs_f64() / b.as_secs_f64(),
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with --bench absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let packets: u64 = std::env::var("EXFW_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let runs: usize = std::env::var("EXFW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let d = dir();
    if let Ok(list) = std::env::var("EXFW_BENCH_CAPTURES") {
        // Captures of one's own: the same measures, nothing generated.
        let rules = std::env::var("EXFW_BENCH_RULES").ok().map(PathBuf::from);
        let rules_name = rules.as_ref().map_or("default rules".to_string(), |r| {
            format!("rules {}", r.display())
        });
        println!("exfilwatch pipeline benchmark ({runs} runs, medians, whole-process wall time)");
        for path in list.split(':').filter(|p| !p.is_empty()) {
            let path = Path::new(path);
            // The name also names the alert file in the bench directory: no separators.
            let file = path
                .file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into());
            let name = format!("{file}, {rules_name}").replace('/', "_");
            measure(&name, path, rules.as_deref(), runs);
        }
        return;
    }
    let mix = d.join(format!("span-mix-{packets}.pcap"));
    if !mix.exists() {
        mixgen::span_mix(&mix, packets).unwrap();
    }
    let small = d.join(format!("span-mix-small-{packets}.pcap"));
    if !small.exists() {
        mixgen::span_mix_small(&small, packets).unwrap();
    }
    let flood_n = packets / 2;
    let flood = d.join(format!("syn-flood-{flood_n}.pcap"));
    if !flood.exists() {
        mixgen::syn_flood(&flood, flood_n).unwrap();
    }
    // Alert output rate: every SYN of the flood matches an any-port new-connection rule.
    let every_syn = d.join("every-syn.toml");
    std::fs::write(
        &every_syn,
        "[[rule]]\nid = \"every-syn\"\nkind = \"new-connection\"\nseverity = \"info\"\n",
    )
    .unwrap();
    println!("exfilwatch pipeline benchmark ({runs} runs, medians, whole-process wall time)");
    if let Ok(st) = std::fs::read_to_string("/proc/self/status") {
        if let Some(l) = st.lines().find(|l| l.starts_with("VmHWM")) {
            println!("(bench process {l})");
        }
    }
    measure("span-mix, default rules", &mix, None, runs);
    measure("span-mix, small packets, default rules", &small, None, runs);
    measure("syn-flood, default rules", &flood, None, runs);
    measure(
        "syn-flood, every SYN alerts",
        &flood,
        Some(&every_syn),
        runs,
    );
    // Floods of other shapes (captures of one's own may not look like ours): random IPv6
    // sources (every alert's source address at full length), the AI hosts to the internet
    // (`ai-egress`), and our flood as pcapng.
    for (name, kind) in [
        ("syn-flood, IPv6, default rules", mixgen::Flood::V6ToAi),
        ("syn-flood, egress, default rules", mixgen::Flood::Egress),
    ] {
        let slug = format!("{kind:?}").to_lowercase();
        let path = d.join(format!("syn-flood-{slug}-{flood_n}.pcap"));
        if !path.exists() {
            mixgen::flood(&path, kind, flood_n).unwrap();
        }
        measure(name, &path, None, runs);
    }
    let flood_ng = d.join(format!("syn-flood-{flood_n}.pcapng"));
    if !flood_ng.exists() {
        mixgen::to_pcapng(&flood, &flood_ng).unwrap();
    }
    measure("syn-flood as pcapng, default rules", &flood_ng, None, runs);
}
