//! Capture: the only module that calls libpcap (through the `pcap` crate).
//!
//! Contract: a source yields [`Frame`]s (time, data-link type, wire length, borrowed bytes,
//! packet number) and nothing else: no parsing of packets happens here. Offline sources read
//! classic pcap (either byte order, micro- or nanosecond) and pcapng, from a path or from
//! standard input (`-`), always at nanosecond precision. The end of a file is `Ok(None)`; a
//! damaged record is an error naming the file and the packet number, after which the source is
//! finished. [`FileSource::read_frames`] gives the same frames a batch at a time (through
//! `pcap_dispatch`), which is how the capture thread reads.
//!
//! libpcap opens every file, through a stdio stream we open with a 64 KiB buffer (`STDIO_BUF`)
//! and hand it. In a classic pcap or pcapng file that is a regular file, the records libpcap
//! would only copy out as they are are read by us ([`plain`]: their bytes handed out where they
//! lie in our read buffer, about 400 instructions a packet less than libpcap's two `fread`s);
//! at the first record that is not plain, libpcap reads on from there, past the records we
//! delivered. libpcap 1.10 stops on some valid pcapng files (interfaces of different link
//! types or snap lengths, a section in the other byte order, a record longer than the snap
//! length). When it does on a pcapng file that is a regular file, our own reader
//! ([`pcapng`]) reads the same open file again from its start, passes over the packets libpcap
//! already delivered and goes on from there, so packet numbers stay libpcap's (and Wireshark's
//! frame numbers). Its frames then carry each packet's own interface's link type. Standard
//! input, a pipe or a device cannot be read twice: there libpcap's error stands, with a hint.
//! A path is opened once, so a pipe's bytes all go to libpcap.

pub mod pcapng;
mod plain;

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::fd::{AsFd, IntoRawFd};

use pcap::{Capture, Offline, Precision};

use crate::decode::Frame;
use crate::time::Timestamp;

use self::pcapng::PcapngReader;
use self::plain::{Next, PlainPcap};

/// A capture-layer failure, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or is not a capture libpcap reads.
    #[error("{file}: cannot read capture: {message}")]
    Open { file: String, message: String },
    /// The file's link type is not one we decode; the file is skipped.
    #[error("{file}: unsupported link type {linktype} ({name}); file skipped")]
    UnsupportedLinkType {
        file: String,
        linktype: i32,
        name: &'static str,
    },
    /// Packets of a link type we do not decode, in a file of several link types (pcapng); the
    /// file's other packets were read.
    #[error("{file}: {packets} packet(s) of unsupported link type {linktype} ({name}) skipped")]
    UnsupportedPackets {
        file: String,
        linktype: i32,
        name: &'static str,
        packets: u64,
    },
    /// A record could not be read (truncated or corrupt file).
    #[error("{file}: packet {packet}: {message}; rest of file skipped")]
    Read {
        file: String,
        /// 1-based number of the record that failed.
        packet: u64,
        message: String,
    },
}

/// libpcap 1.10's errors on valid pcapng files that our reader takes over from: interfaces that
/// differ from the first one in link type or snap length; a section in the other byte order
/// (1.10.3 misreads its header as a block of hundreds of MiB, later versions name it). (A block
/// truly too large gets our reader's own, located, message.)
const LIBPCAP_PCAPNG_LIMITS: &[&str] = &[
    "different from the type of the first interface",
    "different from the snapshot length of the first interface",
    "sections with different byte orders",
    "pcapng block size",
];

/// libpcap's error on a record longer than the (first interface's) snap length: our reader reads
/// such a pcapng record whole, as Wireshark does. (Classic pcap files stay with libpcap, which
/// cuts such records to the snap length, or refuses them above 256 KiB with this message.)
const LIBPCAP_OVER_SNAPLEN: &str = "bigger than snaplen of";

/// Whether our pcapng reader can go on where libpcap stopped with `message` on a pcapng file.
fn libpcap_cannot(message: &str) -> bool {
    message.contains(LIBPCAP_OVER_SNAPLEN)
        || LIBPCAP_PCAPNG_LIMITS.iter().any(|m| message.contains(m))
}

/// The stdio buffer libpcap reads a file through. glibc's default is the file system's block
/// size (4 KiB): one read(2) per 4 KiB, over half of a bare libpcap loop's time on a large file
/// in the page cache; with 64 KiB the bare loop takes 0.6 of that time. Larger is not better:
/// with the engine busy on the other core, 256 KiB reads were twice as slow in the kernel's
/// copy as 64 KiB ones (measured on the 2M-packet mix; the pipeline bench prints both loops).
const STDIO_BUF: usize = 64 * 1024;

/// libpcap's `PCAP_TSTAMP_PRECISION_NANO`.
const PCAP_TSTAMP_PRECISION_NANO: libc::c_uint = 1;

extern "C" {
    // libpcap (linked by the pcap crate), not wrapped by it: the one opener that takes a stdio
    // stream we set up ourselves.
    fn pcap_fopen_offline_with_tstamp_precision(
        fp: *mut libc::FILE,
        precision: libc::c_uint,
        errbuf: *mut libc::c_char,
    ) -> *mut libc::c_void;
    // The file's format version as libpcap read it: 1 for pcapng (its section header's), 2 (or
    // 543) for classic pcap.
    fn pcap_major_version(p: *mut libc::c_void) -> libc::c_int;
    // The snap length libpcap took from a file's header (and cuts records to).
    fn pcap_snapshot(p: *mut libc::c_void) -> libc::c_int;
    // The stdio stream libpcap reads a file through.
    fn pcap_file(p: *mut libc::c_void) -> *mut libc::FILE;
}

/// Wraps a `pcap_t *` in the pcap crate's handle (through its public `From<NonNull<pcap_t>>`;
/// the pointee type is named by inference, the crate does not export it).
fn wrap_handle<P>(p: std::ptr::NonNull<P>) -> Capture<Offline>
where
    Capture<Offline>: From<std::ptr::NonNull<P>>,
{
    Capture::from(p)
}

/// What [`open_offline`] opened.
struct Opened {
    cap: Capture<Offline>,
    /// The stdio stream's buffer: must outlive the capture.
    stdio_buf: Box<[u8]>,
    /// The same open file as libpcap's, for our readers, when it is a regular file (not standard
    /// input, a pipe or a device): the only kind that can be read again from its start.
    file: Option<File>,
}

/// Opens `path` (`-`: standard input) for libpcap at nanosecond precision, through a stdio
/// stream with a [`STDIO_BUF`] buffer of ours. The path is opened once: a second open of a pipe
/// (`<(zcat x.pcap.gz)` names one) would take bytes from libpcap's stream.
fn open_offline(path: &str) -> Result<Opened, String> {
    let fd: std::os::fd::OwnedFd = if is_stdin(path) {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?
    } else {
        File::open(path).map_err(|e| e.to_string())?.into()
    };
    let file = if is_stdin(path) {
        None
    } else {
        fd.try_clone()
            .ok()
            .map(File::from)
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
    };
    let fd = fd.into_raw_fd();
    // SAFETY: `fd` is open and ours; fdopen takes it over (fclose closes it).
    let fp = unsafe { libc::fdopen(fd, c"r".as_ptr()) };
    if fp.is_null() {
        let e = std::io::Error::last_os_error();
        // SAFETY: fdopen failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e.to_string());
    }
    let mut buf = vec![0u8; STDIO_BUF].into_boxed_slice();
    let mut errbuf = [0 as libc::c_char; 256];
    // SAFETY: `fp` is a fresh stream with no I/O done yet, as setvbuf requires; `buf` is
    // returned to the caller, which keeps it until the capture (and so the stream) is closed.
    // On failure libpcap leaves the stream to us; on success `pcap_close` closes it.
    let handle = unsafe {
        libc::setvbuf(fp, buf.as_mut_ptr().cast(), libc::_IOFBF, buf.len());
        let p = pcap_fopen_offline_with_tstamp_precision(
            fp,
            PCAP_TSTAMP_PRECISION_NANO,
            errbuf.as_mut_ptr(),
        );
        if p.is_null() {
            libc::fclose(fp);
        }
        p
    };
    match std::ptr::NonNull::new(handle) {
        Some(p) => Ok(Opened {
            cap: wrap_handle(p.cast()),
            stdio_buf: buf,
            file,
        }),
        None => {
            // SAFETY: libpcap wrote a NUL-terminated message into `errbuf` (zeroed before).
            let msg = unsafe { std::ffi::CStr::from_ptr(errbuf.as_ptr()) };
            Err(format!("libpcap error: {}", msg.to_string_lossy()))
        }
    }
}

/// A capture file (or standard input) being read.
pub struct FileSource {
    /// libpcap's handle; idle once our pcapng reader took over. Declared before `_stdio_buf`: fields drop
    /// in order, so the stream is closed before its buffer is freed.
    cap: Capture<Offline>,
    /// The buffer libpcap's stdio stream reads through (see [`open_offline`]).
    _stdio_buf: Box<[u8]>,
    /// Our reader of plain records, while they are plain: until it is dropped, libpcap has
    /// read only what it read on opening the file (see [`plain`]).
    plain: Option<PlainPcap>,
    /// Records our plain reader delivered, once it is dropped.
    plain_records: u64,
    linktype: i32,
    st: FileState,
}

/// The rest of a [`FileSource`]: all that reading goes by when libpcap cannot go on (the end,
/// an error, our pcapng reader), kept apart from libpcap's handle so that it can be used while
/// the handle is still borrowed by the packet it just gave.
struct FileState {
    name: String,
    /// The file libpcap reads, opened once (see [`Opened::file`]).
    file: Option<File>,
    /// The file is pcapng (64-bit timestamps), not classic pcap.
    pcapng: bool,
    /// Our pcapng reader, once libpcap could not go on.
    own: Option<Box<PcapngReader<BufReader<File>>>>,
    /// Records read so far.
    count: u64,
    done: bool,
}

impl FileSource {
    /// Opens `path`; `-` is standard input.
    pub fn open(path: &str) -> Result<FileSource, CaptureError> {
        let Opened {
            cap,
            stdio_buf,
            file,
        } = open_offline(path).map_err(|message| CaptureError::Open {
            file: path.to_string(),
            message,
        })?;
        let linktype = cap.get_datalink().0;
        // pcapng keeps 64-bit timestamps (libpcap converts them faithfully); classic pcap's
        // are unsigned 32-bit.
        // SAFETY: `cap` is an open libpcap handle.
        let pcapng = unsafe { pcap_major_version(cap.as_ptr().cast()) } == 1;
        // SAFETY: as above.
        let snapshot = unsafe { pcap_snapshot(cap.as_ptr().cast()) };
        let plain = file.as_ref().and_then(|f| {
            if pcapng {
                let at = stream_position(&cap)?;
                PlainPcap::new_ng(f, linktype, snapshot, at)
            } else {
                PlainPcap::new(f, linktype, snapshot)
            }
        });
        Ok(FileSource {
            cap,
            _stdio_buf: stdio_buf,
            plain,
            plain_records: 0,
            linktype,
            st: FileState {
                name: path.to_string(),
                file,
                pcapng,
                own: None,
                count: 0,
                done: false,
            },
        })
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.st.name
    }

    /// The file's data-link type (libpcap's `DLT_*` value); for pcapng, its first interface's.
    /// Each [`Frame`] carries its own.
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Whether the file may hold interfaces of other link types than [`FileSource::linktype`]
    /// (a pcapng file that is a regular file, which our reader reads on when libpcap refuses
    /// them).
    pub fn may_have_several_linktypes(&self) -> bool {
        self.st.pcapng && self.st.file.is_some()
    }

    /// Whether our pcapng reader took over from libpcap.
    pub fn took_over(&self) -> bool {
        self.st.own.is_some()
    }

    /// Records read so far.
    pub fn packets_read(&self) -> u64 {
        self.st.count
    }

    /// Of [`FileSource::packets_read`], the records our plain reader delivered
    /// (the rest came from libpcap or our pcapng reader).
    pub fn plain_records(&self) -> u64 {
        if self.plain.is_some() {
            self.st.count
        } else {
            self.plain_records
        }
    }

    /// The next frame, `Ok(None)` at the end of the file. (The capture thread reads with
    /// [`FileSource::read_frames`]; this one-by-one form is what that is tested against.)
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.plain.is_some() {
            self.leave_plain()?;
        }
        let st = &mut self.st;
        if st.done || st.own.is_some() {
            return st.own_or_done();
        }
        match self.cap.next_packet() {
            Ok(p) => {
                st.count += 1;
                Ok(Some(libpcap_frame(&p, self.linktype, st.pcapng, st.count)))
            }
            Err(e) => st.after_libpcap(e),
        }
    }

    /// Hands the next frames, at most `max` of them (a `max` of 0 counts as 1, so that 0 comes
    /// back only at the end), to `f` in order, and returns how many: 0 at the end of the file.
    /// What [`FileSource::next_frame`] would give one by one, with the same errors; an error
    /// comes after the frames read before it were handed over.
    ///
    /// libpcap's frames come through `pcap_dispatch`, one call for up to `max` of them: asking
    /// `pcap_next_ex` for each cost about 70 more instructions per packet in libpcap (a bare
    /// counting loop over 200k small packets: 121 -> 107 M instructions, callgrind).
    #[inline]
    pub fn read_frames(
        &mut self,
        max: usize,
        mut f: impl FnMut(Frame<'_>),
    ) -> Result<usize, CaptureError> {
        let max = max.max(1);
        let mut n = 0usize;
        if let Some(plain) = &mut self.plain {
            while n < max {
                match plain.next(self.st.count + 1) {
                    Next::Frame(frame) => {
                        self.st.count += 1;
                        n += 1;
                        f(frame);
                    }
                    Next::End => {
                        self.st.done = n == 0;
                        return Ok(n);
                    }
                    Next::NotPlain => {
                        // (The frames before it were handed over already.)
                        self.leave_plain()?;
                        break;
                    }
                }
            }
            if n == max {
                return Ok(n);
            }
        }
        let st = &mut self.st;
        if !st.done && st.own.is_none() {
            let (linktype, pcapng, count) = (self.linktype, st.pcapng, &mut st.count);
            let r = self.cap.dispatch(Some(max - n), |p| {
                *count += 1;
                n += 1;
                f(libpcap_frame(&p, linktype, pcapng, *count));
            });
            match r {
                Ok(_) => {
                    // None at all: the end of the file.
                    st.done = n == 0;
                    return Ok(n);
                }
                Err(e) => match st.after_libpcap(e)? {
                    Some(frame) => {
                        f(frame);
                        n += 1;
                    }
                    None => return Ok(n),
                },
            }
        }
        // Our pcapng reader (after a take-over), or nothing more.
        while n < max {
            match st.own_or_done()? {
                Some(frame) => {
                    f(frame);
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }

    /// Hands the file back to libpcap at the first record our plain reader did not deliver:
    /// libpcap's stream (which has read only what it read on opening the file) is moved
    /// there, as libpcap keeps nothing per record (nor per pcapng block that our reader passes
    /// over: see [`plain`]). (Reading the delivered records through libpcap
    /// again instead read a whole file twice when only its last record was cut.) An error,
    /// and the source finished, if the file is now shorter than that: it changed while being
    /// read.
    #[cold]
    #[inline(never)]
    fn leave_plain(&mut self) -> Result<(), CaptureError> {
        let Some(plain) = self.plain.take() else {
            return Ok(());
        };
        self.plain_records = self.st.count;
        let at = plain.next_record_offset();
        let size = self
            .st
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len());
        let moved = size.is_some_and(|s| s >= at)
            && libc::off_t::try_from(at).is_ok_and(|off| {
                // SAFETY: `cap` is an open offline handle, so `pcap_file` is its stream (or
                // null); the stream is only read by libpcap, from where it now stands.
                unsafe {
                    let fp = pcap_file(self.cap.as_ptr().cast());
                    !fp.is_null() && libc::fseeko(fp, off, libc::SEEK_SET) == 0
                }
            });
        if moved {
            return Ok(());
        }
        let message = format!(
            "the file changed while being read: the record after the {} read starts at byte \
             {at}, but the file is now {} bytes long",
            self.st.count,
            size.map_or_else(|| "of unknown".to_string(), |s| s.to_string())
        );
        Err(self.st.fail(message))
    }
}

/// Where libpcap's stream on an offline handle stands (the next byte libpcap reads).
fn stream_position(cap: &Capture<Offline>) -> Option<u64> {
    // SAFETY: `cap` is an open offline handle, so `pcap_file` is its stream (or null);
    // `ftello` only asks the stream where it stands.
    let at = unsafe {
        let fp = pcap_file(cap.as_ptr().cast());
        if fp.is_null() {
            return None;
        }
        libc::ftello(fp)
    };
    u64::try_from(at).ok()
}

/// The [`Frame`] of a packet libpcap delivered, the `count`th of its file.
#[inline(always)]
fn libpcap_frame<'a>(p: &pcap::Packet<'a>, linktype: i32, pcapng: bool, count: u64) -> Frame<'a> {
    // time_t and suseconds_t are i64 on the 64-bit targets we build for.
    #[allow(clippy::unnecessary_cast)]
    let (mut sec, frac) = (p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64);
    // Classic pcap stores seconds as an unsigned 32-bit number (good until 2106); libpcap
    // sign-extends it, turning 2038 and later into 1901. Undo that.
    if sec < 0 && !pcapng {
        sec &= 0xffff_ffff;
    }
    Frame {
        ts: Timestamp::from_parts(sec, frac),
        linktype,
        orig_len: p.header.len,
        data: p.data,
        pcap_cnt: count,
    }
}

impl FileState {
    /// The next frame once libpcap is out of the picture ([`FileSource::next_frame`],
    /// [`FileSource::read_frames`]): the end, or our reader.
    #[cold]
    #[inline(never)]
    fn own_or_done(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        self.own_frame()
    }

    /// The next frame after libpcap's `e` ([`FileSource::next_frame`],
    /// [`FileSource::read_frames`]): the end of the file, an error (with a hint for pcapng
    /// that is not a regular file), or our pcapng reader taking over where libpcap cannot go on.
    #[cold]
    #[inline(never)]
    fn after_libpcap(&mut self, e: pcap::Error) -> Result<Option<Frame<'_>>, CaptureError> {
        if matches!(e, pcap::Error::NoMorePackets) {
            self.done = true;
            return Ok(None);
        }
        let message = e.to_string();
        let Some(file) = &self.file else {
            let message = if LIBPCAP_PCAPNG_LIMITS.iter().any(|m| message.contains(m)) {
                let from = if is_stdin(&self.name) {
                    "standard input"
                } else {
                    "a pipe or device"
                };
                format!(
                    "{message} (exfilwatch reads such pcapng files from a regular file, not \
                     from {from}: save it to a file first)"
                )
            } else {
                message
            };
            return Err(self.fail(message));
        };
        if !self.pcapng || !libpcap_cannot(&message) {
            return Err(self.fail(message));
        }
        match take_over(file, self.count) {
            Some(reader) => {
                self.own = Some(Box::new(reader));
                self.own_frame()
            }
            None => Err(self.fail(message)),
        }
    }

    /// The next frame from our pcapng reader (none without it).
    fn own_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let Some(own) = self.own.as_deref_mut() else {
            return Ok(None);
        };
        match own.next_packet() {
            Ok(Some(p)) => {
                self.count += 1;
                Ok(Some(Frame {
                    ts: p.ts,
                    linktype: p.linktype,
                    orig_len: p.orig_len,
                    data: p.data,
                    pcap_cnt: self.count,
                }))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                // (Not `fail`: `own` still borrows the reader.)
                self.done = true;
                Err(read_error(&self.name, self.count, e.to_string()))
            }
        }
    }

    /// Finishes the source with `message` about the record after the last one read.
    fn fail(&mut self, message: String) -> CaptureError {
        self.done = true;
        read_error(&self.name, self.count, message)
    }
}

/// `message` about the record after the `count`th of file `name`.
fn read_error(name: &str, count: u64, message: String) -> CaptureError {
    CaptureError::Read {
        file: name.to_string(),
        packet: count + 1,
        message,
    }
}

fn is_stdin(path: &str) -> bool {
    path == "-"
}

/// Our reader on `file` (libpcap's, which it no longer reads), from its start and past the
/// `delivered` packets libpcap already gave; `None` if it cannot get there (it disagrees with
/// libpcap about the start of the file), in which case libpcap's error stands.
fn take_over(file: &File, delivered: u64) -> Option<PcapngReader<BufReader<File>>> {
    let mut file = file.try_clone().ok()?;
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut reader = PcapngReader::new(BufReader::with_capacity(1 << 16, file));
    while reader.packets_read() < delivered {
        match reader.next_packet() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
    Some(reader)
}

/// Settings of a live capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    pub interface: String,
    /// A libpcap filter expression.
    pub bpf: Option<String>,
    /// Bytes kept of each packet.
    pub snaplen: i32,
    pub promisc: bool,
    /// Kernel buffer in bytes (libpcap's default when `None`).
    pub buffer_bytes: Option<i32>,
    /// Read timeout: the longest a read waits before the capture loop looks at its flags.
    pub timeout_ms: i32,
}

impl LiveConfig {
    /// Enough for every header we decode: Ethernet + 3 VLAN tags + IPv6 with a few
    /// extension headers + TCP with options.
    pub const DEFAULT_SNAPLEN: i32 = 256;
}

/// Counters libpcap keeps for a live capture (cumulative since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the filter accepted.
    pub received: u64,
    /// Dropped because the kernel buffer was full.
    pub dropped: u64,
    /// Dropped by the interface or its driver.
    pub if_dropped: u64,
}

/// A live capture on an interface.
pub struct LiveSource {
    cap: Capture<pcap::Active>,
    name: String,
    linktype: i32,
    count: u64,
    /// Time stamps are in nanoseconds (else microseconds).
    nano: bool,
    /// The last read found no packet: wait on the socket before the next.
    idle: bool,
    timeout_ms: i32,
    /// Packets stamped before this are skipped (see [`LiveSource::join_fanout`]).
    skip_before: Option<Timestamp>,
    skipped: u64,
}

fn live_err(iface: &str, e: impl std::fmt::Display) -> CaptureError {
    CaptureError::Open {
        file: iface.to_string(),
        message: e.to_string(),
    }
}

impl LiveSource {
    /// Opens and activates the capture, and compiles and sets the filter. Not in immediate
    /// mode: the kernel hands packets over in ring blocks (TPACKET_V3), when one fills or after
    /// the read timeout; immediate mode woke the reader for nearly every packet (160k wake-ups
    /// per million packets, 3 CPU-seconds, and one-packet batches that overflowed the channel:
    /// `cargo bench --bench live`).
    pub fn open(cfg: &LiveConfig) -> Result<LiveSource, CaptureError> {
        let iface = cfg.interface.as_str();
        let mut inactive = Capture::from_device(iface)
            .map_err(|e| live_err(iface, e))?
            .snaplen(cfg.snaplen)
            .promisc(cfg.promisc)
            .immediate_mode(false)
            .timeout(cfg.timeout_ms)
            .precision(Precision::Nano);
        if let Some(b) = cfg.buffer_bytes {
            inactive = inactive.buffer_size(b);
        }
        let mut nano = true;
        let cap = match inactive.open() {
            Ok(c) => c,
            // Not every device does nanosecond time stamps; fall back to microseconds.
            Err(_) => {
                let mut i = Capture::from_device(iface)
                    .map_err(|e| live_err(iface, e))?
                    .snaplen(cfg.snaplen)
                    .promisc(cfg.promisc)
                    .immediate_mode(false)
                    .timeout(cfg.timeout_ms);
                if let Some(b) = cfg.buffer_bytes {
                    i = i.buffer_size(b);
                }
                nano = false;
                i.open().map_err(|e| live_err(iface, e))?
            }
        };
        // Non-blocking reads plus our own poll(): libpcap's read timeout does not make a
        // blocking read return on Linux when no packet comes, and the capture loop must see its
        // stop flag and hand over partial batches.
        let mut cap = cap.setnonblock().map_err(|e| live_err(iface, e))?;
        if let Some(expr) = &cfg.bpf {
            cap.filter(expr, true).map_err(|e| CaptureError::Open {
                file: iface.to_string(),
                message: format!("bad BPF expression {expr:?}: {e}"),
            })?;
        }
        let linktype = cap.get_datalink().0;
        Ok(LiveSource {
            cap,
            name: iface.to_string(),
            linktype,
            count: 0,
            nano,
            idle: false,
            timeout_ms: cfg.timeout_ms,
            skip_before: None,
            skipped: 0,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data-link type.
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Hands the frames waiting now, at most `max` of them (a `max` of 0 counts as 1), to `f`
    /// in order, through one `pcap_dispatch` call (per-packet `pcap_next_ex` calls cost more in
    /// libpcap, and the capture loop's clock and flag checks then ran per packet). Returns how
    /// many packets were read, those skipped before a fanout join included (counted, not handed
    /// over); 0 when none was waiting, and then the next call first waits up to the read
    /// timeout for one.
    pub fn read_frames(
        &mut self,
        max: usize,
        mut f: impl FnMut(Frame<'_>),
    ) -> Result<usize, CaptureError> {
        if self.idle {
            self.idle = false;
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.cap),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; an error or EINTR (a signal) just ends the wait early.
            unsafe { libc::poll(&mut pfd, 1, self.timeout_ms) };
        }
        let (linktype, nano, skip_before) = (self.linktype, self.nano, self.skip_before);
        let (count, skipped) = (&mut self.count, &mut self.skipped);
        let r = self.cap.dispatch(Some(max.max(1)), |p| {
            *count += 1;
            #[allow(clippy::unnecessary_cast)]
            let (sec, frac) = (p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64);
            // The activation fell back to microseconds if nanoseconds were refused.
            let nanos = if nano { frac } else { frac * 1000 };
            let ts = Timestamp::from_parts(sec, nanos);
            if skip_before.is_some_and(|t| ts < t) {
                *skipped += 1;
                return;
            }
            f(Frame {
                ts,
                linktype,
                orig_len: p.header.len,
                data: p.data,
                pcap_cnt: *count,
            });
        });
        match r {
            // Non-blocking: no packet waiting now.
            Ok(0) => {
                self.idle = true;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => Err(CaptureError::Read {
                file: self.name.clone(),
                packet: self.count + 1,
                message: e.to_string(),
            }),
        }
    }

    /// Joins the kernel's `PACKET_FANOUT` group `group` (created by the first to join): the
    /// kernel then hands each packet to one socket of the group, chosen by a symmetric hash of
    /// its flow (IP fragments reassembled for hashing), so each worker sees whole flows, both
    /// directions. This is what Suricata's `cluster_flow` and Zeek's AF_PACKET workers use.
    ///
    /// Before joining, the socket received every packet (as did the group's members): with
    /// `skip_earlier`, packets stamped before the join are skipped (and counted), so a packet
    /// is not seen by two workers. The first worker keeps them: until a second one joins, it
    /// alone receives everything.
    pub fn join_fanout(&mut self, group: u16, skip_earlier: bool) -> Result<(), CaptureError> {
        #[cfg(target_os = "linux")]
        {
            const SOL_PACKET: libc::c_int = 263;
            const PACKET_FANOUT: libc::c_int = 18;
            const PACKET_FANOUT_HASH: u32 = 0;
            const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;
            let arg: u32 =
                u32::from(group) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.cap);
            // SAFETY: a valid socket descriptor and a 4-byte option value, as the kernel expects.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    SOL_PACKET,
                    PACKET_FANOUT,
                    (&arg as *const u32).cast(),
                    std::mem::size_of::<u32>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(live_err(
                    &self.name,
                    format_args!(
                        "joining PACKET_FANOUT group {group}: {}",
                        std::io::Error::last_os_error()
                    ),
                ));
            }
            if skip_earlier {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.skip_before = Some(Timestamp::from_parts(
                    d.as_secs() as i64,
                    i64::from(d.subsec_nanos()),
                ));
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (group, skip_earlier);
            Err(live_err(
                &self.name,
                "worker fanout needs Linux (PACKET_FANOUT)",
            ))
        }
    }

    /// Packets skipped because they arrived before the fanout join.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// libpcap's counters; call on an interval, never per packet.
    pub fn stats(&mut self) -> Option<KernelStats> {
        self.cap.stats().ok().map(|s| KernelStats {
            received: u64::from(s.received),
            dropped: u64::from(s.dropped),
            if_dropped: u64::from(s.if_dropped),
        })
    }
}

/// A capture device and its addresses, for `exfilwatch interfaces`.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub description: Option<String>,
    pub addresses: Vec<String>,
    pub up: bool,
    pub running: bool,
    pub loopback: bool,
}

/// Lists capture devices.
pub fn interfaces() -> Result<Vec<Interface>, CaptureError> {
    let devs = pcap::Device::list().map_err(|e| live_err("interfaces", e))?;
    Ok(devs
        .into_iter()
        .map(|d| Interface {
            addresses: d
                .addresses
                .iter()
                .map(|a| match a.netmask {
                    Some(m) => format!("{} netmask {}", a.addr, m),
                    None => a.addr.to_string(),
                })
                .collect(),
            up: d.flags.is_up(),
            running: d.flags.is_running(),
            loopback: d.flags.is_loopback(),
            name: d.name,
            description: d.desc,
        })
        .collect())
}
