//! The live pipeline: a capture thread on an interface, the bounded channel, the engine thread.
//!
//! Contract: the capture thread never blocks on the engine: when the channel is full the batch
//! is dropped and counted (`channel_drops`). The kernel hands packets over in ring blocks, when
//! a block fills or 100 ms after its first packet (libpcap without immediate mode, TPACKET_V3,
//! as tcpdump); batches leave at 256 packets, 20 ms after their first packet, or when no further
//! packet is waiting and the engine has nothing queued. The engine flushes the alert output
//! whenever the channel is empty, so an alert reaches the file within about a block timeout of
//! its packet's arrival, also when no further traffic comes. Flows expire on a one-second timer
//! without packets. The stop flag (SIGINT/SIGTERM) makes the capture read what the kernel still
//! holds (until three reads find nothing, at most 0.5 s) and stop; the engine then drains the
//! channel, ends the flows and writes the last alerts and stats. The reopen flag (SIGHUP) makes
//! the engine reopen the alert file by its path.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::{Msg, BATCH, CHANNEL_BATCHES};
use crate::alert::Format;
use crate::capture::{CaptureError, KernelStats, LiveSource};
use crate::decode::{self, DecodeStats, PacketSummary};
use crate::engine::{Engine, EngineStats};
use crate::time::Timestamp;

/// How long a partly filled batch may wait for more packets.
const BATCH_LINGER: Duration = Duration::from_millis(20);
/// How often the capture thread polls libpcap's counters.
const KERNEL_STATS_EVERY: Duration = Duration::from_secs(1);
/// How long a stopping capture goes on reading what the kernel holds, at most.
const DRAIN: Duration = Duration::from_millis(500);
/// The engine's timer: flow expiry without packets, flags, stats.
const TICK: Duration = Duration::from_millis(100);

/// Flags the signal handlers set.
#[derive(Clone, Default)]
pub struct Control {
    /// Stop capturing, drain, finish.
    pub stop: Arc<AtomicBool>,
    /// Reopen the alert file by path.
    pub reopen: Arc<AtomicBool>,
    /// The capture threads' counters, once running (readable even when the engines are
    /// stuck on a blocked output).
    capture: Arc<std::sync::OnceLock<Arc<Vec<Mutex<CaptureCounters>>>>>,
}

impl Control {
    /// What the capture threads counted so far, summed; `None` before the run started.
    pub fn capture_totals(&self) -> Option<CaptureCounters> {
        let all = self.capture.get()?;
        let mut sum = CaptureCounters::default();
        for c in all.iter() {
            if let Ok(c) = c.lock() {
                sum.merge(&c);
            }
        }
        Some(sum)
    }
}

/// What the capture side counted (cumulative).
#[derive(Debug, Clone, Default)]
pub struct CaptureCounters {
    pub packets: u64,
    pub bytes: u64,
    pub kernel: KernelStats,
    /// Packets dropped because the channel to the engine was full.
    pub channel_drops: u64,
    /// Packets a worker skipped because they arrived before it joined the fanout group.
    pub fanout_skipped: u64,
    pub decode: DecodeStats,
}

impl CaptureCounters {
    /// Adds `o` (another worker's counters).
    pub fn merge(&mut self, o: &CaptureCounters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.kernel.received += o.kernel.received;
        self.kernel.dropped += o.kernel.dropped;
        self.kernel.if_dropped += o.kernel.if_dropped;
        self.channel_drops += o.channel_drops;
        self.fanout_skipped += o.fanout_skipped;
        self.decode.merge(&o.decode);
    }
}

/// A statistics snapshot, as printed and as written to the alert stream.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Wall-clock time of the snapshot.
    pub time: Timestamp,
    pub uptime: Duration,
    pub capture: CaptureCounters,
    pub engine: EngineStats,
    pub flows_alive: usize,
    /// Packets captured by each worker (empty with one).
    pub workers: Vec<u64>,
}

impl Stats {
    /// One line of text for standard error.
    pub fn text(&self) -> String {
        let c = &self.capture;
        format!(
            "exfilwatch stats: uptime={}s packets={} bytes={} kernel_received={} kernel_drops={} if_drops={} channel_drops={} processed={} flows_alive={} flows_created={} alerts={} suppressed={}",
            self.uptime.as_secs(),
            c.packets,
            c.bytes,
            c.kernel.received,
            c.kernel.dropped,
            c.kernel.if_dropped,
            c.channel_drops,
            self.engine.packets,
            self.flows_alive,
            self.engine.flows.created,
            self.engine.alerts(),
            self.engine.suppressed(),
        ) + &self.workers_text()
    }

    /// ` workers=P0/P1/… fanout_skipped=N` with several workers, else nothing.
    fn workers_text(&self) -> String {
        if self.workers.is_empty() {
            return String::new();
        }
        let per: Vec<String> = self.workers.iter().map(u64::to_string).collect();
        format!(
            " workers={} fanout_skipped={}",
            per.join("/"),
            self.capture.fanout_skipped
        )
    }

    /// An EVE-style `"event_type":"stats"` record, one line.
    pub fn json(&self) -> String {
        let c = &self.capture;
        let decoder: Vec<String> = c
            .decode
            .fields()
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let rules: Vec<String> = self
            .engine
            .rules
            .iter()
            .map(|(id, r)| {
                format!(
                    "{}:{{\"alerts\":{},\"suppressed\":{},\"matched\":{}}}",
                    serde_json::Value::String(id.clone()),
                    r.alerts,
                    r.suppressed,
                    r.matched
                )
            })
            .collect();
        let f = &self.engine.flows;
        format!(
            "{{\"timestamp\":\"{}\",\"event_type\":\"stats\",\"stats\":{{\"uptime\":{},\"capture\":{{\"packets\":{},\"bytes\":{},\"kernel_received\":{},\"kernel_drops\":{},\"if_drops\":{},\"channel_drops\":{},\"processed\":{}{}}},\"decoder\":{{{}}},\"flow\":{{\"alive\":{},\"created\":{},\"expired\":{},\"evicted\":{},\"closed\":{},\"peak\":{},\"orphan_fragments\":{}}},\"alerts\":{{\"written\":{},\"suppressed\":{},\"rules\":{{{}}}}}}}}}\n",
            self.time,
            self.uptime.as_secs(),
            c.packets,
            c.bytes,
            c.kernel.received,
            c.kernel.dropped,
            c.kernel.if_dropped,
            c.channel_drops,
            self.engine.packets,
            if self.workers.is_empty() {
                String::new()
            } else {
                format!(
                    ",\"fanout_skipped\":{},\"workers\":[{}]",
                    c.fanout_skipped,
                    self.workers
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            decoder.join(","),
            self.flows_alive,
            f.created,
            f.expired,
            f.evicted,
            f.closed,
            f.peak,
            f.orphan_fragments,
            self.engine.alerts(),
            self.engine.suppressed(),
            rules.join(","),
        )
    }
}

/// How a live run ended.
#[derive(Debug)]
pub struct LiveReport {
    /// The last statistics snapshot (at exit).
    pub stats: Stats,
    /// Capture failed (the interface went away…).
    pub capture_error: Option<CaptureError>,
    /// Writing alerts failed.
    pub output_error: Option<io::Error>,
}

/// The wall clock as a [`Timestamp`].
pub fn wall_clock() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_parts(d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

/// Each engine's latest counters and flows alive, published for the snapshots.
type Published = Vec<Mutex<Option<(EngineStats, usize)>>>;

/// One capture source and the engine that owns its flows.
pub struct Worker {
    pub src: LiveSource,
    pub engine: Engine,
}

/// Runs until the stop flag is set or capture fails. Each worker is a capture thread and an
/// engine thread joined by their own bounded channel (one worker, or several sharing a fanout
/// group and one output). `stats_every` is the statistics interval; `flow_updates`, when set,
/// how often flows alive longer than it get an update record; `on_stats` sees each snapshot
/// (periodic and final, summed over workers) for standard error; in JSON format the first
/// engine also writes it to the alert stream.
pub fn run(
    workers: Vec<Worker>,
    ctl: Control,
    stats_every: Duration,
    flow_updates: Option<Duration>,
    on_stats: impl Fn(&Stats) + Send + Sync + 'static,
    on_error: impl Fn(&str) + Send + Sync + 'static,
) -> LiveReport {
    let started = Instant::now();
    let n = workers.len();
    let counters: Arc<Vec<Mutex<CaptureCounters>>> =
        Arc::new((0..n).map(|_| Mutex::default()).collect());
    let _ = ctl.capture.set(Arc::clone(&counters));
    // Each engine's latest counters, for the snapshots the first engine prints.
    let published: Arc<Published> = Arc::new((0..n).map(|_| Mutex::default()).collect());
    let on_stats = Arc::new(on_stats);
    let on_error = Arc::new(on_error);
    let mut captures = Vec::new();
    let mut engines = Vec::new();
    for (i, Worker { src, mut engine }) in workers.into_iter().enumerate() {
        let (tx, rx) = bounded::<Msg>(CHANNEL_BATCHES);
        let (recycle_tx, recycle_rx) = bounded::<Vec<PacketSummary>>(CHANNEL_BATCHES);
        let cap_counters = Arc::clone(&counters);
        let cap_stop = Arc::clone(&ctl.stop);
        let suffix = if n > 1 {
            format!("-{i}")
        } else {
            String::new()
        };
        captures.push(
            thread::Builder::new()
                .name(format!("exfilwatch-capture{suffix}"))
                .spawn(move || capture_loop(src, &tx, &recycle_rx, &cap_stop, &cap_counters[i]))
                .expect("spawning a capture thread"),
        );
        let (counters, published) = (Arc::clone(&counters), Arc::clone(&published));
        let (on_stats, on_error) = (Arc::clone(&on_stats), Arc::clone(&on_error));
        let ctl = ctl.clone();
        engines.push(
            thread::Builder::new()
                .name(format!("exfilwatch-engine{suffix}"))
                .spawn(move || {
                    let mut emit = |engine: &mut Engine| -> io::Result<()> {
                        if let Ok(mut p) = published[i].lock() {
                            *p = Some((engine.stats(), engine.flows_alive()));
                        }
                        if i != 0 {
                            return Ok(());
                        }
                        let s = snapshot(started, &counters, &published);
                        on_stats(&s);
                        if engine.format() == Format::Json {
                            engine.write_record(s.json().as_bytes())?;
                        }
                        engine.flush()
                    };
                    let result = engine_loop(
                        &mut engine,
                        &rx,
                        &recycle_tx,
                        &ctl,
                        (stats_every, flow_updates),
                        &mut emit,
                        &*on_error,
                    );
                    if result.is_err() {
                        // Stop every capture: nothing more can be written.
                        ctl.stop.store(true, Ordering::SeqCst);
                    }
                    drop(rx);
                    let result = result.and_then(|()| engine.finish());
                    if let Ok(mut p) = published[i].lock() {
                        *p = Some((engine.stats(), engine.flows_alive()));
                    }
                    (engine, result)
                })
                .expect("spawning an engine thread"),
        );
    }
    let mut capture_error = None;
    for c in captures {
        match c.join() {
            Ok(e) => capture_error = capture_error.or(e),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    let mut first = None;
    let mut output_error = None;
    for e in engines {
        match e.join() {
            Ok((engine, result)) => {
                output_error = output_error.or(result.err());
                first.get_or_insert(engine);
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    let stats = snapshot(started, &counters, &published);
    if let Some(engine) = first.as_mut() {
        if output_error.is_none() && engine.format() == Format::Json {
            output_error = engine
                .write_record(stats.json().as_bytes())
                .and_then(|()| engine.flush())
                .err();
        }
    }
    LiveReport {
        stats,
        capture_error,
        output_error,
    }
}

/// The counters of every worker, summed (and the packets of each, with several).
fn snapshot(started: Instant, counters: &[Mutex<CaptureCounters>], published: &Published) -> Stats {
    let mut capture = CaptureCounters::default();
    let mut workers = Vec::new();
    for c in counters {
        if let Ok(c) = c.lock() {
            capture.merge(&c);
            workers.push(c.packets);
        }
    }
    let mut engine: Option<EngineStats> = None;
    let mut flows_alive = 0;
    for p in published {
        if let Ok(p) = p.lock() {
            if let Some((e, alive)) = &*p {
                flows_alive += alive;
                match engine.as_mut() {
                    Some(sum) => sum.merge(e),
                    None => engine = Some(e.clone()),
                }
            }
        }
    }
    Stats {
        time: wall_clock(),
        uptime: started.elapsed(),
        capture,
        engine: engine.unwrap_or_default(),
        flows_alive,
        workers: if workers.len() > 1 {
            workers
        } else {
            Vec::new()
        },
    }
}

fn engine_loop(
    engine: &mut Engine,
    rx: &Receiver<Msg>,
    recycle: &Sender<Vec<PacketSummary>>,
    ctl: &Control,
    (stats_every, flow_updates): (Duration, Option<Duration>),
    emit: &mut impl FnMut(&mut Engine) -> io::Result<()>,
    on_error: &impl Fn(&str),
) -> io::Result<()> {
    let mut last_tick = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_updates = Instant::now();
    // Live alerts name the interface, not a file.
    let no_file: Arc<str> = Arc::from("");
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Batch(mut batch)) => {
                engine.process_batch(&batch, &no_file)?;
                batch.clear();
                let _ = recycle.try_send(batch);
            }
            Ok(Msg::File(_)) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if rx.is_empty() {
            engine.flush()?;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            engine.tick(wall_clock())?;
        }
        if ctl.reopen.swap(false, Ordering::SeqCst) {
            if let Err(e) = engine.reopen() {
                on_error(&format!(
                    "{}: reopening after SIGHUP failed, still writing to the old file: {e}",
                    engine.output_name()
                ));
            }
        }
        if let Some(every) = flow_updates {
            if last_updates.elapsed() >= every {
                last_updates = Instant::now();
                engine.write_flow_updates(crate::time::Duration(every.as_nanos() as i64))?;
            }
        }
        if last_stats.elapsed() >= stats_every {
            last_stats = Instant::now();
            emit(engine)?;
        }
    }
}

fn capture_loop(
    mut src: LiveSource,
    tx: &Sender<Msg>,
    recycle: &Receiver<Vec<PacketSummary>>,
    stop: &AtomicBool,
    shared: &Mutex<CaptureCounters>,
) -> Option<CaptureError> {
    let mut c = CaptureCounters::default();
    let new_batch = || {
        recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH))
    };
    let mut batch = new_batch();
    let mut batch_started = Instant::now();
    let mut last_stats = Instant::now();
    let publish = |src: &mut LiveSource, c: &mut CaptureCounters| {
        if let Some(k) = src.stats() {
            c.kernel = k;
        }
        if let Ok(mut s) = shared.lock() {
            *s = c.clone();
        }
    };
    let mut error = None;
    // After the stop flag: keep reading what the kernel already holds (a packet ring's last
    // block is only handed over when its timeout retires it) until reads find nothing, or for
    // at most DRAIN on a link that never goes quiet.
    let mut stopped: Option<Instant> = None;
    let mut quiet = 0;
    loop {
        if stopped.is_none() && stop.load(Ordering::Relaxed) {
            stopped = Some(Instant::now());
            quiet = 0;
        }
        // Three empty reads: at least two full poll timeouts, longer than the ring's block
        // timeout (the same 100 ms).
        if stopped.is_some_and(|t| quiet >= 3 || t.elapsed() >= DRAIN) {
            break;
        }
        let mut idle = false;
        let was_empty = batch.is_empty();
        // Up to the rest of the batch, so that a full batch is handed over between reads.
        let room = BATCH.saturating_sub(batch.len());
        let read = src.read_frames(room, |frame| {
            c.packets += 1;
            c.bytes += u64::from(frame.orig_len);
            let _ = decode::decode_append(&frame, &mut batch, &mut c.decode);
        });
        match read {
            // Nothing more waiting: hand over what we have now rather than after the wait.
            Ok(0) => {
                idle = true;
                quiet += 1;
            }
            Ok(_) => {
                quiet = 0;
                c.fanout_skipped = src.skipped();
                if was_empty && !batch.is_empty() {
                    batch_started = Instant::now();
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        // Idle: hand over now, unless the engine still has batches waiting (then a fuller
        // batch costs it less and keeps the channel's room for a burst).
        if !batch.is_empty()
            && ((idle && tx.is_empty())
                || batch.len() >= BATCH
                || batch_started.elapsed() >= BATCH_LINGER)
        {
            match tx.try_send(Msg::Batch(std::mem::replace(&mut batch, new_batch()))) {
                Ok(()) => {}
                Err(TrySendError::Full(Msg::Batch(mut b))) => {
                    c.channel_drops += b.len() as u64;
                    b.clear();
                    batch = b;
                }
                Err(TrySendError::Full(Msg::File(_))) => {}
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        if last_stats.elapsed() >= KERNEL_STATS_EVERY {
            last_stats = Instant::now();
            publish(&mut src, &mut c);
        }
    }
    // Shutting down: hand over what is left (waiting a little: the engine is draining).
    if !batch.is_empty() {
        let n = batch.len() as u64;
        if tx
            .send_timeout(Msg::Batch(batch), Duration::from_secs(1))
            .is_err()
        {
            c.channel_drops += n;
        }
    }
    publish(&mut src, &mut c);
    error
}
