//! Where alert lines go: standard output, a file opened for appending (reopened by path on
//! request, for logrotate's move-and-create), or any writer (tests).
//!
//! Contract: lines are handed over whole; [`Output::flush`] pushes everything buffered to the
//! OS. An output can be shared ([`Output::share`]) by several engines (live workers): each line
//! goes in whole under a lock, so lines from different engines never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const BUF: usize = 1 << 16;

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
    w: BufWriter<Box<dyn Write + Send>>,
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
            w: BufWriter::with_capacity(BUF, Box::new(File::from(fd))),
        })))
    }

    /// `path`, created if missing, appended to.
    pub fn append(path: &Path) -> io::Result<Output> {
        Ok(Output(Inner::Own(Own {
            target: Target::File(path.to_path_buf()),
            w: BufWriter::with_capacity(BUF, Box::new(open_append(path)?)),
        })))
    }

    /// Any writer (buffered here).
    pub fn writer(w: Box<dyn Write + Send>) -> Output {
        Output(Inner::Own(Own {
            target: Target::Writer,
            w: BufWriter::with_capacity(BUF, w),
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

    /// Writes one whole line.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.with(|o| o.w.write_all(line))
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
                o.w = BufWriter::with_capacity(BUF, Box::new(f));
            }
            Ok(())
        })
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(p)
        .or_else(|_| OpenOptions::new().create(true).append(true).open(p))?;
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
    let tail = &buf[(keep - start) as usize..];
    if !(tail.starts_with(b"{\"") || tail.first().is_some_and(u8::is_ascii_digit)) {
        return Ok(0);
    }
    f.set_len(keep)?;
    Ok(len - keep)
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
        // A text alert starts with its time stamp.
        assert_eq!(
            after_open("text", b"2025-11-25T12:00:00Z a\n2025-11"),
            b"2025-11-25T12:00:00Z a\n"
        );
        assert_eq!(after_open("empty", b""), b"");
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
