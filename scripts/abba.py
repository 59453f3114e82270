#!/usr/bin/env python3
"""Times exfilwatch builds against each other on one capture, in alternating order.

    scripts/abba.py [-n RUNS] [--bare] [--threads] [--rules PATH] CAPTURE BUILD [BUILD...]

Each round runs every BUILD once (`BUILD read --quiet --alerts FILE [--rules PATH] CAPTURE`,
JSON alerts to a fresh file), in the given order in even rounds and reversed in odd ones
(A B, B A, ...): on a shared machine a fixed order gave the second build 1.5% more in a check
of one build against itself. Prints the median and minimum wall time and the median user and
system CPU of each; with --bare also the bare libpcap loop over the same capture
(`cargo build --release --example bare_loop` first) and each build's ratio to it; with
--threads also each exfilwatch thread's median user and system CPU (scripts/threadcpu.c,
built with cc and preloaded). Compare builds only within one run: the machine's speed moves
between runs.
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE = ROOT / "target/release/examples/bare_loop"
SHIM = ROOT / "target/tmp/threadcpu.so"


def build_shim() -> None:
    SHIM.parent.mkdir(parents=True, exist_ok=True)
    src = ROOT / "scripts/threadcpu.c"
    cc = ["cc", "-O2", "-shared", "-fPIC", "-o", str(SHIM), str(src), "-ldl", "-lpthread"]
    subprocess.run(cc, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=12, help="rounds (default 12)")
    ap.add_argument("--bare", action="store_true", help="also time the bare libpcap loop")
    ap.add_argument("--threads", action="store_true", help="also each thread's CPU time")
    ap.add_argument("--rules", help="rules file for every build (default: embedded)")
    ap.add_argument("capture")
    ap.add_argument("builds", nargs="+")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("-n must be at least 1")
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

    names = (["bare"] if a.bare else []) + builds
    if a.bare and not BARE.exists():
        sys.exit(f"{BARE} missing: cargo build --release --example bare_loop")
    results = {n: ([], [], []) for n in names}
    threads = {n: {} for n in names}
    env = dict(os.environ)
    if a.threads:
        build_shim()
        env["LD_PRELOAD"] = str(SHIM)
    with tempfile.TemporaryDirectory() as tmp:
        alerts = os.path.join(tmp, "alerts.json")
        for i in range(a.runs):
            for n in names if i % 2 == 0 else names[::-1]:
                if os.path.exists(alerts):
                    os.remove(alerts)
                if n == "bare":
                    cmd = [str(BARE), a.capture]
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
                    env=env if n != "bare" else None,
                    text=True,
                )
                code = run.returncode
                if run.stderr:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
