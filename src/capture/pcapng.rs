//! pcapng, read by exfilwatch itself: for the valid files libpcap 1.10 gives up on (interfaces of
//! different link types or snap lengths in one file, sections in both byte orders, records longer
//! than their interface's snap length). [`super::FileSource`] hands a file over to this reader
//! when libpcap stops on one of those; everything else stays with libpcap.
//!
//! Contract: [`PcapngReader::next_packet`] never panics on any input and never holds more than
//! [`MAX_BLOCK_LEN`] bytes for one block (a larger block is refused, not allocated). Every problem
//! is an [`Error`] carrying the byte offset of the block it was found in; after an error the
//! reader is finished. It reads Section Header Blocks in either byte order (each new section
//! forgets the previous section's interfaces), Interface Description Blocks (link type, snap
//! length, `if_tsresol` in negative powers of 10 or 2, `if_tsoffset`), Enhanced Packet Blocks,
//! Simple Packet Blocks and the obsolete Packet Block, and skips every other block once its
//! framing checked out. Packets are numbered as libpcap and Wireshark number them: one per EPB,
//! SPB or PB. Timestamps are exact at every resolution (128-bit arithmetic), truncated to
//! nanoseconds; a Simple Packet Block has none and gets time 0 plus its interface's
//! `if_tsoffset`, as libpcap gives it. A record's captured length may exceed its interface's snap
//! length as long as its block holds the bytes (Wireshark reads such records whole too).
//!
//! Link types are reported as libpcap's `pcap_datalink()` would (`LINKTYPE_RAW` 101 as `DLT_RAW`
//! 12, and so on), so a frame looks the same whichever reader produced it.

use std::fmt;
use std::io::{self, Read};

use crate::time::Timestamp;

/// The largest block we accept (libpcap's starting limit too): a hostile length field is refused
/// with an error instead of an allocation.
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;

/// Block types we act on.
pub mod block_type {
    /// Section Header Block: `\n\r\r\n`, the same in both byte orders.
    pub const SHB: u32 = 0x0A0D_0D0A;
    pub const IDB: u32 = 1;
    /// Packet Block (obsolete).
    pub const PB: u32 = 2;
    pub const SPB: u32 = 3;
    pub const NRB: u32 = 4;
    pub const ISB: u32 = 5;
    pub const EPB: u32 = 6;
    pub const DSB: u32 = 10;

    /// A name for messages.
    pub fn name(t: u32) -> String {
        let known = match t {
            SHB => "Section Header Block",
            IDB => "Interface Description Block",
            PB => "Packet Block",
            SPB => "Simple Packet Block",
            NRB => "Name Resolution Block",
            ISB => "Interface Statistics Block",
            EPB => "Enhanced Packet Block",
            DSB => "Decryption Secrets Block",
            _ => return format!("block of type 0x{t:08x}"),
        };
        known.to_string()
    }
}

/// Byte offsets, as in smoltcp's `field` modules. Block fields are relative to the block's start;
/// the others to the block's body (what follows type and total length).
mod field {
    pub type Field = core::ops::Range<usize>;
    /// Every block: type, total length, body, total length again.
    pub const BLOCK_TYPE: Field = 0..4;
    pub const BLOCK_LEN: Field = 4..8;
    pub const BLOCK_HEADER: usize = 8;
    pub const BLOCK_TRAILER: usize = 4;
    /// The smallest block: header and trailer, no body.
    pub const BLOCK_MIN: u32 = 12;
    /// Section Header Block: byte-order magic, version, section length; options follow.
    pub const SHB_MAGIC: Field = 0..4;
    pub const SHB_MAJOR: Field = 4..6;
    pub const SHB_MINOR: Field = 6..8;
    pub const SHB_FIXED: usize = 16;
    /// Interface Description Block: link type, reserved, snap length; options follow.
    pub const IDB_LINKTYPE: Field = 0..2;
    pub const IDB_SNAPLEN: Field = 4..8;
    pub const IDB_FIXED: usize = 8;
    /// Enhanced Packet Block: interface, timestamp high and low words, captured and original
    /// lengths; packet data follows.
    pub const EPB_INTERFACE: Field = 0..4;
    pub const EPB_TS_HIGH: Field = 4..8;
    pub const EPB_TS_LOW: Field = 8..12;
    pub const EPB_CAPLEN: Field = 12..16;
    pub const EPB_LEN: Field = 16..20;
    pub const EPB_FIXED: usize = 20;
    /// Packet Block: a 16-bit interface and a drop count, then as the EPB.
    pub const PB_INTERFACE: Field = 0..2;
    pub const PB_TS_HIGH: Field = 4..8;
    pub const PB_TS_LOW: Field = 8..12;
    pub const PB_CAPLEN: Field = 12..16;
    pub const PB_LEN: Field = 16..20;
    pub const PB_FIXED: usize = 20;
    /// Simple Packet Block: original length; packet data follows.
    pub const SPB_LEN: Field = 0..4;
    pub const SPB_FIXED: usize = 4;
    /// An option: code, value length, value padded to 4 bytes.
    pub const OPT_CODE: Field = 0..2;
    pub const OPT_LEN: Field = 2..4;
    pub const OPT_HEADER: usize = 4;
}

/// IDB option codes we read.
mod option {
    pub const END_OF_OPT: u16 = 0;
    pub const IF_TSRESOL: u16 = 9;
    pub const IF_TSOFFSET: u16 = 14;
}

/// The byte-order magic of a Section Header Block, as written by its writer.
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// A section's byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    fn bytes<const N: usize>(b: &[u8], f: field::Field) -> Option<[u8; N]> {
        b.get(f)?.try_into().ok()
    }

    fn u16(self, b: &[u8], f: field::Field) -> Option<u16> {
        let a = Self::bytes(b, f)?;
        Some(match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }

    fn u32(self, b: &[u8], f: field::Field) -> Option<u32> {
        let a = Self::bytes(b, f)?;
        Some(match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }

    fn i64(self, b: &[u8], f: field::Field) -> Option<i64> {
        let a = Self::bytes(b, f)?;
        Some(match self {
            Endian::Little => i64::from_le_bytes(a),
            Endian::Big => i64::from_be_bytes(a),
        })
    }
}

/// A timestamp resolution: how many units make one second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    units_per_sec: u64,
}

impl Resolution {
    /// The default without `if_tsresol`: microseconds.
    pub const MICROS: Resolution = Resolution {
        units_per_sec: 1_000_000,
    };

    /// From an `if_tsresol` byte: 10^-n s with bit 7 clear, 2^-n s with it set; `None` beyond
    /// what a 64-bit timestamp can count (10^-19, 2^-63).
    pub fn from_tsresol(v: u8) -> Option<Resolution> {
        let n = u32::from(v & 0x7F);
        let units_per_sec = if v & 0x80 != 0 {
            1u64.checked_shl(n).filter(|_| n <= 63)?
        } else {
            10u64.checked_pow(n)?
        };
        Some(Resolution { units_per_sec })
    }

    /// Units per second.
    pub fn units_per_sec(self) -> u64 {
        self.units_per_sec
    }

    /// The time of a raw 64-bit timestamp plus `offset_secs`, truncated to nanoseconds (and
    /// saturated at the ends of [`Timestamp`]'s range, 1677 and 2262).
    pub fn timestamp(self, raw: u64, offset_secs: i64) -> Timestamp {
        let units = u128::from(self.units_per_sec);
        let raw = u128::from(raw);
        // raw / units fits an i128; the fraction times 1e9 fits a u128 (< 2^64 * 2^30).
        let secs = i128::try_from(raw / units).unwrap_or(i128::MAX) + i128::from(offset_secs);
        let nanos = (raw % units) * 1_000_000_000 / units;
        let secs = i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX });
        Timestamp::from_parts(secs, i64::try_from(nanos).unwrap_or(0))
    }
}

/// One interface of the current section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    /// libpcap's `DLT_*` value for the block's `LINKTYPE_*` value.
    pub linktype: i32,
    /// 0: no limit.
    pub snaplen: u32,
    pub resolution: Resolution,
    /// `if_tsoffset`: seconds added to every timestamp.
    pub offset_secs: i64,
}

/// libpcap's `DLT_*` value for a file's `LINKTYPE_*` value where the two differ (its
/// `linktype_to_dlt`, as on Linux); every other value is the same in both.
pub fn dlt_of_linktype(linktype: u16) -> i32 {
    match linktype {
        100 => 11, // ATM RFC 1483
        101 => 12, // raw IP
        102 => 15, // SLIP BSD/OS
        103 => 16, // PPP BSD/OS
        106 => 19, // ATM CLIP
        other => i32::from(other),
    }
}

/// A packet as read: borrowed bytes plus their interface's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub ts: Timestamp,
    /// The interface's link type (libpcap's `DLT_*` numbering).
    pub linktype: i32,
    /// The interface id within its section.
    pub interface: u32,
    /// Length on the wire.
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// A problem in a pcapng file, located by the byte offset of its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset of the block (or block header) where the problem is.
    pub offset: u64,
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file does not start with a Section Header Block.
    NotPcapng { block_type: u32 },
    /// A Section Header Block's byte-order magic is 0x1A2B3C4D in neither byte order.
    BadByteOrderMagic { magic: u32 },
    /// A section of a major version other than 1.
    UnsupportedVersion { major: u16, minor: u16 },
    /// The file ends inside a block (`block_type` None: inside its type and length fields):
    /// `needed` bytes from the block's start, `present` there.
    Truncated {
        block_type: Option<u32>,
        needed: u64,
        present: u64,
    },
    /// A total length below 12 or not a multiple of 4.
    BadBlockLength { block_type: u32, len: u32 },
    /// A total length above [`MAX_BLOCK_LEN`].
    BlockTooLarge { block_type: u32, len: u32 },
    /// The trailing total length differs from the leading one.
    TrailerMismatch {
        block_type: u32,
        header: u32,
        trailer: u32,
    },
    /// The block is too short for its fixed fields.
    BodyTooShort { block_type: u32, len: u32 },
    /// A packet's captured length runs past its block.
    CaptureTooLong {
        block_type: u32,
        caplen: u32,
        room: usize,
    },
    /// A packet names an interface its section did not describe.
    UnknownInterface {
        block_type: u32,
        interface: u32,
        interfaces: usize,
    },
    /// An Interface Description Block option that runs past the block, or an `if_tsresol` or
    /// `if_tsoffset` of the wrong length or given twice.
    BadOption { code: u16, problem: &'static str },
    /// An `if_tsresol` finer than a 64-bit timestamp can count.
    BadResolution { tsresol: u8 },
    /// Reading the file failed.
    Io { message: String },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use block_type::name;
        match self {
            ErrorKind::NotPcapng { block_type } => write!(
                f,
                "not a pcapng file: it starts with a {}, not a Section Header Block",
                name(*block_type)
            ),
            ErrorKind::BadByteOrderMagic { magic } => write!(
                f,
                "Section Header Block with a bad byte-order magic 0x{magic:08x}"
            ),
            ErrorKind::UnsupportedVersion { major, minor } => write!(
                f,
                "pcapng section version {major}.{minor} is not supported (only 1.x)"
            ),
            ErrorKind::Truncated {
                block_type,
                needed,
                present,
            } => {
                let what = match block_type {
                    Some(t) => name(*t),
                    None => "block header".to_string(),
                };
                write!(
                    f,
                    "file ends inside the {what}: {needed} bytes needed, {present} present"
                )
            }
            ErrorKind::BadBlockLength { block_type, len } => write!(
                f,
                "{} with a total length of {len} (must be at least 12 and a multiple of 4)",
                name(*block_type)
            ),
            ErrorKind::BlockTooLarge { block_type, len } => write!(
                f,
                "{} of {len} bytes is larger than the {} MiB exfilwatch accepts for one block",
                name(*block_type),
                MAX_BLOCK_LEN >> 20
            ),
            ErrorKind::TrailerMismatch {
                block_type,
                header,
                trailer,
            } => write!(
                f,
                "{}: trailing total length {trailer} differs from the leading {header}",
                name(*block_type)
            ),
            ErrorKind::BodyTooShort { block_type, len } => write!(
                f,
                "{} of {len} bytes is too short for its fixed fields",
                name(*block_type)
            ),
            ErrorKind::CaptureTooLong {
                block_type,
                caplen,
                room,
            } => write!(
                f,
                "{}: captured length {caplen} runs past the block ({room} bytes of packet data)",
                name(*block_type)
            ),
            ErrorKind::UnknownInterface {
                block_type,
                interface,
                interfaces,
            } => write!(
                f,
                "{} on interface {interface}, but its section describes {interfaces} interface(s)",
                name(*block_type)
            ),
            ErrorKind::BadOption { code, problem } => {
                write!(f, "Interface Description Block option {code}: {problem}")
            }
            ErrorKind::BadResolution { tsresol } => write!(
                f,
                "if_tsresol 0x{tsresol:02x} is finer than a 64-bit timestamp can count \
                 (10^-19 or 2^-63 s at most)"
            ),
            ErrorKind::Io { message } => write!(f, "read error: {message}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (block at byte offset {})", self.kind, self.offset)
    }
}

impl std::error::Error for Error {}

/// Where the current packet is: metadata and the range of its bytes in the block body.
struct PacketAt {
    ts: Timestamp,
    linktype: i32,
    interface: u32,
    orig_len: u32,
    data: core::ops::Range<usize>,
}

/// A block's type and total length; its body is in the reader's buffer.
struct Block {
    ty: u32,
    len: u32,
}

/// Reads packets from a pcapng stream. Give it a buffered reader (it reads in small pieces).
pub struct PcapngReader<R> {
    input: R,
    /// Byte offset of the next block.
    offset: u64,
    /// Byte offset of the block being parsed, for errors.
    block_offset: u64,
    endian: Endian,
    /// A Section Header Block has been read.
    in_section: bool,
    /// The current section's interfaces, by id.
    interfaces: Vec<Interface>,
    /// The current block's body (between total length and trailing total length).
    body: Vec<u8>,
    packets: u64,
    /// Section Header Blocks read.
    sections: u64,
    done: bool,
}

impl<R: Read> PcapngReader<R> {
    /// A reader at the start of a pcapng stream.
    pub fn new(input: R) -> PcapngReader<R> {
        PcapngReader {
            input,
            offset: 0,
            block_offset: 0,
            endian: Endian::Little,
            in_section: false,
            interfaces: Vec::new(),
            body: Vec::new(),
            packets: 0,
            sections: 0,
            done: false,
        }
    }

    /// Packets read so far.
    pub fn packets_read(&self) -> u64 {
        self.packets
    }

    /// The current section's interfaces.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The current section's byte order.
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// Section Header Blocks read so far.
    pub fn sections(&self) -> u64 {
        self.sections
    }

    /// The next packet, `Ok(None)` at the end of the stream. After an error, always `Ok(None)`.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, Error> {
        if self.done {
            return Ok(None);
        }
        let at = match self.advance() {
            Ok(Some(at)) => at,
            Ok(None) => {
                self.done = true;
                return Ok(None);
            }
            Err(kind) => {
                self.done = true;
                return Err(Error {
                    offset: self.block_offset,
                    kind,
                });
            }
        };
        self.packets += 1;
        Ok(Some(Packet {
            ts: at.ts,
            linktype: at.linktype,
            interface: at.interface,
            orig_len: at.orig_len,
            // `advance` checked the range against the body.
            data: self.body.get(at.data).unwrap_or_default(),
        }))
    }

    /// Reads blocks up to the next packet.
    fn advance(&mut self) -> Result<Option<PacketAt>, ErrorKind> {
        loop {
            let Some(block) = self.read_block()? else {
                return Ok(None);
            };
            match block.ty {
                block_type::SHB => self.start_section(&block)?,
                block_type::IDB => self.add_interface(&block)?,
                block_type::EPB | block_type::PB => return self.packet(&block).map(Some),
                block_type::SPB => return self.simple_packet(&block).map(Some),
                _ => {}
            }
        }
    }

    /// Reads `buf.len()` bytes or up to the end of the stream; returns how many were read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ErrorKind::Io {
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(got)
    }

    /// Reads one whole block into `self.body` and checks its framing; `None` at a clean end of
    /// the stream (between blocks).
    fn read_block(&mut self) -> Result<Option<Block>, ErrorKind> {
        self.block_offset = self.offset;
        let mut head = [0u8; field::BLOCK_HEADER];
        let got = self.read_full(&mut head)?;
        if got == 0 {
            return Ok(None);
        }
        let truncated = |block_type, needed: u64, present: usize| ErrorKind::Truncated {
            block_type,
            needed,
            present: present as u64,
        };
        if got < head.len() {
            return Err(truncated(None, head.len() as u64, got));
        }
        self.body.clear();
        let is_shb = head.get(field::BLOCK_TYPE) == Some(&block_type::SHB.to_le_bytes()[..]);
        if is_shb {
            // The byte order of the length is the new section's, known from the magic after it.
            let mut magic = [0u8; 4];
            let n = self.read_full(&mut magic)?;
            if n < magic.len() {
                let min = field::BLOCK_HEADER + field::SHB_FIXED + field::BLOCK_TRAILER;
                return Err(truncated(Some(block_type::SHB), min as u64, got + n));
            }
            self.endian = if u32::from_le_bytes(magic) == BYTE_ORDER_MAGIC {
                Endian::Little
            } else if u32::from_be_bytes(magic) == BYTE_ORDER_MAGIC {
                Endian::Big
            } else {
                return Err(ErrorKind::BadByteOrderMagic {
                    magic: u32::from_le_bytes(magic),
                });
            };
            self.body.extend_from_slice(&magic);
        }
        let e = self.endian;
        let ty = e.u32(&head, field::BLOCK_TYPE).unwrap_or_default();
        let len = e.u32(&head, field::BLOCK_LEN).unwrap_or_default();
        if !self.in_section && !is_shb {
            return Err(ErrorKind::NotPcapng { block_type: ty });
        }
        if len < field::BLOCK_MIN || len % 4 != 0 {
            return Err(ErrorKind::BadBlockLength {
                block_type: ty,
                len,
            });
        }
        if len > MAX_BLOCK_LEN {
            return Err(ErrorKind::BlockTooLarge {
                block_type: ty,
                len,
            });
        }
        let body_len = (len - field::BLOCK_MIN) as usize;
        if body_len < self.body.len() {
            // An SHB too short to hold its own magic: what we took for it was the trailer.
            return Err(ErrorKind::BodyTooShort {
                block_type: ty,
                len,
            });
        }
        // Grows with what is actually there: a truncated file never makes us allocate the
        // length its last block claims.
        let want = (body_len - self.body.len()) as u64;
        let before = self.body.len();
        let n = (&mut self.input)
            .take(want)
            .read_to_end(&mut self.body)
            .map_err(|e| ErrorKind::Io {
                message: e.to_string(),
            })?;
        let present = head.len() + before + n;
        if (n as u64) < want {
            return Err(truncated(Some(ty), u64::from(len), present));
        }
        let mut trailer = [0u8; field::BLOCK_TRAILER];
        let t = self.read_full(&mut trailer)?;
        if t < trailer.len() {
            return Err(truncated(Some(ty), u64::from(len), present + t));
        }
        let trailer = e.u32(&trailer, 0..4).unwrap_or_default();
        if trailer != len {
            return Err(ErrorKind::TrailerMismatch {
                block_type: ty,
                header: len,
                trailer,
            });
        }
        self.offset += u64::from(len);
        Ok(Some(Block { ty, len }))
    }

    fn start_section(&mut self, block: &Block) -> Result<(), ErrorKind> {
        let e = self.endian;
        let short = ErrorKind::BodyTooShort {
            block_type: block.ty,
            len: block.len,
        };
        if self.body.len() < field::SHB_FIXED {
            return Err(short);
        }
        debug_assert_eq!(e.u32(&self.body, field::SHB_MAGIC), Some(BYTE_ORDER_MAGIC));
        let major = e.u16(&self.body, field::SHB_MAJOR).ok_or(short.clone())?;
        let minor = e.u16(&self.body, field::SHB_MINOR).ok_or(short)?;
        if major != 1 {
            return Err(ErrorKind::UnsupportedVersion { major, minor });
        }
        self.in_section = true;
        self.sections += 1;
        self.interfaces.clear();
        Ok(())
    }

    fn add_interface(&mut self, block: &Block) -> Result<(), ErrorKind> {
        let e = self.endian;
        let b = &self.body;
        let short = ErrorKind::BodyTooShort {
            block_type: block.ty,
            len: block.len,
        };
        let linktype = e.u16(b, field::IDB_LINKTYPE).ok_or(short.clone())?;
        let snaplen = e.u32(b, field::IDB_SNAPLEN).ok_or(short)?;
        let mut resolution = None;
        let mut offset_secs = None;
        let mut at = field::IDB_FIXED;
        while let Some(opt) = b.get(at..).filter(|rest| !rest.is_empty()) {
            let (Some(code), Some(len)) = (e.u16(opt, field::OPT_CODE), e.u16(opt, field::OPT_LEN))
            else {
                return Err(ErrorKind::BadOption {
                    code: 0,
                    problem: "option header runs past the end of the block",
                });
            };
            let padded = (usize::from(len) + 3) & !3;
            let value = opt
                .get(field::OPT_HEADER..field::OPT_HEADER + usize::from(len))
                .filter(|_| field::OPT_HEADER + padded <= opt.len())
                .ok_or(ErrorKind::BadOption {
                    code,
                    problem: "value runs past the end of the block",
                })?;
            match code {
                option::END_OF_OPT => break,
                option::IF_TSRESOL => {
                    let bad = |problem| ErrorKind::BadOption { code, problem };
                    if resolution.is_some() {
                        return Err(bad("if_tsresol given twice"));
                    }
                    let &[v] = value else {
                        return Err(bad("if_tsresol must be 1 byte long"));
                    };
                    resolution = Some(
                        Resolution::from_tsresol(v)
                            .ok_or(ErrorKind::BadResolution { tsresol: v })?,
                    );
                }
                option::IF_TSOFFSET => {
                    let bad = |problem| ErrorKind::BadOption { code, problem };
                    if offset_secs.is_some() {
                        return Err(bad("if_tsoffset given twice"));
                    }
                    offset_secs = Some(
                        e.i64(value, 0..8)
                            .filter(|_| value.len() == 8)
                            .ok_or(bad("if_tsoffset must be 8 bytes long"))?,
                    );
                }
                _ => {}
            }
            at += field::OPT_HEADER + padded;
        }
        self.interfaces.push(Interface {
            linktype: dlt_of_linktype(linktype),
            snaplen,
            resolution: resolution.unwrap_or(Resolution::MICROS),
            offset_secs: offset_secs.unwrap_or(0),
        });
        Ok(())
    }

    fn interface(&self, block: &Block, id: u32) -> Result<Interface, ErrorKind> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.interfaces.get(i))
            .copied()
            .ok_or(ErrorKind::UnknownInterface {
                block_type: block.ty,
                interface: id,
                interfaces: self.interfaces.len(),
            })
    }

    /// An Enhanced Packet Block or a Packet Block.
    fn packet(&self, block: &Block) -> Result<PacketAt, ErrorKind> {
        let (e, b) = (self.endian, &self.body);
        let short = ErrorKind::BodyTooShort {
            block_type: block.ty,
            len: block.len,
        };
        let (id, high, low, caplen, orig_len, fixed) = if block.ty == block_type::EPB {
            (
                e.u32(b, field::EPB_INTERFACE),
                e.u32(b, field::EPB_TS_HIGH),
                e.u32(b, field::EPB_TS_LOW),
                e.u32(b, field::EPB_CAPLEN),
                e.u32(b, field::EPB_LEN),
                field::EPB_FIXED,
            )
        } else {
            (
                e.u16(b, field::PB_INTERFACE).map(u32::from),
                e.u32(b, field::PB_TS_HIGH),
                e.u32(b, field::PB_TS_LOW),
                e.u32(b, field::PB_CAPLEN),
                e.u32(b, field::PB_LEN),
                field::PB_FIXED,
            )
        };
        let (Some(id), Some(high), Some(low), Some(caplen), Some(orig_len)) =
            (id, high, low, caplen, orig_len)
        else {
            return Err(short);
        };
        let iface = self.interface(block, id)?;
        let data = self.data_range(block, fixed, caplen)?;
        Ok(PacketAt {
            ts: iface
                .resolution
                .timestamp(u64::from(high) << 32 | u64::from(low), iface.offset_secs),
            linktype: iface.linktype,
            interface: id,
            orig_len,
            data,
        })
    }

    /// A Simple Packet Block: interface 0, captured length min(original length, snap length),
    /// no timestamp.
    fn simple_packet(&self, block: &Block) -> Result<PacketAt, ErrorKind> {
        let orig_len =
            self.endian
                .u32(&self.body, field::SPB_LEN)
                .ok_or(ErrorKind::BodyTooShort {
                    block_type: block.ty,
                    len: block.len,
                })?;
        let iface = self.interface(block, 0)?;
        let caplen = match iface.snaplen {
            0 => orig_len,
            snap => orig_len.min(snap),
        };
        let data = self.data_range(block, field::SPB_FIXED, caplen)?;
        Ok(PacketAt {
            ts: iface.resolution.timestamp(0, iface.offset_secs),
            linktype: iface.linktype,
            interface: 0,
            orig_len,
            data,
        })
    }

    /// The packet bytes: `caplen` of them after the `fixed` fields, inside the body.
    fn data_range(
        &self,
        block: &Block,
        fixed: usize,
        caplen: u32,
    ) -> Result<core::ops::Range<usize>, ErrorKind> {
        let room = self.body.len().saturating_sub(fixed);
        match usize::try_from(caplen) {
            Ok(n) if n <= room => Ok(fixed..fixed + n),
            _ => Err(ErrorKind::CaptureTooLong {
                block_type: block.ty,
                caplen,
                room,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHB (little-endian, version 1.0), an Ethernet IDB (snap length 65535, microseconds) and
    /// an EPB with 4 of 60 bytes at 2025-11-25T12:00:00.123456Z.
    static LE_MINIMAL: [u8; 84] = [
        // SHB: type, length 28, magic, 1.0, section length -1, length.
        0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0x00, 0x00, 0x00, 0x4d, 0x3c, 0x2b, 0x1a, 0x01, 0x00, 0x00,
        0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1c, 0x00, 0x00, 0x00,
        // IDB: type 1, length 20, link type 1, reserved, snap length 65535, length.
        0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00,
        0x00, 0x14, 0x00, 0x00, 0x00,
        // EPB: type 6, length 36, interface 0, timestamp, caplen 4, len 60, data, length.
        0x06, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6a, 0x44, 0x06,
        0x00, 0x40, 0xf2, 0xec, 0x04, 0x04, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x00, 0xde, 0xad,
        0xbe, 0xef, 0x24, 0x00, 0x00, 0x00,
    ];

    const BASE: i64 = 1_764_072_000;

    /// Writes pcapng blocks in one byte order.
    struct W {
        e: Endian,
        buf: Vec<u8>,
    }

    impl W {
        fn new(e: Endian) -> W {
            W { e, buf: Vec::new() }
        }

        fn u16(&mut self, v: u16) -> &mut W {
            self.buf.extend(match self.e {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            });
            self
        }

        fn u32(&mut self, v: u32) -> &mut W {
            self.buf.extend(match self.e {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            });
            self
        }

        fn u64(&mut self, v: u64) -> &mut W {
            self.buf.extend(match self.e {
                Endian::Little => v.to_le_bytes(),
                Endian::Big => v.to_be_bytes(),
            });
            self
        }

        fn padded(&mut self, data: &[u8]) -> &mut W {
            self.buf.extend_from_slice(data);
            while self.buf.len() % 4 != 0 {
                self.buf.push(0);
            }
            self
        }

        fn block(&mut self, ty: u32, body: &[u8]) -> &mut W {
            let len = body.len() as u32 + 12;
            self.u32(ty).u32(len);
            self.buf.extend_from_slice(body);
            self.u32(len)
        }

        fn body(&self) -> W {
            W::new(self.e)
        }

        fn shb(&mut self) -> &mut W {
            let body = self
                .body()
                .u32(BYTE_ORDER_MAGIC)
                .u16(1)
                .u16(0)
                .u64(u64::MAX)
                .buf
                .clone();
            self.block(block_type::SHB, &body)
        }

        /// An IDB with the given options (code, value); an end-of-options marker is added.
        fn idb(&mut self, linktype: u16, snaplen: u32, options: &[(u16, &[u8])]) -> &mut W {
            let mut b = self.body();
            b.u16(linktype).u16(0).u32(snaplen);
            for (code, value) in options {
                b.u16(*code).u16(value.len() as u16).padded(value);
            }
            if !options.is_empty() {
                b.u32(0);
            }
            let body = b.buf;
            self.block(block_type::IDB, &body)
        }

        fn epb(&mut self, iface: u32, ts: u64, data: &[u8], orig_len: u32) -> &mut W {
            let mut b = self.body();
            b.u32(iface)
                .u32((ts >> 32) as u32)
                .u32(ts as u32)
                .u32(data.len() as u32)
                .u32(orig_len)
                .padded(data);
            let body = b.buf;
            self.block(block_type::EPB, &body)
        }

        fn pb(&mut self, iface: u16, ts: u64, data: &[u8]) -> &mut W {
            let mut b = self.body();
            b.u16(iface)
                .u16(0)
                .u32((ts >> 32) as u32)
                .u32(ts as u32)
                .u32(data.len() as u32)
                .u32(data.len() as u32)
                .padded(data);
            let body = b.buf;
            self.block(block_type::PB, &body)
        }

        fn spb(&mut self, orig_len: u32, data: &[u8]) -> &mut W {
            let mut b = self.body();
            b.u32(orig_len).padded(data);
            let body = b.buf;
            self.block(block_type::SPB, &body)
        }

        /// An option value in this byte order.
        fn value_i64(&self, v: i64) -> Vec<u8> {
            match self.e {
                Endian::Little => v.to_le_bytes().to_vec(),
                Endian::Big => v.to_be_bytes().to_vec(),
            }
        }
    }

    /// What reading a whole stream gives: the packets (time, link type, interface, original
    /// length, bytes) and the error that ended it, if any.
    type Read = (Vec<(Timestamp, i32, u32, u32, Vec<u8>)>, Option<Error>);

    fn read_all(bytes: &[u8]) -> Read {
        let mut r = PcapngReader::new(bytes);
        let mut packets = Vec::new();
        loop {
            match r.next_packet() {
                Ok(Some(p)) => {
                    packets.push((p.ts, p.linktype, p.interface, p.orig_len, p.data.to_vec()))
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(r.next_packet(), Ok(None), "a failed reader is finished");
                    return (packets, Some(e));
                }
            }
        }
        assert_eq!(r.packets_read(), packets.len() as u64);
        (packets, None)
    }

    fn at(secs: i64, nanos: i64) -> Timestamp {
        Timestamp::from_parts(BASE + secs, nanos)
    }

    fn micros(secs: i64, us: u64) -> u64 {
        (BASE + secs) as u64 * 1_000_000 + us
    }

    #[test]
    fn test_little_endian_static_file() {
        let (packets, err) = read_all(&LE_MINIMAL);
        assert_eq!(err, None);
        assert_eq!(
            packets,
            vec![(at(0, 123_456_000), 1, 0, 60, vec![0xde, 0xad, 0xbe, 0xef])]
        );
    }

    #[test]
    fn test_big_endian_section() {
        let mut w = W::new(Endian::Big);
        w.shb().idb(1, 0, &[]).epb(0, micros(1, 5), &[1, 2, 3], 3);
        let (packets, err) = read_all(&w.buf);
        assert_eq!(err, None);
        assert_eq!(packets, vec![(at(1, 5_000), 1, 0, 3, vec![1, 2, 3])]);
    }

    #[test]
    fn test_interfaces_of_different_link_types() {
        let mut w = W::new(Endian::Little);
        w.shb()
            .idb(1, 262_144, &[])
            .epb(0, micros(0, 0), &[0xe], 1)
            .idb(101, 65_535, &[])
            .idb(113, 0, &[])
            .epb(1, micros(1, 0), &[0x45], 1)
            .epb(2, micros(2, 0), &[0x11], 1)
            .epb(0, micros(3, 0), &[0xe], 1);
        let (packets, err) = read_all(&w.buf);
        assert_eq!(err, None);
        let kinds: Vec<(i32, u32)> = packets.iter().map(|p| (p.1, p.2)).collect();
        // LINKTYPE_RAW (101) is reported as libpcap's DLT_RAW (12).
        assert_eq!(kinds, [(1, 0), (12, 1), (113, 2), (1, 0)]);
    }

    #[test]
    fn test_sections_reset_interfaces_and_switch_byte_order() {
        let mut le = W::new(Endian::Little);
        le.shb()
            .idb(1, 0, &[])
            .idb(1, 0, &[])
            .epb(1, micros(0, 1), &[1], 1);
        let mut be = W::new(Endian::Big);
        be.shb().idb(101, 0, &[]).epb(0, micros(1, 2), &[0x45], 1);
        let second = le.buf.len();
        let mut file = le.buf.clone();
        file.extend_from_slice(&be.buf);
        let (packets, err) = read_all(&file);
        assert_eq!(err, None);
        assert_eq!(
            packets.iter().map(|p| (p.0, p.1, p.2)).collect::<Vec<_>>(),
            [(at(0, 1_000), 1, 1), (at(1, 2_000), 12, 0)]
        );
        // Interface 1 of the first section is gone in the second.
        let mut be2 = W::new(Endian::Big);
        be2.shb().idb(101, 0, &[]).epb(1, micros(1, 2), &[0x45], 1);
        let mut file = le.buf.clone();
        file.extend_from_slice(&be2.buf);
        let (packets, err) = read_all(&file);
        assert_eq!(packets.len(), 1);
        let epb_offset = (second + be2.buf.len() - 36) as u64;
        assert_eq!(
            err,
            Some(Error {
                offset: epb_offset,
                kind: ErrorKind::UnknownInterface {
                    block_type: block_type::EPB,
                    interface: 1,
                    interfaces: 1
                }
            })
        );
        assert!(err.unwrap().to_string().contains(&format!(
            "Enhanced Packet Block on interface 1, but its section describes 1 interface(s) \
             (block at byte offset {epb_offset})"
        )));
    }

    /// IDB options: code and value.
    type Options<'a> = &'a [(u16, &'a [u8])];

    /// One packet on an interface with `options`, at raw timestamp `raw`.
    fn time_with(options: Options<'_>, raw: u64) -> Result<Timestamp, Error> {
        let mut w = W::new(Endian::Little);
        w.shb().idb(1, 0, options).epb(0, raw, &[], 0);
        let (packets, err) = read_all(&w.buf);
        match err {
            Some(e) => Err(e),
            None => Ok(packets[0].0),
        }
    }

    #[test]
    fn test_tsresol_powers_of_ten() {
        let s = (BASE + 7) as u64;
        assert_eq!(time_with(&[], s * 1_000_000 + 5), Ok(at(7, 5_000)));
        assert_eq!(time_with(&[(9, &[6])], s * 1_000_000 + 5), Ok(at(7, 5_000)));
        assert_eq!(
            time_with(&[(9, &[9])], s * 1_000_000_000 + 999_999_999),
            Ok(at(7, 999_999_999))
        );
        assert_eq!(
            time_with(&[(9, &[3])], s * 1_000 + 250),
            Ok(at(7, 250_000_000))
        );
        assert_eq!(time_with(&[(9, &[0])], s), Ok(at(7, 0)));
        // Finer than nanoseconds: truncated (a u64 of picoseconds counts 213 days).
        assert_eq!(
            time_with(&[(9, &[12])], 7_000_000_000_000 + 123_456_789_999),
            Ok(Timestamp::from_parts(7, 123_456_789))
        );
        // 10^-19 is the finest that fits 64 bits: a u64 counts only 1.8 s of it.
        assert_eq!(
            time_with(&[(9, &[19])], 15_000_000_000_000_000_001),
            Ok(Timestamp::from_parts(1, 500_000_000))
        );
        assert!(matches!(
            time_with(&[(9, &[20])], 0),
            Err(Error {
                kind: ErrorKind::BadResolution { tsresol: 20 },
                ..
            })
        ));
    }

    #[test]
    fn test_tsresol_powers_of_two() {
        let s = (BASE + 7) as u64;
        // 2^-20 s: 3/4 s is 3 << 18 units.
        assert_eq!(
            time_with(&[(9, &[0x80 | 20])], s << 20 | 3 << 18),
            Ok(at(7, 750_000_000))
        );
        // One unit of 2^-10 s is 976562.5 ns: truncated.
        assert_eq!(
            time_with(&[(9, &[0x80 | 10])], s << 10 | 1),
            Ok(at(7, 976_562))
        );
        // 2^-40 s with an offset: libpcap 1.10 overflows computing this fraction (frac * 1e9 in
        // 64 bits) and gives .011802496; it is 5.75 s.
        let offset = W::new(Endian::Little).value_i64(BASE);
        assert_eq!(
            time_with(&[(9, &[0x80 | 40]), (14, &offset)], 5 << 40 | 3 << 38),
            Ok(at(5, 750_000_000))
        );
        // 2^-63 s, the finest: u64::MAX units are 1.99999... s.
        assert_eq!(
            time_with(&[(9, &[0x80 | 63])], u64::MAX),
            Ok(Timestamp::from_parts(1, 999_999_999))
        );
        assert!(matches!(
            time_with(&[(9, &[0x80 | 64])], 0),
            Err(Error {
                kind: ErrorKind::BadResolution { tsresol: 0xc0 },
                ..
            })
        ));
    }

    #[test]
    fn test_tsoffset_and_extreme_times() {
        let w = W::new(Endian::Little);
        let minus = w.value_i64(-10);
        assert_eq!(
            time_with(&[(14, &minus)], 3_000_000),
            Ok(Timestamp::from_parts(-7, 0))
        );
        let plus = w.value_i64(BASE);
        assert_eq!(time_with(&[(14, &plus)], 1), Ok(at(0, 1_000)));
        // Past 2038 and 2106: 64-bit seconds, exact until Timestamp's range ends in 2262.
        let y2200 = 7_258_118_400u64;
        assert_eq!(
            time_with(&[], y2200 * 1_000_000 + 7),
            Ok(Timestamp::from_parts(y2200 as i64, 7_000))
        );
        assert_eq!(
            time_with(&[(9, &[0])], u64::MAX),
            Ok(Timestamp(i64::MAX)),
            "saturated, not wrapped"
        );
        let max = w.value_i64(i64::MAX);
        assert_eq!(
            time_with(&[(9, &[0]), (14, &max)], u64::MAX),
            Ok(Timestamp(i64::MAX))
        );
        let min = w.value_i64(i64::MIN);
        assert_eq!(time_with(&[(14, &min)], 0), Ok(Timestamp(i64::MIN)));
    }

    #[test]
    fn test_bad_idb_options() {
        let cases: [(Options<'_>, &str); 4] = [
            (&[(9, &[6, 6])], "if_tsresol must be 1 byte long"),
            (&[(9, &[6]), (9, &[9])], "if_tsresol given twice"),
            (&[(14, &[0; 4])], "if_tsoffset must be 8 bytes long"),
            (&[(14, &[0; 8]), (14, &[0; 8])], "if_tsoffset given twice"),
        ];
        for (options, problem) in cases {
            let err = time_with(options, 0).unwrap_err();
            assert_eq!(err.offset, 28, "{problem}");
            assert!(err.to_string().contains(problem), "{err}");
        }
        // An option whose length runs past the block.
        let mut w = W::new(Endian::Little);
        let body = w
            .body()
            .u16(1)
            .u16(0)
            .u32(0)
            .u16(2)
            .u16(40)
            .u32(0)
            .buf
            .clone();
        w.shb().block(block_type::IDB, &body);
        let (_, err) = read_all(&w.buf);
        assert_eq!(
            err.map(|e| e.kind),
            Some(ErrorKind::BadOption {
                code: 2,
                problem: "value runs past the end of the block"
            })
        );
        // Options after the end-of-options marker are not read; unknown ones are skipped.
        let mut w = W::new(Endian::Little);
        let body = w
            .body()
            .u16(1)
            .u16(0)
            .u32(0)
            .u16(2)
            .u16(3)
            .padded(b"eth")
            .u32(0)
            .u16(9)
            .u16(5)
            .buf
            .clone();
        w.shb()
            .block(block_type::IDB, &body)
            .epb(0, micros(0, 9), &[], 0);
        assert_eq!(read_all(&w.buf).0[0].0, at(0, 9_000));
    }

    #[test]
    fn test_simple_and_obsolete_packet_blocks() {
        let offset = W::new(Endian::Big).value_i64(BASE);
        let mut w = W::new(Endian::Big);
        w.shb()
            .idb(1, 4, &[(14, &offset)])
            .spb(6, &[1, 2, 3, 4])
            .spb(2, &[5, 6])
            .pb(0, micros(0, 3) - BASE as u64 * 1_000_000, &[7, 8, 9]);
        let (packets, err) = read_all(&w.buf);
        assert_eq!(err, None);
        assert_eq!(
            packets,
            vec![
                // No timestamp in an SPB: time 0 plus the interface's offset, as libpcap does.
                (at(0, 0), 1, 0, 6, vec![1, 2, 3, 4]),
                (at(0, 0), 1, 0, 2, vec![5, 6]),
                (at(0, 3_000), 1, 0, 3, vec![7, 8, 9]),
            ]
        );
        // An SPB before any IDB.
        let mut w = W::new(Endian::Little);
        w.shb().spb(2, &[5, 6]);
        assert!(matches!(
            read_all(&w.buf).1.map(|e| e.kind),
            Some(ErrorKind::UnknownInterface { interface: 0, .. })
        ));
        // An SPB whose snap-length cut is longer than its block.
        let mut w = W::new(Endian::Little);
        w.shb().idb(1, 0, &[]).spb(9, &[1, 2, 3, 4]);
        assert!(matches!(
            read_all(&w.buf).1.map(|e| e.kind),
            Some(ErrorKind::CaptureTooLong {
                caplen: 9,
                room: 4,
                ..
            })
        ));
    }

    #[test]
    fn test_other_blocks_are_skipped() {
        let mut w = W::new(Endian::Little);
        w.shb()
            .block(block_type::NRB, &[0; 4])
            .idb(1, 0, &[])
            .block(0x0000_0BAD, &[1, 2, 3, 4, 5, 6, 7, 8])
            .block(block_type::DSB, &[0; 12])
            .epb(0, micros(0, 0), &[1], 1)
            .block(block_type::ISB, &[0; 12])
            .block(0x4000_0BAD, &[]);
        let (packets, err) = read_all(&w.buf);
        assert_eq!((packets.len(), err), (1, None));
    }

    #[test]
    fn test_zero_length_and_over_snaplen_records() {
        let mut w = W::new(Endian::Little);
        w.shb()
            .idb(1, 8, &[])
            .epb(0, micros(0, 0), &[], 0)
            .epb(0, micros(0, 1), &[1; 20], 60);
        let (packets, err) = read_all(&w.buf);
        assert_eq!(err, None);
        assert_eq!(packets[0].4, Vec::<u8>::new());
        // Captured 20 bytes although the snap length is 8: the block holds them, so they are
        // read (as Wireshark does).
        assert_eq!(packets[1].4, vec![1; 20]);
    }

    #[test]
    fn test_impossible_lengths() {
        let mut head = W::new(Endian::Little);
        head.shb().idb(1, 0, &[]);
        let at = head.buf.len() as u64;
        let with = |tail: &[u8]| {
            let mut f = head.buf.clone();
            f.extend_from_slice(tail);
            read_all(&f).1.expect("an error")
        };
        let le = |words: &[u32]| {
            words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect::<Vec<_>>()
        };
        for len in [0, 8, 13, 14] {
            let e = with(&le(&[6, len, 0, 0, 0, 0]));
            assert_eq!(e.offset, at);
            assert_eq!(e.kind, ErrorKind::BadBlockLength { block_type: 6, len });
        }
        let e = with(&le(&[6, 0x7fff_fff0, 0]));
        assert_eq!(
            e.kind,
            ErrorKind::BlockTooLarge {
                block_type: 6,
                len: 0x7fff_fff0
            }
        );
        assert!(e.to_string().contains("larger than the 16 MiB"), "{e}");
        let e = with(&le(&[5, 16, 0, 20]));
        assert_eq!(
            e.kind,
            ErrorKind::TrailerMismatch {
                block_type: 5,
                header: 16,
                trailer: 20
            }
        );
        // An EPB body shorter than its fixed fields, and one whose data runs past the block.
        let e = with(&le(&[6, 28, 0, 0, 0, 0, 28]));
        assert_eq!(
            e.kind,
            ErrorKind::BodyTooShort {
                block_type: 6,
                len: 28
            }
        );
        let e = with(&le(&[6, 36, 0, 0, 0, 5, 5, 0, 36]));
        assert_eq!(
            e.kind,
            ErrorKind::CaptureTooLong {
                block_type: 6,
                caplen: 5,
                room: 4
            }
        );
        let e = with(&le(&[6, 36, 0, 0, 0, u32::MAX, 5, 0, 36]));
        assert!(matches!(e.kind, ErrorKind::CaptureTooLong { .. }), "{e}");
        // An SHB too short for its fixed fields.
        let mut f = LE_MINIMAL.to_vec();
        f.splice(4..8, 16u32.to_le_bytes());
        f.truncate(16);
        f.splice(12..16, 16u32.to_le_bytes());
        assert_eq!(
            read_all(&f).1.map(|e| e.kind),
            Some(ErrorKind::BodyTooShort {
                block_type: block_type::SHB,
                len: 16
            })
        );
    }

    #[test]
    fn test_hostile_length_in_a_short_file_allocates_little() {
        let mut w = W::new(Endian::Little);
        w.shb().idb(1, 0, &[]);
        w.u32(6).u32(MAX_BLOCK_LEN).u32(0);
        let mut r = PcapngReader::new(&w.buf[..]);
        let e = r.next_packet().unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Truncated {
                block_type: Some(6),
                needed: u64::from(MAX_BLOCK_LEN),
                present: 12
            }
        );
        assert!(r.body.capacity() < 1 << 20, "{}", r.body.capacity());
    }

    #[test]
    fn test_not_pcapng() {
        let classic = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0];
        assert_eq!(
            read_all(&classic).1,
            Some(Error {
                offset: 0,
                kind: ErrorKind::NotPcapng {
                    block_type: 0xa1b2_c3d4
                }
            })
        );
        let text = b"not a capture at all, just some text";
        assert!(matches!(
            read_all(text).1.map(|e| e.kind),
            Some(ErrorKind::NotPcapng { .. })
        ));
        let mut bad_magic = LE_MINIMAL;
        bad_magic[8] = 0x4e;
        assert_eq!(
            read_all(&bad_magic).1.map(|e| e.kind),
            Some(ErrorKind::BadByteOrderMagic { magic: 0x1a2b_3c4e })
        );
        let mut v2 = LE_MINIMAL;
        v2[12] = 2;
        assert_eq!(
            read_all(&v2).1.map(|e| e.kind),
            Some(ErrorKind::UnsupportedVersion { major: 2, minor: 0 })
        );
        assert_eq!(
            read_all(&[]),
            (vec![], None),
            "an empty stream has no packets"
        );
    }

    /// A small file with every block kind we read: two sections in both byte orders, IDBs of two
    /// link types with options, EPB, SPB, PB, and blocks we skip.
    fn small_file() -> (Vec<u8>, Vec<usize>) {
        let mut ends = Vec::new();
        let mut w = W::new(Endian::Little);
        let offset = w.value_i64(BASE);
        w.shb();
        ends.push(w.buf.len());
        w.idb(1, 0, &[(9, &[9])]);
        ends.push(w.buf.len());
        w.epb(0, 1, &[1, 2, 3, 4, 5], 60);
        ends.push(w.buf.len());
        w.idb(101, 1500, &[(9, &[0x80 | 20]), (14, &offset)]);
        ends.push(w.buf.len());
        w.epb(1, 1 << 20, &[0x45; 3], 3);
        ends.push(w.buf.len());
        w.block(block_type::ISB, &[0; 12]);
        ends.push(w.buf.len());
        let mut be = W::new(Endian::Big);
        be.shb();
        let base = w.buf.len();
        ends.push(base + be.buf.len());
        be.idb(113, 64, &[]);
        ends.push(base + be.buf.len());
        be.spb(80, &[9; 64]);
        ends.push(base + be.buf.len());
        be.pb(0, 77, &[8; 2]);
        ends.push(base + be.buf.len());
        let mut file = w.buf;
        file.extend_from_slice(&be.buf);
        (file, ends)
    }

    #[test]
    fn test_small_file_reads_whole() {
        let (file, _) = small_file();
        let (packets, err) = read_all(&file);
        assert_eq!(err, None);
        let summary: Vec<(Timestamp, i32, u32, u32, usize)> = packets
            .iter()
            .map(|p| (p.0, p.1, p.2, p.3, p.4.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (Timestamp(1), 1, 0, 60, 5),
                (at(1, 0), 12, 1, 3, 3),
                (Timestamp(0), 113, 0, 80, 64),
                (Timestamp(77_000), 113, 0, 2, 2),
            ]
        );
    }

    #[test]
    fn test_truncation_at_every_offset() {
        let (file, ends) = small_file();
        let packet_ends = [ends[2], ends[4], ends[8], ends[9]];
        for cut in 0..file.len() {
            let (packets, err) = read_all(&file[..cut]);
            let whole = packet_ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(packets.len(), whole, "cut at {cut}");
            let block_start = std::iter::once(0)
                .chain(ends.iter().copied())
                .filter(|&e| e <= cut)
                .max()
                .unwrap_or(0);
            if block_start == cut {
                assert_eq!(err, None, "cut at {cut}, a block boundary");
                continue;
            }
            let err = err.unwrap_or_else(|| panic!("cut at {cut}: no error"));
            assert_eq!(err.offset, block_start as u64, "cut at {cut}: {err}");
            match err.kind {
                ErrorKind::Truncated {
                    needed, present, ..
                } => {
                    assert_eq!(present, (cut - block_start) as u64, "cut at {cut}");
                    assert!(needed > present, "cut at {cut}: {err}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert!(err.to_string().contains("file ends inside the"), "{err}");
        }
    }

    /// xorshift64*: deterministic mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn test_mutated_files_never_panic() {
        let (file, _) = small_file();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let interesting = [
            0u32,
            1,
            3,
            4,
            11,
            12,
            16,
            0x7fff_ffff,
            0xffff_ffff,
            MAX_BLOCK_LEN,
        ];
        for round in 0..20_000 {
            let mut f = file.clone();
            for _ in 0..1 + rng.below(4) {
                if f.is_empty() {
                    break;
                }
                let i = rng.below(f.len());
                match rng.below(4) {
                    0 => f[i] ^= 1 << rng.below(8),
                    1 => f[i] = rng.next() as u8,
                    2 => {
                        let v = interesting[rng.below(interesting.len())].to_le_bytes();
                        let i = i & !3;
                        let end = (i + 4).min(f.len());
                        f[i..end].copy_from_slice(&v[..end - i]);
                    }
                    _ => f.truncate(i),
                }
            }
            let (packets, err) = read_all(&f);
            assert!(packets.len() <= f.len() / 12, "round {round}");
            if let Some(e) = err {
                assert!(e.offset < f.len() as u64, "round {round}: {e}");
            }
        }
    }
}
