//! Live sensor tests: `exfilwatch live` on real interfaces inside network namespaces that each
//! test creates and deletes itself.
//!
//! Network safety: every test works only inside its own namespace (`ip netns add`): a veth pair
//! whose both ends live in it, or its own loopback. Frames from the fixtures (with 10.x and
//! public addresses) are injected on one veth end with tcpreplay and captured on the other;
//! nothing is routed and nothing leaves the namespace.
//!
//! These tests need root, iproute2 and tcpreplay. Without root (or the tools) they print why
//! and pass, except under `CI=true`, where that is a failure.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

/// Whether live tests can run here; prints why not (and fails under CI).
fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["ip", "tcpreplay"]
        .into_iter()
        .filter(|t| !common::have(t))
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("missing tools: {}", missing.join(", "))
    } else {
        "not root".to_string()
    };
    assert!(
        !common::ci(),
        "{test}: live tests must run in CI, but: {why}"
    );
    eprintln!("SKIPPED {test}: {why} (live tests need root, iproute2 and tcpreplay)");
    false
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair (`cap0` where we capture, `inj0` where we inject),
/// both inside it, and its loopback up. Deleted on drop.
struct Netns {
    name: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "exfw-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run_ok(ns.cmd("ip").args([
            "link", "add", "cap0", "type", "veth", "peer", "name", "inj0",
        ]));
        for dev in ["cap0", "inj0", "lo"] {
            run_ok(ns.cmd("ip").args(["link", "set", dev, "up"]));
        }
        ns
    }

    /// A command run inside the namespace (`ip netns exec` execs it: its pid is the
    /// command's own).
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Injects a capture file's frames on `inj0` as fast as possible.
    fn inject(&self, pcap: &Path) {
        run_ok(
            self.cmd("tcpreplay")
                .args(["-q", "--topspeed", "-i", "inj0"])
                .arg(pcap),
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running `exfilwatch live`.
struct Sensor {
    child: Child,
    stderr: PathBuf,
}

impl Sensor {
    fn start(ns: &Netns, dir: &Path, args: &[&str]) -> Sensor {
        Sensor::start_with(ns, dir, args, Stdio::null())
    }

    fn start_with(ns: &Netns, dir: &Path, args: &[&str], stdout: Stdio) -> Sensor {
        let stderr = dir.join("sensor.stderr");
        let child = ns
            .cmd(BIN)
            .arg("live")
            .args(args)
            .stdout(stdout)
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn exfilwatch live");
        let s = Sensor { child, stderr };
        s.wait_stderr("capturing on", Duration::from_secs(10));
        // The capture is active once it said so; give the socket a moment to be bound.
        sleep(Duration::from_millis(200));
        s
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_stderr(&self, what: &str, limit: Duration) {
        let t = Instant::now();
        while !self.stderr().contains(what) {
            assert!(
                t.elapsed() < limit,
                "sensor did not say {what:?}: {}",
                self.stderr()
            );
            sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        run_ok(Command::new("kill").args([sig, &self.pid().to_string()]));
    }

    /// SIGTERM and wait: returns the exit status and how long the exit took.
    fn terminate(mut self) -> (ExitStatus, Duration) {
        self.signal("-TERM");
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("sensor ignored SIGTERM for 10 s: {}", self.stderr());
            }
            sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "exfw-live-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// An alert reduced to what survives replay: packet times change, tuples do not.
type Tuple = (String, String, String, u64, String, u64, String);

fn tuple(v: &serde_json::Value) -> Tuple {
    let s = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    (
        s("rule"),
        s("proto"),
        s("src_ip"),
        n("src_port"),
        s("dest_ip"),
        n("dest_port"),
        s("vlan"),
    )
}

/// The JSON lines of a file, every one of which must parse.
fn records(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn alerts(path: &Path) -> Vec<Tuple> {
    records(path)
        .iter()
        .filter(|v| v["event_type"] == "alert")
        .map(tuple)
        .collect()
}

/// What `read` raises on the same capture: the reference for the live run.
fn offline_alerts(pcap: &Path) -> Vec<Tuple> {
    offline_alerts_with(None, pcap)
}

/// [`offline_alerts`] under a rule file (`None`: the embedded rules).
fn offline_alerts_with(rules: Option<&Path>, pcap: &Path) -> Vec<Tuple> {
    let mut cmd = Command::new(BIN);
    cmd.args(["read", "--quiet"]);
    if let Some(r) = rules {
        cmd.arg("--rules").arg(r);
    }
    let out = cmd.arg(pcap).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "offline read of {pcap:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| tuple(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// Waits until `path` holds `n` alerts; returns how long that took.
fn wait_alerts(path: &Path, n: usize, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let got = alerts(path).len();
        if got >= n {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{} of {n} alerts in {path:?} after {limit:?}",
            got
        );
        sleep(Duration::from_millis(5));
    }
}

fn sorted(v: &[Tuple]) -> BTreeSet<Tuple> {
    v.iter().cloned().collect()
}

#[test]
fn live_alerts_reach_the_file_within_a_second_and_sigterm_loses_nothing() {
    if !can_run("live_alerts") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("latency");
    let out = dir.join("alerts.json");
    let flows = dir.join("flows.json");
    let sensor = Sensor::start(
        &ns,
        &dir,
        &[
            "-i",
            "cap0",
            "--alerts",
            out.to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
        ],
    );
    let mut expected = Vec::new();
    for name in ["link_ethernet.pcap", "link_vlan_qinq.pcap"] {
        let pcap = fixture(name);
        let want = offline_alerts(&pcap);
        expected.extend(want.iter().cloned());
        ns.inject(&pcap);
        // Every alert is in the file within 1 s of the injection, before any signal.
        let took = wait_alerts(&out, expected.len(), Duration::from_secs(1));
        eprintln!(
            "{name}: {} alerts in the file {took:?} after injection",
            want.len()
        );
    }
    assert_eq!(sorted(&alerts(&out)), sorted(&expected));
    let (status, took) = sensor.terminate();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    // Nothing lost, nothing doubled, and a final stats record with the drop counters.
    let recs = records(&out);
    assert_eq!(alerts(&out).len(), expected.len());
    let last = recs.last().expect("records");
    assert_eq!(last["event_type"], "stats", "{last}");
    let cap = &last["stats"]["capture"];
    for k in ["kernel_drops", "if_drops", "channel_drops"] {
        assert_eq!(cap[k], 0, "{k} in {last}");
    }
    assert!(cap["packets"].as_u64().unwrap() >= 6, "{last}");
    assert_eq!(last["stats"]["alerts"]["written"], expected.len());
    for r in recs.iter().filter(|v| v["event_type"] == "alert") {
        assert_eq!(r["in_iface"], "cap0");
        assert!(r.get("pcap_filename").is_none());
        assert!(r["flow"]["pkts_toserver"].as_u64().unwrap() >= 1);
    }
    // Every flow the alerts name ended with a record at shutdown (or before), found by its
    // community_id.
    let flow_recs = records(&flows);
    assert!(flow_recs.iter().all(|f| f["event_type"] == "flow"));
    for r in recs.iter().filter(|v| v["event_type"] == "alert") {
        assert!(
            flow_recs
                .iter()
                .any(|f| f["community_id"] == r["community_id"]),
            "no flow record for {r}"
        );
    }
}

#[test]
fn sighup_after_move_writes_to_the_new_file() {
    if !can_run("sighup") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("hup");
    let out = dir.join("alerts.json");
    let rotated = dir.join("alerts.json.1");
    let sensor = Sensor::start(
        &ns,
        &dir,
        &["-i", "cap0", "--alerts", out.to_str().unwrap()],
    );
    let first = fixture("link_ethernet.pcap");
    ns.inject(&first);
    wait_alerts(&out, offline_alerts(&first).len(), Duration::from_secs(1));
    fs::rename(&out, &rotated).unwrap();
    sensor.signal("-HUP");
    sleep(Duration::from_millis(300));
    let second = fixture("link_vlan_qinq.pcap");
    ns.inject(&second);
    let want = offline_alerts(&second);
    wait_alerts(&out, want.len(), Duration::from_secs(1));
    let (status, _) = sensor.terminate();
    assert_eq!(status.code(), Some(0));
    assert_eq!(sorted(&alerts(&rotated)), sorted(&offline_alerts(&first)));
    assert_eq!(sorted(&alerts(&out)), sorted(&want));
}

/// `/proc/PID/status` field `key` (e.g. `Uid:`), whitespace-separated values.
fn proc_status(pid: u32, key: &str) -> Vec<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().skip(1).map(String::from).collect())
        .unwrap_or_default()
}

#[test]
fn user_nobody_drops_root_and_still_writes_and_reopens() {
    if !can_run("user_nobody") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("user");
    // The log directory belongs to the sensor's user, as under systemd's LogsDirectory=.
    run_ok(Command::new("chown").arg("nobody").arg(&dir));
    let out = dir.join("alerts.json");
    let sensor = Sensor::start(
        &ns,
        &dir,
        &[
            "-i",
            "cap0",
            "--user",
            "nobody",
            "--alerts",
            out.to_str().unwrap(),
        ],
    );
    let pid = sensor.pid();
    let nobody = String::from_utf8(
        Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    // Real, effective, saved and filesystem uid and gid are all nobody's; no capability left.
    assert_eq!(proc_status(pid, "Uid:"), vec![nobody.clone(); 4]);
    assert!(!proc_status(pid, "Gid:").contains(&"0".to_string()));
    for caps in ["CapEff:", "CapPrm:"] {
        assert_eq!(proc_status(pid, caps), vec!["0000000000000000"], "{caps}");
    }
    assert_eq!(proc_status(pid, "NoNewPrivs:"), vec!["1"]);

    let first = fixture("link_ethernet.pcap");
    ns.inject(&first);
    wait_alerts(&out, offline_alerts(&first).len(), Duration::from_secs(1));
    fs::rename(&out, dir.join("alerts.json.1")).unwrap();
    sensor.signal("-HUP");
    sleep(Duration::from_millis(300));
    let second = fixture("link_vlan_qinq.pcap");
    ns.inject(&second);
    wait_alerts(&out, offline_alerts(&second).len(), Duration::from_secs(1));
    let stderr = sensor.stderr();
    let (status, _) = sensor.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(!stderr.contains("reopening"), "{stderr}");
    // The new file was created by the unprivileged sensor.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&out).unwrap().uid().to_string(), nobody);
}

#[test]
fn real_loopback_connection_to_ollama_port_raises_the_syn_alert() {
    if !can_run("loopback") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("lo");
    let out = dir.join("alerts.json");
    let sensor = Sensor::start(&ns, &dir, &["-i", "lo", "--alerts", out.to_str().unwrap()]);
    // A real TCP connection attempt on the namespace's loopback (refused: nothing listens,
    // but the SYN is on the wire).
    let _ = ns
        .cmd("bash")
        .args(["-c", "exec 3<>/dev/tcp/127.0.0.1/11434"])
        .stderr(Stdio::null())
        .status();
    let took = wait_alerts(&out, 1, Duration::from_secs(1));
    eprintln!("loopback SYN alert after {took:?}");
    let a = &records(&out)[0];
    assert_eq!(a["rule"], "ai-port-syn");
    assert_eq!(a["dest_ip"], "127.0.0.1");
    assert_eq!(a["dest_port"], 11434);
    let (status, _) = sensor.terminate();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        alerts(&out).len(),
        1,
        "the RST reply is not another connection"
    );
}

#[test]
fn bad_bpf_expression_fails_cleanly() {
    if !can_run("bad_bpf") {
        return;
    }
    let ns = Netns::new();
    let out = ns
        .cmd(BIN)
        .args(["live", "-i", "lo", "--bpf", "tcp port and and"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad BPF expression"), "{err}");
    assert!(err.contains("syntax error"), "libpcap's own message: {err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn bpf_filter_applies_and_stats_are_reported() {
    if !can_run("bpf_stats") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("bpf");
    let out = dir.join("alerts.json");
    // Only UDP passes the kernel filter: the TCP SYN alerts of the fixture disappear.
    let sensor = Sensor::start(
        &ns,
        &dir,
        &[
            "-i",
            "cap0",
            "--bpf",
            "udp or (vlan and udp)",
            "--stats-interval",
            "200ms",
            "--alerts",
            out.to_str().unwrap(),
        ],
    );
    let pcap = fixture("link_ethernet.pcap");
    ns.inject(&pcap);
    wait_alerts(&out, 1, Duration::from_secs(1));
    sleep(Duration::from_millis(500));
    let (status, _) = sensor.terminate();
    assert_eq!(status.code(), Some(0));
    let got = alerts(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, "\"UDP\"");
    let stats: Vec<_> = records(&out)
        .into_iter()
        .filter(|v| v["event_type"] == "stats")
        .collect();
    assert!(stats.len() >= 2, "periodic and final stats records");
    let mut stderr = String::new();
    fs::File::open(dir.join("sensor.stderr"))
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("kernel_drops=0"), "{stderr}");
    assert!(stderr.contains("channel_drops=0"), "{stderr}");
}

/// A little-endian microsecond pcap header, Ethernet, snap length 65535.
fn pcap_header() -> Vec<u8> {
    let mut out = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    out.extend_from_slice(&[
        2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ]);
    out
}

/// Appends `frame` as a whole record at 1,764,072,000 s plus `usec` microseconds.
fn pcap_record(out: &mut Vec<u8>, usec: u32, frame: &[u8]) {
    out.extend_from_slice(&1_764_072_000u32.to_le_bytes());
    out.extend_from_slice(&usec.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}

/// Writes `n` SYNs to 10.0.1.20:11434 from distinct sources (Ethernet, classic pcap).
fn syn_flood_pcap(path: &Path, n: u32) {
    let mut out = pcap_header();
    for i in 0..n {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[172, 16, (i >> 8) as u8, i as u8, 10, 0, 1, 20]);
        f.extend_from_slice(&(1024 + (i % 60000) as u16).to_be_bytes());
        f.extend_from_slice(&[
            0x2c, 0xaa, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        pcap_record(&mut out, i, &f);
    }
    fs::write(path, out).unwrap();
}

#[test]
fn sigterm_with_a_blocked_output_still_exits_promptly() {
    if !can_run("blocked_output") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("blocked");
    let flood = dir.join("flood.pcap");
    // More than the channel holds (64 batches of 256) once the engine is stuck.
    syn_flood_pcap(&flood, 40_000);
    // Alerts to a pipe nobody reads: once it is full, every write blocks.
    let mut sensor = Sensor::start_with(
        &ns,
        &dir,
        // Only our IPv4 frames (the namespace's own IPv6 chatter would skew the counts).
        &["-i", "cap0", "--buffer-size", "64", "--bpf", "not ip6"],
        Stdio::piped(),
    );
    ns.inject(&flood);
    sleep(Duration::from_millis(500));
    sensor.signal("-TERM");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = sensor.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM with a blocked output"
        );
        sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    eprintln!("exited {took:?} after SIGTERM with a blocked output: {status}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let err = sensor.stderr();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("alert output is blocked"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The capture never blocked on the stuck engine: it read every packet the kernel kept and
    // counted what it had to drop.
    let line = err
        .lines()
        .find(|l| l.contains("capture at exit:"))
        .unwrap_or_else(|| panic!("no capture counters in {err}"));
    let num = |k: &str| -> u64 {
        let i = line.find(&format!("{k}=")).unwrap() + k.len() + 1;
        line[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(num("packets") + num("kernel_drops"), 40_000, "{line}");
    assert!(num("channel_drops") > 0, "{line}");
}

#[test]
fn slow_consumer_alert_flood_drops_are_counted_never_silent() {
    if !can_run("slow_consumer") {
        return;
    }
    let ns = Netns::new();
    let dir = tempdir("slow");
    let flood = dir.join("flood.pcap");
    const N: u64 = 40_000;
    syn_flood_pcap(&flood, N as u32);
    let mut sensor = Sensor::start_with(
        &ns,
        &dir,
        // Only our IPv4 frames (the namespace's own IPv6 chatter would skew the counts).
        &["-i", "cap0", "--buffer-size", "64", "--bpf", "not ip6"],
        Stdio::piped(),
    );
    // A consumer that reads nothing for 1.5 s (the flood arrives meanwhile), then everything.
    let mut pipe = sensor.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        sleep(Duration::from_millis(1500));
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut pipe, &mut all).unwrap();
        all
    });
    ns.inject(&flood);
    sleep(Duration::from_millis(3000));
    let (status, _) = sensor.terminate();
    let all = reader.join().unwrap();
    assert_eq!(status.code(), Some(0));
    let recs: Vec<serde_json::Value> = String::from_utf8(all)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let alerts = recs.iter().filter(|r| r["event_type"] == "alert").count() as u64;
    let last = recs.last().unwrap();
    assert_eq!(last["event_type"], "stats", "{last}");
    let cap = &last["stats"]["capture"];
    let n = |k: &str| cap[k].as_u64().unwrap();
    eprintln!(
        "slow consumer: packets={} kernel_drops={} channel_drops={} processed={} alerts={alerts}",
        n("packets"),
        n("kernel_drops"),
        n("channel_drops"),
        n("processed")
    );
    // Every packet is accounted for: the engine processed it, or the capture dropped it
    // because the engine was stuck behind the consumer (counted), or the kernel did.
    assert_eq!(n("packets") + n("kernel_drops"), N, "{last}");
    assert_eq!(n("processed") + n("channel_drops"), n("packets"), "{last}");
    assert!(
        n("channel_drops") > 0,
        "the consumer was not slow enough: {last}"
    );
    // Every processed SYN is one alert, and every alert written reached the consumer.
    assert_eq!(alerts, n("processed"), "{last}");
    assert_eq!(last["stats"]["alerts"]["written"].as_u64(), Some(alerts));
}

/// `n` TCP conversations (SYN, SYN+ACK, ACK, data both ways, FIN both ways), their packets
/// interleaved round-robin: half from admin hosts to 10.0.1.20:11434, half from an AI host to
/// outside addresses on 443, a tenth of them VLAN-tagged.
fn conversations_pcap(path: &Path, n: u32) {
    let mut out = pcap_header();
    // (from client?, flags, payload bytes)
    let steps: [(bool, u8, usize); 7] = [
        (true, 0x02, 0),
        (false, 0x12, 0),
        (true, 0x10, 0),
        (true, 0x18, 100),
        (false, 0x18, 200),
        (true, 0x11, 0),
        (false, 0x11, 0),
    ];
    let mut usec = 0u32;
    for (k, &(from_client, flags, len)) in steps.iter().enumerate() {
        for i in 0..n {
            let (client, server, dport) = if i % 2 == 0 {
                ([10, 0, 0, 10 + (i % 200) as u8], [10, 0, 1, 20], 11434u16)
            } else {
                ([10, 0, 1, 5], [93, 184, (i >> 8) as u8, i as u8], 443u16)
            };
            let sport = 20_000 + i as u16;
            let (src, dst, sp, dp) = if from_client {
                (client, server, sport, dport)
            } else {
                (server, client, dport, sport)
            };
            let mut f = if from_client {
                vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
            } else {
                vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]
            };
            if i % 10 == 3 {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
            }
            f.extend_from_slice(&[0x08, 0x00]);
            let ip_len = (40 + len) as u16;
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&ip_len.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            f.extend_from_slice(&sp.to_be_bytes());
            f.extend_from_slice(&dp.to_be_bytes());
            f.extend_from_slice(&(k as u32 * 1000).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            f.resize(f.len() + len, 0x61);
            usec += 10;
            pcap_record(&mut out, usec, &f);
        }
    }
    fs::write(path, out).unwrap();
}

/// `exfilwatch live` on the namespace's capture end with `workers` workers, IPv4 only (the
/// kernel's own IPv6 chatter stays out of the counts), alerts to `out`, and `extra` flags.
fn start_workers(ns: &Netns, dir: &Path, workers: &str, out: &Path, extra: &[&str]) -> Sensor {
    let mut args = vec!["-i", "cap0", "--workers", workers, "--bpf", "not ip6"];
    args.extend(["--alerts", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Sensor::start(ns, dir, &args)
}

/// The per-worker packet counts of a stats record's `capture` object.
fn per_worker(cap: &serde_json::Value) -> Vec<u64> {
    cap["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no per-worker counts: {cap}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// A flow record reduced to what replay keeps: its Community ID and counters.
fn flow_counts(path: &Path) -> std::collections::BTreeMap<String, [u64; 4]> {
    let mut m = std::collections::BTreeMap::new();
    for r in records(path) {
        let f = &r["flow"];
        let c = [
            "pkts_toserver",
            "pkts_toclient",
            "bytes_toserver",
            "bytes_toclient",
        ]
        .map(|k| f[k].as_u64().unwrap());
        let id = r["community_id"].as_str().unwrap().to_string();
        assert!(m.insert(id, c).is_none(), "flow split or doubled: {r}");
    }
    m
}

#[test]
fn fanout_workers_see_whole_flows_and_raise_the_same_alerts() {
    if !can_run("fanout_workers") {
        return;
    }
    let dir = tempdir("workers");
    let pcap = dir.join("conversations.pcap");
    const FLOWS: u32 = 400;
    conversations_pcap(&pcap, FLOWS);
    let want = offline_alerts(&pcap);
    assert_eq!(
        want.len(),
        FLOWS as usize,
        "one alert per conversation offline"
    );
    let mut runs = Vec::new();
    for workers in ["1", "2", "4"] {
        let ns = Netns::new();
        let out = dir.join(format!("alerts-{workers}.json"));
        let flows = dir.join(format!("flows-{workers}.json"));
        let sensor = start_workers(
            &ns,
            &dir,
            workers,
            &out,
            &["--flows", flows.to_str().unwrap()],
        );
        ns.inject(&pcap);
        wait_alerts(&out, want.len(), Duration::from_secs(5));
        let (status, _) = sensor.terminate();
        assert_eq!(status.code(), Some(0), "workers={workers}");
        let recs = records(&out);
        let last = recs.last().unwrap();
        assert_eq!(last["event_type"], "stats");
        let cap = &last["stats"]["capture"];
        assert_eq!(cap["packets"], 7 * FLOWS, "workers={workers}: {last}");
        assert_eq!(cap["kernel_drops"], 0, "{last}");
        assert_eq!(cap["channel_drops"], 0, "{last}");
        if workers != "1" {
            // The kernel spread the packets: every worker got some, and they add up.
            let per = per_worker(cap);
            eprintln!("workers={workers}: packets per worker {per:?}");
            assert_eq!(per.len(), workers.parse::<usize>().unwrap());
            assert!(per.iter().all(|&p| p > 0), "{per:?}");
            assert_eq!(per.iter().sum::<u64>(), u64::from(7 * FLOWS));
        }
        assert_eq!(sorted(&alerts(&out)), sorted(&want), "workers={workers}");
        assert_eq!(alerts(&out).len(), want.len(), "workers={workers}");
        let counts = flow_counts(&flows);
        assert_eq!(counts.len(), FLOWS as usize, "workers={workers}");
        runs.push(counts);
    }
    // Every flow whole on one worker: the same records, counter for counter.
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
    assert!(runs[0].values().all(|c| c[..2] == [4, 3]), "{:?}", runs[0]);
}

/// UDP datagrams from the AI host 10.0.1.5, each to its own outside address and port (so each
/// is its own flow), of `ip_len` IP-layer bytes, 100 µs apart from `usec`.
fn datagrams_pcap(path: &Path, first: u32, n: u32, ip_len: u16) {
    let mut out = pcap_header();
    for i in first..first + n {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&ip_len.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 1, 5, 198, 51, (i >> 8) as u8, i as u8]);
        f.extend_from_slice(&(30_000 + i as u16).to_be_bytes());
        f.extend_from_slice(&(5_000 + i as u16).to_be_bytes());
        f.extend_from_slice(&(ip_len - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.resize(14 + usize::from(ip_len), 0x61);
        pcap_record(&mut out, i * 100, &f);
    }
    fs::write(path, out).unwrap();
}

/// Waits until a periodic stats record in `path` says the engines have processed `n` packets
/// (each worker publishes its own count at its stats tick, so the sum only ever lags).
fn wait_processed(path: &Path, n: u64, limit: Duration) {
    let t = Instant::now();
    loop {
        let done = records(path).iter().any(|r| {
            r["event_type"] == "stats" && r["stats"]["capture"]["processed"].as_u64() >= Some(n)
        });
        if done {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "{n} packets not processed after {limit:?}"
        );
        sleep(Duration::from_millis(20));
    }
}

/// The files of a sharing test in `dir`: `rules` as `rules.toml`, and the packets
/// `capture(path, first, n)` writes as three captures: the first `split`, the rest up to
/// `total`, and all `total` at once (for the offline run the live runs must equal).
fn sharing_files(
    dir: &Path,
    rules: &str,
    capture: impl Fn(&Path, u32, u32),
    split: u32,
    total: u32,
) -> (PathBuf, [PathBuf; 3]) {
    let path = dir.join("rules.toml");
    fs::write(&path, rules).unwrap();
    let pcaps = [
        dir.join("first.pcap"),
        dir.join("rest.pcap"),
        dir.join("whole.pcap"),
    ];
    capture(&pcaps[0], 0, split);
    capture(&pcaps[1], split, total - split);
    capture(&pcaps[2], 0, total);
    (path, pcaps)
}

/// A live run for the sharing tests: `exfilwatch live` with `workers` workers and `rules` on a
/// fresh namespace (IPv4 only, stats every 100 ms into `out`); `traffic` injects and waits;
/// returns the final stats record's `stats` object, after checking a clean exit and, with
/// more than one worker, that the kernel spread the `packets` over them.
fn sharing_run(
    dir: &Path,
    workers: &str,
    rules: &Path,
    out: &Path,
    packets: u64,
    traffic: impl FnOnce(&Netns),
) -> serde_json::Value {
    let ns = Netns::new();
    let sensor = start_workers(
        &ns,
        dir,
        workers,
        out,
        &[
            "--stats-interval",
            "100ms",
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    traffic(&ns);
    let (status, _) = sensor.terminate();
    assert_eq!(status.code(), Some(0), "workers={workers}");
    let stats = records(out).last().unwrap()["stats"].clone();
    let cap = &stats["capture"];
    assert_eq!(cap["packets"], packets, "workers={workers}: {stats}");
    assert_eq!(cap["processed"], packets, "workers={workers}: {stats}");
    if workers != "1" {
        // All on one worker would not test the sharing (all or all but one there: odds below
        // 1 in 10^7 for 30 packets on two workers).
        let per = per_worker(cap);
        eprintln!("workers={workers}: packets per worker {per:?}");
        assert!(per.iter().all(|&p| p < packets - 1), "{per:?}");
    }
    stats
}

/// A by_src volume rule sums a host's bytes over all its flows, whichever worker each landed
/// on: 39 datagrams of 76 bytes to 39 outside addresses (2,964 bytes, under the rule's 3,000),
/// then one more, which crosses it. With 2 and 4 workers no worker sees more than part of the
/// 2,964, so windows kept per worker would never fire.
#[test]
fn fanout_workers_share_by_src_volume_windows() {
    if !can_run("fanout_by_src") {
        return;
    }
    let dir = tempdir("by-src");
    let (rules, [before, crossing, whole]) = sharing_files(
        &dir,
        concat!(
            "[networks]\ninternal = [\"10.0.0.0/8\"]\nai = [\"10.0.1.0/24\"]\n\n",
            "[[rule]]\nid = \"ai-window\"\nkind = \"egress-volume\"\nsrc = \"ai\"\n",
            "dest_not = \"internal\"\nbytes = 3000\ntrack = \"by_src\"\nwindow = \"1h\"\n",
            "severity = \"medium\"\nmessage = \"AI host sent more than 3000 bytes outside\"\n",
        ),
        |path, first, n| datagrams_pcap(path, first, n, 76),
        39,
        40,
    );
    let want = offline_alerts_with(Some(&rules), &whole);
    assert_eq!(want.len(), 1, "one alert offline: {want:?}");
    assert_eq!(
        want[0].4, "\"198.51.0.39\"",
        "at the 40th datagram: {want:?}"
    );
    for workers in ["1", "2", "4"] {
        let out = dir.join(format!("alerts-{workers}.json"));
        sharing_run(&dir, workers, &rules, &out, 40, |ns| {
            ns.inject(&before);
            // Every worker has counted its share before the crossing datagram comes.
            wait_processed(&out, 39, Duration::from_secs(5));
            assert_eq!(alerts(&out).len(), 0, "workers={workers}: fired early");
            ns.inject(&crossing);
            wait_alerts(&out, 1, Duration::from_secs(5));
        });
        assert_eq!(alerts(&out), want, "workers={workers}");
        let recs = records(&out);
        let fired = recs.iter().find(|r| r["event_type"] == "alert").unwrap();
        assert_eq!(fired["bytes"], 3040, "workers={workers}: {fired}");
    }
}

/// TCP SYNs from 172.16.0.1 (source ports from 40000 + `first`) to 10.0.1.20:11434, each its
/// own flow, 100 µs apart.
fn syns_from_one_host_pcap(path: &Path, first: u32, n: u32) {
    let mut out = pcap_header();
    for i in first..first + n {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[172, 16, 0, 1, 10, 0, 1, 20]);
        f.extend_from_slice(&(40_000 + i as u16).to_be_bytes());
        f.extend_from_slice(&[
            0x2c, 0xaa, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        pcap_record(&mut out, i * 100, &f);
    }
    fs::write(path, out).unwrap();
}

/// A rate limit counts a source's alerts whichever worker sees each flow: two alerts a minute
/// per source, two SYNs, then 28 more from the same host (each its own flow, spread over the
/// workers): two alerts, the first two, with 1, 2 and 4 workers. Limits kept per worker would
/// let a worker that had not seen the first two write up to two more.
#[test]
fn fanout_workers_share_rate_limits() {
    if !can_run("fanout_limits") {
        return;
    }
    let dir = tempdir("limits");
    let (rules, [first, rest, whole]) = sharing_files(
        &dir,
        concat!(
            "[networks]\nai = [\"10.0.1.0/24\"]\n\n",
            "[[rule]]\nid = \"ai-syn-limited\"\nkind = \"new-connection\"\ndest = \"ai\"\n",
            "dest_port = 11434\nseverity = \"medium\"\nmessage = \"SYN to Ollama\"\n",
            "limit = { count = 2, per = \"1m\", track = \"by_src\" }\n",
        ),
        syns_from_one_host_pcap,
        2,
        30,
    );
    let want = offline_alerts_with(Some(&rules), &whole);
    assert_eq!(want.len(), 2, "two alerts offline: {want:?}");
    for workers in ["1", "2", "4"] {
        let out = dir.join(format!("alerts-{workers}.json"));
        let stats = sharing_run(&dir, workers, &rules, &out, 30, |ns| {
            ns.inject(&first);
            wait_alerts(&out, 2, Duration::from_secs(5));
            ns.inject(&rest);
            wait_processed(&out, 30, Duration::from_secs(5));
        });
        // Workers write in their own order: compare as sets, and count.
        assert_eq!(alerts(&out).len(), 2, "workers={workers}: {stats}");
        assert_eq!(sorted(&alerts(&out)), sorted(&want), "workers={workers}");
        assert_eq!(
            stats["alerts"]["suppressed"], 28,
            "workers={workers}: {stats}"
        );
    }
}
