//! The pipeline: a capture thread that reads and decodes, a bounded crossbeam channel of
//! batches, and an engine thread that tracks flows, evaluates rules and writes alerts.
//!
//! Contract for files: nothing is dropped. When the channel is full the capture thread waits.
//! Files are one timeline, read in the order given; an unreadable file, an unsupported link type
//! or a damaged record is reported (file and packet number), the rest of that file is skipped,
//! and reading goes on with the next file; every alert already found is written. In a pcapng file
//! of several link types, the packets of unsupported ones are skipped, counted and reported after
//! the file (an input error too). A failing alert output stops everything at once and is
//! reported; a closed pipe stops quietly.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::capture::{CaptureError, FileSource};
use crate::decode::{self, linktype, DecodeError, DecodeStats, PacketSummary};
use crate::engine::{Engine, EngineStats};

pub mod live;

/// Live capture: summaries per batch, large enough to amortise the channel, small enough to
/// keep latency.
const BATCH: usize = 256;
/// Live capture: batches in flight.
const CHANNEL_BATCHES: usize = 64;
/// Files: summaries per batch. Latency does not matter, and every hand-over to a waiting
/// thread is a wake-up (an inter-processor interrupt, costly on a virtual machine: 5% of the
/// capture thread's time with 256-summary batches on the 2M-packet mix).
pub const FILE_BATCH: usize = 1024;
/// Files: batches in flight (64k summaries, 5.5 MiB). The engine sets the pace; with room for
/// only 16 batches, the capture thread stopped on a full channel (17-32 ms of 0.3 s on the
/// small-packet mix) and, woken late, left the engine waiting for batches (17-53 ms); with 64
/// it reads ahead and the engine seldom waits.
const FILE_CHANNEL_BATCHES: usize = 64;
/// Files: how long the capture thread sleeps before it tries again to hand over a batch when
/// the channel is full. Blocked in `send` instead, it was woken by the engine for each batch
/// the engine took (a futex wake-up, an inter-processor interrupt on this VM); once reading
/// got faster than the engine, that was 1,500-1,800 context switches on the 2M small-packet
/// mix against 400-700, and more wall time than it saved. The engine takes a full channel's
/// 64 batches in several milliseconds, so a sleep this short never lets it run dry. While the
/// channel stays full (the engine held up by its output: a paused pager), each further pause
/// is twice as long, up to [`FULL_CHANNEL_PAUSE_MAX`].
const FULL_CHANNEL_PAUSE: Duration = Duration::from_micros(500);
const FULL_CHANNEL_PAUSE_MAX: Duration = Duration::from_millis(4);

pub(crate) enum Msg {
    /// The following packets come from this file.
    File(Arc<str>),
    Batch(Vec<PacketSummary>),
}

/// What reading the files found.
#[derive(Debug)]
pub struct ReadReport {
    /// Records read from all files.
    pub packets: u64,
    /// Bytes on the wire of those records.
    pub bytes: u64,
    pub decode: DecodeStats,
    pub engine: EngineStats,
    /// Per inside host, bytes sent to outside addresses (when collected, for the report).
    pub talkers: Option<crate::engine::Talkers>,
    /// Input problems, in the order they happened.
    pub input_errors: Vec<CaptureError>,
    /// The alert output failed (not a closed pipe: see `output_closed`).
    pub output_error: Option<io::Error>,
    /// The reader of the alert output went away (e.g. `| head`).
    pub output_closed: bool,
    pub elapsed: std::time::Duration,
}

/// Reads `files` (paths, `-` for standard input) through `engine`. `on_error` sees each input
/// problem as it happens (for immediate diagnostics).
pub fn read_files(
    files: &[String],
    mut engine: Engine,
    on_error: impl Fn(&CaptureError) + Send + 'static,
) -> ReadReport {
    let start = Instant::now();
    let (tx, rx) = bounded::<Msg>(FILE_CHANNEL_BATCHES);
    let (recycle_tx, recycle_rx) = bounded::<Vec<PacketSummary>>(FILE_CHANNEL_BATCHES);
    let files = files.to_vec();
    let capture = thread::Builder::new()
        .name("exfilwatch-capture".into())
        .spawn(move || capture_files(&files, &tx, &recycle_rx, &on_error))
        .expect("spawning the capture thread");

    let engine_thread = thread::Builder::new()
        .name("exfilwatch-engine".into())
        .spawn(move || {
            let out = run_engine(&mut engine, &rx, &recycle_tx);
            // Dropping the receiver here (on an output error) makes the capture thread stop.
            drop(rx);
            let fin = match out {
                Ok(()) => engine.finish(),
                Err(e) => {
                    let _ = engine.finish();
                    Err(e)
                }
            };
            (engine.stats(), engine.talkers().cloned(), fin)
        })
        .expect("spawning the engine thread");

    let (engine_stats, talkers, result) = match engine_thread.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let cap = match capture.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let (output_error, output_closed) = match result {
        Ok(()) => (None, false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => (None, true),
        Err(e) => (Some(e), false),
    };
    ReadReport {
        packets: cap.packets,
        bytes: cap.bytes,
        decode: cap.decode,
        engine: engine_stats,
        talkers,
        input_errors: cap.errors,
        output_error,
        output_closed,
        elapsed: start.elapsed(),
    }
}

fn run_engine(
    engine: &mut Engine,
    rx: &Receiver<Msg>,
    recycle: &Sender<Vec<PacketSummary>>,
) -> io::Result<()> {
    let mut file: Arc<str> = Arc::from("");
    for msg in rx {
        match msg {
            Msg::File(name) => file = name,
            Msg::Batch(mut batch) => {
                engine.process_batch(&batch, &file)?;
                batch.clear();
                let _ = recycle.try_send(batch);
            }
        }
    }
    Ok(())
}

struct CaptureTotals {
    packets: u64,
    bytes: u64,
    decode: DecodeStats,
    errors: Vec<CaptureError>,
}

fn capture_files(
    files: &[String],
    tx: &Sender<Msg>,
    recycle: &Receiver<Vec<PacketSummary>>,
    on_error: &impl Fn(&CaptureError),
) -> CaptureTotals {
    let mut t = CaptureTotals {
        packets: 0,
        bytes: 0,
        decode: DecodeStats::default(),
        errors: Vec::new(),
    };
    let fail = |t: &mut CaptureTotals, e: CaptureError| {
        on_error(&e);
        t.errors.push(e);
    };
    let new_batch = || {
        recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(FILE_BATCH))
    };
    for path in files {
        let mut src = match FileSource::open(path) {
            Ok(s) => s,
            Err(e) => {
                fail(&mut t, e);
                continue;
            }
        };
        let lt = src.linktype();
        // A pcapng file may hold interfaces of several link types, and a later one may be
        // supported: such a file is read, and its packets of unsupported link types are counted
        // and reported after it. Other files have one link type.
        if !linktype::is_supported(lt) && !src.may_have_several_linktypes() {
            fail(
                &mut t,
                CaptureError::UnsupportedLinkType {
                    file: path.clone(),
                    linktype: lt,
                    name: linktype::name(lt),
                },
            );
            continue;
        }
        if hand_over(tx, Msg::File(Arc::from(path.as_str()))).is_err() {
            return t; // the engine stopped (output error)
        }
        let mut batch = new_batch();
        // Packets per unsupported link type (several-link-type files only).
        let mut unsupported: BTreeMap<i32, u64> = BTreeMap::new();
        loop {
            // Up to the rest of the batch, so that a full batch is handed over between calls.
            let room = FILE_BATCH.saturating_sub(batch.len());
            let r = src.read_frames(room, |frame| {
                t.packets += 1;
                t.bytes += u64::from(frame.orig_len);
                let r = decode::decode_append(&frame, &mut batch, &mut t.decode);
                if let Err(DecodeError::UnsupportedLinkType(lt)) = r {
                    *unsupported.entry(lt).or_default() += 1;
                }
            });
            if batch.len() >= FILE_BATCH {
                let full = std::mem::replace(&mut batch, new_batch());
                if hand_over(tx, Msg::Batch(full)).is_err() {
                    return t;
                }
            }
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    fail(&mut t, e);
                    break;
                }
            }
        }
        for (lt, packets) in unsupported {
            fail(
                &mut t,
                CaptureError::UnsupportedPackets {
                    file: path.clone(),
                    linktype: lt,
                    name: linktype::name(lt),
                    packets,
                },
            );
        }
        if !batch.is_empty() && hand_over(tx, Msg::Batch(batch)).is_err() {
            return t;
        }
    }
    t
}

/// Sends `msg` to the engine as `tx.send` does, but waits for room by sleeping (see
/// [`FULL_CHANNEL_PAUSE`]) rather than blocked in the channel, so the engine never has a sender
/// to wake. An error: the engine has stopped.
fn hand_over(tx: &Sender<Msg>, mut msg: Msg) -> Result<(), ()> {
    let mut pause = FULL_CHANNEL_PAUSE;
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) => {
                msg = m;
                thread::sleep(pause);
                pause = (pause * 2).min(FULL_CHANNEL_PAUSE_MAX);
            }
            Err(TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}
