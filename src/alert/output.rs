//! Where alert lines go: standard output, a file opened for appending (reopened by path on
//! request, for logrotate's move-and-create), or any writer (tests).
//!
//! Contract: lines are handed over whole; [`Output::flush`] pushes everything buffered to the
//! OS. With `line_flush`, every line is written to the OS as it is written (live mode flushes
//! batches itself, so this is only for callers that need it).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

const BUF: usize = 1 << 16;

enum Target {
    Stdout,
    File(PathBuf),
    Writer,
}

/// An alert destination.
pub struct Output {
    target: Target,
    w: BufWriter<Box<dyn Write + Send>>,
}

impl Output {
    /// Standard output, through our own 64 KiB buffer (not Stdout's line buffering).
    pub fn stdout() -> io::Result<Output> {
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Output {
            target: Target::Stdout,
            w: BufWriter::with_capacity(BUF, Box::new(File::from(fd))),
        })
    }

    /// `path`, created if missing, appended to.
    pub fn append(path: &Path) -> io::Result<Output> {
        Ok(Output {
            target: Target::File(path.to_path_buf()),
            w: BufWriter::with_capacity(BUF, Box::new(open_append(path)?)),
        })
    }

    /// Any writer (buffered here).
    pub fn writer(w: Box<dyn Write + Send>) -> Output {
        Output {
            target: Target::Writer,
            w: BufWriter::with_capacity(BUF, w),
        }
    }

    /// What it writes to, for messages.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Stdout => "standard output".into(),
            Target::File(p) => p.display().to_string(),
            Target::Writer => "alert writer".into(),
        }
    }

    /// Writes one whole line.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.w.write_all(line)
    }

    /// Pushes buffered lines to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Flushes, then reopens a file output by its path (a no-op for other outputs). If the
    /// path cannot be opened, the old file stays in use and the error is returned.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.w.flush()?;
        if let Target::File(p) = &self.target {
            let f = open_append(p)?;
            self.w = BufWriter::with_capacity(BUF, Box::new(f));
        }
        Ok(())
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}
