//! Helpers shared by the integration tests that run the binary and reference tools.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs `cmd` with piped output; kills it and fails after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    run_with_stdin(cmd, Stdio::null(), timeout)
}

/// [`run`] with `stdin` as the command's standard input.
pub fn run_with_stdin(
    cmd: &mut Command,
    stdin: Stdio,
    timeout: Duration,
) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("hang: killed after {timeout:?}: {what}"));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The tshark to compare with (`TSHARK`, default `tshark` on PATH), or `None` after saying why
/// `what` is skipped; under `CI=true` a missing tshark is a failure.
pub fn tshark(what: &str) -> Option<String> {
    let tshark = std::env::var("TSHARK").unwrap_or_else(|_| "tshark".to_string());
    if let Err(e) = Command::new(&tshark)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        let msg = format!("tshark ({tshark}) not runnable: {e}; {what} skipped");
        assert!(
            !ci(),
            "{msg} (CI=true: install tshark, e.g. `apt-get install -y tshark`)"
        );
        println!("SKIPPED: {msg}");
        return None;
    }
    Some(tshark)
}

/// `f` over `items` on a few threads; results in the order of `items`.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker thread panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One frame as the capture layer gave it: number, link type, time, wire length, bytes.
type FrameRecord = (u64, i32, String, u32, Vec<u8>);

/// Everything `FileSource` gives for `path` one way of reading: the frames, then how it ended
/// (`None` at the end of the file, else the error's text), and whether our pcapng reader took
/// over. `batch` 0 reads with `next_frame`, else with `read_frames` of up to `batch` at a time.
fn frames_of(path: &std::path::Path, batch: usize) -> (Vec<FrameRecord>, Option<String>, bool) {
    use exfilwatch::capture::FileSource;
    let mut frames = Vec::new();
    let mut src = match FileSource::open(path.to_str().expect("UTF-8 path")) {
        Ok(s) => s,
        Err(e) => return (frames, Some(e.to_string()), false),
    };
    let record = |f: &exfilwatch::decode::Frame<'_>| {
        (
            f.pcap_cnt,
            f.linktype,
            f.ts.to_string(),
            f.orig_len,
            f.data.to_vec(),
        )
    };
    let end = loop {
        if batch == 0 {
            match src.next_frame() {
                Ok(Some(f)) => frames.push(record(&f)),
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            }
        } else {
            let before = frames.len();
            match src.read_frames(batch, |f| frames.push(record(&f))) {
                Ok(n) => {
                    assert_eq!(
                        n,
                        frames.len() - before,
                        "{}: count returned",
                        path.display()
                    );
                    assert!(
                        n <= batch,
                        "{}: {n} frames for at most {batch}",
                        path.display()
                    );
                    if n == 0 {
                        break None;
                    }
                }
                Err(e) => break Some(e.to_string()),
            }
        }
    };
    // After the end (or an error) the source stays finished.
    let again = if batch == 0 {
        src.next_frame().map(|f| f.is_some())
    } else {
        src.read_frames(batch, |_| {}).map(|n| n > 0)
    };
    assert!(
        matches!(again, Ok(false)),
        "{}: read on after its end",
        path.display()
    );
    (frames, end, src.took_over())
}

/// Checks that `FileSource::read_frames`, whatever the most it is asked for at a time, gives
/// exactly what `next_frame` one by one gives for each of `inputs` (in parallel): the same
/// frames and the same end or error. Fails with every difference found, or when fewer than
/// `min_frames` frames were read in all; returns the frames read.
pub fn read_frames_agree(inputs: &[std::path::PathBuf], min_frames: usize) -> usize {
    let results = par_map(inputs, |p| read_frames_agrees(p));
    let frames: usize = results.iter().map(|r| r.1).sum();
    let problems: Vec<String> = results.into_iter().flat_map(|r| r.0).collect();
    println!("{} inputs, {frames} frames each way", inputs.len());
    assert!(frames >= min_frames, "only {frames} frames read");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    frames
}

/// [`read_frames_agree`] for one file: the differences found, and the frames read.
fn read_frames_agrees(path: &std::path::Path) -> (Vec<String>, usize) {
    let one_by_one = frames_of(path, 0);
    let mut problems = Vec::new();
    for batch in [1, 2, 7, 1024] {
        let batched = frames_of(path, batch);
        if batched != one_by_one {
            let (a, b) = (&one_by_one, &batched);
            let first = a.0.iter().zip(&b.0).position(|(x, y)| x != y);
            problems.push(format!(
                "{}: read_frames({batch}) gave {} frames, end {:?}, took over {}; next_frame \
                 {} frames, end {:?}, took over {} (first differing frame: {first:?})",
                path.display(),
                b.0.len(),
                b.1,
                b.2,
                a.0.len(),
                a.1,
                a.2,
            ));
        }
    }
    (problems, one_by_one.0.len())
}
