#!/usr/bin/env python3
"""Times exfilwatch builds against each other on one capture, in alternating order.

    scripts/abba.py [-n RUNS] [--bare] [--suricata [--suricata-set KEY=VALUE]...] [--threads]
                    [--rules PATH] CAPTURE BUILD [BUILD...]

Each round runs every BUILD once (`BUILD read --quiet --alerts FILE [--rules PATH] CAPTURE`,
JSON alerts to a fresh file), in the given order in even rounds and reversed in odd ones
(A B, B A, ...): on a shared machine a fixed order gave the second build 1.5% more in a check
of one build against itself. Prints the median and minimum wall time and the median user and
system CPU of each; with --bare also the bare libpcap loop over the same capture
(`cargo build --release --example bare_loop` first) and each build's ratio to it; with
--threads also each exfilwatch thread's median user and system CPU (scripts/threadcpu.c,
built with cc and preloaded); with --suricata also Suricata, once a round (below), and its
ratio to the bare loop. Compare builds only within one run: the machine's speed moves
between runs.

--suricata runs `suricata --runmode single -k none --init-errors-fatal -r CAPTURE` with the
installed default configuration (/etc/suricata/suricata.yaml), its `outputs` section replaced
by EVE alerts alone and HOME_NET set to 10.0.0.0/8. Its rules stand for the two default rules
that fire on a packet (SURICATA_RULES below): `ai-port-syn`, the first SYN of a flow with
neither ACK nor RST to an AI port, and `ai-egress`, the first packet of a flow from the AI
subnet to outside 10.0.0.0/8 sent by the side that opened it. They agree with exfilwatch on
the bench's captures; where the flow semantics differ, so can the counts (Suricata's flow
timeouts; its ICMP flows; a capture that starts with a SYN-ACK, whose receiver exfilwatch
takes for the initiator). In the last round the alerts of each rule are counted in every
program's output. `--suricata-set KEY=VALUE` passes `--set KEY=VALUE` on to Suricata: with
its default flow memcap Suricata gives up tracking most of a 1M-flow flood, and a rule whose
once-a-flow flowbit lives in the flow then misses those flows; `--suricata-set
flow.memcap=4gb` makes it track a million. Suricata is in Debian's bookworm-backports (7.0)
and trixie.
"""

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SURICATA_CONF = Path("/etc/suricata/suricata.yaml")
AI_PORTS = "11434,8000,8080,1234,7860,5000,5001,8188,30000,4000,9997,6333,6334,19530"
SURICATA_RULES = {
    1000001: (
        "ai-port-syn",
        f"alert tcp any any -> any [{AI_PORTS}] (msg:\"New connection to an AI service port\"; "
        "flags:S,CEFPU; flowbits:isnotset,ew.syn; flowbits:set,ew.syn; sid:1000001; rev:1;)",
    ),
    1000002: (
        "ai-egress",
        "alert ip 10.0.1.0/24 any -> !10.0.0.0/8 any (msg:\"possible exfiltration: AI host "
        "started a connection outside the internal network\"; flow:to_server; "
        "flowbits:isnotset,ew.egress; flowbits:set,ew.egress; sid:1000002; rev:1;)",
    ),
}
BARE = ROOT / "target/release/examples/bare_loop"
SHIM = ROOT / "target/tmp/threadcpu.so"


def build_shim() -> None:
    SHIM.parent.mkdir(parents=True, exist_ok=True)
    src = ROOT / "scripts/threadcpu.c"
    cc = ["cc", "-O2", "-shared", "-fPIC", "-o", str(SHIM), str(src), "-ldl", "-lpthread"]
    subprocess.run(cc, check=True)


def suricata_setup(tmp: str) -> list:
    """Writes Suricata's configuration and rules into `tmp`; returns the command's start."""
    conf = SURICATA_CONF.read_text()
    start = conf.find("\noutputs:\n")
    end = re.search(r"\n[a-z][a-z-]*:", conf[start + 1 :])
    if start < 0 or end is None:
        sys.exit(f"{SURICATA_CONF}: no top-level outputs section")
    eve = "\noutputs:\n  - eve-log:\n      enabled: yes\n      filetype: regular\n"
    eve += "      filename: eve.json\n      types:\n        - alert\n"
    conf = conf[:start] + eve + conf[start + 1 + end.start() :]
    conf, n = re.subn(r"(?m)^(\s*)HOME_NET: .*$", r'\1HOME_NET: "[10.0.0.0/8]"', conf, count=1)
    if n != 1:
        sys.exit(f"{SURICATA_CONF}: no HOME_NET")
    Path(tmp, "suricata.yaml").write_text(conf)
    Path(tmp, "exfilwatch.rules").write_text("".join(r + "\n" for _, r in SURICATA_RULES.values()))
    os.mkdir(os.path.join(tmp, "suricata"))
    return ["suricata", "--runmode", "single", "-k", "none", "--init-errors-fatal",
            "-c", os.path.join(tmp, "suricata.yaml"), "-S", os.path.join(tmp, "exfilwatch.rules"),
            "-l", os.path.join(tmp, "suricata")]


def count_rules(path: str, suricata: bool) -> dict:
    """Alerts of each rule in an alert file (exfilwatch's JSON lines or Suricata's EVE)."""
    counts = {}
    if not os.path.exists(path):
        return counts
    pattern = rb'"signature_id":(\d+)' if suricata else rb'"rule":"([^"]*)"'
    with open(path, "rb") as f:  # a line at a time: a flood's file is half a gigabyte
        for line in f:
            m = re.search(pattern, line)
            if m is None:
                continue
            key = m.group(1).decode()
            if suricata:
                key = SURICATA_RULES.get(int(key), (f"sid {key}",))[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=12, help="rounds (default 12)")
    ap.add_argument("--bare", action="store_true", help="also time the bare libpcap loop")
    ap.add_argument("--suricata", action="store_true", help="also time Suricata (see above)")
    ap.add_argument("--suricata-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a --set option for Suricata (repeatable)")
    ap.add_argument("--threads", action="store_true", help="also each thread's CPU time")
    ap.add_argument("--rules", help="rules file for every build (default: embedded)")
    ap.add_argument("capture")
    ap.add_argument("builds", nargs="+")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("-n must be at least 1")
    if a.suricata_set and not a.suricata:
        ap.error("--suricata-set needs --suricata")
    builds = []
    for b in a.builds:
        path = os.path.realpath(b)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error(f"{b}: not an executable file")
        if path in builds:
            ap.error(f"{b}: given twice")
        builds.append(path)
    if not os.path.isfile(a.capture):
        ap.error(f"{a.capture}: no such file")

    names = (["bare"] if a.bare else []) + builds + (["suricata"] if a.suricata else [])
    if a.bare and not BARE.exists():
        sys.exit(f"{BARE} missing: cargo build --release --example bare_loop")
    if a.suricata and not (shutil.which("suricata") and SURICATA_CONF.exists()):
        sys.exit(f"suricata or {SURICATA_CONF} missing: is Suricata installed?")
    for kv in a.suricata_set:
        if "=" not in kv:
            ap.error(f"--suricata-set {kv}: not KEY=VALUE")
    results = {n: ([], [], []) for n in names}
    threads = {n: {} for n in names}
    env = dict(os.environ)
    if a.threads:
        build_shim()
        env["LD_PRELOAD"] = str(SHIM)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        suricata = suricata_setup(tmp) if a.suricata else None
        for kv in a.suricata_set:
            suricata += ["--set", kv]
        alerts = os.path.join(tmp, "alerts.json")
        eve = os.path.join(tmp, "suricata", "eve.json")
        for i in range(a.runs):
            for n in names if i % 2 == 0 else names[::-1]:
                for f in (alerts, eve):
                    if os.path.exists(f):
                        os.remove(f)
                if n == "bare":
                    cmd = [str(BARE), a.capture]
                elif n == "suricata":
                    cmd = suricata + ["-r", a.capture]
                else:
                    cmd = [n, "read", "--quiet", "--alerts", alerts]
                    cmd += ["--rules", a.rules] if a.rules else []
                    cmd.append(a.capture)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                run = subprocess.run(
                    cmd,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE if n != "bare" else None,
                    env=env if n not in ("bare", "suricata") else None,
                    text=True,
                )
                code = run.returncode
                if n == "suricata":
                    if code != 0:
                        sys.stderr.write(run.stderr)
                        sys.exit(f"{' '.join(cmd)}: exit status {code}")
                elif run.stderr:
                    for m in re.finditer(r"^threadcpu (\S+) user (\S+) sys (\S+)$", run.stderr, re.M):
                        cpu = threads[n].setdefault(m.group(1), ([], []))
                        cpu[0].append(float(m.group(2)))
                        cpu[1].append(float(m.group(3)))
                    rest = re.sub(r"^threadcpu .*\n?", "", run.stderr, flags=re.M)
                    sys.stderr.write(rest)
                wall = time.perf_counter() - t
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if code not in (0, 1):  # 1: alerts were found
                    sys.exit(f"{' '.join(cmd)}: exit status {code}")
                w, u, s = results[n]
                w.append(wall)
                u.append(after.ru_utime - before.ru_utime)
                s.append(after.ru_stime - before.ru_stime)
                if i == a.runs - 1 and n != "bare":
                    counts[n] = count_rules(eve if n == "suricata" else alerts, n == "suricata")

    med = statistics.median
    base = med(results["bare"][0]) if a.bare else None
    print(f"{a.runs} rounds in alternating order, {a.capture}")
    for n in names:
        w, u, s = results[n]
        ratio = f"  {med(w) / base:5.2f} x bare" if base and n != "bare" else ""
        print(
            f"{n[-40:]:40s} wall {med(w):.3f} s (min {min(w):.3f})"
            f"  user {med(u):.3f}  sys {med(s):.3f}{ratio}"
        )
        for t, (tu, ts) in sorted(threads[n].items()):
            if len(tu) == len(w):
                print(f"    thread {t:20s} user {med(tu):.3f}  sys {med(ts):.3f}")
        if n in counts:
            rules = ", ".join(f"{r} {c}" for r, c in sorted(counts[n].items())) or "none"
            print(f"    alerts: {rules}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
