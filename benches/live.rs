//! Live capture rate: `exfilwatch live` against `tcpdump -w /dev/null` on the same injected
//! traffic, counting what each received and what was dropped (kernel ring, engine channel).
//!
//! `cargo bench --bench live` (as root, with iproute2, tcpreplay and tcpdump; otherwise it says
//! why and skips). It writes the SPAN-like mix of `mixgen` (deterministic; `EXFW_LIVE_PACKETS`,
//! default 1M) and creates a network namespace of its own with a veth pair in it. Each of
//! `EXFW_LIVE_RUNS` runs (default 3) sends the mix with `tcpreplay --preload-pcap --topspeed`
//! (the whole mix in memory: about 630 MB per million packets) from inside the namespace on one
//! veth end: once with no capture (the sender's reference rate), then once while each capture
//! runs on the other end. After a settle time (`EXFW_LIVE_SETTLE_MS`, default
//! 1000) the capture is stopped with SIGTERM and its counters read: tcpdump's exit summary,
//! exfilwatch's final JSON stats record in its alert file. Both captures get the same kernel
//! buffer (`EXFW_LIVE_BUFFER_MIB`, default 64: tcpdump `-B`, exfilwatch `--buffer-size`); each
//! keeps its own default snap length (tcpdump whole frames, exfilwatch 256 bytes).
//! `EXFW_LIVE_TCPDUMP_ARGS` and `EXFW_LIVE_EXFILWATCH_ARGS` (split on white space) add flags to
//! either, and `EXFW_LIVE_BIN` runs another exfilwatch binary, for experiments.
//!
//! Network safety: the namespace, the veth pair and every process that captures or sends run
//! inside it; the namespace has no route and no address but loopback's, so nothing leaves it.
//! The namespace (and with it the veth pair) is deleted and the processes are killed on every
//! exit path: normal end, panic, or SIGINT/SIGTERM to the bench.
//!
//! Without `--bench` (`cargo test --all-targets` runs bench targets in test mode) it does
//! nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

#[path = "mixgen.rs"]
mod mixgen;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");
/// Namespaces this bench creates are named `PREFIX<pid>-<n>`.
const PREFIX: &str = "exfw-livebench-";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_args(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Set by SIGINT/SIGTERM: every wait checks it and panics, so the guards clean up.
fn interrupted(flag: &AtomicBool) {
    assert!(
        !flag.load(Ordering::Relaxed),
        "interrupted: cleaning up the namespace"
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with a veth pair inside it (`cap` where we capture, `inj` where we
/// inject), both up, and its loopback up. Deleted on drop, which deletes the pair too.
struct Netns {
    name: String,
    cap: String,
    inj: String,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}-0");
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // Interface names: at most 15 bytes; unique anyway, inside a namespace of our own.
        let ns = Netns {
            name,
            cap: format!("exfwc{}", pid % 10_000_000),
            inj: format!("exfwi{}", pid % 10_000_000),
        };
        run_ok(ns.cmd("ip").args([
            "link", "add", &ns.cap, "type", "veth", "peer", "name", &ns.inj,
        ]));
        for dev in [&ns.cap, &ns.inj, "lo"] {
            run_ok(ns.cmd("ip").args(["link", "set", dev, "up"]));
        }
        ns
    }

    /// A command run inside the namespace (`ip netns exec` execs it: the pid is its own).
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// An interface counter (`/sys/class/net/DEV/statistics/NAME`) inside the namespace.
    fn counter(&self, dev: &str, name: &str) -> u64 {
        run_ok(
            self.cmd("cat")
                .arg(format!("/sys/class/net/{dev}/statistics/{name}")),
        )
        .trim()
        .parse()
        .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Namespaces left by an earlier run of this bench that was killed (SIGKILL skips the guards):
/// those whose creating process is gone.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The run's scratch directory (stderr and alert files); removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A process we started; killed on drop.
struct Proc {
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until standard error contains `what`.
    fn wait_stderr(&mut self, what: &str, stop: &AtomicBool) {
        let t = Instant::now();
        while !self.stderr().contains(what) {
            interrupted(stop);
            if let Some(st) = self.child.try_wait().expect("wait") {
                panic!("exited ({st}) before saying {what:?}: {}", self.stderr());
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "did not say {what:?} in 10 s: {}",
                self.stderr()
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits (SIGKILL after 10 s).
    fn terminate(&mut self, stop: &AtomicBool) -> ExitStatus {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            interrupted(stop);
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "ignored SIGTERM for 10 s: {}",
                self.stderr()
            );
            sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first number after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let rest = &rest[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The number on the line of `text` that ends with `suffix` (tcpdump's exit summary).
fn count_before(text: &str, suffix: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.trim_end().ends_with(suffix))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What tcpreplay said it did.
struct Replay {
    sent: u64,
    failed: u64,
    seconds: f64,
    pps: f64,
}

/// CPU seconds (user + system) per thread of a running process, by thread name.
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut v = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return v;
    };
    for t in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime: fields 14 and 15; comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        v.push((
            stat[open + 1..close].to_string(),
            (ticks(11) + ticks(12)) / hz,
        ));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn tcpreplay(ns: &Netns, mix: &Path, stop: &AtomicBool) -> Replay {
    let mut child = ns
        .cmd("tcpreplay")
        // Preloaded into memory: reading the file as it sends halves tcpreplay's rate here.
        .args(["--preload-pcap", "--topspeed", "-i", &ns.inj])
        .arg(mix)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpreplay");
    let t = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if stop.load(Ordering::Relaxed) || t.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tcpreplay interrupted or still running after 600 s");
        }
        sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("tcpreplay output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tcpreplay failed: {text}");
    let get = |k: &str| number_after(&text, k).unwrap_or_else(|| panic!("no {k:?} in: {text}"));
    Replay {
        sent: get("Successful packets:") as u64,
        failed: get("Failed packets:") as u64,
        seconds: get(" sent in "),
        pps: number_after(&text, "Mbps,").unwrap_or(0.0),
    }
}

/// One capture run's figures.
struct Outcome {
    tool: &'static str,
    replay: Replay,
    /// Frames the capture interface's driver counted in (veth `rx_packets`).
    iface_rx: u64,
    /// libpcap's `ps_recv`: packets the kernel gave the socket, including those it dropped.
    kernel_received: u64,
    kernel_drops: u64,
    /// Packets the program itself read.
    captured: u64,
    channel_drops: Option<u64>,
    alerts: Option<u64>,
    status: ExitStatus,
    /// CPU seconds per thread of the capture program, just before it was stopped.
    threads: Vec<(String, f64)>,
}

impl Outcome {
    fn drops(&self) -> u64 {
        self.kernel_drops + self.channel_drops.unwrap_or(0)
    }

    /// Received by the socket, neither dropped nor read when the capture stopped.
    fn unread(&self) -> i64 {
        self.kernel_received as i64 - self.kernel_drops as i64 - self.captured as i64
    }
}

struct Setup {
    /// The exfilwatch binary: this build's, or `EXFW_LIVE_BIN` (another build, to compare).
    bin: String,
    mix: PathBuf,
    dir: PathBuf,
    buffer_mib: u32,
    settle: Duration,
    tcpdump_args: Vec<String>,
    exfilwatch_args: Vec<String>,
}

/// Starts `tool` on the capture end, replays the mix, settles, stops it; the tool's counters.
fn run_once(ns: &Netns, s: &Setup, tool: &'static str, stop: &AtomicBool) -> Outcome {
    let stderr = s.dir.join(format!("{tool}.stderr"));
    let alerts = s.dir.join("alerts.json");
    let _ = fs::remove_file(&alerts);
    let mut cmd = if tool == "tcpdump" {
        let mut c = ns.cmd("tcpdump");
        c.args(["-i", &ns.cap, "-B", &(s.buffer_mib * 1024).to_string()])
            .args(["-w", "/dev/null"])
            .args(&s.tcpdump_args);
        c
    } else {
        let mut c = ns.cmd(&s.bin);
        c.args(["live", "-i", &ns.cap, "--format", "json"])
            .args(["--buffer-size", &s.buffer_mib.to_string()])
            .arg("--alerts")
            .arg(&alerts)
            .args(&s.exfilwatch_args);
        c
    };
    let mut proc = Proc {
        child: cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}")),
        stderr,
    };
    proc.wait_stderr(
        if tool == "tcpdump" {
            "listening on"
        } else {
            "capturing on"
        },
        stop,
    );
    // Said so once the socket is open; give it a moment to be bound and filtering.
    sleep(Duration::from_millis(300));
    let rx0 = ns.counter(&ns.cap, "rx_packets");
    let replay = tcpreplay(ns, &s.mix, stop);
    let t = Instant::now();
    while t.elapsed() < s.settle {
        interrupted(stop);
        sleep(Duration::from_millis(10));
    }
    let iface_rx = ns.counter(&ns.cap, "rx_packets") - rx0;
    let threads = thread_cpu(proc.child.id());
    let status = proc.terminate(stop);
    let err = proc.stderr();
    if tool == "tcpdump" {
        let get = |k: &str| count_before(&err, k).unwrap_or_else(|| panic!("no {k:?} in: {err}"));
        Outcome {
            tool,
            replay,
            iface_rx,
            kernel_received: get("packets received by filter"),
            kernel_drops: get("packets dropped by kernel"),
            captured: get("packets captured"),
            channel_drops: None,
            alerts: None,
            status,
            threads,
        }
    } else {
        let text = fs::read_to_string(&alerts).unwrap_or_default();
        let mut n_alerts = 0;
        let mut stats = None;
        for line in text.lines() {
            if line.contains("\"event_type\":\"alert\"") {
                n_alerts += 1;
            } else if line.contains("\"event_type\":\"stats\"") {
                stats = Some(line);
            }
        }
        let stats: serde_json::Value = serde_json::from_str(
            stats.unwrap_or_else(|| panic!("no stats record in {alerts:?}; stderr: {err}")),
        )
        .expect("stats record is JSON");
        let c = &stats["stats"]["capture"];
        let get = |k: &str| {
            c[k].as_u64()
                .unwrap_or_else(|| panic!("no capture.{k} in {stats}"))
        };
        Outcome {
            tool,
            replay,
            iface_rx,
            kernel_received: get("kernel_received"),
            kernel_drops: get("kernel_drops"),
            captured: get("packets"),
            channel_drops: Some(get("channel_drops")),
            alerts: Some(n_alerts),
            status,
            threads,
        }
    }
}

fn header() {
    println!(
        "{:>3} {:<10} {:>9} {:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>8}",
        "run",
        "tool",
        "sent",
        "failed",
        "send_s",
        "kpps",
        "iface_rx",
        "k_recv",
        "captured",
        "k_drops",
        "ch_drops",
        "unread",
        "alerts",
        "drop%"
    );
}

fn row(run: usize, o: &Outcome) {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    println!(
        "{:>3} {:<10} {:>9} {:>6} {:>6.2} {:>8.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>6} {:>7.3}%{}",
        run,
        o.tool,
        o.replay.sent,
        o.replay.failed,
        o.replay.seconds,
        o.replay.pps / 1e3,
        o.iface_rx,
        o.kernel_received,
        o.captured,
        o.kernel_drops,
        opt(o.channel_drops),
        o.unread(),
        opt(o.alerts),
        100.0 * o.drops() as f64 / o.replay.sent.max(1) as f64,
        if o.status.success() {
            String::new()
        } else {
            format!("  (exit: {})", o.status)
        },
    );
    let threads: Vec<String> = o
        .threads
        .iter()
        .map(|(name, cpu)| format!("{name} {cpu:.2}"))
        .collect();
    println!("{:>14} CPU seconds per thread: {}", "", threads.join(", "));
}

fn main() {
    // `cargo test --benches` runs bench targets with --bench absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["ip", "tcpreplay", "tcpdump"]
        .into_iter()
        .filter(|t| !common::have(t))
        .collect();
    if !root || !missing.is_empty() {
        let why = if root {
            format!("missing tools: {}", missing.join(", "))
        } else {
            "not root".to_string()
        };
        println!(
            "live benchmark SKIPPED: {why} (it needs root, iproute2, tcpreplay and tcpdump: it \
             creates a network namespace with a veth pair and injects frames into it)"
        );
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).expect("signal handler");
    }
    let packets: u64 = env_or("EXFW_LIVE_PACKETS", 1_000_000);
    let runs: usize = env_or("EXFW_LIVE_RUNS", 3);
    let buffer_mib: u32 = env_or("EXFW_LIVE_BUFFER_MIB", 64);
    let settle = Duration::from_millis(env_or("EXFW_LIVE_SETTLE_MS", 1000));

    let captures = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-captures");
    fs::create_dir_all(&captures).unwrap();
    // Same name as the pipeline bench's: the mix is deterministic, either may reuse it.
    let mix = captures.join(format!("span-mix-{packets}.pcap"));
    if !mix.exists() {
        let tmp = mix.with_extension(format!("tmp{}", std::process::id()));
        mixgen::span_mix(&tmp, packets).unwrap();
        fs::rename(&tmp, &mix).unwrap();
    }
    let dir = WorkDir(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("live-{}", std::process::id())),
    );
    fs::create_dir_all(&dir.0).unwrap();
    let setup = Setup {
        bin: std::env::var("EXFW_LIVE_BIN").unwrap_or_else(|_| BIN.to_string()),
        mix,
        dir: dir.0.clone(),
        buffer_mib,
        settle,
        tcpdump_args: env_args("EXFW_LIVE_TCPDUMP_ARGS"),
        exfilwatch_args: env_args("EXFW_LIVE_EXFILWATCH_ARGS"),
    };

    remove_stale_namespaces();
    let ns = Netns::create();
    let tcpdump_version = Command::new("tcpdump")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .take(2)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    println!(
        "exfilwatch live benchmark: {packets} packets of the SPAN-like mix, tcpreplay \
         --preload-pcap --topspeed into a veth pair in namespace {}, {runs} runs; kernel buffer \
         {buffer_mib} MiB for both; settle {} ms; {} CPUs; {tcpdump_version}",
        ns.name,
        settle.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if setup.bin != BIN || !setup.exfilwatch_args.is_empty() || !setup.tcpdump_args.is_empty() {
        println!(
            "exfilwatch: {} {}; tcpdump extra flags: {}",
            setup.bin,
            setup.exfilwatch_args.join(" "),
            setup.tcpdump_args.join(" ")
        );
    }
    header();
    let mut totals: Vec<(&str, u64, u64, u64)> = Vec::new();
    for run in 1..=runs {
        // The sender alone: what tcpreplay reaches here with no capture running.
        let rx0 = ns.counter(&ns.cap, "rx_packets");
        let r = tcpreplay(&ns, &setup.mix, &stop);
        println!(
            "{run:>3} {:<10} {:>9} {:>6} {:>6.2} {:>8.0} {:>9}   (no capture)",
            "none",
            r.sent,
            r.failed,
            r.seconds,
            r.pps / 1e3,
            ns.counter(&ns.cap, "rx_packets") - rx0,
        );
        for tool in ["tcpdump", "exfilwatch"] {
            let o = run_once(&ns, &setup, tool, &stop);
            row(run, &o);
            match totals.iter_mut().find(|t| t.0 == tool) {
                Some(t) => {
                    t.1 += o.replay.sent;
                    t.2 += o.kernel_drops;
                    t.3 += o.channel_drops.unwrap_or(0);
                }
                None => totals.push((
                    tool,
                    o.replay.sent,
                    o.kernel_drops,
                    o.channel_drops.unwrap_or(0),
                )),
            }
        }
    }
    println!("over {runs} runs:");
    for (tool, sent, kernel, channel) in &totals {
        println!(
            "  {tool:<10} sent {sent}, kernel drops {kernel}, channel drops {channel}: {:.3}% dropped",
            100.0 * (kernel + channel) as f64 / (*sent).max(1) as f64
        );
    }
}
