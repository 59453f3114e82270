//! Plain records of a classic pcap file, read by us instead of by libpcap.
//!
//! libpcap reads a record with two `fread` calls (its header, then its bytes) into a buffer of
//! its own: about 430 instructions per packet in libpcap and stdio on a small-packet capture,
//! more than decoding it. For the records where libpcap does nothing but that, this reader
//! hands out the bytes where they lie in its own read buffer. Everything else stays libpcap's:
//! the file header is checked by libpcap first ([`PlainPcap::new`] only accepts what libpcap
//! opened, in the common forms), and at the first record that is not plain (longer than the snap
//! length or 256 KiB, cut short by the end of the file, a read error) the reader stops and
//! [`super::FileSource`] moves libpcap's stream to that record, so libpcap reads it and its
//! cuts, refusals and error messages stay libpcap's.
//!
//! A plain record, in what libpcap 1.10 does with it (`sf-pcap.c`, `pcap_next_packet`): a file
//! of version 2.4 (so lengths never swapped), magic `0xa1b2c3d4` or `0xa1b23c4d` in either byte
//! order (the patched-header variant `0xa1b2cd34` stays libpcap's), a captured length no larger
//! than the snap length libpcap took from the header nor than 256 KiB (libpcap refuses longer
//! records whatever the header says), and a link type whose records libpcap
//! passes on unchanged (the pseudo-headers it byte-swaps in files of the other byte order, and
//! Linux USB's length fix-up, stay libpcap's). Times are read as libpcap reads them (see
//! [`PlainPcap::next`]) and scaled to nanoseconds as libpcap does at nanosecond precision.
//!
//! pcapng is read the same way from where libpcap stopped after opening it (past the section
//! header and the first interface's block, [`PlainPcap::new_ng`]). A plain block, in what
//! libpcap 1.10 does with it (`sf-pcapng.c`, `pcap_ng_next_packet`): an Enhanced Packet Block
//! of that first interface, whose captured length fits its block and the snap length, in a
//! section whose only interface has microsecond or nanosecond timestamps and no time offset
//! (the scalings libpcap does by one multiplication or none); or a block libpcap skips (not a
//! packet, interface or section block), whole, of at most `NG_MAX_BLOCK` bytes, with its
//! trailing length equal to its leading one. Any other block (another interface, a new
//! section, the other packet blocks, a length libpcap may refuse) is libpcap's, from there to
//! the end of the file: libpcap keeps nothing per packet or skipped block, so its state where
//! it reads on is what it would be had it read every block before.
//!
//! `tests/files.rs` and `tests/corpus.rs` check every fixture, every cut of them and every
//! corpus file frame by frame against libpcap's own reading.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;

use super::pcapng::{block_type, Endian, PcapngReader};
use crate::decode::Frame;
use crate::time::Timestamp;

/// Classic pcap magic numbers: microsecond and nanosecond timestamps.
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// Time units a second: microseconds and nanoseconds.
const MICROS: u64 = 1_000_000;
const NANOS: u64 = 1_000_000_000;
/// The file header's and a record header's size.
const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;
/// What one read(2) asks for (the size libpcap's stdio stream reads through: see
/// `super::STDIO_BUF`).
const READ_SIZE: usize = 64 * 1024;

/// libpcap's DLT values whose records it may change after reading them (`pcap_post_process`).
const DLT_LINUX_SLL: i32 = 113;
const DLT_PFLOG: i32 = 117;
const DLT_USB_LINUX: i32 = 189;
const DLT_USB_LINUX_MMAPPED: i32 = 220;
const DLT_NFLOG: i32 = 239;
const DLT_LINUX_SLL2: i32 = 276;
/// libpcap's DLT values with a record size limit above 256 KiB (`max_snaplen_for_dlt`).
const DLT_DBUS: i32 = 231;
const DLT_USBPCAP: i32 = 249;
const DLT_EBHSCR: i32 = 279;
/// libpcap's `MAXIMUM_SNAPLEN`: the largest record it reads (`max_snaplen_for_dlt`) in every
/// link type this reader takes.
const MAXIMUM_SNAPLEN: u32 = 262_144;
/// pcapng: the largest block this reader takes (a packet of `MAXIMUM_SNAPLEN` bytes with
/// room for options); libpcap reads the larger ones.
const NG_MAX_BLOCK: u32 = MAXIMUM_SNAPLEN + 64 * 1024;
/// pcapng: the most of a file's start libpcap may have read on opening it that this reader
/// looks through (a section header and interface blocks as written are far smaller).
const NG_MAX_HEAD: u64 = 64 * 1024;
/// pcapng: a block's header (type, total length), an Enhanced Packet Block's fields before
/// its data (interface, time high and low words, captured and original lengths) and a
/// block's trailing length.
const NG_HEADER: usize = 8;
const NG_EPB_FIXED: usize = 20;
const NG_TRAILER: usize = 4;

/// The reader: `buf[pos..end]` is read and not yet handed out.
pub(super) struct PlainPcap {
    /// libpcap's open file (a dup), read with `pread` at `offset` so that libpcap's own file
    /// position stays where its stream left it.
    file: File,
    offset: u64,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    swapped: bool,
    /// Multiplier of the record's fraction to nanoseconds (1000 for microsecond files).
    scale: i64,
    /// pcapng: the interface's time units per second (10^6 or 10^9); 0 for classic pcap.
    ng_units: u64,
    snapshot: u32,
    linktype: i32,
    /// The file ended (read(2) gave 0).
    eof: bool,
}

/// What [`PlainPcap::next`] found.
pub(super) enum Next<'a> {
    Frame(Frame<'a>),
    /// The end of the file, at a record boundary.
    End,
    /// A record that is not plain (or a read error): libpcap is to read on from here.
    NotPlain,
}

impl PlainPcap {
    /// A reader of `file` (the regular file libpcap opened) past its file header, if the file
    /// is classic pcap in a form this reader reads and `dlt` (libpcap's link type for it) is
    /// one whose records libpcap leaves as they are; `snapshot` is libpcap's snap length for
    /// the file.
    pub(super) fn new(file: &File, dlt: i32, snapshot: i32) -> Option<PlainPcap> {
        let file = file.try_clone().ok()?;
        let mut header = [0u8; FILE_HEADER];
        file.read_exact_at(&mut header, 0).ok()?;
        let magic = u32_at(&header, 0, false);
        let (swapped, nano) = match (magic, magic.swap_bytes()) {
            (MAGIC_US, _) => (false, false),
            (MAGIC_NS, _) => (false, true),
            (_, MAGIC_US) => (true, false),
            (_, MAGIC_NS) => (true, true),
            _ => return None,
        };
        if (u16_at(&header, 4, swapped), u16_at(&header, 6, swapped)) != (2, 4) {
            return None;
        }
        let units = if nano { NANOS } else { MICROS };
        let offset = FILE_HEADER as u64;
        PlainPcap::start(file, offset, swapped, units, false, dlt, snapshot)
    }

    /// A reader of `file` (the regular pcapng file libpcap opened) from `at`, where libpcap's
    /// stream stands after opening it, if the blocks before hold one section header, one
    /// interface (libpcap's `dlt`) with microsecond or nanosecond times and no time offset,
    /// and the link type's packets are left as they are; `snapshot` is libpcap's snap length.
    pub(super) fn new_ng(file: &File, dlt: i32, snapshot: i32, at: u64) -> Option<PlainPcap> {
        let file = file.try_clone().ok()?;
        if at > NG_MAX_HEAD {
            return None;
        }
        let mut head = vec![0u8; usize::try_from(at).ok()?];
        file.read_exact_at(&mut head, 0).ok()?;
        // Our reader over what libpcap read: one section, its interfaces, and no packet.
        // (libpcap reads every block before the first interface's in the first section
        // header's byte order, without looking at a second header: a start with two
        // sections may frame its blocks differently for the two readers.)
        let mut r = PcapngReader::new(&head[..]);
        if !matches!(r.next_packet(), Ok(None)) || r.sections() != 1 {
            return None;
        }
        let [iface] = r.interfaces() else {
            return None;
        };
        let units = iface.resolution.units_per_sec();
        if ![MICROS, NANOS].contains(&units) || iface.linktype != dlt || iface.offset_secs != 0 {
            return None;
        }
        let swapped = (r.endian() == Endian::Little) != cfg!(target_endian = "little");
        PlainPcap::start(file, at, swapped, units, true, dlt, snapshot)
    }

    /// A reader of `file` from `offset`, a record's or block's start: numbers in the other
    /// byte order than this machine's if `swapped`, times in `units` (10^6 or 10^9) a second,
    /// pcapng blocks or classic records; `None` if `dlt`'s records are never plain (see
    /// [`plain_snapshot`]).
    fn start(
        file: File,
        offset: u64,
        swapped: bool,
        units: u64,
        pcapng: bool,
        dlt: i32,
        snapshot: i32,
    ) -> Option<PlainPcap> {
        Some(PlainPcap {
            file,
            offset,
            buf: vec![0; READ_SIZE],
            pos: 0,
            end: 0,
            swapped,
            scale: (NANOS / units) as i64,
            ng_units: if pcapng { units } else { 0 },
            snapshot: plain_snapshot(dlt, swapped, snapshot)?,
            linktype: dlt,
            eof: false,
        })
    }

    /// The next record as the `count`th frame of the file.
    #[inline(always)]
    pub(super) fn next(&mut self, count: u64) -> Next<'_> {
        if self.ng_units != 0 {
            return self.next_ng(count);
        }
        if self.end - self.pos < RECORD_HEADER && !self.fill(RECORD_HEADER) {
            return self.short();
        }
        let h = &self.buf[self.pos..self.pos + RECORD_HEADER];
        let word = |at| u32_at(h, at, self.swapped);
        let (sec, frac, caplen, len) = (word(0), word(4), word(8), word(12));
        if caplen > self.snapshot {
            return Next::NotPlain;
        }
        let need = RECORD_HEADER + caplen as usize;
        if self.end - self.pos < need && !self.fill(need) {
            return self.short();
        }
        let start = self.pos + RECORD_HEADER;
        self.pos += need;
        // libpcap keeps a record's 32-bit fraction signed in a file of this machine's byte
        // order and unsigned in one of the other (its `SWAPLONG` works on unsigned numbers);
        // seconds are unsigned either way once `super::libpcap_frame` has undone the sign
        // extension. (A fraction of a second at or above 2^31 is a damaged record, but libpcap
        // hands it on and so do we.)
        let frac = if self.swapped {
            i64::from(frac)
        } else {
            i64::from(frac as i32)
        };
        Next::Frame(Frame {
            ts: Timestamp::from_parts(i64::from(sec), frac * self.scale),
            linktype: self.linktype,
            orig_len: len,
            data: &self.buf[start..start + caplen as usize],
            pcap_cnt: count,
        })
    }

    /// [`PlainPcap::next`] in a pcapng file: the next packet block, past the blocks libpcap
    /// skips.
    #[inline(never)]
    fn next_ng(&mut self, count: u64) -> Next<'_> {
        loop {
            if self.end - self.pos < NG_HEADER && !self.fill(NG_HEADER) {
                return self.short();
            }
            let h = &self.buf[self.pos..self.pos + NG_HEADER];
            let (ty, len) = (u32_at(h, 0, self.swapped), u32_at(h, 4, self.swapped));
            let min = (NG_HEADER + NG_TRAILER) as u32;
            if len % 4 != 0 || len < min || len > NG_MAX_BLOCK {
                return Next::NotPlain;
            }
            let need = len as usize;
            if self.end - self.pos < need && !self.fill(need) {
                return self.short();
            }
            let b = &self.buf[self.pos..self.pos + need];
            if u32_at(b, need - NG_TRAILER, self.swapped) != len {
                return Next::NotPlain;
            }
            match ty {
                block_type::EPB => {}
                block_type::SHB | block_type::IDB | block_type::PB | block_type::SPB => {
                    return Next::NotPlain;
                }
                _ => {
                    // libpcap skips it.
                    self.pos += need;
                    continue;
                }
            }
            let data = NG_HEADER + NG_EPB_FIXED;
            if need < data + NG_TRAILER {
                return Next::NotPlain;
            }
            let word = |at| u32_at(b, NG_HEADER + at, self.swapped);
            let (iface, high, low, caplen, orig_len) =
                (word(0), word(4), word(8), word(12), word(16));
            if iface != 0 || caplen > self.snapshot || caplen as usize > need - data - NG_TRAILER {
                return Next::NotPlain;
            }
            let start = self.pos + data;
            self.pos += need;
            // As libpcap converts it at nanosecond precision (and `super::libpcap_frame` takes
            // it on): whole seconds, and the fraction scaled up.
            let t = u64::from(high) << 32 | u64::from(low);
            let (sec, frac) = (t / self.ng_units, t % self.ng_units);
            return Next::Frame(Frame {
                ts: Timestamp::from_parts(sec as i64, frac as i64 * self.scale),
                linktype: self.linktype,
                orig_len,
                data: &self.buf[start..start + caplen as usize],
                pcap_cnt: count,
            });
        }
    }

    /// The file offset of the first record not handed out.
    pub(super) fn next_record_offset(&self) -> u64 {
        self.offset - (self.end - self.pos) as u64
    }

    /// The end of the file if nothing is left over, else a cut record for libpcap to report.
    #[cold]
    fn short(&self) -> Next<'_> {
        if self.eof && self.pos == self.end {
            Next::End
        } else {
            Next::NotPlain
        }
    }

    /// Reads until `need` bytes past `pos` are in the buffer; false if the file ends (or fails)
    /// first.
    #[cold]
    #[inline(never)]
    fn fill(&mut self, need: usize) -> bool {
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        if self.buf.len() < need {
            self.buf.resize(need.next_multiple_of(READ_SIZE), 0);
        }
        while self.end < need {
            if self.eof {
                return false;
            }
            let room = (self.buf.len() - self.end).min(READ_SIZE.max(need - self.end));
            match self
                .file
                .read_at(&mut self.buf[self.end..self.end + room], self.offset)
            {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // libpcap reads on from here and meets the error itself.
                Err(_) => return false,
            }
        }
        true
    }
}

/// The snap length a plain record may have: libpcap's `snapshot` for the file, up to
/// `MAXIMUM_SNAPLEN`; `None` if the link type's records are not plain at all (libpcap changes
/// them after reading, or reads them longer than `MAXIMUM_SNAPLEN`).
fn plain_snapshot(dlt: i32, swapped: bool, snapshot: i32) -> Option<u32> {
    let changed_by_libpcap = matches!(dlt, DLT_USB_LINUX_MMAPPED)
        || (swapped
            && matches!(
                dlt,
                DLT_PFLOG | DLT_LINUX_SLL | DLT_LINUX_SLL2 | DLT_USB_LINUX | DLT_NFLOG
            ));
    if changed_by_libpcap || matches!(dlt, DLT_DBUS | DLT_USBPCAP | DLT_EBHSCR) {
        return None;
    }
    // libpcap keeps a header's snap length up to INT_MAX, but refuses any record longer
    // than `MAXIMUM_SNAPLEN`: such a record is not plain (this also bounds our buffer).
    Some(
        u32::try_from(snapshot)
            .ok()
            .filter(|&s| s > 0)?
            .min(MAXIMUM_SNAPLEN),
    )
}

/// The 4-byte number at `at` in `b`, written in the file's byte order (`swapped`: the other
/// than this machine's).
#[inline(always)]
fn u32_at(b: &[u8], at: usize, swapped: bool) -> u32 {
    let v = u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if swapped {
        v.swap_bytes()
    } else {
        v
    }
}

/// The 2-byte number at `at` in `b`, as [`u32_at`].
fn u16_at(b: &[u8], at: usize, swapped: bool) -> u16 {
    let v = u16::from_ne_bytes([b[at], b[at + 1]]);
    if swapped {
        v.swap_bytes()
    } else {
        v
    }
}
