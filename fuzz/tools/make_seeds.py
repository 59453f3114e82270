#!/usr/bin/env python3
"""Writes the checked-in seed corpora of the fuzz targets (fuzz/seeds/<target>/) from real
captures and rule files. Run from the repository root:

    python3 fuzz/tools/make_seeds.py [TCPDUMP_CORPUS_DIR]

TCPDUMP_CORPUS_DIR defaults to ../shared/corpus/tcpdump (skipped when missing). The seeds are
deterministic: the same inputs give the same files. Each target's input layout is documented in
fuzz/src/harness.rs; the encoders here must follow it.
"""
import hashlib
import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]


def read_capture(path):
    """(linktype, ts_ns, data, orig_len) of every record of a pcap or pcapng file."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 24:
        return []
    magic = buf[:4]
    pcap_magics = {
        b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
        b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
    }
    out = []
    if magic in pcap_magics:
        e, scale = pcap_magics[magic]
        linktype = struct.unpack(e + "I", buf[20:24])[0] & 0xFFFF
        off = 24
        while off + 16 <= len(buf):
            sec, frac, caplen, orig = struct.unpack(e + "IIII", buf[off:off + 16])
            data = buf[off + 16:off + 16 + caplen]
            if len(data) < caplen:
                break
            out.append((linktype, sec * 10**9 + frac * scale, data, orig))
            off += 16 + caplen
        return out
    if magic != b"\x0a\x0d\x0d\x0a":
        return []
    e = "<"
    ifaces = []
    off = 0
    while off + 12 <= len(buf):
        btype = struct.unpack(e + "I", buf[off:off + 4])[0]
        if btype == 0x0A0D0D0A:
            e = "<" if buf[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        blen = struct.unpack(e + "I", buf[off + 4:off + 8])[0]
        if blen < 12 or off + blen > len(buf):
            break
        body = buf[off + 8:off + blen - 4]
        if btype == 1 and len(body) >= 8:
            lt = struct.unpack(e + "H", body[:2])[0]
            tsresol = 6
            o = 8
            while o + 4 <= len(body):
                code, olen = struct.unpack(e + "HH", body[o:o + 4])
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    tsresol = body[o + 4]
                o += 4 + ((olen + 3) & ~3)
            ifaces.append((lt, tsresol))
        elif btype in (6, 2) and len(body) >= 20:
            iface, hi, lo, caplen, orig = struct.unpack(e + "IIIII", body[:20])
            if btype == 2:
                iface &= 0xFFFF
            if iface < len(ifaces):
                lt, res = ifaces[iface]
                ticks = (hi << 32) | lo
                ts = ticks * 10**9 // (10 ** res) if res < 128 else ticks * 10**9 // (2 ** (res & 127))
                out.append((lt, ts, body[20:20 + caplen], orig))
        elif btype == 3 and len(body) >= 4 and ifaces:
            orig = struct.unpack(e + "I", body[:4])[0]
            out.append((ifaces[0][0], 0, body[4:4 + orig], orig))
        off += blen
    return out


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def decode_input(lt, data, orig):
    excess = max(-128, min(127, orig - len(data)))
    return bytes([LINKTYPES.index(lt), excess & 0xFF]) + data


def engine_input(config, frames, cap=160):
    """frames: (linktype, ts_ns, data, orig). Absolute time first, then millisecond steps."""
    out = bytearray([config])
    prev = None
    for lt, ts, data, orig in frames:
        data = data[:cap]
        excess = min(255, max(0, orig - len(data)))
        flag = 32 if excess else 0
        if prev is not None and 0 <= ts - prev < 65536 * 10**6:
            out += bytes([2 | flag]) + struct.pack(">H", (ts - prev) // 10**6)
        else:
            out += bytes([6 | flag]) + struct.pack(">q", ts)
        prev = ts
        out += bytes([LINKTYPES.index(lt)]) + struct.pack(">H", len(data))
        if excess:
            out.append(excess)
        out += data
    return bytes(out)


def supported(frames):
    return [f for f in frames if f[0] in LINKTYPES]


def main():
    tcpdump = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "corpus", "tcpdump")
    fixtures = os.path.join(ROOT, "fixtures")
    fixture_files = sorted(
        f for f in os.listdir(fixtures) if f.endswith((".pcap", ".pcapng"))
    )
    seen = set()

    # decode: distinct frames of every fixture, and a few of each tcpdump capture we can decode.
    def add_decode(lt, data, orig, limit=256):
        data = data[:limit]
        key = hashlib.sha1(bytes([LINKTYPES.index(lt)]) + data[:96]).hexdigest()
        if key in seen:
            return
        seen.add(key)
        write("decode", key[:16], decode_input(lt, data, orig))

    for f in fixture_files:
        for lt, _, data, orig in supported(read_capture(os.path.join(fixtures, f)))[:6]:
            add_decode(lt, data, orig)
    corpus_files = sorted(os.listdir(tcpdump)) if os.path.isdir(tcpdump) else []
    for i, f in enumerate(corpus_files):
        frames = supported(read_capture(os.path.join(tcpdump, f)))
        # Ethernet captures are most of the corpus: one frame from every fourth.
        if frames and frames[0][0] == 1:
            frames = frames[:1] if i % 4 == 0 else []
        for lt, _, data, orig in frames[:3]:
            add_decode(lt, data, orig)

    # engine: the fixtures' packet streams (first 64 records) under the default rules with flow
    # records, and every fourth also under the fuzzing rule sets and text output.
    for i, f in enumerate(fixture_files):
        frames = supported(read_capture(os.path.join(fixtures, f)))[:64]
        if not frames:
            continue
        stem = os.path.splitext(f)[0]
        write("engine", stem + "-default", engine_input(8, frames))
        if i % 4 == 0:
            write("engine", stem + "-wide-text", engine_input(1 | 4 | 8 | 32, frames))
            write("engine", stem + "-tight-live", engine_input(2 | 8 | 16, frames))

    # capture: small capture files, every fixture under 8 KiB and small tcpdump captures of
    # every link type and format.
    for f in fixture_files:
        p = os.path.join(fixtures, f)
        if os.path.getsize(p) <= 8192:
            with open(p, "rb") as fh:
                write("capture", "fixture-" + f, fh.read())
    by_kind = {}
    for f in corpus_files:
        p = os.path.join(tcpdump, f)
        size = os.path.getsize(p)
        if size > 2048:
            continue
        with open(p, "rb") as fh:
            head = fh.read(24)
        kind = (head[:4], head[20:24] if head[:4] != b"\x0a\x0d\x0d\x0a" else b"")
        by_kind.setdefault(kind, []).append((size, f))
    for kind, files in sorted(by_kind.items()):
        for size, f in sorted(files)[:2]:
            with open(os.path.join(tcpdump, f), "rb") as fh:
                write("capture", "tcpdump-" + f, fh.read())

    # pcapng: every pcapng fixture (several link types, sections, cut and hostile blocks) and
    # the tcpdump corpus's small pcapng files.
    for f in fixture_files:
        p = os.path.join(fixtures, f)
        if f.endswith(".pcapng") and os.path.getsize(p) <= 8192:
            with open(p, "rb") as fh:
                write("pcapng", "fixture-" + f, fh.read())
    for f in corpus_files:
        p = os.path.join(tcpdump, f)
        if f.endswith(".pcapng") and os.path.getsize(p) <= 4096:
            with open(p, "rb") as fh:
                write("pcapng", "tcpdump-" + f, fh.read())

    # rules: every rule file, and some pairs as multi-file inputs (NUL-separated).
    rule_files = [os.path.join(ROOT, "rules", "default.toml")]
    for d in (os.path.join(ROOT, "fixtures", "rules"), os.path.join(ROOT, "fuzz", "rules")):
        rule_files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".toml")]
    texts = []
    for p in rule_files:
        with open(p, "rb") as fh:
            text = fh.read()
        texts.append(text)
        write("rules", os.path.basename(os.path.dirname(p)) + "-" + os.path.basename(p), text)
    write("rules", "multi-default-policy", texts[0] + b"\0" + [t for t in texts if b"[policy]" in t][0])
    write("rules", "multi-dup", texts[0] + b"\0" + texts[0])

    # rules_structured: any bytes are a document; random ones of a few lengths.
    rng = random.Random(1)
    for i in range(24):
        write("rules_structured", "random-%02d" % i, bytes(rng.randrange(256) for _ in range(16 + 8 * i)))


if __name__ == "__main__":
    main()
