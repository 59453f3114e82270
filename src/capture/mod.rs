//! Capture: the only module that calls libpcap (through the `pcap` crate).
//!
//! Contract: a source yields [`Frame`]s (time, data-link type, wire length, borrowed bytes,
//! packet number) and nothing else: no parsing happens here. Offline sources read classic pcap
//! (either byte order, micro- or nanosecond) and pcapng, from a path or from standard input
//! (`-`), always at nanosecond precision. The end of a file is `Ok(None)`; a damaged record is
//! an error naming the file and the packet number, after which the source is finished.

use std::os::fd::{AsFd, IntoRawFd};

use pcap::{Capture, Offline, Precision};

use crate::decode::Frame;
use crate::time::Timestamp;

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
    /// A record could not be read (truncated or corrupt file).
    #[error("{file}: packet {packet}: {message}; rest of file skipped")]
    Read {
        file: String,
        /// 1-based number of the record that failed.
        packet: u64,
        message: String,
    },
}

/// A capture file (or standard input) being read.
pub struct FileSource {
    cap: Capture<Offline>,
    name: String,
    linktype: i32,
    count: u64,
    done: bool,
}

impl FileSource {
    /// Opens `path`; `-` is standard input.
    pub fn open(path: &str) -> Result<FileSource, CaptureError> {
        let opened =
            if path == "-" {
                let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| {
                    CaptureError::Open {
                        file: path.to_string(),
                        message: e.to_string(),
                    }
                })?;
                // SAFETY: `fd` is a fresh duplicate of stdin that we own; libpcap takes it over
                // (fdopen) and closes it when the capture is dropped.
                unsafe { Capture::from_raw_fd_with_precision(fd.into_raw_fd(), Precision::Nano) }
            } else {
                Capture::from_file_with_precision(path, Precision::Nano)
            };
        let cap = opened.map_err(|e| CaptureError::Open {
            file: path.to_string(),
            message: e.to_string(),
        })?;
        let linktype = cap.get_datalink().0;
        Ok(FileSource {
            cap,
            name: path.to_string(),
            linktype,
            count: 0,
            done: false,
        })
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's data-link type (libpcap's `DLT_*` value).
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Records read so far.
    pub fn packets_read(&self) -> u64 {
        self.count
    }

    /// The next frame, `Ok(None)` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        match self.cap.next_packet() {
            Ok(p) => {
                self.count += 1;
                // time_t and suseconds_t are i64 on the 64-bit targets we build for.
                #[allow(clippy::unnecessary_cast)]
                let ts =
                    Timestamp::from_parts(p.header.ts.tv_sec as i64, p.header.ts.tv_usec as i64);
                Ok(Some(Frame {
                    ts,
                    linktype: self.linktype,
                    orig_len: p.header.len,
                    data: p.data,
                    pcap_cnt: self.count,
                }))
            }
            Err(pcap::Error::NoMorePackets) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(CaptureError::Read {
                    file: self.name.clone(),
                    packet: self.count + 1,
                    message: e.to_string(),
                })
            }
        }
    }
}
