//! Where alert lines go: standard output, a file opened for appending (reopened by path on
//! request, for logrotate's move-and-create), or any writer (tests).
//!
//! Contract: lines are handed over whole; [`Output::flush`] pushes everything buffered to the
//! OS and returns the first write error. The write(2) calls happen on a writer thread of the
//! output's own (a spool): the engine hands over 256 KiB buffers of whole lines and goes on,
//! so a flood's kernel copy time overlaps its processing; at most eight buffers wait, then the
//! engine waits too (a blocked output blocks the engine, never the capture). Alerts go over as
//! records and are formatted on that thread too ([`Output::push_record`]), in order with the
//! lines around them; a batch of records that finds the queue full is formatted by the caller
//! instead and goes over as lines, so the engine works where it would wait. A write error is
//! returned by the next call after it. An output can be shared ([`Output::share`]) by several
//! engines (live workers): each line goes in whole under a lock, so lines from different
//! engines never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{Context, Format, Fragments, Record};

/// Bytes of whole lines handed to the writer thread at once.
const BUF: usize = 256 << 10;
/// Alert records handed to the writer thread at once (about 200 KiB of them).
const RECORDS: usize = 1024;
/// Buffers that may wait for the writer thread: enough that neither thread waits on the
/// other through the other's slow spells (the engine's index growth, the writer's page-cache
/// stalls). With two, the writer ran dry for up to 8.5 ms at a time on the 1M-SYN flood.
const WAITING: usize = 8;

/// Alert records to format on the writer thread, with what they refer to.
pub(super) struct Records {
    format: Format,
    ctx: Arc<Context>,
    file: Arc<str>,
    list: Vec<Record>,
}

impl Records {
    /// Formats, in order, each record whose rule is in the context onto `out`, with the
    /// pieces `frags` keeps; `full` is called whenever `out` holds a buffer's worth ([`BUF`]).
    fn format_into(
        &self,
        frags: &mut Fragments,
        out: &mut Vec<u8>,
        mut full: impl FnMut(&mut Vec<u8>),
    ) -> io::Result<()> {
        frags.bind(&self.ctx, &self.file)?;
        for rec in &self.list {
            if let Some(a) = rec.view(&self.ctx, &self.file) {
                super::write_alert(out, self.format, &a, frags)?;
            }
            if out.len() >= BUF {
                full(out);
            }
        }
        Ok(())
    }
}

enum Job {
    Data(Vec<u8>),
    Records(Records),
    /// Write what came before, flush, answer with the first error so far.
    Flush(Sender<Option<(io::ErrorKind, String)>>),
    /// Flush, then write to this from now on (reopen).
    Replace(Box<dyn Write + Send>),
}

/// Lines and alert records being gathered, and where they go. Records gathered go out before
/// lines gathered after them, and lines before the records that follow them.
struct Spool {
    buf: Vec<u8>,
    recs: Option<Records>,
    sink: Sink,
    /// For records formatted on the caller's thread when the writer is behind (boxed: rarely
    /// used, and the spool sits in every output).
    here: Box<Here>,
}

/// What formatting records on the caller's thread keeps.
#[derive(Default)]
struct Here {
    frags: Fragments,
    /// A record list kept for reuse.
    spare_list: Option<Vec<Record>>,
}

enum Sink {
    /// Written on the caller's thread ([`Output::writer`]: tests and fuzzing).
    Direct(Box<dyn Write + Send>),
    /// Handed to the output's writer thread.
    Thread(WriterThread),
}

/// A first write error, kept as kind and text (`io::Error` is not `Clone`).
type Failure = Option<(io::ErrorKind, String)>;

/// The writer thread's first error, shared with the engine, which checks it before every
/// line and record: a flag read without a lock (taking the lock per record was 3.9% of all
/// CPU samples of a 1M-alert flood, on the engine thread), the error itself under the lock once
/// set.
#[derive(Default)]
struct FirstError {
    set: AtomicBool,
    slot: Mutex<Failure>,
}

impl FirstError {
    /// Whether there is an error.
    #[inline]
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// The error, once there is one.
    fn get(&self) -> Failure {
        if !self.is_set() {
            return None;
        }
        self.slot.lock().map_or_else(
            |_| Some((io::ErrorKind::Other, "output lock poisoned".into())),
            |e| e.clone(),
        )
    }

    /// Keeps `e` unless an error is already kept.
    fn record(&self, e: &io::Error) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert((e.kind(), e.to_string()));
        self.set.store(true, Ordering::Release);
    }
}

struct WriterThread {
    /// `None` once dropped: the thread then writes what is left and ends.
    tx: Option<Sender<Job>>,
    recycled: Receiver<Vec<u8>>,
    recycled_recs: Receiver<Vec<Record>>,
    error: Arc<FirstError>,
    thread: Option<JoinHandle<()>>,
}

fn as_io(e: &(io::ErrorKind, String)) -> io::Error {
    io::Error::new(e.0, e.1.clone())
}

impl WriterThread {
    fn start(mut w: Box<dyn Write + Send>) -> io::Result<WriterThread> {
        let (tx, rx) = bounded::<Job>(WAITING);
        let (recycle_tx, recycled) = bounded::<Vec<u8>>(WAITING + 1);
        let (recycle_recs_tx, recycled_recs) = bounded::<Vec<Record>>(WAITING + 1);
        let error = Arc::new(FirstError::default());
        let err = Arc::clone(&error);
        let thread = std::thread::Builder::new()
            .name("exfilwatch-writer".into())
            .spawn(move || {
                // After the first error nothing more is written; the error is kept (the engine
                // checks for it before every line).
                let run = |w: &mut Box<dyn Write + Send>,
                           op: &dyn Fn(&mut Box<dyn Write + Send>) -> io::Result<()>|
                 -> Failure {
                    if !err.is_set() {
                        if let Err(e) = op(w) {
                            err.record(&e);
                        }
                    }
                    err.get()
                };
                // Lines formatted here, written out whenever a buffer's worth is ready and
                // before anything else is written.
                let mut formatted: Vec<u8> = Vec::with_capacity(BUF + 4096);
                let mut frags = Fragments::default();
                let drain = |w: &mut Box<dyn Write + Send>, f: &mut Vec<u8>| {
                    if !f.is_empty() {
                        run(w, &|w| w.write_all(f));
                        f.clear();
                    }
                };
                for job in rx {
                    match job {
                        Job::Records(mut r) => {
                            // A formatting error is kept like a write error (nothing is
                            // written after it).
                            let formatting =
                                r.format_into(&mut frags, &mut formatted, |f| drain(&mut w, f));
                            if let Err(e) = formatting {
                                run(&mut w, &|_| Err(io::Error::new(e.kind(), e.to_string())));
                            }
                            r.list.clear();
                            let _ = recycle_recs_tx.try_send(r.list);
                        }
                        Job::Data(mut b) => {
                            drain(&mut w, &mut formatted);
                            run(&mut w, &|w| w.write_all(&b));
                            b.clear();
                            let _ = recycle_tx.try_send(b);
                        }
                        Job::Flush(ack) => {
                            drain(&mut w, &mut formatted);
                            let _ = ack.send(run(&mut w, &|w| w.flush()));
                        }
                        Job::Replace(new) => {
                            drain(&mut w, &mut formatted);
                            run(&mut w, &|w| w.flush());
                            w = new;
                        }
                    }
                }
                drain(&mut w, &mut formatted);
                run(&mut w, &|w| w.flush());
            })?;
        Ok(WriterThread {
            tx: Some(tx),
            recycled,
            recycled_recs,
            error,
            thread: Some(thread),
        })
    }

    fn error(&self) -> Option<io::Error> {
        self.error.get().as_ref().map(as_io)
    }

    /// Whether the queue has no room now. The spool is its only sender and the writer only
    /// takes from it, so a queue that had room still has it at the next send.
    fn queue_full(&self) -> bool {
        self.tx.as_ref().is_some_and(Sender::is_full)
    }

    fn send(&self, job: Job) -> io::Result<()> {
        match &self.tx {
            Some(tx) if tx.send(job).is_ok() => Ok(()),
            _ => Err(self
                .error()
                .unwrap_or_else(|| io::Error::other("the alert writer thread is gone"))),
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Let the thread write what it was given and finish.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Spool {
    fn threaded(w: Box<dyn Write + Send>) -> io::Result<Spool> {
        Ok(Spool {
            buf: Vec::with_capacity(BUF),
            recs: None,
            sink: Sink::Thread(WriterThread::start(w)?),
            here: Box::default(),
        })
    }

    fn direct(w: Box<dyn Write + Send>) -> Spool {
        Spool {
            buf: Vec::with_capacity(BUF),
            recs: None,
            sink: Sink::Direct(w),
            here: Box::default(),
        }
    }

    /// Hands the gathered records on (only a threaded spool gathers them).
    ///
    /// When the writer thread's queue is full, the records are formatted here instead and
    /// handed on as lines: the caller (the engine) would otherwise wait for room, and the
    /// writer, which sets a flood's pace, is spared that batch's formatting.
    fn ship_records(&mut self) -> io::Result<()> {
        let Sink::Thread(t) = &self.sink else {
            return Ok(());
        };
        let Some(mut r) = self.recs.take().filter(|r| !r.list.is_empty()) else {
            return Ok(());
        };
        if !t.queue_full() {
            return t.send(Job::Records(r));
        }
        let mut lines = t
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF));
        let here = &mut *self.here;
        // The whole batch into one buffer (nothing is written here).
        r.format_into(&mut here.frags, &mut lines, |_| {})?;
        r.list.clear();
        here.spare_list = Some(r.list);
        t.send(Job::Data(lines))
    }

    /// The writer thread's first error, if any (a direct sink reports errors as they happen).
    #[inline]
    fn failed(&self) -> io::Result<()> {
        match &self.sink {
            // The flag alone, inlined, on the path of every record (the error's copy and
            // its drop took 46 instructions a record, callgrind).
            Sink::Thread(t) if t.error.is_set() => t.error().map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }

    /// Adds an alert record, to be formatted on the writer thread.
    fn push_record(
        &mut self,
        rec: Record,
        format: Format,
        ctx: &Arc<Context>,
        file: &Arc<str>,
    ) -> io::Result<()> {
        self.failed()?;
        let same = self.recs.as_ref().is_some_and(|r| {
            r.format == format && Arc::ptr_eq(&r.ctx, ctx) && Arc::ptr_eq(&r.file, file)
        });
        if !same || !self.buf.is_empty() {
            // Records gathered so far, then lines: the order they were written in.
            self.ship()?;
        }
        let Spool { recs, sink, .. } = self;
        let Sink::Thread(t) = sink else {
            return Err(io::Error::other("alert records need a writer thread"));
        };
        let r = recs.get_or_insert_with(|| Records {
            format,
            ctx: Arc::clone(ctx),
            file: Arc::clone(file),
            list: match self.here.spare_list.take() {
                Some(l) => l,
                None => t
                    .recycled_recs
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(RECORDS)),
            },
        });
        r.list.push(rec);
        if r.list.len() >= RECORDS {
            self.ship_records()?;
        }
        Ok(())
    }

    /// Hands the gathered lines on.
    fn ship(&mut self) -> io::Result<()> {
        self.ship_records()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Direct(w) => {
                let r = w.write_all(&self.buf);
                self.buf.clear();
                r
            }
            Sink::Thread(t) => {
                let next = t
                    .recycled
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BUF));
                let full = std::mem::replace(&mut self.buf, next);
                t.send(Job::Data(full))
            }
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.failed()?;
        if self.buf.len() + line.len() > BUF {
            self.ship()?;
        }
        self.buf.extend_from_slice(line);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ship()?;
        match &mut self.sink {
            Sink::Direct(w) => w.flush(),
            Sink::Thread(t) => {
                let (ack, done) = bounded(1);
                t.send(Job::Flush(ack))?;
                match done.recv() {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) => Err(as_io(&e)),
                    Err(_) => Err(t
                        .error()
                        .unwrap_or_else(|| io::Error::other("the alert writer thread is gone"))),
                }
            }
        }
    }

    fn replace(&mut self, new: Box<dyn Write + Send>) -> io::Result<()> {
        self.flush()?;
        match &mut self.sink {
            Sink::Direct(w) => {
                *w = new;
                Ok(())
            }
            Sink::Thread(t) => t.send(Job::Replace(new)),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Hand over what is left (the sink's own drop then lets the thread finish).
        let _ = self.ship();
    }
}

enum Target {
    Stdout,
    File(PathBuf),
    Writer,
}

/// An alert destination.
pub struct Output(Inner);

enum Inner {
    Own(Own),
    Shared(Arc<Mutex<Own>>),
}

struct Own {
    target: Target,
    w: Spool,
}

impl Output {
    /// `n` handles on this one output (for `n` engines writing to the same place).
    pub fn share(self, n: usize) -> Vec<Output> {
        match self.0 {
            Inner::Own(o) => {
                let shared = Arc::new(Mutex::new(o));
                (0..n.max(1))
                    .map(|_| Output(Inner::Shared(Arc::clone(&shared))))
                    .collect()
            }
            Inner::Shared(s) => (0..n.max(1))
                .map(|_| Output(Inner::Shared(Arc::clone(&s))))
                .collect(),
        }
    }

    fn with<T>(&mut self, f: impl FnOnce(&mut Own) -> io::Result<T>) -> io::Result<T> {
        match &mut self.0 {
            Inner::Own(o) => f(o),
            Inner::Shared(s) => match s.lock() {
                Ok(mut o) => f(&mut o),
                Err(_) => Err(io::Error::other("output lock poisoned")),
            },
        }
    }

    /// Standard output, through our own 64 KiB buffer (not Stdout's line buffering).
    pub fn stdout() -> io::Result<Output> {
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Output(Inner::Own(Own {
            target: Target::Stdout,
            w: Spool::threaded(Box::new(File::from(fd)))?,
        })))
    }

    /// `path`, created if missing, appended to.
    pub fn append(path: &Path) -> io::Result<Output> {
        Ok(Output(Inner::Own(Own {
            target: Target::File(path.to_path_buf()),
            w: Spool::threaded(Box::new(open_append(path)?))?,
        })))
    }

    /// Any writer (buffered here, written on the caller's thread: tests and fuzzing, where a
    /// thread per output would cost more than the work).
    pub fn writer(w: Box<dyn Write + Send>) -> Output {
        Output(Inner::Own(Own {
            target: Target::Writer,
            w: Spool::direct(w),
        }))
    }

    /// What it writes to, for messages.
    pub fn describe(&self) -> String {
        let name = |o: &Own| match &o.target {
            Target::Stdout => "standard output".into(),
            Target::File(p) => p.display().to_string(),
            Target::Writer => "alert writer".into(),
        };
        match &self.0 {
            Inner::Own(o) => name(o),
            Inner::Shared(s) => s.lock().map(|o| name(&o)).unwrap_or_default(),
        }
    }

    /// Whether alert records pushed here are formatted on the output's own writer thread
    /// (an output of one engine, with a thread); if not, the caller formats them.
    pub fn formats_on_its_thread(&self) -> bool {
        matches!(&self.0, Inner::Own(o) if matches!(o.w.sink, Sink::Thread(_)))
    }

    /// Adds an alert record (see [`Output::formats_on_its_thread`]), formatted later as one
    /// whole line in order with the lines written around it.
    pub(super) fn push_record(
        &mut self,
        rec: Record,
        format: Format,
        ctx: &Arc<Context>,
        file: &Arc<str>,
    ) -> io::Result<()> {
        self.with(|o| o.w.push_record(rec, format, ctx, file))
    }

    /// Writes one whole line.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.with(|o| o.w.write_line(line))
    }

    /// Pushes buffered lines to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.with(|o| o.w.flush())
    }

    /// Flushes, then reopens a file output by its path (a no-op for other outputs). If the
    /// path cannot be opened, the old file stays in use and the error is returned.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.with(|o| {
            o.w.flush()?;
            if let Target::File(p) = &o.target {
                let f = open_append(p)?;
                o.w.replace(Box::new(f))?;
            }
            Ok(())
        })
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    let append = || OpenOptions::new().create(true).append(true).open(p);
    // Read access only to look at a regular file's tail: a FIFO opened read-write would never
    // see its reader go away.
    let regular = std::fs::metadata(p).is_ok_and(|m| m.is_file());
    let f = if regular {
        OpenOptions::new()
            .read(true)
            .append(true)
            .open(p)
            .or_else(|_| append())?
    } else {
        append()?
    };
    if let Ok(n) = cut_torn_line(&f) {
        if n > 0 {
            eprintln!(
                "exfilwatch: {}: removed an incomplete last line ({n} bytes, left by a crash or \
                 kill) before appending",
                p.display()
            );
        }
    }
    Ok(f)
}

/// If `f` does not end with a newline, cuts it back to just after its last one (or to empty):
/// a line torn by a kill in the middle of a write(2) never gets an alert glued to it, and the
/// file holds whole lines only. Returns the bytes removed. Log shippers read whole lines only,
/// so nothing they shipped is removed.
fn cut_torn_line(f: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let meta = f.metadata()?;
    let len = meta.len();
    if len == 0 || !meta.is_file() {
        return Ok(0);
    }
    // A torn line of ours is shorter than a chunk; look no further back than that.
    const CHUNK: u64 = 64 * 1024;
    let start = len.saturating_sub(CHUNK);
    let mut buf = vec![0u8; (len - start) as usize];
    f.read_exact_at(&mut buf, start)?;
    if buf.last() == Some(&b'\n') {
        return Ok(0);
    }
    let keep = match buf.iter().rposition(|&c| c == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        None => return Ok(0), // a long line that is not ours: leave the file alone
    };
    // Only what we write: a JSON record or a text alert (which starts with its time stamp).
    // The tail is a start of one (not empty: the file does not end with a newline), so a
    // write(2) cut after a record's first byte left `{` alone.
    let tail = &buf[(keep - start) as usize..];
    let json = tail.starts_with(b"{\"") || tail == b"{";
    if !(json || tail.first().is_some_and(u8::is_ascii_digit)) {
        return Ok(0);
    }
    f.set_len(keep)?;
    Ok(len - keep)
}

/// A writer whose bytes a test reads back (this module's tests and the engine's).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemorySink(pub(crate) Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for MemorySink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after_open(name: &str, content: &[u8]) -> Vec<u8> {
        let p = std::env::temp_dir().join(format!("exfw-torn-{}-{name}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        drop(open_append(&p).unwrap());
        let v = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        v
    }

    #[test]
    fn test_a_torn_last_line_is_cut_on_open() {
        let whole = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        let mut torn = whole.clone();
        torn.extend_from_slice(b"{\"timestamp\":\"2025-11-25T12:0");
        assert_eq!(after_open("json", &torn), whole);
        assert_eq!(after_open("whole", &whole), whole);
        assert_eq!(after_open("only-torn", b"{\"timest"), b"");
        // A write cut after a record's first byte.
        let mut one = whole.clone();
        one.push(b'{');
        assert_eq!(after_open("first-byte", &one), whole);
        assert_eq!(after_open("only-first-byte", b"{"), b"");
        // A text alert starts with its time stamp.
        assert_eq!(
            after_open("text", b"2025-11-25T12:00:00Z a\n2025-11"),
            b"2025-11-25T12:00:00Z a\n"
        );
        assert_eq!(after_open("empty", b""), b"");
    }

    use super::MemorySink;

    #[test]
    fn test_lines_arrive_whole_and_in_order_through_both_spools() {
        let lines: Vec<Vec<u8>> = (0..20_000)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 300)).into_bytes())
            .collect();
        let want: Vec<u8> = lines.concat();
        // Direct (Output::writer) and threaded (a file).
        let sink = MemorySink::default();
        let mut direct = Output::writer(Box::new(sink.clone()));
        let path = std::env::temp_dir().join(format!("exfw-spool-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut threaded = Output::append(&path).unwrap();
        for (i, l) in lines.iter().enumerate() {
            direct.write_line(l).unwrap();
            threaded.write_line(l).unwrap();
            if i == 7_000 {
                // A flush in the middle hands everything so far to the OS.
                threaded.flush().unwrap();
                let got = std::fs::read(&path).unwrap();
                assert_eq!(got, lines[..=i].concat());
            }
        }
        direct.flush().unwrap();
        threaded.flush().unwrap();
        assert_eq!(*sink.0.lock().unwrap(), want);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        drop(threaded);
        let _ = std::fs::remove_file(&path);
    }

    /// Records formatted on the writer thread give the bytes the caller's own formatting
    /// gives, in order with raw lines between them, across file switches and a flush; both
    /// give what each alert formatted alone gives (no kept pieces), also when the same file
    /// name comes in a new allocation.
    #[test]
    fn test_records_formatted_on_the_writer_thread_equal_direct_formatting() {
        use crate::alert::{AlertWriter, Context, FlowCounters, Record};
        use crate::rules::RuleSet;
        use crate::time::Timestamp;
        let rules = RuleSet::embedded().unwrap().rules;
        let ctx = Context {
            rules: rules.clone(),
            zones: vec!["any".into(), "ai".into()],
            iface: None,
        };
        let record = |i: u64| Record {
            ts: Timestamp(1_764_072_000_000_000_000 + i as i64 * 7_777_777),
            rule: (i % (rules.len() as u64 + 1)) as u32, // one past the end: skipped
            proto: if i % 3 == 0 { 17 } else { 6 },
            src: std::net::IpAddr::from([10, 0, 1, (i % 250) as u8]),
            src_port: Some(1024 + (i % 5000) as u16),
            dest: if i % 4 == 0 {
                "2001:db8::1".parse().unwrap()
            } else {
                std::net::IpAddr::from([203, 0, 113, 7])
            },
            dest_port: (i % 7 != 0).then_some(11434),
            icmp: None,
            vlans: Default::default(),
            hash_ports: Some((1024 + (i % 5000) as u16, 11434)),
            suppressed: i % 11,
            pcap_cnt: i + 1,
            flow: Some(FlowCounters {
                pkts_toserver: i,
                ..Default::default()
            }),
            window: None,
            zones: (i % 5 == 0).then_some((1, 0)),
        };
        let path = std::env::temp_dir().join(format!("exfw-records-{}", std::process::id()));
        for format in [Format::Json, Format::Text] {
            let sink = MemorySink::default();
            let mut direct = AlertWriter::new(format, Output::writer(Box::new(sink.clone())));
            let _ = std::fs::remove_file(&path);
            let threaded_out = Output::append(&path).unwrap();
            assert!(threaded_out.formats_on_its_thread());
            let mut threaded = AlertWriter::new(format, threaded_out);
            for w in [&mut direct, &mut threaded] {
                w.set_context(ctx.clone());
            }
            let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a.pcap"), Arc::from("b\"quoted\".pcap"));
            let mut alone = Vec::new();
            for i in 0..5_000u64 {
                // A new allocation of a's name for a while, then a again, then b.
                let file = if (1_000..1_100).contains(&i) {
                    Arc::from("a.pcap")
                } else if i < 2_500 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                if let Some(alert) = record(i).view(&ctx, &file) {
                    match format {
                        Format::Json => crate::alert::json_line(&mut alone, &alert).unwrap(),
                        Format::Text => crate::alert::text_line(&mut alone, &alert).unwrap(),
                    }
                }
                for w in [&mut direct, &mut threaded] {
                    w.write_record(&record(i), &file).unwrap();
                    if i % 1_234 == 0 {
                        w.write_raw_line(format!("{{\"stats\":{i}}}\n").as_bytes())
                            .unwrap();
                    }
                }
                if i % 1_234 == 0 {
                    alone.extend_from_slice(format!("{{\"stats\":{i}}}\n").as_bytes());
                }
                if i == 3_000 {
                    threaded.flush().unwrap();
                    direct.flush().unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), *sink.0.lock().unwrap());
                }
            }
            direct.flush().unwrap();
            drop(threaded); // the thread writes the rest and ends
            let want = sink.0.lock().unwrap().clone();
            assert_eq!(std::fs::read(&path).unwrap(), want);
            assert_eq!(want, alone);
            let lines = want
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            assert!(lines > 4_000, "{format:?}: {lines} lines");
        }
        let _ = std::fs::remove_file(&path);
    }

    /// With the writer thread stuck (its first write waits on a gate), the queue fills and the
    /// caller formats the next batch itself and hands it on as lines; once the gate opens,
    /// the bytes are those of formatting every record in order on one thread.
    #[test]
    fn test_a_batch_formatted_by_the_caller_when_the_writer_is_behind_keeps_the_order() {
        use crate::alert::{AlertWriter, Context, Record};
        use crate::rules::RuleSet;
        use crate::time::Timestamp;
        use std::sync::atomic::AtomicBool;
        struct Gate(Arc<AtomicBool>, MemorySink);
        impl Write for Gate {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                while !self.0.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                self.1 .0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let rules = RuleSet::embedded().unwrap().rules;
        let ctx = Arc::new(Context {
            rules: rules.clone(),
            zones: vec![],
            iface: None,
        });
        let file: Arc<str> = Arc::from("gate.pcap");
        let record = |i: u64| Record {
            ts: Timestamp(1_764_072_000_000_000_000 + i as i64 * 1_000),
            rule: (i % rules.len() as u64) as u32,
            proto: 6,
            src: std::net::IpAddr::from([10, 0, 1, (i % 250) as u8]),
            src_port: Some((i % 60_000) as u16),
            dest: std::net::IpAddr::from([203, 0, 113, 7]),
            dest_port: Some(11434),
            icmp: None,
            vlans: Default::default(),
            hash_ports: Some(((i % 60_000) as u16, 11434)),
            suppressed: 0,
            pcap_cnt: i + 1,
            flow: None,
            window: None,
            zones: None,
        };
        let open = Arc::new(AtomicBool::new(false));
        let got = MemorySink::default();
        let mut out = Output(Inner::Own(Own {
            target: Target::Writer,
            w: Spool::threaded(Box::new(Gate(Arc::clone(&open), got.clone()))).unwrap(),
        }));
        let formatted_here = |o: &Output| -> bool {
            match &o.0 {
                Inner::Own(own) => own.w.here.spare_list.is_some(),
                Inner::Shared(_) => unreachable!(),
            }
        };
        let opener = {
            let open = Arc::clone(&open);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                open.store(true, Ordering::Release);
            })
        };
        // The first batch goes to the writer thread, which formats it and waits at the gate
        // with it; the next fill the queue (WAITING); the one after finds it full and is
        // formatted here (then handed on, waiting for the gate).
        let mut i = 0;
        let mut formatted_here_at = None;
        for batch in 1..=WAITING + 4 {
            for _ in 0..RECORDS {
                out.push_record(record(i), Format::Json, &ctx, &file)
                    .unwrap();
                i += 1;
            }
            if formatted_here(&out) {
                formatted_here_at = Some(batch);
                break;
            }
        }
        // The 9th if the writer had not taken the first batch off the queue yet, else the
        // 10th.
        let at = formatted_here_at.expect("a batch formatted here");
        assert!((WAITING + 1..=WAITING + 2).contains(&at), "{at}");
        let n = i;
        let total = n + 3 * RECORDS as u64 + 17;
        for i in n..total {
            out.push_record(record(i), Format::Json, &ctx, &file)
                .unwrap();
        }
        out.flush().unwrap();
        opener.join().unwrap();
        let want = MemorySink::default();
        let mut one = AlertWriter::new(Format::Json, Output::writer(Box::new(want.clone())));
        one.set_context((*ctx).clone());
        for i in 0..total {
            one.write_record(&record(i), &file).unwrap();
        }
        one.flush().unwrap();
        let want = want.0.lock().unwrap().clone();
        assert_eq!(want.iter().filter(|&&c| c == b'\n').count() as u64, total);
        assert!(*got.0.lock().unwrap() == want);
    }

    #[test]
    fn test_a_write_error_surfaces_at_a_later_call() {
        let mut out = Output::append(Path::new("/dev/full")).unwrap();
        let line = vec![b'x'; 1000];
        let mut failed = None;
        for i in 0..2_000 {
            if let Err(e) = out.write_line(&line) {
                failed = Some((i, e));
                break;
            }
        }
        let err = match failed {
            Some((_, e)) => e,
            None => out.flush().unwrap_err(),
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("No space left"), "{err}");
        assert!(out.flush().is_err(), "the error sticks");
    }

    #[test]
    fn test_a_file_that_is_not_ours_is_left_alone() {
        // Not a record we write: someone else's file, keep every byte.
        for content in [
            &b"hello world"[..],
            b"line\nno newline at end",
            b"x\n\xff\xfe",
        ] {
            assert_eq!(after_open("other", content), content);
        }
        let long = vec![b'{'; 70 * 1024];
        assert_eq!(after_open("long", &long), long);
    }
}
